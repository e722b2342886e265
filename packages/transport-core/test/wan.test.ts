/**
 * STOQ over an emulated WAN (25 ms each way = 50 ms RTT, 1% loss, 1% reordering, 1500-byte
 * MTU, 100 Mbit/s), one peer process per network namespace (test/wan/peer.mjs, built code
 * from dist/). Needs root. The link is shaped by `tc netem` on a veth pair where the kernel
 * has sch_netem, otherwise by a userspace UDP relay (test/wan/relay.mjs) in a third
 * namespace between the two (see test/wan/netns.ts). Without netns/veth support the suite
 * fails with the command's stderr; it never skips.
 *
 * Congestion control for the bulk connection: STOQ_WAN_CC, default per engine. quinn: bbr
 * (its cubic/reno under 1% random loss at 50 ms RTT is loss-bound at a few Mbit/s). quiche:
 * cubic, because quiche's bbr crawls over this lossy link: measured through the userspace
 * relay, 64 MiB client→server took 84.5 s (6.4 Mbit/s, no queue drops, only the 1% random
 * loss) and 16 MiB across the 2 s blackout took 46.5 s, against 26.4 s and 6.1 s with cubic.
 * Run with STOQ_WAN_CC=bbr to see it again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createWan, type Wan } from './wan/netns.js'
import { PeerProcess, type PeerEvent } from './wan/peer-process.js'
import { ignoreRejection } from '../src/ignore.js'

const MiB = 1024 * 1024
const BULK = 64 * MiB
const ENGINE = process.env.STOQ_ENGINE ?? 'auto'
const CC = process.env.STOQ_WAN_CC ?? (ENGINE === 'quiche' ? 'cubic' : 'bbr')
const SHORT_IDLE_MS = 3000

interface UploadResult {
  sentSha: string
  recvSha: string
  sentBytes: number
  recvBytes: number
  ms: number
}

const summary: string[] = []

describe(`emulated WAN (netns + netem or userspace relay), engine ${ENGINE}`, () => {
  let pki: TestPki
  let wan: Wan | undefined
  let server: PeerProcess | undefined // namespace A
  let client: PeerProcess | undefined // namespace B
  let shortPort = 0

  // A setup failure (no netns, no netem, no root) fails every test with the command's
  // stderr rather than leaving them reported as skipped.
  let setupError: unknown = null
  const ready = (): void => {
    if (setupError) throw setupError
  }

  beforeAll(async () => {
    try {
      await setup()
    } catch (err) {
      setupError = err
    }
  }, 240_000)

  async function setup(): Promise<void> {
    pki = await testPki()
    wan = await createWan()
    server = new PeerProcess('server', wan.nsA)
    client = new PeerProcess('client', wan.nsB)
    await Promise.all([server.waitFor((e) => e.ev === 'ready', 20_000, 'ready'), client.waitFor((e) => e.ev === 'ready', 20_000, 'ready')])

    const main = await server.cmd<{ port: number; engine: string }>('listen', {
      name: 'main',
      host: wan.v4.a,
      cert: pki.server.cert,
      key: pki.server.key,
      transport: { congestionControl: CC },
    })
    const short = await server.cmd<{ port: number }>('listen', {
      name: 'short',
      host: wan.v6.a,
      cert: pki.server.cert,
      key: pki.server.key,
      transport: { maxIdleTimeoutMs: SHORT_IDLE_MS },
    })
    const accepted = server.waitFor((e) => e.ev === 'accepted' && e.conn === 'main', 30_000, 'accepted main')
    const mainRoute = await wan.route(wan.v4.a, main.port)
    const info = await client.cmd<{ alpn: string; engine: string }>(
      'connect',
      { name: 'main', host: mainRoute.host, port: mainRoute.port, ca: pki.ca, serverName: 'localhost', transport: { congestionControl: CC } },
      30_000,
    )
    await accepted
    expect(info.alpn).toBe('stoq/1')
    if (ENGINE !== 'auto') {
      expect(main.engine).toBe(ENGINE)
      expect(info.engine).toBe(ENGINE)
    }
    shortPort = short.port
    const link = wan.shaper === 'relay' ? 'userspace relay (no sch_netem)' : 'netem'
    console.log(`[wan ${ENGINE}] link: ${link}: ${wan.describe()} (cc ${CC})`)
  }

  afterAll(async () => {
    try {
      const stats = await wan?.relayStats().catch((err) => {
        console.log(`[wan ${ENGINE}] relay stats failed: ${err}`)
        return null
      })
      if (stats) {
        for (const dir of ['client→server', 'server→client'] as const) {
          const d = stats[dir]
          const l = d.lateness
          console.log(
            `[wan ${ENGINE}] relay ${dir}: in ${d.in}, out ${d.out}, lost ${d.lost}, reordered ${d.reordered}, queue drops ${d.queueFull} (max queue ${d.maxQueue}), ` +
              `MTU drops ${d.mtu}, blackout drops ${d.blackout}, send errors ${d.sendErrors}; delay error (late vs due) mean ${l.meanMs} sd ${l.sdMs} ` +
              `p50 ${l.p50Ms} p99 ${l.p99Ms} p99.9 ${l.p999Ms} max ${l.maxMs} ms over ${l.samples} packets; bottleneck queueing p50 ${d.bottleneckQueueing.p50Ms} p99 ${d.bottleneckQueueing.p99Ms} ms`,
          )
          summary.push(`relay ${dir} delay error mean ${l.meanMs} ms, p99 ${l.p99Ms} ms, max ${l.maxMs} ms`)
        }
        const lag = stats.eventLoopLag
        console.log(
          `[wan ${ENGINE}] relay event-loop lag (10 ms probe): mean ${lag.meanMs} p99 ${lag.p99Ms} max ${lag.maxMs} ms; relay namespace kernel UDP ${JSON.stringify(stats.kernelUdp)}`,
        )
      }
      await Promise.all([server?.stop(), client?.stop()])
    } finally {
      wan?.destroy()
    }
    if (summary.length) console.log(`[wan ${ENGINE}] SUMMARY ${summary.join('; ')}`)
    for (const p of [server, client]) {
      const bad = p?.events.filter((e) => e.ev === 'unhandledRejection') ?? []
      if (bad.length) console.log(`[wan ${ENGINE}] ${p!.label} unhandled rejections: ${JSON.stringify(bad).slice(0, 2000)}`)
    }
  }, 60_000)

  function report(direction: string, r: UploadResult): void {
    const mbit = (r.recvBytes * 8) / (r.ms / 1000) / 1e6
    const rate = wan!.shape.rateMbit
    const shaper = wan!.shaper === 'relay' ? 'userspace relay' : 'netem'
    const line = `${direction} ${(r.recvBytes / MiB).toFixed(0)} MiB in ${(r.ms / 1000).toFixed(1)} s = ${mbit.toFixed(1)} Mbit/s goodput (${((100 * mbit) / rate).toFixed(0)}% of ${rate} Mbit/s link, ${shaper}, cc ${CC})`
    summary.push(line)
    console.log(`[wan ${ENGINE}] ${line}`)
  }

  it('moves 64 MiB client→server intact (SHA-256)', async () => {
    ready()
    const r = await client!.cmd<UploadResult>('upload', { conn: 'main', size: BULK }, 170_000)
    expect(r.recvBytes).toBe(BULK)
    expect(r.recvSha).toBe(r.sentSha)
    report('client→server', r)
  }, 180_000)

  it('moves 64 MiB server→client intact (SHA-256)', async () => {
    ready()
    const r = await server!.cmd<UploadResult>('upload', { conn: 'main', size: BULK }, 170_000)
    expect(r.recvBytes).toBe(BULK)
    expect(r.recvSha).toBe(r.sentSha)
    report('server→client', r)
  }, 180_000)

  it('carries 200 concurrent streams of 64 KiB, all verified', async () => {
    ready()
    const r = await client!.cmd<{ verified: number; failed: number; failures: unknown[]; ms: number }>(
      'manyStreams',
      { conn: 'main', count: 200, size: 64 * 1024 },
      110_000,
    )
    expect(r.failures).toEqual([])
    expect(r.verified).toBe(200)
    summary.push(`200x64KiB streams in ${(r.ms / 1000).toFixed(1)} s`)
  }, 120_000)

  it('delivers datagrams uncorrupted (most of them, under 1% loss)', async () => {
    ready()
    const sent = await client!.cmd<{ accepted: number; size: number }>('sendDatagrams', { conn: 'main', count: 200, size: 1000 })
    const back = await server!.cmd<{ accepted: number }>('sendDatagrams', { conn: 'main', count: 200, size: 1000 })
    // Let the last ones cross the 25 ms link (and any queue).
    await new Promise((r) => setTimeout(r, 1500))
    const atServer = await server!.cmd<{ valid: number; corrupt: number; duplicate: number }>('datagramStats', { conn: 'main' })
    const atClient = await client!.cmd<{ valid: number; corrupt: number; duplicate: number }>('datagramStats', { conn: 'main' })
    summary.push(`datagrams c→s ${atServer.valid}/${sent.accepted} s→c ${atClient.valid}/${back.accepted}`)
    console.log(
      `[wan ${ENGINE}] datagrams: client→server ${atServer.valid}/200 (accepted ${sent.accepted}), server→client ${atClient.valid}/200 (accepted ${back.accepted})`,
    )
    expect(atServer.corrupt).toBe(0)
    expect(atClient.corrupt).toBe(0)
    expect(atServer.duplicate).toBe(0)
    expect(atClient.duplicate).toBe(0)
    expect(atServer.valid).toBeGreaterThan(0)
    expect(atClient.valid).toBeGreaterThan(0)
    expect(atServer.valid).toBeLessThanOrEqual(200)
  }, 60_000)

  it('survives a 2-second blackout shorter than the idle timeout; a transfer across it completes intact', async () => {
    ready()
    const size = 16 * MiB
    const tag = 'blackout-transfer'
    const transfer = client!.cmd<UploadResult>('upload', { conn: 'main', size, progressAt: 2 * MiB, tag }, 170_000)
    transfer.catch(() => {})
    // Wait until the transfer is under way (or has already failed).
    await Promise.race([client!.waitFor((e) => e.ev === 'progress' && e.tag === tag, 60_000, 'transfer progress'), transfer])
    const before = await client!.cmd<{ established: boolean; rttMs: number }>('status', { conn: 'main' })
    expect(before.established).toBe(true)
    summary.push(`smoothed RTT under load ${before.rttMs} ms`)
    await wan!.blackout(true)
    try {
      await new Promise((r) => setTimeout(r, 2000))
    } finally {
      await wan!.blackout(false)
    }
    const r = await transfer
    expect(r.recvBytes).toBe(size)
    expect(r.recvSha).toBe(r.sentSha)
    const after = await client!.cmd<{ established: boolean }>('status', { conn: 'main' })
    expect(after.established).toBe(true)
    expect(client!.events.some((e) => e.ev === 'closed' && e.conn === 'main')).toBe(false)
    expect(server!.events.some((e) => e.ev === 'closed' && e.conn === 'main')).toBe(false)
    summary.push(`16 MiB across a 2 s blackout in ${(r.ms / 1000).toFixed(1)} s`)
  }, 180_000)

  // Path MTU discovery: both sides may send up to 9000 bytes, the link carries 1500-byte IP
  // packets. quinn starts at 1200 and must find a size above it that fits the link (at most
  // 1472 bytes of UDP payload over IPv4); a probe the link drops never counts as found, and
  // with Don't Fragment set no probe arrives in fragments. quiche has no MTU discovery.
  it('finds the path MTU of a 1500-byte link from a 9000-byte ceiling, and moves data intact at it', async () => {
    ready()
    const transport = { maxUdpPayloadSize: 9000 }
    const listening = await server!.cmd<{ port: number }>('listen', { name: 'mtu', host: wan!.v4.a, cert: pki.server.cert, key: pki.server.key, transport })
    const accepted = server!.waitFor((e) => e.ev === 'accepted' && e.conn === 'mtu', 30_000, 'accepted mtu')
    const route = await wan!.route(wan!.v4.a, listening.port)
    await client!.cmd('connect', { name: 'mtu', host: route.host, port: route.port, ca: pki.ca, serverName: 'localhost', transport }, 30_000)
    await accepted
    if (ENGINE === 'quiche') {
      const st = await client!.cmd<{ mtuDiscovery: string }>('status', { conn: 'mtu' })
      expect(st.mtuDiscovery).toMatch(/^off: engine quiche has no path MTU discovery/)
      await client!.cmd('close', { conn: 'mtu' }, 10_000)
      return
    }
    const up = await client!.cmd<UploadResult>('upload', { conn: 'mtu', size: 8 * MiB }, 120_000)
    expect(up.recvSha).toBe(up.sentSha)
    const down = await server!.cmd<UploadResult>('upload', { conn: 'mtu', size: 8 * MiB }, 120_000)
    expect(down.recvSha).toBe(down.sentSha)
    // Each size the link drops is tried 3 times, one PTO (~150 ms here) apart, so the search
    // may still run after the transfers: wait (bounded) for both sides to get past 1200.
    for (let i = 0; i < 60; i++) {
      const [a, b] = await Promise.all([
        client!.cmd<{ pathMtu: number }>('status', { conn: 'mtu' }),
        server!.cmd<{ pathMtu: number }>('status', { conn: 'mtu' }),
      ])
      if (a.pathMtu > 1200 && b.pathMtu > 1200) break
      await new Promise((r) => setTimeout(r, 500))
    }
    const c = await client!.cmd<{ pathMtu: number; mtuDiscovery: string }>('status', { conn: 'mtu' })
    const s = await server!.cmd<{ pathMtu: number; mtuDiscovery: string }>('status', { conn: 'mtu' })
    expect(c.mtuDiscovery).toMatch(/^on:/)
    expect(s.mtuDiscovery).toMatch(/^on:/)
    for (const mtu of [c.pathMtu, s.pathMtu]) {
      expect(mtu).toBeGreaterThan(1200)
      expect(mtu).toBeLessThanOrEqual(1500 - 28)
    }
    summary.push(`path MTU found over the 1500-byte link: client ${c.pathMtu}, server ${s.pathMtu} bytes of UDP payload`)
    await client!.cmd('close', { conn: 'mtu' }, 10_000)
  }, 300_000)

  it('ends in STOQ_ERR_IDLE_TIMEOUT on both sides after a blackout longer than the idle timeout', async () => {
    ready()
    // The bulk connection is done; close it so only the short-idle one is affected.
    await client!.cmd('close', { conn: 'main' }, 10_000)
    // Connected now (over IPv6), or its 3 s idle timeout would end it during the tests above.
    const shortRoute = await wan!.route(wan!.v6.a, shortPort)
    for (let attempt = 1; ; attempt++) {
      const shortAccepted = server!.waitFor((e) => e.ev === 'accepted' && e.conn === 'short', 30_000, 'accepted short')
      try {
        await client!.cmd(
          'connect',
          { name: 'short', host: shortRoute.host, port: shortRoute.port, ca: pki.ca, serverName: 'localhost', transport: { maxIdleTimeoutMs: SHORT_IDLE_MS } },
          30_000,
        )
        await shortAccepted
        break
      } catch (err) {
        // Over the 1%-loss link, a lost handshake packet (PTO backoff from 1 s) can hold the
        // handshake past the 3 s idle timeout, which then ends it: seen once in CI. Try again.
        shortAccepted.catch(ignoreRejection) // this attempt's waiter is abandoned
        if ((err as { code?: string }).code !== 'STOQ_ERR_IDLE_TIMEOUT' || attempt === 3) throw err
      }
    }
    // A stream in flight on each side, so the error also surfaces on a pending read.
    await client!.cmd('hold', { conn: 'short', tag: 'hold' })
    // Let the stream reach the server (RTT 50 ms) before the link goes dark.
    await new Promise((r) => setTimeout(r, 500))
    const t0 = Date.now()
    await wan!.blackout(true)
    let clientClosed: PeerEvent | undefined
    let serverClosed: PeerEvent | undefined
    try {
      ;[clientClosed, serverClosed] = await Promise.all([
        client!.waitFor((e) => e.ev === 'closed' && e.conn === 'short', SHORT_IDLE_MS * 4, 'client idle close'),
        server!.waitFor((e) => e.ev === 'closed' && e.conn === 'short', SHORT_IDLE_MS * 4, 'server idle close'),
      ])
    } finally {
      await wan!.blackout(false)
    }
    const elapsed = Date.now() - t0
    for (const closed of [clientClosed, serverClosed] as any[]) {
      expect(closed.info.idleTimeout).toBe(true)
      expect(closed.error?.code).toBe('STOQ_ERR_IDLE_TIMEOUT')
    }
    const hold = await client!.waitFor((e) => e.ev === 'holdEnded' && e.tag === 'hold', 5000, 'hold stream end')
    expect((hold as any).error?.code).toBe('STOQ_ERR_IDLE_TIMEOUT')
    const serverStream = await server!.waitFor((e) => e.ev === 'streamError' && e.conn === 'short', 5000, 'server stream error')
    expect((serverStream as any).error?.code).toBe('STOQ_ERR_IDLE_TIMEOUT')
    // The idle timer runs from the last packet received, ~0.5 s before the blackout.
    expect(elapsed).toBeGreaterThanOrEqual(SHORT_IDLE_MS - 1000)
    summary.push(`idle timeout (${SHORT_IDLE_MS} ms) fired on both sides after ${elapsed} ms of blackout`)
  }, 60_000)
})
