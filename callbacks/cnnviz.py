"""`CNNViz`: every kind of picture tb-cnnviz has, in one callback with sensible defaults."""

from __future__ import annotations

import keras

from .feature_maps import FeatureMaps
from .weights import FilterWeights

__all__ = ["CNNViz"]


class CNNViz(keras.callbacks.Callback):
    """Logs every kind of CNN picture for the CNN Viz tab of TensorBoard.

    It bundles `FilterWeights` and, when `probe_images` are given, `FeatureMaps`, all writing
    into the `train` run of `log_dir`, beside `keras.callbacks.TensorBoard`'s scalars.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`.
        probe_images: A few fixed images `[n, *input_shape]` (4-16 is plenty) in the value range
            the model trains on; kinds that need images are off without them.
        layers: Layer names or `outer/inner` paths; `None` means every conv layer.
        weights_freq: Log filter weights every this many epochs; 0 turns them off.
        feature_maps_freq: Log feature maps every this many epochs; 0 turns them off.
        max_filters: Draw at most this many filters per layer (evenly sampled beyond).

    Attributes:
        callbacks: The per-kind callbacks in use, in logging order.

    Example:
        >>> import numpy as np, keras, tempfile
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> viz = CNNViz(tempfile.mkdtemp(), probe_images=np.random.rand(2, 8, 8, 3))
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[viz])
        >>> [type(c).__name__ for c in viz.callbacks]
        ['FilterWeights', 'FeatureMaps']
    """

    def __init__(
        self,
        log_dir="logs",
        probe_images=None,
        *,
        layers=None,
        weights_freq=1,
        feature_maps_freq=1,
        max_filters=256,
    ):
        super().__init__()
        self.log_dir = log_dir
        self.probe_images = probe_images
        self.layers = layers
        self.weights_freq = weights_freq
        self.feature_maps_freq = feature_maps_freq
        self.max_filters = max_filters
        common = {"layers": layers, "max_filters": max_filters}
        self.callbacks = [FilterWeights(log_dir, freq=weights_freq, **common)]
        if probe_images is not None:
            self.callbacks.append(
                FeatureMaps(log_dir, probe_images, freq=feature_maps_freq, **common)
            )

    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        for callback in self.callbacks:
            callback.on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_end(logs)
