// Comparing runs, pure: example crops, aligned orders, CKA pixels (http_api.md's answers).

import {colormapLut} from "./colormaps.js"
import {clamp, tileLocations} from "./grid.js"

/** Reference image `i`: its atlas `a` and top-left pixel. */
function imageAt(images, i) {
	let a = 0,
		k = i
	while (a < images.layout.length - 1 && k >= images.layout[a].count) k -= images.layout[a++].count
	const {cols} = images.layout[a]
	return {a, x: (k % cols) * images.tile[1], y: Math.floor(k / cols) * images.tile[0]}
}

/** About four grid cells (the receptive field is not stored), at least a third of the image. */
export function cropSide(images) {
	const [h, w] = images.tile,
		small = Math.min(h, w)
	if (!images.stride) return small
	return clamp(Math.round(Math.max(4 * Math.max(...images.stride) * images.scale, small / 3)), 1, small)
}

/** Example `e` ([index, …position, activation]) cropped into `out` (`ow` wide) at x `ox`. */
function copyCrop(images, pics, e, side, out, ow, ox) {
	const [h, w] = images.tile,
		at = imageAt(images, e[0]),
		src = pics[at.a]
	if (!src) return
	const pos = e.slice(1, -1),
		s = images.stride
	const cy = s && pos.length > 1 ? (pos[pos.length - 2] + 0.5) * s[s.length - 2] * images.scale : h / 2
	const cx = s && pos.length ? (pos[pos.length - 1] + 0.5) * s[s.length - 1] * images.scale : w / 2
	const y0 = clamp(Math.round(cy - side / 2), 0, h - side),
		x0 = clamp(Math.round(cx - side / 2), 0, w - side)
	for (let y = 0; y < side; y++) {
		const si = ((at.y + y0 + y) * src.width + at.x + x0) * 4
		out.set(src.data.subarray(si, si + side * 4), (y * ow + ox) * 4)
	}
}

/** One filter's top-k crops, best first: [{label, pixels}]. */
/**
 * Probing dataset example `image` of `filter` (an /examples answer's `body`, of `step`): the
 * `probe-example` action's data and the title that says so, for the grid's thumbnails and the
 * inspector's buttons alike.
 */
export function exampleProbe(run, body, filter, image, step) {
	return {
		data: {action: "probe-example", run, image, step: body.images.step},
		title: `Dataset example #${image} of filter ${filter} (step ${step}): probe it`,
	}
}

export function exampleCrops(body, pics, filter) {
	const side = cropSide(body.images)
	return (body.examples[filter] || []).map(e => {
		const data = new Uint8ClampedArray(side * side * 4)
		copyCrop(body.images, pics, e, side, data, side, 0)
		return {
			image: e[0],
			label: `#${e[0]} · ${Number(e[e.length - 1]).toPrecision(3)}`,
			pixels: {width: side, height: side, data},
		}
	})
}

/** Each filter's best crop as a layer the grid draws (kind "responses"). */
export function examplesLayer(body, pics) {
	const n = body.filters,
		side = cropSide(body.images)
	const data = new Uint8ClampedArray(n * side * side * 4)
	const best = body.examples.map(list => list[0] || null)
	for (const [f, e] of best.entries()) if (e) copyCrop(body.images, pics, e, side, data, n * side, f * side)
	for (let i = 3; i < data.length; i += 4) data[i] = 255
	const filters = best.map((_, f) => f)
	const index = {
		kind: "responses",
		layer: body.layer,
		tile: [side, side, 3],
		filters,
		slices: {axis: "rgb", count: 1},
		atlases: [{cols: n, rows: 1, count: n}],
		ranges: filters.map(() => [0, 1]),
		stats: {activation: best.map(e => (e ? e[e.length - 1] : null))},
		best: best.map(e => (e ? e[0] : null)),
		notes: [`Each filter's best of ${body.images.count} reference images; its top ${body.top_k} in the inspector.`],
	}
	const atlas = {width: n * side, height: side, data}
	return {
		run: body.run,
		tag: `${body.layer}/responses`,
		step: body.step,
		wall_time: 0,
		index,
		atlases: [atlas],
		locations: tileLocations(index),
	}
}

/** Positions of B's `filters` in A's shown order (default: all) through `matches`; unmatched last. */
export function alignedOrder(matches, filters, aIds = [...matches.keys()]) {
	const pos = new Map(filters.map((id, i) => [id, i]))
	const out = aIds.map(a => pos.get(matches[a])).filter(p => p !== undefined)
	return [...new Set([...out, ...filters.keys()])]
}

/** B's filter -> "↔ A's filter · correlation". */
export const matchCaptions = body =>
	new Map(body.matches.map((b, a) => [b, `↔ ${a} · ${body.correlations[a]?.toFixed(2)}`]))

/**
 * A CKA matrix as RGBA pixels: viridis from `lo` to `hi` (0 to 1 by default); null cells
 * transparent. A layer compared with itself over time often spans 0.95-1.0, where a fixed 0-1
 * scale paints one colour: `heatRange` gives the data's own range.
 */
export function heatmapPixels(m, lo = 0, hi = 1) {
	const n = m.length,
		data = new Uint8ClampedArray(n * n * 4),
		lut = colormapLut("viridis"),
		span = hi > lo ? hi - lo : 1
	for (let k = 0; k < n * n; k++) {
		const v = m[Math.floor(k / n)][k % n]
		if (v === null || !Number.isFinite(v)) continue
		const li = Math.round(clamp((v - lo) / span, 0, 1) * 255) * 3
		data.set([lut[li], lut[li + 1], lut[li + 2], 255], k * 4)
	}
	return {width: n, height: n, data}
}

/**
 * The colour scale of a CKA matrix: `[0, 1]` ("unit"), or its cells' own range ("data"; cells
 * on the diagonal of a matrix against itself are 1 by definition and left out, so they do not
 * stretch the scale; a constant matrix keeps 0-1).
 */
export function heatRange(m, scale = "data") {
	if (scale === "unit") return [0, 1]
	const values = m.flatMap((row, i) =>
		row.filter((v, j) => v !== null && Number.isFinite(v) && (i !== j || m.length === 1))
	)
	if (!values.length) return [0, 1]
	const lo = Math.min(...values),
		hi = Math.max(...values)
	return hi - lo > 1e-6 ? [lo, hi] : [0, 1]
}
