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

const MAPPED = '::ffff:'

function toAddress(address: string, port: number): SocketAddress {
  if (address.startsWith(MAPPED) && net.isIPv4(address.slice(MAPPED.length))) {
    return { address: address.slice(MAPPED.length), port, family: 'IPv4' }
  }
  return { address, port, family: net.isIPv6(address) ? 'IPv6' : 'IPv4' }
}

/**
 * The simplest UdpIo the contract allows (node:dgram, one datagram per send, no
 * pacing), to check that the suite asks no more. Not tuned for speed.
 */
export class ReferenceUdpIo implements UdpIo {
  readonly specificationVersion = 'v1' as const
  readonly backend = 'reference'
  readonly maxSegments = 1
  localAddress: SocketAddress | null = null
  private socket: dgram.Socket | null = null
  private receiver: UdpReceiver | null = null
  private closed = false
  private v6 = false
  private batchEndDue = false
  /** One entry per datagram handed to dgram: the token to report after it, or null. */
  private readonly queue: (number | null)[] = []
  private readonly counters = {
    sendCalls: 0,
    packetsSent: 0,
    bytesSent: 0,
    receiveCalls: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    sendErrors: 0,
  }

  get pendingSends(): number {
    return this.queue.filter((t) => t !== null).length
  }

  async bind(options: UdpBindOptions, receiver: UdpReceiver): Promise<SocketAddress> {
    if (this.closed) throw new StoqClosedError('UDP socket')
    const family = net.isIP(options.host)
    if (family === 0) throw new StoqInvalidArgumentError('host', `expected an IP literal, got ${JSON.stringify(options.host)}`)
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      throw new StoqInvalidArgumentError('port', `expected an integer from 0 to 65535, got ${options.port}`)
    }
    this.v6 = family === 6
    const socket = dgram.createSocket({ type: this.v6 ? 'udp6' : 'udp4', ipv6Only: this.v6 && options.ipv6Only })
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err) => {
        socket.close()
        reject(new StoqSocketError(`Cannot bind ${options.host} port ${options.port}: ${err.message}`))
      })
      socket.bind({ address: options.host, port: options.port, exclusive: true }, () => resolve())
    })
    if (this.closed) {
      socket.close()
      throw new StoqClosedError('UDP socket')
    }
    socket.removeAllListeners('error')
    socket.on('error', (err) => this.receiver?.onError(err))
    socket.on('message', (msg, rinfo) => {
      this.counters.receiveCalls++
      this.counters.packetsReceived++
      this.counters.bytesReceived += msg.length
      this.receiver?.onPacket(msg, msg.length, toAddress(rinfo.address, rinfo.port))
      if (!this.batchEndDue) {
        this.batchEndDue = true
        setImmediate(() => {
          this.batchEndDue = false
          this.receiver?.onBatchEnd()
        })
      }
    })
    this.socket = socket
    this.receiver = receiver
    const { address, port } = socket.address()
    this.localAddress = toAddress(address, port)
    return this.localAddress
  }

  send(data: Uint8Array, segmentSize: number, to: SocketAddress, token: number): boolean {
    const socket = this.socket
    if (socket === null) throw new StoqClosedError('UDP socket')
    const host = this.v6 && to.family === 'IPv4' ? MAPPED + to.address : to.address
    const step = Math.min(segmentSize, data.length)
    for (let off = 0; off < data.length; off += step) {
      const end = Math.min(off + step, data.length)
      this.queue.push(end === data.length ? token : null)
      this.counters.sendCalls++
      this.counters.packetsSent++
      this.counters.bytesSent += end - off
      socket.send(data.subarray(off, end), to.port, host, (err) => {
        if (this.queue.length === 0) return // reported by close()
        const done = this.queue.shift()!
        if (err) this.counters.sendErrors++
        if (done !== null) this.receiver?.onSendComplete(done)
      })
    }
    return true
  }

  stats(): UdpIoStats {
    const sizes = { sendBufferSize: 0, receiveBufferSize: 0 }
    if (this.socket) {
      sizes.sendBufferSize = this.socket.getSendBufferSize()
      sizes.receiveBufferSize = this.socket.getRecvBufferSize()
    }
    return { backend: this.backend, ...this.counters, ...sizes }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    const socket = this.socket
    this.socket = null
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()))
    for (const token of this.queue.splice(0)) if (token !== null) this.receiver?.onSendComplete(token)
    this.receiver = null
  }
}
