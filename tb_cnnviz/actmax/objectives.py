"""Objectives: what an activation-maximization image should make the network do.

An objective maps one forward pass of a batch of images to one number per image, the quantity
gradient ascent raises. Objectives form a small algebra: they add, subtract and negate, and scale
by numbers, so `channel("conv4") - 0.05 * total_variation()` is an objective too. Regularizers are
objectives like any other, subtracted with a weight.

The renderer optimizes many images at once, each for its own filter. An objective built without
an index (`channel("conv4")`) reads, for image `i`, the unit `targets[i]` of `Activations`; with
an index (`channel("conv4", 7)`) every image works on filter 7.

Images handed to objectives are in `[0, 1]` (before the model's value range is applied), so a
regularizer's weight means the same whatever range the model expects.

Objectives are written in `keras.ops`, so they run on every Keras backend; an objective of your
own may use `keras.ops` too (any backend) or the backend's own ops (`tf.*` on TensorFlow): the
tensors it receives are the backend's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

from keras import ops

from tb_cnnviz import checks, heads

__all__ = [
    "LOGITS",
    "Activations",
    "Objective",
    "as_objective",
    "channel",
    "class_logit",
    "l2",
    "neuron",
    "total_variation",
    "wake_up",
]

#: The key under which `Activations` holds the model's pre-softmax output.
LOGITS = "<logits>"

# What an objective needs from a layer, weakest first: any output, a conv layer's feature maps,
# or those and the values before the activation function.
_OUTPUT = "output"
_FEATURE_MAPS = "feature_maps"
_PRE_ACTIVATION = "pre_activation"
_STRENGTH = {_OUTPUT: 0, _FEATURE_MAPS: 1, _PRE_ACTIVATION: 2}


class Activations:
    """What one forward pass of a batch offers an objective.

    Args:
        outputs: Layer name -> output, `[n, ...]`; conv outputs channels last. The model's
            pre-softmax output, when read, is under `LOGITS`.
        images: The images `[n, h, w, c]` in `[0, 1]`, as optimized (before any transform).
        targets: Optional int `[n]`: the unit (filter or class) each image is for.
        pre_activations: Layer name -> output before the layer's activation function.
        head: How to read the model's first output (`tb_cnnviz.heads.read`), when its
            scores are under `LOGITS`; `class_logit` scores classes with it.

    Example:
        >>> acts = Activations({"c": ops.ones((2, 4, 4, 3))}, ops.zeros((2, 8, 8, 3)), [0, 2])
        >>> tuple(acts("c").shape), ops.convert_to_numpy(acts.targets).tolist()
        ((2, 4, 4, 3), [0, 2])
    """

    def __init__(
        self, outputs: Mapping[str, object], images, targets=None, pre_activations=None, head=None
    ):
        self._outputs = dict(outputs)
        self._pre = dict(pre_activations or {})
        self.head = head
        self.images = ops.convert_to_tensor(images)
        self.targets = None if targets is None else ops.convert_to_tensor(targets, "int32")

    def __call__(self, layer: str, *, pre_activation: bool = False):
        """Returns the output of `layer` (or its value before the activation function) as
        float32; mixed-precision layers compute in float16."""
        table = self._pre if pre_activation else self._outputs
        if layer not in table:
            what = "pre-activation" if pre_activation else "output"
            raise ValueError(
                f"This forward pass did not record the {what} of layer {layer!r}; it recorded "
                f"{sorted(table)}. Received: layer={layer!r}"
            )
        return ops.cast(table[layer], "float32")

    def pick(self, values, index: int | None):
        """Selects unit `index` (or each image's target) from the last axis of `values`
        `[n, ..., k]`.

        Example:
            >>> picked = Activations({}, ops.zeros((2, 1, 1, 1)), [1, 0]).pick(
            ...     ops.array([[1.0, 2.0], [3.0, 4.0]]), None)
            >>> ops.convert_to_numpy(picked).tolist()
            [2.0, 3.0]
        """
        if index is not None:
            return values[..., index]
        self._check_targets()
        # Each image's own unit along the last axis: [n, ..., k] -> [n, ...], as a product with
        # a one-hot mask rather than a gather. The two cost the same per step, but
        # TensorFlow's gradient of a batched gather is slow to trace (about 45 ms each on 2
        # CPU cores, and a channel objective with `wake_up` has two): a quarter of the time a
        # renderer's first call spends tracing its step on the demo CNN.
        rank = len(values.shape)
        shape = (-1,) + (1,) * (rank - 2) + (values.shape[-1],)
        mask = ops.reshape(ops.one_hot(self.targets, values.shape[-1], dtype=values.dtype), shape)
        return ops.sum(values * mask, axis=-1)

    def _check_targets(self) -> None:
        if self.targets is None:
            raise ValueError(
                "An objective without an index needs per-image targets (the filter each image "
                "is for). Give an index, or render through `Renderer`/`render`."
            )


class Objective:
    """A quantity to maximize: one number per image of a batch.

    Objectives are closed under `+`, `-` (with objectives or numbers), unary `-`, and `*` and `/`
    by numbers. `str(objective)` says what it is.

    Args:
        fn: `(Activations) -> [n]` float32 tensor (`keras.ops` run on every backend).
        description: What the objective is, in code form.
        needs: Layer name -> `"feature_maps"` (a conv layer's maps are required) or `"output"`.
        targets: Names of the layers whose units the per-image targets index.

    Example:
        >>> maps = ops.reshape(ops.arange(8.0), (1, 2, 2, 2))
        >>> acts = Activations({"c": maps}, ops.zeros((1, 2, 2, 1)))
        >>> objective = 2 * channel("c", 1) - channel("c", 0)
        >>> str(objective), ops.convert_to_numpy(objective(acts)).tolist()
        ("2 * channel('c', 1) - channel('c', 0)", [5.0])
    """

    def __init__(
        self,
        fn: Callable[[Activations], object],
        description: str = "objective",
        *,
        needs: Mapping[str, str] | None = None,
        targets: tuple[str, ...] = (),
    ):
        self.fn = fn
        self.description = description
        self.needs = dict(needs or {})
        self.targets = tuple(targets)
        self._sum = False  # whether str() needs parentheses under * and unary -

    def __call__(self, acts: Activations):
        return ops.cast(self.fn(acts), "float32")

    def __repr__(self) -> str:
        return self.description

    # -- the algebra -------------------------------------------------------------------------
    def __add__(self, other):
        other = _lift(other)
        if other is NotImplemented:
            return other
        return _combine(self, other, lambda a, b: a + b, f"{self} + {other}")

    def __radd__(self, other):
        if isinstance(other, numbers.Real) and not isinstance(other, bool) and other == 0:
            return self  # lets the builtin sum() start from 0
        other = _lift(other)
        if other is NotImplemented:
            return other
        return _combine(other, self, lambda a, b: a + b, f"{other} + {self}")

    def __sub__(self, other):
        other = _lift(other)
        if other is NotImplemented:
            return other
        return _combine(self, other, lambda a, b: a - b, f"{self} - {_wrap(other)}")

    def __rsub__(self, other):
        other = _lift(other)
        if other is NotImplemented:
            return other
        return _combine(other, self, lambda a, b: a - b, f"{other} - {_wrap(self)}")

    def __neg__(self):
        return _scaled(self, -1.0, f"-{_wrap(self)}")

    def __mul__(self, factor):
        if not _is_number(factor):
            return NotImplemented
        return _scaled(self, float(factor), f"{_number(factor)} * {_wrap(self)}")

    __rmul__ = __mul__

    def __truediv__(self, divisor):
        if not _is_number(divisor):
            return NotImplemented
        if divisor == 0:
            raise ZeroDivisionError("An objective cannot be divided by zero.")
        return _scaled(self, 1.0 / float(divisor), f"{_wrap(self)} / {_number(divisor)}")


def as_objective(fn, description: str | None = None) -> Objective:
    """Wraps a plain function `(Activations) -> [n]` (or passes an `Objective` through).

    Example:
        >>> brightness = as_objective(lambda acts: ops.mean(acts.images, axis=(1, 2, 3)))
        >>> ops.convert_to_numpy(brightness(Activations({}, ops.ones((2, 2, 2, 1))))).tolist()
        [1.0, 1.0]
    """
    if isinstance(fn, Objective):
        return fn
    if not callable(fn):
        raise ValueError(
            "An objective must be an Objective or a callable (Activations) -> [n]. "
            f"Received: objective={fn!r}"
        )
    return Objective(fn, description or getattr(fn, "__name__", "objective"))


def channel(layer: str, index: int | None = None, *, pre_activation: bool = False) -> Objective:
    """The mean activation of one filter of a conv layer over all positions.

    Args:
        layer: The conv layer's name or `outer/inner` path.
        index: The filter; `None` means each image's own target filter.
        pre_activation: Read the layer before its activation function (a ReLU's input): a
            filter that is zero everywhere still has a gradient there, so a dead or rarely
            active filter gets a picture too.

    Example:
        >>> maps = ops.ones((1, 4, 4, 3)) * ops.array([1.0, 2.0, 3.0])
        >>> acts = Activations({"c": maps}, ops.zeros((1, 4, 4, 3)))
        >>> ops.convert_to_numpy(channel("c", 2)(acts)).tolist()
        [3.0]
    """
    _check_index(index, "index")

    def fn(acts):
        # Each image's own filter first, then the mean over its map alone.
        maps = acts.pick(_feature_maps(acts(layer, pre_activation=pre_activation), layer), index)
        return ops.mean(maps, axis=tuple(range(1, len(maps.shape))))

    return Objective(
        fn,
        _call("channel", layer, index, pre_activation),
        needs={layer: _PRE_ACTIVATION if pre_activation else _FEATURE_MAPS},
        targets=(layer,) if index is None else (),
    )


def neuron(
    layer: str,
    index: int | None = None,
    *,
    x: int | None = None,
    y: int | None = None,
    pre_activation: bool = False,
) -> Objective:
    """The activation of one filter of a conv layer at one position (the centre by default).

    Args:
        layer: The conv layer's name or `outer/inner` path.
        index: The filter; `None` means each image's own target filter.
        x: Column of the position; defaults to the centre.
        y: Row of the position; defaults to the centre.
        pre_activation: Read the layer before its activation function (see `channel`).

    Example:
        >>> maps = ops.reshape(ops.arange(9.0), (1, 3, 3, 1))
        >>> acts = Activations({"c": maps}, ops.zeros((1, 3, 3, 1)))
        >>> ops.convert_to_numpy(neuron("c", 0)(acts)).tolist()
        [4.0]
    """
    _check_index(index, "index")
    _check_index(x, "x")
    _check_index(y, "y")

    def fn(acts):
        maps = _feature_maps(acts(layer, pre_activation=pre_activation), layer)
        if len(maps.shape) != 4:
            raise ValueError(
                f"neuron needs 2-D feature maps [n, h, w, filters]. Received: {layer!r} with "
                f"shape {tuple(maps.shape)}"
            )
        h, w = maps.shape[1], maps.shape[2]
        row, col = h // 2 if y is None else y, w // 2 if x is None else x
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(
                f"neuron position is outside the {h}x{w} feature map of {layer!r}. "
                f"Received: x={x}, y={y}"
            )
        return acts.pick(maps[:, row, col, :], index)

    details = "".join(f", {k}={v}" for k, v in (("x", x), ("y", y)) if v is not None)
    return Objective(
        fn,
        _call("neuron", layer, index, pre_activation)[:-1] + details + ")",
        needs={layer: _PRE_ACTIVATION if pre_activation else _FEATURE_MAPS},
        targets=(layer,) if index is None else (),
    )


def wake_up(layer: str, index: int | None = None) -> Objective:
    """For an image whose filter is silent (zero everywhere after a ReLU), the filter's largest
    value before the activation; zero once the filter responds anywhere.

    Added to `channel(layer)`, it gives a gradient to filters the starting image does not excite,
    pushing their most promising position up until the filter fires, and then steps aside. (The
    mean before the activation would pull towards flat images that make every position a little
    less negative; the largest value pulls towards a pattern.)

    Args:
        layer: The conv layer's name or `outer/inner` path.
        index: The filter; `None` means each image's own target filter.

    Example:
        >>> pre = ops.array([[[[-3.0]], [[-1.0]]], [[[2.0]], [[-1.0]]]])  # [2, 2, 1, 1]
        >>> acts = Activations({"c": ops.relu(pre)}, ops.zeros((2, 2, 1, 1)), None, {"c": pre})
        >>> ops.convert_to_numpy(wake_up("c", 0)(acts)).tolist()
        [-1.0, 0.0]
    """
    _check_index(index, "index")

    def fn(acts):
        post = _feature_maps(acts(layer), layer)
        pre = _feature_maps(acts(layer, pre_activation=True), layer)
        # As in `channel`: each image's own filter first, then the maxima over its map alone.
        post, pre = acts.pick(post, index), acts.pick(pre, index)
        axes = tuple(range(1, len(post.shape)))
        silent = ops.max(post, axis=axes) <= 0
        return ops.where(silent, ops.max(pre, axis=axes), 0.0)

    return Objective(
        fn,
        _call("wake_up", layer, index, False),
        needs={layer: _PRE_ACTIVATION},
        targets=(layer,) if index is None else (),
    )


def class_logit(index: int | None = None) -> Objective:
    """The model's score for one class, before a final softmax or sigmoid.

    A final softmax or sigmoid (a layer's `activation=`, or a `Softmax` layer) is bypassed while
    rendering, so the score is the logit, not a probability another class can steal. Classes
    are read as attribution reads them (`tb_cnnviz.heads.class_score`, for the model's first
    output): a binary head's class 1 is its logit and class 0 minus its logit; a multi-label
    head's and a regression's classes are their units.

    Args:
        index: The class; `None` means each image's own target class.

    Example:
        >>> acts = Activations({LOGITS: ops.array([[0.5, 2.0]])}, ops.zeros((1, 2, 2, 3)))
        >>> ops.convert_to_numpy(class_logit(1)(acts)).tolist()
        [2.0]
    """
    _check_index(index, "index")

    def fn(acts):
        logits = acts(LOGITS)
        if acts.head is None:  # a bare Activations: the unit itself
            return acts.pick(logits, index)
        if index is None:
            acts._check_targets()
        return heads.class_score(acts.head, logits, acts.targets if index is None else index)

    return Objective(
        fn,
        "class_logit()" if index is None else f"class_logit({index})",
        needs={LOGITS: _OUTPUT},
        targets=(LOGITS,) if index is None else (),
    )


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels, per image: subtract it to smooth.

    Example:
        >>> stripes = ops.reshape(ops.array([0.0, 1.0] * 8), (1, 4, 4, 1))
        >>> ops.convert_to_numpy(total_variation()(Activations({}, stripes))).tolist()
        [0.5]
    """

    def fn(acts):
        return _total_variation(ops.cast(acts.images, "float32"))

    return Objective(fn, "total_variation()")


@ops.custom_gradient
def _total_variation(img):
    """`total_variation` of `[n, h, w, c]` images, with a hand-written gradient.

    The gradient TensorFlow derives goes through `StridedSliceGrad`, which on CPU costs several
    times the whole penalty (most of a rendering step's overhead); scattering the neighbour
    differences' signs back with two pads each is the same sum, exactly.
    """
    down = img[:, 1:] - img[:, :-1]
    right = img[:, :, 1:] - img[:, :, :-1]
    axes = (1, 2, 3)
    value = (ops.mean(ops.abs(down), axis=axes) + ops.mean(ops.abs(right), axis=axes)) / 2

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        upstream = ops.reshape(upstream, (-1, 1, 1, 1)) / 2
        g_down = ops.sign(down) * (upstream / math.prod(down.shape[1:]))
        g_right = ops.sign(right) * (upstream / math.prod(right.shape[1:]))
        no = (0, 0)
        return (
            ops.pad(g_down, (no, (1, 0), no, no))
            - ops.pad(g_down, (no, (0, 1), no, no))
            + ops.pad(g_right, (no, no, (1, 0), no))
            - ops.pad(g_right, (no, no, (0, 1), no))
        )

    return value, grad


def l2(center: float = 0.5) -> Objective:
    """Mean squared distance of the pixels from `center` (mid-grey), per image: subtract it to
    keep colours from saturating.

    Example:
        >>> ops.convert_to_numpy(l2()(Activations({}, ops.ones((1, 2, 2, 3))))).tolist()
        [0.25]
    """
    center = float(center)

    def fn(acts):
        images = ops.cast(acts.images, "float32")
        return ops.mean(ops.square(images - center), axis=tuple(range(1, len(images.shape))))

    return Objective(fn, "l2()" if center == 0.5 else f"l2({center})")


# -- helpers ---------------------------------------------------------------------------------
def _feature_maps(values, layer: str):
    if len(values.shape) < 3:
        raise ValueError(
            f"A channel objective needs a conv layer's feature maps [n, *spatial, filters]. "
            f"Received: layer={layer!r} with output shape {tuple(values.shape)}"
        )
    return values


def _lift(value):
    if isinstance(value, Objective):
        return value
    if _is_number(value):
        constant = float(value)

        def fn(acts):
            # One number per image; the images' values do not enter (no gradient).
            first = ops.reshape(acts.images, (ops.shape(acts.images)[0], -1))[:, 0]
            return ops.full_like(ops.cast(first, "float32"), constant)

        return Objective(fn, _number(value))
    return NotImplemented


def _combine(a: Objective, b: Objective, op, description: str) -> Objective:
    needs = dict(a.needs)
    for layer, need in b.needs.items():
        needs[layer] = max(need, needs.get(layer, _OUTPUT), key=_STRENGTH.__getitem__)
    targets = tuple(dict.fromkeys(a.targets + b.targets))
    combined = Objective(
        lambda acts: op(a(acts), b(acts)), description, needs=needs, targets=targets
    )
    combined._sum = True
    return combined


def _scaled(objective: Objective, factor: float, description: str) -> Objective:
    return Objective(
        lambda acts: factor * objective(acts),
        description,
        needs=objective.needs,
        targets=objective.targets,
    )


def _wrap(objective: Objective) -> str:
    return f"({objective})" if objective._sum else str(objective)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(value) -> str:
    return f"{float(value):g}"


def _call(name: str, layer: str, index, pre_activation: bool) -> str:
    args = [repr(layer)] + ([] if index is None else [str(index)])
    args += ["pre_activation=True"] if pre_activation else []
    return f"{name}({', '.join(args)})"


def _check_index(value, name: str) -> None:
    checks.integer(name, value, minimum=0, none=True)
