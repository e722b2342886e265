import { boundedOutcome, wrongValues, withoutWrongValues, type MisuseOutcome, type WrongValue, type WrongValueName } from '@stoq/compliance-tests'
import { describe, expect, it } from 'vitest'
import { inspect } from 'node:util'
import { StoqError } from '@stoq/interface'
import * as api from '../src/index.js'
import {
  ThroughputSeries,
  chartPeakLabel,
  createMetricsHandler,
  createMetricsRegistry,
  escapeXml,
  formatChartGbps,
  niceTickStep,
  parsePrometheusText,
  renderThroughputChart,
  throughputChartSamples,
  toPrometheusText,
} from '../src/index.js'

/**
 * API misuse (issue #6): every public entry point given wrong types, out-of-range
 * numbers or closed objects answers with a typed StoqError (thrown or rejected)
 * within a bounded time: never a TypeError, a corrupted value, a crash or a hang.
 */

const LIMIT_MS = 2000

const WRONG = wrongValues(
  'null',
  'undefined',
  'NaN',
  'Infinity',
  '-Infinity',
  '-1',
  '0',
  '1.5',
  '2^64',
  'a string',
  'a numeric string',
  'an object',
  'a null-prototype object',
  'an array',
  'a Symbol',
  'a function',
  'a BigInt',
  'bytes',
  'true',
)
const pick = (...names: WrongValueName[]): WrongValue[] => wrongValues(...names)
const except = (...names: WrongValueName[]): WrongValue[] => withoutWrongValues(WRONG, ...names)
/** Values that are not a number at all. */
const NOT_NUMBER = except('NaN', 'Infinity', '-Infinity', '-1', '0', '1.5', '2^64')
/** Values that are not a finite number. */
const NOT_FINITE = except('-1', '0', '1.5', '2^64')
/** For an option, `null` and `undefined` mean "the default". */
const OPT = except('null', 'undefined')

type Outcome = MisuseOutcome

const outcome = (fn: () => unknown): Promise<Outcome> => boundedOutcome(fn, LIMIT_MS)

async function expectTyped(label: string, fn: () => unknown, code = 'STOQ_ERR_INVALID_ARG', argument?: string): Promise<void> {
  const r = await outcome(fn)
  if (r.ok) throw new Error(`${label}: expected ${code}, got a result: ${inspect(r.value, { depth: 0 })}`)
  if (!StoqError.isInstance(r.error)) throw new Error(`${label}: expected ${code}, got a non-STOQ error: ${inspect(r.error)}`)
  expect(r.error.code, label).toBe(code)
  if (argument !== undefined) expect((r.error.data as { argument?: string }).argument, label).toBe(argument)
}

/** Every case of a table: `[label, call, argument]`. */
async function table(cases: Array<[string, () => unknown, string?]>): Promise<void> {
  for (const [label, fn, argument] of cases) await expectTyped(label, fn, 'STOQ_ERR_INVALID_ARG', argument)
}

const CONSTANTS = [
  'CHART_DEFAULT_HEIGHT',
  'CHART_DEFAULT_TITLE',
  'CHART_DEFAULT_WIDTH',
  'CHART_NO_DATA_TEXT',
  'CHART_X_AXIS_TITLE',
  'CHART_Y_AXIS_TITLE',
  'DEFAULT_METRICS_PATH',
  'DEFAULT_PREFIX',
  'DEFAULT_RTT_BUCKETS_MS',
  'DEFAULT_SAMPLE_INTERVAL_MS',
  'DEFAULT_SERIES_CAPACITY',
  'MAX_SERIES_CAPACITY',
  'PROMETHEUS_CONTENT_TYPE',
]
const FUNCTIONS = [
  'ThroughputSeries',
  'chartPeakLabel',
  'createMetricsHandler',
  'createMetricsRegistry',
  'escapeXml',
  'formatChartGbps',
  'niceTickStep',
  'parsePrometheusText',
  'renderThroughputChart',
  'throughputChartSamples',
  'toPrometheusText',
]

describe('monitoring: API misuse', () => {
  it('covers every export of src/index.ts', () => {
    expect(Object.keys(api).sort()).toEqual([...CONSTANTS, ...FUNCTIONS].sort())
    for (const name of CONSTANTS) expect(typeof (api as Record<string, unknown>)[name]).not.toBe('function')
  })

  it('chart number formatting refuses what is not a finite number', async () => {
    const cases: Array<[string, () => unknown, string?]> = []
    for (const [label, v] of NOT_FINITE) {
      cases.push([`formatChartGbps(${label})`, () => formatChartGbps(v as never), 'gbps'])
      cases.push([`chartPeakLabel(${label})`, () => chartPeakLabel(v as never), 'gbps'])
    }
    for (const [label, v] of [...NOT_FINITE, ...pick('-1', '0')]) cases.push([`niceTickStep(${label}, 5)`, () => niceTickStep(v as never, 5), 'span'])
    for (const [label, v] of [...NOT_FINITE, ...pick('0', '-1', '1.5', '2^64')]) {
      cases.push([`niceTickStep(10, ${label})`, () => niceTickStep(10, v as never), 'maxTicks'])
    }
    await table(cases)
    // Valid input keeps its answers; a subnormal span still gets a step > 0.
    expect(formatChartGbps(-2.5)).toBe('-2.50')
    expect(niceTickStep(10, 5)).toBe(2)
    expect(niceTickStep(Number.MIN_VALUE, 1)).toBeGreaterThan(0)
  })

  it('escapeXml refuses what is not a string', async () => {
    await table(except('a string', 'a numeric string').map(([label, v]) => [`escapeXml(${label})`, () => escapeXml(v as never), 'text']))
  })

  it('throughputChartSamples and renderThroughputChart refuse wrong sources, samples and options', async () => {
    const cases: Array<[string, () => unknown, string?]> = []
    for (const [label, v] of except('an array')) cases.push([`throughputChartSamples(${label})`, () => throughputChartSamples(v as never), 'source'])
    cases.push(['throughputChartSamples([null])', () => throughputChartSamples([null] as never)])
    cases.push(['throughputChartSamples({ points: [5] })', () => throughputChartSamples({ points: [5] } as never)])
    cases.push(['throughputChartSamples({ points() { return null } })', () => throughputChartSamples({ points: () => null } as never), 'source'])
    for (const [label, v] of except('an array')) cases.push([`renderThroughputChart(${label})`, () => renderThroughputChart(v as never), 'samples'])
    for (const [label, v] of except('an object', 'a null-prototype object', 'undefined', 'a function')) {
      cases.push([`renderThroughputChart([], ${label})`, () => renderThroughputChart([], v as never), 'options'])
    }
    for (const [label, v] of NOT_FINITE) {
      cases.push([`sample t = ${label}`, () => renderThroughputChart([{ t: v, gbps: 1, averageGbps: 1 }] as never)])
      cases.push([`peak.gbps = ${label}`, () => renderThroughputChart([], { peak: { t: 0, gbps: v } } as never), 'peak.gbps'])
    }
    for (const [label, v] of OPT) {
      if (typeof v === 'number' && Number.isInteger(v) && v >= 400 && v <= 10_000) continue
      cases.push([`width = ${label}`, () => renderThroughputChart([], { width: v } as never), 'width'])
      cases.push([`height = ${label}`, () => renderThroughputChart([], { height: v } as never), 'height'])
      if (typeof v !== 'string') cases.push([`title = ${label}`, () => renderThroughputChart([], { title: v } as never), 'title'])
    }
    cases.push(['an unknown option', () => renderThroughputChart([], { colour: 'red' } as never), 'colour'])
    await table(cases)
  })

  it('the registry refuses wrong names, help, labels, buckets and options', async () => {
    const cases: Array<[string, () => unknown, string?]> = []
    for (const [label, v] of except('an object', 'a null-prototype object', 'undefined')) {
      cases.push([`createMetricsRegistry(${label})`, () => createMetricsRegistry(v as never), 'options'])
    }
    cases.push(['an unknown option', () => createMetricsRegistry({ defaultLabel: {} } as never), 'defaultLabel'])
    for (const [label, v] of OPT.filter(([, v]) => typeof v !== 'string')) {
      cases.push([`prefix = ${label}`, () => createMetricsRegistry({ prefix: v } as never), 'prefix'])
    }
    for (const [label, v] of except('an object', 'a null-prototype object', 'undefined', 'null')) {
      cases.push([`defaultLabels = ${label}`, () => createMetricsRegistry({ defaultLabels: v } as never), 'defaultLabels'])
    }
    const r = createMetricsRegistry()
    for (const [label, v] of except('a string', 'a numeric string')) {
      cases.push([`counter(${label})`, () => r.counter(v as never, 'h'), 'name'])
      cases.push([`gauge(${label})`, () => r.gauge(v as never, 'h'), 'name'])
      cases.push([`histogram(${label})`, () => r.histogram(v as never, 'h', [1]), 'name'])
      cases.push([`counter help = ${label}`, () => r.counter('c_total', v as never), 'help'])
    }
    for (const [label, v] of except('an object', 'a null-prototype object', 'undefined')) {
      cases.push([`labels = ${label}`, () => r.counter('c_total', 'h', v as never), 'labels'])
    }
    for (const [label, v] of WRONG.filter(([, v]) => typeof v !== 'string')) {
      cases.push([`label value = ${label}`, () => r.counter('c_total', 'h', { a: v } as never), 'labels'])
    }
    for (const [label, v] of except('an array')) cases.push([`buckets = ${label}`, () => r.histogram('h', 'h', v as never), 'buckets'])
    for (const [label, v] of except('-1', '0', '1.5', '2^64', 'Infinity')) {
      cases.push([`bucket = ${label}`, () => r.histogram('h', 'h', [v] as never), 'buckets'])
    }
    cases.push(['buckets not increasing', () => r.histogram('h', 'h', [2, 1]), 'buckets'])
    // biome-ignore lint/suspicious/noSparseArray: the hole is the wrong value under test
    cases.push(['a sparse bucket array', () => r.histogram('h', 'h', [, 1] as never), 'buckets'])
    for (const [label, v] of except('a function')) cases.push([`collect(${label})`, () => r.collect(v as never), 'collector'])
    await table(cases)
  })

  it('metric handles refuse values that are not numbers, and keep their value', async () => {
    const r = createMetricsRegistry()
    const counter = r.counter('c_total', 'h')
    const gauge = r.gauge('g', 'h')
    const histogram = r.histogram('h', 'h', [1, 2])
    const cases: Array<[string, () => unknown, string?]> = []
    for (const [label, v] of except('0', '1.5', '2^64')) {
      cases.push([`counter.add(${label})`, () => counter.add(v as never), 'value'])
      cases.push([`counter.set(${label})`, () => counter.set(v as never), 'value'])
    }
    for (const [label, v] of NOT_NUMBER) {
      cases.push([`gauge.add(${label})`, () => gauge.add(v as never), 'value'])
      cases.push([`gauge.set(${label})`, () => gauge.set(v as never), 'value'])
    }
    for (const [label, v] of NOT_FINITE) cases.push([`histogram.observe(${label})`, () => histogram.observe(v as never), 'value'])
    await table(cases)
    expect(counter.value).toBe(0)
    expect(gauge.value).toBe(0)
    expect(histogram.count).toBe(0)
    expect(histogram.sum).toBe(0)
    // Still an exposition Prometheus reads.
    expect(parsePrometheusText(toPrometheusText(r)).map((f) => f.name)).toEqual(['c_total', 'g', 'h'])
  })

  it('toPrometheusText and createMetricsHandler refuse what is not a metrics source', async () => {
    const cases: Array<[string, () => unknown, string?]> = []
    for (const [label, v] of WRONG) {
      cases.push([`toPrometheusText(${label})`, () => toPrometheusText(v as never), 'source'])
      cases.push([`createMetricsHandler(${label})`, () => createMetricsHandler(v as never), 'source'])
    }
    const badSnapshots: Array<[string, unknown]> = [
      ['null', null],
      ['5', 5],
      ['{}', {}],
      ['{ metrics: 5 }', { metrics: 5 }],
      ['{ metrics: [null] }', { metrics: [null] }],
      ['{ metrics: [{ type: "histogram" }] }', { metrics: [{ name: 'x', help: '', type: 'histogram' }] }],
      ['{ metrics: [{ series: [{ labels: null }] }] }', { metrics: [{ name: 'x', help: '', type: 'gauge', series: [{ labels: null, value: 1 }] }] }],
      ['{ metrics: [{ help: 5 }] }', { metrics: [{ name: 'x', help: 5, type: 'gauge', series: [] }] }],
    ]
    for (const [label, snapshot] of badSnapshots) {
      cases.push([`snapshot() returns ${label}`, () => toPrometheusText({ snapshot: () => snapshot } as never), 'source'])
    }
    const r = createMetricsRegistry()
    for (const [label, v] of except('an object', 'a null-prototype object', 'undefined')) {
      cases.push([`createMetricsHandler(r, ${label})`, () => createMetricsHandler(r, v as never), 'options'])
    }
    for (const [label, v] of OPT) cases.push([`path = ${label}`, () => createMetricsHandler(r, { path: v } as never), 'path'])
    cases.push(['an unknown option', () => createMetricsHandler(r, { pth: '/m' } as never), 'pth'])
    await table(cases)
  })

  it('parsePrometheusText refuses what is not a string', async () => {
    await table(except('a string', 'a numeric string').map(([label, v]) => [`parsePrometheusText(${label})`, () => parsePrometheusText(v as never), 'text']))
  })

  it('ThroughputSeries refuses wrong options, samples and intervals; a stopped series stays usable', async () => {
    const cases: Array<[string, () => unknown, string?]> = []
    for (const [label, v] of except('an object', 'a null-prototype object', 'undefined')) {
      cases.push([`new ThroughputSeries(${label})`, () => new ThroughputSeries(v as never), 'options'])
    }
    cases.push(['an unknown option', () => new ThroughputSeries({ capacty: 5 } as never), 'capacty'])
    for (const [label, v] of [...except('null', 'undefined', '1.5'), ['86401', 86_401] as [string, unknown]]) {
      if (v === 1) continue
      cases.push([`capacity = ${label}`, () => new ThroughputSeries({ capacity: v } as never), 'capacity'])
    }
    for (const [label, v] of OPT.filter(([, v]) => typeof v !== 'function')) {
      cases.push([`clock = ${label}`, () => new ThroughputSeries({ clock: v } as never), 'clock'])
    }
    let now = 0
    const series = new ThroughputSeries({ capacity: 4, clock: () => now })
    for (const [label, v] of except('0', '1.5', '2^64')) cases.push([`sample(${label})`, () => series.sample(v as never, 0), 'totalBytes'])
    for (const [label, v] of except('undefined', '-1', '0', '1.5', '2^64')) cases.push([`sample(0, ${label})`, () => series.sample(0, v as never), 'nowMs'])
    const badClock = new ThroughputSeries({ clock: () => 'soon' as never })
    cases.push(['a clock that returns a string', () => badClock.sample(0), 'nowMs'])
    for (const [label, v] of except('1.5' /* listed below */).concat([
      ['1.5', 1.5],
      ['2^31', 2 ** 31],
    ])) {
      if (v === 1) continue
      cases.push([`start(${label})`, () => series.start(v as never, () => 0), 'intervalMs'])
    }
    for (const [label, v] of except('a function')) cases.push([`start(1000, ${label})`, () => series.start(1000, v as never), 'read'])
    await table(cases)
    // Backwards time and a shrinking counter.
    series.sample(100, 10)
    await expectTyped('time backwards', () => series.sample(200, 5), 'STOQ_ERR_INVALID_ARG', 'nowMs')
    await expectTyped('counter backwards', () => series.sample(50, 20), 'STOQ_ERR_INVALID_ARG', 'totalBytes')
    // start twice, stop twice, then the series still samples.
    now = 30
    series.start(1_000_000, () => 1000)
    await expectTyped('start twice', () => series.start(1_000_000, () => 0), 'STOQ_ERR_INVALID_ARG', 'start')
    series.stop()
    series.stop()
    expect(series.sample(2000, 1000)).not.toBeNull()
    series[Symbol.dispose]()
  })
})
