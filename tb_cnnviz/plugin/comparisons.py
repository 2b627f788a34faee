"""The comparison answers: CKA heatmaps, filter alignment and dataset examples (`/similarity`,
`/alignment`, `/examples`).

They read each layer's responses to a run's reference images (kind `responses`, format in the
`tb_cnnviz.summary` docstring) through `Data`, and compute with `tb_cnnviz.similarity`, the
same NumPy code `tb_cnnviz.compare` uses in a notebook. Heatmaps already answered are kept,
keyed by the blobs they were computed from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tb_cnnviz import metadata, similarity
from tb_cnnviz.plugin.data import Data, LRUCache, Series, index_cache_key
from tb_cnnviz.plugin.pictures import blob_url

__all__ = ["SIMILARITY_MODES", "Comparisons", "ReferenceMismatchError"]

#: What `/similarity` compares: a layer of a run over its steps, runs at a step (every layer),
#: or the layers of a run at a step.
SIMILARITY_MODES = ("time", "runs", "layers")
# CKA heatmaps already answered, keyed by the blobs they were computed from.
_MATRIX_CACHE_ENTRIES = 64
_MAX_COMPARED_RUNS = 64  # runs in one /similarity?mode=runs
# How to get the data that comparing runs needs, for runs logged without it.
_REFERENCES_HOWTO = (
    "log reference images to compare runs: CNNViz(..., reference_images=x_val[:256]) (or the "
    "References callback), the same images for every run"
)


class ReferenceMismatchError(errors.PublicError):
    """Two data to compare were computed from different reference images: a 409 Conflict."""

    http_code = 409


class Comparisons:
    """The comparison answers over a `Data`, with the cache of answered heatmaps.

    Example:
        >>> from tensorboard import context
        >>> empty = Data.from_logdir("/none")
        >>> try:
        ...     Comparisons(empty).similarity(context.RequestContext(), "", "sideways")
        ... except Exception as e:
        ...     print(type(e).__name__)
        InvalidArgumentError
    """

    def __init__(self, data: Data):
        self._data = data
        self._matrix_cache = LRUCache(_MATRIX_CACHE_ENTRIES, _MATRIX_CACHE_ENTRIES)

    def forget(self) -> None:
        """Forgets the answered heatmaps; decoded arrays stay cached (`Data`)."""
        self._matrix_cache = LRUCache(_MATRIX_CACHE_ENTRIES, _MATRIX_CACHE_ENTRIES)

    def similarity(
        self,
        ctx,
        experiment_id: str,
        mode: str,
        *,
        layer: str | None = None,
        run: str | None = None,
        runs: list[str] | None = None,
        step: int | None = None,
    ) -> dict[str, Any]:
        """A linear CKA heatmap of layer responses: over time, across runs, or across layers.

        * `mode="time"`: one `layer` of one `run` at each logged step against every other step,
          `matrix` `[steps, steps]` (when did the layer settle?);
        * `mode="runs"`: every pair of `runs` at `step`, for each layer they all have (or only
          `layer`), `matrices` `[layers, runs, runs]` (did they learn the same representation?);
        * `mode="layers"`: the layers of `run` against each other at `step`, `matrix`
          `[layers, layers]` (the classic CKA heatmap).

        Cells are computed with `tb_cnnviz.similarity.cka_matrix` from the stored centered Gram
        matrices (decoded once per blob and cached). A cell between data computed from different
        reference images is `null`, never a number, and `warning` says which and why; so is a
        cell of a layer constant over the images, or of a step whose data cannot be read.

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request.
            mode: One of `SIMILARITY_MODES`.
            layer: The layer (`time`: required; `runs`: only this layer).
            run: The run (`time`, `layers`).
            runs: The runs to compare (`runs`), in the order wanted.
            step: The step (`runs`, `layers`); by default the latest step they share.

        Returns:
            `time`: `{"mode", "run", "layer", "steps", "matrix"}`; `runs`: `{"mode", "step",
            "runs", "layers", "matrices"}`; `layers`: `{"mode", "run", "step", "layers",
            "matrix"}`; plus `"warning"` when some cells are null for a reason worth saying.

        Raises:
            tensorboard.errors.InvalidArgumentError: If the mode is unknown or a parameter it
                needs is missing.
            tensorboard.errors.NotFoundError: If a run, layer or step is not there (the message
                lists what is), or a run holds no responses (the message says how to log them).
        """
        if mode not in SIMILARITY_MODES:
            raise errors.InvalidArgumentError(
                f"mode must be one of {', '.join(SIMILARITY_MODES)}. Received: mode={mode[:40]!r}"
            )
        if mode == "time":
            run, layer = _needed(run, "run", mode), _needed(layer, "layer", mode)
            stored = self._series(ctx, experiment_id, run, layer).data
            matrix, warning = self._cka(ctx, stored, [f"step {d.step}" for d in stored])
            body = {"mode": mode, "run": run, "layer": layer, "steps": [d.step for d in stored]}
            return _with_warning({**body, "matrix": matrix}, warning)
        if mode == "layers":
            run = _needed(run, "run", mode)
            return self._layers(ctx, experiment_id, run, step)
        runs = runs if runs is not None else ([run] if run is not None else None)
        runs = _needed(runs, "runs", mode)
        return self._runs(ctx, experiment_id, runs, layer, step)

    def _layers(self, ctx, experiment_id, run, step) -> dict[str, Any]:
        layers = self.layers(ctx, experiment_id, [run])[run]
        series = self._data.many_series(ctx, experiment_id, [(run, t) for t in layers.values()])
        by_layer = {name: series[(run, tag)] for name, tag in layers.items()}
        steps = sorted({s for one in by_layer.values() for s in one.by_step})
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise errors.NotFoundError(
                f"no step {step} of layer responses in run {run!r}; logged steps: "
                + metadata.names_text(steps)
            )
        names = [name for name, one in by_layer.items() if step in one.by_step]
        stored = [by_layer[name].by_step[step] for name in names]
        matrix, warning = self._cka(ctx, stored, [repr(name) for name in names])
        body = {"mode": "layers", "run": run, "step": step, "layers": names, "matrix": matrix}
        return _with_warning(body, warning)

    def _runs(self, ctx, experiment_id, runs, layer, step) -> dict[str, Any]:
        if len(runs) > _MAX_COMPARED_RUNS or len(set(runs)) != len(runs):
            raise errors.InvalidArgumentError(
                f"runs must name at most {_MAX_COMPARED_RUNS} different runs. Received: "
                f"{len(runs)} names, {len(set(runs))} different"
            )
        listing = self.layers(ctx, experiment_id, runs)
        if layer is not None:
            for name in runs:
                if layer not in listing[name]:
                    raise _no_layer(name, layer, listing[name])
            names = [layer]
        else:
            names = [n for n in listing[runs[0]] if all(n in listing[r] for r in runs[1:])]
            if not names:
                detail = "; ".join(f"{r}: {metadata.names_text(listing[r])}" for r in runs)
                raise errors.NotFoundError(f"the runs share no layer with responses ({detail})")
        pairs = [(r, metadata.tag_for(n, metadata.RESPONSES_KIND)) for n in names for r in runs]
        series = self._data.many_series(ctx, experiment_id, pairs, step)
        common = sorted(set.intersection(*(set(series[p].by_step) for p in pairs)))
        if step is None and not common:
            detail = "; ".join(
                f"{r}: {metadata.names_text(sorted(series[(r, t)].by_step))}"
                for r, t in pairs[: len(runs)]
            )
            raise errors.NotFoundError(
                f"the runs share no step of responses of every layer compared ({detail})"
            )
        if step is None:
            step = common[-1]
        elif step not in common:
            raise errors.NotFoundError(
                f"no step {step} of responses in every run and layer compared; steps they "
                "share: " + metadata.names_text(common)
            )
        matrices, warnings = [], []
        for name in names:
            tag = metadata.tag_for(name, metadata.RESPONSES_KIND)
            stored = [series[(r, tag)].by_step[step] for r in runs]
            matrix, warning = self._cka(ctx, stored, [repr(r) for r in runs])
            matrices.append(matrix)
            warnings += [warning] if warning else []
        body = {"mode": "runs", "step": step, "runs": runs, "layers": names, "matrices": matrices}
        return _with_warning(body, " ".join(dict.fromkeys(warnings)) or None)

    def alignment(
        self,
        ctx,
        experiment_id: str,
        layer: str,
        a: tuple[str, int | None],
        b: tuple[str, int | None],
    ) -> dict[str, Any]:
        """Run B's filters matched one-to-one to run A's, with each match's correlation.

        The filters' pooled responses to the reference images are correlated
        (`tb_cnnviz.similarity.correlations`) and matched with SciPy's `linear_sum_assignment`
        (`similarity.match`), as `tb_cnnviz.compare.alignment` does on a logdir.

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request.
            layer: The layer.
            a: `(run, step)` whose filter order is kept; `step=None` is the latest.
            b: `(run, step)` whose filters are matched to A's.

        Returns:
            `{"layer", "a": {"run", "step", "filters"}, "b": {...}, "matches", "correlations"}`:
            `matches[i]` is the filter of B matched to filter `i` of A (-1 when B has fewer
            filters), `correlations[i]` its correlation (null when unmatched).

        Raises:
            tensorboard.errors.NotFoundError: If a run, the layer or a step is not there.
            ReferenceMismatchError: If A and B were computed from different reference images
                (409).
        """
        sides = []
        for run, step in (a, b):
            datum = self._datum(ctx, experiment_id, run, layer, step)
            sides.append((run, datum, self._index_or_404(ctx, run, layer, datum)))
        (run_a, datum_a, index_a), (run_b, datum_b, index_b) = sides
        if _references_key(index_a) != _references_key(index_b):
            raise ReferenceMismatchError(
                f"{layer!r} at step {datum_a.step} of run {run_a!r} and at step {datum_b.step} "
                f"of run {run_b!r} were computed from different reference images (hashes "
                f"{index_a.get('references')} and {index_b.get('references')}): alignment "
                "compares responses to the same images. Log both runs with the same "
                "reference_images."
            )
        z_a = self._array_or_404(ctx, run_a, layer, datum_a, index_a, "responses")
        z_b = self._array_or_404(ctx, run_b, layer, datum_b, index_b, "responses")
        matches, scores = similarity.match(similarity.correlations(z_a, z_b))
        return {
            "layer": layer,
            "a": {"run": run_a, "step": datum_a.step, "filters": int(z_a.shape[1])},
            "b": {"run": run_b, "step": datum_b.step, "filters": int(z_b.shape[1])},
            "matches": matches,
            "correlations": [_finite_or_none(s) for s in scores],
        }

    def examples(
        self, ctx, experiment_id: str, run: str, layer: str, step: int | None = None
    ) -> dict[str, Any]:
        """Each filter's dataset examples, and where the tab crops them from.

        `examples[f]` lists filter `f`'s top-k reference images, best first, each
        `[index, y, x, activation]` (1-D layers `[index, x, activation]`, 3-D `[index, z, y, x,
        activation]`), as `tb_cnnviz.compare.examples` gives them. `images` describes the run's
        stored reference images: atlas URLs and layout (image `i` is tile `i`), the tile size,
        `scale` (stored pixels per model pixel) and `stride` (model pixels per cell of the
        layer's `grid`), so the receptive field of `(y, x)` is centred on stored pixel
        `((y + 0.5) * stride[0] * scale, (x + 0.5) * stride[1] * scale)`. `images` is null,
        with a `warning`, when the run holds no reference images with the data's hash.

        Returns:
            `{"run", "layer", "step", "filters", "top_k", "grid", "references", "examples",
            "images"}`, plus `"warning"` when `images` is null.

        Raises:
            tensorboard.errors.NotFoundError: If the run, layer or step is not there.
        """
        datum = self._datum(ctx, experiment_id, run, layer, step)
        index = self._index_or_404(ctx, run, layer, datum)
        arrays = [
            self._array_or_404(ctx, run, layer, datum, index, name)
            for name in ("example_index", "example_position", "example_activation")
        ]
        examples = [
            [[int(i), *(int(p) for p in pos), float(act)] for i, pos, act in zip(*per, strict=True)]
            for per in zip(*arrays, strict=True)
        ]
        grid = [int(g) for g in index.get("grid") or []]
        body = {
            "run": run,
            "layer": layer,
            "step": datum.step,
            "filters": len(examples),
            "top_k": int(arrays[0].shape[1]) if arrays[0].ndim == 2 else 0,
            "grid": grid,
            "references": index.get("references"),
            "examples": examples,
        }
        images = self._reference_images(ctx, experiment_id, run, index.get("references"))
        if images is None:
            return {
                **body,
                "images": None,
                "warning": f"run {run!r} holds no reference images with hash "
                f"{index.get('references')!r} (its responses were written with the hash only); "
                "write them with tb_cnnviz.summary.reference_images to see the examples",
            }
        shape = images["shape"]
        stride = None
        if len(shape) == len(grid) + 1 and all(grid):
            stride = [shape[k] / grid[k] for k in range(len(grid))]
        return {**body, "images": {**images, "stride": stride}}

    # -- reading responses -----------------------------------------------------------------
    def layers(self, ctx, experiment_id, runs) -> dict[str, dict[str, str]]:
        """`{run: {layer: tag}}` of the responses series of `runs`, layers naturally sorted.

        Raises:
            tensorboard.errors.NotFoundError: If a run is unknown or holds no responses.
        """
        data = self._data
        listing = data.list(ctx, experiment_id, provider.RunTagFilter(runs=runs))
        out = {}
        for run in runs:
            layers = {}
            for tag, series in (listing.get(run) or {}).items():
                parsed = data.parse_tag(experiment_id, run, tag, series)
                if parsed is not None and parsed.kind == metadata.RESPONSES_KIND:
                    layers[parsed.layer] = tag
            if not layers:
                raise self._no_responses(ctx, experiment_id, run, bool(listing.get(run)))
            out[run] = dict(sorted(layers.items(), key=lambda lt: metadata.natural_key(lt[0])))
        return out

    def _series(self, ctx, experiment_id, run, layer, step=None) -> Series:
        """The responses of one layer of one run, with a message saying what exists if none."""
        tag = metadata.tag_for(layer, metadata.RESPONSES_KIND)
        series = self._data.read_series(ctx, experiment_id, run, tag, step)
        if series.data:
            return series
        layers = self.layers(ctx, experiment_id, [run])[run]
        raise _no_layer(run, layer, layers)

    def _datum(self, ctx, experiment_id, run, layer, step):
        series = self._series(ctx, experiment_id, run, layer, step)
        if step is None:
            return series.data[-1]
        datum = series.by_step.get(step)
        if datum is None:
            raise errors.NotFoundError(
                f"no step {step} of {layer!r} responses in run {run!r}; logged steps: "
                + metadata.names_text(series.by_step)
            )
        return datum

    def _index(self, ctx, datum) -> tuple[dict[str, Any] | None, str | None]:
        """`(index, None)` or `(None, why)` of one responses datum, decoded once."""
        if not datum.values:
            return None, f"step {datum.step} holds no blobs (a truncated or partial write)"

        def decode(raw):
            try:
                index = metadata.decode_index(raw)
                if index is None:
                    why = (
                        f"step {datum.step} was written by a newer tb-cnnviz; upgrade to compare it"
                    )
                    return None, why
                if not (
                    isinstance(index.get("arrays"), dict)
                    and isinstance(index.get("references"), str)
                    and isinstance(index.get("count"), int)
                ):
                    raise ValueError("a responses index needs 'arrays', 'references' and 'count'")
            except (TypeError, ValueError) as e:
                return None, f"step {datum.step} has a malformed responses index: {e}"
            return index, None

        return self._data.record(ctx, datum, _index_key(datum), decode)

    def _index_or_404(self, ctx, run, layer, datum) -> dict[str, Any]:
        index, why = self._index(ctx, datum)
        if index is None:
            raise errors.NotFoundError(f"{layer!r} responses in run {run!r}: {why}")
        return index

    def _array_or_404(self, ctx, run, layer, datum, index, name) -> np.ndarray:
        try:
            return self._data.array(ctx, datum, index, name)
        except ValueError as e:
            raise errors.NotFoundError(
                f"step {datum.step} of {layer!r} responses in run {run!r} is malformed: {e}"
            ) from None

    def _gram(self, ctx, datum):
        """`(triangle, references key)` of a datum, or `(None, why)`."""
        index, why = self._index(ctx, datum)
        if index is None:
            return None, why
        try:
            return self._data.array(ctx, datum, index, "gram"), _references_key(index)
        except ValueError as e:
            return None, f"step {datum.step} has malformed responses: {e}"

    def _cka(self, ctx, stored, labels) -> tuple[list, str | None]:
        """The CKA matrix (nested lists, null where there is no number) of `stored`, and why."""
        if not stored:
            return [], None
        cache_key = tuple((d.values[0].blob_key, d.wall_time) if d.values else None for d in stored)
        cached = self._matrix_cache.get(cache_key)
        if cached is not None:
            return cached
        unread = [d for d in stored if d.values and not self._data.is_cached(_index_key(d))]
        if unread and len(stored) > 1:
            grams = list(self._data.pool().map(lambda d: self._gram(ctx, d), stored))
        else:
            grams = [self._gram(ctx, d) for d in stored]
        ok = [i for i, (t, _) in enumerate(grams) if t is not None]
        matrix = np.full((len(stored), len(stored)), np.nan)
        if ok:
            keys = [grams[i][1] for i in ok]
            block = similarity.cka_matrix([grams[i][0] for i in ok], references=keys)
            matrix[np.ix_(ok, ok)] = block
        notes = []
        unreadable = [grams[i][1] for i in range(len(stored)) if grams[i][0] is None]
        if unreadable:
            notes.append(f"Some data cannot be read, so their cells are empty: {unreadable[0]}.")
        groups: dict[Any, list[str]] = {}
        for i in ok:
            groups.setdefault(grams[i][1], []).append(labels[i])
        if len(groups) > 1:
            parts = "; ".join(
                f"{_label_list(names)} (hash {key[0]})" for key, names in groups.items()
            )
            notes.append(
                f"The responses come from different reference images ({parts}): CKA "
                "compares responses to the same images, so cells between them are empty. Log "
                "the runs with the same reference_images."
            )
        answer = (
            [[_finite_or_none(v) for v in row] for row in matrix.tolist()],
            (" ".join(notes) or None),
        )
        self._matrix_cache.put(cache_key, answer, 1)
        return answer

    def _reference_images(self, ctx, experiment_id, run, digest) -> dict[str, Any] | None:
        """Where the reference images with hash `digest` of a run are, or None."""
        stored = self._data.read_series(ctx, experiment_id, run, metadata.REFERENCES_TAG)
        for datum in reversed(stored.data):
            index, _ = self._data.index(ctx, datum)
            if index is not None and index.get("references") == digest:
                return {
                    "step": datum.step,
                    "count": index.get("count"),
                    "shape": index.get("shape"),
                    "scale": index.get("scale", 1),
                    "tile": index["tile"],
                    "atlases": [
                        blob_url(datum.values[a["blob"]].blob_key) for a in index["atlases"]
                    ],
                    "layout": [
                        {k: a.get(k) for k in ("cols", "rows", "count")} for a in index["atlases"]
                    ],
                    "ranges": index["ranges"],
                }
        return None

    def _no_responses(self, ctx, experiment_id, run, exists) -> errors.NotFoundError:
        if not exists:
            listing = self._data.list(ctx, experiment_id)
            with_data = sorted(
                r
                for r, tags in listing.items()
                if any(t.endswith("/" + metadata.RESPONSES_KIND) for t in tags)
            )
            return errors.NotFoundError(
                f"no cnnviz run named {run!r}; runs with layer responses: "
                + metadata.names_text(with_data)
            )
        return errors.NotFoundError(
            f"run {run!r} holds no layer responses to compare (it was logged without "
            f"reference images); {_REFERENCES_HOWTO}"
        )


def _no_layer(run, layer, layers) -> errors.NotFoundError:
    return errors.NotFoundError(
        f"no layer {layer!r} with responses in run {run!r}; layers: " + metadata.names_text(layers)
    )


def _index_key(datum) -> tuple:
    return (metadata.RESPONSES_KIND, *index_cache_key(datum))


def _needed(value, name: str, mode: str):
    if value is None:
        raise errors.InvalidArgumentError(f"missing required parameter {name!r} for mode={mode}")
    return value


def _references_key(index: dict[str, Any]) -> tuple:
    return index.get("references"), index.get("count")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _with_warning(body: dict[str, Any], warning: str | None) -> dict[str, Any]:
    return {**body, "warning": warning} if warning else body


def _label_list(labels: list[str]) -> str:
    return ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
