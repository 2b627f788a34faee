// Requests, caches and stale-response dropping of model.js, with a fake fetch and decoder.

import assert from "node:assert/strict"
import {test} from "node:test"
import {ApiError, Model, STALE, url} from "../../frontend/model.js"

const INDEX = {
	kind: "weights",
	layer: "c",
	tile: [1, 1, 1],
	filters: [0, 1],
	slices: {axis: "input_channel", count: 1},
	atlases: [{blob: 1, cols: 2, rows: 1, count: 2}],
	ranges: [
		[0, 1],
		[0, 1],
	],
	stats: {},
}

function fakeServer(routes) {
	const calls = []
	const fetch = async path => {
		calls.push(path)
		const handler = routes.find(([prefix]) => path.startsWith(prefix))
		if (!handler) return response(404, JSON.stringify({error: `no route ${path}`}))
		return handler[1](path)
	}
	return {fetch, calls}
}

function response(status, text) {
	return {
		ok: status >= 200 && status < 300,
		status,
		statusText: "",
		text: async () => text,
		blob: async () => ({size: text.length, text}),
	}
}

const decode = async () => ({width: 2, height: 1, data: new Uint8ClampedArray(8)})
const layerRoute = [
	"./layer",
	path => {
		const step = Number(new URLSearchParams(path.split("?")[1]).get("step"))
		return response(
			200,
			JSON.stringify({run: "r", tag: "t", step, wall_time: 1, index: INDEX, atlases: [`blob?key=k${step}`]})
		)
	},
]
const blobRoute = ["blob?key=", () => response(200, "png")]

test("urls are relative and encode their parameters", () => {
	assert.equal(url("tags"), "./tags")
	assert.equal(url("layer", {run: "a b/<c>", tag: "x&y", step: 3}), "./layer?run=a+b%2F%3Cc%3E&tag=x%26y&step=3")
})

test("runs and tags are cached until invalidated", async () => {
	const server = fakeServer([
		["./runs", () => response(200, '["a"]')],
		["./tags", () => response(200, "{}")],
	])
	const m = new Model({fetch: server.fetch, decode})
	assert.deepEqual(await m.runs(), ["a"])
	await m.runs()
	await m.tags()
	assert.equal(server.calls.length, 2)
	m.invalidate()
	await m.runs()
	assert.equal(server.calls.length, 3)
})

test("a run's plan is fetched once per run by a relative URL and again after invalidate", async () => {
	const plan = {run: "a/<b>", budget: 0.05, steps: [], left_out: {"c/actmax": "slow"}}
	const server = fakeServer([["./plan", () => response(200, JSON.stringify(plan))]])
	const m = new Model({fetch: server.fetch, decode})
	assert.deepEqual(await m.plan("a/<b>"), plan)
	await Promise.all([m.plan("a/<b>"), m.plan("a/<b>")])
	await m.plan("other")
	assert.deepEqual(server.calls, ["./plan?run=a%2F%3Cb%3E", "./plan?run=other"])
	m.invalidate()
	await m.plan("a/<b>")
	assert.equal(server.calls.length, 3)
})

test("errors carry the plugin's JSON message and are not cached", async () => {
	let fail = true
	const server = fakeServer([
		["./tags", () => (fail ? response(404, '{"error":"no cnnviz run named \'x\'"}') : response(200, "{}"))],
	])
	const m = new Model({fetch: server.fetch, decode})
	await assert.rejects(m.tags(), e => e instanceof ApiError && e.status === 404 && /no cnnviz run/.test(e.message))
	fail = false
	assert.deepEqual(await m.tags(), {})
})

test("a non-JSON error body still gives a readable message", async () => {
	const server = fakeServer([["./runs", () => response(500, "<html>oops</html>")]])
	const m = new Model({fetch: server.fetch, decode})
	await assert.rejects(m.runs(), /500/)
})

test("a layer step loads its index and decodes every atlas once, sharing concurrent calls", async () => {
	const server = fakeServer([layerRoute, blobRoute])
	const m = new Model({fetch: server.fetch, decode})
	const [a, b] = await Promise.all([m.layer("r", "t", 3), m.layer("r", "t", 3)])
	assert.equal(a, b)
	assert.equal(a.step, 3)
	assert.equal(a.atlases.length, 1)
	assert.equal(a.locations.count, 2)
	assert.deepEqual(server.calls, ["./layer?run=r&tag=t&step=3", "blob?key=k3"])
	assert.ok(m.hasLayer("r", "t", 3))
	await m.layer("r", "t", 3)
	assert.equal(server.calls.length, 2)
})

test("a layer answer without an index keeps the plugin's warning", async () => {
	const server = fakeServer([
		[
			"./layer",
			() => response(200, JSON.stringify({step: 1, wall_time: 0, index: null, atlases: [], warning: "newer format"})),
		],
	])
	const m = new Model({fetch: server.fetch, decode})
	const data = await m.layer("r", "t", 1)
	assert.equal(data.index, null)
	assert.equal(data.warning, "newer format")
})

test("the layer cache evicts the least recently used steps beyond its byte budget", async () => {
	const server = fakeServer([layerRoute, blobRoute])
	const m = new Model({fetch: server.fetch, decode, maxBytes: 8 * 2 + 64 * 2 * 2})
	await m.layer("r", "t", 1)
	await m.layer("r", "t", 2)
	await m.layer("r", "t", 1) // touch 1: 2 is now the oldest
	await m.layer("r", "t", 3)
	assert.ok(m.hasLayer("r", "t", 1))
	assert.ok(!m.hasLayer("r", "t", 2))
	assert.ok(m.hasLayer("r", "t", 3))
})

test("prefetches run at most N at a time and can be cancelled", async () => {
	let running = 0,
		peak = 0
	const gate = []
	const server = fakeServer([
		[
			"./layer",
			async path => {
				running++
				peak = Math.max(peak, running)
				await new Promise(r => gate.push(r))
				running--
				return layerRoute[1](path)
			},
		],
		blobRoute,
	])
	const m = new Model({fetch: server.fetch, decode, prefetchConcurrency: 2})
	m.prefetch("r", "t", [1, 2, 3, 4])
	await new Promise(r => setTimeout(r, 5))
	assert.equal(running, 2)
	m.cancelPrefetch()
	while (gate.length) {
		gate.shift()()
		await new Promise(r => setTimeout(r, 5))
	}
	assert.equal(peak, 2)
	assert.equal(server.calls.filter(c => c.startsWith("./layer")).length, 2)
})

test("a newer ticket makes older answers STALE, errors included", async () => {
	const m = new Model({fetch: async () => response(200, "{}"), decode})
	const first = m.ticket("grid")
	const p1 = first.guard(Promise.resolve(1))
	const p2 = first.guard(Promise.reject(new Error("late failure")))
	const second = m.ticket("grid")
	const other = m.ticket("inspector")
	assert.equal(first.live, false)
	assert.equal(second.live, true)
	assert.equal(other.live, true)
	assert.equal(await p1, STALE)
	assert.equal(await p2, STALE)
	assert.equal(await second.guard(Promise.resolve(2)), 2)
	await assert.rejects(second.guard(Promise.reject(new Error("now"))), /now/)
})
