"""`CNNViz`: every kind of picture tb-cnnviz has, in one callback with sensible defaults."""

from __future__ import annotations

import os

import keras
import numpy as np

from tb_cnnviz import backend, checks
from tb_cnnviz import budget as budget_lib
from tb_cnnviz import layers as layer_lib
from tb_cnnviz import thinning as thinning_lib

from .actmax import ActivationMaximization
from .attribution import Attribution
from .base import Planner, check_budget, check_probe_images
from .feature_maps import FeatureMaps
from .references import References
from .snapshots import Snapshots, check_keep
from .weights import FilterWeights

__all__ = ["CNNViz"]

# Activation maximization costs optimization steps per filter: CNNViz draws a few layers with
# few warm-started steps, and its time budget spreads them over epochs.
ACTMAX_MAX_LAYERS = 4
ACTMAX_MAX_FILTERS = 64
ACTMAX_STEPS = 16


class CNNViz(keras.callbacks.Callback):
    """Logs every kind of CNN picture for the CNN Viz tab of TensorBoard.

    It bundles `FilterWeights` and, when `probe_images` are given, `FeatureMaps` and
    `Attribution` (Grad-CAM heatmaps of the probe images), and `ActivationMaximization` (what
    each filter wants to see; colours decorrelated with the probe images' colour statistics when
    given), all writing into the `train` run of `log_dir`, beside `keras.callbacks.TensorBoard`'s
    scalars. For a model activation maximization cannot draw (not one image input), it drops
    out of `callbacks` quietly for that `fit()` and the other kinds go on. With
    `reference_images` (a fixed held-out batch, a few hundred images), it also logs each conv
    layer's responses to them (`References`), from which `tb_cnnviz.compare` computes layer
    similarity (CKA) across steps and runs, aligns filters across runs and finds each filter's
    dataset examples.

    Its cost is a budget, not a side effect: by default its own time (setup and tracing
    included) stays within 5% of the time `fit()` spends training. Filter weights are drawn at
    every epoch; feature maps, attribution and activation maximization take turns over epochs
    and layers, and the last epoch gets everything the budget allows (see `tb_cnnviz.budget`).
    A kind whose one drawing costs more than the whole run's budget is left out, and the log
    and the tab say so with its cost. Each step's plan record (tag `cnnviz/plan`) says what was
    drawn and what was not, and why. `budget=None` draws every kind at every epoch.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`.
        probe_images: A few fixed images `[n, *input_shape]` (4-16 is plenty) in the value range
            the model trains on; kinds that need images are off without them.
        labels: The probe images' true classes (ids or one-hot), so attribution also shows the
            true class and whether each prediction is correct.
        class_names: Names of the model's classes, shown instead of class ids.
        reference_images: A fixed held-out batch `[n, *input_shape]` of at least 16 images (256
            is a good size), the same for every run you want to compare; `None` (the default)
            turns layer similarity, filter alignment and dataset examples off. Wrong shapes or
            dtypes, or fewer than 16 images, are a `ValueError` here or before the first epoch.
        layers: Layer names or `outer/inner` paths; `None` means every conv layer.
        weights_freq: Log filter weights every this many epochs; 0 turns them off.
        feature_maps_freq: Log feature maps every this many epochs; 0 turns them off.
        attribution_freq: Log Grad-CAM heatmaps every this many epochs; 0 turns them off.
        actmax_freq: Log activation-maximization images every this many epochs; 0 turns them
            off.
        references_freq: Log the responses to `reference_images` every this many epochs; 0
            turns them off.
        actmax_steps: Optimization steps per logged epoch; each epoch refines the last one's
            images. To keep the cost small, activation maximization draws at most 4 layers
            (spread over the depth) and 64 filters per layer; use `ActivationMaximization`
            directly for more.
        value_range: `(low, high)` of the model's input pixels, for activation maximization.
        max_filters: Draw at most this many filters per layer (evenly sampled beyond).
        budget: The callback's own time as a fraction of training time, in (0, 1]; `None`
            draws every kind at every epoch it is due.
        max_bytes: Bytes of pictures written per epoch at most (with a budget); drawings beyond
            it wait for a later epoch.
        max_run_bytes: Bytes of pictures the whole run may hold (every `fit()` and process
            writing it), 1 GiB by default; near it, only the last epoch of a `fit()` is drawn.
            None for no cap.
        thin_after: Long runs are thinned: every epoch is drawn up to this many (16), then
            every 2nd up to twice as many, every 4th up to four times, and so on; the first
            and last epoch of each `fit()` always, and any epoch at which a conv filter died
            or a layer's filter norms moved by more than half. So 300 epochs draw about 50
            steps, 30 draw 23 (`tb_cnnviz.thinning`). A thinned epoch's plan record says
            `thinned`, so the tab does not take it for missing data. None draws every epoch.
        snapshots: Which steps of the model to keep for `tb_cnnviz.probe` and the tab's Probe
            view (`Snapshots`, in `<log_dir>/train/cnnviz_snapshots/`): `"first_and_latest"`
            (the default: the first logged step and the latest, replaced as training goes on,
            so at most two copies of the weights), `"all"`, an int N (every N epochs, first
            and latest kept too), the `keras.callbacks.ModelCheckpoint` of the same `fit()`
            (its files are recorded instead of copies), or `None` (no snapshots). Their time
            counts in `budget` as the callbacks' own.

    Attributes:
        callbacks: The per-kind callbacks in use for the current (or last) `fit()`, in logging
            order.

    Example:
        >>> import numpy as np, keras, tempfile
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> viz = CNNViz(tempfile.mkdtemp(), probe_images=np.random.rand(2, 8, 8, 3))
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros(4), epochs=1, verbose=0,
        ...               callbacks=[viz])
        >>> [type(c).__name__ for c in viz.callbacks]
        ['FilterWeights', 'FeatureMaps', 'Attribution', 'ActivationMaximization']
    """

    def __init__(
        self,
        log_dir="logs",
        probe_images=None,
        *,
        layers=None,
        labels=None,
        class_names=None,
        reference_images=None,
        weights_freq=1,
        feature_maps_freq=1,
        attribution_freq=1,
        actmax_freq=1,
        references_freq=1,
        actmax_steps=ACTMAX_STEPS,
        value_range=(0.0, 1.0),
        max_filters=256,
        budget=budget_lib.DEFAULT_BUDGET,
        max_bytes=budget_lib.DEFAULT_MAX_BYTES,
        max_run_bytes=thinning_lib.DEFAULT_MAX_RUN_BYTES,
        thin_after=thinning_lib.DEFAULT_KEEP_FIRST,
        snapshots="first_and_latest",
    ):
        super().__init__()
        backend.check_supported("CNNViz")
        self.budget = check_budget(budget)
        self.max_bytes = checks.integer("max_bytes", max_bytes, minimum=1, none=True)
        self.max_run_bytes = checks.integer("max_run_bytes", max_run_bytes, minimum=1, none=True)
        self.thin_after = checks.integer("thin_after", thin_after, minimum=1, none=True)
        self.log_dir = log_dir
        self.probe_images = probe_images
        self.layers = layers
        self.weights_freq = weights_freq
        self.feature_maps_freq = feature_maps_freq
        self.labels = labels
        self.class_names = class_names
        self.attribution_freq = attribution_freq
        self.actmax_freq = actmax_freq
        self.reference_images = reference_images
        self.references_freq = references_freq
        self.actmax_steps = actmax_steps
        self.value_range = value_range
        self.max_filters = max_filters
        self.snapshots = None if snapshots is None else check_keep(snapshots)
        common = {"layers": layers, "max_filters": max_filters}
        self.callbacks = [FilterWeights(log_dir, freq=weights_freq, **common)]
        if probe_images is not None:
            self.callbacks.append(
                FeatureMaps(log_dir, probe_images, freq=feature_maps_freq, **common)
            )
            self.callbacks.append(
                Attribution(
                    log_dir,
                    probe_images,
                    labels=labels,
                    class_names=class_names,
                    freq=attribution_freq,
                )
            )
        actmax = ActivationMaximization(
            log_dir,
            layers=layers,
            freq=actmax_freq,
            max_filters=min(max_filters, ACTMAX_MAX_FILTERS),
            max_layers=ACTMAX_MAX_LAYERS,
            steps=actmax_steps,
            value_range=value_range,
            decorrelate=_probe_colours(probe_images),
            optional=True,
        )
        self.callbacks.append(actmax)
        if reference_images is not None:
            self.callbacks.append(
                References(log_dir, reference_images, freq=references_freq, layers=layers)
            )
        self._kinds = list(self.callbacks)  # every kind, whether or not it applies to a model
        self._deferred = False  # checks wait for fit() to build the model
        budget = budget_lib.TimeBudget(self.budget, max_bytes)
        thinning = thinning_lib.Thinning(self.thin_after, self.max_run_bytes)
        self._planner = Planner(
            "cnnviz", os.path.join(os.fspath(log_dir), "train"), budget, thinning
        )
        for callback in self._kinds:
            callback.use_budget(budget)
        self._snapshots = None
        if self.snapshots is not None:
            self._snapshots = Snapshots(
                log_dir,
                keep=self.snapshots,
                probe_images=probe_images,
                value_range=value_range,
                class_names=class_names,
            )
            self._snapshots.use_budget(budget)

    def _all(self) -> list[keras.callbacks.Callback]:
        """Every kind, and the snapshots when they are on."""
        return [*self._kinds, *([self._snapshots] if self._snapshots else [])]

    @property
    def time_budget(self) -> budget_lib.TimeBudget:
        """The `TimeBudget` all kinds share: `train_seconds`, `own_seconds`, the plan's costs."""
        return self._planner.budget

    def set_model(self, model):
        super().set_model(model)
        for callback in self._all():
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self._all():
            callback.set_params(params)

    def on_train_begin(self, logs=None):
        self._planner.begin(self)
        budget = self._planner.budget
        with budget.own(), budget.profile.recording("layers", "setup"):
            if self.probe_images is not None:
                # Every kind lists the layers in the order the probe images meet them, also
                # where the model's input size is free.
                layer_lib.forward_trace(self.model, check_probe_images(self.probe_images))
            self.callbacks = list(self._kinds)  # each fit() asks every kind afresh
            for callback in self.callbacks:
                callback.on_train_begin(logs)
            if self._snapshots is not None:
                self._snapshots.on_train_begin(logs)
            self._deferred = not self.model.built
            self._drop_inactive()

    # As in `VizCallback`: checks deferred until a model built by `fit()` has its weights run
    # when a batch begins (Keras calls these in line), never in a batch-end hook, which would
    # turn off Keras 3's asynchronous batch-end dispatch.
    def on_train_batch_begin(self, batch, logs=None):
        if self._deferred and self.model.built:
            self._check_when_built()
        self._planner.budget.batch_begins(batch)  # the first epoch's compiling, for projections

    def _check_when_built(self) -> None:
        self._deferred = False
        with self._planner.budget.own():
            for callback in self.callbacks:
                callback.check_when_built()
            self._drop_inactive()

    def _drop_inactive(self):
        # A kind that cannot draw this model (actmax of a sequence model) drops out quietly.
        self.callbacks = [c for c in self.callbacks if getattr(c, "active", True)]

    def on_epoch_end(self, epoch, logs=None):
        if self._deferred:  # an epoch of one batch
            self._check_when_built()
        self._planner.epoch_end(self, self.callbacks, epoch)
        if self._snapshots is not None:  # counted in the shared budget (use_budget)
            self._snapshots.on_epoch_end(epoch + self._planner.offset, logs)

    def on_train_end(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_end(logs)
        if self._snapshots is not None:
            self._snapshots.on_train_end(logs)
        self._planner.end()


def _probe_colours(probe_images):
    """The probe images' colour statistics for decorrelation, or ImageNet's (`True`).

    A model trained on saturated shapes or scans does not see ImageNet's colours; its probe
    images say which colours it does see.
    """
    from tb_cnnviz.actmax import color_correlation

    if isinstance(probe_images, list | tuple) or probe_images is None:
        return True
    images = np.asarray(probe_images)
    if images.ndim != 4 or images.shape[-1] != 3 or not np.issubdtype(images.dtype, np.number):
        return True
    try:
        return color_correlation(images)
    except ValueError:  # no colour variance: nothing to learn from
        return True
