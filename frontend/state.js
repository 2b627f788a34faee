// The view state, its URL forms and the catalog. Pure (node-testable). Non-default values live in the
// iframe's hash and, as p.cnnviz.<key>, in TensorBoard's URL, so a reload or a shared link restores them.

import {COLORMAPS} from "./colormaps.js"
import {closestStep, MAX_ZOOM, NORM_MODES, rankIn, SHOW_MODES} from "./grid.js"

/** `tb_cnnviz.metadata.KINDS` order, then responses. */
export const KIND_LABELS = {
	weights: "Weights",
	feature_maps: "Feature maps",
	actmax: "Activation max",
	attribution: "Attribution",
	responses: "Examples",
}
export const kindLabel = kind => KIND_LABELS[kind] || kind
export const DEFAULT_ALPHA = 60
export const PARENT_PREFIX = "p.cnnviz."

export function defaultState() {
	return {
		runs: [],
		layer: null,
		kind: null,
		step: null,
		slice: null,
		sort: "id",
		desc: false,
		show: "all",
		norm: "filter",
		cmap: null,
		zoom: null,
		alpha: DEFAULT_ALPHA,
		filter: null,
		frun: null,
		view: "filters",
		sim: "time",
		// CKA colours span the data ("data": 0.97 and 1.0 look apart) or 0-1 ("unit").
		hscale: "data",
		align: false,
		// Probe view: a second snapshot step of the first run, shown beside `step` (null: none).
		vs: null,
	}
}

export const encodeList = items => items.map(s => String(s).replace(/[\\,]/g, "\\$&")).join(",")

export function decodeList(text) {
	if (!text) return []
	const out = []
	let cur = ""
	for (let i = 0; i < text.length; i++) {
		if (text[i] === "\\" && i + 1 < text.length) cur += text[++i]
		else if (text[i] === ",") {
			out.push(cur)
			cur = ""
		} else cur += text[i]
	}
	return [...out, cur]
}

// Digits only: "1e3", "-1" or " 7" in a hand-edited URL give null.
const int = (v, lo, hi) => (/^\d{1,15}$/.test(v) && +v >= lo && +v <= hi ? +v : null)
const oneOf = (v, list, fallback) => (list.includes(v) ? v : fallback)

/** The kind the grid draws: the Probe view's answers are feature maps, whatever `kind` says. */
export const drawnKind = s => (s.view === "probe" ? "feature_maps" : s.kind)

/** Non-default values, in `defaultState` order. */
export function stateToParams(s) {
	const d = defaultState()
	const pairs = Object.keys(d).map(k =>
		k === "runs"
			? ["run", s.runs.length ? encodeList(s.runs) : null]
			: [k, k === "desc" || k === "align" ? (s[k] ? 1 : null) : s[k] === d[k] ? null : s[k]]
	)
	return pairs.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [k, String(v)])
}

/** Unknown keys and invalid values are ignored. */
export function paramsToState(params) {
	const s = defaultState()
	for (const [k, raw] of params) {
		const v = String(raw)
		if (k === "run") s.runs = [...new Set(decodeList(v))].filter(Boolean)
		else if (k === "layer" || k === "kind" || k === "frun") s[k] = v || null
		else if (k === "step" || k === "vs") s[k] = int(v, 0, Number.MAX_SAFE_INTEGER)
		else if (k === "slice") s.slice = v === "all" || /^o\d{1,6}$/.test(v) ? v : int(v, 0, 1e6)
		else if (k === "alpha") s.alpha = int(v, 0, 100) ?? DEFAULT_ALPHA
		else if (k === "sort") s.sort = v && v.length < 200 ? v : "id"
		else if (k === "desc" || k === "align") s[k] = v === "1" || v === "true"
		else if (k === "view") s.view = oneOf(v, ["filters", "similarity", "probe"], "filters")
		else if (k === "sim") s.sim = oneOf(v, ["time", "runs", "layers"], "time")
		else if (k === "hscale") s.hscale = oneOf(v, ["data", "unit"], "data")
		else if (k === "show") s.show = oneOf(v, SHOW_MODES, "all")
		else if (k === "norm") s.norm = oneOf(v, NORM_MODES, "filter")
		else if (k === "cmap") s.cmap = oneOf(v, COLORMAPS, null)
		else if (k === "zoom") s.zoom = int(v, 1, MAX_ZOOM)
		else if (k === "filter") s.filter = int(v, 0, 1e9)
	}
	return s
}

export const stateToHash = state => new URLSearchParams(stateToParams(state)).toString()

export const stateFromHash = hash => paramsToState(new URLSearchParams(String(hash || "").replace(/^#/, "")))

export const hashHasState = hash => stateToParams(stateFromHash(hash)).length > 0

/** As TensorBoard's tf_storage reads it: a bare token is the tab, the rest key=value. */
export function parseParentHash(hash) {
	let tab = null
	const entries = []
	for (const part of String(hash || "")
		.replace(/^#/, "")
		.split("&")) {
		const bits = part.split("=")
		try {
			if (bits.length === 1 && part) tab = decodeURIComponent(part)
			else if (bits.length === 2) entries.push(bits.map(decodeURIComponent))
		} catch {
			/* a malformed escape */
		}
	}
	return {tab, entries}
}

export const pluginDataFromParentHash = hash =>
	parseParentHash(hash)
		.entries.filter(([k]) => k.startsWith(PARENT_PREFIX))
		.map(([k, v]) => [k.slice(PARENT_PREFIX.length), v])

export function mergeParentHash(hash, state) {
	const {tab, entries} = parseParentHash(hash)
	const pairs = [
		...entries.filter(([k]) => !k.startsWith(PARENT_PREFIX)),
		...stateToParams(state).map(([k, v]) => [PARENT_PREFIX + k, v]),
	]
	return [
		...(tab !== null ? [encodeURIComponent(tab)] : []),
		...pairs.map(p => p.map(encodeURIComponent).join("=")),
	].join("&")
}

// The catalog: the /tags answer arranged for the pickers.

const natural = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"})
const KINDS = Object.keys(KIND_LABELS)
const kindRank = rankIn(KINDS)
const byKind = (a, b) => kindRank(a.kind) - kindRank(b.kind)
// Layers of filters come before attribution, which is about the model's output.
const layerRank = layer => (layer.tags.every(t => t.kind === "attribution") ? 1 : 0)

/**
 * Also tags only plans name (`left`). Layers come in the network's order: the callbacks record
 * the order a forward pass meets the conv layers, and /tags gives each tag's `order` (the first
 * selected run that knows a layer's place decides it). Layers without one (logs written before
 * the order was recorded) follow, by name, numbers by value (`conv2` before `conv10`).
 */
export function buildCatalog(tags, runs = [], left = {}) {
	const names = [...new Set([...runs.filter(r => r in tags), ...Object.keys(tags)])]
	const byTag = new Map()
	const place = new Map() // layer -> its place in the network, from the first run giving one
	for (const run of names) {
		for (const [tag, info] of Object.entries(tags[run] || {})) {
			if (!byTag.has(tag)) byTag.set(tag, {tag, kind: String(info.kind), layer: String(info.layer)})
			if (Number.isInteger(info.order) && !place.has(String(info.layer))) place.set(String(info.layer), info.order)
		}
	}
	for (const run of names)
		for (const tag in left[run] || {}) if (!byTag.has(tag) && tagInfo(tag)) byTag.set(tag, tagInfo(tag))
	const layers = new Map()
	for (const info of byTag.values()) layers.set(info.layer, [...(layers.get(info.layer) || []), info])
	const rank = l => place.get(l.name) ?? Number.POSITIVE_INFINITY
	const list = [...layers]
		.map(([name, ts]) => ({name, tags: ts.sort((a, b) => byKind(a, b) || natural.compare(a.tag, b.tag))}))
		.sort((a, b) => layerRank(a) - layerRank(b) || rank(a) - rank(b) || natural.compare(a.name, b.name))
	return {runs: names, layers: list, byTag}
}

/**
 * The group a layer's name puts it in, so that a 160-layer network fits one screen: the model
 * or block it lives in, at most two deep (`backbone/block_2/se/conv` -> `backbone/block_2`),
 * else its name up to the first word with a number, when more follows (`block_3_expand` ->
 * `block_3`, `conv2_block1_1_conv` -> `conv2`, `block1a_se_reduce` -> `block1a`), else its
 * name without its last word (`expanded_conv_project` -> `expanded_conv`); "" for a name with
 * nothing to group by (`Conv1`, `stem_conv`).
 */
export function layerGroup(name) {
	const parts = name.split("/")
	if (parts.length > 1) return parts.slice(0, Math.min(2, parts.length - 1)).join("/")
	const words = name.split("_")
	const k = words.findIndex(w => /\d/.test(w))
	if (k >= 0 && k < words.length - 1) return words.slice(0, k + 1).join("_")
	return words.length > 2 && k < 0 ? words.slice(0, -1).join("_") : ""
}

/**
 * `layers` (in order) as a list of entries: a group of two or more layers that share a group
 * (`{group, layers}`) at the place of its first, else the layer itself (`{layer}`).
 */
export function groupLayers(layers) {
	const count = new Map()
	for (const l of layers) count.set(layerGroup(l.name), (count.get(layerGroup(l.name)) || 0) + 1)
	const out = []
	const open = new Map()
	for (const l of layers) {
		const g = layerGroup(l.name)
		if (!g || count.get(g) < 2) out.push({layer: l})
		else if (open.has(g)) open.get(g).layers.push(l)
		else {
			const entry = {group: g, layers: [l]}
			open.set(g, entry)
			out.push(entry)
		}
	}
	return out
}

/** Whether a layer's name matches what was typed in the layer search (any part, any case). */
export const matchesQuery = (name, query) => !query || name.toLowerCase().includes(query.trim().toLowerCase())

/**
 * Known runs (else the first), a held layer and kind (left out only if asked), a logged step
 * (null: the latest; missing: the closest; none: kept).
 */
export function reconcile(state, catalog, tags, left = {}) {
	const s = {...state, runs: state.runs.filter(r => catalog.runs.includes(r))}
	if (!s.runs.length && catalog.runs.length) s.runs = [catalog.runs[0]]
	const drawn = new Set(s.runs.flatMap(r => Object.keys(tags[r] || {})))
	const held = new Set([...drawn, ...s.runs.flatMap(r => Object.keys(left[r] || {}))])
	const someDrawn = ts => ts.find(t => drawn.has(t.tag))
	const layers = catalog.layers.filter(l => l.tags.some(t => held.has(t.tag)))
	const layer = layers.find(l => l.name === s.layer) || layers.find(l => someDrawn(l.tags)) || layers[0]
	const avail = layer ? layer.tags.filter(t => held.has(t.tag)) : []
	const info = avail.find(t => t.kind === s.kind) || someDrawn(avail) || avail[0]
	s.layer = layer ? layer.name : null
	s.kind = info ? info.kind : null
	const steps = info ? s.runs.flatMap(r => tags[r]?.[info.tag]?.steps || []).sort((a, b) => a - b) : []
	if (!info) s.step = null
	else if (steps.length && s.view !== "probe")
		s.step = s.step === null ? steps[steps.length - 1] : closestStep(steps, s.step)
	// The inspected filter stays while the Similarity view shows (the inspector hides, and
	// comes back with the Filters view).
	if (s.filter === null || !s.runs.includes(s.frun)) s.frun = null
	return s
}

/** One per layer and kind: "<layer>/<kind>". */
export const currentTag = (state, catalog) =>
	catalog.layers.find(l => l.name === state.layer)?.tags.find(t => t.kind === state.kind)?.tag ?? null

// Plans (/plan answers).

/** For tags only plans name. */
export function tagInfo(tag) {
	const i = tag.lastIndexOf("/"),
		kind = tag.slice(i + 1)
	return i > 0 && KINDS.includes(kind) ? {tag, kind, layer: tag.slice(0, i)} : null
}

export const leftOut = (plan, pictures = {}) =>
	Object.fromEntries(Object.entries(plan?.left_out || {}).filter(([t]) => !(t in pictures)))

export const skipReason = (plan, tag, step) => plan?.steps?.find?.(s => s.step === step)?.skipped?.[tag]

/**
 * What drawing `tag` cost at `step`, or (step undefined) when it was last drawn: the plan
 * records' `{seconds, bytes[, step]}`, or null where they give none (older logs). Where the
 * drawings of its kind shared work at that step (the feature maps' one forward pass of the probe
 * images), `pass: {seconds, shared}` says how long it took and how many tags drawn there shared
 * it: no tag's own seconds include it, so a layer's maps read 5 ms where the pass took 0.1 s.
 */
export function cost(plan, tag, step) {
	const c = step === undefined ? plan?.costs?.[tag] : plan?.steps?.find?.(s => s.step === step)?.costs?.[tag]
	if (!c) return null
	const at = plan.steps?.find?.(s => s.step === (step ?? c.step))
	const kind = tagInfo(tag)?.kind
	const shared = at?.passes?.[kind]
	if (!shared) return c
	const drawn = (at.drawn || []).filter(t => tagInfo(t)?.kind === kind).length
	return {...c, pass: {seconds: shared.seconds, shared: Math.max(drawn, 1)}}
}

const secondsText = s => (s < 0.1 ? s.toFixed(3) : s < 10 ? s.toFixed(2) : s.toFixed(0))

/**
 * "0.21 s · 148 KB": what a drawing cost, in the words a budget is set in; with its kind's
 * shared pass, "0.005 s · 40 KB, and 0.10 s of the probe images' pass shared by 12 layers".
 */
export function costText(c) {
	if (!c) return ""
	const kb = c.bytes / 1024
	const text = `${secondsText(c.seconds)} s · ${kb < 1024 ? `${kb.toFixed(kb < 10 ? 1 : 0)} KB` : `${(kb / 1024).toFixed(1)} MB`}`
	if (!c.pass) return text
	const by = c.pass.shared > 1 ? `, shared by ${c.pass.shared} layers` : ""
	return `${text}, and ${secondsText(c.pass.seconds)} s of the probe images' pass${by}`
}

/** Left-out tags by kind and reason (mostly shared). */
export function groupLeftOut(left, byTag) {
	const groups = {}
	for (const [tag, reason] of Object.entries(left)) {
		const info = byTag.get(tag) || tagInfo(tag)
		if (!info) continue
		const group = `${info.kind}\u0000${reason}`
		groups[group] ||= {kind: info.kind, label: KIND_LABELS[info.kind], reason, layers: []}
		groups[group].layers.push(info.layer)
	}
	for (const g of Object.values(groups)) g.layers.sort(natural.compare)
	return Object.values(groups).sort((a, b) => byKind(a, b) || natural.compare(a.reason, b.reason))
}

// Long runs are thinned (tb_cnnviz.thinning): a step training logged but the callbacks did not draw
// has a plan record saying `thinned` and why. The slider only ever holds drawn steps; these say
// where the others went, so a jump from step 16 to 18 does not read as lost data.

const why = reason => String(reason).replace(/^thinned:\s*/, "")

/**
 * A plan's thinned steps as spans `{from, to, count, reason}`: records in step order with the same
 * reason join one span whatever drawn steps lie between them (every 2nd step of 16-31 is one span).
 */
export function thinnedSpans(plan) {
	const spans = []
	for (const s of Array.isArray(plan?.steps) ? plan.steps : []) {
		if (typeof s?.thinned !== "string" || !Number.isInteger(s.step)) continue
		const last = spans.at(-1)
		if (last && last.reason === s.thinned) Object.assign(last, {to: s.step, count: last.count + 1})
		else spans.push({from: s.step, to: s.step, count: 1, reason: s.thinned})
	}
	return spans
}

/** Steps where a resumed job took over the run: `{step, from, previous}`. */
export const resumedSteps = plan =>
	(Array.isArray(plan?.steps) ? plan.steps : [])
		.filter(s => s?.resumed && typeof s.resumed === "object" && Number.isInteger(s.step))
		.map(s => ({step: s.step, from: s.resumed.from_step ?? s.step, previous: s.resumed.previous_last_step ?? null}))

/** "steps 17–31 thinned (8): every 2nd step is drawn from step 16 on (a long run)". */
export const spanText = s =>
	`${s.from === s.to ? `step ${s.from}` : `steps ${s.from}–${s.to}`} thinned${s.count > 1 ? ` (${s.count})` : ""}: ${why(s.reason)}`

/**
 * The note under the step slider for the shown runs (`[run, plan]` pairs) at `step`:
 * `{text, title, resumed}` or null when no run was thinned or resumed. `text` names the first
 * spans (the run too when several are shown), `title` all of them; `resumed` is true at a step
 * where a job resumed, and the text then starts with "Resumed here".
 */
export function stepNote(runPlans, step) {
	const lines = []
	let here = null
	for (const [run, plan] of runPlans) {
		const who = runPlans.length > 1 ? `${run}: ` : ""
		for (const s of thinnedSpans(plan)) lines.push(who + spanText(s))
		for (const r of resumedSteps(plan)) {
			const text = `resumed at step ${r.step}${r.previous === null ? "" : ` (the earlier job had reached step ${r.previous})`}`
			if (r.step === step)
				here ??= `Resumed here${runPlans.length > 1 ? ` in ${run}` : ""}: a new job took over from step ${r.from}`
			else lines.push(who + text)
		}
	}
	if (!lines.length && !here) return null
	const shown = lines.slice(0, 2)
	const more = lines.length > shown.length ? ` · +${lines.length - shown.length} more` : ""
	const text = [here, ...shown].filter(Boolean).join(" · ") + more
	const cap = s => s.charAt(0).toUpperCase() + s.slice(1)
	return {text: cap(text), title: [here, ...lines].filter(Boolean).map(cap).join("\n"), resumed: Boolean(here)}
}

/** Why `step` of a run has no pictures because it was thinned, else undefined. */
export const thinnedReason = (plan, step) => {
	const s = Array.isArray(plan?.steps) ? plan.steps.find(x => x?.step === step) : undefined
	return typeof s?.thinned === "string" ? why(s.thinned) : undefined
}
