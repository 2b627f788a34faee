"""`tf.summary`-style writers for every kind of cnnviz picture.

Each function looks like `tf.summary.image`: it writes to the default summary writer at `step`
(or the default step), returns whether anything was written, and encodes nothing when no writer
records. The Keras callbacks in `tb_cnnviz.callbacks` are thin on top of these.

On-disk format (format version 1, promised readable forever)
============================================================

Every picture summary is a `Summary.Value` with:

* tag `"<layer>/<kind>"` (`tb_cnnviz.metadata.tag_for`), one tag per (layer, kind);
* `metadata.plugin_data.plugin_name == "cnnviz"`, `metadata.data_class == DATA_CLASS_BLOB_SEQUENCE`
  and `plugin_data.content` the JSON `{"version": 1, "kind": …, "layer": …, …static facts}`;
* a rank-1 `DT_STRING` tensor of blobs: blob 0 is the *index* (UTF-8 JSON), blobs 1… are PNG
  *atlases*.

The index of one step::

    {
      "version": 1,
      "kind": "weights",                  # one of metadata.KINDS
      "layer": "conv2d_1",
      "tile": [h, w, c],                  # every tile's size; c is 1 (gray) or 3 (RGB)
      "filters": [0, 1, 2, …],            # ids of the filters drawn, in drawing order
      "total_filters": 64,                # filters in the layer; more than len(filters) = sampled
      "slices": {"axis": "input_channel", # what the tiles of one filter are: "input_channel",
                 "count": 32,             #   "rgb", "probe" or "image"
                 "total": 32},            # before any cap
      "atlases": [{"blob": 1, "cols": 40, "rows": 26, "count": 1024}, …],
      "ranges": [[lo, hi], …],            # one per tile
      "stats": {"l2_norm": […], …},       # one list per statistic, aligned with "filters"
      "layer_stats": {"update_ratio": 0.01, …},
      "notes": ["…"]                      # optional human-readable remarks (caps applied, …)
    }

Tiles are ordered filter-major: tile `t = i * slices.count + s` is slice `s` of `filters[i]`.
Atlases hold consecutive tiles row-major: the `k`-th tile of an atlas sits at column `k % cols`,
row `k // cols`, at pixel `(col * w, row * h)`. A tile's pixel `p` stands for the value
`lo + p / 255 * (hi - lo)`; a constant tile is drawn as 128. Statistics that do not exist yet
(for example the change at the first step) are `null`.

Per-layer health numbers are also written as ordinary scalars (`"<layer>/update_ratio"`,
`"<layer>/dead_fraction"`) so they show in TensorBoard's Scalars tab.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tb_cnnviz import metadata, tiles

__all__ = ["DEFAULT_MAX_FILTERS", "feature_maps", "filter_weights", "write_layer"]

#: Default cap on filters drawn per layer; larger layers are sampled evenly and say so.
DEFAULT_MAX_FILTERS = 256
#: Default cap on input-channel slices drawn per filter.
DEFAULT_MAX_SLICES = 64
#: Default cap on a feature-map tile's longer side; larger maps are average-pooled.
DEFAULT_MAX_TILE_SIDE = 64


def filter_weights(
    name: str,
    kernel,
    step: int | None = None,
    *,
    previous=None,
    rgb: bool | None = None,
    max_filters: int = DEFAULT_MAX_FILTERS,
    max_slices: int = DEFAULT_MAX_SLICES,
    description: str | None = None,
) -> bool:
    """Writes every filter of a conv kernel as pictures, with per-filter statistics.

    Args:
        name: The layer name; the tag is `"<name>/weights"`.
        kernel: The kernel in Keras' conv layout `[*spatial, in_channels, filters]` with 1 to 3
            spatial dimensions (Conv1D, Conv2D, Conv3D). Conv3D kernels are drawn with their
            depth slices side by side.
        step: The step; defaults to `tf.summary.experimental.get_step()`.
        previous: The same kernel at the previous logged step, for the per-filter
            `relative_change` and the layer's `update_ratio` scalar (‖Δw‖/‖w‖).
        rgb: Draw each filter as one colour picture (a first layer reading RGB). Defaults to
            `in_channels == 3`.
        max_filters: Draw at most this many filters, evenly sampled.
        max_slices: Draw at most this many input channels per filter.
        description: Optional Markdown for TensorBoard.

    Returns:
        True when a summary was written, False when no default writer records.

    Raises:
        ValueError: If `kernel` has the wrong rank, is not finite, or no step is known.

    Example:
        >>> import tempfile
        >>> writer = tf.summary.create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     filter_weights("conv2d", np.random.rand(3, 3, 3, 8), step=0)
        True
    """
    kernel = _to_numpy(kernel)
    if kernel.ndim not in (3, 4, 5):
        raise ValueError(
            "kernel must have shape [*spatial, in_channels, filters] with 1 to 3 spatial "
            f"dimensions. Received: kernel.shape={kernel.shape}"
        )
    if previous is not None:
        previous = _to_numpy(previous)
        if previous.shape != kernel.shape:
            previous = None
    if not _recording():
        return False
    step = _resolve_step(step)
    in_channels, total = kernel.shape[-2], kernel.shape[-1]
    rgb = in_channels == 3 if rgb is None else bool(rgb)
    ids = _sample(total, max_filters)

    def build():
        per_filter = np.moveaxis(kernel, -1, 0)  # [filters, *spatial, in]
        stats = tiles.weight_stats(
            per_filter[ids], None if previous is None else np.moveaxis(previous, -1, 0)[ids]
        )
        pics = _kernel_pictures(per_filter[ids])  # [n, h, w, in]
        notes = []
        if rgb:
            pics, slices = pics[:, None], {"axis": "rgb", "count": 1, "total": 1}
        else:
            shown = min(in_channels, max_slices)
            if shown < in_channels:
                notes.append(f"showing the first {shown} of {in_channels} input channels")
            pics = np.moveaxis(pics[..., :shown], -1, 1)[..., None]  # [n, shown, h, w, 1]
            slices = {"axis": "input_channel", "count": shown, "total": int(in_channels)}
        layer_stats = {}
        if previous is not None:
            layer_stats["update_ratio"] = _ratio(kernel - previous, previous)
        return pics, slices, stats, layer_stats, notes

    written = write_layer("weights", name, build, ids, total, step, description=description)
    if written and previous is not None:
        tf.summary.scalar(f"{name}/update_ratio", _ratio(kernel - previous, previous), step=step)
    return written


def feature_maps(
    name: str,
    activations,
    step: int | None = None,
    *,
    max_filters: int = DEFAULT_MAX_FILTERS,
    max_tile_side: int = DEFAULT_MAX_TILE_SIDE,
    description: str | None = None,
) -> bool:
    """Writes the feature maps of a batch of probe images, with per-filter statistics.

    Args:
        name: The layer name; the tag is `"<name>/feature_maps"`.
        activations: The layer's output for the probe images, channels last:
            `[n_images, length, filters]`, `[n_images, h, w, filters]` or
            `[n_images, d, h, w, filters]` (3-D maps are drawn at their middle depth).
        step: The step; defaults to `tf.summary.experimental.get_step()`.
        max_filters: Draw at most this many filters, evenly sampled.
        max_tile_side: Average-pool maps whose longer side exceeds this.
        description: Optional Markdown for TensorBoard.

    Returns:
        True when a summary was written, False when no default writer records. The layer's
        `dead_fraction` (filters zero on every probe) is also written as a scalar.

    Raises:
        ValueError: If `activations` has the wrong rank, is not finite, or no step is known.

    Example:
        >>> import tempfile
        >>> writer = tf.summary.create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     feature_maps("conv2d", np.random.rand(4, 16, 16, 8), step=0)
        True
    """
    acts = _to_numpy(activations)
    if acts.ndim not in (3, 4, 5):
        raise ValueError(
            "activations must have shape [n_images, *spatial, filters] with 1 to 3 spatial "
            f"dimensions. Received: activations.shape={acts.shape}"
        )
    if not _recording():
        return False
    step = _resolve_step(step)
    total, n_images = acts.shape[-1], acts.shape[0]
    ids = _sample(total, max_filters)
    all_stats = tiles.activation_stats(acts)
    dead_fraction = float(np.mean(all_stats["dead"]))

    def build():
        maps = acts[..., ids]
        if maps.ndim == 5:
            maps = maps[:, maps.shape[1] // 2]
        if maps.ndim == 3:
            maps = maps[:, None]  # [n, 1, length, f]
        maps = _shrink(np.moveaxis(maps, -1, 0), max_tile_side)  # [f, n, h, w]
        stats = {key: [values[i] for i in ids] for key, values in all_stats.items()}
        slices = {"axis": "probe", "count": int(n_images), "total": int(n_images)}
        return maps[..., None], slices, stats, {"dead_fraction": dead_fraction}, []

    written = write_layer("feature_maps", name, build, ids, total, step, description=description)
    if written:
        tf.summary.scalar(f"{name}/dead_fraction", dead_fraction, step=step)
    return written


def write_layer(
    kind: str,
    name: str,
    build: Callable[[], tuple[np.ndarray, dict, dict, dict, list]],
    filter_ids: Sequence[int],
    total_filters: int,
    step: int | None = None,
    *,
    description: str | None = None,
    **static: Any,
) -> bool:
    """Writes one layer's pictures of one kind: the building block of every summary function.

    `build` runs only when the default writer records, so its encoding cost is paid only then.

    Args:
        kind: One of `tb_cnnviz.metadata.KINDS`.
        name: The layer name.
        build: Returns `(pictures, slices, stats, layer_stats, notes)`, where `pictures` is
            `[len(filter_ids), slices["count"], h, w, c]` and the rest are as in the module
            docstring.
        filter_ids: The ids of the filters drawn.
        total_filters: The number of filters in the layer.
        step: The step; defaults to `tf.summary.experimental.get_step()`.
        description: Optional Markdown for TensorBoard.
        **static: Further static facts stored in the plugin metadata (`None` values dropped).

    Returns:
        True when a summary was written.

    Example:
        >>> import tempfile
        >>> writer = tf.summary.create_file_writer(tempfile.mkdtemp())
        >>> build = lambda: (np.random.rand(2, 1, 4, 4, 3), {"axis": "rgb", "count": 1,
        ...     "total": 1}, {}, {}, [])
        >>> with writer.as_default():
        ...     write_layer("actmax", "conv2d", build, [0, 1], 2, step=0)
        True
    """
    if not _recording():
        return False
    step = _resolve_step(step)
    pictures, slices, stats, layer_stats, notes = build()
    pictures = np.asarray(pictures)
    n, count = pictures.shape[:2]
    atlases, ranges = tiles.pack_tiles(pictures.reshape(n * count, *pictures.shape[2:]))
    if len(filter_ids) < total_filters:
        notes = [f"sampled {len(filter_ids)} of {total_filters} filters", *notes]
    index = {
        "kind": kind,
        "layer": name,
        "tile": list(pictures.shape[2:4]) + [int(pictures.shape[4])],
        "filters": [int(i) for i in filter_ids],
        "total_filters": int(total_filters),
        "slices": slices,
        "atlases": [{"blob": k + 1, **a.describe()} for k, a in enumerate(atlases)],
        "ranges": _pairs(ranges),
        "stats": stats,
        "layer_stats": layer_stats,
        "notes": notes,
    }
    blobs = [metadata.encode_index(index)] + [a.png for a in atlases]
    md = metadata.create_summary_metadata(
        kind, name, description=description, **{k: v for k, v in static.items() if v is not None}
    )
    return bool(
        tf.summary.write(
            metadata.tag_for(name, kind),
            tf.constant(blobs, dtype=tf.string),
            step=step,
            metadata=md.SerializeToString(),
        )
    )


def _kernel_pictures(per_filter: np.ndarray) -> np.ndarray:
    """`[n, *spatial, in]` -> `[n, h, w, in]`: 1-D kernels as one row, 3-D depth side by side."""
    if per_filter.ndim == 3:
        return per_filter[:, None]
    if per_filter.ndim == 5:
        n, d, h, w, c = per_filter.shape
        return per_filter.transpose(0, 2, 1, 3, 4).reshape(n, h, d * w, c)
    return per_filter


def _shrink(maps: np.ndarray, max_side: int) -> np.ndarray:
    """Average-pools `[..., h, w]` by an integer factor so the longer side is at most `max_side`."""
    h, w = maps.shape[-2:]
    factor = -(-max(h, w) // max_side)
    if factor <= 1:
        return maps
    hh, ww = h // factor or 1, w // factor or 1
    fh, fw = min(factor, h), min(factor, w)
    cropped = maps[..., : hh * fh, : ww * fw]
    return cropped.reshape(*maps.shape[:-2], hh, fh, ww, fw).mean(axis=(-3, -1))


def _sample(total: int, cap: int) -> list[int]:
    if cap <= 0:
        raise ValueError(f"max_filters must be positive. Received: max_filters={cap}")
    if total <= cap:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, cap)})


def _pairs(ranges: np.ndarray) -> list[list[float]]:
    flat = tiles.round_floats(ranges.ravel())
    return [flat[i : i + 2] for i in range(0, len(flat), 2)]


def _ratio(delta: np.ndarray, base: np.ndarray) -> float:
    denom = float(np.linalg.norm(base))
    return float(np.linalg.norm(delta)) / denom if denom > 0 else 0.0


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "numpy"):
        x = x.numpy()
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"expected a numeric array. Received: dtype={arr.dtype}")
    return arr.astype(np.float32, copy=False)


def _recording() -> bool:
    return bool(tf.summary.should_record_summaries())


def _resolve_step(step):
    if step is None:
        step = tf.summary.experimental.get_step()
        if step is None:
            raise ValueError("No step set. Pass step= or call tf.summary.experimental.set_step().")
    return int(step.numpy() if hasattr(step, "numpy") else step)
