// The CNN Viz tab: TensorBoard's iframe calls `render()` once. Served at the plugin's root, it imports
// its siblings through /static. It wires events and keys to the controller, the controller to its views.

import * as C from "./static/controller.js"
import {connectGuest} from "./static/guest.js"
import {
	closeInspector,
	inspectNeighbour,
	mountInspector,
	refreshNeighbours,
	renderInspector,
} from "./static/inspector.js"
import * as P from "./static/panels.js"
import * as V from "./static/views.js"

const KEYS = {
	",": "prev",
	".": "next",
	ArrowLeft: "prev",
	ArrowRight: "next",
	Home: "first",
	End: "last",
	p: "play",
	P: "play",
	v: "toggle-view",
	V: "toggle-view",
	" ": "play",
	"+": "zoom-in",
	"=": "zoom-in",
	"-": "zoom-out",
	0: "zoom-fit",
	"[": "prev-filter",
	"]": "next-filter",
}
let ui
let guest

export async function render() {
	const catalogLoad = C.loadCatalog() // in parallel with the stylesheet
	catalogLoad.catch(() => {})
	// Lay out once the stylesheet applies, but a failed or slow load must not block the tab.
	await new Promise(resolve => {
		const link = {rel: "stylesheet", href: "./static/style.css", onload: resolve, onerror: resolve}
		document.head.append(Object.assign(document.createElement("link"), link))
		setTimeout(resolve, 1500)
	})
	ui = V.buildShell()
	document.body.replaceChildren(ui.app)
	P.mountPanels(ui)
	mountInspector(ui)
	C.hooks.render = () => {
		P.renderChrome()
		const painted = P.renderGrid()
		renderInspector()
		Promise.resolve(painted).then(refreshNeighbours, () => {})
		return painted
	}
	C.hooks.steps = P.renderSteps
	watchTheme()
	wireEvents()
	guest = connectGuest(window)
	guest.on("experimental.DataReloaded", C.refresh)
	await start(catalogLoad)
	C.followParentHash()
}

async function start(catalogLoad) {
	V.swapContent(ui.panels, V.loadingCard("Loading runs…"))
	const initial = await C.initialState(guest)
	try {
		await (catalogLoad || C.loadCatalog())
		await C.loadPlans(initial)
	} catch (err) {
		const card = V.messageCard("Could not reach the CNN Viz plugin", P.errorText(err), {tone: "error", action: "retry"})
		return V.swapContent(ui.panels, card)
	}
	await C.commit(initial)
}

// TensorBoard's body.dark-mode, else the OS setting.
function watchTheme() {
	const apply = dark => document.documentElement.classList.toggle("cv-dark", dark)
	try {
		const body = window.parent !== window && window.parent.document.body
		if (body) {
			const read = () => apply(body.classList.contains("dark-mode"))
			new MutationObserver(read).observe(body, {attributes: true, attributeFilter: ["class"]})
			return read()
		}
	} catch {
		/* cross-origin parent */
	}
	const mq = window.matchMedia("(prefers-color-scheme: dark)")
	apply(mq.matches)
	mq.addEventListener("change", e => apply(e.matches))
}

// One listener per type on the root, dispatching on data-action.
function wireEvents() {
	ui.app.addEventListener("click", e => {
		const t = e.target.closest("[data-action]")
		if (t && !t.matches("input, select")) act(t.dataset.action, t)
	})
	ui.app.addEventListener("change", e => {
		const t = e.target,
			v = t.value,
			{action, run} = t.dataset
		if (action === "toggle-run") {
			const runs = t.checked ? [...C.state.runs, run] : C.state.runs.filter(r => r !== run)
			C.update({runs: C.catalog.runs.filter(r => runs.includes(r))})
		} else if (action === "set-slice") C.update({slice: v === "all" || v.startsWith("o") ? v : Number(v)})
		else if (action === "set-sort") C.update({sort: v, desc: v !== "id"})
		else if (action === "set-show") C.update({show: v})
		else if (action === "probe-file") probeImage(t.files[0])
		else if (action === "probe-vs") C.update({vs: v === "" ? null : Number(v)})
		else if (action === "probe-target") {
			C.probeImg.target = Number(v)
			C.commit(C.state)
		}
	})
	ui.app.addEventListener("input", e => {
		const t = e.target
		if (t.dataset.action === "find-layer") P.renderChrome()
		else if (t.dataset.action === "step-slider") {
			const step = C.currentSteps()[Number(t.value)]
			if (step !== undefined && step !== C.state.step) {
				C.stopPlay()
				C.update({step})
			}
		} else if (t.dataset.action === "set-alpha") C.update({alpha: Number(t.value)})
	})
	ui.app.addEventListener("dragover", e => e.preventDefault())
	ui.app.addEventListener("drop", e => {
		e.preventDefault()
		probeImage(e.dataTransfer.files[0])
	})
	ui.app.addEventListener("keydown", P.onGridKey, true)
	// Enter in the layer search opens the first layer it finds; Escape clears it.
	ui.layerFind.addEventListener("keydown", e => {
		if (e.key === "Enter") {
			const layer = P.firstMatch()
			if (layer) C.update({layer: layer.name, filter: null})
		} else if (e.key === "Escape" && ui.layerFind.value) {
			e.stopPropagation()
			ui.layerFind.value = ""
			P.renderChrome()
		}
	})
	// A group the user opens or folds stays so across renders. "toggle" does not bubble, and it
	// also fires for groups a render opened, so the choice is taken from the click instead.
	ui.layers.addEventListener("click", e => {
		const head = e.target.closest(".cv-group-head")
		if (head) P.groupChoice.set(head.parentElement.dataset.group, !head.parentElement.open)
	})
	document.addEventListener("keydown", onKey)
	ui.app.addEventListener("focusin", e => {
		const tile = e.target.closest?.(".cv-tile")
		if (tile) P.focusTile(Number(tile.dataset.filter))
	})
}

function probeImage(file) {
	if (!file) return
	C.setProbeImage(file)
	C.update({view: "probe"})
}

function act(action, t = null) {
	const d = t?.dataset || {}
	const actions = {
		"only-run": () => C.update({runs: [d.run]}),
		"probe-logged": () => {
			const run = C.state.runs[0]
			const img = C.logged[run]?.[Number(d.i)]
			if (img) C.setProbeImage(null, {...img, run})
			C.update({view: "probe"})
		},
		"probe-example": () => {
			const source = {run: d.run, tag: "reference_images/references", image: Number(d.image), step: Number(d.step)}
			C.setProbeImage(null, {...source, label: `dataset example #${d.image}`})
			C.update({view: "probe"})
		},
		"select-layer": () => C.update({layer: d.layer, filter: null}),
		"select-kind": () => {
			const info = C.catalog.byTag.get(d.tag)
			if (info) C.update({kind: info.kind, slice: info.kind === C.state.kind ? C.state.slice : null})
		},
		"set-norm": () => C.update({norm: d.value}),
		"set-cmap": () => C.update({cmap: d.value}),
		"zoom-in": () => P.zoomBy(1),
		"zoom-out": () => P.zoomBy(-1),
		"zoom-fit": () => C.update({zoom: null}),
		"toggle-desc": () => C.update({desc: !C.state.desc}),
		"toggle-align": () => C.update({align: !C.state.align}),
		"set-view": () => C.update({view: d.value}),
		"toggle-view": () => C.update({view: C.state.view === "filters" ? "similarity" : "filters"}),
		"set-sim": () => C.update({sim: d.value}),
		"set-hscale": () => C.update({hscale: d.value}),
		play: C.togglePlay,
		prev: () => C.stepBy(-1),
		next: () => C.stepBy(1),
		first: () => C.stepBy(-1e9),
		last: () => C.stepBy(1e9),
		"open-filter": () => {
			const run = t.closest(".cv-panel")?.dataset.run
			P.focusTile(Number(d.filter))
			C.update({filter: Number(d.filter), frun: run === C.state.runs[0] ? null : run})
		},
		"close-inspector": closeInspector,
		"prev-filter": () => inspectNeighbour(-1),
		"next-filter": () => inspectNeighbour(1),
		"goto-step": () => {
			C.stopPlay()
			C.update({step: Number(d.step)})
		},
		"show-all": () => C.update({show: "all"}),
		retry: () => start(),
		"retry-grid": () => {
			C.model.invalidate()
			C.commit(C.state)
		},
	}
	actions[action]?.()
}

function onKey(e) {
	if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return
	const t = e.target instanceof HTMLElement ? e.target : document.body
	if (e.key === "Escape" && C.state.filter !== null) return closeInspector()
	if (t.matches("input:not([type=checkbox]):not([type=range]), select, textarea") || t.isContentEditable) return
	const onRange = t.matches("input[type=range]") // the slider moves itself with arrows, Home, End
	if (!KEYS[e.key] || (onRange && /^(Arrow|Home|End)/.test(e.key)) || (e.key === " " && t.matches("button, input")))
		return
	e.preventDefault()
	act(KEYS[e.key])
}
