import dgram from 'node:dgram'
import { udpIoTests } from '@stoq/compliance-tests'
import { StoqError, type BufferPool, type SocketAddress, type UdpReceiver } from '@stoq/interface'
import { afterEach, describe, expect, it } from 'vitest'
import { GsoUdpIo, WorkerUdpIo, type WorkerUdpIoOptions, probeGsoSupport } from '../src/index.js'
import { formatIpv6, AddressCodec } from '../src/worker/address-codec.js'
import { kUdpWorker } from '../src/worker-io.js'
import { udpWorkerMain } from '../src/worker/udp-worker.js'

/** Whether this machine can run the backend at all (Linux, koffi, UDP_GRO): decided by one real bind. */
async function probeWorker(): Promise<{ ok: boolean; detail: string }> {
  const io = new WorkerUdpIo()
  try {
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Recorder())
    return { ok: true, detail: 'bound' }
  } catch (err) {
    if (StoqError.isInstance(err) && err.code === 'STOQ_ERR_UNSUPPORTED') return { ok: false, detail: err.message }
    throw err
  } finally {
    await io.close()
  }
}

class Recorder implements UdpReceiver {
  readonly packets: { data: Uint8Array; segmentSize: number; from: SocketAddress }[] = []
  readonly completions: number[] = []
  readonly errors: Error[] = []
  drains = 0
  onPacketHook: ((data: Uint8Array) => void) | null = null

  onPacket(data: Uint8Array, segmentSize: number, from: SocketAddress): void {
    this.onPacketHook?.(data)
    this.packets.push({ data: new Uint8Array(data), segmentSize, from })
  }
  onBatchEnd(): void {}
  onSendComplete(token: number): void {
    this.completions.push(token)
  }
  onDrain(): void {
    this.drains++
  }
  onError(err: Error): void {
    this.errors.push(err)
  }
  datagrams(): Uint8Array[] {
    const out: Uint8Array[] = []
    for (const { data, segmentSize } of this.packets) {
      for (let off = 0; off < data.length; off += segmentSize) out.push(data.subarray(off, Math.min(off + segmentSize, data.length)))
      if (data.length === 0) out.push(data)
    }
    return out
  }
}

function payload(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) bytes[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff
  return bytes
}

function superBuffer(count: number, segmentSize: number): { data: Uint8Array; segments: Uint8Array[] } {
  const segments = Array.from({ length: count }, (_, i) => payload(segmentSize, 1000 + i))
  const data = new Uint8Array(count * segmentSize)
  segments.forEach((s, i) => data.set(s, i * segmentSize))
  return { data, segments }
}

async function waitFor(what: string, condition: () => boolean, detail: () => string = () => '', limitMs = 10_000): Promise<void> {
  const deadline = Date.now() + limitMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} ${detail()}`)
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

const support = await probeWorker()

if (support.ok) {
  udpIoTests('gro-worker', { create: () => new WorkerUdpIo() })
}

const opened: { close(): Promise<void> }[] = []
afterEach(async () => {
  for (const io of opened.splice(0)) await io.close()
})

async function worker(options: Partial<WorkerUdpIoOptions> = {}, host = '127.0.0.1'): Promise<{ io: WorkerUdpIo; rec: Recorder; address: SocketAddress }> {
  const io = new WorkerUdpIo(options)
  opened.push(io)
  const rec = new Recorder()
  const address = await io.bind({ host, port: 0, ipv6Only: false }, rec)
  return { io, rec, address }
}

describe.skipIf(!support.ok)(`WorkerUdpIo on this machine (${support.detail})`, () => {
  it('declares backend gro and 64 segments, and holds no pool buffer before bind', () => {
    const io = new WorkerUdpIo()
    expect(io.backend).toBe('gro')
    expect(io.maxSegments).toBe(64)
    expect(io.sharedPool.stats().inUse).toBe(0)
  })

  it('receives a GSO super-buffer of 40 x 1200 from a dgram-based GsoUdpIo as GRO buffers of segment size 1200, intact', async (ctx) => {
    const gso = await probeGsoSupport()
    if (!gso.ok) ctx.skip(`no GSO sender here: ${gso.detail}`)
    const { io, rec, address } = await worker()
    const sender = new GsoUdpIo()
    opened.push(sender)
    const senderEvents = new Recorder()
    const from = await sender.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, senderEvents)
    const sb = superBuffer(40, 1200)
    sender.send(sb.data, 1200, address, 1)
    await waitFor('40 datagrams', () => rec.datagrams().length >= 40, () => `got ${rec.datagrams().length}`)
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
    expect(io.stats()).toMatchObject({ groBuffers: coalesced.length, packetsReceived: 40, bytesReceived: 48_000 })
    expect(rec.errors).toEqual([])
  })

  it('sends a super-buffer through its own GSO path and receives it coalesced, over IPv4 and IPv6', async () => {
    for (const host of ['127.0.0.1', '::1']) {
      const rx = await worker({}, host).catch((err: Error) => {
        if (host === '::1') return null // no IPv6 loopback here
        throw err
      })
      if (rx === null) continue
      const tx = await worker({}, host)
      const sb = superBuffer(40, 1200)
      expect(tx.io.send(sb.data, 1200, rx.address, 7)).toBe(true)
      await waitFor(`40 datagrams over ${host}`, () => rx.rec.datagrams().length >= 40)
      expect(rx.rec.datagrams()).toEqual(sb.segments)
      expect(rx.rec.packets.some((p) => p.segmentSize === 1200 && p.data.length > 1200)).toBe(true)
      expect(rx.rec.packets[0]!.from).toEqual(tx.address)
      await waitFor('the completion', () => tx.rec.completions.length === 1)
      expect(tx.rec.completions).toEqual([7])
      expect(tx.io.stats()).toMatchObject({ gsoWrites: 1, sendCalls: 1, packetsSent: 40, sendErrors: 0 })
    }
  })

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

  it('stops reading when the receive ring is full and resumes when the main thread frees slots', async () => {
    const { io, rec, address } = await worker({ receiveSlots: 2 })
    let first = true
    rec.onPacketHook = () => {
      if (!first) return
      first = false
      // Hold the main thread so that the worker fills both slots and finds the ring full.
      const until = Date.now() + 100
      while (Date.now() < until);
    }
    const sender = dgram.createSocket('udp4')
    opened.push({ close: () => new Promise<void>((resolve) => sender.close(() => resolve())) })
    await new Promise<void>((resolve) => sender.bind(0, '127.0.0.1', resolve))
    const sent = Array.from({ length: 30 }, (_, i) => payload(300, i))
    for (const d of sent) sender.send(d, address.port, '127.0.0.1')
    await waitFor('30 datagrams', () => rec.datagrams().length >= 30, () => JSON.stringify(io.stats()))
    expect(rec.datagrams()).toEqual(sent)
    expect(io.stats().receiveRingFull).toBeGreaterThan(0)
  })

  it('applies backpressure: send() returns false at the high-water mark, onDrain follows, every token completes once', async () => {
    const rx = await worker()
    const tx = await worker({ sendSlots: 4, sendQueueHighWater: 6, sendQueueLowWater: 2 })
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
  })

  it('reports a dead worker with onError (STOQ_ERR_SOCKET), completes pending sends, and frees the port', async () => {
    const rx = await worker()
    const tx = await worker({ sendSlots: 4, sendQueueHighWater: 100, sendQueueLowWater: 1 })
    const port = tx.address.port
    for (let i = 0; i < 50; i++) tx.io.send(payload(1200, i), 1200, rx.address, i)
    await tx.io[kUdpWorker]()!.terminate()
    await waitFor('onError', () => tx.rec.errors.length === 1)
    expect((tx.rec.errors[0] as StoqError).code).toBe('STOQ_ERR_SOCKET')
    expect([...tx.rec.completions].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i))
    expect(tx.io.pendingSends).toBe(0)
    expect(() => tx.io.send(payload(10, 1), 10, rx.address, 99)).toThrow(expect.objectContaining({ code: 'STOQ_ERR_CLOSED' }) as Error)
    await tx.io.close()
    expect(tx.io.sharedPool.stats().inUse).toBe(0)
    // The socket the killed worker left open was closed by the main thread.
    const again = dgram.createSocket('udp4')
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject)
      again.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve())
    })
    await new Promise<void>((resolve) => again.close(() => resolve()))
  })

  it('counts a datagram larger than a slot as a send error and still completes it', async () => {
    const rx = await worker()
    const tx = await worker()
    tx.io.send(new Uint8Array(70_000), 70_000, rx.address, 1)
    tx.io.send(payload(100, 2), 100, rx.address, 2)
    await waitFor('both completions', () => tx.rec.completions.length === 2)
    await waitFor('the small datagram', () => rx.rec.datagrams().length === 1)
    expect(tx.io.stats()).toMatchObject({ sendErrors: 1, lastSendError: 'EMSGSIZE' })
  })

  it('rejects options it cannot use', () => {
    expect(() => new WorkerUdpIo({ receiveSlots: 100 })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
    expect(() => new WorkerUdpIo({ sendQueueHighWater: 4, sendQueueLowWater: 4 })).toThrow(
      expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error,
    )
    const small = { ...fakePool(), bufferSize: 2048 }
    expect(() => new WorkerUdpIo({ pool: small })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
  })
})

describe('worker program', () => {
  it('is self-contained source text: no require call or bundler helper a build could rewrite', () => {
    // It runs from udpWorkerMain.toString() in an eval worker (see worker-io.ts).
    const text = udpWorkerMain.toString()
    expect(text).not.toMatch(/\brequire\s*\(/)
    expect(text).not.toMatch(/\b__\w+/)
    expect(text).not.toMatch(/\bimport\s*\(/)
  })
})

describe('AddressCodec', () => {
  it('formats IPv6 as Node does and round-trips through the ring words', () => {
    const codec = new AddressCodec()
    const cases = ['::', '::1', '2001:db8::1', '2001:db8:0:1:1:1:1:1', 'fe80::1:2', '2001:0:0:1::1', '1::', '1:0:0:2:0:0:0:3', 'abcd:ef01:2345:6789:abcd:ef01:2345:6789']
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
