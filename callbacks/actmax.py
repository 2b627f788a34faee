"""`ActivationMaximization`: for every filter, the input that excites it most, each logged epoch."""

from __future__ import annotations

import warnings

import numpy as np

from tb_cnnviz import actmax, checks, summary, tiles
from tb_cnnviz import budget as budget_lib
from tb_cnnviz import layers as layer_lib
from tb_cnnviz.actmax import param as param_lib

from .base import VizCallback

__all__ = ["ActivationMaximization", "filters_within"]

#: Optimization steps per logged epoch in the callbacks' default: with warm starts, each epoch
#: refines the previous epoch's images, so the images sharpen as training goes on.
DEFAULT_STEPS = 32
#: Seconds to trace a renderer's optimization loop, resampling and parameterization, with the
#: first run of the traced step; the estimate adds the model's own share (`TRACE_DEPTH_FACTOR`
#: times the layer's share of `ModelTiming.trace`). Measured on these 2 cores, a renderer's
#: whole first call, model included, takes 0.18-0.23 s beyond its steps for the demo CNN's
#: layers and 0.19 s for MobileNetV2's first conv at its 24-pixel canvas, since the
#: transforms' matrices are made on the host (0.26-0.34 s before).
TRACE_SECONDS = 0.15
#: Tracing a renderer's step through the model up to a layer costs about this many times the
#: layer's share (its place among the conv layers) of the model's forward and backward trace
#: (`ModelTiming.trace`). Measured on these 2 cores, MobileNetV2 at 224, a renderer's first
#: call: `Conv1` 0.19 s in all; `block_5_project`, a third of the way, 0.78 s on an idle machine
#: (its first drawing in a run, beside the background worker, 1.64 s), where a third of the
#: model's trace is 0.3 s.
TRACE_DEPTH_FACTOR = 2.0
#: The fewest steps a drawing takes when the time budget is short (a quarter of `steps` if
#: that is more): fewer barely move a warm start.
MIN_STEPS = 4
#: Under a time budget, the first drawings of all the layers, at their fewest steps, are sized
#: to take at most this share of what the run may spend (`TimeBudget.run_seconds`), each layer
#: an equal part (or, where its tracing alone takes more, its steps no longer than its
#: tracing): a layer that would cost more draws fewer of its filters (evenly spaced, at least
#: `MIN_FILTERS`), instead of being left out. On ResNet50 at 224, 3 epochs of 512 images,
#: the last conv's 256 filters at their fewest steps were estimated at 43 s, against 18 s for
#: the whole run, and its activation maximization was never drawn.
RUN_SHARE = 0.5
#: The fewest filters a layer's drawing keeps when the time budget sizes it (`RUN_SHARE`): a
#: sample that shows what the layer responds to. On ResNet50 at 224 on 2 CPU cores, each
#: filter of its last conv costs about 0.7 s at the fewest steps; 16 took more than the
#: 12 s a 3-epoch run of 512 images had left for all its pictures.
MIN_FILTERS = 8


def filters_within(full: int, once: float, steps: float, part: float) -> int:
    """How many of `full` filters a drawing renders so that it takes about `part` seconds.

    The steps' cost (`steps` seconds for all `full` filters) grows with the filters, one image
    each; the tracing (`once` seconds) does not. Where the tracing alone takes `part`, the
    steps may take as long as the tracing: fewer filters would save little there (the demo
    CNN's layers trace in 0.2 s, and the steps of their 64 filters take less). Never fewer than
    `MIN_FILTERS` (nor more than `full`).

    Example:
        >>> filters_within(64, once=0.2, steps=0.1, part=0.5)  # it fits
        64
        >>> filters_within(64, once=3.0, steps=40.0, part=2.0)  # the steps may take 3 s
        8
        >>> filters_within(256, once=1.0, steps=20.0, part=6.0)  # 5 s for the steps
        64
    """
    room = max(part - once, once)
    if steps <= room:
        return full
    return int(min(max(full * room / steps, MIN_FILTERS), full))


class ActivationMaximization(VizCallback):
    """Logs, for every filter of each 2-D conv layer, an image that excites it most.

    The images come from `tb_cnnviz.actmax`: a Fourier parameterization with decorrelated
    colours, random pad/jitter/scale/rotate transforms, all filters of a layer optimized as one
    batch in one compiled step. The first logged epoch starts from noise; each later one
    continues from the previous epoch's images (`warm_start`), so a few steps per epoch follow
    the network as it learns. Each step also stores the activation every image reached
    (statistic `activation`).

    Layers that are not 2-D convolutions (Conv1D, Conv3D) are skipped with one warning.
    Calling `fit()` again on the same model reuses the compiled renderers and continues from the
    last logged images.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`; pictures go to its `train` run.
        layers: Layer names or `outer/inner` paths; `None` means every 2-D conv layer.
        freq: Log every `freq` epochs; 0 turns it off.
        max_filters: Render at most this many filters per layer (evenly sampled beyond).
        max_layers: Render at most this many layers, spread evenly over the depth and always
            including the last; `None` renders every selected layer.
        steps: Optimization steps per logged epoch.
        warm_start: Continue from the previous logged epoch's images instead of from noise.
        value_range: `(low, high)` of the model's input pixels, e.g. `(0, 1)`, `(-1, 1)` or
            `(0, 255)`.
        size: `(h, w)` to render at, or `"receptive_field"` (the default): each layer on a
            canvas the size of its receptive field, reading its centre position, up to the
            input size (`tb_cnnviz.actmax.Renderer`): an early layer of a 224-pixel model costs
            a small fraction of a deep one.
        decorrelate: Colour decorrelation: `True` (ImageNet's colour statistics), `False`, or
            a `3x3` matrix from `tb_cnnviz.actmax.color_correlation(images)` for models trained
            on other colours.
        seed: The seed; the images of a run are reproducible for a given seed.
        optional: For a model this callback cannot draw (not one image input), log nothing
            instead of raising `ValueError`, and skip non-2-D conv layers without a warning.
            `CNNViz` sets it: there the user asked for every kind that applies.
        budget: The callback's own time as a fraction of training time, in (0, 1]: layers
            take turns over epochs, with fewer steps (at least a quarter of `steps`) when time
            is short; a layer whose drawing at its fewest steps would take more than its part
            of the run's budget (`RUN_SHARE`) draws fewer filters, evenly spaced, at least
            `MIN_FILTERS` (chosen at its first drawing, then kept, so that a warm start
            continues the same images); and a layer whose one drawing still costs more than
            the whole run's budget is left out with a logged reason. `None` draws every
            layer's `max_filters` at every logged epoch.

    Attributes:
        active: Whether this callback draws anything for the model being trained (known after
            `on_train_begin`, or after the first batch for a model `fit()` builds).

    Example:
        >>> import numpy as np, keras, tempfile
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> cb = ActivationMaximization(tempfile.mkdtemp(), steps=4)
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    kind = "actmax"
    reads_outputs = True

    def __init__(
        self,
        log_dir="logs",
        *,
        layers=None,
        freq=1,
        max_filters=256,
        max_layers=None,
        steps=DEFAULT_STEPS,
        warm_start=True,
        value_range=(0.0, 1.0),
        size="receptive_field",
        decorrelate=True,
        seed=0,
        optional=False,
        budget=budget_lib.DEFAULT_BUDGET,
    ):
        super().__init__(log_dir, layers=layers, freq=freq, max_filters=max_filters, budget=budget)
        self.max_layers = checks.integer("max_layers", max_layers, minimum=1, none=True)
        self.steps = checks.integer("steps", steps, minimum=1)
        self.warm_start = bool(warm_start)
        self.value_range = checks.value_range("value_range", value_range)
        if size is None or (isinstance(size, str) and size == "receptive_field"):
            self.size = size
        else:
            self.size = checks.image_size("size", size)
        self.decorrelate = decorrelate
        param_lib.mixing_matrix(decorrelate)  # validates it now, not at the end of an epoch
        self.seed = checks.integer("seed", seed)
        self.optional = bool(optional)
        self.active = True
        self._renderers = {}
        self._previous = {}
        self._rendered_model = None  # the model `_renderers` and `_previous` belong to
        self._counts = {}  # path -> filters drawn, fixed at its first drawing (`RUN_SHARE`)
        self._planned = {}  # path -> filters the next drawing draws, until it is fixed

    def _validate(self, model):
        if model is not self._rendered_model:
            self._renderers, self._previous, self._counts = {}, {}, {}
            self._rendered_model = model
        flat = [(path, layer) for path, layer in self._selected if layer_lib.is_conv2d(layer)]
        self._weights_only = [w for w in self._weights_only if layer_lib.is_conv2d(w[1])]
        skipped = [path for path, layer in self._selected if not layer_lib.is_conv2d(layer)]
        if self.max_layers is not None and len(flat) > self.max_layers:
            picks = np.linspace(len(flat) - 1, 0, self.max_layers).round().astype(int)
            flat = [flat[i] for i in sorted(set(picks.tolist()))]
        try:
            size = self.size
            for path, _ in flat:  # in forward order
                if path not in self._renderers:  # a later fit() of the same model reuses it
                    self._renderers[path] = actmax.Renderer(
                        model,
                        path,
                        value_range=self.value_range,
                        size=size,
                        decorrelate=self.decorrelate,
                    )
                if size == "receptive_field" and self._renderers[path].receptive_field is None:
                    size = None  # it sees the whole input, and so do the layers after it
        except ValueError:
            if not self.optional:
                raise
            self._renderers, self._previous, self._rendered_model, flat = {}, {}, None, []
        if skipped and not self.optional:
            warnings.warn(
                "tb-cnnviz: activation maximization draws 2-D conv layers only; skipping "
                f"{skipped}.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._selected = flat
        self.active = bool(flat)

    @property
    def renderers(self) -> dict:
        """The compiled renderer of each drawn layer, by path (reused by every later `fit()`)."""
        return dict(self._renderers)

    def _drawings(self, step):
        self._planned = {path: self._filter_count(path) for path, _ in self._selected}
        drawings = super()._drawings(step)
        for d, (path, _) in zip(drawings, self._selected, strict=True):
            d.steps, d.min_steps = self.steps, self._min_steps()
            # Tracing is paid whole; a first drawing short of credit takes fewer steps.
            d.estimate_once = self._estimate_parts(path)[0]
        return drawings

    def _min_steps(self) -> int:
        """The fewest steps a drawing takes: `MIN_STEPS`, or a quarter of `steps` if more."""
        return max(1, min(MIN_STEPS, self.steps), self.steps // 4)

    def _filter_count(self, path) -> int:
        """How many filters of `path` a drawing renders: fixed once drawn; before, all of them
        (up to `max_filters`) unless that would take more than the layer's part of the run's
        budget at its fewest steps (`RUN_SHARE`)."""
        if path in self._counts:
            return self._counts[path]
        full = min(self._renderers[path].units or 1, self.max_filters)
        budget = self._time_budget
        if budget is None or budget.fraction is None or full <= MIN_FILTERS:
            return full
        once, steps, _ = self._estimate_parts(path, full)
        fewest = steps * self._min_steps() / self.steps
        part = RUN_SHARE * budget.run_seconds() / max(len(self._selected), 1)
        return filters_within(full, once, fewest, part)

    def _estimate(self, path, layer):
        once, steps, size = self._estimate_parts(path)
        return once + steps, size

    def _estimate_parts(self, path, filters=None):
        """`(tracing seconds, seconds of all the steps, bytes)` of one drawing of `path`, with
        `filters` filters (those planned for it by default)."""
        renderer = self._renderers[path]
        h, w = renderer.run_size
        full_h, full_w = renderer.model_size or (h, w)
        # Timed at the model's own input size (a canvas may be too small for its head), then
        # scaled by the canvas's share of the pixels.
        images = np.zeros((4, full_h, full_w, renderer.channels), np.float32)
        timing = self._model_timing(self.model, images)
        share = (h * w) / (full_h * full_w)
        if filters is None:
            filters = self._planned.get(path) or min(renderer.units or 1, self.max_filters)
        # The pass runs up to the layer only: deeper layers cost more (taken as linear in the
        # layer's place among the conv layers, a quarter at least for the full-size input).
        paths = [p for p, _ in layer_lib.conv_layers(self.model)]
        place = (paths.index(path) + 1) / len(paths) if path in paths else 1.0
        depth = max(0.25, place)
        # Transforms and the Fourier decode add about a third to each forward and backward pass;
        # tracing them and the optimization loop costs TRACE_SECONDS on its own. Tracing the
        # model's part up to the layer, with the gradient to the input, costs about twice its
        # share of a forward and backward trace (`TRACE_DEPTH_FACTOR`), without the quarter's
        # floor: a first layer traces in little more than TRACE_SECONDS.
        once = TRACE_SECONDS * timing.compiles + TRACE_DEPTH_FACTOR * place * timing.trace()
        steps = depth * 1.3 * self.steps * timing.backward(filters) * share
        return once, steps, filters * h * w * renderer.channels

    def _draw(self, path, layer, step, steps=None):
        steps = self.steps if steps is None else steps
        renderer = self._renderers[path]
        total = renderer.units
        count = self._counts.setdefault(path, self._planned.get(path, self.max_filters))
        ids = tiles.sample_filters(total, count)
        previous = self._previous.get(path) if self.warm_start else None
        images = renderer(ids, steps=steps, seed=self.seed, init=previous)
        self._previous[path] = images.state
        which = "each filter" if len(ids) == total else f"{len(ids)} of the {total} filters"
        why = (
            " (evenly spaced: what the time budget affords; a larger `budget` draws more)"
            if len(ids) < min(total, self.max_filters)
            else ""
        )
        what = (
            f"For {which} of `{path}` ({type(layer).__name__}){why}, an input that excites "
            f"it most; up to {self.steps} optimization steps per logged epoch"
            + (", each continuing the last." if self.warm_start else ".")
        )

        def write():  # in the background (tb_cnnviz.background)
            summary.actmax(
                path,
                images,
                step=step,
                activations=images.activations,
                filters=ids,
                total_filters=total,
                description=what,
            )

        return write
