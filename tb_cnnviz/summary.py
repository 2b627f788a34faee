"""`tf.summary`-style writers for every kind of cnnviz picture.

Each function looks like `tf.summary.image`: it writes to the default summary writer at `step`
(or the default step), returns whether anything was written, and encodes nothing when no writer
records. The default writer is the innermost `create_file_writer(...).as_default()` (which needs
no TensorFlow and works on every Keras backend) or, when TensorFlow is in use, `tf.summary`'s
default writer. The Keras callbacks in `tb_cnnviz.callbacks` are thin on top of these and
always write through `create_file_writer`. This module holds the per-kind writers and the
format; the plumbing they share (which writer records, the step, the eager-only rule, bytes
written) is `tb_cnnviz.writers`.

On-disk format (format version 3; every version promised readable forever)
==========================================================================

Every picture summary is a `Summary.Value` with:

* tag `"<layer>/<kind>"` (`tb_cnnviz.metadata.tag_for`), one tag per (layer, kind);
* `metadata.plugin_data.plugin_name == "cnnviz"`, `metadata.data_class == DATA_CLASS_BLOB_SEQUENCE`
  and `plugin_data.content` the JSON `{"version": 3, "kind": …, "layer": …, …static facts}`;
* a rank-1 `DT_STRING` tensor of blobs: blob 0 is the *index* (UTF-8 JSON), blobs 1… are PNG
  *atlases*.

The index of one step::

    {
      "version": 3,
      "kind": "weights",                  # one of metadata.KINDS
      "layer": "conv2d_1",
      "tile": [h, w, c],                  # every tile's size; c is 1 (gray) or 3 (RGB)
      "filters": [0, 1, 2, …],            # ids of the filters drawn, in drawing order
      "total_filters": 64,                # filters in the layer; more than len(filters) = sampled
      "slices": {"axis": "input_channel", # what the tiles of one filter are: "input_channel",
                 "count": 32,             #   "input_channel_grid" (a 1x1 kernel: one tile of
                 "total": 32},            #   all its input weights, row-major), "rgb", "probe"
                                          #   or "image"; "total" counts them before any cap
      "atlases": [{"blob": 1, "cols": 40, "rows": 26, "count": 1024}, …],
      "ranges": {"dtype": "<f4",          # one [lo, hi] per tile, packed (see below)
                 "count": 1024, "data": "…",
                 "repeat": 32},           # optional: each pair stands for 32 tiles in a row
      "stats": {"l2_norm": […], …},       # one list per statistic, aligned with "filters"
                                          #   (actmax: "activation", the activation reached)
      "layer_stats": {"update_ratio": 0.01, …},
      "notes": ["…"]                      # optional human-readable remarks (caps applied, …)
    }

Tiles are ordered filter-major: tile `t = i * slices.count + s` is slice `s` of `filters[i]`.
Atlases hold consecutive tiles row-major: the `k`-th tile of an atlas sits at column `k % cols`,
row `k // cols`, at pixel `(col * w, row * h)`. A tile's pixel `p` stands for the value
`lo + p / 255 * (hi - lo)`; a constant tile (or a constant group of tiles sharing one range) is
drawn as 128. `ranges.data` is the base64 of `count` pairs `(lo, hi)` as little-endian floats of
`ranges.dtype`: `"<f4"` where every value is a float32 exactly (pictures of float32 tensors),
else `"<f8"`. With `"repeat": k` (version 3)
the data holds `count / k` pairs, each the range of `k` consecutive tiles: a filter's weight
slices are normalized together, over their filter's range, so their contrast compares across
input channels, and 3x3 slices do not pay 8 bytes of range for 9 pixels. Version 1 wrote
`ranges` as JSON `[[lo, hi], …]`, rounded to eight significant digits; `metadata.decode_index`
turns every version into that list of pairs, one per tile. Statistics that do not exist yet
(for example the change at the first step) are `null`.

The `attribution` kind (`attribution`, tag `"<method>/attribution"`, e.g. `"gradcam/attribution"`)
fills the same index for class heatmaps of probe images. `filters` are the probe images' ids
`0…n-1`; `slices` has `"axis": "image"` and names its tiles in `"labels"`: `"image"` (the probe
itself, RGB or gray; 1-D inputs as one row, 3-D at their middle depth), `"predicted"` (the
heatmap of the predicted class) and, when labels are known, `"true"` (the heatmap of the true
class). A heatmap's values lie in [0, 1], 1 marking the most important pixels; its tiles are gray
(R = G = B) so the dashboard can colour-map them and blend them over the image tile with an
opacity slider. `stats` holds per probe `predicted` (class id), `confidence` (its probability),
`true` (class id or `null`) and `correct` (bool or `null`); `layer_stats` holds `accuracy` over
the probes (`null` without labels) and `mean_confidence`. The plugin metadata may carry the
static facts `method`, `target_layer` and `class_names`. A head without classes (a regression)
has `predicted`, `confidence`, `true` and `correct` all `null` and instead `value` (the
explained output's value per probe) and `true_value` (or `null`); its `layer_stats` hold
`mean_absolute_error` when true values are known, and its metadata the static fact
`"head": "values"`.

Per-layer health numbers are also written as ordinary scalars (`"<layer>/update_ratio"`,
`"<layer>/dead_fraction"`) so they show in TensorBoard's Scalars tab.

Plan records (kind `"plan"`, tag `"<owner>/plan"`, `tb_cnnviz.metadata.plan_tag`) say, for each
step a callback logged, which picture tags it drew and which it left out and why, so the
dashboard can say "not drawn at this step" instead of showing another step's pictures. The
plan tag's metadata may carry the static fact `"layers"`: the model's conv layers in the order a
forward pass meets them (the dashboard lists layers so). The datum holds one blob, the UTF-8
JSON::

    {
      "version": 3,
      "kind": "plan",
      "step": 3,
      "budget": 0.05,                      # the time budget (a fraction of training time), or null
      "drawn": ["conv1/weights", …],       # picture tags written at this step
      "skipped": {"conv4/actmax": "…"},    # tags due at this step but not drawn, with the reason
      "costs": {"conv1/weights": {"seconds": 0.012, "bytes": 20480}, …},  # what each drawn tag
                                           #   cost at this step (optional: older records lack it)
      "passes": {"feature_maps": {"seconds": 0.1}},  # work a kind's drawings shared at this
                                           #   step, in no tag's cost: the feature maps' forward
                                           #   pass of the probe images (optional, as costs)
      "train_seconds": 41.2,               # training time of the run so far (callbacks excluded)
      "own_seconds": 1.9                   # the callback's own time so far
    }

A tag skipped at every step of a run was left out of the run; its latest reason says why.

Reference images and responses (kinds `"references"` and `"responses"`, `metadata.DATA_KINDS`)
hold numbers for comparing runs (`tb_cnnviz.compare`, `tb_cnnviz.similarity`), not pictures
of their own; the tab does not list them as pictures.

A run's *reference images* (tag `"reference_images/references"`, `metadata.REFERENCES_TAG`) are
written once, at the first step their responses are logged, in the picture layout above (an index
blob, then PNG atlases; `filters` are the image ids `0…n-1`, one tile each, slice axis
`"image"`; 1-D inputs as one row, 3-D at their middle depth; more than 3 channels averaged to
gray; sides over 128 pixels average-pooled, which `"scale"` says). The index adds::

    "references": "3f9c0a…",             # the content hash (similarity.reference_hash)
    "count": 256,                        # reference images
    "shape": [32, 32, 3],                # one image as the model sees it
    "scale": 1                           # stored pixels per model pixel (1, or 1/pool factor)

Each *responses* datum (tag `"<layer>/responses"`, one per layer and logged step) is an index
blob followed by one blob per array, raw little-endian bytes as the index describes them::

    {
      "version": 3,
      "kind": "responses",
      "layer": "conv1",
      "references": "3f9c0a…",            # hash of the reference images these came from
      "count": 256,                       # n, reference images
      "filters": 32,                      # F, every filter of the layer (none sampled)
      "grid": [32, 32],                   # the layer's spatial output shape ([] for a vector)
      "top_k": 8,                         # k, dataset examples per filter
      "gram_norm": 1234.5,                # Frobenius norm of the centered Gram matrix
      "arrays": {name: {"blob": i, "dtype": "<f4", "shape": [...]}, …}
    }

with the arrays

* `gram` `<f4 [n(n+1)/2]`: the upper triangle, row-major, of the centered Gram matrix
  `K = Xc Xc^T` of the layer's activations `X` `[n, positions * F]` over the reference images
  (`Xc`: each column minus its mean); `gram_norm` is `||K||_F` computed from these stored
  values. Linear CKA of two data is `<K_a, K_b>_F / (||K_a|| ||K_b||)` (`similarity.cka`).
* `responses` `<f2 [n, F]`: each filter's spatial mean activation per image, standardized over
  the images (z-scores; 0 for a filter constant over them); `response_mean` and `response_std`
  `<f4 [F]` give back the means (`z * std + mean`). Filter correlations are `z_a^T z_b / n`.
* `example_index` `<i4 [F, k]`, `example_position` `<i4 [F, k, len(grid)]`,
  `example_activation` `<f4 [F, k]`: per filter, the `k` reference images whose largest
  activation is highest (best first, ties to the lower index), where that maximum is in the
  layer's grid (its first occurrence, row-major) and its value.

At 256 reference images a datum is 132 KB for the Gram matrix plus about 0.6 KB per filter.

Recording: like every `tf.summary` function, these write nothing (and return False) when no
default writer is set, or, writing to a `tf.summary` writer, inside `tf.summary.record_if(False)`
(which does not govern `create_file_writer`'s writers). Unlike `tf.summary.image`, they run
eagerly only (they encode PNGs in Python): called inside a `tf.function` (or a `jax.jit`) they
raise a `RuntimeError` saying so; call them after the compiled step, with the tensors it
returned. The Keras callbacks write what they decide to draw whatever an outer `record_if` says
(Keras' `TensorBoard(update_freq=N)` holds one open for the whole of `fit()`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tb_cnnviz import metadata, similarity, tiles, writers
from tb_cnnviz.writers import create_file_writer, written_bytes

__all__ = [
    "DEFAULT_MAX_FILTERS",
    "actmax",
    "attribution",
    "create_file_writer",
    "feature_maps",
    "filter_weights",
    "reference_images",
    "responses",
    "write_layer",
    "write_plan",
    "written_bytes",
]

#: Default cap on filters drawn per layer; larger layers are sampled evenly and say so.
DEFAULT_MAX_FILTERS = 256
#: Default cap on input-channel slices drawn per filter.
DEFAULT_MAX_SLICES = 32
#: Default cap on a feature-map tile's longer side; larger maps are average-pooled.
DEFAULT_MAX_TILE_SIDE = 64
#: Default cap on the pixels of one layer's feature maps (every drawn filter and probe image):
#: a deep layer's maps are average-pooled further, down to `MIN_TILE_SIDE`, to stay within it,
#: so a step of a 50-layer network stays tens of megabytes, not hundreds.
DEFAULT_MAX_LAYER_PIXELS = 2**20
#: Maps are never pooled below this side to meet `DEFAULT_MAX_LAYER_PIXELS`.
MIN_TILE_SIDE = 8
#: A 1x1 kernel's tile shows up to this many input weights per input-channel slice allowed
#: (`max_slices`): 256 inputs (a 16x16 tile) at the default 32.
GRID_INPUTS_PER_SLICE = 8
#: Stored reference images are average-pooled to at most this many pixels a side.
MAX_REFERENCE_SIDE = 128


@writers.encoding
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

    A filter's slices (one per input channel) are normalized together, over the range of its
    slices drawn, so a weak input channel looks weak; each value is kept within 1/255 of that
    range.

    Args:
        name: The layer name; the tag is `"<name>/weights"`.
        kernel: The kernel in Keras' conv layout `[*spatial, in_channels, filters]` with 1 to 3
            spatial dimensions (Conv1D, Conv2D, Conv3D). Conv3D kernels are drawn with their
            depth slices side by side.
        step: The step; defaults to the default writer's step.
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
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     filter_weights("conv2d", np.random.rand(3, 3, 3, 8), step=0)
        True
    """
    kernel = writers.to_numpy(kernel)
    if kernel.ndim not in (3, 4, 5):
        raise ValueError(
            "kernel must have shape [*spatial, in_channels, filters] with 1 to 3 spatial "
            f"dimensions. Received: kernel.shape={kernel.shape}"
        )
    if previous is not None:
        previous = writers.to_numpy(previous)
        if previous.shape != kernel.shape:
            previous = None
    writer = writers.current()
    if writer is None:
        return False
    step = writers.resolve_step(writer, step)
    in_channels, total = kernel.shape[-2], kernel.shape[-1]
    rgb = in_channels == 3 if rgb is None else bool(rgb)
    ids = tiles.sample_filters(total, max_filters)

    def build():
        per_filter = np.moveaxis(kernel, -1, 0)  # [filters, *spatial, in]
        stats = tiles.weight_stats(
            per_filter[ids], None if previous is None else np.moveaxis(previous, -1, 0)[ids]
        )
        pics = _kernel_pictures(per_filter[ids])  # [n, h, w, in]
        notes = []
        if rgb:
            pics, slices = pics[:, None], {"axis": "rgb", "count": 1, "total": 1}
        elif pics.shape[1] * pics.shape[2] == 1:
            # A 1x1 kernel is one weight per input channel: single-pixel slices would say
            # nothing, so each filter becomes one tile of its input-channel weights, row-major.
            # Like the slices of larger kernels, the first inputs stand for the rest.
            shown = min(in_channels, max_slices * GRID_INPUTS_PER_SLICE)
            if shown < in_channels:
                notes.append(f"showing the weights of the first {shown} of {in_channels} inputs")
            h = _grid_height(shown)
            pics = pics[..., :shown].reshape(len(ids), 1, h, shown // h, 1)
            slices = {"axis": "input_channel_grid", "count": 1, "total": 1}
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

    # A filter's slices share its range: 3x3 slices are 9 pixels, and a range of their own
    # (8 bytes) doubled the bytes of a ResNet's filter weights. Per-filter is the tab's default
    # normalization, and it shows which input channels a filter weighs most.
    written = write_layer(
        "weights", name, build, ids, total, step, description=description, shared_ranges=True
    )
    if written and previous is not None:
        ratio = _ratio(kernel - previous, previous)
        writers.current().scalar(
            f"{name}/update_ratio", ratio, writers.resolve_step(writers.current(), step)
        )
    return written


@writers.encoding
def feature_maps(
    name: str,
    activations,
    step: int | None = None,
    *,
    max_filters: int = DEFAULT_MAX_FILTERS,
    max_tile_side: int = DEFAULT_MAX_TILE_SIDE,
    max_pixels: int = DEFAULT_MAX_LAYER_PIXELS,
    description: str | None = None,
) -> bool:
    """Writes the feature maps of a batch of probe images, with per-filter statistics.

    Args:
        name: The layer name; the tag is `"<name>/feature_maps"`.
        activations: The layer's output for the probe images, channels last:
            `[n_images, length, filters]`, `[n_images, h, w, filters]` or
            `[n_images, d, h, w, filters]` (3-D maps are drawn at their middle depth).
        step: The step; defaults to the default writer's step.
        max_filters: Draw at most this many filters, evenly sampled.
        max_tile_side: Average-pool maps whose longer side exceeds this.
        max_pixels: Average-pool further (to a side of at least 8) so that all drawn maps of
            the layer hold at most this many pixels; the index notes say so.
        description: Optional Markdown for TensorBoard.

    Returns:
        True when a summary was written, False when no default writer records. The layer's
        `dead_fraction` (filters zero on every probe) is also written as a scalar.

    Raises:
        ValueError: If `activations` has the wrong rank, is not finite, or no step is known.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     feature_maps("conv2d", np.random.rand(4, 16, 16, 8), step=0)
        True
    """
    acts = writers.to_numpy(activations)
    if acts.ndim not in (3, 4, 5):
        raise ValueError(
            "activations must have shape [n_images, *spatial, filters] with 1 to 3 spatial "
            f"dimensions. Received: activations.shape={acts.shape}"
        )
    writer = writers.current()
    if writer is None:
        return False
    step = writers.resolve_step(writer, step)
    total, n_images = acts.shape[-1], acts.shape[0]
    ids = tiles.sample_filters(total, max_filters)
    all_stats = tiles.activation_stats(acts)
    dead_fraction = float(np.mean(all_stats["dead"]))

    def build():
        maps = acts[..., ids]
        if maps.ndim == 5:
            maps = maps[:, maps.shape[1] // 2]
        if maps.ndim == 3:
            maps = maps[:, None]  # [n, 1, length, f]
        fit = int((max_pixels / (len(ids) * n_images)) ** 0.5)
        side = min(max_tile_side, max(fit, MIN_TILE_SIDE))
        (h, w) = maps.shape[1:3]
        maps = _shrink(np.moveaxis(maps, -1, 0), side)  # [f, n, h, w]
        notes = []
        if maps.shape[-2:] != (h, w):
            notes.append(f"maps average-pooled from {h}x{w} to {maps.shape[-2]}x{maps.shape[-1]}")
        stats = {key: [values[i] for i in ids] for key, values in all_stats.items()}
        slices = {"axis": "probe", "count": int(n_images), "total": int(n_images)}
        return maps[..., None], slices, stats, {"dead_fraction": dead_fraction}, notes

    written = write_layer("feature_maps", name, build, ids, total, step, description=description)
    if written:
        writers.current().scalar(
            f"{name}/dead_fraction", dead_fraction, writers.resolve_step(writers.current(), step)
        )
    return written


@writers.encoding
def attribution(
    name: str,
    images,
    heatmaps,
    step: int | None = None,
    *,
    predicted=None,
    confidence=None,
    true_classes=None,
    true_heatmaps=None,
    values=None,
    true_values=None,
    class_names: Sequence[str] | None = None,
    method: str | None = None,
    target_layer: str | None = None,
    max_tile_side: int = DEFAULT_MAX_TILE_SIDE,
    description: str | None = None,
) -> bool:
    """Writes class attribution heatmaps of probe images, with each probe's prediction.

    Each probe image is stored beside its heatmaps, so the dashboard can blend them with an
    opacity slider and switch between the predicted and the true class.

    Args:
        name: The attribution method's name; the tag is `"<name>/attribution"`.
        images: The probe images `[n, h, w, channels]` or `[n, h, w]`; 3 channels are drawn in
            colour, any other count as the channel mean in gray. 1-D inputs `[n, length, …]` are
            drawn as one row, 3-D inputs `[n, d, h, w, …]` at their middle depth.
        heatmaps: Heatmaps for the predicted class `[n, h, w]` (`[n, length]`, `[n, d, h, w]`),
            1 marking the most important pixels (as `tb_cnnviz.attribution` returns them).
        step: The step; defaults to the default writer's step.
        predicted: Each probe's predicted class `[n]` (a classifier's head).
        confidence: The probability of each probe's predicted class `[n]`.
        true_classes: Each probe's true class `[n]`, when known.
        true_heatmaps: Heatmaps for the true class, shaped like `heatmaps`; needs
            `true_classes`.
        values: Instead of `predicted` and `confidence`, for a head without classes (a
            regression): the explained output value of each probe `[n]`.
        true_values: The true value of each probe `[n]`, when known (with `values`).
        class_names: Optional names of the classes, stored once for the dashboard.
        method: Optional method id stored as a static fact (for example `"gradcam"`).
        target_layer: Optional conv layer the maps were read from, stored as a static fact.
        max_tile_side: Average-pool pictures whose longer side exceeds this.
        description: Optional Markdown for TensorBoard.

    Returns:
        True when a summary was written, False when no default writer records.

    Raises:
        ValueError: If shapes or lengths disagree, neither `predicted` and `confidence` nor
            `values` are given, or no step is known.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     attribution("gradcam", np.random.rand(2, 8, 8, 3), np.random.rand(2, 8, 8),
        ...                 step=0, predicted=[1, 0], confidence=[0.9, 0.6])
        ...     attribution("regression", np.random.rand(2, 8, 8, 3), np.random.rand(2, 8, 8),
        ...                 step=0, values=[0.3, 2.5], true_values=[0.5, 2.0])
        True
        True
    """
    heat, images = writers.to_numpy(heatmaps), writers.to_numpy(images)
    if heat.ndim not in (2, 3, 4) or len(heat) == 0:
        raise ValueError(
            "heatmaps must have shape [n_images, *spatial] with 1 to 3 spatial dimensions and "
            f"at least one image. Received: heatmaps.shape={heat.shape}"
        )
    if images.ndim not in (heat.ndim, heat.ndim + 1) or images.shape[: heat.ndim] != heat.shape:
        raise ValueError(
            "heatmaps must hold one map per image at the images' size, and images must have "
            "shape [n_images, *spatial] or [n_images, *spatial, channels]. "
            f"Received: heatmaps.shape={heat.shape}, images.shape={images.shape}"
        )
    if images.ndim == heat.ndim:
        images = images[..., None]
    n = len(heat)
    maps = {"predicted": _heatmaps("heatmaps", heat, heat.shape)}
    classified = predicted is not None or confidence is not None
    if classified == (values is not None) or (
        classified and (predicted is None or confidence is None)
    ):
        raise ValueError(
            "attribution needs predicted and confidence (a classifier) or values (a head "
            f"without classes), not both. Received: predicted={predicted!r}, "
            f"confidence={confidence!r}, values={values!r}"
        )
    stats = {
        "predicted": _classes("predicted", predicted, n) if classified else [None] * n,
        "confidence": (
            tiles.round_floats(_per_image("confidence", confidence, n))
            if classified
            else [None] * n
        ),
        "true": [None] * n,
        "correct": [None] * n,
    }
    head_facts = {}
    if not classified:
        if true_classes is not None or true_heatmaps is not None:
            raise ValueError(
                "true_classes and true_heatmaps go with predicted classes; with values, give "
                f"true_values. Received: true_classes={true_classes!r}"
            )
        stats["value"] = tiles.round_floats(_finite("values", _per_image("values", values, n)))
        stats["true_value"] = [None] * n
        if true_values is not None:
            truth = _finite("true_values", _per_image("true_values", true_values, n))
            stats["true_value"] = tiles.round_floats(truth)
        head_facts["head"] = "values"
    elif true_values is not None:
        raise ValueError(
            "true_values go with values (a head without classes); a classifier takes "
            f"true_classes. Received: true_values={true_values!r}"
        )
    if true_heatmaps is not None and true_classes is None:
        raise ValueError(
            "true_heatmaps need true_classes to say which class they show. "
            "Received: true_classes=None"
        )
    if true_classes is not None:
        stats["true"] = _classes("true_classes", true_classes, n)
        stats["correct"] = [p == t for p, t in zip(stats["predicted"], stats["true"], strict=True)]
        if true_heatmaps is not None:
            maps["true"] = _heatmaps("true_heatmaps", true_heatmaps, heat.shape)
    writer = writers.current()
    if writer is None:
        return False
    step = writers.resolve_step(writer, step)

    def build():
        pictures = images if images.shape[-1] in (1, 3) else images.mean(-1, keepdims=True)
        channels = pictures.shape[-1]
        stacked = np.stack(list(maps.values()), axis=1)[..., None]  # [n, k, *spatial, 1]
        # One atlas needs one channel count: heatmaps are stored gray with the image's channels.
        pictures = np.concatenate([pictures[:, None], np.repeat(stacked, channels, -1)], axis=1)
        notes = []
        if pictures.ndim == 4:  # 1-D inputs: one row
            pictures = pictures[:, :, None]
        if pictures.ndim == 6:  # 3-D inputs: the middle depth, as for feature maps
            depth = pictures.shape[2]
            pictures = pictures[:, :, depth // 2]
            notes.append(f"showing depth {depth // 2} of {depth}")
        shrunk = np.moveaxis(_shrink(np.moveaxis(pictures, -1, 2), max_tile_side), 2, -1)
        if shrunk.shape[2:4] != pictures.shape[2:4]:
            (h, w), (hh, ww) = pictures.shape[2:4], shrunk.shape[2:4]
            notes.append(f"pictures average-pooled from {h}x{w} to {hh}x{ww}")
        labels = ["image", *maps]
        slices = {"axis": "image", "count": len(labels), "total": len(labels), "labels": labels}
        known = [c for c in stats["correct"] if c is not None]
        layer_stats = {
            "accuracy": float(np.mean(known)) if known else None,
            "mean_confidence": (
                tiles.round_floats([np.mean(stats["confidence"])])[0] if classified else None
            ),
        }
        if not classified and true_values is not None:
            errors = np.subtract(stats["value"], stats["true_value"])
            layer_stats["mean_absolute_error"] = tiles.round_floats([np.abs(errors).mean()])[0]
        return shrunk, slices, stats, layer_stats, notes

    return write_layer(
        "attribution",
        name,
        build,
        list(range(n)),
        n,
        step,
        description=description,
        method=method,
        target_layer=target_layer,
        class_names=None if class_names is None else [str(c) for c in class_names],
        **head_facts,
    )


@writers.encoding
def actmax(
    name: str,
    images,
    step: int | None = None,
    *,
    activations=None,
    filters: Sequence[int] | None = None,
    total_filters: int | None = None,
    description: str | None = None,
) -> bool:
    """Writes activation-maximization images: for each filter, an input that excites it most.

    Args:
        name: The layer name; the tag is `"<name>/actmax"`.
        images: One image per filter, `[n, h, w, 3]` (drawn in colour, slice axis `"rgb"`) or
            `[n, h, w, 1]` / `[n, h, w]` (gray, slice axis `"image"`), in any value range, as
            `tb_cnnviz.actmax.render` returns them.
        step: The step; defaults to the default writer's step.
        activations: The activation each image reached `[n]`, stored as the per-filter
            statistic `activation`.
        filters: The filter id of each image; defaults to `0…n-1`.
        total_filters: Filters in the layer, when only some were rendered; defaults to the
            number of filters given.
        description: Optional Markdown for TensorBoard.

    Returns:
        True when a summary was written, False when no default writer records.

    Raises:
        ValueError: If shapes or lengths disagree, values are not finite, or no step is known.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     actmax("conv2d", np.random.rand(4, 8, 8, 3), step=0, activations=[1, 2, 3, 4])
        True
    """
    pics = writers.to_numpy(images)
    if pics.ndim == 3:
        pics = pics[..., None]
    if pics.ndim != 4 or pics.shape[-1] not in (1, 3) or len(pics) == 0:
        raise ValueError(
            "images must have shape [n_filters, h, w, 3] or [n_filters, h, w(, 1)] with at "
            f"least one image. Received: images.shape={pics.shape}"
        )
    n = len(pics)
    ids = list(range(n)) if filters is None else [int(f) for f in filters]
    if len(ids) != n:
        raise ValueError(
            f"filters must name one filter per image ({n}). Received: {len(ids)} filters"
        )
    stats = {}
    if activations is not None:
        reached = tiles.round_floats(_per_image("activations", activations, n))
        stats["activation"] = [v if np.isfinite(v) else None for v in reached]  # JSON has no NaN
    total = len(ids) if total_filters is None else int(total_filters)
    writer = writers.current()
    if writer is None:
        return False
    step = writers.resolve_step(writer, step)

    def build():
        axis = "rgb" if pics.shape[-1] == 3 else "image"
        return pics[:, None], {"axis": axis, "count": 1, "total": 1}, stats, {}, []

    total = max(total, len(ids))
    return write_layer("actmax", name, build, ids, total, step, description=description)


@writers.encoding
def reference_images(
    images,
    step: int | None = None,
    *,
    max_side: int = MAX_REFERENCE_SIDE,
    description: str | None = None,
) -> bool:
    """Writes a run's reference images, once: what its `responses` were computed from.

    `tb_cnnviz.compare` and the tab crop each filter's dataset examples from them, and their
    content hash tells which runs can be compared. Write them once per run (the callbacks do,
    at the first step they log responses); `responses` needs only their hash.

    Args:
        images: The reference images `[n, *spatial, channels]`, at least 16, as the model sees
            them; for a model with several inputs, a list with one array per input (the
            pictures are taken from the first image input, the hash covers all of them).
        step: The step; defaults to the default writer's step.
        max_side: Average-pool stored pictures whose longer side exceeds this (the index says
            by how much); the hash is of the images as given.
        description: Optional Markdown for TensorBoard.

    Returns:
        True when a summary was written, False when no default writer records.

    Raises:
        ValueError: If there are fewer than 16 images, no image input, values that are not
            finite, or no step is known.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     reference_images(np.random.rand(16, 8, 8, 3), step=0)
        True
    """
    arrays = [
        writers.to_numpy(a) for a in (images if isinstance(images, list | tuple) else [images])
    ]
    pictures = next((a for a in arrays if a.ndim >= 3), None)
    if pictures is None:
        raise ValueError(
            "reference_images must hold images [n_images, *spatial, channels]. "
            f"Received: shapes {[a.shape for a in arrays]}"
        )
    similarity.check_reference_count(len(pictures))
    if not np.isfinite(pictures).all():
        raise ValueError("reference_images contains NaN or Inf values.")
    digest = similarity.reference_hash(arrays)
    writer = writers.current()
    if writer is None:
        return False
    step = writers.resolve_step(writer, step)
    pics = pictures
    if pics.ndim == 3:  # 1-D inputs: one row
        pics = pics[:, None]
    if pics.ndim == 5:  # 3-D inputs: the middle depth, as for feature maps
        pics = pics[:, pics.shape[1] // 2]
    if pics.shape[-1] not in (1, 3):
        pics = pics.mean(axis=-1, keepdims=True)
    shrunk = np.moveaxis(_shrink(np.moveaxis(pics, -1, 1), max_side), 1, -1)
    notes = []
    if shrunk.shape[1:3] != pics.shape[1:3]:
        notes.append(f"images average-pooled from {pics.shape[1]}x{pics.shape[2]}")
    atlases, ranges = tiles.pack_tiles(shrunk)
    n = len(pics)
    index = {
        "kind": metadata.REFERENCES_KIND,
        "layer": "reference_images",
        "references": digest,
        "count": n,
        "shape": [int(d) for d in pictures.shape[1:]],
        "scale": shrunk.shape[2] / pics.shape[2],
        "tile": [int(d) for d in shrunk.shape[1:]],
        "filters": list(range(n)),
        "total_filters": n,
        "slices": {"axis": "image", "count": 1, "total": 1},
        "atlases": [{"blob": k + 1, **a.describe()} for k, a in enumerate(atlases)],
        "ranges": ranges,
        "stats": {},
        "layer_stats": {},
        "notes": notes,
    }
    blobs = [metadata.encode_index(index)] + [a.png for a in atlases]
    md = metadata.create_summary_metadata(
        metadata.REFERENCES_KIND, "reference_images", description=description, references=digest
    )
    writers.add_written(sum(len(b) for b in blobs))
    return writer.write(metadata.REFERENCES_TAG, blobs, step, md)


@writers.encoding
def responses(
    name: str,
    activations,
    step: int | None = None,
    *,
    reference_images,
    top_k: int = similarity.DEFAULT_TOP_K,
    description: str | None = None,
) -> bool:
    """Writes a layer's responses to the reference images: for CKA, alignment, dataset examples.

    From the layer's activations over the run's reference images it stores their centered Gram
    matrix (linear CKA against any other layer, step or run with the same reference images),
    each filter's pooled response (aligning filters across runs) and each filter's `top_k`
    reference images with the position of their maximum (dataset examples); the module
    docstring gives the layout. Backend tensors are reduced on the backend (`keras.ops`), so
    only small arrays leave the device.

    Args:
        name: The layer name; the tag is `"<name>/responses"`.
        activations: The layer's output for the reference images, channels last:
            `[n, *spatial, filters]` (or `[n, units]`), as a NumPy array or a backend tensor.
        step: The step; defaults to the default writer's step.
        reference_images: The reference images the activations are of (the same array or list
            as given to `reference_images`), or their hash (`similarity.reference_hash`).
        top_k: Dataset examples kept per filter.
        description: Optional Markdown for TensorBoard.

    Returns:
        True when a summary was written, False when no default writer records.

    Raises:
        ValueError: If the shapes do not fit the reference images, values are not finite,
            `top_k` is not a positive integer, or no step is known.

    Example:
        >>> import tempfile
        >>> refs = np.random.rand(16, 8, 8, 3)
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     responses("conv2d", np.random.rand(16, 6, 6, 4), step=0, reference_images=refs)
        True
    """
    from tb_cnnviz import checks

    top_k = checks.integer("top_k", top_k, minimum=1)
    writers.check_traced(activations)
    shape = tuple(int(d) for d in activations.shape)
    if len(shape) < 2 or shape[0] == 0:
        raise ValueError(
            "activations must have shape [n_images, *spatial, filters]. "
            f"Received: activations.shape={shape}"
        )
    if isinstance(reference_images, str):
        digest = reference_images
    else:
        refs = (
            reference_images if isinstance(reference_images, list | tuple) else [reference_images]
        )
        refs = [writers.to_numpy(r) for r in refs]
        if len(refs[0]) != shape[0]:
            raise ValueError(
                f"activations must hold one row per reference image ({len(refs[0])}). "
                f"Received: activations.shape={shape}"
            )
        digest = similarity.reference_hash(refs)
    similarity.check_reference_count(shape[0])
    writer = writers.current()
    if writer is None:
        return False
    step = writers.resolve_step(writer, step)
    ops = None
    if not isinstance(activations, np.ndarray):
        import keras

        ops = keras.ops
    reduced = similarity.layer_responses(activations, top_k=top_k, ops=ops)
    if not all(np.isfinite(reduced[k]).all() for k in ("gram", "pooled", "example_activation")):
        raise ValueError(f"activations of {name!r} contain NaN or Inf values.")
    triangle = similarity.pack_triangle(reduced["gram"])
    z, mean, std = similarity.standardize(reduced["pooled"])
    arrays = {
        "gram": triangle,
        "responses": z,
        "response_mean": mean,
        "response_std": std,
        **{k: reduced[k] for k in ("example_index", "example_position", "example_activation")},
    }
    specs, blobs = {}, []
    for blob, (key, array) in enumerate(arrays.items(), start=1):
        specs[key], data = similarity.encode_array(array, blob)
        blobs.append(data)
    norm = similarity.triangle_norm(triangle)
    index = {
        "kind": metadata.RESPONSES_KIND,
        "layer": name,
        "references": digest,
        "count": shape[0],
        "filters": shape[-1],
        "grid": list(reduced["grid"]),
        "top_k": int(reduced["example_index"].shape[1]),
        "gram_norm": norm if math.isfinite(norm) else None,
        "arrays": specs,
    }
    blobs = [metadata.encode_index(index), *blobs]
    md = metadata.create_summary_metadata(
        metadata.RESPONSES_KIND, name, description=description, references=digest
    )
    writers.add_written(sum(len(b) for b in blobs))
    return writer.write(metadata.tag_for(name, metadata.RESPONSES_KIND), blobs, step, md)


@writers.encoding
def write_layer(
    kind: str,
    name: str,
    build: Callable[[], tuple[np.ndarray, dict, dict, dict, list]],
    filter_ids: Sequence[int],
    total_filters: int,
    step: int | None = None,
    *,
    description: str | None = None,
    shared_ranges: bool = False,
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
        step: The step; defaults to the default writer's step.
        description: Optional Markdown for TensorBoard.
        shared_ranges: Normalize each filter's slices together, over one range (stored once).
        **static: Further static facts stored in the plugin metadata (`None` values dropped).

    Returns:
        True when a summary was written.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> build = lambda: (np.random.rand(2, 1, 4, 4, 3), {"axis": "rgb", "count": 1,
        ...     "total": 1}, {}, {}, [])
        >>> with writer.as_default():
        ...     write_layer("actmax", "conv2d", build, [0, 1], 2, step=0)
        True
    """
    writer = writers.current()
    if writer is None:
        return False
    step = writers.resolve_step(writer, step)
    pictures, slices, stats, layer_stats, notes = build()
    pictures = np.asarray(pictures)
    n, count = pictures.shape[:2]
    atlases, ranges = tiles.pack_tiles(
        pictures.reshape(n * count, *pictures.shape[2:]), group=count if shared_ranges else 1
    )
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
        "ranges": ranges,
        "stats": stats,
        "layer_stats": layer_stats,
        "notes": notes,
    }
    blobs = [metadata.encode_index(index)] + [a.png for a in atlases]
    md = metadata.create_summary_metadata(
        kind, name, description=description, **{k: v for k, v in static.items() if v is not None}
    )
    writers.add_written(sum(len(b) for b in blobs))
    return writer.write(metadata.tag_for(name, kind), blobs, step, md)


@writers.encoding
def write_plan(
    owner: str,
    step: int | None = None,
    *,
    drawn: Sequence[str] = (),
    skipped: dict[str, str] | None = None,
    costs: dict[str, dict[str, float]] | None = None,
    passes: dict[str, float] | None = None,
    budget: float | None = None,
    train_seconds: float | None = None,
    own_seconds: float | None = None,
    layers: Sequence[str] | None = None,
    thinned: str | None = None,
    resumed: dict[str, Any] | None = None,
) -> bool:
    """Writes a callback's plan record for one step: what it drew and what it left out, and why.

    Args:
        owner: The callback's name; the tag is `"<owner>/plan"`.
        step: The step; defaults to the default writer's step.
        drawn: The picture tags written at this step.
        skipped: `{tag: reason}` for tags due at this step but not drawn.
        costs: `{tag: {"seconds": s, "bytes": b}}`: what drawing each tag cost at this step
            (its time, background encoding included where it competes with training, and the
            bytes written).
        passes: `{kind: seconds}`: the work a kind's drawings at this step shared, counted
            once and in no tag's cost (the feature maps' forward pass of the probe images,
            which every layer's maps come from). Recorded as `{kind: {"seconds": s}}`.
        budget: The time budget as a fraction of training time, or None for none.
        train_seconds: Training time of the run so far, the callbacks' time excluded.
        own_seconds: The callback's own time so far.
        layers: The model's conv layers in the order a forward pass meets them, stored as a
            static fact of the plan tag (its first write counts): the tab lists layers so.
        thinned: Why this step has no pictures although training logged it: a long run
            keeps fewer steps as it grows (`tb_cnnviz.thinning`). Recorded as `"thinned"`.
        resumed: On the first step a process writes to a run another process wrote before
            (a preempted job resumed): `{"previous_last_step", "from_step", "replaced"}`.

    Returns:
        True when a summary was written, False when no default writer records.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> with writer.as_default():
        ...     write_plan("cnnviz", step=0, drawn=["c/weights"], skipped={"c/actmax": "budget"})
        True
    """
    writer = writers.current()
    if writer is None:
        return False
    step = writers.resolve_step(writer, step)
    record = {
        "kind": metadata.PLAN_KIND,
        "step": step,
        "budget": None if budget is None else float(budget),
        "drawn": [str(t) for t in drawn],
        "skipped": {str(k): str(v) for k, v in (skipped or {}).items()},
        "costs": {
            str(tag): {"seconds": round(float(c["seconds"]), 4), "bytes": int(c["bytes"])}
            for tag, c in (costs or {}).items()
        },
        "passes": {
            str(kind): {"seconds": round(float(v), 4)} for kind, v in (passes or {}).items()
        },
        "train_seconds": None if train_seconds is None else round(float(train_seconds), 3),
        "own_seconds": None if own_seconds is None else round(float(own_seconds), 3),
    }
    if thinned is not None:
        record["thinned"] = str(thinned)
    if resumed is not None:
        record["resumed"] = dict(resumed)
    static = {} if layers is None else {"layers": [str(name) for name in layers]}
    md = metadata.create_summary_metadata(
        metadata.PLAN_KIND,
        owner,
        description=f"What `{owner}` drew at each step, and what it left out and why.",
        **static,
    )
    return writer.write(metadata.plan_tag(owner), [metadata.encode_index(record)], step, md)


def _heatmaps(argument: str, maps, shape: tuple[int, int, int]) -> np.ndarray:
    maps = writers.to_numpy(maps)
    if maps.shape != shape:
        raise ValueError(
            f"{argument} must have shape [n_images, h, w] = {list(shape)}, one map per image at "
            f"the images' size. Received: {argument}.shape={maps.shape}"
        )
    if not np.isfinite(maps).all():
        raise ValueError(f"{argument} contains NaN or Inf values.")
    return maps


def _per_image(argument: str, values, n: int) -> np.ndarray:
    values = np.asarray(values).reshape(-1) if np.ndim(values) else np.asarray([values])
    if len(values) != n or not np.issubdtype(values.dtype, np.number):
        raise ValueError(
            f"{argument} must hold one number per image ({n} images). "
            f"Received: {argument}={np.asarray(values).tolist()!r}"
        )
    return values


def _finite(argument: str, values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{argument} contains NaN or Inf values. Received: {values.tolist()!r}")
    return values


def _classes(argument: str, values, n: int) -> list[int]:
    values = _per_image(argument, values, n)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ValueError(
            f"{argument} must hold class ids. Received: {argument}={values.tolist()!r}"
        )
    return [int(v) for v in values]


def _kernel_pictures(per_filter: np.ndarray) -> np.ndarray:
    """`[n, *spatial, in]` -> `[n, h, w, in]`: 1-D kernels as one row, 3-D depth side by side."""
    if per_filter.ndim == 3:
        return per_filter[:, None]
    if per_filter.ndim == 5:
        n, d, h, w, c = per_filter.shape
        return per_filter.transpose(0, 2, 1, 3, 4).reshape(n, h, d * w, c)
    return per_filter


def _grid_height(n: int) -> int:
    """The largest divisor of `n` not above its square root: the height of a near-square grid."""
    return max(d for d in range(1, int(n**0.5) + 1) if n % d == 0)


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


def _ratio(delta: np.ndarray, base: np.ndarray) -> float:
    denom = float(np.linalg.norm(base))
    return float(np.linalg.norm(delta)) / denom if denom > 0 else 0.0
