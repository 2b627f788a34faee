"""Matplotlib figures of CNN Viz pictures, for papers, slides and notebooks.

The functions behind `tb-cnnviz export`, usable on their own:

* `layer_grid`: one layer's pictures of one kind at one step, as a grid of filters with their ids,
  a title and a colorbar;
* `compare`: the same grid for several runs side by side, on one shared colour scale;
* `animate`: a layer's evolution over every logged step, as a matplotlib animation;
* `similarity`: linear CKA heatmaps (a layer over time, runs against runs, layers against layers)
  of runs logged with reference images;
* `examples`: each filter's dataset examples, crops of the reference images that excite it most;
* `save`: writes a figure (.png, .pdf, .svg) or an animation (.gif) without blurring the pixels,
  and without leaving a half-written file behind on failure.

Pictures are read with `tb_cnnviz.reader.Logdir`; pass a path or a `Logdir` you made once. What
the colours mean:

* `normalization="filter"` (the default, as in the dashboard) stretches each filter to its own
  range, so weak filters stay visible; `"layer"` puts every filter on one scale, in the original
  units, so strong and weak filters can be told apart; `"tile"` stretches every slice on its own.
* Weights are centred on zero (a diverging colormap by default): the middle colour is 0, so a
  weight's sign reads as its hue. Other kinds map their minimum to the colormap's start.
* RGB pictures (a first layer's filters, actmax images) keep their colours; the colorbar then
  says how one colour channel's intensity maps to values.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib import animation, colors
from matplotlib import pyplot as plt

from tb_cnnviz.reader import LayerPictures, Logdir, NotFoundError, names_text

__all__ = [
    "FIGURE_FORMATS",
    "NORMALIZATIONS",
    "animate",
    "compare",
    "default_cmap",
    "examples",
    "figure_of",
    "layer_grid",
    "save",
    "similarity",
]

#: How values become colours; see the module docstring.
NORMALIZATIONS = ("filter", "layer", "tile")
#: File types `save` writes for a figure; an animation is written as `.gif`.
FIGURE_FORMATS = (".png", ".pdf", ".svg")

_KIND_TITLES = {
    "weights": "filter weights",
    "feature_maps": "feature maps",
    "actmax": "activation maximization",
    "attribution": "attribution",
}
_UNITS = {
    "weights": "weight",
    "feature_maps": "activation",
    "actmax": "pixel value",
    "attribution": "value",
}
_SLICE_NAMES = {
    "input_channel": "input channel",
    "probe": "probe image",
    "rgb": "colour",
    "image": "picture",
}

# Geometry of a figure, in inches: the colorbar and its labels on the right, two title lines on
# top. A page of a paper is about 7 inches wide and 9 high.
_LEFT, _BOTTOM, _PANEL_GAP = 0.15, 0.1, 0.3
_CBAR_GAP, _CBAR_WIDTH, _CBAR_LABELS = 0.12, 0.13, 0.85
_TITLE_HEIGHT, _PANEL_TITLE_HEIGHT = 0.62, 0.25
_MAX_PANEL_HEIGHT = 8.0
_DEFAULT_PANEL_HEIGHT = 4.2  # what grid shapes aim for
_OVERLAY_ALPHA = 0.75  # heatmap opacity over the probe image where importance is 1
_MIN_BAR_HEIGHT, _MAX_BAR_HEIGHT = 1.8, 3.5
_BAR_FONT = 8
_MAX_CELL_INCHES = 0.9  # a grid of few filters makes a smaller figure, not giant cells
_MIN_WIDTH = 4.5  # room for the title
_SLICE_LINE_RGBA = (0.72, 0.72, 0.72, 1.0)
_MIN_CELL_PIXELS = 40  # canvas pixels on a filter cell's longer side, at least


def default_cmap(kind: str) -> str:
    """Returns the colormap a kind opens with, as in the dashboard.

    Signed weights diverge around zero; activations and attribution maps use viridis.

    Example:
        >>> default_cmap("weights"), default_cmap("feature_maps")
        ('RdBu_r', 'viridis')
    """
    if kind == "weights":
        return "RdBu_r"
    if kind in ("feature_maps", "attribution"):
        return "viridis"
    return "gray"


def layer_grid(
    logdir: str | os.PathLike | Logdir,
    run: str,
    layer: str,
    kind: str,
    step: int | None = None,
    *,
    ax=None,
    normalization: str = "filter",
    cmap=None,
    slices: str | int | None = None,
    width: float = 7.0,
    colorbar: bool = True,
):
    """Draws one layer's pictures of one kind at one step as a grid of filters.

    Each filter is drawn with its id under it, its slices (input channels of a kernel, or the
    probe images of feature maps, per `slices`) side by side. The title names the layer, kind,
    step and run; the colorbar says what the colours mean.

    Args:
        logdir: A log directory, or a `tb_cnnviz.reader.Logdir` already loaded.
        run: The run; `"<name>"` also finds `"<name>/train"`, where the callbacks write.
        layer: The layer (for `attribution`, the method, for example `"gradcam"`).
        kind: One of `tb_cnnviz.KINDS`.
        step: The step; `None` means the latest.
        ax: Draw into these axes; by default a new figure of a size that suits the grid.
        normalization: `"filter"`, `"layer"` or `"tile"` (see the module docstring).
        cmap: A matplotlib colormap (name or object); by default `default_cmap(kind)`.
        slices: Which slices each filter shows: `"all"`, one slice number, or `None` for the
            kind's default (every input channel of a kernel; the first probe image of feature
            maps; for attribution, the predicted-class heatmap over the probe image).
        width: Width of a new figure, in inches.
        colorbar: Draw the colorbar.

    Returns:
        The `matplotlib.axes.Axes` drawn into; its figure is `ax.figure`.

    Raises:
        tb_cnnviz.reader.NotFoundError: If the run, layer, kind or step is not in the logdir.
        ValueError: If `normalization`, `cmap` or `slices` is not valid.

    Example:
        >>> import tempfile, numpy as np, tensorflow as tf
        >>> from tb_cnnviz import summary
        >>> path = tempfile.mkdtemp()
        >>> with tf.summary.create_file_writer(path + "/run1").as_default():
        ...     _ = summary.filter_weights("conv1", np.random.randn(3, 3, 3, 16), step=0)
        >>> ax = layer_grid(path, "run1", "conv1", "weights")
        >>> ax.figure.texts[0].get_text()
        'conv1 · filter weights · step 0'
        >>> save(ax.figure, path + "/conv1.png")
    """
    logs = _open(logdir)
    pictures = logs.read(run, layer, kind, step)
    panel = _Panel.build(pictures, normalization=normalization, cmap=cmap, slices=slices)
    title, subtitle = _titles([pictures], panel, normalization)
    if ax is None:
        fig, layout = _new_figure([panel], width=width, with_panel_titles=False)
        _draw_figure(fig, layout, [panel], title, subtitle, panel_titles=None, colorbar=colorbar)
        return fig.axes[0]
    _draw_in(ax, panel, title, subtitle, colorbar=colorbar)
    return ax


def compare(
    logdir: str | os.PathLike | Logdir,
    runs: Sequence[str],
    layer: str,
    kind: str,
    step: int | None = None,
    *,
    normalization: str = "filter",
    cmap=None,
    slices: str | int | None = None,
    width: float = 10.0,
):
    """Draws one layer's grid for several runs side by side, on one colour scale.

    With `normalization="layer"` the runs share one range, so their values compare directly.

    Args:
        logdir: A log directory, or a `tb_cnnviz.reader.Logdir`.
        runs: The runs, left to right (usually two).
        layer: The layer.
        kind: One of `tb_cnnviz.KINDS`.
        step: The step; `None` means the latest step every run has.
        normalization: `"filter"`, `"layer"` or `"tile"`.
        cmap: A matplotlib colormap; by default `default_cmap(kind)`.
        slices: As in `layer_grid`.
        width: Figure width in inches.

    Returns:
        The `matplotlib.figure.Figure`, one panel per run.

    Raises:
        tb_cnnviz.reader.NotFoundError: If a run, the layer, kind or step is missing, or the
            runs share no step.
        ValueError: If fewer than two runs are given, or an option is not valid.

    Example:
        >>> import tempfile, numpy as np, tensorflow as tf
        >>> from tb_cnnviz import summary
        >>> path = tempfile.mkdtemp()
        >>> for run in ("a", "b"):
        ...     with tf.summary.create_file_writer(f"{path}/{run}").as_default():
        ...         _ = summary.filter_weights("conv1", np.random.randn(3, 3, 3, 8), step=0)
        >>> fig = compare(path, ["a", "b"], "conv1", "weights", normalization="layer")
        >>> [ax.get_title() for ax in fig.axes[:2]]
        ['a', 'b']
    """
    logs = _open(logdir)
    runs = _check_runs(logs, runs)
    if step is None:
        step = _common_steps(logs, runs, layer, kind)[-1]
    pictures = [logs.read(run, layer, kind, step) for run in runs]
    panels = _Panel.build_shared(pictures, normalization=normalization, cmap=cmap, slices=slices)
    title, subtitle = _titles(pictures, panels[0], normalization)
    fig, layout = _new_figure(panels, width=width, with_panel_titles=True)
    _draw_figure(fig, layout, panels, title, subtitle, panel_titles=[p.run for p in pictures])
    return fig


def animate(
    logdir: str | os.PathLike | Logdir,
    run: str | Sequence[str],
    layer: str,
    kind: str,
    *,
    steps: Sequence[int] | None = None,
    normalization: str = "filter",
    cmap=None,
    slices: str | int | None = None,
    fps: float = 2.0,
    width: float | None = None,
):
    """Animates a layer's evolution over the logged steps, one frame per step.

    Args:
        logdir: A log directory, or a `tb_cnnviz.reader.Logdir`.
        run: The run, or several runs to animate side by side (their common steps).
        layer: The layer.
        kind: One of `tb_cnnviz.KINDS`.
        steps: The steps to show; by default every logged step.
        normalization: `"filter"`, `"layer"` or `"tile"`; a layer scale is recomputed per frame.
        cmap: A matplotlib colormap; by default `default_cmap(kind)`.
        slices: As in `layer_grid`.
        fps: Frames per second when shown in a notebook; `save` takes its own.
        width: Figure width in inches; 7 for one run, 10 for several.

    Returns:
        A `matplotlib.animation.FuncAnimation` whose frames are the steps. Show it in a notebook
        with `IPython.display.HTML(anim.to_jshtml())`, or write a GIF with `save`.

    Raises:
        tb_cnnviz.reader.NotFoundError: If a run, the layer, kind or a step is missing.
        ValueError: If an option is not valid.

    Example:
        >>> import tempfile, numpy as np, tensorflow as tf
        >>> from tb_cnnviz import summary
        >>> path = tempfile.mkdtemp()
        >>> with tf.summary.create_file_writer(path + "/run1").as_default():
        ...     for step in range(3):
        ...         _ = summary.filter_weights("conv1", np.random.randn(3, 3, 3, 8), step=step)
        >>> anim = animate(path, "run1", "conv1", "weights")
        >>> save(anim, path + "/conv1.gif")
        >>> from PIL import Image
        >>> Image.open(path + "/conv1.gif").n_frames
        3
    """
    logs = _open(logdir)
    runs = [run] if isinstance(run, str) else _check_runs(logs, run)
    runs = [logs.resolve_run(r) for r in runs]
    available = _common_steps(logs, runs, layer, kind)
    if steps is None:
        steps = available
    else:
        steps = [int(s) for s in steps]
        missing = sorted(set(steps) - set(available))
        if missing:
            raise NotFoundError(
                f"no step {missing[0]} of {layer!r} {kind} in run(s) {names_text(runs)}; steps: "
                + ", ".join(map(str, available))
            )
        if not steps:
            raise ValueError("steps must name at least one step. Received: steps=[]")
    several = len(runs) > 1

    def panels_at(step):
        pictures = [logs.read(r, layer, kind, step) for r in runs]
        panels = _Panel.build_shared(
            pictures, normalization=normalization, cmap=cmap, slices=slices
        )
        return pictures, panels

    first_pictures, first_panels = panels_at(steps[0])
    fig, layout = _new_figure(
        first_panels, width=width or (10.0 if several else 7.0), with_panel_titles=several
    )

    def draw(step):
        pictures, panels = (first_pictures, first_panels) if step == steps[0] else panels_at(step)
        title, subtitle = _titles(pictures, panels[0], normalization)
        fig.clear()
        _draw_figure(
            fig,
            layout,
            panels,
            title,
            subtitle,
            panel_titles=[p.run for p in pictures] if several else None,
        )
        return []

    return animation.FuncAnimation(
        fig, draw, frames=list(steps), interval=1000.0 / fps, repeat=True, cache_frame_data=False
    )


def similarity(
    logdir: str | os.PathLike | Logdir,
    mode: str = "time",
    *,
    layer: str | None = None,
    run: str | None = None,
    runs: Sequence[str] | None = None,
    step: int | None = None,
    cmap="magma",
    annotate: bool | None = None,
    width: float | None = None,
):
    """Draws linear CKA heatmaps: a layer over time, runs against runs, or layers against layers.

    The data are `tb_cnnviz.compare.heatmap`'s (runs logged with reference images). Colours
    run from 0 (nothing in common) to 1 (the same representation up to a rotation and a scale),
    on one scale for every panel; cells with no number (different reference images, a constant
    layer) are hatched and the subtitle says why. With `mode="runs"`, one panel per layer.

    Args:
        logdir: A log directory, or a `tb_cnnviz.reader.Logdir`.
        mode: `"time"` (one `layer` of one `run`, step against step), `"runs"` (`runs` at
            `step`, one panel per layer, or only `layer`) or `"layers"` (the layers of `run`
            at `step`).
        layer: The layer (time: required; runs: only this layer).
        run: The run (time, layers).
        runs: The runs (runs mode).
        step: The step (runs, layers); by default the latest they share.
        cmap: A matplotlib colormap.
        annotate: Write each cell's value in it; by default when a panel is at most 12 x 12.
        width: Figure width in inches; by default 5 per panel, at most 3 panels a row.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        tb_cnnviz.reader.NotFoundError: If a run, layer or step is not there, or a run holds no
            responses (the message says how to log them).
        ValueError: If `mode` is unknown or a parameter it needs is missing.

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path, acts = tempfile.mkdtemp(), np.random.default_rng(0).random((16, 6, 6, 4))
        >>> with summary.create_file_writer(path + "/run").as_default() as w:
        ...     for step in range(3):
        ...         pow = acts ** (step + 1)
        ...         _ = summary.responses("c", pow, step=step, reference_images="a" * 16)
        >>> w.close()
        >>> fig = similarity(path, "time", run="run", layer="c")
        >>> fig.texts[0].get_text()
        "linear CKA of 'c' over time"
        >>> save(fig, path + "/cka.png")
    """
    from tb_cnnviz import compare as compare_lib

    heat = compare_lib.heatmap(
        logdir, mode, layer=layer, run=run, runs=None if runs is None else list(runs), step=step
    )
    colormap = _colormap(cmap, "feature_maps").with_extremes(bad=(0.85, 0.85, 0.85))
    matrices = heat.matrix if mode == "runs" else heat.matrix[None]
    names = [str(label) for label in heat.labels]
    if mode == "runs":
        titles = heat.layers
        title = f"linear CKA between runs · step {heat.step}"
        axis = "run"
    elif mode == "time":
        titles = [None]
        title = f"linear CKA of {heat.layers[0]!r} over time"
        axis = "step"
    else:
        titles = [None]
        title = f"linear CKA between layers · step {heat.step}"
        axis = "layer"
    subtitle = (
        f"run {heat.runs[0]}" if mode != "runs" else f"{len(heat.runs)} runs"
    ) + " · 1: the same representation (up to rotation and scale), 0: nothing in common"
    count = len(matrices)
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    width = width or min(5.0 * cols, 15.0)
    panel = (width - 1.0) / cols
    fig = plt.figure(figsize=(width, panel * rows + _TITLE_HEIGHT + 0.4 + 0.3 * bool(heat.warning)))
    grid = fig.add_gridspec(
        rows,
        cols + 1,
        width_ratios=[*([1] * cols), 0.05],
        left=0.16 / cols + 0.06,
        right=0.92,
        top=1 - (_TITLE_HEIGHT + 0.1) / fig.get_figheight(),
        bottom=0.12,
        wspace=0.45,
        hspace=0.45,
    )
    m = len(names)
    annotate = m <= 12 if annotate is None else bool(annotate)
    ticks = list(range(m)) if m <= 20 else list(range(0, m, math.ceil(m / 10)))
    image = None
    for k, matrix in enumerate(matrices):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        image = ax.imshow(
            np.ma.masked_invalid(matrix), cmap=colormap, vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        missing = np.argwhere(~np.isfinite(matrix))
        for i, j in missing.tolist():
            ax.add_patch(
                matplotlib.patches.Rectangle(
                    (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", lw=0, color="0.55"
                )
            )
        ax.set_xticks(ticks, [names[t] for t in ticks], rotation=90 if axis != "step" else 0)
        ax.set_yticks(ticks, [names[t] for t in ticks])
        ax.tick_params(labelsize=7 if m > 8 else 8)
        if mode == "time":
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("step", fontsize=8)
        if titles[k] is not None:
            ax.set_title(titles[k], fontsize=9)
        if annotate:
            for (i, j), value in np.ndenumerate(matrix):
                if math.isfinite(value):
                    ax.text(
                        j,
                        i,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if value > 0.6 else "white",
                    )
    cbar = fig.colorbar(image, cax=fig.add_subplot(grid[:, cols]))
    cbar.set_label("linear CKA", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    fig.text(0.5, 1 - 0.22 / fig.get_figheight(), title, ha="center", va="center", fontsize=11)
    fig.text(
        0.5,
        1 - 0.48 / fig.get_figheight(),
        subtitle,
        ha="center",
        va="center",
        fontsize=8,
        color="0.35",
    )
    if heat.warning:
        fig.text(
            0.5,
            0.02,
            "hatched: different reference images; no number is drawn there",
            ha="center",
            va="bottom",
            fontsize=8,
            color="tab:red",
        )
    return fig


def examples(
    logdir: str | os.PathLike | Logdir,
    run: str,
    layer: str,
    step: int | None = None,
    *,
    filters: Sequence[int] | None = None,
    top_k: int | None = None,
    crop: int | str | None = None,
    width: float = 7.0,
):
    """Draws each filter's dataset examples: crops of the reference images that excite it most.

    One row per filter, best example first, each crop centred where the filter's activation
    peaks (the cell `(y, x)` of the layer's grid, mapped to the image), captioned with its
    reference image and activation. The data are `tb_cnnviz.compare.examples`', the pictures
    `tb_cnnviz.compare.reference_images`' (as stored: 8-bit, pooled beyond 128 pixels a side).

    Args:
        logdir: A log directory, or a `tb_cnnviz.reader.Logdir`.
        run: The run.
        layer: The layer.
        step: The step; `None` means the latest.
        filters: The filters to show, in order; by default the first 16.
        top_k: Examples per filter; by default every stored one (8 unless logged otherwise).
        crop: The side of a crop in model pixels; by default four cells of the layer's grid
            (at least 8 pixels, at most the image): an estimate of the receptive field, which
            the logs do not hold. `"full"` shows whole images with the peak's cell boxed.
        width: Figure width in inches.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        tb_cnnviz.reader.NotFoundError: If the run, layer or step is not there, or the run
            holds no reference images.
        ValueError: If `filters`, `top_k` or `crop` is not valid.

    Example:
        >>> import tempfile, numpy as np
        >>> from tb_cnnviz import summary
        >>> path, refs = tempfile.mkdtemp(), np.random.default_rng(0).random((16, 12, 12, 3))
        >>> with summary.create_file_writer(path + "/run").as_default(step=0) as w:
        ...     _ = summary.reference_images(refs)
        ...     _ = summary.responses("c", refs[:, 1:-1, 1:-1, :2], reference_images=refs)
        >>> w.close()
        >>> fig = examples(path, "run", "c", top_k=4)
        >>> fig.texts[0].get_text()
        "dataset examples of 'c' · step 0"
        >>> save(fig, path + "/examples.png")
    """
    from tb_cnnviz import compare as compare_lib

    logs = _open(logdir)
    record = logs.read_record(run, layer, "responses", step)
    found = compare_lib.examples(logs, run, layer, record.step)
    chosen = list(range(min(16, len(found)))) if filters is None else [int(f) for f in filters]
    bad = [f for f in chosen if not 0 <= f < len(found)]
    if bad or not chosen:
        raise ValueError(
            f"filters must be ids from 0 to {len(found) - 1} of {layer!r}. Received: "
            f"filters={filters!r}"
        )
    stored_k = len(found[0]) if found else 0
    k = stored_k if top_k is None else int(top_k)
    if not 1 <= k <= stored_k:
        raise ValueError(
            f"top_k must be from 1 to {stored_k} (as logged). Received: top_k={top_k!r}"
        )
    if not (crop is None or crop == "full" or (isinstance(crop, int) and crop > 0)):
        raise ValueError(f"crop must be a side in pixels or 'full'. Received: crop={crop!r}")
    pictures = compare_lib.reference_images(logs, run, record.index.get("references"))
    refs_record = logs.read_record(run, "reference_images", "references")
    scale = float(refs_record.index.get("scale", 1) or 1)
    grid = [int(g) for g in record.index.get("grid") or []]
    shape = [int(d) for d in refs_record.index.get("shape") or []]
    lo, hi = float(pictures.min()), float(pictures.max())
    rgb = (pictures - lo) / (hi - lo) if hi > lo else np.zeros_like(pictures)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    two_d = len(grid) == 2 and len(shape) == 3
    full = crop == "full" or not two_d
    cell = 1.2 * width / (k + 1.2) / 1.2
    fig = plt.figure(figsize=(width, cell * len(chosen) * 1.25 + _TITLE_HEIGHT + 0.2))
    axes = fig.subplots(
        len(chosen),
        k,
        squeeze=False,
        gridspec_kw={
            "left": 0.12,
            "right": 0.99,
            "bottom": 0.02,
            "wspace": 0.08,
            "hspace": 0.35,
            "top": 1 - (_TITLE_HEIGHT + 0.05) / fig.get_figheight(),
        },
    )
    height, wide = rgb.shape[1:3]
    for row, f in enumerate(chosen):
        for col in range(k):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            index, *pos, activation = found[f][col]
            picture = rgb[index]
            if two_d:
                stride = [shape[0] / grid[0] * scale, shape[1] / grid[1] * scale]
                cy, cx = (pos[0] + 0.5) * stride[0], (pos[1] + 0.5) * stride[1]
            if full:
                ax.imshow(picture, interpolation="nearest")
                if two_d:
                    ax.add_patch(
                        matplotlib.patches.Rectangle(
                            (cx - stride[1] / 2 - 0.5, cy - stride[0] / 2 - 0.5),
                            stride[1],
                            stride[0],
                            fill=False,
                            color="tab:red",
                            lw=1,
                        )
                    )
            else:
                side = crop * scale if isinstance(crop, int) else max(8 * scale, 4 * max(stride))
                side = int(round(min(side, height, wide)))
                top = int(np.clip(round(cy - side / 2), 0, height - side))
                left = int(np.clip(round(cx - side / 2), 0, wide - side))
                ax.imshow(picture[top : top + side, left : left + side], interpolation="nearest")
            ax.set_title(f"#{index} · {activation:.2g}", fontsize=6, pad=2)
        axes[row, 0].set_ylabel(f"filter {f}", fontsize=8, rotation=0, ha="right", va="center")
    what = "whole images, peak boxed" if full else "crops around each peak"
    fig.text(
        0.5,
        1 - 0.22 / fig.get_figheight(),
        f"dataset examples of {layer!r} · step {record.step}",
        ha="center",
        va="center",
        fontsize=11,
    )
    fig.text(
        0.5,
        1 - 0.46 / fig.get_figheight(),
        f"run {record.run} · top {k} of {record.index.get('count')} reference images per "
        f"filter, best first ({what}) · #image · activation",
        ha="center",
        va="center",
        fontsize=8,
        color="0.35",
    )
    return fig


def save(
    figure,
    path: str | os.PathLike,
    *,
    dpi: float | None = None,
    fps: float = 2.0,
    progress: Callable[[int, int], Any] | None = None,
) -> None:
    """Writes a figure as .png, .pdf or .svg, or an animation as .gif, pixel-exact.

    The resolution is chosen so that every picture pixel covers a whole number of output pixels
    (no blur, no uneven cells), at least `dpi`. The file is written under a temporary name and
    moved into place at the end, so a failure never leaves a damaged file or overwrites an
    existing one. PDFs embed TrueType fonts, as journals ask.

    Args:
        figure: A `matplotlib.figure.Figure` (or an `Axes` on one), or an animation from `animate`.
        path: The file to write; its extension picks the format.
        dpi: The least resolution; 200 for figures and 100 for GIFs by default.
        fps: Frames per second of a GIF.
        progress: Called as `progress(frame, total)` as each GIF frame is drawn.

    Raises:
        ValueError: If the extension does not suit what is being saved.
        OSError: If the file cannot be written.

    Example:
        >>> import tempfile
        >>> fig = plt.figure()
        >>> save(fig, tempfile.mkdtemp() + "/empty.svg")
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    is_animation = isinstance(figure, animation.Animation)
    if is_animation and ext != ".gif":
        raise ValueError(f"an animation is written as .gif. Received: path={path!r}")
    if not is_animation and ext not in FIGURE_FORMATS:
        raise ValueError(
            f"a figure is written as {', '.join(FIGURE_FORMATS)} (a .gif needs an animation). "
            f"Received: path={path!r}"
        )
    fig = figure_of(figure)
    dpi = _crisp_dpi(fig, dpi or (100.0 if is_animation else 200.0))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tb-cnnviz-", suffix=ext, dir=folder)
    os.close(fd)
    try:
        with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
            if is_animation:
                figure.save(
                    tmp,
                    writer=animation.PillowWriter(fps=fps),
                    dpi=dpi,
                    progress_callback=progress,
                )
            else:
                fig.savefig(tmp, format=ext[1:], dpi=dpi, facecolor="white")
        os.chmod(tmp, _file_mode(path))  # mkstemp makes it private; a figure is for sharing
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def figure_of(drawing):
    """Returns the `matplotlib.figure.Figure` of a figure, axes or animation from this module.

    Example:
        >>> fig = plt.figure()
        >>> figure_of(fig.add_subplot()) is fig
        True
    """
    if isinstance(drawing, animation.Animation):
        return drawing._fig  # matplotlib keeps no public name for an animation's figure
    return getattr(drawing, "figure", drawing)


# -- Panels: the pictures of one run, mapped to colours and laid out -----------------------------


@dataclasses.dataclass
class _Panel:
    """One run's grid before it is placed on a figure."""

    pictures: LayerPictures
    cells: np.ndarray  # [n, slices, h, w, 3]: RGB in [0, 1], colour-mapped already
    labels: list[str]
    label_colors: list[str]
    cmap: Any
    vmin: float
    vmax: float
    colorbar_label: str
    rgb: bool
    shown: str  # what each cell shows, for the subtitle
    scaled: bool = True  # colours follow `normalization` (not so for an attribution overlay)
    cols: int = 0  # filter grid columns, set by the figure layout

    @classmethod
    def build(cls, pictures, *, normalization, cmap, slices, layer_range=None) -> _Panel:
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}. "
                f"Received: normalization={normalization!r}"
            )
        cmap = _colormap(cmap, pictures.kind)
        tiles = pictures.tiles
        n, k = tiles.shape[:2]
        lo, hi = _bounds(pictures, normalization, layer_range)
        centered = pictures.kind == "weights"
        unit = _UNITS.get(pictures.kind, "value")
        labels = [str(f) for f in pictures.filters]
        label_colors = ["black"] * n

        if slices is None and _can_overlay(pictures):
            return cls._overlay(pictures, cmap, labels)
        chosen = _chosen_slices(pictures, slices)
        values = tiles[:, chosen]
        lo, hi = lo[:, chosen, None, None, None], hi[:, chosen, None, None, None]
        if centered:
            m = np.maximum(np.abs(lo), np.abs(hi))
            scaled = np.divide(values, m, out=np.zeros_like(values), where=m > 0)  # in [-1, 1]
        else:
            # A constant tile has no range of its own: it sits where its value lies on the
            # layer's scale, so a dead filter (all zeros) reads as the bottom colour.
            layer_lo, layer_hi = _bounds(pictures, "layer", layer_range)
            layer_lo = layer_lo[:, chosen, None, None, None]
            layer_hi = layer_hi[:, chosen, None, None, None]
            flat = hi - lo <= 0
            lo, hi = np.where(flat, layer_lo, lo), np.where(flat, layer_hi, hi)
            span = hi - lo
            scaled = np.divide(values - lo, span, out=np.full_like(values, 0.5), where=span > 0)
        rgb = values.shape[-1] == 3
        real_units = normalization == "layer"
        if rgb:
            cells = np.clip((scaled + 1) / 2 if centered else scaled, 0, 1)
            cmap = matplotlib.colormaps["gray"]
        else:
            cells = (values if real_units else scaled)[..., 0]
        if real_units:
            vmin, vmax = (-float(m.max()), float(m.max())) if centered else (lo.min(), hi.max())
        else:
            vmin, vmax = (-1.0, 1.0) if centered else (0.0, 1.0)
        if vmin == vmax:
            vmin, vmax = vmin - 1.0, vmax + 1.0
        scope = {"filter": "per filter", "tile": "per slice", "layer": ""}[normalization]
        if real_units:
            label = unit
        elif centered:
            label = f"{unit} ÷ max |{unit}|, {scope}"
        else:
            label = f"{unit}, min→0 max→1 {scope}"
        if rgb:
            label = f"colour channel: {label}"
        else:  # colour-mapped here, so every panel is drawn the same way, as RGB
            cells = cmap(colors.Normalize(vmin, vmax, clip=True)(cells))[..., :3]
        if cells.shape[2] == 1:  # a 1-D signal (Conv1D) is drawn as a band, not a hairline
            cells = cells.repeat(max(1, cells.shape[3] // 8), axis=2)
        return cls(
            pictures=pictures,
            cells=cells,
            labels=labels,
            label_colors=label_colors,
            cmap=cmap,
            vmin=float(vmin),
            vmax=float(vmax),
            colorbar_label=label,
            rgb=rgb,
            shown=_shown_text(pictures, chosen),
        )

    @classmethod
    def build_shared(cls, pictures, *, normalization, cmap, slices) -> list[_Panel]:
        """Panels of several runs; a "layer" normalization spans every run."""
        layer_range = None
        if normalization == "layer":
            ranges = [_bounds(p, "layer", None) for p in pictures]
            layer_range = (min(r[0].min() for r in ranges), max(r[1].max() for r in ranges))
        return [
            cls.build(
                p, normalization=normalization, cmap=cmap, slices=slices, layer_range=layer_range
            )
            for p in pictures
        ]

    @classmethod
    def _overlay(cls, pictures, cmap, labels) -> _Panel:
        """Attribution: the predicted-class heatmap blended over each probe image."""
        names = pictures.slice_labels or []
        image = pictures.tiles[:, names.index("image")]
        heat = np.clip(pictures.tiles[:, names.index("predicted"), ..., 0], 0.0, 1.0)
        lo = image.min(axis=(1, 2, 3), keepdims=True)
        span = image.max(axis=(1, 2, 3), keepdims=True) - lo
        image = np.divide(image - lo, span, out=np.full_like(image, 0.5), where=span > 0)
        # A half-desaturated probe image lets the heatmap's colours stand out, while shapes that
        # differ from their background only in hue stay visible.
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        gray = (image @ np.array([0.299, 0.587, 0.114]))[..., None]
        image = 0.5 * image + 0.5 * gray
        # Opacity grows with importance, so unimportant pixels show the probe image as it is.
        alpha = (_OVERLAY_ALPHA * heat)[..., None]
        blended = (1 - alpha) * image + alpha * cmap(heat)[..., :3]
        stats = pictures.index.get("stats", {})
        class_names = pictures.static.get("class_names")

        def class_name(c):
            if c is None:
                return "?"
            return (
                str(class_names[c]) if class_names and 0 <= c < len(class_names) else f"class {c}"
            )

        predicted = stats.get("predicted") or [None] * len(labels)
        confidence = stats.get("confidence") or [None] * len(labels)
        correct = stats.get("correct") or [None] * len(labels)
        labels = [
            f"{i}: {class_name(p)}" + (f" {c:.0%}" if c is not None else "")
            for i, p, c in zip(labels, predicted, confidence, strict=False)
        ]
        method = pictures.static.get("method") or pictures.layer
        return cls(
            pictures=pictures,
            cells=np.clip(blended, 0, 1)[:, None],
            labels=labels,
            label_colors=["#b2182b" if ok is False else "black" for ok in correct],
            cmap=cmap,
            vmin=0.0,
            vmax=1.0,
            colorbar_label=f"importance ({method}, predicted class)",
            rgb=True,
            shown="heatmap of the predicted class on each image"
            + (" · red: misclassified" if any(ok is not None for ok in correct) else ""),
            scaled=False,
        )

    # Geometry, in canvas pixels. A picture pixel is `zoom` canvas pixels, so that gaps and the
    # thin lines between slices can be finer than a picture pixel of a 3x3 kernel.

    @property
    def mosaic(self) -> tuple[int, int, int, int]:
        """`(cols, rows, height, width)` of one filter's cell: its slices side by side."""
        h, w = self.cells.shape[2:4]
        cols, rows = self._slice_grid()
        zoom, line = self.zoom, self.line
        return cols, rows, rows * h * zoom + (rows - 1) * line, cols * w * zoom + (cols - 1) * line

    @property
    def zoom(self) -> int:
        h, w = self.cells.shape[2:4]
        cols, rows = self._slice_grid()
        return max(1, round(_MIN_CELL_PIXELS / max(rows * h, cols * w)))

    def _slice_grid(self) -> tuple[int, int]:
        """Near-square columns and rows for a filter's slices, a full rectangle when one fits."""
        s, h, w = self.cells.shape[1:4]
        square = max(1, min(s, math.ceil(math.sqrt(s * h / w))))
        for cols in range(square, min(s, 2 * square) + 1):
            rows = s // cols
            if s % cols == 0 and cols * w <= 3 * rows * h:  # 32 slices: 8x4, not 6x6 with holes
                return cols, rows
        return square, math.ceil(s / square)

    @property
    def line(self) -> int:
        """Width of the light-gray line between one filter's slices."""
        return max(1, self.zoom // 6)

    @property
    def gap(self) -> int:
        """Pixels between filters: clearly wider than the line between one filter's slices."""
        *_, ch, cw = self.mosaic
        return max(2, round(0.15 * max(ch, cw)))

    def choose_cols(self, aspect: float) -> None:
        """Picks the filter grid's columns: width/height near `aspect`, few empty places."""
        n = len(self.cells)
        *_, ch, cw = self.mosaic
        cell_h, cell_w = ch * 1.3 + self.gap, cw + self.gap  # 1.3: room for the id below
        guess = max(1, min(n, round(math.sqrt(n * aspect * cell_h / cell_w))))

        def cost(cols):
            rows = math.ceil(n / cols)
            shape = abs(math.log(cols * cell_w / (rows * cell_h) / aspect))
            return shape + 2.0 * (rows * cols - n) / n

        self.cols = min(range(max(1, guess - 2), min(n, guess + 2) + 1), key=cost)

    def canvas_width(self) -> int:
        *_, cw = self.mosaic
        return self.cols * cw + (self.cols - 1) * self.gap

    def geometry(self, px_per_inch: float) -> tuple[float, int, int]:
        """`(label fontsize, label band height, canvas height)` at a scale; fontsize 0: no ids."""
        *_, ch, cw = self.mosaic
        chars = max(3, max(len(text) for text in self.labels))
        fontsize = min(8.0, 1.6 * (cw / px_per_inch * 72) / chars)
        if fontsize < 3.5:  # too small to read: leave the ids out rather than print a smudge
            fontsize = 0.0
        band = math.ceil(fontsize * 1.4 / 72 * px_per_inch)
        rows = math.ceil(len(self.cells) / self.cols)
        return fontsize, band, rows * (ch + band) + (rows - 1) * self.gap

    def render(self, px_per_inch: float) -> tuple[np.ndarray, list, float, float]:
        """Returns `(canvas, labels, fontsize, canvas height)` for a given scale.

        The canvas is RGBA: filters stand apart on a transparent background, the slices of one
        filter are held together by thin light-gray lines. Labels are `(x, y, text, colour)` in
        canvas pixels, under each cell.
        """
        mcols, _, ch, cw = self.mosaic
        zoom, line = self.zoom, self.line
        cells = self.cells.repeat(zoom, axis=2).repeat(zoom, axis=3)
        n, s, th, tw = cells.shape[:4]
        fontsize, band, height = self.geometry(px_per_inch)
        canvas = np.zeros((height, self.canvas_width(), 4))
        labels = []
        for i in range(n):
            r, c = divmod(i, self.cols)
            y0, x0 = r * (ch + band + self.gap), c * (cw + self.gap)
            for j in range(s):
                mr, mc = divmod(j, mcols)
                y, x = y0 + mr * (th + line), x0 + mc * (tw + line)
                if s > 1:  # the line right of and below this slice, inside the cell
                    canvas[y : min(y + th + line, y0 + ch), x : min(x + tw + line, x0 + cw)] = (
                        _SLICE_LINE_RGBA
                    )
                canvas[y : y + th, x : x + tw, :3] = cells[i, j]
                canvas[y : y + th, x : x + tw, 3] = 1.0
            if fontsize:
                x, y = x0 + cw / 2 - 0.5, y0 + ch - 0.5 + band * 0.1
                labels.append((x, y, self.labels[i], self.label_colors[i]))
        return canvas, labels, fontsize, height


# -- Figures --------------------------------------------------------------------------------------


def _new_figure(panels: list[_Panel], *, width: float, with_panel_titles: bool):
    """Returns `(figure, layout)`: the width given, or less for a few filters; height to fit."""
    count = len(panels)
    top = _TITLE_HEIGHT + (_PANEL_TITLE_HEIGHT if with_panel_titles else 0.0)
    right = _CBAR_GAP + _CBAR_WIDTH + _CBAR_LABELS
    panel_width = (width - _LEFT - right - (count - 1) * _PANEL_GAP) / count
    if panel_width <= 0.5:
        raise ValueError(f"width is too small for {count} panels. Received: width={width}")
    for panel in panels:
        panel.choose_cols(panel_width / _DEFAULT_PANEL_HEIGHT)
    panel_width = min(
        panel_width, *(p.canvas_width() * _MAX_CELL_INCHES / p.mosaic[3] for p in panels)
    )
    heights = [_panel_height(p, panel_width) for p in panels]
    if max(heights) > _MAX_PANEL_HEIGHT:  # very tall grids: a narrower figure keeps one page
        panel_width *= _MAX_PANEL_HEIGHT / max(heights)
        heights = [_panel_height(p, panel_width) for p in panels]
    width = _LEFT + right + count * panel_width + (count - 1) * _PANEL_GAP
    height = top + max(*heights, *(_bar_height(p) for p in panels)) + _BOTTOM
    fig = plt.figure(figsize=(max(width, _MIN_WIDTH), height))
    return fig, (panel_width, top, [p.cols for p in panels])


def _bar_height(panel: _Panel) -> float:
    """The least colorbar height, in inches, that holds its label (about half an em a letter)."""
    return max(_MIN_BAR_HEIGHT, len(panel.colorbar_label) * _BAR_FONT * 0.52 / 72 + 0.15)


def _panel_height(panel: _Panel, panel_width: float) -> float:
    px_per_inch = panel.canvas_width() / panel_width
    return panel.geometry(px_per_inch)[2] / px_per_inch


def _draw_figure(fig, layout, panels, title, subtitle, *, panel_titles, colorbar=True) -> None:
    panel_width, top, cols = layout
    fig_w, fig_h = fig.get_size_inches()
    tallest = 0.0
    for i, panel in enumerate(panels):
        panel.cols = cols[i]  # the same grid in every frame of an animation
        px_per_inch = panel.canvas_width() / panel_width
        canvas, labels, fontsize, height = panel.render(px_per_inch)
        panel_height = height / px_per_inch
        tallest = max(tallest, panel_height)
        left = _LEFT + i * (panel_width + _PANEL_GAP)
        bottom = fig_h - top - panel_height
        ax = fig.add_axes((left / fig_w, bottom / fig_h, panel_width / fig_w, panel_height / fig_h))
        _show(ax, panel, canvas, labels, fontsize)
        if panel_titles:
            ax.set_title(panel_titles[i], fontsize=9.5, pad=4)
    fig.text(_LEFT / fig_w, 1 - 0.12 / fig_h, title, fontsize=12, weight="bold", va="top")
    fig.text(_LEFT / fig_w, 1 - 0.4 / fig_h, subtitle, fontsize=8.5, va="top", color="#333333")
    if colorbar:
        # As tall as the grid (top and bottom aligned) up to a limit, and never shorter than
        # its label; `_new_figure` made room for that.
        bar_h = max(_bar_height(panels[0]), min(_MAX_BAR_HEIGHT, tallest))
        bar_left = _LEFT + len(panels) * panel_width + (len(panels) - 1) * _PANEL_GAP + _CBAR_GAP
        cax = fig.add_axes(
            (bar_left / fig_w, (fig_h - top - bar_h) / fig_h, _CBAR_WIDTH / fig_w, bar_h / fig_h)
        )
        _colorbar(fig, cax, panels[0])


def _draw_in(ax, panel: _Panel, title: str, subtitle: str, *, colorbar: bool) -> None:
    """Draws a panel into the user's axes, fitting the grid to the axes' shape."""
    fig = ax.figure
    bbox = ax.get_position()
    width_in = bbox.width * fig.get_figwidth()
    height_in = bbox.height * fig.get_figheight()
    panel.choose_cols(width_in / max(height_in, 0.1))
    px_per_inch = panel.canvas_width() / width_in
    canvas, labels, fontsize, _ = panel.render(px_per_inch)
    _show(ax, panel, canvas, labels, fontsize)
    ax.set_title(f"{title}\n{subtitle}", loc="left", fontsize=9)
    if colorbar:
        _colorbar(fig, None, panel, ax=ax)


def _show(ax, panel: _Panel, canvas, labels, fontsize) -> None:
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text, color in labels:
        ax.text(x, y, text, ha="center", va="top", fontsize=fontsize, color=color)
    ax.set_axis_off()


def _colorbar(fig, cax, panel: _Panel, ax=None):
    # The canvas is RGBA, so the bar gets its own mappable (gray for RGB pictures: it shows how
    # one channel's intensity maps to values).
    mappable = matplotlib.cm.ScalarMappable(
        norm=colors.Normalize(panel.vmin, panel.vmax), cmap=panel.cmap
    )
    bar = fig.colorbar(mappable, cax=cax, ax=ax, fraction=0.04 if ax is not None else 0.15)
    bar.set_label(panel.colorbar_label, fontsize=_BAR_FONT)
    bar.ax.tick_params(labelsize=7)
    bar.outline.set_linewidth(0.5)
    return bar


def _titles(pictures: list[LayerPictures], panel: _Panel, normalization: str) -> tuple[str, str]:
    first = pictures[0]
    title = f"{first.layer} · {_KIND_TITLES.get(first.kind, first.kind)} · step {first.step}"
    index = first.index
    total = int(index.get("total_filters", len(first.filters)))
    noun = "probe images" if first.kind == "attribution" else "filters"
    count = (
        f"{len(first.filters)} of {total} {noun}"
        if total > len(first.filters)
        else (f"{total} {noun}")
    )
    parts = [count, panel.shown]
    if len(pictures) == 1:
        parts.insert(0, f"run {first.run}")
    if panel.scaled:
        parts.append(f"{normalization} scale")
    return title, " · ".join(p for p in parts if p)


def _shown_text(pictures: LayerPictures, chosen: list[int]) -> str:
    axis = pictures.slice_axis
    total = pictures.tiles.shape[1]
    logged = int(pictures.index["slices"].get("total") or total)  # before the writer's cap
    labels = pictures.slice_labels
    if axis == "rgb":
        return "RGB"  # "N filters · RGB"
    name = _SLICE_NAMES.get(axis, axis.replace("_", " "))
    if len(chosen) == total and total > 1:
        if labels:
            return "all of " + ", ".join(labels)
        return f"all {total} {name}s" if logged == total else f"first {total} of {logged} {name}s"
    if len(chosen) == 1 and labels:
        return labels[chosen[0]]
    if len(chosen) == 1:
        return f"{name} {chosen[0]}" + (f" of {total}" if total > 1 else "")
    return f"{name}s {', '.join(map(str, chosen))}"


def _bounds(pictures: LayerPictures, normalization: str, layer_range):
    """Per-tile `(lo, hi)` arrays `[n, slices]` for a normalization mode."""
    n, k = pictures.tiles.shape[:2]
    ranges = np.asarray(pictures.index["ranges"], np.float64)[: n * k].reshape(n, k, 2)
    lo, hi = ranges[..., 0], ranges[..., 1]
    if normalization == "filter":
        lo = np.repeat(lo.min(axis=1, keepdims=True), k, axis=1)
        hi = np.repeat(hi.max(axis=1, keepdims=True), k, axis=1)
    elif normalization == "layer":
        low, high = layer_range if layer_range is not None else (lo.min(), hi.max())
        lo, hi = np.full((n, k), low), np.full((n, k), high)
    return lo, hi


def _chosen_slices(pictures: LayerPictures, slices) -> list[int]:
    total = pictures.tiles.shape[1]
    if slices is None:
        # As the dashboard opens: a kernel shows every input channel, other kinds the first.
        slices = "all" if pictures.slice_axis in ("input_channel", "rgb") else 0
    if slices == "all":
        return list(range(total))
    if isinstance(slices, str) and slices.isdigit():
        slices = int(slices)
    if isinstance(slices, bool) or not isinstance(slices, int | np.integer):
        raise ValueError(f"slices must be 'all', a slice number or None. Received: {slices!r}")
    if not 0 <= slices < total:
        name = _SLICE_NAMES.get(pictures.slice_axis, "slice")
        raise ValueError(
            f"slices must be 'all' or a {name} number in 0..{total - 1} for "
            f"{pictures.layer!r} {pictures.kind}. Received: slices={slices}"
        )
    return [int(slices)]


def _can_overlay(pictures: LayerPictures) -> bool:
    labels = pictures.slice_labels or []
    return pictures.kind == "attribution" and "image" in labels and "predicted" in labels


def _colormap(cmap, kind: str):
    if cmap is None:
        cmap = default_cmap(kind)
    if isinstance(cmap, colors.Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except (KeyError, TypeError):
        raise ValueError(
            "cmap must be a matplotlib colormap, for example 'gray', 'viridis', 'magma' or "
            f"'RdBu_r'. Received: cmap={cmap!r}"
        ) from None


def _file_mode(path: str) -> int:
    """The permissions `open(path, "w")` would give: the old file's, or 0o666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _crisp_dpi(fig, minimum: float) -> float:
    """The least dpi ≥ `minimum` at which each picture pixel is a whole number of output pixels."""
    for ax in fig.axes:
        for image in ax.get_images():
            data_width = image.get_array().shape[1]
            axes_width = ax.get_position().width * fig.get_figwidth()
            if data_width and axes_width > 0:
                px_per_inch = data_width / axes_width
                return max(1, math.ceil(minimum / px_per_inch)) * px_per_inch
    return minimum


def _open(logdir) -> Logdir:
    return logdir if isinstance(logdir, Logdir) else Logdir(logdir)


def _check_runs(logs: Logdir, runs) -> list[str]:
    if isinstance(runs, str) or len(runs) < 2:
        raise ValueError(f"runs must name at least two runs to compare. Received: runs={runs!r}")
    return [logs.resolve_run(r) for r in runs]


def _common_steps(logs: Logdir, runs: list[str], layer: str, kind: str) -> list[int]:
    per_run = {run: logs.steps(run, layer, kind) for run in runs}
    common = sorted(set.intersection(*(set(s) for s in per_run.values())))
    if not common:
        detail = "; ".join(f"{run}: {', '.join(map(str, s))}" for run, s in per_run.items())
        raise NotFoundError(f"the runs share no step of {layer!r} {kind} ({detail})")
    return common
