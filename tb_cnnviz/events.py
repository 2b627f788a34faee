"""Writing TensorBoard event files without TensorFlow, on every Keras backend.

`FileWriter` writes through TensorBoard's own event-file writer (the one `tensorboard` itself
reads), so a run written on JAX or PyTorch is byte-for-byte the same kind of file as one written
by `tf.summary`: the plugin cannot tell which backend wrote it. The callbacks always write
through it; the `tb_cnnviz.summary` functions write to it when it is the default writer
(`FileWriter.as_default`), and to `tf.summary`'s default writer otherwise.

Only summaries of the TF2 kind are written: a tensor with its plugin's metadata, which is what
TensorBoard's data providers read for every plugin, scalars included.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from tb_cnnviz import profile

__all__ = ["FileWriter", "default_writer"]

_local = threading.local()


class FileWriter:
    """An event-file writer for one run directory that needs no TensorFlow.

    Args:
        logdir: The run directory (created if missing). With TensorFlow installed, remote paths
            (`gs://...`) work as they do for TensorBoard.
        max_queue: Events held in memory before they are written.
        flush_secs: Seconds between automatic flushes.

    Example:
        >>> import tempfile
        >>> writer = FileWriter(tempfile.mkdtemp())
        >>> writer.scalar("loss", 0.5, step=1)
        >>> with writer.as_default(step=2):
        ...     default_writer() is writer
        True
        >>> writer.close()
    """

    def __init__(self, logdir: str, *, max_queue: int = 10, flush_secs: float = 120):
        self.logdir = str(logdir)
        self._writer = EventFileWriter(self.logdir, max_queue, flush_secs)
        self._lock = threading.Lock()
        self._closed = False
        self.step: int | None = None

    def write(
        self,
        tag: str,
        values: Sequence[bytes] | np.ndarray,
        step: int,
        metadata: summary_pb2.SummaryMetadata,
    ) -> bool:
        """Writes one tensor summary: `values` (strings as bytes, or numbers) at `step`.

        Returns:
            True (the summary is queued; it reaches the file at the next flush).

        Example:
            >>> import tempfile
            >>> from tb_cnnviz import metadata
            >>> writer = FileWriter(tempfile.mkdtemp())
            >>> md = metadata.create_summary_metadata("weights", "conv")
            >>> writer.write("conv/weights", [b"{}"], step=0, metadata=md)
            True
        """
        with profile.phase("write"):
            return self._write(tag, values, step, metadata)

    def _write(self, tag, values, step, metadata) -> bool:
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
            tensor = tensor_util.make_tensor_proto(values)
        else:
            items = [bytes(v) for v in values]
            tensor = tensor_util.make_tensor_proto(items, dtype="string", shape=[len(items)])
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)]
        )
        self._add(event_pb2.Event(step=int(step), summary=summary))
        return True

    def scalar(self, tag: str, value: float, step: int, description: str | None = None) -> None:
        """Writes a scalar that TensorBoard's Scalars tab shows, like `tf.summary.scalar`.

        Example:
            >>> import tempfile
            >>> FileWriter(tempfile.mkdtemp()).scalar("conv/dead_fraction", 0.25, step=3)
        """
        md = scalar_metadata.create_summary_metadata(display_name=tag, description=description)
        self.write(tag, np.asarray(float(value), np.float32), step, md)

    def flush(self) -> None:
        """Writes every queued event to disk.

        Example:
            >>> import tempfile
            >>> FileWriter(tempfile.mkdtemp()).flush()
        """
        with self._lock:
            if not self._closed:
                self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the file; later writes are dropped.

        Example:
            >>> import tempfile
            >>> w = FileWriter(tempfile.mkdtemp()); w.close(); w.close()
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.close()

    @contextlib.contextmanager
    def as_default(self, step: int | None = None) -> Iterator[FileWriter]:
        """Makes this the writer (and `step` the default step) of the summary functions.

        Nests like `tf.summary`'s `writer.as_default()`, per thread.

        Example:
            >>> import tempfile
            >>> from tb_cnnviz import summary
            >>> writer = FileWriter(tempfile.mkdtemp())
            >>> with writer.as_default(step=0):
            ...     summary.write_plan("cnnviz", drawn=["conv/weights"])
            True
        """
        stack = _stack()
        previous, self.step = self.step, None if step is None else int(step)
        stack.append(self)
        try:
            yield self
        finally:
            stack.pop()
            self.step = previous

    def _add(self, event: event_pb2.Event) -> None:
        event.wall_time = time.time()
        with self._lock:
            if not self._closed:
                self._writer.add_event(event)


def default_writer() -> FileWriter | None:
    """The innermost `FileWriter.as_default` of this thread, or None.

    Example:
        >>> default_writer() is None
        True
    """
    stack = _stack()
    return stack[-1] if stack else None


def _stack() -> list[FileWriter]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack
