import type { SocketAddress, StoqError } from '@stoq/interface'
import { expect, type TestContext } from 'vitest'
import { GsoUdpIo, type WorkerUdpIo, type WorkerUdpIoOptions, probeGsoSupport } from '../src/index.js'
import { kUdpWorker } from '../src/worker-io.js'
import { type Closable, Recorder, payload, plainSender, superBuffer, waitFor } from './helpers.js'

/**
 * Test bodies that the gro worker and the uring worker must pass alike (same
 * rings, same socket code): each test file calls them from its own `it`,
 * with the backend and the statistics only that backend keeps.
 */

/** Binds a new backend with a Recorder, closed after the test. */
export type BindBackend = (options?: Partial<WorkerUdpIoOptions>, host?: string) => Promise<{ io: WorkerUdpIo; rec: Recorder; address: SocketAddress }>

/** A GSO super-buffer of 40 x 1200 from a dgram-based GsoUdpIo arrives as GRO buffers of segment size 1200, intact. */
export async function receivesGsoSuperBuffer(ctx: TestContext, bind: BindBackend, opened: Closable[], stats: Record<string, number> = {}): Promise<void> {
  const gso = await probeGsoSupport()
  if (!gso.ok) ctx.skip(`no GSO sender here: ${gso.detail}`)
  const { io, rec, address } = await bind()
  const sender = new GsoUdpIo()
  opened.push(sender)
  const from = await sender.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Recorder())
  const sb = superBuffer(40, 1200)
  sender.send(sb.data, 1200, address, 1)
  await waitFor(
    '40 datagrams',
    () => rec.datagrams().length >= 40,
    () => `got ${rec.datagrams().length}`,
  )
  expect(rec.datagrams()).toEqual(sb.segments)
  for (const p of rec.packets) {
    expect(p.from).toEqual(from)
    // A coalesced buffer reports the sender's segment size; a lone datagram its own length.
    if (p.data.length > 1200) expect(p.segmentSize).toBe(1200)
    else expect(p.segmentSize).toBe(p.data.length)
  }
  // Loopback delivers a GSO write to a UDP_GRO socket without splitting it.
  const coalesced = rec.packets.filter((p) => p.segmentSize < p.data.length)
  expect(coalesced.length, `packets: ${rec.packets.map((p) => `${p.data.length}/${p.segmentSize}`).join(' ')}`).toBeGreaterThan(0)
  expect(io.stats()).toMatchObject({ groBuffers: coalesced.length, packetsReceived: 40, bytesReceived: 48_000, ...stats })
  expect(rec.errors).toEqual([])
}

/** A super-buffer sent by the backend itself (UDP_SEGMENT) arrives coalesced, over IPv4 and (where there is a loopback) IPv6. */
export async function sendsSuperBufferBothFamilies(bind: BindBackend, stats: Record<string, number> = {}): Promise<void> {
  for (const host of ['127.0.0.1', '::1']) {
    const rx = await bind({}, host).catch((err: Error) => {
      if (host === '::1') return null // no IPv6 loopback here
      throw err
    })
    if (rx === null) continue
    const tx = await bind({}, host)
    const sb = superBuffer(40, 1200)
    expect(tx.io.send(sb.data, 1200, rx.address, 7)).toBe(true)
    await waitFor(`40 datagrams over ${host}`, () => rx.rec.datagrams().length >= 40)
    expect(rx.rec.datagrams()).toEqual(sb.segments)
    expect(rx.rec.packets.some((p) => p.segmentSize === 1200 && p.data.length > 1200)).toBe(true)
    expect(rx.rec.packets[0]!.from).toEqual(tx.address)
    await waitFor('the completion', () => tx.rec.completions.length === 1)
    expect(tx.rec.completions).toEqual([7])
    expect(tx.io.stats()).toMatchObject({ gsoWrites: 1, sendCalls: 1, packetsSent: 40, sendErrors: 0, ...stats })
  }
}

/** With 2 receive slots and the main thread held, the worker finds the receive side full, then resumes: all 30 datagrams, in order. */
export async function resumesAfterReceiveRingFull(bind: BindBackend, opened: Closable[]): Promise<void> {
  const { io, rec, address } = await bind({ receiveSlots: 2 })
  let first = true
  rec.onPacketHook = () => {
    if (!first) return
    first = false
    // Hold the main thread so that the worker fills both slots and has nothing left to read into.
    const until = Date.now() + 100
    while (Date.now() < until);
  }
  const sender = await plainSender(opened)
  const sent = Array.from({ length: 30 }, (_, i) => payload(300, i))
  for (const d of sent) sender.send(d, address.port, '127.0.0.1')
  await waitFor(
    '30 datagrams',
    () => rec.datagrams().length >= 30,
    () => JSON.stringify(io.stats()),
  )
  expect(rec.datagrams()).toEqual(sent)
  expect(io.stats().receiveRingFull).toBeGreaterThan(0)
}

/** send() returns false at the high-water mark, onDrain follows, every token completes once, every datagram arrives. */
export async function appliesBackpressure(bind: BindBackend): Promise<void> {
  const rx = await bind()
  const tx = await bind({ sendSlots: 4, sendQueueHighWater: 6, sendQueueLowWater: 2 })
  const results: boolean[] = []
  for (let i = 0; i < 12; i++) results.push(tx.io.send(payload(1200, i), 1200, rx.address, i))
  expect(results.slice(0, 5).every((r) => r)).toBe(true)
  expect(results.slice(5).every((r) => !r)).toBe(true)
  expect(tx.io.pendingSends).toBeGreaterThan(0)
  await waitFor('every completion', () => tx.io.pendingSends === 0)
  await waitFor('onDrain', () => tx.rec.drains === 1)
  expect(tx.rec.completions).toEqual(Array.from({ length: 12 }, (_, i) => i))
  await waitFor('12 datagrams', () => rx.rec.datagrams().length >= 12)
  expect(rx.rec.datagrams()).toEqual(Array.from({ length: 12 }, (_, i) => payload(1200, i)))
  expect(tx.io.stats().overflowSends).toBeGreaterThan(0)
}

/** A datagram larger than a buffer fails with EMSGSIZE and completes; the next one still goes. */
export async function failsTooLargeDatagram(bind: BindBackend, stats: Record<string, number> = {}): Promise<void> {
  const rx = await bind()
  const tx = await bind()
  tx.io.send(new Uint8Array(70_000), 70_000, rx.address, 1)
  tx.io.send(payload(100, 2), 100, rx.address, 2)
  await waitFor('both completions', () => tx.rec.completions.length === 2)
  await waitFor('the small datagram', () => rx.rec.datagrams().length === 1)
  expect(tx.io.stats()).toMatchObject({ sendErrors: 1, lastSendError: 'EMSGSIZE', ...stats })
}

/**
 * Queue 50 sends, terminate the worker: onError reports STOQ_ERR_SOCKET once and every
 * pending send completes. Returns the sender (not closed yet) and the port it had bound.
 */
export async function killWorkerWithSendsPending(
  bind: BindBackend,
): Promise<{ rx: Awaited<ReturnType<BindBackend>>; tx: Awaited<ReturnType<BindBackend>>; port: number }> {
  const rx = await bind()
  const tx = await bind({ sendSlots: 4, sendQueueHighWater: 100, sendQueueLowWater: 1 })
  const port = tx.address.port
  for (let i = 0; i < 50; i++) tx.io.send(payload(1200, i), 1200, rx.address, i)
  await tx.io[kUdpWorker]()!.terminate()
  await waitFor('onError', () => tx.rec.errors.length === 1)
  expect((tx.rec.errors[0] as StoqError).code).toBe('STOQ_ERR_SOCKET')
  expect([...tx.rec.completions].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i))
  expect(tx.io.pendingSends).toBe(0)
  return { rx, tx, port }
}
