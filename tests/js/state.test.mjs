// The view state, its URL forms (the iframe's hash and TensorBoard's p.cnnviz.* keys), and the catalog.

import assert from "node:assert/strict"
import {test} from "node:test"
import {defaultColormap} from "../../frontend/colormaps.js"
import * as S from "../../frontend/state.js"

const TAGS = {
	"run/a": {
		"conv2d/weights": {kind: "weights", layer: "conv2d", steps: [0, 1, 2]},
		"conv2d/feature_maps": {kind: "feature_maps", layer: "conv2d", steps: [0, 2]},
		"conv2d_10/weights": {kind: "weights", layer: "conv2d_10", steps: [0, 1, 2]},
		"conv2d_2/weights": {kind: "weights", layer: "conv2d_2", steps: [0, 1, 2]},
	},
	"run/b": {
		"conv2d/weights": {kind: "weights", layer: "conv2d", steps: [5, 6]},
		"attribution/gradcam": {kind: "attribution", layer: "attribution", steps: [5]},
	},
}

test("a full state survives the hash round trip", () => {
	const s = {
		...S.defaultState(),
		runs: ["run/a", "we,ird\\name", "<img src=x onerror=alert(1)>"],
		layer: "conv2d",
		kind: "weights",
		step: 12,
		slice: "all",
		sort: "weights.l2_norm",
		desc: true,
		show: "dead",
		norm: "layer",
		cmap: "viridis",
		zoom: 6,
		alpha: 35,
		filter: 3,
		frun: "run/a",
		align: true,
	}
	assert.deepEqual(S.stateFromHash(`#${S.stateToHash(s)}`), s)
	for (const sim of ["time", "runs", "layers"]) {
		const similarity = {...s, view: "similarity", sim}
		assert.deepEqual(S.stateFromHash(`#${S.stateToHash(similarity)}`), similarity)
	}
	s.slice = "o2"
	assert.deepEqual(S.stateFromHash(`#${S.stateToHash(s)}`), s)
})

test("defaults write an empty hash and read back as defaults", () => {
	assert.equal(S.stateToHash(S.defaultState()), "")
	assert.deepEqual(S.stateFromHash(""), S.defaultState())
	assert.equal(S.hashHasState("#"), false)
	assert.equal(S.hashHasState("#layer=x"), true)
})

test("invalid hash values fall back to defaults instead of throwing", () => {
	const s = S.stateFromHash(
		"#step=-3&zoom=999&norm=bogus&cmap=jet&show=maybe&slice=x&filter=1e3&unknown=1&desc=0&alpha=101&view=x&sim=y&align=2"
	)
	assert.deepEqual([s.view, s.sim, s.align], ["filters", "time", false])
	assert.equal(s.alpha, S.DEFAULT_ALPHA)
	assert.equal(s.step, null)
	assert.equal(s.zoom, null)
	assert.equal(s.norm, "filter")
	assert.equal(s.cmap, null)
	assert.equal(s.show, "all")
	assert.equal(s.slice, null)
	assert.equal(s.filter, null)
	assert.equal(s.desc, false)
})

test("lists escape commas and backslashes", () => {
	const items = ["a,b", "c\\d", "", "plain"]
	assert.deepEqual(S.decodeList(S.encodeList(items)), items)
	assert.equal(S.encodeList(["x", "y"]), "x,y")
	assert.deepEqual(S.decodeList(""), [])
})

test("parent hash keeps TensorBoard's tab and keys and replaces only p.cnnviz.*", () => {
	const s = {...S.defaultState(), runs: ["run/a"], layer: "conv 2d&x=1", step: 4}
	const merged = S.mergeParentHash("#cnnviz&regexFilter=abc&p.cnnviz.step=9&p.cnnviz.zoom=3", s)
	const parsed = S.parseParentHash(merged)
	assert.equal(parsed.tab, "cnnviz")
	assert.deepEqual(
		parsed.entries.find(([k]) => k === "regexFilter"),
		["regexFilter", "abc"]
	)
	const mine = Object.fromEntries(S.pluginDataFromParentHash(merged))
	assert.deepEqual(mine, {run: "run/a", layer: "conv 2d&x=1", step: "4"})
	assert.deepEqual(S.paramsToState(S.pluginDataFromParentHash(merged)), {...s})
})

test("parent hash parsing skips malformed escapes like TensorBoard would not crash on", () => {
	assert.deepEqual(S.parseParentHash("#scalars&a=%E0%A4%A&b=2").entries, [["b", "2"]])
})

test("catalog orders layers naturally with attribution last and kinds in metadata.KINDS order", () => {
	const c = S.buildCatalog(TAGS, ["run/b", "run/a"])
	assert.deepEqual(c.runs, ["run/b", "run/a"])
	assert.deepEqual(
		c.layers.map(l => l.name),
		["conv2d", "conv2d_2", "conv2d_10", "attribution"]
	)
	assert.deepEqual(
		c.layers[0].tags.map(t => t.kind),
		["weights", "feature_maps"]
	)
})

test("reconcile picks the first run, layer, kind and the latest step by default", () => {
	const c = S.buildCatalog(TAGS, ["run/a", "run/b"])
	const s = S.reconcile(S.defaultState(), c, TAGS)
	assert.deepEqual(s.runs, ["run/a"])
	assert.equal(s.layer, "conv2d")
	assert.equal(s.kind, "weights")
	assert.equal(s.step, 2)
	assert.equal(S.currentTag(s, c), "conv2d/weights")
})

test("reconcile drops unknown runs, keeps a valid kind and snaps a missing step to the closest", () => {
	const c = S.buildCatalog(TAGS, ["run/a", "run/b"])
	const s = S.reconcile(
		{...S.defaultState(), runs: ["gone", "run/a"], layer: "conv2d", kind: "feature_maps", step: 1},
		c,
		TAGS
	)
	assert.deepEqual(s.runs, ["run/a"])
	assert.equal(s.kind, "feature_maps")
	assert.equal(s.step, 0)
})

test("reconcile unions steps across runs compared side by side", () => {
	const c = S.buildCatalog(TAGS, ["run/a", "run/b"])
	const s = S.reconcile({...S.defaultState(), runs: ["run/a", "run/b"], step: 6}, c, TAGS)
	assert.equal(s.step, 6)
})

test("reconcile moves to a layer the selected runs hold and clears an orphan inspector run", () => {
	const c = S.buildCatalog(TAGS, ["run/a", "run/b"])
	const s = S.reconcile({...S.defaultState(), runs: ["run/b"], layer: "conv2d_2", filter: 1, frun: "run/a"}, c, TAGS)
	assert.equal(s.layer, "conv2d")
	assert.equal(s.frun, null)
	assert.equal(s.filter, 1)
})

test("the Examples kind comes last in a layer, and the Similarity view keeps the inspected filter", () => {
	const tags = {r: {...TAGS["run/a"], "conv2d/responses": {kind: "responses", layer: "conv2d", steps: [0, 2]}}}
	const catalog = S.buildCatalog(tags, ["r"])
	assert.deepEqual(
		catalog.layers[0].tags.map(t => S.kindLabel(t.kind)),
		["Weights", "Feature maps", "Examples"]
	)
	const next = {...S.defaultState(), layer: "conv2d", kind: "responses", step: 1, filter: 4, frun: "r"}
	const s = S.reconcile(next, catalog, tags)
	assert.deepEqual([s.kind, s.step, s.filter], ["responses", 0, 4])
	// The inspector hides in the Similarity view and comes back with the Filters view (V, V).
	const similarity = S.reconcile({...next, view: "similarity"}, catalog, tags)
	assert.deepEqual([similarity.filter, similarity.frun], [4, "r"])
})

test("reconcile on an empty logdir leaves nothing selected", () => {
	const s = S.reconcile(S.defaultState(), S.buildCatalog({}, []), {})
	assert.deepEqual(s.runs, [])
	assert.equal(s.layer, null)
	assert.equal(s.step, null)
})

// Plans: tags a run left out, and why a tag was skipped at a step.

const PLAN = {
	run: "run/a",
	budget: 0.05,
	steps: [{step: 1, drawn: ["conv2d/weights"], skipped: {"conv2d/feature_maps": "over budget at 1"}}],
	left_out: {
		"conv2d/actmax": "too slow",
		"conv2d_10/actmax": "too slow",
		"conv2d_2/actmax": "too slow",
		"x/attribution": "no probes",
		"conv2d/weights": "stale: it has pictures",
		odd: "no kind",
	},
}

test("a tag only a plan names is read as <layer>/<kind>, unknown kinds refused", () => {
	assert.deepEqual(S.tagInfo("outer/conv 1/actmax"), {
		tag: "outer/conv 1/actmax",
		kind: "actmax",
		layer: "outer/conv 1",
	})
	assert.equal(S.tagInfo("conv/plan"), null)
	assert.equal(S.tagInfo("actmax"), null)
})

test("left out: the plan's tags less those with pictures; skip reasons by step", () => {
	const left = S.leftOut(PLAN, TAGS["run/a"])
	assert.ok(!("conv2d/weights" in left))
	assert.equal(left["conv2d/actmax"], "too slow")
	assert.deepEqual(S.leftOut(null), {})
	assert.equal(S.skipReason(PLAN, "conv2d/feature_maps", 1), "over budget at 1")
	assert.equal(S.skipReason(PLAN, "conv2d/feature_maps", 2), undefined)
	assert.equal(S.skipReason(PLAN, "conv2d/weights", 1), undefined)
	assert.equal(S.skipReason({steps: "garbage"}, "t", 1), undefined)
})

test("left-out tags group by kind and shared reason, layers in natural order", () => {
	const groups = S.groupLeftOut(S.leftOut(PLAN, TAGS["run/a"]), new Map())
	assert.deepEqual(groups, [
		{kind: "actmax", label: "Activation max", reason: "too slow", layers: ["conv2d", "conv2d_2", "conv2d_10"]},
		{kind: "attribution", label: "Attribution", reason: "no probes", layers: ["x"]},
	])
})

test("the catalog offers tags only a run's plan names, and reconcile selects them only when asked", () => {
	const left = {"run/a": S.leftOut(PLAN, TAGS["run/a"])}
	const c = S.buildCatalog(TAGS, ["run/a", "run/b"], left)
	assert.deepEqual(
		c.layers[0].tags.map(t => t.kind),
		["weights", "feature_maps", "actmax"]
	)
	assert.deepEqual(
		c.layers.map(l => l.name),
		["conv2d", "conv2d_2", "conv2d_10", "attribution", "x"]
	)
	const plain = S.reconcile(S.defaultState(), c, TAGS, left)
	assert.equal(plain.kind, "weights")
	const asked = S.reconcile({...S.defaultState(), layer: "conv2d", kind: "actmax", step: 1}, c, TAGS, left)
	assert.deepEqual([asked.layer, asked.kind, asked.step], ["conv2d", "actmax", 1]) // the step waits for the next kind
	const back = S.reconcile({...asked, kind: "feature_maps"}, c, TAGS, left)
	assert.equal(back.step, 0) // feature maps were logged at 0 and 2: the closest, the earlier on a tie
	const x = S.reconcile({...S.defaultState(), layer: "x"}, c, TAGS, left)
	assert.deepEqual([x.layer, x.kind], ["x", "attribution"])
	const elsewhere = S.reconcile({...S.defaultState(), runs: ["run/b"], layer: "x"}, c, TAGS, left)
	assert.equal(elsewhere.layer, "conv2d") // run/b left nothing out
})

test("a drawing's cost reads a step's plan, or the latest, and prints as a budget would", () => {
	const plan = {
		steps: [{step: 1, costs: {"c/weights": {seconds: 0.012, bytes: 20480}}}],
		costs: {"c/weights": {seconds: 0.25, bytes: 3 * 1024 * 1024, step: 4}},
	}
	assert.deepEqual(S.cost(plan, "c/weights", 1), {seconds: 0.012, bytes: 20480})
	assert.equal(S.cost(plan, "c/weights", 2), null) // not drawn at step 2
	assert.equal(S.cost(plan, "c/weights").step, 4)
	assert.equal(S.cost({steps: "garbage"}, "c/weights", 1), null) // older or broken plans
	assert.equal(S.costText(S.cost(plan, "c/weights", 1)), "0.012 s · 20 KB")
	assert.equal(S.costText(S.cost(plan, "c/weights")), "0.25 s · 3.0 MB")
	assert.equal(S.costText(null), "")
})

test("a feature map's cost names the step's shared pass and how many layers shared it", () => {
	const plan = {
		steps: [
			{
				step: 2,
				drawn: ["a/feature_maps", "b/feature_maps", "a/weights"],
				costs: {"a/feature_maps": {seconds: 0.005, bytes: 40960}, "a/weights": {seconds: 0.01, bytes: 1024}},
				passes: {feature_maps: {seconds: 0.1}},
			},
			{
				step: 3,
				drawn: ["b/feature_maps"],
				costs: {"b/feature_maps": {seconds: 0.004, bytes: 2048}},
				passes: {feature_maps: {seconds: 0.09}},
			},
		],
		costs: {"a/feature_maps": {seconds: 0.005, bytes: 40960, step: 2}},
	}
	assert.deepEqual(S.cost(plan, "a/feature_maps", 2).pass, {seconds: 0.1, shared: 2})
	assert.equal(
		S.costText(S.cost(plan, "a/feature_maps", 2)),
		"0.005 s · 40 KB, and 0.10 s of the probe images' pass, shared by 2 layers"
	)
	assert.equal(S.costText(S.cost(plan, "b/feature_maps", 3)), "0.004 s · 2.0 KB, and 0.090 s of the probe images' pass")
	assert.equal(S.cost(plan, "a/feature_maps").pass.shared, 2) // the latest, at its step
	assert.equal(S.cost(plan, "a/weights", 2).pass, undefined) // another kind shares nothing
})

test("layers come in the network's order where /tags gives it, else by name", () => {
	const tags = {
		a: {
			"Conv1/weights": {kind: "weights", layer: "Conv1", order: 0},
			"block_1_expand/weights": {kind: "weights", layer: "block_1_expand", order: 1},
			"block_16_project/weights": {kind: "weights", layer: "block_16_project", order: 3},
			"block_2_expand/weights": {kind: "weights", layer: "block_2_expand", order: 2},
			"gradcam/attribution": {kind: "attribution", layer: "gradcam"},
		},
		old: {"conv10/weights": {kind: "weights", layer: "conv10"}, "conv2/weights": {kind: "weights", layer: "conv2"}},
	}
	const names = S.buildCatalog(tags, ["a", "old"]).layers.map(l => l.name)
	// Ordered layers first, then unordered by name (numbers by value), attribution last.
	assert.deepEqual(names, [
		"Conv1",
		"block_1_expand",
		"block_2_expand",
		"block_16_project",
		"conv2",
		"conv10",
		"gradcam",
	])
})

test("layer names fall into groups of blocks and nested models; a group needs two layers", () => {
	assert.equal(S.layerGroup("backbone/block_2/se/conv"), "backbone/block_2")
	assert.equal(S.layerGroup("res1/c1"), "res1")
	assert.equal(S.layerGroup("block_3_expand"), "block_3")
	assert.equal(S.layerGroup("conv2_block1_1_conv"), "conv2")
	assert.equal(S.layerGroup("block1a_se_reduce"), "block1a")
	assert.equal(S.layerGroup("expanded_conv_depthwise"), "expanded_conv")
	assert.equal(S.layerGroup("Conv1"), "")
	const layers = ["Conv1", "block_1_expand", "block_1_project", "res1/c1", "block_2_expand"].map(name => ({name}))
	const entries = S.groupLayers(layers)
	assert.deepEqual(
		entries.map(e => (e.group ? `${e.group}:${e.layers.map(l => l.name)}` : e.layer.name)),
		["Conv1", "block_1:block_1_expand,block_1_project", "res1/c1", "block_2_expand"]
	)
	assert.ok(S.matchesQuery("block_1_Expand", " EXPAND"))
	assert.ok(!S.matchesQuery("block_1_project", "expand"))
	assert.ok(S.matchesQuery("anything", ""))
})

test("the heatmap scale survives the URL and falls back to the data's range", () => {
	assert.equal(S.stateFromHash("hscale=unit").hscale, "unit")
	assert.equal(S.stateFromHash("hscale=nonsense").hscale, "data")
	assert.equal(S.stateToHash({...S.defaultState(), hscale: "data"}), "")
})

test("the Probe view's colormap label names what its maps are drawn in", () => {
	// The Probe grid draws feature maps whatever kind the sidebar had: its auto colormap must too.
	const s = {...S.defaultState(), view: "probe", kind: "weights"}
	assert.equal(S.drawnKind(s), "feature_maps")
	assert.equal(defaultColormap(S.drawnKind(s)), "viridis")
	assert.equal(defaultColormap(S.drawnKind({...s, view: "filters"})), "diverging")
})

test("the Probe view's second step survives the hash", () => {
	const s = {...S.defaultState(), view: "probe", runs: ["train"], step: 0, vs: 9}
	assert.equal(S.stateFromHash(S.stateToHash(s)).vs, 9)
	assert.equal(S.stateFromHash("vs=-1").vs, null)
})

// A 40-step run thinned as tb_cnnviz.thinning does: every step to 15, every 2nd to 31, every 4th on.
const every2 = "thinned: every 2nd step is drawn from step 16 on (a long run)"
const every4 = "thinned: every 4th step is drawn from step 32 on (a long run)"
const LONG = {
	steps: Array.from({length: 40}, (_, step) => {
		const thinned = step >= 32 ? step % 4 && step !== 39 && every4 : step >= 16 && step % 2 && every2
		return thinned ? {step, drawn: [], skipped: {}, thinned} : {step, drawn: ["c/weights"], skipped: {}}
	}),
}

test("thinned steps join one span per reason across the drawn steps between them", () => {
	assert.deepEqual(S.thinnedSpans(LONG), [
		{from: 17, to: 31, count: 8, reason: every2},
		{from: 33, to: 38, count: 5, reason: every4},
	])
	assert.equal(
		S.spanText(S.thinnedSpans(LONG)[0]),
		"steps 17–31 thinned (8): every 2nd step is drawn from step 16 on (a long run)"
	)
	assert.deepEqual(S.thinnedSpans({steps: [{step: 3, thinned: 7}, null]}), [])
	assert.deepEqual(S.thinnedSpans(null), [])
})

test("the slider note names thinned spans, the run when several show, and a resumed step", () => {
	const note = S.stepNote([["r", LONG]], 20)
	assert.equal(
		note.text,
		"Steps 17–31 thinned (8): every 2nd step is drawn from step 16 on (a long run) · steps 33–38 thinned (5): every 4th step is drawn from step 32 on (a long run)"
	)
	assert.equal(note.resumed, false)
	assert.equal(S.stepNote([["r", {steps: [{step: 0, drawn: ["c/weights"]}]}]], 0), null)
	const resumed = {
		steps: [
			...LONG.steps.slice(0, 5),
			{step: 5, drawn: ["c/weights"], resumed: {previous_last_step: 7, from_step: 5, replaced: true}},
		],
	}
	const two = S.stepNote(
		[
			["a", LONG],
			["b", resumed],
		],
		5
	)
	assert.equal(two.resumed, true)
	assert.match(two.text, /^Resumed here in b: a new job took over from step 5 · a: steps 17–31 thinned/)
	assert.doesNotMatch(two.text, /more/)
	const three = S.stepNote(
		[
			["a", LONG],
			["b", resumed],
		],
		3
	)
	assert.match(three.text, /· \+1 more$/)
	assert.match(three.title, /\nB: resumed at step 5/)
	assert.match(S.stepNote([["b", resumed]], 3).text, /^Resumed at step 5 \(the earlier job had reached step 7\)$/)
})

test("a thinned step's reason reads without its prefix; a drawn or unknown step has none", () => {
	assert.equal(S.thinnedReason(LONG, 17), "every 2nd step is drawn from step 16 on (a long run)")
	assert.equal(S.thinnedReason(LONG, 18), undefined)
	assert.equal(S.thinnedReason({steps: "x"}, 17), undefined)
})
