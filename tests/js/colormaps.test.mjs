// Colormap lookup tables.

import assert from "node:assert/strict"
import {test} from "node:test"
import {COLORMAPS, colorAt, colormapGradient, colormapLut, defaultColormap} from "../../frontend/colormaps.js"

test("every colormap has 256 RGB entries", () => {
	for (const name of COLORMAPS) assert.equal(colormapLut(name).length, 768)
})

test("gray is the identity", () => {
	assert.deepEqual(colorAt("gray", 0), [0, 0, 0])
	assert.deepEqual(colorAt("gray", 1), [255, 255, 255])
	assert.deepEqual(colorAt("gray", 128 / 255), [128, 128, 128])
})

test("viridis matches matplotlib at its ends and middle", () => {
	assert.deepEqual(colorAt("viridis", 0), [0x44, 0x01, 0x54])
	assert.deepEqual(colorAt("viridis", 1), [0xfd, 0xe7, 0x25])
	const mid = colorAt("viridis", 0.5) // matplotlib: 21918c
	assert.ok(Math.abs(mid[0] - 0x21) <= 2 && Math.abs(mid[1] - 0x91) <= 2 && Math.abs(mid[2] - 0x8c) <= 2)
})

test("diverging is blue below zero, near-white at zero, red above", () => {
	const [r0, , b0] = colorAt("diverging", 0)
	const [r1, , b1] = colorAt("diverging", 1)
	const mid = colorAt("diverging", 0.5)
	assert.ok(b0 > r0 && r1 > b1)
	assert.ok(mid.every(c => c > 235))
})

test("out-of-range and NaN positions clamp", () => {
	assert.deepEqual(colorAt("gray", -3), [0, 0, 0])
	assert.deepEqual(colorAt("gray", 7), [255, 255, 255])
	assert.deepEqual(colorAt("gray", NaN), [128, 128, 128])
	assert.deepEqual(colorAt("nope", 0), [0, 0, 0])
})

test("kinds open with sensible colormaps and legends are CSS gradients", () => {
	assert.equal(defaultColormap("weights"), "diverging")
	assert.equal(defaultColormap("feature_maps"), "viridis")
	assert.equal(defaultColormap("actmax"), "gray")
	assert.match(colormapGradient("viridis"), /^linear-gradient\(to right, rgb\(68,1,84\) 0%/)
})
