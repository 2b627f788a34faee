// Atlas geometry, normalization, colour mapping, statistics, sorting and filtering of the grid.

import assert from "node:assert/strict"
import {test} from "node:test"
import * as G from "../../frontend/grid.js"

/** Builds RGBA atlases from tiles of gray pixel values, packed like tb_cnnviz.tiles.pack_tiles. */
function pack(tiles, h, w, cols, perAtlas) {
	const atlases = [],
		meta = []
	for (let start = 0; start < tiles.length; start += perAtlas) {
		const chunk = tiles.slice(start, start + perAtlas)
		const rows = Math.ceil(chunk.length / cols)
		const width = cols * w,
			height = rows * h
		const data = new Uint8ClampedArray(width * height * 4)
		chunk.forEach((tile, k) => {
			const x0 = (k % cols) * w,
				y0 = Math.floor(k / cols) * h
			for (let y = 0; y < h; y++)
				for (let x = 0; x < w; x++) {
					const i = ((y0 + y) * width + x0 + x) * 4
					const v = tile[y * w + x]
					if (Array.isArray(v)) {
						data[i] = v[0]
						data[i + 1] = v[1]
						data[i + 2] = v[2]
					} else data[i] = data[i + 1] = data[i + 2] = v
					data[i + 3] = 255
				}
		})
		atlases.push({width, height, data})
		meta.push({blob: meta.length + 1, cols, rows, count: chunk.length})
	}
	return {atlases, meta}
}

// 3 filters x 2 slices of 2x2 tiles; tile t holds pixels [t, t+1, t+2, t+3] * 10.
const TILES = Array.from({length: 6}, (_, t) => [0, 1, 2, 3].map(k => (t + k) * 10))
const {atlases, meta} = pack(TILES, 2, 2, 2, 4)
const INDEX = {
	kind: "weights",
	layer: "c",
	tile: [2, 2, 1],
	filters: [4, 7, 9],
	total_filters: 12,
	slices: {axis: "input_channel", count: 2, total: 2},
	atlases: meta,
	ranges: [
		[-1, 1],
		[0, 2],
		[-4, 0],
		[1, 1],
		[0, 10],
		[-2, 3],
	],
	stats: {l2_norm: [3, 1, 2], relative_change: [null, 0.5, 0.1]},
}

test("tile locations follow atlases row-major, tile-major across atlases", () => {
	const loc = G.tileLocations(INDEX)
	assert.equal(loc.count, 6)
	assert.deepEqual([...loc.atlas], [0, 0, 0, 0, 1, 1])
	assert.deepEqual([...loc.x], [0, 2, 0, 2, 0, 2])
	assert.deepEqual([...loc.y], [0, 0, 2, 2, 0, 0])
})

test("mosaic layout is near-square, stacks 1-D tiles, and has no gap for one slice", () => {
	assert.deepEqual(G.mosaicLayout(3, 3, 1), {cols: 1, rows: 1, width: 3, height: 3, gap: 0})
	assert.deepEqual(G.mosaicLayout(3, 3, 4), {cols: 4, rows: 1, width: 15, height: 3, gap: 1})
	assert.deepEqual(G.mosaicLayout(3, 3, 5), {cols: 3, rows: 2, width: 11, height: 7, gap: 1})
	assert.deepEqual(G.mosaicLayout(3, 3, 32), {cols: 6, rows: 6, width: 23, height: 23, gap: 1})
	assert.equal(G.mosaicLayout(1, 50, 4).cols, 1)
})

test("shown slices: all, one, clamped, overlays, and per-axis defaults", () => {
	assert.deepEqual(G.shownSlices(INDEX, null), [0, 1])
	assert.deepEqual(G.shownSlices(INDEX, 1), [1])
	assert.deepEqual(G.shownSlices(INDEX, 99), [1])
	assert.deepEqual(G.shownSlices(INDEX, "o1"), [1])
	assert.deepEqual(G.shownSlices({...INDEX, slices: {axis: "probe", count: 4}}, null), [0])
	assert.equal(G.defaultSlice({axis: "rgb"}), "all")
	assert.equal(G.defaultSlice({axis: "input_channel_grid"}), 0)
	assert.equal(G.defaultSlice({axis: "image", labels: ["image", "predicted", "true"]}), "o1")
})

test("attribution heatmaps pair with their image and are colour-mapped from gray RGB tiles", () => {
	const slices = {axis: "image", count: 3, labels: ["image", "predicted", "true"]}
	assert.deepEqual(G.overlayPairs(slices), [
		[0, 1],
		[0, 2],
	])
	assert.deepEqual(G.overlayPairs({axis: "probe", count: 4}), [])
	assert.deepEqual([...G.monoSlices({tile: [2, 2, 3], slices})], [1, 2])
	assert.deepEqual([...G.monoSlices({tile: [2, 2, 1], slices})], [])
})

test("renderFilter colour-maps mono slices of RGB tiles from their red channel", () => {
	const packed = pack(
		[
			[
				[255, 0, 0],
				[0, 0, 0],
				[0, 0, 0],
				[0, 0, 0],
			],
			[
				[0, 0, 0],
				[255, 255, 255],
				[0, 0, 0],
				[0, 0, 0],
			],
		],
		2,
		2,
		2,
		4
	)
	const index = {
		kind: "attribution",
		tile: [2, 2, 3],
		filters: [0],
		slices: {axis: "image", count: 2, labels: ["image", "predicted"]},
		atlases: packed.meta,
		ranges: [
			[0, 1],
			[0, 1],
		],
	}
	const px = G.renderFilter({
		index,
		atlases: packed.atlases,
		locations: G.tileLocations(index),
		bounds: G.normBounds(index, "tile"),
		position: 0,
		slices: [1],
		colormap: "viridis",
		mono: G.monoSlices(index),
	})
	assert.deepEqual([...px.data.slice(0, 3)], [0x44, 0x01, 0x54]) // heat 0 -> viridis' low end
	assert.deepEqual([...px.data.slice(4, 7)], [0xfd, 0xe7, 0x25]) // heat 1 -> its high end
})

test("renderOverlay keeps the image where heat is 0 and blends the colormap by alpha·heat", () => {
	// Tile 0: the image (mid grey, range [0, 1]); tile 1: heat 0 then 1.
	const packed = pack(
		[
			[
				[128, 128, 128],
				[128, 128, 128],
				[128, 128, 128],
				[128, 128, 128],
			],
			[0, 255, 0, 0],
		],
		2,
		2,
		2,
		4
	)
	const index = {
		kind: "attribution",
		tile: [2, 2, 3],
		filters: [0],
		slices: {axis: "image", count: 2, labels: ["image", "predicted"]},
		atlases: packed.meta,
		ranges: [
			[0, 1],
			[0, 1],
		],
	}
	const px = G.renderOverlay({
		index,
		atlases: packed.atlases,
		locations: G.tileLocations(index),
		position: 0,
		image: 0,
		heat: 1,
		colormap: "gray",
		alpha: 0.5,
	})
	assert.deepEqual([...px.data.slice(0, 4)], [128, 128, 128, 255])
	assert.deepEqual([...px.data.slice(4, 8)], [192, 192, 192, 255]) // half grey image, half white heat
})

test("normalization bounds per tile, per filter and per layer", () => {
	const tile = G.normBounds(INDEX, "tile")
	assert.deepEqual([...tile.lo], [-1, 0, -4, 1, 0, -2])
	const filter = G.normBounds(INDEX, "filter")
	assert.deepEqual([...filter.lo], [-1, -1, -4, -4, -2, -2])
	assert.deepEqual([...filter.hi], [2, 2, 1, 1, 10, 10])
	const layer = G.normBounds(INDEX, "layer")
	assert.deepEqual([...new Set(layer.lo)], [-4])
	assert.deepEqual([...new Set(layer.hi)], [10])
})

test("rangesShared tells weights stored over their filter's range from per-slice ranges", () => {
	assert.equal(G.rangesShared(INDEX), false) // INDEX's slices each have their own range
	const shared = {
		...INDEX,
		ranges: [
			[-1, 2],
			[-1, 2],
			[-4, 1],
			[-4, 1],
			[0, 3],
			[0, 3],
		],
	}
	assert.equal(G.rangesShared(shared), true)
	assert.equal(G.rangesShared({...shared, slices: {axis: "rgb", count: 1, total: 1}}), false)
	assert.equal(G.rangesShared({...shared, ranges: []}), false)
	// Filter 2's second slice differs: per-slice normalization would show something else there.
	assert.equal(G.rangesShared({...shared, ranges: [...shared.ranges.slice(0, 5), [0, 2]]}), false)
})

test("pixel transform maps the stored range onto the bounds, and zero to the diverging centre", () => {
	const [a, b] = G.pixelTransform(0, 2, -1, 3, false) // value = 2p/255; t = (v + 1) / 4
	assert.equal(b, 0.25)
	assert.ok(Math.abs(a * 255 + b - 0.75) < 1e-12)
	const [da, db] = G.pixelTransform(-1, 1, -1, 1, true) // v = -1 + 2p/255; t = 0.5 + v/2
	assert.equal(db, 0)
	assert.ok(Math.abs(da * 255 + db - 1) < 1e-12)
	const [za, zb] = G.pixelTransform(-3, 1, -3, 1, true) // zero lies at t = 0.5
	const pZero = (3 / 4) * 255
	assert.ok(Math.abs(za * pZero + zb - 0.5) < 1e-12)
	assert.deepEqual(G.pixelTransform(1, 1, 1, 1, false), [0, 0])
	assert.deepEqual(G.pixelTransform(0, 0, 0, 0, true), [0, 0.5])
	assert.equal(G.pixelValue(255, -2, 2), 2)
})

test("renderFilter draws each slice into its mosaic cell with gaps left transparent", () => {
	const loc = G.tileLocations(INDEX)
	const bounds = G.normBounds(INDEX, "tile")
	const px = G.renderFilter({
		index: INDEX,
		atlases,
		locations: loc,
		bounds,
		position: 1,
		slices: [0, 1],
		colormap: "gray",
	})
	assert.equal(px.width, 5) // 2 cols of 2 px + 1 gap
	assert.equal(px.height, 2)
	const at = (x, y) => [...px.data.slice((y * px.width + x) * 4, (y * px.width + x) * 4 + 4)]
	// Per-tile normalization: stored pixels 20..50 of tile 2 stretch over its own range [-4, 0] -> p/255.
	assert.deepEqual(at(0, 0), [20, 20, 20, 255])
	assert.deepEqual(at(1, 1), [50, 50, 50, 255])
	assert.deepEqual(at(2, 0), [0, 0, 0, 0])
	// Tile 3 is constant (lo == hi): drawn at the low end whatever its pixels.
	assert.deepEqual(at(3, 0), [0, 0, 0, 255])
})

test("renderFilter per-layer normalization compares tiles on one scale", () => {
	const loc = G.tileLocations(INDEX)
	const bounds = G.normBounds(INDEX, "layer") // [-4, 10]
	const px = G.renderFilter({
		index: INDEX,
		atlases,
		locations: loc,
		bounds,
		position: 2,
		slices: [0],
		colormap: "gray",
	})
	// Tile 4: range [0, 10], pixel 40 -> value 40/255*10 -> t = (v + 4) / 14.
	const v = (40 / 255) * 10
	assert.equal(px.data[0], Math.round(((v + 4) / 14) * 255))
})

test("renderFilter keeps RGB tiles in colour and centres them on grey when diverging", () => {
	const rgbTiles = [
		[
			[255, 0, 0],
			[0, 255, 0],
			[0, 0, 255],
			[128, 128, 128],
		],
	]
	const packed = pack(rgbTiles, 2, 2, 1, 4)
	const index = {
		kind: "weights",
		tile: [2, 2, 3],
		filters: [0],
		slices: {axis: "rgb", count: 1},
		atlases: packed.meta,
		ranges: [[-1, 1]],
	}
	const loc = G.tileLocations(index)
	const lin = G.renderFilter({
		index,
		atlases: packed.atlases,
		locations: loc,
		bounds: G.normBounds(index, "filter"),
		position: 0,
		slices: [0],
		colormap: "viridis",
	})
	assert.deepEqual([...lin.data.slice(0, 4)], [255, 0, 0, 255])
	const div = G.renderFilter({
		index,
		atlases: packed.atlases,
		locations: loc,
		bounds: G.normBounds(index, "filter"),
		position: 0,
		slices: [0],
		colormap: "diverging",
	})
	assert.deepEqual([...div.data.slice(0, 4)], [255, 0, 0, 255])
	assert.deepEqual([...div.data.slice(12, 15)], [128, 128, 128])
})

test("renderFilter applies the colormap to gray tiles", () => {
	const loc = G.tileLocations(INDEX)
	const px = G.renderFilter({
		index: INDEX,
		atlases,
		locations: loc,
		bounds: G.normBounds(INDEX, "tile"),
		position: 0,
		slices: [0],
		colormap: "viridis",
	})
	assert.deepEqual([...px.data.slice(0, 3)], [0x44, 0x01, 0x54]) // pixel 0 of tile 0 -> t = 0
})

test("renderFilter reuses an output buffer of the right size and clears it", () => {
	const loc = G.tileLocations(INDEX)
	const out = new Uint8ClampedArray(5 * 2 * 4).fill(9)
	const px = G.renderFilter({
		index: INDEX,
		atlases,
		locations: loc,
		bounds: G.normBounds(INDEX, "tile"),
		position: 0,
		slices: [0, 1],
		colormap: "gray",
		out,
	})
	assert.equal(px.data, out)
	assert.deepEqual([...out.slice(8, 12)], [0, 0, 0, 0])
})

test("zoom is integral in device pixels at any devicePixelRatio", () => {
	assert.equal(G.cssSize(3, 4, 1), 12)
	assert.equal(G.cssSize(3, 4, 2), 12)
	assert.equal((G.cssSize(3, 3, 1.5) * 1.5) % 3, 0) // each data pixel covers round(4.5)=5 device px
	assert.equal(G.autoZoom(3, 3), 19)
	assert.equal(G.autoZoom(64, 64), 1)
	assert.equal(G.autoZoom(1000, 2), 1)
})

test("statistics are keyed by kind and filter id and merge across kinds", () => {
	const stats = G.collectStats([
		{kind: "weights", filters: [4, 7, 9], stats: INDEX.stats},
		{kind: "feature_maps", filters: [4, 9], stats: {mean: [0.5, 0], dead: [false, true]}},
		null,
	])
	assert.equal(stats.get("weights.l2_norm").get(7), 1)
	assert.equal(stats.get("feature_maps.dead").get(9), true)
	assert.equal(stats.get("feature_maps.mean").has(7), false)
	assert.deepEqual(G.sortableStats(stats), [
		"weights.l2_norm",
		"weights.relative_change",
		"feature_maps.mean",
		"feature_maps.dead",
	])
	assert.equal(G.deadFilters(stats).get(9), true)
	assert.equal(G.deadFilters(new Map()), null)
})

test("sorting by id, by a statistic in both directions, with missing values last", () => {
	const filters = [4, 7, 9, 11]
	assert.deepEqual(G.sortOrder(filters, null, false), [0, 1, 2, 3])
	const values = new Map([
		[4, 3],
		[7, null],
		[9, 2],
		[11, 3],
	])
	assert.deepEqual(G.sortOrder(filters, values, false), [2, 0, 3, 1])
	assert.deepEqual(G.sortOrder(filters, values, true), [0, 3, 2, 1])
	const dead = new Map([
		[4, false],
		[7, true],
		[9, true],
	])
	assert.deepEqual(G.sortOrder(filters, dead, true), [1, 2, 0, 3])
})

test("filtering keeps dead or alive filters and ignores the filter without dead data", () => {
	const dead = new Map([
		[4, false],
		[7, true],
		[9, true],
	])
	assert.deepEqual(G.filterOrder([0, 1, 2], [4, 7, 9], "dead", dead), [1, 2])
	assert.deepEqual(G.filterOrder([0, 1, 2], [4, 7, 9], "alive", dead), [0])
	assert.deepEqual(G.filterOrder([0, 1, 2], [4, 7, 9], "dead", null), [0, 1, 2])
})

test("steps: union across runs, closest step (the earlier on a tie), even samples keeping the ends", () => {
	const tags = {a: {t: {steps: [0, 2, 4]}}, b: {t: {steps: [1, 2, 9]}}}
	assert.deepEqual(G.unionSteps(tags, ["a", "b"], "t"), [0, 1, 2, 4, 9])
	assert.deepEqual(G.unionSteps(tags, ["a", "c"], "t"), [0, 2, 4])
	assert.equal(G.closestStep([0, 2, 4], 3), 2)
	assert.equal(G.closestStep([0, 2, 4], 4), 4)
	assert.equal(G.closestStep([0, 2, 9], 7), 9)
	assert.equal(G.closestStep([5, 6], 1), 5)
	assert.equal(G.closestStep([0, 2, 4], 99), 4)
	assert.equal(G.closestStep([], 1), null)
	const sampled = G.sampleSteps(
		Array.from({length: 100}, (_, i) => i),
		5
	)
	assert.deepEqual(sampled, [0, 25, 50, 74, 99])
	assert.deepEqual(G.sampleSteps([1, 2], 5), [1, 2])
})

test("labels and formatting speak the user's words", () => {
	assert.equal(G.statLabel("weights.l2_norm"), "Weight norm")
	assert.equal(G.statLabel("feature_maps.zero_fraction"), "Sparsity (zero fraction)")
	assert.equal(G.statLabel("attribution.peak_value"), "Peak value (attribution)")
	assert.equal(G.statLabel("actmax.activation"), "Activation reached")
	assert.equal(G.formatStat(null), "—")
	assert.equal(G.formatStat(true), "yes")
	assert.equal(G.formatStat(0.123456), "0.123")
	assert.equal(G.formatStat(0.00001234), "1.23e-5")
	assert.equal(G.formatStat(1234.5), "1230")
})
