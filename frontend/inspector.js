// The inspector: one filter of one run, in every kind of its layer, its statistics, steps and examples.

import {exampleCrops, exampleProbe} from "./compare.js"
import * as C from "./controller.js"
import * as G from "./grid.js"
import {
	alignments,
	axisWords,
	dpr,
	draw,
	errorText,
	focusTile,
	noun,
	overlayChoices,
	shown,
	sliceName,
	tileOf,
} from "./panels.js"
import {HOWTO} from "./similarity.js"
import * as S from "./state.js"
import * as V from "./views.js"

let ui
let inspKey = ""

export const mountInspector = shell => {
	ui = shell
}

/**
 * After a grid paint: the previous and next buttons follow the grid's order, which a sort or a
 * Dead/Alive filter changes without reopening the inspector.
 */
export function refreshNeighbours() {
	const head = ui.inspector.querySelector(".cv-insp-head")
	if (!head || C.state.filter === null) return
	const {order = []} = shown.get(C.inspectedRun()) || {}
	const at = order.indexOf(C.state.filter)
	const prev = head.querySelector('[data-action="prev-filter"]'),
		next = head.querySelector('[data-action="next-filter"]')
	if (prev) prev.disabled = !order.length ? false : at <= 0
	if (next) next.disabled = !order.length ? false : at < 0 || at >= order.length - 1
}

export async function renderInspector() {
	const open =
		C.state.filter !== null && C.state.view !== "similarity" && Boolean(C.currentLayer()) && C.state.runs.length > 0
	const wasOpen = !ui.inspector.hidden
	ui.inspector.hidden = !open
	ui.app.classList.toggle("has-inspector", open)
	const run = C.inspectedRun(),
		filter = C.state.filter,
		tag = C.currentTag(),
		layer = C.currentLayer()
	const {step, norm, cmap, slice, alpha, align, runs} = C.state
	const key = [open, run, filter, tag, C.reloads, step, norm, cmap, slice, alpha, align, runs].join("\u0000")
	if (!open) inspKey = ""
	if (!open || key === inspKey) return open || ui.inspector.replaceChildren()
	inspKey = key
	const ticket = C.model.ticket("inspector")
	const {order = [], dead} = shown.get(run) || {}
	const at = order.indexOf(filter)
	const title = `${noun(C.state.kind)} ${filter}`
	const color = V.runColor(C.runIndex(run))
	// order unknown (grid not painted): both on
	const where = {canPrev: at !== 0, canNext: at < 0 || at < order.length - 1, dead: Boolean(dead?.get(filter))}
	const view = V.inspectorView({title, run, layer: layer.name, step, color, ...where})
	const scroll = ui.inspector.scrollTop
	ui.inspector.replaceChildren(view.root)
	ui.inspector.scrollTop = scroll
	if (!wasOpen) ui.inspector.focus({preventScroll: true})
	// What this step's drawing of the layer cost (plan records), beside its title.
	C.model
		.plan(run)
		.then(plan => {
			const c = S.cost(plan, tag, step)
			// The line is cut to the inspector's width: the whole cost shows on hover.
			if (!c || !ticket.live) return
			view.cost.title = `drawn in ${S.costText(c)}`
			view.cost.textContent = ` · ${view.cost.title}`
		})
		.catch(() => {})
	const runTags = layer.tags.filter(t => t.kind !== "responses" && C.stepsOf(run, t.tag).length)
	loadEvolution(run, tag, filter, view.evolution, ticket)
	/** "loading…", then `load` at the last step up to the state's; `none` if no steps. */
	const fill = async (label, steps, load, none = "") => {
		const holder = view.sections.appendChild(V.pictureSection(label, "loading…"))
		const last = steps.filter(s => s <= (step ?? Infinity)).pop()
		let section = V.pictureSection(label, ...(steps.length ? [`first logged at step ${steps[0]}`] : ["", none]))
		try {
			if (last !== undefined) section = await load(last, last !== step ? ` · from step ${last}` : "")
		} catch (err) {
			section = V.pictureSection(label, "could not load", errorText(err))
		}
		if (ticket.live) holder.replaceWith(section)
	}
	const pictures = t =>
		fill(S.kindLabel(t.kind), C.stepsOf(run, t.tag), async (last, from) =>
			filterPictures(S.kindLabel(t.kind), await C.model.layer(run, t.tag, last), filter, from)
		)
	// The top reference images, cropped around where the filter responds most.
	const examples = label =>
		fill(
			label,
			C.stepsOf(run, `${layer.name}/responses`),
			async (last, from) => {
				const {body, pics} = await C.model.examples(run, layer.name, last)
				// Each one a button that probes the whole reference image, as the grid's thumbnails do.
				const probe = item => {
					const {data, title} = exampleProbe(run, body, filter, item.image, last)
					return {...item, action: data, title}
				}
				const items = body.images ? exampleCrops(body, pics, filter).map(probe) : []
				const zoom = Math.max(1, Math.floor(72 / (items[0]?.pixels.width || 72)))
				const sub = `top ${items.length} of ${body.images?.count} reference images${from}`
				return V.pictureSection(label, sub, body.warning || "", items, zoom, dpr())
			},
			`Log reference images to see them: ${HOWTO}`
		)
	const kinds = runTags.filter(t => t.kind !== "attribution" || t.tag === tag)
	const jobs = [...kinds.map(pictures), inspectorStats(run, runTags, filter, view, ticket)]
	if (C.state.kind !== "attribution") jobs.push(examples("Dataset examples"))
	const al = alignments()
	if (al) jobs.push(al.then(m => matches(m, run, tag, filter, view, ticket)))
	await Promise.all(jobs)
}

/** The filter's match in the other runs (aligned to the first run), over steps. */
function matches(aligned, run, tag, filter, view, ticket) {
	const first = C.state.runs[0]
	for (const [b, {body, error}] of aligned) {
		if (run !== first && run !== b) continue
		const [other, f, a] = run === first ? [b, body?.matches[filter], filter] : [first, body?.matches.indexOf(filter)]
		const strip = V.el("div", "cv-evo")
		const sub = f >= 0 ? ` · filter ${f} · correlation ${body.correlations[a ?? f]?.toFixed(2)}` : ""
		const why = f >= 0 ? "" : `Not aligned: ${error ? errorText(error) : "no match"}`
		view.sections.append(V.pictureSection("Match", `in ${other}${sub}`, why))
		view.sections.lastChild.append(strip)
		if (f >= 0) loadEvolution(other, tag, f, strip, ticket)
	}
}

function filterPictures(label, data, filter, from) {
	const index = data.index
	if (!index) return V.pictureSection(label, `step ${data.step}`, data.warning || "")
	const pos = index.filters.indexOf(filter),
		count = index.slices.count,
		[h, w] = index.tile
	const [one, many] = axisWords(index.slices.axis)
	const sub = `${h}×${w} · ${index.slices.axis === "rgb" ? "RGB" : `${count} ${count === 1 ? one : many}`}${from}`
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

// Up to 32 steps, two at a time, queued behind the grid's requests.
async function loadEvolution(run, tag, filter, box, ticket) {
	const steps = G.sampleSteps(C.stepsOf(run, tag), 32)
	const frames = steps.map(s => V.evolutionFrame(s, s === C.state.step)) // cached steps paint at once
	box.replaceChildren(...frames)
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
