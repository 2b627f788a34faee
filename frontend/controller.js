// View state and the logdir's contents. Other modules read its live bindings; only it assigns them.
// No DOM: it calls the views index.js puts in `hooks`.

import {defaultColormap} from "./colormaps.js"
import * as G from "./grid.js"
import {decodeAtlas, Model, url} from "./model.js"
import * as S from "./state.js"

const PLAY_MS = 600

export const model = new Model()
export let state = S.defaultState()
export let catalog = S.buildCatalog({})
export let tags = {}
let plans = {} // run -> /plan (null: failed)
export let playing = false
export let reloads = 0 // that brought new data
export const hooks = {render: async () => {}, steps: () => {}}

let runList = []
let requested = state // before reconcile: a layer only a plan names returns once the plan loads
let hashTimer = 0
let playTimer = 0
let refreshing = false

export async function loadCatalog() {
	const [runs, t] = await Promise.all([model.runs(), model.tags()])
	tags = t && typeof t === "object" ? t : {}
	runList = Array.isArray(runs) ? runs : []
	catalog = S.buildCatalog(tags, runList, leftOut())
}

export const leftOut = () => Object.fromEntries(Object.entries(plans).map(([r, p]) => [r, S.leftOut(p, tags[r])]))

/** `fresh` forgets the plans of runs `next` does not show. */
export async function loadPlans(next, fresh = false) {
	const runs = S.reconcile(next, catalog, tags, leftOut()).runs
	const got = await Promise.all(runs.map(async r => [r, await model.plan(r).catch(() => null)]))
	plans = {...(fresh ? {} : plans), ...Object.fromEntries(got)}
	catalog = S.buildCatalog(tags, runList, leftOut())
}

/** The iframe's hash, else TensorBoard's URL (page reload, link). */
export async function initialState(guest) {
	if (S.hashHasState(location.hash)) return S.stateFromHash(location.hash)
	try {
		return S.paramsToState(window.parent === window ? [] : S.pluginDataFromParentHash(window.parent.location.hash))
	} catch {
		/* cross-origin parent: ask TensorBoard */
	}
	const data = await guest.request("experimental.GetURLPluginData", null, 800).catch(() => null)
	return S.paramsToState(Object.entries(data && typeof data === "object" ? data : {}).map(([k, v]) => [k, String(v)]))
}

/** Resolves when the grid is painted. */
export function commit(next) {
	requested = next
	state = S.reconcile(next, catalog, tags, leftOut())
	clearTimeout(hashTimer)
	hashTimer = setTimeout(writeHash, 120)
	const painted = hooks.render()
	if (state.runs.some(run => !(run in plans))) {
		// what a new run left out becomes selectable
		loadPlans(state).then(() => commit({...state, layer: requested.layer, kind: requested.kind}))
	}
	return painted
}

export const update = patch => commit({...state, ...patch})

// By an absolute URL: a bare "#…" would resolve against <base href>.
function replaceHash(win, hash) {
	const url = new URL(win.location.href)
	url.hash = hash
	win.history.replaceState(win.history.state, "", url.href)
}

function writeHash() {
	const hash = S.stateToHash(state)
	if (location.hash.replace(/^#/, "") !== hash) replaceHash(window, hash)
	try {
		const parent = window.parent
		const current = parent.location.hash.replace(/^#/, "")
		const merged = S.mergeParentHash(current, state)
		if (parent === window || merged === current) return
		replaceHash(parent, merged)
		// TensorBoard caches its hash until "hashchange"; else its next write drops our keys.
		parent.dispatchEvent(new HashChangeEvent("hashchange"))
	} catch {
		/* cross-origin parent: the iframe's hash still holds the state */
	}
}

/**
 * Follows TensorBoard's URL while the tab lives: a pasted link, Back or Forward change its
 * `p.cnnviz.*` keys without reloading the iframe. Our own writes (`writeHash`) carry the state
 * we show already, and a URL without our keys (another tab's) leaves it alone.
 */
export function followParentHash() {
	let parent
	try {
		parent = window.parent
		if (parent === window) return
		void parent.location.hash // throws for a cross-origin parent
	} catch {
		return
	}
	parent.addEventListener("hashchange", () => {
		let params
		try {
			params = S.pluginDataFromParentHash(parent.location.hash)
		} catch {
			return
		}
		const next = S.paramsToState(params)
		if (!params.length || S.stateToHash(next) === S.stateToHash(state)) return
		stopPlay()
		commit(next)
	})
}

export async function refresh() {
	if (refreshing) return
	refreshing = true
	try {
		const before = currentSteps()
		const atLatest = !before.length || state.step === before[before.length - 1]
		const known = () => JSON.stringify([tags, state.runs.map(run => plans[run])])
		const old = known()
		model.invalidate()
		await loadCatalog()
		await loadPlans(state, true)
		if (known() !== old) {
			reloads++
			await commit({...state, step: atLatest ? null : state.step}) // at the latest: follow it
		}
	} catch {
		/* keep what we show */
	}
	refreshing = false
}

/** The note under the step slider: thinned spans and resumed jobs of the shown runs (null: none). */
export const stepNote = () =>
	state.view === "probe"
		? null
		: S.stepNote(
				state.runs.filter(r => plans[r]).map(r => [r, plans[r]]),
				state.step
			)
export const stepsOf = (run, tag) => tags[run]?.[tag]?.steps || []
export const currentTag = () => S.currentTag(state, catalog)
export const currentSteps = () =>
	state.view === "probe" ? probeSteps(state.runs) : G.unionSteps(tags, state.runs, currentTag())
export const currentLayer = () => catalog.layers.find(l => l.name === state.layer)
export const effectiveCmap = (kind = S.drawnKind(state)) => state.cmap || defaultColormap(kind)
export const runIndex = run => Math.max(0, catalog.runs.indexOf(run))
export const inspectedRun = () => state.frun || state.runs[0]
export const sliceOf = index => (state.slice === null && index ? G.defaultSlice(index.slices) : (state.slice ?? 0))

export function stepBy(delta) {
	stopPlay()
	const steps = currentSteps()
	const step = steps[G.clamp(steps.indexOf(state.step) + delta, 0, steps.length - 1)]
	if (step !== undefined && step !== state.step) update({step})
}

export function togglePlay() {
	if (playing) return stopPlay()
	const steps = currentSteps()
	if (steps.length < 2) return
	playing = true
	hooks.steps()
	const tick = async () => {
		const all = currentSteps()
		const i = all.indexOf(state.step)
		await update({step: all[i >= all.length - 1 ? 0 : i + 1]})
		if (playing) playTimer = setTimeout(tick, PLAY_MS)
	}
	playTimer = setTimeout(tick, state.step === steps[steps.length - 1] ? 0 : PLAY_MS)
}

export function stopPlay() {
	if (!playing) return
	playing = false
	clearTimeout(playTimer)
	hooks.steps()
}

// Probe view: answers shaped as Model.layer's, for the same grid.
export const snaps = {} // run -> /snapshots
// `source`: an image the run logged (an entry of /probe_images), sent instead of `blob`.
export const probeImg = {blob: null, source: null, name: "", target: null}
export const logged = {} // run -> its /probe_images entries
const answers = new Map()

export const loadSnaps = runs =>
	Promise.all(
		runs.map(async r => (snaps[r] = await model.get(url("snapshots", {run: r})).catch(e => ({why: e.message}))))
	)
export const loadLogged = async run =>
	(logged[run] ??= (await model.get(url("probe_images", {run})).catch(() => ({images: []}))).images)
export const hasProbe = () => Boolean(probeImg.blob || probeImg.source)
export const snapSteps = run => snaps[run]?.steps || []
const probeSteps = runs => [...new Set(runs.flatMap(snapSteps))].sort((a, b) => a - b)

export function setProbeImage(blob, source = null) {
	Object.assign(probeImg, {blob, source, name: source ? source.label : blob.name, target: null})
	answers.clear()
}

export function probeLayer(run, step, layer) {
	const t = probeImg.target === null ? {} : {target: probeImg.target}
	const s = probeImg.source
	const from = s ? {source_run: s.run, source_tag: s.tag, source_image: s.image, source_step: s.step} : {}
	const q = url("probe", {run, step, layer, ...t, ...from})
	if (!answers.has(q)) answers.set(q, ask(q, run))
	return answers.get(q)
}

async function ask(q, run) {
	const res = await fetch(q, {method: "POST", body: probeImg.blob})
	const a = await res.json().catch(() => ({}))
	if (!res.ok) throw Error(a.error || res.status)
	// connect-src forbids fetching data: URLs
	const png = u => new Blob([Uint8Array.from(atob(u.slice(22)), c => c.charCodeAt(0))])
	const {index, step} = a
	const atlases = await Promise.all(a.atlases.map(u => decodeAtlas(png(u))))
	return {run, step, index, atlases, locations: G.tileLocations(index), answer: a}
}
