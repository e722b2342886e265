/**
 * The stand-ins the PacketBatcher suite surrounds a batcher with: a scripted
 * QuicEngine, a UdpIo that records every send in memory, and a fixed-size pool.
 */
import {
  StoqClosedError,
  StoqPoolExhaustedError,
  StoqPoolMisuseError,
  type BufferPool,
  type BufferPoolStats,
  type QuicEngine,
  type SocketAddress,
  type TransmitBatch,
  type UdpBindOptions,
  type UdpIo,
  type UdpIoStats,
  type UdpReceiver,
} from '@stoq/interface'
import { addressKey, prng } from '../tools/util.js'

/** Bytes every scripted packet starts with: its id (u32) and its size (u16), little-endian. */
export const PACKET_HEADER_BYTES = 6

/** One packet the fake engine will produce. */
export interface ScriptedPacket {
  readonly peer: SocketAddress
  readonly size: number
}

/** What a datagram found in a send decodes to. */
export interface DecodedPacket {
  /** Position in the engine's script, -1 when the bytes are not a scripted packet. */
  id: number
  size: number
  peer: string
  /** Header and every content byte as the engine wrote them. */
  intact: boolean
}

function contentByte(id: number, i: number): number {
  return (id * 7 + i * 13 + (i >> 7)) & 0xff
}

/** Write packet `id` of `size` bytes at `offset`. */
export function writePacket(buffer: Uint8Array, offset: number, id: number, size: number): void {
  buffer[offset] = id & 0xff
  buffer[offset + 1] = (id >>> 8) & 0xff
  buffer[offset + 2] = (id >>> 16) & 0xff
  buffer[offset + 3] = (id >>> 24) & 0xff
  buffer[offset + 4] = size & 0xff
  buffer[offset + 5] = (size >>> 8) & 0xff
  for (let i = PACKET_HEADER_BYTES; i < size; i++) buffer[offset + i] = contentByte(id, i)
}

/** Decode one datagram written by `writePacket`. */
export function decodePacket(datagram: Uint8Array, peer: SocketAddress): DecodedPacket {
  const key = addressKey(peer)
  if (datagram.length < PACKET_HEADER_BYTES) return { id: -1, size: datagram.length, peer: key, intact: false }
  const id = (datagram[0]! | (datagram[1]! << 8) | (datagram[2]! << 16) | (datagram[3]! << 24)) >>> 0
  const size = datagram[4]! | (datagram[5]! << 8)
  let intact = size === datagram.length
  for (let i = PACKET_HEADER_BYTES; intact && i < size; i++) intact = datagram[i] === contentByte(id, i)
  return { id, size: datagram.length, peer: key, intact }
}

function unused(method: string): never {
  throw new Error(`FakeQuicEngine.${method}() was called: a PacketBatcher only needs maxPacketSize and pollTransmit`)
}

/**
 * A QuicEngine that produces a scripted sequence of packets, one peer per
 * batch, and checks how `pollTransmit` is called. Every other method throws.
 */
export class FakeQuicEngine implements QuicEngine {
  readonly specificationVersion = 'v1' as const
  readonly name = 'fake'
  /** Contract breaches seen by the engine (empty when the batcher behaved). */
  readonly violations: string[] = []
  pollCalls = 0
  /** Called at the start of every pollTransmit, so that a test can check the socket's state. */
  onPoll: () => void = () => undefined
  private readonly queue: ScriptedPacket[] = []
  private next = 0

  constructor(readonly maxPacketSize: number) {}

  /** Add packets to produce (ids continue from the previous ones). */
  enqueue(packets: readonly ScriptedPacket[]): void {
    for (const packet of packets) {
      if (!Number.isInteger(packet.size) || packet.size < PACKET_HEADER_BYTES || packet.size > this.maxPacketSize) {
        throw new Error(`scripted packet of ${packet.size} bytes: expected ${PACKET_HEADER_BYTES}..${this.maxPacketSize}`)
      }
      this.queue.push(packet)
    }
  }

  /** Drop what is not produced yet: pollTransmit reports nothing more. */
  halt(): void {
    this.queue.length = this.next
  }

  /** Every packet enqueued so far, by id. */
  get script(): readonly ScriptedPacket[] {
    return this.queue
  }

  /** Packets produced so far. */
  get produced(): number {
    return this.next
  }

  get remaining(): number {
    return this.queue.length - this.next
  }

  pollTransmit(batch: TransmitBatch, maxPackets: number): boolean {
    this.pollCalls++
    this.onPoll()
    if (!Number.isInteger(maxPackets) || maxPackets < 1 || maxPackets > batch.lengths.length) {
      this.violations.push(`pollTransmit(maxPackets = ${maxPackets}) with a lengths array of ${batch.lengths.length}`)
      return false
    }
    if (batch.buffer.length < this.maxPacketSize) {
      this.violations.push(`pollTransmit with a ${batch.buffer.length}-byte buffer, below maxPacketSize ${this.maxPacketSize}`)
      return false
    }
    if (this.next >= this.queue.length) return false
    const peer = this.queue[this.next]!.peer
    const key = addressKey(peer)
    let count = 0
    let offset = 0
    while (count < maxPackets && this.next < this.queue.length) {
      const packet = this.queue[this.next]!
      if (addressKey(packet.peer) !== key || offset + packet.size > batch.buffer.length) break
      writePacket(batch.buffer, offset, this.next, packet.size)
      batch.lengths[count++] = packet.size
      offset += packet.size
      this.next++
    }
    batch.count = count
    batch.bytes = offset
    batch.peer = peer
    return true
  }

  listen(): void {
    unused('listen')
  }
  stopListening(): void {
    unused('stopListening')
  }
  receive(): void {
    unused('receive')
  }
  nextTimeout(): number {
    return unused('nextTimeout')
  }
  handleTimeout(): void {
    unused('handleTimeout')
  }
  drainEvents(): void {
    unused('drainEvents')
  }
  connect(): number {
    return unused('connect')
  }
  close(): void {
    unused('close')
  }
  setKeepAlive(): void {
    unused('setKeepAlive')
  }
  openStream(): number {
    return unused('openStream')
  }
  streamSend(): number {
    return unused('streamSend')
  }
  streamRecv(): boolean {
    return unused('streamRecv')
  }
  streamCapacity(): number {
    return unused('streamCapacity')
  }
  streamWantWritable(): void {
    unused('streamWantWritable')
  }
  streamComplete(): boolean {
    return unused('streamComplete')
  }
  streamStopCode(): number {
    return unused('streamStopCode')
  }
  streamShutdown(): void {
    unused('streamShutdown')
  }
  streamPriority(): void {
    unused('streamPriority')
  }
  datagramSend(): boolean {
    return unused('datagramSend')
  }
  datagramRecv(): number {
    return unused('datagramRecv')
  }
  datagramMaxSize(): number {
    return unused('datagramMaxSize')
  }
  isEstablished(): boolean {
    return unused('isEstablished')
  }
  alpn(): string {
    return unused('alpn')
  }
  serverName(): string | null {
    return unused('serverName')
  }
  peerCertificates(): Uint8Array[] | null {
    return unused('peerCertificates')
  }
  stats(): never {
    return unused('stats')
  }
  peerAddress(): SocketAddress {
    return unused('peerAddress')
  }
  get connectionCount(): number {
    return unused('connectionCount')
  }
  destroy(): void {
    unused('destroy')
  }
}

export interface RecordingUdpIoOptions {
  maxSegments: number
  /** `send()` returns false once this many sends are pending (default: never). */
  highWater: number
  /** After a false, `onDrain` fires once pending sends fall to this many. */
  lowWater: number
  /** `auto`: pending sends complete on the next event-loop turn; `manual`: only `complete()` completes them. */
  completion: 'auto' | 'manual'
  /** Order in which pending sends complete. */
  order: 'fifo' | 'shuffled'
}

/** One `send()` as the recording socket saw it. */
export interface RecordedSend {
  /** Copy of the data at the time of the call. */
  readonly data: Uint8Array
  readonly segmentSize: number
  readonly to: SocketAddress
  readonly token: number
  /** What `send()` returned. */
  readonly accepted: boolean
  completed: boolean
}

interface PendingSend {
  record: RecordedSend
  /** The caller's memory, which must not change until the send completes. */
  view: Uint8Array
}

const UDP_MAX_PAYLOAD = 65_507

/**
 * A UdpIo that sends nothing: it records a copy of each send, completes sends
 * asynchronously (or when told), can report backpressure, and checks that the
 * caller leaves a send's memory alone until its completion.
 */
export class RecordingUdpIo implements UdpIo {
  readonly specificationVersion = 'v1' as const
  readonly backend = 'recording'
  readonly maxSegments: number
  readonly sends: RecordedSend[] = []
  /** Contract breaches by the caller (empty when it behaved). */
  readonly violations: string[] = []
  /** True from a `send()` that returned false until pending sends fall to `lowWater`. */
  full = false
  drains = 0
  private readonly options: RecordingUdpIoOptions
  private readonly pending: PendingSend[] = []
  private readonly random = prng(0x5eed)
  private receiver: UdpReceiver | null = null
  private local: SocketAddress | null = null
  private scheduled = false
  private closed = false
  private readonly counters = { sendCalls: 0, packetsSent: 0, bytesSent: 0 }

  constructor(options: Partial<RecordingUdpIoOptions> = {}) {
    this.options = { maxSegments: 1, highWater: Infinity, lowWater: 0, completion: 'auto', order: 'fifo', ...options }
    this.maxSegments = this.options.maxSegments
  }

  get pendingSends(): number {
    return this.pending.length
  }

  get localAddress(): SocketAddress | null {
    return this.local
  }

  bind(options: UdpBindOptions, receiver: UdpReceiver): Promise<SocketAddress> {
    this.receiver = receiver
    this.local = { address: options.host, port: options.port || 4433, family: options.host.includes(':') ? 'IPv6' : 'IPv4' }
    return Promise.resolve(this.local)
  }

  send(data: Uint8Array, segmentSize: number, to: SocketAddress, token: number): boolean {
    if (this.closed) throw new StoqClosedError('recording UDP socket')
    const n = this.sends.length
    if (!(data instanceof Uint8Array) || data.length === 0 || data.length > UDP_MAX_PAYLOAD * this.maxSegments) {
      this.violations.push(`send ${n}: data of ${String(data?.length)} bytes`)
    }
    if (!Number.isInteger(segmentSize) || segmentSize < 1) this.violations.push(`send ${n}: segmentSize ${segmentSize}`)
    const record: RecordedSend = {
      data: new Uint8Array(data),
      segmentSize,
      to: { address: to.address, port: to.port, family: to.family },
      token,
      accepted: this.pending.length + 1 < this.options.highWater,
      completed: false,
    }
    this.sends.push(record)
    this.pending.push({ record, view: data })
    this.counters.sendCalls++
    this.counters.packetsSent += segmentSize >= 1 ? Math.ceil(data.length / segmentSize) : 1
    this.counters.bytesSent += data.length
    if (this.options.completion === 'auto' && !this.scheduled) {
      this.scheduled = true
      setImmediate(this.autoComplete)
    }
    if (!record.accepted) this.full = true
    return record.accepted
  }

  private readonly autoComplete = (): void => {
    this.scheduled = false
    this.complete()
  }

  /** Complete up to `limit` of the sends pending now (in the configured order); returns how many. */
  complete(limit = Infinity): number {
    const now = this.pending.slice()
    if (this.options.order === 'shuffled') {
      for (let i = now.length - 1; i > 0; i--) {
        const j = Math.floor(this.random() * (i + 1))
        ;[now[i], now[j]] = [now[j]!, now[i]!]
      }
    }
    let done = 0
    for (const entry of now) {
      if (done >= limit || this.closed) break
      this.finish(entry)
      done++
    }
    return done
  }

  private finish(entry: PendingSend): void {
    this.pending.splice(this.pending.indexOf(entry), 1)
    const { record, view } = entry
    const n = this.sends.indexOf(record)
    if (view.length !== record.data.length || view.some((byte, i) => byte !== record.data[i])) {
      this.violations.push(`send ${n} (token ${record.token}): its data changed before the send completed`)
    }
    record.completed = true
    const drain = this.full && this.pending.length <= this.options.lowWater
    if (drain) this.full = false
    this.receiver?.onSendComplete(record.token)
    // Unless the completion itself refilled the queue.
    if (drain && !this.full) {
      this.drains++
      this.receiver?.onDrain()
    }
  }

  stats(): UdpIoStats {
    return {
      backend: this.backend,
      ...this.counters,
      receiveCalls: 0,
      packetsReceived: 0,
      bytesReceived: 0,
      sendErrors: 0,
      sendBufferSize: 0,
      receiveBufferSize: 0,
    }
  }

  close(): Promise<void> {
    if (!this.closed) {
      // Report what is still pending, as a real backend does, then refuse sends.
      for (const entry of this.pending.slice()) this.finish(entry)
      this.closed = true
    }
    return Promise.resolve()
  }
}

/**
 * A fixed-size pool that never grows (tryAcquire returns -1 when empty) and
 * throws on any misuse: the suite's default when the caller brings no pool.
 */
export function createFixedPool(capacity: number, bufferSize: number): BufferPool {
  const memory = new ArrayBuffer(capacity * bufferSize)
  const views = Array.from({ length: capacity }, (_, i) => new Uint8Array(memory, i * bufferSize, bufferSize))
  const free = Array.from({ length: capacity }, (_, i) => capacity - 1 - i)
  const inUse = new Uint8Array(capacity)
  const counters = { hits: 0, misses: 0, highWaterMark: 0 }
  let closed = false
  const open = (): void => {
    if (closed) throw new StoqClosedError('fixed pool')
  }
  const owned = (index: number): void => {
    if (!Number.isInteger(index) || index < 0 || index >= capacity || inUse[index] !== 1) {
      throw new StoqPoolMisuseError(index, `buffer ${index} is not in use (released twice, or never acquired)`)
    }
  }
  const tryAcquire = (): number => {
    open()
    const index = free.pop()
    if (index === undefined) {
      counters.misses++
      return -1
    }
    inUse[index] = 1
    counters.hits++
    counters.highWaterMark = Math.max(counters.highWaterMark, capacity - free.length)
    return index
  }
  return {
    specificationVersion: 'v1',
    bufferSize,
    acquire() {
      const index = tryAcquire()
      if (index < 0) throw new StoqPoolExhaustedError(capacity)
      return index
    },
    tryAcquire,
    release(index) {
      open()
      owned(index)
      inUse[index] = 0
      free.push(index)
    },
    view(index) {
      open()
      owned(index)
      return views[index]!
    },
    stats(): BufferPoolStats {
      open()
      return { ...counters, inUse: capacity - free.length, capacity, bufferSize }
    },
    close() {
      closed = true
    },
  }
}
