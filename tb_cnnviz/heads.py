"""Reading a model's head: what each output means, its scores before squashing, and targets.

This module is the one place that decides how a model's scores are read. Attribution and
activation maximization of a class both differentiate a class *score*; the callbacks caption
pictures with what the model predicted. An output is one of four kinds of `Head`:

* `"softmax"`: one score per class, one class per image (a final softmax, or logits trained
  with a categorical cross-entropy).
* `"binary"`: one sigmoid unit (or one logit trained with a binary cross-entropy). Its two
  classes are 1, the positive class (score: the logit), and 0, its complement (score: minus
  the logit); the predicted class is 1 where the probability is above 0.5.
* `"multilabel"`: several sigmoid units, each a label of its own; the predicted label is the
  most probable one, and its confidence is that label's own probability.
* `"regression"`: linear values (a linear output trained with a regression loss such as
  `"mse"`, or a single linear unit without a known loss); a target is a value's index, and
  there is no predicted class or confidence.

A final softmax or sigmoid saturates (a confident model's gradients vanish) and, for softmax,
couples the classes, so scores are read before it: `logits(model)` switches the final squashing
of every output off while a forward pass (or a trace) runs. A linear output is a classifier's
logits or a regression, as the loss it was compiled with says; with no known loss, one unit is
a regression and several are softmax logits.

Targets (what a picture explains), as `check_target` accepts them: `None` (each image's
predicted class of the first output; a regression's only value), a class index, one index per
image, an output name (that output, each image's predicted class), an `(output name, index)`
pair, or a callable taking the model's outputs before squashing (a tensor, or a list or dict
like the model's) and returning one score per image.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import keras
import numpy as np

from tb_cnnviz import layers as layer_lib

__all__ = [
    "KINDS",
    "SQUASHING",
    "Head",
    "Target",
    "check_target",
    "class_score",
    "final_activation",
    "logits",
    "output_layer",
    "output_names",
    "predictions",
    "probabilities",
    "read",
    "resolve_ids",
    "score",
]

#: Final activations read through to their input: the class scores before them are the logits.
SQUASHING = ("softmax", "sigmoid")

#: The kinds of output tb-cnnviz reads.
KINDS = ("softmax", "binary", "multilabel", "regression")

# Compiled losses, by their name with "_" dropped, and the kind of output they train.
_LOSS_KINDS = {
    **dict.fromkeys(
        [
            "sparsecategoricalcrossentropy",
            "categoricalcrossentropy",
            "categoricalfocalcrossentropy",
            "categoricalhinge",
        ],
        "softmax",
    ),
    **dict.fromkeys(
        ["binarycrossentropy", "binaryfocalcrossentropy", "hinge", "squaredhinge"], "sigmoid"
    ),
    **dict.fromkeys(
        [
            "meansquarederror",
            "mse",
            "meanabsoluteerror",
            "mae",
            "meanabsolutepercentageerror",
            "mape",
            "meansquaredlogarithmicerror",
            "msle",
            "huber",
            "logcosh",
            "poisson",
            "cosinesimilarity",
        ],
        "regression",
    ),
}


@dataclasses.dataclass(frozen=True)
class Head:
    """How to read one output of a model (made by `read`).

    Attributes:
        kind: One of `KINDS`.
        output: The output's position among the model's outputs (flattened as
            `keras.tree.flatten` flattens them).
        name: The output's name.
        units: The size of the output's last axis.
        squashing: The final activation `logits` switches off (`"softmax"`, `"sigmoid"`), or
            None when the output is read as it is.
    """

    kind: str
    output: int
    name: str
    units: int
    squashing: str | None = None

    @property
    def classes(self) -> int | None:
        """The number of classes (2 for a binary head, the labels of a multi-label head);
        None for a regression."""
        return {"binary": 2, "regression": None}.get(self.kind, self.units)

    @property
    def targets(self) -> int:
        """How many target indices the head has: its classes, or a regression's values."""
        return self.units if self.kind == "regression" else self.classes

    def describe(self) -> str:
        """The head in words, for messages: `"'scores' (softmax over 10 classes)"`."""
        what = {
            "softmax": f"softmax over {self.units} classes",
            "binary": "binary: class 1 and its complement, class 0",
            "multilabel": f"multi-label with {self.units} sigmoid labels",
            "regression": f"regression with {self.units} value{'s' * (self.units > 1)}",
        }[self.kind]
        return f"{self.name!r} ({what})"


@dataclasses.dataclass(frozen=True)
class Target:
    """A checked target (made by `check_target`).

    Attributes:
        head: The output it reads; None for a callable.
        ids: int32 `[n]` target indices, -1 standing for each image's predicted class (or a
            regression's only value); None for a callable.
        fn: The callable, or None.
    """

    head: Head | None
    ids: np.ndarray | None = None
    fn: Callable | None = None

    @property
    def key(self) -> tuple:
        """What a compiled function that differentiates this target depends on."""
        return ("fn", self.fn) if self.fn is not None else ("head", self.head)


def output_names(model: keras.layers.Layer) -> list[str]:
    """The names of `model`'s outputs, in `keras.tree.flatten` order.

    Example:
        >>> inp = keras.Input((4,))
        >>> m = keras.Model(inp, {"age": keras.layers.Dense(1)(inp),
        ...                       "kind": keras.layers.Dense(3)(inp)})
        >>> output_names(m)
        ['age', 'kind']
    """
    try:
        structure = model.output
    except (AttributeError, ValueError):
        structure = None
    if isinstance(structure, dict):
        return [str(k) for k in keras.tree.flatten({k: k for k in structure})]
    flat = keras.tree.flatten(structure) if structure is not None else [None]
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(flat):
        layers = [output_layer(model, i) for i in range(len(flat))]
        names = [getattr(layer, "name", None) or f"output_{i}" for i, layer in enumerate(layers)]
        if len(set(names)) != len(names):
            names = [f"output_{i}" for i in range(len(flat))]
    return [str(n) for n in names]


def output_layer(model: keras.layers.Layer, index: int = 0) -> keras.layers.Layer | None:
    """The layer that makes `model`'s output number `index`, looking into nested models.

    For a Functional model, the layer whose output is that output; otherwise (a Sequential, a
    subclassed model) its last layer. None for a model without layers.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="scores"),
        ...                       keras.layers.Softmax(name="probs")])
        >>> output_layer(m).name
        'probs'
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return None
    chosen = layers[-1]
    try:
        wanted = keras.tree.flatten(model.outputs)[index]
    except (AttributeError, IndexError, ValueError, TypeError):
        wanted = None
    if wanted is not None:
        for layer in reversed(layers):
            try:
                produced = layer.output
            except (AttributeError, ValueError):  # never called, or called more than once
                continue
            if any(p is wanted for p in keras.tree.flatten(produced)):
                chosen = layer
                break
    if getattr(chosen, "layers", None):
        return output_layer(chosen) or chosen
    return chosen


def final_activation(model: keras.layers.Layer, index: int = 0) -> str | None:
    """The squashing (`"softmax"` or `"sigmoid"`) `model`'s output `index` ends in, or None.

    Both a layer's `activation=` and a separate `Softmax` or `Activation` layer count.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        >>> final_activation(m)
        'sigmoid'
    """
    layer = output_layer(model, index)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return name if name in SQUASHING else None


def read(model: keras.layers.Layer, output: int | str | None = None, *, units=None) -> Head:
    """How to read one output of `model`: its kind, name, size and squashing.

    A final softmax makes a softmax head and a final sigmoid a binary (one unit) or multi-label
    (several) head. A linear output is what its compiled loss trains: a categorical
    cross-entropy makes softmax logits, a binary one binary or multi-label logits, a regression
    loss (`"mse"`, `"mae"`, Huber, ...) a regression. Without a known loss, one linear unit is a
    regression and several are softmax logits.

    Args:
        model: A built Keras model.
        output: The output's name or position; None for the first.
        units: Where the model cannot tell its outputs' sizes (a subclassed model: the caller
            ran a forward pass): the first output's size, or one size per output.

    Returns:
        A `Head`.

    Raises:
        ValueError: If `output` names no output of the model, or the output's size is unknown.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid",
        ...                                                              name="p")])
        >>> read(m)
        Head(kind='binary', output=0, name='p', units=1, squashing='sigmoid')
    """
    names = output_names(model)
    if output is None:
        index = 0
    elif isinstance(output, str) and output in names:
        index = names.index(output)
    elif isinstance(output, int) and not isinstance(output, bool) and 0 <= output < len(names):
        index = output
    else:
        raise ValueError(
            f"target: {output!r} is not an output of the model {model.name!r}. Outputs: "
            f"{names}. Received: target={output!r}"
        )
    if isinstance(units, list | tuple):
        units = units[index] if index < len(units) else None
    elif index != 0:
        units = None  # a single size is the first output's
    if units is None:
        try:
            units = keras.tree.flatten(model.outputs)[index].shape[-1]
        except (AttributeError, IndexError, ValueError, TypeError):
            units = None
    if units is None:
        raise ValueError(f"The size of the output {names[index]!r} of {model.name!r} is unknown.")
    units = int(units)
    squashing = final_activation(model, index)
    if squashing == "softmax":
        kind = "softmax"
    elif squashing == "sigmoid":
        kind = "binary" if units == 1 else "multilabel"
    else:
        trained = _loss_kind(model, index, names[index])
        if trained == "sigmoid":
            kind = "binary" if units == 1 else "multilabel"
        elif trained is not None:
            kind = trained
        else:
            kind = "regression" if units == 1 else "softmax"
    return Head(kind, index, names[index], units, squashing)


def check_target(model, target, n: int, *, units=None, argument: str = "target") -> Target:
    """Checks what a picture should explain, for `n` images (see the module docstring).

    Args:
        model: A built Keras model.
        target: None, an index, one index per image, an output name, an `(output name, index
            or indices)` pair, or a callable on the outputs.
        n: The number of images.
        units: The first output's size where the model cannot tell it (see `read`).
        argument: The argument's name, for messages.

    Returns:
        A `Target`.

    Raises:
        ValueError: If an index is out of range for the output, an output name is unknown, a
            regression with several values gets no index, or `target` is of another type. The
            message names the output and what it supports.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)),
        ...                       keras.layers.Dense(1, activation="sigmoid", name="p")])
        >>> check_target(m, 1, 2).ids.tolist()
        [1, 1]
        >>> try:
        ...     check_target(m, 2, 2)
        ... except ValueError as e:
        ...     print(e)  # doctest: +NORMALIZE_WHITESPACE
        target 2 is not a class of the output 'p' (binary: class 1 and its complement,
        class 0): it takes class indices in 0..1. Received: target=2
    """
    if callable(target) and not isinstance(target, type):
        return Target(None, fn=target)
    output, index = None, target
    if isinstance(target, str):
        output, index = target, None
    elif isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str):
        output, index = target
    head = read(model, output, units=units)
    if index is None:
        if head.kind == "regression" and head.units > 1:
            raise ValueError(
                f"{argument}: the output {head.describe()} has several values; say which one "
                f"to explain with {argument}=<index in 0..{head.units - 1}>, an (output name, "
                f"index) pair or a callable. Received: {argument}={target!r}"
            )
        return Target(head, np.full(n, -1, np.int32))
    bad_type = isinstance(index, bool | float) or (
        isinstance(index, np.ndarray) and not np.issubdtype(index.dtype, np.integer)
    )
    ids = None if bad_type else np.asarray(index)
    if ids is None or not np.issubdtype(ids.dtype, np.integer) or ids.ndim > 1:
        raise ValueError(
            f"{argument} must be None, a class index, one index per image, an output name, an "
            f"(output name, index) pair or a callable on the outputs. Received: "
            f"{argument}={target!r}"
        )
    ids = np.full(n, int(ids), np.int64) if ids.ndim == 0 else ids.reshape(-1)
    if len(ids) != n:
        raise ValueError(
            f"{argument} must be one index, or one index per image ({n} images). "
            f"Received: {argument}={target!r}"
        )
    limit = head.targets
    if ((ids < 0) | (ids >= limit)).any():
        what = "value" if head.kind == "regression" else "class"
        raise ValueError(
            f"{argument} {_shown(index)} is not a {what} of the output {head.describe()}: it "
            f"takes {what} indices in 0..{limit - 1}. Received: {argument}={target!r}"
        )
    return Target(head, ids.astype(np.int32))


def score(target: Target, outputs, ids=None):
    """Each image's score for its target: a float32 tensor `[n]` (backend tensors in and out).

    Args:
        target: A `Target` from `check_target`.
        outputs: The model's outputs, read inside `logits(model)` (before squashing).
        ids: int32 `[n]` target indices to use instead of `target.ids` (a traced argument of a
            compiled function); -1 picks each image's predicted class.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
        >>> x = np.ones((1, 2), "float32")
        >>> with logits(m):
        ...     z = m(x)
        >>> t = check_target(m, 0, 1)
        >>> scores = keras.ops.convert_to_numpy(score(t, z))
        >>> bool(np.allclose(scores, -keras.ops.convert_to_numpy(z)[:, 0]))
        True
    """
    if target.fn is not None:
        return keras.ops.reshape(keras.ops.cast(target.fn(outputs), "float32"), (-1,))
    ids = keras.ops.convert_to_tensor(target.ids if ids is None else ids, "int32")
    z = keras.ops.cast(keras.tree.flatten(outputs)[target.head.output], "float32")
    return class_score(target.head, keras.ops.reshape(z, (-1, target.head.units)), ids)


def class_score(head: Head, logits, class_index):
    """The score of class `class_index` from one output's logits `[n, units]`: float32 `[n]`.

    Softmax and multi-label heads and regressions read the class's (value's) own unit. A binary
    head reads its logit for class 1 and minus its logit for class 0. `class_index` is an int
    or an int32 tensor `[n]`; -1 picks each image's predicted class (a regression's value 0).
    Activation maximization of a class logit and attribution both score classes with it.

    Example:
        >>> head = Head("binary", 0, "p", 1, "sigmoid")
        >>> keras.ops.convert_to_numpy(class_score(head, np.array([[2.0]], "float32"), 0))
        array([-2.], dtype=float32)
    """
    z = keras.ops.cast(logits, "float32")
    ids = _resolve(head, z, class_index)
    if head.kind == "binary":
        return keras.ops.where(ids == 1, z[:, 0], -z[:, 0])
    return keras.ops.sum(z * keras.ops.one_hot(ids, z.shape[-1], dtype="float32"), axis=-1)


def resolve_ids(target: Target, outputs, ids=None):
    """`ids` (default `target.ids`) with -1 replaced by each image's predicted class: int32 `[n]`.

    The predicted class is the most probable one (softmax, multi-label), class 1 where a binary
    head's logit is positive, else 0; a regression's value 0.

    Example:
        >>> head = Head("softmax", 0, "scores", 3)
        >>> t = Target(head, np.array([-1, 2], "int32"))
        >>> keras.ops.convert_to_numpy(resolve_ids(t, np.array([[0, 5, 1], [9, 0, 0]], "float32")))
        array([1, 2], dtype=int32)
    """
    ids = target.ids if ids is None else ids
    z = keras.ops.cast(keras.tree.flatten(outputs)[target.head.output], "float32")
    return _resolve(target.head, keras.ops.reshape(z, (-1, target.head.units)), ids)


def _resolve(head: Head, z, class_index):
    n = keras.ops.shape(z)[0]
    ids = keras.ops.cast(keras.ops.convert_to_tensor(class_index), "int32")
    ids = keras.ops.broadcast_to(ids, (n,))
    if head.kind == "binary":
        default = z[:, 0] > 0
    elif head.kind == "regression":
        default = keras.ops.zeros((n,), "int32")
    else:
        default = keras.ops.argmax(z, -1)
    return keras.ops.where(ids < 0, keras.ops.cast(default, "int32"), ids)


def predictions(head: Head, outputs) -> dict[str, np.ndarray | None]:
    """What the model predicts for each image, from its outputs as it returns them (NumPy).

    Returns:
        `{"predicted", "confidence", "value", "values"}`: the predicted class (int64 `[n]`)
        and its probability (float32 `[n]`) for classifiers, None for a regression; `value`
        holds a regression's first value (float32 `[n]`) and `values` all of them (float32
        `[n, units]`), both None for classifiers. A softmax head's
        confidence is the class's share of the softmax, a binary head's the probability of the
        class it predicts, a multi-label head's the predicted label's own probability.

    Example:
        >>> head = Head("binary", 0, "p", 1, "sigmoid")
        >>> p = predictions(head, np.array([[0.9], [0.2]]))
        >>> p["predicted"].tolist(), [round(float(c), 2) for c in p["confidence"]]
        ([1, 0], [0.9, 0.8])
    """
    p = probabilities(head, outputs)
    if p is None:
        values = _raw(head, outputs).astype(np.float32)
        return {"predicted": None, "confidence": None, "value": values[:, 0], "values": values}
    # A binary head's class 1 only above 0.5: argmax picks class 0 at a tie, as it should.
    predicted = p.argmax(-1).astype(np.int64)
    confidence = p[np.arange(len(p)), predicted].astype(np.float32)
    return {"predicted": predicted, "confidence": confidence, "value": None, "values": None}


def probabilities(head: Head, outputs) -> np.ndarray | None:
    """Every class's probability for each image, read as the head says (NumPy float64).

    A softmax head's probabilities (logits, or an unknown squashing, go through a softmax); a
    binary head's `[1 - p, p]` for classes 0 and 1; a multi-label head's own probability per
    label (they need not sum to 1); None for a regression.

    Returns:
        `[n, head.classes]`, or None.

    Example:
        >>> head = Head("binary", 0, "p", 1, "sigmoid")
        >>> probabilities(head, np.array([[0.9]])).round(2).tolist()
        [[0.1, 0.9]]
    """
    z = _raw(head, outputs)
    if head.kind == "regression":
        return None
    if head.kind in ("binary", "multilabel"):
        p = z if head.squashing else 1.0 / (1.0 + np.exp(-z))
        return np.concatenate([1.0 - p[:, :1], p[:, :1]], -1) if head.kind == "binary" else p
    is_distribution = z.min() >= 0 and z.max() <= 1 and np.allclose(z.sum(-1), 1, atol=1e-3)
    if not is_distribution:
        shifted = np.exp(z - z.max(-1, keepdims=True))
        z = shifted / shifted.sum(-1, keepdims=True)
    return z


def _raw(head: Head, outputs) -> np.ndarray:
    """The head's output as float64 NumPy `[n, units]`."""
    raw = keras.tree.flatten(outputs)[head.output] if not hasattr(outputs, "shape") else outputs
    z = np.asarray(keras.ops.convert_to_numpy(raw), np.float64)
    return z.reshape(len(z), -1)


@contextlib.contextmanager
def logits(model: keras.layers.Layer) -> Iterator[str | None]:
    """Makes `model` return its scores before a final softmax or sigmoid inside the block.

    Works in eager code and while tracing a compiled function; the model is restored on exit.
    Every output's squashing is switched off; an output that is not squashed is left as it is.

    Yields:
        The squashing switched off of the first output (`"softmax"`, `"sigmoid"`) or None.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
        >>> x = np.ones((1, 2), "float32")
        >>> with logits(m) as squashing:
        ...     raw = keras.ops.convert_to_numpy(m(x))
        >>> squashing, bool(np.allclose(raw.sum(), 1.0))
        ('softmax', False)
    """
    try:
        count = len(keras.tree.flatten(model.outputs))
    except (AttributeError, ValueError, TypeError):
        count = 1
    first = final_activation(model)
    with contextlib.ExitStack() as stack:
        done = set()
        for index in range(count):
            layer = output_layer(model, index)
            if id(layer) not in done and final_activation(model, index) is not None:
                done.add(id(layer))
                stack.enter_context(_linear(layer))
        yield first


def _linear(layer):
    """Switches `layer`'s squashing off (`tb_cnnviz.layers.override`: this thread only)."""
    if isinstance(layer, keras.layers.Softmax) or isinstance(layer, keras.layers.Activation):
        # A layer that only squashes passes its input through.
        return layer_lib.override(layer, call=lambda inputs, *args, **kwargs: inputs)
    return layer_lib.override(layer, activation=keras.activations.linear)


def _loss_kind(model, index: int, name: str) -> str | None:
    """What the loss compiled for output `index` trains: "softmax", "sigmoid", "regression"."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict):
        loss = loss.get(name)
    elif isinstance(loss, list | tuple):
        loss = loss[index] if index < len(loss) else None
    if loss is None:
        return None
    if isinstance(loss, str):
        key = loss
    else:
        key = getattr(loss, "name", None) or getattr(loss, "__name__", None)
        key = key or type(loss).__name__
    return _LOSS_KINDS.get(str(key).lower().replace("_", ""))


def _shown(index) -> str:
    return repr(index.tolist() if isinstance(index, np.ndarray) else index)
