"""What differs between Keras backends: compiling, gradients, and which backends are supported.

Everything else in tb-cnnviz is written once, in `keras.ops` and NumPy. Three things cannot be:

* **Compiling** a function that calls a model: `tf.function` on TensorFlow, `jax.jit` on JAX
  (the model's variables are passed in as arguments through a `keras.StatelessScope`, so a
  compiled function sees the weights of *now*, not those it was traced with), and plain eager
  calls on PyTorch, which has no graph to trace into.
* **Gradients** with respect to an input: `tf.GradientTape`, `jax.value_and_grad`,
  `torch.autograd.grad`.
* **Which backend runs**, and a clear message where one cannot do something.

`compile` counts each compiled function's own traces (`tracing_count`), so tests can pin that a
callback reuses its traces across epochs and `fit()` calls on every backend.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

__all__ = [
    "SUPPORTED",
    "check_supported",
    "compile",
    "name",
    "to_numpy",
    "tracing_count",
    "value_and_grad",
]

#: The Keras backends tb-cnnviz draws on.
SUPPORTED = ("tensorflow", "jax", "torch")


def name() -> str:
    """The Keras backend in use (`"tensorflow"`, `"jax"`, `"torch"`, ...).

    Example:
        >>> name() in SUPPORTED
        True
    """
    return keras.backend.backend()


def check_supported(what: str = "tb-cnnviz") -> str:
    """Returns the backend's name, or raises a `ValueError` naming it and the supported ones.

    Args:
        what: What needs a supported backend, for the message (a callback's name).

    Example:
        >>> check_supported("CNNViz") in SUPPORTED
        True
    """
    backend = name()
    if backend not in SUPPORTED:
        raise ValueError(
            f"{what} does not support the Keras backend {backend!r}: it needs one of "
            f"{', '.join(SUPPORTED)} (set KERAS_BACKEND before importing keras)."
        )
    return backend


def to_numpy(x: Any) -> np.ndarray:
    """A backend tensor (or anything array-like) as a NumPy array.

    Example:
        >>> to_numpy(keras.ops.ones((2,))).tolist()
        [1.0, 1.0]
    """
    return np.asarray(keras.ops.convert_to_numpy(x))


def compile(
    fn: Callable,
    variables: Sequence[keras.Variable] = (),
    *,
    input_signature: Sequence[Any] | None = None,
) -> Callable:
    """Compiles `fn` where the backend compiles; the result reads `variables` at call time.

    On TensorFlow, a `tf.function` (without autograph: loops are `keras.ops` loops) whose
    retracing TensorFlow judges on its own traces (`tb_cnnviz.compiled.function`). On JAX, a
    `jax.jit` taking the current values of `variables` (give every variable `fn` reads: a
    model's `variables`) as an argument, so later weights need no retrace. On PyTorch, `fn`
    itself.

    Args:
        fn: A function of backend tensors (nested tuples allowed) returning tensors.
        variables: The Keras variables `fn` reads.
        input_signature: TensorFlow only: the `tf.TensorSpec`s `fn` is traced for (ignored by
            JAX, which traces once per shape).

    Returns:
        A callable with `fn`'s signature; `tracing_count(result)` tells how often it traced.

    Example:
        >>> square = compile(lambda x: x * x)
        >>> float(to_numpy(square(keras.ops.convert_to_tensor(3.0))))
        9.0
        >>> tracing_count(square)
        1
    """
    traces = [0]

    @functools.wraps(fn)
    def traced(*args):
        traces[0] += 1
        return fn(*args)

    backend = check_supported()
    if backend == "tensorflow":
        from tb_cnnviz import compiled

        options = {"autograph": False}
        if input_signature is not None:
            options["input_signature"] = input_signature
        run = compiled.function(traced, **options)
    elif backend == "jax":
        import jax

        variables = list(variables)

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return traced(*args)

        jitted = jax.jit(stateless)

        def run(*args):
            return jitted([v.value for v in variables], *args)

    else:

        def run(*args):
            return traced(*args)

    run.traces = traces  # type: ignore[attr-defined]
    return run


def tracing_count(compiled_fn: Callable) -> int:
    """How many times a function made by `compile` traced (on PyTorch: how often it ran).

    Example:
        >>> f = compile(lambda x: x + 1)
        >>> _ = f(keras.ops.ones((2,))); _ = f(keras.ops.zeros((2,)))
        >>> tracing_count(f)
        1
    """
    return compiled_fn.traces[0]  # type: ignore[attr-defined]


def value_and_grad(fn: Callable) -> Callable:
    """`fn(x, *args) -> (value, aux)` made into `(x, *args) -> ((value, aux), d value / d x)`.

    `value` is a scalar tensor; `x` a tensor or a tuple of tensors (the gradient has its
    structure). Works eagerly and inside `compile` on every supported backend.

    Example:
        >>> grad = value_and_grad(lambda x: (keras.ops.sum(x * x), None))
        >>> (value, _), g = grad(keras.ops.convert_to_tensor([1.0, 2.0]))
        >>> float(to_numpy(value)), to_numpy(g).tolist()
        (5.0, [2.0, 4.0])
    """
    backend = check_supported()
    if backend == "tensorflow":
        import tensorflow as tf

        def run(x, *args):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value, aux = fn(x, *args)
            grad = tape.gradient(value, x)
            grad = keras.tree.map_structure(
                lambda g, t: tf.zeros_like(t) if g is None else g, grad, x
            )
            return (value, aux), grad

        return run
    if backend == "jax":
        import jax

        inner = jax.value_and_grad(fn, has_aux=True)

        def run(x, *args):
            (value, aux), grad = inner(x, *args)
            return (value, aux), grad

        return run

    import torch

    def run(x, *args):
        leaves = keras.tree.flatten(x)
        leaves = [t.detach().requires_grad_(True) for t in leaves]
        with torch.enable_grad():
            value, aux = fn(keras.tree.pack_sequence_as(x, leaves), *args)
            grads = torch.autograd.grad(value, leaves, allow_unused=True)
        pairs = zip(grads, leaves, strict=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in pairs]
        aux = keras.tree.map_structure(
            lambda a: a.detach() if isinstance(a, torch.Tensor) else a, aux
        )
        return (value.detach(), aux), keras.tree.pack_sequence_as(x, grads)

    return run
