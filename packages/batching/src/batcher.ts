import {
  StoqInvalidArgumentError,
  type PacketBatcher,
  type PacketBatcherComponents,
  type PacketBatcherOptions,
  type PacketBatcherStats,
  type TransmitBatch,
  checkOptions,
  describeValue,
  integerOption,
  optionKeys,
} from '@stoq/interface'
import { DEFAULT_FLUSH_DEADLINE_US, DEFAULT_MAX_BATCHES_PER_FLUSH, DEFAULT_MAX_PACKETS_PER_BATCH, DEFAULT_MAX_SUPER_BUFFER_BYTES } from './defaults.js'

export interface BatcherOptions extends PacketBatcherOptions {
  /** Batches sent per `flush()` before the rest is deferred to the next event-loop turn. */
  maxBatchesPerFlush: number
  /**
   * Deadline of one `flush()` in microseconds: past it, the rest is deferred to the next
   * event-loop turn (checked between batches, so one batch may overrun it).
   */
  flushDeadlineUs: number
}

/** Send tokens of transmit slots start here (pool buffer indices are far below). */
const SLOT_TOKEN = 2 ** 31

/**
 * Pulls packet batches from the engine into pool buffers and hands them to the
 * socket: each run of equal-size packets becomes one send (a GSO super-buffer
 * when the socket can segment, else one datagram per packet inside the backend).
 * A pool buffer is released when the socket reports its last send complete.
 * Given the engine's transmit slots (`components.slots`), batches are built in
 * those instead, and a slot is free again when its last send completed.
 */
class DefaultPacketBatcher implements PacketBatcher {
  readonly specificationVersion = 'v1' as const
  private readonly c: PacketBatcherComponents
  private readonly maxPackets: number
  private readonly maxBatches: number
  private readonly deadlineMs: number
  private readonly lengths: Uint32Array
  private readonly batch: TransmitBatch
  /** Outstanding sends per pool buffer (index → count). */
  private readonly pending = new Map<number, number>()
  /** The socket queue is full: wait for onDrain. */
  private isBlocked = false
  /** The pool had no free buffer at the last flush. */
  private waitingForBuffer = false
  private deferred = false
  private closed = false
  private readonly counters = { packets: 0, syscalls: 0, flushes: 0, deadlineDeferrals: 0 }
  /** Free transmit slots (slot mode), or null when batches go into pool buffers. */
  private freeSlots: number[] | null = null

  constructor(components: PacketBatcherComponents, options: BatcherOptions) {
    this.c = components
    const packetSize = components.engine.maxPacketSize
    /** Bytes one batch may take: its buffer (a pool buffer or a slot) must hold them. */
    const batchBytes = Math.min(options.maxSuperBufferBytes, components.pool.bufferSize)
    const byBytes = Math.max(1, Math.floor(batchBytes / packetSize))
    this.maxPackets = Math.max(1, Math.min(options.maxPacketsPerBatch, byBytes, components.io.maxSegments > 1 ? components.io.maxSegments : byBytes))
    if (components.pool.bufferSize < packetSize) {
      throw new StoqInvalidArgumentError('pool.bufferSize', `pool buffers of ${components.pool.bufferSize} bytes cannot hold one ${packetSize}-byte packet`)
    }
    if (components.slots !== undefined) {
      const slots = components.slots
      if (!Array.isArray(slots) || slots.length === 0 || !slots.every((v) => v instanceof Uint8Array && v.length >= packetSize)) {
        throw new StoqInvalidArgumentError(
          'components.slots',
          `expected a non-empty array of Uint8Array of at least ${packetSize} bytes (one packet), got ${describeValue(slots)}`,
        )
      }
      if (slots.some((v) => v.length < batchBytes)) {
        throw new StoqInvalidArgumentError('components.slots', `every slot must hold a batch: at least ${batchBytes} bytes`)
      }
      this.freeSlots = slots.map((_, i) => i).reverse()
    }
    this.maxBatches = options.maxBatchesPerFlush
    this.deadlineMs = options.flushDeadlineUs / 1000
    this.lengths = new Uint32Array(this.maxPackets)
    this.batch = { buffer: new Uint8Array(0), lengths: this.lengths, count: 0, bytes: 0, peer: null }
  }

  get blocked(): boolean {
    return this.isBlocked || this.waitingForBuffer
  }

  flush(): void {
    if (this.isBlocked || this.closed) return
    const { engine, io, pool } = this.c
    const batch = this.batch
    const maxRun = Math.max(1, io.maxSegments)
    const started = performance.now()
    let batches = 0
    while (batches < this.maxBatches) {
      if (batches > 0 && performance.now() - started > this.deadlineMs) {
        this.counters.deadlineDeferrals++
        break
      }
      const slots = this.freeSlots
      const index = slots !== null ? (slots.length > 0 ? SLOT_TOKEN + slots.pop()! : -1) : pool.tryAcquire()
      if (index < 0) {
        // No free buffer (ours wait for the socket, or others hold the pool):
        // retry when one of ours comes back, and on the next flush anyway.
        this.waitingForBuffer = true
        return
      }
      this.waitingForBuffer = false
      if (slots !== null) batch.slot = index - SLOT_TOKEN
      else batch.buffer = pool.view(index)
      batch.count = 0
      batch.bytes = 0
      batch.peer = null
      if (!engine.pollTransmit(batch, this.maxPackets) || batch.count === 0 || batch.peer === null) {
        this.giveBack(index)
        if (batch.slot === -1) {
          // The engine's slots stopped working: pool buffers from now on.
          this.freeSlots = null
          delete batch.slot
          continue
        }
        return
      }
      batches++
      this.counters.flushes++
      this.counters.packets += batch.count
      this.pending.set(index, 1) // guard until every send of this batch is issued
      let ok = true
      try {
        ok = this.sendRuns(index, maxRun)
      } finally {
        this.onSendComplete(index) // drop the guard, even if a send threw
      }
      if (!ok) {
        this.isBlocked = true
        return
      }
    }
    this.defer()
  }

  /**
   * Send the batch as runs of equal-size packets (the last of a run may be
   * shorter), at most `maxRun` packets per send. Returns false on backpressure.
   */
  private sendRuns(index: number, maxRun: number): boolean {
    const { io } = this.c
    const batch = this.batch
    const lengths = this.lengths
    const peer = batch.peer!
    let ok = true
    let runStart = 0
    let offset = 0
    while (runStart < batch.count) {
      const seg = lengths[runStart]!
      const limit = Math.min(batch.count, runStart + maxRun)
      let runEnd = runStart + 1
      let runBytes = seg
      while (runEnd < limit && lengths[runEnd] === seg) {
        runBytes += seg
        runEnd++
      }
      if (runEnd < limit && lengths[runEnd]! < seg) {
        runBytes += lengths[runEnd]!
        runEnd++
      }
      this.pending.set(index, this.pending.get(index)! + 1)
      this.counters.syscalls++
      ok = io.send(batch.buffer.subarray(offset, offset + runBytes), seg, peer, index) && ok
      offset += runBytes
      runStart = runEnd
    }
    return ok
  }

  private defer(): void {
    if (!this.deferred) {
      this.deferred = true
      setImmediate(this.resume)
    }
  }

  private readonly resume = (): void => {
    this.deferred = false
    this.flush()
  }

  close(): void {
    this.closed = true
  }

  onSendComplete(token: number): void {
    const n = this.pending.get(token)
    if (n === undefined) return
    if (n <= 1) {
      this.pending.delete(token)
      this.giveBack(token)
      if (this.isBlocked && this.c.io.pendingSends === 0) this.onDrain()
      else if (this.waitingForBuffer) this.defer()
    } else {
      this.pending.set(token, n - 1)
    }
  }

  /** A pool buffer or transmit slot (by its send token) is free again. */
  private giveBack(token: number): void {
    if (token < SLOT_TOKEN) this.c.pool.release(token)
    else if (this.freeSlots !== null) this.freeSlots.push(token - SLOT_TOKEN)
  }

  onDrain(): void {
    if (!this.isBlocked || this.closed) return
    this.isBlocked = false
    this.flush()
  }

  stats(): PacketBatcherStats & { deadlineDeferrals: number } {
    const { packets, syscalls, flushes, deadlineDeferrals } = this.counters
    return { packets, syscalls, syscallsSaved: packets - syscalls, flushes, deadlineDeferrals }
  }
}

const describe = describeValue

function positiveInt(name: string, value: unknown, max: number): number {
  return integerOption(name, value, 1, max)
}

/** Every key `batching()` accepts. */
const OPTION_KEYS = optionKeys<BatcherOptions>({ maxPacketsPerBatch: true, maxSuperBufferBytes: true, maxBatchesPerFlush: true, flushDeadlineUs: true })

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !ArrayBuffer.isView(value)
}

function requireMethods(name: string, value: unknown, methods: readonly string[]): void {
  if (!isObject(value)) throw new StoqInvalidArgumentError(name, `expected an object, got ${describe(value)}`)
  for (const m of methods) {
    if (typeof value[m] !== 'function') throw new StoqInvalidArgumentError(`${name}.${m}`, `expected a function, got ${describe(value[m])}`)
  }
}

/**
 * Check the components once, when the batcher is built: the hot path then trusts them.
 * A wrong engine, socket or pool is refused with a typed error instead of a TypeError
 * on the first flush.
 */
function checkComponents(components: unknown): PacketBatcherComponents {
  if (!isObject(components)) throw new StoqInvalidArgumentError('components', `expected { engine, io, pool }, got ${describe(components)}`)
  const { engine, io, pool } = components
  requireMethods('components.engine', engine, ['pollTransmit'])
  requireMethods('components.io', io, ['send'])
  requireMethods('components.pool', pool, ['tryAcquire', 'view', 'release'])
  positiveInt('components.engine.maxPacketSize', (engine as Record<string, unknown>).maxPacketSize, 65535)
  positiveInt('components.pool.bufferSize', (pool as Record<string, unknown>).bufferSize, 2 ** 31 - 1)
  const maxSegments = (io as Record<string, unknown>).maxSegments
  if (typeof maxSegments !== 'number' || !Number.isInteger(maxSegments) || maxSegments < 0 || maxSegments > 65535) {
    throw new StoqInvalidArgumentError('components.io.maxSegments', `expected an integer from 0 to 65535, got ${describe(maxSegments)}`)
  }
  return components as unknown as PacketBatcherComponents
}

/** Factory: `batching(options)(components)`. */
export function batching(options: Partial<BatcherOptions> = {}): (components: PacketBatcherComponents) => PacketBatcher {
  checkOptions(options, OPTION_KEYS)
  const resolved: BatcherOptions = {
    maxPacketsPerBatch: positiveInt('maxPacketsPerBatch', options.maxPacketsPerBatch ?? DEFAULT_MAX_PACKETS_PER_BATCH, 512),
    maxSuperBufferBytes: positiveInt('maxSuperBufferBytes', options.maxSuperBufferBytes ?? DEFAULT_MAX_SUPER_BUFFER_BYTES, 65535),
    maxBatchesPerFlush: positiveInt('maxBatchesPerFlush', options.maxBatchesPerFlush ?? DEFAULT_MAX_BATCHES_PER_FLUSH, 1 << 20),
    flushDeadlineUs: positiveInt('flushDeadlineUs', options.flushDeadlineUs ?? DEFAULT_FLUSH_DEADLINE_US, 10_000_000),
  }
  return (components) => new DefaultPacketBatcher(checkComponents(components), resolved)
}
