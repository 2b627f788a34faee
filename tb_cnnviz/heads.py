"""Reading a model's head: which layer makes its (first) output, and its scores before squashing.

Attribution and activation maximization of a class both differentiate a class *score*. A final
softmax or sigmoid saturates (a confident model's gradients vanish) and, for softmax, couples the
classes, so both read the score before it: `logits(model)` switches the final squashing off
while a forward pass (or a trace) runs. This module is the one place that decides what "the
final activation" of a model is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

__all__ = ["SQUASHING", "final_activation", "logits", "output_layer"]

#: Final activations read through to their input: the class scores before them are the logits.
SQUASHING = ("softmax", "sigmoid")


def output_layer(model: keras.layers.Layer) -> keras.layers.Layer | None:
    """The layer that makes `model`'s first output, looking into nested models.

    For a Functional model, the layer whose output is the model's first output; otherwise (a
    Sequential, a subclassed model) its last layer. None for a model without layers.

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
        first = keras.tree.flatten(model.outputs)[0]
    except (AttributeError, IndexError, ValueError, TypeError):
        first = None
    if first is not None:
        for layer in reversed(layers):
            try:
                produced = layer.output
            except (AttributeError, ValueError):  # never called, or called more than once
                continue
            if any(p is first for p in keras.tree.flatten(produced)):
                chosen = layer
                break
    if getattr(chosen, "layers", None):
        return output_layer(chosen) or chosen
    return chosen


def final_activation(model: keras.layers.Layer) -> str | None:
    """The name of the squashing (`"softmax"` or `"sigmoid"`) `model`'s output ends in, or None.

    Both a layer's `activation=` and a separate `Softmax` or `Activation` layer count.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        >>> final_activation(m)
        'sigmoid'
    """
    layer = output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return name if name in SQUASHING else None


@contextlib.contextmanager
def logits(model: keras.layers.Layer) -> Iterator[str | None]:
    """Makes `model` return its class scores before a final softmax or sigmoid inside the block.

    Works in eager code and while tracing a `tf.function`; the model is restored on exit. A
    model whose output is not squashed is left as it is.

    Yields:
        The squashing switched off (`"softmax"`, `"sigmoid"`) or None.

    Example:
        >>> import numpy as np
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
        >>> x = np.ones((1, 2), "float32")
        >>> with logits(m) as squashing:
        ...     raw = keras.ops.convert_to_numpy(m(x))
        >>> squashing, bool(np.allclose(raw.sum(), 1.0))
        ('softmax', False)
    """
    layer = output_layer(model)
    squashing = final_activation(model)
    if squashing is None:
        yield None
        return
    if isinstance(layer, keras.layers.Softmax) or isinstance(layer, keras.layers.Activation):
        # A layer that only squashes passes its input through. Keras' attribute tracking is
        # bypassed: this is a temporary instance override.
        object.__setattr__(layer, "call", lambda inputs, *args, **kwargs: inputs)
        try:
            yield squashing
        finally:
            object.__delattr__(layer, "call")
        return
    activation = layer.activation
    object.__setattr__(layer, "activation", keras.activations.linear)
    try:
        yield squashing
    finally:
        object.__setattr__(layer, "activation", activation)
