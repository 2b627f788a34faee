"""What every tb-cnnviz callback shares: argument checks, layer selection, writers, the time
budget, fault isolation.

Each logged epoch goes the same way for every kind (`log_epoch`): the callbacks list what they
can draw now (`VizCallback._drawings`: one `tb_cnnviz.budget.Drawing` per layer, or per
attribution method); their `TimeBudget` (one per callback, or one for all kinds of a `CNNViz`)
picks which to draw; each chosen one is drawn and timed; and a plan record says what was drawn
and what was left out and why. Drawings are written through `tb_cnnviz.events.FileWriter`, which
needs no TensorFlow (every Keras backend writes the same files) and which no outer
`tf.summary.record_if` governs: what the budget decided to draw is never dropped.

A visualization must never cost the user their training run: a drawing that fails warns once per
callback (later failures go to the DEBUG log), is named in the plan record, and training goes on;
what was logged before stays on disk. Configuration errors, on the other hand, are raised in
`on_train_begin`, before any epoch runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
import weakref

import keras
import numpy as np

from tb_cnnviz import backend, background, checks, events, metadata, storage, summary
from tb_cnnviz import budget as budget_lib
from tb_cnnviz import layers as layer_lib
from tb_cnnviz import thinning as thinning_lib

from . import runstate

__all__ = [
    "Planner",
    "RunWriter",
    "VizCallback",
    "check_budget",
    "check_freq",
    "check_probe_images",
    "epochs_left",
    "failure_reason",
    "is_final_epoch",
    "log_epoch",
    "report_weights_only",
]

logger = logging.getLogger(__name__)


class RunWriter:
    """One run directory's event-file writer, and the background worker that writes to it.

    `log_epoch` draws through one (its `run`); callbacks sharing a run directory share one
    (`Planner` acquires it).

    Background jobs (`log_epoch`) put their failures here; the training thread reports them
    (`report_failures`), so a warning comes from the code that trains, as in line writing did.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        try:
            self.claim = runstate.claim(run_dir)
        except OSError as e:  # an unwritable folder: the writer below says so, once
            logger.debug("tb-cnnviz: cannot record who writes %s: %s", run_dir, e)
            self.claim = runstate.Claim()
        #: Bytes of event files the run held before this process opened it (the run's cap).
        self.bytes_before = _event_bytes(run_dir)
        self.writer = None
        if self.claim.taken_by is None:
            # One event per step: a process killed while writing leaves no partial step.
            self.writer = events.FileWriter(run_dir, whole_steps=True)
        self.worker = background.Worker()
        self.users = 0
        self.last_step: int | None = None  # the last step on disk, written by this process
        self.bytes_written = 0  # bytes of pictures written through this writer
        self.steps_drawn = 0
        self.started = False
        self.lease = 0.0  # seconds another host waits for our next step before taking over
        self._failures: list[tuple[budget_lib.Drawing, Exception]] = []
        self._lock = threading.Lock()

    def start(self, step: int) -> None:
        """Marks, once per writer, where this process's steps start (`FileWriter.session_start`):
        TensorBoard then drops what an earlier process wrote at `step` and later."""
        if not self.started:
            self.started = True
            self.writer.session_start(step)

    def step_written(self, step: int, nbytes: int, lease: float) -> None:
        """Records that `step` (with `nbytes` of pictures) is on disk (any thread)."""
        with self._lock:
            self.last_step = step if self.last_step is None else max(self.last_step, step)
            self.bytes_written += nbytes
            self.steps_drawn += nbytes > 0
        if self.writer.failure is None:
            try:
                runstate.record(self.run_dir, self.last_step, live=True, lease=lease)
            except OSError as e:
                logger.debug("tb-cnnviz: cannot record the run's state: %s", e)

    def failed(self, drawing: budget_lib.Drawing, error: Exception) -> None:
        """Keeps a background job's failure for the training thread (any thread may call it)."""
        with self._lock:
            self._failures.append((drawing, error))

    def report_failures(self) -> None:
        """Reports the failures kept so far, through their callbacks (warns once per callback)."""
        with self._lock:
            failures, self._failures = self._failures, []
        for drawing, error in failures:
            drawing.source._report_failure(drawing.tag, error)

    def flush(self) -> None:
        """Waits for every job submitted so far, then flushes the event file."""
        self.worker.join()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Stops the worker, closes the file, and lets another process claim the run."""
        self.worker.close()
        if self.writer is None:
            return
        self.writer.close()
        if self.writer.failure is None:
            try:
                runstate.record(self.run_dir, self.last_step, live=False)
            except OSError as e:
                logger.debug("tb-cnnviz: cannot record the run's state: %s", e)


def _event_bytes(run_dir: str) -> int:
    """Bytes of the event files in `run_dir` (0 for a missing one)."""
    try:
        names = storage.listdir(run_dir)
    except Exception:  # a missing folder or bucket: the log_dir check says so
        return 0
    total = 0
    for name in names:
        if "tfevents" in name:
            try:
                total += storage.size(storage.join(run_dir, name))
            except Exception:
                pass
    return total


class _WriterPool:
    """One writer (and background worker) per run directory, shared by every callback here.

    Keras' own `TensorBoard` callback writes into `<log_dir>/train`; ours writes beside it, in the
    same run, through a single writer however many of our callbacks are attached.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._runs: dict[str, RunWriter] = {}

    def acquire(self, run_dir: str) -> RunWriter:
        with self._lock:
            run = self._runs.get(run_dir)
            if run is None:
                run = self._runs[run_dir] = RunWriter(run_dir)
            run.users += 1
            return run

    def release(self, run_dir: str) -> None:
        with self._lock:
            run = self._runs.get(run_dir)
            if run is None:
                return
            run.users -= 1
            last = run.users <= 0
            if last:
                del self._runs[run_dir]
        run.flush()
        run.report_failures()
        if last:
            run.close()


WRITERS = _WriterPool()


def check_freq(name: str, value) -> int:
    """Validates a Keras-style `*_freq` argument: a non-negative int in epochs, 0 meaning off.

    Args:
        name: The argument name, for the message.
        value: The value received.

    Returns:
        The frequency as an int.

    Raises:
        ValueError: If `value` is not a non-negative integer.

    Example:
        >>> check_freq("freq", 2)
        2
    """
    return checks.integer(
        name, value, minimum=0, what="a non-negative integer number of epochs (0 turns it off)"
    )


def check_budget(value):
    """Validates a `budget` argument: a fraction of training time in (0, 1], or None for none.

    Args:
        value: The value received.

    Returns:
        The budget as a float, or None.

    Raises:
        ValueError: If `value` is not None and not a number in (0, 1].

    Example:
        >>> check_budget(0.05), check_budget(None)
        (0.05, None)
    """
    return checks.number(
        "budget",
        value,
        above=0,
        at_most=1,
        none=True,
        what="a fraction of training time in (0, 1] (0.05 lets the callback take at most 5% of "
        "it), or None to draw everything",
    )


def check_probe_images(probe_images, name: str = "probe_images"):
    """Validates probe images: one array `[n, *spatial, channels]`, or one array per model input.

    The one rule for every callback that shows the model probe images. For a model with several
    inputs, give a list with one array per input: inputs that are not images (a vector, a class
    id) are numbers of any shape; at least one must be images, and all hold the same `n`.
    Integer images are converted to float32 without rescaling: give them in the value range the
    model was trained on.

    Args:
        probe_images: Array-like of images, or a list of array-likes.
        name: The argument name, for the message.

    Returns:
        The images as float32: an array, or a list of arrays.

    Raises:
        ValueError: If the images are empty, not numeric, not finite or of too low a rank, or the
            arrays of a list disagree on `n`.

    Example:
        >>> check_probe_images(np.zeros((2, 8, 8, 3), np.uint8)).dtype
        dtype('float32')
        >>> [a.shape for a in check_probe_images([np.zeros((2, 8, 8, 3)), np.zeros((2, 5))])]
        [(2, 8, 8, 3), (2, 5)]
    """
    if not isinstance(probe_images, list | tuple):
        return _numbers(probe_images, name, image=True)
    arrays = [_numbers(p, f"{name}[{i}]", image=False) for i, p in enumerate(probe_images)]
    if not any(a.ndim >= 3 for a in arrays):
        raise ValueError(
            f"{name} must hold images [n_images, *spatial, channels] for at least one model "
            f"input. Received: {name} with shapes {[a.shape for a in arrays]}"
        )
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(
            f"{name} for a multi-input model need the same number of images per input. "
            f"Received: lengths={[len(a) for a in arrays]}"
        )
    return arrays


def _numbers(value, name: str, *, image: bool) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{name} must be an array of images. Received: {e}") from e
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise ValueError(
            f"{name} must hold numbers (float or uint8 images). Received: dtype={array.dtype}"
        )
    if array.ndim < (3 if image else 1) or array.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape [n_images, *spatial, channels] with at least one image. "
            f"Received: {name}.shape={array.shape}"
        )
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or Inf values.")
    return array


class VizCallback(keras.callbacks.Callback):
    """Base of the per-kind callbacks: subclasses set `kind` and implement `_draw`.

    A subclass offers one drawing per selected layer (override `_drawings` for other units, as
    `Attribution` does per method), draws one with `_draw(path, layer, step)` (the model's work
    on the training thread; it returns the encoding and writing, which run in the background),
    and may check the model in `_validate` and estimate a drawing's cost in `_estimate`.

    Args:
        log_dir: The same `log_dir` given to `keras.callbacks.TensorBoard`; pictures go into its
            `train` run so they stand next to the scalars and histograms.
        layers: Layer names (or `outer/inner` paths) to visualize; `None` means every conv layer,
            nested models included.
        freq: Log every `freq` epochs; 0 turns the callback off.
        max_filters: Draw at most this many filters per layer (larger layers are sampled evenly,
            and the dashboard says so).
        budget: The callback's own time as a fraction of training time, in (0, 1]: drawings
            are spread over epochs and layers to stay within it (see `tb_cnnviz.budget`);
            `None` draws everything at every logged epoch.
    """

    kind = ""
    #: Drawn at every logged epoch whatever the budget (filter weights).
    cheap = False
    #: Draws what the layers output (feature maps, activation maximization, responses): a conv
    #: whose output cannot be read (`tb_cnnviz.layers.weights_only`) is left to the weights,
    #: with its reason in the plan and, once per model, in the log.
    reads_outputs = False

    def __init__(
        self,
        log_dir="logs",
        *,
        layers=None,
        freq=1,
        max_filters=256,
        budget=budget_lib.DEFAULT_BUDGET,
    ):
        super().__init__()
        backend.check_supported(type(self).__name__)
        self.log_dir = os.fspath(log_dir)
        if layers is not None and not isinstance(layers, str):
            layers = list(layers)
            if not all(isinstance(name, str) for name in layers):
                raise ValueError(f"layers must be layer names (str). Received: layers={layers!r}")
        self.layers = layers
        self.freq = check_freq("freq", freq)
        self.max_filters = checks.integer("max_filters", max_filters, minimum=1)
        self.budget = check_budget(budget)
        self._run_dir = storage.join(self.log_dir, "train")
        self._planner: Planner | None = None
        self._selected: list[tuple[str, keras.layers.Layer]] = []
        # Selected convs this kind cannot draw: (path, layer, reason), from _select.
        self._weights_only: list[tuple[str, keras.layers.Layer, str]] = []
        self._warned = False
        self._validation_pending = False
        self._prepared_step = None
        self._time_budget: budget_lib.TimeBudget | None = None
        self._managed = False  # True while a CNNViz plans and writes for this callback

    # -- Keras hooks -------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if not self._managed:
            if self._planner is None:  # a second fit() keeps what the first one measured
                budget = budget_lib.TimeBudget(self.budget)
                self._planner = Planner(type(self).__name__, self._run_dir, budget)
                self._time_budget = budget
            self._planner.begin(self)
        # A step's shared work (one pass of the probe images) belongs to this fit(): a second
        # fit() starts at step 0 again, maybe with another model.
        self._prepared_step = None
        if not self.freq:
            return
        with self._time_budget.own(), self._setup():
            self._select()
            self._check_log_dir()
            # A model first built by fit() (a Sequential without an Input, on TensorFlow) has
            # no weights yet: its checks wait for the first batch to have built it, before
            # any epoch completes.
            self._validation_pending = not self.model.built
            if not self._validation_pending:
                self._validate(self.model)

    # No `on_train_batch_end`: overriding it would turn off Keras 3's asynchronous dispatch of
    # batch-end hooks (JAX, PyTorch), making every batch wait. Batch *begin* hooks are always
    # called in line, and the second batch begins after the first one built the model.
    def on_train_batch_begin(self, batch, logs=None):
        if self._validation_pending and self.model.built:
            self.check_when_built()
        if not self._managed and self._time_budget is not None:
            self._time_budget.batch_begins(batch)  # the first epoch's compiling, for projections

    def check_when_built(self) -> None:
        """Runs the checks a model built by `fit()` deferred (`on_train_begin` could not)."""
        if not self._validation_pending:
            return
        with self._time_budget.own(), self._setup():
            self._validation_pending = False
            self._select()  # now built: in forward order, and what cannot be read is known
            self._validate(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if not self._managed and self.freq:
            self.check_when_built()  # an epoch of one batch
            self._planner.epoch_end(self, [self], epoch)

    def on_train_end(self, logs=None):
        if self._planner is not None:
            self._planner.end()

    @property
    def time_budget(self) -> budget_lib.TimeBudget | None:
        """The `TimeBudget` in use (shared with the other kinds inside a `CNNViz`).

        Its `train_seconds` and `own_seconds` say what training took and what the callback
        cost; None before the first `fit()`.
        """
        return self._time_budget

    def use_budget(self, time_budget: budget_lib.TimeBudget) -> None:
        """Hands planning and writing to a caller that shares `time_budget` among callbacks.

        `CNNViz` calls it for its kinds: their epoch ends then draw nothing by themselves; the
        caller runs `log_epoch` over all of them.
        """
        self._time_budget, self._managed = time_budget, True

    # -- for subclasses ----------------------------------------------------------------------
    def _example(self):
        """Example inputs of the model (probe images), for the forward order; None: none."""
        return None

    def _validate(self, model: keras.Model) -> None:
        """Raises ValueError for configuration that cannot work with `model`."""

    def _prepare(self, step: int) -> None:
        """Work shared by all drawings of one step (for example one forward pass)."""

    def _draw(self, path: str, layer: keras.layers.Layer, step: int, *args):
        """Does the model's work for one drawing; returns a function that encodes and writes
        it (`log_epoch` runs it in the background), or None when it wrote already."""
        raise NotImplementedError

    def _estimate(self, path: str, layer: keras.layers.Layer) -> tuple[float, int]:
        """`(seconds, bytes)` one drawing of `layer` is expected to cost before it was timed."""
        return 0.0, 0

    def _drawings(self, step: int) -> list[budget_lib.Drawing]:
        """What this callback can draw at `step`: by default one drawing per selected layer."""
        out = []
        for order, (path, layer) in enumerate(self._selected):
            seconds, size = self._estimate(path, layer)
            out.append(
                budget_lib.Drawing(
                    tag=metadata.tag_for(path, self.kind),
                    kind=self.kind,
                    draw=self._step_drawer(step, path, layer),
                    source=self,
                    estimate=seconds,
                    estimate_bytes=size,
                    cheap=self.cheap,
                    order=order,
                )
            )
        return out

    # -- machinery ---------------------------------------------------------------------------
    def _setup(self):
        """Profiles the code inside as this kind's setup."""
        return self._time_budget.profile.recording(self.kind, "setup")

    def _select(self) -> None:
        """Resolves `layers`; a kind that reads outputs sets aside the convs it cannot read."""
        model, example = self.model, self._example()
        self._selected = layer_lib.resolve_layers(model, self.layers, inputs=example)
        self._weights_only = []
        if self.reads_outputs and model.built:
            why = layer_lib.weights_only(model, example)
            self._weights_only = [(p, layer, why[p]) for p, layer in self._selected if p in why]
            self._selected = [(p, layer) for p, layer in self._selected if p not in why]
            report_weights_only(model, {p: r for p, _, r in self._weights_only})

    def _held_back(self) -> dict[str, str]:
        """`{tag: reason}` of the selected convs this kind leaves to the weights."""
        return {metadata.tag_for(p, self.kind): why for p, _, why in self._weights_only}

    def _due(self, epoch: int) -> bool:
        return bool(self.freq) and (epoch + 1) % self.freq == 0

    def _step_drawer(self, step: int, *args):
        """`draw(*more)`: prepares the step once, then `_draw(*args, step, *more)`."""

        def draw(*more):
            if self._prepared_step != step:
                self._prepare(step)
                self._prepared_step = step
            return self._draw(*args, step, *more)

        return draw

    def _model_timing(self, model, images, *, per_image=True) -> budget_lib.ModelTiming:
        """What an eager forward pass of `model` costs, measured once per model and budget.

        Args:
            model: The model being trained.
            images: Inputs to time it with: an array `[n, ...]` or a list of them.
            per_image: Time a pass of four images too, for the part each image adds. Without
                it, one image's pass is the fixed part and nothing is counted per image: for
                a caller that times a compiled pass next (`ModelTiming.observe_compiled`),
                which the estimates then scale by (MobileNetV2 at 224: 0.2 s of setup less).
        """
        budget = self._time_budget
        if not budget.timed(model):
            arrays = images if isinstance(images, list) else [images]
            n = min(len(arrays[0]), 4) if per_image else 1  # four tell as much as eight

            def forward(k):
                batch = [np.resize(a[:n], (k, *a.shape[1:])) for a in arrays]
                model(batch if isinstance(images, list) else batch[0], training=False)

            # Discovery ran the model once on one example (cached per model): a warm-up.
            example = [a[:1] for a in arrays]
            warm = layer_lib.forward_trace(model, example if len(example) > 1 else example[0])
            budget.timing = budget_lib.ModelTiming.measure(
                forward,
                max(n, 4) if per_image else 1,
                compiles=backend.name() != "torch",
                warm=warm is not None,
            )
            budget.timing_model = model
        return budget.timing

    def _report_failure(self, what: str, error: Exception) -> str:
        """Warns once per callback (later failures at DEBUG level); returns the plan's reason."""
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"tb-cnnviz: {type(self).__name__} could not log {what} "
                f"({type(error).__name__}: {error}). Training continues and what was logged "
                "stays; further failures of this callback are only logged at DEBUG level.",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            logger.debug("%s could not log %s", type(self).__name__, what, exc_info=error)
        return failure_reason(error)

    def _check_log_dir(self) -> None:
        # Local or remote (a missing bucket, missing credentials): a clear error before any epoch.
        storage.check_writable(self._run_dir, "log_dir", self.log_dir)


# model -> the paths whose weights-only reason the log has given (once per model and layer).
_REPORTED = weakref.WeakKeyDictionary()


def report_weights_only(model: keras.Model, reasons: dict[str, str]) -> None:
    """Logs once per model and layer which conv layers are drawn with weights only, and why.

    Example:
        >>> model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(1, 3)])
        >>> report_weights_only(model, {})  # nothing to say
    """
    told = _REPORTED.setdefault(model, set())
    new = {p: r for p, r in reasons.items() if p not in told}
    if not new:
        return
    told.update(new)
    logger.warning(
        "tb-cnnviz: drawn with weights only (no feature maps, attribution, activation "
        "maximization or reference responses): %s.",
        "; ".join(f"{p}: {r.removeprefix('weights only: ')}" for p, r in new.items()),
    )


class Planner:
    """Plans, draws and records each epoch for callbacks that share one budget and one run.

    A per-kind callback has its own; `CNNViz` has one for all its kinds. It times the fit
    (`begin`, then every hook's own work), holds the run's summary writer and its background
    worker, and at each epoch end runs `log_epoch` as the chief. `end` waits for the worker, so
    `fit()` returns with every picture on disk.

    It also keeps each step of the run once (`callbacks.runstate`): a second `fit()` in this
    process continues the steps after the last one written; a resumed job (`initial_epoch`)
    replaces what the old process wrote from there on and says so in its first plan record;
    a run another live process writes is left to it, with a warning. With a `thinning`, long
    runs draw fewer steps as they grow (`tb_cnnviz.thinning`), within a byte cap.

    Args:
        owner: The name its plan records are written under.
        run_dir: The run folder pictures go to.
        budget: The `TimeBudget` the callbacks share.
        thinning: Which steps to draw in a long run; None draws every step.

    Attributes:
        offset: What this `fit()` adds to an epoch to get its step (0 unless a second `fit()`
            continues the steps of an earlier one).

    Example:
        >>> planner = Planner("cnnviz", "logs/run1/train", budget_lib.TimeBudget(0.05))
        >>> planner.budget.fraction
        0.05
    """

    def __init__(
        self,
        owner: str,
        run_dir: str,
        budget: budget_lib.TimeBudget,
        thinning: thinning_lib.Thinning | None = None,
    ):
        self.owner = owner
        self.run_dir = run_dir
        self.budget = budget
        self.thinning = thinning
        self.offset = 0
        self._run: RunWriter | None = None
        self._first_epoch = None
        self._layers: list[str] | None = None  # the model's conv layers, in forward order
        self._convs: list[tuple[str, keras.layers.Layer]] = []
        self._refused = False
        self._last_step: int | None = None  # the last step this planner logged, any fit()
        self._resumed: dict | None = None  # said in the first plan record of a fit()
        self._norms: dict[str, np.ndarray] = {}  # filter norms at the last drawn step
        self._epoch_time: float | None = None

    def begin(self, host: keras.callbacks.Callback) -> None:
        """Starts timing a `fit()` of `host.model` (call first thing in `on_train_begin`)."""
        self.budget.bind(host.model)
        self.budget.start_fit(fit_params(host).get("epochs"))
        self._first_epoch = None
        self._layers = None
        self._refused = False
        self.offset = 0

    def epoch_end(self, host: keras.callbacks.Callback, callbacks, epoch: int) -> None:
        """Logs `epoch` for `callbacks` (the chief only), timing it as the callbacks' own."""
        if not backend.is_chief(host.model) or self._refused:
            return
        self.budget.tick()
        self.budget.end_epoch()
        with self.budget.own():
            first = self._first_epoch is None
            if first:
                self._first_epoch = epoch
                self.budget.set_epochs(epochs_left(host, epoch))
                if self._run is None:
                    self._run = WRITERS.acquire(self.run_dir)
                if not self._start(epoch):
                    return
            if self._layers is None:  # the network's order, for the tab (the plan's metadata)
                self._convs = list(layer_lib.conv_layers(host.model))
                self._layers = [path for path, _ in self._convs]
            step = epoch + self.offset
            final = is_final_epoch(host, epoch)
            run = self._run
            run.start(step)
            now = time.monotonic()
            if self._epoch_time is not None:  # another host may take over after 3 epochs' time
                run.lease = max(run.lease, 3 * (now - self._epoch_time))
            self._epoch_time = now
            thinned = None
            if self.thinning is not None:
                thinned = self._thin(step, final=final, first=first)
            resumed, self._resumed = self._resumed, None
            log_epoch(
                self.owner,
                callbacks,
                self.budget,
                run,
                step,
                final,
                layers=self._layers,
                thinned=thinned,
                resumed=resumed,
            )
            self._last_step = step

    def _start(self, epoch: int) -> bool:
        """Decides where this fit()'s steps go in the run; False when another process has it."""
        claim = self._run.claim
        if claim.taken_by is not None:
            self._refused = True
            WRITERS.release(self.run_dir)
            self._run = None
            warnings.warn(
                f"tb-cnnviz: {self.run_dir} is being written by {claim.taken_by}, which wins: "
                "this process logs no pictures there in this fit(), so no step is written "
                "twice. Give each process its own log_dir.",
                RuntimeWarning,
                stacklevel=4,
            )
            return False
        before = [s for s in (claim.last_step if claim.same_process else None, self._last_step)]
        before = max((s for s in before if s is not None), default=None)
        if before is not None and epoch <= before:
            self.offset = before + 1 - epoch
            warnings.warn(
                f"tb-cnnviz: this fit() starts at epoch {epoch}, but {self.run_dir} already holds "
                f"steps up to {before} from an earlier fit() in this process: its steps continue "
                f"at {before + 1}, so none is written twice. Pass initial_epoch={before + 1} to "
                "fit() to number the epochs the same way (as keras.callbacks.TensorBoard does).",
                RuntimeWarning,
                stacklevel=4,
            )
        elif claim.last_step is not None and not claim.same_process:
            replaced = epoch <= claim.last_step
            self._resumed = {
                "previous_last_step": claim.last_step,
                "from_step": epoch,
                "replaced": replaced,
            }
            if replaced and epoch == 0:
                warnings.warn(
                    f"tb-cnnviz: {self.run_dir} holds steps up to {claim.last_step} written by "
                    "an earlier process; this fit() starts again at step 0, so TensorBoard shows "
                    "its pictures instead of those. Use a new log_dir to keep both, or "
                    "initial_epoch to resume.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            elif replaced:
                logger.info(
                    "tb-cnnviz: resuming %s at step %d: steps %d-%d of the earlier process are "
                    "replaced",
                    self.run_dir,
                    epoch,
                    epoch,
                    claim.last_step,
                )
        return True

    def _thin(self, step: int, *, final: bool, first: bool) -> str | None:
        """Why `step` is thinned, or None to draw it."""
        run = self._run
        drawn = max(run.steps_drawn, 1)
        run_bytes = run.bytes_before + run.bytes_written
        changed = None
        if not (final or first or self.thinning.scheduled(step)):
            changed = self._changed()
        why = self.thinning.decide(
            step,
            final=final,
            first=first,
            changed=changed,
            run_bytes=run_bytes,
            step_bytes=run.bytes_written // drawn,
        )
        if why is None:
            self._norms = self._filter_norms()
        return why

    def _filter_norms(self) -> dict[str, np.ndarray]:
        """Each conv layer's per-filter kernel norms (one pass over the weights, on the host)."""
        norms = {}
        for path, layer in self._convs:
            kernels = [w for w in layer.weights if len(w.shape) >= 3]
            if kernels:
                k = keras.ops.convert_to_numpy(kernels[0]).astype(np.float32)
                norms[path] = np.sqrt(np.square(k.reshape(-1, k.shape[-1])).sum(axis=0))
        return norms

    def _changed(self) -> str | None:
        """Why the weights changed a lot since the last drawn step, or None."""
        if not self._norms:
            return None
        now = self._filter_norms()
        for path, before in self._norms.items():
            after = now.get(path)
            if after is None or after.shape != before.shape:
                continue
            alive = before > 1e-3 * max(float(np.median(before)), 1e-12)
            died = alive & (after <= 1e-3 * max(float(np.median(after)), 1e-12))
            if died.any():
                return f"a filter of {path} died (its kernel collapsed to zero)"
            moved = np.linalg.norm(after - before) / max(float(np.linalg.norm(before)), 1e-12)
            if moved > BIG_CHANGE:
                return f"the filter norms of {path} moved by {moved:.0%}"
        return None

    def end(self) -> None:
        """Waits for the background writer, flushes, reports what failed there, and lets go of
        the writer (call in `on_train_end`)."""
        if self._run is not None:
            # The wait and the last flush are the callbacks' time too (the wait counted once).
            with self.budget.own():
                counts = not backend.has_accelerator()
                wait_for_worker(self.budget, self._run.worker.join, counts)
                with self.budget.profile.recording("plan", "write"):
                    WRITERS.release(self.run_dir)
            self._run = None


#: A thinned step is drawn anyway when a layer's filter norms moved by more than this fraction
#: since the last drawn step.
BIG_CHANGE = 0.5


def fit_params(callback: keras.callbacks.Callback) -> dict:
    """The `params` Keras gave `callback` for this fit(); empty when driven outside fit() (a
    custom training loop calling the hooks)."""
    return callback.params or {}


def epochs_left(callback: keras.callbacks.Callback, epoch: int) -> int | None:
    """Epochs of this fit() from `epoch` on; None when unknown (hooks called by a custom loop)."""
    epochs = fit_params(callback).get("epochs")
    return None if epochs is None else epochs - epoch


def is_final_epoch(callback: keras.callbacks.Callback, epoch: int) -> bool:
    """Whether `epoch` is the last of this fit(): its planned last, or training was stopped."""
    epochs = fit_params(callback).get("epochs")
    return (epochs is not None and epoch + 1 >= epochs) or bool(
        getattr(callback.model, "stop_training", False)
    )


def log_epoch(
    owner: str,
    callbacks: list[VizCallback],
    budget: budget_lib.TimeBudget,
    run: RunWriter,
    epoch: int,
    final: bool,
    *,
    layers: list[str] | None = None,
    thinned: str | None = None,
    resumed: dict | None = None,
) -> dict[str, list]:
    """Plans, draws and records one epoch for `callbacks` sharing `budget`.

    Each drawing does its model work here, on the training thread, and returns the encoding
    and writing of its pictures as a job for the run's background worker (`tb_cnnviz.background`),
    which writes through `run.writer`, a `tb_cnnviz.events.FileWriter`: no outer
    `tf.summary.record_if` (Keras' `TensorBoard(update_freq=N)` keeps one open during `fit()`)
    governs it, so none is dropped. After the drawings, a job writes the plan record
    (`tb_cnnviz.summary.write_plan`, tag `"<owner>/plan"`): what was drawn, with what each cost,
    and what was not, and why. The worker runs jobs in order, so the event file holds them in
    the order of the epochs.

    A drawing's cost is its time here plus, on a machine without an accelerator (where the
    worker competes with training for the processor), the worker's CPU time for its job.

    Args:
        owner: The name the plan record is written under.
        callbacks: The callbacks whose drawings share `budget`.
        budget: Their `TimeBudget`.
        run: The writer and worker of their run.
        epoch: The epoch, written as the step.
        final: Whether this is the last epoch of `fit()`.
        layers: The model's conv layers in forward order, for the plan record's metadata.
        thinned: Why this step is not drawn in a long run (`tb_cnnviz.thinning`): only its
            plan record is written, saying so. None draws it.
        resumed: What the plan record says of the run this `fit()` resumed, on its first step.

    Returns:
        `{"drawn": [tags], "skipped": {tag: reason}}` as planned; a drawing that fails in the
        background is named in the plan record (and warned about once, at a later epoch or when
        training ends), not here.
    """
    run.report_failures()  # of earlier epochs' background jobs, on this thread
    if thinned is not None:
        _submit_plan(owner, budget, run, epoch, [], {}, {}, {}, layers, thinned, resumed)
        return {"drawn": [], "skipped": {}}
    drawings, held = [], {}
    with budget.profile.recording("plan"):  # estimates may time the model once
        for callback in callbacks:
            if callback._due(epoch):
                held.update(callback._held_back())
                if callback._selected:
                    drawings.extend(callback._drawings(epoch))
        if not drawings and not held:
            return {"drawn": [], "skipped": {}}
        plan = budget.plan(epoch, drawings, final=final)
    also = {d.tag: d.also for d in drawings}
    drawn, skipped = [], dict(held)
    for tag, reason in plan.skipped.items():
        skipped.update(dict.fromkeys((tag, *also[tag]), reason))
    # Filled by the background jobs, read by the plan record's job after them.
    outcome: dict[str, str | None] = {}  # tag -> None (drawn) or why it failed
    costs: dict[str, dict[str, float]] = {}
    counts = not backend.has_accelerator()
    # Each kind's shared pass at this step (`TimeBudget.record_pass`), for the plan record.
    passes_before = {d.kind: budget.pass_seconds(d.kind) for d in drawings}

    def draw_all(chosen) -> set[str]:
        """Draws `chosen`; returns the kinds of the first drawings among them."""
        first = set()
        for drawing, steps in chosen:
            if not budget.measured(drawing):
                first.add(drawing.kind)
            start = time.perf_counter()
            once = budget.profile.one_time(drawing.kind)
            shared = budget.pass_seconds(drawing.kind)
            try:
                with budget.profile.recording(drawing.kind):
                    later = drawing.draw(*([steps] if drawing.steps else []))
            except Exception as e:  # a picture must never end a training run
                reason = drawing.source._report_failure(drawing.tag, e)
                skipped.update(dict.fromkeys((drawing.tag, *drawing.also), reason))
                seconds = time.perf_counter() - start
                seconds -= budget.pass_seconds(drawing.kind) - shared  # the kind's (below)
                budget.record(drawing, seconds, steps, 0)
                continue
            for tag in (drawing.tag, *drawing.also):
                skipped.pop(tag, None)
            drawn.extend((drawing.tag, *drawing.also))
            # A pass it ran for the drawings of its kind at this step is the kind's, recorded
            # on its own (`TimeBudget.record_pass`), not this drawing's.
            seconds = time.perf_counter() - start
            seconds -= budget.pass_seconds(drawing.kind) - shared
            once = budget.profile.one_time(drawing.kind) - once  # tracing, setup
            job = _drawing_job(
                run, budget, drawing, steps, later, (seconds, once), epoch, counts, outcome, costs
            )
            wait_for_worker(budget, lambda job=job: run.worker.submit(job), counts)
        return first

    left_out = dict(plan.left_out)
    # The step's drawings share the passes of the probe images (`reusing_passes`): the feature
    # maps', Grad-CAM's through the model's tail and the probes' predictions are one.
    with layer_lib.reusing_passes():
        learned = draw_all(plan.draw)
        # At the last epoch, what a first drawing really cost is what the estimates of the others
        # of its kind lacked (they are cautious, up to 4x): once it is recorded (its encoding done
        # on the worker), what was left out is planned again, so a short run that can afford a
        # second layer's activation maximization draws it.
        while final and learned & {d.kind for d in drawings if d.tag in left_out}:
            wait_for_worker(budget, run.worker.join, counts)
            retry = [d for d in drawings if d.tag in left_out]
            with budget.profile.recording("plan"):
                again = budget.plan(epoch, retry, final=True)
            left_out = dict(again.left_out)
            for tag, reason in again.skipped.items():
                skipped.update(dict.fromkeys((tag, *also[tag]), reason))
            learned = draw_all(again.draw)
    if final:  # the log says once, per kind, what the whole run went without, and why
        by_kind: dict[str, list[str]] = {}
        for d in drawings:
            if d.tag in left_out:
                by_kind.setdefault(d.kind, []).append(d.tag)
        never = budget.never_drawn(left_out)
        for tags in by_kind.values():
            tags = sorted((t for t in tags if t in never), key=list(left_out).index)
            if tags:
                logger.warning(
                    "tb-cnnviz: not drawn in this run: %s. %s", ", ".join(tags), never[tags[0]]
                )

    passes = {k: budget.pass_seconds(k) - v for k, v in passes_before.items()}
    passes = {k: v for k, v in passes.items() if v > 0}
    _submit_plan(
        owner, budget, run, epoch, drawn, skipped, outcome, costs, layers, None, resumed, passes
    )
    return {"drawn": drawn, "skipped": skipped}


def _submit_plan(
    owner, budget, run, step, drawn, skipped, outcome, costs, layers, thinned, resumed, passes=None
):
    """Queues the plan record of `step`, after its drawings; it commits the step to disk."""
    counts = not backend.has_accelerator()

    def write_plan():
        cpu = time.thread_time()
        failed = {t: r for t, r in outcome.items() if r is not None}
        record = budget.profile.recording("plan", "write", time.thread_time)
        with run.writer.as_default(step=step), record:
            summary.write_plan(
                owner,
                step,
                drawn=[t for t in drawn if t not in failed],
                skipped={**skipped, **failed},
                costs=costs,
                passes=passes,
                budget=budget.fraction,
                train_seconds=budget.train_seconds,
                own_seconds=budget.own_seconds,
                layers=layers,
                thinned=thinned,
                resumed=resumed,
            )
            run.writer.flush()  # the step's one event: on disk whole, or not at all
        run.step_written(step, sum(c["bytes"] for c in costs.values()), run.lease)
        if counts:
            budget.add_own(time.thread_time() - cpu)

    wait_for_worker(budget, lambda: run.worker.submit(write_plan), counts)


def wait_for_worker(budget: budget_lib.TimeBudget, wait, counts: bool) -> None:
    """Runs `wait()`, which may block on the background worker (a full queue, the last jobs).

    Where the worker's jobs compete with training for the processor (`counts`: no
    accelerator), their processor time counts as the callbacks' own already: the wait is that
    same time, seen from the training thread, and is not counted a second time. With an
    accelerator the jobs do not count, and the training thread's wait does (as writing).

    Example:
        >>> budget = budget_lib.TimeBudget()
        >>> with budget.own():
        ...     wait_for_worker(budget, lambda: time.sleep(0.2), counts=True)
        >>> budget.own_seconds < 0.1
        True
    """
    start = time.perf_counter()
    wait()
    waited = time.perf_counter() - start
    if counts:
        budget.add_own(-waited)
    else:
        budget.profile.add("plan", "write", waited)


def _drawing_job(run, budget, drawing, steps, later, timed, epoch, counts, outcome, costs):
    """The background part of one drawing: encodes and writes it, records what it cost.

    `timed`: `(seconds, one_time)` of its part on the training thread, and of those the
    seconds a later drawing does not pay again (`TimeBudget.record`).
    """
    tags = (drawing.tag, *drawing.also)
    seconds, one_time = timed

    def job():
        cpu, before, error = time.thread_time(), summary.written_bytes(), None
        if later is not None:
            try:
                with run.writer.as_default(step=epoch):
                    # Processor time, as the budget counts it (below).
                    with budget.profile.recording(drawing.kind, "encode", time.thread_time):
                        later()
            except Exception as e:  # reported by the training thread; training goes on
                error = e
        spent = time.thread_time() - cpu
        written = summary.written_bytes() - before
        if counts:  # it competed with training for the processor
            budget.add_own(spent)
            seconds_in_all = seconds + spent
        else:
            seconds_in_all = seconds
        budget.record(drawing, seconds_in_all, steps, written, one_time)
        if error is not None:
            run.failed(drawing, error)
            outcome.update(dict.fromkeys(tags, failure_reason(error)))
            return
        outcome.update(dict.fromkeys(tags))
        cost = {"seconds": round(seconds_in_all, 4), "bytes": int(written)}
        costs.update(dict.fromkeys(tags, cost))

    return job


def failure_reason(error: Exception) -> str:
    """The reason a plan record gives for a drawing that failed.

    Example:
        >>> failure_reason(ValueError("NaN weights"))
        'failed: ValueError: NaN weights'
    """
    return f"failed: {type(error).__name__}: {error}"[:500]
