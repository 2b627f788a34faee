"""Finding conv layers in any Keras 3 model and reading what they hold (TensorFlow side).

Layers are named by *path*: the layer's name, prefixed by the names of the models it is nested in
(`"encoder/conv2d"`). A top-level layer's path is its plain name. Users may select a layer by its
path or, when unique, by its plain name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import keras
import numpy as np

__all__ = [
    "CONV_TYPES",
    "capture_outputs",
    "conv_layers",
    "find_layer",
    "is_conv",
    "is_conv2d",
    "kernel_for_display",
    "resolve_layers",
]

#: Every Keras 3 convolution layer class.
CONV_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def all_layers(
    model: keras.layers.Layer, prefix: str = ""
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields `(path, layer)` for every layer reachable from `model`, depth first, in order.

    Example:
        >>> inner = keras.Sequential([keras.layers.Conv2D(2, 3, name="c")], name="inner")
        >>> [p for p, _ in all_layers(keras.Sequential([inner]))]
        ['inner', 'inner/c']
    """
    for layer in getattr(model, "layers", []):
        path = f"{prefix}{layer.name}"
        yield path, layer
        if getattr(layer, "layers", None):
            yield from all_layers(layer, prefix=f"{path}/")


def conv_layers(model: keras.layers.Layer) -> list[tuple[str, keras.layers.Layer]]:
    """Returns `(path, layer)` for every conv layer of `model`, nested models included.

    Args:
        model: Any Keras 3 model: Sequential, Functional, nested or subclassed.

    Returns:
        The conv layers in model order.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1"),
        ...                       keras.layers.Flatten()])
        >>> [p for p, _ in conv_layers(m)]
        ['c1']
    """
    return [(path, layer) for path, layer in all_layers(model) if is_conv(layer)]


def is_conv2d(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a 2-D convolution (plain, transposed, depthwise or separable).

    Example:
        >>> is_conv2d(keras.layers.Conv2D(2, 3)), is_conv2d(keras.layers.Conv1D(2, 3))
        (True, False)
    """
    return isinstance(layer, CONV_TYPES) and getattr(layer, "rank", 2) == 2


def find_layer(
    model: keras.layers.Layer,
    name: str,
    argument: str = "layer",
    *,
    among=None,
    need: str = "a layer",
    received=None,
) -> tuple[str, keras.layers.Layer]:
    """Finds one layer of `model` by path (`outer/inner`) or, when unique, by plain name.

    The one place layers are looked up by name: every tb-cnnviz function that takes a layer
    name reports a bad one the same way.

    Args:
        model: The model.
        name: The layer's path or plain name.
        argument: The argument the name came from, for the message.
        among: A predicate the layer must pass (for example `is_conv2d`); its passing layers are
            the valid names the message lists. None: any layer.
        need: What the layer must be, for the message (`"a 2-D conv layer"`).
        received: The argument's value as given, for the message; defaults to `name`.

    Returns:
        `(path, layer)`.

    Raises:
        ValueError: If no layer has that path or name, several have that name, or the layer
            fails `among`. The message lists the valid names and ends in `Received: ...`.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c"),
        ...                       keras.layers.Flatten(name="f")])
        >>> find_layer(m, "c", among=is_conv2d)[0]
        'c'
        >>> try:
        ...     find_layer(m, "f", among=is_conv2d, need="a 2-D conv layer")
        ... except ValueError as e:
        ...     print(str(e).split(". ")[0])
        layer: 'f' is a Flatten layer, not a 2-D conv layer
    """
    everything = list(all_layers(model))
    valid = [p for p, layer in everything if among is None or among(layer)]
    matches = [(p, layer) for p, layer in everything if p == name]
    if not matches:
        matches = [(p, layer) for p, layer in everything if layer.name == name]
    problem = None
    if not matches:
        problem = f"is not a layer of the model {model.name!r}"
    elif len(matches) > 1:
        problem = f"names several layers ({[p for p, _ in matches]}); give the full path"
    elif among is not None and not among(matches[0][1]):
        problem = f"is a {type(matches[0][1]).__name__} layer, not {need}"
    if problem:
        shown = name if received is None else received
        raise ValueError(
            f"{argument}: {name!r} {problem}. Valid names: {valid}. Received: {argument}={shown!r}"
        )
    return matches[0]


def is_conv(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a convolution of any kind (one of `CONV_TYPES`).

    Example:
        >>> is_conv(keras.layers.Conv1D(2, 3)), is_conv(keras.layers.Dense(2))
        (True, False)
    """
    return isinstance(layer, CONV_TYPES)


def resolve_layers(
    model: keras.layers.Layer, names: Sequence[str] | str | None, argument: str = "layers"
) -> list[tuple[str, keras.layers.Layer]]:
    """Selects conv layers by path or plain name; `None` selects every conv layer.

    Args:
        model: The model.
        names: Layer paths or plain names, or `None`.
        argument: The argument name used in error messages.

    Returns:
        `(path, layer)` pairs in the order given (model order for `None`).

    Raises:
        ValueError: If the model has no conv layer, or a name matches no conv layer or is
            ambiguous. The message lists the valid names.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1")])
        >>> [p for p, _ in resolve_layers(m, ["c1"])]
        ['c1']
    """
    available = conv_layers(model)
    if not available:
        raise ValueError(
            f"The model {model.name!r} has no convolution layer to visualize. "
            f"Conv layers are instances of: {', '.join(t.__name__ for t in CONV_TYPES)}."
        )
    if names is None:
        return available
    if isinstance(names, str):
        names = [names]
    return [
        find_layer(model, name, argument, among=is_conv, need="a conv layer", received=list(names))
        for name in names
    ]


def kernel_for_display(layer: keras.layers.Layer) -> np.ndarray:
    """Returns a conv layer's kernel in the layout `[*spatial, in_channels, filters]`.

    Transposed convs are swapped into that layout; depthwise (and the depthwise half of separable)
    kernels become one single-channel slice per output filter.

    Args:
        layer: A built layer of one of `CONV_TYPES`.

    Returns:
        A float32 NumPy array.

    Example:
        >>> layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
        >>> layer.build((None, 8, 8, 4))
        >>> kernel_for_display(layer).shape
        (3, 3, 1, 8)
    """
    if isinstance(layer, keras.layers.SeparableConv1D | keras.layers.SeparableConv2D):
        kernel = _numpy(layer.depthwise_kernel)
        return _depthwise(kernel)
    kernel = _numpy(layer.kernel)
    if isinstance(layer, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D):
        return _depthwise(kernel)
    if isinstance(
        layer,
        keras.layers.Conv1DTranspose | keras.layers.Conv2DTranspose | keras.layers.Conv3DTranspose,
    ):
        return np.swapaxes(kernel, -1, -2)
    return kernel


@contextlib.contextmanager
def capture_outputs(
    layers: Sequence[keras.layers.Layer], *, add: Mapping[int, object] | None = None
) -> Iterator[dict[int, object]]:
    """Records the outputs of `layers` during forward passes run inside the block.

    Works for layers nested in sub-models and in subclassed models, where a Functional
    sub-model cannot reach the layer. The dict is keyed by `id(layer)` and holds the last output.

    `add` maps `id(layer)` to a tensor added to that layer's output (cast to its dtype) before
    the rest of the model reads it: differentiating with respect to a zero tensor added so gives
    the gradient with respect to the layer's output on every backend (JAX cannot differentiate
    with respect to an intermediate tensor otherwise).

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1")])
        >>> with capture_outputs([m.layers[0]]) as out:
        ...     _ = m(np.zeros((1, 8, 8, 3), "float32"))
        >>> tuple(out[id(m.layers[0])].shape)
        (1, 6, 6, 4)
    """
    captured: dict[int, object] = {}
    hooked = []
    try:
        for layer in layers:
            # Bypass Keras' attribute tracking: this is a temporary instance override.
            extra = None if add is None else add.get(id(layer))
            call = _recording_call(layer.call, id(layer), captured, extra)
            object.__setattr__(layer, "call", call)
            hooked.append(layer)
        yield captured
    finally:
        for layer in hooked:
            object.__delattr__(layer, "call")


def _recording_call(original, key: int, captured: dict, extra=None):
    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        if extra is not None:
            out = out + keras.ops.cast(extra, out.dtype)
        captured[key] = out
        return out

    return call


def _depthwise(kernel: np.ndarray) -> np.ndarray:
    *spatial, channels, multiplier = kernel.shape
    return kernel.reshape(*spatial, 1, channels * multiplier)


def _numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
