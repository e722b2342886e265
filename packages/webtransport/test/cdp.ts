/**
 * A minimal Chrome DevTools Protocol client for the browser test: RFC 6455
 * WebSocket framing over a `node:http` upgrade (Node 20 has no global
 * WebSocket), JSON-RPC on top. Test support only.
 */
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import type { Duplex } from 'node:stream'

/** Largest message accepted from the browser (bounded buffering). */
const MAX_MESSAGE = 64 * 1024 * 1024

export class CdpClient {
  #socket: Duplex
  #buf: Buffer = Buffer.alloc(0)
  #fragments: Buffer[] = []
  #nextId = 1
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  #closed: Error | null = null

  private constructor(socket: Duplex, head: Buffer) {
    this.#socket = socket
    socket.on('data', (d: Buffer) => this.#onData(d))
    socket.on('close', () => this.#fail(new Error('DevTools socket closed')))
    socket.on('error', (e) => this.#fail(e))
    if (head.length > 0) this.#onData(head)
  }

  static connect(wsUrl: string): Promise<CdpClient> {
    const url = new URL(wsUrl)
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port,
        path: url.pathname + url.search,
        headers: {
          Connection: 'Upgrade',
          Upgrade: 'websocket',
          'Sec-WebSocket-Version': '13',
          'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        },
      })
      req.on('upgrade', (_res, socket, head) => resolve(new CdpClient(socket, head)))
      req.on('response', (res) => reject(new Error(`DevTools answered HTTP ${res.statusCode} instead of upgrading`)))
      req.on('error', reject)
      req.end()
    })
  }

  #fail(err: Error): void {
    if (this.#closed) return
    this.#closed = err
    for (const p of this.#pending.values()) p.reject(err)
    this.#pending.clear()
  }

  #onData(data: Buffer): void {
    this.#buf = this.#buf.length === 0 ? data : Buffer.concat([this.#buf, data])
    for (;;) {
      const b = this.#buf
      if (b.length < 2) return
      const fin = (b[0]! & 0x80) !== 0
      const opcode = b[0]! & 0x0f
      const masked = (b[1]! & 0x80) !== 0
      let len = b[1]! & 0x7f
      let at = 2
      if (len === 126) {
        if (b.length < 4) return
        len = b.readUInt16BE(2)
        at = 4
      } else if (len === 127) {
        if (b.length < 10) return
        len = Number(b.readBigUInt64BE(2))
        at = 10
      }
      if (len > MAX_MESSAGE) {
        this.#fail(new Error(`DevTools frame of ${len} bytes is too large`))
        this.#socket.destroy()
        return
      }
      const maskAt = at
      if (masked) at += 4
      if (b.length < at + len) return
      let payload = b.subarray(at, at + len)
      if (masked) {
        payload = Buffer.from(payload)
        for (let i = 0; i < payload.length; i++) payload[i]! ^= b[maskAt + (i & 3)]!
      }
      this.#buf = b.subarray(at + len)
      if (opcode === 0x8) {
        this.#fail(new Error('DevTools closed the WebSocket'))
        this.#socket.end()
        return
      }
      if (opcode === 0x9) {
        this.#send(0xa, payload)
        continue
      }
      if (opcode === 0xa) continue
      this.#fragments.push(Buffer.from(payload))
      if (this.#fragments.reduce((n, f) => n + f.length, 0) > MAX_MESSAGE) {
        this.#fail(new Error('DevTools message too large'))
        this.#socket.destroy()
        return
      }
      if (!fin) continue
      const message = Buffer.concat(this.#fragments).toString('utf8')
      this.#fragments = []
      this.#onMessage(message)
    }
  }

  #onMessage(text: string): void {
    let msg: { id?: number; result?: unknown; error?: { message: string } }
    try {
      msg = JSON.parse(text) as typeof msg
    } catch {
      return
    }
    if (typeof msg.id !== 'number') return // an event
    const p = this.#pending.get(msg.id)
    if (!p) return
    this.#pending.delete(msg.id)
    if (msg.error) p.reject(new Error(`CDP error: ${msg.error.message}`))
    else p.resolve(msg.result)
  }

  #send(opcode: number, payload: Buffer): void {
    const mask = randomBytes(4)
    const len = payload.length
    const header = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10)
    header[0] = 0x80 | opcode
    if (len < 126) header[1] = 0x80 | len
    else if (len < 65536) {
      header[1] = 0x80 | 126
      header.writeUInt16BE(len, 2)
    } else {
      header[1] = 0x80 | 127
      header.writeBigUInt64BE(BigInt(len), 2)
    }
    const body = Buffer.from(payload)
    for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!
    this.#socket.write(Buffer.concat([header, mask, body]))
  }

  call<T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed)
    const id = this.#nextId++
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.#send(0x1, Buffer.from(JSON.stringify({ id, method, params })))
    })
  }

  /** Evaluates an async expression in the page and returns its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const r = await this.call<{ result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } }>(
      'Runtime.evaluate',
      { expression, awaitPromise: true, returnByValue: true },
    )
    if (r.exceptionDetails) throw new Error(`page threw: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`)
    return r.result.value as T
  }

  close(): void {
    this.#socket.destroy()
  }
}
