/**
 * Throughput over time from a cumulative byte counter: instantaneous rate per
 * sample interval, average since the first sample, and the peak, kept in a
 * fixed-size ring so that memory stays bounded however long the run.
 *
 * Rates are in Gbit/s: 10^9 bits per second (decimal, as link speeds are).
 */

import { StoqInvalidArgumentError, checkOptions, optionKeys } from '@stoq/interface'
import { show } from './args.js'
import { DEFAULT_SERIES_CAPACITY, MAX_SERIES_CAPACITY } from './defaults.js'

/** One point of the series: the interval that ends at `tSec`. */
export interface ThroughputPoint {
  /** Seconds since the first sample. */
  tSec: number
  /** Bytes counted since the first sample. */
  bytes: number
  /** Rate over the interval since the previous point (Gbit/s). */
  instantGbps: number
  /** Rate from the first sample to this point (Gbit/s). */
  averageGbps: number
}

/** Options of `ThroughputSeries`. */
export interface ThroughputSeriesOptions {
  /** Most points kept; older ones are dropped (an integer from 1 to 86 400). */
  capacity: number
  /** Milliseconds on a monotonic clock, read when `sample()` is given no time. Default `performance.now()`. */
  clock: () => number
}

/** `ThroughputSeries.toJSON()`: the whole series as plain data. */
export interface ThroughputSeriesJSON {
  capacity: number
  /** Points dropped from the ring (oldest first) because it was full. */
  dropped: number
  /** Seconds from the first sample to the latest point. */
  durationSec: number
  /** Bytes counted from the first sample to the latest point. */
  bytes: number
  averageGbps: number
  /** Highest `instantGbps` of any point since the first sample, dropped points included. */
  peakGbps: number
  /** `tSec` of the peak point, or null before the first point. */
  peakTSec: number | null
  /** Points kept, oldest first. */
  points: ThroughputPoint[]
}

const OPTION_NAMES = optionKeys<ThroughputSeriesOptions>({ capacity: true, clock: true })
const MAX_INTERVAL_MS = 2 ** 31 - 1

/**
 * A per-interval throughput series fed with a cumulative byte counter.
 *
 * The first `sample()` sets the origin; every later sample that moves the
 * clock forward records one point whose `instantGbps` covers the time since
 * the previous point. Sample once per second for per-second points, either
 * from your own loop or with `start(1000, () => stats.bytesReceived)`. The
 * series has no timer of its own unless `start()` is called, and that timer
 * does not keep the process alive.
 */
export class ThroughputSeries {
  /** Most points kept. */
  readonly capacity: number
  readonly #clock: () => number
  readonly #tSec: Float64Array
  readonly #bytes: Float64Array
  readonly #instant: Float64Array
  readonly #average: Float64Array
  /** Next ring slot to write. */
  #head = 0
  #size = 0
  #recorded = 0
  #originMs = 0
  #originBytes = 0
  #hasOrigin = false
  #lastMs = 0
  #lastBytes = 0
  #peakGbps = 0
  #peakTSec: number | null = null
  #timer: ReturnType<typeof setInterval> | null = null

  constructor(options: Partial<ThroughputSeriesOptions> = {}) {
    checkOptions(options, OPTION_NAMES)
    const capacity = options.capacity ?? DEFAULT_SERIES_CAPACITY
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_SERIES_CAPACITY) {
      throw new StoqInvalidArgumentError('capacity', `expected an integer from 1 to ${MAX_SERIES_CAPACITY}, got ${show(capacity)}`)
    }
    const clock = options.clock ?? (() => performance.now())
    if (typeof clock !== 'function') {
      throw new StoqInvalidArgumentError('clock', 'expected a function returning milliseconds')
    }
    this.capacity = capacity
    this.#clock = clock
    this.#tSec = new Float64Array(capacity)
    this.#bytes = new Float64Array(capacity)
    this.#instant = new Float64Array(capacity)
    this.#average = new Float64Array(capacity)
  }

  /** Points currently kept (at most `capacity`). */
  get length(): number {
    return this.#size
  }

  /** True between `start()` and `stop()`. */
  get sampling(): boolean {
    return this.#timer !== null
  }

  /** Highest `instantGbps` seen since the first sample (0 before the first point). */
  get peakGbps(): number {
    return this.#peakGbps
  }

  /** Rate from the first sample to the latest point (0 before the first point). */
  get averageGbps(): number {
    return this.#recorded === 0 ? 0 : this.#average[this.#newest()]!
  }

  /**
   * Feed the cumulative byte count `totalBytes` as of `nowMs` (default: the
   * series clock). Returns the point recorded, or null for the first sample
   * (the origin) and for a sample at the same time as the previous point (its
   * bytes count in the next point). Throws `StoqInvalidArgumentError` when the
   * count or the time goes backwards.
   */
  sample(totalBytes: number, nowMs: number = this.#clock()): ThroughputPoint | null {
    if (typeof totalBytes !== 'number' || !(totalBytes >= 0 && totalBytes < Infinity)) {
      throw new StoqInvalidArgumentError('totalBytes', `expected a finite number >= 0, got ${show(totalBytes)}`)
    }
    if (typeof nowMs !== 'number' || !Number.isFinite(nowMs)) {
      throw new StoqInvalidArgumentError('nowMs', `expected a finite number of milliseconds, got ${show(nowMs)}`)
    }
    if (!this.#hasOrigin) {
      this.#hasOrigin = true
      this.#originMs = this.#lastMs = nowMs
      this.#originBytes = this.#lastBytes = totalBytes
      return null
    }
    if (nowMs < this.#lastMs) {
      throw new StoqInvalidArgumentError('nowMs', `time went backwards: ${nowMs} ms after ${this.#lastMs} ms`)
    }
    if (totalBytes < this.#lastBytes) {
      throw new StoqInvalidArgumentError('totalBytes', `the byte counter is cumulative and went down from ${this.#lastBytes} to ${totalBytes}`)
    }
    if (nowMs === this.#lastMs) return null

    const slot = this.#head
    const tSec = (nowMs - this.#originMs) / 1000
    const instantGbps = gbps(totalBytes - this.#lastBytes, nowMs - this.#lastMs)
    this.#tSec[slot] = tSec
    this.#bytes[slot] = totalBytes - this.#originBytes
    this.#instant[slot] = instantGbps
    this.#average[slot] = gbps(totalBytes - this.#originBytes, nowMs - this.#originMs)
    this.#head = slot + 1 === this.capacity ? 0 : slot + 1
    if (this.#size < this.capacity) this.#size++
    this.#recorded++
    if (this.#peakTSec === null || instantGbps > this.#peakGbps) {
      this.#peakGbps = instantGbps
      this.#peakTSec = tSec
    }
    this.#lastMs = nowMs
    this.#lastBytes = totalBytes
    return this.#point(slot)
  }

  /** The latest point, or null before the first one. */
  current(): ThroughputPoint | null {
    return this.#size === 0 ? null : this.#point(this.#newest())
  }

  /** The points kept, oldest first. */
  points(): ThroughputPoint[] {
    const out: ThroughputPoint[] = []
    let slot = (this.#head - this.#size + this.capacity) % this.capacity
    for (let i = 0; i < this.#size; i++) {
      out.push(this.#point(slot))
      slot = slot + 1 === this.capacity ? 0 : slot + 1
    }
    return out
  }

  toJSON(): ThroughputSeriesJSON {
    const newest = this.#size === 0 ? -1 : this.#newest()
    return {
      capacity: this.capacity,
      dropped: this.#recorded - this.#size,
      durationSec: newest === -1 ? 0 : this.#tSec[newest]!,
      bytes: newest === -1 ? 0 : this.#bytes[newest]!,
      averageGbps: this.averageGbps,
      peakGbps: this.#peakGbps,
      peakTSec: this.#peakTSec,
      points: this.points(),
    }
  }

  /**
   * Sample `read()` now and then every `intervalMs` on an unref'd interval
   * timer (it does not keep the process alive) until `stop()`. An exception
   * from `read()` or `sample()` in the timer is an uncaught exception, as from
   * any timer callback. Throws if the series is already sampling.
   */
  start(intervalMs: number, read: () => number): void {
    if (!Number.isInteger(intervalMs) || intervalMs < 1 || intervalMs > MAX_INTERVAL_MS) {
      throw new StoqInvalidArgumentError('intervalMs', `expected an integer from 1 to ${MAX_INTERVAL_MS}, got ${show(intervalMs)}`)
    }
    if (typeof read !== 'function') {
      throw new StoqInvalidArgumentError('read', 'expected a function returning the cumulative byte count')
    }
    if (this.#timer !== null) {
      throw new StoqInvalidArgumentError('start', 'the series is already sampling; call stop() first')
    }
    this.sample(read())
    this.#timer = setInterval(() => {
      this.sample(read())
    }, intervalMs)
    this.#timer.unref()
  }

  /** Stop the timer of `start()`; the points stay. Idempotent. */
  stop(): void {
    if (this.#timer === null) return
    clearInterval(this.#timer)
    this.#timer = null
  }

  /** Forget every point, the origin and the peak (the timer, if any, keeps running and sets a new origin). */
  reset(): void {
    this.#head = 0
    this.#size = 0
    this.#recorded = 0
    this.#hasOrigin = false
    this.#peakGbps = 0
    this.#peakTSec = null
  }

  [Symbol.dispose](): void {
    this.stop()
  }

  #newest(): number {
    return this.#head === 0 ? this.capacity - 1 : this.#head - 1
  }

  #point(slot: number): ThroughputPoint {
    return {
      tSec: this.#tSec[slot]!,
      bytes: this.#bytes[slot]!,
      instantGbps: this.#instant[slot]!,
      averageGbps: this.#average[slot]!,
    }
  }
}

/** Bytes over milliseconds in Gbit/s: bytes * 8 bits / (ms / 1000) s / 1e9. */
function gbps(bytes: number, ms: number): number {
  return (bytes * 8) / (ms * 1e6)
}
