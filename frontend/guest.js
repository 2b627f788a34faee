// TensorBoard's plugin messages: a MessageChannel port sent with
// `parent.postMessage("experimental.bootstrap", "*", [port])`, then JSON {type, id, payload, error, isReply}.

/** Outside TensorBoard, requests reject. */
export function connectGuest(win = window) {
	const handlers = new Map(),
		pending = new Map()
	let nextId = 0
	const hosted = Boolean(win.parent && win.parent !== win)
	const {port1, port2} = new MessageChannel()
	const send = m => port1.postMessage(JSON.stringify({payload: null, error: null, isReply: false, ...m}))
	port1.onmessage = event => {
		let m
		try {
			m = JSON.parse(event.data)
		} catch {
			return
		}
		if (!m || typeof m !== "object") return
		if (m.isReply) {
			pending.get(m.id)?.(m)
			pending.delete(m.id)
			return
		}
		for (const fn of handlers.get(m.type) || []) {
			try {
				fn(m.payload)
			} catch {
				/* a handler's bug must not block the reply */
			}
		}
		send({type: m.type, id: m.id, isReply: true}) // the host awaits a reply to broadcasts too
	}
	if (hosted) win.parent.postMessage("experimental.bootstrap", "*", [port2])
	return {
		on: (type, fn) => handlers.set(type, [...(handlers.get(type) || []), fn]),
		request: (type, payload = null, timeoutMs = 2000) =>
			new Promise((resolve, reject) => {
				if (!hosted) return reject(new Error("not inside TensorBoard"))
				const id = ++nextId
				const timer = setTimeout(() => {
					pending.delete(id)
					reject(new Error(`${type}: no answer`))
				}, timeoutMs)
				pending.set(id, m => {
					clearTimeout(timer)
					m.error ? reject(new Error(String(m.error))) : resolve(m.payload)
				})
				send({type, id, payload})
			}),
	}
}
