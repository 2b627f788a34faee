"""`FeatureMaps`: what each conv filter makes of a fixed set of probe images, each logged epoch."""

from __future__ import annotations

import time

import numpy as np

from tb_cnnviz import backend, summary
from tb_cnnviz import budget as budget_lib
from tb_cnnviz import layers as layer_lib

from .base import VizCallback, check_probe_images

__all__ = ["FeatureMaps"]

#: Seconds to copy, normalize and PNG-encode one layer's maps, besides their pixels, for
#: estimates before a first drawing. Measured on these 2 cores, MobileNetV2's layers at 224
#: cost 3.5 ms plus 20 ns a pixel (8 probe images: 5 ms for a 7x7 layer, 17 ms for a 14x14 one
#: of 384 filters), and random maps 25-60 ns a pixel (77 ms for 8 x 112 x 112 x 32): the two
#: constants below (4 ms, 40 ns) are cautious for the larger layers, and the budget
#: calibrates them by the kind's first drawings.
#: The forward pass all layers of a step share is counted apart (`Drawing.pass_estimate`).
ENCODE_SECONDS_FIXED = 0.004
#: Seconds to normalize and PNG-encode one pixel of a layer's maps (see `ENCODE_SECONDS_FIXED`).
ENCODE_SECONDS_PER_PIXEL = 4e-8


class FeatureMaps(VizCallback):
    """Logs the feature maps of fixed probe images for conv layers, with per-filter statistics.

    One compiled forward pass of the probe images per logged epoch (`tb_cnnviz.layers.extractor`,
    traced once per model) returns every selected layer's output, nested models and the convs
    inside custom layers included (a conv that runs several times
    per pass, a shared block, is drawn by `FilterWeights` only, and the tab says why). Each step
    stores every filter's mean, max, fraction of zeros and whether it is dead (zero on every
    probe image), and the layer's dead-filter fraction as a scalar in TensorBoard's Scalars tab.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`; pictures go to its `train` run.
        probe_images: Images `[n, *input_shape]` in the value range the model trains on (for
            models with several inputs, a list with one array per input). Keep `n` small (4-16).
        layers: Layer names or `outer/inner` paths; `None` means every conv layer.
        freq: Log every `freq` epochs; 0 turns it off.
        max_filters: Draw at most this many filters per layer (evenly sampled beyond).
        budget: The callback's own time as a fraction of training time, in (0, 1]: layers
            take turns over epochs to stay within it; `None` draws every layer at every logged
            epoch.

    Example:
        >>> import numpy as np, keras, tempfile
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> cb = FeatureMaps(tempfile.mkdtemp(), probe_images=np.random.rand(2, 8, 8, 3))
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    kind = "feature_maps"
    reads_outputs = True

    def __init__(
        self,
        log_dir="logs",
        probe_images=None,
        *,
        layers=None,
        freq=1,
        max_filters=256,
        budget=budget_lib.DEFAULT_BUDGET,
    ):
        super().__init__(log_dir, layers=layers, freq=freq, max_filters=max_filters, budget=budget)
        if probe_images is None:
            raise ValueError("FeatureMaps needs probe_images. Received: probe_images=None")
        self.probe_images = check_probe_images(probe_images)
        self._outputs = {}
        self._passes: dict[int, int] = {}  # extractor id -> calls, to time the traced ones

    def _example(self):
        return self.probe_images

    def _validate(self, model):
        try:
            budget = self._time_budget
            if budget.fraction is not None and not budget.timed(model):
                # Timing the model for estimates runs it on the probe images: that is the check
                # too (one eager pass fewer, about a third of this kind's setup on MobileNetV2).
                # Where a compiled pass of every probe is timed next, it checks the batch and
                # gives the cost per image: the eager timing needs one image only.
                compiled_next = bool(self._selected) and backend.name() != "torch"
                self._model_timing(model, self.probe_images, per_image=not compiled_next)
            else:
                compiled_next = False
                model(self.probe_images, training=False)
            self._trace_and_time()
            if compiled_next and budget.timing.compiled_per_image is None:
                budget.timing = None  # not timed after all: time it in full
                self._model_timing(model, self.probe_images)
        except Exception as e:
            shapes = (
                [p.shape for p in self.probe_images]
                if isinstance(self.probe_images, list)
                else self.probe_images.shape
            )
            raise ValueError(
                f"probe_images do not fit the model {model.name!r}: {type(e).__name__}: {e}. "
                f"Received: probe_images with shape {shapes}"
            ) from e

    def _prepare(self, step):
        # One compiled pass for every selected layer, traced once per model and layer set.
        # The maps stay where the backend put them until a layer is drawn (`_draw` copies its
        # own): a step that draws 3 of MobileNetV2's 52 layers does not copy the other 49.
        extract = self._extractor()
        start = time.perf_counter()
        outs = backend.ready(extract(self.probe_images, reuse=True))  # JAX: its time is its own
        seconds = time.perf_counter() - start
        budget = self._time_budget
        # A pass another kind ran at this step (`layers.reusing_passes`) cost nothing here.
        if budget.timed(self.model) and not extract.reused:
            if self._passes.get(id(extract)):  # traced before: a compiled pass's speed
                budget.timing.observe_compiled(self._count(), seconds)
            if self._passes.get(id(extract)) or not budget.timing.compiles:
                # The step's layers share it: the budget counts it once per step, not as the
                # cost of whichever layer came first (`Drawing.pass_estimate`). (A first
                # traced call is the setup's, `_trace_and_time`.)
                budget.record_pass(self.kind, seconds)
        self._passes[id(extract)] = self._passes.get(id(extract), 0) + 1
        chosen = [layer for _, layer in self._selected]
        outs = outs[: len(chosen)]  # the rest are the tail's extras (`_extractor`), not drawn
        self._outputs = {id(layer): out for layer, out in zip(chosen, outs, strict=True)}

    def _extractor(self):
        # Grad-CAM explains the model's last conv through this pass and the small model after
        # that conv (`tb_cnnviz.layers.tail`). Where that tail also reads tensors from before
        # the conv (a ResNet's last residual sum reads its block's input), the pass captures
        # them too (`layers.probe_extractor`), at the cost of a few more outputs: Grad-CAM then
        # differentiates the tail alone, not the whole model (on ResNet50 at 224, 2.6 s of
        # tracing and 1.6 s a drawing).
        return layer_lib.probe_extractor(self.model, [layer for _, layer in self._selected])

    def _trace_and_time(self) -> None:
        """Traces the extractor and times one compiled pass, before the first epoch.

        The trace is the costliest part of the kind's first drawing (0.9 s of 1.8 s on
        MobileNetV2 at 224) and no layer's estimate can carry it: as setup, the plan counts it
        before choosing. The timed pass gives every estimate (Grad-CAM, activation
        maximization) the model's compiled speed from the first epoch, not the eager
        passes' 2-10x slower one (`ModelTiming.observe_compiled`).
        """
        budget = self._time_budget
        if budget.fraction is None or not budget.timed(self.model) or not self._selected:
            return
        if not budget.timing.compiles:  # PyTorch: nothing to trace, and eager is its speed
            return
        extract = self._extractor()
        if self._passes.get(id(extract)):
            return
        start = time.perf_counter()
        backend.to_numpy(extract(self.probe_images)[-1])  # traces
        first = time.perf_counter() - start
        start = time.perf_counter()
        # One output read back waits for the whole pass without copying every map.
        backend.to_numpy(extract(self.probe_images)[-1])
        seconds = time.perf_counter() - start
        one = None
        if backend.name() == "tensorflow" and self._count() > 1:
            # The pass is traced for any batch here (elsewhere one image would trace again):
            # one image's pass splits the call's fixed part from the part per image, which
            # activation maximization's larger batches scale by.
            first_image = (
                [p[:1] for p in self.probe_images]
                if isinstance(self.probe_images, list)
                else self.probe_images[:1]
            )
            backend.to_numpy(extract(first_image)[-1])  # a new batch size's first call is slow
            start = time.perf_counter()
            backend.to_numpy(extract(first_image)[-1])
            one = time.perf_counter() - start
        budget.timing.observe_compiled(self._count(), seconds, one=one)
        budget.timing.observe_trace(first - seconds)
        self._passes[id(extract)] = 1

    def _drawings(self, step):
        drawings = super()._drawings(step)
        budget = self._time_budget
        timing = budget.timing if budget.timed(self.model) else None
        for d in drawings:  # every layer's maps of a step come from one pass (`_prepare`)
            d.shares_pass = True
            d.pass_estimate = timing.compiled_forward(self._count()) if timing else 0.0
        return drawings

    def _estimate(self, path, layer):
        # The model's timing gives the pass's estimate (`_drawings`); timed once per model.
        self._model_timing(self.model, self.probe_images)
        pixels = _map_pixels(self.model, layer, self._count(), self.max_filters)
        # One forward pass serves every layer drawn at a step: the budget counts it once per
        # step (`Drawing.pass_estimate`); a layer's own part is copying and encoding its maps.
        return ENCODE_SECONDS_FIXED + pixels * ENCODE_SECONDS_PER_PIXEL, pixels

    def _count(self) -> int:
        return len(
            self.probe_images[0] if isinstance(self.probe_images, list) else self.probe_images
        )

    def _draw(self, path, layer, step):
        out = self._outputs.pop(id(layer))
        acts = np.asarray(backend.to_numpy(out), dtype=np.float32)
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            acts = np.moveaxis(acts, 1, -1)
        max_filters = self.max_filters

        def write():  # in the background (tb_cnnviz.background)
            summary.feature_maps(
                path,
                acts,
                step=step,
                max_filters=max_filters,
                description=f"Feature maps of `{path}` for {acts.shape[0]} probe images.",
            )

        return write


def _map_pixels(model, layer, images: int, max_filters: int) -> int:
    """Pixels one drawing of `layer`'s feature maps stores, from its output shape."""
    shape = layer_lib.output_shape(model, layer)
    if shape is None:  # a model that cannot tell
        return 0
    shape = (None, *shape)
    spatial = [d or 1 for d in shape[1:-1]] if len(shape) > 2 else [1]
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        spatial = [d or 1 for d in shape[2:]]
    filters = min(int(shape[-1] if shape[-1] else 1), max_filters)
    side = [min(d, summary.DEFAULT_MAX_TILE_SIDE) for d in spatial[-2:]]
    return int(min(filters * images * np.prod(side), summary.DEFAULT_MAX_LAYER_PIXELS))
