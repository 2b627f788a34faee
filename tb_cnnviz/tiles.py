"""NumPy-only picture work: tile normalization, atlas packing, PNG encoding and statistics.

Nothing here imports TensorFlow or TensorBoard, so the same code serves the callbacks, the summary
functions, `replay` and tests. A *tile* is one small picture (one kernel slice, one feature map,
one actmax image); tiles of a layer are packed row-major into one or more PNG *atlases*, each tile
stretched to the full 0..255 range of its own values (or of its group's: a weight filter's slices
share their filter's range). The per-tile `(min, max)` is kept beside the atlas, so a reader can
recover the real values and re-normalize per layer or apply a colormap.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

__all__ = [
    "MAX_ATLAS_SIDE",
    "PNG_COMPRESS_LEVEL",
    "Atlas",
    "activation_stats",
    "decode_png",
    "encode_png",
    "pack_tiles",
    "round_floats",
    "sample_filters",
    "unpack_tiles",
    "weight_stats",
]

#: Longest side of one atlas PNG, in pixels; a layer that needs more gets several atlases.
MAX_ATLAS_SIDE = 8192


class Atlas:
    """One PNG holding `count` tiles of equal size laid out row-major in `cols` columns.

    Attributes:
        png: The encoded PNG bytes.
        cols: Tiles per row.
        rows: Rows of tiles.
        count: Tiles held (the last row may be short).
    """

    __slots__ = ("png", "cols", "rows", "count")

    def __init__(self, png: bytes, cols: int, rows: int, count: int):
        self.png, self.cols, self.rows, self.count = png, cols, rows, count

    def describe(self) -> dict[str, int]:
        """Returns the atlas geometry as stored in the index blob.

        Example:
            >>> Atlas(b"", cols=4, rows=2, count=7).describe()
            {'cols': 4, 'rows': 2, 'count': 7}
        """
        return {"cols": self.cols, "rows": self.rows, "count": self.count}


#: zlib level of the PNG atlases (see `encode_png`).
PNG_COMPRESS_LEVEL = 2


def encode_png(pixels: np.ndarray) -> bytes:
    """Encodes a `uint8` array `[h, w]` (gray) or `[h, w, 3]` (RGB) as PNG.

    Args:
        pixels: The picture.

    Returns:
        PNG bytes.

    Example:
        >>> encode_png(np.zeros((2, 3), np.uint8))[:4]
        b'\\x89PNG'
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    buf = io.BytesIO()
    # zlib level 2: a layer's atlas of feature maps encodes 2-3.5x faster than at the default 6
    # and is 5-12% larger (benchmarks/overhead.py measures the encode phase): the encoding
    # competes with training for the processor, the bytes only for disk.
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Decodes PNG bytes into a `uint8` array `[h, w]` or `[h, w, 3]`.

    Example:
        >>> pixels = decode_png(encode_png(np.full((2, 2), 7, np.uint8)))
        >>> pixels.dtype.name, pixels.tolist()
        ('uint8', [[7, 7], [7, 7]])
    """
    return np.asarray(Image.open(io.BytesIO(data)))


def pack_tiles(tiles: np.ndarray, group: int = 1) -> tuple[list[Atlas], np.ndarray]:
    """Normalizes each tile (or each group of tiles) to 0..255 and packs them into PNG atlases.

    Args:
        tiles: Finite floats `[n, h, w]` or `[n, h, w, c]` with `c` 1 or 3.
        group: Normalize each run of this many consecutive tiles over their common range (the
            slices of one filter): they share one `(min, max)`. `n` must be a multiple of it.

    Returns:
        `(atlases, ranges)`: the atlases in order, and a float64 array `[n, 2]` holding each
        tile's `(min, max)` before normalization (its group's, with `group` > 1). A constant
        tile (group) is drawn mid-gray.

    Raises:
        ValueError: If `tiles` has the wrong rank or channel count, is empty, is not finite, or
            does not split into groups of `group`.

    Example:
        >>> atlases, ranges = pack_tiles(np.arange(8.0).reshape(2, 2, 2))
        >>> [a.describe() for a in atlases], ranges.tolist()
        ([{'cols': 2, 'rows': 1, 'count': 2}], [[0.0, 3.0], [4.0, 7.0]])
        >>> pack_tiles(np.arange(8.0).reshape(2, 2, 2), group=2)[1].tolist()
        [[0.0, 7.0], [0.0, 7.0]]
    """
    tiles = np.asarray(tiles)
    # float32 data is normalized in float32 (a 255-level picture needs no more), which halves
    # the memory traffic of a layer's million pixels; float64 data keeps its precision.
    work_dtype = np.result_type(tiles.dtype, np.float32)
    tiles = tiles.astype(work_dtype, copy=False)
    if tiles.ndim == 3:
        tiles = tiles[..., None]
    if tiles.ndim != 4 or tiles.shape[-1] not in (1, 3) or tiles.shape[0] == 0:
        raise ValueError(
            "tiles must have shape [n, h, w] or [n, h, w, c] with n > 0 and c in (1, 3). "
            f"Received: shape={tiles.shape}"
        )
    if not np.isfinite(tiles).all():
        raise ValueError(f"tiles contain {int((~np.isfinite(tiles)).sum())} NaN or Inf values")
    n, h, w, c = tiles.shape
    group = int(group)
    if group < 1 or n % group:
        raise ValueError(f"group must be >= 1 and divide the {n} tiles. Received: group={group}")
    flat = tiles.reshape(n // group, -1)  # one row per group: its tiles are consecutive
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    span = hi - lo
    scale = np.divide(255.0, span, out=np.zeros_like(span), where=span > 0)
    work = flat - lo[:, None]  # the one full-size temporary; the rest happens in place
    work *= scale[:, None]
    np.rint(work, out=work)
    np.clip(work, 0, 255, out=work)
    pixels = work.astype(np.uint8)
    pixels[span <= 0] = 128  # a constant tile is drawn mid-gray
    pixels = pixels.reshape(n, h, w, c)
    lo, hi = np.repeat(lo, group), np.repeat(hi, group)

    cols = max(1, min(MAX_ATLAS_SIDE // w, math.ceil(math.sqrt(n * h / w))))
    rows_per_atlas = max(1, MAX_ATLAS_SIDE // h)
    per_atlas = cols * rows_per_atlas
    atlases = []
    for start in range(0, n, per_atlas):
        chunk = pixels[start : start + per_atlas]
        count = len(chunk)
        rows = math.ceil(count / cols)
        canvas = np.zeros((rows * cols, h, w, c), np.uint8)
        canvas[:count] = chunk
        canvas = canvas.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4)
        atlases.append(Atlas(encode_png(canvas.reshape(rows * h, cols * w, c)), cols, rows, count))
    return atlases, np.stack([lo, hi], axis=1).astype(np.float64)


def unpack_tiles(
    atlases: list[tuple[bytes, int]], tile_shape: tuple[int, int, int], ranges=None
) -> np.ndarray:
    """Cuts tiles back out of atlases: the inverse of `pack_tiles`, up to 8-bit quantization.

    Args:
        atlases: `(png_bytes, cols)` per atlas, in order.
        tile_shape: `(h, w, c)` of one tile.
        ranges: Optional `[n, 2]` per-tile `(min, max)`; when given, values are mapped back to
            their original scale, otherwise the 0..255 pixel values are returned.

    Returns:
        A float64 array `[n, h, w, c]`.

    Example:
        >>> atlases, ranges = pack_tiles(np.arange(8.0).reshape(2, 2, 2))
        >>> unpack_tiles([(a.png, a.cols) for a in atlases], (2, 2, 1), ranges)[1, :, :, 0]
        array([[4., 5.],
               [6., 7.]])
    """
    h, w, c = tile_shape
    out = []
    for png, cols in atlases:
        img = decode_png(png).reshape(-1, cols * w, c).astype(np.float64)
        rows = img.shape[0] // h
        out.append(img.reshape(rows, h, cols, w, c).transpose(0, 2, 1, 3, 4).reshape(-1, h, w, c))
    pixels = np.concatenate(out)
    if ranges is None:
        return pixels
    ranges = np.asarray(ranges, np.float64)
    pixels = pixels[: len(ranges)]
    lo, hi = ranges[:, 0], ranges[:, 1]
    return lo[:, None, None, None] + pixels / 255.0 * (hi - lo)[:, None, None, None]


def weight_stats(filters: np.ndarray, previous: np.ndarray | None = None) -> dict[str, list]:
    """Per-filter statistics of conv weights.

    Args:
        filters: `[n_filters, ...]`, one row per output filter.
        previous: The same filters at the previous logged step, or `None`.

    Returns:
        `{"l2_norm": [...], "mean": [...], "relative_change": [...]}`, where `relative_change` is
        `‖w - w_prev‖ / ‖w_prev‖` (`None` entries when there is no previous step).

    Example:
        >>> weight_stats(np.array([[3.0, 4.0]]), np.array([[3.0, 0.0]]))["relative_change"]
        [1.3333333]
    """
    flat = np.asarray(filters, np.float64).reshape(len(filters), -1)
    norm = np.linalg.norm(flat, axis=1)
    if previous is None or np.shape(previous) != np.shape(filters):
        change = [None] * len(flat)
    else:
        prev = np.asarray(previous, np.float64).reshape(len(flat), -1)
        prev_norm = np.linalg.norm(prev, axis=1)
        delta = np.linalg.norm(flat - prev, axis=1)
        change = round_floats(
            np.divide(delta, prev_norm, out=np.zeros_like(delta), where=prev_norm > 0)
        )
    return {
        "l2_norm": round_floats(norm),
        "mean": round_floats(flat.mean(axis=1)),
        "relative_change": change,
    }


def activation_stats(activations: np.ndarray) -> dict[str, list]:
    """Per-filter statistics of feature maps.

    Args:
        activations: `[n_images, ..., n_filters]`, channels last.

    Returns:
        `{"mean": [...], "max": [...], "zero_fraction": [...], "dead": [...]}`; a filter is dead
        when its output is zero (or below) everywhere on every image.

    Example:
        >>> activation_stats(np.array([[[0.0, 2.0], [0.0, 0.0]]]))["dead"]
        [True, False]
    """
    acts = np.asarray(activations)
    if acts.dtype.kind != "f":
        acts = acts.astype(np.float64)
    # Channels last, so `[positions, filters]` is a view: reduced along its first axis, no copy
    # of the maps is made. A float64 copy moved to filters-first made these statistics 22 ms of
    # an 80 ms drawing of MobileNetV2's `Conv1` (8 x 112 x 112 x 32 values); 12 ms now. Means
    # still add up in float64.
    flat = acts.reshape(-1, acts.shape[-1])
    peak = flat.max(axis=0).astype(np.float64)
    return {
        "mean": round_floats(flat.mean(axis=0, dtype=np.float64)),
        "max": round_floats(peak),
        "zero_fraction": round_floats(np.count_nonzero(flat == 0, axis=0) / flat.shape[0]),
        "dead": [bool(p <= 0) for p in peak],
    }


def sample_filters(total: int, cap: int) -> list[int]:
    """Which of `total` filters to draw: all of them, or `cap` spread evenly from first to last.

    Args:
        total: Filters in the layer.
        cap: The most to draw (a callback's `max_filters`).

    Returns:
        Sorted indices; the first and the last filter are always among them.

    Raises:
        ValueError: If `cap` is not positive.

    Example:
        >>> sample_filters(4, 8), sample_filters(2048, 4)
        ([0, 1, 2, 3], [0, 682, 1365, 2047])
    """
    if cap <= 0:
        raise ValueError(f"max_filters must be positive. Received: max_filters={cap}")
    if total <= cap:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, cap)})


def round_floats(values) -> list[float]:
    """Flattens `values` into a list of floats rounded to eight significant digits.

    Eight digits keep the JSON index small without visible loss.

    Example:
        >>> round_floats([1 / 3])
        [0.33333333]
    """
    return _round_significant(values, 8).tolist()


def _round_significant(values, digits: int) -> np.ndarray:
    # Vectorized: layers can have hundreds of thousands of tiles, too many for a Python loop.
    a = np.asarray(values, np.float64).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.where(a == 0, 0, np.floor(np.log10(np.abs(a))))
    # Multiply or divide by a power of ten >= 1 only: 10.0 ** -k is inexact, and dividing by it
    # leaves a last-bit error (123456790.00000001) that NumPy 1.x and 2.x round differently.
    shift = digits - 1 - exponent
    up = 10.0 ** np.maximum(shift, 0)
    down = 10.0 ** np.maximum(-shift, 0)
    return np.round(a * up / down) * down / up
