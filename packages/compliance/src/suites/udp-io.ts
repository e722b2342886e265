import dgram from 'node:dgram'
import type { SocketAddress, UdpBindOptions, UdpIo, UdpReceiver } from '@stoq/interface'
import { afterEach, describe, expect, it } from 'vitest'
import { addressKey, rejectedCode, settle, splitSegments, thrownCode, waitUntil } from '../tools/util.js'

/** How the suite creates the backend under test: several fresh, unbound instances per test. */
export interface UdpIoTestFactory {
  /** A new, unbound instance. */
  create(): UdpIo | Promise<UdpIo>
  /** Dispose of an instance after the suite closed it (optional). */
  teardown?(io: UdpIo): Promise<void> | void
}

/** Datagrams of the loss-free transfer. */
const BULK_PACKETS = 100_000
const BULK_SIZE = 1200
/**
 * Datagrams sent but not yet seen by the receiver. 32 datagrams of 1200 bytes
 * take under 100 KiB of receive buffer (kernel accounting included), well below
 * Linux's 208 KiB default, so a correct backend cannot lose one on loopback,
 * however slowly a loaded machine schedules the receiver.
 */
const BULK_WINDOW = 32
/** The transfer fails when neither side makes progress for this long (a lost datagram or a missing onDrain). */
const BULK_STALL_MS = 10_000
/** Per-test limits: generous, so that only a hang (never slowness) fails. */
const TEST_MS = 30_000
const BULK_TEST_MS = 120_000

/** Bytes of a test payload; `seed` makes payloads of the same length differ. */
function payload(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) bytes[i] = (seed * 31 + i * 7 + (i >> 8)) & 0xff
  return bytes
}

/** Concatenate `count - 1` segments of `segmentSize` bytes and a last one of `lastSize`, each with its own content. */
function superBuffer(count: number, segmentSize: number, lastSize: number): { data: Uint8Array; segments: Uint8Array[] } {
  const segments = Array.from({ length: count }, (_, i) => payload(i === count - 1 ? lastSize : segmentSize, 100 + i))
  const data = new Uint8Array(segments.reduce((sum, s) => sum + s.length, 0))
  let offset = 0
  for (const segment of segments) {
    data.set(segment, offset)
    offset += segment.length
  }
  return { data, segments }
}

/** Split what `onPacket` delivered into datagrams, as GRO defines it. */
function receivedDatagrams(data: Uint8Array, segmentSize: number): Uint8Array[] {
  if (!Number.isInteger(segmentSize) || segmentSize < 1) {
    throw new Error(`onPacket reported segmentSize ${segmentSize} for ${data.length} bytes`)
  }
  return splitSegments(data, segmentSize)
}

function plain(address: SocketAddress): SocketAddress {
  return { address: address.address, port: address.port, family: address.family }
}

/** A UdpReceiver that keeps copies of everything. */
class Recorder implements UdpReceiver {
  readonly packets: { data: Uint8Array; segmentSize: number; from: SocketAddress }[] = []
  readonly events: ('packet' | 'batch-end')[] = []
  readonly completions = new Map<number, number>()
  readonly errors: Error[] = []
  drains = 0

  onPacket(data: Uint8Array, segmentSize: number, from: SocketAddress): void {
    this.packets.push({ data: new Uint8Array(data), segmentSize, from: plain(from) })
    this.events.push('packet')
  }
  onBatchEnd(): void {
    this.events.push('batch-end')
  }
  onSendComplete(token: number): void {
    this.completions.set(token, (this.completions.get(token) ?? 0) + 1)
  }
  onDrain(): void {
    this.drains++
  }
  onError(err: Error): void {
    this.errors.push(err)
  }

  /** Every datagram received, GRO buffers split. */
  datagrams(): { data: Uint8Array; from: SocketAddress }[] {
    return this.packets.flatMap((p) => receivedDatagrams(p.data, p.segmentSize).map((data) => ({ data, from: p.from })))
  }
  datagramCount(): number {
    return this.datagrams().length
  }
  completionCount(): number {
    let sum = 0
    for (const n of this.completions.values()) sum += n
    return sum
  }
}

let ipv6Probe: Promise<boolean> | undefined
/** Whether this host can bind the IPv6 loopback (some CI containers cannot). */
function ipv6Loopback(): Promise<boolean> {
  ipv6Probe ??= new Promise((resolve) => {
    const socket = dgram.createSocket('udp6')
    socket.once('error', () => {
      socket.close()
      resolve(false)
    })
    socket.bind(0, '::1', () => socket.close(() => resolve(true)))
  })
  return ipv6Probe
}

/** Register a vitest `describe` block that checks `UdpIo` contract compliance of what `factory` creates, over real loopback sockets. */
export function udpIoTests(name: string, factory: UdpIoTestFactory): void {
  describe(`${name}: UdpIo compliance`, () => {
    const opened: UdpIo[] = []
    const plainSockets: dgram.Socket[] = []

    afterEach(async () => {
      const ios = opened.splice(0)
      for (const io of ios) {
        await io.close().catch(() => undefined)
        await factory.teardown?.(io)
      }
      for (const socket of plainSockets.splice(0)) {
        await new Promise<void>((resolve) => {
          try {
            socket.close(() => resolve())
          } catch {
            resolve() // already closed
          }
        })
      }
    })

    const create = async (): Promise<UdpIo> => {
      const io = await factory.create()
      opened.push(io)
      return io
    }

    const bind = async (
      host: string,
      options: Partial<UdpBindOptions> = {},
      receiver = new Recorder(),
    ): Promise<{ io: UdpIo; receiver: Recorder; address: SocketAddress }> => {
      const io = await create()
      const address = await io.bind({ host, port: 0, ipv6Only: false, ...options }, receiver)
      return { io, receiver, address }
    }

    /** A bound `node:dgram` socket: a neutral peer, independent of the backend under test. */
    const plainSocket = (type: 'udp4' | 'udp6', host: string, port = 0): Promise<dgram.Socket> =>
      new Promise((resolve, reject) => {
        const socket = dgram.createSocket({ type, ipv6Only: type === 'udp6' })
        plainSockets.push(socket)
        socket.once('error', reject)
        socket.bind({ address: host, port, exclusive: true }, () => {
          socket.off('error', reject)
          resolve(socket)
        })
      })

    const plainReceived = (socket: dgram.Socket): Buffer[] => {
      const received: Buffer[] = []
      socket.on('message', (msg) => received.push(msg))
      return received
    }

    const plainSend = (socket: dgram.Socket, data: Uint8Array, port: number, host: string): Promise<void> =>
      new Promise((resolve, reject) => socket.send(data, port, host, (err) => (err ? reject(err) : resolve())))

    const expectProbeArrives = async (receiver: Recorder, port: number, type: 'udp4' | 'udp6', host: string) => {
      const peer = await plainSocket(type, host)
      const probe = payload(100, 1)
      await plainSend(peer, probe, port, host)
      await waitUntil('a datagram sent to the reported port', () => receiver.datagramCount() >= 1)
      const [first] = receiver.datagrams()
      expect(first!.data).toEqual(probe)
      expect(first!.from).toEqual({ address: host, port: peer.address().port, family: type === 'udp4' ? 'IPv4' : 'IPv6' })
    }

    it('declares specification v1, a backend name and maxSegments, and starts unbound', async () => {
      const io = await create()
      expect(io.specificationVersion).toBe('v1')
      expect(typeof io.backend).toBe('string')
      expect(io.backend.length).toBeGreaterThan(0)
      expect(Number.isInteger(io.maxSegments)).toBe(true)
      expect(io.maxSegments).toBeGreaterThanOrEqual(1)
      expect(io.localAddress).toBeNull()
      expect(io.pendingSends).toBe(0)
      expect(io.stats().backend).toBe(io.backend)
    })

    it(
      'binds 127.0.0.1 port 0 and reports the actual IPv4 address and port',
      async () => {
        const { io, receiver, address } = await bind('127.0.0.1')
        expect(plain(address)).toEqual({ address: '127.0.0.1', port: address.port, family: 'IPv4' })
        expect(Number.isInteger(address.port) && address.port > 0 && address.port < 65536).toBe(true)
        expect(plain(io.localAddress!)).toEqual(plain(address))
        await expectProbeArrives(receiver, address.port, 'udp4', '127.0.0.1')
        expect(receiver.errors).toEqual([])
      },
      TEST_MS,
    )

    it(
      'binds ::1 port 0 and reports the actual IPv6 address and port',
      async (ctx) => {
        if (!(await ipv6Loopback())) ctx.skip('this host cannot bind ::1')
        const { io, receiver, address } = await bind('::1')
        expect(plain(address)).toEqual({ address: '::1', port: address.port, family: 'IPv6' })
        expect(Number.isInteger(address.port) && address.port > 0 && address.port < 65536).toBe(true)
        expect(plain(io.localAddress!)).toEqual(plain(address))
        await expectProbeArrives(receiver, address.port, 'udp6', '::1')
        expect(receiver.errors).toEqual([])
      },
      TEST_MS,
    )

    it(
      'binds :: dual-stack, receives from an IPv4 sender reported as plain IPv4, and replies to it',
      async (ctx) => {
        if (!(await ipv6Loopback())) ctx.skip('this host has no IPv6')
        const server = await bind('::', { ipv6Only: false })
        expect(server.address.family).toBe('IPv6')
        expect(server.address.address).toBe('::')
        const client = await bind('127.0.0.1')

        const hello = payload(300, 2)
        client.io.send(hello, hello.length, { address: '127.0.0.1', port: server.address.port, family: 'IPv4' }, 1)
        await waitUntil('the IPv4 datagram at the dual-stack socket', () => server.receiver.datagramCount() >= 1)
        const [got] = server.receiver.datagrams()
        expect(got!.data).toEqual(hello)
        expect(got!.from).toEqual({ address: '127.0.0.1', port: client.address.port, family: 'IPv4' })

        // Reply to the address exactly as reported: the backend must map it back itself.
        const reply = payload(200, 3)
        server.io.send(reply, reply.length, server.receiver.packets[0]!.from, 2)
        await waitUntil('the reply at the IPv4 socket', () => client.receiver.datagramCount() >= 1)
        const [back] = client.receiver.datagrams()
        expect(back!.data).toEqual(reply)
        expect(back!.from).toEqual({ address: '127.0.0.1', port: server.address.port, family: 'IPv4' })
        expect([...server.receiver.errors, ...client.receiver.errors]).toEqual([])
      },
      TEST_MS,
    )

    it(
      'with ipv6Only on :: leaves IPv4 traffic to others and still receives IPv6',
      async (ctx) => {
        if (!(await ipv6Loopback())) ctx.skip('this host has no IPv6')
        const server = await bind('::', { ipv6Only: true })
        const port = server.address.port
        // A dual-stack socket would hold the IPv4 port too (EADDRINUSE here).
        const v4 = await plainSocket('udp4', '127.0.0.1', port).catch((err: Error) => {
          throw new Error(`IPv4 port ${port} is taken although the socket was bound with ipv6Only: ${err.message}`)
        })
        const v4Received = plainReceived(v4)

        const v4Sender = await plainSocket('udp4', '127.0.0.1')
        const v6Sender = await plainSocket('udp6', '::1')
        await plainSend(v4Sender, payload(64, 4), port, '127.0.0.1')
        await plainSend(v6Sender, payload(64, 6), port, '::1')
        await waitUntil('the IPv4 datagram at the IPv4 socket', () => v4Received.length >= 1)
        await waitUntil('the IPv6 datagram at the ipv6Only socket', () => server.receiver.datagramCount() >= 1)
        await settle()
        const got = server.receiver.datagrams()
        expect(got.map((d) => d.from)).toEqual([{ address: '::1', port: v6Sender.address().port, family: 'IPv6' }])
        expect(got[0]!.data).toEqual(payload(64, 6))
        expect(new Uint8Array(v4Received[0]!)).toEqual(payload(64, 4))
      },
      TEST_MS,
    )

    it(
      'sends single datagrams (segmentSize >= length) intact',
      async () => {
        const server = await bind('127.0.0.1')
        const client = await bind('127.0.0.1')
        const sizes = [1, 1200, 9000]
        const sent = sizes.flatMap((size, i) => [payload(size, 10 + i), payload(size, 20 + i)])
        sent.forEach((data, i) => {
          // Even: segmentSize equal to the length; odd: larger than it.
          client.io.send(data, i % 2 === 0 ? data.length : 65_000, server.address, i)
        })
        await waitUntil(
          `${sent.length} datagrams`,
          () => server.receiver.datagramCount() >= sent.length,
          () => `got ${server.receiver.datagramCount()}`,
        )
        const got = server.receiver.datagrams()
        expect(got.map((d) => d.data)).toEqual(sent)
        for (const d of got) expect(d.from).toEqual(plain(client.address))
        expect([...server.receiver.errors, ...client.receiver.errors]).toEqual([])
      },
      TEST_MS,
    )

    it(
      'sends a super-buffer (segmentSize < length) as exactly its datagrams, in order',
      async () => {
        const server = await bind('127.0.0.1')
        const client = await bind('127.0.0.1')
        // k full segments and a shorter last one; then one with all segments equal.
        const count = client.io.maxSegments > 1 ? Math.min(5, client.io.maxSegments) : 5
        const ragged = superBuffer(count, 1000, 337)
        const even = superBuffer(count, 800, 800)
        expect(client.io.send(ragged.data, 1000, server.address, 7)).toBeTypeOf('boolean')
        client.io.send(even.data, 800, server.address, 8)
        const expected = [...ragged.segments, ...even.segments]
        await waitUntil(
          `${expected.length} datagrams`,
          () => server.receiver.datagramCount() >= expected.length,
          () => `got ${server.receiver.datagramCount()}`,
        )
        await settle()
        const got = server.receiver.datagrams()
        expect(got.map((d) => d.data.length)).toEqual(expected.map((s) => s.length))
        expect(got.map((d) => d.data)).toEqual(expected)
        await waitUntil('both sends to complete', () => client.receiver.completionCount() >= 2)
        expect(Object.fromEntries(client.receiver.completions)).toEqual({ 7: 1, 8: 1 })
      },
      TEST_MS,
    )

    it(
      `transfers ${BULK_PACKETS} datagrams of ${BULK_SIZE} bytes without loss, duplication or corruption`,
      async () => {
        const rx = new BulkReceiver()
        const tx = new BulkSenderEvents(rx.wakeup)
        const receiver = await create()
        const sender = await create()
        const to = await receiver.bind({ host: '127.0.0.1', port: 0, ipv6Only: false, receiveBufferSize: 1 << 22 }, rx)
        const from = await sender.bind({ host: '127.0.0.1', port: 0, ipv6Only: false, sendBufferSize: 1 << 22 }, tx)
        rx.expectFrom = addressKey(from)

        const perSend = sender.maxSegments > 1 ? Math.min(8, sender.maxSegments) : 1
        const sends = Math.ceil(BULK_PACKETS / perSend)
        const completions = new Uint8Array(sends)
        /** Buffers a send may still reference: reused only after their completion. */
        const free: Uint8Array[] = []
        const inFlight = new Map<number, Uint8Array>()
        tx.onComplete = (token) => {
          if (Number.isInteger(token) && token >= 0 && token < sends) completions[token] = Math.min(255, completions[token]! + 1)
          else tx.unknownTokens++
          const buffer = inFlight.get(token)
          if (buffer) {
            inFlight.delete(token)
            free.push(buffer)
          }
        }

        let seq = 0
        let token = 0
        let progressAt = Date.now()
        let progressMark = -1
        const stalled = (what: string): Error =>
          new Error(
            `${what}: no progress for ${BULK_STALL_MS} ms; sent ${seq}, received ${rx.datagrams}, ` +
              `valid ${rx.valid}, duplicates ${rx.duplicates}, corrupt ${rx.corrupt}, blocked ${tx.blocked}, ` +
              `pendingSends ${sender.pendingSends}, sender stats ${JSON.stringify(sender.stats())}, ` +
              `receiver stats ${JSON.stringify(receiver.stats())}`,
          )
        const checkProgress = (what: string): void => {
          const mark = seq + rx.datagrams + tx.completions
          if (mark !== progressMark) {
            progressMark = mark
            progressAt = Date.now()
          } else if (Date.now() - progressAt > BULK_STALL_MS) {
            throw stalled(what)
          }
        }

        while (seq < BULK_PACKETS) {
          while (seq < BULK_PACKETS && !tx.blocked && seq - rx.datagrams + perSend <= BULK_WINDOW) {
            const count = Math.min(perSend, BULK_PACKETS - seq)
            const buffer = free.pop() ?? new Uint8Array(perSend * BULK_SIZE)
            for (let i = 0; i < count; i++) writeBulkPacket(buffer, i * BULK_SIZE, seq + i)
            const data = buffer.subarray(0, count * BULK_SIZE)
            inFlight.set(token, buffer)
            if (!sender.send(data, BULK_SIZE, to, token)) tx.blocked = true
            token++
            seq += count
          }
          checkProgress(tx.blocked ? 'sending (send() returned false, waiting for onDrain)' : 'sending')
          // Wake when half the window has arrived, on onDrain, or after a while in any case.
          rx.wakeAt = Math.max(1, seq - BULK_WINDOW / 2)
          await rx.wakeup.wait(50)
        }
        while (rx.datagrams < BULK_PACKETS) {
          checkProgress('waiting for the last datagrams')
          rx.wakeAt = BULK_PACKETS
          await rx.wakeup.wait(50)
        }
        await waitUntil(
          'every send to complete',
          () => tx.completions >= sends && sender.pendingSends === 0,
          () => `${tx.completions} of ${sends} completed, pendingSends ${sender.pendingSends}`,
        )
        await settle()

        expect({
          received: rx.datagrams,
          valid: rx.valid,
          duplicates: rx.duplicates,
          corrupt: rx.corrupt,
          firstProblem: rx.firstProblem,
        }).toEqual({ received: BULK_PACKETS, valid: BULK_PACKETS, duplicates: 0, corrupt: 0, firstProblem: '' })
        expect(rx.allSeen()).toBe(true)
        expect(completions.every((n) => n === 1)).toBe(true)
        expect(tx.unknownTokens).toBe(0)
        expect(sender.stats()).toMatchObject({ packetsSent: BULK_PACKETS, bytesSent: BULK_PACKETS * BULK_SIZE, sendErrors: 0 })
        expect(receiver.stats()).toMatchObject({ packetsReceived: BULK_PACKETS, bytesReceived: BULK_PACKETS * BULK_SIZE })
        expect([...rx.errors, ...tx.errors]).toEqual([])
      },
      BULK_TEST_MS,
    )

    it(
      "calls onSendComplete exactly once per send, with the caller's token",
      async () => {
        const server = await bind('127.0.0.1')
        const client = await bind('127.0.0.1')
        const segments = client.io.maxSegments > 1 ? Math.min(3, client.io.maxSegments) : 3
        const tokens = [0, 1, 2, 3, 17, 4095, 65_536, 2 ** 31 - 1]
        tokens.forEach((token, i) => {
          if (i % 2 === 0) client.io.send(payload(500, i), 500, server.address, token)
          else client.io.send(superBuffer(segments, 400, 100).data, 400, server.address, token)
        })
        await waitUntil(
          'a completion for every send',
          () => client.receiver.completionCount() >= tokens.length && client.io.pendingSends === 0,
          () => `completions ${JSON.stringify(Object.fromEntries(client.receiver.completions))}, pendingSends ${client.io.pendingSends}`,
        )
        await settle() // a duplicate completion would show up here
        expect(Object.fromEntries(client.receiver.completions)).toEqual(Object.fromEntries(tokens.map((t) => [t, 1])))
        expect(server.receiver.completions.size).toBe(0)
      },
      TEST_MS,
    )

    it(
      'calls onBatchEnd after the packets of a batch',
      async () => {
        const server = await bind('127.0.0.1')
        const client = await bind('127.0.0.1')
        for (let i = 0; i < 20; i++) client.io.send(payload(600, i), 600, server.address, i)
        await waitUntil(
          'onBatchEnd after the last of 20 datagrams',
          () => server.receiver.datagramCount() >= 20 && server.receiver.events.at(-1) === 'batch-end',
          () => `events ${server.receiver.events.join(',')}`,
        )
        await settle()
        const events = server.receiver.events
        expect(events[0]).toBe('packet')
        expect(events.at(-1)).toBe('batch-end')
        expect(events.filter((e) => e === 'batch-end').length).toBeLessThanOrEqual(events.filter((e) => e === 'packet').length)
      },
      TEST_MS,
    )

    it(
      'counts what was sent and received in stats()',
      async () => {
        const server = await bind('127.0.0.1', { receiveBufferSize: 1 << 20 })
        const client = await bind('127.0.0.1', { sendBufferSize: 1 << 20 })
        const segments = client.io.maxSegments > 1 ? Math.min(4, client.io.maxSegments) : 4
        const singles = [10, 100, 1000, 1200, 1500]
        singles.forEach((size, i) => {
          client.io.send(payload(size, i), size, server.address, i)
        })
        const sb = superBuffer(segments, 1100, 50)
        client.io.send(sb.data, 1100, server.address, 99)
        const packets = singles.length + segments
        const bytes = singles.reduce((a, b) => a + b, 0) + sb.data.length
        await waitUntil(`${packets} datagrams`, () => server.receiver.datagramCount() >= packets)
        await waitUntil('every send to complete', () => client.receiver.completionCount() >= singles.length + 1)
        await settle()

        const tx = client.io.stats()
        expect(tx).toMatchObject({ backend: client.io.backend, packetsSent: packets, bytesSent: bytes, sendErrors: 0 })
        expect(tx.sendCalls).toBeGreaterThanOrEqual(1)
        expect(tx.sendCalls).toBeLessThanOrEqual(packets)
        expect(tx.sendBufferSize).toBeGreaterThan(0)
        expect(tx.receiveBufferSize).toBeGreaterThan(0)
        const rx = server.io.stats()
        expect(rx).toMatchObject({ backend: server.io.backend, packetsReceived: packets, bytesReceived: bytes, sendErrors: 0 })
        expect(rx.receiveCalls).toBeGreaterThanOrEqual(1)
        expect(rx).toMatchObject({ sendCalls: 0, packetsSent: 0, bytesSent: 0 })
        expect(tx).toMatchObject({ packetsReceived: 0, bytesReceived: 0 })
      },
      TEST_MS,
    )

    it(
      'close() is idempotent, completes every pending send, and send() then throws STOQ_ERR_CLOSED',
      async () => {
        const server = await bind('127.0.0.1')
        const client = await bind('127.0.0.1')
        const count = 300
        for (let i = 0; i < count; i++) client.io.send(payload(1200, i), 1200, server.address, i)
        // Close at once: some sends are likely still queued.
        const first = client.io.close()
        const second = client.io.close()
        await Promise.all([first, second])
        await client.io.close()
        expect(client.receiver.completionCount()).toBe(count)
        expect(client.io.pendingSends).toBe(0)
        await settle() // late completions of cancelled sends must not be reported twice
        expect([...client.receiver.completions.values()].every((n) => n === 1)).toBe(true)
        expect(client.receiver.completions.size).toBe(count)
        expect(thrownCode(() => client.io.send(payload(10, 1), 10, server.address, 1))).toBe('STOQ_ERR_CLOSED')
      },
      TEST_MS,
    )

    it(
      'close() resolves for a socket that was never bound, also twice',
      async () => {
        const io = await create()
        await io.close()
        await io.close()
        expect(io.pendingSends).toBe(0)
      },
      TEST_MS,
    )

    it(
      'close() during a pending bind() leaves no socket open',
      async () => {
        const io = await create()
        const binding = io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Recorder())
        await io.close()
        const outcome = await binding.then(
          (address) => ({ address: plain(address), code: 'none' }),
          (err: unknown) => ({ address: null, code: (err as { code?: string }).code ?? String(err) }),
        )
        expect(thrownCode(() => io.send(payload(10, 1), 10, { address: '127.0.0.1', port: 9, family: 'IPv4' }, 1))).toBe('STOQ_ERR_CLOSED')
        if (outcome.address !== null) {
          // bind() resolved: the port it reported must have been released by close().
          await plainSocket('udp4', '127.0.0.1', outcome.address.port).catch((err: Error) => {
            throw new Error(`port ${outcome.address!.port} is still bound after close(): ${err.message}`)
          })
        } else {
          expect(outcome.code).toBe('STOQ_ERR_CLOSED')
        }
      },
      TEST_MS,
    )

    it(
      'rejects bind() on a port in use with STOQ_ERR_SOCKET',
      async () => {
        const holder = await plainSocket('udp4', '127.0.0.1')
        const io = await create()
        const code = await rejectedCode(io.bind({ host: '127.0.0.1', port: holder.address().port, ipv6Only: false }, new Recorder()))
        expect(code).toBe('STOQ_ERR_SOCKET')
        expect(io.localAddress).toBeNull()

        const first = await bind('127.0.0.1')
        const second = await create()
        expect(await rejectedCode(second.bind({ host: '127.0.0.1', port: first.address.port, ipv6Only: false }, new Recorder()))).toBe('STOQ_ERR_SOCKET')
      },
      TEST_MS,
    )

    it(
      'rejects bind() to a host that is not an IP literal with STOQ_ERR_INVALID_ARG',
      async () => {
        for (const host of ['localhost', 'example.invalid', '', '127.0.0.256', '1.2.3', '::g', ' 127.0.0.1']) {
          const io = await create()
          const code = await rejectedCode(io.bind({ host, port: 0, ipv6Only: false }, new Recorder()))
          expect(code, `host ${JSON.stringify(host)}`).toBe('STOQ_ERR_INVALID_ARG')
          expect(io.localAddress).toBeNull()
        }
      },
      TEST_MS,
    )

    it(
      'rejects bind() to a port outside 0..65535 with STOQ_ERR_INVALID_ARG',
      async () => {
        for (const port of [-1, 65_536, 1.5, Number.NaN]) {
          const io = await create()
          const code = await rejectedCode(io.bind({ host: '127.0.0.1', port, ipv6Only: false }, new Recorder()))
          expect(code, `port ${port}`).toBe('STOQ_ERR_INVALID_ARG')
          expect(io.localAddress).toBeNull()
        }
      },
      TEST_MS,
    )
  })
}

// ---------------------------------------------------------------------------
// The loss-free transfer

/** Bytes after the 4-byte sequence number, offset by `seq % 251` so that neighbouring packets differ. */
const BULK_PATTERN = (() => {
  const bytes = new Uint8Array(251 + BULK_SIZE)
  let x = 0x9e3779b9
  for (let i = 0; i < bytes.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    bytes[i] = x & 0xff
  }
  return bytes
})()

function writeBulkPacket(buffer: Uint8Array, offset: number, seq: number): void {
  buffer[offset] = seq & 0xff
  buffer[offset + 1] = (seq >>> 8) & 0xff
  buffer[offset + 2] = (seq >>> 16) & 0xff
  buffer[offset + 3] = (seq >>> 24) & 0xff
  const start = seq % 251
  buffer.set(BULK_PATTERN.subarray(start, start + BULK_SIZE - 4), offset + 4)
}

/** Resolves a waiting sender early; the sender always waits with a timeout too. */
class Wakeup {
  private pending: (() => void) | null = null

  notify(): void {
    const wake = this.pending
    if (wake !== null) {
      this.pending = null
      wake()
    }
  }

  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending = null
        resolve()
      }, ms)
      this.pending = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}

/** Checks every datagram of the transfer as it arrives (nothing is kept). */
class BulkReceiver implements UdpReceiver {
  readonly wakeup = new Wakeup()
  readonly errors: Error[] = []
  /** Wake the sender once this many datagrams have arrived. */
  wakeAt = 1
  expectFrom = ''
  datagrams = 0
  valid = 0
  duplicates = 0
  corrupt = 0
  firstProblem = ''
  private readonly seen = new Uint8Array(BULK_PACKETS)

  onPacket(data: Uint8Array, segmentSize: number, from: SocketAddress): void {
    if (this.expectFrom !== '' && addressKey(from) !== this.expectFrom) this.problem(`datagram from ${addressKey(from)}`)
    const step = segmentSize >= 1 ? segmentSize : data.length
    for (let off = 0; off < data.length; off += step) {
      const length = Math.min(step, data.length - off)
      this.datagrams++
      this.check(data, off, length)
    }
    if (this.datagrams >= this.wakeAt) this.wakeup.notify()
  }

  private check(data: Uint8Array, off: number, length: number): void {
    if (length !== BULK_SIZE) {
      this.problem(`datagram of ${length} bytes`)
      return
    }
    const seq = (data[off]! | (data[off + 1]! << 8) | (data[off + 2]! << 16) | (data[off + 3]! << 24)) >>> 0
    if (seq >= BULK_PACKETS) {
      this.problem(`sequence number ${seq}`)
      return
    }
    const start = (seq % 251) - 4
    for (let i = 4; i < BULK_SIZE; i++) {
      if (data[off + i] !== BULK_PATTERN[start + i]) {
        this.problem(`packet ${seq} differs at byte ${i}`)
        return
      }
    }
    if (this.seen[seq] === 1) {
      this.duplicates++
      if (this.firstProblem === '') this.firstProblem = `packet ${seq} received twice`
      return
    }
    this.seen[seq] = 1
    this.valid++
  }

  private problem(what: string): void {
    this.corrupt++
    if (this.firstProblem === '') this.firstProblem = what
  }

  allSeen(): boolean {
    return this.seen.every((v) => v === 1)
  }

  onBatchEnd(): void {
    // Each datagram is checked as it arrives: nothing to do per batch.
  }
  onSendComplete(): void {
    // The receiving socket sends nothing.
  }
  onDrain(): void {
    // The receiving socket sends nothing.
  }
  onError(err: Error): void {
    this.errors.push(err)
  }
}

/** The sender's receiver: completions, drain and errors of the transfer. */
class BulkSenderEvents implements UdpReceiver {
  readonly errors: Error[] = []
  blocked = false
  completions = 0
  unknownTokens = 0
  onComplete: (token: number) => void = () => undefined

  constructor(private readonly wakeup: Wakeup) {}

  onPacket(): void {
    // The sender expects nothing back: the receiver side counts what arrives.
  }
  onBatchEnd(): void {
    // Nothing is received, so no batch to end.
  }
  onSendComplete(token: number): void {
    this.completions++
    this.onComplete(token)
  }
  onDrain(): void {
    this.blocked = false
    this.wakeup.notify()
  }
  onError(err: Error): void {
    this.errors.push(err)
  }
}
