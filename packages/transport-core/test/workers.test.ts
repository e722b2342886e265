import crypto from 'node:crypto'
import { readFileSync, readdirSync } from 'node:fs'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki, waitFor } from '@stoq/compliance-tests'
import { detectCapabilities } from '@stoq/hwaccel'
import { createEndpoint, StoqError, type Endpoint, type QuicConnection } from '../src/index.js'
import { ringShape } from '../src/workers/supervisor.js'
import { readAll, serveEcho, sha256 } from './fixtures/echo.js'

/**
 * Multi-core endpoints (`workers` option): N engine worker threads, each with a
 * QUIC engine and a UDP socket on the same port (SO_REUSEPORT), packets steered
 * by connection ID. The workers run quinn only (quiche's binding is not safe in
 * several threads), so this file runs once; single-thread peers use quiche
 * where the test says so.
 */

let pki: TestPki
const open: Endpoint[] = []
let canRun = true

beforeAll(async () => {
  pki = await testPki()
  const caps = await detectCapabilities()
  canRun = caps.gro.available
})

afterEach(async () => {
  for (const ep of open.splice(0)) await ep.close().catch(() => {})
})

async function endpoint(options: Parameters<typeof createEndpoint>[0]): Promise<Endpoint> {
  const ep = await createEndpoint(options)
  open.push(ep)
  return ep
}

function server(workers: number | 'auto', extra: Parameters<typeof createEndpoint>[0] = {}): Promise<Endpoint> {
  return endpoint({ host: '127.0.0.1', workers, server: { cert: pki.server.cert, key: pki.server.key }, ...extra })
}

function dial(from: Endpoint, to: Endpoint): Promise<QuicConnection> {
  return from.connect({ host: '127.0.0.1', port: to.address.port, ca: pki.ca, serverName: 'localhost' })
}

/** Deterministic pseudo-random bytes (AES-CTR keystream of a seed). */
function randomBytes(n: number, seed: number): Uint8Array {
  const key = crypto.createHash('md5').update(String(seed)).digest()
  return crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n))
}

async function echo(conn: QuicConnection, data: Uint8Array): Promise<string> {
  const stream = conn.openStream()
  const back = readAll(stream.readable!)
  back.catch(() => {}) // a failed write below reports the error; the read fails with it
  const writer = stream.writable!.getWriter()
  for (let off = 0; off < data.length; off += 65536) await writer.write(data.subarray(off, off + 65536))
  await writer.close()
  return sha256(await back)
}

/** The kit's `waitFor` (polls every 10 ms), with this file's time limit as a second argument. */
const until = (cond: () => boolean, ms = 10_000): Promise<void> => waitFor(cond, { limitMs: ms, everyMs: 10 })

describe('engine workers (multi-core endpoints)', () => {
  it('64 connections spread over 2 workers, each echo verified by hash', async (ctx) => {
    if (!canRun) ctx.skip()
    const srv = await server(2)
    srv.on('connection', serveEcho)
    expect(srv.stats().engineChoice).toMatch(/2 engine workers/)
    expect(srv.stats().udp.backend).toMatch(/×2 workers/)
    const client = await endpoint({ host: '127.0.0.1', engine: 'quiche' })
    const conns = await Promise.all(Array.from({ length: 64 }, () => dial(client, srv)))
    const results = await Promise.all(
      conns.map(async (conn, i) => {
        const data = randomBytes(128 * 1024 + i, i)
        return (await echo(conn, data)) === sha256(data)
      }),
    )
    expect(results.every(Boolean)).toBe(true)
    expect(srv.connections.length).toBe(64)
    // Wait for a stats report from each worker: both carry connections.
    await until(() => srv.stats().workers.every((w) => w.connections > 0) && srv.stats().workers.reduce((n, w) => n + w.connections, 0) === 64)
    const loads = srv.stats().workers
    expect(loads).toHaveLength(2)
    for (const w of loads) {
      expect(w.alive).toBe(true)
      expect(w.packetsReceived).toBeGreaterThan(0)
      expect(w.eventLoopUtilization).toBeGreaterThanOrEqual(0)
    }
    // Payload counted on the application thread equals what the clients wrote.
    const written = conns.reduce((n, c) => n + c.stats().streamBytesWritten, 0)
    const read = srv.connections.reduce((n, c) => n + c.stats().streamBytesRead, 0)
    expect(read).toBe(written)
  })

  it('records that overflow a tiny ring spill and still arrive in order, extras included', async (ctx) => {
    if (!canRun) ctx.skip()
    // 8 records per direction: connects, events and writes all spill past the rings, both ways.
    const before = ringShape.capacity
    ringShape.capacity = 8
    let srv: Endpoint
    let client: Endpoint
    try {
      srv = await server(2)
      client = await endpoint({ host: '127.0.0.1', workers: 2 })
    } finally {
      ringShape.capacity = before
    }
    srv.on('connection', serveEcho)
    const conns = await Promise.all(Array.from({ length: 24 }, () => dial(client, srv)))
    const results = await Promise.all(
      conns.map(async (conn, i) => {
        const data = randomBytes(256 * 1024 + i, 100 + i)
        return (await echo(conn, data)) === sha256(data)
      }),
    )
    expect(results).toEqual(results.map(() => true))
    // What rides as extras (the peer's address, the handshake's outcome) reached each side.
    expect(srv.connections).toHaveLength(24)
    for (const c of [...conns, ...srv.connections]) {
      expect(c.alpn).toBe(conns[0]!.alpn)
      expect(c.remoteAddress.port).toBeGreaterThan(0)
    }
    for (const c of conns) await c.close()
    await until(
      () => srv.connections.length === 0 && [srv, client].every((ep) => ep.stats().workers.every((w) => w.connections === 0 && w.sendBuffersHeld === 0)),
    )
    expect([srv, client].map((ep) => ep.stats().workers.map((w) => w.poolBuffersInUse))).toEqual([
      [0, 0],
      [0, 0],
    ])
  })

  it('dials out from workers, to a single-thread server and to a multi-core one', async (ctx) => {
    if (!canRun) ctx.skip()
    const plain = await server(0, { engine: 'quiche' })
    plain.on('connection', serveEcho)
    const multi = await server(2)
    multi.on('connection', serveEcho)
    const client = await endpoint({ host: '127.0.0.1', workers: 2 })
    const conns = [
      ...(await Promise.all(Array.from({ length: 6 }, () => dial(client, plain)))),
      ...(await Promise.all(Array.from({ length: 6 }, () => dial(client, multi)))),
    ]
    const data = randomBytes(1 << 20, 7)
    const hashes = await Promise.all(conns.map((c) => echo(c, data)))
    expect(new Set(hashes)).toEqual(new Set([sha256(data)]))
    expect(conns.every((c) => c.alpn === 'stoq/1')).toBe(true)
    await until(() => client.stats().workers.every((w) => w.connections === 6))
  })

  it('datagrams, uni streams both ways, and close codes cross the workers', async (ctx) => {
    if (!canRun) ctx.skip()
    const srv = await server(2)
    const closes: { code: number; reason: string }[] = []
    srv.on('connection', (conn) => {
      conn.on('datagram', (d) => conn.sendDatagram(d))
      conn.on('stream', async (s) => {
        const body = await readAll(s.readable!)
        const reply = conn.openStream({ unidirectional: true })
        const w = reply.writable!.getWriter()
        await w.write(body)
        await w.close()
      })
      conn.on('close', (info) => closes.push({ code: info.code, reason: info.reason }))
    })
    const client = await endpoint({ host: '127.0.0.1', workers: 2 })
    const conn = await dial(client, srv)
    const got: string[] = []
    conn.on('datagram', (d) => got.push(Buffer.from(d).toString()))
    const replies: Promise<Uint8Array>[] = []
    conn.on('stream', (s) => replies.push(readAll(s.readable!)))
    for (let i = 0; i < 20; i++) conn.sendDatagram(`dgram ${i}`)
    await until(() => got.length >= 15) // datagrams may be lost; loopback rarely does
    expect(got.every((g) => /^dgram \d+$/.test(g))).toBe(true)
    const body = randomBytes(300_000, 3)
    await conn.send(body)
    await until(() => replies.length === 1)
    expect(sha256(await replies[0]!)).toBe(sha256(body))
    await conn.close(42, 'done here')
    await until(() => closes.length === 1)
    expect(closes[0]).toEqual({ code: 42, reason: 'done here' })
  })

  it('confirmed sends, a graceful close that delivers everything, and 1000 streams', async (ctx) => {
    if (!canRun) ctx.skip()
    const srv = await server(2)
    const got: Promise<Uint8Array>[] = []
    let closedWith: { code: number; reason: string } | null = null
    srv.on('connection', (conn) => {
      conn.on('stream', (s) => {
        if (s.bidirectional) void s.readable!.pipeTo(s.writable!).catch(() => {})
        else got.push(readAll(s.readable!))
      })
      conn.on('close', (info) => (closedWith = { code: info.code, reason: info.reason }))
    })
    const client = await endpoint({ host: '127.0.0.1', workers: 2 })
    const conn = await dial(client, srv)
    // confirm: resolves once the peer acknowledged every byte (reported by the worker's engine).
    const first = randomBytes(1 << 20, 21)
    expect(await conn.send(first, { confirm: true, timeoutMs: 10_000 })).toBe(first.length)
    // 1000 echo streams at once: the reserve of stream ids opened ahead refills as they are used.
    const small = randomBytes(1000, 22)
    // Waiting for credit: the server raises its limit (128 at first) as the streams are used.
    const echoes = await Promise.all(
      Array.from({ length: 1000 }, async () => {
        const s = await conn.createStream({ timeoutMs: 20_000 })
        const back = readAll(s.readable!)
        const w = s.writable!.getWriter()
        await w.write(small)
        await w.close()
        return sha256(await back)
      }),
    )
    expect(new Set(echoes)).toEqual(new Set([sha256(small)]))
    // Unconfirmed send, then close at once: graceful close delivers it before CONNECTION_CLOSE.
    const last = randomBytes(4 << 20, 23)
    await conn.send(last)
    await conn.close(7, 'bye')
    await until(() => got.length === 2 && closedWith !== null)
    expect(sha256(await got[0]!)).toBe(sha256(first))
    expect(sha256(await got[1]!)).toBe(sha256(last))
    expect(closedWith).toEqual({ code: 7, reason: 'bye' })
  })

  it('a worker crash is reported, its connections fail with a typed error, the others go on', async (ctx) => {
    if (!canRun) ctx.skip()
    const srv = await server(2, { transport: { maxIdleTimeoutMs: 3000 } })
    srv.on('connection', serveEcho)
    const errors: Error[] = []
    srv.on('error', (e) => errors.push(e))
    const client = await endpoint({ host: '127.0.0.1', transport: { maxIdleTimeoutMs: 3000 } })
    const conns = await Promise.all(Array.from({ length: 16 }, () => dial(client, srv)))
    await until(() => srv.stats().workers.every((w) => w.connections > 0))
    const serverConns = srv.connections
    const serverCloses = serverConns.map((c) => c.closed)
    srv.crashWorkerForTest(0)
    await until(() => errors.length > 0)
    expect(StoqError.isInstance(errors[0])).toBe(true)
    expect((errors[0] as StoqError).code).toBe('STOQ_ERR_ENGINE')
    expect(errors[0]!.message).toMatch(/engine worker 0 crashed/)
    const loads = srv.stats().workers
    expect(loads[0]!.alive).toBe(false)
    expect(loads[0]!.exit).toMatch(/crash requested by a test/)
    expect(loads[1]!.alive).toBe(true)
    // The server's connections on worker 0 ended with the worker's reason; the rest live.
    await until(() => srv.connections.length < 16)
    const ended = serverConns.filter((c) => c.isClosed)
    expect(ended.length).toBeGreaterThan(0)
    for (const c of ended) expect((await c.closed).reason).toMatch(/engine worker 0 crashed/)
    const survivors = serverConns.filter((c) => !c.isClosed)
    expect(survivors.length + ended.length).toBe(16)
    expect(survivors.length).toBeGreaterThan(0)
    // Clients of survivors still echo; clients of the dead worker time out (typed).
    const data = randomBytes(256 * 1024, 11)
    const outcomes = await Promise.all(
      conns.map(async (c) => {
        try {
          return (await echo(c, data)) === sha256(data) ? 'ok' : 'corrupt'
        } catch (err) {
          return StoqError.isInstance(err) ? (err as StoqError).code : 'untyped'
        }
      }),
    )
    expect(outcomes.filter((o) => o === 'ok').length).toBe(survivors.length)
    expect(outcomes.filter((o) => o !== 'ok').every((o) => o === 'STOQ_ERR_IDLE_TIMEOUT' || o === 'STOQ_ERR_CLOSED')).toBe(true)
    // New connections are served by the surviving worker (the steering program was rebuilt).
    const fresh = await Promise.all(Array.from({ length: 4 }, () => dial(client, srv)))
    for (const c of fresh) expect(await echo(c, data)).toBe(sha256(data))
    void serverCloses
  })

  it('pins each worker to a CPU and reports it', async (ctx) => {
    if (!canRun || !(await detectCapabilities()).affinity.available) ctx.skip()
    const srv = await server(2, { cpuAffinity: [0, 1] })
    await until(() => srv.stats().workers.every((w) => w.threadId > 0), 5000)
    for (const w of srv.stats().workers) {
      expect(w.cpus).toEqual([w.index])
      const status = readFileSync(`/proc/self/task/${w.threadId}/status`, 'utf8')
      expect(status).toMatch(new RegExp(`Cpus_allowed_list:\\s*${w.index}\\n`))
    }
  })

  it('keeps backpressure across the boundary: a peer that never reads stops the writer', async (ctx) => {
    if (!canRun) ctx.skip()
    const srv = await server(2, {
      transport: { initialMaxStreamData: 256 * 1024, maxStreamWindow: 256 * 1024, initialMaxData: 1 << 20, maxConnectionWindow: 1 << 20 },
    })
    srv.on('connection', () => {}) // accepts streams, never reads them
    const client = await endpoint({ host: '127.0.0.1', workers: 2 })
    const conn = await dial(client, srv)
    const stream = conn.openStream()
    const writer = stream.writable!.getWriter()
    const chunk = new Uint8Array(65536)
    let accepted = 0
    const stalled = (async () => {
      for (;;) {
        await writer.write(chunk)
        accepted += chunk.length
      }
    })()
    void stalled.catch(() => {})
    // Give it time to fill every window, then check it stopped well short of 64 MiB.
    await new Promise((r) => setTimeout(r, 1500))
    const first = accepted
    await new Promise((r) => setTimeout(r, 500))
    expect(accepted).toBe(first)
    // Peer window 256 KiB + the engine's send buffer + the 1 MiB hand-off window.
    expect(accepted).toBeLessThan(8 << 20)
    expect(accepted).toBeGreaterThan(0)
  })

  it('2000 connect / echo / close cycles leave no connection, buffer or send reference behind', async (ctx) => {
    if (!canRun) ctx.skip()
    const srv = await server(2)
    srv.on('connection', serveEcho)
    const client = await endpoint({ host: '127.0.0.1' })
    const data = randomBytes(64, 41)
    const want = sha256(data)
    let done = 0
    const cycle = async (): Promise<void> => {
      const conn = await dial(client, srv)
      expect(await echo(conn, data)).toBe(want)
      await conn.close()
      done++
    }
    const t0 = performance.now()
    for (let round = 0; round < 40; round++) await Promise.all(Array.from({ length: 50 }, cycle))
    const seconds = (performance.now() - t0) / 1000
    expect(done).toBe(2000)
    await until(() => srv.connections.length === 0 && srv.engine.connectionCount === 0)
    // Wait for a report taken after the last close, then check both threads' leftovers.
    const reported = srv.stats().workers.map((w) => w.packetsReceived)
    await until(() => srv.stats().workers.every((w, i) => w.packetsReceived > reported[i]! || w.connections === 0), 5000)
    await new Promise((r) => setTimeout(r, 1100))
    const loads = srv.stats().workers
    console.log(
      `[workers soak] 2000 cycles in ${seconds.toFixed(1)} s; per worker: ${loads
        .map(
          (w) =>
            `connections ${w.connections}, pool buffers in use ${w.poolBuffersInUse}, send refs ${w.sendBuffersHeld}, heap ${(w.heapUsedBytes / 2 ** 20).toFixed(1)} MiB`,
        )
        .join('; ')}`,
    )
    for (const w of loads) {
      expect(w.connections).toBe(0)
      expect(w.poolBuffersInUse).toBe(0)
      expect(w.sendBuffersHeld).toBe(0)
    }
  })

  it('leaves no thread, port or handle behind once closed', async (ctx) => {
    if (!canRun) ctx.skip()
    await new Promise((r) => setTimeout(r, 100)) // let earlier sockets finish closing
    const before = process.getActiveResourcesInfo()
    // Worker threads do not show in getActiveResourcesInfo(): count the process's threads.
    const threads = (): number => readdirSync('/proc/self/task').length
    const threadsBefore = threads()
    const srv = await createEndpoint({ host: '127.0.0.1', workers: 2, server: { cert: pki.server.cert, key: pki.server.key } })
    srv.on('connection', serveEcho)
    const client = await createEndpoint({ host: '127.0.0.1', workers: 2 })
    expect(threads()).toBeGreaterThanOrEqual(threadsBefore + 8)
    const data = randomBytes(100_000, 31)
    expect(await echo(await dial(client, srv), data)).toBe(sha256(data))
    await client.close()
    await srv.close()
    await new Promise((r) => setTimeout(r, 50))
    // Nothing new: each resource kind is at most as numerous as before.
    const count = (list: string[]): Map<string, number> => list.reduce((m, k) => m.set(k, (m.get(k) ?? 0) + 1), new Map<string, number>())
    const was = count(before)
    const extra = [...count(process.getActiveResourcesInfo())].filter(([k, n]) => n > (was.get(k) ?? 0))
    expect(extra).toEqual([])
    // 2 + 2 engine threads and their 4 network threads ran meanwhile; all have exited.
    await until(() => threads() <= threadsBefore, 5000)
  })

  it('validates the option and says when workers cannot run', async () => {
    await expect(createEndpoint({ workers: -1 })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(createEndpoint({ workers: 65 })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(createEndpoint({ workers: 'many' as unknown as number })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(createEndpoint({ host: '127.0.0.1', workers: 2, udpBackend: 'dgram' })).rejects.toMatchObject({ code: 'STOQ_ERR_UNSUPPORTED' })
    // `auto` with a backend that cannot share a port: stays on this thread and says why.
    const ep = await endpoint({ host: '127.0.0.1', workers: 'auto', udpBackend: 'gso' })
    expect(ep.stats().workers).toEqual([])
    expect(ep.stats().engineChoice).toMatch(/workers auto: /)
    // quiche cannot run in workers: refused when asked for, `auto` stays on this thread.
    await expect(createEndpoint({ host: '127.0.0.1', workers: 2, engine: 'quiche' })).rejects.toMatchObject({ code: 'STOQ_ERR_UNSUPPORTED' })
    const q = await endpoint({ host: '127.0.0.1', workers: 'auto', engine: 'quiche' })
    expect(q.stats().workers).toEqual([])
    expect(q.stats().engineChoice).toMatch(/workers auto: engine workers run the quinn engine only/)
    // One worker takes the engine off this thread; 0 keeps it here.
    const one = await server(1)
    one.on('connection', serveEcho)
    expect(one.stats().workers).toHaveLength(1)
    const client = await endpoint({ host: '127.0.0.1', workers: 0 })
    expect(client.stats().workers).toEqual([])
    const data = randomBytes(200_000, 5)
    expect(await echo(await dial(client, one), data)).toBe(sha256(data))
  })
})
