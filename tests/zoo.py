"""Small models of every shape users train, for the robustness tests and benchmarks/models.py.

Each builder returns `(model, x, y, probe_images)`: a compiled model, a few generated training
examples and fixed probe images. Nothing is downloaded (`weights=None`).
"""

from __future__ import annotations

import keras
import numpy as np


def _compile(model):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _images(shape, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32)


def _labels(n=8, classes=3, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


def application(name):
    def build():
        model = getattr(keras.applications, name)(
            input_shape=(32, 32, 3), weights=None, classes=3, classifier_activation=None
        )
        x = _images((32, 32, 3))
        return _compile(model), x, _labels(), x[:4]

    return build


def sequential(built=True):
    def build():
        layers = [
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
        if built:
            layers.insert(0, keras.Input((16, 16, 3)))
        x = _images((16, 16, 3))
        return _compile(keras.Sequential(layers)), x, _labels(), x[:4]

    return build


def nested():
    inner = keras.Sequential(
        [keras.Input((14, 14, 8)), keras.layers.Conv2D(8, 3, activation="relu", name="deep")],
        name="block",
    )
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="stem")(inp)
    x = inner(x)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    data = _images((16, 16, 3))
    return _compile(keras.Model(inp, out)), data, _labels(), data[:4]


class SubclassedNet(keras.Model):
    """A model defined by subclassing, whose conv layers are attributes."""

    def __init__(self):
        super().__init__()
        self.first = keras.layers.Conv2D(8, 3, activation="relu", name="first")
        self.second = keras.layers.Conv2D(8, 3, activation="relu", name="second")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(self.pool(self.second(self.first(x))))


def subclassed():
    x = _images((16, 16, 3))
    return _compile(SubclassedNet()), x, _labels(), x[:4]


def two_inputs():
    rgb = keras.Input((16, 16, 3), name="rgb")
    depth = keras.Input((16, 16, 1), name="depth")
    a = keras.layers.Conv2D(8, 3, activation="relu", name="rgb_conv")(rgb)
    b = keras.layers.Conv2D(4, 3, activation="relu", name="depth_conv")(depth)
    merged = keras.layers.Concatenate()([a, b])
    merged = keras.layers.Conv2D(8, 3, activation="relu", name="fused_conv")(merged)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(merged))
    x = [_images((16, 16, 3)), _images((16, 16, 1), seed=1)]
    return _compile(keras.Model([rgb, depth], out)), x, _labels(), [x[0][:4], x[1][:4]]


def conv1d():
    model = keras.Sequential(
        [
            keras.Input((32, 2)),
            keras.layers.Conv1D(8, 5, activation="relu", name="c1"),
            keras.layers.Conv1D(8, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    x = _images((32, 2))
    return _compile(model), x, _labels(), x[:4]


def conv3d():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 8, 1)),
            keras.layers.Conv3D(4, 3, activation="relu", name="c3d"),
            keras.layers.GlobalAveragePooling3D(),
            keras.layers.Dense(3),
        ]
    )
    x = _images((8, 8, 8, 1))
    return _compile(model), x, _labels(), x[:4]


def special_convs():
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw"),
            keras.layers.SeparableConv2D(8, 3, activation="relu", name="sep"),
            keras.layers.Conv2DTranspose(4, 3, activation="relu", name="up"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    x = _images((16, 16, 3))
    return _compile(model), x, _labels(), x[:4]


def wide_layer():
    """A layer with 2048 filters: drawn as an even sample, and says so."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(16, 3, activation="relu", name="narrow"),
            keras.layers.Conv2D(2048, 1, activation="relu", name="wide"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    x = _images((8, 8, 3))
    return _compile(model), x, _labels(), x[:4]


def mixed_precision():
    """Built under the `mixed_float16` policy; the caller restores the policy afterwards."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, dtype="float32"),
        ]
    )
    x = _images((16, 16, 3))
    return _compile(model), x, _labels(), x[:4]


#: The keras.applications models, at 32x32 and without weights.
APPLICATIONS = ("MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121")

MODELS = {
    **{name: application(name) for name in APPLICATIONS},
    "Sequential (built)": sequential(built=True),
    "Sequential (not built)": sequential(built=False),
    "nested model": nested,
    "subclassed model": subclassed,
    "two inputs": two_inputs,
    "Conv1D": conv1d,
    "Conv3D": conv3d,
    "Depthwise/Separable/Transpose": special_convs,
    "2048 filters": wide_layer,
    "mixed_float16": mixed_precision,
}
