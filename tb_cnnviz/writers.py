"""The plumbing under the summary functions: which writer records, at which step, and what
crosses from a tensor to the pictures.

`tb_cnnviz.summary` holds the per-kind writers and documents the on-disk format; this module
holds what they all share:

* the writer: the innermost `create_file_writer(...).as_default()` (TensorBoard's own event
  writer, no TensorFlow needed, every Keras backend), else `tf.summary`'s default writer while
  it records (`current`), and the step (`resolve_step`);
* the eager-only rule: the summary functions encode PNGs in Python, which a compiled graph
  cannot hold (`check_eager`, `to_numpy` refuse traced values with one message);
* the bookkeeping: bytes of pictures written per thread (`written_bytes`, `add_written`), and
  the profile's `encode` phase around each summary function (`encoding`).
"""

from __future__ import annotations

import functools
import sys
import threading

import numpy as np

from tb_cnnviz import events, profile

__all__ = [
    "COMPILED",
    "TFWriter",
    "add_written",
    "check_eager",
    "check_traced",
    "create_file_writer",
    "current",
    "encoding",
    "resolve_step",
    "to_numpy",
    "written_bytes",
]

#: Why a summary function refuses to run inside a compiled function.
COMPILED = (
    "tb_cnnviz.summary functions run eagerly: they encode PNG pictures in Python, which "
    "a compiled graph (tf.function, jax.jit) cannot hold. Call them outside the compiled "
    "function, for example after the compiled training step, with the tensors it returned "
    "(or the layer's weights)."
)

# Bytes of picture blobs handed to a writer, per thread: the callbacks' background writer
# measures each drawing's bytes while the training thread goes on.
_written = threading.local()


def create_file_writer(logdir: str) -> events.FileWriter:
    """A summary writer for `logdir` that needs no TensorFlow, like `tf.summary.create_file_writer`.

    Inside `writer.as_default(step=...)` the summary functions write to it, on every Keras
    backend; the files are the event files TensorBoard reads.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default(step=0):
        ...     current() is writer
        True
        >>> writer.close()
    """
    return events.FileWriter(logdir)


def written_bytes() -> int:
    """Bytes of pictures (index and PNG blobs) the summary functions wrote so far on this thread.

    The callbacks' byte budget reads it before and after a drawing.

    Example:
        >>> before = written_bytes()
        >>> written_bytes() - before
        0
    """
    return getattr(_written, "bytes", 0)


def add_written(count: int) -> None:
    """Counts `count` bytes of pictures as written on this thread (`written_bytes`)."""
    _written.bytes = written_bytes() + int(count)


def encoding(fn):
    """Profiles a summary function as the `encode` phase (its copies and writes aside)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with profile.phase("encode"):
            return fn(*args, **kwargs)

    return wrapper


class TFWriter:
    """`tf.summary`'s default writer, seen through `events.FileWriter`'s write methods."""

    def __init__(self, tf):
        self.tf = tf
        step = tf.summary.experimental.get_step()
        self.step = None if step is None else int(step.numpy() if hasattr(step, "numpy") else step)

    def write(self, tag, values, step, md) -> bool:
        """Writes one tensor summary of string blobs, as `events.FileWriter.write` does."""
        tensor = self.tf.constant(list(values), dtype=self.tf.string)
        return bool(self.tf.summary.write(tag, tensor, step=step, metadata=md.SerializeToString()))

    def scalar(self, tag, value, step) -> None:
        """Writes a scalar, as `tf.summary.scalar`."""
        self.tf.summary.scalar(tag, value, step=step)


def current():
    """The default writer (ours, else `tf.summary`'s while it records), or None.

    Raises:
        RuntimeError: Inside a compiled function (`COMPILED`).

    Example:
        >>> current() is None
        True
    """
    check_eager()
    writer = events.default_writer()
    if writer is not None:
        return writer
    tf = _tensorflow()  # tf.summary's writers exist only where TF is in use
    if tf is not None and tf.summary.should_record_summaries():
        return TFWriter(tf)
    return None


def check_eager() -> None:
    """Raises `RuntimeError(COMPILED)` while TensorFlow traces a graph."""
    tf = _tensorflow()
    if tf is not None and not tf.executing_eagerly():
        raise RuntimeError(COMPILED)


def _tensorflow():
    """TensorFlow where it is imported and in use, else None.

    Another thread may be importing it right now (Keras on JAX imports it when it serializes a
    model, as a snapshot's `to_json` does, while the background writer runs): the module is in
    `sys.modules` half initialized, without
    `executing_eagerly` or `summary` yet, and nothing of it can be tracing or recording.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "executing_eagerly") or not hasattr(tf, "summary"):
        return None
    return tf


def to_numpy(x) -> np.ndarray:
    """A tensor or array as float32 NumPy (the profile's `copy` phase).

    Raises:
        RuntimeError: For a value being traced (`COMPILED`).
        ValueError: For anything not numeric.

    Example:
        >>> to_numpy([1, 2]).dtype
        dtype('float32')
    """
    check_traced(x)
    with profile.phase("copy"):
        if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
            x = x.detach().cpu().numpy() if hasattr(x, "detach") else x.numpy()
        arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"expected a numeric array. Received: dtype={arr.dtype}")
    return arr.astype(np.float32, copy=False)


def check_traced(x) -> None:
    """Raises `RuntimeError(COMPILED)` for a value being traced (TensorFlow graph, JAX)."""
    check_eager()
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.core.Tracer):
        raise RuntimeError(COMPILED)


def resolve_step(writer, step) -> int:
    """`step`, or the writer's default step.

    Raises:
        ValueError: If neither is set.
    """
    if step is None:
        step = writer.step
        if step is None:
            raise ValueError(
                "No step set. Pass step=, or give one to writer.as_default(step=...) "
                "(tf.summary.experimental.set_step() for a tf.summary writer)."
            )
    return int(step.numpy() if hasattr(step, "numpy") else step)
