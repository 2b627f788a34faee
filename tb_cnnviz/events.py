"""Writing TensorBoard event files without TensorFlow, on every Keras backend.

`FileWriter` writes through TensorBoard's own event-file writer (the one `tensorboard` itself
reads), so a run written on JAX or PyTorch is byte-for-byte the same kind of file as one written
by `tf.summary`: the plugin cannot tell which backend wrote it. The callbacks always write
through it; the `tb_cnnviz.summary` functions write to it when it is the default writer
(`FileWriter.as_default`), and to `tf.summary`'s default writer otherwise.

Only summaries of the TF2 kind are written: a tensor with its plugin's metadata, which is what
TensorBoard's data providers read for every plugin, scalars included.

Two guarantees the callbacks rely on, for faults while writing:

* *Whole steps* (`FileWriter(whole_steps=True)`): the summaries of a step are held in memory and
  written as ONE event (one record, one checksum) when the step is committed (`flush`). A
  process killed while writing leaves at most a torn last record, which TensorBoard's readers
  skip: a step is in the file completely or not at all.
* *Failing storage* (a full disk, a file-size limit, a vanished bucket): the first error is
  warned about once, naming the file and the error; later writes are dropped, so nothing is
  appended after a torn record and what was written before stays readable. No exception
  reaches the code that trains.

*Remote logdirs* (`s3://`, `gs://`, any fsspec URL; `tb_cnnviz.storage`): an object cannot be
appended to, so each flush writes the records since the last one as a new object, a complete
event file of its own named after the one before (`...<pid>.<writer>.000001`), which
TensorBoard's readers take in name order as one run. Each flush costs one PUT of the new bytes
and a 24-byte file header, whatever the run's size (rewriting one growing object would upload
the whole file again at every flush); a run of N flushes leaves N objects.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import socket
import struct
import threading
import time
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

from tb_cnnviz import crc, profile, storage

__all__ = ["FileWriter", "Records", "default_writer"]

_local = threading.local()
_file_ids = itertools.count()


class FileWriter:
    """An event-file writer for one run directory that needs no TensorFlow.

    Records are written on the calling thread (the callbacks call it from their background
    worker), so a failing disk raises nowhere: it is warned about once (`failure`).

    Args:
        logdir: The run directory (created if missing): a local path, or a URL TensorBoard
            reads (`s3://bucket/logs/run1`, `gs://...`), written as one object per flush.
        max_queue: Kept for compatibility; records go to the file's buffer at once.
        flush_secs: Seconds after which a write also flushes the file.
        whole_steps: Hold each step's summaries until `flush` and write them as one event, so
            a step is on disk completely or not at all (the callbacks' writer).

    Example:
        >>> import tempfile
        >>> writer = FileWriter(tempfile.mkdtemp())
        >>> writer.scalar("loss", 0.5, step=1)
        >>> with writer.as_default(step=2):
        ...     default_writer() is writer
        True
        >>> writer.close()
    """

    def __init__(
        self,
        logdir: str,
        *,
        max_queue: int = 10,
        flush_secs: float = 120,
        whole_steps: bool = False,
    ):
        self.logdir = str(logdir)
        self.whole_steps = whole_steps
        self._flush_secs = flush_secs
        self._lock = threading.Lock()
        self._closed = False
        self._held: dict[int, list[summary_pb2.Summary.Value]] = {}
        #: The first error writing met, or None; after one, nothing more is written.
        self.failure: Exception | None = None
        self.step: int | None = None
        self.path = ""
        self._records = None
        self._last_flush = time.monotonic()
        self._remote = storage.is_remote(self.logdir)
        self._file_id = next(_file_ids)
        self._parts = 0  # objects written so far (remote logdirs)
        self._unsent = 0  # events not yet in an object (remote logdirs)
        try:
            storage.makedirs(self.logdir)
            self.path = self._next_path()
            # A remote file is built in memory and written whole at each flush (`_flush`).
            self._file = io.BytesIO() if self._remote else open(self.path, "wb")  # noqa: SIM115
            self._records = Records(self._file)
            self._records.write(_file_version())
            self._records.flush()
        except Exception as e:  # an unwritable or full disk is warned about, never raised
            self._fail(e)

    def write(
        self,
        tag: str,
        values: Sequence[bytes] | np.ndarray,
        step: int,
        metadata: summary_pb2.SummaryMetadata,
    ) -> bool:
        """Writes one tensor summary: `values` (strings as bytes, or numbers) at `step`.

        Returns:
            True when the summary is queued (it reaches the file at the next flush); False when
            the writer is closed or writing failed earlier.

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
        value = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)
        with self._lock:
            if self._closed or self.failure is not None:
                return False
            if self.whole_steps:
                self._held.setdefault(int(step), []).append(value)
                return True
            return self._add(
                event_pb2.Event(step=int(step), summary=summary_pb2.Summary(value=[value]))
            )

    def scalar(self, tag: str, value: float, step: int, description: str | None = None) -> None:
        """Writes a scalar that TensorBoard's Scalars tab shows, like `tf.summary.scalar`.

        Example:
            >>> import tempfile
            >>> FileWriter(tempfile.mkdtemp()).scalar("conv/dead_fraction", 0.25, step=3)
        """
        md = scalar_metadata.create_summary_metadata(display_name=tag, description=description)
        self.write(tag, np.asarray(float(value), np.float32), step, md)

    def session_start(self, step: int) -> None:
        """Marks that training (re)starts at `step`: TensorBoard drops what an earlier
        process wrote at `step` and later to this run (a resumed or restarted job).

        Example:
            >>> import tempfile
            >>> FileWriter(tempfile.mkdtemp()).session_start(0)
        """
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        with self._lock:
            if not self._closed and self.failure is None:
                self._commit()
                self._add(event_pb2.Event(step=int(step), session_log=start))

    def flush(self) -> None:
        """Writes every held step (one event each) and every buffered record to disk.

        Example:
            >>> import tempfile
            >>> FileWriter(tempfile.mkdtemp()).flush()
        """
        with self._lock:
            if not self._closed and self.failure is None:
                self._commit()
                self._flush()

    def close(self) -> None:
        """Flushes and closes the file; later writes are dropped.

        Example:
            >>> import tempfile
            >>> w = FileWriter(tempfile.mkdtemp()); w.close(); w.close()
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.failure is None:
                self._commit()
                self._flush()
            if self._records is not None:
                try:
                    self._records.close()
                except Exception as e:
                    self._fail(e)

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

    # -- under self._lock --------------------------------------------------------------------
    def _commit(self) -> None:
        """Writes each held step as one event, steps in the order they were begun."""
        held, self._held = self._held, {}
        for step, values in held.items():
            if not self._add(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values))):
                return

    def _add(self, event: event_pb2.Event) -> bool:
        if self.failure is not None:
            return False
        event.wall_time = time.time()
        try:
            self._records.write(event.SerializeToString())
            self._unsent += 1
            if time.monotonic() - self._last_flush > self._flush_secs:
                self._flush()
        except Exception as e:
            self._fail(e)
        return self.failure is None

    def _flush(self) -> None:
        if self.failure is not None:
            return
        try:
            self._records.flush()
            if self._remote:
                self._put_part()
        except Exception as e:
            self._fail(e)
        self._last_flush = time.monotonic()

    def _next_path(self) -> str:
        """The next file's path: names sort in the order the files are begun.

        TensorBoard reads a run's files in the order of their names, and drops the steps of a
        file that go back behind the last file's ("out of order event.step"): writers begun in
        the same second (two short `fit()`s) are told apart by a zero-padded count, since the
        10th would sort before the 9th.
        """
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{self._file_id:06d}"
        )
        if self._remote:
            name += f".{self._parts:06d}"
        return storage.join(self.logdir, name)

    def _put_part(self) -> None:
        """Writes the records since the last flush as one new object (a remote logdir)."""
        if not self._unsent:
            return  # nothing new: no object of a header alone
        storage.write_bytes(self.path, self._file.getvalue())
        self._unsent = 0
        self._parts += 1
        self.path = self._next_path()
        self._file.seek(0)
        self._file.truncate()
        self._records.write(_file_version())

    def _fail(self, error: Exception) -> None:
        """Remembers the first error and warns once; nothing is appended after it."""
        if self.failure is not None:
            return
        self.failure = error
        self._held = {}
        warnings.warn(
            f"tb-cnnviz: cannot write {self.path or self.logdir} ({type(error).__name__}: "
            f"{error}). Nothing more is written to it in this process; what was written "
            "before stays readable, and training continues.",
            RuntimeWarning,
            stacklevel=2,
        )


class Records:
    """Writes TFRecords (length, data and their masked CRC-32C) to a binary file object.

    TensorBoard's own record writer computes the checksums in pure Python, at about 8 MB/s;
    `tb_cnnviz.crc` does it about ten times as fast, which a step of megabytes of pictures
    feels.

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> Records(out).write(b"event")
        >>> len(out.getvalue())  # 8 + 4 + 5 + 4
        21
    """

    def __init__(self, file):
        self._file = file

    def write(self, data: bytes) -> None:
        """Appends one record holding `data`."""
        header = struct.pack("<Q", len(data))
        self._file.write(
            header
            + struct.pack("<I", crc.masked_crc32c(header))
            + data
            + struct.pack("<I", crc.masked_crc32c(data))
        )

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _file_version() -> bytes:
    """The first record of every event file: the format version TensorBoard checks."""
    version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
    return version.SerializeToString()


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
