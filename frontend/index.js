// The CNN Viz tab: TensorBoard's iframe imports this module and calls `render()` once. It wires
// events: it keeps the view state (the iframe's hash, mirrored into TensorBoard's URL as
// `p.cnnviz.*`; see state.js), asks model.js for data, and hands it to views.js and grid.js.

import { Model, STALE } from "./static/model.js";
import * as V from "./static/views.js";
import * as G from "./static/grid.js";
import * as S from "./static/state.js";
import { COLORMAPS, COLORMAP_LABELS, defaultColormap } from "./static/colormaps.js";
import { connectGuest } from "./static/guest.js";

const PLAY_MS = 600;
const AXIS = {
  input_channel: ["input channel", "input channels", "channel"], input_channel_grid: ["input weights", "input weights", "weights"],
  probe: ["probe image", "probe images", "probe"], image: ["image", "images", "image"], rgb: ["RGB", "RGB", "RGB"],
};
const axisWords = (axis) => AXIS[axis] || ["slice", "slices", "slice"];
const sliceName = (index, s) => index.slices.labels?.[s] ?? `${axisWords(index.slices.axis)[2]} ${s}`;
const noun = (kind) => (kind === "attribution" ? "Probe image" : "Filter");
const options = (values, labels) => values.map((value) => ({ value, label: labels[value] }));
const overlayChoices = (index) => G.overlayPairs(index.slices).map(([, heat]) => ({ value: `o${heat}`, label: `${sliceName(index, heat)} over image` }));
const stepsOf = (run, tag) => tags[run]?.[tag]?.steps || [];
const dpr = () => window.devicePixelRatio || 1;
const errorText = (err) => String(err?.message || err);

const model = new Model();
let ui, guest;
let state = S.defaultState();
let catalog = S.buildCatalog({});
let tags = {}, runList = [], plans = {}, requested = state; // plans: run -> /plan (null: none); requested: before reconcile
let playing = false, playTimer = 0, hashTimer = 0, autoZoom = 4, focusFilter = null;
let firstGridMarked = false, refreshing = false;
let scratch = new Uint8ClampedArray(0);
let inspKey = "";
const panels = new Map(); // run -> panel element
const shown = new Map(); // run -> {order: filter ids as shown, dead}
const boundsMemo = new WeakMap();

/** Draws the tab into the iframe's body; TensorBoard's plugin entry page calls it once. */
export async function render() {
  const catalogLoad = loadCatalog(); // in parallel with the stylesheet
  catalogLoad.catch(() => {});
  await new Promise((resolve) => {
    document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href: "./static/style.css", onload: resolve, onerror: resolve }));
    setTimeout(resolve, 1500);
  });
  ui = V.buildShell();
  document.body.replaceChildren(ui.app);
  watchTheme();
  wireEvents();
  guest = connectGuest(window);
  guest.on("experimental.DataReloaded", refresh);
  await start(catalogLoad);
}

async function start(catalogLoad) {
  V.swapContent(ui.panels, V.loadingCard("Loading runs…"));
  const initial = await initialState();
  try {
    await (catalogLoad || loadCatalog());
    await loadPlans(initial);
  } catch (err) {
    V.swapContent(ui.panels, V.messageCard("Could not reach the CNN Viz plugin", errorText(err), { tone: "error", action: "retry" }));
    return;
  }
  await commit(initial);
}

async function loadCatalog() {
  const [runs, t] = await Promise.all([model.runs(), model.tags()]);
  tags = t && typeof t === "object" ? t : {};
  runList = Array.isArray(runs) ? runs : [];
  catalog = S.buildCatalog(tags, runList, leftOut());
}

const leftOut = () => Object.fromEntries(Object.entries(plans).map(([r, p]) => [r, S.leftOut(p, tags[r])]));

/** Loads the plans of the runs `next` shows (failed: none; `fresh`: forgets the others); the catalog then names what they left out. */
async function loadPlans(next, fresh = false) {
  const runs = S.reconcile(next, catalog, tags, leftOut()).runs;
  const got = await Promise.all(runs.map(async (r) => [r, await model.plan(r).catch(() => null)]));
  plans = { ...(fresh ? {} : plans), ...Object.fromEntries(got) };
  catalog = S.buildCatalog(tags, runList, leftOut());
}

/** The iframe's hash (an iframe reload), else TensorBoard's URL (a page reload or a shared link). */
async function initialState() {
  if (S.hashHasState(location.hash)) return S.stateFromHash(location.hash);
  try {
    return S.paramsToState(window.parent === window ? [] : S.pluginDataFromParentHash(window.parent.location.hash));
  } catch { /* cross-origin parent: ask TensorBoard */ }
  const data = await guest.request("experimental.GetURLPluginData", null, 800).catch(() => null);
  return S.paramsToState(Object.entries(data && typeof data === "object" ? data : {}).map(([k, v]) => [k, String(v)]));
}

/** Makes `next` the state (validated), writes the URL, redraws; resolves when the grid is painted. */
function commit(next) {
  requested = next;
  state = S.reconcile(next, catalog, tags, leftOut());
  clearTimeout(hashTimer);
  hashTimer = setTimeout(writeHash, 120);
  renderChrome();
  const painted = renderGrid();
  renderInspector();
  if (state.runs.some((run) => !(run in plans))) { // what a new run left out becomes selectable
    loadPlans(state).then(() => commit({ ...state, layer: requested.layer, kind: requested.kind }));
  }
  return painted;
}

const update = (patch) => commit({ ...state, ...patch });

/** Sets a window's hash in place, by an absolute URL: a bare "#…" would resolve against <base href>. */
function replaceHash(win, hash) {
  const url = new URL(win.location.href);
  url.hash = hash;
  win.history.replaceState(win.history.state, "", url.href);
}

function writeHash() {
  const hash = S.stateToHash(state);
  if (location.hash.replace(/^#/, "") !== hash) replaceHash(window, hash);
  try {
    const parent = window.parent;
    const current = parent.location.hash.replace(/^#/, "");
    const merged = S.mergeParentHash(current, state);
    if (parent === window || merged === current) return;
    replaceHash(parent, merged);
    // TensorBoard caches its hash dictionary and refreshes it on "hashchange"; without this
    // event its next own write of the hash would drop our keys.
    parent.dispatchEvent(new HashChangeEvent("hashchange"));
  } catch { /* cross-origin parent: the iframe's hash still holds the state */ }
}

/** TensorBoard's dark mode is a class on its body; outside TensorBoard, the OS setting. */
function watchTheme() {
  const apply = (dark) => document.documentElement.classList.toggle("cv-dark", dark);
  try {
    const body = window.parent !== window && window.parent.document.body;
    if (body) {
      const read = () => apply(body.classList.contains("dark-mode"));
      new MutationObserver(read).observe(body, { attributes: true, attributeFilter: ["class"] });
      return read();
    }
  } catch { /* cross-origin parent */ }
  const mq = window.matchMedia("(prefers-color-scheme: dark)");
  apply(mq.matches);
  mq.addEventListener("change", (e) => apply(e.matches));
}

/** TensorBoard broadcasts "experimental.DataReloaded" after its reload: new steps may exist. */
async function refresh() {
  if (refreshing || !ui) return;
  refreshing = true;
  try {
    const before = currentSteps();
    const atLatest = !before.length || state.step === before[before.length - 1];
    const known = () => JSON.stringify([tags, state.runs.map((run) => plans[run])]);
    const old = known();
    model.invalidate();
    await loadCatalog();
    await loadPlans(state, true);
    if (known() !== old) {
      inspKey = ""; // statistics may have grown
      await commit({ ...state, step: atLatest ? null : state.step }); // follow the latest step
    }
  } catch { /* keep what we show; the next reload tries again */ }
  refreshing = false;
}

// Chrome: sidebar and toolbar.

const currentTag = () => S.currentTag(state, catalog);
const currentSteps = () => G.unionSteps(tags, state.runs, currentTag());
const effectiveCmap = (kind = state.kind) => state.cmap || defaultColormap(kind);
const runIndex = (run) => Math.max(0, catalog.runs.indexOf(run));
const currentLayer = () => catalog.layers.find((l) => l.name === state.layer);

function renderChrome() {
  const tag = currentTag();
  const held = new Set(state.runs.flatMap((r) => Object.keys(tags[r] || {})));
  const left = new Map(state.runs.flatMap((r) => Object.entries(leftOut()[r] || {})).filter(([t]) => !held.has(t)));
  ui.runsCount.textContent = catalog.runs.length ? `${state.runs.length} of ${catalog.runs.length}` : "";
  V.swapContent(ui.runs, ...V.runsList(catalog.runs.map((name, i) => ({ name, color: V.runColor(i), checked: state.runs.includes(name), hasTag: Boolean(tags[name]?.[tag]) }))));
  V.swapContent(ui.layers, ...V.layersList(catalog.layers.map((l) => ({
    name: l.name, active: l.name === state.layer, held: l.tags.some((t) => held.has(t.tag) || left.has(t.tag)),
    kinds: [...new Set(l.tags.map((t) => (left.has(t.tag) ? "no " : "") + S.kindLabel(t.kind).toLowerCase()))],
  }))));
  renderDisplay();
  const tabs = (currentLayer()?.tags || []).map((t) => ({ tag: t.tag, label: S.kindLabel(t.kind), held: held.has(t.tag) || left.has(t.tag), left: left.get(t.tag) }));
  V.swapContent(ui.kinds, ...V.kindTabs(tabs, tag));
  renderSteps();
}

function renderDisplay(rgb = false, range = null) {
  V.swapContent(ui.display, ...V.displayControls({
    norms: options(G.NORM_MODES, G.NORM_LABELS), norm: state.norm,
    cmaps: options(COLORMAPS, COLORMAP_LABELS), cmap: effectiveCmap(), cmapAuto: !state.cmap,
    zoom: state.zoom || autoZoom, zoomAuto: !state.zoom, rgb, range,
  }));
}

function renderSteps() {
  const steps = currentSteps();
  V.updateStepControls(ui.steps, { steps, index: Math.max(0, steps.indexOf(state.step)), playing });
}

function renderTools(index, stats, hasDead) {
  const slices = [];
  if (index && index.slices.count > 1) {
    slices.push(...overlayChoices(index), { value: "all", label: `All ${axisWords(index.slices.axis)[1]}` });
    for (let s = 0; s < index.slices.count; s++) slices.push({ value: String(s), label: sliceName(index, s) });
  }
  const keys = G.sortableStats(stats);
  if (state.sort !== "id" && !keys.includes(state.sort)) keys.push(state.sort);
  const slice = String(sliceOf(index));
  V.swapContent(ui.tools, ...V.gridTools({
    slices, slice, sorts: [{ value: "id", label: `${noun(state.kind)} index` }, ...keys.map((k) => ({ value: k, label: G.statLabel(k) }))],
    sort: state.sort, desc: state.desc, shows: options(G.SHOW_MODES, G.SHOW_LABELS), show: state.show, hasDead, alpha: slice.startsWith("o") ? state.alpha : null,
  }));
}

const sliceOf = (index) => (state.slice === null && index ? G.defaultSlice(index.slices) : state.slice ?? 0);

// The grid: one panel per selected run, all at the same step.

async function renderGrid() {
  const ticket = model.ticket("grid");
  model.cancelPrefetch();
  ui.app.classList.toggle("is-empty", !catalog.runs.length);
  if (!catalog.runs.length) {
    panels.clear();
    V.swapContent(ui.panels, V.messageCard("No CNN Viz data yet",
      "Every logged step of your conv layers shows here; new steps appear on TensorBoard's reload.",
      { code: "from tb_cnnviz.callbacks import CNNViz\n\nmodel.fit(x, y, epochs=10, callbacks=[\n    CNNViz(log_dir=\"logs\", probe_images=x[:8])])" }));
    return renderTools(null, new Map(), false);
  }
  for (const [run, panel] of panels) if (!state.runs.includes(run)) { panels.delete(run); shown.delete(run); }
  const nodes = state.runs.map((run) => panels.get(run) || panels.set(run, V.buildPanel(run)).get(run));
  if (nodes.some((n, i) => ui.panels.children[i] !== n) || ui.panels.children.length !== nodes.length) ui.panels.replaceChildren(...nodes);
  ui.panels.classList.toggle("is-compare", nodes.length > 1);
  const tag = currentTag();
  const jobs = state.runs.map((run) => {
    const steps = stepsOf(run, tag);
    const step = steps.includes(state.step) ? state.step : null; // never another step's pictures
    return { run, step, near: G.closestStep(steps, state.step), plan: model.plan(run).catch(() => null), data: step === null ? null : model.layer(run, tag, step) };
  });
  let busy = 0;
  if (jobs.some((j) => j.data && !model.hasLayer(j.run, tag, j.step))) {
    busy = setTimeout(() => ticket.live && ui.main.classList.add("is-busy"), 120);
    for (const j of jobs) if (j.data && !shown.has(j.run)) V.panelMessage(panels.get(j.run), V.loadingCard(`Loading ${tag} at step ${j.step}…`));
  }
  const loads = [Promise.allSettled(jobs.map((j) => j.data)), ...jobs.map(async (j) => { j.plan = await j.plan; })];
  const settled = await ticket.guard(Promise.all(loads).then((done) => done[0]));
  clearTimeout(busy);
  if (settled === STALE) return;
  ui.main.classList.remove("is-busy");
  // Statistics of the layer's other kinds (dead flags, sorting weights by activation). They are
  // cached per (run, tag), so after the first step they are ready at once; a slow first load is
  // awaited only when the order depends on it, else applied when it arrives.
  const siblings = Promise.all(jobs.map((j) => (j.step === null ? [] : siblingStats(j.run, tag, j.step))));
  const needed = (state.sort !== "id" && !state.sort.startsWith(`${state.kind}.`)) || (state.show !== "all" && state.kind !== "feature_maps");
  const extra = await ticket.guard(needed ? siblings : Promise.race([siblings, new Promise((r) => setTimeout(r, 30, null))]));
  if (extra === STALE) return;
  paintAll(jobs, settled, extra);
  if (!extra) siblings.then((more) => ticket.live && more.some((m) => m.length) && paintAll(jobs, settled, more));
  for (const j of jobs) { // prefetch the neighbouring steps
    const steps = stepsOf(j.run, tag);
    const i = steps.indexOf(j.step);
    if (i >= 0) model.prefetch(j.run, tag, [steps[i + 1], steps[i - 1], steps[i + 2], steps[i - 2]].filter((s) => s !== undefined));
  }
  if (!firstGridMarked && ui.panels.querySelector(".cv-tile")) {
    firstGridMarked = true;
    requestAnimationFrame(() => performance.mark("cnnviz:first-grid")); // for benchmarks/dashboard.py
  }
  document.dispatchEvent(new CustomEvent("cnnviz:painted")); // for tests and benchmarks
}

function paintAll(jobs, settled, extra) {
  let first = null, anyDead = false;
  const sortStats = new Map();
  const what = `${state.layer} · ${S.kindLabel(state.kind)}`, tag = currentTag();
  jobs.forEach((job, k) => {
    const panel = panels.get(job.run);
    const runLeft = S.leftOut(job.plan, tags[job.run]);
    const head = { run: job.run, color: V.runColor(runIndex(job.run)), step: job.step, wallTime: 0, facts: [], layerStats: [], notes: [], left: S.groupLeftOut(runLeft, catalog.byTag) };
    const data = settled[k].value;
    let message = null;
    if (tag in runLeft) message = V.messageCard(`${what} was not drawn in this run`, runLeft[tag], { tone: "warn" });
    else if (job.near === null) message = V.messageCard(`No ${S.kindLabel(state.kind) || "pictures"} of ${state.layer} in this run`);
    else if (job.step === null) {
      head.step = state.step;
      message = V.messageCard(`${what} was not drawn at step ${state.step} in this run`, S.skipReason(job.plan, tag, state.step) || "No picture was logged at this step.",
        { tone: "warn", action: "goto-step", label: `Go to step ${job.near}, the nearest drawn`, data: { step: job.near } });
    } else if (settled[k].status === "rejected") message = V.messageCard(`Could not load step ${job.step}`, errorText(settled[k].reason), { tone: "error", action: "retry-grid" });
    else if (!data.index) message = V.messageCard(`Step ${job.step} cannot be drawn`, data.warning || "", { tone: "warn" });
    if (message) {
      shown.delete(job.run);
      V.updatePanelHead(panel, { ...head, wallTime: data?.wall_time || 0 });
      return V.panelMessage(panel, message);
    }
    const stats = G.collectStats([{ kind: data.index.kind || state.kind, filters: data.index.filters, stats: data.index.stats }, ...((extra && extra[k]) || [])]);
    for (const [key, v] of stats) if (!sortStats.has(key)) sortStats.set(key, v);
    const info = paintPanel(panel, job, data, stats);
    anyDead ||= info.hasDead;
    V.updatePanelHead(panel, { ...head, wallTime: data.wall_time, ...info, notes: (data.index.notes || []).map(String) });
    first ||= data;
  });
  renderTools(first?.index, sortStats, anyDead);
  if (first) {
    const b = state.norm === "layer" && boundsFor(first, "layer");
    renderDisplay(first.index.tile[2] === 3, b && b.lo.length ? [b.lo[0], b.hi[0]] : null);
  }
}

function paintPanel(panel, job, data, stats) {
  const index = data.index;
  const [h, w] = index.tile;
  const slice = sliceOf(index);
  const slices = G.shownSlices(index, slice);
  const layout = G.mosaicLayout(h, w, slices.length);
  autoZoom = G.autoZoom(layout.width, layout.height);
  const dead = G.deadFilters(stats);
  const values = state.sort === "id" ? null : stats.get(state.sort) || null;
  const order = G.filterOrder(G.sortOrder(index.filters, values, state.desc), index.filters, state.show, dead);
  const captions = values ? new Map(index.filters.map((id) => [id, G.formatStat(values.get(id))])) : predictionCaptions(index, job.run);
  const selected = job.run === (state.frun || state.runs[0]) ? state.filter : null;
  const canvases = V.syncGrid(panel.querySelector(".cv-grid"), {
    filters: index.filters, order, dead, captions, valueLabel: values ? `${G.statLabel(state.sort)} ` : "", noun: noun(index.kind), focus: focusFilter,
    selected, width: layout.width, height: layout.height, zoom: state.zoom || autoZoom, dpr: dpr(),
  });
  const size = layout.width * layout.height * 4;
  if (scratch.length !== size) scratch = new Uint8ClampedArray(size);
  const look = `${state.norm}|${effectiveCmap(index.kind)}|${slice}|${state.alpha}`;
  for (const [pos, canvas] of canvases) {
    if (canvas._data === data && canvas._look === look) continue; // a canvas keeps its pixels while order or marks change
    Object.assign(canvas, { _data: data, _look: look });
    V.putPixels(canvas, draw(data, pos, slice, scratch));
  }
  shown.set(job.run, { order: order.map((i) => index.filters[i]), dead });
  V.panelMessage(panel, order.length ? null : V.messageCard(`No ${noun(index.kind).toLowerCase()} is ${state.show} at step ${job.step}`, "", { action: "show-all", label: "Show all" }));
  const n = index.filters.length, total = index.total_filters || n, count = index.slices.count;
  const deadCount = dead ? [...dead.values()].filter(Boolean).length : 0;
  const facts = [`${n < total ? `${n} of ${total}` : n} ${noun(index.kind).toLowerCase()}s`, `${h}×${w}${count > 1 && !index.slices.labels ? ` × ${count} ${axisWords(index.slices.axis)[1]}` : ""}`];
  if (dead) facts.push(`${deadCount} dead`);
  if (order.length !== n) facts.push(`showing ${order.length}`);
  const layerStats = Object.entries(index.layer_stats || {}).filter(([, v]) => typeof v === "number").map(([k, v]) => [k.replace(/_/g, " "), G.formatStat(v)]);
  return { facts, layerStats, hasDead: Boolean(dead), deadFact: deadCount ? `${deadCount} dead` : "" };
}

/** Attribution tiles say what the model predicted: "3 · 92% ✓" (class names if /tags has them). */
function predictionCaptions(index, run) {
  const { predicted: p = [], confidence: c = [], correct: ok = [] } = index.stats || {};
  const names = tags[run]?.[currentTag()]?.class_names || [];
  if (index.kind !== "attribution" || !p.length) return null;
  return new Map(index.filters.map((id, i) => [id, `${names[p[i]] ?? p[i]}${c[i] >= 0 ? ` · ${Math.round(c[i] * 100)}%` : ""}${ok[i] === true ? " ✓" : ok[i] === false ? " ✗" : ""}`]));
}

/** One filter of a layer step as `slice` shows it: a mosaic of slices, or a heatmap over its image. */
function draw(data, pos, slice, out) {
  const index = data.index;
  const common = { index, atlases: data.atlases, locations: data.locations, position: pos, colormap: effectiveCmap(index.kind) };
  const pair = G.overlayPairs(index.slices).find((p) => `o${p[1]}` === String(slice));
  if (pair) return G.renderOverlay({ ...common, image: pair[0], heat: pair[1], alpha: state.alpha / 100 });
  return G.renderFilter({ ...common, bounds: boundsFor(data, state.norm), slices: G.shownSlices(index, slice), mono: G.monoSlices(index), out });
}

/** Normalization bounds, once per (layer step, mode). */
function boundsFor(data, norm) {
  const memo = boundsMemo.get(data) || boundsMemo.set(data, new Map()).get(data);
  if (!memo.has(norm)) memo.set(norm, G.normBounds(data.index, norm));
  return memo.get(norm);
}

/** Statistics of the layer's other tags at `step` or just before it, for one run. */
function siblingStats(run, tag, step) {
  const others = (currentLayer()?.tags || []).filter((t) => t.tag !== tag && t.kind !== "attribution" && tags[run]?.[t.tag]);
  return Promise.all(others.map((t) => model.stats(run, t.tag).then((data) => {
    const e = (data.series || []).filter((x) => x.step <= step).pop();
    return e ? { kind: t.kind, filters: e.filters, stats: e.stats } : null;
  }, () => null))).then((found) => found.filter(Boolean));
}

// The inspector: one filter of one run, across kinds and steps.

const inspectedRun = () => state.frun || state.runs[0];

async function renderInspector() {
  const open = state.filter !== null && Boolean(currentLayer()) && state.runs.length > 0;
  const wasOpen = !ui.inspector.hidden;
  ui.inspector.hidden = !open;
  ui.app.classList.toggle("has-inspector", open);
  const run = inspectedRun(), filter = state.filter, tag = currentTag(), layer = currentLayer();
  const key = [open, run, filter, tag, state.step, state.norm, state.cmap, state.slice, state.alpha].join("\u0000");
  if (!open) inspKey = "";
  if (!open || key === inspKey) return open || ui.inspector.replaceChildren();
  inspKey = key;
  const ticket = model.ticket("inspector");
  const { order = [], dead } = shown.get(run) || {};
  const at = order.indexOf(filter);
  const view = V.inspectorView({
    title: `${noun(state.kind)} ${filter}`, run, layer: layer.name, step: state.step, color: V.runColor(runIndex(run)),
    dead: Boolean(dead?.get(filter)), canPrev: at > 0, canNext: at >= 0 && at < order.length - 1,
  });
  const scroll = ui.inspector.scrollTop;
  ui.inspector.replaceChildren(view.root);
  ui.inspector.scrollTop = scroll;
  if (!wasOpen) ui.inspector.focus({ preventScroll: true });
  const runTags = layer.tags.filter((t) => stepsOf(run, t.tag).length);
  loadEvolution(run, tag, filter, view, ticket);
  await Promise.all([
    ...runTags.filter((t) => t.kind !== "attribution" || t.tag === tag).map(async (t) => {
      const label = S.kindLabel(t.kind);
      const holder = view.sections.appendChild(V.pictureSection(label, "loading…"));
      const steps = tags[run][t.tag].steps;
      const step = steps.filter((s) => s <= (state.step ?? Infinity)).pop();
      let section;
      if (step === undefined) section = V.pictureSection(label, `first logged at step ${steps[0]}`);
      else {
        try { section = filterPictures(label, await model.layer(run, t.tag, step), filter, step); }
        catch (err) { section = V.pictureSection(label, "could not load", errorText(err)); }
      }
      if (ticket.live) holder.replaceWith(section);
    }),
    inspectorStats(run, runTags, filter, view, ticket),
  ]);
}

/** Every slice of one filter in one layer step (and, for attribution, the overlays). */
function filterPictures(label, data, filter, step) {
  const index = data.index;
  if (!index) return V.pictureSection(label, `step ${step}`, data.warning || "");
  const pos = index.filters.indexOf(filter), count = index.slices.count, [h, w] = index.tile;
  const [one, many] = axisWords(index.slices.axis);
  const sub = `${h}×${w} · ${index.slices.axis === "rgb" ? "RGB" : `${count} ${count === 1 ? one : many}`}${step !== state.step ? ` · from step ${step}` : ""}`;
  if (pos < 0) return V.pictureSection(label, sub, "Not drawn at this step (the layer was sampled).");
  const items = overlayChoices(index).map((o) => ({ label: o.label, pixels: draw(data, pos, o.value) }));
  for (let s = 0; s < count; s++) items.push({ label: index.slices.axis === "rgb" ? "RGB" : sliceName(index, s), pixels: draw(data, pos, s) });
  // the largest integer zoom fitting 4 pictures a row (6 if many)
  const perRow = Math.min(items.length, items.length <= 16 ? 4 : 6);
  const cell = Math.floor(((ui.inspector.clientWidth || 400) - 40 - (perRow - 1) * 8) / perRow);
  const zoom = Math.max(1, Math.min(24, Math.floor(cell / w), Math.floor(160 / h)));
  return V.pictureSection(label, sub, "", items, zoom, dpr());
}

async function inspectorStats(run, runTags, filter, view, ticket) {
  const rows = [];
  await Promise.all(runTags.map((t) => model.stats(run, t.tag).then((data) => {
    const series = data.series || [];
    const now = series.filter((e) => e.step <= (state.step ?? Infinity)).pop();
    for (const name of new Set(series.flatMap((e) => Object.keys(e.stats || {})))) {
      const value = (e) => e?.stats?.[name]?.[(e.filters || []).indexOf(filter)];
      const points = series.map((e) => ({ step: e.step, value: typeof value(e) === "boolean" ? Number(value(e)) : value(e) ?? null }));
      rows.push({ key: `${t.kind}.${name}`, label: G.statLabel(`${t.kind}.${name}`), value: G.formatStat(value(now)), points });
    }
  }, () => {})));
  if (!ticket.live) return;
  const order = G.orderStats(rows.map((r) => r.key));
  rows.sort((a, b) => order.indexOf(a.key) - order.indexOf(b.key));
  view.stats.replaceChildren(...V.statsRows(rows, state.step));
}

/** The evolution strip: the filter as the grid shows it at up to 32 steps, loaded two at a time. */
async function loadEvolution(run, tag, filter, view, ticket) {
  const steps = G.sampleSteps(stepsOf(run, tag), 32);
  const frames = steps.map((s) => V.evolutionFrame(s, s === state.step)); // cached steps paint at once
  view.evolution.replaceChildren(...frames);
  let next = 0;
  const worker = async () => {
    while (next < steps.length && ticket.live) {
      const k = next++;
      const data = await model.layer(run, tag, steps[k], { prefetch: true }).catch(() => null);
      const pos = data?.index ? data.index.filters.indexOf(filter) : -1;
      if (!ticket.live || pos < 0) continue;
      const px = draw(data, pos, sliceOf(data.index));
      V.paintCanvas(frames[k].firstChild, px, G.autoZoom(px.width, px.height, 44), dpr());
    }
  };
  await Promise.all([worker(), worker()]);
}

// Events: one listener per type on the root, dispatching on data-action.

function wireEvents() {
  ui.app.addEventListener("click", (e) => {
    const t = e.target.closest("[data-action]");
    if (t && !t.matches("input, select")) act(t);
  });
  ui.app.addEventListener("change", (e) => {
    const t = e.target, v = t.value, { action, run } = t.dataset;
    if (action === "toggle-run") {
      const runs = t.checked ? [...state.runs, run] : state.runs.filter((r) => r !== run);
      update({ runs: catalog.runs.filter((r) => runs.includes(r)) });
    } else if (action === "set-slice") update({ slice: v === "all" || v.startsWith("o") ? v : Number(v) });
    else if (action === "set-sort") update({ sort: v, desc: v !== "id" });
    else if (action === "set-show") update({ show: v });
  });
  ui.app.addEventListener("input", (e) => {
    const t = e.target;
    if (t.dataset.action === "step-slider") {
      const step = currentSteps()[Number(t.value)];
      if (step !== undefined && step !== state.step) { stopPlay(); update({ step }); }
    } else if (t.dataset.action === "set-alpha") update({ alpha: Number(t.value) });
  });
  ui.app.addEventListener("keydown", onGridKey, true);
  document.addEventListener("keydown", onKey);
  ui.app.addEventListener("focusin", (e) => {
    const tile = e.target.closest?.(".cv-tile");
    if (tile) focusFilter = Number(tile.dataset.filter);
  });
}

function act(t) {
  const d = t.dataset;
  const actions = {
    "only-run": () => update({ runs: [d.run] }),
    "select-layer": () => update({ layer: d.layer, filter: null }),
    "select-kind": () => {
      const info = catalog.byTag.get(d.tag);
      if (info) update({ kind: info.kind, slice: info.kind === state.kind ? state.slice : null });
    },
    "set-norm": () => update({ norm: d.value }),
    "set-cmap": () => update({ cmap: d.value }),
    "zoom-in": () => zoomBy(1),
    "zoom-out": () => zoomBy(-1),
    "zoom-fit": () => update({ zoom: null }),
    "toggle-desc": () => update({ desc: !state.desc }),
    play: togglePlay,
    prev: () => stepBy(-1),
    next: () => stepBy(1),
    "open-filter": () => {
      const run = t.closest(".cv-panel")?.dataset.run;
      focusFilter = Number(d.filter);
      update({ filter: focusFilter, frun: run === state.runs[0] ? null : run });
    },
    "close-inspector": closeInspector,
    "prev-filter": () => inspectNeighbour(-1),
    "next-filter": () => inspectNeighbour(1),
    "goto-step": () => { stopPlay(); update({ step: Number(d.step) }); },
    "show-all": () => update({ show: "all" }),
    retry: () => start(),
    "retry-grid": () => { model.invalidate(); commit(state); },
  };
  actions[d.action]?.();
}

function zoomBy(delta) {
  const z = state.zoom || autoZoom;
  const next = delta > 0 ? (z < 4 ? z + 1 : Math.round(z * 1.5)) : z <= 4 ? z - 1 : Math.round(z / 1.5);
  update({ zoom: G.clamp(next, 1, G.MAX_ZOOM) });
}

function stepBy(delta) {
  stopPlay();
  const steps = currentSteps();
  const step = steps[G.clamp(steps.indexOf(state.step) + delta, 0, steps.length - 1)];
  if (step !== undefined && step !== state.step) update({ step });
}

function togglePlay() {
  if (playing) return stopPlay();
  const steps = currentSteps();
  if (steps.length < 2) return;
  playing = true;
  renderSteps();
  const tick = async () => {
    const all = currentSteps();
    const i = all.indexOf(state.step);
    await update({ step: all[i >= all.length - 1 ? 0 : i + 1] }); // from the end, start over
    if (playing) playTimer = setTimeout(tick, PLAY_MS);
  };
  playTimer = setTimeout(tick, state.step === steps[steps.length - 1] ? 0 : PLAY_MS);
}

function stopPlay() {
  if (!playing) return;
  playing = false;
  clearTimeout(playTimer);
  renderSteps();
}

function closeInspector() {
  const grid = panels.get(inspectedRun())?.querySelector(".cv-grid");
  const filter = state.filter;
  update({ filter: null, frun: null });
  grid?._tiles?.get(filter)?.focus();
}

function inspectNeighbour(delta) {
  const order = shown.get(inspectedRun())?.order || [];
  const next = order[order.indexOf(state.filter) + delta];
  if (state.filter !== null && order.includes(state.filter) && next !== undefined) { focusFilter = next; update({ filter: next }); }
}

/** Arrow keys inside a grid move between tiles (the WAI-ARIA grid pattern). */
function onGridKey(e) {
  const tile = e.target.closest?.(".cv-tile");
  if (!tile || e.altKey || e.ctrlKey || e.metaKey) return;
  const tiles = [...tile.parentElement.children];
  const i = tiles.indexOf(tile);
  const cols = tiles.findIndex((t) => t.offsetTop !== tiles[0].offsetTop);
  const row = cols < 0 ? tiles.length : cols;
  const move = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -row, ArrowDown: row, Home: -i, End: tiles.length - 1 - i }[e.key];
  if (move === undefined) return;
  e.preventDefault();
  e.stopPropagation();
  const target = tiles[G.clamp(i + move, 0, tiles.length - 1)];
  tile.tabIndex = -1;
  target.tabIndex = 0;
  target.focus();
}

function onKey(e) {
  if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target instanceof HTMLElement ? e.target : document.body;
  if (e.key === "Escape" && state.filter !== null) return closeInspector();
  if (t.matches("input:not([type=checkbox]):not([type=range]), select, textarea") || t.isContentEditable) return;
  const onRange = t.matches("input[type=range]"); // the slider moves itself with arrows, Home, End
  const keys = {
    ",": () => stepBy(-1), ".": () => stepBy(1),
    ArrowLeft: () => stepBy(-1), ArrowRight: () => stepBy(1), Home: () => stepBy(-1e9), End: () => stepBy(1e9),
    p: togglePlay, P: togglePlay, " ": togglePlay, "+": () => zoomBy(1), "=": () => zoomBy(1), "-": () => zoomBy(-1),
    0: () => update({ zoom: null }), "[": () => inspectNeighbour(-1), "]": () => inspectNeighbour(1),
  };
  if (!keys[e.key] || (onRange && /^(Arrow|Home|End)/.test(e.key)) || (e.key === " " && t.matches("button, input"))) return;
  e.preventDefault();
  keys[e.key]();
}
