"""Finding every conv layer of any Keras 3 model, and reading what it computes (every backend).

The one home of two things every kind of picture needs.

**Discovery.** A layer is reached through a model's graph (Functional and Sequential models,
nested models) and through the sublayers any layer tracks: Keras 3 tracks every layer assigned
to an attribute of a layer, or held in a list or dict attribute, so the convolutions inside a
custom residual block (`self.c1 = Conv2D(...)`) or a KerasHub backbone's block layers are found
as well as the graph's own. Layers are named by *path*: the layer's name, prefixed by the names
of the models and layers it lives in (`"encoder/conv2d"`, `"res1/c1"`,
`"backbone/block_2_0/block_2_0_conv1"`); a top-level layer's path is its plain name. Users may
select a layer by its path or, when unique, by its plain name. A layer reached twice (shared
weights) is listed once, under its first path. Layers are listed depth first: a Functional or
Sequential model's in graph order, a custom layer's (which has no graph) in the order a forward
pass first calls them (`forward_trace`) where the model can run on an example input, and
otherwise in the order the layer holds them.

**Capture.** A conv inside a custom layer is not a node of any graph, so no
`keras.Model(inputs, layer.output)` can reach it. Its output is read while a forward pass runs:
`capture_outputs` replaces the layer's `call` (and, for pre-activations, its `activation`) by a
dispatcher for as long as any capture uses it. The dispatcher consults the captures active *on
the calling thread* only, so a training step or another request running the same model on
another thread computes exactly what it would without it; it is removed when the last capture
ends, however that ends. The captured tensor is the one the model goes on computing with, so a
gradient flows from it back to the input on every backend: inside a `tf.GradientTape`, inside a
function JAX differentiates (stateless calls), and through PyTorch's autograd. `override`
(switching a head's squashing off) is the same mechanism.

A conv that runs more than once in one forward pass (a block shared by two branches), that the
forward pass never calls, or that runs inside a compiled control flow (a `keras.ops` loop or
condition on JAX) whose values cannot be read out has no single output to draw:
`weights_only` names those with the reason, and the callbacks draw their weights only and say
why.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence

import keras
import numpy as np

__all__ = [
    "CONV_TYPES",
    "MAX_TAIL_EXTRAS",
    "Captured",
    "Extractor",
    "ForwardTrace",
    "StopForward",
    "Tail",
    "all_layers",
    "capture_outputs",
    "conv_layers",
    "extractor",
    "extractor_including",
    "extractors",
    "find_layer",
    "forward_trace",
    "graph_inputs",
    "has_graph",
    "input_shapes",
    "is_conv",
    "is_conv2d",
    "kernel_for_display",
    "output_shape",
    "probe_extractor",
    "override",
    "resolve_layers",
    "reusing_passes",
    "run_model",
    "tail",
    "weights_only",
]

logger = logging.getLogger(__name__)

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


# -- discovery -----------------------------------------------------------------------------------


def all_layers(model: keras.layers.Layer, inputs=None) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields `(path, layer)` for every layer reachable from `model`, depth first, each once.

    A Functional or Sequential model's graph layers come in graph order, then any other layer it
    tracks. Every layer's own sublayers follow it: those of a custom layer (or a subclassed
    model), which has no graph, in the order a forward pass first calls them (`forward_trace`,
    where the model can run on an example), else in the order it tracks them.

    Args:
        model: Any Keras 3 model or layer.
        inputs: An example input batch for the forward order; None: as `forward_trace`.

    Example:
        >>> inner = keras.Sequential([keras.layers.Conv2D(2, 3, name="c")], name="inner")
        >>> [p for p, _ in all_layers(keras.Sequential([inner]))]
        ['inner', 'inner/c']
    """
    yield from _walk(model, "", {id(model)}, forward_trace(model, inputs))


def _walk(layer, prefix: str, seen: set[int], trace):
    for path, child in _named_children(layer, prefix, trace):
        if id(child) in seen:
            continue  # shared: listed once, under its first path
        seen.add(id(child))
        yield path, child
        yield from _walk(child, f"{path}/", seen, trace)


def _named_children(layer, prefix: str, trace) -> list[tuple[str, keras.layers.Layer]]:
    """`(path, sublayer)`: a model's graph layers, then what `layer` tracks (forward order)."""
    graph = _graph(layer)
    # Keras 3 keeps the layers a layer tracks in `_layers`, read through `_flatten_layers`
    # (Keras 3.0 to 3.15 at least; `Model.layers` is the same call for a subclassed model).
    # There is no public accessor for a plain Layer, so read it defensively.
    try:
        tracked = list(layer._flatten_layers(include_self=False, recursive=False))
    except (AttributeError, TypeError):
        tracked = []
    known = {id(child) for child in graph}
    rest = [c for c in tracked if id(c) not in known and isinstance(c, keras.layers.Layer)]
    named, taken = [], set()
    for child in graph + rest:  # names first, so that a path never depends on the order
        path = f"{prefix}{child.name}"
        if path in taken:  # two sublayers of one layer with the same name
            path = f"{path}_{sum(p == path or p.startswith(path + '_') for p in taken)}"
        taken.add(path)
        named.append((path, child))
    if trace is not None:  # no graph to follow: the order the forward pass called them
        ungraphed = sorted(named[len(graph) :], key=lambda item: trace.position(item[1]))
        named = named[: len(graph)] + ungraphed
    return named


def _graph(layer) -> list[keras.layers.Layer]:
    """A Sequential or Functional model's layers in graph order; [] for anything else."""
    if isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and getattr(layer, "inputs", None)
    ):
        return list(layer.layers)
    return []


def conv_layers(model: keras.layers.Layer, inputs=None) -> list[tuple[str, keras.layers.Layer]]:
    """Returns `(path, layer)` for every conv layer of `model`, wherever it lives.

    Nested models and the sublayers of custom layers included. A conv layer the model holds but
    never built (the model is built) is left out: it has no weights and does not run.

    Args:
        model: Any Keras 3 model: Sequential, Functional, nested or subclassed.
        inputs: An example input batch (as the model takes it) for `forward_trace`, which
            orders the convs inside custom layers; None: the model's own input shape, when
            fully known.

    Returns:
        The conv layers in model order (`all_layers`): graph order, and inside a custom layer
        the order a forward pass meets them where that can be known.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1"),
        ...                       keras.layers.Flatten()])
        >>> [p for p, _ in conv_layers(m)]
        ['c1']
    """
    built = getattr(model, "built", False)
    return [
        (path, layer)
        for path, layer in all_layers(model, inputs)
        if is_conv(layer) and (layer.built or not built)
    ]


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
    name reports a bad one the same way. Layers inside custom layers count (`"res1/c1"`).

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
    if among is is_conv:
        valid = [p for p, _ in conv_layers(model)]
    else:
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
    model: keras.layers.Layer,
    names: Sequence[str] | str | None,
    argument: str = "layers",
    *,
    inputs=None,
) -> list[tuple[str, keras.layers.Layer]]:
    """Selects conv layers by path or plain name; `None` selects every conv layer.

    Args:
        model: The model.
        names: Layer paths or plain names, or `None`.
        argument: The argument name used in error messages.
        inputs: An example input batch for the forward order (`conv_layers`).

    Returns:
        `(path, layer)` pairs in the order given (forward order for `None`).

    Raises:
        ValueError: If the model has no conv layer, or a name matches no conv layer or is
            ambiguous. The message lists the valid names.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1")])
        >>> [p for p, _ in resolve_layers(m, ["c1"])]
        ['c1']
    """
    available = conv_layers(model, inputs)
    if not available:
        raise ValueError(
            f"The model {model.name!r} has no convolution layer to visualize, in its graph or "
            "inside its layers. Conv layers are instances of: "
            f"{', '.join(t.__name__ for t in CONV_TYPES)}."
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


def _depthwise(kernel: np.ndarray) -> np.ndarray:
    *spatial, channels, multiplier = kernel.shape
    return kernel.reshape(*spatial, 1, channels * multiplier)


def _numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


# -- what one forward pass shows -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ForwardTrace:
    """What one forward pass of a model showed of its layers (made by `forward_trace`).

    Attributes:
        order: `id(layer)` of every layer called, in the order of their first call.
        calls: `id(layer)` -> how many times the pass called it.
        shapes: `id(layer)` -> the shape of one example's output (its last call), for layers
            with one output tensor.
        opaque: `id(layer)` of conv layers whose output was not a value the pass could read
            (they ran inside a compiled loop or condition).
        input_shapes: The shapes of the example inputs, batch included.
    """

    order: tuple[int, ...]
    calls: Mapping[int, int]
    shapes: Mapping[int, tuple[int, ...]]
    opaque: frozenset[int]
    input_shapes: tuple[tuple[int, ...], ...]

    def position(self, layer) -> float:
        """Where `layer` first ran in the pass; infinity for a layer it never called."""
        if not hasattr(self, "_positions"):
            object.__setattr__(self, "_positions", {key: i for i, key in enumerate(self.order)})
        return float(self._positions.get(id(layer), math.inf))


# model -> {input shapes: ForwardTrace or None}. Weak: a trace never keeps a model alive.
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_trace(model: keras.layers.Layer, inputs=None) -> ForwardTrace | None:
    """Runs one forward pass of one example and records what every layer did.

    Cached per model and input shape: the first call costs one inference of one image, later
    calls nothing. The pass runs at inference (`training=False`) in a `keras.StatelessScope`,
    so no variable of the model changes.

    Args:
        model: A built Keras model.
        inputs: An example batch as the model takes it (only its first example runs); None: zeros
            of the model's own input shape when every dimension is known, else the trace an
            earlier call made, if any.

    Returns:
        A `ForwardTrace`, or None where the model cannot run here (not built, an input shape
        with free dimensions and no example, or a forward pass that fails).

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c")])
        >>> trace = forward_trace(m)
        >>> trace.calls[id(m.layers[0])], trace.shapes[id(m.layers[0])]
        (1, (6, 6, 4))
    """
    if not getattr(model, "built", False):
        return None
    known = _TRACES.setdefault(model, {})
    example = _first_example(inputs) if inputs is not None else _zero_inputs(model)
    if example is None:
        return next((t for t in known.values() if t is not None), None)
    key = tuple(tuple(a.shape) for a in keras.tree.flatten(example))
    if key not in known:
        known[key] = _trace(model, example, key)
    return known[key]


def _first_example(inputs):
    try:
        return keras.tree.map_structure(lambda a: np.asarray(a)[:1], inputs)
    except Exception:  # not arrays: no trace
        return None


def _zero_inputs(model):
    """Zeros of one example of each model input, where every input's shape is fully known."""
    shapes = input_shapes(model)
    if not shapes or any(d is None for shape in shapes for d in shape[1:]):
        return None
    dtypes = [getattr(t, "dtype", None) for t in (getattr(model, "inputs", None) or [])]
    zeros = [
        np.zeros((1, *shape[1:]), dtypes[i] if i < len(dtypes) and dtypes[i] else "float32")
        for i, shape in enumerate(shapes)
    ]
    return zeros if len(zeros) > 1 else zeros[0]


def _trace(model, example, input_shapes) -> ForwardTrace | None:
    layers = [layer for _, layer in _walk(model, "", {id(model)}, None)]
    convs = {id(layer) for layer in layers if is_conv(layer)}
    order: list[int] = []
    calls: collections.Counter = collections.Counter()
    shapes: dict[int, tuple[int, ...]] = {}
    opaque: set[int] = set()

    def watcher(key):
        def watch(proceed, *args, **kwargs):
            if key not in calls:
                order.append(key)
            calls[key] += 1
            out = proceed(*args, **kwargs)
            shape = getattr(out, "shape", None)
            if shape is not None:
                shapes[key] = tuple(int(d) if d is not None else None for d in shape[1:])
            if key in convs and not _readable(out):
                opaque.add(key)
            return out

        return watch

    hooks = [(layer, "call", watcher(id(layer))) for layer in layers]
    try:
        with keras.StatelessScope(), _intercepting(hooks):
            outputs = model(example, training=False)
    except Exception:  # a model that cannot run on this example: no trace, nothing lost
        return None
    if not all(_readable(out) for out in keras.tree.flatten(outputs)):
        return None  # called while somebody's compiled function traces: nothing can be read
    return ForwardTrace(tuple(order), dict(calls), shapes, frozenset(opaque), input_shapes)


def _readable(out) -> bool:
    """Whether a layer output holds values (not a tracer from inside a compiled loop)."""
    try:
        keras.ops.convert_to_numpy(out[:0])
    except Exception:
        return False
    return True


def input_shapes(model: keras.layers.Layer) -> list[tuple]:
    """The shapes (batch first) of the inputs `model` takes; empty when it cannot tell.

    A Functional or Sequential model's symbolic inputs; for a subclassed model, the shapes it
    was first called with.

    Example:
        >>> input_shapes(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)]))
        [(None, 8, 8, 3)]
    """
    inputs = getattr(model, "inputs", None)
    try:
        if inputs:
            return [tuple(t.shape) for t in inputs]
        return [tuple(model.input_shape)]
    except (AttributeError, ValueError, TypeError):
        pass
    # A subclassed model has no symbolic inputs; Keras records the shapes it was first called
    # with. There is no public accessor, so read it defensively and fall back to "unknown".
    recorded = getattr(model, "_build_shapes_dict", None)
    if not isinstance(recorded, dict) or not getattr(model, "built", False):
        return []
    return [tuple(shape) for shape in recorded.values() if isinstance(shape, tuple | list)]


def output_shape(model: keras.layers.Layer, layer: keras.layers.Layer) -> tuple | None:
    """The shape of one example's output of `layer` in `model` (no batch axis), or None.

    From the layer's symbolic output where it is a graph node, else from `forward_trace`.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> output_shape(m, m.layers[0])
        (6, 6, 4)
    """
    try:
        return tuple(layer.output.shape[1:])
    except (AttributeError, ValueError):  # not a graph node, or one called several times
        pass
    trace = forward_trace(model)
    return None if trace is None else trace.shapes.get(id(layer))


def weights_only(model: keras.layers.Layer, inputs=None) -> dict[str, str]:
    """The conv layers of `model` whose output cannot be drawn, each with the reason.

    A conv that runs more than once in one forward pass (a layer or block shared by several
    branches) has no single output; a conv the forward pass never calls has none; a conv inside
    a compiled loop or condition (`keras.ops.fori_loop`, `scan`, `cond` on JAX) has values the
    pass cannot read out. Their weights are drawn; feature maps, attribution, activation
    maximization and reference responses are not.

    Args:
        model: A built Keras model.
        inputs: An example batch, as for `forward_trace`.

    Returns:
        `{path: reason}`; empty where the model cannot run on an example here.

    Example:
        >>> conv = keras.layers.Conv2D(3, 3, padding="same", name="shared")
        >>> x = keras.Input((8, 8, 3))
        >>> m = keras.Model(x, conv(conv(x)))
        >>> print(weights_only(m)["shared"])
        weights only: it runs 2 times per forward pass (a shared layer or block)
    """
    trace = forward_trace(model, inputs)
    if trace is None:
        return {}
    reasons = {}
    for path, layer in conv_layers(model, inputs):
        calls = trace.calls.get(id(layer), 0)
        if id(layer) in trace.opaque:
            why = (
                "it runs inside a compiled loop or condition (keras.ops) whose values cannot "
                "be read out"
            )
        elif calls == 0:
            why = "the model's forward pass does not call it"
        elif calls > 1:
            why = f"it runs {calls} times per forward pass (a shared layer or block)"
        else:
            continue
        reasons[path] = f"weights only: {why}"
    return reasons


# -- one compiled pass for many layers ---------------------------------------------------------


class Extractor:
    """One compiled forward pass that returns the outputs of several layers of a model.

    Every selected layer's feature maps come from one pass of the inputs, wherever the layers
    live (graph nodes or convs inside custom layers: `capture_outputs` records them while the
    pass is traced). Made by `extractor(model, layers)`, which keeps one per model and layer
    set: it is traced once (`tb_cnnviz.backend.compile`: `tf.function` for any batch, `jax.jit`
    per padded batch size, eager on PyTorch) and every later epoch and `fit()` reuses it,
    reading the model's current weights. A model that cannot be traced (Python control flow on
    tensor values) is run eagerly instead, with the same results.

    Args:
        model: A built Keras model.
        layers: The layers whose outputs to return, each run once per forward pass.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1"),
        ...                       keras.layers.Conv2D(2, 3, name="c2")])
        >>> ex = extractor(m, m.layers)
        >>> [tuple(o.shape) for o in ex(np.zeros((3, 8, 8, 3), "float32"))]
        [(3, 6, 6, 4), (3, 4, 4, 2)]
    """

    def __init__(self, model: keras.layers.Layer, layers: Sequence[keras.layers.Layer]):
        from tb_cnnviz import backend

        self._backend = backend
        self._model = weakref.ref(model)
        self._layers = [weakref.ref(layer) for layer in layers]
        self._compiled: dict[tuple, Callable] = {}  # per input signature (ranks, dtypes)
        self._eager = False
        #: Whether the last call returned the outputs of an earlier one (`reusing_passes`).
        self.reused = False

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """The layers whose outputs it returns, in that order."""
        return [ref() for ref in self._layers]

    @property
    def tracing_count(self) -> int:
        """How many times the compiled pass was traced (1 for any batch on TensorFlow)."""
        return sum(self._backend.tracing_count(f) for f in self._compiled.values())

    def __call__(self, inputs, *, reuse: bool = False) -> list:
        """The layers' outputs (backend tensors) for `inputs`, an array or one per model input.

        With `reuse`, inside `reusing_passes` (on the calling thread), a call with the same
        inputs as one before with `reuse` returns that call's outputs, and `reused` says so.
        Without it nothing is kept (a batch of many, as the reference images' batches, is
        freed as soon as it is read).
        """
        arrays = [np.asarray(a) for a in (inputs if isinstance(inputs, list | tuple) else [inputs])]
        memo = getattr(_REUSE, "memo", None) if reuse else None
        key = (id(self), _digest(arrays)) if memo is not None else None
        if key is not None and key in memo:
            self.reused = True
            return list(memo[key])
        self.reused = False
        outs = self._outputs(arrays)
        if key is not None:
            memo[key] = outs
        return list(outs)

    def _outputs(self, arrays) -> list:
        n = len(arrays[0])
        if not self._eager:
            try:
                return self._compiled_call(arrays, n)
            except Exception:  # not traceable: eager from now on (capture works there too)
                logger.debug("tb-cnnviz: running the extractor eagerly", exc_info=True)
                self._eager = True
        return list(self._run(tuple(keras.ops.convert_to_tensor(a) for a in arrays)))

    def _compiled_call(self, arrays, n: int) -> list:
        backend = self._backend
        size = backend.batch_size(n)
        if size > n:  # JAX traces per shape: a few padded sizes serve every batch
            arrays = [
                np.concatenate([a, np.zeros((size - n, *a.shape[1:]), a.dtype)]) for a in arrays
            ]
        key = tuple((a.ndim, str(a.dtype)) for a in arrays)
        if key not in self._compiled:
            specs = tuple(backend.tensor_spec([None, *a.shape[1:]], str(a.dtype)) for a in arrays)
            model = self._model()
            self._compiled[key] = backend.compile(
                self._run, model.variables, input_signature=[specs]
            )
        outs = self._compiled[key](tuple(keras.ops.convert_to_tensor(a) for a in arrays))
        return [o[:n] for o in outs] if size > n else list(outs)

    def _run(self, inputs):
        model = self._model()
        layers = [ref() for ref in self._layers]
        with capture_outputs(layers) as captured:
            model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        for layer in layers:
            if captured.calls[id(layer)] != 1:
                raise ValueError(
                    f"layer {layer.name!r} runs {captured.calls[id(layer)]} times per forward "
                    "pass, so it has no one output"
                )
        return tuple(captured[id(layer)] for layer in layers)


# model -> {layer ids: Extractor}
_EXTRACTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# `.memo` on a thread inside `reusing_passes`: (id(extractor), digest of inputs) -> outputs
_REUSE = threading.local()


def _digest(arrays) -> tuple:
    return tuple(
        (
            a.shape,
            a.dtype.str,
            hashlib.blake2b(np.ascontiguousarray(a).data, digest_size=16).digest(),
        )
        for a in arrays
    )


@contextlib.contextmanager
def reusing_passes():
    """Inside it, on the calling thread, an `Extractor` called again with the same inputs and
    `reuse=True` returns the outputs of its first such call instead of running the model again.

    The callbacks draw a step inside it: the feature maps, Grad-CAM of the last conv and the
    probes' predictions all read the one pass of the probe images (on ResNet50 at 224, three
    passes of 0.4 s each before). The model's weights must not change inside it; the outputs
    are held until it ends. Nested, the outer one holds.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> ex, x = extractor(m, m.layers), np.zeros((2, 8, 8, 3), "float32")
        >>> with reusing_passes():
        ...     first, again = ex(x, reuse=True), ex(x, reuse=True)
        ...     reused = ex.reused
        >>> reused, first[0] is again[0]
        (True, True)
    """
    if getattr(_REUSE, "memo", None) is not None:
        yield
        return
    _REUSE.memo = {}
    try:
        yield
    finally:
        _REUSE.memo = None


def extractor(model: keras.layers.Layer, layers: Sequence[keras.layers.Layer]) -> Extractor:
    """The `Extractor` of `layers` in `model`: made once, reused by every later call.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> extractor(m, m.layers) is extractor(m, m.layers)
        True
    """
    known = _EXTRACTORS.setdefault(model, {})
    key = tuple(id(layer) for layer in layers)
    if key not in known:
        known[key] = Extractor(model, layers)
    return known[key]


def probe_extractor(model: keras.layers.Layer, layers: Sequence[keras.layers.Layer]) -> Extractor:
    """The `Extractor` the callbacks share for `layers`: theirs, and, where the model's last conv
    is among them in a one-input model, what the small model after it also reads (`Tail.extras`:
    a ResNet's last skip tensor), so that Grad-CAM of that conv runs from this pass and the
    tail. Its first `len(layers)` outputs are the layers'.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> probe_extractor(m, m.layers) is extractor(m, m.layers)
        True
    """
    convs = conv_layers(model)
    last = convs[-1][1] if convs else None
    after = None
    if any(last is layer for layer in layers) and len(input_shapes(model)) == 1:
        after = tail(model, last)
    extras = [e for e in (after.extras if after else ()) if not any(e is x for x in layers)]
    return extractor(model, [*layers, *extras])


# -- capture and override: one mechanism ---------------------------------------------------------


class StopForward(BaseException):  # noqa: N818  (a signal, not an error)
    """Raised by `capture_outputs(..., stop=True)` once every layer it records has run.

    It ends the forward pass there: the rest of the model is neither computed nor traced, which
    makes reading an early layer as cheap as a model cut at that layer, wherever the layer lives,
    and lets a model whose head only fits one input size run on a smaller image up to the layer.
    A `BaseException`, so that no `except Exception` on the way (Keras' own error reporting)
    takes it for an error; catch it around the model call.
    """


def extractors(model: keras.layers.Layer) -> list[Extractor]:
    """The `Extractor`s made for `model` so far, widest first.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> ex = extractor(m, m.layers)
        >>> extractors(m) == [ex]
        True
    """
    return sorted(_EXTRACTORS.get(model, {}).values(), key=lambda ex: -len(ex._layers))


def extractor_including(
    model: keras.layers.Layer, layer: keras.layers.Layer
) -> tuple[Extractor, int] | None:
    """An `Extractor` of `model` already made whose layers include `layer`, and its index there.

    A caller that needs one layer's output reuses a pass another made (and traced) for many
    layers instead of tracing its own: the feature maps' pass, traced before the first epoch,
    serves Grad-CAM's last conv layer. The widest such pass is returned, None if there is none.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                       keras.layers.Conv2D(2, 3)])
        >>> extractor_including(m, m.layers[1]) is None
        True
        >>> ex = extractor(m, m.layers)
        >>> extractor_including(m, m.layers[1]) == (ex, 1)
        True
    """
    found = None
    for ex in list(_EXTRACTORS.get(model, {}).values()):
        layers = [ref() for ref in ex._layers]
        for index, candidate in enumerate(layers):
            if candidate is layer and (found is None or len(layers) > len(found[0]._layers)):
                found = (ex, index)
    return found


#: A tail reads at most this many tensors besides its layer's output (the skip tensors of the
#: residual sums after it); a cut crossed by more is no small model of its own.
MAX_TAIL_EXTRAS = 4


class Tail:
    """The part of a graph model after one of its layers (`tail`): a function of the layer's
    output, and of the few tensors from before the layer that the rest of the model also reads
    (a residual sum's skip tensor), to the model's outputs.

    Attributes:
        function: The `keras.Function` from `[layer's output, *extras' outputs]` (the layer's
            output alone where there are no extras) to the model's outputs; it runs the
            model's own layers and weights.
        extras: The layers whose outputs it reads besides the layer's own, in its input order:
            each a node of the model's graph, called once, with one output.
        operations: The operations it runs, in order (`function.operations`).

    Example:
        >>> i = keras.Input((8, 8, 3))
        >>> skip = keras.layers.Conv2D(3, 3, padding="same", name="skip")(i)
        >>> branch = keras.layers.Conv2D(3, 3, padding="same", name="branch")(skip)
        >>> m = keras.Model(i, keras.layers.Add(name="sum")([skip, branch]))
        >>> t = tail(m, m.get_layer("branch"))  # None on Keras 3.6 (see `tail`)
        >>> t is None or [layer.name for layer in t.extras] == ["skip"]
        True
        >>> t is None or [op.name for op in t.operations] == ["sum"]
        True
        >>> a = np.ones((1, 8, 8, 3), "float32")
        >>> t is None or float(keras.ops.convert_to_numpy(t(a, [a])).max()) == 2.0
        True
    """

    def __init__(self, function: keras.Function, extras: Sequence[keras.layers.Layer] = ()):
        self.function = function
        self.extras = tuple(extras)

    @property
    def operations(self) -> list:
        return self.function.operations

    def __call__(self, activations, extras: Sequence = ()):
        """The model's outputs from the layer's output and, in `extras`' order, the extras'."""
        if len(extras) != len(self.extras):
            raise ValueError(
                f"this tail reads {len(self.extras)} tensors besides the layer's output "
                f"({[layer.name for layer in self.extras]}). Received: {len(extras)}"
            )
        return self.function([activations, *extras] if self.extras else activations)


def tail(model: keras.layers.Layer, layer: keras.layers.Layer) -> Tail | None:
    """The part of a graph model after one of its layers (a `Tail`), running the model's own
    layers (and weights); None where there is none.

    There is one where `layer` is a node of the model's own graph, called once, with one
    output, and what the model computes after it reads, besides its output, at most
    `MAX_TAIL_EXTRAS` other tensors (`Tail.extras`), each the one output of a layer of the
    graph called once: the last conv layer of MobileNet, EfficientNet or a plain CNN (no
    extras), followed by normalization, pooling and dense layers, or a ResNet's last conv,
    whose residual sum also reads the block's input (one extra). Grad-CAM then needs only the
    gradient of this small function at the layer's output, not a backward pass of the whole
    model. There is none for a layer inside a nested model or custom layer, a layer called
    twice, or any layer where this Keras builds no function from an inner tensor (Keras 3.6:
    "Graph disconnected"); callers then run the whole model, as before. Nothing is added to
    the model's graph (a `keras.Model` from an inner tensor would call its layers again).

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"),
        ...                       keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
        >>> t = tail(m, m.get_layer("c"))
        >>> t.extras, tuple(t(np.zeros((1, 6, 6, 4), "float32")).shape)
        ((), (1, 2))
    """
    known = _TAILS.setdefault(model, {})
    if id(layer) not in known:
        known[id(layer)] = _make_tail(model, layer)
    return known[id(layer)]


def _make_tail(model, layer) -> Tail | None:
    reads = graph_inputs(model)
    if reads is None or id(layer) not in reads:
        return None
    try:
        nodes = layer._inbound_nodes
        outputs = keras.tree.flatten(nodes[0].output_tensors) if len(nodes) == 1 else []
        # A Sequential model that `fit()` built holds its first batch's size in its graph, and a
        # `keras.Function` checks its inputs' shapes against it.
        if len(outputs) != 1 or outputs[0].shape[0] is not None:
            return None
        try:
            ends = model.output  # the model's own structure (a dict of named outputs stays one)
        except (AttributeError, ValueError):  # a Sequential model keeps only the flat list
            ends = model.outputs[0] if len(model.outputs) == 1 else model.outputs
        cut = _cut(model, nodes[0])
        if cut is None or len(cut[0]) > MAX_TAIL_EXTRAS:
            return None
        extras, operations = cut
        for extra, _ in extras:
            if id(extra) not in reads:  # called more than once: no one output to read
                return None
        inputs = [outputs[0], *(tensor for _, tensor in extras)]
        # Keras refuses a function whose outputs need a tensor other than its inputs ("not
        # connected"): a cut `_cut` got wrong fails here, never silently.
        function = keras.Function(
            inputs if extras else outputs[0], ends, name=f"{model.name}_after_{layer.name}"
        )
        # Keras 3.6 builds a function from inner tensors that holds the operations before
        # them too, and runs each one whose inputs it has: harmless from the layer's output
        # alone (what reads it comes after the cut), but from a skip tensor it would compute
        # the layer's output again, over the one it was given. Such a tail is refused.
        if extras and {id(op) for op in function.operations} != operations:
            return None
        return Tail(function, [extra for extra, _ in extras])
    except Exception:  # any refusal means no tail: callers take the whole model
        return None


def _cut(model, start) -> tuple[list[tuple[keras.layers.Layer, object]], set[int]] | None:
    """`(crossing, operations)`: the tensors that cross from before `start` (a node) into what
    the model computes after it, `(layer, its output tensor)` for each in the graph's order, and
    the ids of the operations after it; None where a model input crosses (the tail would read
    the image itself) or a tensor is not its layer's one output.
    """

    def node_of(tensor):
        op, node_index, _ = tensor._keras_history
        return op._inbound_nodes[node_index]

    inputs = {id(t) for t in keras.tree.flatten(model.inputs)}
    after: dict[int, bool] = {}  # id(node) -> whether it reads `start`'s output, at any remove
    order: list = []
    # Depth first from the outputs, without recursion (a 500-layer graph).
    stack = [(node_of(t), False) for t in keras.tree.flatten(model.outputs)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in after:
            continue
        if node is start:
            after[id(node)] = True
            continue
        tensors = [t for t in keras.tree.flatten(node.input_tensors) if id(t) not in inputs]
        if not expanded:
            stack.append((node, True))
            stack.extend((node_of(t), False) for t in tensors)
            continue
        after[id(node)] = any(after[id(node_of(t))] for t in tensors)
        order.append(node)
    crossing: dict[int, tuple] = {}
    for node in order:
        if not after[id(node)]:
            continue
        for tensor in keras.tree.flatten(node.input_tensors):
            if id(tensor) in inputs:
                return None
            source = node_of(tensor)
            if source is start or after[id(source)] or id(tensor) in crossing:
                continue
            if len(keras.tree.flatten(source.output_tensors)) != 1:
                return None
            crossing[id(tensor)] = (source.operation, tensor)
    operations = {id(node.operation) for node in order if after[id(node)]}
    return list(crossing.values()), operations


# model -> {id(layer): its tail or None}
_TAILS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def has_graph(model: keras.layers.Layer) -> bool:
    """Whether `model` is a Functional or Sequential model (one that has a graph of layers).

    Example:
        >>> has_graph(keras.Sequential([keras.layers.Dense(2)])), has_graph(keras.layers.Dense(2))
        (True, False)
    """
    return bool(_graph(model))


def graph_inputs(model: keras.layers.Layer) -> dict[int, frozenset[int]] | None:
    """Which of a graph model's inputs each of its own layers reads, from the graph alone.

    Walks the Functional (or Sequential) graph from the model's outputs back to its inputs; no
    forward pass runs, so it costs nothing next to the eager passes it spares (a second or more
    on a 224-pixel keras.applications model). Every layer in the graph leads to an output:
    Keras keeps only the operations between the inputs and the outputs.

    Args:
        model: A Keras model.

    Returns:
        `id(layer)` -> the indices (in `model.inputs`) of the inputs it depends on, for each
        layer the graph calls exactly once; None for a model without a graph (subclassed) or
        whose graph cannot be read. Layers inside a nested model or a custom layer are not
        graph nodes of `model` and are not listed.

    Example:
        >>> a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
        >>> d = keras.layers.Dense(4, name="d")
        >>> m = keras.Model([a, b], keras.layers.Add()([d(a), b]))
        >>> sorted(graph_inputs(m)[id(d)])
        [0]
    """
    if not has_graph(model):
        return None
    try:
        inputs = keras.tree.flatten(model.inputs)
        outputs = keras.tree.flatten(model.outputs)
        index = {id(t): i for i, t in enumerate(inputs)}
        reach: dict[int, frozenset[int]] = {}  # id(node) -> inputs it depends on
        calls: collections.Counter = collections.Counter()
        layer_reach: dict[int, frozenset[int]] = {}

        def node_of(tensor):
            op, node_index, _ = tensor._keras_history
            return op._inbound_nodes[node_index]

        # Depth first, without recursion: a 500-layer graph would exceed Python's stack.
        stack = [(node_of(t), False) for t in outputs]
        while stack:
            node, expanded = stack.pop()
            if id(node) in reach:
                continue
            tensors = keras.tree.flatten(node.input_tensors)
            if not expanded:
                stack.append((node, True))
                stack.extend((node_of(t), False) for t in tensors if id(t) not in index)
                continue
            found = {index[id(t)] for t in tensors if id(t) in index}
            if node.is_input:
                found |= {index[id(t)] for t in keras.tree.flatten(node.output_tensors)}
            for t in tensors:
                if id(t) not in index:
                    found |= reach[id(node_of(t))]
            reach[id(node)] = frozenset(found)
            calls[id(node.operation)] += 1
            layer_reach[id(node.operation)] = reach[id(node)]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None  # a graph this Keras lays out otherwise: callers run the model instead
    return {key: found for key, found in layer_reach.items() if calls[key] == 1}


def run_model(model: keras.layers.Layer, inputs, *, any_size: bool = False):
    """Calls `model` at inference; `any_size` also lets a graph model run on inputs of another
    spatial size than it was built for (its convolutions can).

    A Functional model checks its inputs against the shape it was built with; its `call` runs
    the same graph without that check (each layer still checks what it needs).

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
        >>> tuple(run_model(m, np.zeros((1, 12, 12, 3), "float32"), any_size=True).shape)
        (1, 10, 10, 2)
    """
    if any_size and has_graph(model):
        return model.call(inputs, training=False)
    return model(inputs, training=False)


class Captured(dict):
    """What `capture_outputs` recorded: `id(layer)` -> the layer's last output.

    Attributes:
        calls: `id(layer)` -> how many times the layer ran inside the capture.
        pre: `id(layer)` -> the layer's last output before its activation function (for the
            layers asked for with `pre_activation`).
    """

    def __init__(self):
        super().__init__()
        self.calls: collections.Counter = collections.Counter()
        self.pre: dict[int, object] = {}


@contextlib.contextmanager
def capture_outputs(
    layers: Sequence[keras.layers.Layer],
    *,
    add: Mapping[int, object] | None = None,
    pre_activation: Sequence[keras.layers.Layer] = (),
    stop: bool = False,
) -> Iterator[Captured]:
    """Records the outputs of `layers` during forward passes run inside the block.

    Works for layers anywhere in a model: graph nodes, layers nested in sub-models and in
    subclassed models, and sublayers of custom layers, which no Functional sub-model can reach.
    Only forward passes on this thread are recorded; the layers are restored on exit, however
    it happens. Captures nest, and several threads may capture the same layers at once.

    `add` maps `id(layer)` to a tensor added to that layer's output (cast to its dtype) before
    the rest of the model reads it: differentiating with respect to a zero tensor added so gives
    the gradient with respect to the layer's output on every backend (JAX cannot differentiate
    with respect to an intermediate tensor otherwise).

    Args:
        layers: The layers whose outputs to record.
        add: Optional tensors to add to outputs, by `id(layer)`.
        pre_activation: Layers whose output before their `activation` to record as well (in
            `Captured.pre`).
        stop: Raise `StopForward` as soon as every layer of `layers` has run: the forward pass
            ends there (catch it around the model call).

    Yields:
        A `Captured` dict, filled as the model runs.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1")])
        >>> with capture_outputs([m.layers[0]]) as out:
        ...     _ = m(np.zeros((1, 8, 8, 3), "float32"))
        >>> tuple(out[id(m.layers[0])].shape), out.calls[id(m.layers[0])]
        ((1, 6, 6, 4), 1)
    """
    captured = Captured()
    wanted = {id(layer) for layer in layers}

    def recorder(key, extra):
        def record(proceed, *args, **kwargs):
            out = proceed(*args, **kwargs)
            if extra is not None:
                out = out + keras.ops.cast(extra, out.dtype)
            captured[key] = out
            captured.calls[key] += 1
            if stop and wanted <= captured.keys():
                raise StopForward(key)
            return out

        return record

    def pre_recorder(key):
        def record(proceed, x):
            captured.pre[key] = x
            return proceed(x)

        return record

    hooks = [
        (layer, "call", recorder(id(layer), None if add is None else add.get(id(layer))))
        for layer in layers
    ]
    hooks += [
        (layer, "activation", pre_recorder(id(layer)))
        for layer in pre_activation
        if callable(getattr(layer, "activation", None))
    ]
    with _intercepting(hooks):
        yield captured


@contextlib.contextmanager
def override(
    layer: keras.layers.Layer,
    *,
    call: Callable | None = None,
    activation: Callable | None = None,
) -> Iterator[None]:
    """Makes `layer` compute something else while inside, on this thread only.

    Args:
        layer: The layer.
        call: Replaces the layer's `call(*args, **kwargs)`.
        activation: Replaces the function the layer applies as its `activation`.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="relu")])
        >>> x = -np.ones((1, 2), "float32")
        >>> with override(m.layers[0], activation=keras.activations.linear):
        ...     raw = keras.ops.convert_to_numpy(m(x))
        >>> bool((keras.ops.convert_to_numpy(m(x)) >= 0).all()), bool((raw == 0).all())
        (True, False)
    """
    hooks = []
    if call is not None:
        hooks.append((layer, "call", lambda proceed, *args, **kwargs: call(*args, **kwargs)))
    if activation is not None:
        hooks.append((layer, "activation", lambda proceed, x: activation(x)))
    with _intercepting(hooks):
        yield


# The machinery. While any interception of a layer's attribute (`call` or `activation`) is
# active on any thread, that attribute is replaced, on the instance, by a dispatcher (Keras'
# attribute tracking is bypassed: it is a temporary instance override). The dispatcher runs the
# hooks that the *calling* thread's active interceptions hold for that layer, outermost first,
# each wrapping the next and the original last; with none, it calls the original. Patches are
# counted: the last interception to end restores the attribute as it was.

_MISSING = object()
_LOCK = threading.Lock()
_PATCHES: dict[tuple[int, str], _Patch] = {}
_LOCAL = threading.local()


class _Patch:
    """One attribute of one layer replaced by a dispatcher, while `users` interceptions last."""

    def __init__(self, layer, attr: str):
        self.layer, self.attr, self.users = layer, attr, 0
        self.saved = layer.__dict__.get(attr, _MISSING)
        original = getattr(layer, attr)
        key = (id(layer), attr)

        def dispatch(*args, **kwargs):
            return _dispatch(key, original, args, kwargs)

        object.__setattr__(layer, attr, dispatch)

    def restore(self) -> None:
        if self.saved is _MISSING:
            object.__delattr__(self.layer, self.attr)
        else:
            object.__setattr__(self.layer, self.attr, self.saved)


def _active() -> list[dict]:
    stack = getattr(_LOCAL, "stack", None)
    if stack is None:
        stack = _LOCAL.stack = []
    return stack


def _dispatch(key, original, args, kwargs):
    chain = [table[key] for table in _active() if key in table]
    if not chain:
        return original(*args, **kwargs)

    def step(i, args, kwargs):
        if i == len(chain):
            return original(*args, **kwargs)
        return chain[i](lambda *a, **kw: step(i + 1, a, kw), *args, **kwargs)

    return step(0, args, kwargs)


@contextlib.contextmanager
def _intercepting(hooks):
    """Activates `hooks`, `(layer, attr, hook(proceed, *args, **kwargs))`, on this thread."""
    table = {(id(layer), attr): hook for layer, attr, hook in hooks}
    patched: list[tuple[int, str]] = []
    stack = _active()
    try:
        with _LOCK:
            for layer, attr, _ in hooks:
                key = (id(layer), attr)
                if key in patched:
                    continue
                if key not in _PATCHES:
                    _PATCHES[key] = _Patch(layer, attr)
                _PATCHES[key].users += 1
                patched.append(key)
        stack.append(table)
        yield
    finally:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is table:
                del stack[i]
                break
        with _LOCK:
            for key in patched:
                patch = _PATCHES[key]
                patch.users -= 1
                if patch.users == 0:
                    patch.restore()
                    del _PATCHES[key]
