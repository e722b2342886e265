import dgram from 'node:dgram'
import net from 'node:net'
import {
  StoqClosedError,
  StoqInvalidArgumentError,
  StoqSocketError,
  StoqUnsupportedError,
  type SocketAddress,
  type UdpBindOptions,
  type UdpIo,
  type UdpIoStats,
  type UdpReceiver,
  checkOptions,
  optionKeys,
} from '@stoq/interface'
import { DEFAULT_SOCKET_BUFFER_SIZE } from './defaults.js'
import { DgramReceivePump, SendTokenFifo, bindDgramSocket, dgramCounters, refuseReusePort, sendQueueMarks } from './dgram-common.js'
import { checkBindTarget, toSocketAddress, toWireHost } from './address.js'
import { type Libc, SOL_UDP, UDP_SEGMENT, errnoName, loadLibc } from './koffi/libc.js'
import { socketFd } from './koffi/socket-fd.js'
import { setDontFragment } from './koffi/dont-fragment.js'
import { applySocketBuffers, literalLookup, probeGso } from './koffi/sockets.js'

/** Segments one `send` may carry; larger super-buffers are split (the kernel's own cap is 64 before Linux 6.9, 128 after). */
export const GSO_MAX_SEGMENTS = 64

/** Largest UDP payload of one write to an IPv4 peer (65535 - 20 IP - 8 UDP); a GSO write counts all its segments. */
export const GSO_MAX_WRITE_BYTES_IPV4 = 65507

/** Largest UDP payload of one write to an IPv6 peer (65535 payload length - 8 UDP), without jumbograms. */
export const GSO_MAX_WRITE_BYTES_IPV6 = 65527

/** Segment size of the bind-time probe: a QUIC-sized packet, small enough for any path MTU. */
export const DEFAULT_GSO_PROBE_SEGMENT_SIZE = 1200

/** How long the bind-time probe waits for its two datagrams on loopback (normally well under 1 ms). */
export const DEFAULT_GSO_PROBE_TIMEOUT_MS = 1000

const RECEIVE_OFFLOAD_DETAIL =
  'no GRO: this backend receives through libuv (dgram), whose recvmsg drops the UDP_GRO cmsg that carries the ' +
  'segment size, so coalesced datagrams could not be split again; one datagram per receive event'

export interface GsoUdpIoOptions {
  /** Pending sends above which `send()` returns false. */
  sendQueueHighWater: number
  /** Pending sends below which `onDrain` fires again. */
  sendQueueLowWater: number
  /** SO_SNDBUF / SO_RCVBUF requested when `UdpBindOptions` does not say (SO_*BUFFORCE first). */
  socketBufferSize: number
  /**
   * Segment size of the bind-time GSO probe (two segments written to a
   * loopback receiver). A size the kernel refuses (two segments over 65507
   * bytes, say) makes `bind` fail with `StoqUnsupportedError`, which is how
   * tests exercise the fallback path against the real kernel.
   */
  probeSegmentSize: number
  /** How long the probe waits for its datagrams. */
  probeTimeoutMs: number
}

/** Every key `GsoUdpIo` accepts. */
export const GSO_OPTION_KEYS = optionKeys<GsoUdpIoOptions>({
  sendQueueHighWater: true,
  sendQueueLowWater: true,
  socketBufferSize: true,
  probeSegmentSize: true,
  probeTimeoutMs: true,
})

export interface GsoUdpIoStats extends UdpIoStats {
  /** Socket writes that carried more than one segment. */
  gsoWrites: number
  /** setsockopt(UDP_SEGMENT) calls made by sends (the option changes only when the segment size does). */
  segmentSizeChanges: number
  /** Writes held back in JS until libuv's queue emptied, because they needed another UDP_SEGMENT value. */
  deferredWrites: number
  /** Receive offload in use: always `none` here (see `receiveOffloadDetail`). */
  receiveOffload: 'none'
  receiveOffloadDetail: string
  /** What the bind-time probe showed. */
  gsoProbe: string
  /** How the socket buffers were set (SO_*BUFFORCE or capped SO_*BUF). */
  socketBuffers: string
}

/**
 * UdpIo with UDP generic segmentation offload (Linux): a super-buffer of equal
 * segments leaves in one socket write and the kernel cuts it into datagrams.
 *
 * The socket is a plain `dgram` socket, so libuv owns it, polls it and queues
 * its writes. koffi is used only for setsockopt: UDP_SEGMENT is a per-socket
 * option here (not a per-message cmsg, which `dgram` cannot pass), changed only
 * when the segment size changes and only while libuv holds no queued write
 * (otherwise a queued write would go out with the new size); writes that need
 * a change then wait in a JS FIFO until libuv's queue empties.
 *
 * Receiving is the same as the dgram backend: one datagram per event, no GRO
 * (see `receiveOffloadDetail` in `stats()`).
 *
 * `bind` proves GSO on the bound socket with a real two-segment write to a
 * loopback receiver and rejects with `StoqUnsupportedError` when it fails, so
 * that the caller can fall back to the dgram backend.
 */
export class GsoUdpIo implements UdpIo {
  readonly specificationVersion = 'v1' as const
  readonly backend = 'gso'
  readonly maxSegments = GSO_MAX_SEGMENTS

  private socket: dgram.Socket | null = null
  private libc: Libc | null = null
  private fd = -1
  private receiver: UdpReceiver | null = null
  private closed = false
  private v6 = true
  private local: SocketAddress | null = null
  private readonly highWater: number
  private readonly lowWater: number
  private readonly socketBufferSize: number
  private readonly probeSegmentSize: number
  private readonly probeTimeoutMs: number
  private wantDrain = false
  /** UDP_SEGMENT currently set on the socket (0: none). */
  private segmentOption = 0
  /** Tokens of the writes libuv has not completed, in order. */
  private readonly tokens = new SendTokenFifo()
  /** Writes waiting for libuv's queue to empty (ring of parallel arrays: no object per write). */
  private deferData: (Uint8Array | null)[] = new Array<Uint8Array | null>(64).fill(null)
  private deferSegment = new Int32Array(64)
  private deferPort = new Int32Array(64)
  private deferHost: string[] = new Array<string>(64).fill('')
  private deferHead = 0
  private deferCount = 0
  private probeDetail = 'not bound'
  private buffersDetail = 'not bound'
  private df = false
  private effectiveSendBuffer = 0
  private effectiveReceiveBuffer = 0
  private readonly counters = {
    ...dgramCounters(),
    gsoWrites: 0,
    segmentSizeChanges: 0,
    deferredWrites: 0,
  }
  private readonly pump = new DgramReceivePump(this.counters, () => this.receiver)

  constructor(options: Partial<GsoUdpIoOptions> = {}) {
    checkOptions(options, GSO_OPTION_KEYS)
    const marks = sendQueueMarks(options)
    this.highWater = marks.high
    this.lowWater = marks.low
    this.socketBufferSize = options.socketBufferSize ?? DEFAULT_SOCKET_BUFFER_SIZE
    this.probeSegmentSize = options.probeSegmentSize ?? DEFAULT_GSO_PROBE_SEGMENT_SIZE
    this.probeTimeoutMs = options.probeTimeoutMs ?? DEFAULT_GSO_PROBE_TIMEOUT_MS
    if (!Number.isInteger(this.socketBufferSize) || this.socketBufferSize < 1024) {
      throw new StoqInvalidArgumentError('socketBufferSize', 'expected an integer of at least 1024 (bytes)')
    }
    if (!Number.isInteger(this.probeSegmentSize) || this.probeSegmentSize < 1 || this.probeSegmentSize > 65535) {
      throw new StoqInvalidArgumentError('probeSegmentSize', 'expected an integer from 1 to 65535')
    }
    if (!Number.isFinite(this.probeTimeoutMs) || this.probeTimeoutMs <= 0) {
      throw new StoqInvalidArgumentError('probeTimeoutMs', 'expected a positive number of milliseconds')
    }
  }

  get pendingSends(): number {
    return this.tokens.size
  }

  /** Bound with Don't Fragment set (see `UdpIo.dontFragment`). */
  get dontFragment(): boolean {
    return this.socket !== null && this.df
  }

  get localAddress(): SocketAddress | null {
    return this.local
  }

  async bind(options: UdpBindOptions, receiver: UdpReceiver): Promise<SocketAddress> {
    if (this.closed) throw new StoqClosedError('UDP socket')
    if (this.socket !== null) throw new StoqSocketError('UDP socket is already bound')
    const family = checkBindTarget(options.host, options.port)
    refuseReusePort(options, 'gso', 'UDP GSO backend')
    const loaded = loadLibc()
    if (!loaded.ok) throw new StoqUnsupportedError('gso', `UDP GSO backend unavailable: ${loaded.reason}`)
    const libc = loaded.libc
    this.v6 = family === 6
    const socket = dgram.createSocket({
      type: this.v6 ? 'udp6' : 'udp4',
      ipv6Only: this.v6 && options.ipv6Only,
      lookup: literalLookup as unknown as NonNullable<dgram.SocketOptions['lookup']>,
    })
    await bindDgramSocket(socket, options.host, options.port)
    const refuse = async (message: string): Promise<never> => {
      await new Promise<void>((resolve) => socket.close(() => resolve()))
      // close() during bind wins over any other outcome.
      if (this.closed) throw new StoqClosedError('UDP socket')
      throw new StoqUnsupportedError('gso', message)
    }
    if (this.closed) await refuse('closed during bind')
    const fd = socketFd(socket)
    if (fd < 0) await refuse('UDP GSO backend unavailable: the file descriptor of the dgram socket cannot be read on this Node version')

    const buffers = applySocketBuffers(libc, fd, options.sendBufferSize ?? this.socketBufferSize, options.receiveBufferSize ?? this.socketBufferSize)
    const df = setDontFragment((f, level, name, value) => libc.setIntOption(f, level, name, value), fd, this.v6, this.v6 && options.ipv6Only)
    this.df = df.ok
    this.buffersDetail = `${buffers.detail}; ${df.ok ? "Don't Fragment set" : df.detail}`
    this.effectiveSendBuffer = buffers.sendBufferSize
    this.effectiveReceiveBuffer = buffers.receiveBufferSize

    const addr = socket.address()
    const probe = await probeGso(socket, fd, libc, {
      segmentSize: this.probeSegmentSize,
      timeoutMs: this.probeTimeoutMs,
      receiverHost: probeReceiverHost(addr.address, this.v6),
    })
    this.probeDetail = probe.detail
    if (!probe.ok) await refuse(`UDP GSO probe failed on ${options.host}: ${probe.detail}`)
    if (this.closed) await refuse('closed during bind')

    this.receiver = receiver
    this.libc = libc
    this.fd = fd
    this.segmentOption = 0
    socket.on('message', this.pump.onMessage)
    socket.on('error', (err) => this.receiver?.onError(err))
    this.socket = socket
    this.local = toSocketAddress(addr.address, addr.port)
    return this.local
  }

  send(data: Uint8Array, segmentSize: number, to: SocketAddress, token: number): boolean {
    if (this.socket === null) throw new StoqClosedError('UDP socket')
    if (!(segmentSize >= 1) || segmentSize !== Math.floor(segmentSize)) {
      throw new StoqInvalidArgumentError('segmentSize', `expected a positive integer, got ${segmentSize}`)
    }
    const host = toWireHost(to, this.v6)
    const c = this.counters
    const length = data.length
    if (segmentSize >= length) {
      this.tokens.push(token, 1)
      this.write(data, 0, to.port, host)
      c.sendCalls++
      c.packetsSent++
      c.bytesSent += length
    } else {
      // One write carries at most GSO_MAX_SEGMENTS segments and at most the
      // largest UDP payload; a bigger super-buffer becomes several writes, and
      // its token is reported when the last one completes.
      const maxBytes = to.family === 'IPv4' ? GSO_MAX_WRITE_BYTES_IPV4 : GSO_MAX_WRITE_BYTES_IPV6
      const perWrite = Math.max(1, Math.min(GSO_MAX_SEGMENTS, Math.floor(maxBytes / segmentSize)))
      const chunk = perWrite * segmentSize
      this.tokens.push(token, Math.ceil(length / chunk))
      for (let off = 0; off < length; off += chunk) {
        const end = Math.min(off + chunk, length)
        const n = end - off
        const view = off === 0 && end === length ? data : data.subarray(off, end)
        if (n > segmentSize) {
          this.write(view, segmentSize, to.port, host)
          c.gsoWrites++
          c.packetsSent += Math.ceil(n / segmentSize)
        } else {
          this.write(view, 0, to.port, host)
          c.packetsSent++
        }
        c.sendCalls++
        c.bytesSent += n
      }
    }
    if (this.tokens.size >= this.highWater) {
      this.wantDrain = true
      return false
    }
    return true
  }

  /**
   * One socket write with UDP_SEGMENT = `segment` (0: a single datagram).
   * A single datagram may go out under any UDP_SEGMENT at least its length
   * (the kernel only splits writes longer than the option), so the option
   * changes only when it must. The kernel also refuses (EINVAL) any write
   * whose UDP_SEGMENT plus headers exceeds the route's MTU, so a segment size
   * must fit the path MTU of every peer this socket sends to, which QUIC's
   * packet sizing ensures.
   */
  private write(data: Uint8Array, segment: number, port: number, host: string): void {
    if (this.deferCount > 0) {
      this.defer(data, segment, port, host)
      return
    }
    const option = this.segmentOption
    if (segment === 0 ? option !== 0 && data.length > option : option !== segment) {
      // libuv writes queued sends later, under whatever option is set then:
      // change it only when nothing is queued there.
      if (this.socket!.getSendQueueCount() > 0) {
        this.defer(data, segment, port, host)
        return
      }
      if (!this.setSegmentOption(segment)) return
    }
    this.socket!.send(data, port, host, this.onSent)
  }

  private setSegmentOption(segment: number): boolean {
    const err = this.libc!.setIntOption(this.fd, SOL_UDP, UDP_SEGMENT, segment)
    this.counters.segmentSizeChanges++
    if (err === 0) {
      this.segmentOption = segment
      return true
    }
    // Only reachable if the kernel changes its mind after the bind probe.
    // libuv's queue is empty here, so earlier writes have completed or have
    // their callbacks queued on nextTick already: completing this slot on
    // nextTick keeps the token FIFO in order.
    const error = new StoqSocketError(`setsockopt(UDP_SEGMENT, ${segment}) failed: ${errnoName(err)}`, {
      syscall: 'setsockopt',
      errno: errnoName(err),
    })
    process.nextTick(this.onSent, error)
    return false
  }

  private defer(data: Uint8Array, segment: number, port: number, host: string): void {
    if (this.deferCount === this.deferData.length) this.growDeferred()
    const cap = this.deferData.length
    const i = (this.deferHead + this.deferCount) % cap
    this.deferData[i] = data
    this.deferSegment[i] = segment
    this.deferPort[i] = port
    this.deferHost[i] = host
    this.deferCount++
    this.counters.deferredWrites++
  }

  private growDeferred(): void {
    const cap = this.deferData.length
    const size = cap * 2
    const data = new Array<Uint8Array | null>(size).fill(null)
    const segment = new Int32Array(size)
    const port = new Int32Array(size)
    const host = new Array<string>(size).fill('')
    for (let k = 0; k < this.deferCount; k++) {
      const j = (this.deferHead + k) % cap
      data[k] = this.deferData[j]!
      segment[k] = this.deferSegment[j]!
      port[k] = this.deferPort[j]!
      host[k] = this.deferHost[j]!
    }
    this.deferData = data
    this.deferSegment = segment
    this.deferPort = port
    this.deferHost = host
    this.deferHead = 0
  }

  /** Issue deferred writes in order until one needs an option change while libuv still holds a write. */
  private flushDeferred(): void {
    const socket = this.socket
    if (socket === null) return
    while (this.deferCount > 0) {
      const i = this.deferHead
      const data = this.deferData[i]!
      const segment = this.deferSegment[i]!
      const option = this.segmentOption
      if (segment === 0 ? option !== 0 && data.length > option : option !== segment) {
        if (socket.getSendQueueCount() > 0) return
        this.popDeferred()
        if (!this.setSegmentOption(segment)) continue
      } else {
        this.popDeferred()
      }
      socket.send(data, this.deferPort[i]!, this.deferHost[i]!, this.onSent)
    }
  }

  private popDeferred(): void {
    this.deferData[this.deferHead] = null
    this.deferHead = (this.deferHead + 1) % this.deferData.length
    this.deferCount--
  }

  private readonly onSent = (err: Error | null): void => {
    if (this.tokens.size === 0) return // already reported by close()
    const token = this.tokens.shift()
    if (err) {
      // A lost write (EMSGSIZE, ECONNREFUSED from ICMP...): QUIC's loss recovery covers it.
      this.counters.sendErrors++
    }
    if (token >= 0) this.receiver?.onSendComplete(token)
    if (this.deferCount > 0 && this.socket !== null && this.socket.getSendQueueCount() === 0) this.flushDeferred()
    if (this.wantDrain && this.tokens.size <= this.lowWater) {
      this.wantDrain = false
      this.receiver?.onDrain()
    }
  }

  stats(): GsoUdpIoStats {
    let sendBufferSize = this.effectiveSendBuffer
    let receiveBufferSize = this.effectiveReceiveBuffer
    if (this.socket) {
      try {
        sendBufferSize = this.socket.getSendBufferSize()
        receiveBufferSize = this.socket.getRecvBufferSize()
      } catch {
        // Closing: keep the values read at bind.
      }
    }
    return {
      backend: this.backend,
      ...this.counters,
      sendBufferSize,
      receiveBufferSize,
      receiveOffload: 'none',
      receiveOffloadDetail: RECEIVE_OFFLOAD_DETAIL,
      gsoProbe: this.probeDetail,
      socketBuffers: this.buffersDetail,
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    const socket = this.socket
    this.socket = null
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()))
    // Deferred writes never reached the socket; their slots are in the FIFO.
    for (let k = 0; k < this.deferCount; k++) this.deferData[(this.deferHead + k) % this.deferData.length] = null
    this.deferCount = 0
    this.deferHead = 0
    // Sends still queued in libuv are cancelled by close; report their tokens
    // so the owner can release the buffers.
    this.tokens.drain((token) => this.receiver?.onSendComplete(token))
    this.receiver = null
    this.libc = null
    this.fd = -1
  }
}

/** Where the bind-time probe's receiver listens: the bound address itself, or loopback for a wildcard bind. */
function probeReceiverHost(bound: string, v6: boolean): string {
  if (!v6) return bound === '0.0.0.0' ? '127.0.0.1' : bound
  if (bound === '::') return '::1'
  const mapped = bound.toLowerCase().startsWith('::ffff:') ? bound.slice(7) : null
  return mapped !== null && net.isIPv4(mapped) ? mapped : bound
}

/** Factory for the GSO backend. `bind` rejects with `StoqUnsupportedError` where GSO does not work. */
export function gsoUdpIo(options: Partial<GsoUdpIoOptions> = {}): () => UdpIo {
  return () => new GsoUdpIo(options)
}
