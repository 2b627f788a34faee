"""`FilterWeights`: every filter of every conv layer, as pictures, each logged epoch."""

from __future__ import annotations

import numpy as np

from tb_cnnviz import budget as budget_lib
from tb_cnnviz import checks, summary
from tb_cnnviz import layers as layer_lib

from .base import VizCallback

__all__ = ["FilterWeights"]


class FilterWeights(VizCallback):
    """Logs the kernels of conv layers as a grid of filter pictures, with per-filter statistics.

    A first layer that reads RGB is drawn in colour, one picture per filter; deeper kernels are
    drawn one slice per input channel. Each step also stores every filter's L2 norm, mean and
    relative change since the previous logged step, and the layer's update ratio ‖Δw‖/‖w‖ as a
    scalar in TensorBoard's Scalars tab.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`; pictures go to its `train` run.
        layers: Layer names or `outer/inner` paths; `None` means every conv layer.
        freq: Log every `freq` epochs; 0 turns it off.
        max_filters: Draw at most this many filters per layer (evenly sampled beyond).
        max_input_channels: Draw at most this many input-channel slices per filter.
        budget: The time budget shared with nothing else: filter weights are cheap, so they are
            drawn at every logged epoch; `None` is the same.

    Example:
        >>> import numpy as np, keras, tempfile
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> cb = FilterWeights(tempfile.mkdtemp())
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    kind = "weights"
    cheap = True

    def __init__(
        self,
        log_dir="logs",
        *,
        layers=None,
        freq=1,
        max_filters=256,
        max_input_channels=32,
        budget=budget_lib.DEFAULT_BUDGET,
    ):
        super().__init__(log_dir, layers=layers, freq=freq, max_filters=max_filters, budget=budget)
        self.max_input_channels = checks.integer(
            "max_input_channels", max_input_channels, minimum=1
        )
        self._previous = {}
        self._rgb_layer = None
        self._shapes = {}

    def _validate(self, model):
        first_path, first = layer_lib.conv_layers(model)[0]
        kernel = layer_lib.kernel_for_display(first)
        self._rgb_layer = first_path if kernel.shape[-2] == 3 else None

    def _estimate(self, path, layer):
        # Weights are cheap in time (drawn at every epoch), but not in bytes on deep models:
        # about a byte per drawn weight and 25 bytes of index per filter (its statistics and
        # its range, shared by its slices since format version 3).
        if path not in self._shapes:
            self._shapes[path] = tuple(layer_lib.kernel_for_display(layer).shape)
        shape = self._shapes[path]
        filters = min(shape[-1], self.max_filters)
        inputs = min(shape[-2], self.max_input_channels * summary.GRID_INPUTS_PER_SLICE)
        per_input = int(np.prod(shape[:-2]))
        return 0.0, filters * inputs * per_input + 25 * filters

    def _draw(self, path, layer, step):
        kernel = layer_lib.kernel_for_display(layer)
        previous, self._previous[path] = self._previous.get(path), kernel
        rgb, max_filters, max_slices = (
            path == self._rgb_layer,
            self.max_filters,
            self.max_input_channels,
        )
        what = f"Filters of `{path}` ({type(layer).__name__}, kernel {kernel.shape})."

        def write():  # in the background (tb_cnnviz.background)
            summary.filter_weights(
                path,
                kernel,
                step=step,
                previous=previous,
                rgb=rgb,
                max_filters=max_filters,
                max_slices=max_slices,
                description=what,
            )

        return write
