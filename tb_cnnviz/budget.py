"""The time budget of the callbacks: which pictures to draw at each epoch so that they stay cheap.

A callback's cost is a budget, not a side effect. `TimeBudget(0.05)` lets the callbacks' own time
(their setup, tracing and compiling included) grow to at most 5% of the time `fit()` spends
training, amortized over the run:

* *Cheap* drawings (filter weights and their scalars) are drawn at every epoch they are due.
* *Costly* drawings (feature maps, attribution, activation maximization; one per layer or
  method) take turns: each epoch draws the ones drawn longest ago (never drawn first) while the
  credit (the budget earned by training so far, less what was spent) covers their estimated
  cost. The turn stops at the first one that does not fit where waiting lets credit build up
  for it before the last epoch, instead of going to smaller ones: every drawing gets its turn.
  Where waiting cannot (the last epoch's keep-back, below, takes what the epochs still earn),
  the ones after it are drawn, and it is drawn at the last epoch.
* *Priority* drawings (Grad-CAM: one picture of what decides the output, followed from epoch
  to epoch) come first at every epoch their credit allows; one that does not fit holds nothing
  back. From the second epoch on, one just short of its epoch's credit borrows up to an
  epoch's earnings from the epochs to come (once an epoch, never at the last, and only what
  the last epoch's keep-back leaves). Nothing is kept back for them at later epochs: tried,
  keeping back their cost at the epochs to come left MobileNetV2's first two epochs without a
  picture, and Grad-CAM still did not fit them.
* The last epoch of `fit()` is preferred: earlier epochs keep back the credit that the last one
  needs to draw everything once, and the cheap drawings of the epochs between need, beyond what
  training will still earn by then. At the last
  epoch nothing waits for a turn; a drawing that scales takes the steps that leave the
  drawings after it their turn, and a drawing that still does not fit and was not drawn in
  this fit is left out, with the same kind of reason.
* The drawings the whole run can afford once each (after the setup and the cheap drawings of
  every epoch; priority drawings first, then kinds in turn, each kind's cheapest first) take
  turns; the others are *left out*,
  and the reason names their cost and how to get them (a larger `budget`, or `budget=None`).
* Drawings that scale (activation-maximization steps) take fewer steps when credit is short;
  a first one too (its tracing paid whole, `Drawing.estimate_once`). One the run affords only
  at its fewest steps is drawn before the last epoch where an epoch's credit pays for it, and
  nothing is kept back for it or waits for it.
* The setup (checks, timing, tracing before the first epoch) is amortized over the fit's
  epochs like the rest: what is not charged yet is kept back from later earnings.

Costs are measured whenever something is drawn; before its first drawing, a drawing's cost is
the callback's estimate (`ModelTiming`), and at most one such unmeasured drawing starts per epoch,
so a wrong estimate costs at most one drawing. Estimates are calibrated by what was measured:
once drawings of a kind were drawn in full and cost less than estimated (a machine faster than
the estimates assume, tracing cheaper than a model's eager passes suggest), the kind's other
estimates shrink by the same ratio; they never grow by it (a first feature-map drawing also pays
the pass every layer shares, which says nothing of the next layer's cost). The estimates start
from eager passes of the model timed at setup; once a compiled pass was timed (the feature
maps' pass, from its second drawing on), they come from that, and calibration starts again for
them (a ratio measured against one basis says nothing of the other). Bytes are bounded the same
way: drawings stop within an epoch once `max_bytes` were written.

This module is pure Python (no TensorFlow, no Keras); `tb_cnnviz.callbacks` feeds it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from tb_cnnviz import profile as profile_lib

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_FLOOR_SECONDS",
    "DEFAULT_MAX_BYTES",
    "FLOOR_END_SECONDS",
    "FLOOR_FULL_SECONDS",
    "Drawing",
    "ModelTiming",
    "Plan",
    "TimeBudget",
]

#: The default budget: the callbacks' own time stays within 5% of training time.
DEFAULT_BUDGET = 0.05
#: The default cap on bytes the callbacks write per epoch (compressed PNG and JSON).
DEFAULT_MAX_BYTES = 16 * 2**20
#: The least own time a `fit()` of a tutorial's size may take, in seconds, when its fraction of
#: training time is less: a run of a few seconds still draws every kind once. It holds in full
#: for up to `FLOOR_FULL_SECONDS` of training, fades out linearly until `FLOOR_END_SECONDS`, and
#: does not affect longer runs, whose budget stays their fraction of training time. Keras'
#: callback dispatch and the background worker add 0.2-0.4 s of wall time to own time on these
#: 2 cores: at 2 s, a tutorial's `fit()` took 2.2-2.3 s longer than a plain one in two runs of
#: four; at 1.6 s, 1.2-1.7 s longer in five runs of six, every kind still drawn (2.6 s in one,
#: beside a test run; `artifacts/bench-overhead-session14.log`, `-session14-head.log`).
DEFAULT_FLOOR_SECONDS = 1.6
#: Training time (seconds) up to which a `fit()` gets the whole floor.
FLOOR_FULL_SECONDS = 5.0
#: Training time (seconds) from which a `fit()` gets no floor at all.
FLOOR_END_SECONDS = 10.0

_EMA = 0.3  # weight of a new measurement in a drawing's steady cost
#: Estimates shrink by measurements at most this far (a cheap first layer does not make a deep
#: one free).
_LEAST_CALIBRATION = 0.25


@dataclasses.dataclass
class Drawing:
    """One picture tag a callback can draw at this epoch, with what planning it needs.

    Attributes:
        tag: The picture tag, e.g. `"conv4/actmax"`.
        kind: One of `tb_cnnviz.metadata.KINDS`.
        draw: Draws it: called as `draw(steps)` for a scalable drawing, else `draw()`. It may
            return a function that finishes the drawing (encodes and writes it) elsewhere.
        source: Who offered it (the callback), for its caller's bookkeeping.
        also: Further tags the same drawing writes (attribution of several image inputs).
        estimate: Seconds one drawing costs before it was ever measured (setup and tracing
            included).
        estimate_bytes: Bytes one drawing writes before it was ever measured.
        cheap: Drawn at every epoch it is due, budget or not.
        steps: For a scalable drawing, its full number of steps; its cost is taken as
            proportional to them.
        min_steps: The fewest steps worth drawing.
        order: Ties between drawings of equal staleness go to the lower order.
        compiled_basis: Whether `estimate` was made from a timed compiled pass
            (`ModelTiming.compiled_per_image`); the budget sets it when it plans, and
            calibrates estimates of either basis only by measurements of the same basis.
        shares_pass: Whether the drawings of its kind at one step share one pass of the
            model (feature maps): once one of them is chosen, the others cost only their own
            part, so they are not held back as first drawings of unknown cost.
        pass_estimate: For a drawing that shares a pass, the seconds of that pass before it
            was ever measured (`TimeBudget.record_pass`). `estimate` leaves it out: the first
            drawing of its kind chosen at a step pays it, the others do not.
        estimate_once: Of a scalable drawing's `estimate`, the seconds that do not scale with
            its steps (tracing the optimization step): a first drawing short of credit may
            then take fewer steps too, paying its tracing once and its steps in part.
        priority: Drawn first among the costly drawings, at every epoch its credit allows,
            and judged affordable for the run before them (Grad-CAM: one picture of what
            decides the output, followed from epoch to epoch). Its first drawing does not
            keep the first drawing of another kind from starting at the same epoch.
    """

    tag: str
    kind: str
    draw: Callable[..., object]
    source: object = None
    also: tuple[str, ...] = ()
    estimate: float = 0.0
    estimate_bytes: int = 0
    cheap: bool = False
    steps: int | None = None
    min_steps: int | None = None
    order: int = 0
    compiled_basis: bool = False
    shares_pass: bool = False
    estimate_once: float = 0.0
    pass_estimate: float = 0.0
    priority: bool = False

    @property
    def splits(self) -> bool:
        """Whether `estimate` tells its part that does not scale (`estimate_once`) from its
        steps.

        Example:
            >>> Drawing("c/actmax", "actmax", print, estimate=1.0, estimate_once=0.5).splits
            True
        """
        return 0.0 < self.estimate_once < self.estimate

    def estimate_at(self, steps: int | None) -> float:
        """`estimate` with `steps` (its full steps for None): the part that does not scale
        (`estimate_once`; all of it where that is not given) whole, the rest in proportion.

        Example:
            >>> d = Drawing("c/actmax", "actmax", print, estimate=1.0, steps=32,
            ...             estimate_once=0.5)
            >>> d.estimate_at(8)
            0.625
        """
        if not self.steps or not steps:
            return self.estimate
        once = self.estimate_once if self.splits else self.estimate
        return once + (self.estimate - once) * min(steps, self.steps) / self.steps


@dataclasses.dataclass
class Plan:
    """What one epoch's planning decided.

    Attributes:
        draw: `(drawing, steps)` in drawing order; `steps` is None for non-scalable drawings.
        skipped: `{tag: reason}` for drawings due now but not drawn.
        left_out: `{tag: reason}` for drawings too costly for the whole run (also in `skipped`).
    """

    draw: list[tuple[Drawing, int | None]]
    skipped: dict[str, str]
    left_out: dict[str, str]


@dataclasses.dataclass
class _Cost:
    first: float | None = None  # the first drawing's seconds (tracing included)
    steady: float | None = None  # seconds of a later drawing (EMA), per full `steps`
    guessed: bool = False  # `steady` is the first drawing less its one-time part, not measured
    bytes: float | None = None
    last_turn: int = -1  # the planning turn it was last drawn at


class ModelTiming:
    """What one eager forward pass of a model costs: a fixed part and a part per image.

    The fixed part is dominated by per-operation overhead, which also sets how long tracing a
    compiled function of the model takes. Both come from timing `forward(1 image)` and
    `forward(n images)`. An eager pass's cost per image says little of a compiled pass's (on
    small models it is ten times as much, on keras.applications models two to five times), so
    once a compiled forward pass of the model was timed (`observe_compiled`, fed by the
    feature maps' pass from their second drawing on), the compiled costs (`compiled_forward`,
    `backward`) come from it instead.

    Args:
        fixed: Seconds of an eager forward pass that do not grow with the batch.
        per_image: Seconds each image adds.
        compiles: Whether the backend traces and compiles functions (TensorFlow, JAX); on
            PyTorch, which runs eagerly, nothing is traced and `trace()` is 0.

    Example:
        >>> timing = ModelTiming(fixed=0.02, per_image=0.001)
        >>> round(timing.forward(10), 3), ModelTiming(0.02, 0.001, compiles=False).trace()
        (0.03, 0.0)
    """

    #: Tracing a forward and backward pass costs about this many eager forward passes' fixed
    #: part (measured on the demo CNN and keras.applications models, see benchmarks/budget.py).
    TRACE_FACTOR = 25.0
    #: A compiled forward and backward pass of one image costs this many eager forward passes.
    BACKWARD_FACTOR = 3.0

    #: A compiled forward and backward pass costs about this many compiled forward passes: 3-4
    #: on plain and MobileNet-style convs (measured at 224 on 2 CPU cores). EfficientNetB0's
    #: squeeze-and-excite and swish take about 6: its first activation maximization costs up to
    #: 1.8x its estimate, the one drawing the budget may run over by. Six for every model left
    #: a tutorial-sized run without its second layer's activation maximization.
    COMPILED_BACKWARD_FACTOR = 3.0
    #: Tracing a forward and backward pass costs about this many traces of the forward pass
    #: (MobileNetV2 at 224: Grad-CAM's trace 1.38 s, the feature maps' forward trace 0.97 s).
    BACKWARD_TRACE_FACTOR = 1.5

    def __init__(self, fixed: float, per_image: float, *, compiles: bool = True):
        self.fixed = max(float(fixed), 0.0)
        self.per_image = max(float(per_image), 0.0)
        self.compiles = bool(compiles)
        #: Seconds per image of a compiled forward pass, once one was timed; else None.
        self.compiled_per_image: float | None = None
        #: Seconds of a compiled forward pass that do not grow with the batch (the call's own
        #: overhead), where a one-image pass was timed too; else 0.
        self.compiled_fixed = 0.0
        #: Seconds tracing a forward pass of the model took, once one was timed; else None.
        self.forward_trace: float | None = None

    def observe_trace(self, seconds: float) -> None:
        """Records what tracing and compiling a forward pass of the model took (the feature
        maps' extractor, traced before the first epoch): `trace()` scales from it instead of
        from the eager pass's fixed part (`TRACE_FACTOR`), which on keras.applications
        models said 3.8 s for a trace of 1.4 s.

        Example:
            >>> timing = ModelTiming(fixed=0.15, per_image=0.05)
            >>> timing.observe_trace(1.0)
            >>> timing.trace()
            1.5
        """
        if math.isfinite(seconds) and seconds > 0:
            self.forward_trace = max(seconds, self.forward_trace or 0.0)

    def observe_compiled(self, images: int, seconds: float, *, one: float | None = None) -> None:
        """Records a timed compiled forward pass of `images` images (traced before).

        `one`: the seconds of a one-image pass of the same compiled function, where timing it
        needs no new trace (TensorFlow traces the feature maps' pass for any batch). The two
        split the pass into the call's fixed part and a part per image: the average over
        eight probe images carries the fixed part (a millisecond or more of the demo CNN's
        5 ms pass) into every image of activation maximization's 64-image steps. Later
        passes of `images` count their time beyond the fixed part.

        The slowest observation is kept, the most cautious one: a pass slowed down by the
        background worker competing for the processor makes later estimates larger, never
        smaller than the model's speed warrants.

        Example:
            >>> timing = ModelTiming(fixed=0.02, per_image=0.01)
            >>> timing.observe_compiled(8, 0.016)
            >>> round(timing.compiled_forward(8), 3), round(timing.backward(8), 3)
            (0.016, 0.048)
            >>> split = ModelTiming(fixed=0.02, per_image=0.01)
            >>> split.observe_compiled(8, 0.016, one=0.002)
            >>> round(split.compiled_fixed, 4), round(split.compiled_forward(64), 4)
            (0.0, 0.128)
            >>> split = ModelTiming(fixed=0.02, per_image=0.01)
            >>> split.observe_compiled(8, 0.005, one=0.0015)
            >>> round(split.compiled_fixed, 4), round(split.compiled_forward(64), 4)
            (0.001, 0.033)
        """
        if images <= 0 or not math.isfinite(seconds) or seconds < 0:
            return
        if one is not None and images > 1 and math.isfinite(one) and 0 <= one <= seconds:
            per_image = (seconds - one) / (images - 1)
            self.compiled_fixed = max(one - per_image, 0.0)
        else:
            per_image = max(seconds - self.compiled_fixed, 0.0) / images
        known = self.compiled_per_image
        self.compiled_per_image = per_image if known is None else max(known, per_image)

    @classmethod
    def measure(
        cls,
        forward: Callable[[int], object],
        n: int,
        *,
        compiles: bool = True,
        warm: bool = False,
    ) -> ModelTiming:
        """Times `forward(1)` and `forward(n)` (after one untimed call) and splits the cost.

        `warm`: the model already ran eagerly once here (`tb_cnnviz.layers.forward_trace`), so
        the untimed call is skipped: on MobileNetV2 at 224 it is 0.15 s of setup.

        Example:
            >>> timing = ModelTiming.measure(lambda k: time.sleep(0.02 * k), 4)
            >>> timing.per_image > 0
            True
        """
        if not warm:
            forward(1)  # first calls pay one-time costs (weight reads, op caches)
        start = time.perf_counter()
        forward(1)
        one = time.perf_counter() - start
        if n <= 1:
            return cls(one, 0.0, compiles=compiles)
        start = time.perf_counter()
        forward(n)
        many = time.perf_counter() - start
        per_image = max(many - one, 0.0) / (n - 1)
        return cls(max(one - per_image, 0.0), per_image, compiles=compiles)

    def forward(self, images: int) -> float:
        """Seconds of an eager forward pass of `images` images."""
        return self.fixed + self.per_image * images

    def trace(self) -> float:
        """Seconds to trace and compile a forward and backward pass of the model (0 where the
        backend does not compile)."""
        if not self.compiles:
            return 0.0
        if self.forward_trace is not None:
            return self.BACKWARD_TRACE_FACTOR * self.forward_trace
        return self.TRACE_FACTOR * self.fixed

    def compiled_forward(self, images: int) -> float:
        """Seconds of a compiled forward pass of `images` images (the eager estimate until a
        compiled pass was observed)."""
        if self.compiled_per_image is None:
            return self.forward(images)
        return self.compiled_fixed + self.compiled_per_image * images

    def backward(self, images: int) -> float:
        """Seconds of a compiled forward and backward pass of `images` images.

        Where the backend runs eagerly (PyTorch) every pass also pays the per-operation fixed
        part: on a small model that is nearly all of it, and the part per image, measured as a
        difference of two short timings, may come out as 0.

        Example:
            >>> round(ModelTiming(0.01, 0.0, compiles=False).backward(4), 3)
            0.03
        """
        if self.compiled_per_image is not None:
            return self.COMPILED_BACKWARD_FACTOR * self.compiled_forward(images)
        if not self.compiles:
            return self.BACKWARD_FACTOR * self.forward(images)
        return self.BACKWARD_FACTOR * self.per_image * images


class TimeBudget:
    """Plans which drawings to make at each epoch so the callbacks' time stays within budget.

    Args:
        fraction: The budget, a fraction of training time in (0, 1]; None draws everything that
            is due (no budget).
        max_bytes: Bytes the drawings of one epoch may write; None for no cap.
        floor: Seconds a tutorial-sized `fit()` may take at least, however short its training:
            the budget of a fit of up to `FLOOR_FULL_SECONDS` of training is `max(fraction x
            its training time, floor)`; the floor fades out by `FLOOR_END_SECONDS`.

    Attributes:
        train_seconds: Training time so far over every `fit()`, the callbacks' time excluded.
        own_seconds: The callbacks' own time so far.
        profile: A `tb_cnnviz.profile.Profile` of that time, per kind and phase.

    Example:
        >>> budget = TimeBudget(0.5)
        >>> budget.start_fit(epochs=2)
        >>> weights = Drawing("c/weights", "weights", lambda: 10, cheap=True)
        >>> maps = Drawing("c/feature_maps", "feature_maps", lambda: 10, estimate=1e9)
        >>> plan = budget.plan(0, [weights, maps])
        >>> [d.tag for d, _ in plan.draw], list(plan.left_out)
        (['c/weights'], ['c/feature_maps'])
    """

    def __init__(
        self,
        fraction: float | None = DEFAULT_BUDGET,
        max_bytes=DEFAULT_MAX_BYTES,
        floor: float = DEFAULT_FLOOR_SECONDS,
    ):
        self.fraction = fraction
        self.max_bytes = max_bytes
        self.floor = max(float(floor), 0.0)
        self._past_allowance = 0.0  # what the floor added to the fits before this one
        self.train_seconds = 0.0
        self.own_seconds = 0.0
        self._costs: dict[str, _Cost] = {}
        # (kind, compiled basis) -> the largest measured / estimated seconds of a first
        # drawing drawn in full
        self._ratios: dict[tuple[str, bool], float] = {}
        # The same, of the two parts of split estimates (`Drawing.estimate_once` and the steps),
        # where a first drawing measured its one-time part: `(kind, basis, part)` -> ratio.
        self._part_ratios: dict[tuple[str, bool, str], float] = {}
        # kind -> the seconds of the pass its drawings share at a step (`record_pass`), and all
        # the seconds of such passes so far (a drawing's own cost is its time less what it
        # added to them).
        self._passes: dict[str, float] = {}
        self._pass_totals: dict[str, float] = {}
        # The kinds whose pass ran at the epoch being drawn: a plan made again at the last
        # epoch (for what a first drawing's real cost now affords) does not charge it twice.
        self._paid: set[str] = set()
        self._paid_epoch: int | None = None
        self._reported: set[str] = set()
        self._fit_start: float | None = None
        self._fit_own_start = 0.0
        self._fit_train_start = 0.0
        self._epochs: int | None = 1
        self._epochs_done = 0
        # The first epoch's batches (`batch_begins`): the training time when its second batch
        # began, how many it had, and what its first batch took beyond a later one's.
        self._second_batch_at: float | None = None
        self._batches = 0
        self._warmup = 0.0
        self._turn = 0  # plans made so far: how long ago a drawing was drawn, across fits
        self._setup_seconds = 0.0
        #: Seconds of own work the last epoch of a fit will do after its pictures whatever the
        #: credit (the model's snapshot, `tb_cnnviz.callbacks.Snapshots`): kept back for it.
        self.reserved = 0.0
        self._cheap_seconds = 0.0  # what the cheap drawings of this fit cost so far
        self._drawn_in_fit: set[str] = set()
        self._depth = 0
        self._own_since: float | None = None  # the start of the open `own()`, if any
        self._final = False  # whether the plan being made is a fit's last epoch's
        #: `ModelTiming` of the model being trained, shared by the callbacks that estimate.
        self.timing: ModelTiming | None = None
        self.timing_model: object = None
        #: Where the callbacks' own time went, per kind and phase (`tb_cnnviz.profile`).
        self.profile = profile_lib.Profile()
        # Background jobs record costs and add own time from their thread.
        self._lock = threading.RLock()

    # -- time keeping ------------------------------------------------------------------------
    def bind(self, model: object) -> None:
        """Starts measuring `model`: what another model's drawings cost says nothing of it.

        Training and own time go on accumulating; only costs and the timing are forgotten.
        """
        if model is not self.timing_model:
            self._costs.clear()
            self._ratios.clear()
            self._part_ratios.clear()
            self._passes.clear()
            self.timing, self.timing_model = None, model

    def start_fit(self, epochs: int | None, now: float | None = None) -> None:
        """Starts timing one `fit()` call that will run `epochs` epochs (None: unknown)."""
        if self._fit_start is not None:  # the fit before is over: its floor is settled
            self._past_allowance += self._fit_allowance(self.train_seconds - self._fit_train_start)
        self._fit_start = time.perf_counter() if now is None else now
        self._paid, self._paid_epoch = set(), None
        self._fit_own_start = self.own_seconds
        self._fit_train_start = self.train_seconds
        self.set_epochs(epochs)
        self._epochs_done = 0
        self._second_batch_at, self._batches, self._warmup = None, 0, 0.0
        self._cheap_seconds = 0.0
        self._drawn_in_fit = set()

    def set_epochs(self, epochs: int | None) -> None:
        """Sets how many epochs the current `fit()` runs (None: unknown, as in a custom loop).

        With the count unknown, nothing is kept back for a last epoch and nothing is judged too
        costly for the run: drawings wait for their credit.
        """
        self._epochs = None if epochs is None else max(int(epochs), 1)

    def tick(self, now: float | None = None) -> None:
        """Brings `train_seconds` up to now: wall time since `start_fit` less own time."""
        if self._fit_start is None:
            return
        now = time.perf_counter() if now is None else now
        wall = now - self._fit_start
        self.train_seconds = self._fit_train_start + max(
            wall - (self.own_seconds - self._fit_own_start), 0.0
        )

    def batch_begins(self, batch: int, now: float | None = None) -> None:
        """Notes that batch `batch` of an epoch begins (Keras' `on_train_batch_begin`).

        Only the first epoch's are kept: its first batch holds the compiling of the train step
        (MobileNetV2 at 224: a first epoch of 26-32 s, the next ones 11 s), which later epochs
        do not pay again. `projected_train_seconds` leaves it out of the epochs to come.

        Example:
            >>> budget = TimeBudget(0.05, floor=0.0)
            >>> budget.start_fit(3, now=0.0)
            >>> for batch, at in enumerate([0.0, 10.0, 11.0, 12.0]):  # a first batch of 10 s
            ...     budget.batch_begins(batch, now=at)
            >>> budget.tick(now=13.0); budget.end_epoch()
            >>> budget.projected_train_seconds()  # 13 s now, then 4 s an epoch; not 39 s
            21.0
            >>> budget.first_epoch_batches, budget.warmup_seconds
            (4, 9.0)
        """
        if self._epochs_done or self._fit_start is None:
            return
        self._batches = max(self._batches, batch + 1)
        if batch == 1:
            now = time.perf_counter() if now is None else now
            own = self.own_seconds - self._fit_own_start
            self._second_batch_at = max(now - self._fit_start - own, 0.0)

    @property
    def first_epoch_batches(self) -> int:
        """The batches `batch_begins` saw in this fit's first epoch (0 where none was noted)."""
        return self._batches

    @property
    def warmup_seconds(self) -> float:
        """What this fit's first batch took beyond a later one's (its compiling), once its
        first epoch ended with 3 batches or more; else 0. See `batch_begins`."""
        return self._warmup

    def end_epoch(self) -> None:
        """Counts one finished epoch of the current `fit()` (call after `tick`)."""
        if self._epochs_done == 0:  # own time so far is the fit's setup (checks, timing)
            self._setup_seconds = self.own_seconds - self._fit_own_start
            first = self.train_seconds - self._fit_train_start
            if self._second_batch_at is not None and self._batches >= 3:
                # A later batch's time, from the first epoch's batches after its first.
                later = max(first - self._second_batch_at, 0.0) / (self._batches - 1)
                self._warmup = max(self._second_batch_at - later, 0.0)
        self._epochs_done += 1

    @contextlib.contextmanager
    def own(self) -> Iterator[None]:
        """Counts the time spent inside as the callbacks' own (re-entrant)."""
        if self._depth:
            yield
            return
        self._depth += 1
        start = self._own_since = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            self._own_since = None
            self.add_own(time.perf_counter() - start)

    def add_own(self, seconds: float) -> None:
        """Adds seconds spent elsewhere (a background thread) to the callbacks' own time."""
        with self._lock:
            self.own_seconds += seconds

    def credit(self) -> float:
        """Seconds the callbacks may still spend now: the budget earned less what was spent.

        The floor of the current `fit()` is there from its start: a short run may spend it
        before training has earned it.
        """
        if self.fraction is None:
            return math.inf
        # Time inside an open `own()` counts from its start, not only once it closes: the last
        # epoch plans again after drawing (`log_epoch`), and must not spend what its first
        # drawings already took (on MobileNetV2 it drew feature maps worth 2.5 s on 0.9 s).
        since = self._own_since
        spent = self.own_seconds + (time.perf_counter() - since if since is not None else 0.0)
        return self.fraction * self.train_seconds + self.allowance() - spent

    def allowance(self) -> float:
        """Seconds the floor adds to the budget: of the fits before, and of this one as its
        training is projected to end (all of the floor before its first epoch ends).

        Example:
            >>> budget = TimeBudget(0.05, floor=2.0)
            >>> budget.start_fit(epochs=3)
            >>> budget.allowance()
            2.0
        """
        fit_train = self.projected_train_seconds() - self._fit_train_start
        return self._past_allowance + self._fit_allowance(fit_train)

    def _fit_allowance(self, fit_train_seconds: float) -> float:
        """What the floor adds to one fit's budget: `max(floor x fade, fraction x training)`
        less its fraction, the fade going from 1 at `FLOOR_FULL_SECONDS` of training to 0 at
        `FLOOR_END_SECONDS`."""
        if self.fraction is None:
            return 0.0
        span = FLOOR_END_SECONDS - FLOOR_FULL_SECONDS
        fade = min(max((FLOOR_END_SECONDS - fit_train_seconds) / span, 0.0), 1.0)
        return max(self.floor * fade - self.fraction * fit_train_seconds, 0.0)

    def run_seconds(self) -> float:
        """What the whole run may spend, as far as its epochs so far tell: its fraction of the
        training projected for the current `fit()` (and the fits before), plus the floor's
        allowance; infinite without a budget.

        Example:
            >>> budget = TimeBudget(0.05, floor=2.0)
            >>> budget.start_fit(epochs=3)
            >>> budget.run_seconds()
            2.0
            >>> TimeBudget(None).run_seconds()
            inf
        """
        if self.fraction is None:
            return math.inf
        return self.fraction * self.projected_train_seconds() + self.allowance()

    def projected_train_seconds(self) -> float:
        """Training time the current `fit()` is expected to take in all, from its epochs so far:
        the epochs to come at the epochs' mean, without what the first batch took beyond a
        later one's (its compiling; see `batch_begins`)."""
        fit_train = self.train_seconds - self._fit_train_start
        if self._epochs_done == 0 or self._epochs is None:
            return self._fit_train_start + fit_train
        warmup = min(self._warmup, fit_train)
        per_epoch = (fit_train - warmup) / self._epochs_done
        return self._fit_train_start + warmup + per_epoch * self._epochs

    # -- costs -------------------------------------------------------------------------------
    def record(self, drawing: Drawing, seconds: float, steps=None, written=None, one_time=0.0):
        """Records what drawing `drawing` (with `steps`) cost: seconds and bytes written.

        `one_time`: the seconds of it a later drawing does not pay again (tracing, setup). A
        first drawing's cost less those is what the next one is expected to cost: Grad-CAM's
        first drawing on MobileNetV2 takes 2.7 s, nearly all of it finding its layer and
        tracing, and the next ones 0.4 s.

        Safe to call from a background thread.
        """
        with self._lock:
            self._record(drawing, seconds, steps, written, one_time)

    def _record(self, drawing: Drawing, seconds: float, steps, written, one_time=0.0) -> None:
        cost = self._costs.setdefault(drawing.tag, _Cost())
        if drawing.cheap:
            self._cheap_seconds += seconds
        self._drawn_in_fit.add(drawing.tag)
        scale = drawing.steps / steps if drawing.steps and steps else 1.0
        full = seconds * scale
        if cost.first is None:
            cost.first = seconds
            if 0.0 < one_time < seconds:
                cost.steady, cost.guessed = (seconds - one_time) * scale, True
            in_full = not drawing.steps or not steps or steps >= drawing.steps
            # A first drawing with fewer steps calibrates too, where its estimate tells its
            # tracing from its steps.
            expected = drawing.estimate_at(steps)
            if (in_full or drawing.splits) and expected > 0:
                ratio = seconds / expected
                key = (drawing.kind, drawing.compiled_basis)
                self._ratios[key] = max(ratio, self._ratios.get(key, 0.0))
            if drawing.splits and 0.0 < one_time < seconds and expected > drawing.estimate_once:
                # Each part against its own estimate: a first activation maximization of the
                # demo CNN's first layer is mostly tracing, estimated about right, while the
                # steps of its deeper layers were estimated at 4-5x their cost. One ratio of
                # the whole cannot correct the steps of a drawing whose tracing it was.
                # (The tracing part is measured but not calibrated: see `_calibration`.)
                ratio = (seconds - one_time) / (expected - drawing.estimate_once)
                key = (drawing.kind, drawing.compiled_basis, "steps")
                self._part_ratios[key] = max(ratio, self._part_ratios.get(key, 0.0))
        else:
            known = cost.steady is not None and not cost.guessed
            cost.steady = _EMA * full + (1 - _EMA) * cost.steady if known else full
            cost.guessed = False
        if written is not None:
            cost.bytes = float(written)
        cost.last_turn = self._turn

    def record_pass(self, kind: str, seconds: float) -> None:
        """Records what the pass the drawings of `kind` share at one step cost (feature maps:
        one forward pass of the probe images for every layer drawn at that step).

        The drawing that ran it does not carry it (`pass_seconds`): on MobileNetV2 at 224 the
        pass costs 0.1 s, and a 7x7 layer's own maps 5 ms; carried by whichever layer came
        first at a step, it made that layer's cost, and the kind's calibration, 13x too high.
        At the epoch being planned, the kind's later drawings do not pay it again.

        Example:
            >>> budget = TimeBudget()
            >>> budget.record_pass("feature_maps", 0.1)
            >>> budget.pass_seconds("feature_maps")
            0.1
        """
        with self._lock:
            last = self._passes.get(kind)
            self._passes[kind] = seconds if last is None else _EMA * seconds + (1 - _EMA) * last
            self._pass_totals[kind] = self._pass_totals.get(kind, 0.0) + seconds
            self._paid.add(kind)

    def pass_seconds(self, kind: str) -> float:
        """All the seconds the shared passes of `kind` took so far (`record_pass`).

        Example:
            >>> budget = TimeBudget()
            >>> budget.record_pass("feature_maps", 0.1)
            >>> budget.record_pass("feature_maps", 0.2)
            >>> round(budget.pass_seconds("feature_maps"), 3)
            0.3
        """
        return self._pass_totals.get(kind, 0.0)

    def pass_cost(self, drawing: Drawing) -> float:
        """Seconds of the pass `drawing` shares with the drawings of its kind at one step:
        measured where it ran before, else its `Drawing.pass_estimate` (0 for a drawing that
        shares none).

        Example:
            >>> budget = TimeBudget()
            >>> maps = Drawing("c/feature_maps", "feature_maps", print, estimate=0.01,
            ...                shares_pass=True, pass_estimate=0.2)
            >>> budget.pass_cost(maps)
            0.2
            >>> budget.record_pass("feature_maps", 0.1)
            >>> budget.pass_cost(maps)
            0.1
        """
        if not drawing.shares_pass:
            return 0.0
        return self._passes.get(drawing.kind, drawing.pass_estimate)

    def estimate(self, drawing: Drawing, steps: int | None = None) -> float:
        """Seconds `drawing` is expected to cost now (with `steps`, or its full steps)."""
        cost = self._costs.get(drawing.tag)
        if cost is None or cost.first is None:
            # One-time costs (tracing) do not shrink with the steps; the rest does, where the
            # drawing says which part is which. Only the steps are calibrated (`_calibration`).
            whole = drawing.estimate_at(steps)
            if not drawing.splits:
                return whole * self._calibration(drawing.kind)
            once = drawing.estimate_once
            return once + (whole - once) * self._calibration(drawing.kind, "steps")
        full = cost.steady if cost.steady is not None else cost.first
        if drawing.steps and steps:
            return full * steps / drawing.steps
        return full

    def _calibration(self, kind: str, part: str | None = None) -> float:
        """What the kind's measured first drawings cost against their estimates: the largest
        ratio (the most cautious), at most 1 and at least `_LEAST_CALIBRATION`.

        `part`: `"steps"` for the steps of split estimates (`Drawing.estimate_once`), by
        measurements of the steps where there are some, else of the whole. Their one-time part
        (tracing) is not calibrated at all: one layer's tracing says little of another's. On
        MobileNetV2 at 224, `Conv1`'s activation maximization traced in 0.44x its estimate,
        and `block_5_project`'s first drawing, its tracing estimated at that ratio, took 1.64 s
        against 0.31 s estimated and ran the budget to 144%.
        """
        basis = self._compiled_basis()
        ratio = self._part_ratios.get((kind, basis, part)) if part else None
        if ratio is None:
            ratio = self._ratios.get((kind, basis))
        return 1.0 if ratio is None else min(max(ratio, _LEAST_CALIBRATION), 1.0)

    def _compiled_basis(self) -> bool:
        """Whether estimates made now come from a timed compiled pass of the model."""
        return self.timing is not None and self.timing.compiled_per_image is not None

    def estimate_bytes(self, drawing: Drawing) -> float:
        """Bytes `drawing` is expected to write."""
        cost = self._costs.get(drawing.tag)
        return cost.bytes if cost is not None and cost.bytes is not None else drawing.estimate_bytes

    def largest_drawing(self) -> float:
        """Seconds of the costliest single drawing measured so far (tracing included).

        The budget may run over by at most about this much: a drawing's first cost is an
        estimate until it was drawn once.
        """
        with self._lock:
            costs = list(self._costs.values())
        return max((max(c.first or 0.0, c.steady or 0.0) for c in costs), default=0.0)

    def timed(self, model: object) -> bool:
        """Whether `timing` holds a `ModelTiming` of `model`.

        Example:
            >>> budget = TimeBudget()
            >>> budget.timed(object())
            False
        """
        return self.timing is not None and self.timing_model is model

    def measured(self, drawing: Drawing) -> bool:
        """Whether `drawing` was drawn (and timed) before."""
        cost = self._costs.get(drawing.tag)
        return cost is not None and cost.first is not None

    # -- planning ----------------------------------------------------------------------------
    def plan(self, epoch: int, drawings: Sequence[Drawing], *, final: bool = False) -> Plan:
        """Decides which of the drawings due at `epoch` to draw now.

        Args:
            epoch: The epoch (the step the drawings are written at).
            drawings: Every drawing due at this epoch.
            final: Whether this is the last epoch of `fit()`: nothing is kept back.

        Returns:
            A `Plan`.
        """
        with self._lock:  # background jobs record costs meanwhile
            return self._plan(epoch, drawings, final)

    def _plan(self, epoch: int, drawings: Sequence[Drawing], final: bool) -> Plan:
        self._turn += 1
        self._final = final
        if epoch != self._paid_epoch:
            self._paid, self._paid_epoch = set(), epoch
        basis = self._compiled_basis()
        for d in drawings:
            d.compiled_basis = basis
        if self.fraction is None:
            return Plan([(d, d.steps) for d in drawings], {}, {})
        chosen: list[tuple[Drawing, int | None]] = []
        skipped: dict[str, str] = {}
        left_out: dict[str, str] = {}
        bytes_left = math.inf if self.max_bytes is None else float(self.max_bytes)
        for d in drawings:
            if d.cheap:
                chosen.append((d, d.steps))
                bytes_left -= self.estimate_bytes(d)

        # The drawings the run can afford, each once, after the setup and the cheap kinds at
        # every epoch: they take turns; the rest are left out. Kinds go round, cheapest first
        # within each, so one Grad-CAM is not crowded out by a fiftieth layer of feature maps.
        run_budget = self.run_seconds()
        room = run_budget
        if self._epochs is not None:
            room -= self._setup_seconds + self._cheap_projection(drawings) + self.reserved
        affordable = []
        # First drawings the run affords only at their fewest steps, before its last epoch:
        # drawn where this epoch's credit pays for them, but nothing is kept back for them
        # and nothing waits for them (see `_cheapest`).
        if_credit = set()
        # The kinds whose shared pass is counted (once: the last epoch's), or ran at this epoch.
        passes = set(self._paid)
        for d in self._kinds_in_turn(d for d in drawings if not d.cheap):
            pass_cost = 0.0 if d.kind in passes else self.pass_cost(d)
            if self._epochs is None or self._cheapest(d) + pass_cost <= room:
                affordable.append(d)
                room -= self._cheapest(d) + pass_cost
                if d.shares_pass:
                    passes.add(d.kind)
            elif not final and self.estimate(d, d.min_steps) + pass_cost <= room:
                affordable.append(d)
                if_credit.add(d.tag)
            else:
                left_out[d.tag] = skipped[d.tag] = self._too_costly(d, run_budget, room - pass_cost)

        # The setup is amortized over the fit's epochs, as the budget is: charged whole before
        # the first epoch, it left the first epochs of a run nothing to draw with (the demo
        # CNN's setup is most of what its first epoch earns). What is not charged yet is
        # kept back from what the epochs to come will earn, so the total still holds.
        deferred = 0.0
        if not final and self._epochs is not None:
            deferred = self._setup_seconds * max(self._epochs - self._epochs_done, 0)
            deferred /= self._epochs
        cheap_seconds = sum(self.estimate(d) for d, _ in chosen)
        available = self.credit() + deferred - cheap_seconds
        # What waiting could add to `available` before the last epoch (see `waits_for`).
        growth = math.inf
        # What a priority drawing just short of this epoch's credit may take from the next
        # epoch's (see below).
        borrow = 0.0
        if final:
            available -= self.reserved
        if not final:
            # Keep back what the last epoch needs to draw everything once, beyond what the
            # epochs still to come will earn.
            remaining = max(self.projected_train_seconds() - self.train_seconds, 0.0)
            # Once each, at the fewest steps worth drawing: a first activation maximization
            # kept back at its full steps held back every feature map of a short run. (Whether
            # the run affords it at all was judged on its whole estimate, above: the last
            # epoch draws it with the steps its credit leaves, `_leaving_the_rest`.) Kept back
            # whole, the demo CNN's first activation maximization at 4,000 images (0.8 s
            # estimated, 0.27 s drawn at 8 steps) left its fourth epoch without feature maps
            # or Grad-CAM, and 0.2 s unspent at the end.
            kept = [d for d in affordable if d.tag not in if_credit]
            needed = sum(self.estimate(d, d.min_steps) for d in kept)
            needed += sum(self.pass_cost(d) for d in {d.kind: d for d in kept}.values())
            needed += deferred
            if self._epochs is not None:
                # The cheap drawings of the epochs after this one are drawn whatever the credit:
                # on a tutorial's 25 epochs the filter weights took the 0.15 s kept back for
                # the last epoch, which then drew no picture but them.
                needed += cheap_seconds * max(self._epochs - self._epochs_done, 0)
            available -= max(needed - self.fraction * remaining, 0.0)
            if self._epochs is not None:
                # Each epoch before the last adds what it earns, less the setup's share and
                # the cheap kinds, until the last epoch's keep-back binds. From then on the
                # credit an epoch earns is kept back for the last epoch whole, and `available`
                # grows no more (it shrinks by the cheap kinds): waiting for a drawing that does
                # not fit it is waiting in vain.
                between = max(self._epochs - self._epochs_done - 1, 0)
                this_fit = self.projected_train_seconds() - self._fit_train_start
                per_epoch = self.fraction * this_fit / self._epochs
                per_epoch -= self._setup_seconds / self._epochs + cheap_seconds
                headroom = max(self.fraction * remaining - needed, 0.0)
                growth = min(headroom, between * max(per_epoch, 0.0))
                # Not at the first epoch: its time holds the compiling, so what the epochs to
                # come will earn is projected high there.
                if self._epochs_done >= 2:
                    borrow = min(growth, max(per_epoch, 0.0))

        def waits_for(d: Drawing, extra: float) -> bool:
            # A drawing that does not fit holds back the ones after it only where waiting
            # lets it be drawn before the last epoch (which draws every drawing once anyway).
            # On the demo CNN at 4,000 images a first activation maximization held back every
            # feature map and Grad-CAM for three epochs, for nothing: the keep-back had bound.
            return self._steps_that_fit(d, available + growth - extra) is not False

        # At the last epoch, among the drawings never drawn, each kind's cheapest first, then
        # each kind's second cheapest, and so on: kinds go round here too. Cheapest first
        # across kinds put MobileNetV2's 27 feature maps not drawn yet, at 0.01 s each,
        # before its one Grad-CAM, and the credit ran out before it. Before the last epoch
        # the cheapest go first whatever their kind (see `staleness`), and what the last
        # epoch needs for every drawing once is kept back.
        rank: dict[str, int] = {}
        if final:
            fresh = sorted(
                (d for d in affordable if self._costs.get(d.tag) is None),
                key=lambda d: (self.estimate(d), d.order),
            )
            kinds_seen: collections.Counter = collections.Counter()
            for d in fresh:
                rank[d.tag] = kinds_seen[d.kind]
                kinds_seen[d.kind] += 1

        def staleness(d: Drawing):
            # Least recently drawn first. Among those never drawn, the cheapest first (at the
            # last epoch, going round the kinds: above): their measurements (a feature maps
            # pass times the compiled model) make the estimates of the costlier ones less
            # cautious, so a costly one waiting for its turn does not hold back, on a cautious
            # estimate, drawings that cost a tenth of it.
            # Priority drawings first, drawn or not (Grad-CAM at every epoch it affords: on
            # ResNet50 it waited behind 50 never-drawn layers of feature maps for two epochs).
            first = 0 if d.priority else 1
            cost = self._costs.get(d.tag)
            if cost is None:
                return (first, -1, rank.get(d.tag, 0), self.estimate(d), d.order)
            return (first, cost.last_turn, 0, 0.0, d.order)

        unmeasured_started = False
        costly_chosen = 0
        waiting = None
        ordered = sorted(affordable, key=staleness)
        for i, d in enumerate(ordered):
            if waiting is not None and not final:  # the last epoch has no later turn to wait for
                skipped[d.tag] = _waits(waiting)
                continue
            # A drawing never drawn costs what its estimate says, to within 4x either way:
            # one such per epoch, unless a drawing of its kind was measured already (its
            # estimate is calibrated by that one).
            unknown = not self.measured(d) and not self._calibrated(d.kind)
            unknown &= not (d.shares_pass and d.kind in {c.kind for c, _ in chosen})
            if unknown and unmeasured_started and not final:
                skipped[d.tag] = "first drawings are spread over epochs; it is drawn at a later one"
                continue
            # The first of its kind chosen at this step pays the pass the others share.
            shared = self._paid | {c.kind for c, _ in chosen if c.shares_pass}
            extra = 0.0 if d.kind in shared else self.pass_cost(d)
            steps = self._steps_that_fit(d, available - extra)
            borrowed = False
            if steps is False and d.priority and borrow > 0:
                # Grad-CAM just short of this epoch's credit takes up to one epoch's earnings
                # from the epochs to come (beyond what the last keeps back), once: waiting, it
                # would wait again, as the cheaper drawings after it spend each epoch's credit.
                # On the demo CNN at 2,000 images it missed two epochs of five by 0.01 s. A fit
                # stopped early (EarlyStopping) leaves that much unpaid, as it leaves the
                # setup's share of the epochs it did not train.
                steps = self._steps_that_fit(d, available + borrow - extra)
                borrowed = steps is not False
            if final and steps and steps > (d.min_steps or steps):
                rest = ordered[i + 1 :]
                steps = self._leaving_the_rest(d, steps, available - extra, rest, shared)
            # The first costly drawing of an epoch may pass the byte cap (one larger than the
            # cap would otherwise wait for ever); the others wait for a later epoch.
            too_big = costly_chosen and bytes_left < self.estimate_bytes(d)
            if steps is False or too_big:
                # A priority drawing that does not fit holds back nothing: it comes first again
                # at the next epoch, and the last one keeps back what it needs.
                if d.tag not in if_credit and not d.priority and (too_big or waits_for(d, extra)):
                    waiting = d
                left = available - extra  # for the drawing itself, beyond the pass it needs
                skipped[d.tag] = self._short(d, left, bytes_left if too_big else math.inf)
                if final and d.tag not in self._drawn_in_fit:
                    # No later epoch will draw it: this fit goes without it, and says so.
                    left_out[d.tag] = skipped[d.tag] = (
                        f"left out: the last epoch's pictures reached the "
                        f"{_megabytes(self.max_bytes)} cap before it; pass a larger max_bytes "
                        "(or max_bytes=None) to draw it"
                        if too_big
                        else self._too_costly(d, run_budget, left)
                    )
                continue
            if borrowed:  # once an epoch; `available` goes below zero by what it owes
                borrow = 0.0
            chosen.append((d, steps))
            # A priority drawing (first at every epoch) leaves the byte cap's exception to the
            # first of the others: one larger than the cap would otherwise never be drawn.
            costly_chosen += 0 if d.priority else 1
            available -= self.estimate(d, steps) + extra
            bytes_left -= self.estimate_bytes(d)
            unmeasured_started |= unknown and not d.priority
        return Plan(chosen, skipped, left_out)

    def _calibrated(self, kind: str) -> bool:
        """Whether a first drawing of `kind` was measured against its estimate."""
        return any(k == kind for k, _ in self._ratios)

    def _kinds_in_turn(self, drawings) -> list[Drawing]:
        """The priority drawings, cheapest first; then the cheapest drawing of each kind, the
        second cheapest of each, and so on."""
        drawings = sorted(drawings, key=self._cheapest)
        by_kind: dict[str, list[Drawing]] = {}
        for d in drawings:
            if not d.priority:
                by_kind.setdefault(d.kind, []).append(d)
        ranked = [
            (rank, self._cheapest(d), d) for ds in by_kind.values() for rank, d in enumerate(ds)
        ]
        first = [d for d in drawings if d.priority]
        return first + [d for _, _, d in sorted(ranked, key=lambda r: r[:2])]

    def _cheap_projection(self, drawings: Sequence[Drawing]) -> float:
        """Seconds the cheap drawings will cost over this fit: spent so far, then at their rate."""
        drawn_epochs = self._epochs_done - 1  # this epoch's are not drawn yet
        if drawn_epochs > 0:
            rate = self._cheap_seconds / drawn_epochs
        else:
            rate = sum(self.estimate(d) for d in drawings if d.cheap)
        return self._cheap_seconds + rate * max(self._epochs - drawn_epochs, 0)

    def _cheapest(self, d: Drawing) -> float:
        if not self._final and not self.measured(d):
            # Before the last epoch, whether the run affords a first drawing is judged on its
            # whole estimate: judged at its fewest steps on a cautious estimate, a first
            # activation maximization was taken as affordable, held back the feature maps and
            # Grad-CAM of the epochs before, then did not fit the last one. (What is kept back
            # for the last epoch counts its fewest steps: see `_plan`.)
            return self.estimate(d)
        return self.estimate(d, d.min_steps)

    def _leaving_the_rest(
        self, d: Drawing, steps: int, available: float, rest, shared: set[str]
    ) -> int:
        """At the last epoch, the steps `d` takes so that the drawings after it that fit still
        can: no later turn draws them. A first activation maximization of the demo CNN took 15
        steps of the last epoch's credit, and its Grad-CAM and three feature maps went
        without; at 8 steps all of them fit.
        """
        own = self.estimate(d, d.min_steps)
        if own >= self.estimate(d, steps):
            return steps  # fewer steps would not cost less (an estimate not split: PyTorch)
        later, paid = 0.0, set(shared)
        for r in rest:  # those that fit after it, in turn (the first of a kind pays its pass)
            cost = self._cheapest(r) + (0.0 if r.kind in paid else self.pass_cost(r))
            if own + later + cost <= available:
                later += cost
                if r.shares_pass:
                    paid.add(r.kind)
        spare = self._steps_that_fit(d, available - later)
        return min(steps, spare) if spare else d.min_steps

    def _steps_that_fit(self, d: Drawing, available: float):
        """The steps to draw `d` with in `available` seconds: its full steps, fewer, or False."""
        if self.estimate(d) <= available:
            return d.steps
        if not d.steps:
            return False
        once = 0.0
        if not self.measured(d):
            # A first drawing pays its tracing whole and its steps in part; one whose
            # estimate does not tell them apart cannot take fewer steps.
            if not d.splits:
                return False
            once = d.estimate_once
        per_step = (self.estimate(d) - once) / d.steps
        steps = int((available - once) / per_step) if per_step > 0 else d.steps
        return min(steps, d.steps) if steps >= (d.min_steps or d.steps) else False

    def _too_costly(self, d: Drawing, run_budget: float, room: float) -> str:
        percent = f"{self.fraction:.0%}" if self.fraction >= 0.01 else f"{self.fraction:g}"
        cost = self._cheapest(d)
        training = max(self.projected_train_seconds(), 1e-9)
        needed = self.fraction + (cost - max(room, 0.0)) / training
        floor = f", at least {_seconds(self.floor)} per fit()" if self.allowance() > 0 else ""
        return (
            f"left out: one drawing costs about {_seconds(cost)}, and this run's budget "
            f"({percent} of {_seconds(training)} of training{floor} = {_seconds(run_budget)}) "
            f"leaves "
            f"{_seconds(max(room, 0.0))} after the setup, the filter weights and cheaper "
            f"drawings; pass budget={_suggest(needed)} (or budget=None) to draw it"
        )

    def _short(self, d: Drawing, available: float, bytes_left: float) -> str:
        if bytes_left < self.estimate_bytes(d):
            return (
                f"deferred: this epoch's pictures reached the {_megabytes(self.max_bytes)} cap; "
                "drawn at a later epoch"
            )
        return (
            f"deferred by the time budget: it costs about {_seconds(self.estimate(d))} and "
            f"{_seconds(max(available, 0.0))} was left at this epoch; drawn when its turn comes"
        )

    def never_drawn(self, left_out: dict[str, str]) -> dict[str, str]:
        """Of `left_out`, the tags not drawn in this `fit()` and not reported before.

        Call it at the last epoch: each tag is reported once per `TimeBudget`.

        Example:
            >>> budget = TimeBudget()
            >>> budget.never_drawn({"c/actmax": "too costly"})
            {'c/actmax': 'too costly'}
            >>> budget.never_drawn({"c/actmax": "too costly"})
            {}
        """
        out = {t: r for t, r in left_out.items() if t not in self._drawn_in_fit | self._reported}
        self._reported |= set(out)
        return out


def _waits(d: Drawing) -> str:
    return f"deferred by the time budget: waiting for {d.tag} to be drawn first (turns)"


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.0f} s"


def _megabytes(b) -> str:
    return f"{b / 2**20:g} MB"


def _suggest(fraction: float) -> str:
    """A round budget at least `fraction` (with headroom), at most 1."""
    for option in (0.1, 0.2, 0.3, 0.5, 1.0):
        if fraction * 1.2 <= option:
            return str(option)
    return "1.0"
