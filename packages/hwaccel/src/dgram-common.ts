import type dgram from 'node:dgram'
import { StoqInvalidArgumentError, StoqSocketError, StoqUnsupportedError, type UdpBindOptions, type UdpReceiver } from '@stoq/interface'
import { DEFAULT_SEND_QUEUE_HIGH_WATER, DEFAULT_SEND_QUEUE_LOW_WATER } from './defaults.js'
import { toSocketAddress } from './address.js'

/**
 * Tokens of the sends a dgram socket has not completed yet, in order: libuv
 * completes a socket's sends in the order they were issued. A super-buffer
 * split into n writes holds n slots; only the last carries the caller's token
 * (the others hold -1), so the token is reported when its last write is done.
 */
export class SendTokenFifo {
  private slots = new Float64Array(1024)
  private head = 0
  private count = 0

  get size(): number {
    return this.count
  }

  push(token: number, writes: number): void {
    if (this.count + writes > this.slots.length) {
      let size = this.slots.length
      while (size < this.count + writes) size *= 2
      const next = new Float64Array(size)
      for (let i = 0; i < this.count; i++) next[i] = this.slots[(this.head + i) % this.slots.length]!
      this.slots = next
      this.head = 0
    }
    const cap = this.slots.length
    for (let i = 0; i < writes; i++) {
      this.slots[(this.head + this.count) % cap] = i === writes - 1 ? token : -1
      this.count++
    }
  }

  /** The oldest slot: a caller token, or -1 for a non-final write. Call only when `size > 0`. */
  shift(): number {
    const token = this.slots[this.head]!
    this.head = (this.head + 1) % this.slots.length
    this.count--
    return token
  }

  /** Empty the FIFO, reporting every caller token (sends cancelled by a close). */
  drain(report: (token: number) => void): void {
    while (this.count > 0) {
      const token = this.shift()
      if (token >= 0) report(token)
    }
  }
}

export interface ReceiveCounters {
  receiveCalls: number
  packetsReceived: number
  bytesReceived: number
}

/**
 * The receive side shared by the dgram-based backends: one `onPacket` per
 * datagram, and one `onBatchEnd` per read burst. Node reads up to 32 datagrams
 * per socket readiness in the poll phase; the check phase (setImmediate) runs
 * right after, so one batch end covers all of them.
 */
export class DgramReceivePump {
  private scheduled = false

  constructor(
    private readonly counters: ReceiveCounters,
    private readonly receiver: () => UdpReceiver | null,
  ) {}

  readonly onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    const c = this.counters
    c.receiveCalls++
    c.packetsReceived++
    c.bytesReceived += msg.length
    // rinfo is a fresh object from Node for every datagram; present it unmapped.
    this.receiver()?.onPacket(msg, msg.length, toSocketAddress(rinfo.address, rinfo.port))
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.endBatch)
    }
  }

  private readonly endBatch = (): void => {
    this.scheduled = false
    this.receiver()?.onBatchEnd()
  }
}

/** Counters every dgram-based backend keeps (a plain object: updates are number writes). */
export function dgramCounters(): ReceiveCounters & { sendCalls: number; packetsSent: number; bytesSent: number; sendErrors: number } {
  return { sendCalls: 0, packetsSent: 0, bytesSent: 0, receiveCalls: 0, packetsReceived: 0, bytesReceived: 0, sendErrors: 0 }
}

/** Validated send-queue marks: pause above `high`, resume at or below `low`. */
export function sendQueueMarks(options: { sendQueueHighWater?: number; sendQueueLowWater?: number }): { high: number; low: number } {
  const high = options.sendQueueHighWater ?? DEFAULT_SEND_QUEUE_HIGH_WATER
  const low = options.sendQueueLowWater ?? DEFAULT_SEND_QUEUE_LOW_WATER
  if (!Number.isInteger(high) || high < 1) {
    throw new StoqInvalidArgumentError('sendQueueHighWater', 'expected a positive integer')
  }
  if (!Number.isInteger(low) || low < 0 || low >= high) {
    throw new StoqInvalidArgumentError('sendQueueLowWater', 'expected an integer from 0 to sendQueueHighWater - 1')
  }
  return { high, low }
}

/** `UdpBindOptions.reusePort` as a boolean; anything but a boolean or undefined is STOQ_ERR_INVALID_ARGUMENT. */
export function wantsReusePort(options: UdpBindOptions): boolean {
  const value = options.reusePort
  if (value === undefined) return false
  if (typeof value !== 'boolean') throw new StoqInvalidArgumentError('reusePort', `expected a boolean, got ${typeof value}`)
  return value
}

/**
 * The dgram-based backends cannot honour `reusePort`: Node 20's `dgram` has no
 * way to set SO_REUSEPORT before bind (its `reuseAddr` is SO_REUSEADDR, and
 * setting the option on the fd after bind does not let a second socket join).
 * Throws STOQ_ERR_UNSUPPORTED when it is asked for, so it is never silently ignored.
 */
export function refuseReusePort(options: UdpBindOptions, feature: string, label: string): void {
  if (!wantsReusePort(options)) return
  throw new StoqUnsupportedError(
    feature,
    `${label} cannot bind with reusePort: Node ${process.versions.node}'s dgram cannot set SO_REUSEPORT before bind; ` +
      'use a koffi worker backend (gro or uring) for a reuseport group',
  )
}

/** Bind a dgram socket; a failure closes it and rejects with STOQ_ERR_SOCKET. */
export function bindDgramSocket(socket: dgram.Socket, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      socket.close()
      reject(
        new StoqSocketError(`Cannot bind UDP socket to ${host} port ${port}: ${err.message}`, {
          syscall: err.syscall ?? 'bind',
          errno: err.code ?? '',
        }),
      )
    }
    socket.once('error', onError)
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off('error', onError)
      resolve()
    })
  })
}
