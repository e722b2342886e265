import { StoqClosedError, StoqInvalidArgumentError, StoqPoolExhaustedError, StoqPoolMisuseError, type BufferPool, type BufferPoolStats } from '@stoq/interface'

/**
 * A fixed set of buffers in one SharedArrayBuffer, for a `WorkerUdpIo` that
 * was given no pool. It implements the BufferPool contract for one thread
 * (the main thread acquires and releases; the worker only reads and writes
 * the memory through views it was handed), which is all the backend needs.
 *
 * `@stoq/mempool`'s `createBufferPool({ shared: true })` is the pool to pass
 * in production (`WorkerUdpIoOptions.pool`): this package cannot depend on
 * it today, so this stand-in exists for the default.
 */
export function createSlotPool(count: number, bufferSize: number): BufferPool {
  return new SlotPool(count, bufferSize)
}

class SlotPool implements BufferPool {
  readonly specificationVersion = 'v1' as const
  readonly bufferSize: number
  private views: Uint8Array[]
  /** Free buffer indexes (a stack) and, per buffer, whether it is acquired. */
  private readonly free: Int32Array
  private freeCount: number
  private readonly acquired: Uint8Array
  private hits = 0
  private misses = 0
  private highWaterMark = 0
  private closed = false

  constructor(count: number, bufferSize: number) {
    if (!Number.isInteger(count) || count < 1) throw new StoqInvalidArgumentError('count', 'expected a positive integer')
    if (!Number.isInteger(bufferSize) || bufferSize < 64) {
      throw new StoqInvalidArgumentError('bufferSize', 'expected an integer of at least 64')
    }
    this.bufferSize = Math.ceil(bufferSize / 64) * 64
    const memory = new SharedArrayBuffer(count * this.bufferSize)
    this.views = Array.from({ length: count }, (_, i) => new Uint8Array(memory, i * this.bufferSize, this.bufferSize))
    this.free = new Int32Array(count)
    for (let i = 0; i < count; i++) this.free[i] = count - 1 - i
    this.freeCount = count
    this.acquired = new Uint8Array(count)
  }

  acquire(): number {
    const index = this.tryAcquire()
    if (index < 0) throw new StoqPoolExhaustedError(this.views.length)
    return index
  }

  tryAcquire(): number {
    if (this.closed) throw new StoqClosedError('buffer pool')
    if (this.freeCount === 0) {
      this.misses++
      return -1
    }
    this.hits++
    const index = this.free[--this.freeCount]!
    this.acquired[index] = 1
    const inUse = this.views.length - this.freeCount
    if (inUse > this.highWaterMark) this.highWaterMark = inUse
    return index
  }

  release(index: number): void {
    if (this.closed) throw new StoqClosedError('buffer pool')
    if (!Number.isInteger(index) || index < 0 || index >= this.views.length) {
      throw new StoqInvalidArgumentError('index', `expected an integer from 0 to ${this.views.length - 1}, got ${String(index)}`)
    }
    if (this.acquired[index] !== 1) throw new StoqPoolMisuseError(index, `Buffer ${index} released twice (or never acquired)`)
    this.acquired[index] = 0
    this.free[this.freeCount++] = index
  }

  view(index: number): Uint8Array {
    const view = this.views[index]
    if (view === undefined) {
      if (this.closed) throw new StoqClosedError('buffer pool')
      throw new StoqInvalidArgumentError('index', `expected an integer from 0 to ${this.views.length - 1}, got ${String(index)}`)
    }
    return view
  }

  stats(): BufferPoolStats {
    return {
      hits: this.hits,
      misses: this.misses,
      inUse: this.acquired.length - this.freeCount,
      highWaterMark: this.highWaterMark,
      capacity: this.acquired.length,
      bufferSize: this.bufferSize,
    }
  }

  close(): void {
    this.closed = true
    this.views = []
  }
}
