import { StoqError } from '@stoq/interface'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { DEFAULT_SERIES_CAPACITY, ThroughputSeries } from '../src/index.js'

/** 1 Gbit/s for one second, in bytes. */
const GIGABIT_SECOND = 125_000_000

function thrownCode(call: () => unknown): { code: string; argument: string } {
  try {
    call()
  } catch (err) {
    if (StoqError.isInstance(err)) return { code: err.code, argument: (err.data as { argument: string }).argument }
    throw err
  }
  throw new Error('expected a StoqError, nothing was thrown')
}

describe('ThroughputSeries math', () => {
  it('computes instantaneous, average and peak from known byte counts', () => {
    const series = new ThroughputSeries()
    expect(series.capacity).toBe(DEFAULT_SERIES_CAPACITY)
    // The counter already stood at 1 MB when sampling began: only what follows counts.
    const base = 1_000_000
    const t0 = 5000
    expect(series.sample(base, t0)).toBeNull()
    expect(series.current()).toBeNull()

    const p1 = series.sample(base + GIGABIT_SECOND, t0 + 1000)!
    expect(p1).toEqual({ tSec: 1, bytes: GIGABIT_SECOND, instantGbps: 1, averageGbps: 1 })
    const p2 = series.sample(base + 3 * GIGABIT_SECOND, t0 + 2000)!
    expect(p2.tSec).toBe(2)
    expect(p2.instantGbps).toBeCloseTo(2, 12)
    expect(p2.averageGbps).toBeCloseTo(1.5, 12)
    const p3 = series.sample(base + 3 * GIGABIT_SECOND, t0 + 3000)!
    expect(p3.instantGbps).toBe(0)
    expect(p3.averageGbps).toBeCloseTo(1, 12)
    // An irregular interval: 1.5 s carrying 1.5 Gbit → 1 Gbit/s over it.
    const p4 = series.sample(base + 3 * GIGABIT_SECOND + 187_500_000, t0 + 4500)!
    expect(p4.tSec).toBe(4.5)
    expect(p4.instantGbps).toBeCloseTo(1, 12)
    expect(p4.averageGbps).toBeCloseTo(1, 12) // 4.5 Gbit in 4.5 s

    expect(series.current()).toEqual(p4)
    expect(series.length).toBe(4)
    expect(series.peakGbps).toBeCloseTo(2, 12)
    expect(series.averageGbps).toBeCloseTo(1, 12)
    const json = series.toJSON()
    expect(json).toMatchObject({ capacity: DEFAULT_SERIES_CAPACITY, dropped: 0, durationSec: 4.5, bytes: 562_500_000 })
    expect(json.peakTSec).toBe(2)
    expect(json.points.map((p) => p.tSec)).toEqual([1, 2, 3, 4.5])
    expect(JSON.parse(JSON.stringify(series))).toEqual(json)
  })

  it('converts bytes per millisecond to decimal gigabits', () => {
    const series = new ThroughputSeries()
    series.sample(0, 0)
    // 10 Gbit/s for 250 ms is 312.5 MB.
    expect(series.sample(312_500_000, 250)!.instantGbps).toBeCloseTo(10, 12)
    // 1500 bytes in 1 ms is 12 Mbit/s = 0.012 Gbit/s.
    expect(series.sample(312_501_500, 251)!.instantGbps).toBeCloseTo(0.012, 12)
  })

  it('keeps a bounded ring of the newest points, with peak and average over the whole run', () => {
    const series = new ThroughputSeries({ capacity: 5 })
    // Second k carries k Gbit, except second 2 which carries 40 Gbit (the peak).
    const gbits = (k: number): number => (k === 2 ? 40 : k)
    let total = 0
    series.sample(total, 0)
    for (let k = 1; k <= 11; k++) {
      total += gbits(k) * GIGABIT_SECOND
      series.sample(total, k * 1000)
      expect(series.length).toBe(Math.min(k, 5))
    }
    const json = series.toJSON()
    expect(json.points).toHaveLength(5)
    expect(json.dropped).toBe(6)
    expect(json.points.map((p) => p.tSec)).toEqual([7, 8, 9, 10, 11])
    for (const p of json.points) expect(p.instantGbps).toBeCloseTo(p.tSec, 12)
    // The peak point (t = 2 s) left the ring but is still the peak.
    expect(json.peakGbps).toBeCloseTo(40, 12)
    expect(json.peakTSec).toBe(2)
    const sum = Array.from({ length: 11 }, (_, i) => gbits(i + 1)).reduce((a, b) => a + b, 0)
    expect(json.averageGbps).toBeCloseTo(sum / 11, 12)
    expect(json.bytes).toBe(sum * GIGABIT_SECOND)
    expect(json.durationSec).toBe(11)

    // Keep going far past the capacity: the ring stays at 5, oldest first.
    for (let k = 12; k <= 1000; k++) series.sample((total += GIGABIT_SECOND), k * 1000)
    expect(series.points().map((p) => p.tSec)).toEqual([996, 997, 998, 999, 1000])
    expect(series.toJSON().dropped).toBe(995)
  })

  it('carries bytes of a same-time sample into the next point', () => {
    const series = new ThroughputSeries()
    series.sample(0, 0)
    series.sample(GIGABIT_SECOND, 1000)
    expect(series.sample(2 * GIGABIT_SECOND, 1000)).toBeNull()
    const next = series.sample(3 * GIGABIT_SECOND, 2000)!
    expect(next.instantGbps).toBeCloseTo(2, 12)
    expect(series.length).toBe(2)
  })

  it('refuses counters and clocks that go backwards, and non-finite input', () => {
    const series = new ThroughputSeries()
    series.sample(100, 1000)
    expect(thrownCode(() => series.sample(99, 2000))).toEqual({ code: 'STOQ_ERR_INVALID_ARG', argument: 'totalBytes' })
    expect(thrownCode(() => series.sample(200, 999))).toEqual({ code: 'STOQ_ERR_INVALID_ARG', argument: 'nowMs' })
    for (const bad of [-1, NaN, Infinity, '5' as unknown as number]) {
      expect(thrownCode(() => series.sample(bad, 3000)).argument).toBe('totalBytes')
    }
    expect(thrownCode(() => series.sample(200, NaN)).argument).toBe('nowMs')
    expect(series.length).toBe(0)
  })

  it('validates its options', () => {
    for (const capacity of [0, -1, 1.5, 86_401, NaN]) {
      expect(thrownCode(() => new ThroughputSeries({ capacity })).argument).toBe('capacity')
    }
    expect(thrownCode(() => new ThroughputSeries({ clock: 5 as never })).argument).toBe('clock')
    expect(thrownCode(() => new ThroughputSeries({ size: 5 } as never)).argument).toBe('size')
  })

  it('reset forgets points, origin and peak', () => {
    const series = new ThroughputSeries({ capacity: 3 })
    series.sample(0, 0)
    series.sample(GIGABIT_SECOND, 1000)
    series.reset()
    expect(series.toJSON()).toEqual({
      capacity: 3,
      dropped: 0,
      durationSec: 0,
      bytes: 0,
      averageGbps: 0,
      peakGbps: 0,
      peakTSec: null,
      points: [],
    })
    expect(series.sample(10, 500)).toBeNull() // a new origin: lower count and time are fine
    expect(series.sample(10 + GIGABIT_SECOND / 2, 1500)!.tSec).toBe(1)
  })

  it('uses its clock when no time is given', () => {
    let now = 100
    const series = new ThroughputSeries({ clock: () => now })
    series.sample(0)
    now = 600
    expect(series.sample(GIGABIT_SECOND / 2)).toEqual({ tSec: 0.5, bytes: 62_500_000, instantGbps: 1, averageGbps: 1 })
  })
})

describe('ThroughputSeries timer', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('samples now and every interval until stopped', () => {
    vi.useFakeTimers()
    const series = new ThroughputSeries({ clock: () => Date.now() })
    let total = 0
    series.start(1000, () => total)
    expect(series.sampling).toBe(true)
    expect(series.length).toBe(0) // the origin
    for (let s = 1; s <= 3; s++) {
      total += s * GIGABIT_SECOND
      vi.advanceTimersByTime(1000)
    }
    expect(series.points().map((p) => [p.tSec, p.instantGbps])).toEqual([
      [1, 1],
      [2, 2],
      [3, 3],
    ])
    expect(thrownCode(() => series.start(1000, () => total)).argument).toBe('start')
    series.stop()
    series.stop() // idempotent
    expect(series.sampling).toBe(false)
    total += GIGABIT_SECOND
    vi.advanceTimersByTime(5000)
    expect(series.length).toBe(3)
    // It can start again; the next point covers the pause.
    series.start(1000, () => total)
    expect(series.current()).toMatchObject({ tSec: 8, instantGbps: 0.2 })
    series[Symbol.dispose]()
    expect(series.sampling).toBe(false)
  })

  it('validates start arguments', () => {
    const series = new ThroughputSeries()
    for (const interval of [0, -5, 1.5, NaN, 2 ** 31]) {
      expect(thrownCode(() => series.start(interval, () => 0)).argument).toBe('intervalMs')
    }
    expect(thrownCode(() => series.start(1000, 5 as never)).argument).toBe('read')
    expect(series.sampling).toBe(false)
  })

  it('does not keep the event loop alive', () => {
    const timeouts = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
    const before = timeouts()
    const series = new ThroughputSeries()
    series.start(1000, () => 0)
    try {
      expect(timeouts()).toBe(before)
      const ref = setTimeout(() => {}, 1000) // a referenced timer is counted: the probe works
      expect(timeouts()).toBe(before + 1)
      clearTimeout(ref)
    } finally {
      series.stop()
    }
  })
})
