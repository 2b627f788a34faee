"""Compare runs over time: layer similarity (CKA), filter alignment and dataset examples.

Everything here reads a logdir the way the CNN Viz tab does (`tb_cnnviz.reader`, TensorBoard's
own reader) and computes with NumPy and SciPy (`tb_cnnviz.similarity`): no TensorFlow, so it
works in the environment TensorBoard runs in, in notebooks and on the command line. The data
come from runs logged with reference images (`CNNViz(..., reference_images=x_val[:256])`, the
`References` callback, or `tb_cnnviz.summary.responses`).

A run is named as TensorBoard names it (`"lr_1e-3/train"`; `"lr_1e-3"` also finds it), and a
point of comparison is a `(run, step)` pair (`step=None`: the latest). `logdir` is a path or a
`tb_cnnviz.reader.Logdir`; pass a `Logdir` made once to compare many pairs without reading the
event files again. A run, layer or step that is not there raises the reader's `NotFoundError`,
listing what is; two runs whose responses come from different reference images raise
`ReferenceMismatchError` rather than give a meaningless number.

Example:
    >>> import tempfile, numpy as np
    >>> from tb_cnnviz import summary
    >>> path, refs = tempfile.mkdtemp(), np.random.rand(16, 8, 8, 3)
    >>> acts = np.random.default_rng(0).random((16, 6, 6, 4))
    >>> for run, order in [("a", [0, 1, 2, 3]), ("b", [2, 0, 3, 1])]:
    ...     with summary.create_file_writer(f"{path}/{run}").as_default(step=0) as writer:
    ...         _ = summary.responses("conv1", acts[..., order], reference_images=refs)
    ...     writer.close()
    >>> logs = Logdir(path)
    >>> round(cka(logs, "conv1", ("a", 0), ("b", 0)), 6)
    1.0
    >>> align(logs, "conv1", ("a", 0), ("b", 0))
    [1, 3, 0, 2]
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tb_cnnviz import metadata, similarity, tiles
from tb_cnnviz.reader import Logdir, NotFoundError, Record

__all__ = [
    "Alignment",
    "Logdir",
    "NotFoundError",
    "ReferenceMismatchError",
    "SIMILARITY_MODES",
    "Similarity",
    "align",
    "alignment",
    "cka",
    "examples",
    "heatmap",
    "layers",
    "reference_images",
]

#: What `heatmap` compares: a layer over time, runs against runs, or layers against layers.
SIMILARITY_MODES = ("time", "runs", "layers")


class ReferenceMismatchError(ValueError):
    """Two data were computed from different reference images, so they cannot be compared."""


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Run B's filters matched one-to-one to run A's, by their responses' correlation.

    Attributes:
        matches: `matches[i]` is the filter of B matched to filter `i` of A (-1 when B has
            fewer filters and `i` is left unmatched).
        correlations: The correlation of each match over the reference images (NaN when
            unmatched), for captions under the tiles.
    """

    matches: list[int]
    correlations: list[float]


@dataclasses.dataclass(frozen=True)
class Similarity:
    """A CKA heatmap: a layer over time, runs against runs (every layer), or layers.

    Attributes:
        mode: `"time"`, `"runs"` or `"layers"`.
        matrix: CKA, float64: `[steps, steps]` (time), `[layers, runs, runs]` (runs) or
            `[layers, layers]` (layers). NaN where there is no number: between data from
            different reference images, or for a layer constant over them.
        labels: What the rows and columns are: steps (time), runs (runs) or layers (layers).
        runs: The runs compared (one for time and layers).
        layers: The layers: one for time, one per matrix for runs, the labels for layers.
        step: The step compared (runs, layers); None for time.
        warning: Why some cells are NaN (different reference images), or None.
    """

    mode: str
    matrix: np.ndarray
    labels: list
    runs: list[str]
    layers: list[str]
    step: int | None
    warning: str | None = None


def heatmap(
    logdir: str | os.PathLike | Logdir,
    mode: str = "time",
    *,
    layer: str | None = None,
    run: str | None = None,
    runs: list[str] | None = None,
    step: int | None = None,
) -> Similarity:
    """A linear CKA heatmap, as the tab's Similarity view (and `tb-cnnviz export`) draws it.

    * `mode="time"`: `layer` of `run` at each logged step against every other step (when did
      the layer settle?);
    * `mode="runs"`: every pair of `runs` at `step`, for each layer they all have (or only
      `layer`): did they learn the same representation?
    * `mode="layers"`: the layers of `run` against each other at `step`.

    Cells between data from different reference images are NaN and `warning` says why.

    Args:
        logdir: A log directory, or a `Logdir` already loaded.
        mode: One of `SIMILARITY_MODES`.
        layer: The layer (time: required; runs: only this layer).
        run: The run (time, layers).
        runs: The runs (runs mode), at least one.
        step: The step (runs, layers); None is the latest they share.

    Returns:
        A `Similarity`.

    Raises:
        NotFoundError: If a run, layer or step is not there; the message lists what is.
        ValueError: If `mode` is unknown or a parameter it needs is missing.

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path, acts = tempfile.mkdtemp(), np.random.default_rng(0).random((16, 6, 6, 4))
        >>> with summary.create_file_writer(path + "/run").as_default() as w:
        ...     for step in range(3):
        ...         _ = summary.responses("c", acts + step, step=step, reference_images="0" * 16)
        >>> w.close()
        >>> heat = heatmap(path, "time", run="run", layer="c")
        >>> heat.labels, heat.matrix.round(6).tolist()[0]
        ([0, 1, 2], [1.0, 1.0, 1.0])
    """
    logs = _open(logdir)
    if mode not in SIMILARITY_MODES:
        raise ValueError(f"mode must be one of {SIMILARITY_MODES}. Received: mode={mode!r}")
    if mode in ("time", "layers") and run is None:
        raise ValueError(f"mode={mode!r} compares within one run: give run=. Received: run=None")
    kind = metadata.RESPONSES_KIND
    if mode == "time":
        if layer is None:
            raise ValueError("mode='time' follows one layer: give layer=. Received: layer=None")
        steps = logs.steps(run, layer, kind)
        records = [logs.read_record(run, layer, kind, s) for s in steps]
        matrix, warning = _heatmap(records, [f"step {s}" for s in steps])
        return Similarity(mode, matrix, steps, [logs.resolve_run(run)], [layer], None, warning)
    if mode == "layers":
        names = layers(logs, run)
        steps = sorted({s for name in names for s in logs.steps(run, name, kind)})
        step = steps[-1] if step is None else int(step)
        if step not in steps:
            raise NotFoundError(
                f"no step {step} of layer responses in run {logs.resolve_run(run)!r}; its "
                "steps: " + ", ".join(map(str, steps))
            )
        names = [name for name in names if step in logs.steps(run, name, kind)]
        records = [logs.read_record(run, name, kind, step) for name in names]
        matrix, warning = _heatmap(records, [repr(name) for name in names])
        return Similarity(mode, matrix, names, [logs.resolve_run(run)], names, step, warning)
    if not runs:
        raise ValueError(f"mode='runs' compares runs: give runs=[...]. Received: runs={runs!r}")
    runs = [logs.resolve_run(r) for r in ([runs] if isinstance(runs, str) else runs)]
    per_run = {r: layers(logs, r) for r in runs}
    if layer is not None:
        names = [layer]
        for r in runs:
            logs.steps(r, layer, kind)  # NotFoundError listing the run's layers
    else:
        names = [n for n in per_run[runs[0]] if all(n in per_run[r] for r in runs[1:])]
        if not names:
            detail = "; ".join(f"{r}: {', '.join(per_run[r])}" for r in runs)
            raise NotFoundError(f"the runs share no layer with responses ({detail})")
    common = sorted(set.intersection(*(set(logs.steps(r, n, kind)) for n in names for r in runs)))
    if step is None and not common:
        raise NotFoundError(f"the runs share no step of responses of {', '.join(names)}")
    step = common[-1] if step is None else int(step)
    if step not in common:
        raise NotFoundError(
            f"no step {step} of responses in every run and layer compared; steps they share: "
            + (", ".join(map(str, common)) or "(none)")
        )
    matrices, warnings = [], []
    for name in names:
        records = [logs.read_record(r, name, kind, step) for r in runs]
        matrix, warning = _heatmap(records, [repr(r) for r in runs])
        matrices.append(matrix)
        warnings += [warning] if warning else []
    warning = " ".join(dict.fromkeys(warnings)) or None
    return Similarity(mode, np.stack(matrices), runs, runs, names, step, warning)


def cka(
    logdir: str | os.PathLike | Logdir,
    layer: str,
    a: tuple[str, int | None],
    b: tuple[str, int | None],
    *,
    layer_b: str | None = None,
) -> float:
    """Linear CKA between a layer at `(run_a, step_a)` and at `(run_b, step_b)`.

    1 means the same representation up to a rotation and a scale (a layer against itself); 0
    means nothing in common. Compare a layer over time (one run, two steps), two runs (same
    step), or two layers (`layer_b`).

    Args:
        logdir: A log directory, or a `Logdir` already loaded.
        layer: The layer (nested layers as `outer/inner`).
        a: `(run, step)` of one side; `step=None` is the latest.
        b: `(run, step)` of the other side.
        layer_b: The other side's layer, when it differs from `layer`.

    Returns:
        CKA in [0, 1]; NaN when a side is constant over the reference images.

    Raises:
        NotFoundError: If a run, layer or step is not there; the message lists what is.
        ReferenceMismatchError: If the two sides saw different reference images.

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path, acts = tempfile.mkdtemp(), np.random.default_rng(0).random((16, 6, 6, 4))
        >>> with summary.create_file_writer(path + "/run").as_default() as w:
        ...     _ = summary.responses("c", acts, step=0, reference_images="0" * 16)
        ...     _ = summary.responses("c", 2 * acts[..., ::-1], step=1, reference_images="0" * 16)
        >>> w.close()
        >>> round(cka(path, "c", ("run", 0), ("run", 1)), 6)
        1.0
    """
    ra, rb = _pair(logdir, layer, a, b, layer_b)
    return similarity.cka(
        _array(ra, "gram"), _array(rb, "gram"), ra.index.get("gram_norm"), rb.index.get("gram_norm")
    )


def alignment(
    logdir: str | os.PathLike | Logdir,
    layer: str,
    a: tuple[str, int | None],
    b: tuple[str, int | None],
    *,
    layer_b: str | None = None,
) -> Alignment:
    """Matches the filters of B to those of A, one-to-one, by their responses' correlation.

    Each filter's pooled response to the reference images (its spatial mean per image) is
    correlated with every filter of the other side, and SciPy's `linear_sum_assignment` picks the
    matching with the largest summed correlation. A run whose filters are a permutation of
    another's aligns back to exactly that permutation.

    Args:
        logdir: A log directory, or a `Logdir` already loaded.
        layer: The layer.
        a: `(run, step)` of the side whose filter order is kept.
        b: `(run, step)` of the side whose filters are matched to A's.
        layer_b: B's layer, when it differs from `layer`.

    Returns:
        An `Alignment`: `matches` and the `correlations` of the matches.

    Raises:
        NotFoundError: If a run, layer or step is not there; the message lists what is.
        ReferenceMismatchError: If the two sides saw different reference images.

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path, acts = tempfile.mkdtemp(), np.random.default_rng(0).random((16, 6, 6, 3))
        >>> with summary.create_file_writer(path + "/run").as_default() as w:
        ...     _ = summary.responses("c", acts, step=0, reference_images="0" * 16)
        ...     _ = summary.responses("c", acts[..., [2, 0, 1]], step=1, reference_images="0" * 16)
        >>> w.close()
        >>> found = alignment(path, "c", ("run", 0), ("run", 1))
        >>> found.matches, [round(c, 2) for c in found.correlations]
        ([1, 2, 0], [1.0, 1.0, 1.0])
    """
    ra, rb = _pair(logdir, layer, a, b, layer_b)
    corr = similarity.correlations(_array(ra, "responses"), _array(rb, "responses"))
    matches, scores = similarity.match(corr)
    return Alignment(matches, scores)


def align(
    logdir: str | os.PathLike | Logdir,
    layer: str,
    a: tuple[str, int | None],
    b: tuple[str, int | None],
    *,
    layer_b: str | None = None,
) -> list[int]:
    """The filter of run B matched to each filter of run A: `alignment(...).matches`.

    Entry `i` is the filter of B that responds most like filter `i` of A, under the one-to-one
    matching that maximizes the summed correlation (-1 when B has fewer filters).

    Raises:
        NotFoundError: If a run, layer or step is not there; the message lists what is.
        ReferenceMismatchError: If the two sides saw different reference images.

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path, acts = tempfile.mkdtemp(), np.random.default_rng(0).random((16, 6, 6, 3))
        >>> for run, order in [("a", [0, 1, 2]), ("b", [1, 2, 0])]:
        ...     with summary.create_file_writer(f"{path}/{run}").as_default(step=0) as w:
        ...         _ = summary.responses("c", acts[..., order], reference_images="0" * 16)
        ...     w.close()
        >>> align(path, "c", ("a", 0), ("b", 0))
        [2, 0, 1]
    """
    return alignment(logdir, layer, a, b, layer_b=layer_b).matches


def examples(
    logdir: str | os.PathLike | Logdir, run: str, layer: str, step: int | None = None
) -> list[list[tuple]]:
    """Each filter's dataset examples: the reference images that excite it most, best first.

    Args:
        logdir: A log directory, or a `Logdir` already loaded.
        run: The run.
        layer: The layer.
        step: The step; `None` is the latest.

    Returns:
        One list per filter (in filter order) of its top-k reference images, best first, each
        `(reference index, y, x, activation)`: the image, where its largest activation lies in
        the layer's spatial grid, and that activation. A 1-D layer gives `(index, x,
        activation)`, a 3-D one `(index, z, y, x, activation)`.

    Raises:
        NotFoundError: If the run, layer or step is not there; the message lists what is.

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path, acts = tempfile.mkdtemp(), np.zeros((16, 4, 4, 2))
        >>> acts[5, 1, 2, 0] = 3.0
        >>> with summary.create_file_writer(path + "/run").as_default(step=0) as w:
        ...     _ = summary.responses("c", acts, reference_images="0" * 16, top_k=2)
        >>> w.close()
        >>> examples(path, "run", "c")[0]
        [(5, 1, 2, 3.0), (0, 0, 0, 0.0)]
    """
    record = _responses(_open(logdir), layer, (run, step), "run")
    index = _array(record, "example_index")
    position = _array(record, "example_position")
    activation = _array(record, "example_activation")
    return [
        [
            (int(i), *(int(p) for p in pos), float(act))
            for i, pos, act in zip(index[f], position[f], activation[f], strict=True)
        ]
        for f in range(index.shape[0])
    ]


def reference_images(
    logdir: str | os.PathLike | Logdir, run: str, references: str | None = None
) -> np.ndarray:
    """A run's reference images as stored (8-bit per image, pooled beyond 128 pixels a side).

    The dataset examples of `examples` index into them; crop around `(y, x)` scaled by the
    ratio of the image's size to the layer's grid.

    Args:
        logdir: A log directory, or a `Logdir` already loaded.
        run: The run.
        references: The hash of the images wanted (a responses datum's `"references"`);
            default the latest written.

    Returns:
        A float64 array `[n, h, w, c]` (`c` 1 or 3) in the images' original value range.

    Raises:
        NotFoundError: If the run has no reference images (with that hash).

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path = tempfile.mkdtemp()
        >>> with summary.create_file_writer(path + "/run").as_default(step=0) as w:
        ...     _ = summary.reference_images(np.random.rand(16, 8, 8, 3))
        >>> w.close()
        >>> reference_images(path, "run").shape
        (16, 8, 8, 3)
    """
    logs = _open(logdir)
    kind, name = metadata.REFERENCES_KIND, "reference_images"
    steps = logs.steps(run, name, kind)
    for step in reversed(steps):
        record = logs.read_record(run, name, kind, step)
        if references is None or record.index.get("references") == references:
            break
    else:
        raise NotFoundError(
            f"no reference images with hash {references!r} in run {logs.resolve_run(run)!r}"
        )
    try:
        index = metadata.check_index(record.index, record.blob_count)
        h, w, c = index["tile"]
        atlases = [(record.blob(a["blob"]), int(a["cols"])) for a in index["atlases"]]
        pictures = tiles.unpack_tiles(atlases, (h, w, c), index["ranges"])
    except (KeyError, TypeError, ValueError) as e:
        raise NotFoundError(f"reference images of run {record.run!r} are malformed: {e}") from None
    return pictures[: len(index["filters"])]


# -- internals ---------------------------------------------------------------------------------
def _open(logdir) -> Logdir:
    return logdir if isinstance(logdir, Logdir) else Logdir(logdir)


def layers(logdir: str | os.PathLike | Logdir, run: str) -> list[str]:
    """The layers of a run that hold responses to compare, naturally sorted.

    Raises:
        NotFoundError: If the run is not there, or holds no responses (logged without
            reference images; the message says how to log them).

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path, acts = tempfile.mkdtemp(), np.random.default_rng(0).random((16, 6, 6, 4))
        >>> with summary.create_file_writer(path + "/run").as_default(step=0) as w:
        ...     _ = summary.responses("conv2", acts, reference_images="0" * 16)
        ...     _ = summary.responses("conv10", acts, reference_images="0" * 16)
        ...     _ = summary.filter_weights("conv1", np.ones((3, 3, 3, 4)))
        >>> w.close()
        >>> layers(path, "run")
        ['conv2', 'conv10']
    """
    logs = _open(logdir)
    found = logs.data_layers(run, metadata.RESPONSES_KIND)
    if not found:
        raise NotFoundError(
            f"run {logs.resolve_run(run)!r} holds no layer responses to compare (it was logged "
            "without reference images); log reference images to compare runs: "
            "CNNViz(..., reference_images=x_val[:256]), the same images for every run"
        )
    return found


def _heatmap(records: list[Record], labels: list[str]) -> tuple[np.ndarray, str | None]:
    """CKA of every pair of records; NaN between different reference images, and why."""
    keys = [(r.index.get("references"), r.index.get("count")) for r in records]
    matrix = similarity.cka_matrix([_array(r, "gram") for r in records], references=keys)
    groups: dict = {}
    for key, label in zip(keys, labels, strict=True):
        groups.setdefault(key, []).append(label)
    if len(groups) < 2:
        return matrix, None
    parts = "; ".join(f"{', '.join(names)} (hash {key[0]})" for key, names in groups.items())
    return matrix, (
        f"The responses come from different reference images ({parts}): CKA compares "
        "responses to the same images, so cells between them are NaN. Log the runs with the "
        "same reference_images."
    )


def _responses(logs: Logdir, layer: str, point, name: str) -> Record:
    if isinstance(point, str):
        point = (point, None)
    if not (isinstance(point, tuple | list) and len(point) == 2 and isinstance(point[0], str)):
        raise ValueError(
            f"{name} must be a (run, step) pair (step None: the latest). Received: {name}={point!r}"
        )
    run, step = point
    return logs.read_record(
        run, layer, metadata.RESPONSES_KIND, None if step is None else int(step)
    )


def _array(record: Record, name: str) -> np.ndarray:
    try:
        spec = record.index["arrays"][name]
        if not 0 < spec["blob"] < record.blob_count:
            raise ValueError(f"array {name!r} names blob {spec['blob']}")
        return similarity.decode_array(record.blob(spec["blob"]), spec)
    except (KeyError, TypeError, ValueError) as e:
        raise NotFoundError(
            f"step {record.step} of {record.layer!r} responses in run {record.run!r} is "
            f"malformed: {type(e).__name__}: {e}"
        ) from None


def _pair(logdir, layer: str, a, b, layer_b: str | None) -> tuple[Record, Record]:
    """The responses of sides `a` and `b`, checked to come from the same reference images."""
    logs = _open(logdir)
    ra, rb = _responses(logs, layer, a, "a"), _responses(logs, layer_b or layer, b, "b")
    _check_same_references(ra, rb)
    return ra, rb


def _check_same_references(ra: Record, rb: Record) -> None:
    ha, hb = ra.index.get("references"), rb.index.get("references")
    if ha != hb or ra.index.get("count") != rb.index.get("count"):
        raise ReferenceMismatchError(
            f"{ra.layer!r} at step {ra.step} of run {ra.run!r} and {rb.layer!r} at step "
            f"{rb.step} of run {rb.run!r} were computed from different reference images "
            f"(hashes {ha} and {hb}): similarity and alignment compare responses to the same "
            "images. Log both runs with the same reference_images."
        )
