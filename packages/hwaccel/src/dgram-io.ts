import dgram from 'node:dgram'
import {
  StoqClosedError,
  StoqSocketError,
  type SocketAddress,
  type UdpBindOptions,
  type UdpIo,
  type UdpIoStats,
  type UdpReceiver,
  checkOptions,
  optionKeys,
} from '@stoq/interface'
import { DgramReceivePump, SendTokenFifo, bindDgramSocket, dgramCounters, refuseReusePort, sendQueueMarks } from './dgram-common.js'
import { checkBindTarget, toSocketAddress, toWireHost } from './address.js'
import { setDontFragment } from './koffi/dont-fragment.js'
import { loadLibc } from './koffi/libc.js'
import { socketFd } from './koffi/socket-fd.js'

export interface DgramUdpIoOptions {
  /** Pending sends above which `send()` returns false. */
  sendQueueHighWater: number
  /** Pending sends below which `onDrain` fires again. */
  sendQueueLowWater: number
}

/** Every key `DgramUdpIo` accepts. */
export const DGRAM_OPTION_KEYS = optionKeys<DgramUdpIoOptions>({ sendQueueHighWater: true, sendQueueLowWater: true })

/**
 * The portable UdpIo backend over Node's `dgram`: one datagram per send call,
 * one per receive event. Every accelerated backend must behave like this one.
 */
export class DgramUdpIo implements UdpIo {
  readonly specificationVersion = 'v1' as const
  readonly backend = 'dgram'
  readonly maxSegments = 1

  private socket: dgram.Socket | null = null
  private binding = false
  private receiver: UdpReceiver | null = null
  private closed = false
  private v6 = true
  private local: SocketAddress | null = null
  private df = false
  private readonly highWater: number
  private readonly lowWater: number
  private wantDrain = false
  /** Tokens of the writes libuv has not completed, in order. */
  private readonly tokens = new SendTokenFifo()
  private readonly counters = dgramCounters()
  private readonly pump = new DgramReceivePump(this.counters, () => this.receiver)

  constructor(options: Partial<DgramUdpIoOptions> = {}) {
    checkOptions(options, DGRAM_OPTION_KEYS)
    const marks = sendQueueMarks(options)
    this.highWater = marks.high
    this.lowWater = marks.low
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
    if (this.socket !== null || this.binding) throw new StoqSocketError('UDP socket is already bound')
    const family = checkBindTarget(options.host, options.port)
    refuseReusePort(options, 'dgram', 'UDP dgram backend')
    this.binding = true
    this.v6 = family === 6
    const socket = dgram.createSocket({
      type: this.v6 ? 'udp6' : 'udp4',
      ipv6Only: this.v6 && options.ipv6Only,
      ...(options.receiveBufferSize !== undefined ? { recvBufferSize: options.receiveBufferSize } : {}),
      ...(options.sendBufferSize !== undefined ? { sendBufferSize: options.sendBufferSize } : {}),
    })
    this.receiver = receiver
    await bindDgramSocket(socket, options.host, options.port).finally(() => {
      this.binding = false
    })
    if (this.closed) {
      // close() ran while we were binding: give the port back.
      socket.close()
      throw new StoqClosedError('UDP socket')
    }
    // Don't Fragment where koffi and the fd are at hand (best effort: this backend must work
    // without native help; without DF the endpoint does not probe the path MTU).
    const libc = loadLibc()
    const fd = libc.ok ? socketFd(socket) : -1
    this.df =
      fd >= 0 &&
      libc.ok &&
      setDontFragment((f, level, name, value) => libc.libc.setIntOption(f, level, name, value), fd, this.v6, this.v6 && options.ipv6Only).ok
    socket.on('message', this.pump.onMessage)
    socket.on('error', (err) => this.receiver?.onError(err))
    this.socket = socket
    const addr = socket.address()
    this.local = toSocketAddress(addr.address, addr.port)
    return this.local
  }

  send(data: Uint8Array, segmentSize: number, to: SocketAddress, token: number): boolean {
    const socket = this.socket
    if (socket === null) throw new StoqClosedError('UDP socket')
    const host = toWireHost(to, this.v6)
    const c = this.counters
    if (segmentSize >= data.length) {
      this.tokens.push(token, 1)
      socket.send(data, to.port, host, this.onSent)
      c.sendCalls++
      c.packetsSent++
      c.bytesSent += data.length
    } else {
      // No GSO here: split the super-buffer into one send per segment.
      let n = 0
      for (let off = 0; off < data.length; off += segmentSize) n++
      this.tokens.push(token, n)
      for (let off = 0; off < data.length; off += segmentSize) {
        const end = Math.min(off + segmentSize, data.length)
        socket.send(data.subarray(off, end), to.port, host, this.onSent)
        c.sendCalls++
        c.packetsSent++
        c.bytesSent += end - off
      }
    }
    if (this.tokens.size >= this.highWater) {
      this.wantDrain = true
      return false
    }
    return true
  }

  private readonly onSent = (err: Error | null): void => {
    if (this.tokens.size === 0) return // already reported by close()
    const token = this.tokens.shift()
    if (err) {
      // A UDP send error (e.g. ICMP unreachable reported as ECONNREFUSED) loses
      // one datagram; QUIC's loss recovery covers it.
      this.counters.sendErrors++
    }
    if (token >= 0) this.receiver?.onSendComplete(token)
    if (this.wantDrain && this.tokens.size <= this.lowWater) {
      this.wantDrain = false
      this.receiver?.onDrain()
    }
  }

  stats(): UdpIoStats {
    let sendBufferSize = 0
    let receiveBufferSize = 0
    if (this.socket) {
      try {
        sendBufferSize = this.socket.getSendBufferSize()
        receiveBufferSize = this.socket.getRecvBufferSize()
      } catch {
        // Not bound yet or closing: report zero.
      }
    }
    return { backend: this.backend, ...this.counters, sendBufferSize, receiveBufferSize }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    const socket = this.socket
    this.socket = null
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()))
    // Sends still queued in libuv are cancelled by close; report their tokens
    // so the owner can release the buffers.
    this.tokens.drain((token) => this.receiver?.onSendComplete(token))
    this.receiver = null
  }
}

/** Factory for the portable backend. */
export function dgramUdpIo(options: Partial<DgramUdpIoOptions> = {}): () => UdpIo {
  return () => new DgramUdpIo(options)
}
