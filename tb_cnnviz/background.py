"""One background thread per event file: encoding and writing pictures off the training thread.

The callbacks do on the training thread only what needs the model: the forward and backward
passes, and the copy of their results to host memory. Everything after that (statistics,
tiling, PNG encoding, writing the event file) is a *job* handed to a `Worker`, which runs its
jobs one at a time, in the order they were submitted, on its own thread. So the event file holds
a step's pictures, its scalars and its plan record in the order the callbacks produced them,
exactly as if they had been written in line.

The queue is bounded: a training thread that produces pictures faster than the worker encodes
them waits in `submit` (and that wait is the callbacks' own time). `join` waits for every job
submitted so far; the callbacks call it when training ends, so `fit()` returns with everything
on disk. A job that raises does not stop the worker: jobs are expected to catch what they can
and report it; anything else is logged.

Pure Python: no TensorFlow, no Keras.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_PENDING", "Worker"]

logger = logging.getLogger(__name__)

#: Jobs that may wait for the worker before `submit` blocks. Each holds one drawing's arrays
#: (a layer's feature maps of the probe images, at most tens of MB on large models).
DEFAULT_MAX_PENDING = 8

_STOP = object()


class Worker:
    """Runs submitted jobs in order on one daemon thread, started on the first job.

    Args:
        max_pending: Jobs that may wait before `submit` blocks.
        name: The thread's name.

    Example:
        >>> done = []
        >>> worker = Worker()
        >>> for i in range(3):
        ...     worker.submit(lambda i=i: done.append(i))
        >>> worker.join()
        >>> done
        [0, 1, 2]
        >>> worker.close()
    """

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING, name: str = "tb-cnnviz-writer"):
        self._queue: queue.Queue = queue.Queue(maxsize=max(int(max_pending), 1))
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], object]) -> None:
        """Runs `job()` on the worker thread after every job submitted before it.

        Blocks while `max_pending` jobs wait. Called from the worker thread itself (a job that
        submits another), it runs the job at once instead: waiting there would wait for ever.
        """
        if threading.current_thread() is self._thread:
            _run(job)
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put(job)

    def join(self) -> None:
        """Waits until every job submitted so far has run."""
        if threading.current_thread() is not self._thread:
            self._queue.join()

    def close(self) -> None:
        """Runs what is left, then stops the thread (a later `submit` starts a new one)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet finished (roughly: the count changes as you read it)."""
        return self._queue.unfinished_tasks

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                _run(job)
            finally:
                self._queue.task_done()


def _run(job) -> None:
    try:
        job()
    except Exception:  # a job reports its own failures; this is a last resort, never a crash
        logger.exception("tb-cnnviz: a background job failed")
