"""`Snapshots`: the model kept at logged steps, so that `tb_cnnviz.probe` can run it later.

On disk (`tb_cnnviz.metadata.SNAPSHOTS_DIR`, in the run beside the event files):

```
<log_dir>/train/cnnviz_snapshots/
    index.json                  # tb_cnnviz.metadata.parse_snapshot_index
    model.json                  # the architecture, model.to_json(), written once per run
    step_000000.weights.npz     # model.get_weights() at a kept step, in order (np.savez)
    step_000009.weights.npz
```

The weights are kept as the arrays of `model.get_weights()` (`arr_0`, `arr_1`, ... in
`model.weights` order), which `tb_cnnviz.probe` puts back with `model.set_weights` into the
model rebuilt from `model.json`. Keras' own `.weights.h5` (which the probe reads too, from
`ModelCheckpoint` files) cost 0.25-0.45 s per copy on MobileNetV2 on 2 CPU cores, the arrays
0.03 s: a snapshot inside a 5% budget left that budget with no feature maps to draw.

Every file is written under a temporary name in the same folder and moved into place
(`os.replace`), and the index is replaced only after the weights it names are complete, so a
job killed mid-write leaves the previous index and its files intact. A weights file the index
no longer names is removed after the new index is in place.

Which steps are kept (`keep`): `"first_and_latest"` (the default) keeps the first logged step
of the run and the latest one, the latest replaced as training goes on (under a time budget
at most every `LATEST_INTERVAL` seconds, and at the last epoch of each `fit()`), so the disk
holds at most two copies of the weights; `"all"` keeps every epoch; an int `N` keeps every
N-th epoch (epochs `N-1, 2N-1, …`, the step the callbacks log an epoch at) plus the first and
the latest. Inside
`CNNViz`'s time budget, a latest step the budget cannot pay for now (as the last snapshot cost)
waits for a later epoch; the first, the every-N and the last epoch are always kept. Given the
`keras.callbacks.ModelCheckpoint` of the same `fit()` (saving per epoch), no copy is written:
the index records, for each step, the file the checkpoint saved (found at the next epoch end or
when training ends, whatever order the callbacks run in); a file the checkpoint overwrote
(a name without `{epoch}`) stands for its latest step only. `tb_cnnviz.probe` opens only files
inside the logdir: keep such checkpoints under `log_dir` for the probe to use them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
import warnings

import keras
import numpy as np

from tb_cnnviz import backend, metadata, storage
from tb_cnnviz import budget as budget_lib
from tb_cnnviz import layers as layer_lib

from .base import failure_reason, is_final_epoch

__all__ = ["COMMON_RANGES", "KEEP_CHOICES", "Snapshots", "input_range"]

logger = logging.getLogger(__name__)

#: The `keep` policies given by name (an int N and a ModelCheckpoint work too).
KEEP_CHOICES = ("first_and_latest", "all")

ARCHITECTURE = "model.json"
#: The ending of the weights files the callback writes (`tb_cnnviz.probe` reads Keras'
#: `.weights.h5` and `.keras` files too).
WEIGHTS_SUFFIX = ".weights.npz"

#: Seconds between two replacements of the latest snapshot before the last epoch (which always
#: gets one): a job that dies loses at most this much of the probe's most recent model.
LATEST_INTERVAL = 60.0
#: The input ranges models are commonly fed in, smallest first.
COMMON_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))


def input_range(value_range, images) -> list[float]:
    """The value range a model's input pixels are recorded in, for the probe to feed it.

    The `value_range` the callbacks were given, when the probe images lie inside it; else the
    smallest of `COMMON_RANGES` that holds them (so an image uploaded to the probe is mapped
    as the training images were); else the images' own minimum and maximum. The images' own
    extremes are not used when a range holds them: a few probe images rarely reach both ends
    (`[0.002, 0.999]` is `[0, 1]`).

    Args:
        value_range: `(low, high)` given to the callbacks (`CNNViz`'s `value_range`).
        images: The probe images, any shape.

    Returns:
        `[low, high]` as floats.

    Example:
        >>> import numpy as np
        >>> input_range((0, 1), np.array([0.002, 0.999]))
        [0.0, 1.0]
        >>> input_range((0, 1), np.array([3.0, 250.0]))
        [0.0, 255.0]
        >>> input_range((0, 1), np.array([-0.5, 0.9]))
        [-1.0, 1.0]
        >>> input_range((0, 1), np.array([-3.0, 3.0]))
        [-3.0, 3.0]
    """
    low, high = (float(v) for v in value_range)
    images = np.asarray(images, np.float32)
    if images.size == 0 or not np.isfinite(images).all():
        return [low, high]
    lo, hi = float(images.min()), float(images.max())
    for a, b in ((low, high), *COMMON_RANGES):
        if a <= lo and hi <= b:
            return [a, b]
    return [lo, hi]


class Snapshots(keras.callbacks.Callback):
    """Keeps the model's architecture and its weights at logged steps, for `tb_cnnviz.probe`.

    The architecture is written once per run in Keras' own format (`model.to_json()`, which
    `tb_cnnviz.probe` loads with `safe_mode=True`), the weights at the kept steps
    (`model.save_weights`), and a small JSON index: each step's weights file, the input shape,
    the input's value range (`input_range`), the class names, the Keras backend and version.
    `CNNViz` runs one (its `snapshots` argument); its time counts as the callbacks' own in their
    shared `TimeBudget`, and each step's seconds and bytes are in the index. A snapshot that
    cannot be written (disk full, a file where the folder should be) warns once; training goes
    on.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`; snapshots go to its `train`
            run, in `cnnviz_snapshots/`.
        keep: Which steps to keep: `"first_and_latest"`, `"all"`, an int N (every N epochs,
            first and latest kept too), or the `keras.callbacks.ModelCheckpoint` (with
            `save_freq="epoch"`) of the same `fit()`, whose files are recorded instead of
            copies.
        probe_images: The images the model is shown, `[n, *input_shape]`: their shape tells
            the probe how to feed it new images, and their values check `value_range`.
        value_range: `(low, high)` of the model's input pixels, recorded for the probe; when
            the probe images fall outside it, the range that holds them (`input_range`).
        class_names: Names of the model's classes, for the probe's predictions.

    Raises:
        ValueError: If `keep` is none of the above (here), or the checkpoint does not save per
            epoch (in `on_train_begin`).

    Example:
        >>> import numpy as np, keras, tempfile, os
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> log_dir = tempfile.mkdtemp()
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=3, verbose=0,
        ...               callbacks=[Snapshots(log_dir)])
        >>> sorted(os.listdir(os.path.join(log_dir, "train", "cnnviz_snapshots")))
        ['index.json', 'model.json', 'step_000000.weights.npz', 'step_000002.weights.npz']
    """

    def __init__(
        self,
        log_dir="logs",
        *,
        keep="first_and_latest",
        probe_images=None,
        value_range=(0.0, 1.0),
        class_names=None,
    ):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.keep = check_keep(keep)
        self.probe_images = probe_images
        self.value_range = value_range
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.folder = os.path.join(self.log_dir, "train", metadata.SNAPSHOTS_DIR)
        self._time_budget: budget_lib.TimeBudget | None = None
        self._warned = False
        self._index: dict | None = None
        # (step, checkpoint file, time its epoch began ending) of files not seen yet
        self._pending: list[tuple[int, str, float]] = []
        self._epoch_ended = 0.0
        self._last_write = -math.inf  # time.monotonic() of the last weights written

    @property
    def checkpoint(self) -> keras.callbacks.ModelCheckpoint | None:
        """The `ModelCheckpoint` whose files are recorded, or None when weights are copied."""
        return self.keep if isinstance(self.keep, keras.callbacks.ModelCheckpoint) else None

    def use_budget(self, time_budget: budget_lib.TimeBudget) -> None:
        """Counts the snapshots' time in `time_budget` as the callbacks' own (`CNNViz` does)."""
        self._time_budget = time_budget

    # -- Keras hooks -------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        checkpoint = self.checkpoint
        if checkpoint is not None and checkpoint.save_freq != "epoch":
            raise ValueError(
                "snapshots can record a ModelCheckpoint that saves once per epoch; this one "
                f"saves every {checkpoint.save_freq} batches. Received: "
                f"save_freq={checkpoint.save_freq!r}"
            )
        self._epoch_ended = time.time()
        self._pending = []

    def on_epoch_end(self, epoch, logs=None):
        if storage.is_remote(self.log_dir):
            if not self._warned:  # said once: snapshots are local-only
                self._warned = True
                logger.warning(
                    "tb-cnnviz: model snapshots are written to local log_dirs only; none go "
                    "to %s (its pictures do)",
                    self.log_dir,
                )
            return
        if self.checkpoint is None and backend.process_count(self.model) > 1:
            # Saving weights that live in several processes is a collective every process
            # must enter; the chief alone would wait for the others for ever (and did, on JAX).
            if not self._warned:
                self._warned = True
                logger.warning(
                    "tb-cnnviz: no copies of the weights while training spans several "
                    "processes; pass the fit()'s ModelCheckpoint as snapshots= to let the "
                    "probe use its files"
                )
            return
        if not backend.is_chief(self.model):
            return  # only the chief writes
        with self._own():
            try:
                self._snapshot(epoch, logs or {})
            except Exception as e:  # a snapshot must never end a training run
                self._report_failure(e)

    def on_train_end(self, logs=None):
        if self._pending and self._index is not None:
            with self._own():
                try:
                    self._resolve_pending(final=True)
                    self._write_index()
                except Exception as e:
                    self._report_failure(e)

    # -- machinery ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _own(self):
        """Counts the time inside as the callbacks' own, and profiles it as writing."""
        budget = self._time_budget
        if budget is None:
            yield
            return
        with budget.own(), budget.profile.recording("snapshots", "write"):
            yield

    def _snapshot(self, step: int, logs: dict) -> None:
        os.makedirs(self.folder, exist_ok=True)
        if self._index is None:
            self._index = self._start_index()
        start = time.perf_counter()
        if self.checkpoint is not None:
            path = self.checkpoint.filepath.format(epoch=step + 1, **logs)
            # The checkpoint saves this epoch after the previous epoch ended, before or after
            # this hook: a file older than that holds an earlier epoch (save_best_only).
            self._pending.append((step, os.path.abspath(path), self._epoch_ended))
            self._epoch_ended = time.time()
            self._resolve_pending(final=False)
            self._write_index()
            return
        steps = self._index["steps"]
        role = self._role(step)
        if role == "latest" and not is_final_epoch(self, step):
            # The latest copy stands in for the last epoch if the job dies before it: replacing
            # it at every epoch of a run of short epochs cost a tutorial-sized run a third of
            # its budget. Under a budget it is replaced at most every LATEST_INTERVAL seconds,
            # and only while the budget pays for it.
            budgeted = self._time_budget is not None and self._time_budget.fraction is not None
            recent = time.monotonic() - self._last_write < LATEST_INTERVAL
            if (budgeted and recent) or self._over_budget():
                logger.debug("tb-cnnviz: snapshot of step %d waits for a later epoch", step)
                return
        name = f"step_{step:06d}{WEIGHTS_SUFFIX}"
        _atomic(os.path.join(self.folder, name), self._save_weights)
        self._last_write = time.monotonic()
        if self._time_budget is not None:  # the last epoch writes one whatever the credit
            self._time_budget.reserved = time.perf_counter() - start
        replaced = [s for s, e in steps.items() if e.get("role") == "latest" and s != step]
        steps[step] = {
            "weights": name,
            "role": role,
            "bytes": os.path.getsize(os.path.join(self.folder, name)),
            "seconds": round(time.perf_counter() - start, 4),
        }
        for s in replaced:
            del steps[s]
        self._write_index()
        for s in replaced:  # after the index no longer names them
            _remove(os.path.join(self.folder, f"step_{s:06d}{WEIGHTS_SUFFIX}"))

    def _save_weights(self, path: str) -> None:
        with open(path, "wb") as f:  # a file object: np.savez adds no suffix of its own
            np.savez(f, *self.model.get_weights())
            f.flush()
            os.fsync(f.fileno())

    def _over_budget(self) -> bool:
        """Whether the shared budget cannot pay for another snapshot now (as the last cost)."""
        budget, steps = self._time_budget, self._index["steps"]
        seconds = [e["seconds"] for e in steps.values() if "seconds" in e]
        return budget is not None and bool(seconds) and budget.credit() < seconds[-1]

    def _role(self, step: int) -> str:
        """Why `step` is kept: `"first"`, `"kept"` (all, every N), or `"latest"` (replaced)."""
        steps = self._index["steps"]
        if not any(e.get("role") == "first" for s, e in steps.items() if s != step):
            return "first"
        if self.keep == "all" or (isinstance(self.keep, int) and (step + 1) % self.keep == 0):
            return "kept"
        return "latest"

    def _start_index(self) -> dict:
        """The index of this run: continued where an earlier `fit()` left it, or a new one."""
        index = None
        try:
            with open(os.path.join(self.folder, metadata.SNAPSHOTS_INDEX), "rb") as f:
                index = metadata.parse_snapshot_index(f.read())
        except FileNotFoundError:
            pass
        except ValueError as e:  # a damaged index is replaced, not trusted
            logger.warning("tb-cnnviz: replacing the damaged snapshot index (%s)", e)
        model = self.model
        architecture = _architecture_json(model)
        _atomic(os.path.join(self.folder, ARCHITECTURE), lambda p: _write_text(p, architecture))
        shape, value_range = self._input()
        return {
            "version": 1,
            "architecture": ARCHITECTURE,
            "backend": keras.backend.backend(),
            "keras_version": keras.version(),
            "input_shape": shape,
            "value_range": value_range,
            "class_names": self.class_names,
            "steps": dict(index["steps"]) if index else {},
        }

    def _input(self) -> tuple[list | None, list[float]]:
        """The shape of one input image and the value range it is fed in (`input_range`)."""
        images = self.probe_images
        if images is not None and not isinstance(images, list | tuple):
            images = np.asarray(images, np.float32)
            return list(images.shape[1:]), input_range(self.value_range, images)
        low, high = (float(v) for v in self.value_range)
        shapes = layer_lib.input_shapes(self.model)
        shape = list(shapes[0][1:]) if len(shapes) == 1 else None
        if shape is not None and any(d is None for d in shape):
            shape = None
        return shape, [low, high]

    def _resolve_pending(self, *, final: bool) -> None:
        """Records the checkpoint files written since; at the end, forgets those never written."""
        steps, waiting = self._index["steps"], []
        for step, path, since in self._pending:
            # File times come from a coarse clock: a few milliseconds of slack.
            if os.path.isfile(path) and os.path.getmtime(path) >= since - 0.05:
                relative = os.path.relpath(path, self.folder)
                for s in [s for s, e in steps.items() if e.get("weights") == relative]:
                    del steps[s]  # an overwritten file holds the later step's weights only
                steps[step] = {
                    "weights": relative,
                    "checkpoint": True,
                    "bytes": os.path.getsize(path),
                }
            elif not final:
                waiting.append((step, path, since))
        self._pending = waiting

    def _write_index(self) -> None:
        index = {
            **self._index,
            "steps": {str(s): e for s, e in sorted(self._index["steps"].items())},
        }
        path = os.path.join(self.folder, metadata.SNAPSHOTS_INDEX)
        _atomic(path, lambda p: _write_text(p, json.dumps(index, indent=1)))

    def _report_failure(self, error: Exception) -> str:
        """Warns once (later failures at DEBUG level); training goes on."""
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"tb-cnnviz: Snapshots could not keep the model in {self.folder!r} "
                f"({type(error).__name__}: {error}). Training continues and the pictures are "
                "logged as before; further snapshot failures are only logged at DEBUG level.",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            logger.debug("Snapshots could not keep the model", exc_info=error)
        return failure_reason(error)


def check_keep(keep):
    """Validates a snapshot policy: a name of `KEEP_CHOICES`, an int >= 1, or a ModelCheckpoint.

    Example:
        >>> check_keep("all"), check_keep(3)
        ('all', 3)
    """
    if isinstance(keep, keras.callbacks.ModelCheckpoint) or keep in KEEP_CHOICES:
        return keep
    if isinstance(keep, int | np.integer) and not isinstance(keep, bool) and keep >= 1:
        return int(keep)
    raise ValueError(
        "snapshots must be 'first_and_latest', 'all', a number of epochs N >= 1 (every N "
        "epochs), the ModelCheckpoint of the same fit(), or None (no snapshots). "
        f"Received: snapshots={keep!r}"
    )


def _architecture_json(model) -> str:
    """`model.to_json()`, without importing TensorFlow into a process that has not.

    Keras' serializer asks whether TensorFlow can be imported (to recognise a `tf.TensorShape`)
    and so imports it wherever it is installed, whatever the backend: on JAX or PyTorch beside
    an installed TensorFlow (as on Colab), a run's first snapshot took 2 s more, counted in the
    callbacks' budget, and a tutorial-sized run lost its activation maximization and Grad-CAM
    to it. A process that never imported TensorFlow holds none of its objects, so the question
    is answered "no" for this one call. Where that Keras internal is missing, Keras decides.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> json.loads(_architecture_json(m))["class_name"]
        'Sequential'
    """
    if "tensorflow" in sys.modules:
        return model.to_json()
    try:
        from keras.src.utils import module_utils

        lazy = module_utils.tensorflow
        lazy._available  # noqa: B018  (present in the Keras versions that have it)
    except (ImportError, AttributeError):
        return model.to_json()
    with _NO_TENSORFLOW:  # two snapshots at once must not restore each other's answer
        known = lazy._available
        lazy._available = False
        try:
            return model.to_json()
        finally:
            lazy._available = known


#: Held while Keras is told TensorFlow is unavailable (`_architecture_json`).
_NO_TENSORFLOW = threading.Lock()


def _atomic(path: str, write) -> None:
    """Calls `write(temporary)` beside `path`, then moves the complete file into place."""
    folder, name = os.path.split(path)
    # The temporary keeps the name's ending, by which readers pick the format.
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
