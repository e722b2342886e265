import {
  StoqInvalidArgumentError,
  type PacketBatcher,
  type PacketBatcherComponents,
  type PacketBatcherOptions,
  type PacketBatcherStats,
  type TransmitBatch,
} from '@stoq/interface'
import {
  DEFAULT_MAX_BATCHES_PER_FLUSH,
  DEFAULT_MAX_PACKETS_PER_BATCH,
  DEFAULT_MAX_SUPER_BUFFER_BYTES,
} from './defaults.js'

export interface BatcherOptions extends PacketBatcherOptions {
  /** Batches sent per `flush()` before the rest is deferred to the next event-loop turn. */
  maxBatchesPerFlush: number
}

/**
 * Pulls packet batches from the engine into pool buffers and hands them to the
 * socket: each run of equal-size packets becomes one send (a GSO super-buffer
 * when the socket can segment, else one datagram per packet inside the backend).
 * A pool buffer is released when the socket reports its last send complete.
 */
class DefaultPacketBatcher implements PacketBatcher {
  readonly specificationVersion = 'v1' as const
  private readonly c: PacketBatcherComponents
  private readonly maxPackets: number
  private readonly maxBatches: number
  private readonly lengths: Uint32Array
  private readonly batch: TransmitBatch
  /** Outstanding sends per pool buffer (index → count). */
  private readonly pending = new Map<number, number>()
  private isBlocked = false
  private deferred = false
  private readonly counters = { packets: 0, syscalls: 0, flushes: 0 }

  constructor(components: PacketBatcherComponents, options: BatcherOptions) {
    this.c = components
    const packetSize = components.engine.maxPacketSize
    const byBytes = Math.max(1, Math.floor(Math.min(options.maxSuperBufferBytes, components.pool.bufferSize) / packetSize))
    this.maxPackets = Math.max(1, Math.min(options.maxPacketsPerBatch, byBytes, components.io.maxSegments > 1 ? components.io.maxSegments : byBytes))
    if (components.pool.bufferSize < packetSize) {
      throw new StoqInvalidArgumentError(
        'pool.bufferSize',
        `pool buffers of ${components.pool.bufferSize} bytes cannot hold one ${packetSize}-byte packet`,
      )
    }
    this.maxBatches = options.maxBatchesPerFlush
    this.lengths = new Uint32Array(this.maxPackets)
    this.batch = { buffer: new Uint8Array(0), lengths: this.lengths, count: 0, bytes: 0, peer: null }
  }

  get blocked(): boolean {
    return this.isBlocked
  }

  flush(): void {
    if (this.isBlocked) return
    const { engine, io, pool } = this.c
    const batch = this.batch
    let batches = 0
    while (batches < this.maxBatches) {
      const index = pool.tryAcquire()
      if (index < 0) {
        // Every buffer is waiting for the socket: wait for completions.
        this.isBlocked = true
        return
      }
      batch.buffer = pool.view(index)
      batch.count = 0
      batch.bytes = 0
      batch.peer = null
      if (!engine.pollTransmit(batch, this.maxPackets) || batch.count === 0 || batch.peer === null) {
        pool.release(index)
        return
      }
      batches++
      this.counters.flushes++
      this.counters.packets += batch.count
      // Split into runs of equal-size packets (the last of a run may be shorter).
      let sends = 0
      let runStart = 0
      let offset = 0
      let ok = true
      this.pending.set(index, 1) // guard until every send of this batch is issued
      while (runStart < batch.count) {
        const seg = this.lengths[runStart]!
        let runEnd = runStart + 1
        let runBytes = seg
        while (runEnd < batch.count && this.lengths[runEnd] === seg) {
          runBytes += seg
          runEnd++
        }
        if (runEnd < batch.count && this.lengths[runEnd]! < seg) {
          runBytes += this.lengths[runEnd]!
          runEnd++
        }
        const data = batch.buffer.subarray(offset, offset + runBytes)
        this.pending.set(index, this.pending.get(index)! + 1)
        ok = io.send(data, seg, batch.peer, index) && ok
        sends += io.maxSegments > 1 ? 1 : runEnd - runStart
        offset += runBytes
        runStart = runEnd
      }
      this.counters.syscalls += sends
      this.onSendComplete(index) // drop the guard
      if (!ok) {
        this.isBlocked = true
        return
      }
    }
    if (!this.deferred) {
      this.deferred = true
      setImmediate(this.resume)
    }
  }

  private readonly resume = (): void => {
    this.deferred = false
    this.flush()
  }

  onSendComplete(token: number): void {
    const n = this.pending.get(token)
    if (n === undefined) return
    if (n <= 1) {
      this.pending.delete(token)
      this.c.pool.release(token)
      if (this.isBlocked && this.c.io.pendingSends === 0) this.onDrain()
    } else {
      this.pending.set(token, n - 1)
    }
  }

  onDrain(): void {
    if (!this.isBlocked) return
    this.isBlocked = false
    this.flush()
  }

  stats(): PacketBatcherStats {
    const { packets, syscalls, flushes } = this.counters
    return { packets, syscalls, syscallsSaved: packets - syscalls, flushes }
  }
}

function positiveInt(name: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new StoqInvalidArgumentError(name, `expected an integer from 1 to ${max}, got ${String(value)}`)
  }
  return value
}

/** Factory: `batching(options)(components)`. */
export function batching(options: Partial<BatcherOptions> = {}): (components: PacketBatcherComponents) => PacketBatcher {
  const resolved: BatcherOptions = {
    maxPacketsPerBatch: positiveInt('maxPacketsPerBatch', options.maxPacketsPerBatch ?? DEFAULT_MAX_PACKETS_PER_BATCH, 512),
    maxSuperBufferBytes: positiveInt('maxSuperBufferBytes', options.maxSuperBufferBytes ?? DEFAULT_MAX_SUPER_BUFFER_BYTES, 65535),
    maxBatchesPerFlush: positiveInt('maxBatchesPerFlush', options.maxBatchesPerFlush ?? DEFAULT_MAX_BATCHES_PER_FLUSH, 1 << 20),
  }
  return (components) => new DefaultPacketBatcher(components, resolved)
}
