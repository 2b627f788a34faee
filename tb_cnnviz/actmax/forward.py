"""Reading the layers an objective needs from any Keras model, inside a compiled step.

Two ways, chosen per model:

* a truncated feature extractor `keras.Model(model.inputs, [layer.output, ...])`, when every
  layer read is a top-level layer of a Functional or Sequential model: it runs only the layers
  the objective depends on, the cheapest forward pass there is;
* otherwise (a layer inside a nested sub-model or a custom layer, a subclassed model, the
  model's logits) the model runs while `tb_cnnviz.layers.capture_outputs` records the layers,
  and stops as soon as the last of them ran (`StopForward`; the logits need the whole model).
  A nested Functional sub-model's layers live in the sub-model's own graph, and a custom
  layer's convs in no graph at all, so the outer model cannot be cut there.

With `any_size`, either way runs on images of another size than the model was built for (a
receptive-field canvas, `receptive_field`).

Conv outputs are handed to objectives channels last, whatever the layer's `data_format`.
Backend-neutral: the hooks work while TensorFlow or JAX trace, and in PyTorch's eager calls.
"""

from __future__ import annotations

import contextlib
import math
import weakref

import keras
import numpy as np
from keras import ops

from tb_cnnviz import backend, heads
from tb_cnnviz import layers as layer_lib
from tb_cnnviz.actmax.objectives import LOGITS

__all__ = [
    "ModelReader",
    "derived_field",
    "find_layer",
    "image_input_shape",
    "measured_field",
    "receptive_field",
]


def image_input_shape(model: keras.Model) -> tuple:
    """Returns the `(h, w, c)` a single-image-input model expects (`None` for free dimensions).

    Raises:
        ValueError: If the model is not built, has several inputs, or its input is not an image
            batch `[n, h, w, c]`.

    Example:
        >>> model = keras.Sequential([keras.Input((28, 20, 1)), keras.layers.Conv2D(2, 3)])
        >>> image_input_shape(model)
        (28, 20, 1)
    """
    shapes = layer_lib.input_shapes(model)
    if not shapes:
        raise ValueError(
            f"Cannot tell what input the model {model.name!r} expects: build it first (call it on "
            "a batch, or give the first layer a keras.Input). Received: model is not built"
        ) from None
    if len(shapes) != 1:
        raise ValueError(
            "Activation maximization needs a model with one image input. "
            f"Received: model with {len(shapes)} inputs of shapes {shapes}"
        )
    shape = shapes[0]
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(
            "Activation maximization needs an image input [batch, height, width, channels]. "
            f"Received: input shape {shape}"
        )
    return tuple(None if d is None else int(d) for d in shape[1:])


def find_layer(model: keras.Model, name: str, argument: str, *, conv: bool):
    """Returns `(path, layer)` for a layer an objective reads (`tb_cnnviz.layers.find_layer`).

    Args:
        model: The model.
        name: The layer's path (`outer/inner`) or plain name.
        argument: The argument the name came from, for the message.
        conv: Whether the caller needs a 2-D conv layer's feature maps.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c")])
        >>> find_layer(m, "c", "layer", conv=True)[0]
        'c'
    """
    if not conv:
        path, layer = layer_lib.find_layer(model, name, argument)
    else:
        path, layer = layer_lib.find_layer(
            model, name, argument, among=layer_lib.is_conv2d, need="a 2-D conv layer"
        )
    why = layer_lib.weights_only(model).get(path)
    if why is not None:
        raise ValueError(
            f"{argument}: {path!r} has no output activation maximization can read ({why}). "
            f"Received: {argument}={name!r}"
        )
    return path, layer


# model -> {layer path: (h, w)}. Weak: the cache never keeps a model alive.
_FIELDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Where the input size is free: the size the receptive field is measured at.
FREE_SIZE = 128


def receptive_field(model: keras.Model, layer: str) -> tuple[int, int]:
    """The input pixels the centre position of a conv layer reads: its receptive field `(h, w)`.

    Where the layer is a top-level layer of a Functional or Sequential model and every layer
    between it and the input is one whose field is known (convs, pooling, normalization,
    activations, padding, merges; global pooling reads everything), the field is derived from
    kernel sizes, strides and dilations through the graph, residual branches included: no pass
    of the model. Otherwise (custom blocks, nested models, an unknown op on the way) it is
    measured: the gradient of the layer's centre position, all its filters together, with
    respect to four random images is nonzero exactly on the pixels that reach it (a ReLU can
    gate a pixel off for one image, hardly for all four and every filter); one forward and
    backward pass up to the layer. Both agree where both apply (tests/test_actmax.py pins it on
    keras.applications models). Cached per model and layer; at most the input size.

    Example:
        >>> m = keras.Sequential([keras.Input((32, 32, 3)),
        ...     keras.layers.Conv2D(4, 3, padding="same", name="a"),
        ...     keras.layers.Conv2D(4, 5, strides=2, padding="same", name="b")])
        >>> receptive_field(m, "a"), receptive_field(m, "b")
        ((3, 3), (7, 7))
    """
    known = _FIELDS.setdefault(model, {})
    if layer in known:
        return known[layer]
    path, _ = find_layer(model, layer, "layer", conv=True)
    derived = derived_field(model, path)
    if derived is not None:
        known[path] = known[layer] = derived
        return derived
    return measured_field(model, path)


def measured_field(model: keras.Model, path: str) -> tuple[int, int]:
    """The receptive field of the conv layer at `path`, measured by one backward pass (see
    `receptive_field`); cached as `receptive_field`'s.

    Example:
        >>> m = keras.Sequential([keras.Input((32, 32, 3)),
        ...     keras.layers.Conv2D(4, 5, strides=2, padding="same", name="b")])
        >>> measured_field(m, "b")
        (5, 5)
    """
    known = _FIELDS.setdefault(model, {})
    reader = ModelReader(model, {path: "feature_maps"})
    h, w, c = (d or FREE_SIZE for d in reader.input_shape)
    images = np.random.default_rng(0).random((4, h, w, c), dtype=np.float32)

    def centre(x):
        outs, _ = reader(x)
        maps = ops.cast(outs[path], "float32")
        return ops.sum(maps[:, maps.shape[1] // 2, maps.shape[2] // 2, :]), None

    with keras.StatelessScope(), reader.active():
        _, grad = backend.value_and_grad(centre)(ops.convert_to_tensor(images))
    reached = np.abs(backend.to_numpy(grad)).sum(axis=(0, 3)) > 0
    rows, cols = np.flatnonzero(reached.any(axis=1)), np.flatnonzero(reached.any(axis=0))
    field = (1, 1) if not len(rows) else (int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))
    known[path] = field
    return field


# Layers whose output position reads the same position of their inputs (per spatial axis).
_POINTWISE = (
    "Activation", "BatchNormalization", "LayerNormalization", "GroupNormalization",
    "UnitNormalization", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Dropout",
    "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Rescaling",
    "Normalization", "Identity", "InputLayer", "Add", "Subtract", "Multiply", "Average",
    "Maximum", "Minimum", "Concatenate", "Dense", "EinsumDense", "ZeroPadding2D", "Cropping2D",
    "CenterCrop",
)  # fmt: skip
# Layers whose every output reads every input position (as far as the field goes).
_GLOBAL = (
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
    "GlobalMaxPooling1D", "Flatten", "Reshape",
)  # fmt: skip
_WHOLE = (math.inf, math.inf, 1, 1)  # a field as large as the input


def derived_field(model: keras.Model, path: str) -> tuple[int, int] | None:
    """The receptive field of a top-level conv layer from the model's graph; None where a
    layer on the way (or the model's structure) does not tell it.

    Example:
        >>> m = keras.Sequential([keras.Input((32, 32, 3)),
        ...     keras.layers.Conv2D(4, 3, padding="same", name="a"),
        ...     keras.layers.MaxPooling2D(2),
        ...     keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same", name="b")])
        >>> derived_field(m, "a"), derived_field(m, "b")
        ((3, 3), (12, 12))
    """
    graph = getattr(model, "_functional", None) or model  # a Sequential's graph
    by_depth = getattr(graph, "_nodes_by_depth", None)
    inputs = getattr(graph, "inputs", None)
    if not by_depth or not inputs or len(inputs) != 1 or "/" in path:
        return None
    try:
        target = model.get_layer(path)
    except ValueError:
        return None
    nodes = getattr(target, "_inbound_nodes", [])
    if len(nodes) != 1:  # a layer called twice has two fields
        return None
    state = {id(inputs[0]): (1, 1, 1, 1)}  # tensor -> (field h, field w, jump h, jump w)
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            ins = [state.get(id(t)) for t in node.input_tensors]
            if not ins or any(i is None for i in ins):
                continue  # it does not (only) read the image: its outputs stay unknown
            out = _field_step(node.operation, ins)
            for t in node.output_tensors:
                if out is not None:
                    state[id(t)] = out
            if node is nodes[0]:
                if out is None or math.isinf(out[0]) or len(node.output_tensors) != 1:
                    return None if out is None else _input_size(model)
                full = _input_size(model)
                return (min(int(out[0]), full[0]), min(int(out[1]), full[1]))
    return None


def _input_size(model) -> tuple[int, int]:
    h, w, _ = (d or FREE_SIZE for d in image_input_shape(model))
    return h, w


def _field_step(op, ins):
    """The field an operation's output has, from its inputs' (or None where it cannot tell)."""
    name = type(op).__name__
    if name in _GLOBAL:
        return _WHOLE
    merged = tuple(max(i[k] for i in ins) for k in range(4))
    if name in _POINTWISE:
        return merged
    if isinstance(op, keras.layers.Conv2DTranspose) or len(ins) != 1:
        return None
    if isinstance(op, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
        kernel, strides, dilation = op.kernel_size, op.strides, op.dilation_rate
    elif name in ("SeparableConv2D",):
        kernel, strides, dilation = op.kernel_size, op.strides, op.dilation_rate
    elif name in ("MaxPooling2D", "AveragePooling2D"):
        kernel, strides, dilation = op.pool_size, op.strides, (1, 1)
    else:
        return None
    if getattr(op, "data_format", "channels_last") != "channels_last":
        return None
    fh, fw, jh, jw = merged
    return (
        fh + (kernel[0] - 1) * dilation[0] * jh,
        fw + (kernel[1] - 1) * dilation[1] * jw,
        jh * strides[0],
        jw * strides[1],
    )


class ModelReader:
    """Maps an image batch to the outputs (and pre-activations) of the layers an objective needs.

    Call it inside `reader.active()`: that context hooks the layers read (recording nested
    layers' outputs and, where asked, their outputs before the activation function) and bypasses
    a final softmax while the compiled step traces and runs.

    Args:
        model: A built Keras model with one image input.
        needs: `Objective.needs`: layer name -> `"output"`, `"feature_maps"` (a conv layer) or
            `"pre_activation"` (a conv layer, read before its activation too); `LOGITS` means
            the model's pre-softmax output.
        argument: The argument the layer names came from, for error messages.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c")])
        >>> reader = ModelReader(m, {"c": "feature_maps"})
        >>> with reader.active():
        ...     outputs, pre = reader(ops.zeros((1, 8, 8, 3)))
        >>> tuple(outputs["c"].shape)
        (1, 6, 6, 2)
    """

    def __init__(self, model: keras.Model, needs, argument: str = "layer"):
        self.model = model
        #: Run the model on images of any spatial size (a receptive-field canvas), not only the
        #: size it was built for: `tb_cnnviz.layers.run_model(any_size=True)`.
        self.any_size = False
        self.input_shape = image_input_shape(model)
        self._layers = {
            name: find_layer(model, name, argument, conv=need != "output")
            for name, need in needs.items()
            if name != LOGITS
        }
        self._pre_names = [name for name, need in needs.items() if need == "pre_activation"]
        self._logits = LOGITS in needs
        # How class scores are read (tb_cnnviz.heads, as attribution reads them): the model's
        # first output.
        self.head = heads.read(model) if self._logits else None
        # Filled while tracing inside `active()`: outputs and pre-activations by layer id.
        self._captured = layer_lib.Captured()
        self._extractor = None if self._logits else self._truncate()

    def channels(self, name: str) -> int | None:
        """The channels of a conv layer's maps where its output shape is known without running
        the model (a graph node, or one the cached forward trace saw), else None.

        Example:
            >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c")])
            >>> ModelReader(m, {"c": "feature_maps"}).channels("c")
            2
        """
        if name not in self._layers:
            return None
        _, layer = self._layers[name]
        if not layer_lib.is_conv(layer):
            return None
        shape = layer_lib.output_shape(self.model, layer)
        if not shape:
            return None
        first = getattr(layer, "data_format", "channels_last") == "channels_first"
        channels = shape[0] if first else shape[-1]
        return int(channels) if channels else None

    @property
    def truncated(self) -> bool:
        """Whether a truncated feature extractor runs instead of the whole model."""
        return self._extractor is not None

    def __call__(self, images) -> tuple[dict[str, object], dict[str, object]]:
        """Returns `(outputs, pre_activations)`, each `{layer name: tensor}`, conv maps channels
        last."""
        names = list(self._layers)
        if self._extractor is not None:
            outs = layer_lib.run_model(self._extractor, images, any_size=self.any_size)
            outs = outs if isinstance(outs, list | tuple) else [outs]
            outputs = dict(zip(names, outs, strict=True))
        else:
            try:
                logits = layer_lib.run_model(self.model, images, any_size=self.any_size)
            except layer_lib.StopForward:  # every layer read: the rest of the model need not run
                logits = None
            outputs = {name: self._recorded(name) for name in names}
            if self._logits:
                first = keras.tree.flatten(logits)[self.head.output]
                outputs[LOGITS] = ops.reshape(first, (-1, self.head.units))
        pre = {name: self._recorded(name, pre=True) for name in self._pre_names}
        for table in (outputs, pre):
            for name in table:
                layer = self._layers[name][1] if name in self._layers else None
                if getattr(layer, "data_format", "channels_last") == "channels_first":
                    table[name] = ops.moveaxis(table[name], 1, -1)
        return outputs, pre

    @contextlib.contextmanager
    def active(self):
        """Hooks the model for `__call__`: records layers, bypasses a final softmax."""
        pre_layers = [self._layers[name][1] for name in self._pre_names]
        with contextlib.ExitStack() as stack:
            if self._logits:
                stack.enter_context(heads.logits(self.model))
            if self._extractor is None or pre_layers:
                whole = self._extractor is None
                layers = self._hooked_layers() if whole else pre_layers
                # Without logits to read, the pass stops at the last layer read.
                self._captured = stack.enter_context(
                    layer_lib.capture_outputs(
                        layers, pre_activation=pre_layers, stop=whole and not self._logits
                    )
                )
            try:
                yield
            finally:
                self._captured = layer_lib.Captured()

    def _hooked_layers(self) -> list:
        return list({id(layer): layer for _, layer in self._layers.values()}.values())

    def _recorded(self, name: str, pre: bool = False):
        key = id(self._layers[name][1])
        # A layer without an activation function has no pre-activation but its output.
        out = self._captured.pre.get(key) if pre else None
        if out is None:
            out = self._captured.get(key)
        if out is None:
            raise ValueError(
                f"The model's forward pass never called layer {name!r}, so its output cannot be "
                "read."
            )
        return out

    def bytes_per_image(self, size: tuple[int, int]) -> int:
        """Roughly the memory one image costs in a forward and backward pass at `size`.

        Counts every layer output the pass keeps for the backward pass, three times (the output,
        its gradient, and working space), from the layers' known output shapes.

        Example:
            >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
            >>> ModelReader(m, {}).bytes_per_image((8, 8)) > 0
            True
        """
        model = self._extractor or self.model
        h, w = size
        elements = h * w * (self.input_shape[-1] or 3)
        for _, layer in layer_lib.all_layers(model):
            if getattr(layer, "layers", None):
                continue  # a sub-model: its own layers are counted
            shape = layer_lib.output_shape(model, layer)
            if shape is None:
                continue
            known = [d for d in shape if d is not None]
            scale = (h * w) / 1024 if None in shape else 1  # free spatial dims: assume 32x32 base
            elements += int(math.prod(known) * scale)
        return int(elements * 4 * 3)

    def _truncate(self):
        if any("/" in path for path, _ in self._layers.values()) or not self._layers:
            return None
        try:
            # The single input as a tensor, not a list: called with a tensor, a list-input
            # model warns about the structure on every trace.
            extractor = keras.Model(
                self.model.inputs[0], [layer.output for _, layer in self._layers.values()]
            )
        except Exception:  # shared layers, subclassed models: read by capture instead
            return None
        return extractor
