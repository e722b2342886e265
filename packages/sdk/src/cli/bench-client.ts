/**
 * The sending side of `stoq bench`: opens connections and streams, writes the
 * pattern, and builds the per-second table and the summary from what the
 * server reports (bytes it counted and verified, at times of its own clock).
 */
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import path from 'node:path'
import {
  createEndpoint,
  fingerprintDer,
  StoqInvalidArgumentError,
  type ConnectOptions,
  type Endpoint,
  type EngineChoice,
  type QuicConnection,
  type QuicStream,
  type UdpBackendChoice,
} from '@stoq/transport-core'
import { ThroughputSeries } from '@stoq/monitoring'
import { KnownHosts, appConfigDir } from '../identity.js'
import { ignoreRejection } from '../ignore.js'
import { PATTERN_BLOCK, newPatternBlock, patternKey, writeBlockHeader } from './bench-pattern.js'
import { LineSplitter, encodeBenchHeader, parseBenchReply, type BenchDone, type BenchEngineInfo, type BenchTick } from './bench-protocol.js'
import { StoqProtocolError, describeError, unlessStalled } from './errors.js'
import { formatHostPort } from './args.js'
import { gbpsOf, round } from './format.js'

/** Writes each stream keeps in flight; a block buffer is restamped only after its previous write resolved. */
const SEND_DEPTH = 8
/** How long to wait for the server's final reports once sending is over. */
export const BENCH_REPORT_TIMEOUT_MS = 30_000
/** The same, once some stream already failed. */
const BENCH_REPORT_AFTER_ERROR_MS = 5_000
/** A write that makes no progress for this long fails the stream (the server stopped reading). */
export const BENCH_STALL_MS = 30_000
const STALL_RESET_CODE = 2
/** Intervals shorter than this do not count for the peak (a short tail says little). */
const PEAK_MIN_INTERVAL_SEC = 0.5

/** How the client trusts the server. */
export interface BenchTrust {
  pin?: string
  /** CA certificate file (PEM). */
  ca?: string
  insecure?: boolean
  serverName?: string
}

export interface BenchClientOptions {
  host: string
  port: number
  connections: number
  streams: number
  /** Stop after this many seconds, or after `bytes` bytes in total (split over the streams). */
  durationSec?: number
  bytes?: number
  packetSize: number
  engine: EngineChoice
  udpBackend: UdpBackendChoice
  trust: BenchTrust
  /** App name whose known-hosts file holds trust-on-first-use fingerprints. */
  appName: string
  onInterval?: (interval: BenchInterval) => void
  onConnected?: (info: { handshakeMs: number; client: BenchEngineInfo }) => void
}

export interface BenchConnectionFigure {
  connection: number
  bytes: number
  gbps: number
  averageGbps: number
}

export interface BenchInterval {
  startSec: number
  endSec: number
  /** Bytes verified by the server during the interval. */
  bytes: number
  gbps: number
  /** From the session's first byte to the end of this interval. */
  averageGbps: number
  connections: BenchConnectionFigure[]
}

export interface BenchStreamResult {
  connection: number
  stream: number
  /** Bytes this client wrote (for comparison only; figures use the server's count). */
  sentBytes: number
  /** Bytes the server received and verified, or null when it never said. */
  verifiedBytes: number | null
  ok: boolean
  error?: string
}

export interface BenchSummary {
  /** Bytes received and verified by the server, all streams. */
  bytes: number
  /** Server clock: first byte to last byte of the session. */
  durationSec: number
  averageGbps: number
  /** Best interval of at least half a second (the average when there is none: see peakFrom). */
  peakGbps: number
  peakFrom: 'interval' | 'average'
  /** True only when every stream reported success and verified exactly the bytes sent. */
  verified: boolean
  sentBytes: number
  client: BenchEngineInfo
  server: BenchEngineInfo | null
  streams: BenchStreamResult[]
  errors: string[]
}

export interface BenchReport {
  target: string
  connections: number
  streamsPerConnection: number
  packetSize: number
  limit: { durationSec: number } | { bytes: number }
  intervals: BenchInterval[]
  summary: BenchSummary
}

/** One data stream as the client sees it. */
class Track {
  sent = 0
  readonly points = new Map<number, BenchTick>()
  maxIndex = -1
  done: BenchDone | null = null
  error: string | null = null
  constructor(
    readonly connection: number,
    readonly stream: number,
  ) {}

  /** Verified bytes of this stream at tick `i` taken at `t` ms (see Timeline). */
  valueAt(i: number, t: number): number {
    const p = this.points.get(i)
    if (p !== undefined) return p.bytes
    // No sample at that tick: the server did not know the stream yet (0), or it had ended.
    if (this.done !== null && (this.done.lastT === null || t >= this.done.lastT)) return this.done.bytes
    // Otherwise the latest earlier sample (0 before the first): counts never go down.
    for (let k = Math.min(i - 1, this.maxIndex); k >= 1; k--) {
      const q = this.points.get(k)
      if (q !== undefined) return q.bytes
    }
    return 0
  }

  /** Verified bytes at the end: the final report, else the latest sample. */
  finalValue(): number {
    if (this.done !== null) return this.done.bytes
    return this.maxIndex >= 0 ? this.points.get(this.maxIndex)!.bytes : 0
  }

  /** True when no more ticks up to `i` can arrive for this stream. */
  settledUpTo(i: number): boolean {
    return this.done !== null || this.error !== null || this.maxIndex >= i
  }
}

/**
 * Builds intervals from the server's per-stream samples. The server samples
 * every stream of the session at the same instants, so an interval is emitted
 * once every stream has reported that tick (or ended). A tick no stream got
 * (none was open at that instant) merges into the next interval.
 */
class Timeline {
  readonly intervals: BenchInterval[] = []
  private next = 1
  private lastT = 0
  private readonly total = new ThroughputSeries({ capacity: 86_400 })
  private readonly perConnection: ThroughputSeries[]
  private lastTotals: number[]

  constructor(
    private readonly tracks: Track[],
    private readonly connections: number,
    private readonly onInterval: ((i: BenchInterval) => void) | undefined,
  ) {
    this.total.sample(0, 0)
    this.perConnection = Array.from({ length: connections }, () => {
      const s = new ThroughputSeries({ capacity: 86_400 })
      s.sample(0, 0)
      return s
    })
    this.lastTotals = new Array<number>(connections + 1).fill(0)
  }

  update(): void {
    for (;;) {
      let j = Infinity
      for (const tr of this.tracks) {
        for (let i = this.next; i <= tr.maxIndex; i++) {
          if (tr.points.has(i)) {
            j = Math.min(j, i)
            break
          }
        }
      }
      if (j === Infinity) return
      if (!this.tracks.every((tr) => tr.settledUpTo(j))) return
      const t = this.tracks.map((tr) => tr.points.get(j)?.t).find((x) => x !== undefined)!
      this.emit(t, (tr) => tr.valueAt(j, t))
      this.next = j + 1
    }
  }

  /** Every stream ended: emit the ticks left and the last (partial) interval up to the last byte. */
  finish(): void {
    this.update()
    let end = 0
    for (const tr of this.tracks) if (tr.done?.lastT != null) end = Math.max(end, tr.done.lastT)
    if (end > this.lastT) this.emit(end, (tr) => tr.finalValue())
  }

  private emit(t: number, value: (tr: Track) => number): void {
    const byConnection = new Array<number>(this.connections).fill(0)
    for (const tr of this.tracks) byConnection[tr.connection]! += value(tr)
    const sum = byConnection.reduce((a, b) => a + b, 0)
    const point = this.total.sample(sum, t)
    if (point === null) return
    const connections = byConnection.map((bytes, c) => {
      const p = this.perConnection[c]!.sample(bytes, t)
      const delta = bytes - this.lastTotals[c + 1]!
      this.lastTotals[c + 1] = bytes
      return { connection: c + 1, bytes: delta, gbps: round(p?.instantGbps ?? 0), averageGbps: round(p?.averageGbps ?? 0) }
    })
    const interval: BenchInterval = {
      startSec: round(this.lastT / 1000, 3),
      endSec: round(t / 1000, 3),
      bytes: sum - this.lastTotals[0]!,
      gbps: round(point.instantGbps),
      averageGbps: round(point.averageGbps),
      connections,
    }
    this.lastTotals[0] = sum
    this.lastT = t
    this.intervals.push(interval)
    this.onInterval?.(interval)
  }
}

/** Connect with the chosen trust; with none given, trust on first use (known-hosts file of `appName`). */
async function dial(ep: Endpoint, o: BenchClientOptions, pinned: string | null): Promise<{ conn: QuicConnection; pin: string | null }> {
  const base: ConnectOptions = { host: o.host, port: o.port, ...(o.trust.serverName ? { serverName: o.trust.serverName } : {}) }
  const { pin, ca, insecure } = o.trust
  if (pin !== undefined || ca !== undefined || insecure) {
    const conn = await ep.connect({ ...base, ...(pin ? { pin } : {}), ...(ca ? { ca: { file: ca } } : {}), ...(insecure ? { insecure: true } : {}) })
    return { conn, pin: pin ?? null }
  }
  if (pinned !== null) return { conn: await ep.connect({ ...base, pin: pinned }), pin: pinned }
  const known = new KnownHosts(path.join(appConfigDir(o.appName), 'known_hosts.json'))
  const peer = `${o.host}:${o.port}`
  const recorded = known.get(peer)
  if (recorded !== undefined) return { conn: await ep.connect({ ...base, pin: recorded }), pin: recorded }
  const conn = await ep.connect({ ...base, insecure: true })
  const leaf = conn.peerCertificates[0]
  try {
    if (!leaf) throw new StoqInvalidArgumentError('trust', `${peer} presented no certificate`)
    const fp = fingerprintDer(leaf)
    known.remember(peer, fp)
    return { conn, pin: fp }
  } catch (err) {
    await conn.close(1, 'certificate not trusted')
    throw err
  }
}

async function sendPattern(stream: QuicStream, track: Track, key: Uint8Array, header: Uint8Array, deadline: number, quota: number): Promise<void> {
  const writer = stream.writable!.getWriter()
  try {
    await writer.write(header)
    const ring = Array.from({ length: SEND_DEPTH }, newPatternBlock)
    const pending: (Promise<void> | null)[] = new Array<Promise<void> | null>(SEND_DEPTH).fill(null)
    const stalled = (): void => stream.reset(STALL_RESET_CODE)
    for (let index = 0; ; index++) {
      const slot = index % SEND_DEPTH
      const previous = pending[slot]
      if (previous) await unlessStalled(previous, BENCH_STALL_MS, 'bench', '', stalled)
      const left = quota - track.sent
      if (left <= 0 || performance.now() >= deadline) break
      const block = ring[slot]!
      writeBlockHeader(block, index, key)
      const n = Math.min(PATTERN_BLOCK, left)
      const p = writer.write(n === PATTERN_BLOCK ? block : block.subarray(0, n))
      p.catch(ignoreRejection) // awaited when the slot comes round again or at the end; never an unhandled rejection meanwhile
      pending[slot] = p
      track.sent += n
    }
    const rest = Promise.all(pending.filter((p): p is Promise<void> => p !== null)).then(() => writer.close())
    await unlessStalled(rest, BENCH_STALL_MS, 'bench', '', stalled)
  } catch (err) {
    writer.abort(err).catch(ignoreRejection) // the write error is what the caller gets; a stream already reset makes the abort reject
    throw err
  }
}

/** Reads the server's reports for one stream until its `done`. */
async function readReports(stream: QuicStream, track: Track, timeline: Timeline): Promise<void> {
  const lines = new LineSplitter('bench')
  const reader = stream.readable!.getReader()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    for (const line of lines.push(value)) {
      const msg = parseBenchReply(line)
      if (msg.type === 'tick') {
        if (track.done !== null || msg.i <= track.maxIndex) throw new StoqProtocolError('bench', `out-of-order report (tick ${msg.i})`)
        track.points.set(msg.i, msg)
        track.maxIndex = msg.i
      } else {
        if (track.done !== null) throw new StoqProtocolError('bench', 'two final reports for one stream')
        track.done = msg
      }
      timeline.update()
    }
  }
  lines.end()
  if (track.done === null) throw new StoqProtocolError('bench', 'the server ended the stream without a final report')
}

function withTimeout<T>(p: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoqProtocolError('bench', message())), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/** Run the client side of a bench against a server. Rejects only when no run could start (connect failed). */
export async function runBenchClient(o: BenchClientOptions): Promise<BenchReport> {
  const bindHost = net.isIPv4(o.host) ? '0.0.0.0' : '::'
  const ep = await createEndpoint({
    host: bindHost,
    port: 0,
    engine: o.engine,
    udpBackend: o.udpBackend,
    transport: { maxUdpPayloadSize: o.packetSize },
  })
  const errors: string[] = []
  ep.on('error', (err) => errors.push(`endpoint: ${describeError(err)}`))
  const conns: QuicConnection[] = []
  try {
    const started = performance.now()
    const first = await dial(ep, o, null)
    conns.push(first.conn)
    const rest = await Promise.allSettled(Array.from({ length: o.connections - 1 }, () => dial(ep, o, first.pin)))
    for (const r of rest) {
      if (r.status === 'fulfilled') conns.push(r.value.conn)
      else throw r.reason
    }
    const epStats = ep.stats()
    const client: BenchEngineInfo = { engine: epStats.engine, udpBackend: epStats.udp.backend }
    o.onConnected?.({ handshakeMs: performance.now() - started, client })

    const session = randomBytes(8).toString('hex')
    const total = o.connections * o.streams
    const tracks: Track[] = []
    for (let c = 0; c < o.connections; c++) for (let s = 0; s < o.streams; s++) tracks.push(new Track(c, s))
    const timeline = new Timeline(tracks, o.connections, o.onInterval)
    const quotaOf = (k: number): number => {
      if (o.bytes === undefined) return Number.MAX_SAFE_INTEGER
      return Math.floor(o.bytes / total) + (k < o.bytes % total ? 1 : 0)
    }
    const deadline = o.durationSec !== undefined ? performance.now() + o.durationSec * 1000 : Infinity
    const streams = tracks.map((tr) => conns[tr.connection]!.openStream())
    const readers = tracks.map((tr, k) =>
      readReports(streams[k]!, tr, timeline).catch((err: unknown) => {
        tr.error ??= describeError(err)
      }),
    )
    const senders = tracks.map((tr, k) => {
      const header = encodeBenchHeader({ v: 1, session, connection: tr.connection, stream: tr.stream, streams: total })
      return sendPattern(streams[k]!, tr, patternKey(session, tr.connection, tr.stream), header, deadline, quotaOf(k)).catch((err: unknown) => {
        tr.error ??= `sending: ${describeError(err)}`
      })
    })
    await Promise.all(senders)
    // A stream whose sending failed may still get the server's reason, but not wait long for it.
    const wait = tracks.some((t) => t.error !== null) ? BENCH_REPORT_AFTER_ERROR_MS : BENCH_REPORT_TIMEOUT_MS
    await withTimeout(Promise.all(readers), wait, () => {
      const missing = tracks.filter((t) => t.done === null).length
      return `${missing} stream(s) got no final report from the server within ${wait / 1000} s`
    }).catch((err: unknown) => {
      errors.push(describeError(err))
      for (const tr of tracks) if (tr.done === null) tr.error ??= 'no final report from the server'
    })
    timeline.finish()

    const results: BenchStreamResult[] = tracks.map((tr) => {
      const d = tr.done
      // The server's own reason first: a write failing after it stopped the stream is only the consequence.
      let error = d && !d.ok ? `${d.code ?? 'STOQ_ERR_PROTOCOL'}: ${d.error ?? 'the server rejected the data'}` : (tr.error ?? undefined)
      if (error === undefined && d !== null && d.bytes !== tr.sent) {
        error = `STOQ_ERR_INTEGRITY: the server verified ${d.bytes} bytes but ${tr.sent} were sent`
      }
      return {
        connection: tr.connection + 1,
        stream: tr.stream + 1,
        sentBytes: tr.sent,
        verifiedBytes: d?.bytes ?? null,
        ok: error === undefined && d !== null,
        ...(error !== undefined ? { error } : {}),
      }
    })
    const bytes = tracks.reduce((a, tr) => a + (tr.done?.bytes ?? 0), 0)
    const endMs = tracks.reduce((a, tr) => Math.max(a, tr.done?.lastT ?? 0), 0)
    const long = timeline.intervals.filter((i) => i.endSec - i.startSec >= PEAK_MIN_INTERVAL_SEC)
    const averageGbps = gbpsOf(bytes, endMs)
    if (bytes === 0) errors.push('the server received no data')
    for (const r of results) if (r.error) errors.push(`connection ${r.connection} stream ${r.stream}: ${r.error}`)
    const summary: BenchSummary = {
      bytes,
      durationSec: round(endMs / 1000, 3),
      averageGbps: round(averageGbps),
      peakGbps: round(long.length > 0 ? Math.max(...long.map((i) => i.gbps)) : averageGbps),
      peakFrom: long.length > 0 ? 'interval' : 'average',
      verified: bytes > 0 && results.every((r) => r.ok),
      sentBytes: tracks.reduce((a, tr) => a + tr.sent, 0),
      client,
      server: tracks.find((tr) => tr.done !== null)?.done?.server ?? null,
      streams: results,
      errors,
    }
    return {
      target: formatHostPort(o.host, o.port),
      connections: o.connections,
      streamsPerConnection: o.streams,
      packetSize: o.packetSize,
      limit: o.durationSec !== undefined ? { durationSec: o.durationSec } : { bytes: o.bytes! },
      intervals: timeline.intervals,
      summary,
    }
  } finally {
    await Promise.allSettled(conns.map((c) => c.close(0, 'bench done')))
    await ep.close().catch(ignoreRejection) // the bench is over and its result made; failing to close the endpoint changes nothing
  }
}
