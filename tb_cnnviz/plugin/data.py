"""Every read of the logdir through TensorBoard's data provider, and every cache around it.

The other modules of the plugin never call the data provider: they ask a `Data` for a run's
listing, one (run, tag) series, a step's index blob, a decoded record or array, or a blob's
bytes. `Data` owns the bounded caches that make a warm request fast:

* series (the steps of one (run, tag)), kept briefly because training adds steps
  (`SERIES_FRESH_SECONDS`; longer when the step asked for is there already);
* decoded index blobs and records (immutable: kept until the byte bound pushes them out);
* decoded arrays of responses data (Gram triangles, z-scores);
* the steps of every listed series, with what the listing said of it when read, so `/tags`
  reads again only the series that changed; and a few whole answers, by the listing they
  came from.

It reads only through `context.data_provider`, so it works the same under TensorBoard's Rust
data server and under the Python loader.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tb_cnnviz import metadata, similarity

__all__ = ["SERIES_FRESH_SECONDS", "Data", "LRUCache", "Series", "read_downsample"]

logger = logging.getLogger(__name__)

# Decoded index blobs are immutable, so they are cached; the bound is on the size of the raw JSON
# with each decoded tile range counted at what it takes in memory (`_decoded_size`: a packed
# range grows twelvefold, and one a run of tiles shares, format version 3, by the run's length
# more), and on the number of entries.
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

# `/tags` lists every step of every (run, tag): at 20 runs of ResNet50's 53 conv layers that is
# 3,300 series and 330,000 steps, seconds to read. Each series' steps are kept with what the
# listing said of it (its last step, wall time and length), and read again only when that
# changes; whole answers are kept by the listing they came from.
_LISTED_CACHE_ENTRIES = 65536
_LISTED_CACHE_STEPS = 4 * 10**6
_ANSWER_CACHE_ENTRIES = 16

# Blobs that an answer must fetch are read this many at a time: the cost is round trips.
_READ_THREADS = 8

# The arrays of responses data (Gram triangles, z-scores, examples) decoded once per blob: a
# Gram triangle over 256 reference images is 263 KB as float64, so this holds about a thousand.
_ARRAY_CACHE_BYTES = 256 * 2**20
_ARRAY_CACHE_ENTRIES = 16384


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


class LRUCache:
    """A thread-safe least-recently-used cache bounded by total size and by entry count.

    Example:
        >>> cache = LRUCache(max_size=10, max_entries=2)
        >>> cache.put("a", 1, 4); cache.put("b", 2, 4); cache.put("c", 3, 4)
        >>> cache.get("a"), cache.get("c")
        (None, 3)
    """

    def __init__(self, max_size: int, max_entries: int):
        self._max_size, self._max_entries = max_size, max_entries
        self._entries: collections.OrderedDict[Any, tuple[Any, int]] = collections.OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key):
        """The value under `key` (now the most recently used), or None."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            return hit[0]

    def put(self, key, value, size: int) -> None:
        """Keeps `value` (counted as `size`), dropping the least recently used beyond the bounds."""
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


class Series:
    """The data of one (run, tag) as last read, with when it was read and an index by step."""

    __slots__ = ("read_at", "data", "by_step")

    def __init__(self, data: list[provider.BlobSequenceDatum]):
        self.read_at = time.monotonic()
        self.data = sorted(data, key=lambda d: d.step)
        self.by_step = {d.step: d for d in self.data}

    def serves(self, step: int | None) -> bool:
        """Whether this read is recent enough to answer for `step` (None: the latest)."""
        age = time.monotonic() - self.read_at
        if age < SERIES_FRESH_SECONDS:
            return True
        return step is not None and step in self.by_step and age < _SERIES_MAX_AGE_SECONDS


def listing_mark(series) -> tuple:
    """What a listing says of a series that changes whenever its data does: its last step,
    wall time and length, its metadata and description (new data moves the wall time)."""
    return (
        series.max_step,
        series.max_wall_time,
        getattr(series, "max_length", None),
        series.plugin_content,
        series.description,
    )


def index_cache_key(datum) -> tuple[str, float]:
    """The cache key of a datum's first blob (its index).

    The wall time joins the blob key so that a run rewritten under the same name (the same keys
    with the Python loader) is never answered from the old entry.
    """
    return datum.values[0].blob_key, datum.wall_time


class Data:
    """The plugin's reads of a logdir through a TensorBoard data provider, with their caches.

    Args:
        data_provider: `TBContext.data_provider`.
        downsample: The `downsample` of every read (`read_downsample`).

    Example:
        >>> from tensorboard import context
        >>> data = Data.from_logdir("/none")
        >>> data.list(context.RequestContext(), "")
        {}
    """

    @classmethod
    def from_logdir(cls, logdir: str, downsample: int = 10**6) -> Data:
        """A `Data` over `logdir` loaded once by TensorBoard's Python loader, as scripts and
        tests read a logdir without a server (a folder that does not exist reads empty).

        Example:
            >>> from tensorboard import context
            >>> Data.from_logdir("/none").list(context.RequestContext(), "")
            {}
        """
        from tensorboard.backend.event_processing import data_provider as dp
        from tensorboard.backend.event_processing import plugin_event_multiplexer as mux

        multiplexer = mux.EventMultiplexer(tensor_size_guidance={metadata.PLUGIN_NAME: 0})
        if os.path.isdir(logdir):
            multiplexer.AddRunsFromDirectory(logdir)
            multiplexer.Reload()
        return cls(dp.MultiplexerDataProvider(multiplexer, logdir), downsample)

    def __init__(self, data_provider, downsample: int):
        self._provider = data_provider
        self._downsample = downsample
        self._index_cache = LRUCache(_INDEX_CACHE_BYTES, _INDEX_CACHE_ENTRIES)
        self._series_cache = LRUCache(_SERIES_CACHE_POINTS, _SERIES_CACHE_ENTRIES)
        self._array_cache = LRUCache(_ARRAY_CACHE_BYTES, _ARRAY_CACHE_ENTRIES)
        self._listed_cache = LRUCache(_LISTED_CACHE_STEPS, _LISTED_CACHE_ENTRIES)
        self._answer_cache = LRUCache(_ANSWER_CACHE_ENTRIES, _ANSWER_CACHE_ENTRIES)
        self._reported_tags: set[tuple[str, str, str]] = set()
        self._read_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._read_pool_lock = threading.Lock()

    # -- listing and series ----------------------------------------------------------------
    def list(self, ctx, experiment_id, run_tag_filter=None):
        """`{run: {tag: BlobSequenceTimeSeries}}` of the cnnviz data (no blobs read)."""
        return self._provider.list_blob_sequences(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=run_tag_filter,
        )

    def read(self, ctx, experiment_id, run_tag_filter=None):
        """`{run: {tag: [BlobSequenceDatum]}}`: every stored step's blob references."""
        return self._provider.read_blob_sequences(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            downsample=self._downsample,
            run_tag_filter=run_tag_filter,
        )

    def listed_steps(self, ctx, experiment_id, listing) -> dict[tuple[str, str], list[int]]:
        """`{(run, tag): steps}` of every series in `listing` (a `list` answer), ascending.

        A series is read only when the listing says it changed since it was last read (its
        last step, wall time or length); what is read also warms the series cache for `/layer`.
        """
        out, missing = {}, []
        for run, by_tag in listing.items():
            for tag, series in by_tag.items():
                mark = listing_mark(series)
                hit = self._listed_cache.get((experiment_id, run, tag))
                if hit is not None and hit[0] == mark:
                    out[(run, tag)] = hit[1]
                else:
                    missing.append((run, tag, mark))
        if missing:
            everything = len(missing) == sum(len(t) for t in listing.values())
            runs, tags = sorted({r for r, _, _ in missing}), sorted({t for _, t, _ in missing})
            found = self.read(
                ctx, experiment_id, None if everything else provider.RunTagFilter(runs, tags)
            )
            for run, tag, mark in missing:
                series = self.remember(experiment_id, run, tag, found.get(run, {}).get(tag))
                steps = list(series.by_step)
                self._listed_cache.put((experiment_id, run, tag), (mark, steps), len(steps) + 1)
                out[(run, tag)] = steps
        return out

    def answer(self, key, build: Callable[[], Any]) -> Any:
        """The answer cached under `key`, else `build()` (then cached; a few are kept)."""
        hit = self._answer_cache.get(key)
        if hit is None:
            hit = build()
            self._answer_cache.put(key, hit, 1)
        return hit

    def remember(self, experiment_id, run, tag, data) -> Series:
        """Caches the data just read for one (run, tag) and returns it as a `Series`."""
        series = Series(data or [])
        if series.data:
            self._series_cache.put((experiment_id, run, tag), series, len(series.data))
        return series

    def cached_series(self, experiment_id, run, tag, step=None) -> Series | None:
        """The cached series of one (run, tag), if it may answer for `step`; else None."""
        cached = self._series_cache.get((experiment_id, run, tag))
        return cached if cached is not None and cached.serves(step) else None

    def read_series(self, ctx, experiment_id, run, tag, step=None) -> Series:
        """The series of one (run, tag), from the cache where it may answer, else read (and
        empty where the run has no such tag)."""
        cached = self.cached_series(experiment_id, run, tag, step)
        if cached is not None:
            return cached
        found = self.read(ctx, experiment_id, provider.RunTagFilter(runs=[run], tags=[tag]))
        return self.remember(experiment_id, run, tag, found.get(run, {}).get(tag))

    def series(self, ctx, experiment_id, run, tag, step=None) -> Series:
        """The stored data of one (run, tag), recent enough to answer for `step` (None: latest).

        Raises:
            tensorboard.errors.NotFoundError: If the run or tag has no data; the message names
                the runs or tags that exist.
        """
        series = self.read_series(ctx, experiment_id, run, tag, step)
        if series.data:
            return series
        tags = self.list(ctx, experiment_id, provider.RunTagFilter(runs=[run])).get(run)
        if not tags:
            raise self.no_run(ctx, experiment_id, run)
        raise errors.NotFoundError(
            f"no cnnviz tag {tag!r} in run {run!r}; its tags: " + metadata.names_text(sorted(tags))
        )

    def many_series(self, ctx, experiment_id, pairs, step=None) -> dict[tuple, Series]:
        """`Series` of many (run, tag) pairs; those not cached are read in one call."""
        out, missing = {}, []
        for run, tag in pairs:
            cached = self.cached_series(experiment_id, run, tag, step)
            if cached is not None:
                out[(run, tag)] = cached
            else:
                missing.append((run, tag))
        if missing:
            runs, tags = sorted({r for r, _ in missing}), sorted({t for _, t in missing})
            found = self.read(ctx, experiment_id, provider.RunTagFilter(runs=runs, tags=tags))
            for run, tag in missing:
                data = found.get(run, {}).get(tag)
                out[(run, tag)] = self.remember(experiment_id, run, tag, data)
        return out

    def parse_tag(self, experiment_id, run, tag, series) -> metadata.PluginMetadata | None:
        """Parses a tag's plugin metadata; None for newer or malformed data (reported once)."""
        try:
            return metadata.parse_plugin_metadata(bytes(series.plugin_content or b""))
        except (TypeError, ValueError) as e:
            key = (experiment_id, run, tag)
            if key not in self._reported_tags:
                self._reported_tags.add(key)
                logger.warning("cnnviz: skipping run %r, tag %r: %s", run, tag, e)
            return None

    # -- blobs -----------------------------------------------------------------------------
    def blob(self, ctx, key: str) -> bytes:
        """The bytes of one blob.

        Raises:
            tensorboard.errors.NotFoundError: If the data provider has no such blob.
        """
        try:
            return bytes(self._provider.read_blob(ctx, blob_key=key))
        except (errors.PermissionDeniedError, errors.UnauthenticatedError):
            raise
        except Exception as e:  # providers raise anything from a bad key: b64, JSON, KeyError
            logger.debug("cnnviz: read_blob(%r) failed: %r", key, e)
            raise errors.NotFoundError(f"no blob with key {key[:200]!r}") from None

    def record(self, ctx, datum, key, decode: Callable[[bytes], Any]) -> Any:
        """`decode` of a datum's first blob, cached under `key` (decoded records are
        immutable): an index, a plan record, a responses index."""
        cached = self._index_cache.get(key)
        if cached is not None:
            return cached[0]
        raw = bytes(self._provider.read_blob(ctx, blob_key=datum.values[0].blob_key))
        value = decode(raw)
        self._index_cache.put(key, (value,), _decoded_size(raw, value))
        return value

    def is_cached(self, key) -> bool:
        """Whether a decoded record is cached under `key`."""
        return self._index_cache.get(key) is not None

    def index(self, ctx, datum) -> tuple[dict[str, Any] | None, str | None]:
        """Returns `(index, None)` or `(None, why)` for one picture datum, through the cache."""
        if not datum.values:
            return None, f"step {datum.step} holds no blobs (a truncated or partial write)"

        def decode(raw):
            try:
                index = metadata.decode_index(raw)
            except (TypeError, ValueError) as e:
                return None, f"step {datum.step} has a malformed index: {e}"
            if index is None:
                return None, (
                    f"step {datum.step} was written by a newer tb-cnnviz (format version above "
                    f"{metadata.FORMAT_VERSION}); upgrade tb-cnnviz to see it"
                )
            try:
                metadata.check_index(index, len(datum.values))
            except ValueError as e:
                return None, f"step {datum.step} has a malformed {e}"
            return index, None

        return self.record(ctx, datum, index_cache_key(datum), decode)

    def indexes(self, ctx, data) -> list[tuple[dict[str, Any] | None, str | None]]:
        """`index` of many datums."""
        return self.read_each(lambda d: self.index(ctx, d), index_cache_key, data)

    def read_each(self, read, cache_key, data) -> list:
        """`read` of many datums; those not cached are read a few at a time in parallel."""
        missing = [d for d in data if d.values and not self.is_cached(cache_key(d))]
        if len(missing) > 1:
            list(self.pool().map(read, missing))  # fills the cache
        return [read(d) for d in data]

    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """The thread pool reads that are worth doing in parallel share."""
        with self._read_pool_lock:
            if self._read_pool is None:
                self._read_pool = concurrent.futures.ThreadPoolExecutor(
                    _READ_THREADS, thread_name_prefix="cnnviz-read"
                )
            return self._read_pool

    def array(self, ctx, datum, index, name) -> np.ndarray:
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
        raw = bytes(self._provider.read_blob(ctx, blob_key=datum.values[blob].blob_key))
        array = similarity.decode_array(raw, spec)
        array.flags.writeable = False  # shared by every request
        self._array_cache.put(key, array, array.nbytes)
        return array

    # -- messages --------------------------------------------------------------------------
    def no_run(self, ctx, experiment_id, run) -> errors.NotFoundError:
        """The 404 for an unknown run, listing the runs with cnnviz data."""
        return errors.NotFoundError(
            f"no cnnviz run named {run!r}; runs with cnnviz data: "
            + metadata.names_text(sorted(self.list(ctx, experiment_id)))
        )


#: Bytes of memory a decoded tile range takes: a list of two floats and its slot in the list.
_BYTES_PER_RANGE = 128


def _decoded_size(raw: bytes, value) -> int:
    """What a decoded record costs the index cache: its JSON, and the per-tile ranges that a
    packed index (format version 2: 11 bytes a tile; version 3: 11 bytes a run of tiles sharing
    one range) grows into when decoded.

    Example:
        >>> _decoded_size(b"{}", {"ranges": [[0.0, 1.0]] * 4})
        514
    """
    ranges = value.get("ranges") if isinstance(value, dict) else None
    return len(raw) + _BYTES_PER_RANGE * (len(ranges) if isinstance(ranges, list) else 0)
