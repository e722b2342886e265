import { udpIoTests } from '@stoq/compliance-tests'
import type { BufferPool } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { WorkerUdpIo, type WorkerUdpIoOptions } from '../src/index.js'
import { formatIpv6, AddressCodec } from '../src/worker/address-codec.js'
import { socketKit } from '../src/worker/socket-kit.js'
import { udpWorkerMain } from '../src/worker/udp-worker.js'
import { bindRecorded, closedAfterEach, expectSelfContained, payload, plainSender, portBindable, probeByBinding, superBuffer, waitFor } from './helpers.js'
import * as cases from './worker-cases.js'

/** Whether this machine can run the backend at all (Linux, koffi, UDP_GRO): decided by one real bind. */
const support = await probeByBinding(new WorkerUdpIo(), () => 'bound')

if (support.ok) {
  udpIoTests('gro-worker', { create: () => new WorkerUdpIo() })
}

const opened = closedAfterEach()

const worker = (options: Partial<WorkerUdpIoOptions> = {}, host?: string) => bindRecorded(new WorkerUdpIo(options), opened, host)

describe.skipIf(!support.ok)(`WorkerUdpIo on this machine (${support.detail})`, () => {
  it('declares backend gro and 64 segments, and holds no pool buffer before bind', () => {
    const io = new WorkerUdpIo()
    expect(io.backend).toBe('gro')
    expect(io.maxSegments).toBe(64)
    expect(io.sharedPool.stats().inUse).toBe(0)
  })

  it('receives a GSO super-buffer of 40 x 1200 from a dgram-based GsoUdpIo as GRO buffers of segment size 1200, intact', (ctx) =>
    cases.receivesGsoSuperBuffer(ctx, worker, opened))

  it('sends a super-buffer through its own GSO path and receives it coalesced, over IPv4 and IPv6', () => cases.sendsSuperBufferBothFamilies(worker))

  it('sends in place from a shared send slab (zero-copy), and copies anything else', async () => {
    const slab = new SharedArrayBuffer(4 * 65536)
    const rx = await worker()
    const tx = await worker({ sendSlabs: [slab] })
    // A super-buffer that lives in the slab at an odd offset, and one in private memory.
    const sb = superBuffer(20, 1200)
    const inSlab = new Uint8Array(slab, 65536 + 64, sb.data.length)
    inSlab.set(sb.data)
    const other = superBuffer(5, 1000)
    expect(tx.io.send(inSlab, 1200, rx.address, 1)).toBe(true)
    expect(tx.io.send(other.data, 1000, rx.address, 2)).toBe(true)
    await waitFor('25 datagrams', () => rx.rec.datagrams().length >= 25)
    expect(rx.rec.datagrams()).toEqual([...sb.segments, ...other.segments])
    await waitFor('both completions', () => tx.rec.completions.length === 2)
    expect(tx.io.stats()).toMatchObject({ zeroCopySends: 1, sendCalls: 2, sendErrors: 0 })
    expect(() => new WorkerUdpIo({ sendSlabs: [new ArrayBuffer(8) as never] })).toThrow(/sendSlabs/)
  })

  it('sends in place from a region of native memory (sendRegions, by address), after the slabs', async () => {
    // An ArrayBuffer of 128 KiB: its memory lives outside the JS heap and does not move, as a
    // QUIC engine's transmit slots (koffi views of Rust memory) do not.
    const region = new Uint8Array(new ArrayBuffer(2 * 65536))
    const slab = new SharedArrayBuffer(65536)
    const rx = await worker()
    const tx = await worker({ sendSlabs: [slab], sendRegions: [region] })
    const sb = superBuffer(12, 1300)
    region.set(sb.data, 65536 + 8)
    const inRegion = region.subarray(65536 + 8, 65536 + 8 + sb.data.length)
    expect(tx.io.send(inRegion, 1300, rx.address, 7)).toBe(true)
    await waitFor('12 datagrams', () => rx.rec.datagrams().length >= 12)
    expect(rx.rec.datagrams()).toEqual(sb.segments)
    await waitFor('the completion', () => tx.rec.completions.length === 1)
    expect(tx.io.stats()).toMatchObject({ zeroCopySends: 1, sendCalls: 1, sendErrors: 0 })
    for (const bad of [[new Uint8Array(new SharedArrayBuffer(16))], [region.subarray(8)], ['region'], 'regions']) {
      expect(() => new WorkerUdpIo({ sendRegions: bad as never })).toThrow(/sendRegions/)
    }
  })

  it('gives every pool buffer back at close, with its own pool and with a pool passed in', async () => {
    const own = await worker()
    expect(own.io.sharedPool.stats().inUse).toBe(256) // 128 receive + 128 send slots
    const peer = await worker()
    for (let i = 0; i < 20; i++) peer.io.send(payload(1000, i), 1000, own.address, i)
    await waitFor('20 datagrams', () => own.rec.datagrams().length >= 20)
    await own.io.close()
    expect(own.io.sharedPool.stats().inUse).toBe(0)

    // A caller-owned pool: the backend takes its slots at bind, returns them at close, and leaves the pool open.
    const pool = await sharedPool(40)
    const mine = await worker({ pool, receiveSlots: 16, sendSlots: 16 })
    expect(pool.stats().inUse).toBe(32)
    mine.io.send(payload(500, 1), 500, peer.address, 1)
    for (let i = 0; i < 5; i++) peer.io.send(payload(700, i), 700, mine.address, 100 + i)
    await waitFor('5 datagrams', () => mine.rec.datagrams().length >= 5)
    await waitFor('the completion', () => mine.rec.completions.length === 1)
    await mine.io.close()
    expect(pool.stats().inUse).toBe(0)
    const index = pool.acquire() // still usable
    pool.release(index)
  })

  it('splits a long drain of the receive ring over event-loop turns (drainDeadlineUs) and still delivers everything in order', async () => {
    const { io, rec, address } = await worker({ drainDeadlineUs: 100 })
    const log: string[] = []
    let first = true
    rec.onPacketHook = (data) => {
      log.push(`packet ${data.length}`)
      if (!first) return
      first = false
      // Queued now, so it runs at the first turn boundary; then hold the main thread so the
      // worker puts the whole burst in the ring, far past the 100 µs deadline.
      setImmediate(() => log.push('other work'))
      const until = Date.now() + 50
      while (Date.now() < until);
    }
    const sender = await plainSender(opened)
    // Growing sizes: GRO never coalesces them, so each is a slot of its own.
    const sent = Array.from({ length: 30 }, (_, i) => payload(300 + i, i))
    for (const d of sent) sender.send(d, address.port, '127.0.0.1')
    await waitFor(
      '30 datagrams',
      () => rec.datagrams().length >= 30,
      () => JSON.stringify(io.stats()),
    )
    expect(rec.datagrams()).toEqual(sent)
    expect(io.stats().drainDeferrals).toBeGreaterThan(0)
    // The other callback ran before the burst was through, not after it.
    expect(log.indexOf('other work')).toBeGreaterThan(0)
    expect(log.indexOf('other work')).toBeLessThan(log.length - 1)
    expect(() => new WorkerUdpIo({ drainDeadlineUs: 50 })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
  })

  it('stops reading when the receive ring is full and resumes when the main thread frees slots', () => cases.resumesAfterReceiveRingFull(worker, opened))

  it('applies backpressure: send() returns false at the high-water mark, onDrain follows, every token completes once', () => cases.appliesBackpressure(worker))

  it('reports a dead worker with onError (STOQ_ERR_SOCKET), completes pending sends, and frees the port', async () => {
    const { rx, tx, port } = await cases.killWorkerWithSendsPending(worker)
    expect(() => tx.io.send(payload(10, 1), 10, rx.address, 99)).toThrow(expect.objectContaining({ code: 'STOQ_ERR_CLOSED' }) as Error)
    await tx.io.close()
    expect(tx.io.sharedPool.stats().inUse).toBe(0)
    // The socket the killed worker left open was closed by the main thread.
    expect(await portBindable(port)).toBe(true)
  })

  it('counts a datagram larger than a slot as a send error and still completes it', () => cases.failsTooLargeDatagram(worker))

  it('rejects options it cannot use', () => {
    expect(() => new WorkerUdpIo({ receiveSlots: 100 })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
    expect(() => new WorkerUdpIo({ sendQueueHighWater: 4, sendQueueLowWater: 4 })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
    const small = { ...fakePool(), bufferSize: 2048 }
    expect(() => new WorkerUdpIo({ pool: small })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
  })
})

describe('worker program', () => {
  it('is self-contained source text: no require call or bundler helper a build could rewrite', () => {
    // Both run from their toString() in an eval worker (see worker-io.ts).
    expectSelfContained(udpWorkerMain, socketKit)
  })
})

describe('AddressCodec', () => {
  it('formats IPv6 as Node does and round-trips through the ring words', () => {
    const codec = new AddressCodec()
    const cases = [
      '::',
      '::1',
      '2001:db8::1',
      '2001:db8:0:1:1:1:1:1',
      'fe80::1:2',
      '2001:0:0:1::1',
      '1::',
      '1:0:0:2:0:0:0:3',
      'abcd:ef01:2345:6789:abcd:ef01:2345:6789',
    ]
    for (const text of cases) {
      const w = codec.parse(text)
      const back = codec.decode(w[0]!, w[1]!, w[2]!, w[3]!, 443, 0)
      expect(back).toEqual({ address: new URL(`http://[${text}]/`).hostname.slice(1, -1), port: 443, family: 'IPv6' })
    }
    const v4 = codec.parse('192.0.2.33')
    expect(codec.decode(v4[0]!, v4[1]!, v4[2]!, v4[3]!, 1, 0)).toEqual({ address: '192.0.2.33', port: 1, family: 'IPv4' })
    const mapped = codec.parse('::ffff:192.0.2.33')
    expect(codec.decode(mapped[0]!, mapped[1]!, mapped[2]!, mapped[3]!, 1, 0).address).toBe('192.0.2.33')
    const bytes = new Uint8Array(16)
    bytes[15] = 2
    expect(formatIpv6(bytes)).toBe('::2')
  })

  it('returns the same object for a repeated peer (no allocation in steady flows)', () => {
    const codec = new AddressCodec()
    const w = codec.parse('10.0.0.1')
    const a = codec.decode(w[0]!, w[1]!, w[2]!, w[3]!, 4433, 0)
    expect(codec.decode(w[0]!, w[1]!, w[2]!, w[3]!, 4433, 0)).toBe(a)
    const out = new Int32Array(6)
    codec.encode(a, out, 0)
    expect(Array.from(out)).toEqual([w[0], w[1], w[2], w[3], 4433, 0])
    expect(() => codec.encode({ address: 'localhost', port: 1, family: 'IPv4' }, out, 0)).toThrow(
      expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error,
    )
  })
})

/**
 * A shared pool from `@stoq/mempool` when its sources are reachable from here
 * (this package does not depend on it), else a minimal SharedArrayBuffer pool.
 */
async function sharedPool(count: number): Promise<BufferPool> {
  try {
    const path = new URL('../../mempool/src/index.ts', import.meta.url).href
    const mempool = (await import(/* @vite-ignore */ path)) as {
      createBufferPool(options: { shared: boolean; bufferSize: number; initialBuffers: number; maxBuffers: number }): BufferPool
    }
    return mempool.createBufferPool({ shared: true, bufferSize: 65536, initialBuffers: count, maxBuffers: count })
  } catch {
    return fakePool(count)
  }
}

function fakePool(count = 4): BufferPool {
  const memory = new SharedArrayBuffer(count * 65536)
  const free = Array.from({ length: count }, (_, i) => count - 1 - i)
  let inUse = 0
  return {
    specificationVersion: 'v1',
    bufferSize: 65536,
    acquire() {
      const i = free.pop()
      if (i === undefined) throw new Error('exhausted')
      inUse++
      return i
    },
    tryAcquire() {
      const i = free.pop()
      if (i === undefined) return -1
      inUse++
      return i
    },
    release(i) {
      free.push(i)
      inUse--
    },
    view: (i) => new Uint8Array(memory, i * 65536, 65536),
    stats: () => ({ hits: 0, misses: 0, inUse, highWaterMark: 0, capacity: count, bufferSize: 65536 }),
    close() {},
  }
}

describe('worker CPU affinity', () => {
  it('pins the network thread to the CPUs asked for, and reports it', async () => {
    const { WorkerUdpIo } = await import('../src/index.js')
    const io = new WorkerUdpIo({ cpus: [0] })
    const receiver = {
      onPacket() {},
      onBatchEnd() {},
      onSendComplete() {},
      onDrain() {},
      onError() {},
    }
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, receiver)
    const stats = io.stats()
    expect(stats.affinity).toBe('pinned to CPU 0')
    expect(stats.workerThreadId).toBeGreaterThan(0)
    // The kernel's view of that thread.
    const status = (await import('node:fs')).readFileSync(`/proc/self/task/${stats.workerThreadId}/status`, 'utf8')
    expect(/Cpus_allowed_list:\s*(\S+)/.exec(status)?.[1]).toBe('0')
    await io.close()
  })

  it('refuses CPUs that do not exist', async () => {
    const { WorkerUdpIo, StoqError } = await import('../src/index.js').then(async (m) => ({ ...m, ...(await import('@stoq/interface')) }))
    let err: unknown
    try {
      new WorkerUdpIo({ cpus: [4096] })
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
  })
})
