"""Activation maximization: for every filter of a conv layer, the input that excites it most.

One call renders a whole layer::

    images = tb_cnnviz.actmax.render(model, "conv4", steps=128)   # [n, h, w, c], NumPy
    images.activations                                            # what each image reached

An early layer sees a patch of the input, not all of it: `size="receptive_field"` renders it on
a canvas the size of that patch (`receptive_field`), reading the layer's centre position.

The pieces compose, Lucid style: objectives (`channel`, `neuron`, `class_logit`, regularizers
`total_variation` and `l2`, closed under `+ - *`), parameterizations (`fourier`, the default, and
`pixel`), transforms (`pad`, `jitter`, `random_scale`, `random_rotate`, `compose`) and a reusable
compiled `Renderer`. Written in `keras.ops`, it runs on every Keras backend (TensorFlow, JAX,
PyTorch; what differs between them lives in `tb_cnnviz.backend`), and needs nothing from
TensorBoard.
"""

from tb_cnnviz.actmax.forward import ModelReader, receptive_field
from tb_cnnviz.actmax.objectives import (
    LOGITS,
    Activations,
    Objective,
    as_objective,
    channel,
    class_logit,
    l2,
    neuron,
    total_variation,
    wake_up,
)
from tb_cnnviz.actmax.param import (
    DEFAULT_DECAY_POWER,
    FourierParam,
    ImageParam,
    PixelParam,
    color_correlation,
    fourier,
    pixel,
)
from tb_cnnviz.actmax.renderer import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_STEPS,
    FULL_FIELD,
    MIN_CANVAS,
    ActmaxImages,
    Renderer,
    WarmStart,
    centre_objective,
    default_objective,
    render,
)
from tb_cnnviz.actmax.transforms import (
    Affine,
    Transform,
    center_crop,
    compose,
    jitter,
    pad,
    random_rotate,
    random_scale,
    standard,
)

__all__ = [
    "DEFAULT_DECAY_POWER",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_STEPS",
    "FULL_FIELD",
    "LOGITS",
    "MIN_CANVAS",
    "ActmaxImages",
    "Activations",
    "Affine",
    "FourierParam",
    "ImageParam",
    "ModelReader",
    "Objective",
    "PixelParam",
    "Renderer",
    "Transform",
    "WarmStart",
    "as_objective",
    "centre_objective",
    "channel",
    "center_crop",
    "class_logit",
    "color_correlation",
    "compose",
    "default_objective",
    "fourier",
    "jitter",
    "l2",
    "neuron",
    "pad",
    "pixel",
    "random_rotate",
    "random_scale",
    "receptive_field",
    "render",
    "standard",
    "total_variation",
    "wake_up",
]
