import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { createMetricsRegistry, parsePrometheusText, toPrometheusText, type MetricsRegistry } from '../src/index.js'

/** A registry with every kind of metric, awkward label values and help text. */
function busyRegistry(defaultLabels: Record<string, string> = {}): MetricsRegistry {
  const r = createMetricsRegistry({ defaultLabels })
  r.counter('stoq_bytes_sent_total', 'Bytes sent.', { conn: '1' }).add(4096)
  r.counter('stoq_bytes_sent_total', 'Bytes sent.', { conn: 'a "quoted" \\ back\nslash' }).add(1e15)
  r.gauge('stoq_rtt_seconds', 'RTT with a \\ backslash\nand a newline.').set(0.000125)
  r.gauge('stoq_neg', 'Negative, infinite.', { k: 'neg' }).set(-3.5)
  r.gauge('stoq_neg', 'Negative, infinite.', { k: 'inf' }).set(Infinity)
  // Unlabelled: parse-prometheus-text-format folds labelled histogram series together (and drops
  // their _sum and _count), a limitation of that parser; our own reader is checked on labelled ones.
  const h = r.histogram('stoq_handshake_duration_seconds', 'Handshakes.', [0.001, 0.01, 0.1])
  for (const v of [0.0005, 0.002, 0.02, 0.5, 0.003]) h.observe(v)
  r.gauge('stoq_endpoint_info', 'Info.', { backend: 'gro', engine: 'quinn' }).set(1)
  return r
}

describe('exposition accepted by parse-prometheus-text-format', () => {
  it('yields every family, type, help text, label and value of the registry', () => {
    const registry = busyRegistry()
    const text = toPrometheusText(registry)
    const parsed = parsePrometheusTextFormat(text)
    const snapshot = registry.snapshot().metrics
    expect(parsed.map((f) => f.name)).toEqual(snapshot.map((f) => f.name))
    for (const [i, family] of snapshot.entries()) {
      const p = parsed[i]!
      expect(p.type).toBe(family.type.toUpperCase())
      expect(p.help).toBe(family.help)
      expect(p.metrics).toHaveLength(family.series.length)
      for (const [j, series] of family.series.entries()) {
        const m = p.metrics[j]!
        expect(m.labels ?? {}).toEqual(series.labels)
        if (family.type === 'histogram') {
          const s = series as (typeof family.series)[number]
          const buckets: Record<string, string> = {}
          family.buckets.forEach((bound, k) => {
            buckets[String(bound)] = String(s.counts[k])
          })
          buckets['+Inf'] = String(s.count)
          expect(m.buckets).toEqual(buckets)
          expect(Number(m.count)).toBe(s.count)
          expect(Number(m.sum)).toBe(s.sum)
        } else {
          const value = (series as { value: number }).value
          expect(m.value === '+Inf' ? Infinity : Number(m.value)).toBe(value)
        }
      }
    }
  })

  it('agrees with parsePrometheusText, the strict reader stoq stats uses', () => {
    const text = toPrometheusText(busyRegistry({ instance: 'edge-1' }))
    const theirs = parsePrometheusTextFormat(text)
    const ours = parsePrometheusText(text)
    expect(ours.map((f) => [f.name, f.type.toUpperCase(), f.help])).toEqual(theirs.map((f) => [f.name, f.type, f.help]))
    const counter = ours.find((f) => f.name === 'stoq_bytes_sent_total')!
    expect(counter.samples.map((s) => [s.labels, s.value])).toEqual(theirs[0]!.metrics.map((m) => [m.labels, Number(m.value)]))
    const hist = ours.find((f) => f.name === 'stoq_handshake_duration_seconds')!
    expect(hist.samples.map((s) => s.name)).toEqual([
      ...Array(4).fill('stoq_handshake_duration_seconds_bucket'),
      'stoq_handshake_duration_seconds_sum',
      'stoq_handshake_duration_seconds_count',
    ])
    expect(hist.samples.at(-1)!.value).toBe(5)
    expect(hist.samples.every((s) => s.labels.instance === 'edge-1')).toBe(true)
    expect(hist.samples.map((s) => s.labels.le)).toEqual(['0.001', '0.01', '0.1', '+Inf', undefined, undefined])
  })
})

describe('parsePrometheusText', () => {
  it('reads timestamps, untyped samples, comments and CRLF line ends', () => {
    const families = parsePrometheusText('# a comment\r\nup 1 1700000000000\r\n\r\n# TYPE x summary\nx_sum 2\nx_count 1\n')
    expect(families).toEqual([
      { name: 'up', help: '', type: 'untyped', samples: [{ name: 'up', labels: {}, value: 1, timestampMs: 1700000000000 }] },
      {
        name: 'x',
        help: '',
        type: 'summary',
        samples: [
          { name: 'x_sum', labels: {}, value: 2 },
          { name: 'x_count', labels: {}, value: 1 },
        ],
      },
    ])
  })

  it('refuses what is not an exposition with a typed error naming the line', () => {
    for (const bad of [
      '<!doctype html>\n<html></html>\n',
      '{"metrics": []}\n',
      'up{a="1" 2\n',
      'up{a=1} 2\n',
      'up{a="\\x"} 2\n',
      'up{a="1",a="2"} 2\n',
      'up one\n',
      'up 1 2 3\n',
      'up 1 1.5\n',
      '# TYPE up rate\nup 1\n',
    ]) {
      let caught: unknown
      try {
        parsePrometheusText(bad)
      } catch (err) {
        caught = err
      }
      expect(StoqError.isInstance(caught), bad).toBe(true)
      expect((caught as StoqError).code).toBe('STOQ_ERR_INVALID_ARG')
      expect((caught as Error).message).toMatch(/line \d+ is not Prometheus text format/)
    }
  })
})
