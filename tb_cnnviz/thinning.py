"""Thinning a long run: which steps get pictures, so that 300 epochs cost little more than 30.

`Thinning` decides, for each step (epoch) of a run, whether the callbacks draw it:

* every step of the first `keep_first` (16 by default);
* then steps spaced further apart, the spacing doubling with each doubling of the run: every
  2nd step in [16, 32), every 4th in [32, 64), every 8th in [64, 128), and so on. Each such
  octave keeps `keep_first / 2` steps, so a run of N steps keeps about
  `keep_first * (1 + log2(N / keep_first) / 2)`: 23 of 30, 50 of 300, 66 of 3000;
* always the first step and the last one of each `fit()` (the latest), and any step at which
  the weights changed a lot since the last kept one (`changed`: a conv filter died, its kernel
  collapsing to zero, or a layer's filter norms moved by more than half);
* all within `max_run_bytes` for the whole run (every `fit()` and process writing it): once the
  run's pictures come near the cap (within two steps' worth), only the last step of a `fit()`
  is drawn, and only while it fits.

A step that is not drawn still gets a plan record, saying `thinned` and why, so the tab and
`export --animate` tell a thinned step from missing data. Pure Python: no TensorFlow, no Keras.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_KEEP_FIRST", "DEFAULT_MAX_RUN_BYTES", "Thinning", "spacing"]

#: Steps drawn in full before thinning starts.
DEFAULT_KEEP_FIRST = 16
#: Bytes of pictures a run may hold (every fit() and process together): 1 GiB.
DEFAULT_MAX_RUN_BYTES = 2**30


def spacing(step: int, keep_first: int = DEFAULT_KEEP_FIRST) -> int:
    """Steps between two kept steps around `step`: 1 for the first `keep_first`, then doubling.

    Example:
        >>> [spacing(s) for s in (0, 15, 16, 31, 32, 64, 299)]
        [1, 1, 2, 2, 4, 8, 32]
    """
    if step < keep_first:
        return 1
    return 2 ** (int(math.log2(step / keep_first)) + 1)


class Thinning:
    """Which steps of a long run the callbacks draw (see the module docstring).

    Args:
        keep_first: Steps drawn in full before thinning starts; None draws every step
            (`max_run_bytes` still holds).
        max_run_bytes: Bytes of pictures the whole run may hold; None for no cap.

    Example:
        >>> thin = Thinning()
        >>> [s for s in range(40) if thin.decide(s, final=False) is None][14:]
        [14, 15, 16, 18, 20, 22, 24, 26, 28, 30, 32, 36]
        >>> thin.decide(37, final=True) is None
        True
        >>> thin.decide(17, final=False)
        'thinned: every 2nd step is drawn from step 16 on (a long run)'
    """

    def __init__(self, keep_first=DEFAULT_KEEP_FIRST, max_run_bytes=DEFAULT_MAX_RUN_BYTES):
        self.keep_first = keep_first
        self.max_run_bytes = max_run_bytes

    def scheduled(self, step: int) -> bool:
        """Whether the schedule alone draws `step`."""
        if self.keep_first is None:
            return True
        return step % spacing(step, self.keep_first) == 0

    def decide(
        self,
        step: int,
        *,
        final: bool,
        first: bool = False,
        changed: str | None = None,
        run_bytes: int = 0,
        step_bytes: int = 0,
    ) -> str | None:
        """None to draw `step`, else why it is thinned (the plan record's `thinned`).

        Args:
            step: The step.
            final: Whether it is the last step of this `fit()`.
            first: Whether it is the first step of this `fit()`.
            changed: Why the weights changed a lot since the last drawn step, if they did.
            run_bytes: Bytes of pictures the run holds so far.
            step_bytes: What one drawn step writes, as measured so far (0: unknown).
        """
        cap = self.max_run_bytes
        if cap is not None:
            room = cap - run_bytes
            if final and room < step_bytes or not final and room < 2 * step_bytes:
                return (
                    f"thinned: the run holds {_mb(run_bytes)} of pictures, near its "
                    f"max_run_bytes={cap} cap ({_mb(cap)}); only the last epoch of a fit() is "
                    "drawn now, while it fits"
                )
        if final or first or changed or self.scheduled(step):
            return None
        every = spacing(step, self.keep_first)
        since = self.keep_first * every // 2
        return f"thinned: every {_ordinal(every)} step is drawn from step {since} on (a long run)"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
