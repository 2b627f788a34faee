// The Similarity view: linear CKA heatmaps from /similarity, each with a keyboard cursor.

import {heatmapPixels, heatRange} from "./compare.js"
import * as C from "./controller.js"
import {clamp} from "./grid.js"
import {STALE, url} from "./model.js"
import * as V from "./views.js"

export const SIM_LABELS = {time: "Layer over time", runs: "Runs × runs", layers: "Layers × layers"}
export const HOWTO = "CNNViz(..., reference_images=x_val[:256]), the same images in every run"

const hasResponses = run => Object.values(C.tags[run] || {}).some(t => t.kind === "responses")

/** Resolves when drawn. */
export async function renderSimilarity(box) {
	const {state} = C,
		{layer, sim} = state
	const ticket = C.model.ticket("grid")
	const runs = state.runs.filter(hasResponses)
	if (!runs.length)
		return V.swapContent(
			box,
			V.messageCard("No reference images in these runs", "Log them to compare layers:", {code: HOWTO})
		)
	const none = state.runs.filter(r => !runs.includes(r)).join(", ")
	const left = none && V.messageCard(`No reference images in ${none}`, `Log them to compare: ${HOWTO}`, {tone: "warn"})
	if (sim === "runs" && runs.length < 2)
		return V.swapContent(box, V.messageCard("Select two or more runs with reference images"), left || "")
	// At the state's step where every run compared logged responses there, else the latest
	// (a step that is not there would be a 404, which the console lists as an error).
	const logged = run =>
		Object.values(C.tags[run] || {}).some(t => t.kind === "responses" && t.steps?.includes(state.step))
	const atStep = sim !== "time" && state.step !== null && runs.every(logged)
	const ask = q => C.model.get(url("similarity", atStep ? {...q, step: state.step} : q)).catch(error => ({error}))
	const qs = sim === "runs" ? [{runs: JSON.stringify(runs)}] : runs.map(run => (sim === "time" ? {run, layer} : {run}))
	const got = await ticket.guard(Promise.all(qs.map(q => ask({mode: sim, ...q}))))
	if (got === STALE) return
	const cards = got.flatMap((b, k) => {
		const a = {title: runs[k], color: V.runColor(C.runIndex(runs[k])), warning: b.warning}
		if (b.error)
			return V.heatCard({...a, body: V.messageCard("No similarity", `${b.error.message || b.error}`, {tone: "warn"})})
		if (sim === "runs")
			return b.layers.map((name, l) =>
				heat({title: name, sub: `step ${b.step}`, warning: b.warning}, b.matrices[l], b.runs, 0, (i, j) =>
					C.update({view: "filters", layer: name, runs: b.runs.filter((_, k) => k === i || k === j)})
				)
			)
		if (sim === "time")
			return heat(
				{...a, sub: layer},
				b.matrix,
				b.steps.map(s => `step ${s}`),
				b.steps.indexOf(state.step),
				(_, j) => C.update({step: b.steps[j]})
			)
		return heat({...a, sub: `step ${b.step}`}, b.matrix, b.layers, b.layers.indexOf(layer), (_, j) =>
			C.update({layer: b.layers[j], view: "filters"})
		)
	})
	V.swapContent(box, ...cards, left || "")
	box.classList.toggle("is-compare", cards.length > 1)
	document.dispatchEvent(new CustomEvent("cnnviz:painted"))
}

/** `go(i, j)` on Enter or click. */
function heat(card, m, labels, at, go) {
	const n = labels.length,
		range = heatRange(m, C.state.hscale),
		view = V.heatmap(heatmapPixels(m, ...range), labels, card.title, range),
		{canvas, cursor, readout, cell} = view
	let i = Math.max(0, at),
		j = i
	const show = (di = 0, dj = 0) => {
		i = clamp(i + di, 0, n - 1)
		j = clamp(j + dj, 0, n - 1)
		Object.assign(cursor.style, {left: `${j * cell}px`, top: `${i * cell}px`, width: `${cell}px`, height: `${cell}px`})
		const v = m[i][j]
		readout.value = `${labels[i]} × ${labels[j]} · CKA ${v === null ? "none (not comparable)" : v.toFixed(3)}`
	}
	const point = e => {
		const r = canvas.getBoundingClientRect()
		i = Math.floor(((e.clientY - r.top) / r.height) * n)
		j = Math.floor(((e.clientX - r.left) / r.width) * n)
		show()
	}
	canvas.onpointermove = point
	canvas.onclick = e => {
		point(e)
		go(i, j)
	}
	const moves = {
		ArrowUp: [-1, 0],
		ArrowDown: [1, 0],
		ArrowLeft: [0, -1],
		ArrowRight: [0, 1],
		Home: [-n, -n],
		End: [n, n],
	}
	canvas.onkeydown = e => {
		if (e.key === "Enter") go(i, j)
		else if (moves[e.key]) show(...moves[e.key])
		else return
		e.preventDefault()
		e.stopPropagation()
	}
	show()
	return V.heatCard({...card, body: view.root})
}
