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


def functions_from_inner_tensors() -> bool:
    """Whether this Keras builds a `keras.Function` from an inner tensor of a graph (Keras
    3.6 refuses: "Graph disconnected"), which `tb_cnnviz.layers.tail` needs."""
    x = keras.Input((2,))
    y = keras.layers.Dense(2)(keras.layers.Dense(2)(x))  # two operations from the input
    try:
        keras.Function(y, keras.layers.Dense(2)(y))
    except ValueError:
        return False
    return True


def head_after_last_conv(binary=False):
    """Two convs, then batch normalization, pooling and a dense head: a last conv whose tail
    (`tb_cnnviz.layers.tail`) is a small model of its own, as in MobileNet or EfficientNet."""
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="first")(inp)
    x = keras.layers.Conv2D(6, 3, name="last")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    out = keras.layers.Dense(1 if binary else 3, activation="sigmoid" if binary else "softmax")(x)
    return keras.Model(inp, out)


def residual_head(binary=False):
    """A stem and a residual block whose sum reads the block's input, as a ResNet ends: the
    last conv's tail (`tb_cnnviz.layers.tail`) also reads the stem's activation (an extra)."""
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inp)
    x = keras.layers.ReLU(name="stem_out")(keras.layers.BatchNormalization(name="stem_bn")(x))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="first")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="last")(y)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.ReLU()(keras.layers.Add(name="sum")([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(y)
    out = keras.layers.Dense(1 if binary else 3, activation="sigmoid" if binary else "softmax")(x)
    return keras.Model(inp, out)


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


# -- convolutions inside custom layers ------------------------------------------------------------
# Written the way Keras' guides and KerasHub write blocks: `Layer` subclasses whose convs are
# attributes, not nodes of any graph.


@keras.saving.register_keras_serializable(package="tb_cnnviz_tests")
class ResidualBlock(keras.layers.Layer):
    """relu(x + c2(c1(x))), as the residual blocks of Keras' guides."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.c1 = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="c1")
        self.c2 = keras.layers.Conv2D(filters, 3, padding="same", name="c2")

    def call(self, x):
        return keras.ops.relu(x + self.c2(self.c1(x)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def residual_blocks(size=16, seed=0):
    """A stem Conv2D and two custom residual blocks: 5 conv layers, 4 inside the blocks."""
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    x = ResidualBlock(8, name="res1")(x)
    x = ResidualBlock(8, name="res2")(x)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    data = _images((size, size, 3), seed=seed)
    return _compile(keras.Model(inp, out)), data, _labels(seed=seed), data[:4]


@keras.saving.register_keras_serializable(package="tb_cnnviz_tests")
class ConvBnAct(keras.layers.Layer):
    """Conv2D, BatchNormalization and an activation (KerasHub's `ConvBnActBlock`)."""

    def __init__(self, filters, kernel_size=1, strides=1, activation="relu6", **kwargs):
        super().__init__(**kwargs)
        self.settings = {"filters": filters, "kernel_size": kernel_size, "strides": strides}
        self.activation_name = activation
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, strides, padding="same", use_bias=False, name=f"{self.name}_conv"
        )
        self.bn = keras.layers.BatchNormalization(name=f"{self.name}_bn")
        self.act = keras.layers.Activation(activation, name=f"{self.name}_act")

    def call(self, x, training=None):
        return self.act(self.bn(self.conv(x), training=training))

    def get_config(self):
        return {**super().get_config(), **self.settings, "activation": self.activation_name}


@keras.saving.register_keras_serializable(package="tb_cnnviz_tests")
class InvertedResidual(keras.layers.Layer):
    """MobileNetV2's block: expand (a ConvBnAct), depthwise, project; residual when it fits.

    Its 1x1 expansion is a block inside the block, so its conv is nested two deep.
    """

    def __init__(self, filters, expansion=4, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.settings = {"filters": filters, "expansion": expansion, "strides": strides}
        self.expand = None
        self.depthwise = keras.layers.DepthwiseConv2D(
            3, strides, padding="same", use_bias=False, name=f"{self.name}_depthwise"
        )
        self.depthwise_bn = keras.layers.BatchNormalization(name=f"{self.name}_depthwise_bn")
        self.project = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{self.name}_project")
        self.project_bn = keras.layers.BatchNormalization(name=f"{self.name}_project_bn")

    def build(self, input_shape):
        channels = input_shape[-1]
        self.expand = ConvBnAct(channels * self.settings["expansion"], name=f"{self.name}_expand")
        self.residual = self.settings["strides"] == 1 and channels == self.settings["filters"]
        super().build(input_shape)

    def call(self, x, training=None):
        h = self.expand(x, training=training)
        h = keras.ops.relu6(self.depthwise_bn(self.depthwise(h), training=training))
        h = self.project_bn(self.project(h), training=training)
        return x + h if self.residual else h

    def get_config(self):
        return {**super().get_config(), **self.settings}


@keras.saving.register_keras_serializable(package="tb_cnnviz_tests")
class MobileBackbone(keras.Model):
    """A Functional backbone built from a config, as KerasHub's `MobileNetBackbone` is."""

    def __init__(self, stackwise_filters, stackwise_strides, image_shape, **kwargs):
        inputs = keras.Input(image_shape)
        x = ConvBnAct(16, 3, strides=2, name="input_conv")(inputs)
        for i, (filters, strides) in enumerate(
            zip(stackwise_filters, stackwise_strides, strict=True)
        ):
            x = InvertedResidual(filters, strides=strides, name=f"block_{i}")(x)
        x = ConvBnAct(64, name="output_conv")(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.config = {
            "stackwise_filters": list(stackwise_filters),
            "stackwise_strides": list(stackwise_strides),
            "image_shape": tuple(image_shape),
        }

    def get_config(self):
        return {**self.config, "name": self.name, "trainable": self.trainable}


KERASHUB_STYLE_CONFIG = {
    "stackwise_filters": [16, 24, 24, 32],
    "stackwise_strides": [1, 2, 1, 2],
    "image_shape": (32, 32, 3),
}


def kerashub_style(seed=0):
    """A classifier on a config-built backbone of block layers (13 convs, 12 in blocks)."""
    backbone = MobileBackbone(**KERASHUB_STYLE_CONFIG, name="backbone")
    inputs = keras.Input(KERASHUB_STYLE_CONFIG["image_shape"])
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(backbone(inputs))
    x = keras.layers.Conv2D(32, 1, activation="relu", name="classifier_conv")(x)
    out = keras.layers.Dense(3, name="predictions")(keras.layers.Flatten()(x))
    data = _images(KERASHUB_STYLE_CONFIG["image_shape"], seed=seed)
    return _compile(keras.Model(inputs, out)), data, _labels(seed=seed), data[:4]


@keras.saving.register_keras_serializable(package="tb_cnnviz_tests")
class Encoder(keras.layers.Layer):
    """A custom layer holding the model's only convolution."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, x):
        return self.pool(self.conv(x))


def only_conv_in_a_custom_layer():
    inp = keras.Input((16, 16, 3))
    out = keras.layers.Dense(3)(Encoder(name="encoder")(inp))
    data = _images((16, 16, 3))
    return _compile(keras.Model(inp, out)), data, _labels(), data[:4]


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
    "custom residual blocks": residual_blocks,
    "KerasHub-style backbone": kerashub_style,
    "only conv inside a custom layer": only_conv_in_a_custom_layer,
}
