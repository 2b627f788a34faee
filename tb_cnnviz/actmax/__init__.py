"""Activation maximization: for every filter of a conv layer, the input that excites it most.

One call renders a whole layer::

    images = tb_cnnviz.actmax.render(model, "conv4", steps=128)   # [n, h, w, c], NumPy
    images.activations                                            # what each image reached

The pieces compose, Lucid style: objectives (`channel`, `neuron`, `class_logit`, regularizers
`total_variation` and `l2`, closed under `+ - *`), parameterizations (`fourier`, the default, and
`pixel`), transforms (`pad`, `jitter`, `random_scale`, `random_rotate`, `compose`) and a reusable
compiled `Renderer`. Written in `keras.ops`, it runs on every Keras backend (TensorFlow, JAX,
PyTorch; what differs between them lives in `tb_cnnviz.backend`), and needs nothing from
TensorBoard.
"""

from tb_cnnviz.actmax.forward import ModelReader
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
    ActmaxImages,
    Renderer,
    WarmStart,
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
    "LOGITS",
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
    "render",
    "standard",
    "total_variation",
    "wake_up",
]
