import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type Endpoint, type LimitsUsage, type QuicConnection } from '../src/index.js'
import { readAll } from './fixtures/echo.js'
import { sleep, waitFor } from './fixtures/peers.js'

/**
 * Hostile peers against a server in its own process with a capped V8 heap (256 MiB), the way a
 * skeptical user tries a server before deploying it. Every test is bounded in time. The
 * figures (peak RSS, budgets in use) are printed for the record; the assertions are about
 * behaviour: the server stays alive, stays within its budgets, and serves a new client.
 */

const SERVER = fileURLToPath(new URL('./fixtures/hostile-server.mjs', import.meta.url))
const FLOODER = fileURLToPath(new URL('./fixtures/flooder.mjs', import.meta.url))
const ENGINE = process.env.STOQ_ENGINE ?? 'quinn'
const MiB = 1024 * 1024
const ONE = new Uint8Array([0x61])
/**
 * Handshake timeout of the new client that must be served while an attack runs. The tests
 * assert that it is served while the attacker is still at work (the attack never stops by
 * itself), not how fast: the time is reported as a figure.
 */
const NEW_CLIENT_HANDSHAKE_TIMEOUT_MS = 20_000

interface Report {
  rss: number
  peakRss: number
  heapUsed: number
  connections: number
  limits: LimitsUsage
  workers: { stalled: boolean; threadId: number; alive: boolean }[]
}

class HostileServer {
  private child: ChildProcess | null = null
  port = 0
  last: Report | null = null
  /** Reports received (one per 100 ms while the server's event loop runs). */
  reports = 0
  errors: string[] = []
  exit: string | null = null

  async start(pki: TestPki, config: Record<string, unknown>): Promise<void> {
    const child = spawn(process.execPath, ['--max-old-space-size=256', SERVER], {
      env: { ...process.env, STOQ_TEST_PEER: JSON.stringify({ cert: pki.server.cert, key: pki.server.key, ...config }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.child = child
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    child.on('exit', (code, signal) => {
      this.exit = `exited (code ${code}, signal ${signal}): ${stderr.slice(-2000)}`
    })
    const lines = createInterface({ input: child.stdout! })
    await new Promise<void>((resolve, reject) => {
      child.on('exit', () => reject(new Error(`hostile server ${this.exit}`)))
      lines.on('line', (line) => {
        const msg = JSON.parse(line) as Partial<Report> & { port?: number; error?: string }
        if (msg.port !== undefined) {
          this.port = msg.port
          resolve()
        } else if (msg.error !== undefined) this.errors.push(msg.error)
        else {
          this.last = msg as Report
          this.reports++
        }
      })
    })
  }

  get alive(): boolean {
    return this.exit === null
  }

  async stop(): Promise<void> {
    const child = this.child
    this.child = null
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve())
      child.kill('SIGKILL')
    })
  }
}

async function clientEndpoint(extra: Record<string, unknown> = {}): Promise<Endpoint> {
  return createEndpoint({ host: '127.0.0.1', ...extra })
}

/** A new client connects and gets one echo back; returns how long that took (a figure, not a limit). */
async function connectAndEcho(pki: TestPki, port: number): Promise<number> {
  const start = performance.now()
  const ep = await clientEndpoint()
  try {
    const conn = await ep.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: 'localhost', handshakeTimeoutMs: NEW_CLIENT_HANDSHAKE_TIMEOUT_MS })
    const stream = conn.openStream()
    const writer = stream.writable!.getWriter()
    await writer.write(new TextEncoder().encode('still serving?'))
    await writer.close()
    const echoed = await readAll(stream.readable!)
    expect(new TextDecoder().decode(echoed)).toBe('still serving?')
    return performance.now() - start
  } finally {
    await ep.destroy()
  }
}

async function holdStreams(pki: TestPki, port: number, connections: number): Promise<{ ep: Endpoint; opened: number }> {
  // The attacker always runs quinn (the server's engine is what is under test): cheap opens.
  const ep = await clientEndpoint({ engine: 'quinn' })
  const conns: QuicConnection[] = []
  for (let i = 0; i < connections; i += 8) {
    const batch = Array.from({ length: Math.min(8, connections - i) }, () =>
      ep.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: 'localhost', handshakeTimeoutMs: 10_000 }),
    )
    for (const r of await Promise.allSettled(batch)) if (r.status === 'fulfilled') conns.push(r.value)
  }
  let opened = 0
  const e = ep.engine
  // The server widens its stream limit about one round trip after the handshake: open what
  // is allowed, let the cycle run, and go on until 4000 each or no progress.
  for (let round = 0; round < 50; round++) {
    let progress = 0
    for (const c of conns) {
      if (c.isClosed) continue
      for (let k = 0; k < 500; k++) {
        const id = e.openStream(c.handle, true)
        if (id < 0) break
        e.streamSend(c.handle, id, ONE, false)
        progress++
      }
    }
    opened += progress
    ep.schedule()
    await sleep(20)
    if (progress === 0 && round > 3) break
  }
  return { ep, opened }
}

describe(`hostile peers against a server in its own process (256 MiB heap), engine ${ENGINE}`, () => {
  let pki: TestPki
  let server: HostileServer
  const cleanup: Endpoint[] = []

  beforeAll(async () => {
    pki = await testPki()
  })

  afterEach(async () => {
    for (const ep of cleanup.splice(0)) await ep.destroy().catch(() => {})
    await server?.stop()
  })

  // The clock for the new client starts once the server has taken in the attack (its count of open
  // and waiting streams stopped growing): quiche lists every stream with unread data on each packet
  // of a connection, so taking in 4000 streams per connection costs it seconds (printed below).
  for (const connections of [24, 96]) {
    it(`stream hold by ${connections} connections (4000 streams each, one byte, never read): alive, within budget, serves a new client`, async () => {
      server = new HostileServer()
      await server.start(pki, { handler: 'echo' })
      const attack = await holdStreams(pki, server.port, connections)
      cleanup.push(attack.ep)
      const settleStart = performance.now()
      let seen = -1
      let reports = server.reports
      // Five fresh reports in a row with the same count (a busy server sends none).
      for (let stable = 0; stable < 5 && performance.now() - settleStart < 60_000; ) {
        await sleep(100)
        if (server.reports === reports) continue
        reports = server.reports
        const l = server.last!.limits
        const now = l.streams + l.streamsWaiting
        stable = now === seen ? stable + 1 : 0
        seen = now
      }
      const settledMs = performance.now() - settleStart
      const ms = await connectAndEcho(pki, server.port)
      await sleep(150)
      expect(server.alive, server.exit ?? '').toBe(true)
      const r = server.last!
      const l = r.limits
      // Open streams stay within the budget plus each connection's guaranteed minimum.
      expect(l.streams).toBeLessThanOrEqual(l.limits.maxStreams + (connections + 1) * l.limits.minStreamsPerConnection)
      console.log(
        `[hostile ${ENGINE}] stream hold x${connections}: ${attack.opened} streams opened by the attacker; server peak RSS ${(r.peakRss / MiB).toFixed(0)} MiB, heap ${(r.heapUsed / MiB).toFixed(0)} MiB, ${l.streams} streams open (budget ${l.limits.maxStreams}), ${l.streamsWaiting} waiting; attack taken in ${settledMs.toFixed(0)} ms; new client served in ${ms.toFixed(0)} ms`,
      )
    }, 120_000)
  }

  it('many non-reading connections stay within the read and receive budgets; beyond them connections are refused', async () => {
    const limits = { maxReadBufferBytes: 32 * MiB, maxReadBufferBytesPerConnection: 8 * MiB, maxReceiveWindowBytes: 128 * MiB }
    server = new HostileServer()
    await server.start(pki, { handler: 'hold', limits })
    const ep = await clientEndpoint()
    cleanup.push(ep)
    const conns: QuicConnection[] = []
    let refused = 0
    for (let i = 0; i < 40; i++) {
      try {
        const conn = await ep.connect({ host: '127.0.0.1', port: server.port, ca: pki.ca, serverName: 'localhost', handshakeTimeoutMs: 5000 })
        // The refusal follows the server's first flight: a quinn client may complete its side of
        // the handshake before the CONNECTION_CLOSE arrives, then sees the close at once.
        const closed = await Promise.race([conn.closed, sleep(300).then(() => null)])
        if (closed === null) conns.push(conn)
        else {
          expect(closed.reason).toMatch(/server busy/)
          refused++
        }
      } catch (err) {
        expect((err as { code?: string }).code).toBe('STOQ_ERR_CONNECTION_REFUSED')
        expect((err as Error).message).toMatch(/server busy/)
        refused++
      }
    }
    // Every accepted connection writes as fast as it can on 8 streams; nobody reads.
    const block = new Uint8Array(256 * 1024)
    const writers = conns.flatMap((c) =>
      Array.from({ length: 8 }, async () => {
        const w = c.openStream().writable!.getWriter()
        try {
          for (;;) await w.write(block)
        } catch {
          // closed at the end
        }
      }),
    )
    await sleep(3000)
    expect(server.alive, server.exit ?? '').toBe(true)
    const r = server.last!
    const l = r.limits
    expect(l.readBufferBytes).toBeLessThanOrEqual(limits.maxReadBufferBytes + 8 * 64 * 1024)
    expect(l.receiveWindowBytes).toBeLessThanOrEqual(limits.maxReceiveWindowBytes)
    expect(refused).toBeGreaterThan(0)
    expect(l.connectionsRefused).toBe(refused)
    console.log(
      `[hostile ${ENGINE}] non-reading: ${conns.length} connections x 8 streams writing, ${refused} refused (server busy); server peak RSS ${(r.peakRss / MiB).toFixed(0)} MiB; read buffers ${(l.readBufferBytes / MiB).toFixed(1)} MiB of ${limits.maxReadBufferBytes / MiB}, windows ${(l.receiveWindowBytes / MiB).toFixed(1)} MiB of ${limits.maxReceiveWindowBytes / MiB}`,
    )
    await ep.destroy()
    await Promise.allSettled(writers)
  }, 60_000)

  it('a datagram flood against a slow handler (0.5 ms each) lets a new client connect and echo', async () => {
    server = new HostileServer()
    await server.start(pki, { handler: 'slow-datagrams' })
    // The flooder runs in its own process (quinn, the faster sender), as an attacker would:
    // in this process it would take the CPU the new client needs.
    const flooder = spawn(process.execPath, [FLOODER], {
      env: { ...process.env, STOQ_ENGINE: 'quinn', STOQ_TEST_PEER: JSON.stringify({ port: server.port, ca: pki.ca }) },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let sent = 0
    try {
      const lines = createInterface({ input: flooder.stdout! })
      await new Promise<void>((resolve, reject) => {
        flooder.once('exit', (code) => reject(new Error(`flooder exited (${code})`)))
        lines.on('line', (line) => {
          const msg = JSON.parse(line) as { flooding?: boolean; sent?: number }
          if (msg.flooding) resolve()
          if (msg.sent !== undefined) sent = msg.sent
        })
      })
      await sleep(1000)
      const before = server.last!.limits
      const sentBefore = sent
      const ms = await connectAndEcho(pki, server.port)
      // Served while the flood went on: the flooder is still running and reported more
      // datagrams sent since the new client started (it reports every 500 ms).
      await sleep(600)
      expect(flooder.exitCode).toBe(null)
      expect(sent).toBeGreaterThan(sentBefore)
      expect(server.alive, server.exit ?? '').toBe(true)
      const l = server.last!.limits
      expect(l.queuedDatagrams).toBeLessThanOrEqual(l.limits.maxQueuedDatagrams)
      console.log(
        `[hostile ${ENGINE}] datagram flood: ${sent} datagrams sent by the flooder, server queue ${before.queuedDatagrams} (limit ${l.limits.maxQueuedDatagrams}), dropped ${l.datagramsDropped} over its queues; peak RSS ${(server.last!.peakRss / MiB).toFixed(0)} MiB; new client served in ${ms.toFixed(0)} ms`,
      )
    } finally {
      flooder.kill('SIGKILL')
    }
  }, 60_000)
})

describe('endpoint budgets, own side', () => {
  it('a dial that does not fit the receive budget fails with STOQ_ERR_RESOURCE_LIMIT, and commits nothing', async () => {
    const pki = await testPki()
    const server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } })
    // 64 KiB of credit: less than one connection's starting window.
    const client = await createEndpoint({ host: '127.0.0.1', limits: { maxReceiveWindowBytes: 64 * 1024 } })
    try {
      const err = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' }).then(
        () => null,
        (e: unknown) => e as { code?: string; data?: { limit: string }; message: string },
      )
      expect(err?.code).toBe('STOQ_ERR_RESOURCE_LIMIT')
      expect(err?.data?.limit).toBe('maxReceiveWindowBytes')
      expect(err?.message).toMatch(/receive budget is full/)
      const l = client.stats().limits
      expect(l.receiveWindowBytes).toBe(0)
      expect(client.stats().connections).toBe(0)
    } finally {
      await client.destroy()
      await server.destroy()
    }
  })
})

describe.runIf(ENGINE === 'quinn')('hostile peers against engine workers', () => {
  let pki: TestPki
  beforeAll(async () => {
    pki = await testPki()
  })

  it('clients allowing few or no streams (0/0, 0/100, 31/100, 100/7) are served and every worker keeps serving and reporting', async () => {
    const server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key }, workers: 2 })
    const errors: Error[] = []
    server.on('error', (e) => errors.push(e))
    server.on('connection', (conn) => {
      conn.on('stream', (s) => void (s.readable && s.writable && s.readable.pipeTo(s.writable).catch(() => {})))
    })
    const clients: Endpoint[] = []
    try {
      const echo = async (transport: Record<string, number>): Promise<void> => {
        const ep = await createEndpoint({ host: '127.0.0.1', transport })
        clients.push(ep)
        const conn = await ep.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost', handshakeTimeoutMs: 5000 })
        const s = conn.openStream()
        const w = s.writable!.getWriter()
        await w.write(new TextEncoder().encode('x'))
        await w.close()
        expect(new TextDecoder().decode(await readAll(s.readable!))).toBe('x')
      }
      for (const [bidi, uni] of [
        [0, 0],
        [0, 100],
        [31, 100],
        [100, 7],
      ]) {
        // Several of each, so both workers get them (steering is by the client's random DCID).
        await Promise.all(Array.from({ length: 4 }, () => echo({ initialMaxStreamsBidi: bidi!, initialMaxStreamsUni: uni! })))
      }
      // Then ordinary clients, many enough to reach both workers, all served.
      await Promise.all(Array.from({ length: 12 }, () => echo({})))
      await sleep(1200)
      const workers = server.stats().workers
      expect(workers).toHaveLength(2)
      for (const w of workers) {
        expect(w.alive).toBe(true)
        expect(w.stalled).toBe(false)
        expect(w.threadId).toBeGreaterThan(0)
        expect(w.silentMs).toBeLessThan(w.alive ? 5000 : Infinity)
      }
      expect(errors).toEqual([])
    } finally {
      for (const c of clients) await c.destroy()
      await server.close()
    }
  }, 60_000)

  it('a worker whose event loop is blocked is reported stalled (stats and an error event), and recovers', async () => {
    const server = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      workers: 2,
      limits: { workerStallMs: 500 },
    })
    const errors: Error[] = []
    server.on('error', (e) => errors.push(e))
    try {
      server.blockWorkerForTest(1, 2500)
      await waitFor(() => server.stats().workers[1]!.stalled, 'worker 1 reported stalled', 10_000)
      expect(server.stats().workers[0]!.stalled).toBe(false)
      await waitFor(() => errors.some((e) => /engine worker 1 stalled/.test(e.message)), 'a stall error event', 5000)
      expect((errors[0] as { code?: string }).code).toBe('STOQ_ERR_ENGINE')
      await waitFor(() => !server.stats().workers[1]!.stalled, 'worker 1 answering again', 10_000)
    } finally {
      await server.close()
    }
  }, 30_000)

  it('engine workers under Node flags a worker cannot take (--expose-gc, a heap cap) still run, without those flags', () => {
    const dist = new URL('../dist/index.js', import.meta.url).href
    const script = `
      const { createEndpoint } = await import(${JSON.stringify(dist)})
      const ep = await createEndpoint({ host: '127.0.0.1', workers: 2 })
      console.log(JSON.stringify({ workers: ep.stats().workers.length, choice: ep.stats().engineChoice, gc: typeof gc }))
      await ep.close()
    `
    const r = spawnSync(process.execPath, ['--expose-gc', '--max-old-space-size=256', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 20_000,
    })
    expect(r.status, r.stderr).toBe(0)
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { workers: number; choice: string; gc: string }
    expect(out.workers).toBe(2)
    expect(out.gc).toBe('function')
    expect(out.choice).toMatch(/left out of the workers \(--expose-gc, --max-old-space-size=256/)
  })
})

afterAll(() => {})
