"""Matplotlib figures of CNN Viz pictures, for papers, slides and notebooks.

The functions behind `tb-cnnviz export`, usable on their own:

* `layer_grid`: one layer's pictures of one kind at one step, as a grid of filters with their ids,
  a title and a colorbar;
* `compare`: the same grid for several runs side by side, on one shared colour scale;
* `animate`: a layer's evolution over every logged step, as a matplotlib animation;
* `similarity`: linear CKA heatmaps (a layer over time, runs against runs, layers against layers)
  of runs logged with reference images;
* `examples`: each filter's dataset examples, crops of the reference images that excite it most;
* `probe`: what the model at a logged step makes of a new image (`tb_cnnviz.probe`): the image,
  its top predictions, the Grad-CAM overlay and one layer's feature maps;
* `save`: writes a figure (.png, .pdf, .svg) or an animation (.gif) without blurring the pixels,
  and without leaving a half-written file behind on failure.

Pictures are read with `tb_cnnviz.reader.Logdir`; pass a path or a `Logdir` you made once. What
the colours mean:

* `normalization="filter"` (the default, as in the dashboard) stretches each filter to its own
  range, so weak filters stay visible; `"layer"` puts every filter on one scale, in the original
  units, so strong and weak filters can be told apart; `"tile"` stretches every slice on its own
  (weights since format version 3 are stored over their filter's range: for them it is `"filter"`).
* Weights are centred on zero (a diverging colormap by default): the middle colour is 0, so a
  weight's sign reads as its hue. Other kinds map their minimum to the colormap's start.
* RGB pictures (a first layer's filters, actmax images) keep their colours; the colorbar then
  says how one colour channel's intensity maps to values.

The panels these figures are made of (one run's grid of filters, its colour scale, its size on
the page, its titles) are `tb_cnnviz.panels`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib import animation
from matplotlib import pyplot as plt

from tb_cnnviz import panels as panel_lib
from tb_cnnviz.panels import NORMALIZATIONS, default_cmap
from tb_cnnviz.reader import Logdir, NotFoundError, names_text

__all__ = [
    "FIGURE_FORMATS",
    "NORMALIZATIONS",
    "animate",
    "compare",
    "default_cmap",
    "examples",
    "figure_of",
    "layer_grid",
    "probe",
    "save",
    "similarity",
]

#: File types `save` writes for a figure; an animation is written as `.gif`.
FIGURE_FORMATS = (".png", ".pdf", ".svg")


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
    panel = panel_lib.Panel.build(pictures, normalization=normalization, cmap=cmap, slices=slices)
    title, subtitle = panel_lib.titles([pictures], panel, normalization)
    if ax is None:
        fig, layout = panel_lib.new_figure([panel], width=width, with_panel_titles=False)
        panel_lib.draw_figure(
            fig, layout, [panel], title, subtitle, panel_titles=None, colorbar=colorbar
        )
        return fig.axes[0]
    panel_lib.draw_in(ax, panel, title, subtitle, colorbar=colorbar)
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
    panels = panel_lib.Panel.build_shared(
        pictures, normalization=normalization, cmap=cmap, slices=slices
    )
    title, subtitle = panel_lib.titles(pictures, panels[0], normalization)
    fig, layout = panel_lib.new_figure(panels, width=width, with_panel_titles=True)
    panel_lib.draw_figure(
        fig, layout, panels, title, subtitle, panel_titles=[p.run for p in pictures]
    )
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

    A long run's thinned steps (`tb_cnnviz.thinning`) have no pictures: the frames go from drawn
    step to drawn step, each titled with its real step, and a frame after thinned steps says how
    many were thinned before it.

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
    # A long run draws fewer steps as it grows: a frame says which steps were thinned since the
    # one before, so the jump reads as thinning, not as lost data.
    thinned = sorted({s for r in runs for s in logs.thinned(r)})
    since: dict[int, int] = {}
    for before, step in zip([None, *steps], steps, strict=False):
        between = [s for s in thinned if (before is None or s > before) and s < step]
        if between:
            since[step] = len(between)

    def panels_at(step):
        pictures = [logs.read(r, layer, kind, step) for r in runs]
        panels = panel_lib.Panel.build_shared(
            pictures, normalization=normalization, cmap=cmap, slices=slices
        )
        return pictures, panels

    first_pictures, first_panels = panels_at(steps[0])
    fig, layout = panel_lib.new_figure(
        first_panels, width=width or (10.0 if several else 7.0), with_panel_titles=several
    )

    def draw(step):
        pictures, panels = (first_pictures, first_panels) if step == steps[0] else panels_at(step)
        title, subtitle = panel_lib.titles(pictures, panels[0], normalization)
        if step in since:
            n = since[step]
            subtitle += f" · {n} step{'s' if n > 1 else ''} thinned before it"
        fig.clear()
        panel_lib.draw_figure(
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
    colormap = panel_lib.colormap(cmap, "feature_maps").with_extremes(bad=(0.85, 0.85, 0.85))
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
    fig = plt.figure(
        figsize=(width, panel * rows + panel_lib.TITLE_HEIGHT + 0.4 + 0.3 * bool(heat.warning))
    )
    grid = fig.add_gridspec(
        rows,
        cols + 1,
        width_ratios=[*([1] * cols), 0.05],
        left=0.16 / cols + 0.06,
        right=0.92,
        top=1 - (panel_lib.TITLE_HEIGHT + 0.1) / fig.get_figheight(),
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
    fig = plt.figure(figsize=(width, cell * len(chosen) * 1.25 + panel_lib.TITLE_HEIGHT + 0.2))
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
            "top": 1 - (panel_lib.TITLE_HEIGHT + 0.05) / fig.get_figheight(),
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


def probe(result, *, top: int = 5, max_maps: int = 64, width: float = 10.0):
    """Draws a `tb_cnnviz.probe.ProbeResult`: the image, top predictions, Grad-CAM, feature maps.

    The feature maps are sorted by each filter's mean activation, strongest first, each
    stretched to its own range and labelled with its filter id.

    Args:
        result: What `tb_cnnviz.probe` returned.
        top: How many predictions to list.
        max_maps: How many feature maps to show at most (the strongest).
        width: Figure width in inches.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:
        >>> from tb_cnnviz.probe import Prediction, ProbeResult
        >>> result = ProbeResult(run="train", step=3, steps=[0, 3],
        ...     image=np.random.rand(8, 8, 3).astype("float32"), value_range=(0.0, 1.0),
        ...     head="softmax", predictions=[Prediction(1, "dog", 0.8), Prediction(0, "cat", 0.2)],
        ...     target=1, heatmap=np.random.rand(8, 8).astype("float32"), heatmap_layer="c2",
        ...     layer="c2", feature_maps=np.random.rand(4, 4, 6).astype("float32"),
        ...     filter_strength=np.arange(6, dtype="float32"))
        >>> fig = probe(result)
        >>> [ax.get_title() for ax in fig.axes][:2]
        ['input (step 3)', 'top predictions']
    """
    low, high = result.value_range
    image = np.clip((result.image - low) / ((high - low) or 1.0), 0.0, 1.0)
    grey = image.shape[-1] == 1
    image = image[..., 0] if grey else image[..., :3]
    fig, axes = plt.subplots(1, 4, figsize=(width, width / 3.6), layout="constrained")
    shown, bars, cam, maps = axes
    shown.imshow(image, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
    shown.set_title(f"input (step {result.step})")
    chosen = result.predictions[:top]
    if chosen:
        labels = [p.name if p.name is not None else str(p.class_id) for p in chosen]
        drawn = bars.barh(
            range(len(chosen))[::-1], [p.probability for p in chosen], color="#4a7bd0"
        )
        bars.bar_label(drawn, [f"{p.probability:.0%}" for p in chosen], padding=2)
        bars.set_yticks(range(len(chosen))[::-1], labels)
        bars.set_xlim(0, 1)
    else:
        bars.text(0.5, 0.5, f"{result.head}: no classes", ha="center", va="center")
        bars.set_yticks([])
    bars.set_title("top predictions")
    cam.imshow(image, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
    cam.imshow(result.heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    named = {p.class_id: p.name for p in result.predictions}
    target = named.get(result.target) or result.target
    cam.set_title(f"Grad-CAM: {target}", fontsize="medium")
    order = np.argsort(-result.filter_strength, kind="stable")[:max_maps]
    maps.imshow(_map_grid(result.feature_maps, order), cmap="viridis", interpolation="nearest")
    maps.set_title(f"{result.layer}: {len(order)} of {result.feature_maps.shape[-1]} maps")
    for ax in (shown, cam, maps):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{result.run} at step {result.step}")
    return fig


def _map_grid(maps: np.ndarray, order) -> np.ndarray:
    """The maps of `order` in a square-ish grid, each in [0, 1], one NaN pixel between them."""
    h, w = maps.shape[:2]
    cols = math.ceil(math.sqrt(len(order)))
    rows = math.ceil(len(order) / cols)
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, np.float32)
    for i, f in enumerate(order):
        tile = maps[..., f]
        span = float(tile.max() - tile.min())
        tile = (tile - tile.min()) / span if span > 0 else np.zeros_like(tile)
        r, c = divmod(i, cols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return grid


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
