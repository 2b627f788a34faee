"""The plan answer (`/plan`): what the callbacks drew at each step of a run, with what each
drawing cost, what they left out, and why.

The callbacks write a plan record per step and owner (`"<owner>/plan"`, format in the
`tb_cnnviz.summary` docstring); `Plans.plan` merges every owner's records by step.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from tensorboard.data import provider

from tb_cnnviz import metadata
from tb_cnnviz.plugin.data import Data

__all__ = ["Plans", "check_plan", "merge_plans"]

logger = logging.getLogger(__name__)


class Plans:
    """Reads and merges plan records through a `Data`; reports unreadable ones once per run.

    Example:
        >>> from tensorboard import context
        >>> empty = Data.from_logdir("/none")
        >>> try:
        ...     Plans(empty).plan(context.RequestContext(), "", "run1")
        ... except Exception as e:
        ...     print(type(e).__name__)
        NotFoundError
    """

    def __init__(self, data: Data):
        self._data = data
        self._reported: set[tuple[str, str]] = set()

    def plan(self, ctx, experiment_id: str, run: str) -> dict[str, Any]:
        """What the callbacks drew at each step of a run, what they left out, and why.

        The plan records of every owner are merged by step. A tag drawn by one owner at a step
        is not listed as skipped there. `left_out` holds the tags skipped at some step, drawn at
        none and without any picture in the run, each with its latest reason. `budget` and
        `train_seconds` are the latest given (by step, then wall time); `own_seconds` adds up
        each owner's latest, as each callback counts only its own time. A run without plan
        records (logs written before plans existed) has empty `steps` and `left_out` and null
        numbers. Records written by a newer tb-cnnviz (one warning) or malformed (logged once
        per run) are skipped.

        Returns:
            `{"run", "budget", "steps": [{"step", "drawn", "skipped", "costs"}], "costs",
            "left_out", "train_seconds", "own_seconds"}`, steps ascending. A step's `costs`
            give each drawn tag's `seconds` and `bytes` (records written before costs were
            recorded give none); the top-level `costs` give each tag's latest, with its
            `step`. A step's `passes` (where its records give any) hold the seconds of work
            a kind's drawings shared there, which no tag's cost includes.

        Raises:
            tensorboard.errors.NotFoundError: If the run holds no cnnviz data.
        """
        data = self._data
        listing = data.list(ctx, experiment_id, provider.RunTagFilter(runs=[run])).get(run)
        if not listing:
            raise data.no_run(ctx, experiment_id, run)
        kinds = {tag: data.parse_tag(experiment_id, run, tag, s) for tag, s in listing.items()}
        plan_tags = sorted(t for t, p in kinds.items() if p and p.kind == metadata.PLAN_KIND)
        picture_tags = {t for t, p in kinds.items() if p and p.kind != metadata.PLAN_KIND}
        stored = []
        if plan_tags:
            found = data.read(ctx, experiment_id, provider.RunTagFilter([run], plan_tags))
            stored = [(tag, d) for tag in plan_tags for d in found.get(run, {}).get(tag, [])]
        records = data.read_each(
            lambda d: self._record(ctx, experiment_id, run, d),
            _cache_key,
            [d for _, d in stored],
        )
        merged = merge_plans(
            [(tag, d, r) for (tag, d), r in zip(stored, records, strict=True) if r is not None],
            picture_tags,
        )
        return {"run": run, **merged}

    def _record(self, ctx, experiment_id, run, datum) -> dict[str, Any] | None:
        """One datum's plan record, checked and cached; None when unreadable."""
        if not datum.values:
            return None

        def decode(raw):
            try:
                record = metadata.decode_index(raw)  # None (one warning) when newer
                if record is not None:
                    check_plan(record)
                return record
            except (TypeError, ValueError) as e:
                if (experiment_id, run) not in self._reported:
                    self._reported.add((experiment_id, run))
                    logger.warning("cnnviz: skipping plan records of run %r: %s", run, e)
                return None

        return self._data.record(ctx, datum, _cache_key(datum), decode)


def _cache_key(datum) -> tuple[str, str, float]:
    return metadata.PLAN_KIND, datum.values[0].blob_key, datum.wall_time


def check_plan(record: dict[str, Any]) -> None:
    """Raises ValueError unless `record` is a plan record as `summary.write_plan` writes it.

    Example:
        >>> check_plan({"kind": "plan", "drawn": ["c/weights"], "skipped": {}})
        >>> check_plan({"kind": "plan", "drawn": "c/weights"})
        Traceback (most recent call last):
        ...
        ValueError: a plan record's 'drawn' must be a list of tags
    """
    drawn, skipped = record.get("drawn", []), record.get("skipped", {})
    if record.get("kind") != metadata.PLAN_KIND:
        raise ValueError(f"a plan record needs kind 'plan'. Received: {record.get('kind')!r}")
    if not isinstance(drawn, list) or not all(isinstance(t, str) for t in drawn):
        raise ValueError("a plan record's 'drawn' must be a list of tags")
    if not isinstance(skipped, dict) or not all(isinstance(r, str) for r in skipped.values()):
        raise ValueError("a plan record's 'skipped' must map tags to reasons")
    costs = record.get("costs", {})
    if not isinstance(costs, dict) or not all(
        isinstance(c, dict) and all(_finite(c.get(k)) for k in ("seconds", "bytes"))
        for c in costs.values()
    ):
        raise ValueError("a plan record's 'costs' must map tags to {seconds, bytes} numbers")
    passes = record.get("passes", {})
    if not isinstance(passes, dict) or not all(
        isinstance(p, dict) and _finite(p.get("seconds")) for p in passes.values()
    ):
        raise ValueError("a plan record's 'passes' must map kinds to {seconds} numbers")
    for name in ("budget", "train_seconds", "own_seconds"):
        value = record.get(name)
        if value is not None and not _finite(value):
            raise ValueError(f"a plan record's {name!r} must be a number or null")


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def merge_plans(records, picture_tags) -> dict[str, Any]:
    """Merges `(owner tag, datum, record)` triples into the body of a `/plan` answer."""
    by_step: dict[int, tuple[dict[str, None], dict[str, str], dict[str, Any]]] = {}
    passes: dict[int, dict[str, tuple]] = {}  # step -> owner -> (wall time, its passes)
    notes: dict[int, dict[str, Any]] = {}  # a step's "thinned" and "resumed", as recorded
    latest: dict[str, tuple[int, float, dict[str, Any]]] = {}  # per owner
    for tag, datum, record in records:
        drawn, skipped, costs = by_step.setdefault(datum.step, ({}, {}, {}))
        drawn.update(dict.fromkeys(record.get("drawn", [])))
        skipped.update(record.get("skipped", {}))
        costs.update(record.get("costs", {}))
        if record.get("passes"):  # each owner's latest at the step (a resumed run rewrites)
            mine = passes.setdefault(datum.step, {})
            if tag not in mine or datum.wall_time >= mine[tag][0]:
                mine[tag] = (datum.wall_time, record["passes"])
        for name in ("thinned", "resumed"):
            if record.get(name) is not None:
                notes.setdefault(datum.step, {})[name] = record[name]
        if tag not in latest or (datum.step, datum.wall_time) > latest[tag][:2]:
            latest[tag] = (datum.step, datum.wall_time, record)
    steps, drawn_ever, reasons, last_costs = [], set(picture_tags), {}, {}
    for step in sorted(by_step):
        drawn, skipped, costs = by_step[step]
        skipped = {t: r for t, r in sorted(skipped.items()) if t not in drawn}
        costs = {t: costs[t] for t in sorted(costs) if t in drawn}
        drawn_ever.update(drawn)
        reasons.update(skipped)  # steps ascend, so the latest reason stays
        last_costs.update({t: {**c, "step": step} for t, c in costs.items()})
        entry = {"step": step, "drawn": list(drawn), "skipped": skipped, "costs": costs}
        if step in passes:  # the owners' passes added up, as their own seconds are
            shared: dict[str, float] = {}
            for _, given in passes[step].values():
                for kind, p in given.items():
                    shared[kind] = shared.get(kind, 0.0) + p["seconds"]
            entry["passes"] = {k: {"seconds": round(v, 4)} for k, v in sorted(shared.items())}
        if drawn:  # a step one owner drew is not thinned
            notes.get(step, {}).pop("thinned", None)
        steps.append({**entry, **notes.get(step, {})})

    def newest(name):  # the value of the latest record that gives one
        given = [(d.step, d.wall_time, r[name]) for _, d, r in records if r.get(name) is not None]
        return max(given, default=(0, 0.0, None))[2]

    own = [r["own_seconds"] for _, _, r in latest.values() if r.get("own_seconds") is not None]
    return {
        "budget": newest("budget"),
        "steps": steps,
        "costs": dict(sorted(last_costs.items())),
        "left_out": {t: r for t, r in sorted(reasons.items()) if t not in drawn_ever},
        "train_seconds": newest("train_seconds"),
        "own_seconds": round(sum(own), 3) if own else None,
    }
