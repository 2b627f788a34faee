"""Panels of filters for matplotlib figures: how one layer's pictures become an image with
labels, its colour scale, its size on the page, and its titles.

`tb_cnnviz.plot` draws the figure kinds (a layer's grid, runs side by side, an animation, CKA
heatmaps, dataset examples) with these: a `Panel` holds one layer's pictures of one run laid
out as a grid of filters (slices side by side inside each cell), normalized and colour-mapped
as asked; `new_figure` sizes a figure for panels, `draw_figure` and `draw_in` draw them with
titles and a colorbar. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib import colors
from matplotlib import pyplot as plt

from tb_cnnviz.reader import LayerPictures

__all__ = [
    "NORMALIZATIONS",
    "TITLE_HEIGHT",
    "Panel",
    "colormap",
    "default_cmap",
    "draw_figure",
    "draw_in",
    "new_figure",
    "titles",
]

#: How values become colours; see the module docstring.
NORMALIZATIONS = ("filter", "layer", "tile")

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
TITLE_HEIGHT, _PANEL_TITLE_HEIGHT = 0.62, 0.25
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


@dataclasses.dataclass
class Panel:
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
    def build(cls, pictures, *, normalization, cmap, slices, layer_range=None) -> Panel:
        """One run's panel: its pictures normalized (`NORMALIZATIONS`) and colour-mapped.

        Example:
            >>> import tempfile
            >>> from tb_cnnviz import reader, summary
            >>> path = tempfile.mkdtemp()
            >>> writer = summary.create_file_writer(path + "/run")
            >>> with writer.as_default(step=0):
            ...     summary.filter_weights("conv", np.random.rand(3, 3, 1, 4))
            True
            >>> writer.close()
            >>> pictures = reader.Logdir(path).read("run", "conv", "weights")
            >>> panel = Panel.build(pictures, normalization="filter", cmap=None, slices=None)
            >>> panel.cells.shape
            (4, 1, 3, 3, 3)
        """
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}. "
                f"Received: normalization={normalization!r}"
            )
        cmap = colormap(cmap, pictures.kind)
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
    def build_shared(cls, pictures, *, normalization, cmap, slices) -> list[Panel]:
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
    def _overlay(cls, pictures, cmap, labels) -> Panel:
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


def new_figure(panels: list[Panel], *, width: float, with_panel_titles: bool):
    """Returns `(figure, layout)`: the width given, or less for a few filters; height to fit."""
    count = len(panels)
    top = TITLE_HEIGHT + (_PANEL_TITLE_HEIGHT if with_panel_titles else 0.0)
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


def _bar_height(panel: Panel) -> float:
    """The least colorbar height, in inches, that holds its label (about half an em a letter)."""
    return max(_MIN_BAR_HEIGHT, len(panel.colorbar_label) * _BAR_FONT * 0.52 / 72 + 0.15)


def _panel_height(panel: Panel, panel_width: float) -> float:
    px_per_inch = panel.canvas_width() / panel_width
    return panel.geometry(px_per_inch)[2] / px_per_inch


def draw_figure(fig, layout, panels, title, subtitle, *, panel_titles, colorbar=True) -> None:
    """Draws `panels` on a figure made by `new_figure`, with titles and one colorbar."""
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
        # its label; `new_figure` made room for that.
        bar_h = max(_bar_height(panels[0]), min(_MAX_BAR_HEIGHT, tallest))
        bar_left = _LEFT + len(panels) * panel_width + (len(panels) - 1) * _PANEL_GAP + _CBAR_GAP
        cax = fig.add_axes(
            (bar_left / fig_w, (fig_h - top - bar_h) / fig_h, _CBAR_WIDTH / fig_w, bar_h / fig_h)
        )
        _colorbar(fig, cax, panels[0])


def draw_in(ax, panel: Panel, title: str, subtitle: str, *, colorbar: bool) -> None:
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


def _show(ax, panel: Panel, canvas, labels, fontsize) -> None:
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text, color in labels:
        ax.text(x, y, text, ha="center", va="top", fontsize=fontsize, color=color)
    ax.set_axis_off()


def _colorbar(fig, cax, panel: Panel, ax=None):
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


def titles(pictures: list[LayerPictures], panel: Panel, normalization: str) -> tuple[str, str]:
    """`(title, subtitle)` of a figure of `pictures`: the layer, kind and step, what is shown
    and how it is normalized."""
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


def colormap(cmap, kind: str):
    """The matplotlib colormap `cmap` (a name or an object), or the kind's `default_cmap`.

    Example:
        >>> colormap(None, "weights").name
        'RdBu_r'
    """
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
