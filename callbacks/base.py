"""What every tb-cnnviz callback shares: argument checks, layer selection, writers, fault isolation.

A visualization must never cost the user their training run: a failure while logging is reported
with one warning per (layer, kind) and training goes on; what was logged before stays on disk.
Configuration errors, on the other hand, are raised in `on_train_begin`, before any epoch runs.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings

import keras
import numpy as np
import tensorflow as tf

from tb_cnnviz import layers as layer_lib

__all__ = ["VizCallback", "check_freq", "check_probe_images", "is_chief"]

logger = logging.getLogger(__name__)


class _WriterPool:
    """One summary writer per run directory, shared by every callback of this process.

    Keras' own `TensorBoard` callback writes into `<log_dir>/train`; ours writes beside it, in the
    same run, through a single writer however many of our callbacks are attached.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._writers: dict[str, list] = {}

    def acquire(self, run_dir: str):
        with self._lock:
            entry = self._writers.get(run_dir)
            if entry is None:
                entry = self._writers[run_dir] = [tf.summary.create_file_writer(run_dir), 0]
            entry[1] += 1
            return entry[0]

    def release(self, run_dir: str) -> None:
        with self._lock:
            entry = self._writers.get(run_dir)
            if entry is None:
                return
            entry[0].flush()
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del self._writers[run_dir]


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
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(
            f"{name} must be a non-negative integer number of epochs (0 turns it off). "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_probe_images(probe_images, name: str = "probe_images") -> np.ndarray:
    """Validates probe images: a numeric array `[n, *spatial, channels]` with `n >= 1`.

    Integer images are converted to float32 without rescaling: give them in the value range the
    model was trained on.

    Args:
        probe_images: Array-like of images.
        name: The argument name, for the message.

    Returns:
        The images as float32.

    Raises:
        ValueError: If the images are empty, not numeric, not finite or of too low a rank.

    Example:
        >>> check_probe_images(np.zeros((2, 8, 8, 3), np.uint8)).dtype
        dtype('float32')
    """
    try:
        images = np.asarray(probe_images)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{name} must be an array of images. Received: {e}") from e
    if images.dtype == object or not (
        np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_
    ):
        raise ValueError(
            f"{name} must hold numbers (float or uint8 images). Received: dtype={images.dtype}"
        )
    if images.ndim < 3 or images.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape [n_images, *spatial, channels] with at least one image. "
            f"Received: {name}.shape={images.shape}"
        )
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or Inf values.")
    return images


def is_chief(model: keras.Model | None = None) -> bool:
    """Whether this process should write summaries under its `tf.distribute` strategy.

    Single-worker strategies (default, Mirrored, OneDevice) always write. In a multi-worker
    cluster the chief writes, or worker 0 when the cluster has no chief.

    Example:
        >>> is_chief()
        True
    """
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_type == "worker" and not has_chief and (resolver.task_id or 0) == 0


class VizCallback(keras.callbacks.Callback):
    """Base of the per-kind callbacks: subclasses set `kind` and implement `_log_layer`.

    Args:
        log_dir: The same `log_dir` given to `keras.callbacks.TensorBoard`; pictures go into its
            `train` run so they stand next to the scalars and histograms.
        layers: Layer names (or `outer/inner` paths) to visualize; `None` means every conv layer,
            nested models included.
        freq: Log every `freq` epochs; 0 turns the callback off.
        max_filters: Draw at most this many filters per layer (larger layers are sampled evenly,
            and the dashboard says so).
    """

    kind = ""

    def __init__(self, log_dir="logs", *, layers=None, freq=1, max_filters=256):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        if layers is not None and not isinstance(layers, str):
            layers = list(layers)
            if not all(isinstance(name, str) for name in layers):
                raise ValueError(f"layers must be layer names (str). Received: layers={layers!r}")
        self.layers = layers
        self.freq = check_freq("freq", freq)
        if isinstance(max_filters, bool) or not isinstance(max_filters, int) or max_filters < 1:
            raise ValueError(
                f"max_filters must be a positive integer. Received: max_filters={max_filters!r}"
            )
        self.max_filters = max_filters
        self._run_dir = os.path.join(self.log_dir, "train")
        self._writer = None
        self._selected: list[tuple[str, keras.layers.Layer]] = []
        self._warned: set[str] = set()
        self._validation_pending = False

    # -- Keras hooks -------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if not self.freq:
            return
        self._selected = layer_lib.resolve_layers(self.model, self.layers)
        self._check_log_dir()
        # A model first built by fit() (a Sequential without an Input) has no weights yet: its
        # checks wait for the end of the first batch, before any epoch completes.
        self._validation_pending = not self.model.built
        if not self._validation_pending:
            self._validate(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if self._validation_pending:
            self._validation_pending = False
            self._validate(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if not self.freq or (epoch + 1) % self.freq or not is_chief(self.model):
            return
        self._log_epoch(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            WRITERS.release(self._run_dir)
            self._writer = None

    # -- for subclasses ----------------------------------------------------------------------
    def _validate(self, model: keras.Model) -> None:
        """Raises ValueError for configuration that cannot work with `model`."""

    def _prepare(self, epoch: int) -> None:
        """Work shared by all layers of one logged epoch (for example one forward pass)."""

    def _log_layer(self, path: str, layer: keras.layers.Layer, step: int) -> None:
        raise NotImplementedError

    # -- machinery ---------------------------------------------------------------------------
    def _log_epoch(self, step: int) -> None:
        if self._writer is None:
            self._writer = WRITERS.acquire(self._run_dir)
        with self._writer.as_default(step=step):
            if not self._guard("the probe images", self._prepare, step):
                return
            for path, layer in self._selected:
                self._guard(f"layer {path!r}", self._log_layer, path, layer, step)
        self._writer.flush()

    def _guard(self, what: str, fn, *args) -> bool:
        """Runs `fn`; on failure warns once per callback and lets training go on."""
        try:
            fn(*args)
            return True
        except Exception as e:  # a picture must never end a training run
            if not self._warned:
                warnings.warn(
                    f"tb-cnnviz: {type(self).__name__} could not log {what} "
                    f"({type(e).__name__}: {e}). Training continues and what was logged stays; "
                    "further failures of this callback are only logged at DEBUG level.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                logger.debug("%s could not log %s", type(self).__name__, what, exc_info=True)
            self._warned.add(what)
            return False

    def _check_log_dir(self) -> None:
        if "://" in self.log_dir:  # remote filesystems (gs://, s3://) are tf.io's business
            return
        try:
            os.makedirs(self._run_dir, exist_ok=True)
        except OSError as e:
            raise ValueError(
                f"log_dir cannot be created: {e}. Received: log_dir={self.log_dir!r}"
            ) from e
        if not os.access(self._run_dir, os.W_OK):
            raise ValueError(f"log_dir is not writable. Received: log_dir={self.log_dir!r}")
