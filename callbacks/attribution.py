"""`Attribution`: which pixels of each probe image decide the model's class, each logged epoch."""

from __future__ import annotations

import warnings

import numpy as np

from tb_cnnviz import attribution as attribution_lib
from tb_cnnviz import budget as budget_lib
from tb_cnnviz import layers as layer_lib
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

    The output is read as `tb_cnnviz.heads` reads it: a softmax's most probable class and its
    probability; a binary sigmoid unit's class 1 (probability above 0.5) or 0, with the
    probability of that class; a multi-label output's most probable label and that label's own
    probability (with multi-hot `labels`, a probe is correct when that label is one of its
    true labels). A regression output is explained through its value (one unit, or the unit
    `target` names): each picture is captioned with that value and, with `labels` (the true
    values), the true one. A callable `target`, or a regression with several values and no
    `target`, has nothing to caption a picture with: the callback then warns once when
    training begins and draws nothing (`tb_cnnviz.attribution` draws their maps).

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`; pictures go to its `train` run.
        probe_images: Images `[n, h, w, channels]` (or 1-D `[n, length, channels]`, 3-D
            `[n, d, h, w, channels]`) in the value range the model trains on; for models with
            several inputs, a list with one array per input, and every image input gets its own
            heatmaps under the tag `<method>/<input name>/attribution`. Keep `n` small (4-16).
        labels: The probe images' true classes, as class ids `[n]` or one-hot `[n, classes]`
            (0 or 1 for a binary sigmoid output; multi-hot `[n, labels]` or one label id per
            probe for a multi-label output; the true values `[n]` or `[n, units]` for a
            regression); one number gives every probe that class (or value).
        target: What the first heatmap explains: `None` for each probe's predicted class of
            the model's first output, an output name for another output of a multi-output
            model, a class index or one per probe (of the first output), or an `(output name,
            index)` pair. Unknown outputs and classes out of range raise a `ValueError` before
            the first epoch, naming the output and what it supports.
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
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> cb = Attribution(tempfile.mkdtemp(), probe_images=np.random.rand(2, 8, 8, 3),
        ...                  labels=[0, 1])
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros(4), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    kind = "attribution"

    def __init__(
        self,
        log_dir="logs",
        probe_images=None,
        *,
        labels=None,
        target=None,
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
        self.labels = None if labels is None else _labels(labels, count)
        self.target = target
        methods = (methods,) if isinstance(methods, str) else tuple(methods)
        if not methods or any(m not in attribution_lib.METHODS for m in methods):
            raise ValueError(
                f"methods must be one or more of {list(attribution_lib.METHODS)}. "
                f"Received: methods={methods!r}"
            )
        self.methods = methods
        self.layer = layer if layer is None or isinstance(layer, str) else list(layer)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        # The layer Grad-CAM reads per input; None until known (see `_validate`).
        self._target_layers: list[str | None] | None = None
        self._tag_names: list[str] = []
        self._rows: tuple[np.ndarray, np.ndarray] = (np.zeros(0, int), np.zeros(0, int))
        self._predicted = self._confidence = np.zeros(0)
        self._checked = None  # the checked target, set in _validate
        self._true: np.ndarray | None = None  # one true class per probe, for the head
        self._values: np.ndarray | None = None  # a regression's explained value per probe
        self._true_values: np.ndarray | None = None  # and its true value, from labels
        self._not_drawn: str | None = None  # why nothing is drawn (a head without classes)

    @property
    def _arrays(self) -> list[np.ndarray]:
        return self.probe_images if isinstance(self.probe_images, list) else [self.probe_images]

    def _validate(self, model):
        arrays = attribution_lib.check_images(model, self.probe_images, argument="probe_images")
        image_inputs = [i for i, a in enumerate(arrays) if a.ndim in (3, 4, 5)]
        # A named layer is checked now. Without one, in a model whose convs live inside
        # custom layers or nested models, the layer Grad-CAM reads is found by a forward and
        # backward pass of the model: that waits for the first Grad-CAM drawing, so a run
        # that cannot afford one does not pay for it, and the plan counts it in that drawing.
        # Where every conv layer is a node of the model's own graph, the graph and the cached
        # forward trace tell the layer at no cost (`layers.graph_inputs`): found now.
        self._target_layers = None
        reads = layer_lib.graph_inputs(model)
        cheap = reads is not None and all(id(c) in reads for _, c in layer_lib.conv_layers(model))
        if (self.layer is not None or cheap) and any(m != "smoothgrad" for m in self.methods):
            self._target_layers = attribution_lib.gradcam_layers(
                model, self.probe_images, self.layer
            )
        self._checked = None
        if self.target is None:  # the first output, which may have nothing to explain
            head = attribution_lib.head(model, arrays if len(arrays) > 1 else arrays[0])
            if head.classes is not None or head.units == 1:
                self._checked = attribution_lib.check_target(model, self.probe_images)
        else:
            self._checked = attribution_lib.check_target(model, self.probe_images, self.target)
            head = self._checked.head
        self._not_drawn = None
        self._true = self._true_values = None
        if self._checked is None or head is None:
            what = (
                "a callable target"
                if head is None
                else f"the output {head.describe()} without a target naming one of its values"
            )
            self._not_drawn = (
                f"{type(self).__name__} draws attribution of classes and of one regression "
                f"value; {what} has nothing to caption its maps with, so nothing is drawn "
                "(tb_cnnviz.attribution draws its maps)"
            )
            warnings.warn(f"tb-cnnviz: {self._not_drawn}.", RuntimeWarning, stacklevel=2)
        elif head.classes is None and self.labels is not None:
            self._true_values = _true_values(head, self.labels, self._checked.ids)
        elif self.labels is not None:
            self._true = _true_classes(head, self.labels)
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
        if self._not_drawn:
            return []
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
                    # One picture of what decides the output, worth following from epoch to
                    # epoch; SmoothGrad's many passes take their turn like the rest.
                    priority=method != "smoothgrad",
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
        # Before the first Grad-CAM, finding its layer costs an eager forward and backward
        # pass of two images.
        find_layer = 3 * timing.forward(2) if self._target_layers is None else 0.0
        paths = [p for p in self._target_layers or [] if p is not None]
        if (
            method != "smoothgrad"
            and len(paths) == 1
            and attribution_lib.runs_through_tail(self.model, paths[0])
        ):
            # The feature maps' compiled pass, for the predictions and for the maps' rows, and
            # the gradient of the model's small tail (traced once: TRACE_SECONDS).
            return (
                TRACE_SECONDS * timing.compiles
                + timing.compiled_forward(self._count())
                + timing.compiled_forward(rows)
            )
        return (
            TRACE_SECONDS * timing.compiles
            + timing.trace()
            + timing.backward(rows)
            + timing.compiled_forward(self._count())
            + (find_layer if method != "smoothgrad" else 0.0)
        )

    def _prepare(self, step):
        head = self._checked.head
        _, read = attribution_lib.predictions(self.model, self.probe_images, head.output)
        if head.classes is None:  # a regression: the explained value of each probe
            units = np.maximum(self._checked.ids, 0)
            self._values = read["values"][np.arange(len(units)), units]
            self._rows = (np.arange(len(units)), units)
            return
        self._predicted, self._confidence = read["predicted"], read["confidence"]
        if head.kind == "multilabel" and self._true is not None and self.labels.ndim == 2:
            # The predicted label is right when it is one of the probe's true labels.
            hit = self.labels[np.arange(len(self._predicted)), self._predicted] == 1
            self._true = np.where(hit, self._predicted, self.labels.argmax(axis=1))
        # One map per (probe, class): the true class adds a row only where it differs from the
        # first map's, so a well-trained model costs one row per probe.
        ids = self._checked.ids
        classes = np.where(ids < 0, self._predicted, ids)
        rows = np.arange(len(classes))
        if self._true is not None:
            wrong = np.flatnonzero(self._true != classes)
            rows = np.concatenate([rows, wrong])
            classes = np.concatenate([classes, self._true[wrong]])
        self._rows = (rows, classes)

    def _draw(self, method, step):
        name = method
        rows, classes = self._rows
        batch = [a[rows] for a in self._arrays]
        options = {} if method == "smoothgrad" else {"layer": self.layer}
        multi = isinstance(self.probe_images, list)
        target = (self._checked.head.name, classes)
        maps = attribution_lib.METHODS[method](
            self.model, batch if multi else batch[0], target=target, **options
        )
        maps = maps if multi else [maps]
        if method != "smoothgrad" and self._target_layers is None:
            # Grad-CAM found its layers just now (cached per model): name them in the tab.
            self._target_layers = attribution_lib.gradcam_layers(
                self.model, self.probe_images, self.layer
            )
        n = self._count()
        arrays, tag_names = list(self._arrays), list(self._tag_names)
        layers = [
            self._target_layers[i] if method != "smoothgrad" and self._target_layers else None
            for i in range(len(maps))
        ]
        if self._checked.head.classes is None:
            values, true_values = self._values, self._true_values

            def write_values():
                for i, heat in enumerate(maps):
                    if heat is not None:
                        summary.attribution(
                            name + tag_names[i],
                            arrays[i],
                            heat,
                            step=step,
                            values=values,
                            true_values=true_values,
                            method=method,
                            target_layer=layers[i],
                            description=_description(method, layers[i], n, False, value=True),
                        )

            return write_values
        true_rows = None
        if self._true is not None:
            true_rows = np.arange(n)
            true_rows[rows[n:]] = np.arange(n, len(rows))
        predicted, confidence, true = self._predicted, self._confidence, self._true

        def write_classes():
            for i, heat in enumerate(maps):
                if heat is None:
                    continue
                summary.attribution(
                    name + tag_names[i],
                    arrays[i],
                    heat[:n],
                    step=step,
                    predicted=predicted,
                    confidence=confidence,
                    true_classes=true,
                    true_heatmaps=None if true_rows is None else heat[true_rows],
                    class_names=self.class_names,
                    method=method,
                    target_layer=layers[i],
                    description=_description(method, layers[i], n, true is not None),
                )

        return write_classes


def _description(
    method: str, target: str | None, n: int, with_true: bool, *, value: bool = False
) -> str:
    read = f" of `{target}`" if target else ""
    classes = "the predicted and the true class" if with_true else "the predicted class"
    classes = "the explained value" if value else classes
    return f"`{method}`{read} for {n} probe images: heatmaps of {classes}."


def _labels(labels, count: int) -> np.ndarray:
    """Labels as an array: class ids `[n]`, rows `[n, k]` (one-hot, multi-hot), or the true
    values of a regression; which they must be is checked against the head (`_validate`)."""
    values = np.asarray(labels)
    if values.ndim == 0:  # one class for every probe
        values = np.full(count, values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim not in (1, 2) or not np.issubdtype(values.dtype, np.number):
        raise ValueError(
            "labels must be integer class ids [n], one-hot or multi-hot rows [n, classes], or "
            f"a regression's true values. Received: labels={labels!r}"
        )
    if len(values) != count:
        raise ValueError(
            f"labels must hold one class per probe image ({count} probe images). "
            f"Received: labels with length {len(values)}"
        )
    return values


def _true_values(head, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The true value of each probe's explained unit, from `labels` `[n]` or `[n, units]`."""
    values = labels.astype(np.float64)
    if values.ndim == 1 and head.units == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] != head.units or not np.isfinite(values).all():
        raise ValueError(
            f"labels of the output {head.describe()} must be its true values, [n] or "
            f"[n, {head.units}], finite. Received: labels with shape {labels.shape}"
        )
    return values[np.arange(len(values)), np.maximum(ids, 0)]


def _true_classes(head, labels: np.ndarray) -> np.ndarray:
    """One true class per probe for `head`, or a ValueError naming the output.

    Rows of a softmax head are one-hot; rows of a multi-label head are multi-hot, and a probe's
    true class is the first of its true labels (`Attribution._prepare` prefers the predicted
    label when it is a true one).
    """
    classes = head.classes
    shown = labels.tolist()
    if np.any(np.mod(labels, 1)):
        raise ValueError(
            f"labels of the output {head.describe()} must be integer class ids [n], or one-hot "
            f"or multi-hot rows [n, classes]. Received: labels={shown!r}"
        )
    labels = labels.astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] != classes:
        raise ValueError(
            f"labels rows must have one entry per class of the output {head.describe()}. "
            f"Received: labels with shape {labels.shape}"
        )
    if head.kind == "multilabel" and labels.ndim == 2:
        if ((labels != 0) & (labels != 1)).any() or not labels.any(axis=1).all():
            raise ValueError(
                f"labels of the multi-label output {head.describe()} must be multi-hot rows "
                f"of 0 and 1 with at least one true label per probe (or one label id per "
                f"probe). Received: labels={shown!r}"
            )
        return labels.argmax(axis=1)
    ids = labels.argmax(axis=1) if labels.ndim == 2 else labels
    if ((ids < 0) | (ids >= classes)).any():
        raise ValueError(
            f"labels must be classes of the output {head.describe()}, in 0..{classes - 1}. "
            f"Received: labels={shown!r}"
        )
    return ids
