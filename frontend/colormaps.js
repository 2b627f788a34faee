// Colormaps: t in [0, 1] -> RGB, 256-entry tables; anchors: matplotlib's viridis and RdBu_r at 17 points.
// Pure (node-testable).

export const COLORMAPS = ["gray", "diverging", "viridis"]
export const COLORMAP_LABELS = Object.fromEntries(COLORMAPS.map(c => [c, c[0].toUpperCase() + c.slice(1)]))

const ANCHORS = {
	viridis:
		"440154 48186a 472d7b 424086 3b528b 33638d 2c728e 26828e 21918c 1fa088 28ae80 3fbc73 5ec962 84d44b addc30 d8e219 fde725",
	diverging:
		"053061 175290 2a71b2 3f8ec0 6bacd1 9bc9e0 c2ddec e0ecf3 f7f6f6 fbe5d8 fbccb4 f5aa89 e48066 d05548 ba2832 930e26 67001f",
}

const cache = new Map()

/** r0 g0 b0 r1 …; unknown names: gray. */
export function colormapLut(name) {
	const key = name in ANCHORS ? name : "gray"
	let lut = cache.get(key)
	if (lut) return lut
	lut = new Uint8Array(256 * 3)
	if (key === "gray") {
		for (let i = 0; i < 256; i++) lut[3 * i] = lut[3 * i + 1] = lut[3 * i + 2] = i
	} else {
		const stops = ANCHORS[key].split(" ").map(hex => [0, 2, 4].map(o => parseInt(hex.slice(o, o + 2), 16)))
		const last = stops.length - 1
		for (let i = 0; i < 256; i++) {
			const x = (i / 255) * last
			const k = Math.min(last - 1, Math.floor(x))
			const f = x - k
			for (let c = 0; c < 3; c++) lut[3 * i + c] = Math.round(stops[k][c] * (1 - f) + stops[k + 1][c] * f)
		}
	}
	cache.set(key, lut)
	return lut
}

export function colorAt(name, t) {
	const lut = colormapLut(name)
	const i = Math.max(0, Math.min(255, Math.round((Number.isFinite(t) ? t : 0.5) * 255)))
	return [lut[3 * i], lut[3 * i + 1], lut[3 * i + 2]]
}

// Signed weights diverge around zero; non-negative maps use viridis.
export function defaultColormap(kind) {
	if (kind === "weights") return "diverging"
	if (kind === "feature_maps" || kind === "attribution") return "viridis"
	return "gray"
}

export function colormapGradient(name) {
	const stops = Array.from({length: 9}, (_, i) => `rgb(${colorAt(name, i / 8).join(",")}) ${(i / 8) * 100}%`)
	return `linear-gradient(to right, ${stops.join(", ")})`
}
