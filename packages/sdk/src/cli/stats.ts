/**
 * `stoq stats URL`: scrape a running process's /metrics endpoint (what
 * `createMetricsHandler` serves) and show its key figures, once or refreshed
 * every interval.
 */

import { parsePrometheusText, type ParsedPrometheusFamily, type ParsedPrometheusSample } from '@stoq/monitoring'
import { StoqSocketError } from '@stoq/transport-core'
import { parseArgs } from './args.js'
import { StoqProtocolError, StoqUsageError, describeError } from './errors.js'
import { formatBytes, formatGbps, round } from './format.js'
import type { CommandIo } from './bench.js'

/** Exit code when the URL cannot be reached (refused, timed out, no such host). */
export const STATS_EXIT_UNREACHABLE = 3
/** Exit code when the answer is not a Prometheus exposition with STOQ metrics (or not HTTP 200). */
export const STATS_EXIT_NOT_METRICS = 4

export const STATS_HELP = `Usage: stoq stats URL [--watch] [--interval S] [--count N] [--json]

Scrapes a /metrics endpoint of a running STOQ process (served with
createMetricsHandler from @stoq/monitoring) and prints its key figures:
payload throughput, connections, application and UDP bytes, QUIC packet loss
and retransmissions, RTT, handshakes, and each endpoint's UDP backend and
QUIC engine. Figures are summed over every endpoint of the exposition.

Options:
  --watch          refresh every interval: in place on a terminal, one line
                   (or one JSON document) per refresh otherwise; Ctrl-C stops
  --interval S     seconds between refreshes (default 1)
  --count N        stop after N refreshes (with --watch)
  --timeout S      give up on a scrape after S seconds (default 5)
  --json           figures as JSON (one document per line with --watch)
  -h, --help       this text

Exit codes: 0 done, 2 bad command line, ${STATS_EXIT_UNREACHABLE} URL unreachable, ${STATS_EXIT_NOT_METRICS} the answer is
not a Prometheus exposition with STOQ metrics (or the status was not 200).`

const SPECS = {
  watch: { type: 'flag' },
  json: { type: 'flag' },
  interval: { type: 'seconds', min: 0.05, max: 3600 },
  count: { type: 'int', min: 1, max: 1_000_000 },
  timeout: { type: 'seconds', min: 0.1, max: 600 },
} as const

/** One endpoint of the scraped process. */
export interface StatsEndpoint {
  port: string
  backend: string
  engine: string
}

/** The key figures of one scrape, summed over the endpoints of the exposition. */
export interface StatsFigures {
  url: string
  /** Wall-clock time of the scrape, ISO 8601. */
  time: string
  endpoints: StatsEndpoint[]
  connections: number
  connectionsClosed: number
  /** Payload Gbit/s of the process's own per-connection sampler (latest interval, both ways). */
  throughputGbps: number
  /** Payload Gbit/s from the counters between this scrape and the previous one (null on the first). */
  scrapeRateGbps: number | null
  appBytesSent: number
  appBytesReceived: number
  udpBytesSent: number
  udpBytesReceived: number
  packetsSent: number
  packetsLost: number
  packetsRetransmitted: number
  /** packetsLost / packetsSent in percent (0 before any packet). */
  lossPercent: number
  /** Mean smoothed RTT over live connections of the endpoints that have some, in ms. */
  rttMs: number
  rttMaxMs: number
  handshakes: number
  /** Mean handshake duration in ms (0 without handshakes). */
  handshakeMeanMs: number
  /** Sends handed on without a copy (backends that count them). */
  zeroCopySends: number
  packetsPerSyscall: number
}

/** GET `url` and parse the exposition; typed errors for an unreachable URL and for an answer that is not metrics. */
export async function scrapeMetrics(url: string, timeoutMs: number): Promise<ParsedPrometheusFamily[]> {
  let res: Response
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { Accept: 'text/plain;version=0.0.4' } })
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause
    const timedOut = (err as Error).name === 'TimeoutError'
    const why = timedOut ? `no answer within ${timeoutMs / 1000} s` : (cause?.code ?? cause?.message ?? (err as Error).message)
    throw new StoqSocketError(`cannot reach ${url}: ${why}`, cause?.code !== undefined ? { errno: cause.code } : {}, { cause: err })
  }
  let body: string
  try {
    body = await res.text()
  } catch (err) {
    throw new StoqSocketError(`reading the answer of ${url} failed: ${(err as Error).message}`, {}, { cause: err })
  }
  if (res.status !== 200) {
    throw new StoqProtocolError('prometheus', `${url} answered HTTP ${res.status} ${res.statusText}: ${JSON.stringify(body.slice(0, 120))}`)
  }
  let families: ParsedPrometheusFamily[]
  try {
    families = parsePrometheusText(body)
  } catch (err) {
    throw new StoqProtocolError('prometheus', `${url} did not answer with Prometheus metrics: ${(err as Error).message}`)
  }
  if (!families.some((f) => f.name.startsWith('stoq_'))) {
    throw new StoqProtocolError('prometheus', `${url} answered a Prometheus exposition without STOQ metrics (no stoq_* family)`)
  }
  return families
}

type Samples = Map<string, ParsedPrometheusSample[]>

/** Every sample by its own name (`x_count` of a histogram `x` too). */
function samplesByName(families: readonly ParsedPrometheusFamily[]): Samples {
  const out: Samples = new Map()
  for (const f of families) {
    for (const s of f.samples) {
      let list = out.get(s.name)
      if (list === undefined) out.set(s.name, (list = []))
      list.push(s)
    }
  }
  return out
}

/** Sum the samples named `name` over every series. */
function sum(samples: Samples, name: string): number {
  let total = 0
  for (const s of samples.get(name) ?? []) if (Number.isFinite(s.value)) total += s.value
  return total
}

function max(samples: Samples, name: string): number {
  let m = 0
  for (const s of samples.get(name) ?? []) if (s.value > m) m = s.value
  return m
}

/** The key figures of a parsed exposition; `previous` (with its time in ms) gives the scrape-to-scrape rate. */
export function summariseMetrics(
  url: string,
  families: readonly ParsedPrometheusFamily[],
  nowMs: number,
  previous: { figures: StatsFigures; atMs: number } | null = null,
): StatsFigures {
  const byName = samplesByName(families)
  const endpoints: StatsEndpoint[] = (byName.get('stoq_endpoint_info') ?? []).map((s) => ({
    port: s.labels.port ?? '',
    backend: s.labels.backend ?? '',
    engine: s.labels.engine ?? '',
  }))
  // Mean RTT over the endpoints that have live connections, weighted by their connections.
  const conns = new Map<string, number>()
  for (const s of byName.get('stoq_connections') ?? []) conns.set(s.labels.port ?? '', s.value)
  let rttWeighted = 0
  let rttWeight = 0
  for (const s of byName.get('stoq_rtt_seconds') ?? []) {
    const n = conns.get(s.labels.port ?? '') ?? 0
    if (n > 0 && s.value > 0) {
      rttWeighted += s.value * n
      rttWeight += n
    }
  }
  const handshakes = sum(byName, 'stoq_handshake_duration_seconds_count')
  const batchPackets = sum(byName, 'stoq_batch_packets_total')
  const batchSyscalls = sum(byName, 'stoq_batch_syscalls_total')
  const packetsSent = sum(byName, 'stoq_quic_packets_sent_total')
  const packetsLost = sum(byName, 'stoq_quic_packets_lost_total')
  const appBytesSent = sum(byName, 'stoq_stream_bytes_written_total')
  const appBytesReceived = sum(byName, 'stoq_stream_bytes_read_total')
  let scrapeRateGbps: number | null = null
  if (previous !== null && nowMs > previous.atMs) {
    const bytes = appBytesSent + appBytesReceived - previous.figures.appBytesSent - previous.figures.appBytesReceived
    scrapeRateGbps = Math.max(0, (bytes * 8) / ((nowMs - previous.atMs) * 1e6))
  }
  return {
    url,
    time: new Date().toISOString(),
    endpoints,
    connections: sum(byName, 'stoq_connections'),
    connectionsClosed: sum(byName, 'stoq_connections_closed_total'),
    throughputGbps: sum(byName, 'stoq_payload_throughput_gbps'),
    scrapeRateGbps,
    appBytesSent,
    appBytesReceived,
    udpBytesSent: sum(byName, 'stoq_udp_bytes_sent_total'),
    udpBytesReceived: sum(byName, 'stoq_udp_bytes_received_total'),
    packetsSent,
    packetsLost,
    packetsRetransmitted: sum(byName, 'stoq_quic_packets_retransmitted_total'),
    lossPercent: packetsSent > 0 ? (packetsLost / packetsSent) * 100 : 0,
    rttMs: rttWeight > 0 ? (rttWeighted / rttWeight) * 1000 : 0,
    rttMaxMs: max(byName, 'stoq_rtt_max_seconds') * 1000,
    handshakes,
    handshakeMeanMs: handshakes > 0 ? (sum(byName, 'stoq_handshake_duration_seconds_sum') / handshakes) * 1000 : 0,
    zeroCopySends: sum(byName, 'stoq_zero_copy_sends_total'),
    packetsPerSyscall: batchSyscalls > 0 ? batchPackets / batchSyscalls : 0,
  }
}

function jsonFigures(f: StatsFigures): Record<string, unknown> {
  return {
    ...f,
    throughputGbps: round(f.throughputGbps),
    scrapeRateGbps: f.scrapeRateGbps === null ? null : round(f.scrapeRateGbps),
    lossPercent: round(f.lossPercent),
    rttMs: round(f.rttMs),
    rttMaxMs: round(f.rttMaxMs),
    handshakeMeanMs: round(f.handshakeMeanMs),
    packetsPerSyscall: round(f.packetsPerSyscall),
  }
}

/** The figures as a block of labelled lines. */
export function formatFigures(f: StatsFigures): string {
  const eps = f.endpoints.length > 0 ? f.endpoints.map((e) => `:${e.port} ${e.engine}/${e.backend}`).join(', ') : 'none reported'
  const rate = f.scrapeRateGbps === null ? '' : ` (between scrapes ${formatGbps(f.scrapeRateGbps)})`
  return [
    `stoq stats ${f.url}  ${f.time}`,
    `  endpoints    ${eps}`,
    `  throughput   ${formatGbps(f.throughputGbps)} Gbit/s payload${rate}`,
    `  connections  ${f.connections} open, ${f.connectionsClosed} closed, ${f.handshakes} handshakes (mean ${f.handshakeMeanMs.toFixed(2)} ms)`,
    `  app bytes    ${formatBytes(f.appBytesSent)} sent, ${formatBytes(f.appBytesReceived)} received`,
    `  UDP bytes    ${formatBytes(f.udpBytesSent)} sent, ${formatBytes(f.udpBytesReceived)} received`,
    `  loss         ${f.packetsLost} of ${f.packetsSent} packets (${f.lossPercent.toFixed(3)} %), ${f.packetsRetransmitted} retransmitted`,
    `  RTT          ${f.rttMs.toFixed(3)} ms mean, ${f.rttMaxMs.toFixed(3)} ms max`,
    `  batching     ${f.packetsPerSyscall.toFixed(2)} packets per send call, ${f.zeroCopySends} zero-copy sends`,
  ].join('\n')
}

/** One line per refresh (non-TTY watch). */
function formatLine(f: StatsFigures): string {
  const rate = f.scrapeRateGbps === null ? '-' : formatGbps(f.scrapeRateGbps)
  return (
    `${f.time} throughput=${formatGbps(f.throughputGbps)}Gbps rate=${rate}Gbps conns=${f.connections} ` +
    `sent=${f.appBytesSent} received=${f.appBytesReceived} lost=${f.packetsLost}/${f.packetsSent} rtt=${f.rttMs.toFixed(3)}ms`
  )
}

function exitCodeOf(err: unknown): number {
  const code = (err as { code?: unknown }).code
  return code === 'STOQ_ERR_SOCKET' ? STATS_EXIT_UNREACHABLE : STATS_EXIT_NOT_METRICS
}

function checkUrl(text: string): string {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new StoqUsageError('stats', 'URL', `expected an http:// or https:// URL, got ${JSON.stringify(text)}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new StoqUsageError('stats', 'URL', `expected an http:// or https:// URL, got ${JSON.stringify(text)}`)
  }
  return url.href
}

export interface StatsIo extends CommandIo {
  /** Whether stdout is a terminal (refresh in place). Default `process.stdout.isTTY`. */
  isTTY?: boolean
}

export async function statsCommand(argv: string[], io: StatsIo): Promise<number> {
  const { values, positionals, help } = parseArgs('stats', argv, SPECS)
  if (help) {
    io.out(`${STATS_HELP}\n`)
    return 0
  }
  if (positionals.length === 0) throw new StoqUsageError('stats', 'URL', 'missing URL of a /metrics endpoint')
  if (positionals.length > 1) throw new StoqUsageError('stats', positionals[1]!, `unexpected argument ${JSON.stringify(positionals[1])}`)
  const url = checkUrl(positionals[0]!)
  const watch = values.watch === true
  const json = values.json === true
  if (values.count !== undefined && !watch) throw new StoqUsageError('stats', '--count', '--count goes with --watch')
  const intervalMs = ((values.interval as number | undefined) ?? 1) * 1000
  const timeoutMs = ((values.timeout as number | undefined) ?? 5) * 1000
  const tty = io.isTTY ?? process.stdout.isTTY === true

  if (!watch) {
    try {
      const figures = summariseMetrics(url, await scrapeMetrics(url, timeoutMs), performance.now())
      io.out(json ? `${JSON.stringify(jsonFigures(figures), null, 2)}\n` : `${formatFigures(figures)}\n`)
      return 0
    } catch (err) {
      io.err(`stoq stats: ${describeError(err)}\n`)
      return exitCodeOf(err)
    }
  }

  const count = (values.count as number | undefined) ?? Infinity
  let previous: { figures: StatsFigures; atMs: number } | null = null
  let lastError = 0
  let stop = false
  const onSignal = (): void => {
    stop = true
  }
  process.once('SIGINT', onSignal)
  try {
    for (let i = 0; i < count && !stop; i++) {
      if (i > 0) await new Promise((resolve) => setTimeout(resolve, intervalMs))
      if (stop) break
      let figures: StatsFigures
      try {
        const families = await scrapeMetrics(url, timeoutMs)
        const at = performance.now()
        figures = summariseMetrics(url, families, at, previous)
        previous = { figures, atMs: at }
        lastError = 0
      } catch (err) {
        // Keep watching: the process may come back. The exit code tells the last failure.
        lastError = exitCodeOf(err)
        io.err(`stoq stats: ${describeError(err)}\n`)
        continue
      }
      if (json) io.out(`${JSON.stringify(jsonFigures(figures))}\n`)
      else if (tty) io.out(`\x1b[H\x1b[2J${formatFigures(figures)}\n`)
      else io.out(`${formatLine(figures)}\n`)
    }
  } finally {
    process.removeListener('SIGINT', onSignal)
  }
  return lastError
}
