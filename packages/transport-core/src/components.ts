import {
  StoqInvalidArgumentError,
  checkOptions,
  optionKeys,
  type BufferPool,
  type MetricsSink,
  type PacketBatcherFactory,
  type QuicEngineFactory,
  type UdpIoFactory,
} from '@stoq/interface'

/** Replaceable layers of an endpoint; each defaults to STOQ's own. */
export interface EndpointComponents {
  engine: QuicEngineFactory
  udp: UdpIoFactory
  /** Pool for transmit batches; must hold buffers of at least one max-size packet. */
  pool: BufferPool
  batcher: PacketBatcherFactory
  /**
   * Where the endpoint reports its counters. A sink with a `collect(fn)` hook
   * (like @stoq/monitoring's registry) is read when scraped, at no cost on the
   * data path; any other sink is updated once per second.
   */
  metrics: MetricsSink
  /**
   * Not a layer: milliseconds between the samples of every connection's
   * `throughput`, taken by one timer shared by the endpoint's connections
   * (runs only while a connection lives, does not keep the process alive).
   * Default 1000; 0 disables the timer (call `sampleThroughput()` yourself).
   */
  throughputSampleMs: number
}

const COMPONENT_KEYS = optionKeys<EndpointComponents>({ engine: true, udp: true, pool: true, batcher: true, metrics: true, throughputSampleMs: true })

/** Typed errors for components of the wrong shape (before anything is built). */
export function checkComponents(c: unknown): asserts c is Partial<EndpointComponents> {
  if (typeof c !== 'object' || c === null || Array.isArray(c)) {
    throw new StoqInvalidArgumentError('components', `expected an object, got ${c === null ? 'null' : Array.isArray(c) ? 'an array' : typeof c}`)
  }
  const o = checkOptions(c, COMPONENT_KEYS, 'components') as Record<string, unknown>
  const fn = (name: string): void => {
    if (o[name] !== undefined && typeof o[name] !== 'function') throw new StoqInvalidArgumentError(name, `expected a factory function, got ${typeof o[name]}`)
  }
  fn('engine')
  fn('udp')
  fn('batcher')
  const methods = (name: string, list: string[]): void => {
    const v = o[name] as Record<string, unknown> | undefined
    if (v === undefined) return
    if (typeof v !== 'object' || v === null || list.some((m) => typeof v[m] !== 'function')) {
      throw new StoqInvalidArgumentError(name, `expected an object with ${list.join(', ')} methods`)
    }
  }
  methods('pool', ['acquire', 'tryAcquire', 'release', 'view', 'stats', 'close'])
  methods('metrics', ['counter', 'gauge', 'histogram'])
  const ms = o.throughputSampleMs
  if (ms !== undefined && (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0 || ms > 2 ** 31 - 1)) {
    throw new StoqInvalidArgumentError('throughputSampleMs', `expected an integer number of ms >= 0, got ${typeof ms === 'number' ? ms : typeof ms}`)
  }
}
