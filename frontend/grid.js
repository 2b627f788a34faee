// The grid's pure logic (node-testable). Index format: the `tb_cnnviz.summary` docstring.
// Pixels: {width, height, data: RGBA}.

import {colormapLut} from "./colormaps.js"

export const NORM_MODES = ["filter", "layer", "tile"]
export const NORM_LABELS = {filter: "filter", layer: "layer", tile: "slice"}
export const SHOW_MODES = ["all", "dead", "alive"]
export const SHOW_LABELS = {all: "All filters", dead: "Dead only", alive: "Alive only"}
export const MAX_ZOOM = 32

export const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v))
const byte = t => Math.round(clamp(t, 0, 1) * 255)
const tileRange = r => [Number(r?.[0]) || 0, Number(r?.[1]) || 0]

export function tileLocations(index) {
	const [h, w] = index.tile
	const n = index.filters.length * index.slices.count
	const atlas = new Int32Array(n),
		x = new Int32Array(n),
		y = new Int32Array(n)
	let t = 0
	index.atlases.forEach((a, ai) => {
		for (let k = 0; k < a.count && t < n; k++, t++) {
			atlas[t] = ai
			x[t] = (k % a.cols) * w
			y[t] = Math.floor(k / a.cols) * h
		}
	})
	return {atlas, x, y, count: t}
}

/** `count` h×w slices: up to 4 in a row, else a near-square mosaic; 1-pixel gaps. */
export function mosaicLayout(h, w, count) {
	const n = Math.max(1, count)
	const cols = n <= 4 && h > 1 ? n : clamp(Math.ceil(Math.sqrt((n * h) / w)), 1, n)
	const rows = Math.ceil(n / cols)
	const gap = n > 1 ? 1 : 0
	return {cols, rows, width: cols * w + (cols - 1) * gap, height: rows * h + (rows - 1) * gap, gap}
}

/** A kernel's "all", attribution's first heatmap over the image ("o1"), else 0. */
export function defaultSlice(slices) {
	const [pair] = overlayPairs(slices)
	return pair ? `o${pair[1]}` : slices.axis === "input_channel" || slices.axis === "rgb" ? "all" : 0
}

/** [image slice, heatmap slice] pairs (attribution). */
export function overlayPairs(slices) {
	const labels = slices.labels || []
	const image = labels.indexOf("image")
	return image < 0 ? [] : labels.flatMap((_, s) => (s === image ? [] : [[image, s]]))
}

/** "oK": the overlay's heatmap K. */
export function shownSlices(index, slice) {
	const count = index.slices.count,
		pick = slice ?? defaultSlice(index.slices)
	if (pick === "all") return Array.from({length: count}, (_, s) => s)
	return [clamp(Number(typeof pick === "string" ? pick.slice(1) : pick) || 0, 0, count - 1)]
}

/** Attribution heatmaps, stored gray in RGB tiles. */
export const monoSlices = index => new Set(index.tile[2] === 3 ? overlayPairs(index.slices).map(p => p[1]) : [])

/**
 * Whether every filter's slices share one stored range, as weights do since format version 3:
 * then "slice" normalization would draw exactly what "filter" draws, and the tab does not offer it.
 */
export function rangesShared(index) {
	const count = index?.slices?.count || 0
	if (count < 2 || !index.ranges?.length) return false
	for (let t = 0; t < index.ranges.length; t++) {
		const [lo, hi] = tileRange(index.ranges[t]),
			[flo, fhi] = tileRange(index.ranges[t - (t % count)])
		if (lo !== flo || hi !== fhi) return false
	}
	return true
}

/** A tile's range ("tile"), or the union over its filter or layer. */
export function normBounds(index, mode) {
	const count = index.slices.count,
		n = index.filters.length * count
	const lo = new Float64Array(n),
		hi = new Float64Array(n)
	for (let t = 0; t < n; t++) [lo[t], hi[t]] = tileRange(index.ranges[t])
	if (mode === "tile") return {lo, hi}
	const group = mode === "layer" ? n : count
	for (let start = 0; start < n; start += group) {
		let L = Infinity,
			H = -Infinity
		for (let t = start; t < start + group; t++) {
			L = Math.min(L, lo[t])
			H = Math.max(H, hi[t])
		}
		lo.fill(L, start, start + group)
		hi.fill(H, start, start + group)
	}
	return {lo, hi}
}

/** t = a·p + b: linear maps [L, H] to [0, 1]; diverging maps 0 to 0.5, ±max(|L|, |H|) to the ends. */
export function pixelTransform(lo, hi, L, H, diverging) {
	const span = hi - lo
	if (diverging) {
		const m = Math.max(Math.abs(L), Math.abs(H))
		return m > 0 ? [span / 255 / (2 * m), 0.5 + lo / (2 * m)] : [0, 0.5]
	}
	const range = H - L
	return range > 0 ? [span / 255 / range, (lo - L) / range] : [0, 0]
}

// Tiles are stored as 8 bits over their own range [lo, hi].
export const pixelValue = (p, lo, hi) => lo + (p / 255) * (hi - lo)

/** RGB kept unless in `mono`; `out` is reused when its size fits. */
export function renderFilter({index, atlases, locations, bounds, position, slices, colormap, out, mono}) {
	const [h, w, c] = index.tile
	const layout = mosaicLayout(h, w, slices.length)
	const size = layout.width * layout.height * 4
	const data = out && out.length === size ? out.fill(0) : new Uint8ClampedArray(size)
	const lut = colormapLut(colormap)
	const rowStride = layout.width * 4
	slices.forEach((s, j) => {
		const t = position * index.slices.count + s
		const atlas = t < locations.count && atlases[locations.atlas[t]]
		if (!atlas) return
		const [a, b] = pixelTransform(...tileRange(index.ranges[t]), bounds.lo[t], bounds.hi[t], colormap === "diverging")
		const src = atlas.data,
			srcStride = atlas.width * 4
		const ox = (j % layout.cols) * (w + layout.gap),
			oy = Math.floor(j / layout.cols) * (h + layout.gap)
		for (let y = 0; y < h; y++) {
			let si = (locations.y[t] + y) * srcStride + locations.x[t] * 4
			let di = (oy + y) * rowStride + ox * 4
			for (let x = 0; x < w; x++, si += 4, di += 4) {
				if (c === 3 && !mono?.has(s)) for (let k = 0; k < 3; k++) data[di + k] = byte(a * src[si + k] + b)
				else for (let k = 0, li = byte(a * src[si] + b) * 3; k < 3; k++) data[di + k] = lut[li + k]
				data[di + 3] = 255
			}
		}
	})
	return {width: layout.width, height: layout.height, data}
}

/** A heatmap t in [0, 1] over its image at weight alpha·t. */
export function renderOverlay({index, atlases, locations, position, image, heat, colormap, alpha}) {
	const [h, w] = index.tile
	const data = new Uint8ClampedArray(w * h * 4)
	const ti = position * index.slices.count + image,
		th = position * index.slices.count + heat
	const A = atlases[locations.atlas[ti]],
		B = atlases[locations.atlas[th]]
	if (!A || !B || th >= locations.count) return {width: w, height: h, data}
	const [ri, rh] = [index.ranges[ti] || [0, 0], index.ranges[th] || [0, 0]]
	const [a, b] = pixelTransform(ri[0], ri[1], ri[0], ri[1], false)
	const lut = colormapLut(colormap)
	for (let y = 0; y < h; y++) {
		for (let x = 0; x < w; x++) {
			const si = ((locations.y[ti] + y) * A.width + locations.x[ti] + x) * 4
			const hi = ((locations.y[th] + y) * B.width + locations.x[th] + x) * 4
			const t = clamp(pixelValue(B.data[hi], rh[0], rh[1]), 0, 1)
			const k = alpha * t,
				li = Math.round(t * 255) * 3,
				di = (y * w + x) * 4
			for (let c = 0; c < 3; c++) data[di + c] = (a * A.data[si + c] + b) * 255 * (1 - k) + lut[li + c] * k
			data[di + 3] = 255
		}
	}
	return {width: w, height: h, data}
}

export function autoZoom(width, height, target = 56) {
	return clamp(Math.round(target / Math.max(1, width, height)), 1, MAX_ZOOM)
}

/** Whole device pixels per data pixel, so pixelated tiles stay even. */
export function cssSize(pixels, zoom, dpr = 1) {
	const ratio = dpr > 0 ? dpr : 1
	return (pixels * Math.max(1, Math.round(zoom * ratio))) / ratio
}

// Statistics, keyed "<kind>.<stat>".

const LABELS = {
	"weights.l2_norm": "Weight norm",
	"weights.mean": "Mean weight",
	"weights.relative_change": "Change since previous step",
	"feature_maps.mean": "Mean activation",
	"feature_maps.max": "Max activation",
	"feature_maps.zero_fraction": "Sparsity (zero fraction)",
	"feature_maps.dead": "Dead",
	"actmax.activation": "Activation reached",
	"attribution.predicted": "Predicted class",
	"attribution.true": "True class",
	"attribution.confidence": "Confidence",
	"attribution.correct": "Correct",
	"responses.activation": "Top activation",
}

export function statLabel(key) {
	if (LABELS[key]) return LABELS[key]
	const dot = key.indexOf(".")
	const words = key.slice(dot + 1).replace(/_/g, " ")
	return words.charAt(0).toUpperCase() + words.slice(1) + (dot > 0 ? ` (${key.slice(0, dot).replace(/_/g, " ")})` : "")
}

export function formatStat(value) {
	if (value === null || value === undefined) return "—"
	if (typeof value === "boolean") return value ? "yes" : "no"
	const v = Number(value)
	if (!Number.isFinite(v)) return String(value)
	if (v === 0) return "0"
	return Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3 ? v.toExponential(2) : String(Number(v.toPrecision(3)))
}

/** Map "<kind>.<stat>" -> filter id -> value. */
export function collectStats(entries) {
	const out = new Map()
	for (const e of entries) {
		if (!e?.stats || !Array.isArray(e.filters)) continue
		for (const [name, values] of Object.entries(e.stats)) {
			if (!Array.isArray(values)) continue
			const key = `${e.kind}.${name}`
			const byId = out.get(key) || new Map()
			for (const [i, id] of e.filters.entries()) byId.set(id, values[i] ?? null)
			out.set(key, byId)
		}
	}
	return out
}

export const rankIn = list => x => (list.includes(x) ? list.indexOf(x) : list.length)
const rank = rankIn(Object.keys(LABELS))

export const orderStats = keys => [...keys].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0))

export function sortableStats(stats) {
	return orderStats(
		[...stats.keys()].filter(k => [...stats.get(k).values()].some(v => typeof v === "number" || typeof v === "boolean"))
	)
}

export function deadFilters(stats) {
	for (const [key, byId] of stats) if (key.endsWith(".dead")) return byId
	return null
}

/** Positions of `filters` (ids) by id or `values`; missing last, ties by id. */
export function sortOrder(filters, values, descending) {
	const num = v => (typeof v === "boolean" ? Number(v) : typeof v === "number" && Number.isFinite(v) ? v : null)
	return filters
		.map((_, i) => i)
		.sort((i, j) => {
			const a = values ? num(values.get(filters[i])) : filters[i]
			const b = values ? num(values.get(filters[j])) : filters[j]
			if (a === null || b === null) {
				if (a !== b) return a === null ? 1 : -1
			} else if (a !== b) return descending ? b - a : a - b
			return filters[i] - filters[j]
		})
}

export function filterOrder(order, filters, show, dead) {
	if (show === "all" || !dead) return order
	return order.filter(i => Boolean(dead.get(filters[i])) === (show === "dead"))
}

export function unionSteps(tags, runs, tag) {
	const all = new Set()
	if (tag) for (const run of runs) for (const s of tags?.[run]?.[tag]?.steps || []) all.add(s)
	return [...all].sort((a, b) => a - b)
}

/** The earlier on a tie. */
export const closestStep = (steps, step) =>
	steps?.length ? steps.reduce((b, v) => (Math.abs(v - step) < Math.abs(b - step) ? v : b)) : null

export function sampleSteps(steps, max) {
	if (steps.length <= max) return steps.slice()
	const out = new Set()
	for (let i = 0; i < max; i++) out.add(steps[Math.round((i * (steps.length - 1)) / (max - 1))])
	return [...out]
}
