// DOM builders; they never fetch. Names from the logs reach the page as text or attributes, never as
// HTML. Controls carry `data-action`; index.js listens on the root and dispatches.

import {colormapGradient} from "./colormaps.js"
import {clamp, cssSize, formatStat} from "./grid.js"

/** props (or its class): class, text, title, data, attrs (false/null skipped), style. */
export function el(tag, props = {}, ...children) {
	if (typeof props === "string") props = {class: props}
	const node = document.createElement(tag)
	if (props.class) node.className = props.class
	if (props.text !== undefined) node.textContent = String(props.text)
	if (props.title) node.title = props.title
	for (const [k, v] of Object.entries(props.data || {})) if (v != null) node.dataset[k] = String(v)
	for (const [k, v] of Object.entries(props.attrs || {}))
		if (v !== false && v != null) node.setAttribute(k, v === true ? "" : String(v))
	Object.assign(node.style, props.style || {})
	node.append(...children.filter(c => c != null && c !== false))
	return node
}

const button = (cls, text, action, props = {}, ...children) =>
	el(
		"button",
		{...props, class: cls, text, data: {action, key: action, ...props.data}, attrs: {type: "button", ...props.attrs}},
		...children
	)
const swatch = color => el("span", {class: "cv-swatch", style: {background: color}})
const icon = (action, text, label, enabled = true) =>
	button("cv-icon-btn", text, action, {title: label, attrs: {"aria-label": label, disabled: !enabled}})

/** Paul Tol's vibrant set. */
export const runColor = i =>
	["#0077bb", "#ee7733", "#009988", "#cc3311", "#33bbee", "#ee3377", "#888888", "#aa8800"][Math.abs(i) % 8]

/** Keeps focus on the same `data-key`. */
export function swapContent(box, ...nodes) {
	const active = document.activeElement
	const k = active && box.contains(active) ? active.dataset.key : undefined
	box.replaceChildren(...nodes.filter(n => n != null && n !== false))
	if (k !== undefined)
		[...box.querySelectorAll("[data-key]")].find(n => n.dataset.key === k)?.focus({preventScroll: true})
}

const KEYS =
	"Keys: , . or ← → step (arrows move in the grid) · P play · + − 0 zoom · Enter inspect · [ ] other filter · Esc close · V similarity"

export function buildShell() {
	const section = (title, body, extra = null) =>
		el("section", "cv-side-section", el("h2", "cv-side-title", el("span", "", title), extra), body)
	const r = {
		runsCount: el("span", "cv-count"),
		runs: el("div", "cv-runs"),
		layers: el("div", {class: "cv-layers", attrs: {role: "list"}}),
		// Typing part of a name narrows the list; Enter opens the first match.
		layerFind: el("input", {
			class: "cv-find",
			data: {action: "find-layer", key: "find-layer"},
			attrs: {type: "search", placeholder: "Find a layer", "aria-label": "Find a layer", autocomplete: "off"},
		}),
		display: el("div", "cv-display"),
		views: el("div", "cv-views"),
		kinds: el("div", {class: "cv-kinds", attrs: {role: "tablist", "aria-label": "Kind of picture"}}),
		steps: el(
			"div",
			"cv-steps",
			icon("play", "▶", "Play (P)"),
			icon("prev", "‹", "Previous step (,)"),
			el("input", {
				class: "cv-slider",
				data: {action: "step-slider", key: "step-slider"},
				attrs: {type: "range", min: 0, max: 0, value: 0, "aria-label": "Step"},
			}),
			icon("next", "›", "Next step (.)"),
			el("span", "cv-step-label", el("b", "cv-step-num"), el("span", "cv-step-of cv-muted"))
		),
		stepNote: el("p", {class: "cv-step-note", attrs: {hidden: true, "aria-live": "polite"}}),
		tools: el("div", "cv-tools"),
		panels: el("div", "cv-panels"),
		inspector: el("aside", {
			class: "cv-inspector",
			attrs: {"aria-label": "Filter inspector", hidden: true, tabindex: "-1"},
		}),
	}
	r.main = el(
		"main",
		"cv-main",
		el("div", "cv-bar", el("div", "cv-bar-row", r.views, r.kinds, r.steps), r.stepNote, r.tools),
		el("div", {class: "cv-progress", attrs: {"aria-hidden": "true"}}),
		r.panels
	)
	r.app = el(
		"div",
		"cv-app",
		el(
			"aside",
			{class: "cv-side", attrs: {"aria-label": "Selection and display"}},
			section("Runs", r.runs, r.runsCount),
			section("Layers", el("div", "cv-layer-box", r.layerFind, r.layers)),
			section("Display", r.display),
			el("p", "cv-keys", KEYS)
		),
		r.main,
		r.inspector
	)
	return r
}

export function runsList(runs) {
	return runs.map(r =>
		el(
			"div",
			{class: `cv-run${r.hasTag ? "" : " cv-run--empty"}`},
			el(
				"label",
				{title: r.name},
				el("input", {
					data: {action: "toggle-run", run: r.name, key: `run:${r.name}`},
					attrs: {type: "checkbox", checked: r.checked},
				}),
				swatch(r.color),
				el("span", "cv-run-name", r.name)
			),
			button("cv-only", "only", "only-run", {title: `Show only ${r.name}`, data: {run: r.name, key: `only:${r.name}`}})
		)
	)
}

/**
 * The layer list: `S.groupLayers` entries, each layer `{name, active, held, kinds}` where
 * `kinds` are `{label, now}` (`now`: drawn at the current step in a selected run); a group
 * `{group, layers, open}` is a `<details>` that folds its layers away.
 */
export function layersList(entries) {
	return entries.map(e =>
		e.group
			? el(
					"details",
					{class: "cv-group", data: {group: e.group}, attrs: {open: e.open, role: "listitem"}},
					el(
						"summary",
						{class: "cv-group-head", data: {key: `group:${e.group}`}, title: e.group},
						el("span", "cv-layer-name", e.group),
						el("span", "cv-count", `${e.layers.length} layers`)
					),
					...e.layers.map(layerItem)
				)
			: layerItem(e.layer)
	)
}

function layerItem(l) {
	// Kinds not drawn at the current step are dimmed: the step slider tells where they are.
	const kinds = l.kinds.flatMap((k, i) => [
		i ? " · " : "",
		el("span", {class: k.now ? "" : "cv-kind-off", title: k.now ? "" : "not drawn at this step"}, k.label),
	])
	return button(
		`cv-layer${l.active ? " is-active" : ""}`,
		undefined,
		"select-layer",
		{
			data: {layer: l.name, key: `layer:${l.name}`},
			title: l.name,
			attrs: {role: "listitem", "aria-current": l.active && "true", disabled: !l.held},
		},
		el("span", "cv-layer-name", l.name),
		el("span", "cv-layer-kinds", ...kinds)
	)
}

export function segmented(action, options, value, label) {
	return el(
		"div",
		{class: "cv-seg", attrs: {role: "group", "aria-label": label}},
		...options.map(o =>
			button("cv-seg-btn", o.label, action, {
				data: {value: o.value, key: `${action}:${o.value}`},
				attrs: {"aria-pressed": String(o.value === value)},
			})
		)
	)
}

export function displayControls(a) {
	const r = a.range,
		m = r ? Math.max(Math.abs(r[0]), Math.abs(r[1])) : 0
	const ends =
		a.cmap === "diverging" ? (r ? [-m, "0", m] : ["−max", "0", "+max"]) : r ? [r[0], "", r[1]] : ["min", "", "max"]
	const field = (label, ...body) => el("div", "cv-field", el("span", "cv-label", label), ...body)
	return [
		field("Normalize per", segmented("set-norm", a.norms, a.norm, "Normalization")),
		field(
			`Colormap${a.cmapAuto ? " (auto)" : ""}`,
			segmented("set-cmap", a.cmaps, a.cmap, "Colormap"),
			el("div", {class: "cv-legend", style: {background: colormapGradient(a.cmap)}}),
			el("div", "cv-legend-ends", ...ends.map(t => el("span", "", typeof t === "number" ? formatStat(t) : t))),
			a.rgb && el("p", "cv-hint", "RGB pictures keep their colours; diverging centres them on grey.")
		),
		field(
			"Zoom",
			el(
				"div",
				"cv-zoom",
				icon("zoom-out", "−", "Zoom out (-)"),
				el("output", "cv-zoom-val", `${a.zoom}×`),
				icon("zoom-in", "+", "Zoom in (+)"),
				button("cv-btn cv-btn--small", "Fit", "zoom-fit", {
					title: "Automatic zoom (0)",
					attrs: {"aria-pressed": String(a.zoomAuto)},
				})
			)
		),
	]
}

/** `left`: why none was drawn. */
export function kindTabs(options, active) {
	return options.map(o =>
		button(`cv-kind${o.tag === active ? " is-active" : ""}${o.left ? " is-left" : ""}`, o.label, "select-kind", {
			data: {tag: o.tag, key: `kind:${o.tag}`},
			title: o.left && `Not drawn: ${o.left}`,
			attrs: {role: "tab", "aria-selected": String(o.tag === active), disabled: !o.held},
		})
	)
}

/** In place, keeping a drag. */
export function updateStepControls(box, {steps, index, playing}) {
	const n = steps.length
	const slider = box.querySelector(".cv-slider")
	slider.max = String(Math.max(0, n - 1))
	slider.value = String(Math.max(0, index))
	slider.setAttribute("aria-valuetext", n ? `step ${steps[index]}` : "no steps")
	for (const b of box.querySelectorAll("button, input")) b.disabled = n < 2
	const play = box.firstChild
	play.textContent = playing ? "❚❚" : "▶"
	play.title = playing ? "Pause (P)" : "Play (P)"
	play.setAttribute("aria-label", play.title)
	play.classList.toggle("is-on", playing)
	box.querySelector(".cv-step-num").textContent = n ? `Step ${steps[index]}` : "No steps"
	box.querySelector(".cv-step-of").textContent = n ? `${index + 1} of ${n}` : ""
}

/** The thinned/resumed note under the slider (`S.stepNote`), hidden when null. */
export function updateStepNote(box, note) {
	box.hidden = !note
	box.textContent = note ? note.text : ""
	box.title = note ? note.title : ""
	box.classList.toggle("is-resumed", Boolean(note?.resumed))
}

/** `alpha`: heatmap opacity %, null: none. */
export function gridTools(a) {
	const select = (action, label, options, value, disabled = false, title = "") =>
		el(
			"label",
			{class: "cv-tool", title},
			el("span", "cv-label", label),
			el(
				"select",
				{class: "cv-select", data: {action, key: action}, attrs: {disabled}},
				...options.map(o => el("option", {attrs: {value: o.value, selected: o.value === value}}, o.label))
			)
		)
	const dir = a.desc ? "Descending" : "Ascending"
	return [
		a.slices.length > 1 && select("set-slice", "Show", a.slices, a.slice),
		select("set-sort", "Sort by", a.sorts, a.sort),
		icon("toggle-desc", a.desc ? "↓" : "↑", `${dir} (click to flip)`),
		select("set-show", "Filter", a.shows, a.show, !a.hasDead, a.hasDead ? "" : "Needs feature maps of this layer"),
		a.align &&
			button("cv-btn cv-btn--small", `Align to ${a.align.run}`, "toggle-align", {
				title: "Reorder the other runs' filters to match this run's",
				attrs: {"aria-pressed": String(a.align.on)},
			}),
		a.alpha != null &&
			el(
				"label",
				"cv-tool",
				el("span", "cv-label", "Opacity"),
				el("input", {
					class: "cv-opacity",
					data: {action: "set-alpha", key: "set-alpha"},
					attrs: {type: "range", min: 0, max: 100, value: a.alpha, "aria-label": "Heatmap opacity"},
				})
			),
	].filter(Boolean)
}

export function buildPanel(run) {
	return el(
		"section",
		{class: "cv-panel", data: {run}},
		el("header", "cv-panel-head"),
		el("div", "cv-notes"),
		el("div", "cv-panel-body", el("div", {class: "cv-grid", attrs: {role: "group", "aria-label": `Filters of ${run}`}}))
	)
}

export function updatePanelHead(panel, a) {
	const when = a.wallTime ? new Date(a.wallTime * 1000).toLocaleString() : ""
	panel.firstChild.replaceChildren(
		swatch(a.color),
		el("h3", {class: "cv-panel-title", title: a.run}, a.run),
		el("span", {class: "cv-chip", text: a.step === null ? "" : `step ${a.step}`, title: when}),
		...a.facts.map(f => el("span", `cv-fact${f === a.deadFact ? " cv-fact--dead" : ""}`, f)),
		...a.layerStats.map(([k, v]) => el("span", "cv-fact", `${k} `, el("b", "", v)))
	)
	const names = ls => (ls.length > 4 ? `${ls.slice(0, 3).join(", ")} and ${ls.length - 3} more` : ls.join(", "))
	panel.children[1].replaceChildren(
		...a.notes.map(n => el("p", "cv-note", n)),
		...(a.left || []).map(g =>
			el(
				"p",
				{class: "cv-note cv-note--left", title: `${g.layers.join(", ")} · ${g.label}`},
				el("b", "", "Not drawn in this run: "),
				`${names(g.layers)} · ${g.label} — ${g.reason}`
			)
		)
	)
}

/** null shows the grid. */
export function panelMessage(panel, message) {
	const body = panel.lastChild
	while (body.childNodes.length > 1) body.lastChild.remove()
	body.firstChild.hidden = Boolean(message)
	if (message) body.append(message)
}

export function messageCard(title, detail = "", o = {}) {
	return el(
		"div",
		{class: `cv-message${o.tone ? ` cv-message--${o.tone}` : ""}`, attrs: {role: o.tone === "error" && "alert"}},
		el("p", "cv-message-title", title),
		detail && el("p", "cv-message-detail", detail),
		o.code && el("pre", "cv-code", o.code),
		o.action && button("cv-btn", o.label || "Retry", o.action, {data: o.data})
	)
}

export const loadingCard = text => el("div", {class: "cv-loading", attrs: {"aria-busy": "true"}}, text)

/** Tiles reused by id; returns canvases by position. One tile is tabbable (roving tabindex): arrows move. */
export function syncGrid(grid, a) {
	grid._tiles ??= new Map()
	const tiles = grid._tiles
	const keep = new Set(a.order.map(i => a.filters[i]))
	for (const [id, tile] of tiles)
		if (!keep.has(id)) {
			tile.remove()
			tiles.delete(id)
		}
	const out = new Map(),
		wanted = []
	let roving = null
	for (const pos of a.order) {
		const id = a.filters[pos]
		let tile = tiles.get(id)
		if (!tile) {
			tile = el(
				"button",
				{class: "cv-tile", data: {action: "open-filter", filter: id}, attrs: {type: "button", tabindex: "-1"}},
				el("canvas", "cv-canvas"),
				el("span", "cv-tile-id", id),
				el("span", "cv-tile-val")
			)
			tiles.set(id, tile)
		}
		const canvas = tile.firstChild
		sizeCanvas(canvas, a.width, a.height, a.zoom, a.dpr)
		const dead = Boolean(a.dead?.get(id))
		const text = a.captions?.get(id) ?? ""
		tile.classList.toggle("is-dead", dead)
		tile.classList.toggle("is-selected", a.selected === id)
		if (tile.lastChild.textContent !== text) tile.lastChild.textContent = text
		tile.title = `${a.noun} ${id}${dead ? " · dead: zero on every probe image" : ""}${text ? ` · ${a.valueLabel}${text}` : ""}`
		tile.setAttribute("aria-label", tile.title)
		tile.tabIndex = -1
		if (id === a.focus) roving = tile
		wanted.push(tile)
		out.set(pos, canvas)
	}
	if (wanted.length !== grid.children.length || wanted.some((t, i) => grid.children[i] !== t)) {
		const active = document.activeElement // re-inserting a focused tile blurs it
		grid.append(...wanted)
		if (grid.contains(active) && document.activeElement !== active) active.focus({preventScroll: true})
	}
	const first = roving || grid.firstElementChild
	if (first) first.tabIndex = 0
	return out
}

/** Pixel-exact zoom; unchanged sizes keep its pixels. */
function sizeCanvas(canvas, width, height, zoom, dpr) {
	if (canvas.width !== width) canvas.width = width
	if (canvas.height !== height) canvas.height = height
	Object.assign(canvas.style, {width: `${cssSize(width, zoom, dpr)}px`, height: `${cssSize(height, zoom, dpr)}px`})
}

export const putPixels = (canvas, px) =>
	canvas.getContext("2d")?.putImageData(new ImageData(px.data, px.width, px.height), 0, 0)

export function paintCanvas(canvas, px, zoom, dpr) {
	sizeCanvas(canvas, px.width, px.height, zoom, dpr)
	putPixels(canvas, px)
}

export function sparkline(points, current) {
	const w = 220,
		h = 36,
		svg = document.createElementNS("http://www.w3.org/2000/svg", "svg")
	const add = (tag, attrs, node = document.createElementNS(svg.namespaceURI, tag)) => {
		for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v))
		return node === svg ? svg : svg.appendChild(node)
	}
	add("svg", {viewBox: `0 0 ${w} ${h}`, class: "cv-spark", preserveAspectRatio: "none", "aria-hidden": "true"}, svg)
	const ok = p => Number.isFinite(p.value)
	const vals = points.filter(ok).map(p => p.value)
	if (!vals.length) return svg
	const s0 = points[0].step,
		s1 = points[points.length - 1].step,
		v0 = Math.min(...vals),
		v1 = Math.max(...vals)
	const x = s => (s1 === s0 ? w / 2 : 3 + ((s - s0) / (s1 - s0)) * (w - 6))
	const y = v => (v1 === v0 ? h / 2 : h - 3 - ((v - v0) / (v1 - v0)) * (h - 6))
	if (current !== null && current >= s0 && current <= s1)
		add("line", {class: "cv-spark-now", x1: x(current), x2: x(current), y1: 0, y2: h})
	const d = points
		.map((p, i) =>
			ok(p) ? `${i && ok(points[i - 1]) ? "L" : "M"}${x(p.step).toFixed(1)},${y(p.value).toFixed(1)}` : ""
		)
		.join("")
	add("path", {class: "cv-spark-line", d, "vector-effect": "non-scaling-stroke"})
	const at = points.find(p => p.step === current && ok(p))
	if (at) add("circle", {class: "cv-spark-dot", cx: x(at.step), cy: y(at.value), r: 2.5})
	return svg
}

const inspSection = (title, note, ...body) =>
	el("section", "cv-insp-section", el("h3", "", title, el("span", "cv-muted", note)), ...body)

export function inspectorView(a) {
	const sections = el("div")
	const cost = el("span", {class: "cv-muted", attrs: {"data-cost": ""}})
	const stats = el("div", "cv-insp-stats", el("p", "cv-muted", "Loading statistics…"))
	const evolution = el("div", {class: "cv-evo", attrs: {role: "list"}})
	const root = el(
		"div",
		"cv-insp",
		el(
			"header",
			"cv-insp-head",
			el(
				"div",
				"cv-insp-titles",
				el("h2", "cv-insp-title", el("span", "", a.title), a.dead && el("span", "cv-badge", "dead")),
				el(
					"p",
					"cv-insp-sub",
					swatch(a.color),
					el("span", "", a.run),
					el("span", "", ` · ${a.layer}`),
					el("span", "cv-muted", a.step === null ? "" : ` · step ${a.step}`),
					cost
				)
			),
			icon("prev-filter", "‹", "Previous filter ([)", a.canPrev),
			icon("next-filter", "›", "Next filter (])", a.canNext),
			icon("close-inspector", "✕", "Close (Esc)")
		),
		sections,
		inspSection("Statistics", "", stats),
		inspSection("Evolution", " · click a step to go there", evolution)
	)
	return {root, sections, stats, evolution, cost}
}

export function pictureSection(title, subtitle, note = "", items = [], zoom = 1, dpr = 1) {
	const figures = items.map(item => {
		const canvas = el("canvas", "cv-canvas")
		paintCanvas(canvas, item.pixels, zoom, dpr)
		if (!item.action) return el("figure", "cv-pic", canvas, el("figcaption", "", item.label))
		// An item with an action (a dataset example: probe it) is a button laid out as a figure:
		// a button holds phrasing content only, so its caption is a span.
		const attrs = {type: "button", title: item.title || ""}
		return el(
			"button",
			{class: "cv-pic cv-pic-btn", data: item.action, attrs},
			canvas,
			el("span", "cv-pic-cap", item.label)
		)
	})
	return inspSection(
		title,
		subtitle && ` · ${subtitle}`,
		note && el("p", "cv-muted cv-small", note),
		figures.length > 0 && el("div", "cv-pics", ...figures)
	)
}

export function statsRows(rows, current) {
	if (!rows.length) return [el("p", "cv-muted", "No statistics logged for this filter.")]
	return rows.map(r =>
		el(
			"div",
			"cv-stat",
			el("div", "cv-stat-head", el("span", {title: r.label}, r.label), el("b", "", r.value)),
			sparkline(r.points, current)
		)
	)
}

export function evolutionFrame(step, current) {
	return button(
		`cv-frame${current ? " is-current" : ""}`,
		undefined,
		"goto-step",
		{
			data: {step, key: `step:${step}`},
			attrs: {role: "listitem", "aria-label": `Go to step ${step}`, "aria-current": current && "step"},
		},
		el("canvas", {class: "cv-canvas", attrs: {width: 16, height: 16}}),
		el("span", "", step)
	)
}

/** A panel: title, chip, warning, body. */
export const heatCard = a =>
	el(
		"section",
		"cv-panel",
		el(
			"header",
			"cv-panel-head",
			a.color && swatch(a.color),
			el("h3", {class: "cv-panel-title", title: a.title}, a.title),
			el("span", {class: "cv-chip", text: a.sub})
		),
		a.warning && el("div", "cv-notes", el("p", "cv-note cv-note--left", a.warning)),
		el("div", "cv-panel-body", a.body)
	)

/** A CKA heatmap: row labels when there is room, else the ends; `range`: what the legend's ends stand for. */
export function heatmap(px, labels, key, range = [0, 1]) {
	const n = labels.length,
		cell = clamp(Math.floor(360 / n), 2, 32),
		all = cell > 11
	const canvas = el("canvas", {
		class: "cv-canvas cv-heat-canvas",
		data: {key: `heat:${key}`},
		attrs: {tabindex: 0, "aria-label": "CKA heatmap: arrows move, Enter opens"},
	})
	paintCanvas(canvas, px, cell, 1)
	const cursor = el("div", "cv-heat-cursor"),
		readout = el("output", {class: "cv-heat-out", attrs: {"aria-live": "polite"}})
	const root = el(
		"div",
		"cv-heat",
		el(
			"div",
			{class: "cv-heat-rows", style: {gridTemplateRows: `repeat(${n}, ${cell}px)`}},
			...(all ? labels.map(l => el("span", {title: l}, l)) : [])
		),
		el("div", "cv-heat-plot", canvas, cursor),
		// Column labels under the plot, written upwards, where the cells leave room for them.
		all &&
			el(
				"div",
				{class: "cv-heat-cols", style: {gridTemplateColumns: `repeat(${n}, ${cell}px)`}},
				...labels.map(l => el("span", {title: l}, l))
			),
		!all && el("p", "cv-hint", `Rows and columns: ${labels[0]} … ${labels[n - 1]}`),
		readout,
		el("div", {class: "cv-legend", style: {background: colormapGradient("viridis")}}),
		el("div", "cv-legend-ends", ...[range[0].toFixed(3), "CKA", range[1].toFixed(3)].map(t => el("span", "", t)))
	)
	return {root, canvas, cursor, readout, cell}
}
