"""`function`: `tf.function` for compiled functions made per model, judged on their own traces.

TensorFlow warns that a function "triggered tf.function retracing" when several `tf.function`s
made from one Python code object trace within a few calls: it counts traces per code object.
tb-cnnviz makes one compiled function per model (and layer, method, chunk size), each traced
once for its own variables; a second model's functions would look like one function retracing
(the demo's second run did). Made through `function`, each is counted alone, so the warning
still fires for a function that really retraces, and only then.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import tensorflow as tf

__all__ = ["function"]


class _Traced:
    """A callable without `__code__`: TensorFlow then keys its trace counts on this object."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__signature__ = inspect.signature(fn)
        self.__name__ = getattr(fn, "__name__", "function")

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def function(fn: Callable, **options):
    """Compiles `fn` like `tf.function(fn, **options)`, its retracing judged on its own.

    Example:
        >>> square = function(lambda x: x * x, autograph=False)
        >>> float(square(tf.constant(3.0)))
        9.0
        >>> square.experimental_get_tracing_count()
        1
    """
    return tf.function(_Traced(fn), **options)
