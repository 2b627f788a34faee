"""Tests for `tb_cnnviz.tiles`: normalization, atlas packing, PNG encoding and statistics."""

from __future__ import annotations

import numpy as np
import pytest

from tb_cnnviz import tiles


def _round_trip(pictures):
    atlases, ranges = tiles.pack_tiles(pictures)
    shape = pictures.shape[1:3] + ((pictures.shape[3],) if pictures.ndim == 4 else (1,))
    back = tiles.unpack_tiles([(a.png, a.cols) for a in atlases], shape, ranges)
    return atlases, ranges, back


def _assert_within_one_level(original, back, ranges):
    """Each value is back within 1/255 of its own tile's range."""
    original = original.reshape(back.shape)
    span = (ranges[:, 1] - ranges[:, 0]).reshape(-1, 1, 1, 1)
    assert np.all(np.abs(back - original) <= span / 255 + 1e-12)


@pytest.mark.parametrize("shape", [(7, 3, 3), (5, 4, 6, 1), (6, 5, 5, 3), (1, 1, 1)])
def test_pack_unpack_round_trip_within_one_level(shape):
    """Gray and RGB tiles come back within 1/255 of each tile's own value range."""
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.01, 100, size=(shape[0],) + (1,) * (len(shape) - 1))
    pictures = rng.normal(size=shape) * scale  # tiles of very different magnitudes
    atlases, ranges, back = _round_trip(pictures)
    assert len(atlases) == 1
    assert sum(a.count for a in atlases) == shape[0]
    np.testing.assert_allclose(ranges[:, 0], pictures.reshape(shape[0], -1).min(axis=1))
    np.testing.assert_allclose(ranges[:, 1], pictures.reshape(shape[0], -1).max(axis=1))
    _assert_within_one_level(pictures, back, ranges)


def test_each_tile_uses_the_full_pixel_range():
    """Every non-constant tile is stretched to 0..255 on its own."""
    pictures = np.stack([np.linspace(0, 1, 16), np.linspace(-1000, 5, 16)]).reshape(2, 4, 4)
    atlases, _ = tiles.pack_tiles(pictures)
    raw = tiles.unpack_tiles([(a.png, a.cols) for a in atlases], (4, 4, 1))
    assert raw.reshape(2, -1).min(axis=1).tolist() == [0, 0]
    assert raw.reshape(2, -1).max(axis=1).tolist() == [255, 255]


def test_a_group_of_tiles_shares_one_range_and_keeps_each_value_within_one_level_of_it():
    """pack_tiles(group=k) normalizes each run of k tiles over their union: a weak tile keeps
    its contrast relative to its group, every value within 1/255 of the group's range."""
    rng = np.random.default_rng(1)
    pictures = rng.normal(size=(6, 3, 3)) * np.array([1, 0.01, 5, 2, 2, 0.5])[:, None, None]
    atlases, ranges = tiles.pack_tiles(pictures, group=3)
    groups = pictures.reshape(2, -1)
    want = np.repeat(np.stack([groups.min(axis=1), groups.max(axis=1)], axis=1), 3, axis=0)
    np.testing.assert_array_equal(ranges, want)
    back = tiles.unpack_tiles([(a.png, a.cols) for a in atlases], (3, 3, 1), ranges)
    _assert_within_one_level(pictures, back, ranges)
    raw = tiles.unpack_tiles([(a.png, a.cols) for a in atlases], (3, 3, 1)).reshape(6, -1)
    assert np.ptp(raw[1]) < 10  # the weak tile is faint within its group, not stretched
    with pytest.raises(ValueError, match="divide the 6 tiles"):
        tiles.pack_tiles(pictures, group=4)


def test_many_tiles_split_into_several_atlases(monkeypatch):
    """Tiles that do not fit one atlas side go to further atlases, in order, and all come back."""
    monkeypatch.setattr(tiles, "MAX_ATLAS_SIDE", 16)
    rng = np.random.default_rng(1)
    pictures = rng.uniform(-3, 3, size=(50, 4, 4))
    atlases, ranges, back = _round_trip(pictures)
    assert len(atlases) > 1
    assert sum(a.count for a in atlases) == 50
    for atlas in atlases:
        h, w = tiles.decode_png(atlas.png).shape[:2]
        assert h <= 16 and w <= 16
        assert (h, w) == (atlas.rows * 4, atlas.cols * 4)
        assert atlas.count <= atlas.rows * atlas.cols
    _assert_within_one_level(pictures, back, ranges)


def test_tile_wider_than_the_atlas_limit_still_packs(monkeypatch):
    """A tile larger than MAX_ATLAS_SIDE gets an atlas of its own rather than failing."""
    monkeypatch.setattr(tiles, "MAX_ATLAS_SIDE", 8)
    pictures = np.arange(3 * 10 * 12, dtype=float).reshape(3, 10, 12)
    atlases, ranges, back = _round_trip(pictures)
    assert [a.count for a in atlases] == [1, 1, 1]
    _assert_within_one_level(pictures, back, ranges)


def test_constant_tile_is_mid_gray_and_keeps_its_value():
    """A constant tile is drawn as 128 and its value comes back exactly from its range."""
    pictures = np.stack([np.full((3, 3), 2.5), np.arange(9.0).reshape(3, 3)])
    atlases, ranges, back = _round_trip(pictures)
    raw = tiles.unpack_tiles([(a.png, a.cols) for a in atlases], (3, 3, 1))
    assert np.all(raw[0] == 128)
    assert ranges[0].tolist() == [2.5, 2.5]
    assert np.all(back[0] == 2.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_clearly(bad):
    """NaN or Inf in the tiles raise ValueError that says how many were found."""
    pictures = np.zeros((2, 3, 3))
    pictures[1, 0, 0] = bad
    pictures[0, 2, 2] = bad
    with pytest.raises(ValueError, match="2 NaN or Inf"):
        tiles.pack_tiles(pictures)


@pytest.mark.parametrize("shape", [(0, 3, 3), (3, 3), (2, 3, 3, 2), (2, 3, 3, 4), (1, 2, 3, 3, 1)])
def test_wrong_shapes_are_rejected_with_the_shape(shape):
    """Shapes other than [n, h, w] or [n, h, w, 1|3] with n > 0 raise ValueError with the shape."""
    with pytest.raises(ValueError, match=r"Received: shape="):
        tiles.pack_tiles(np.zeros(shape))


def test_png_round_trip_gray_and_rgb():
    """encode_png/decode_png keep every pixel of gray and RGB pictures."""
    rng = np.random.default_rng(2)
    for shape in [(5, 7), (5, 7, 3)]:
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        png = tiles.encode_png(pixels)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        np.testing.assert_array_equal(tiles.decode_png(png), pixels)


def test_weight_stats_match_numpy():
    """Per-filter l2_norm, mean and relative_change equal their NumPy definitions."""
    rng = np.random.default_rng(3)
    filters, previous = rng.normal(size=(4, 3, 3, 2)), rng.normal(size=(4, 3, 3, 2))
    stats = tiles.weight_stats(filters, previous)
    flat, prev = filters.reshape(4, -1), previous.reshape(4, -1)
    np.testing.assert_allclose(stats["l2_norm"], np.linalg.norm(flat, axis=1), rtol=1e-7)
    np.testing.assert_allclose(stats["mean"], flat.mean(axis=1), rtol=1e-7)
    np.testing.assert_allclose(
        stats["relative_change"],
        np.linalg.norm(flat - prev, axis=1) / np.linalg.norm(prev, axis=1),
        rtol=1e-7,
    )


def test_weight_stats_without_previous_has_null_change():
    """Without a previous step (or with a different shape) relative_change is all None."""
    filters = np.ones((3, 2, 2))
    assert tiles.weight_stats(filters)["relative_change"] == [None] * 3
    assert tiles.weight_stats(filters, np.ones((3, 4)))["relative_change"] == [None] * 3


def test_weight_stats_zero_previous_gives_zero_change():
    """A previous filter of all zeros gives change 0, not a division by zero."""
    stats = tiles.weight_stats(np.ones((1, 2)), np.zeros((1, 2)))
    assert stats["relative_change"] == [0.0]


def test_activation_stats_match_numpy_and_flag_dead_filters():
    """mean, max and zero_fraction match NumPy; a filter never above zero is dead."""
    rng = np.random.default_rng(4)
    acts = np.maximum(rng.normal(size=(3, 5, 5, 4)), 0)
    acts[..., 1] = 0.0
    acts[..., 2] = -1.0
    stats = tiles.activation_stats(acts)
    per_filter = np.moveaxis(acts, -1, 0).reshape(4, -1)
    np.testing.assert_allclose(stats["mean"], per_filter.mean(axis=1), rtol=1e-7)
    np.testing.assert_allclose(stats["max"], per_filter.max(axis=1), rtol=1e-7)
    np.testing.assert_allclose(stats["zero_fraction"], (per_filter == 0).mean(axis=1))
    assert stats["dead"] == [False, True, True, False]
    # float32 maps (as the callbacks pass them) are reduced without a float64 copy: same stats
    single = tiles.activation_stats(acts.astype(np.float32))
    np.testing.assert_allclose(single["mean"], stats["mean"], rtol=1e-6)
    np.testing.assert_allclose(single["max"], stats["max"], rtol=1e-6)
    assert single["zero_fraction"] == stats["zero_fraction"] and single["dead"] == stats["dead"]
    assert tiles.activation_stats(np.array([[[0, 3], [0, 1]]]))["mean"] == [0.0, 2.0]  # integers


def test_round_floats_keeps_eight_significant_digits():
    """round_floats flattens and keeps eight significant digits as plain floats."""
    values = tiles.round_floats(np.array([[1 / 3, 123456789.0], [1e-12 / 3, -2.0]]))
    assert values == [0.33333333, 123456790.0, 3.3333333e-13, -2.0]
    assert all(type(v) is float for v in values)
