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

import numpy as np
from tensorboard import errors, plugin_util
from tensorboard.backend import http_util, json_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_cnnviz import metadata, similarity
from tb_cnnviz.reader import natural_key

__all__ = [
    "BLOB_MAX_AGE_SECONDS",
    "DEFAULT_SAMPLES_PER_TAG",
    "SIMILARITY_MODES",
    "CNNVizLoader",
    "CNNVizPlugin",
    "ReferenceMismatchError",
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
# reused for `SERIES_FRESH_SECONDS`, and for up to `_SERIES_MAX_AGE_SECONDS` when it already
# holds the step asked for (a logged step never changes). Every read call to the Rust data server
# costs about 40 ms, whatever its size, so without this a warm `/layer` could not be fast.
SERIES_FRESH_SECONDS = 2.0
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

#: What `/similarity` compares: a layer of a run over its steps, runs at a step (every layer),
#: or the layers of a run at a step.
SIMILARITY_MODES = ("time", "runs", "layers")
# The arrays of responses data (Gram triangles, z-scores, examples) decoded once per blob: a
# Gram triangle over 256 reference images is 263 KB as float64, so this holds about a thousand.
_ARRAY_CACHE_BYTES = 256 * 2**20
_ARRAY_CACHE_ENTRIES = 16384
# CKA heatmaps already answered, keyed by the blobs they were computed from.
_MATRIX_CACHE_ENTRIES = 64
_MAX_COMPARED_RUNS = 64  # runs in one /similarity?mode=runs
# The kinds /tags lists: the pictures, and the responses the tab's comparison views read.
_LISTED_KINDS = (*metadata.KINDS, metadata.RESPONSES_KIND)
# How to get the data that comparing runs needs, for runs logged without it.
_REFERENCES_HOWTO = (
    "log reference images to compare runs: CNNViz(..., reference_images=x_val[:256]) (or the "
    "References callback), the same images for every run"
)


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
        if age < SERIES_FRESH_SECONDS:
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


class ReferenceMismatchError(errors.PublicError):
    """Two data to compare were computed from different reference images: a 409 Conflict."""

    http_code = 409


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
        ['/alignment', '/blob', '/examples']
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
        self._array_cache = _LRUCache(_ARRAY_CACHE_BYTES, _ARRAY_CACHE_ENTRIES)
        self._matrix_cache = _LRUCache(_MATRIX_CACHE_ENTRIES, _MATRIX_CACHE_ENTRIES)

    def forget_similarity(self) -> None:
        """Forgets the answered similarity heatmaps; decoded arrays stay cached.

        The next `/similarity` request computes its heatmap again from cached Gram matrices,
        as after a new step: `benchmarks/similarity_route.py` measures that case.

        Example:
            >>> from tensorboard.plugins import base_plugin
            >>> CNNVizPlugin(base_plugin.TBContext(logdir="logs")).forget_similarity()
        """
        self._matrix_cache = _LRUCache(_MATRIX_CACHE_ENTRIES, _MATRIX_CACHE_ENTRIES)

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
            "/similarity": self._serve_similarity,
            "/alignment": self._serve_alignment,
            "/examples": self._serve_examples,
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
        step = _step_param(params)
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

    @_route
    def _serve_similarity(self, request):
        params = _query(request)
        mode = _required(params, "mode")
        step = _step_param(params)
        runs = _parse_runs(params["runs"]) if "runs" in params else None
        ctx, eid = _request_context(request)
        body = self.similarity_impl(
            ctx, eid, mode, layer=params.get("layer"), run=params.get("run"), runs=runs, step=step
        )
        return _json_response(request, body)

    @_route
    def _serve_alignment(self, request):
        params = _query(request)
        layer, run_a, run_b = (_required(params, name) for name in ("layer", "a", "b"))
        step_a, step_b = _step_param(params, "a_step"), _step_param(params, "b_step")
        ctx, eid = _request_context(request)
        body = self.alignment_impl(ctx, eid, layer, (run_a, step_a), (run_b, step_b))
        return _json_response(request, body)

    @_route
    def _serve_examples(self, request):
        params = _query(request)
        run, layer = _required(params, "run"), _required(params, "layer")
        step = _step_param(params)
        ctx, eid = _request_context(request)
        return _json_response(request, self.examples_impl(ctx, eid, run, layer, step))

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

        `steps` lists every stored step in ascending order. Picture tags are listed, and each
        layer's responses to the reference images (kind `"responses"`: no pictures of their own,
        the tab draws dataset examples and similarity from them through `/examples`,
        `/similarity` and `/alignment`). Plan records (`plan_impl`) and the run's reference
        images are not. Tags written
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
                if parsed is None or parsed.kind not in _LISTED_KINDS:
                    continue  # unreadable, a plan (see /plan), or the reference images
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
        if tag.rpartition("/")[2] == metadata.RESPONSES_KIND:
            index = None
            warning = (
                f"{tag!r} holds the layer's responses to the reference images, not pictures; "
                "/examples serves its dataset examples and /similarity its similarity"
            )
        else:
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
            `{"run", "budget", "steps": [{"step", "drawn", "skipped", "costs"}], "costs",
            "left_out", "train_seconds", "own_seconds"}`, steps ascending. A step's `costs`
            give each drawn tag's `seconds` and `bytes` (records written before costs were
            recorded give none); the top-level `costs` give each tag's latest, with its
            `step`.

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

    def similarity_impl(
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
        """Returns a linear CKA heatmap of layer responses: over time, across runs, or layers.

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
            data = self._responses_series(ctx, experiment_id, run, layer).data
            matrix, warning = self._cka(ctx, data, [f"step {d.step}" for d in data])
            body = {"mode": mode, "run": run, "layer": layer, "steps": [d.step for d in data]}
            return _with_warning({**body, "matrix": matrix}, warning)
        if mode == "layers":
            run = _needed(run, "run", mode)
            layers = self._responses_layers(ctx, experiment_id, [run])[run]
            series = self._many_series(ctx, experiment_id, [(run, t) for t in layers.values()])
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
            data = [by_layer[name].by_step[step] for name in names]
            matrix, warning = self._cka(ctx, data, [repr(name) for name in names])
            body = {"mode": mode, "run": run, "step": step, "layers": names, "matrix": matrix}
            return _with_warning(body, warning)
        runs = runs if runs is not None else ([run] if run is not None else None)
        runs = _needed(runs, "runs", mode)
        if len(runs) > _MAX_COMPARED_RUNS or len(set(runs)) != len(runs):
            raise errors.InvalidArgumentError(
                f"runs must name at most {_MAX_COMPARED_RUNS} different runs. Received: "
                f"{len(runs)} names, {len(set(runs))} different"
            )
        listing = self._responses_layers(ctx, experiment_id, runs)
        if layer is not None:
            for name in runs:
                if layer not in listing[name]:
                    raise self._no_responses_layer(name, layer, listing[name])
            names = [layer]
        else:
            names = [n for n in listing[runs[0]] if all(n in listing[r] for r in runs[1:])]
            if not names:
                detail = "; ".join(f"{r}: {metadata.names_text(listing[r])}" for r in runs)
                raise errors.NotFoundError(f"the runs share no layer with responses ({detail})")
        pairs = [(r, metadata.tag_for(n, metadata.RESPONSES_KIND)) for n in names for r in runs]
        series = self._many_series(ctx, experiment_id, pairs, step)
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
            data = [series[(r, tag)].by_step[step] for r in runs]
            matrix, warning = self._cka(ctx, data, [repr(r) for r in runs])
            matrices.append(matrix)
            warnings += [warning] if warning else []
        body = {"mode": mode, "step": step, "runs": runs, "layers": names, "matrices": matrices}
        return _with_warning(body, " ".join(dict.fromkeys(warnings)) or None)

    def alignment_impl(
        self,
        ctx,
        experiment_id: str,
        layer: str,
        a: tuple[str, int | None],
        b: tuple[str, int | None],
    ) -> dict[str, Any]:
        """Returns run B's filters matched one-to-one to run A's, with each match's correlation.

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
            datum = self._responses_datum(ctx, experiment_id, run, layer, step)
            sides.append((run, datum, self._responses_index_or_404(ctx, run, layer, datum)))
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

    def examples_impl(
        self, ctx, experiment_id: str, run: str, layer: str, step: int | None = None
    ) -> dict[str, Any]:
        """Returns each filter's dataset examples, and where the tab crops them from.

        `examples[f]` lists filter `f`'s top-k reference images, best first, each
        `[index, y, x, activation]` (1-D layers `[index, x, activation]`, 3-D `[index, z, y, x,
        activation]`), as `tb_cnnviz.compare.examples` gives them. `images` describes the run's
        stored reference images: atlas URLs and layout (image `i` is tile `i`), the tile size,
        `scale` (stored pixels per model pixel) and `stride` (model pixels per cell of the
        layer's `grid`), so the receptive field of `(y, x)` is centred on stored pixel
        `((y + 0.5) * stride[0] * scale, (x + 0.5) * stride[1] * scale)`. `images` is null,
        with a `warning`, when the run holds no reference images with the data's hash.

        Args:
            ctx: The `RequestContext` of the request.
            experiment_id: The experiment ID of the request.
            run: The run.
            layer: The layer.
            step: The step; the latest by default.

        Returns:
            `{"run", "layer", "step", "filters", "top_k", "grid", "references", "examples",
            "images"}`, plus `"warning"` when `images` is null.

        Raises:
            tensorboard.errors.NotFoundError: If the run, layer or step is not there.
        """
        datum = self._responses_datum(ctx, experiment_id, run, layer, step)
        index = self._responses_index_or_404(ctx, run, layer, datum)
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

    # Comparing runs: reading responses data.

    def _responses_layers(self, ctx, experiment_id, runs) -> dict[str, dict[str, str]]:
        """`{run: {layer: tag}}` of the responses series of `runs`, layers naturally sorted.

        Raises:
            tensorboard.errors.NotFoundError: If a run is unknown or holds no responses.
        """
        listing = self._list(ctx, experiment_id, provider.RunTagFilter(runs=runs))
        out = {}
        for run in runs:
            layers = {}
            for tag, series in (listing.get(run) or {}).items():
                parsed = self._parse_tag(experiment_id, run, tag, series)
                if parsed is not None and parsed.kind == metadata.RESPONSES_KIND:
                    layers[parsed.layer] = tag
            if not layers:
                raise self._no_responses_run(ctx, experiment_id, run, bool(listing.get(run)))
            out[run] = dict(sorted(layers.items(), key=lambda lt: natural_key(lt[0])))
        return out

    def _responses_series(self, ctx, experiment_id, run, layer, step=None) -> _Series:
        """The responses of one layer of one run, with a message saying what exists if none."""
        tag = metadata.tag_for(layer, metadata.RESPONSES_KIND)
        cached = self._series_cache.get((experiment_id, run, tag))
        if cached is not None and cached.serves(step):
            return cached
        found = self._read(ctx, experiment_id, provider.RunTagFilter(runs=[run], tags=[tag]))
        series = self._remember(experiment_id, run, tag, found.get(run, {}).get(tag))
        if series.data:
            return series
        layers = self._responses_layers(ctx, experiment_id, [run])[run]
        raise self._no_responses_layer(run, layer, layers)

    def _responses_datum(self, ctx, experiment_id, run, layer, step):
        series = self._responses_series(ctx, experiment_id, run, layer, step)
        if step is None:
            return series.data[-1]
        datum = series.by_step.get(step)
        if datum is None:
            raise errors.NotFoundError(
                f"no step {step} of {layer!r} responses in run {run!r}; logged steps: "
                + metadata.names_text(series.by_step)
            )
        return datum

    def _many_series(self, ctx, experiment_id, pairs, step=None) -> dict[tuple, _Series]:
        """`_Series` of many (run, tag) pairs; those not cached are read in one call."""
        out, missing = {}, []
        for run, tag in pairs:
            cached = self._series_cache.get((experiment_id, run, tag))
            if cached is not None and cached.serves(step):
                out[(run, tag)] = cached
            else:
                missing.append((run, tag))
        if missing:
            runs, tags = sorted({r for r, _ in missing}), sorted({t for _, t in missing})
            found = self._read(ctx, experiment_id, provider.RunTagFilter(runs=runs, tags=tags))
            for run, tag in missing:
                data = found.get(run, {}).get(tag)
                out[(run, tag)] = self._remember(experiment_id, run, tag, data)
        return out

    def _responses_index(self, ctx, datum) -> tuple[dict[str, Any] | None, str | None]:
        """`(index, None)` or `(None, why)` of one responses datum, through the LRU cache."""
        if not datum.values:
            return None, f"step {datum.step} holds no blobs (a truncated or partial write)"
        key = (metadata.RESPONSES_KIND, *_index_cache_key(datum))
        cached = self._index_cache.get(key)
        if cached is not None:
            return cached
        raw = bytes(self._data_provider.read_blob(ctx, blob_key=datum.values[0].blob_key))
        try:
            index, why = metadata.decode_index(raw), None
            if index is None:
                why = f"step {datum.step} was written by a newer tb-cnnviz; upgrade to compare it"
            elif not (
                isinstance(index.get("arrays"), dict)
                and isinstance(index.get("references"), str)
                and isinstance(index.get("count"), int)
            ):
                raise ValueError("a responses index needs 'arrays', 'references' and 'count'")
        except (TypeError, ValueError) as e:
            index, why = None, f"step {datum.step} has a malformed responses index: {e}"
        self._index_cache.put(key, (index, why), len(raw))
        return index, why

    def _array(self, ctx, datum, index, name) -> np.ndarray:
        """One array of a responses datum, decoded once (raises ValueError when malformed)."""
        try:
            spec = index["arrays"][name]
            blob = spec["blob"]
            if not (isinstance(blob, int) and 0 < blob < len(datum.values)):
                raise ValueError(f"array {name!r} names blob {blob!r}")
        except (KeyError, TypeError) as e:
            raise ValueError(f"no array {name!r} in the index ({e!r})") from None
        key = ("array", datum.values[blob].blob_key, datum.wall_time)
        cached = self._array_cache.get(key)
        if cached is not None:
            return cached
        raw = bytes(self._data_provider.read_blob(ctx, blob_key=datum.values[blob].blob_key))
        array = similarity.decode_array(raw, spec)
        array.flags.writeable = False  # shared by every request
        self._array_cache.put(key, array, array.nbytes)
        return array

    def _responses_index_or_404(self, ctx, run, layer, datum) -> dict[str, Any]:
        index, why = self._responses_index(ctx, datum)
        if index is None:
            raise errors.NotFoundError(f"{layer!r} responses in run {run!r}: {why}")
        return index

    def _array_or_404(self, ctx, run, layer, datum, index, name) -> np.ndarray:
        try:
            return self._array(ctx, datum, index, name)
        except ValueError as e:
            raise errors.NotFoundError(
                f"step {datum.step} of {layer!r} responses in run {run!r} is malformed: {e}"
            ) from None

    def _gram(self, ctx, datum):
        """`(triangle, references key)` of a datum, or `(None, why)`."""
        index, why = self._responses_index(ctx, datum)
        if index is None:
            return None, why
        try:
            return self._array(ctx, datum, index, "gram"), _references_key(index)
        except ValueError as e:
            return None, f"step {datum.step} has malformed responses: {e}"

    def _cka(self, ctx, data, labels) -> tuple[list, str | None]:
        """The CKA matrix (nested lists, null where there is no number) of `data`, and why."""
        if not data:
            return [], None
        cache_key = tuple((d.values[0].blob_key, d.wall_time) if d.values else None for d in data)
        cached = self._matrix_cache.get(cache_key)
        if cached is not None:
            return cached
        if (
            any(
                self._index_cache.get((metadata.RESPONSES_KIND, *_index_cache_key(d))) is None
                for d in data
                if d.values
            )
            and len(data) > 1
        ):
            grams = list(self._pool().map(lambda d: self._gram(ctx, d), data))
        else:
            grams = [self._gram(ctx, d) for d in data]
        ok = [i for i, (t, _) in enumerate(grams) if t is not None]
        matrix = np.full((len(data), len(data)), np.nan)
        if ok:
            keys = [grams[i][1] for i in ok]
            block = similarity.cka_matrix([grams[i][0] for i in ok], references=keys)
            matrix[np.ix_(ok, ok)] = block
        notes = []
        unreadable = [grams[i][1] for i in range(len(data)) if grams[i][0] is None]
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
        tag = metadata.REFERENCES_TAG
        cached = self._series_cache.get((experiment_id, run, tag))
        if cached is None or not cached.serves(None):
            found = self._read(ctx, experiment_id, provider.RunTagFilter(runs=[run], tags=[tag]))
            cached = self._remember(experiment_id, run, tag, found.get(run, {}).get(tag))
        for datum in reversed(cached.data):
            index, _ = self._index(ctx, datum)
            if index is not None and index.get("references") == digest:
                return {
                    "step": datum.step,
                    "count": index.get("count"),
                    "shape": index.get("shape"),
                    "scale": index.get("scale", 1),
                    "tile": index["tile"],
                    "atlases": [
                        "blob?key=" + urllib.parse.quote(datum.values[a["blob"]].blob_key, safe="")
                        for a in index["atlases"]
                    ],
                    "layout": [
                        {k: a.get(k) for k in ("cols", "rows", "count")} for a in index["atlases"]
                    ],
                    "ranges": index["ranges"],
                }
        return None

    def _no_responses_run(self, ctx, experiment_id, run, exists) -> errors.NotFoundError:
        if not exists:
            listing = self._list(ctx, experiment_id)
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

    def _no_responses_layer(self, run, layer, layers) -> errors.NotFoundError:
        return errors.NotFoundError(
            f"no layer {layer!r} with responses in run {run!r}; layers: "
            + metadata.names_text(layers)
        )

    def _no_run(self, ctx, experiment_id, run) -> errors.NotFoundError:
        return errors.NotFoundError(
            f"no cnnviz run named {run!r}; runs with cnnviz data: "
            + metadata.names_text(sorted(self._list(ctx, experiment_id)))
        )


def _needed(value, name: str, mode: str):
    if value is None:
        raise errors.InvalidArgumentError(f"missing required parameter {name!r} for mode={mode}")
    return value


def _parse_runs(text: str) -> list[str]:
    """`runs=`: run names separated by commas, or a JSON array (for names holding commas)."""
    if text.startswith("["):
        try:
            runs = json.loads(text)
        except ValueError:
            runs = None
        if not (isinstance(runs, list) and all(isinstance(r, str) for r in runs)):
            raise errors.InvalidArgumentError(
                f"runs must be names separated by commas, or a JSON array of names. Received: "
                f"runs={text[:80]!r}"
            )
    else:
        runs = text.split(",")
    if not runs or not all(runs):
        raise errors.InvalidArgumentError(f"runs must name runs. Received: runs={text[:80]!r}")
    return runs


def _references_key(index: dict[str, Any]) -> tuple:
    return index.get("references"), index.get("count")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _with_warning(body: dict[str, Any], warning: str | None) -> dict[str, Any]:
    return {**body, "warning": warning} if warning else body


def _label_list(labels: list[str]) -> str:
    return ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")


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
    costs = record.get("costs", {})
    if not isinstance(costs, dict) or not all(
        isinstance(c, dict) and all(_finite(c.get(k)) for k in ("seconds", "bytes"))
        for c in costs.values()
    ):
        raise ValueError("a plan record's 'costs' must map tags to {seconds, bytes} numbers")
    for name in ("budget", "train_seconds", "own_seconds"):
        value = record.get(name)
        if value is not None and not _finite(value):
            raise ValueError(f"a plan record's {name!r} must be a number or null")


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _merge_plans(records, picture_tags) -> dict[str, Any]:
    """Merges `(owner tag, datum, record)` triples into the body of a `/plan` answer."""
    by_step: dict[int, tuple[dict[str, None], dict[str, str], dict[str, Any]]] = {}
    latest: dict[str, tuple[int, float, dict[str, Any]]] = {}  # per owner
    for tag, datum, record in records:
        drawn, skipped, costs = by_step.setdefault(datum.step, ({}, {}, {}))
        drawn.update(dict.fromkeys(record.get("drawn", [])))
        skipped.update(record.get("skipped", {}))
        costs.update(record.get("costs", {}))
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
        steps.append({"step": step, "drawn": list(drawn), "skipped": skipped, "costs": costs})

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


def _step_param(params: Mapping[str, str], name: str = "step") -> int | None:
    """The step named `name` in a query (None when absent), checked."""
    if name not in params:
        return None
    text = params[name]
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > _MAX_STEP:
        raise errors.InvalidArgumentError(
            f"{name} must be an integer from 0 to {_MAX_STEP}. Received: {name}={text[:40]!r}"
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
