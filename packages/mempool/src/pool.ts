/**
 * A pool of fixed-size buffers carved from SharedArrayBuffer slabs, shared by
 * worker threads through a lock-free free list.
 *
 * Memory. Buffer `i` lives in slab `floor(i / perSlab)` at byte offset
 * `(i % perSlab) * bufferSize`. `perSlab` is `initialBuffers`: the initial
 * buffers fill slab 0 and every growth step adds one slab of the same size (the
 * last one smaller when `maxBuffers` is not a multiple). `bufferSize` is a
 * multiple of 64 and slabs start 64-byte aligned, so every buffer does too.
 *
 * Control block (one more SharedArrayBuffer, Int32 words):
 *   [0] head of the free list  [1] capacity  [2] inUse  [3] highWaterMark
 *   [4..5] hits (low, high)  [6..7] misses (low, high)  [8] mode (FLAG_DEBUG)  [9..15] padding
 *   then next[limit] (the free-list links), then state[limit] (FREE or IN_USE per
 *   buffer, so that a double release is refused in every mode, not only in debug mode).
 *
 * Free list. A Treiber stack of buffer indexes. A slot is `index + 1` (0 means
 * none) and `next[i]` is the slot below buffer i. The head is one 32-bit word
 * holding a slot in its low `indexBits` bits and an ABA tag in the other
 * `32 - indexBits` bits; every successful push or pop bumps the tag, and both
 * change the head with a single `Atomics.compareExchange`. A pop that read
 * `(slot, tag)` and `next[slot]` therefore succeeds only if nobody changed the
 * head meanwhile, unless exactly a multiple of 2^tagBits changes happened while
 * it stalled between its load and its compare-exchange and the same slot is on
 * top again. `indexBits` is as small as the pool's limit allows: 14 bits for
 * the default 8192 buffers, leaving an 18-bit tag (262 144 changes); the
 * largest pool (2^20 - 1 buffers) keeps a 12-bit tag. A 64-bit head
 * (BigInt64Array) would remove that residue but allocates a BigInt per call.
 *
 * Growth across threads. Worker threads cannot receive a slab allocated after
 * they attached, so `share()` allocates every slab up to the pool's limit at
 * once (the OS commits pages only when they are touched, so untouched slabs
 * cost address space, not memory). Growth then only publishes a slab: the
 * thread that moves `capacity` forward with a compare-exchange links the new
 * buffers and pushes them; other threads map views of them on first use.
 * Before `share()`, the one owning thread allocates slabs as it grows.
 */

import {
  StoqClosedError,
  StoqInvalidArgumentError,
  StoqPoolExhaustedError,
  StoqPoolMisuseError,
  type BufferPool,
  type BufferPoolStats,
  type PoolExhaustionPolicy,
  booleanOption,
  checkOptions,
  describeValue,
  integerOption,
  optionKeys,
} from '@stoq/interface'
import {
  DEFAULT_ALIGNMENT,
  DEFAULT_BUFFER_SIZE,
  DEFAULT_DEBUG,
  DEFAULT_EXHAUSTION,
  DEFAULT_INITIAL_BUFFERS,
  DEFAULT_MAX_BUFFERS,
  DEFAULT_SHARED,
} from './defaults.js'

/** Options of `createBufferPool`. */
export interface BufferPoolOptions {
  /** Bytes per buffer: an integer from 64 to 16 MiB, rounded up to a multiple of 64. */
  bufferSize: number
  /** Buffers allocated up front; also the size of every slab added by growth. */
  initialBuffers: number
  /** Most buffers the pool grows to under the `grow` policy (at most 1 048 575). */
  maxBuffers: number
  /** When no buffer is free: add a slab (`grow`, up to `maxBuffers`) or fail (`error`). */
  exhaustion: PoolExhaustionPolicy
  /** Detect double release and use after release: poisons released buffers (slow). */
  debug: boolean
  /** SharedArrayBuffer memory that worker threads can attach to (`false`: ArrayBuffer). */
  shared: boolean
}

/** A structured-clonable description of a shared pool: post it to a worker and `attachBufferPool` it there. */
export interface SharedBufferPoolHandle {
  readonly options: Readonly<BufferPoolOptions>
  readonly control: SharedArrayBuffer
  readonly slabs: readonly SharedArrayBuffer[]
}

/** A `BufferPool` whose memory worker threads can share. */
export interface SharedBufferPool extends BufferPool {
  /**
   * Describe the pool for `attachBufferPool` in another thread. Allocates every
   * slab up to the pool's limit, so that growth stays visible to all threads.
   * Throws `StoqInvalidArgumentError` when the pool was created with `shared: false`.
   */
  share(): SharedBufferPoolHandle
  /**
   * Debug mode: throw `StoqPoolMisuseError` when released buffer `index` was
   * written since its release. Does nothing for a buffer in use. Meant for
   * quiet moments: a concurrent release of the same buffer may be reported.
   */
  checkPoison(index: number): void
}

/** Byte written over released buffers in debug mode. */
const POISON_BYTE = 0xdb
const POISON_WORD = POISON_BYTE * 0x01010101
const MAX_BUFFER_SIZE = 16 * 1024 * 1024
/** Slots need at most 20 bits, which keeps at least 12 bits of ABA tag. */
const MAX_BUFFERS_LIMIT = 2 ** 20 - 1

const HEAD = 0
const CAPACITY = 1
const IN_USE = 2
const HIGH_WATER = 3
const HITS = 4
const MISSES = 6
/** Header word that records the creator's mode, so that an attach with another `debug` is refused. */
const MODE = 8
const MODE_INITIALIZED = 1
const MODE_DEBUG = 2
/** One cache line of header words before next[]. */
const HEADER_WORDS = 16

const FREE = 0
const IN_USE_STATE = 1

const OPTION_NAMES = optionKeys<BufferPoolOptions>({ bufferSize: true, initialBuffers: true, maxBuffers: true, exhaustion: true, debug: true, shared: true })

/** Create a buffer pool; see `BufferPoolOptions` for what each option does. */
/** Hooks of the thread that creates a pool (not part of the shareable options). */
export interface BufferPoolHooks {
  /**
   * Called with every slab this thread allocates, before any buffer of it is handed out:
   * the place to bind its memory to a NUMA node. Errors it throws are not caught.
   */
  onSlab?: (slab: ArrayBufferLike, index: number) => void
}

export function createBufferPool(options: Partial<BufferPoolOptions> = {}, hooks: BufferPoolHooks = {}): SharedBufferPool {
  const resolved = resolveOptions(options)
  checkOptions(hooks, ['onSlab'], 'hooks')
  if (hooks.onSlab !== undefined && typeof hooks.onSlab !== 'function') throw new StoqInvalidArgumentError('onSlab', 'expected a function')
  const bytes = controlWords(resolved) * 4
  const control = resolved.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes)
  return new SlabBufferPool(resolved, control, [], true, hooks.onSlab)
}

/** Open, in this thread, the pool that `handle` (from `share()`) describes; both use the same memory. */
export function attachBufferPool(handle: SharedBufferPoolHandle): SharedBufferPool {
  const expected = 'expected the object returned by SharedBufferPool.share()'
  if (typeof handle !== 'object' || handle === null || !(handle.control instanceof SharedArrayBuffer)) {
    throw new StoqInvalidArgumentError('handle', expected)
  }
  const options = resolveOptions(handle.options)
  const slabs = Array.isArray(handle.slabs) ? handle.slabs : []
  if (
    !options.shared ||
    handle.control.byteLength !== controlWords(options) * 4 ||
    slabs.length !== Math.ceil(limitOf(options) / options.initialBuffers) ||
    Atomics.load(new Int32Array(handle.control, 0, HEADER_WORDS), MODE) !== (MODE_INITIALIZED | (options.debug ? MODE_DEBUG : 0)) ||
    !slabs.every((slab) => slab instanceof SharedArrayBuffer)
  ) {
    throw new StoqInvalidArgumentError('handle', expected)
  }
  return new SlabBufferPool(options, handle.control, slabs, false)
}

class SlabBufferPool implements SharedBufferPool {
  readonly specificationVersion = 'v1'
  readonly bufferSize: number
  readonly #options: BufferPoolOptions
  /** Capacity the pool may reach: `maxBuffers` when it may grow, else `initialBuffers`. */
  readonly #limit: number
  readonly #perSlab: number
  readonly #indexBits: number
  readonly #indexMask: number
  readonly #control: ArrayBufferLike
  readonly #header: Int32Array
  readonly #next: Int32Array
  /** FREE or IN_USE_STATE per buffer: refuses a double release in every mode. */
  readonly #state: Int32Array
  readonly #debug: boolean
  #slabs: ArrayBufferLike[]
  /** Views of the buffers mapped in this thread (a prefix of the capacity). */
  #views: Uint8Array[] = []
  /** Debug mode: the same buffers as 32-bit words, to poison and check them. */
  #words: Uint32Array[] = []
  #closed = false

  readonly #onSlab: ((slab: ArrayBufferLike, index: number) => void) | undefined

  constructor(
    options: BufferPoolOptions,
    control: ArrayBufferLike,
    slabs: ArrayBufferLike[],
    initialize: boolean,
    onSlab?: (slab: ArrayBufferLike, index: number) => void,
  ) {
    this.#onSlab = onSlab
    this.bufferSize = options.bufferSize
    this.#options = options
    this.#limit = limitOf(options)
    this.#perSlab = options.initialBuffers
    this.#indexBits = 32 - Math.clz32(this.#limit)
    this.#indexMask = (1 << this.#indexBits) - 1
    this.#control = control
    this.#header = new Int32Array(control, 0, HEADER_WORDS)
    this.#next = new Int32Array(control, HEADER_WORDS * 4, this.#limit)
    this.#state = new Int32Array(control, (HEADER_WORDS + this.#limit) * 4, this.#limit)
    this.#debug = options.debug
    this.#slabs = slabs
    if (initialize) {
      Atomics.store(this.#header, MODE, MODE_INITIALIZED | (options.debug ? MODE_DEBUG : 0))
      this.#push(this.#grow(), 1)
    } else this.#map(Atomics.load(this.#header, CAPACITY))
  }

  acquire(): number {
    const index = this.tryAcquire()
    if (index < 0) throw new StoqPoolExhaustedError(Atomics.load(this.#header, CAPACITY))
    return index
  }

  tryAcquire(): number {
    if (this.#closed) throw new StoqClosedError('buffer pool')
    const header = this.#header
    let index = this.#pop()
    if (index >= 0) {
      increment(header, HITS)
    } else {
      increment(header, MISSES)
      index = this.#grow()
      if (index < 0) return -1
    }
    if (this.#debug) this.#takeChecked(index)
    else Atomics.store(this.#state, index, IN_USE_STATE)
    const inUse = Atomics.add(header, IN_USE, 1) + 1
    let high = Atomics.load(header, HIGH_WATER)
    while (inUse > high) {
      const seen = Atomics.compareExchange(header, HIGH_WATER, high, inUse)
      if (seen === high) break
      high = seen
    }
    return index
  }

  release(index: number): void {
    // typeof first: a string or BigInt index would find a view ("0", 0n) and then break the free list.
    if (typeof index !== 'number' || this.#views[index] === undefined) this.#resolve(index)
    // One compare-exchange in every mode: a second release would link the buffer into the
    // free list twice and hand it to two owners.
    if (Atomics.compareExchange(this.#state, index, IN_USE_STATE, FREE) !== IN_USE_STATE) {
      throw new StoqPoolMisuseError(index, `Buffer ${index} released twice (or released without being acquired)`)
    }
    if (this.#debug) this.#words[index]!.fill(POISON_WORD)
    // Decrement before the push, so that inUse never exceeds the true count.
    Atomics.sub(this.#header, IN_USE, 1)
    this.#push(index, 1)
  }

  view(index: number): Uint8Array {
    return (typeof index === 'number' ? this.#views[index] : undefined) ?? this.#resolve(index)
  }

  checkPoison(index: number): void {
    if (!this.#debug) {
      throw new StoqInvalidArgumentError('debug', 'checkPoison() needs a pool created with debug: true')
    }
    if (typeof index !== 'number' || this.#views[index] === undefined) this.#resolve(index)
    if (Atomics.load(this.#state, index) === FREE && !this.#poisonIntact(index)) {
      throw new StoqPoolMisuseError(index, `Use after release: buffer ${index} was written after its release`)
    }
  }

  stats(): BufferPoolStats {
    this.#checkOpen()
    const header = this.#header
    return {
      hits: readCounter(header, HITS),
      misses: readCounter(header, MISSES),
      inUse: Atomics.load(header, IN_USE),
      highWaterMark: Atomics.load(header, HIGH_WATER),
      capacity: Atomics.load(header, CAPACITY),
      bufferSize: this.bufferSize,
    }
  }

  share(): SharedBufferPoolHandle {
    this.#checkOpen()
    if (!(this.#control instanceof SharedArrayBuffer)) {
      throw new StoqInvalidArgumentError('shared', 'share() needs a pool created with shared: true')
    }
    const slabCount = Math.ceil(this.#limit / this.#perSlab)
    for (let slab = 0; slab < slabCount; slab++) this.#allocateSlab(slab)
    return { options: { ...this.#options }, control: this.#control, slabs: this.#slabs.slice() as SharedArrayBuffer[] }
  }

  /** Close this thread's view of the pool (other attached threads keep theirs). Idempotent. */
  close(): void {
    this.#closed = true
    this.#views = []
    this.#words = []
    this.#slabs = []
  }

  #checkOpen(): void {
    if (this.#closed) throw new StoqClosedError('buffer pool')
  }

  /** Slow path of `view` and the index check of `release`: validate `index` and map up to it. */
  #resolve(index: number): Uint8Array {
    this.#checkOpen()
    const capacity = Atomics.load(this.#header, CAPACITY)
    if (!Number.isInteger(index) || index < 0 || index >= capacity) {
      throw new StoqInvalidArgumentError('index', `expected an integer from 0 to ${capacity - 1}, got ${show(index)}`)
    }
    this.#map(capacity)
    return this.#views[index]!
  }

  /** Create this thread's views of buffers up to `capacity` (another thread may have grown the pool). */
  #map(capacity: number): void {
    const size = this.bufferSize
    for (let index = this.#views.length; index < capacity; index++) {
      const slab = Math.floor(index / this.#perSlab)
      const memory = this.#slabs[slab]!
      const offset = (index - slab * this.#perSlab) * size
      this.#views.push(new Uint8Array(memory, offset, size))
      if (this.#debug) this.#words.push(new Uint32Array(memory, offset, size / 4))
    }
  }

  #allocateSlab(slab: number): void {
    if (this.#slabs[slab] !== undefined) return
    const bytes = Math.min(this.#perSlab, this.#limit - slab * this.#perSlab) * this.bufferSize
    const memory = this.#options.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes)
    this.#onSlab?.(memory, slab)
    this.#slabs[slab] = memory
  }

  /** Pop the free list: a buffer index, or -1 when it is empty. */
  #pop(): number {
    const header = this.#header
    const bits = this.#indexBits
    for (;;) {
      const head = Atomics.load(header, HEAD)
      const slot = head & this.#indexMask
      if (slot === 0) return -1
      const next = Atomics.load(this.#next, slot - 1)
      // Bits of the tag shifted past 32 are dropped: the tag wraps around.
      if (Atomics.compareExchange(header, HEAD, head, (((head >>> bits) + 1) << bits) | next) === head) return slot - 1
    }
  }

  /** Push `count` buffers from `first` on, already linked `first -> first + 1 -> ...`, with one compare-exchange. */
  #push(first: number, count: number): void {
    const header = this.#header
    const bits = this.#indexBits
    const last = first + count - 1
    for (;;) {
      const head = Atomics.load(header, HEAD)
      Atomics.store(this.#next, last, head & this.#indexMask)
      if (Atomics.compareExchange(header, HEAD, head, (((head >>> bits) + 1) << bits) | (first + 1)) === head) return
    }
  }

  /**
   * Add a slab: returns its first buffer (for the caller) after pushing the
   * others, or -1 when the pool is at its limit. If another thread grows the
   * pool first, takes one of that thread's buffers instead.
   */
  #grow(): number {
    const header = this.#header
    for (;;) {
      const start = Atomics.load(header, CAPACITY)
      if (start >= this.#limit) return -1
      const end = Math.min(start + this.#perSlab, this.#limit)
      this.#allocateSlab(start / this.#perSlab)
      if (Atomics.compareExchange(header, CAPACITY, start, end) !== start) {
        const index = this.#pop()
        if (index >= 0) return index
        continue
      }
      this.#map(end)
      if (this.#debug) for (let index = start; index < end; index++) this.#words[index]!.fill(POISON_WORD)
      for (let index = start + 1; index < end - 1; index++) Atomics.store(this.#next, index, index + 2)
      if (end - start > 1) this.#push(start + 1, end - start - 1)
      return start
    }
  }

  /**
   * Debug mode, on a buffer just taken: mark it in use, or, when it was written
   * since its release, put it back re-poisoned and throw.
   */
  #takeChecked(index: number): void {
    if (this.#words[index] === undefined) this.#map(Atomics.load(this.#header, CAPACITY))
    if (this.#poisonIntact(index)) {
      Atomics.store(this.#state, index, IN_USE_STATE)
      return
    }
    this.#words[index]!.fill(POISON_WORD)
    this.#push(index, 1)
    throw new StoqPoolMisuseError(index, `Use after release: buffer ${index} was written after its release`)
  }

  #poisonIntact(index: number): boolean {
    const words = this.#words[index]!
    for (let i = 0; i < words.length; i++) if (words[i] !== POISON_WORD) return false
    return true
  }
}

function resolveOptions(options: Partial<BufferPoolOptions>): BufferPoolOptions {
  checkOptions(options, OPTION_NAMES)
  const bufferSize = integerIn('bufferSize', options.bufferSize ?? DEFAULT_BUFFER_SIZE, DEFAULT_ALIGNMENT, MAX_BUFFER_SIZE)
  const maxBuffers = integerIn('maxBuffers', options.maxBuffers ?? DEFAULT_MAX_BUFFERS, 1, MAX_BUFFERS_LIMIT)
  const initialBuffers = integerIn('initialBuffers', options.initialBuffers ?? Math.min(DEFAULT_INITIAL_BUFFERS, maxBuffers), 1, maxBuffers)
  const exhaustion = options.exhaustion ?? DEFAULT_EXHAUSTION
  if (exhaustion !== 'grow' && exhaustion !== 'error') {
    throw new StoqInvalidArgumentError('exhaustion', `expected 'grow' or 'error', got ${show(exhaustion)}`)
  }
  return {
    bufferSize: Math.ceil(bufferSize / DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT,
    initialBuffers,
    maxBuffers,
    exhaustion,
    debug: boolean('debug', options.debug ?? DEFAULT_DEBUG),
    shared: boolean('shared', options.shared ?? DEFAULT_SHARED),
  }
}

const integerIn = integerOption
const boolean = booleanOption

const show = describeValue

function limitOf(options: BufferPoolOptions): number {
  return options.exhaustion === 'grow' ? options.maxBuffers : options.initialBuffers
}

function controlWords(options: BufferPoolOptions): number {
  return HEADER_WORDS + limitOf(options) * 2
}

/** Add one to the 64-bit counter at words `[at, at + 1]`: whoever wraps the low word carries. */
function increment(header: Int32Array, at: number): void {
  if (Atomics.add(header, at, 1) === -1) Atomics.add(header, at + 1, 1)
}

/** Read a 64-bit counter. While a carry is in flight (a few instructions) it reads 2^32 too low. */
function readCounter(header: Int32Array, at: number): number {
  for (;;) {
    const high = Atomics.load(header, at + 1)
    const low = Atomics.load(header, at) >>> 0
    if (Atomics.load(header, at + 1) === high) return (high >>> 0) * 2 ** 32 + low
  }
}
