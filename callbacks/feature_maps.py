"""`FeatureMaps`: what each conv filter makes of a fixed set of probe images, each logged epoch."""

from __future__ import annotations

import numpy as np

from tb_cnnviz import layers as layer_lib
from tb_cnnviz import summary

from .base import VizCallback, check_probe_images

__all__ = ["FeatureMaps"]


class FeatureMaps(VizCallback):
    """Logs the feature maps of fixed probe images for conv layers, with per-filter statistics.

    One forward pass of the probe images per logged epoch records every selected layer's output,
    nested models included. Each step stores every filter's mean, max, fraction of zeros and
    whether it is dead (zero on every probe image), and the layer's dead-filter fraction as a
    scalar in TensorBoard's Scalars tab.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`; pictures go to its `train` run.
        probe_images: Images `[n, *input_shape]` in the value range the model trains on (for
            models with several inputs, a list with one array per input). Keep `n` small (4-16).
        layers: Layer names or `outer/inner` paths; `None` means every conv layer.
        freq: Log every `freq` epochs; 0 turns it off.
        max_filters: Draw at most this many filters per layer (evenly sampled beyond).

    Example:
        >>> import numpy as np, keras, tempfile
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> cb = FeatureMaps(tempfile.mkdtemp(), probe_images=np.random.rand(2, 8, 8, 3))
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    kind = "feature_maps"

    def __init__(self, log_dir="logs", probe_images=None, *, layers=None, freq=1, max_filters=256):
        super().__init__(log_dir, layers=layers, freq=freq, max_filters=max_filters)
        if probe_images is None:
            raise ValueError("FeatureMaps needs probe_images. Received: probe_images=None")
        if isinstance(probe_images, list | tuple):
            self.probe_images = [
                check_probe_images(p, f"probe_images[{i}]") for i, p in enumerate(probe_images)
            ]
            if len({len(p) for p in self.probe_images}) != 1:
                raise ValueError(
                    "probe_images for a multi-input model need the same number of images per "
                    f"input. Received: lengths={[len(p) for p in self.probe_images]}"
                )
        else:
            self.probe_images = check_probe_images(probe_images)
        self._outputs = {}

    def _validate(self, model):
        try:
            model(self.probe_images, training=False)
        except Exception as e:
            shapes = (
                [p.shape for p in self.probe_images]
                if isinstance(self.probe_images, list)
                else self.probe_images.shape
            )
            raise ValueError(
                f"probe_images do not fit the model {model.name!r}: {type(e).__name__}: {e}. "
                f"Received: probe_images with shape {shapes}"
            ) from e

    def _prepare(self, step):
        chosen = [layer for _, layer in self._selected]
        with layer_lib.capture_outputs(chosen) as captured:
            self.model(self.probe_images, training=False)
        self._outputs = captured

    def _log_layer(self, path, layer, step):
        out = self._outputs.get(id(layer))
        if out is None:
            raise RuntimeError("the layer was not called by the model's forward pass")
        acts = np.asarray(out, dtype=np.float32)
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            acts = np.moveaxis(acts, 1, -1)
        summary.feature_maps(
            path,
            acts,
            step=step,
            max_filters=self.max_filters,
            description=f"Feature maps of `{path}` for {acts.shape[0]} probe images.",
        )
