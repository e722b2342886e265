import dgram from 'node:dgram'
import { StoqError, type SocketAddress } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { DgramUdpIo, URING_SETUP_FLAGS, UringUdpIo, type UringUdpIoOptions, WorkerUdpIo, createUringUdpIo, probeIoUring } from '../src/index.js'
import { kUringSetupFlags } from '../src/uring-io.js'
import { socketKit } from '../src/worker/socket-kit.js'
import { uringKit } from '../src/worker/uring-kit.js'
import { uringWorkerMain } from '../src/worker/uring-worker.js'
import {
  Recorder,
  bindRecorded,
  closedAfterEach,
  expectSelfContained,
  payload,
  plainSender,
  portBindable,
  probeByBinding,
  superBuffer,
  waitFor,
} from './helpers.js'
import * as cases from './worker-cases.js'

/** A setup flag the kernel does not know: io_uring_setup refuses it with EINVAL. */
const UNKNOWN_SETUP_FLAG = 1 << 31

/** A port nobody holds right now (bound and released by a plain socket). */
async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve))
  const port = s.address().port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

const opened = closedAfterEach()

const uring = (options: Partial<UringUdpIoOptions> = {}, host?: string) => bindRecorded(new UringUdpIo(options), opened, host)

/** Whether this machine runs the backend (Linux, koffi, io_uring, UDP_GRO): decided by one real bind. */
const probe = new UringUdpIo()
const support = await probeByBinding(probe, () => probe.stats().ring)

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

  it('receives a GSO super-buffer of 40 x 1200 from a dgram-based GsoUdpIo as GRO buffers of segment size 1200, intact', (ctx) =>
    cases.receivesGsoSuperBuffer(ctx, uring, opened, { receiveTruncated: 0 }))

  it('sends a super-buffer through SENDMSG with UDP_SEGMENT and receives it coalesced, over IPv4 and IPv6', () =>
    cases.sendsSuperBufferBothFamilies(uring, { sendReordered: 0 }))

  it('hands receive buffers out in completion order: 600 datagrams through 4 buffers, every one intact and in order', async () => {
    // Four receives in flight into four buffers: the ring slot a completion lands in names
    // a buffer that is generally not the slot's own, and the bytes must still match.
    const { io, rec, address } = await uring({ receiveSlots: 4, receiveDepth: 4 })
    const sender = await plainSender(opened)
    const sent = Array.from({ length: 600 }, (_, i) => payload(1 + ((i * 97) % 1400), i))
    for (let i = 0; i < sent.length; i += 20) {
      for (const d of sent.slice(i, i + 20)) sender.send(d, address.port, '127.0.0.1')
      await waitFor(
        `${i + 20} datagrams`,
        () => rec.datagrams().length >= i + 20,
        () => JSON.stringify(io.stats()),
      )
    }
    expect(rec.datagrams()).toEqual(sent)
    expect(io.stats()).toMatchObject({ packetsReceived: 600, receiveTruncated: 0 })
  })

  it('stops receiving when every buffer is with the main thread and resumes when they come back', () => cases.resumesAfterReceiveRingFull(uring, opened))

  it('applies backpressure: send() returns false at the high-water mark, onDrain follows, every token completes once', () => cases.appliesBackpressure(uring))

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

  it('counts a datagram larger than a buffer as a send error without a syscall, and still completes it', () =>
    cases.failsTooLargeDatagram(uring, { sendSyscalls: 1 }))

  it('reports a dead worker with onError (STOQ_ERR_SOCKET), completes pending sends, and frees the port held by the ring', async () => {
    const { tx, port } = await cases.killWorkerWithSendsPending(uring)
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
    expect(await portBindable(address.port)).toBe(true)
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
    // All three run from their toString() in an eval worker (see uring-io.ts).
    expectSelfContained(uringWorkerMain, socketKit, uringKit)
  })
})
