// The sidebar, the toolbar and a panel per run; how a filter is drawn (the inspector's too).

import {COLORMAP_LABELS, COLORMAPS} from "./colormaps.js"
import * as K from "./compare.js"
import * as C from "./controller.js"
import * as G from "./grid.js"
import {STALE, url} from "./model.js"
import {HOWTO, renderSimilarity, SIM_LABELS} from "./similarity.js"
import * as S from "./state.js"
import * as V from "./views.js"

const {model} = C
const AXIS = {
	input_channel: ["input channel", "input channels", "channel"],
	input_channel_grid: ["input weights", "input weights", "weights"],
	probe: ["probe image", "probe images", "probe"],
	image: ["image", "images", "image"],
	rgb: ["RGB", "RGB", "RGB"],
}
/** [one, many, short] */
export const axisWords = axis => AXIS[axis] || ["slice", "slices", "slice"]
export const sliceName = (index, s) => index.slices.labels?.[s] ?? `${axisWords(index.slices.axis)[2]} ${s}`
export const noun = kind => (kind === "attribution" ? "Probe image" : "Filter")
export const overlayChoices = index =>
	G.overlayPairs(index.slices).map(([, h]) => ({value: `o${h}`, label: `${sliceName(index, h)} over image`}))
export const dpr = () => window.devicePixelRatio || 1
export const errorText = err => String(err?.message || err)
const options = (values, labels) => values.map(value => ({value, label: labels[value]}))

let ui
let autoZoom = 4
let focusFilter = null
let firstGridMarked = false
let scratch = new Uint8ClampedArray(0) // one buffer for every tile: putImageData copies it
const panels = new Map() // by run
export const shown = new Map() // run -> {order: filter ids as shown, dead}
const boundsMemo = new WeakMap()

export const mountPanels = shell => {
	ui = shell
}

/** The tile keyboard focus returns to. */
export const focusTile = filter => {
	focusFilter = filter
}

export const tileOf = (run, filter) => panels.get(run)?.querySelector(".cv-grid")?._tiles?.get(filter)

export function renderChrome() {
	const {state, tags, catalog} = C
	const tag = C.currentTag()
	const held = new Set(state.runs.flatMap(r => Object.keys(tags[r] || {})))
	const left = new Map(state.runs.flatMap(r => Object.entries(C.leftOut()[r] || {})).filter(([t]) => !held.has(t)))
	const has = t => held.has(t.tag) || left.has(t.tag)
	const kind = t => (left.has(t.tag) ? "no " : "") + S.kindLabel(t.kind).toLowerCase()
	ui.runsCount.textContent = catalog.runs.length ? `${state.runs.length} of ${catalog.runs.length}` : ""
	const runs = catalog.runs.map((name, i) => {
		return {name, color: V.runColor(i), checked: state.runs.includes(name), hasTag: Boolean(tags[name]?.[tag])}
	})
	V.swapContent(ui.runs, ...V.runsList(runs))
	renderLayers(has, kind)
	renderDisplay()
	const tabs = (C.currentLayer()?.tags || []).map(t => {
		return {tag: t.tag, label: S.kindLabel(t.kind), held: has(t), left: left.get(t.tag)}
	})
	const views = options(["filters", "similarity", "probe"], {
		filters: "Filters",
		similarity: "Similarity",
		probe: "Probe",
	})
	V.swapContent(ui.views, V.segmented("set-view", views, state.view, "View (V)"))
	if (state.view === "filters") V.swapContent(ui.kinds, ...V.kindTabs(tabs, tag))
	else if (state.view === "probe") V.swapContent(ui.kinds)
	else {
		const modes = V.segmented("set-sim", options(Object.keys(SIM_LABELS), SIM_LABELS), state.sim, "Compare")
		const scales = options(["data", "unit"], {data: "Data range", unit: "0–1"})
		V.swapContent(ui.kinds, modes, V.segmented("set-hscale", scales, state.hscale, "Colour scale"))
	}
	// The Display controls act on filter grids only: the Similarity view hides them.
	ui.display.closest("section").hidden = state.view === "similarity"
	renderSteps()
}

/**
 * Groups the user opened or folded by hand (group -> open) stay so across renders; the others
 * open while they hold the active layer.
 */
export const groupChoice = new Map()

/** The first layer the search matches, for Enter in the search box. */
export const firstMatch = () => C.catalog.layers.find(l => S.matchesQuery(l.name, ui.layerFind.value))

function renderLayers(has, kind) {
	const {state, tags, catalog} = C
	const query = ui.layerFind.value
	const now = t => state.runs.some(r => tags[r]?.[t.tag]?.steps?.includes(state.step))
	const layers = catalog.layers
		.filter(l => S.matchesQuery(l.name, query))
		.map(l => {
			const kinds = new Map()
			for (const t of l.tags) kinds.set(kind(t), kinds.get(kind(t)) || false || now(t))
			return {
				name: l.name,
				active: l.name === state.layer,
				held: l.tags.some(has),
				kinds: [...kinds].map(([label, drawn]) => ({label, now: drawn})),
			}
		})
	const entries = S.groupLayers(layers).map(e =>
		e.group ? {...e, open: Boolean(query) || (groupChoice.get(e.group) ?? e.layers.some(l => l.active))} : e
	)
	if (!entries.length && query) V.swapContent(ui.layers, V.el("p", "cv-hint", `No layer matches “${query}”.`))
	else V.swapContent(ui.layers, ...V.layersList(entries))
}

function renderDisplay(rgb = false, range = null, shared = false) {
	const {cmap, zoom} = C.state
	// Slices stored over their filter's range (weights) look the same per slice as per filter.
	const modes = shared ? G.NORM_MODES.filter(m => m !== "tile") : G.NORM_MODES
	const norm = modes.includes(C.state.norm) ? C.state.norm : "filter"
	const norms = options(modes, G.NORM_LABELS)
	const cmaps = options(COLORMAPS, COLORMAP_LABELS)
	const a = {norms, norm, cmaps, cmap: C.effectiveCmap(), cmapAuto: !cmap, zoom: zoom || autoZoom, zoomAuto: !zoom}
	V.swapContent(ui.display, ...V.displayControls({...a, rgb, range}))
}

export function renderSteps() {
	const steps = C.currentSteps()
	V.updateStepControls(ui.steps, {steps, index: Math.max(0, steps.indexOf(C.state.step)), playing: C.playing})
	V.updateStepNote(ui.stepNote, C.stepNote())
}

function renderTools(index, stats, hasDead) {
	const {state} = C
	const slices = []
	if (index && index.slices.count > 1) {
		slices.push(...overlayChoices(index), {value: "all", label: `All ${axisWords(index.slices.axis)[1]}`})
		for (let s = 0; s < index.slices.count; s++) slices.push({value: String(s), label: sliceName(index, s)})
	}
	const keys = G.sortableStats(stats)
	if (state.sort !== "id" && !keys.includes(state.sort)) keys.push(state.sort)
	const slice = String(C.sliceOf(index))
	const sorts = [
		{value: "id", label: `${noun(state.kind)} index`},
		...keys.map(k => ({value: k, label: G.statLabel(k)})),
	]
	const {sort, desc, show} = state
	const alpha = slice.startsWith("o") ? state.alpha : null
	const shows = options(G.SHOW_MODES, G.SHOW_LABELS)
	const [run, other] = state.runs
	const align = other && state.kind !== "attribution" && {run, on: state.align}
	const file = V.el("input", {data: {action: "probe-file"}, attrs: {type: "file", accept: "image/*"}})
	const pv = state.view === "probe"
	const pick = pv && V.el("label", "cv-btn", "Choose an image…", file)
	V.swapContent(
		ui.tools,
		pick,
		...(pv ? probeTools() : []),
		...V.gridTools({slices, slice, sorts, sort, desc, shows, show, hasDead, alpha, align})
	)
}

export function zoomBy(delta) {
	const z = C.state.zoom || autoZoom
	const next = delta > 0 ? (z < 4 ? z + 1 : Math.round(z * 1.5)) : z <= 4 ? z - 1 : Math.round(z / 1.5)
	C.update({zoom: G.clamp(next, 1, G.MAX_ZOOM)})
}

const EMPTY =
	'from tb_cnnviz.callbacks import CNNViz\n\nmodel.fit(x, y, epochs=10, callbacks=[\n    CNNViz(log_dir="logs", probe_images=x[:8])])'

/** Resolves when painted. */
export async function renderGrid() {
	const {state, catalog} = C
	const ticket = model.ticket("grid")
	model.cancelPrefetch()
	ui.app.classList.toggle("is-empty", !catalog.runs.length)
	if (!catalog.runs.length) {
		panels.clear()
		const why = "Every logged step of your conv layers shows here; new steps appear on TensorBoard's reload."
		V.swapContent(ui.panels, V.messageCard("No CNN Viz data yet", why, {code: EMPTY}))
		return renderTools(null, new Map(), false)
	}
	if (state.view === "similarity") {
		V.swapContent(ui.tools)
		return renderSimilarity(ui.panels)
	}
	const pv = state.view === "probe"
	if (pv) {
		const [steps] = await Promise.all([C.loadSnaps(state.runs).then(C.currentSteps), C.loadLogged(state.runs[0])])
		if (!ticket.live) return
		const step = state.step === null ? steps.at(-1) : G.closestStep(steps, state.step)
		if (steps.length && step !== state.step) return C.update({step})
	}
	// One column per run at `step`; in the Probe view, the first run again at step `vs` beside it.
	const cols = state.runs.map(run => ({run, key: run, at: state.step}))
	const [first] = state.runs
	if (pv && state.vs !== null && state.vs !== state.step && C.snapSteps(first).includes(state.vs))
		cols.splice(1, 0, {run: first, key: `${first}\u0000${state.vs}`, at: state.vs})
	for (const key of panels.keys()) {
		if (cols.some(c => c.key === key)) continue
		panels.delete(key)
		shown.delete(key)
	}
	const nodes = cols.map(c => panels.get(c.key) || panels.set(c.key, V.buildPanel(c.run)).get(c.key))
	const moved = nodes.some((n, i) => ui.panels.children[i] !== n)
	if (moved || ui.panels.children.length !== nodes.length) ui.panels.replaceChildren(...nodes)
	ui.panels.classList.toggle("is-compare", nodes.length > 1)
	const tag = C.currentTag()
	const jobs = cols.map(({run, key, at}) => {
		const steps = pv ? C.snapSteps(run) : C.stepsOf(run, tag)
		const step = steps.includes(at) && (!pv || C.hasProbe()) ? at : null // never another step's pictures
		const data = step === null ? null : pv ? C.probeLayer(run, step, state.layer) : model.layer(run, tag, step)
		return {run, key, step, near: G.closestStep(steps, at), plan: model.plan(run).catch(() => null), data}
	})
	let busy = 0
	if (jobs.some(j => j.data && !model.hasLayer(j.run, tag, j.step))) {
		busy = setTimeout(() => ticket.live && ui.main.classList.add("is-busy"), 120)
		for (const j of jobs) {
			if (j.data && !shown.has(j.key))
				V.panelMessage(panels.get(j.key), V.loadingCard(`Loading ${tag} at step ${j.step}…`))
		}
	}
	const plans = jobs.map(async j => {
		j.plan = await j.plan
	})
	const settled = await ticket.guard(Promise.all([Promise.allSettled(jobs.map(j => j.data)), ...plans]))
	clearTimeout(busy)
	if (settled === STALE) return
	ui.main.classList.remove("is-busy")
	const al = await ticket.guard(Promise.resolve(alignments()))
	if (al === STALE) return
	aligned = al
	// Other kinds' statistics (dead flags, sort keys): a slow load is awaited only if the order needs it.
	const siblings = Promise.all(jobs.map(j => (j.step === null ? [] : siblingStats(j.run, tag, j.step))))
	const {sort, kind, show} = C.state
	const needed = (sort !== "id" && !sort.startsWith(`${kind}.`)) || (show !== "all" && kind !== "feature_maps")
	const soon = new Promise(r => setTimeout(r, 30, null))
	const extra = await ticket.guard(needed ? siblings : Promise.race([siblings, soon]))
	if (extra === STALE) return
	paintAll(jobs, settled[0], extra)
	if (!extra) siblings.then(more => ticket.live && more.some(m => m.length) && paintAll(jobs, settled[0], more))
	for (const j of jobs) {
		const steps = C.stepsOf(j.run, tag)
		const i = steps.indexOf(j.step)
		const near = [steps[i + 1], steps[i - 1], steps[i + 2], steps[i - 2]].filter(s => s !== undefined)
		if (i >= 0 && !pv) model.prefetch(j.run, tag, near)
	}
	if (!firstGridMarked && ui.panels.querySelector(".cv-tile")) {
		firstGridMarked = true
		requestAnimationFrame(() => performance.mark("cnnviz:first-grid")) // for benchmarks/dashboard.py
	}
	document.dispatchEvent(new CustomEvent("cnnviz:painted")) // for tests and benchmarks
}

function panelProblem(job, result, runLeft, tag, head) {
	const {state} = C
	const what = `${state.layer} · ${S.kindLabel(state.kind)}`
	const {step, near} = job
	if (state.view === "probe" && step === null)
		return near === null
			? V.messageCard("No snapshots of the model in this run", C.snaps[job.run]?.why, {tone: "warn"})
			: V.messageCard("Choose an image, or drop one here")
	if (tag in runLeft) return V.messageCard(`${what} was not drawn in this run`, runLeft[tag], {tone: "warn"})
	if (near === null)
		return V.messageCard(
			`No ${S.kindLabel(state.kind) || "pictures"} of ${state.layer} in this run`,
			state.kind === "responses" ? `Log reference images: ${HOWTO}` : ""
		)
	if (step === null) {
		head.step = state.step
		// What drawing it last cost tells what a larger budget would spend on it.
		const last = S.cost(job.plan, tag)
		const thinned = S.thinnedReason(job.plan, state.step)
		const go = {action: "goto-step", label: `Go to step ${near}, the nearest drawn`, data: {step: near}}
		// Not missing data: a long run draws fewer steps as it grows.
		if (thinned) return V.messageCard(`Step ${state.step} was thinned in this run`, `${thinned}.`, go)
		let why = S.skipReason(job.plan, tag, state.step) || "No picture was logged at this step."
		if (last) why += `${/[.!?]$/.test(why) ? "" : "."} Last drawn at step ${last.step}, for ${S.costText(last)}.`
		return V.messageCard(`${what} was not drawn at step ${state.step} in this run`, why, {tone: "warn", ...go})
	}
	const {status, reason, value} = result
	const retry = {tone: "error", action: "retry-grid"}
	if (status === "rejected") return V.messageCard(`Could not load step ${step}`, errorText(reason), retry)
	if (!value.index) return V.messageCard(`Step ${step} cannot be drawn`, value.warning || "", {tone: "warn"})
	return null
}

function paintAll(jobs, settled, extra) {
	const {state, tags, catalog} = C
	const tag = C.currentTag()
	const sortStats = new Map()
	let first = null
	let anyDead = false
	for (const [k, job] of jobs.entries()) {
		const panel = panels.get(job.key)
		const runLeft = S.leftOut(job.plan, tags[job.run])
		const left = S.groupLeftOut(runLeft, catalog.byTag)
		const color = V.runColor(C.runIndex(job.run))
		const head = {run: job.run, color, step: job.step, facts: [], layerStats: [], left}
		const data = settled[k].value
		const message = panelProblem(job, settled[k], runLeft, tag, head)
		if (message) {
			shown.delete(job.key)
			V.updatePanelHead(panel, {...head, wallTime: data?.wall_time || 0, notes: []})
			V.panelMessage(panel, message)
			continue
		}
		const {index} = data
		const own = {kind: index.kind || state.kind, filters: index.filters, stats: index.stats}
		const stats = G.collectStats([own, ...(extra?.[k] || [])])
		for (const [key, v] of stats) if (!sortStats.has(key)) sortStats.set(key, v)
		const info = paintPanel(panel, job, data, stats)
		anyDead ||= info.hasDead
		const a = aligned?.get(job.run)
		const note =
			a &&
			(a.body
				? `Aligned to ${state.runs[0]}: each filter's match there and their correlation`
				: `Not aligned: ${errorText(a.error)}`)
		const notes = [...(index.notes || []), note].filter(Boolean)
		V.updatePanelHead(panel, {...head, wallTime: data.wall_time, ...info, notes: notes.map(String)})
		if (data.answer) panel.children[1].prepend(probeCard(data.answer))
		first ||= data
	}
	renderTools(first?.index, sortStats, anyDead)
	if (first) {
		const b = state.norm === "layer" ? boundsFor(first, "layer") : null
		renderDisplay(first.index.tile[2] === 3, b?.lo.length ? [b.lo[0], b.hi[0]] : null, G.rangesShared(first.index))
	}
}

function paintPanel(panel, job, data, stats) {
	const {state} = C
	const {index} = data
	const [h, w] = index.tile
	const slice = C.sliceOf(index)
	const {width, height} = G.mosaicLayout(h, w, G.shownSlices(index, slice).length)
	autoZoom = G.autoZoom(width, height)
	const dead = G.deadFilters(stats)
	const values = state.sort === "id" ? null : stats.get(state.sort) || null
	let order = G.filterOrder(G.sortOrder(index.filters, values, state.desc), index.filters, state.show, dead)
	let captions = values
		? new Map(index.filters.map(id => [id, G.formatStat(values.get(id))]))
		: index.best
			? new Map(index.filters.map((id, i) => [id, index.best[i] === null ? "" : `#${index.best[i]}`]))
			: predictionCaptions(index, job.run)
	const match = aligned?.get(job.run)?.body
	if (match) {
		order = G.filterOrder(
			K.alignedOrder(match.matches, index.filters, shown.get(state.runs[0])?.order),
			index.filters,
			state.show,
			dead
		)
		captions = K.matchCaptions(match)
	}
	const valueLabel = values ? `${G.statLabel(state.sort)} ` : ""
	const selected = job.run === C.inspectedRun() ? state.filter : null
	const tiles = {filters: index.filters, order, dead, captions, valueLabel, noun: noun(index.kind), focus: focusFilter}
	const size = {width, height, zoom: state.zoom || autoZoom, dpr: dpr(), selected}
	const canvases = V.syncGrid(panel.querySelector(".cv-grid"), {...tiles, ...size})
	if (scratch.length !== width * height * 4) scratch = new Uint8ClampedArray(width * height * 4)
	const look = `${state.norm}|${C.effectiveCmap(index.kind)}|${slice}|${state.alpha}`
	for (const [pos, canvas] of canvases) {
		if (canvas._data === data && canvas._look === look) continue // a re-sort moves tiles, not pixels
		Object.assign(canvas, {_data: data, _look: look})
		V.putPixels(canvas, draw(data, pos, slice, scratch))
	}
	shown.set(job.key, {order: order.map(i => index.filters[i]), dead})
	if (data.answer) {
		pairActmax(panel, job, w)
		pairExamples(panel, job)
	}
	const none = `No ${noun(index.kind).toLowerCase()} is ${state.show} at step ${job.step}`
	V.panelMessage(panel, order.length ? null : V.messageCard(none, "", {action: "show-all", label: "Show all"}))
	const n = index.filters.length
	const total = index.total_filters || n
	const count = index.slices.count
	const deadCount = dead ? [...dead.values()].filter(Boolean).length : 0
	const slices = count > 1 && !index.slices.labels ? ` × ${count} ${axisWords(index.slices.axis)[1]}` : ""
	const facts = [`${n < total ? `${n} of ${total}` : n} ${noun(index.kind).toLowerCase()}s`, `${h}×${w}${slices}`]
	if (dead) facts.push(`${deadCount} dead`)
	if (order.length !== n) facts.push(`showing ${order.length}`)
	const layerStats = Object.entries(index.layer_stats || {})
		.filter(([, v]) => typeof v === "number")
		.map(([k, v]) => [k.replace(/_/g, " "), G.formatStat(v)])
	return {facts, layerStats, hasDead: Boolean(dead), deadFact: deadCount ? `${deadCount} dead` : ""}
}

let aligned = null

/** run -> its /alignment to the first run ({body} or {error}), when aligning; else null. */
export function alignments() {
	const {state} = C,
		[a, ...others] = state.runs
	if (!state.align || !others.length || state.kind === "attribution") return null
	const tag = `${state.layer}/responses`
	const at = run => G.closestStep(C.stepsOf(run, tag), state.step)
	const hash = run => C.tags[run]?.[tag]?.references
	// Refusals the tags already tell are not asked for (the server would answer 409 or 404,
	// which the browser's console lists as errors).
	const one = b =>
		(at(a) === null || at(b) === null
			? Promise.reject(`no reference images in ${at(a) === null ? a : b}: ${HOWTO}`)
			: hash(a) && hash(b) && hash(a) !== hash(b)
				? Promise.reject(
						`${a} and ${b} logged responses to different reference images; alignment compares responses to the same images: log both runs with the same reference_images`
					)
				: model.get(url("alignment", {layer: state.layer, a, b, a_step: at(a), b_step: at(b)}))
		).then(
			body => [b, {body}],
			error => [b, {error}]
		)
	return Promise.all(others.map(one)).then(x => new Map(x))
}

/** "3 · 92% ✓" (class names from /tags); a regression "2.1 / 2" (true). */
function predictionCaptions(index, run) {
	const {predicted: p = [], confidence: c = [], correct: ok = [], value: v, true_value: t} = index.stats || {}
	const names = C.tags[run]?.[C.currentTag()]?.class_names || []
	if (index.kind !== "attribution" || !p.length) return null
	const mark = i => (ok[i] === true ? " ✓" : ok[i] === false ? " ✗" : "")
	const f = G.formatStat
	const guess = i => (v ? f(v[i]) + (t?.[i] == null ? "" : ` / ${f(t[i])}`) : (names[p[i]] ?? p[i]))
	const caption = i => `${guess(i)}${c[i] >= 0 && !v ? ` · ${Math.round(c[i] * 100)}%` : ""}${mark(i)}`
	return new Map(index.filters.map((id, i) => [id, caption(i)]))
}

/** One filter as `slice` shows it: a mosaic of slices, or a heatmap over its image. */
// Deep Visualization Toolbox: under each probe map, the image its filter wants to see (actmax at
// the nearest logged step), matched by filter id.
function pairActmax(panel, job, w) {
	const tag = `${C.state.layer}/actmax`
	const at = G.closestStep(C.stepsOf(job.run, tag), job.step)
	if (at === null) return
	model
		.layer(job.run, tag, at)
		.then(am => {
			for (const [filter, tile] of panel.querySelector(".cv-grid")?._tiles || []) {
				const pos = am.index.filters.indexOf(filter)
				let c = tile.querySelector(".cv-actmax")
				if (pos < 0) c?.remove()
				if (pos < 0) continue
				const title = `Activation maximization of filter ${filter}, step ${at}`
				c ??= tile.appendChild(V.el("canvas", {class: "cv-actmax", data: {filter}, attrs: {title}}))
				const px = draw(am, pos, G.defaultSlice(am.index.slices))
				V.paintCanvas(c, px, Math.max(1, Math.round(((C.state.zoom || autoZoom) * w) / px.width)), dpr())
			}
		})
		.catch(() => {})
}

// ...and its top dataset examples where the run logged references (nearest step), cropped as
// the inspector crops them; a click probes the whole reference image.
function pairExamples(panel, job) {
	const {layer} = C.state
	const at = G.closestStep(C.stepsOf(job.run, `${layer}/responses`), job.step)
	if (at === null) return
	model
		.examples(job.run, layer, at)
		.then(({body, pics}) => {
			if (!body.images) return
			for (const [filter, tile] of panel.querySelector(".cv-grid")?._tiles || []) {
				const crops = K.exampleCrops(body, pics, filter).slice(0, 3)
				const thumbs = crops.map((crop, k) => {
					const image = body.examples[filter][k][0]
					const c = V.el("canvas")
					V.paintCanvas(c, crop.pixels, Math.max(1, Math.round(20 / crop.pixels.width)), dpr())
					const {data, title} = K.exampleProbe(job.run, body, filter, image, at)
					// A span, not a button: the tile is a button, and a button inside one is invalid
					// HTML that keyboards and screen readers cannot reach. These are the mouse's
					// shortcut; the inspector's dataset examples are buttons that probe the same.
					return V.el("span", {class: "cv-thumb", data, attrs: {title}}, c)
				})
				tile.querySelector(".cv-ex")?.remove()
				if (thumbs.length) tile.append(V.el("span", {class: "cv-ex", data: {filter}}, ...thumbs))
			}
		})
		.catch(() => {})
}

export function draw(data, pos, slice, out) {
	const {index, atlases, locations} = data
	const common = {index, atlases, locations, position: pos, colormap: C.effectiveCmap(index.kind)}
	const pair = G.overlayPairs(index.slices).find(p => `o${p[1]}` === String(slice))
	if (pair) return G.renderOverlay({...common, image: pair[0], heat: pair[1], alpha: C.state.alpha / 100})
	const bounds = boundsFor(data, C.state.norm)
	return G.renderFilter({...common, bounds, slices: G.shownSlices(index, slice), mono: G.monoSlices(index), out})
}

function boundsFor(data, norm) {
	const memo = boundsMemo.get(data) || boundsMemo.set(data, new Map()).get(data)
	if (!memo.has(norm)) memo.set(norm, G.normBounds(data.index, norm))
	return memo.get(norm)
}

async function siblingStats(run, tag, step) {
	const others = (C.currentLayer()?.tags || []).filter(
		t => t.tag !== tag && !/attribution|responses/.test(t.kind) && C.tags[run]?.[t.tag]
	)
	const all = await Promise.all(others.map(t => model.stats(run, t.tag).catch(() => null)))
	return others.flatMap((t, k) => {
		const e = (all[k]?.series || []).filter(x => x.step <= step).pop()
		return e ? [{kind: t.kind, filters: e.filters, stats: e.stats}] : []
	})
}

/** Arrow keys move between tiles (the WAI-ARIA grid pattern). */
export function onGridKey(e) {
	const tile = e.target.closest?.(".cv-tile")
	if (!tile || e.altKey || e.ctrlKey || e.metaKey) return
	const tiles = [...tile.parentElement.children]
	const i = tiles.indexOf(tile)
	const cols = tiles.findIndex(t => t.offsetTop !== tiles[0].offsetTop)
	const row = cols < 0 ? tiles.length : cols
	const moves = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: -row, ArrowDown: row, Home: -i, End: tiles.length - 1 - i}
	const move = moves[e.key]
	if (move === undefined) return
	e.preventDefault()
	e.stopPropagation()
	const target = tiles[G.clamp(i + move, 0, tiles.length - 1)]
	tile.tabIndex = -1
	target.tabIndex = 0
	target.focus()
}

// The Probe view's own tools: a second step to compare with, and the run's logged images to pick.
function probeTools() {
	const {state} = C
	const [run] = state.runs
	const steps = C.snapSteps(run).filter(s => s !== state.step)
	const opt = (value, text) => V.el("option", {text, attrs: {value, selected: String(state.vs ?? "") === value}})
	const vs =
		steps.length > 0 &&
		V.el(
			"label",
			"cv-field",
			"Compare with step ",
			V.el("select", {data: {action: "probe-vs"}}, opt("", "none"), ...steps.map(s => opt(String(s), `${s}`)))
		)
	const picked = C.probeImg.source
	const strip = (C.logged[run] || []).map((img, i) =>
		V.el(
			"button",
			{
				class: `cv-thumb${picked?.tag === img.tag && picked.image === img.image ? " is-on" : ""}`,
				data: {action: "probe-logged", i},
				attrs: {title: img.label, type: "button"},
			},
			V.el("img", {attrs: {src: img.src, alt: img.label}})
		)
	)
	return [
		vs,
		strip.length && V.el("div", {class: "cv-strip", attrs: {role: "group", "aria-label": "Logged images"}}, ...strip),
	]
}

// Predictions are the class picker
function probeCard(a) {
	const pct = p => `${p.name ?? p.class} ${(p.probability * 100).toFixed(1)}%`
	const opts = a.predictions.map(p =>
		V.el("option", {text: pct(p), attrs: {value: p.class, selected: p.class === a.target}})
	)
	return V.el(
		"p",
		"cv-probe",
		V.el("img", {attrs: {src: a.overlay, alt: "Grad-CAM"}}),
		V.el("b", "", a.predictions.slice(0, 3).map(pct).join(" · ")),
		V.el("label", "", " Grad-CAM of ", V.el("select", {data: {action: "probe-target"}}, ...opts)),
		V.el("br"),
		`${C.probeImg.name} ${a.fed}`
	)
}
