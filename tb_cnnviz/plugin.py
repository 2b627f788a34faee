"""The TensorBoard side of tb-cnnviz: the "CNN Viz" tab's backend.

This module never imports TensorFlow: TensorBoard loads it through the `tensorboard_plugins` entry
point (`cnnviz = tb_cnnviz.plugin:CNNVizLoader`) in a process that may have no TensorFlow at all.
It reads only through `context.data_provider`, so it serves the same answers under TensorBoard's
Rust data server (`--load_fast=true`, the default where available) and under the Python loader
(`--load_fast=false`).

Routes live under `/data/plugin/cnnviz/`; `tb_cnnviz/http_api.md` documents each one with JSON
examples. Every route is thin: it parses the request, calls an `*_impl` method that returns plain
data or raises `tensorboard.errors.NotFoundError` / `InvalidArgumentError`, and turns those errors
into a JSON body `{"error": "..."}` with status 404 / 400 itself, so a bad request never becomes
a 500 even when the app is called bare, outside `TensorBoardWSGI`.

The on-disk format it reads is the one described in the `tb_cnnviz.summary` docstring; only
`tb_cnnviz.metadata` is shared with the writing side.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import json
import logging
import math
import pathlib
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util, json_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_cnnviz import metadata

__all__ = [
    "BLOB_MAX_AGE_SECONDS",
    "DEFAULT_SAMPLES_PER_TAG",
    "CNNVizLoader",
    "CNNVizPlugin",
    "read_downsample",
]

logger = logging.getLogger(__name__)

#: What `CNNVizLoader.fix_flags` puts in `--samples_per_plugin` for cnnviz when the user gave
#: nothing: 0 means "keep every step" in both of TensorBoard's loaders. Without it TensorBoard
#: keeps a random 10 steps per tag of a third-party plugin.
DEFAULT_SAMPLES_PER_TAG = 0

#: Browser cache lifetime of `/blob` responses. A blob key names the same bytes for the life of a
#: TensorBoard server, so the browser need not ask twice.
BLOB_MAX_AGE_SECONDS = 24 * 60 * 60

# "Every point" for the data provider's `downsample`: a sampling hint of 0 means "keep all" in
# storage, but `downsample=0` reads back nothing (TensorBoard issue 5550).

# Decoded index blobs are immutable, so they are cached; the bound is on the size of the raw JSON
# (the decoded dicts are a few times larger) and on the number of entries.
_INDEX_CACHE_BYTES = 64 * 2**20
_INDEX_CACHE_ENTRIES = 8192

# The list of steps of a (run, tag) grows while training runs, so it is cached only briefly: it is
# reused for `_SERIES_FRESH_SECONDS`, and for up to `_SERIES_MAX_AGE_SECONDS` when it already
# holds the step asked for (a logged step never changes). Every read call to the Rust data server
# costs about 40 ms, whatever its size, so without this a warm `/layer` could not be fast.
_SERIES_FRESH_SECONDS = 2.0
_SERIES_MAX_AGE_SECONDS = 60.0
_SERIES_CACHE_ENTRIES = 4096
_SERIES_CACHE_POINTS = 10**6

# Index blobs that `/stats` must fetch are read this many at a time: the cost is round trips.
_READ_THREADS = 8

# Limits on what a request may carry; anything larger is a malformed request (400).
_MAX_QUERY_BYTES = 64 * 1024
_MAX_QUERY_FIELDS = 32
_MAX_STEP = 2**63 - 1  # steps are int64 in event files

# Static files: the extension decides the MIME type explicitly (never `mimetypes`, which reads the
# Windows registry) and anything else is refused.
_STATIC_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".html": "text/html",
}
# One path segment of a static file: no leading dot (so no "..", no hidden files), no separators.
_STATIC_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_STATIC_PREFIXES = (f"/data/plugin/{metadata.PLUGIN_NAME}/static/", "/static/")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_downsample(sampling_hints: Mapping[str, Any] | None) -> int:
    """Returns the `downsample` to pass to the data provider's `read_*` calls.

    A positive `--samples_per_plugin=cnnviz=N` is honoured. Everything else (no hint, the "keep
    all" hint 0, or a value that is not a positive integer) reads every stored step: TensorBoard
    already bounded what it stores, and a hint of 0 passed on as `downsample=0` would read back
    nothing (TensorBoard issue 5550).

    Args:
        sampling_hints: `TBContext.sampling_hints`, the parsed `--samples_per_plugin` dict.

    Returns:
        A positive int.

    Example:
        >>> read_downsample({"cnnviz": 0})
        1000000
        >>> read_downsample({"cnnviz": 25})
        25
        >>> read_downsample(None)
        1000000
    """
    hint = (sampling_hints or {}).get(metadata.PLUGIN_NAME)
    if isinstance(hint, int) and not isinstance(hint, bool) and hint > 0:
        return hint
    return metadata.ALL_POINTS


class CNNVizLoader(base_plugin.TBLoader):
    """Loads `CNNVizPlugin` and makes every logged step browsable by default.

    TensorBoard keeps only 10 random steps per tag of a third-party plugin unless told otherwise
    with `--samples_per_plugin=cnnviz=N`. `fix_flags` adds `cnnviz=0` ("keep every step", in both
    the Rust and the Python loader) when the user did not choose a value, so a step slider shows
    every epoch that was logged. An explicit user value, including `cnnviz=0`, is kept. With the
    Python loader (`--load_fast=false`) every kept step is held in memory; users with very long
    runs can cap it with `--samples_per_plugin=cnnviz=N`.

    Example:
        >>> import argparse
        >>> flags = argparse.Namespace(samples_per_plugin={"images": 5})
        >>> CNNVizLoader().fix_flags(flags)
        >>> flags.samples_per_plugin
        {'images': 5, 'cnnviz': 0}
    """

    def fix_flags(self, flags) -> None:
        """Defaults `flags.samples_per_plugin["cnnviz"]` to keep every step.

        TensorBoard 2.21's `program.TensorBoard.configure` calls this for the serve command after
        parsing, before any data loader starts. By then `--samples_per_plugin` has been parsed into
        a `{plugin_name: int}` dict (its argparse default `""` goes through the same parser, so
        it is `{}` when the flag is absent). A string can still arrive through
        `configure(samples_per_plugin="images=5")`; it is parsed the same way and replaced by a
        dict, which is what the loaders expect.

        Args:
            flags: The parsed `argparse.Namespace` of TensorBoard's flags.

        Raises:
            tensorboard.plugins.base_plugin.FlagsError: If `samples_per_plugin` is a string that
                is not a list of `name=int` pairs.

        Example:
            >>> import argparse
            >>> flags = argparse.Namespace(samples_per_plugin="cnnviz=7")
            >>> CNNVizLoader().fix_flags(flags)
            >>> flags.samples_per_plugin
            {'cnnviz': 7}
        """
        if not hasattr(flags, "samples_per_plugin"):
            return  # not TensorBoard's serve flags; nothing reads sampling from here
        value = flags.samples_per_plugin
        if value is None:
            value = {}
        elif isinstance(value, str):
            value = _parse_samples_per_plugin(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        else:
            return  # an unknown type: leave the user's value alone rather than guess
        value.setdefault(metadata.PLUGIN_NAME, DEFAULT_SAMPLES_PER_TAG)
        flags.samples_per_plugin = value

    def load(self, context: base_plugin.TBContext) -> CNNVizPlugin:
        """Returns the plugin for this TensorBoard.

        Args:
            context: The `TBContext` TensorBoard builds from its flags.

        Returns:
            A `CNNVizPlugin`.

        Example:
            >>> CNNVizLoader().load(base_plugin.TBContext()).plugin_name
            'cnnviz'
        """
        return CNNVizPlugin(context)


def _parse_samples_per_plugin(value: str) -> dict[str, int]:
    """Parses `"a=1,b=2"` like TensorBoard's own `--samples_per_plugin` parser."""
    result = {}
    for token in value.split(","):
        if not token.strip():
            continue
        name, _, count = token.partition("=")
        try:
            result[name.strip()] = int(count)  # int("") fails too: a token without "="
        except ValueError:
            raise base_plugin.FlagsError(
                "samples_per_plugin must be comma-separated name=count pairs. "
                f"Received: samples_per_plugin={value!r}"
            ) from None
    return result


class _LRUCache:
    """A thread-safe least-recently-used cache bounded by total size and by entry count."""

    def __init__(self, max_size: int, max_entries: int):
        self._max_size, self._max_entries = max_size, max_entries
        self._entries: collections.OrderedDict[Any, tuple[Any, int]] = collections.OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            return hit[0]

    def put(self, key, value, size: int) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old[1]
            self._entries[key] = (value, size)
            self._size += size
            while self._entries and (
                self._size > self._max_size or len(self._entries) > self._max_entries
            ):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._size -= dropped


class _Series:
    """The data of one (run, tag) as last read, with when it was read and an index by step."""

    __slots__ = ("read_at", "data", "by_step")

    def __init__(self, data: list[provider.BlobSequenceDatum]):
        self.read_at = time.monotonic()
        self.data = sorted(data, key=lambda d: d.step)
        self.by_step = {d.step: d for d in self.data}

    def serves(self, step: int | None) -> bool:
        age = time.monotonic() - self.read_at
        if age < _SERIES_FRESH_SECONDS:
            return True
        return step is not None and step in self.by_step and age < _SERIES_MAX_AGE_SECONDS


def _route(handler: Callable[..., wrappers.Response]):
    """Wraps a route method: errors become JSON bodies, never an opaque 500."""

    @functools.wraps(handler)
    @wrappers.Request.application
    def app(self, request: wrappers.Request) -> wrappers.Response:
        try:
            return handler(self, request)
        except errors.PublicError as e:
            return _json_response(request, {"error": str(e)}, code=e.http_code, headers=e.headers)
        except Exception:  # a bug of ours or a provider failure: say so in JSON, keep serving
            logger.exception("cnnviz: %s failed", request.path)
            return _json_response(
                request,
                {"error": "internal error in the cnnviz plugin; see the TensorBoard log"},
                code=500,
            )

    return app


class CNNVizPlugin(base_plugin.TBPlugin):
    """Serves cnnviz pictures, statistics and the dashboard's files to the "CNN Viz" tab.

    The tab is enabled when the logdir holds cnnviz summaries (`is_active` is always False:
    activation comes from data). Each `*_impl` method is the plain-data core of one route; see
    `tb_cnnviz/http_api.md`.

    Args:
        context: The `TBContext` TensorBoard passes to every plugin. Only `data_provider` and
            `sampling_hints` are used.

    Example:
        >>> plugin = CNNVizPlugin(base_plugin.TBContext(sampling_hints={"cnnviz": 0}))
        >>> plugin.frontend_metadata().tab_name
        'CNN Viz'
        >>> sorted(plugin.get_plugin_apps())[:3]
        ['/blob', '/index.js', '/layer']
    """

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._data_provider = context.data_provider
        self._downsample = read_downsample(context.sampling_hints)
        self._index_cache = _LRUCache(_INDEX_CACHE_BYTES, _INDEX_CACHE_ENTRIES)
        self._series_cache = _LRUCache(_SERIES_CACHE_POINTS, _SERIES_CACHE_ENTRIES)
        self._reported_tags: set[tuple[str, str, str]] = set()
        self._reported_plans: set[tuple[str, str]] = set()
        self._read_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._read_pool_lock = threading.Lock()

    # TensorBoard's plugin interface.

    def get_plugin_apps(self) -> dict[str, Callable]:
        """Returns the WSGI apps of every route, keyed by route.

        Example:
            >>> "/tags" in CNNVizPlugin(base_plugin.TBContext()).get_plugin_apps()
            True
        """
        return {
            "/index.js": self._serve_index_js,
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/tags": self._serve_tags,
            "/layer": self._serve_layer,
            "/blob": self._serve_blob,
            "/stats": self._serve_stats,
            "/plan": self._serve_plan,
        }

    def is_active(self) -> bool:
        """Returns False: the tab is enabled by cnnviz data in the logdir, not by this call.

        Example:
            >>> CNNVizPlugin(base_plugin.TBContext()).is_active()
            False
        """
        return False

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        """Returns how TensorBoard loads the tab: the ES module `/index.js`, titled "CNN Viz".

        Example:
            >>> CNNVizPlugin(base_plugin.TBContext()).frontend_metadata().es_module_path
            '/index.js'
        """
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="CNN Viz")

    # Routes: parse the request, call an `_impl`, respond.

    @_route
    def _serve_index_js(self, request):
        body, content_type = self.static_impl("index.js")
        return http_util.Respond(request, body, content_type)

    @_route
    def _serve_static(self, request):
        path = request.path
        for prefix in _STATIC_PREFIXES:
            if path.startswith(prefix):
                body, content_type = self.static_impl(path[len(prefix) :])
                return http_util.Respond(request, body, content_type)
        raise errors.NotFoundError("no such file")

    @_route
    def _serve_runs(self, request):
        _query(request)  # still reject malformed query strings
        ctx, eid = _request_context(request)
        return _json_response(request, self.runs_impl(ctx, eid))

    @_route
    def _serve_tags(self, request):
        params = _query(request)
        ctx, eid = _request_context(request)
        return _json_response(request, self.tags_impl(ctx, eid, run=params.get("run")))

    @_route
    def _serve_layer(self, request):
        params = _query(request)
        run, tag = _required(params, "run"), _required(params, "tag")
        step = _parse_step(params["step"]) if "step" in params else None
        ctx, eid = _request_context(request)
        return _json_response(request, self.layer_impl(ctx, eid, run, tag, step))

    @_route
    def _serve_blob(self, request):
        params = _query(request)
        key = _required(params, "key")
        ctx, eid = _request_context(request)
        body, content_type = self.blob_impl(ctx, eid, key)
        return http_util.Respond(request, body, content_type, expires=BLOB_MAX_AGE_SECONDS)

    @_route
    def _serve_stats(self, request):
        params = _query(request)
        run, tag = _required(params, "run"), _required(params, "tag")
        ctx, eid = _request_context(request)
        return _json_response(request, self.stats_impl(ctx, eid, run, tag))

    @_route
    def _serve_plan(self, request):
        params = _query(request)
        run = _required(params, "run")
        ctx, eid = _request_context(request)
        return _json_response(request, self.plan_impl(ctx, eid, run))

    # The plain-data core of each route.

    def static_impl(self, relative_path: str) -> tuple[bytes, str]:
        """Returns `(bytes, content_type)` of a dashboard file from the `tb_cnnviz.frontend` folder.

        Only `.js`, `.css`, `.svg`, `.png` and `.html` files are served, by a path made of plain
        names (no `..`, no hidden files, no absolute paths or backslashes), that stays inside the
        folder after resolving symlinks.

        Args:
            relative_path: The path under `static/`, e.g. `"model.js"`.

        Returns:
            The file's bytes and its MIME type.

        Raises:
            tensorboard.errors.NotFoundError: For anything else.

        Example:
            >>> CNNVizPlugin(base_plugin.TBContext()).static_impl("../plugin.py")
            Traceback (most recent call last):
            ...
            tensorboard.errors.NotFoundError: Not found: no such file: '../plugin.py'
        """
        not_found = errors.NotFoundError(f"no such file: {relative_path[:200]!r}")
        name = relative_path[:-1] if relative_path.endswith("/") else relative_path
        segments = name.split("/")
        if len(name) > 512 or not all(_STATIC_SEGMENT.fullmatch(s) for s in segments):
            raise not_found
        content_type = _STATIC_TYPES.get(pathlib.PurePosixPath(name).suffix.lower())
        if content_type is None:
            raise not_found
        root = _frontend_dir()
        if root is None:
            raise not_found
        try:
            target = root.joinpath(*segments).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                raise not_found
            return target.read_bytes(), content_type
        except OSError:
            raise not_found from None

    def runs_impl(self, ctx, experiment_id: str) -> list[str]:
        """Returns the sorted names of the runs that hold readable cnnviz data.

        A run counts when it holds a readable picture tag or a callback's plan records.

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request (usually `""`).

        Returns:
            A sorted list of run names.

        Example:
            >>> from tensorboard.backend.event_processing import data_provider
            >>> from tensorboard.backend.event_processing import plugin_event_multiplexer
            >>> empty = data_provider.MultiplexerDataProvider(
            ...     plugin_event_multiplexer.EventMultiplexer(), "/nonexistent")
            >>> plugin = CNNVizPlugin(base_plugin.TBContext(data_provider=empty))
            >>> from tensorboard import context
            >>> plugin.runs_impl(context.RequestContext(), "")
            []
        """
        listing = self._list(ctx, experiment_id)
        return sorted(
            run
            for run, series_by_tag in listing.items()
            if any(self._parse_tag(experiment_id, run, t, s) for t, s in series_by_tag.items())
        )

    def tags_impl(self, ctx, experiment_id: str, run: str | None = None) -> dict[str, Any]:
        """Returns `{run: {tag: {"kind", "layer", "steps", "description", …static facts}}}`.

        `steps` lists every stored step in ascending order. Only picture tags are listed: plan
        records (`plan_impl`) and the data kinds (`metadata.DATA_KINDS`) are not. Tags written
        by a newer format version (one warning) or with malformed metadata (logged once) are
        left out, and so are runs left with no tags.

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request.
            run: Only this run; by default every run.

        Returns:
            Plain JSON-ready data.

        Raises:
            tensorboard.errors.NotFoundError: If `run` is given and holds no cnnviz data.

        Example:
            >>> from tensorboard.backend.event_processing import data_provider
            >>> from tensorboard.backend.event_processing import plugin_event_multiplexer
            >>> empty = data_provider.MultiplexerDataProvider(
            ...     plugin_event_multiplexer.EventMultiplexer(), "/nonexistent")
            >>> plugin = CNNVizPlugin(base_plugin.TBContext(data_provider=empty))
            >>> from tensorboard import context
            >>> plugin.tags_impl(context.RequestContext(), "")
            {}
        """
        run_filter = None if run is None else provider.RunTagFilter(runs=[run])
        listing = self._list(ctx, experiment_id, run_filter)
        if run is not None and not listing.get(run):
            raise self._no_run(ctx, experiment_id, run)
        sequences = self._read(ctx, experiment_id, run_filter)
        result: dict[str, Any] = {}
        for run_name, series_by_tag in listing.items():
            tags = {}
            for tag, series in series_by_tag.items():
                parsed = self._parse_tag(experiment_id, run_name, tag, series)
                if parsed is None or parsed.kind not in metadata.KINDS:
                    continue  # unreadable, a plan (see /plan), or numbers (metadata.DATA_KINDS)
                # Remembered, so the /layer requests that follow a /tags are answered at once.
                data = sequences.get(run_name, {}).get(tag)
                steps = list(self._remember(experiment_id, run_name, tag, data).by_step)
                # Static facts the writer stored (class names, method, ...) come first, so the
                # keys every tag has cannot be shadowed by them.
                tags[tag] = {
                    **parsed.extra,
                    "kind": parsed.kind,
                    "layer": parsed.layer,
                    "steps": steps,
                    "description": series.description or "",
                }
            if tags:
                result[run_name] = dict(sorted(tags.items()))
        return dict(sorted(result.items()))

    def layer_impl(
        self, ctx, experiment_id: str, run: str, tag: str, step: int | None = None
    ) -> dict[str, Any]:
        """Returns one layer's pictures at one step: its decoded index and its atlas URLs.

        `atlases[i]` is the relative URL of the PNG named by `index["atlases"][i]["blob"]`. When
        the step cannot be drawn by this version (a newer format, a malformed index, or a datum
        with no blobs), the answer is still 200 with `"index": null`, `"atlases": []` and a
        `"warning"` saying why, so the dashboard shows a message instead of an error.

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request.
            run: The run name.
            tag: The tag, e.g. `"conv2d/weights"`.
            step: The step; the latest step by default.

        Returns:
            `{"run", "tag", "step", "wall_time", "index", "atlases"}`, plus `"warning"` when
            `index` is null.

        Raises:
            tensorboard.errors.NotFoundError: If the run, tag or step does not exist; the message
                lists what does.
        """
        series = self._series(ctx, experiment_id, run, tag, step)
        if step is None:
            datum = series.data[-1]
        else:
            datum = series.by_step.get(step)
            if datum is None:
                raise errors.NotFoundError(
                    f"no step {step} in run {run!r}, tag {tag!r}; logged steps: "
                    + metadata.names_text(series.by_step)
                )
        index, warning = self._index(ctx, datum)
        atlases = []
        if index is not None:
            atlases = [
                "blob?key=" + urllib.parse.quote(datum.values[atlas["blob"]].blob_key, safe="")
                for atlas in index["atlases"]
            ]
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

    def stats_impl(self, ctx, experiment_id: str, run: str, tag: str) -> dict[str, Any]:
        """Returns every step's statistics of one (run, tag), for the inspector's charts.

        Each entry of `series` is that step's index without its `ranges` and `atlases`, plus
        `step` and `wall_time`. Steps whose index cannot be read are listed in `skipped`.

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request.
            run: The run name.
            tag: The tag.

        Returns:
            `{"steps": [...], "series": [{"step", "wall_time", "filters", "stats",
            "layer_stats", "total_filters", ...}], "skipped": [...]}`.

        Raises:
            tensorboard.errors.NotFoundError: If the run or tag does not exist.
        """
        data = self._series(ctx, experiment_id, run, tag).data
        series, skipped = [], []
        for datum, (index, _) in zip(data, self._indexes(ctx, data), strict=True):
            if index is None:
                skipped.append(datum.step)
                continue
            entry = {"step": datum.step, "wall_time": datum.wall_time}
            entry.update((k, v) for k, v in index.items() if k not in ("ranges", "atlases"))
            series.append(entry)
        return {"steps": [d.step for d in data], "series": series, "skipped": skipped}

    def plan_impl(self, ctx, experiment_id: str, run: str) -> dict[str, Any]:
        """Returns what the callbacks drew at each step of a run, what they left out, and why.

        The plan records of every owner (`"<owner>/plan"` tags, see `tb_cnnviz.summary`) are
        merged by step. A tag drawn by one owner at a step is not listed as skipped there.
        `left_out` holds the tags skipped at some step, drawn at none and without any picture
        in the run, each with its latest reason. `budget` and `train_seconds` are the latest
        given (by step, then wall time); `own_seconds` adds up each owner's latest, as each
        callback counts only its own time. A run without plan records (logs written before
        plans existed) has empty `steps` and `left_out` and null numbers. Records written by a
        newer tb-cnnviz (one warning) or malformed (logged once per run) are skipped.

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request.
            run: The run name.

        Returns:
            `{"run", "budget", "steps": [{"step", "drawn", "skipped"}], "left_out",
            "train_seconds", "own_seconds"}`, steps ascending.

        Raises:
            tensorboard.errors.NotFoundError: If the run holds no cnnviz data.
        """
        listing = self._list(ctx, experiment_id, provider.RunTagFilter(runs=[run])).get(run)
        if not listing:
            raise self._no_run(ctx, experiment_id, run)
        kinds = {tag: self._parse_tag(experiment_id, run, tag, s) for tag, s in listing.items()}
        plan_tags = sorted(t for t, p in kinds.items() if p and p.kind == metadata.PLAN_KIND)
        picture_tags = {t for t, p in kinds.items() if p and p.kind != metadata.PLAN_KIND}
        data = []
        if plan_tags:
            found = self._read(ctx, experiment_id, provider.RunTagFilter([run], plan_tags))
            data = [(tag, d) for tag in plan_tags for d in found.get(run, {}).get(tag, [])]
        records = self._read_each(
            lambda d: self._plan_record(ctx, experiment_id, run, d),
            _plan_cache_key,
            [d for _, d in data],
        )
        merged = _merge_plans(
            [(tag, d, r) for (tag, d), r in zip(data, records, strict=True) if r is not None],
            picture_tags,
        )
        return {"run": run, **merged}

    def blob_impl(self, ctx, experiment_id: str, key: str) -> tuple[bytes, str]:
        """Returns `(bytes, content_type)` of one blob: a PNG atlas or an index (JSON).

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request (unused: the key names the blob).
            key: A blob key from `layer_impl` (opaque).

        Returns:
            The blob's bytes and `image/png`, `application/json` or `application/octet-stream`.

        Raises:
            tensorboard.errors.NotFoundError: If the data provider has no such blob.
        """
        del experiment_id  # a blob key already names its experiment
        try:
            data = self._data_provider.read_blob(ctx, blob_key=key)
        except (errors.PermissionDeniedError, errors.UnauthenticatedError):
            raise
        except Exception as e:  # providers raise anything from a bad key: b64, JSON, KeyError
            logger.debug("cnnviz: read_blob(%r) failed: %r", key, e)
            raise errors.NotFoundError(f"no blob with key {key[:200]!r}") from None
        data = bytes(data)
        if data.startswith(_PNG_MAGIC):
            return data, "image/png"
        if data[:1] == b"{":
            return data, "application/json"
        return data, "application/octet-stream"

    # Reading helpers.

    def _list(self, ctx, experiment_id, run_tag_filter=None):
        return self._data_provider.list_blob_sequences(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=run_tag_filter,
        )

    def _read(self, ctx, experiment_id, run_tag_filter=None):
        return self._data_provider.read_blob_sequences(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            downsample=self._downsample,
            run_tag_filter=run_tag_filter,
        )

    def _remember(self, experiment_id, run, tag, data) -> _Series:
        """Caches the data just read for one (run, tag) and returns it as a `_Series`."""
        series = _Series(data or [])
        if series.data:
            self._series_cache.put((experiment_id, run, tag), series, len(series.data))
        return series

    def _series(self, ctx, experiment_id, run, tag, step=None) -> _Series:
        """The stored data of one (run, tag), recent enough to answer for `step` (None: latest).

        Raises:
            tensorboard.errors.NotFoundError: If the run or tag has no data; the message names
                the runs or tags that exist.
        """
        cached = self._series_cache.get((experiment_id, run, tag))
        if cached is not None and cached.serves(step):
            return cached
        found = self._read(ctx, experiment_id, provider.RunTagFilter(runs=[run], tags=[tag]))
        series = self._remember(experiment_id, run, tag, found.get(run, {}).get(tag))
        if series.data:
            return series
        tags = self._list(ctx, experiment_id, provider.RunTagFilter(runs=[run])).get(run)
        if not tags:
            raise self._no_run(ctx, experiment_id, run)
        raise errors.NotFoundError(
            f"no cnnviz tag {tag!r} in run {run!r}; its tags: " + metadata.names_text(sorted(tags))
        )

    def _parse_tag(self, experiment_id, run, tag, series) -> metadata.PluginMetadata | None:
        """Parses a tag's plugin metadata; None for newer or malformed data (reported once)."""
        try:
            return metadata.parse_plugin_metadata(bytes(series.plugin_content or b""))
        except (TypeError, ValueError) as e:
            key = (experiment_id, run, tag)
            if key not in self._reported_tags:
                self._reported_tags.add(key)
                logger.warning("cnnviz: skipping run %r, tag %r: %s", run, tag, e)
            return None

    def _indexes(self, ctx, data) -> list[tuple[dict[str, Any] | None, str | None]]:
        """`_index` of many datums."""
        return self._read_each(lambda d: self._index(ctx, d), _index_cache_key, data)

    def _read_each(self, read, cache_key, data) -> list:
        """`read` of many datums; those not cached are read a few at a time in parallel."""
        missing = [d for d in data if d.values and self._index_cache.get(cache_key(d)) is None]
        if len(missing) > 1:
            list(self._pool().map(read, missing))  # fills the cache
        return [read(d) for d in data]

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._read_pool_lock:
            if self._read_pool is None:
                self._read_pool = concurrent.futures.ThreadPoolExecutor(
                    _READ_THREADS, thread_name_prefix="cnnviz-read"
                )
            return self._read_pool

    def _cached_index(self, datum):
        return self._index_cache.get(_index_cache_key(datum))

    def _index(self, ctx, datum) -> tuple[dict[str, Any] | None, str | None]:
        """Returns `(index, None)` or `(None, why)` for one datum, through the LRU cache."""
        if not datum.values:
            return None, f"step {datum.step} holds no blobs (a truncated or partial write)"
        cached = self._cached_index(datum)
        if cached is not None:
            return cached
        raw = bytes(self._data_provider.read_blob(ctx, blob_key=datum.values[0].blob_key))
        why = None
        try:
            index = metadata.decode_index(raw)
        except (TypeError, ValueError) as e:
            index, why = None, f"step {datum.step} has a malformed index: {e}"
        else:
            if index is None:
                why = (
                    f"step {datum.step} was written by a newer tb-cnnviz (format version above "
                    f"{metadata.FORMAT_VERSION}); upgrade tb-cnnviz to see it"
                )
            else:
                try:
                    metadata.check_index(index, len(datum.values))
                except ValueError as e:
                    index, why = None, f"step {datum.step} has a malformed {e}"
        self._index_cache.put(_index_cache_key(datum), (index, why), len(raw))
        return index, why

    def _plan_record(self, ctx, experiment_id, run, datum) -> dict[str, Any] | None:
        """One datum's plan record, checked, through the LRU cache; None when unreadable."""
        if not datum.values:
            return None
        cached = self._index_cache.get(_plan_cache_key(datum))
        if cached is not None:
            return cached[0]
        raw = bytes(self._data_provider.read_blob(ctx, blob_key=datum.values[0].blob_key))
        try:
            record = metadata.decode_index(raw)  # None (one warning) when newer
            if record is not None:
                _check_plan(record)
        except (TypeError, ValueError) as e:
            record = None
            if (experiment_id, run) not in self._reported_plans:
                self._reported_plans.add((experiment_id, run))
                logger.warning("cnnviz: skipping plan records of run %r: %s", run, e)
        self._index_cache.put(_plan_cache_key(datum), (record,), len(raw))
        return record

    def _no_run(self, ctx, experiment_id, run) -> errors.NotFoundError:
        return errors.NotFoundError(
            f"no cnnviz run named {run!r}; runs with cnnviz data: "
            + metadata.names_text(sorted(self._list(ctx, experiment_id)))
        )


def _plan_cache_key(datum) -> tuple[str, str, float]:
    return metadata.PLAN_KIND, datum.values[0].blob_key, datum.wall_time


def _check_plan(record: dict[str, Any]) -> None:
    """Raises ValueError unless `record` is a plan record as `summary.write_plan` writes it."""
    drawn, skipped = record.get("drawn", []), record.get("skipped", {})
    if record.get("kind") != metadata.PLAN_KIND:
        raise ValueError(f"a plan record needs kind 'plan'. Received: {record.get('kind')!r}")
    if not isinstance(drawn, list) or not all(isinstance(t, str) for t in drawn):
        raise ValueError("a plan record's 'drawn' must be a list of tags")
    if not isinstance(skipped, dict) or not all(isinstance(r, str) for r in skipped.values()):
        raise ValueError("a plan record's 'skipped' must map tags to reasons")
    for name in ("budget", "train_seconds", "own_seconds"):
        value = record.get(name)
        if value is not None and not _finite(value):
            raise ValueError(f"a plan record's {name!r} must be a number or null")


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _merge_plans(records, picture_tags) -> dict[str, Any]:
    """Merges `(owner tag, datum, record)` triples into the body of a `/plan` answer."""
    by_step: dict[int, tuple[dict[str, None], dict[str, str]]] = {}
    latest: dict[str, tuple[int, float, dict[str, Any]]] = {}  # per owner
    for tag, datum, record in records:
        drawn, skipped = by_step.setdefault(datum.step, ({}, {}))
        drawn.update(dict.fromkeys(record.get("drawn", [])))
        skipped.update(record.get("skipped", {}))
        if tag not in latest or (datum.step, datum.wall_time) > latest[tag][:2]:
            latest[tag] = (datum.step, datum.wall_time, record)
    steps, drawn_ever, reasons = [], set(picture_tags), {}
    for step in sorted(by_step):
        drawn, skipped = by_step[step]
        skipped = {t: r for t, r in sorted(skipped.items()) if t not in drawn}
        drawn_ever.update(drawn)
        reasons.update(skipped)  # steps ascend, so the latest reason stays
        steps.append({"step": step, "drawn": list(drawn), "skipped": skipped})

    def newest(name):  # the value of the latest record that gives one
        given = [(d.step, d.wall_time, r[name]) for _, d, r in records if r.get(name) is not None]
        return max(given, default=(0, 0.0, None))[2]

    own = [r["own_seconds"] for _, _, r in latest.values() if r.get("own_seconds") is not None]
    return {
        "budget": newest("budget"),
        "steps": steps,
        "left_out": {t: r for t, r in sorted(reasons.items()) if t not in drawn_ever},
        "train_seconds": newest("train_seconds"),
        "own_seconds": round(sum(own), 3) if own else None,
    }


def _index_cache_key(datum) -> tuple[str, float]:
    # The wall time joins the blob key so that a run rewritten under the same name (the same
    # keys with the Python loader) is never answered from the old entry.
    return datum.values[0].blob_key, datum.wall_time


def _frontend_dir() -> pathlib.Path | None:
    """The resolved folder of the `tb_cnnviz.frontend` package, or None when it is missing."""
    try:
        from tb_cnnviz import frontend
    except ImportError:
        return None
    return pathlib.Path(frontend.__file__).resolve().parent


def _request_context(request: wrappers.Request):
    return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)


def _query(request: wrappers.Request) -> dict[str, str]:
    """Parses the query string strictly: UTF-8, each parameter at most once, bounded size.

    Werkzeug's own parser silently keeps undecodable bytes and repeated parameters; a request
    that is not what the dashboard sends is answered 400 instead of being guessed at.
    """
    raw = request.environ.get("QUERY_STRING", "")
    try:
        data = raw.encode("latin-1")  # PEP 3333: the raw bytes, as latin-1 code points
    except UnicodeEncodeError:
        raise errors.InvalidArgumentError("the query string is not valid") from None
    if len(data) > _MAX_QUERY_BYTES:
        raise errors.InvalidArgumentError(
            f"the query string is longer than {_MAX_QUERY_BYTES} bytes"
        )
    params: dict[str, str] = {}
    for field in data.split(b"&"):
        if not field:
            continue
        name, _, value = field.partition(b"=")
        name, value = _unquote(name), _unquote(value)
        if name in params:
            raise errors.InvalidArgumentError(f"parameter {name!r} is given more than once")
        params[name] = value
        if len(params) > _MAX_QUERY_FIELDS:
            raise errors.InvalidArgumentError("the query string has too many parameters")
    return params


def _unquote(part: bytes) -> str:
    try:
        return urllib.parse.unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidArgumentError("the query string is not valid UTF-8") from None


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise errors.InvalidArgumentError(f"missing required parameter {name!r}")
    return value


def _parse_step(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > _MAX_STEP:
        raise errors.InvalidArgumentError(
            f"step must be an integer from 0 to {_MAX_STEP}. Received: step={text[:40]!r}"
        )
    return int(text)


def _json_response(request, obj, code: int = 200, headers=None):
    try:
        text = json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except ValueError:  # NaN or Inf from a hand-made index: TensorBoard's JSON spells them out
        text = json.dumps(json_util.Cleanse(obj), ensure_ascii=False, separators=(",", ":"))
    # "<", ">" and "&" only occur inside JSON strings, where escaping them keeps the JSON equal
    # and makes run or layer names holding HTML inert even if a page misuses the body.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return http_util.Respond(
        request, text.encode("utf-8"), "application/json", code=code, headers=headers
    )
