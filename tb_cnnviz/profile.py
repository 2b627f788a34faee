"""Where the callbacks' time goes: seconds per kind and phase, for reports and benchmarks.

A drawing passes through phases, and each is timed where it happens:

* `setup`: checks and measurements before the first epoch (`on_train_begin`, first batch);
* `trace`: calls of a compiled function that traced (and compiled) it first;
* `compute`: the model's forward (and backward) passes and the math on their outputs;
* `copy`: waiting for results on the device and copying them to host memory;
* `encode`: statistics, tiling and PNG encoding;
* `write`: handing the encoded summaries to the event-file writer.

Phases nest: time spent in an inner phase is not counted in the outer one, so the phases of a
kind add up to the time the kind took. Timing is per thread: the callbacks activate a `Profile`
for one kind around each drawing (`Profile.recording`), on the training thread and in the
background writer alike; code that runs with no profile active (a summary function called
directly) pays one attribute lookup per phase and records nothing.

Pure Python: no TensorFlow, no Keras.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["PHASES", "Profile", "phase"]

#: The phases, in the order a drawing meets them.
PHASES = ("setup", "trace", "compute", "copy", "encode", "write")

_local = threading.local()


class Profile:
    """Seconds per `(kind, phase)`, accumulated from any thread.

    Example:
        >>> profile = Profile()
        >>> with profile.recording("feature_maps"):
        ...     with phase("compute"):
        ...         pass
        >>> sorted(profile.table()["feature_maps"])
        ['compute']
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._seconds: collections.Counter = collections.Counter()

    def add(self, kind: str, name: str, seconds: float) -> None:
        """Adds `seconds` to one kind's phase."""
        with self._lock:
            self._seconds[(kind, name)] += seconds

    def table(self) -> dict[str, dict[str, float]]:
        """`{kind: {phase: seconds}}` of what was recorded so far."""
        with self._lock:
            items = list(self._seconds.items())
        out: dict[str, dict[str, float]] = {}
        for (kind, name), seconds in items:
            out.setdefault(kind, {})[name] = seconds
        return out

    def one_time(self, kind: str) -> float:
        """Seconds of `kind`'s phases that a later drawing does not pay again: tracing and
        compiling, and setup (such as finding the layer Grad-CAM reads).

        Example:
            >>> profile = Profile()
            >>> profile.add("actmax", "trace", 0.4)
            >>> profile.add("actmax", "compute", 0.1)
            >>> profile.one_time("actmax")
            0.4
        """
        with self._lock:
            return self._seconds[(kind, "trace")] + self._seconds[(kind, "setup")]

    def total(self, kind: str | None = None) -> float:
        """Seconds recorded, for one kind or all of them."""
        with self._lock:
            return sum(s for (k, _), s in self._seconds.items() if kind is None or k == kind)

    @contextlib.contextmanager
    def recording(
        self, kind: str, default: str = "compute", clock: Callable[[], float] = time.perf_counter
    ) -> Iterator[None]:
        """Records the phases of `kind` run on this thread inside; untimed code is `default`.

        `clock` measures them: wall time by default; a background thread, whose cost is the
        processor time it takes from training, passes `time.thread_time`. A recording inside
        another (a callback's setup inside `CNNViz`'s) pauses the outer one.
        """
        previous = getattr(_local, "active", None)
        if previous is not None and previous[2]:  # pause the enclosing recording's phase
            outer, outer_kind, stack, outer_clock = previous
            outer.add(outer_kind, stack[-1].name, outer_clock() - stack[-1].start)
        _local.active = (self, kind, [], clock)
        try:
            with phase(default):
                yield
        finally:
            _local.active = previous
            if previous is not None and previous[2]:  # and resume it
                previous[2][-1].start = previous[3]()


class _Timing:
    """One open phase: its name (which the code inside may change) and when it last resumed."""

    def __init__(self, name: str, start: float):
        self.name, self.start = name, start


@contextlib.contextmanager
def phase(name: str) -> Iterator[_Timing]:
    """Times the code inside as phase `name` of the kind being recorded on this thread.

    The enclosing phase is paused meanwhile. The code inside may rename its phase (a compiled
    call finds out that it traced); the name at exit counts. Without an active
    `Profile.recording`, nothing is timed.

    Example:
        >>> with phase("compute") as timing:
        ...     timing.name = "trace"  # it traced after all
    """
    active = getattr(_local, "active", None)
    if active is None:
        yield _Timing(name, 0.0)
        return
    profile, kind, stack, clock = active
    now = clock()
    timing = _Timing(name, now)
    if stack:  # pause the enclosing phase
        profile.add(kind, stack[-1].name, now - stack[-1].start)
    stack.append(timing)
    try:
        yield timing
    finally:
        end = clock()
        stack.pop()
        profile.add(kind, timing.name, end - timing.start)
        if stack:  # resume it
            stack[-1].start = end
