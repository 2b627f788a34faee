// Comparing runs in the tab: example crops, aligned orders, CKA heatmap pixels.

import assert from "node:assert/strict"
import {test} from "node:test"
import * as K from "../../frontend/compare.js"
import * as G from "../../frontend/grid.js"

// Five 8x8 reference images in two atlases (3 + 2, two to a row); pixel (y, x) of image i holds
// red = i, green = y, blue = x.
function refs() {
	const pics = [],
		layout = []
	for (const [first, count] of [
		[0, 3],
		[3, 2],
	]) {
		const cols = 2,
			rows = Math.ceil(count / cols)
		const width = cols * 8,
			height = rows * 8,
			data = new Uint8ClampedArray(width * height * 4)
		for (let k = 0; k < count; k++)
			for (let y = 0; y < 8; y++)
				for (let x = 0; x < 8; x++)
					data.set([first + k, y, x, 255], ((Math.floor(k / cols) * 8 + y) * width + (k % cols) * 8 + x) * 4)
		pics.push({width, height, data})
		layout.push({cols, rows, count})
	}
	return {pics, images: {count: 5, tile: [8, 8, 3], scale: 1, stride: [1, 1], layout}}
}

/** An /examples answer of layer c1 at step 2. */
const answer = (images, examples) => ({
	run: "r",
	layer: "c1",
	step: 2,
	filters: examples.length,
	top_k: 2,
	images,
	examples,
})
const pixel = (px, y, x) => [...px.data.subarray((y * px.width + x) * 4, (y * px.width + x) * 4 + 4)]

test("a crop comes from the right image, centred on the cell and kept inside the image", () => {
	const {pics, images} = refs()
	const body = answer(images, [
		[
			[4, 1, 6, 2.5],
			[0, 4, 4, 1],
		],
		[],
	])
	assert.equal(K.cropSide(images), 4)
	const [first, second] = K.exampleCrops(body, pics, 0)
	assert.equal(first.label, "#4 · 2.50")
	// cell (1, 6) at stride 1 is centred on pixel (1.5, 6.5): a 4x4 crop from (0, 4), clamped
	assert.deepEqual(pixel(first.pixels, 0, 0), [4, 0, 4, 255])
	assert.deepEqual(pixel(first.pixels, 3, 3), [4, 3, 7, 255])
	assert.deepEqual(pixel(second.pixels, 0, 0), [0, 3, 3, 255])
	assert.deepEqual(K.exampleCrops(body, pics, 1), [])
})

test("the examples layer has a tile per filter, its best crop, sortable by activation", () => {
	const {pics, images} = refs()
	const body = answer(images, [[[2, 0, 0, 3]], [], [[3, 7, 7, 9]]])
	const layer = K.examplesLayer(body, pics)
	assert.equal(layer.tag, "c1/responses")
	assert.deepEqual(layer.index.filters, [0, 1, 2])
	assert.deepEqual(layer.index.stats.activation, [3, null, 9])
	const bounds = G.normBounds(layer.index, "filter")
	const draw = position => G.renderFilter({...layer, bounds, position, slices: [0], colormap: "gray"})
	assert.deepEqual(pixel(draw(0), 0, 0), [2, 0, 0, 255]) // pixels kept as stored
	assert.deepEqual(pixel(draw(2), 3, 3), [3, 7, 7, 255])
	assert.deepEqual(pixel(draw(1), 0, 0), [0, 0, 0, 255])
})

test("without a stride, a crop is the image's centre square", () => {
	const {pics, images} = refs()
	const body = {filters: 1, images: {...images, stride: null}, examples: [[[1, 5, 5, 1]]]}
	const [crop] = K.exampleCrops(body, pics, 0)
	assert.equal(crop.pixels.width, 8)
	assert.deepEqual(pixel(crop.pixels, 7, 7), [1, 7, 7, 255])
})

test("B's tiles follow A's shown order through the matches; unmatched ones come last", () => {
	// A shows filters 2, 0, 1 (sorted); B[matches[a]] is A's filter a
	assert.deepEqual(K.alignedOrder([1, 3, 0], [0, 1, 2, 3], [2, 0, 1]), [0, 1, 3, 2])
	// B was sampled: only filters 0 and 3 drawn
	assert.deepEqual(K.alignedOrder([3, -1, 0], [0, 3], [0, 1, 2]), [1, 0])
	assert.deepEqual(K.alignedOrder([1, 0], [0, 1]), [1, 0]) // A not shown: A's filter order
	const m = K.matchCaptions({matches: [2, -1, 0], correlations: [0.9, null, 0.5]})
	assert.deepEqual([m.get(2), m.get(0), m.get(1)], ["↔ 0 · 0.90", "↔ 2 · 0.50", undefined])
})

test("heatmap cells are viridis from 0 to 1, and empty where there is no number", () => {
	const px = K.heatmapPixels([
		[1, null],
		[0, 1],
	])
	assert.deepEqual(pixel(px, 0, 0), [0xfd, 0xe7, 0x25, 255])
	assert.deepEqual(pixel(px, 1, 0), [0x44, 0x01, 0x54, 255])
	assert.equal(pixel(px, 0, 1)[3], 0)
})

test("a heatmap's colours can span the data: 0.97 and 1.0 look apart, the 0-1 scale one click away", () => {
	const m = [
		[1, 0.97, 0.99],
		[0.97, 1, null],
		[0.99, null, 1],
	]
	// The diagonal (a datum against itself) is 1 by definition and does not stretch the scale.
	assert.deepEqual(K.heatRange(m, "data"), [0.97, 0.99])
	assert.deepEqual(K.heatRange(m, "unit"), [0, 1])
	assert.deepEqual(K.heatRange([[1]], "data"), [0, 1]) // one cell: nothing to span
	assert.deepEqual(K.heatRange([[null]], "data"), [0, 1])
	const spread = K.heatmapPixels(m, 0.97, 0.99)
	assert.deepEqual(pixel(spread, 1, 0), [0x44, 0x01, 0x54, 255]) // the lowest: the first colour
	assert.deepEqual(pixel(spread, 2, 0), [0xfd, 0xe7, 0x25, 255]) // the highest: the last
	const fixed = K.heatmapPixels(m)
	assert.notDeepEqual(pixel(fixed, 1, 0), [0x44, 0x01, 0x54, 255]) // 0.97 of 0-1: near the top
})
