// The inspector: one filter of one run, in every kind of its layer.

import * as C from "./controller.js"
import * as G from "./grid.js"
import {axisWords, dpr, draw, errorText, focusTile, noun, overlayChoices, shown, sliceName, tileOf} from "./panels.js"
import * as S from "./state.js"
import * as V from "./views.js"

let ui
let inspKey = ""

export const mountInspector = shell => {
	ui = shell
}

export async function renderInspector() {
	const open = C.state.filter !== null && Boolean(C.currentLayer()) && C.state.runs.length > 0
	const wasOpen = !ui.inspector.hidden
	ui.inspector.hidden = !open
	ui.app.classList.toggle("has-inspector", open)
	const run = C.inspectedRun(),
		filter = C.state.filter,
		tag = C.currentTag(),
		layer = C.currentLayer()
	const {step, norm, cmap, slice, alpha} = C.state
	const key = [open, run, filter, tag, C.reloads, step, norm, cmap, slice, alpha].join("\u0000")
	if (!open) inspKey = ""
	if (!open || key === inspKey) return open || ui.inspector.replaceChildren()
	inspKey = key
	const ticket = C.model.ticket("inspector")
	const {order = [], dead} = shown.get(run) || {}
	const at = order.indexOf(filter)
	const title = `${noun(C.state.kind)} ${filter}`
	const color = V.runColor(C.runIndex(run))
	const where = {canPrev: at > 0, canNext: at >= 0 && at < order.length - 1, dead: Boolean(dead?.get(filter))}
	const view = V.inspectorView({title, run, layer: layer.name, step, color, ...where})
	const scroll = ui.inspector.scrollTop
	ui.inspector.replaceChildren(view.root)
	ui.inspector.scrollTop = scroll
	if (!wasOpen) ui.inspector.focus({preventScroll: true})
	const runTags = layer.tags.filter(t => C.stepsOf(run, t.tag).length)
	loadEvolution(run, tag, filter, view, ticket)
	const pictures = async t => {
		const label = S.kindLabel(t.kind)
		const holder = view.sections.appendChild(V.pictureSection(label, "loading…"))
		const steps = C.tags[run][t.tag].steps
		const last = steps.filter(s => s <= (C.state.step ?? Infinity)).pop()
		let section
		if (last === undefined) section = V.pictureSection(label, `first logged at step ${steps[0]}`)
		else {
			try {
				section = filterPictures(label, await C.model.layer(run, t.tag, last), filter, last)
			} catch (err) {
				section = V.pictureSection(label, "could not load", errorText(err))
			}
		}
		if (ticket.live) holder.replaceWith(section)
	}
	const kinds = runTags.filter(t => t.kind !== "attribution" || t.tag === tag)
	await Promise.all([...kinds.map(pictures), inspectorStats(run, runTags, filter, view, ticket)])
}

function filterPictures(label, data, filter, step) {
	const index = data.index
	if (!index) return V.pictureSection(label, `step ${step}`, data.warning || "")
	const pos = index.filters.indexOf(filter),
		count = index.slices.count,
		[h, w] = index.tile
	const [one, many] = axisWords(index.slices.axis)
	const sub = `${h}×${w} · ${index.slices.axis === "rgb" ? "RGB" : `${count} ${count === 1 ? one : many}`}${step !== C.state.step ? ` · from step ${step}` : ""}`
	if (pos < 0) return V.pictureSection(label, sub, "Not drawn at this step (the layer was sampled).")
	const items = overlayChoices(index).map(o => ({label: o.label, pixels: draw(data, pos, o.value)}))
	for (let s = 0; s < count; s++)
		items.push({label: index.slices.axis === "rgb" ? "RGB" : sliceName(index, s), pixels: draw(data, pos, s)})
	// the largest integer zoom fitting 4 pictures a row (6 if many)
	const perRow = Math.min(items.length, items.length <= 16 ? 4 : 6)
	const cell = Math.floor(((ui.inspector.clientWidth || 400) - 40 - (perRow - 1) * 8) / perRow)
	const zoom = Math.max(1, Math.min(24, Math.floor(cell / w), Math.floor(160 / h)))
	return V.pictureSection(label, sub, "", items, zoom, dpr())
}

async function inspectorStats(run, runTags, filter, view, ticket) {
	const rows = []
	const all = await Promise.all(runTags.map(t => C.model.stats(run, t.tag).catch(() => null)))
	for (const [k, data] of all.entries()) {
		const series = data?.series || []
		const now = series.filter(e => e.step <= (C.state.step ?? Infinity)).pop()
		for (const name of new Set(series.flatMap(e => Object.keys(e.stats || {})))) {
			const at = e => e?.stats?.[name]?.[(e.filters || []).indexOf(filter)]
			const points = series.map(e => ({
				step: e.step,
				value: typeof at(e) === "boolean" ? Number(at(e)) : (at(e) ?? null),
			}))
			const key = `${runTags[k].kind}.${name}`
			rows.push({key, label: G.statLabel(key), value: G.formatStat(at(now)), points})
		}
	}
	if (!ticket.live) return
	const order = G.orderStats(rows.map(r => r.key))
	rows.sort((a, b) => order.indexOf(a.key) - order.indexOf(b.key))
	view.stats.replaceChildren(...V.statsRows(rows, C.state.step))
}

async function loadEvolution(run, tag, filter, view, ticket) {
	const steps = G.sampleSteps(C.stepsOf(run, tag), 32)
	const frames = steps.map(s => V.evolutionFrame(s, s === C.state.step)) // cached steps paint at once
	view.evolution.replaceChildren(...frames)
	let next = 0
	const worker = async () => {
		while (next < steps.length && ticket.live) {
			const k = next++
			const data = await C.model.layer(run, tag, steps[k], {prefetch: true}).catch(() => null)
			const pos = data?.index ? data.index.filters.indexOf(filter) : -1
			if (!ticket.live || pos < 0) continue
			const px = draw(data, pos, C.sliceOf(data.index))
			V.paintCanvas(frames[k].firstChild, px, G.autoZoom(px.width, px.height, 44), dpr())
		}
	}
	await Promise.all([worker(), worker()])
}

export function closeInspector() {
	const tile = tileOf(C.inspectedRun(), C.state.filter)
	C.update({filter: null, frun: null})
	tile?.focus()
}

export function inspectNeighbour(delta) {
	const order = shown.get(C.inspectedRun())?.order || []
	const next = order[order.indexOf(C.state.filter) + delta]
	if (C.state.filter !== null && order.includes(C.state.filter) && next !== undefined) {
		focusTile(next)
		C.update({filter: next})
	}
}
