"""The on-disk contract between the writing side and the serving side of tb-cnnviz.

This is the only module that both `tb_cnnviz.summary` (which imports TensorFlow) and
`tb_cnnviz.plugin` (which must not) import. It holds the plugin name, the format version, the
kinds of picture, and the functions that build and parse the two pieces of metadata that travel
in event files:

* the per-(run, tag) `SummaryMetadata` whose `plugin_data.content` is versioned JSON. TensorBoard
  keeps only the first one per (run, tag), so it holds nothing that changes from step to step;
* the per-step *index* blob, the first blob of every datum: versioned JSON describing the PNG
  atlases that follow it (geometry, filter ids, per-tile value ranges, per-filter statistics);
* the per-step *plan* blob of the `"plan"` kind (tag `"<owner>/plan"`): which picture tags a
  callback drew at that step, which it left out and why (its time budget, most often);
* the *data kinds* (`DATA_KINDS`), which hold numbers for comparing runs rather than pictures:
  the run's reference images (`"references"`, tag `REFERENCES_TAG`, written once per run) and
  each layer's responses to them (`"responses"`, tag `"<layer>/responses"`), from which
  `tb_cnnviz.compare` computes layer similarity (CKA), filter alignment and dataset examples.

Beside the event files, a run may hold *snapshots* of the model (`SNAPSHOTS_DIR`, written by
`tb_cnnviz.callbacks.Snapshots`, read by `tb_cnnviz.probe`): the architecture once, the weights at
some steps, and a versioned JSON index (`SNAPSHOTS_INDEX`, see `parse_snapshot_index`).

Readers meet data written by a newer version with a single warning and skip it; they never crash.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
from typing import Any

import numpy as np
from tensorboard.compat.proto import summary_pb2

__all__ = [
    "ALL_POINTS",
    "DATA_KINDS",
    "FORMAT_VERSION",
    "KINDS",
    "PLAN_KIND",
    "PLUGIN_NAME",
    "REFERENCES_KIND",
    "REFERENCES_TAG",
    "RESPONSES_KIND",
    "SNAPSHOTS_DIR",
    "SNAPSHOTS_INDEX",
    "PluginMetadata",
    "check_index",
    "create_summary_metadata",
    "decode_index",
    "encode_index",
    "names_text",
    "natural_key",
    "parse_plugin_metadata",
    "parse_snapshot_index",
    "plan_tag",
    "tag_for",
]

logger = logging.getLogger(__name__)

#: The plugin name: the route prefix in TensorBoard and `plugin_data.plugin_name` on disk.
PLUGIN_NAME = "cnnviz"

#: The newest format this code writes and reads. Bump it when a reader of the version before would
#: misread what this one writes; `_migrate` brings an older version up where a field changed.
#: Version 2 packs an index's per-tile `ranges` as little-endian floats in base64 (version 1
#: wrote them as JSON pairs rounded to eight digits; `decode_index` reads both). Version 3 stores
#: a pair shared by each run of `repeat` consecutive tiles once (the slices of a filter's
#: weights share their filter's range): a reader of version 2 would reject such an index as
#: malformed, so every index and tag is stamped 3 and that reader says "upgrade" instead. Old
#: versions need no migration: `decode_index` reads versions 1-3 into the same per-tile pairs.
FORMAT_VERSION = 3

#: Kinds of picture, in the order the dashboard offers them.
KINDS = ("weights", "feature_maps", "actmax", "attribution")

#: The kind of the per-step plan records: no pictures, only what was drawn and what was not.
#: Never one of `KINDS`, so a plan tag (`"<owner>/plan"`) cannot collide with a picture tag.
PLAN_KIND = "plan"

#: The kind of a run's reference images: a fixed batch, stored once per run, that every
#: `RESPONSES_KIND` datum of the run was computed from (identified by its content hash).
REFERENCES_KIND = "references"
#: The kind of a layer's responses to the reference images at a step: its centered Gram matrix
#: (for CKA), each filter's pooled response (for alignment) and its top reference images.
RESPONSES_KIND = "responses"
#: Kinds holding numbers, not pictures: never one of `KINDS`, so the tab does not list them as
#: pictures, and their tags (`"<name>/<kind>"`) cannot collide with picture tags.
DATA_KINDS = (REFERENCES_KIND, RESPONSES_KIND)
#: The one tag of a run's reference images.
REFERENCES_TAG = f"reference_images/{REFERENCES_KIND}"

#: "Every point" for a data provider's `downsample` when reading: 0 would return nothing
#: (TensorBoard issue 5550).
ALL_POINTS = 10**6

#: The folder of a run (`<log_dir>/train/cnnviz_snapshots`) that holds the model's snapshots.
SNAPSHOTS_DIR = "cnnviz_snapshots"

#: The snapshot folder's index: which step's weights are where, and how to feed the model.
SNAPSHOTS_INDEX = "index.json"

_MAX_LISTED = 20  # names quoted in a message before it says "and N more"

_warned_versions: set[int] = set()


@dataclasses.dataclass(frozen=True)
class PluginMetadata:
    """What one (run, tag) holds, parsed from `plugin_data.content`.

    Attributes:
        kind: One of `KINDS`, `DATA_KINDS`, or `PLAN_KIND` for a callback's plan records.
        layer: The layer name as the user knows it (nested layers as `outer/inner`).
        version: The format version the data was written with.
        extra: Any further static keys the writer stored (for example `layer_class`).
    """

    kind: str
    layer: str
    version: int = FORMAT_VERSION
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def tag_for(layer: str, kind: str) -> str:
    """Returns the tag under which `kind` pictures of `layer` are written.

    One tag per (layer, kind) keeps TensorBoard's first-metadata-wins rule harmless.

    Args:
        layer: The layer name.
        kind: One of `KINDS` or `DATA_KINDS`.

    Returns:
        The tag, `"<layer>/<kind>"`.

    Raises:
        ValueError: If `kind` is not one of `KINDS` or `DATA_KINDS`.

    Example:
        >>> tag_for("conv2d_1", "weights"), tag_for("conv2d_1", "responses")
        ('conv2d_1/weights', 'conv2d_1/responses')
    """
    _check_kind(kind)
    return f"{layer}/{kind}"


def plan_tag(owner: str) -> str:
    """Returns the tag of the plan records a callback (its `owner` name) writes at each step.

    Example:
        >>> plan_tag("cnnviz")
        'cnnviz/plan'
    """
    return f"{owner}/{PLAN_KIND}"


def create_summary_metadata(
    kind: str,
    layer: str,
    *,
    description: str | None = None,
    display_name: str | None = None,
    **extra: Any,
) -> summary_pb2.SummaryMetadata:
    """Builds the `SummaryMetadata` proto for a cnnviz summary.

    The data class is set explicitly to BLOB_SEQUENCE: TensorBoard hides third-party summaries
    whose data class is unset.

    Args:
        kind: One of `KINDS`, `DATA_KINDS`, or `PLAN_KIND`.
        layer: The layer name (for a plan, its owner).
        description: Optional Markdown shown by TensorBoard.
        display_name: Optional display name.
        **extra: Further JSON-serializable static facts about the series.

    Returns:
        A `tensorboard.compat.proto.summary_pb2.SummaryMetadata`.

    Example:
        >>> md = create_summary_metadata("weights", "conv2d")
        >>> md.plugin_data.plugin_name
        'cnnviz'
        >>> parse_plugin_metadata(md.plugin_data.content).layer
        'conv2d'
    """
    if kind != PLAN_KIND:
        _check_kind(kind)
    content = {"version": FORMAT_VERSION, "kind": kind, "layer": str(layer), **extra}
    return summary_pb2.SummaryMetadata(
        display_name=display_name or "",
        summary_description=description or "",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME,
            content=json.dumps(content, sort_keys=True).encode("utf-8"),
        ),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )


def parse_plugin_metadata(content: bytes) -> PluginMetadata | None:
    """Parses `plugin_data.content` written by `create_summary_metadata`.

    Args:
        content: The raw bytes of `plugin_data.content`.

    Returns:
        A `PluginMetadata`, or `None` when the data was written by a newer format version (a
        warning is logged once per version).

    Raises:
        TypeError: If `content` is not `bytes`.
        ValueError: If `content` is not cnnviz metadata.

    Example:
        >>> parse_plugin_metadata(b'{"version": 1, "kind": "actmax", "layer": "c"}').kind
        'actmax'
    """
    obj = _load_json(content, "plugin metadata")
    if obj is None:
        return None
    kind = obj.pop("kind", None)
    layer = obj.pop("layer", None)
    version = obj.pop("version")
    if kind not in (*KINDS, *DATA_KINDS, PLAN_KIND) or not isinstance(layer, str):
        raise ValueError(
            f"cnnviz plugin metadata needs a kind in {(*KINDS, *DATA_KINDS, PLAN_KIND)} and a "
            "string layer. "
            f"Received: kind={kind!r}, layer={layer!r}"
        )
    return PluginMetadata(kind=kind, layer=layer, version=version, extra=obj)


def encode_index(index: dict[str, Any]) -> bytes:
    """Serializes a per-step index blob, stamping it with `FORMAT_VERSION`.

    A picture index's `ranges` (`[[lo, hi], …]`, one pair per tile) are stored packed: as
    little-endian float32 where every value is one exactly (the ranges of float32 pictures), else
    float64, in base64. That is lossless, and at 8 bytes a tile about a third of the JSON text a
    pair takes. Where every run of `repeat` consecutive tiles shares one pair (the largest such
    run), the pair is stored once per run: a 3x3 layer's 8,192 weight tiles, normalized per
    filter, cost 2.7 KB of ranges instead of 87 KB at every step.

    Args:
        index: The index, as described in the `tb_cnnviz.summary` module docstring; `ranges`
            may be a list of pairs or a float array `[n, 2]`.

    Returns:
        Compact UTF-8 JSON bytes.

    Raises:
        ValueError: If a value is NaN or infinite.

    Example:
        >>> blob = encode_index({"kind": "weights", "ranges": [[-0.5, 2.0]]})
        >>> decode_index(blob)["version"], decode_index(blob)["ranges"]
        (3, [[-0.5, 2.0]])
        >>> packed = json.loads(encode_index({"ranges": [[0.0, 1.0]] * 4 + [[2.0, 3.0]] * 4}))
        >>> packed["ranges"]["count"], packed["ranges"]["repeat"]
        (8, 4)
    """
    if "ranges" in index and not isinstance(index["ranges"], dict):
        index = {**index, "ranges": _pack_ranges(index["ranges"])}
    return json.dumps(
        {**index, "version": FORMAT_VERSION}, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def decode_index(blob: bytes) -> dict[str, Any] | None:
    """Parses a per-step index blob.

    Args:
        blob: The first blob of a cnnviz datum.

    Returns:
        The index as a dict, or `None` when it was written by a newer format version (a warning
        is logged once per version).

    Raises:
        TypeError: If `blob` is not `bytes`.
        ValueError: If `blob` is not a cnnviz index.

    A picture index's packed `ranges` (format versions 2 and 3, `encode_index`) come back as
    the list of `[lo, hi]` pairs, one per tile, that version 1 wrote; float32 values with the
    nine significant digits that give them back exactly (not the seventeen of their float64
    widening: the tab's `/layer` answers carry them).

    Example:
        >>> decode_index(b'{"version": 1, "kind": "weights"}')["kind"]
        'weights'
    """
    index = _load_json(blob, "index blob")
    if index is not None and isinstance(index.get("ranges"), dict):
        index["ranges"] = _unpack_ranges(index["ranges"])
    return index


#: How `encode_index` packs `ranges`: little-endian float32 where lossless, else float64.
_RANGE_DTYPES = ("<f4", "<f8")
#: The most tiles a packed `ranges` may claim. Shared runs (`repeat`) let a few stored bytes
#: stand for many tiles, so a damaged count must not make a reader build billions of pairs; a
#: layer's drawings hold thousands (8,192 for 256 filters of 32 slices).
MAX_RANGE_TILES = 2**22


def _pack_ranges(ranges) -> dict[str, Any]:
    pairs = np.asarray(ranges, np.float64).reshape(-1, 2)
    if not np.isfinite(pairs).all():
        raise ValueError("index: ranges must be finite numbers")
    with np.errstate(over="ignore"):  # beyond float32's range: float64 it is, silently
        narrow = pairs.astype(_RANGE_DTYPES[0])
    packed = narrow if np.array_equal(narrow, pairs) else pairs.astype(_RANGE_DTYPES[1])
    repeat = _shared_run(packed)
    data = base64.b64encode(packed[::repeat].tobytes()).decode("ascii")
    out = {"dtype": packed.dtype.str, "count": len(pairs), "data": data}
    return {**out, "repeat": repeat} if repeat > 1 else out


def _shared_run(pairs: np.ndarray) -> int:
    """The largest `k` such that every run of `k` consecutive pairs from the start is equal.

    The runs of equal pairs (two filters of equal range merge into one) all have lengths that
    are multiples of their greatest common divisor, so every block of that many starts and ends
    inside one run.
    """
    if len(pairs) < 2:
        return 1
    changes = np.flatnonzero(np.any(pairs[1:] != pairs[:-1], axis=1)) + 1
    lengths = np.diff(np.concatenate([[0], changes, [len(pairs)]]))
    return int(np.gcd.reduce(lengths))


def _unpack_ranges(packed: dict[str, Any]) -> list[list[float]]:
    dtype, count, data = packed.get("dtype"), packed.get("count"), packed.get("data")
    repeat = packed.get("repeat", 1)
    counted = isinstance(count, int) and not isinstance(count, bool) and count >= 0
    runs = isinstance(repeat, int) and not isinstance(repeat, bool) and repeat >= 1
    if dtype not in _RANGE_DTYPES or not counted or not isinstance(data, str):
        raise ValueError(
            f"cnnviz index blob: packed ranges need a dtype in {_RANGE_DTYPES}, a count >= 0 "
            f"and base64 data. Received: dtype={dtype!r}, count={count!r}"
        )
    if count > MAX_RANGE_TILES:
        raise ValueError(
            f"cnnviz index blob: packed ranges claim {count} tiles, more than the "
            f"{MAX_RANGE_TILES} an index may hold"
        )
    if not runs or count % repeat:
        raise ValueError(
            "cnnviz index blob: packed ranges' repeat must be a whole number >= 1 that divides "
            f"their count. Received: repeat={repeat!r}, count={count!r}"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as e:
        raise ValueError(f"cnnviz index blob: packed ranges are not base64: {e}") from e
    size = np.dtype(dtype).itemsize
    if len(raw) != 2 * (count // repeat) * size:
        per = "per tile" if repeat == 1 else f"per run of {repeat} tiles"
        raise ValueError(
            f"cnnviz index blob: packed ranges hold {len(raw) // size} values, not 2 {per} "
            f"of {count} tiles"
        )
    values = np.frombuffer(raw, dtype).tolist()
    if dtype == _RANGE_DTYPES[0]:  # the shortest text that reads back as the same float32
        values = [float(f"{v:.9g}") for v in values]
    return [values[i : i + 2] for i in range(0, len(values), 2) for _ in range(repeat)]


def check_index(index: dict[str, Any], blob_count: int) -> dict[str, Any]:
    """Checks that a decoded index can be drawn from the `blob_count` blobs of its datum.

    The one schema check of the index, shared by everything that reads pictures back (the
    TensorBoard plugin, `tb_cnnviz.reader`, `tb_cnnviz.plot`, `tb-cnnviz export`), so a damaged
    step gets the same message everywhere.

    Args:
        index: The index, as `decode_index` returns it.
        blob_count: How many blobs the datum holds (the index blob included).

    Returns:
        The index, unchanged.

    Raises:
        ValueError: Saying what is missing or out of place.

    Example:
        >>> index = {"tile": [3, 3, 1], "filters": [0], "slices": {"count": 1},
        ...          "atlases": [{"blob": 1, "cols": 1}], "ranges": [[0.0, 1.0]]}
        >>> check_index(index, 2) is index
        True
        >>> check_index(index, 1)
        Traceback (most recent call last):
        ...
        ValueError: index: atlas 0 names blob 1, but the step holds blobs 1..0 only
    """

    def fail(message: str):
        raise ValueError(f"index: {message}")

    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    tile = index.get("tile")
    if not (isinstance(tile, list) and len(tile) == 3 and all(count(v) and v for v in tile)):
        fail(f"tile must be [height, width, channels] of positive ints; it is {tile!r}")
    if tile[2] not in (1, 3):
        fail(f"tile channels must be 1 or 3; it is {tile[2]!r}")
    filters = index.get("filters")
    if not (isinstance(filters, list) and all(count(f) for f in filters)):
        fail("filters must be a list of filter ids")
    slices = index.get("slices")
    if not (isinstance(slices, dict) and count(slices.get("count")) and slices["count"] >= 1):
        fail("slices must say how many tiles each filter has (slices.count >= 1)")
    atlases = index.get("atlases")
    if not isinstance(atlases, list):
        fail("atlases must be a list")
    for k, atlas in enumerate(atlases):
        blob = atlas.get("blob") if isinstance(atlas, dict) else None
        if not count(blob) or not 0 < blob < blob_count:
            fail(
                f"atlas {k} names blob {blob!r}, but the step holds blobs 1..{blob_count - 1} only"
            )
        if not (count(atlas.get("cols")) and atlas["cols"] >= 1):
            fail(f"atlas {k} must say its columns (cols >= 1)")
    ranges = index.get("ranges")
    needed = len(filters) * slices["count"]
    if not isinstance(ranges, list) or len(ranges) < needed:
        fail(f"ranges must hold one [low, high] per tile ({needed} tiles)")
    return index


def natural_key(text: str) -> list:
    """A sort key that orders the numbers inside names by value: `conv2` before `conv10`.

    Shared by the reading side (`tb_cnnviz.reader`, the plugin) and the writing side (`replay`).

    Example:
        >>> sorted(["conv10", "conv2", "conv1"], key=natural_key)
        ['conv1', 'conv2', 'conv10']
    """
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(text)]


_DIGITS = re.compile(r"(\d+)")


def names_text(items) -> str:
    """Lists names (or steps) for a message: strings quoted, cut short after 20.

    Example:
        >>> names_text(["a", "b"]), names_text([3, 4]), names_text([])
        ("'a', 'b'", '3, 4', '(none)')
    """
    items = list(items)
    if not items:
        return "(none)"
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", and {len(items) - _MAX_LISTED} more"
    return shown


def parse_snapshot_index(raw: bytes) -> dict[str, Any] | None:
    """Parses a snapshot folder's index, the contract between the callbacks and the probe.

    The index is versioned JSON:

    ```
    {"version": 1,
     "architecture": "model.json",        # model.to_json(), beside the index
     "backend": "tensorflow", "keras_version": "3.11.3",
     "input_shape": [32, 32, 3],          # one image, without the batch axis; null: unknown
     "value_range": [0.0, 1.0],           # the input's range (the callbacks' value_range)
     "class_names": ["cat", "dog"],       # or null
     "steps": {"0": {"weights": "step_000000.weights.npz", "bytes": 41000, "seconds": 0.01},
               "4": {"weights": "../../ckpt/model_05.keras", "checkpoint": true}}}
    ```

    Paths are relative to the snapshot folder; a reader opens only those inside its logdir.
    A `checkpoint` entry is a `keras.callbacks.ModelCheckpoint` file (weights or a whole model)
    recorded instead of a copy.

    Args:
        raw: The index file's bytes.

    Returns:
        The index with defaults filled and `steps` keyed by int, or None (with one warning) for
        an index of a newer version.

    Raises:
        ValueError: If it is not such an index.

    Example:
        >>> index = parse_snapshot_index(b'{"version": 1, "architecture": "model.json", '
        ...     b'"steps": {"3": {"weights": "step_000003.weights.npz"}}}')
        >>> sorted(index["steps"]), index["value_range"]
        ([3], None)
    """
    obj = _load_json(raw, "snapshot index")
    if obj is None:
        return None
    steps = obj.get("steps")
    if not isinstance(obj.get("architecture"), str) or not isinstance(steps, dict):
        raise ValueError("cnnviz snapshot index needs 'architecture' (a file) and 'steps'")
    parsed = {}
    for step, entry in steps.items():
        if not (isinstance(step, str) and step.isdigit()):
            raise ValueError(f"cnnviz snapshot index has a step that is not one: {step!r}")
        if not isinstance(entry, dict) or not isinstance(entry.get("weights"), str):
            raise ValueError(f"cnnviz snapshot index: step {step} names no weights file")
        parsed[int(step)] = entry
    for key in ("backend", "keras_version", "input_shape", "value_range", "class_names"):
        obj.setdefault(key, None)
    return {**obj, "steps": dict(sorted(parsed.items()))}


def _load_json(raw: bytes, what: str) -> dict[str, Any] | None:
    if not isinstance(raw, bytes | bytearray):
        raise TypeError(f"cnnviz {what} must be bytes. Received: {type(raw).__name__}")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cnnviz {what} is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"cnnviz {what} must be a JSON object. Received: {type(obj).__name__}")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"cnnviz {what} has no valid version. Received: version={version!r}")
    if version > FORMAT_VERSION:
        if version not in _warned_versions:
            _warned_versions.add(version)
            logger.warning(
                "Skipping cnnviz data written in format version %d; this tb-cnnviz reads up to "
                "version %d. Upgrade tb-cnnviz to see it.",
                version,
                FORMAT_VERSION,
            )
        return None
    return _migrate(obj)


def _migrate(obj: dict[str, Any]) -> dict[str, Any]:
    # Place for future migrations: bring an older version's dict up to FORMAT_VERSION here.
    return obj


def _check_kind(kind: str) -> None:
    if kind not in KINDS and kind not in DATA_KINDS:
        raise ValueError(f"kind must be one of {(*KINDS, *DATA_KINDS)}. Received: kind={kind!r}")
