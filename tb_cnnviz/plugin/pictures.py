"""The picture answers: which runs and tags there are, one layer's pictures at a step, a
layer's statistics over its steps, and the bytes of one blob (`/runs`, `/tags`, `/layer`,
`/stats`, `/blob`).

Each function takes the `Data` to read through and returns plain JSON-ready data, or raises
`tensorboard.errors.NotFoundError` saying what exists. `tb_cnnviz/http_api.md` documents the
answers.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from tensorboard import errors
from tensorboard.data import provider

from tb_cnnviz import metadata
from tb_cnnviz.plugin.data import Data, listing_mark
from tb_cnnviz.plugin.wsgi import Answer

__all__ = ["LISTED_KINDS", "blob", "layer", "runs", "stats", "tags"]

#: The kinds `/tags` lists: the pictures, and the responses the tab's comparison views read.
LISTED_KINDS = (*metadata.KINDS, metadata.RESPONSES_KIND)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def runs(data: Data, ctx, experiment_id: str) -> list[str]:
    """The sorted names of the runs that hold readable cnnviz data: a readable picture tag or
    a callback's plan records.

    Example:
        >>> from tensorboard import context
        >>> empty = Data.from_logdir("/none")
        >>> runs(empty, context.RequestContext(), "")
        []
    """
    listing = data.list(ctx, experiment_id)
    return sorted(
        run
        for run, series_by_tag in listing.items()
        if any(data.parse_tag(experiment_id, run, t, s) for t, s in series_by_tag.items())
    )


def tags(data: Data, ctx, experiment_id: str, run: str | None = None) -> dict[str, Any]:
    """`{run: {tag: {"kind", "layer", "steps", "description", …static facts}}}`.

    `steps` lists every stored step in ascending order. `order`, where the run's plan records
    give the network's order, is the layer's place in it (the first conv layer a forward pass
    meets is 0). Picture tags are listed, and each
    layer's responses to the reference images (kind `"responses"`: no pictures of their own,
    the tab draws dataset examples and similarity from them through `/examples`,
    `/similarity` and `/alignment`). Plan records (`plans.plan`) and the run's reference images
    are not. Tags written by a newer format version (one warning) or with malformed metadata
    (logged once) are left out, and so are runs left with no tags.

    Raises:
        tensorboard.errors.NotFoundError: If `run` is given and holds no cnnviz data.

    Example:
        >>> from tensorboard import context
        >>> empty = Data.from_logdir("/none")
        >>> tags(empty, context.RequestContext(), "")
        {}
    """
    run_filter = None if run is None else provider.RunTagFilter(runs=[run])
    listing = data.list(ctx, experiment_id, run_filter)
    if run is not None and not listing.get(run):
        raise data.no_run(ctx, experiment_id, run)
    # The same listing gives the same answer: kept whole, with its JSON (`wsgi.Answer`).
    key = ("tags", experiment_id, run, *_marks(listing))
    return data.answer(key, lambda: _tags(data, ctx, experiment_id, listing))


def _marks(listing) -> list[tuple]:
    return [
        (run, tag, listing_mark(series))
        for run, by_tag in sorted(listing.items())
        for tag, series in sorted(by_tag.items())
    ]


def _tags(data: Data, ctx, experiment_id: str, listing) -> dict[str, Any]:
    steps_of = data.listed_steps(ctx, experiment_id, listing)
    result: dict[str, Any] = Answer()
    for run_name, series_by_tag in listing.items():
        listed = {}
        parsed_tags = {
            t: data.parse_tag(experiment_id, run_name, t, s) for t, s in series_by_tag.items()
        }
        order = _network_order(parsed_tags.values())
        for tag, series in series_by_tag.items():
            parsed = parsed_tags[tag]
            if parsed is None or parsed.kind not in LISTED_KINDS:
                continue  # unreadable, a plan (see /plan), or the reference images
            steps = steps_of[(run_name, tag)]
            # Static facts the writer stored (class names, method, ...) come first, so the
            # keys every tag has cannot be shadowed by them.
            listed[tag] = {
                **parsed.extra,
                "kind": parsed.kind,
                "layer": parsed.layer,
                "steps": steps,
                "description": series.description or "",
            }
            if parsed.layer in order:
                listed[tag]["order"] = order[parsed.layer]
        if listed:
            result[run_name] = dict(sorted(listed.items()))
    return Answer(sorted(result.items()))


def _network_order(parsed) -> dict[str, int]:
    """`{layer: position}` in the network, from the plan tags' `layers` static fact (the
    callbacks write the conv layers in the order a forward pass meets them); the first owner's
    order first, others' further layers after it."""
    order: dict[str, int] = {}
    for info in sorted((p for p in parsed if p is not None), key=lambda p: p.layer):
        names = info.extra.get("layers") if info.kind == metadata.PLAN_KIND else None
        if isinstance(names, list):
            for name in names:
                if isinstance(name, str):
                    order.setdefault(name, len(order))
    return order


def layer(
    data: Data, ctx, experiment_id: str, run: str, tag: str, step: int | None = None
) -> dict[str, Any]:
    """One layer's pictures at one step: its decoded index and its atlas URLs.

    `atlases[i]` is the relative URL of the PNG named by `index["atlases"][i]["blob"]`. When the
    step cannot be drawn by this version (a newer format, a malformed index, or a datum with no
    blobs), the answer is still 200 with `"index": null`, `"atlases": []` and a `"warning"`
    saying why, so the dashboard shows a message instead of an error.

    Returns:
        `{"run", "tag", "step", "wall_time", "index", "atlases"}`, plus `"warning"` when
        `index` is null.

    Raises:
        tensorboard.errors.NotFoundError: If the run, tag or step does not exist; the message
            lists what does.
    """
    series = data.series(ctx, experiment_id, run, tag, step)
    if step is None:
        datum = series.data[-1]
    else:
        datum = series.by_step.get(step)
        if datum is None:
            raise errors.NotFoundError(
                f"no step {step} in run {run!r}, tag {tag!r}; logged steps: "
                + metadata.names_text(series.by_step)
            )
    if tag.rpartition("/")[2] == metadata.RESPONSES_KIND:
        index = None
        warning = (
            f"{tag!r} holds the layer's responses to the reference images, not pictures; "
            "/examples serves its dataset examples and /similarity its similarity"
        )
    else:
        index, warning = data.index(ctx, datum)
    atlases = []
    if index is not None:
        atlases = [blob_url(datum.values[atlas["blob"]].blob_key) for atlas in index["atlases"]]
    result = {
        "run": run,
        "tag": tag,
        "step": datum.step,
        "wall_time": datum.wall_time,
        "index": index,
        "atlases": atlases,
    }
    if warning:
        result["warning"] = warning
    return result


def blob_url(key: str) -> str:
    """The relative URL `/blob` serves a blob at.

    Example:
        >>> blob_url("a/b")
        'blob?key=a%2Fb'
    """
    return "blob?key=" + urllib.parse.quote(key, safe="")


def stats(data: Data, ctx, experiment_id: str, run: str, tag: str) -> dict[str, Any]:
    """Every step's statistics of one (run, tag), for the inspector's charts.

    Each entry of `series` is that step's index without its `ranges` and `atlases`, plus
    `step` and `wall_time`. Steps whose index cannot be read are listed in `skipped`.

    Returns:
        `{"steps": [...], "series": [{"step", "wall_time", "filters", "stats",
        "layer_stats", "total_filters", ...}], "skipped": [...]}`.

    Raises:
        tensorboard.errors.NotFoundError: If the run or tag does not exist.
    """
    stored = data.series(ctx, experiment_id, run, tag).data
    series, skipped = [], []
    for datum, (index, _) in zip(stored, data.indexes(ctx, stored), strict=True):
        if index is None:
            skipped.append(datum.step)
            continue
        entry = {"step": datum.step, "wall_time": datum.wall_time}
        entry.update((k, v) for k, v in index.items() if k not in ("ranges", "atlases"))
        series.append(entry)
    return {"steps": [d.step for d in stored], "series": series, "skipped": skipped}


def blob(data: Data, ctx, key: str) -> tuple[bytes, str]:
    """`(bytes, content_type)` of one blob: a PNG atlas or an index (JSON).

    Args:
        data: The reads.
        ctx: The `RequestContext`.
        key: A blob key from `layer` (opaque; it names its experiment).

    Returns:
        The blob's bytes and `image/png`, `application/json` or `application/octet-stream`.

    Raises:
        tensorboard.errors.NotFoundError: If the data provider has no such blob.
    """
    body = data.blob(ctx, key)
    if body.startswith(_PNG_MAGIC):
        return body, "image/png"
    if body[:1] == b"{":
        return body, "application/json"
    return body, "application/octet-stream"
