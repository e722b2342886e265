/**
 * An in-process metrics registry: counters, gauges and histograms that the
 * transport layers update on their hot paths, read out as a JSON snapshot or as
 * Prometheus text.
 *
 * Hot path. Registering a metric looks it up by name and labels once and
 * returns a handle; the handle holds its own value, so `add`/`set`/`observe`
 * are a check and a number update on a field of that object: no Map lookup, no
 * string building, no allocation. Register at setup time, keep the handle.
 *
 * A metric family is one name with one type, one help text and one set of
 * label names; every distinct combination of label values is one series of
 * the family with its own handle.
 */

import { StoqInvalidArgumentError, checkOptions, optionKeys, type MetricHandle, type MetricsSink, type SpecificationVersion } from '@stoq/interface'
import { show } from './args.js'
import { DEFAULT_PREFIX } from './defaults.js'

export type MetricType = 'counter' | 'gauge' | 'histogram'

/** Label names to label values of one series. */
export type Labels = Readonly<Record<string, string>>

/** Options of `createMetricsRegistry`. */
export interface MetricsRegistryOptions {
  /** Prepended to every registered name, e.g. `myapp_`. The full name must still be a valid metric name. */
  prefix: string
  /** Labels added to every series, e.g. `{ instance: 'edge-1' }`. A metric's own labels may not repeat them. */
  defaultLabels: Record<string, string>
}

/** A monotonically increasing count. Name counters with a `_total` suffix, as Prometheus recommends. */
export interface CounterHandle extends MetricHandle {
  readonly type: 'counter'
  readonly name: string
  readonly labels: Labels
  readonly value: number
  /** Add a finite value >= 0 (hot). Throws `StoqInvalidArgumentError` for a negative, infinite or NaN value. */
  add(value: number): void
  /**
   * Set the count (hot), to mirror a counter kept elsewhere (e.g. from a `collect` callback).
   * Accepts a finite value >= 0; a value lower than before reads as a counter reset to Prometheus.
   */
  set(value: number): void
}

/** A value that goes up and down. */
export interface GaugeHandle extends MetricHandle {
  readonly type: 'gauge'
  readonly name: string
  readonly labels: Labels
  readonly value: number
  /** Add a value, negative to subtract (hot). */
  add(value: number): void
  /** Set the value (hot). NaN and ±Infinity are kept as given (JSON writes them as null). */
  set(value: number): void
}

/** A distribution of observed values over fixed buckets. */
export interface HistogramHandle {
  readonly type: 'histogram'
  readonly name: string
  readonly labels: Labels
  /** Finite, strictly increasing upper bounds (inclusive); the implicit last bucket is `+Inf`. */
  readonly buckets: readonly number[]
  /** Number of observations. */
  readonly count: number
  /** Sum of the observed values. */
  readonly sum: number
  /** Count `value` into the first bucket whose bound is >= value (hot). Throws for NaN and ±Infinity. */
  observe(value: number): void
}

export interface ScalarSeriesSnapshot {
  labels: Record<string, string>
  value: number
}

export interface HistogramSeriesSnapshot {
  labels: Record<string, string>
  /** Cumulative: `counts[i]` observations were <= `buckets[i]` (the `+Inf` bucket is `count`). */
  counts: number[]
  count: number
  sum: number
}

export interface CounterFamilySnapshot {
  name: string
  help: string
  type: 'counter'
  series: ScalarSeriesSnapshot[]
}

export interface GaugeFamilySnapshot {
  name: string
  help: string
  type: 'gauge'
  series: ScalarSeriesSnapshot[]
}

export interface HistogramFamilySnapshot {
  name: string
  help: string
  type: 'histogram'
  /** Finite upper bounds, shared by every series of the family. */
  buckets: number[]
  series: HistogramSeriesSnapshot[]
}

export type MetricFamilySnapshot = CounterFamilySnapshot | GaugeFamilySnapshot | HistogramFamilySnapshot

/** Every metric at one moment, as plain data (families and series in registration order). */
export interface MetricsSnapshot {
  metrics: MetricFamilySnapshot[]
}

/** Anything that can produce a snapshot: a `MetricsRegistry`, or an object merging several. */
export interface MetricsSource {
  snapshot(): MetricsSnapshot
}

export interface MetricsRegistry extends MetricsSink, MetricsSource {
  readonly specificationVersion: SpecificationVersion
  /**
   * The counter `name` with these labels, created at 0 on first use. The same
   * name and labels (in any key order) always return the same handle.
   */
  counter(name: string, help: string, labels?: Record<string, string>): CounterHandle
  /** The gauge `name` with these labels, created at 0 on first use; same identity rule as `counter`. */
  gauge(name: string, help: string, labels?: Record<string, string>): GaugeHandle
  /**
   * The histogram `name` with these labels. `buckets` are finite, strictly
   * increasing upper bounds (a trailing `Infinity` is accepted and dropped);
   * every series of a family must use the same buckets.
   */
  histogram(name: string, help: string, buckets: readonly number[], labels?: Record<string, string>): HistogramHandle
  /**
   * Register a synchronous callback run before every `snapshot()` (and so
   * before every Prometheus exposition), to pull values from objects that keep
   * their own counters: `registry.collect(() => inUse.set(pool.stats().inUse))`.
   * Returns a function that unregisters it. Errors thrown by a callback
   * propagate to the caller of `snapshot()`.
   */
  collect(collector: () => void): () => void
  /** Run the collectors, then copy every metric into plain JSON-able data. */
  snapshot(): MetricsSnapshot
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'] as const
const OPTION_NAMES = optionKeys<MetricsRegistryOptions>({ prefix: true, defaultLabels: true })

class Counter implements CounterHandle {
  readonly type = 'counter'
  readonly name: string
  readonly labels: Labels
  #value = 0

  constructor(name: string, labels: Labels) {
    this.name = name
    this.labels = labels
  }

  get value(): number {
    return this.#value
  }

  add(value: number): void {
    // typeof first: '5' >= 0 holds, and a BigInt or a Symbol would throw a TypeError here.
    if (typeof value !== 'number' || !(value >= 0 && value < Infinity)) throw badCount(this.name, 'add', value)
    this.#value += value
  }

  set(value: number): void {
    if (typeof value !== 'number' || !(value >= 0 && value < Infinity)) throw badCount(this.name, 'set', value)
    this.#value = value
  }
}

class Gauge implements GaugeHandle {
  readonly type = 'gauge'
  readonly name: string
  readonly labels: Labels
  #value = 0

  constructor(name: string, labels: Labels) {
    this.name = name
    this.labels = labels
  }

  get value(): number {
    return this.#value
  }

  add(value: number): void {
    if (typeof value !== 'number') throw badGauge(this.name, 'add', value)
    this.#value += value
  }

  set(value: number): void {
    if (typeof value !== 'number') throw badGauge(this.name, 'set', value)
    this.#value = value
  }
}

class Histogram implements HistogramHandle {
  readonly type = 'histogram'
  readonly name: string
  readonly labels: Labels
  readonly buckets: readonly number[]
  readonly #bounds: Float64Array
  /** Per bucket (not cumulative); the last slot is the `+Inf` bucket. */
  readonly #counts: Float64Array
  #count = 0
  #sum = 0

  constructor(name: string, labels: Labels, buckets: readonly number[], bounds: Float64Array) {
    this.name = name
    this.labels = labels
    this.buckets = buckets
    this.#bounds = bounds
    this.#counts = new Float64Array(bounds.length + 1)
  }

  get count(): number {
    return this.#count
  }

  get sum(): number {
    return this.#sum
  }

  observe(value: number): void {
    if (typeof value !== 'number' || !(value > -Infinity && value < Infinity)) {
      throw new StoqInvalidArgumentError('value', `histogram ${this.name} observes finite numbers, got ${show(value)}`)
    }
    // Binary search for the first bound >= value; bounds.length when none (the +Inf bucket).
    const bounds = this.#bounds
    let low = 0
    let high = bounds.length
    while (low < high) {
      const mid = (low + high) >>> 1
      if (value <= bounds[mid]!) high = mid
      else low = mid + 1
    }
    this.#counts[low]! += 1
    this.#count += 1
    this.#sum += value
  }

  /** Cumulative bucket counts, one per finite bound. */
  cumulativeCounts(): number[] {
    const out = new Array<number>(this.#bounds.length)
    let running = 0
    for (let i = 0; i < out.length; i++) {
      running += this.#counts[i]!
      out[i] = running
    }
    return out
  }
}

type Series = Counter | Gauge | Histogram

interface Family {
  readonly name: string
  readonly help: string
  readonly type: MetricType
  /** Sorted label names joined by commas (default labels included). */
  readonly labelNames: string
  /** Histograms only: the validated finite bounds. */
  readonly buckets: readonly number[] | null
  readonly bounds: Float64Array | null
  readonly series: Map<string, Series>
}

class Registry implements MetricsRegistry {
  readonly specificationVersion = 'v1'
  readonly #prefix: string
  readonly #defaultLabels: Labels
  readonly #families = new Map<string, Family>()
  /** One object per registration, so that the same function registered twice unregisters one at a time. */
  readonly #collectors: Array<{ readonly run: () => unknown }> = []

  constructor(options: MetricsRegistryOptions) {
    this.#prefix = options.prefix
    this.#defaultLabels = options.defaultLabels
  }

  counter(name: string, help: string, labels?: Record<string, string>): CounterHandle {
    return this.#register('counter', name, help, labels, null) as Counter
  }

  gauge(name: string, help: string, labels?: Record<string, string>): GaugeHandle {
    return this.#register('gauge', name, help, labels, null) as Gauge
  }

  histogram(name: string, help: string, buckets: readonly number[], labels?: Record<string, string>): HistogramHandle {
    return this.#register('histogram', name, help, labels, validateBuckets(buckets)) as Histogram
  }

  collect(collector: () => void): () => void {
    if (typeof collector !== 'function') {
      throw new StoqInvalidArgumentError('collector', `expected a function, got ${show(collector)}`)
    }
    const entry = { run: collector }
    this.#collectors.push(entry)
    return () => {
      const index = this.#collectors.indexOf(entry)
      if (index !== -1) this.#collectors.splice(index, 1)
    }
  }

  snapshot(): MetricsSnapshot {
    for (const collector of [...this.#collectors]) {
      const result = collector.run()
      if (isThenable(result)) {
        throw new StoqInvalidArgumentError(
          'collector',
          'collect() callbacks run synchronously; a callback returned a promise (update the metrics before it returns)',
        )
      }
    }
    const metrics: MetricFamilySnapshot[] = []
    for (const family of this.#families.values()) metrics.push(snapshotFamily(family))
    return { metrics }
  }

  #register(type: MetricType, rawName: string, help: string, rawLabels: Record<string, string> | undefined, buckets: number[] | null): Series {
    if (typeof rawName !== 'string') throw new StoqInvalidArgumentError('name', `expected a string, got ${show(rawName)}`)
    const name = this.#prefix + rawName
    validateMetricName(name)
    if (typeof help !== 'string') throw new StoqInvalidArgumentError('help', `expected a string, got ${show(help)}`)
    const labels = this.#mergeLabels(type, name, rawLabels)
    const labelNames = Object.keys(labels).join(',')

    let family = this.#families.get(name)
    if (family === undefined) {
      this.#checkHistogramCollisions(type, name)
      const bounds = buckets === null ? null : Float64Array.from(buckets)
      family = {
        name,
        help,
        type,
        labelNames,
        buckets: buckets === null ? null : Object.freeze(buckets),
        bounds,
        series: new Map(),
      }
      this.#families.set(name, family)
    } else {
      checkSameFamily(family, type, help, labelNames, buckets)
    }

    const key = JSON.stringify(Object.values(labels))
    let series = family.series.get(key)
    if (series === undefined) {
      const frozen = Object.freeze(labels)
      series =
        type === 'counter'
          ? new Counter(name, frozen)
          : type === 'gauge'
            ? new Gauge(name, frozen)
            : new Histogram(name, frozen, family.buckets!, family.bounds!)
      family.series.set(key, series)
    }
    return series
  }

  /** Default labels plus the metric's own, validated, with names in sorted order. */
  #mergeLabels(type: MetricType, name: string, labels: Record<string, string> | undefined): Record<string, string> {
    if (labels !== undefined && (typeof labels !== 'object' || labels === null || Array.isArray(labels))) {
      throw new StoqInvalidArgumentError('labels', `expected an object of label names to string values, got ${show(labels)}`)
    }
    const merged: Record<string, string> = { ...this.#defaultLabels }
    for (const [labelName, value] of Object.entries(labels ?? {})) {
      validateLabel(labelName, value)
      if (type === 'histogram' && labelName === 'le') {
        throw new StoqInvalidArgumentError('labels', `"le" is reserved for the bucket bounds of histogram ${name}`)
      }
      if (Object.hasOwn(this.#defaultLabels, labelName)) {
        throw new StoqInvalidArgumentError('labels', `"${labelName}" of ${name} is already one of the registry's default labels`)
      }
      merged[labelName] = value
    }
    if (type === 'histogram' && Object.hasOwn(merged, 'le')) {
      throw new StoqInvalidArgumentError('labels', `"le" is reserved for the bucket bounds of histogram ${name}`)
    }
    const sorted: Record<string, string> = {}
    for (const labelName of Object.keys(merged).sort()) sorted[labelName] = merged[labelName]!
    return sorted
  }

  /** A histogram `h` exposes `h_bucket`, `h_sum` and `h_count`: no other family may take those names. */
  #checkHistogramCollisions(type: MetricType, name: string): void {
    for (const suffix of HISTOGRAM_SUFFIXES) {
      if (type === 'histogram' && this.#families.has(name + suffix)) {
        throw new StoqInvalidArgumentError(
          'name',
          `histogram ${name} would expose ${name + suffix}, which is already registered as a ${this.#families.get(name + suffix)!.type}`,
        )
      }
      if (name.endsWith(suffix)) {
        const base = this.#families.get(name.slice(0, -suffix.length))
        if (base !== undefined && base.type === 'histogram') {
          throw new StoqInvalidArgumentError('name', `${name} is one of the series of histogram ${base.name}`)
        }
      }
    }
  }
}

/**
 * A new, empty metrics registry. Options are validated eagerly; unknown
 * options throw `StoqInvalidArgumentError`.
 */
export function createMetricsRegistry(options: Partial<MetricsRegistryOptions> = {}): MetricsRegistry {
  return new Registry(resolveOptions(options))
}

function resolveOptions(options: Partial<MetricsRegistryOptions>): MetricsRegistryOptions {
  checkOptions(options, OPTION_NAMES)
  const prefix = options.prefix ?? DEFAULT_PREFIX
  if (typeof prefix !== 'string' || (prefix !== '' && !/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix))) {
    throw new StoqInvalidArgumentError('prefix', `expected a metric name prefix matching [a-zA-Z_:][a-zA-Z0-9_:]*, got ${show(prefix)}`)
  }
  const defaultLabels = options.defaultLabels ?? {}
  if (typeof defaultLabels !== 'object' || defaultLabels === null || Array.isArray(defaultLabels)) {
    throw new StoqInvalidArgumentError('defaultLabels', `expected an object of label names to string values, got ${show(defaultLabels)}`)
  }
  const labels: Record<string, string> = {}
  for (const [labelName, value] of Object.entries(defaultLabels)) {
    validateLabel(labelName, value, 'defaultLabels')
    labels[labelName] = value
  }
  return { prefix, defaultLabels: Object.freeze(labels) }
}

function validateMetricName(name: string): void {
  if (!METRIC_NAME.test(name)) {
    throw new StoqInvalidArgumentError('name', `metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, got ${JSON.stringify(name)}`)
  }
  if (name.startsWith('__')) {
    throw new StoqInvalidArgumentError('name', `names starting with "__" are reserved by Prometheus, got ${JSON.stringify(name)}`)
  }
}

function validateLabel(labelName: string, value: unknown, argument = 'labels'): void {
  if (!LABEL_NAME.test(labelName)) {
    throw new StoqInvalidArgumentError(argument, `label names match [a-zA-Z_][a-zA-Z0-9_]*, got ${JSON.stringify(labelName)}`)
  }
  if (labelName.startsWith('__')) {
    throw new StoqInvalidArgumentError(argument, `label names starting with "__" are reserved by Prometheus, got ${JSON.stringify(labelName)}`)
  }
  if (typeof value !== 'string') {
    throw new StoqInvalidArgumentError(argument, `label ${labelName} must have a string value, got ${show(value)}`)
  }
}

function validateBuckets(buckets: readonly number[]): number[] {
  if (!Array.isArray(buckets)) {
    throw new StoqInvalidArgumentError('buckets', `expected an array of increasing finite numbers, got ${show(buckets)}`)
  }
  const bounds = buckets[buckets.length - 1] === Infinity ? buckets.slice(0, -1) : [...buckets]
  for (let i = 0; i < bounds.length; i++) {
    const bound: unknown = bounds[i]
    if (typeof bound !== 'number' || !Number.isFinite(bound)) {
      throw new StoqInvalidArgumentError('buckets', `bucket bounds are finite numbers (+Inf is implicit), got ${show(bound)} at index ${i}`)
    }
    if (i > 0 && !(bound > bounds[i - 1]!)) {
      throw new StoqInvalidArgumentError('buckets', `bucket bounds must be strictly increasing, got ${bounds[i - 1]} then ${bound}`)
    }
  }
  return bounds
}

function checkSameFamily(family: Family, type: MetricType, help: string, labelNames: string, buckets: number[] | null): void {
  if (family.type !== type) {
    throw new StoqInvalidArgumentError('name', `${family.name} is already registered as a ${family.type}, not a ${type}`)
  }
  if (family.help !== help) {
    throw new StoqInvalidArgumentError('help', `${family.name} is already registered with help ${JSON.stringify(family.help)}, got ${JSON.stringify(help)}`)
  }
  if (family.labelNames !== labelNames) {
    throw new StoqInvalidArgumentError('labels', `every series of ${family.name} has the label names [${family.labelNames}], got [${labelNames}]`)
  }
  if (buckets !== null) {
    const known = family.buckets!
    if (known.length !== buckets.length || known.some((bound, i) => bound !== buckets[i])) {
      throw new StoqInvalidArgumentError(
        'buckets',
        `histogram ${family.name} is already registered with buckets [${known.join(', ')}], got [${buckets.join(', ')}]`,
      )
    }
  }
}

function snapshotFamily(family: Family): MetricFamilySnapshot {
  const { name, help } = family
  if (family.type === 'histogram') {
    const series: HistogramSeriesSnapshot[] = []
    for (const s of family.series.values()) {
      const h = s as Histogram
      series.push({ labels: { ...h.labels }, counts: h.cumulativeCounts(), count: h.count, sum: h.sum })
    }
    return { name, help, type: 'histogram', buckets: [...family.buckets!], series }
  }
  const series: ScalarSeriesSnapshot[] = []
  for (const s of family.series.values()) {
    series.push({ labels: { ...s.labels }, value: (s as Counter | Gauge).value })
  }
  return family.type === 'counter' ? { name, help, type: 'counter', series } : { name, help, type: 'gauge', series }
}

function badCount(name: string, method: 'add' | 'set', value: unknown): StoqInvalidArgumentError {
  return new StoqInvalidArgumentError(
    'value',
    `counter ${name} ${method === 'add' ? 'only goes up: add() takes' : 'set() takes'} a finite number >= 0, got ${show(value)}`,
  )
}

function badGauge(name: string, method: 'add' | 'set', value: unknown): StoqInvalidArgumentError {
  return new StoqInvalidArgumentError('value', `gauge ${name} ${method}() takes a number, got ${show(value)}`)
}

function isThenable(value: unknown): boolean {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as { then?: unknown }).then === 'function'
}
