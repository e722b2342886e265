import dgram from 'node:dgram'
import net from 'node:net'
import {
  StoqClosedError,
  StoqInvalidArgumentError,
  StoqSocketError,
  type SocketAddress,
  type UdpBindOptions,
  type UdpIo,
  type UdpIoStats,
  type UdpReceiver,
} from '@stoq/interface'
import { DEFAULT_SEND_QUEUE_HIGH_WATER, DEFAULT_SEND_QUEUE_LOW_WATER } from './defaults.js'
import { toSocketAddress, toWireHost } from './address.js'

export interface DgramUdpIoOptions {
  /** Pending sends above which `send()` returns false. */
  sendQueueHighWater: number
  /** Pending sends below which `onDrain` fires again. */
  sendQueueLowWater: number
}

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
  private readonly highWater: number
  private readonly lowWater: number
  private wantDrain = false
  private batchScheduled = false
  /** FIFO of send tokens: libuv completes a socket's sends in order. */
  private tokens = new Float64Array(1024)
  private head = 0
  private count = 0
  private readonly counters = {
    sendCalls: 0,
    packetsSent: 0,
    bytesSent: 0,
    receiveCalls: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    sendErrors: 0,
  }

  constructor(options: Partial<DgramUdpIoOptions> = {}) {
    this.highWater = options.sendQueueHighWater ?? DEFAULT_SEND_QUEUE_HIGH_WATER
    this.lowWater = options.sendQueueLowWater ?? DEFAULT_SEND_QUEUE_LOW_WATER
    if (!Number.isInteger(this.highWater) || this.highWater < 1) {
      throw new StoqInvalidArgumentError('sendQueueHighWater', 'expected a positive integer')
    }
    if (!Number.isInteger(this.lowWater) || this.lowWater < 0 || this.lowWater >= this.highWater) {
      throw new StoqInvalidArgumentError('sendQueueLowWater', 'expected an integer from 0 to sendQueueHighWater - 1')
    }
  }

  get pendingSends(): number {
    return this.count
  }

  get localAddress(): SocketAddress | null {
    return this.local
  }

  async bind(options: UdpBindOptions, receiver: UdpReceiver): Promise<SocketAddress> {
    if (this.closed) throw new StoqClosedError('UDP socket')
    if (this.socket !== null || this.binding) throw new StoqSocketError('UDP socket is already bound')
    const family = net.isIP(options.host)
    if (family === 0) throw new StoqInvalidArgumentError('host', `expected an IP literal, got ${JSON.stringify(options.host)}`)
    // Node's dgram would quietly bind another port for a bad one.
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      throw new StoqInvalidArgumentError('port', `expected an integer from 0 to 65535, got ${String(options.port)}`)
    }
    this.binding = true
    this.v6 = family === 6
    const socket = dgram.createSocket({
      type: this.v6 ? 'udp6' : 'udp4',
      ipv6Only: this.v6 && options.ipv6Only,
      ...(options.receiveBufferSize !== undefined ? { recvBufferSize: options.receiveBufferSize } : {}),
      ...(options.sendBufferSize !== undefined ? { sendBufferSize: options.sendBufferSize } : {}),
    })
    this.receiver = receiver
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        socket.close()
        reject(
          new StoqSocketError(`Cannot bind UDP socket to ${options.host} port ${options.port}: ${err.message}`, {
            syscall: err.syscall ?? 'bind',
            errno: err.code ?? '',
          }),
        )
      }
      socket.once('error', onError)
      socket.bind({ address: options.host, port: options.port, exclusive: true }, () => {
        socket.off('error', onError)
        resolve()
      })
    }).finally(() => {
      this.binding = false
    })
    if (this.closed) {
      // close() ran while we were binding: give the port back.
      socket.close()
      throw new StoqClosedError('UDP socket')
    }
    socket.on('message', this.onMessage)
    socket.on('error', (err) => this.receiver?.onError(err))
    this.socket = socket
    const addr = socket.address()
    this.local = toSocketAddress(addr.address, addr.port)
    return this.local
  }

  private readonly onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    const c = this.counters
    c.receiveCalls++
    c.packetsReceived++
    c.bytesReceived += msg.length
    // rinfo is a fresh object from Node for every datagram; present it unmapped.
    const from = toSocketAddress(rinfo.address, rinfo.port)
    this.receiver?.onPacket(msg, msg.length, from)
    if (!this.batchScheduled) {
      this.batchScheduled = true
      // Node reads up to 32 datagrams per socket readiness; the check phase
      // runs after the poll phase, so one onBatchEnd covers all of them.
      setImmediate(this.endBatch)
    }
  }

  private readonly endBatch = (): void => {
    this.batchScheduled = false
    this.receiver?.onBatchEnd()
  }

  send(data: Uint8Array, segmentSize: number, to: SocketAddress, token: number): boolean {
    const socket = this.socket
    if (socket === null) throw new StoqClosedError('UDP socket')
    const host = toWireHost(to, this.v6)
    const c = this.counters
    if (segmentSize >= data.length) {
      this.pushToken(token, 1)
      socket.send(data, to.port, host, this.onSent)
      c.sendCalls++
      c.packetsSent++
      c.bytesSent += data.length
    } else {
      // No GSO here: split the super-buffer into one send per segment.
      let n = 0
      for (let off = 0; off < data.length; off += segmentSize) n++
      this.pushToken(token, n)
      for (let off = 0; off < data.length; off += segmentSize) {
        const end = Math.min(off + segmentSize, data.length)
        socket.send(data.subarray(off, end), to.port, host, this.onSent)
        c.sendCalls++
        c.packetsSent++
        c.bytesSent += end - off
      }
    }
    if (this.count >= this.highWater) {
      this.wantDrain = true
      return false
    }
    return true
  }

  /**
   * Each queued send holds one FIFO slot; a super-buffer split into n sends
   * holds n slots and its token is reported when the last one completes
   * (slots other than the last carry -1).
   */
  private pushToken(token: number, n: number): void {
    if (this.count + n > this.tokens.length) {
      let size = this.tokens.length
      while (size < this.count + n) size *= 2
      const next = new Float64Array(size)
      for (let i = 0; i < this.count; i++) next[i] = this.tokens[(this.head + i) % this.tokens.length]!
      this.tokens = next
      this.head = 0
    }
    const cap = this.tokens.length
    for (let i = 0; i < n; i++) {
      this.tokens[(this.head + this.count) % cap] = i === n - 1 ? token : -1
      this.count++
    }
  }

  private readonly onSent = (err: Error | null): void => {
    if (this.count === 0) return // already reported by close()
    const token = this.tokens[this.head]!
    this.head = (this.head + 1) % this.tokens.length
    this.count--
    if (err) {
      // A UDP send error (e.g. ICMP unreachable reported as ECONNREFUSED) loses
      // one datagram; QUIC's loss recovery covers it.
      this.counters.sendErrors++
    }
    if (token >= 0) this.receiver?.onSendComplete(token)
    if (this.wantDrain && this.count <= this.lowWater) {
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
    while (this.count > 0) {
      const token = this.tokens[this.head]!
      this.head = (this.head + 1) % this.tokens.length
      this.count--
      if (token >= 0) this.receiver?.onSendComplete(token)
    }
    this.receiver = null
  }
}

/** Factory for the portable backend. */
export function dgramUdpIo(options: Partial<DgramUdpIoOptions> = {}): () => UdpIo {
  return () => new DgramUdpIo(options)
}
