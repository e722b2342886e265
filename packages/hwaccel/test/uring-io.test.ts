import dgram from 'node:dgram'
import { StoqError, type SocketAddress, type UdpReceiver } from '@stoq/interface'
import { afterEach, describe, expect, it } from 'vitest'
import {
  DgramUdpIo,
  GsoUdpIo,
  URING_SETUP_FLAGS,
  UringUdpIo,
  type UringUdpIoOptions,
  WorkerUdpIo,
  createUringUdpIo,
  probeGsoSupport,
  probeIoUring,
} from '../src/index.js'
import { kUringSetupFlags } from '../src/uring-io.js'
import { kUdpWorker } from '../src/worker-io.js'
import { uringKit } from '../src/worker/uring-kit.js'
import { uringWorkerMain } from '../src/worker/uring-worker.js'

/** A setup flag the kernel does not know: io_uring_setup refuses it with EINVAL. */
const UNKNOWN_SETUP_FLAG = 1 << 31

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

/** Whether this machine runs the backend (Linux, koffi, io_uring, UDP_GRO): decided by one real bind. */
async function probeUring(): Promise<{ ok: boolean; detail: string }> {
  const io = new UringUdpIo()
  try {
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Recorder())
    return { ok: true, detail: io.stats().ring }
  } catch (err) {
    if (StoqError.isInstance(err) && err.code === 'STOQ_ERR_UNSUPPORTED') return { ok: false, detail: err.message }
    throw err
  } finally {
    await io.close()
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

/** Whether a plain socket can bind 127.0.0.1:port exclusively right now (it is closed again). */
async function portBindable(port: number): Promise<boolean> {
  const s = dgram.createSocket('udp4')
  const ok = await new Promise<boolean>((resolve) => {
    s.once('error', () => resolve(false))
    s.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(true))
  })
  await new Promise<void>((resolve) => {
    try {
      s.close(() => resolve())
    } catch {
      resolve() // never bound
    }
  })
  return ok
}

/** A port nobody holds right now (bound and released by a plain socket). */
async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve))
  const port = s.address().port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

const opened: { close(): Promise<void> }[] = []
afterEach(async () => {
  for (const io of opened.splice(0)) await io.close()
})

async function uring(options: Partial<UringUdpIoOptions> = {}, host = '127.0.0.1'): Promise<{ io: UringUdpIo; rec: Recorder; address: SocketAddress }> {
  const io = new UringUdpIo(options)
  opened.push(io)
  const rec = new Recorder()
  const address = await io.bind({ host, port: 0, ipv6Only: false }, rec)
  return { io, rec, address }
}

async function plainSender(): Promise<dgram.Socket> {
  const sender = dgram.createSocket('udp4')
  opened.push({ close: () => new Promise<void>((resolve) => sender.close(() => resolve())) })
  await new Promise<void>((resolve) => sender.bind(0, '127.0.0.1', resolve))
  return sender
}

const support = await probeUring()

describe.skipIf(!support.ok)(`UringUdpIo on this machine (${support.detail})`, () => {
  it('declares backend uring and 64 segments, and reports what its bind-time probes proved', async () => {
    const fresh = createUringUdpIo()
    expect(fresh).toBeInstanceOf(UringUdpIo)
    expect(fresh.backend).toBe('uring')
    expect(fresh.maxSegments).toBe(64)
    expect(fresh.stats()).toMatchObject({ backend: 'uring', ring: 'not bound' })
    const { io } = await uring()
    const ring = io.stats().ring
    expect(ring).toMatch(/^io_uring flags 0x[0-9a-f]+, \d+ SQ \/ \d+ CQ entries/)
    expect(ring).toMatch(/NOP, POLL_ADD, SENDMSG, RECVMSG, ASYNC_CANCEL supported/)
    expect(ring).toMatch(/a NOP completed through the ring/)
    expect(ring).toMatch(/loopback SENDMSG \(UDP_SEGMENT 2 x 100 B\) and RECVMSG through the ring: received back/)
  })

  it('receives a GSO super-buffer of 40 x 1200 from a dgram-based GsoUdpIo as GRO buffers of segment size 1200, intact', async (ctx) => {
    const gso = await probeGsoSupport()
    if (!gso.ok) ctx.skip(`no GSO sender here: ${gso.detail}`)
    const { io, rec, address } = await uring()
    const sender = new GsoUdpIo()
    opened.push(sender)
    const from = await sender.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Recorder())
    const sb = superBuffer(40, 1200)
    sender.send(sb.data, 1200, address, 1)
    await waitFor('40 datagrams', () => rec.datagrams().length >= 40, () => `got ${rec.datagrams().length}`)
    expect(rec.datagrams()).toEqual(sb.segments)
    for (const p of rec.packets) {
      expect(p.from).toEqual(from)
      if (p.data.length > 1200) expect(p.segmentSize).toBe(1200)
      else expect(p.segmentSize).toBe(p.data.length)
    }
    const coalesced = rec.packets.filter((p) => p.segmentSize < p.data.length)
    expect(coalesced.length, `packets: ${rec.packets.map((p) => `${p.data.length}/${p.segmentSize}`).join(' ')}`).toBeGreaterThan(0)
    expect(io.stats()).toMatchObject({ groBuffers: coalesced.length, packetsReceived: 40, bytesReceived: 48_000, receiveTruncated: 0 })
    expect(rec.errors).toEqual([])
  })

  it('sends a super-buffer through SENDMSG with UDP_SEGMENT and receives it coalesced, over IPv4 and IPv6', async () => {
    for (const host of ['127.0.0.1', '::1']) {
      const rx = await uring({}, host).catch((err: Error) => {
        if (host === '::1') return null // no IPv6 loopback here
        throw err
      })
      if (rx === null) continue
      const tx = await uring({}, host)
      const sb = superBuffer(40, 1200)
      expect(tx.io.send(sb.data, 1200, rx.address, 7)).toBe(true)
      await waitFor(`40 datagrams over ${host}`, () => rx.rec.datagrams().length >= 40)
      expect(rx.rec.datagrams()).toEqual(sb.segments)
      expect(rx.rec.packets.some((p) => p.segmentSize === 1200 && p.data.length > 1200)).toBe(true)
      expect(rx.rec.packets[0]!.from).toEqual(tx.address)
      await waitFor('the completion', () => tx.rec.completions.length === 1)
      expect(tx.rec.completions).toEqual([7])
      expect(tx.io.stats()).toMatchObject({ gsoWrites: 1, sendCalls: 1, packetsSent: 40, sendErrors: 0, sendReordered: 0 })
    }
  })

  it('hands receive buffers out in completion order: 600 datagrams through 4 buffers, every one intact and in order', async () => {
    // Four receives in flight into four buffers: the ring slot a completion lands in names
    // a buffer that is generally not the slot's own, and the bytes must still match.
    const { io, rec, address } = await uring({ receiveSlots: 4, receiveDepth: 4 })
    const sender = await plainSender()
    const sent = Array.from({ length: 600 }, (_, i) => payload(1 + ((i * 97) % 1400), i))
    for (let i = 0; i < sent.length; i += 20) {
      for (const d of sent.slice(i, i + 20)) sender.send(d, address.port, '127.0.0.1')
      await waitFor(`${i + 20} datagrams`, () => rec.datagrams().length >= i + 20, () => JSON.stringify(io.stats()))
    }
    expect(rec.datagrams()).toEqual(sent)
    expect(io.stats()).toMatchObject({ packetsReceived: 600, receiveTruncated: 0 })
  })

  it('stops receiving when every buffer is with the main thread and resumes when they come back', async () => {
    const { io, rec, address } = await uring({ receiveSlots: 2 })
    let first = true
    rec.onPacketHook = () => {
      if (!first) return
      first = false
      // Hold the main thread so that the worker fills both buffers and has no receive left in flight.
      const until = Date.now() + 100
      while (Date.now() < until);
    }
    const sender = await plainSender()
    const sent = Array.from({ length: 30 }, (_, i) => payload(300, i))
    for (const d of sent) sender.send(d, address.port, '127.0.0.1')
    await waitFor('30 datagrams', () => rec.datagrams().length >= 30, () => JSON.stringify(io.stats()))
    expect(rec.datagrams()).toEqual(sent)
    expect(io.stats().receiveRingFull).toBeGreaterThan(0)
  })

  it('applies backpressure: send() returns false at the high-water mark, onDrain follows, every token completes once', async () => {
    const rx = await uring()
    const tx = await uring({ sendSlots: 4, sendQueueHighWater: 6, sendQueueLowWater: 2 })
    const results: boolean[] = []
    for (let i = 0; i < 12; i++) results.push(tx.io.send(payload(1200, i), 1200, rx.address, i))
    expect(results.slice(0, 5).every((r) => r)).toBe(true)
    expect(results.slice(5).every((r) => !r)).toBe(true)
    await waitFor('every completion', () => tx.io.pendingSends === 0)
    await waitFor('onDrain', () => tx.rec.drains === 1)
    expect(tx.rec.completions).toEqual(Array.from({ length: 12 }, (_, i) => i))
    await waitFor('12 datagrams', () => rx.rec.datagrams().length >= 12)
    expect(rx.rec.datagrams()).toEqual(Array.from({ length: 12 }, (_, i) => payload(1200, i)))
    expect(tx.io.stats().overflowSends).toBeGreaterThan(0)
  })

  it('completes a send the kernel refuses in the middle of a batch with its errno, and sends the rest in order', async () => {
    const rx = await uring()
    const tx = await uring()
    // Queued in one turn, so that the worker submits them in one batch. The limited broadcast
    // address without SO_BROADCAST is refused by the kernel (EACCES; ENETUNREACH without a route).
    const broadcast: SocketAddress = { address: '255.255.255.255', port: rx.address.port, family: 'IPv4' }
    tx.io.send(payload(500, 0), 500, rx.address, 0)
    tx.io.send(payload(500, 1), 500, broadcast, 1)
    for (let i = 2; i < 10; i++) tx.io.send(payload(500, i), 500, rx.address, i)
    await waitFor('every completion', () => tx.rec.completions.length === 10)
    expect(tx.rec.completions).toEqual(Array.from({ length: 10 }, (_, i) => i))
    await waitFor('9 datagrams', () => rx.rec.datagrams().length >= 9)
    expect(rx.rec.datagrams()).toEqual([0, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => payload(500, i)))
    const stats = tx.io.stats()
    expect(stats.sendErrors).toBe(1)
    expect(['EACCES', 'ENETUNREACH']).toContain(stats.lastSendError)
  })

  it('counts a datagram larger than a buffer as a send error without a syscall, and still completes it', async () => {
    const rx = await uring()
    const tx = await uring()
    tx.io.send(new Uint8Array(70_000), 70_000, rx.address, 1)
    tx.io.send(payload(100, 2), 100, rx.address, 2)
    await waitFor('both completions', () => tx.rec.completions.length === 2)
    await waitFor('the small datagram', () => rx.rec.datagrams().length === 1)
    expect(tx.io.stats()).toMatchObject({ sendErrors: 1, lastSendError: 'EMSGSIZE', sendSyscalls: 1 })
  })

  it('reports a dead worker with onError (STOQ_ERR_SOCKET), completes pending sends, and frees the port held by the ring', async () => {
    const rx = await uring()
    const tx = await uring({ sendSlots: 4, sendQueueHighWater: 100, sendQueueLowWater: 1 })
    const port = tx.address.port
    for (let i = 0; i < 50; i++) tx.io.send(payload(1200, i), 1200, rx.address, i)
    await tx.io[kUdpWorker]()!.terminate()
    await waitFor('onError', () => tx.rec.errors.length === 1)
    expect((tx.rec.errors[0] as StoqError).code).toBe('STOQ_ERR_SOCKET')
    expect([...tx.rec.completions].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i))
    expect(tx.io.pendingSends).toBe(0)
    await tx.io.close()
    expect(tx.io.sharedPool.stats().inUse).toBe(0)
    // The killed worker left its receives in flight on a ring it had mapped, and that ring holds
    // the socket: the main thread unmapped and closed the ring and closed the socket. The kernel
    // tears the ring down asynchronously (milliseconds), so the port comes free shortly after.
    let free = false
    const deadline = Date.now() + 5000
    while (!free && Date.now() < deadline) {
      free = await portBindable(port)
      if (!free) await new Promise((resolve) => setTimeout(resolve, 5))
    }
    expect(free, `port ${port} still held 5 s after close()`).toBe(true)
  })

  it('closes with receives in flight, gives every buffer back, and frees its port', async () => {
    const { io, address } = await uring()
    expect(io.sharedPool.stats().inUse).toBe(256)
    await io.close()
    expect(io.sharedPool.stats().inUse).toBe(0)
    const again = dgram.createSocket('udp4')
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject)
      again.bind({ port: address.port, address: '127.0.0.1', exclusive: true }, () => resolve())
    })
    await new Promise<void>((resolve) => again.close(() => resolve()))
  })

  it('works with each io_uring_setup flag set it falls back to on older kernels', async () => {
    for (const flags of URING_SETUP_FLAGS) {
      const io = new UringUdpIo()
      opened.push(io)
      io[kUringSetupFlags]([flags])
      const rec = new Recorder()
      const address = await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, rec)
      expect(io.stats().ring).toMatch(new RegExp(`^io_uring flags 0x${flags.toString(16)},`))
      const tx = await uring()
      const sb = superBuffer(20, 1000)
      tx.io.send(sb.data, 1000, address, 1)
      for (let i = 0; i < 10; i++) tx.io.send(payload(700, i), 700, address, 2 + i)
      await waitFor(`30 datagrams with flags 0x${flags.toString(16)}`, () => rec.datagrams().length >= 30)
      expect(rec.datagrams()).toEqual([...sb.segments, ...Array.from({ length: 10 }, (_, i) => payload(700, i))])
      await io.close()
    }
  })

  it('rejects options it cannot use', () => {
    expect(() => new UringUdpIo({ receiveDepth: 0 })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
    expect(() => new UringUdpIo({ receiveSlots: 8, receiveDepth: 9 })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
    expect(() => new UringUdpIo({ receiveSlots: 100 })).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }) as Error)
    expect(new UringUdpIo({ receiveSlots: 8 }).backend).toBe('uring') // depth defaults to min(16, receiveSlots)
  })
})

describe('UringUdpIo where io_uring is refused', () => {
  it('rejects bind() with StoqUnsupportedError (feature uring), keeps nothing, and lets the caller fall back on the same port', async () => {
    const port = await freePort()
    const io = new UringUdpIo()
    opened.push(io)
    // The kernel refuses the ring (EINVAL for an unknown flag): the same path as a kernel
    // without io_uring (ENOSYS), a seccomp filter, or kernel.io_uring_disabled (EPERM).
    io[kUringSetupFlags]([UNKNOWN_SETUP_FLAG])
    let err: unknown
    try {
      await io.bind({ host: '127.0.0.1', port, ipv6Only: false }, new Recorder())
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err)).toBe(true)
    const refusal = err as StoqError
    expect(refusal.code).toBe('STOQ_ERR_UNSUPPORTED')
    expect(refusal.data).toEqual({ feature: 'uring' })
    expect(refusal.name).toBe('StoqUnsupportedError')
    if (support.ok) expect(refusal.message).toMatch(/io_uring unavailable: io_uring_setup\(\d+\) failed \(flags tried 0x80000000: errno 22\).*\(EINVAL\)/)
    else expect(refusal.message).toMatch(/io_uring|koffi|unavailable/)
    expect(io.localAddress).toBeNull()
    expect(io.pendingSends).toBe(0)
    expect(io.sharedPool.stats().inUse).toBe(0)
    await io.close()

    // The fallback a caller makes: another backend binds the very port.
    for (const fallback of [new WorkerUdpIo(), new DgramUdpIo()]) {
      opened.push(fallback)
      try {
        const address = await fallback.bind({ host: '127.0.0.1', port, ipv6Only: false }, new Recorder())
        expect(address.port).toBe(port)
        await fallback.close()
        break
      } catch (e) {
        if (!(StoqError.isInstance(e) && e.code === 'STOQ_ERR_UNSUPPORTED')) throw e
      }
    }
  })

  it('probeIoUring reports the refused io_uring_setup with its errno, and passes where the backend works', () => {
    const refused = probeIoUring({ setupFlags: [UNKNOWN_SETUP_FLAG] })
    expect(refused.ok).toBe(false)
    if (support.ok) {
      expect(refused.errno).toBe('EINVAL')
      expect(refused.detail).toMatch(/io_uring_setup\(8\) failed.*EINVAL/)
    }
    const probe = probeIoUring()
    expect(typeof probe.detail).toBe('string')
    // The backend needs more than the probe (UDP_GRO, a loopback round trip): it cannot work where the probe fails.
    if (!probe.ok) expect(support.ok).toBe(false)
    if (support.ok) {
      expect(probe).toMatchObject({ ok: true, errno: '' })
      expect(probe.detail).toMatch(/^io_uring_setup works \(raw syscall, 8 SQ \/ 16 CQ entries, features 0x[0-9a-f]+\), a NOP completed/)
    }
  })
})

describe('uring worker program', () => {
  it('is self-contained source text: no require call or bundler helper a build could rewrite', () => {
    // Both run from their toString() in an eval worker (see uring-io.ts).
    for (const fn of [uringWorkerMain, uringKit]) {
      const text = fn.toString()
      expect(text).not.toMatch(/\brequire\s*\(/)
      expect(text).not.toMatch(/\b__\w+/)
      expect(text).not.toMatch(/\bimport\s*\(/)
    }
  })
})
