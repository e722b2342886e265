/**
 * A single-producer, single-consumer ring of fixed-width numeric records in a
 * SharedArrayBuffer: one thread appends, another drains, with no message per
 * batch. Records stay in order. The producer's records become visible to the
 * consumer when it calls `publish()`; `publish()` says whether the consumer had
 * parked (gone idle after finding the ring empty), which is the one moment the
 * producer must wake it by some other means (a message, in STOQ's engine
 * workers). A busy consumer drains at its own pace and costs the producer no
 * wake-up at all.
 *
 * When the ring is full the producer keeps further records in a local spill
 * (an ordinary array, in order behind the ring) and moves them in on a later
 * `publish()`; nothing is dropped and nothing blocks. `spilled` says how many
 * wait there.
 *
 * Positions are 32-bit counters that wrap; the capacity is a power of two, so
 * `position & (capacity - 1)` is the slot across the wrap.
 */
import { StoqInvalidArgumentError, checkOptions, describeValue, integerOption, optionKeys } from '@stoq/interface'

/** What another thread needs to attach to a ring (structured-clonable). */
export interface RecordRingHandle {
  readonly buffer: SharedArrayBuffer
  /** Numbers per record. */
  readonly width: number
  /** Records the ring holds (a power of two). */
  readonly capacity: number
}

export interface RecordRingOptions {
  /** Numbers per record, 1-8. */
  width: number
  /** Records the ring holds, a power of two from 2 to 2^20 (default 4096). */
  capacity?: number
}

// Int32 indices of the header words, one 64-byte line apart so the two threads'
// hot words do not share a cache line.
const HEAD = 0 // next position the consumer reads (written by the consumer)
const TAIL = 16 // next position the producer publishes (written by the producer)
const PARKED = 32 // 1: the consumer found the ring empty and waits for a wake-up
const HEADER_BYTES = 192
const MAX_WIDTH = 8
const MAX_CAPACITY = 1 << 20
export const DEFAULT_RECORD_RING_CAPACITY = 4096
const OPTION_NAMES = optionKeys<RecordRingOptions>({ width: true, capacity: true })
const HANDLE_NAMES = optionKeys<RecordRingHandle>({ buffer: true, width: true, capacity: true })

/** Bytes of a ring's SharedArrayBuffer: the header, then the records. */
function byteLength(width: number, capacity: number): number {
  return HEADER_BYTES + capacity * width * 8
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n >= 2 && (n & (n - 1)) === 0
}

function checkShape(width: unknown, capacity: unknown): void {
  integerOption('width', width, 1, MAX_WIDTH)
  if (typeof capacity !== 'number' || !isPowerOfTwo(capacity) || capacity > MAX_CAPACITY) {
    throw new StoqInvalidArgumentError('capacity', `expected a power of two from 2 to ${MAX_CAPACITY}, got ${describeValue(capacity)}`)
  }
}

export class RecordRing {
  /** The records: slot `s` is `data[s * width ... s * width + width - 1]`. */
  readonly data: Float64Array
  readonly width: number
  readonly capacity: number
  private readonly header: Int32Array
  private readonly mask: number
  private readonly buffer: SharedArrayBuffer
  /** Producer side: next position to write (published up to TAIL). */
  private writeAt: number
  private readonly spill: number[] = []

  private constructor(buffer: SharedArrayBuffer, width: number, capacity: number) {
    this.buffer = buffer
    this.width = width
    this.capacity = capacity
    this.mask = capacity - 1
    this.header = new Int32Array(buffer, 0, HEADER_BYTES / 4)
    this.data = new Float64Array(buffer, HEADER_BYTES, capacity * width)
    this.writeAt = Atomics.load(this.header, TAIL)
  }

  /** A new ring in a fresh SharedArrayBuffer. */
  static create(options: RecordRingOptions): RecordRing {
    checkOptions(options, OPTION_NAMES)
    const capacity = options.capacity ?? DEFAULT_RECORD_RING_CAPACITY
    checkShape(options.width, capacity)
    const buffer = new SharedArrayBuffer(byteLength(options.width, capacity))
    // The consumer has not started draining: it counts as parked, so the first publish wakes it.
    Atomics.store(new Int32Array(buffer, 0, HEADER_BYTES / 4), PARKED, 1)
    return new RecordRing(buffer, options.width, capacity)
  }

  /** The same ring, from its handle (in another thread). */
  static attach(handle: RecordRingHandle): RecordRing {
    checkOptions(handle, HANDLE_NAMES, 'handle')
    if (!(handle.buffer instanceof SharedArrayBuffer)) {
      throw new StoqInvalidArgumentError('handle', 'must be a RecordRingHandle (a SharedArrayBuffer, width and capacity)')
    }
    checkShape(handle.width, handle.capacity)
    const need = byteLength(handle.width, handle.capacity)
    if (handle.buffer.byteLength !== need) {
      throw new StoqInvalidArgumentError(
        'handle',
        `buffer is ${handle.buffer.byteLength} bytes; width ${handle.width} and capacity ${handle.capacity} need ${need}`,
      )
    }
    return new RecordRing(handle.buffer, handle.width, handle.capacity)
  }

  get handle(): RecordRingHandle {
    return { buffer: this.buffer, width: this.width, capacity: this.capacity }
  }

  // Producer ---------------------------------------------------------------------------------

  /** Records appended and not yet visible to the consumer (spilled ones included). */
  get unpublished(): number {
    return ((this.writeAt - Atomics.load(this.header, TAIL)) | 0) + this.spilled
  }

  /** Records the producer holds outside the ring because it was full. */
  get spilled(): number {
    return this.spill.length / this.width
  }

  /**
   * Append one record (the first `width` arguments; missing ones are 0). It is not
   * visible to the consumer until `publish()`.
   */
  append(r0: number, r1 = 0, r2 = 0, r3 = 0, r4 = 0, r5 = 0, r6 = 0, r7 = 0): void {
    const w = this.width
    if (this.spill.length === 0 && ((this.writeAt - Atomics.load(this.header, HEAD)) | 0) < this.capacity) {
      const d = this.data
      const i = (this.writeAt & this.mask) * w
      d[i] = r0
      if (w > 1) d[i + 1] = r1
      if (w > 2) d[i + 2] = r2
      if (w > 3) d[i + 3] = r3
      if (w > 4) d[i + 4] = r4
      if (w > 5) d[i + 5] = r5
      if (w > 6) d[i + 6] = r6
      if (w > 7) d[i + 7] = r7
      this.writeAt = (this.writeAt + 1) | 0
      return
    }
    const s = this.spill
    s.push(r0)
    if (w > 1) s.push(r1)
    if (w > 2) s.push(r2)
    if (w > 3) s.push(r3)
    if (w > 4) s.push(r4)
    if (w > 5) s.push(r5)
    if (w > 6) s.push(r6)
    if (w > 7) s.push(r7)
  }

  /**
   * Make every appended record visible to the consumer (moving spilled ones in as
   * space allows). Returns true when the consumer had parked: the caller must wake it.
   */
  publish(): boolean {
    if (this.spill.length > 0) this.unspill()
    if (Atomics.load(this.header, TAIL) === this.writeAt) return false
    Atomics.store(this.header, TAIL, this.writeAt)
    return Atomics.load(this.header, PARKED) === 1 && Atomics.exchange(this.header, PARKED, 0) === 1
  }

  private unspill(): void {
    const w = this.width
    const s = this.spill
    const free = this.capacity - ((this.writeAt - Atomics.load(this.header, HEAD)) | 0)
    const n = Math.min(free, s.length / w)
    const d = this.data
    for (let k = 0; k < n; k++) {
      const i = (this.writeAt & this.mask) * w
      for (let j = 0; j < w; j++) d[i + j] = s[k * w + j]!
      this.writeAt = (this.writeAt + 1) | 0
    }
    s.splice(0, n * w)
  }

  // Consumer ---------------------------------------------------------------------------------

  /** Records published and not yet consumed. */
  get available(): number {
    return (Atomics.load(this.header, TAIL) - Atomics.load(this.header, HEAD)) | 0
  }

  /**
   * Call `fn(data, at)` for each published record in order (`at`: index of its first
   * number in `data`). `fn` returning false stops the drain before that record is
   * consumed (it is offered again by the next drain). Returns the records consumed.
   */
  drain(fn: (data: Float64Array, at: number) => boolean | undefined): number {
    const h = this.header
    const start = Atomics.load(h, HEAD)
    const tail = Atomics.load(h, TAIL)
    const w = this.width
    let head = start
    let done = false
    try {
      while (head !== tail) {
        if (fn(this.data, (head & this.mask) * w) === false) break
        head = (head + 1) | 0
      }
      done = true
    } finally {
      // A record whose handler threw counts as consumed: it is not offered again.
      if (!done) head = (head + 1) | 0
      if (head !== start) Atomics.store(h, HEAD, head)
    }
    return (head - start) | 0
  }

  /**
   * The consumer is about to go idle: mark it parked so the producer's next
   * `publish()` reports that a wake-up is needed. Returns false (and stays unparked)
   * when records arrived in the meantime: drain again instead of waiting.
   */
  park(): boolean {
    Atomics.store(this.header, PARKED, 1)
    if (this.available === 0) return true
    Atomics.store(this.header, PARKED, 0)
    return false
  }

  /** The consumer is draining again (it was woken, or polls): no wake-up needed. */
  unpark(): void {
    Atomics.store(this.header, PARKED, 0)
  }
}
