/**
 * Endpoint-wide resource governance: what one endpoint may hold for its peers, across all
 * its connections, so that no client (or group of clients) can crash the process, wedge it or
 * take every resource from the others. Defaults come from what the process really has: the V8
 * heap limit (streams are JS objects) and the machine's or cgroup's memory (received bytes).
 *
 * When a budget is reached STOQ stops granting credit, so peers are held back by QUIC's own
 * flow control: a peer stream beyond `maxStreams` waits unread (no MAX_STREAMS, no
 * MAX_STREAM_DATA for it) until others end; readers stop taking bytes from the engine beyond
 * `maxReadBufferBytes` (no MAX_DATA); connection windows grow only while
 * `maxReceiveWindowBytes` has room, and a connection whose initial window does not fit is
 * refused with a typed reason.
 */
import fs from 'node:fs'
import os from 'node:os'
import { getHeapStatistics } from 'node:v8'
import { StoqInvalidArgumentError, checkOptions, describeValue, type QuicEngine } from '@stoq/interface'

export interface EndpointLimits {
  /**
   * Streams open at once, all connections, both directions. A peer stream beyond it is not
   * accepted yet: it waits in the engine, unread and uncredited, until other streams end.
   * Each connection may still open `minStreamsPerConnection` streams whatever the total, so
   * peers holding streams open cannot lock a new client out. Default: a quarter of the V8
   * heap limit at 16 KiB per stream (about 65 000 with a 4 GiB heap, 4 600 with 288 MiB).
   */
  maxStreams: number
  /** Streams every connection may have open whatever `maxStreams` says (default 16). */
  minStreamsPerConnection: number
  /**
   * Received stream bytes handed to stream readers and not yet read by the application,
   * all connections. Beyond it readers stop taking data from the engine, which then grants
   * peers no more credit. Default: 1/16 of the memory limit (machine or cgroup), 16 MiB to 1 GiB.
   */
  maxReadBufferBytes: number
  /** The same for one connection (default 64 MiB, at most `maxReadBufferBytes`). */
  maxReadBufferBytesPerConnection: number
  /**
   * Flow-control credit granted to peers, all connections: each connection commits its
   * connection window (and its datagram receive queue). Windows start at
   * `transport.initialMaxData` and grow towards `transport.maxConnectionWindow` while the
   * application reads fast and this budget has room; a new connection whose initial
   * commitment does not fit is refused (CONNECTION_REFUSED, reason "server busy: ..."), a
   * dial fails with STOQ_ERR_RESOURCE_LIMIT. An engine that tunes its own windows (quiche)
   * commits `maxConnectionWindow` at once. Default: half the memory limit (machine or cgroup).
   */
  maxReceiveWindowBytes: number
  /** Received datagrams waiting for `datagram` listeners, all connections; more are dropped (default 16 384). */
  maxQueuedDatagrams: number
  /** The same for one connection (default 1024). */
  maxQueuedDatagramsPerConnection: number
  /**
   * Work per connection and turn of the event loop: new peer streams announced, datagrams
   * delivered. The rest waits for the next turn, so one busy peer cannot hold the loop
   * (default 64 each).
   */
  streamsPerTurn: number
  datagramsPerTurn: number
  /**
   * Time `datagram` listeners may take per event-loop turn, all connections together (default
   * 10 ms, and never more than the time the rest of the loop took since they last ran, so a busy
   * server gives at most half its time to them; each connection still gets one datagram per
   * turn). Past it, datagrams wait for the
   * next turn, so the receive path keeps draining the socket (and a new client's handshake is
   * not stuck behind a flood in the kernel's queue) while slow handlers fall behind: what they
   * cannot take is dropped at the queue limits.
   */
  handlerMsPerTurn: number
  /** An engine worker whose event loop does not answer for this long is reported stalled (default 5000 ms). */
  workerStallMs: number
}

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB
/** JS heap one open stream costs, with its Web Streams, reader and handler (measured 7-10 KiB). */
const HEAP_PER_STREAM = 16 * KiB

function clamp(v: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, Math.floor(v)))
}

/** The memory this process may use: the machine's, or its cgroup's limit when lower. */
export function memoryLimit(): { bytes: number; source: string } {
  const total = os.totalmem()
  for (const file of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    try {
      const text = fs.readFileSync(file, 'utf8').trim()
      const n = Number(text)
      if (text !== 'max' && Number.isFinite(n) && n > 0 && n < total) return { bytes: n, source: `cgroup limit (${file})` }
    } catch {
      // No cgroup file here.
    }
  }
  return { bytes: total, source: 'machine memory' }
}

/** Defaults from what the process has (see each field). */
export function defaultLimits(): EndpointLimits {
  const heap = getHeapStatistics().heap_size_limit
  const mem = memoryLimit().bytes
  const read = clamp(mem / 16, 16 * MiB, GiB)
  return {
    maxStreams: clamp(heap / 4 / HEAP_PER_STREAM, 1024, 1 << 20),
    minStreamsPerConnection: 16,
    maxReadBufferBytes: read,
    maxReadBufferBytesPerConnection: Math.min(read, 64 * MiB),
    maxReceiveWindowBytes: clamp(mem / 2, 256 * MiB, 2 ** 50),
    maxQueuedDatagrams: 16_384,
    maxQueuedDatagramsPerConnection: 1024,
    streamsPerTurn: 64,
    datagramsPerTurn: 64,
    handlerMsPerTurn: 10,
    workerStallMs: 5000,
  }
}

const KEYS: (keyof EndpointLimits)[] = [
  'maxStreams',
  'minStreamsPerConnection',
  'maxReadBufferBytes',
  'maxReadBufferBytesPerConnection',
  'maxReceiveWindowBytes',
  'maxQueuedDatagrams',
  'maxQueuedDatagramsPerConnection',
  'streamsPerTurn',
  'datagramsPerTurn',
  'handlerMsPerTurn',
  'workerStallMs',
]

const RANGES: Record<keyof EndpointLimits, [number, number]> = {
  maxStreams: [1, 1 << 24],
  minStreamsPerConnection: [0, 1 << 20],
  maxReadBufferBytes: [64 * KiB, 2 ** 50],
  maxReadBufferBytesPerConnection: [64 * KiB, 2 ** 50],
  maxReceiveWindowBytes: [64 * KiB, 2 ** 50],
  maxQueuedDatagrams: [1, 1 << 24],
  maxQueuedDatagramsPerConnection: [1, 1 << 24],
  streamsPerTurn: [1, 1 << 20],
  datagramsPerTurn: [1, 1 << 20],
  handlerMsPerTurn: [1, 60_000],
  workerStallMs: [100, 600_000],
}

/** `limits` option: defaults for what is not given; unknown keys and wrong values are refused. */
export function resolveLimits(input: unknown): EndpointLimits {
  const limits = defaultLimits()
  if (input === undefined) return limits
  for (const [key, value] of Object.entries(checkOptions(input, KEYS, 'limits'))) {
    if (value === undefined) continue
    const [lo, hi] = RANGES[key as keyof EndpointLimits]
    if (typeof value !== 'number' || !Number.isInteger(value) || value < lo || value > hi) {
      throw new StoqInvalidArgumentError(`limits.${key}`, `expected an integer from ${lo} to ${hi}, got ${describeValue(value)}`)
    }
    limits[key as keyof EndpointLimits] = value
  }
  limits.maxReadBufferBytesPerConnection = Math.min(limits.maxReadBufferBytesPerConnection, limits.maxReadBufferBytes)
  limits.maxQueuedDatagramsPerConnection = Math.min(limits.maxQueuedDatagramsPerConnection, limits.maxQueuedDatagrams)
  return limits
}

/** Usage against each budget, in `endpoint.stats().limits` and as metrics. */
export interface LimitsUsage {
  limits: EndpointLimits
  /** Streams open now (all connections) and peer streams waiting to be accepted. */
  streams: number
  streamsWaiting: number
  /** Stream bytes queued for readers, not yet read. */
  readBufferBytes: number
  /** Flow-control credit committed to connections (windows and datagram queues). */
  receiveWindowBytes: number
  /** Received datagrams waiting for listeners. */
  queuedDatagrams: number
  /** Connections refused because a budget was full, since the endpoint started. */
  connectionsRefused: number
  /** Received datagrams dropped over the queue limits. */
  datagramsDropped: number
  /** Times a reader stopped taking data because the read budget was full. */
  readsDeferred: number
}

/**
 * The counters behind `LimitsUsage`, shared by an endpoint's connections and streams. Plain
 * numbers: every update is an addition, with no allocation.
 */
export class Governor {
  readonly limits: EndpointLimits
  streams = 0
  streamsWaiting = 0
  readBufferBytes = 0
  receiveWindowBytes = 0
  queuedDatagrams = 0
  connectionsRefused = 0
  datagramsDropped = 0
  readsDeferred = 0
  /** Turn of the endpoint's event loop cycle: per-turn work budgets count within one. */
  turn = 0
  /** Time `datagram` listeners took in this turn (ms), and may take. */
  handlerMs = 0
  handlerShareMs = 0
  /** performance.now() when listeners last ran. */
  handlerEndAt = 0

  constructor(limits: EndpointLimits) {
    this.limits = limits
  }

  /** Take `bytes` of the receive budget; false (nothing taken) when they do not fit. */
  commitWindow(bytes: number): boolean {
    if (this.receiveWindowBytes + bytes > this.limits.maxReceiveWindowBytes) return false
    this.receiveWindowBytes += bytes
    return true
  }

  usage(): LimitsUsage {
    return {
      limits: { ...this.limits },
      streams: this.streams,
      streamsWaiting: this.streamsWaiting,
      readBufferBytes: this.readBufferBytes,
      receiveWindowBytes: this.receiveWindowBytes,
      queuedDatagrams: this.queuedDatagrams,
      connectionsRefused: this.connectionsRefused,
      datagramsDropped: this.datagramsDropped,
      readsDeferred: this.readsDeferred,
    }
  }
}

/** A governor with no limit, for connections whose owner keeps none. */
export function unlimitedGovernor(): Governor {
  const big = 2 ** 50
  return new Governor({
    maxStreams: big,
    minStreamsPerConnection: 0,
    maxReadBufferBytes: big,
    maxReadBufferBytesPerConnection: big,
    maxReceiveWindowBytes: big,
    maxQueuedDatagrams: big,
    maxQueuedDatagramsPerConnection: big,
    streamsPerTurn: big,
    datagramsPerTurn: big,
    handlerMsPerTurn: big,
    workerStallMs: 600_000,
  })
}

/**
 * Lean connections: start a peer at the engine's starting stream limits (or the configured ones,
 * when lower), for an engine whose limits the endpoint raises (`setPeerStreamLimit`). Returns
 * the limits [bidi, uni], or null when the engine manages them itself.
 */
export function holdPeerStreamLimits(
  engine: QuicEngine,
  conn: number,
  t: { initialMaxStreamsBidi: number; initialMaxStreamsUni: number },
): [number, number] | null {
  if (engine.setPeerStreamLimit === undefined) return null
  const start = engine.initialPeerStreamLimit ?? 128
  const limits: [number, number] = [Math.min(t.initialMaxStreamsBidi, start), Math.min(t.initialMaxStreamsUni, start)]
  engine.setPeerStreamLimit(conn, true, limits[0])
  engine.setPeerStreamLimit(conn, false, limits[1])
  return limits
}
