/**
 * Floods at a running server, which lives in a child process (node --expose-gc) so that
 * its memory can be measured alone, after forced garbage collections:
 *
 * 1. 100 000 malformed, truncated, replayed and oversized datagrams, plus real client
 *    Initials carrying bad Retry tokens (forged, tampered, minted for another address,
 *    garbage), at a server that requires Retry: no crash, no unhandled rejection, no
 *    error, no connection state ever created, heap and RSS back to baseline, and a
 *    legitimate client is still served (echo checked by SHA-256).
 * 2. Handshake floods: many distinct real client Initials (distinct DCIDs, 40 source
 *    ports) that never follow up, against (a) a server with a connection limit and
 *    (b) a server that requires Retry (tokenless, then Retry-following but silent):
 *    engine connections stay bounded, memory stays bounded, and once the half-open
 *    connections time out the server is back to zero connections and still serves.
 * 3. Expired (but otherwise genuine) Retry tokens are refused, while a fresh one from the
 *    same address is accepted.
 *
 * The child runs the built package (dist): build before running this file. The engine
 * comes from STOQ_ENGINE (set per vitest project), which the child inherits.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { answerRetry, craftClientInitial, parseLongHeader, testPki, waitFor, type CraftedInitial, type TestPki } from '@stoq/compliance-tests'
import { RETRY_TOKEN_LIFETIME_MS } from '@stoq/engine-quiche'
import { createEndpoint } from '../src/index.js'
import { echoOnce, pattern, sha256 } from './fixtures/echo.js'

const ENGINE = process.env.STOQ_ENGINE
const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const DIST = path.join(PKG, 'dist', 'index.js')
const MiB = 1024 * 1024
/** Growth of heap or RSS over the baseline that counts as a leak (100 000 packets: > ~170 B each). */
const LEAK_BOUND = 16 * MiB
/** Retry token lifetimes: quiche engine (ours), quinn-proto 0.9 (ServerConfig::retry_token_lifetime default). */
const TOKEN_LIFETIME_MS = { quiche: RETRY_TOKEN_LIFETIME_MS, quinn: 15_000 } as const
/**
 * Memory one half-open connection (a single client Initial, then silence) may hold, after GC.
 * The quiche engine needs about 70 KiB; at the default limit of 10 000 connections this bound
 * still allows 5 GiB, so it is generous.
 */
const HALF_OPEN_BUDGET = 512 * 1024
/** The quiche engine accepts this many connections beyond the limit, only to refuse them with CONNECTION_REFUSED. */
const QUICHE_REFUSE_BACKLOG = 64

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

// ---------------------------------------------------------------------------
// The server process: JSON lines on stdin (commands) and stdout (answers).

const SERVER_SCRIPT = String.raw`
import readline from 'node:readline'
const { createEndpoint } = await import(process.env.STOQ_FLOOD_DIST)
const endpoints = new Map()
const maxima = new Map()
const problems = []
const note = (what, err) => {
  problems.push(what + ': ' + (err && err.code ? err.code + ' ' : '') + String(err && err.message ? err.message : err))
}
process.on('unhandledRejection', (e) => note('unhandledRejection', e))
process.on('uncaughtException', (e) => note('uncaughtException', e))
process.on('warning', (w) => note('warning', w))
const sample = () => {
  for (const [name, ep] of endpoints) {
    const m = maxima.get(name)
    const engine = ep.engine.connectionCount
    const conns = ep.stats().connections
    if (engine > m.engine) m.engine = engine
    if (conns > m.conns) m.conns = conns
  }
}
setInterval(sample, 2)
const commands = {
  async listen({ name, cert, key, secret, server = {}, transport = {} }) {
    const ep = await createEndpoint({
      host: '127.0.0.1',
      server: { cert, key, ...(secret ? { secret: Buffer.from(secret, 'hex') } : {}), ...server },
      transport,
    })
    ep.on('error', (e) => note('endpoint error', e))
    ep.on('connection', (conn) => {
      conn.on('stream', (s) => { if (s.bidirectional) s.readable.pipeTo(s.writable).catch(() => {}) })
      conn.closed.catch(() => {})
    })
    endpoints.set(name, ep)
    maxima.set(name, { engine: 0, conns: 0 })
    return { port: ep.address.port, engine: ep.engine.name, backend: ep.stats().udp.backend }
  },
  stats({ name }) {
    const ep = endpoints.get(name)
    sample()
    const s = ep.stats()
    const m = maxima.get(name)
    return {
      connections: s.connections,
      engineConnections: ep.engine.connectionCount,
      maxConnections: m.conns,
      maxEngineConnections: m.engine,
      packetsDropped: s.packetsDropped,
      packetsReceived: s.udp.packetsReceived,
      bytesReceived: s.udp.bytesReceived,
      packetsSent: s.udp.packetsSent,
      bytesSent: s.udp.bytesSent,
      problems: problems.length,
    }
  },
  resetMaxima({ name }) {
    maxima.set(name, { engine: 0, conns: 0 })
    return true
  },
  async memory() {
    for (let i = 0; i < 4; i++) {
      globalThis.gc()
      await new Promise((r) => setTimeout(r, 25))
    }
    const m = process.memoryUsage()
    return { heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers }
  },
  problems() {
    return problems.slice(0, 50)
  },
  async close({ name }) {
    await endpoints.get(name).close()
    endpoints.delete(name)
    return true
  },
}
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const { id, cmd, args } = JSON.parse(line)
  try {
    const result = await commands[cmd](args ?? {})
    process.stdout.write(JSON.stringify({ id, ok: true, result }) + '\n')
  } catch (err) {
    process.stdout.write(JSON.stringify({ id, ok: false, error: String(err && err.stack ? err.stack : err) }) + '\n')
  }
})
process.stdout.write(JSON.stringify({ ready: true, pid: process.pid }) + '\n')
`

interface ServerStats {
  connections: number
  engineConnections: number
  maxConnections: number
  maxEngineConnections: number
  packetsDropped: number
  packetsReceived: number
  bytesReceived: number
  packetsSent: number
  bytesSent: number
  problems: number
}

interface Memory {
  heapUsed: number
  rss: number
  external: number
  arrayBuffers: number
}

class ServerProcess {
  readonly child: ChildProcess
  readonly ready: Promise<void>
  private readonly stderr: string[] = []
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  private nextId = 1
  exit: string | null = null

  constructor() {
    this.child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', SERVER_SCRIPT], {
      env: { ...process.env, STOQ_FLOOD_DIST: DIST },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let markReady: () => void
    let failReady: (e: Error) => void
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve
      failReady = reject
    })
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let msg: { id?: number; ok?: boolean; result?: unknown; error?: string; ready?: boolean }
      try {
        msg = JSON.parse(line)
      } catch {
        this.stderr.push(`[stdout] ${line}`)
        return
      }
      if (msg.ready) return markReady()
      const p = this.pending.get(msg.id!)
      if (p === undefined) return
      this.pending.delete(msg.id!)
      if (msg.ok) p.resolve(msg.result)
      else p.reject(new Error(`server process: ${msg.error}`))
    })
    readline.createInterface({ input: this.child.stderr! }).on('line', (line) => {
      this.stderr.push(line)
      if (this.stderr.length > 100) this.stderr.shift()
    })
    this.child.on('exit', (code, signal) => {
      this.exit = `exited with code ${code}, signal ${signal}`
      const err = new Error(`server process ${this.exit}; stderr:\n${this.stderr.join('\n')}`)
      failReady(err)
      for (const p of this.pending.values()) p.reject(err)
      this.pending.clear()
    })
    this.child.stdin!.on('error', () => {})
  }

  cmd<T>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 20_000): Promise<T> {
    if (this.exit !== null) return Promise.reject(new Error(`server process ${this.exit}`))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`server process: ${cmd} timed out`))
      }, timeoutMs)
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer)
          resolve(v as T)
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        },
      })
      this.child.stdin!.write(JSON.stringify({ id, cmd, args }) + '\n')
    })
  }

  stats(name: string): Promise<ServerStats> {
    return this.cmd<ServerStats>('stats', { name })
  }

  memory(): Promise<Memory> {
    return this.cmd<Memory>('memory')
  }

  async stop(): Promise<void> {
    if (this.exit !== null) return
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()))
    this.child.stdin!.end()
    this.child.kill('SIGTERM')
    await Promise.race([exited, sleep(5000)])
    if (this.exit === null) this.child.kill('SIGKILL')
  }
}

// ---------------------------------------------------------------------------
// Raw UDP helpers

interface RawSocket {
  sock: dgram.Socket
  port: number
  /** Datagrams received from the server, by first-byte class. */
  replies: { retry: number; initial: number; versionNegotiation: number; short: number; other: number; bytes: number }
  /** Retry packets, kept when `keepRetries` is set. */
  retries: Buffer[]
  keepRetries: boolean
}

async function rawSocket(keepRetries = false): Promise<RawSocket> {
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
  const raw: RawSocket = {
    sock,
    port: sock.address().port,
    replies: { retry: 0, initial: 0, versionNegotiation: 0, short: 0, other: 0, bytes: 0 },
    retries: [],
    keepRetries,
  }
  sock.on('message', (msg) => {
    raw.replies.bytes += msg.length
    const h = parseLongHeader(msg)
    if ((msg[0]! & 0x80) === 0) raw.replies.short++
    else if (h?.type === 'retry') {
      raw.replies.retry++
      if (raw.keepRetries) raw.retries.push(msg)
    } else if (h?.type === 'version-negotiation') raw.replies.versionNegotiation++
    else if (h?.type === 'initial') raw.replies.initial++
    else raw.replies.other++
  })
  sock.on('error', () => {})
  return raw
}

function sendTo(raw: RawSocket, pkt: Uint8Array, port: number): Promise<void> {
  return new Promise((resolve, reject) => raw.sock.send(pkt, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())))
}

/**
 * Send `count` datagrams made by `next` from the sockets (round robin), keeping at most
 * `window` of them unread by the server (its UDP receive counter says what it has read),
 * so that what is tested is the server, not the kernel's socket buffer. Bounded in time.
 */
async function pump(
  server: ServerProcess,
  name: string,
  socks: RawSocket[],
  port: number,
  count: number,
  next: (i: number) => Uint8Array,
  window = 512,
): Promise<{ sent: number; received: number }> {
  const base = (await server.stats(name)).packetsReceived
  const burst = 128
  let sent = 0
  let received = 0
  const deadline = Date.now() + 60_000
  while (sent < count && Date.now() < deadline) {
    const n = Math.min(burst, count - sent)
    let last: Promise<void> = Promise.resolve()
    for (let k = 0; k < n; k++, sent++) last = sendTo(socks[sent % socks.length]!, next(sent), port)
    await last
    for (;;) {
      received = (await server.stats(name)).packetsReceived - base
      if (sent - received <= window || Date.now() > deadline) break
      await sleep(1)
    }
  }
  // Let the server read the rest: stop when its counter stops moving.
  let stable = 0
  while (stable < 5 && Date.now() < deadline) {
    await sleep(20)
    const now = (await server.stats(name)).packetsReceived - base
    stable = now === received ? stable + 1 : 0
    received = now
    if (received >= sent) break
  }
  return { sent, received }
}

/**
 * Wait until `done` holds, polling (the kit's `waitFor`); bounded. Returns whether it held:
 * running out of time is not an error here (callers check what they need), an error from `done` is.
 */
const until = (done: () => Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<boolean> =>
  waitFor(done, { what: 'until', limitMs: timeoutMs, everyMs }).then(
    () => true,
    (e: unknown) => (e instanceof Error && e.message.startsWith('until: not reached within') ? false : Promise.reject(e)),
  )

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`

// ---------------------------------------------------------------------------

let pki: TestPki
let server: ServerProcess

beforeAll(async () => {
  // The child runs dist (see the note at the top).
  expect(fs.existsSync(DIST), `${DIST} is missing: build the package first`).toBe(true)
  pki = await testPki()
  server = new ServerProcess()
  await server.ready
})

afterAll(async () => {
  await server?.stop()
})

async function listen(
  name: string,
  server_: Record<string, unknown>,
  transport: Record<string, unknown> = {},
  secret?: Buffer,
): Promise<{ port: number; engine: string }> {
  const r = await server.cmd<{ port: number; engine: string; backend: string }>('listen', {
    name,
    cert: pki.server.cert,
    key: pki.server.key,
    secret: secret?.toString('hex'),
    server: server_,
    transport,
  })
  if (ENGINE) expect(r.engine).toBe(ENGINE)
  return r
}

/** A legitimate client: a real connection, 200 kB echoed and checked by hash, then closed. */
async function legitEcho(port: number, seed: number): Promise<void> {
  const client = await createEndpoint({ host: '127.0.0.1' })
  try {
    const conn = await client.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: 'localhost' })
    const data = pattern(200_000, seed)
    expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
  } finally {
    await client.close()
  }
}

async function drained(name: string, timeoutMs = 15_000): Promise<ServerStats> {
  let s = await server.stats(name)
  await until(async () => {
    s = await server.stats(name)
    return s.connections === 0 && s.engineConnections === 0
  }, timeoutMs)
  return s
}

/** Genuine Retry tokens for `raw`'s address: send `n` tokenless Initials, keep the Retries. */
async function genuineRetries(raw: RawSocket, port: number, n: number): Promise<Array<{ first: CraftedInitial; retry: Buffer }>> {
  raw.keepRetries = true
  raw.retries.length = 0
  const firsts = new Map<string, CraftedInitial>()
  for (let i = 0; i < n; i++) {
    const first = craftClientInitial()
    firsts.set(Buffer.from(first.scid).toString('hex'), first)
    await sendTo(raw, first.packet, port)
    if (i % 32 === 31) await sleep(2)
  }
  await until(async () => raw.retries.length >= n, 5000, 10)
  raw.keepRetries = false
  const out: Array<{ first: CraftedInitial; retry: Buffer }> = []
  for (const retry of raw.retries) {
    const h = parseLongHeader(retry)!
    const first = firsts.get(Buffer.from(h.dcid).toString('hex'))
    if (first) out.push({ first, retry })
  }
  return out
}

describe('floods against a running server (server in a child process, memory measured after GC)', () => {
  let floodPort = 0
  let floodEngine = ''
  /** Genuine tokens taken at the start, for the expiry test at the end. */
  let early: { raw: RawSocket; retries: Array<{ first: CraftedInitial; retry: Buffer }>; at: number } | null = null

  beforeAll(async () => {
    const r = await listen('flood', {}, { maxIdleTimeoutMs: 5000 })
    floodPort = r.port
    floodEngine = r.engine
    const raw = await rawSocket()
    early = { raw, retries: await genuineRetries(raw, floodPort, 8), at: Date.now() }
    expect(early.retries.length).toBe(8)
  })

  afterAll(() => {
    early?.raw.sock.close()
  })

  it('survives 100 000 malformed, truncated, replayed and oversized packets and bad Retry tokens, keeps no state, returns to its memory baseline and still serves', async () => {
    const port = floodPort
    const flood = await rawSocket()
    const thief = await rawSocket()
    try {
      // Bad-token material: genuine tokens for our address (to tamper with) and for
      // another address (stolen); forged and garbage tokens need nothing.
      const own = await genuineRetries(flood, port, 200)
      const other = await genuineRetries(thief, port, 200)
      expect(own.length).toBeGreaterThan(150)
      expect(other.length).toBeGreaterThan(150)
      const tampered = own.map(({ first, retry }, i) => {
        const h = parseLongHeader(retry)!
        const token = Uint8Array.from(h.token!)
        if (i % 2 === 0) {
          token[crypto.randomInt(token.length)]! ^= 1 << crypto.randomInt(8)
          return craftClientInitial({ scid: first.scid, dcid: h.scid, token, packetNumber: 1 }).packet
        }
        // Intact token, but sent to another CID than the one it was minted for.
        const dcid = Uint8Array.from(h.scid)
        dcid[dcid.length - 1]! ^= 0x55
        return craftClientInitial({ scid: first.scid, dcid, token, packetNumber: 1 }).packet
      })
      const stolen = other.map(({ first, retry }) => answerRetry(retry, first)!.initial.packet)
      const forged = Array.from({ length: 200 }, (_, i) => {
        const sample = parseLongHeader(own[i % own.length]!.retry)!
        return craftClientInitial({ dcid: crypto.randomBytes(sample.scid.length), token: crypto.randomBytes(sample.token!.length) }).packet
      })
      const garbage = Array.from({ length: 200 }, () => craftClientInitial({ token: crypto.randomBytes(1 + crypto.randomInt(300)) }).packet)
      const initial = craftClientInitial().packet

      const KINDS = 14
      const make = (i: number): Uint8Array => {
        const j = Math.floor(i / KINDS)
        switch (i % KINDS) {
          case 0: // random bytes, random length
            return crypto.randomBytes(1 + crypto.randomInt(1500))
          case 1: // truncated real Initial
            return initial.subarray(0, 1 + crypto.randomInt(initial.length - 1))
          case 2: // replayed real Initial, byte for byte (each draws a stateless Retry)
            return initial
          case 3: {
            // short header, random CID (may draw a stateless reset)
            const p = crypto.randomBytes(21 + crypto.randomInt(1330))
            p[0] = 0x40 | (p[0]! & 0x3f)
            return p
          }
          case 4: {
            // long header with an impossible CID length
            const p = crypto.randomBytes(1200)
            p[0] = 0xc0
            p.writeUInt32BE(1, 1)
            p[5] = 21 + crypto.randomInt(235)
            return p
          }
          case 5: {
            // oversized: beyond any MTU, now and then the largest UDP payload
            const size = j % 50 === 0 ? 65507 : 1501 + crypto.randomInt(8000)
            const p = crypto.randomBytes(size)
            if (j % 2 === 0) p.set(initial.subarray(0, 64)) // looks like an Initial
            return p
          }
          case 6: {
            // real Initial header, garbage ciphertext
            const p = Buffer.from(initial)
            crypto.randomFillSync(p, 40)
            return p
          }
          case 7: {
            // Handshake, 0-RTT or Retry long header with random CIDs
            const p = crypto.randomBytes(1200)
            p[0] = 0xc0 | ((1 + (j % 3)) << 4)
            p.writeUInt32BE(1, 1)
            p[5] = 8
            p[14] = 8
            return p
          }
          case 8: {
            // unknown version (draws version negotiation)
            const p = crypto.randomBytes(1200)
            p[0] = 0xc0
            p.writeUInt32BE(0x0a0a0a0a + j * 0x10, 1)
            p[5] = 8
            p[14] = 8
            return p
          }
          case 9: // tampered or misdirected genuine token
            return tampered[j % tampered.length]!
          case 10: // genuine token of another address
            return stolen[j % stolen.length]!
          case 11: // forged token of the right size
            return forged[j % forged.length]!
          case 12: // garbage token of any size
            return garbage[j % garbage.length]!
          default: {
            // coalesced: a real Initial followed by garbage, oversized
            const p = Buffer.alloc(initial.length + 800 + crypto.randomInt(2000))
            p.set(initial)
            crypto.randomFillSync(p, initial.length)
            return p
          }
        }
      }

      // Warm up (same mix, a legitimate connection) so the baseline includes whatever
      // grows once: JIT code, pools, socket buffers, allocator arenas.
      await legitEcho(port, 1)
      const warm = await pump(server, 'flood', [flood], port, 20_000, make)
      expect(warm.received).toBeGreaterThan(warm.sent * 0.95)
      await drained('flood')
      const before = await server.memory()
      await server.cmd('resetMaxima', { name: 'flood' })
      const statsBefore = await server.stats('flood')
      const repliesBefore = { ...flood.replies }

      const COUNT = 100_000
      const { sent, received } = await pump(server, 'flood', [flood], port, COUNT, make)
      const afterFlood = await server.stats('flood')
      // No datagram of the flood could create a connection: none ever existed.
      expect(afterFlood.maxEngineConnections).toBe(0)
      expect(afterFlood.maxConnections).toBe(0)

      // A legitimate client is served, then everything is back to zero.
      await legitEcho(port, 2)
      const settled = await drained('flood')
      expect(settled.connections).toBe(0)
      expect(settled.engineConnections).toBe(0)
      const after = await server.memory()
      const problems = await server.cmd<string[]>('problems')
      const replies = Object.fromEntries(Object.entries(flood.replies).map(([k, v]) => [k, v - repliesBefore[k as keyof typeof repliesBefore]]))
      console.log(
        `[flood] engine ${floodEngine}: sent ${sent} datagrams, server read ${received}, dropped ${afterFlood.packetsDropped - statsBefore.packetsDropped}; ` +
          `replies ${JSON.stringify(replies)}; heap ${mib(before.heapUsed)} -> ${mib(after.heapUsed)}, ` +
          `rss ${mib(before.rss)} -> ${mib(after.rss)}, external ${mib(before.external)} -> ${mib(after.external)}`,
      )
      expect(server.exit).toBeNull()
      expect(problems).toEqual([])
      expect(sent).toBe(COUNT)
      expect(received).toBeGreaterThan(COUNT * 0.95)
      // Most of the flood is dropped without an answer; replayed Initials draw Retries.
      expect(afterFlood.packetsDropped - statsBefore.packetsDropped).toBeGreaterThan(COUNT / 2)
      expect(replies.retry).toBeGreaterThan(0)
      expect(after.heapUsed - before.heapUsed).toBeLessThan(LEAK_BOUND)
      expect(after.rss - before.rss).toBeLessThan(LEAK_BOUND)
    } finally {
      flood.sock.close()
      thief.sock.close()
    }
  }, 120_000)

  it('handshake flood against a connection limit: bounded connections and memory, back to zero after the idle timeout, still serves', async () => {
    const LIMIT = 16
    const { port, engine } = await listen('limited', { retry: false, maxConnections: LIMIT }, { maxIdleTimeoutMs: 2000 })
    await legitEcho(port, 3)
    await drained('limited')
    const before = await server.memory()
    await server.cmd('resetMaxima', { name: 'limited' })
    const socks = await Promise.all(Array.from({ length: 40 }, () => rawSocket()))
    try {
      const COUNT = 3000
      const initials = Array.from({ length: COUNT }, () => craftClientInitial().packet)
      const { sent, received } = await pump(server, 'limited', socks, port, COUNT, (i) => initials[i]!)
      const during = await server.stats('limited')
      const duringMem = await server.memory()
      const bound = engine === 'quiche' ? LIMIT + QUICHE_REFUSE_BACKLOG : LIMIT
      const settled = await drained('limited', 20_000)
      const after = await server.memory()
      await legitEcho(port, 4)
      const replies = socks.reduce((n, s) => n + s.replies.initial, 0)
      console.log(
        `[handshake flood, limit ${LIMIT}] engine ${engine}: ${sent} distinct Initials from ${socks.length} ports, server read ${received}; ` +
          `peak connections: engine ${during.maxEngineConnections}, endpoint ${during.maxConnections} (bound ${bound}); ` +
          `server Initial datagrams sent back ${replies}; after timeout: engine ${settled.engineConnections}, endpoint ${settled.connections}; ` +
          `heap ${mib(before.heapUsed)} -> ${mib(duringMem.heapUsed)} (half-open) -> ${mib(after.heapUsed)}, ` +
          `rss ${mib(before.rss)} -> ${mib(duringMem.rss)} -> ${mib(after.rss)}`,
      )
      expect(received).toBeGreaterThan(COUNT * 0.95)
      // The limit was reached (the flood did hold connections) and never passed.
      expect(during.maxEngineConnections).toBeGreaterThanOrEqual(LIMIT)
      expect(during.maxEngineConnections).toBeLessThanOrEqual(bound)
      expect(during.maxConnections).toBeLessThanOrEqual(LIMIT)
      // Memory while the half-open connections live: bounded per connection.
      expect(duringMem.heapUsed - before.heapUsed).toBeLessThan(LEAK_BOUND + during.maxEngineConnections * HALF_OPEN_BUDGET)
      expect(duringMem.rss - before.rss).toBeLessThan(LEAK_BOUND + during.maxEngineConnections * HALF_OPEN_BUDGET)
      expect(settled.engineConnections).toBe(0)
      expect(settled.connections).toBe(0)
      expect(after.heapUsed - before.heapUsed).toBeLessThan(LEAK_BOUND)
      expect(after.rss - before.rss).toBeLessThan(LEAK_BOUND)
      expect(await server.cmd<string[]>('problems')).toEqual([])
    } finally {
      for (const s of socks) s.sock.close()
      await server.cmd('close', { name: 'limited' })
    }
  }, 90_000)

  it('handshake flood against Retry: tokenless Initials keep no state; silent Retry followers stay bounded and time out; still serves', async () => {
    const LIMIT = 16
    const { port, engine } = await listen('retry', { retry: true, maxConnections: LIMIT }, { maxIdleTimeoutMs: 2000 })
    await legitEcho(port, 5)
    await drained('retry')
    const before = await server.memory()
    await server.cmd('resetMaxima', { name: 'retry' })
    const socks = await Promise.all(Array.from({ length: 40 }, () => rawSocket(true)))
    try {
      const COUNT = 3000
      const firsts = Array.from({ length: COUNT }, () => craftClientInitial())
      const tokenless = await pump(server, 'retry', socks, port, COUNT, (i) => firsts[i]!.packet)
      const afterTokenless = await server.stats('retry')
      const retries = socks.reduce((n, s) => n + s.retries.length, 0)
      // Retry is stateless: not one connection for 3000 handshakes.
      expect(afterTokenless.maxEngineConnections).toBe(0)
      expect(afterTokenless.maxConnections).toBe(0)
      expect(tokenless.received).toBeGreaterThan(COUNT * 0.95)
      expect(retries).toBeGreaterThan(COUNT / 4)

      // Now the attacker answers 300 Retries (from the addresses they were sent to), then goes silent.
      const bySock = new Map<string, CraftedInitial>(firsts.map((f) => [Buffer.from(f.scid).toString('hex'), f]))
      const followUps: Array<{ raw: RawSocket; pkt: Uint8Array }> = []
      for (const raw of socks) {
        for (const retry of raw.retries) {
          const first = bySock.get(Buffer.from(parseLongHeader(retry)!.dcid).toString('hex'))
          const answer = first ? answerRetry(retry, first) : null
          if (answer && followUps.length < 300) followUps.push({ raw, pkt: answer.initial.packet })
        }
      }
      expect(followUps.length).toBe(300)
      for (let i = 0; i < followUps.length; i++) {
        await sendTo(followUps[i]!.raw, followUps[i]!.pkt, port)
        if (i % 16 === 15) await sleep(2)
      }
      await until(async () => (await server.stats('retry')).packetsReceived >= afterTokenless.packetsReceived + 290, 5000)
      const during = await server.stats('retry')
      const duringMem = await server.memory()
      const bound = engine === 'quiche' ? LIMIT + QUICHE_REFUSE_BACKLOG : LIMIT
      const settled = await drained('retry', 20_000)
      const after = await server.memory()
      await legitEcho(port, 6)
      console.log(
        `[handshake flood, Retry, limit ${LIMIT}] engine ${engine}: ${COUNT} tokenless Initials from ${socks.length} ports, server read ${tokenless.received}, ` +
          `${retries} Retries back, peak connections 0; then ${followUps.length} silent Retry followers: peak connections engine ${during.maxEngineConnections}, ` +
          `endpoint ${during.maxConnections} (bound ${bound}); after timeout: engine ${settled.engineConnections}, endpoint ${settled.connections}; ` +
          `heap ${mib(before.heapUsed)} -> ${mib(duringMem.heapUsed)} -> ${mib(after.heapUsed)}, rss ${mib(before.rss)} -> ${mib(duringMem.rss)} -> ${mib(after.rss)}`,
      )
      expect(during.maxEngineConnections).toBeGreaterThanOrEqual(LIMIT)
      expect(during.maxEngineConnections).toBeLessThanOrEqual(bound)
      expect(during.maxConnections).toBeLessThanOrEqual(LIMIT)
      expect(duringMem.rss - before.rss).toBeLessThan(LEAK_BOUND + during.maxEngineConnections * HALF_OPEN_BUDGET)
      expect(settled.engineConnections).toBe(0)
      expect(settled.connections).toBe(0)
      expect(after.heapUsed - before.heapUsed).toBeLessThan(LEAK_BOUND)
      expect(after.rss - before.rss).toBeLessThan(LEAK_BOUND)
      expect(await server.cmd<string[]>('problems')).toEqual([])
    } finally {
      for (const s of socks) s.sock.close()
      await server.cmd('close', { name: 'retry' })
    }
  }, 90_000)

  it('refuses genuine Retry tokens once expired, and accepts a fresh one from the same address', async () => {
    const lifetime = TOKEN_LIFETIME_MS[floodEngine as keyof typeof TOKEN_LIFETIME_MS]
    expect(lifetime).toBeGreaterThan(0)
    const { raw, retries, at } = early!
    // Usually the tests above took longer than a token lives; otherwise wait it out.
    const wait = at + lifetime + 1000 - Date.now()
    if (wait > 0) await sleep(wait)
    await drained('flood')
    await server.cmd('resetMaxima', { name: 'flood' })
    const base = await server.stats('flood')
    for (const { first, retry } of retries) await sendTo(raw, answerRetry(retry, first)!.initial.packet, floodPort)
    await until(async () => (await server.stats('flood')).packetsReceived >= base.packetsReceived + retries.length, 5000)
    await sleep(200)
    const expired = await server.stats('flood')
    expect(expired.maxEngineConnections).toBe(0)

    // Control: the same address with a fresh token gets a connection.
    const fresh = await genuineRetries(raw, floodPort, 1)
    expect(fresh.length).toBe(1)
    await sendTo(raw, answerRetry(fresh[0]!.retry, fresh[0]!.first)!.initial.packet, floodPort)
    const accepted = await until(async () => (await server.stats('flood')).maxEngineConnections > 0, 5000, 10)
    console.log(
      `[expired tokens] engine ${floodEngine}: ${retries.length} tokens used ${((Date.now() - at) / 1000).toFixed(1)} s after issue ` +
        `(lifetime ${lifetime / 1000} s): peak connections ${expired.maxEngineConnections}; fresh token accepted: ${accepted}`,
    )
    expect(accepted).toBe(true)
  }, 60_000)
})
