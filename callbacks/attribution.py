"""`Attribution`: which pixels of each probe image decide the model's class, each logged epoch."""

from __future__ import annotations

import numpy as np

from tb_cnnviz import attribution as attribution_lib
from tb_cnnviz import budget as budget_lib
from tb_cnnviz import metadata, summary

from .base import VizCallback, check_probe_images

__all__ = ["Attribution"]

#: Seconds to trace a compiled attribution function beyond the model itself (measured on these
#: 2 cores: about 0.1 s on small models).
TRACE_SECONDS = 0.1


class Attribution(VizCallback):
    """Logs Grad-CAM, Grad-CAM++ or SmoothGrad heatmaps of fixed probe images.

    Each logged epoch stores, per probe image, the image itself, the heatmap of the predicted
    class and, when `labels` are given, the heatmap of the true class, with the predicted class,
    the model's confidence in it and whether it is correct. The dashboard blends the heatmaps
    over the images with an opacity slider. Each method runs once per logged epoch, as one
    compiled batch; a true-class map costs extra only for probes the model gets wrong.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`; pictures go to its `train` run.
        probe_images: Images `[n, h, w, channels]` (or 1-D `[n, length, channels]`, 3-D
            `[n, d, h, w, channels]`) in the value range the model trains on; for models with
            several inputs, a list with one array per input, and every image input gets its own
            heatmaps under the tag `<method>/<input name>/attribution`. Keep `n` small (4-16).
        labels: The probe images' true classes, as class ids `[n]` or one-hot `[n, classes]`.
        methods: Any of `"gradcam"`, `"gradcam_plus_plus"` and `"smoothgrad"`.
        layer: The conv layer Grad-CAM reads (name or `outer/inner` path); `None` picks the last
            conv layer that reads the images.
        class_names: Optional names of the classes, shown by the dashboard.
        freq: Log every `freq` epochs; 0 turns it off.
        budget: The callback's own time as a fraction of training time, in (0, 1]: methods
            take turns over epochs to stay within it; `None` draws every method at every
            logged epoch.

    Example:
        >>> import numpy as np, keras, tempfile
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> cb = Attribution(tempfile.mkdtemp(), probe_images=np.random.rand(2, 8, 8, 3),
        ...                  labels=[0, 1])
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    kind = "attribution"

    def __init__(
        self,
        log_dir="logs",
        probe_images=None,
        *,
        labels=None,
        methods=("gradcam",),
        layer=None,
        class_names=None,
        freq=1,
        budget=budget_lib.DEFAULT_BUDGET,
    ):
        super().__init__(log_dir, freq=freq, budget=budget)
        if probe_images is None:
            raise ValueError("Attribution needs probe_images. Received: probe_images=None")
        self.probe_images = check_probe_images(probe_images)
        count = len(self._arrays[0])
        self.labels = None if labels is None else _class_ids(labels, count)
        methods = (methods,) if isinstance(methods, str) else tuple(methods)
        if not methods or any(m not in attribution_lib.METHODS for m in methods):
            raise ValueError(
                f"methods must be one or more of {list(attribution_lib.METHODS)}. "
                f"Received: methods={methods!r}"
            )
        self.methods = methods
        self.layer = layer if layer is None or isinstance(layer, str) else list(layer)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self._target_layers: list[str | None] = []
        self._tag_names: list[str] = []
        self._rows: tuple[np.ndarray, np.ndarray] = (np.zeros(0, int), np.zeros(0, int))
        self._predicted = self._confidence = np.zeros(0)

    @property
    def _arrays(self) -> list[np.ndarray]:
        return self.probe_images if isinstance(self.probe_images, list) else [self.probe_images]

    def _validate(self, model):
        arrays = attribution_lib.check_images(model, self.probe_images, argument="probe_images")
        image_inputs = [i for i, a in enumerate(arrays) if a.ndim in (3, 4, 5)]
        if any(m != "smoothgrad" for m in self.methods):
            self._target_layers = attribution_lib.gradcam_layers(
                model, self.probe_images, self.layer
            )
        if self.labels is not None:
            total = attribution_lib.num_classes(model, self.probe_images)
            if ((self.labels < 0) | (self.labels >= total)).any():
                raise ValueError(
                    f"labels must be classes of the model's output, in 0..{total - 1}. "
                    f"Received: labels={self.labels.tolist()!r}"
                )
        names = [getattr(t, "name", None) for t in (getattr(model, "inputs", None) or [])]
        self._tag_names = [
            "" if len(image_inputs) == 1 else f"/{names[i] if i < len(names) else f'input_{i}'}"
            for i in range(len(arrays))
        ]
        if self._time_budget.fraction is not None:
            self._model_timing(model, self.probe_images)  # for estimates, before any epoch

    def _drawings(self, step):
        # One drawing per method: every image input's heatmaps of one method come from one
        # compiled batch.
        out = []
        for order, method in enumerate(self.methods):
            tags = [
                metadata.tag_for(method + name, self.kind)
                for i, name in enumerate(self._tag_names)
                if self._arrays[i].ndim in (3, 4, 5)
            ]
            out.append(
                budget_lib.Drawing(
                    tag=tags[0],
                    also=tuple(tags[1:]),
                    kind=self.kind,
                    draw=self._step_drawer(step, method),
                    source=self,
                    estimate=self._estimate_method(method),
                    estimate_bytes=len(tags) * self._count() * 3 * 64 * 64,
                    order=order,
                )
            )
        return out

    def _count(self) -> int:
        return len(self._arrays[0])

    def _estimate_method(self, method: str) -> float:
        timing = self._model_timing(self.model, self.probe_images)
        rows = 2 * self._count() if self.labels is not None else self._count()
        if method == "smoothgrad":
            rows *= attribution_lib.DEFAULT_SMOOTHGRAD_SAMPLES
        return (
            TRACE_SECONDS + timing.trace() + timing.backward(rows) + timing.forward(self._count())
        )

    def _prepare(self, step):
        predicted, confidence = attribution_lib.predicted_classes(self.model, self.probe_images)
        self._predicted, self._confidence = predicted, confidence
        # One map per (probe, class): the true class adds a row only where the prediction is
        # wrong, so a well-trained model costs one row per probe.
        rows, classes = np.arange(len(predicted)), predicted
        if self.labels is not None:
            wrong = np.flatnonzero(self.labels != predicted)
            rows = np.concatenate([rows, wrong])
            classes = np.concatenate([classes, self.labels[wrong]])
        self._rows = (rows, classes)

    def _draw(self, method, step):
        name = method
        rows, classes = self._rows
        batch = [a[rows] for a in self._arrays]
        options = {} if method == "smoothgrad" else {"layer": self.layer}
        multi = isinstance(self.probe_images, list)
        maps = attribution_lib.METHODS[method](
            self.model, batch if multi else batch[0], class_index=classes, **options
        )
        maps = maps if multi else [maps]
        n = len(self._predicted)
        true_rows = None
        if self.labels is not None:
            true_rows = np.arange(n)
            true_rows[rows[n:]] = np.arange(n, len(rows))
        for i, heat in enumerate(maps):
            if heat is None:
                continue
            target = self._target_layers[i] if method != "smoothgrad" else None
            summary.attribution(
                name + self._tag_names[i],
                self._arrays[i],
                heat[:n],
                step=step,
                predicted=self._predicted,
                confidence=self._confidence,
                true_classes=self.labels,
                true_heatmaps=None if true_rows is None else heat[true_rows],
                class_names=self.class_names,
                method=method,
                target_layer=target,
                description=_description(method, target, n, self.labels is not None),
            )


def _description(method: str, target: str | None, n: int, with_true: bool) -> str:
    read = f" of `{target}`" if target else ""
    classes = "the predicted and the true class" if with_true else "the predicted class"
    return f"`{method}`{read} for {n} probe images: heatmaps of {classes}."


def _class_ids(labels, count: int) -> np.ndarray:
    """Labels as int64 class ids; one-hot rows are reduced with argmax."""
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape[1] > 1:
        values = values.argmax(-1)
    values = values.reshape(-1)
    if not np.issubdtype(values.dtype, np.number) or np.any(np.mod(values, 1)):
        raise ValueError(
            f"labels must be integer class ids or one-hot rows. Received: labels={labels!r}"
        )
    if len(values) != count:
        raise ValueError(
            f"labels must hold one class per probe image ({count} probe images). "
            f"Received: labels with length {len(values)}"
        )
    return values.astype(np.int64)
