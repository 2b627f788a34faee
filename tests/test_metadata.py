"""Tests for `tb_cnnviz.metadata`, the on-disk contract shared by the writing and serving sides."""

from __future__ import annotations

import base64
import json
import logging

import numpy as np
import pytest
from tensorboard.compat.proto import summary_pb2

from tb_cnnviz import metadata


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Gives each test its own set of already-warned versions (module state)."""
    monkeypatch.setattr(metadata, "_warned_versions", set())


def test_create_then_parse_round_trips():
    """Every field written by create_summary_metadata is read back by parse_plugin_metadata."""
    md = metadata.create_summary_metadata(
        "feature_maps",
        "block1/conv2d",
        description="probe maps",
        display_name="conv",
        layer_class="Conv2D",
    )
    assert md.plugin_data.plugin_name == metadata.PLUGIN_NAME == "cnnviz"
    assert md.data_class == summary_pb2.DATA_CLASS_BLOB_SEQUENCE
    assert md.summary_description == "probe maps"
    assert md.display_name == "conv"
    parsed = metadata.parse_plugin_metadata(md.plugin_data.content)
    assert parsed == metadata.PluginMetadata(
        kind="feature_maps",
        layer="block1/conv2d",
        version=metadata.FORMAT_VERSION,
        extra={"layer_class": "Conv2D"},
    )


def test_round_trip_survives_serialization():
    """Metadata read back from a serialized proto parses the same as the original."""
    md = metadata.create_summary_metadata("actmax", "conv")
    again = summary_pb2.SummaryMetadata.FromString(md.SerializeToString())
    assert metadata.parse_plugin_metadata(again.plugin_data.content).kind == "actmax"


@pytest.mark.parametrize("kind", metadata.KINDS)
def test_tag_for_every_kind(kind):
    """Each kind gets the tag "<layer>/<kind>"."""
    assert metadata.tag_for("conv2d_1", kind) == f"conv2d_1/{kind}"


@pytest.mark.parametrize(
    "call",
    [
        lambda: metadata.tag_for("conv", "histogram"),
        lambda: metadata.create_summary_metadata("weight", "conv"),
    ],
)
def test_unknown_kind_is_a_value_error(call):
    """An unknown kind is refused with the valid choices in the message."""
    with pytest.raises(ValueError, match="feature_maps"):
        call()


@pytest.mark.parametrize("content", ["{}", None, 7, {"version": 1}])
def test_parse_rejects_non_bytes_with_type_error(content):
    """parse_plugin_metadata takes bytes only."""
    with pytest.raises(TypeError, match="bytes"):
        metadata.parse_plugin_metadata(content)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"weights"',
        b'{"kind": "weights", "layer": "c"}',
        b'{"version": 0, "kind": "weights", "layer": "c"}',
        b'{"version": "1", "kind": "weights", "layer": "c"}',
        b'{"version": true, "kind": "weights", "layer": "c"}',
        b'{"version": 1, "kind": "histogram", "layer": "c"}',
        b'{"version": 1, "kind": "weights", "layer": 3}',
        b'{"version": 1, "kind": "weights"}',
    ],
)
def test_parse_rejects_malformed_content_with_value_error(content):
    """Bytes that are not cnnviz metadata raise ValueError, never anything else."""
    with pytest.raises(ValueError):
        metadata.parse_plugin_metadata(content)


def test_newer_version_is_skipped_with_exactly_one_warning(caplog):
    """Data from a newer format version parses to None and warns once, however often it is read."""
    newer = metadata.FORMAT_VERSION + 1
    content = json.dumps({"version": newer, "kind": "weights", "layer": "c"}).encode()
    index = json.dumps({"version": newer, "kind": "weights"}).encode()
    with caplog.at_level(logging.WARNING, logger=metadata.__name__):
        assert metadata.parse_plugin_metadata(content) is None
        assert metadata.parse_plugin_metadata(content) is None
        assert metadata.decode_index(index) is None
    warnings = [r for r in caplog.records if r.name == metadata.__name__]
    assert len(warnings) == 1
    assert f"version {newer}" in warnings[0].getMessage()


def test_each_newer_version_warns_once(caplog):
    """Two different newer versions give two warnings, one each."""
    with caplog.at_level(logging.WARNING, logger=metadata.__name__):
        for version in (metadata.FORMAT_VERSION + 1, metadata.FORMAT_VERSION + 2) * 2:
            metadata.decode_index(json.dumps({"version": version}).encode())
    assert len([r for r in caplog.records if r.name == metadata.__name__]) == 2


def test_index_encode_decode_round_trips():
    """An index survives encode_index/decode_index unchanged, stamped with FORMAT_VERSION."""
    index = {
        "kind": "weights",
        "layer": "conv2d",
        "tile": [3, 3, 1],
        "filters": [0, 1],
        "total_filters": 2,
        "slices": {"axis": "input_channel", "count": 1, "total": 1},
        "atlases": [{"blob": 1, "cols": 2, "rows": 1, "count": 2}],
        "ranges": [[-0.5, 0.25], [0.0, 1.0]],
        "stats": {"l2_norm": [1.5, 2.0], "relative_change": [None, None]},
        "layer_stats": {},
        "notes": ["é ünïcode"],
    }
    blob = metadata.encode_index(index)
    assert isinstance(blob, bytes)
    assert metadata.decode_index(blob) == {**index, "version": metadata.FORMAT_VERSION}


def test_float32_ranges_are_packed_as_float32_and_read_back_exactly():
    """The ranges of float32 pictures are stored as <f4 (8 bytes a tile, 11 characters in
    base64) and decode to values that are the same float32s, in at most nine digits."""
    rng = np.random.default_rng(0)
    values = np.sort(rng.normal(size=(8192, 2)).astype(np.float32), axis=1)
    blob = metadata.encode_index({"kind": "weights", "ranges": values.astype(np.float64)})
    stored = json.loads(blob)["ranges"]
    assert stored["dtype"] == "<f4" and stored["count"] == 8192
    assert len(blob) < 8192 * 11  # 29 bytes a tile as JSON pairs in format version 1
    decoded = np.asarray(metadata.decode_index(blob)["ranges"])
    np.testing.assert_array_equal(decoded.astype(np.float32), values)
    assert max(len(repr(float(v))) for v in decoded.ravel()) <= len("-0.123456789e-05")


def test_ranges_that_are_no_float32_are_packed_as_float64_without_loss():
    """Ranges of float64 pictures (one value not a float32) are stored as <f8, losslessly."""
    ranges = [[1000.000001, 1000.000002], [0.0, 1.0]]
    blob = metadata.encode_index({"kind": "feature_maps", "ranges": ranges})
    assert json.loads(blob)["ranges"]["dtype"] == "<f8"
    assert metadata.decode_index(blob)["ranges"] == ranges


def test_a_version_1_index_with_json_ranges_still_reads():
    """Format version 1 wrote ranges as JSON pairs: they read back as written, and the index
    passes check_index (every version stays readable)."""
    v1 = {
        "version": 1,
        "kind": "weights",
        "tile": [3, 3, 1],
        "filters": [0],
        "slices": {"axis": "input_channel", "count": 1, "total": 1},
        "atlases": [{"blob": 1, "cols": 1, "rows": 1, "count": 1}],
        "ranges": [[-0.17294115, 0.17997074]],
    }
    index = metadata.decode_index(json.dumps(v1).encode())
    assert index == v1 and metadata.check_index(index, 2) is index


@pytest.mark.parametrize(
    "packed, message",
    [
        ({"dtype": "<i4", "count": 1, "data": ""}, "dtype in"),
        ({"dtype": "<f4", "count": "1", "data": ""}, "a count >= 0"),
        ({"dtype": "<f4", "count": 1, "data": "not base64!"}, "not base64"),
        ({"dtype": "<f4", "count": 2, "data": "AAAAAAAAgD8="}, "hold 2 values, not 2 per tile"),
        ({"dtype": "<f4", "count": True, "data": ""}, "a count >= 0"),
        ({"dtype": "<f4", "count": -1, "data": ""}, "a count >= 0"),
        ({"dtype": "<f8", "count": 1, "data": "AAAAAAAAgD8="}, "hold 1 values, not 2 per tile"),
        ({"dtype": "<f4", "count": 3, "data": "AAAAAAAAgD8=", "repeat": 2}, "divides their"),
        ({"dtype": "<f4", "count": 2, "data": "AAAAAAAAgD8=", "repeat": 0}, "whole number >= 1"),
        ({"dtype": "<f4", "count": 2, "data": "AAAAAAAAgD8=", "repeat": True}, "whole number"),
        ({"dtype": "<f4", "count": 4, "data": "AAAAAAAAgD8=", "repeat": 1}, "not 2 per tile"),
        ({"dtype": "<f4", "count": 8, "data": "AAAAAAAAgD8=", "repeat": 2}, "per run of 2"),
        # One stored pair may not stand for a trillion tiles: the reader would build them all.
        ({"dtype": "<f4", "count": 10**12, "data": "AAAAAAAAgD8=", "repeat": 10**12}, "claim"),
    ],
)
def test_damaged_packed_ranges_are_a_value_error_saying_what(packed, message):
    """Packed ranges with a wrong dtype, count or data raise ValueError naming the fault, which
    the readers report as a malformed step."""
    blob = json.dumps({"version": metadata.FORMAT_VERSION, "ranges": packed}).encode()
    with pytest.raises(ValueError, match=message):
        metadata.decode_index(blob)


def test_encode_index_overrides_a_stale_version():
    """encode_index always writes the current FORMAT_VERSION."""
    blob = metadata.encode_index({"version": 99})
    assert metadata.decode_index(blob)["version"] == metadata.FORMAT_VERSION


def test_encode_index_refuses_nan():
    """NaN is not JSON: encode_index refuses it instead of writing an unreadable index."""
    with pytest.raises(ValueError):
        metadata.encode_index({"ranges": [[float("nan"), 1.0]]})


@pytest.mark.parametrize("blob", ["{}", None, 1])
def test_decode_index_rejects_non_bytes(blob):
    """decode_index takes bytes only."""
    with pytest.raises(TypeError):
        metadata.decode_index(blob)


@pytest.mark.parametrize("blob", [b"", b"{", b"[]", b'{"version": -1}', b"\x89PNG\r\n\x1a\n"])
def test_decode_index_rejects_malformed_blobs(blob):
    """Bytes that are not a cnnviz index raise ValueError."""
    with pytest.raises(ValueError):
        metadata.decode_index(blob)


@pytest.mark.parametrize(
    "ranges, repeat",
    [
        ([[0.0, 1.0]] * 3 + [[-2.0, 0.5]] * 3, 3),
        # two neighbouring groups with the same range merge into a run of 6: still 3 a pair
        ([[0.0, 1.0]] * 6 + [[-2.0, 0.5]] * 3, 3),
        ([[0.0, 1.0], [0.0, 1.0], [0.5, 1.0]], 1),
        ([[0.25, 0.75]] * 5, 5),
        ([], 1),
    ],
)
def test_ranges_shared_by_runs_of_tiles_are_stored_once_a_run_and_read_back_per_tile(
    ranges, repeat
):
    """encode_index stores one pair per run of tiles sharing it, and decode_index gives every
    tile its pair back, each a list of its own."""
    packed = json.loads(metadata.encode_index({"kind": "weights", "ranges": ranges}))["ranges"]
    assert packed.get("repeat", 1) == repeat and packed["count"] == len(ranges)
    assert len(base64.b64decode(packed["data"])) == 8 * len(ranges) // repeat
    back = metadata.decode_index(metadata.encode_index({"kind": "weights", "ranges": ranges}))
    assert back["ranges"] == ranges
    if len(ranges) > 1:
        back["ranges"][0][0] = 99.0
        assert back["ranges"][1][0] != 99.0
