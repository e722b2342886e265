import { StoqError, StoqInvalidArgumentError, type MetricsSink } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { DEFAULT_RTT_BUCKETS_MS, createMetricsRegistry } from '../src/index.js'

/** The code, argument and message of the STOQ error `call` throws. */
function thrown(call: () => unknown): { code: string; argument: string; message: string } {
  try {
    call()
  } catch (err) {
    if (StoqError.isInstance(err)) {
      expect(err).toBeInstanceOf(StoqInvalidArgumentError)
      return { code: err.code, argument: (err.data as { argument: string }).argument, message: err.message }
    }
    throw err
  }
  throw new Error('expected a StoqError, nothing was thrown')
}

describe('handles', () => {
  it('implements MetricsSink v1', () => {
    const sink: MetricsSink = createMetricsRegistry()
    expect(sink.specificationVersion).toBe('v1')
    sink.counter('a_total', 'a').add(1)
    sink.gauge('b', 'b').set(2)
    sink.histogram('c', 'c', [1, 2]).observe(1.5)
  })

  it('returns the same handle for the same name and labels, in any key order', () => {
    const registry = createMetricsRegistry()
    const first = registry.counter('stoq_packets_total', 'Packets', { direction: 'sent', backend: 'dgram' })
    const again = registry.counter('stoq_packets_total', 'Packets', { backend: 'dgram', direction: 'sent' })
    const other = registry.counter('stoq_packets_total', 'Packets', { backend: 'dgram', direction: 'received' })
    expect(again).toBe(first)
    expect(other).not.toBe(first)
    expect(registry.gauge('g', 'G')).toBe(registry.gauge('g', 'G'))
    expect(registry.histogram('h', 'H', [1, 2], { x: 'y' })).toBe(registry.histogram('h', 'H', [1, 2], { x: 'y' }))
    // Writes through either reference land in the one slot.
    first.add(3)
    again.add(4)
    expect(first.value).toBe(7)
    expect(other.value).toBe(0)
  })

  it('keeps the value on the handle: updates need no registry lookup', () => {
    const registry = createMetricsRegistry()
    const counter = registry.counter('bytes_total', 'Bytes')
    const before = registry.snapshot()
    for (let i = 0; i < 100_000; i++) counter.add(1500)
    expect(counter.value).toBe(150_000_000)
    // An earlier snapshot is a copy, not a view.
    expect(before.metrics[0]).toMatchObject({ series: [{ value: 0 }] })
    // Handles created by registrations of other series do not share the slot.
    const labelled = registry.counter('bytes_total2', 'Bytes', { a: 'b' })
    labelled.add(1)
    expect(counter.value).toBe(150_000_000)
  })

  it('counts exactly after a known sequence', () => {
    const registry = createMetricsRegistry()
    const sent = registry.counter('stoq_bytes_sent_total', 'Bytes sent')
    const inFlight = registry.gauge('stoq_in_flight', 'Packets in flight')
    const sequence = [1200, 1200, 1200, 87, 0, 65_535]
    for (const n of sequence) sent.add(n)
    inFlight.add(10)
    inFlight.add(-3)
    inFlight.add(0.5)
    expect(sent.value).toBe(69_222) // 3 × 1200 + 87 + 65 535
    expect(inFlight.value).toBe(7.5)
    sent.set(100)
    inFlight.set(-2)
    expect(sent.value).toBe(100)
    expect(inFlight.value).toBe(-2)
    const snapshot = registry.snapshot()
    expect(snapshot.metrics).toEqual([
      { name: 'stoq_bytes_sent_total', help: 'Bytes sent', type: 'counter', series: [{ labels: {}, value: 100 }] },
      { name: 'stoq_in_flight', help: 'Packets in flight', type: 'gauge', series: [{ labels: {}, value: -2 }] },
    ])
  })

  it('refuses negative, NaN and infinite counter updates and keeps the value', () => {
    const counter = createMetricsRegistry().counter('c_total', 'C')
    counter.add(5)
    for (const bad of [-1, -0.001, NaN, Infinity, -Infinity]) {
      expect(thrown(() => counter.add(bad))).toMatchObject({ code: 'STOQ_ERR_INVALID_ARG', argument: 'value' })
      expect(thrown(() => counter.set(bad)).code).toBe('STOQ_ERR_INVALID_ARG')
    }
    expect(thrown(() => counter.add(-1)).message).toContain('c_total')
    expect(counter.value).toBe(5)
  })
})

describe('validation', () => {
  it('accepts valid metric and label names', () => {
    const registry = createMetricsRegistry()
    for (const name of ['a', '_a', ':a', 'a:b_c9', 'stoq_rtt_ms', 'A_Z']) registry.gauge(name, 'ok')
    registry.gauge('labelled', 'ok', { _a: 'x', B9: '', snake_case: 'any "text"\n\\' })
  })

  it('refuses bad metric names', () => {
    const registry = createMetricsRegistry()
    for (const name of ['', '9lives', 'a-b', 'a b', 'é', 'a.b', '__reserved', '__']) {
      expect(thrown(() => registry.counter(name, 'x'))).toMatchObject({ code: 'STOQ_ERR_INVALID_ARG', argument: 'name' })
    }
    expect(thrown(() => registry.gauge(42 as unknown as string, 'x')).argument).toBe('name')
    expect(thrown(() => registry.gauge('a-b', 'x')).message).toContain('[a-zA-Z_:][a-zA-Z0-9_:]*')
  })

  it('refuses bad label names and non-string values', () => {
    const registry = createMetricsRegistry()
    for (const labelName of ['', '9a', 'a:b', 'a-b', '__name__', '__x']) {
      expect(thrown(() => registry.counter('c_total', 'x', { [labelName]: 'v' }))).toMatchObject({
        code: 'STOQ_ERR_INVALID_ARG',
        argument: 'labels',
      })
    }
    expect(thrown(() => registry.gauge('g', 'x', { a: 1 as unknown as string })).argument).toBe('labels')
    expect(thrown(() => registry.gauge('g', 'x', 'a=b' as unknown as Record<string, string>)).argument).toBe('labels')
    expect(thrown(() => registry.gauge('g', 'x', null as unknown as Record<string, string>)).argument).toBe('labels')
    expect(thrown(() => registry.histogram('h', 'x', [1], { le: '1' })).message).toContain('"le" is reserved')
  })

  it('refuses a name registered with another type, help, label names or buckets', () => {
    const registry = createMetricsRegistry()
    registry.counter('m_total', 'Help', { a: '1' })
    expect(thrown(() => registry.gauge('m_total', 'Help', { a: '1' }))).toMatchObject({
      code: 'STOQ_ERR_INVALID_ARG',
      argument: 'name',
    })
    expect(thrown(() => registry.gauge('m_total', 'Help', { a: '1' })).message).toContain('already registered as a counter')
    expect(thrown(() => registry.histogram('m_total', 'Help', [1], { a: '1' })).argument).toBe('name')
    expect(thrown(() => registry.counter('m_total', 'Other help', { a: '1' })).argument).toBe('help')
    expect(thrown(() => registry.counter('m_total', 'Help', { b: '1' })).argument).toBe('labels')
    expect(thrown(() => registry.counter('m_total', 'Help')).argument).toBe('labels')
    registry.histogram('h', 'H', [1, 2])
    expect(thrown(() => registry.histogram('h', 'H', [1, 3])).argument).toBe('buckets')
    expect(registry.histogram('h', 'H', [1, 2, Infinity])).toBe(registry.histogram('h', 'H', [1, 2]))
  })

  it('refuses names that collide with the series of a histogram', () => {
    const registry = createMetricsRegistry()
    registry.histogram('rtt_ms', 'RTT', [1])
    for (const name of ['rtt_ms_bucket', 'rtt_ms_sum', 'rtt_ms_count']) {
      expect(thrown(() => registry.gauge(name, 'x')).argument).toBe('name')
    }
    registry.counter('size_count', 'x')
    expect(thrown(() => registry.histogram('size', 'x', [1])).message).toContain('size_count')
  })

  it('refuses bad buckets', () => {
    const registry = createMetricsRegistry()
    const cases: unknown[] = [[2, 1], [1, 1], [1, NaN], [-Infinity, 1], [1, Infinity, 2], ['1'], 'abc', null]
    for (const buckets of cases) {
      expect(thrown(() => registry.histogram('h', 'x', buckets as number[]))).toMatchObject({
        code: 'STOQ_ERR_INVALID_ARG',
        argument: 'buckets',
      })
    }
    // Only +Inf is a valid (if coarse) histogram.
    registry.histogram('only_inf', 'x', []).observe(3)
  })

  it('validates options eagerly', () => {
    expect(thrown(() => createMetricsRegistry({ prefx: 'a' } as never)).message).toBe(
      'Invalid prefx: unknown option (did you mean `prefix`?); accepted: prefix, defaultLabels',
    )
    expect(thrown(() => createMetricsRegistry({ prefix: 'a-b' })).argument).toBe('prefix')
    expect(thrown(() => createMetricsRegistry({ defaultLabels: { '1x': 'a' } })).argument).toBe('defaultLabels')
    expect(thrown(() => createMetricsRegistry(null as never)).argument).toBe('options')
    const registry = createMetricsRegistry({ defaultLabels: { app: 'demo' } })
    expect(thrown(() => registry.gauge('g', 'x', { app: 'other' })).message).toContain('default labels')
  })

  it('refuses to observe NaN or infinities', () => {
    const h = createMetricsRegistry().histogram('h', 'x', [1])
    for (const bad of [NaN, Infinity, -Infinity]) expect(thrown(() => h.observe(bad)).code).toBe('STOQ_ERR_INVALID_ARG')
    expect(h.count).toBe(0)
  })
})

describe('histograms', () => {
  it('counts into inclusive upper bounds, cumulatively', () => {
    const registry = createMetricsRegistry()
    const rtt = registry.histogram('rtt_ms', 'RTT', [1, 5, 10])
    const values = [0.2, 1, 1.0001, 4, 5, 7, 10, 10.5, 100, -3]
    for (const v of values) rtt.observe(v)
    expect(rtt.count).toBe(10)
    expect(rtt.sum).toBeCloseTo(
      values.reduce((a, b) => a + b, 0),
      10,
    )
    const [family] = registry.snapshot().metrics
    expect(family).toEqual({
      name: 'rtt_ms',
      help: 'RTT',
      type: 'histogram',
      buckets: [1, 5, 10],
      // <=1: 0.2, 1, -3 | <=5: + 1.0001, 4, 5 | <=10: + 7, 10 | +Inf: + 10.5, 100
      series: [{ labels: {}, counts: [3, 6, 8], count: 10, sum: rtt.sum }],
    })
  })

  it('matches a brute-force count for every default RTT bucket', () => {
    const registry = createMetricsRegistry()
    const h = registry.histogram('stoq_rtt_ms', 'RTT', DEFAULT_RTT_BUCKETS_MS)
    const values: number[] = []
    let x = 0.01
    while (x < 3000) {
      values.push(x)
      x *= 1.07
    }
    values.push(...DEFAULT_RTT_BUCKETS_MS) // exact bounds fall in their own bucket
    for (const v of values) h.observe(v)
    const family = registry.snapshot().metrics[0]!
    if (family.type !== 'histogram') throw new Error('expected a histogram')
    expect(family.series[0]!.counts).toEqual(DEFAULT_RTT_BUCKETS_MS.map((le) => values.filter((v) => v <= le).length))
    expect(family.series[0]!.count).toBe(values.length)
  })

  it('keeps series of one family apart', () => {
    const registry = createMetricsRegistry()
    const a = registry.histogram('h', 'x', [1], { peer: 'a' })
    const b = registry.histogram('h', 'x', [1], { peer: 'b' })
    a.observe(0.5)
    b.observe(2)
    b.observe(3)
    const family = registry.snapshot().metrics[0]!
    expect(family.type === 'histogram' && family.series).toEqual([
      { labels: { peer: 'a' }, counts: [1], count: 1, sum: 0.5 },
      { labels: { peer: 'b' }, counts: [0], count: 2, sum: 5 },
    ])
    expect(a.buckets).toEqual([1])
    expect(Object.isFrozen(a.buckets)).toBe(true)
  })
})

describe('snapshot and collectors', () => {
  it('is plain JSON-able data', () => {
    const registry = createMetricsRegistry({ prefix: 'stoq_', defaultLabels: { instance: 'edge-1' } })
    registry.counter('bytes_total', 'Bytes', { dir: 'rx' }).add(10)
    registry.gauge('pool_in_use', 'Buffers in use').set(3)
    registry.histogram('rtt_ms', 'RTT', [1, 2]).observe(1.5)
    const snapshot = registry.snapshot()
    expect(JSON.parse(JSON.stringify(snapshot))).toEqual(snapshot)
    expect(snapshot.metrics.map((m) => m.name)).toEqual(['stoq_bytes_total', 'stoq_pool_in_use', 'stoq_rtt_ms'])
    expect(snapshot.metrics[0]!.series[0]!.labels).toEqual({ dir: 'rx', instance: 'edge-1' })
    // The snapshot is a copy: mutating it changes nothing in the registry.
    snapshot.metrics[0]!.series[0]!.labels['dir'] = 'tx'
    expect(registry.snapshot().metrics[0]!.series[0]!.labels).toEqual({ dir: 'rx', instance: 'edge-1' })
  })

  it('runs collectors before every snapshot, in order, until unregistered', () => {
    const registry = createMetricsRegistry()
    const stats = { inUse: 4, hits: 10 }
    const inUse = registry.gauge('pool_in_use', 'In use')
    const hits = registry.counter('pool_hits_total', 'Hits')
    const calls: string[] = []
    const off = registry.collect(() => {
      calls.push('first')
      inUse.set(stats.inUse)
    })
    registry.collect(() => {
      calls.push('second')
      hits.set(stats.hits)
    })
    expect(registry.snapshot().metrics.map((m) => (m.series[0] as { value: number }).value)).toEqual([4, 10])
    stats.inUse = 9
    stats.hits = 15
    expect(registry.snapshot().metrics.map((m) => (m.series[0] as { value: number }).value)).toEqual([9, 15])
    off()
    off() // idempotent
    stats.inUse = 1
    expect((registry.snapshot().metrics[0]!.series[0] as { value: number }).value).toBe(9)
    expect(calls).toEqual(['first', 'second', 'first', 'second', 'second'])
  })

  it('unregisters one registration of a function registered twice', () => {
    const registry = createMetricsRegistry()
    let runs = 0
    const fn = (): void => {
      runs++
    }
    const off = registry.collect(fn)
    registry.collect(fn)
    off()
    registry.snapshot()
    expect(runs).toBe(1)
  })

  it('propagates collector errors and refuses async collectors', () => {
    const registry = createMetricsRegistry()
    registry.collect(() => {
      throw new Error('pool is gone')
    })
    expect(() => registry.snapshot()).toThrow('pool is gone')
    const other = createMetricsRegistry()
    other.collect((async () => {}) as () => void)
    expect(thrown(() => other.snapshot()).argument).toBe('collector')
    expect(thrown(() => other.collect('x' as unknown as () => void)).argument).toBe('collector')
  })
})
