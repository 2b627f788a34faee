// Every request and cache; relative URLs only (<base href> is the plugin). Tickets drop answers
// the user has left.

import {examplesLayer} from "./compare.js"
import {tileLocations} from "./grid.js"

export const STALE = Symbol("stale")

export class ApiError extends Error {
	constructor(message, status) {
		super(message)
		this.status = status
	}
}

/** A PNG's RGBA exactly as stored: data, no colour management. */
export async function decodeAtlas(blob) {
	const bitmap = await createImageBitmap(blob, {colorSpaceConversion: "none", premultiplyAlpha: "none"})
	const {width, height} = bitmap
	const ctx = new OffscreenCanvas(width, height).getContext("2d", {willReadFrequently: true})
	ctx.drawImage(bitmap, 0, 0)
	bitmap.close()
	return {width, height, data: ctx.getImageData(0, 0, width, height).data}
}

export function url(path, params) {
	const q = new URLSearchParams(params || {}).toString()
	return q ? `./${path}?${q}` : `./${path}`
}

const key = (...parts) => parts.join("\u0000")

export class Model {
	constructor(o = {}) {
		this._fetch = o.fetch || ((...a) => fetch(...a))
		this._decode = o.decode || decodeAtlas
		this._maxBytes = o.maxBytes ?? 384 * 2 ** 20
		this._concurrency = o.prefetchConcurrency ?? 2
		this._layers = new Map() // key -> {promise, bytes}; bytes 0 while in flight
		this._bytes = 0
		this._meta = new Map()
		this._tickets = new Map()
		this._seq = 0
		this._queue = []
		this._running = 0
	}

	async json(path) {
		const res = await this._fetch(path)
		const text = await res.text()
		let body
		try {
			body = JSON.parse(text)
		} catch {
			body = undefined
		}
		if (!res.ok)
			throw new ApiError(
				typeof body?.error === "string" ? body.error : `${res.status} ${res.statusText || "error"}`,
				res.status
			)
		if (body === undefined) throw new ApiError("the plugin answered with something that is not JSON", res.status)
		return body
	}

	_cached(k, load) {
		if (!this._meta.has(k)) {
			const p = load()
			this._meta.set(k, p)
			p.catch(() => this._meta.get(k) === p && this._meta.delete(k))
		}
		return this._meta.get(k)
	}

	runs() {
		return this._cached("runs", () => this.json(url("runs")))
	}

	/** {run: {tag: {kind, layer, steps, description}}} */
	tags() {
		return this._cached("tags", () => this.json(url("tags")))
	}

	stats(run, tag) {
		return this._cached(key("stats", run, tag), () => this.json(url("stats", {run, tag})))
	}

	plan(run) {
		return this._cached(key("plan", run), () => this.json(url("plan", {run})))
	}

	get(path) {
		return this._cached(path, () => this.json(path))
	}

	/** /examples with its reference images decoded: {body, pics}. */
	examples(run, layer, step) {
		return this._cached(key("ex", run, layer, step), async () => {
			const body = await this.json(url("examples", {run, layer, step}))
			// shared by every layer and step
			return {
				body,
				pics: await Promise.all((body.images?.atlases || []).map(u => this._cached(u, () => this._picture(u)))),
			}
		})
	}

	/** New data changes these; layer steps stay (a logged picture never changes). */
	invalidate() {
		this._meta.clear()
	}

	/** LRU in bytes; prefetches queue behind the user's requests. */
	layer(run, tag, step, o = {}) {
		const k = key(run, tag, step)
		const hit = this._layers.get(k)
		if (hit) {
			// most recent last: eviction walks the Map from its start
			this._layers.delete(k)
			this._layers.set(k, hit)
			return hit.promise
		}
		const entry = {promise: null, bytes: 0}
		const load = () => this._load(run, tag, step)
		entry.promise = (o.prefetch ? this._limited(load) : load()).then(
			data => {
				entry.bytes = data.atlases.reduce((n, a) => n + a.data.length, 0) + 64 * (data.index?.ranges?.length || 0)
				if (this._layers.get(k) === entry) {
					this._bytes += entry.bytes
					for (const [k2, e] of this._layers) {
						if (this._bytes <= this._maxBytes) break
						if (!e.bytes) continue
						this._layers.delete(k2)
						this._bytes -= e.bytes
					}
				}
				return data
			},
			err => {
				if (this._layers.get(k) === entry) this._layers.delete(k)
				throw err
			}
		)
		this._layers.set(k, entry)
		return entry.promise
	}

	hasLayer(run, tag, step) {
		return Boolean(this._layers.get(key(run, tag, step))?.bytes)
	}

	prefetch(run, tag, steps) {
		for (const step of steps) this.layer(run, tag, step, {prefetch: true}).catch(() => {})
	}

	cancelPrefetch() {
		this._queue.length = 0
	}

	async _picture(u) {
		const res = await this._fetch(String(u))
		if (!res.ok) throw new ApiError(`could not load an atlas (${res.status})`, res.status)
		return this._decode(await res.blob())
	}

	async _load(run, tag, step) {
		// Responses are numbers, not pictures: the grid shows each filter's best example instead.
		if (tag.endsWith("/responses")) {
			const {body, pics} = await this.examples(run, tag.slice(0, -10), step)
			return body.images
				? examplesLayer(body, pics)
				: {run, tag, step, index: null, atlases: [], warning: `${body.warning}`}
		}
		const body = await this.json(url("layer", {run, tag, step}))
		const index = body?.index || null
		const atlases = await Promise.all((body?.atlases || []).map(u => this._picture(u)))
		return {
			run,
			tag,
			step: body?.step ?? step,
			wall_time: body?.wall_time ?? 0,
			index,
			atlases,
			locations: index && tileLocations(index),
			...(body?.warning ? {warning: String(body.warning)} : {}),
		}
	}

	_limited(task) {
		return new Promise((resolve, reject) => {
			const start = () => {
				this._running++
				task()
					.then(resolve, reject)
					.finally(() => {
						this._running--
						this._queue.shift()?.()
					})
			}
			if (this._running < this._concurrency) start()
			else this._queue.push(start)
		})
	}

	/** A newer ticket of the channel makes this one stale; its guarded promises then give STALE. */
	ticket(channel) {
		const id = ++this._seq
		const tickets = this._tickets
		tickets.set(channel, id)
		const live = () => tickets.get(channel) === id
		return {
			get live() {
				return live()
			},
			guard: p =>
				p.then(
					v => (live() ? v : STALE),
					e => {
						if (live()) throw e
						return STALE
					}
				),
		}
	}
}
