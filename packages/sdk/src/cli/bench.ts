/**
 * `stoq bench`: throughput between two STOQ endpoints, counted and verified by
 * the receiver. With no address, a server is started in a child process on
 * loopback and the client runs against it; `--server` runs only the server;
 * `HOST:PORT` runs only the client against a remote server.
 */
import { fork, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fingerprintPem, type EngineChoice, type UdpBackendChoice } from '@stoq/transport-core'
import { renderThroughputChart } from '@stoq/monitoring'
import { Stoq } from '../stoq.js'
import { loadOrCreateIdentity } from '../identity.js'
import { formatHostPort, parseArgs, parseTargetArg, type OptionKind } from './args.js'
import { StoqUsageError, describeError } from './errors.js'
import { formatBytes, formatGbps } from './format.js'
import { BenchReceiver, type BenchSessionSummary } from './bench-server.js'
import { runBenchClient, type BenchInterval, type BenchReport } from './bench-client.js'

/** App name of the CLI: its identity and known-hosts live in `$XDG_CONFIG_HOME/stoq/cli`. */
export const CLI_APP_NAME = 'cli'
export const BENCH_DEFAULT_PORT = 4434
export const BENCH_DEFAULT_DURATION_SEC = 5
export const BENCH_DEFAULT_PACKET_SIZE = 1350
/** Set in the environment of the local server child (with an IPC channel). */
const CHILD_ENV = 'STOQ_BENCH_CHILD'
const CHILD_START_TIMEOUT_MS = 30_000

export const BENCH_HELP = `Usage:
  stoq bench [options]                   server and client on loopback (server in a child process)
  stoq bench --server [--port N] [--host IP] [options]
                                         serve bench clients until killed
  stoq bench HOST:PORT [options]         client against a remote "stoq bench --server"

The client sends a verifiable pattern; the server checks every byte and reports
the verified byte counts once per second, timed by its own clock. All figures
(per-second table, totals, average, peak) are these receiver-side counts.

Client options:
  --connections N      parallel QUIC connections (default 1)
  --streams N          streams per connection (default 1)
  --duration SECONDS   send for this long (default ${BENCH_DEFAULT_DURATION_SEC})
  --bytes SIZE         send SIZE bytes in total instead, split over the streams
                       (units: K, M, G, T = powers of 1024; KB, MB, GB, TB = powers of 1000)
  --insecure           do not verify the server certificate (remote only)
  --pin HEX            accept only this SHA-256 certificate fingerprint (remote only)
  --ca FILE            verify the server certificate against this CA (PEM; remote only)
  --server-name NAME   name checked in the server certificate (default: HOST)
                       Remote default without --insecure/--pin/--ca: trust on first use
                       (known hosts in $XDG_CONFIG_HOME/stoq/${CLI_APP_NAME}/known_hosts.json)
  --chart FILE.svg     after the run, write throughput over time as an SVG chart: the
                       per-second [SUM] rate and the running average, peak marked
                       (with --json, the summary gives its path as "chart")
Server options:
  --server             run the server only
  --port N             UDP port (default ${BENCH_DEFAULT_PORT}; 0 picks one)
  --host IP            address to bind (default ::, all IPv4 and IPv6 addresses)
Both:
  --packet-size BYTES  largest UDP payload (transport maxUdpPayloadSize, 1200-65527, default ${BENCH_DEFAULT_PACKET_SIZE})
  --engine NAME        QUIC engine: auto, quinn or quiche (default auto)
  --udp-backend NAME   UDP backend: auto, gro, gso or dgram (default auto)
  --json               one JSON document (intervals + summary) instead of the table;
                       with --server, one JSON object per line
  -h, --help           this text

Exit status: 0 when every byte was verified, 1 on a verification failure or
any error, 2 on bad arguments.`

const SPECS: Record<string, OptionKind> = {
  server: { type: 'flag' },
  port: { type: 'int', min: 0, max: 65535 },
  host: { type: 'ip' },
  connections: { type: 'int', min: 1, max: 1024 },
  streams: { type: 'int', min: 1, max: 1024 },
  duration: { type: 'seconds', min: 0.1, max: 86_400 },
  bytes: { type: 'size', min: 1, max: Number.MAX_SAFE_INTEGER },
  'packet-size': { type: 'int', min: 1200, max: 65527 },
  engine: { type: 'choice', choices: ['auto', 'quinn', 'quiche'] },
  'udp-backend': { type: 'choice', choices: ['auto', 'gro', 'gso', 'dgram'] },
  json: { type: 'flag' },
  insecure: { type: 'flag' },
  pin: { type: 'fingerprint' },
  ca: { type: 'string' },
  'server-name': { type: 'string' },
  chart: { type: 'string' },
}

const CLIENT_ONLY = ['connections', 'streams', 'duration', 'bytes', 'insecure', 'pin', 'ca', 'server-name', 'chart']
const TRUST = ['insecure', 'pin', 'ca', 'server-name']

interface CommonOptions {
  packetSize: number
  engine: EngineChoice
  udpBackend: UdpBackendChoice
  json: boolean
}

/** Messages between the local client and its server child. */
type ChildMessage = { type: 'listening'; port: number } | { type: 'error'; message: string }

export interface CommandIo {
  out: (text: string) => void
  err: (text: string) => void
  /** Path of the `stoq` CLI script (to start the local server child). */
  cliPath: string
}

export async function benchCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values: v, positionals, help } = parseArgs('bench', argv, SPECS)
  if (help) {
    io.out(`${BENCH_HELP}\n`)
    return 0
  }
  const common: CommonOptions = {
    packetSize: (v['packet-size'] as number | undefined) ?? BENCH_DEFAULT_PACKET_SIZE,
    engine: ((v.engine as string | undefined) ?? 'auto') as EngineChoice,
    udpBackend: ((v['udp-backend'] as string | undefined) ?? 'auto') as UdpBackendChoice,
    json: v.json === true,
  }
  if (v.server === true) {
    if (positionals.length > 0)
      throw new StoqUsageError('bench', 'HOST:PORT', `--server takes no HOST:PORT (got ${JSON.stringify(positionals[0])}); use --host and --port`)
    const clientOnly = CLIENT_ONLY.find((k) => k in v)
    if (clientOnly) throw new StoqUsageError('bench', `--${clientOnly}`, `--${clientOnly} is a client option; it cannot be used with --server`)
    const host = (v.host as string | undefined) ?? '::'
    const port = (v.port as number | undefined) ?? BENCH_DEFAULT_PORT
    if (process.env[CHILD_ENV] === '1' && typeof process.send === 'function') return benchChild(host, port, common)
    return benchServer(host, port, common, io)
  }
  if (positionals.length > 1) throw new StoqUsageError('bench', positionals[1]!, `unexpected argument ${JSON.stringify(positionals[1])}`)
  for (const k of ['port', 'host']) {
    if (k in v) throw new StoqUsageError('bench', `--${k}`, `--${k} is a server option (with --server); the client takes HOST:PORT`)
  }
  if ('duration' in v && 'bytes' in v) throw new StoqUsageError('bench', '--bytes', 'give --duration or --bytes, not both')
  if (v.insecure === true && ('pin' in v || 'ca' in v)) throw new StoqUsageError('bench', '--insecure', '--insecure cannot be combined with --pin or --ca')
  if (typeof v.ca === 'string') {
    try {
      fs.accessSync(v.ca, fs.constants.R_OK)
    } catch (err) {
      throw new StoqUsageError('bench', '--ca', `cannot read --ca file ${JSON.stringify(v.ca)}: ${(err as Error).message}`)
    }
  }
  const chart = typeof v.chart === 'string' ? checkChartPath(v.chart) : undefined
  const target = positionals.length === 1 ? parseTargetArg('bench', positionals[0]!) : null
  if (target === null) {
    const trust = TRUST.find((k) => k in v)
    if (trust)
      throw new StoqUsageError('bench', `--${trust}`, `--${trust} is for a remote server (stoq bench HOST:PORT); the local server is pinned automatically`)
  }
  const limit = v.bytes !== undefined ? { bytes: v.bytes as number } : { durationSec: (v.duration as number | undefined) ?? BENCH_DEFAULT_DURATION_SEC }
  const client = {
    connections: (v.connections as number | undefined) ?? 1,
    streams: (v.streams as number | undefined) ?? 1,
    ...limit,
    ...(chart !== undefined ? { chart } : {}),
  }
  if (target !== null) {
    const trust = {
      ...(typeof v.pin === 'string' ? { pin: v.pin } : {}),
      ...(typeof v.ca === 'string' ? { ca: v.ca } : {}),
      ...(v.insecure === true ? { insecure: true } : {}),
      ...(typeof v['server-name'] === 'string' ? { serverName: v['server-name'] } : {}),
    }
    return runClient(target.host, target.port, trust, client, common, io, null)
  }
  return benchLocal(client, common, io)
}

// ---------------------------------------------------------------------------
// Client and output

type ClientShape = {
  connections: number
  streams: number
  durationSec?: number
  bytes?: number
  /** Absolute path of the SVG chart to write after the run. */
  chart?: string
}

/** The `--chart` path, absolute, once it is known that a file can be written there (a usage error otherwise). */
function checkChartPath(raw: string): string {
  if (raw === '-') throw new StoqUsageError('bench', '--chart', '--chart needs a file path (standard output is not supported)')
  const file = path.resolve(raw)
  let isDir = false
  try {
    isDir = fs.statSync(file).isDirectory()
  } catch {
    // Not there yet: it is created after the run.
  }
  if (isDir) throw new StoqUsageError('bench', '--chart', `--chart ${JSON.stringify(raw)} is a directory; give a file such as run.svg`)
  const dir = path.dirname(file)
  try {
    if (!fs.statSync(dir).isDirectory()) throw new Error('not a directory')
    fs.accessSync(dir, fs.constants.W_OK)
  } catch (err) {
    throw new StoqUsageError(
      'bench',
      '--chart',
      `cannot write --chart file ${JSON.stringify(raw)}: directory ${JSON.stringify(dir)}: ${(err as Error).message}`,
    )
  }
  return file
}

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`
}

/**
 * The SVG chart of a bench run (what `stoq bench --chart` writes): the
 * per-interval total ([SUM]) rate and the running average, both counted by the
 * receiver, with the summary's peak marked and the run's parameters in the
 * subtitle.
 */
export function renderBenchChart(report: BenchReport, mode: 'local' | 'remote' = 'remote'): string {
  const s = report.summary
  const samples = report.intervals.map((iv) => ({ t: iv.endSec, gbps: iv.gbps, averageGbps: iv.averageGbps }))
  const engine =
    s.server !== null && (s.server.engine !== s.client.engine || s.server.udpBackend !== s.client.udpBackend)
      ? `engine ${s.client.engine}/${s.client.udpBackend} (server ${s.server.engine}/${s.server.udpBackend})`
      : `engine ${s.client.engine}/${s.client.udpBackend}`
  const limit = 'durationSec' in report.limit ? `${report.limit.durationSec} s` : formatBytes(report.limit.bytes)
  const subtitle =
    `${plural(report.connections, 'connection')} × ${plural(report.streamsPerConnection, 'stream')}, packet size ${report.packetSize} B, ` +
    `${engine}, ${limit}; receiver-counted total${s.verified ? '' : ' (NOT VERIFIED)'}`
  // The summary's peak (best interval of at least 0.5 s), not a short final interval's.
  const peakInterval = s.peakFrom === 'interval' ? report.intervals.find((iv) => iv.endSec - iv.startSec >= 0.5 && iv.gbps === s.peakGbps) : undefined
  return renderThroughputChart(samples, {
    title: `stoq bench ${mode === 'local' ? `(local) ${report.target}` : report.target}`,
    subtitle,
    ...(peakInterval !== undefined ? { peak: { t: peakInterval.endSec, gbps: peakInterval.gbps } } : {}),
  })
}

/** Write `text` to `file` through a temporary file in the same directory, so that a reader never sees half a chart. */
function writeFileAtomic(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`)
  try {
    fs.writeFileSync(tmp, text)
    fs.renameSync(tmp, file)
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw err
  }
}

async function runClient(
  host: string,
  port: number,
  trust: { pin?: string; ca?: string; insecure?: boolean; serverName?: string },
  c: ClientShape,
  common: CommonOptions,
  io: CommandIo,
  local: { pid: number } | null,
): Promise<number> {
  const text = !common.json
  const perConnection = c.connections > 1
  const where = formatHostPort(host, port)
  if (text) {
    if (local) io.out(`Local server: child process ${local.pid} on ${where}\n`)
    const limit = c.durationSec !== undefined ? `${c.durationSec} s` : `${formatBytes(c.bytes!)} (${c.bytes} bytes)`
    io.out(
      `Connecting to ${where}: ${c.connections} connection${c.connections > 1 ? 's' : ''} x ${c.streams} stream${c.streams > 1 ? 's' : ''}, ` +
        `packet size ${common.packetSize}, ${limit}\n`,
    )
  }
  const row = (label: string, start: number, end: number, bytes: number, gbps: number, avg: number): string =>
    `${label}  ${`${start.toFixed(2)}-${end.toFixed(2)}`.padStart(13)}  ${formatBytes(bytes).padStart(12)}  ${formatGbps(gbps).padStart(9)}  ${formatGbps(avg).padStart(9)}\n`
  const onInterval = (iv: BenchInterval): void => {
    if (!text) return
    if (perConnection) {
      for (const cf of iv.connections) io.out(row(`[${String(cf.connection).padStart(3)}]`, iv.startSec, iv.endSec, cf.bytes, cf.gbps, cf.averageGbps))
    }
    io.out(row('[SUM]', iv.startSec, iv.endSec, iv.bytes, iv.gbps, iv.averageGbps))
  }
  const report = await runBenchClient({
    host,
    port,
    connections: c.connections,
    streams: c.streams,
    ...(c.durationSec !== undefined ? { durationSec: c.durationSec } : { bytes: c.bytes! }),
    packetSize: common.packetSize,
    engine: common.engine,
    udpBackend: common.udpBackend,
    trust,
    appName: CLI_APP_NAME,
    onConnected: ({ handshakeMs, client }) => {
      if (!text) return
      io.out(`Connected in ${handshakeMs.toFixed(0)} ms; client engine ${client.engine}, UDP backend ${client.udpBackend}\n`)
      io.out('Figures: bytes the server received and verified, timed by its clock.\n\n')
      io.out(`[ ID]  ${'Interval (s)'.padStart(13)}  ${'Transfer'.padStart(12)}  ${'Gbps'.padStart(9)}  ${'Avg Gbps'.padStart(9)}\n`)
    },
    onInterval,
  })
  let chartWritten = false
  if (c.chart !== undefined) {
    try {
      writeFileAtomic(c.chart, renderBenchChart(report, local ? 'local' : 'remote'))
      chartWritten = true
    } catch (err) {
      report.summary.errors.push(`cannot write --chart file ${JSON.stringify(c.chart)}: ${describeError(err)}`)
    }
  }
  if (common.json) {
    const summary = chartWritten ? { ...report.summary, chart: c.chart } : report.summary
    io.out(`${JSON.stringify({ mode: local ? 'local' : 'remote', ...report, summary }, null, 2)}\n`)
  } else {
    io.out(formatSummary(report))
    if (chartWritten) io.out(`  chart        ${c.chart}\n`)
  }
  return report.summary.verified && report.summary.errors.length === 0 ? 0 : 1
}

export function formatSummary(r: BenchReport): string {
  const s = r.summary
  const lines = [
    '- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -',
    'Summary (counted and verified by the receiver):',
    `  transferred  ${formatBytes(s.bytes)} (${s.bytes} bytes) in ${s.durationSec.toFixed(3)} s`,
    `  average      ${formatGbps(s.averageGbps)} Gbps`,
    `  peak         ${formatGbps(s.peakGbps)} Gbps ${s.peakFrom === 'interval' ? '(best interval of at least 0.5 s)' : '(no interval of 0.5 s or more: the average)'}`,
    s.verified ? `  verified     yes: every byte matched the pattern, and the server verified all ${s.sentBytes} bytes sent` : `  verified     NO`,
    `  client       engine ${s.client.engine}, UDP backend ${s.client.udpBackend}`,
    `  server       ${s.server ? `engine ${s.server.engine}, UDP backend ${s.server.udpBackend}` : 'unknown (no report)'}`,
  ]
  for (const e of s.errors) lines.push(`  error        ${e}`)
  return `${lines.join('\n')}\n`
}

// ---------------------------------------------------------------------------
// Local mode: the server in a child process

async function benchLocal(c: ClientShape, common: CommonOptions, io: CommandIo): Promise<number> {
  const args = [
    'bench',
    '--server',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--packet-size',
    String(common.packetSize),
    '--engine',
    common.engine,
    '--udp-backend',
    common.udpBackend,
  ]
  const child = fork(io.cliPath, args, {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, [CHILD_ENV]: '1' },
  })
  let stderr = ''
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (d: string) => {
    stderr = (stderr + d).slice(-8192)
  })
  try {
    const { port, fingerprint } = await waitListening(child, () => stderr)
    return await runClient('127.0.0.1', port, { pin: fingerprint }, c, common, io, { pid: child.pid! })
  } finally {
    await stopChild(child)
  }
}

function waitListening(child: ChildProcess, stderr: () => string): Promise<{ port: number; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(`did not start within ${CHILD_START_TIMEOUT_MS / 1000} s`), CHILD_START_TIMEOUT_MS)
    const fail = (why: string): void => {
      clearTimeout(timer)
      const tail = stderr().trim()
      reject(new Error(`local bench server ${why}${tail ? `:\n${tail}` : ''}`))
    }
    child.once('exit', (code, signal) => fail(`exited (${signal ?? `code ${code}`}) before listening`))
    child.once('error', (err) => fail(`could not start: ${err.message}`))
    child.on('message', (m: ChildMessage & { fingerprint?: string }) => {
      if (m.type === 'listening' && typeof m.fingerprint === 'string') {
        clearTimeout(timer)
        resolve({ port: m.port, fingerprint: m.fingerprint })
      } else if (m.type === 'error') {
        fail(`failed: ${m.message}`)
      }
    })
  })
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  // Closing the IPC channel tells the child to shut down.
  if (child.connected) child.disconnect()
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), 5000)
  })
  if ((await Promise.race([exited, late])) === 'late') {
    child.kill('SIGKILL')
    await exited
  }
  clearTimeout(timer)
}

// ---------------------------------------------------------------------------
// Server

async function listenBench(
  host: string,
  port: number,
  common: CommonOptions,
  identity: { cert: string; key: string } | null,
  onSession: (s: BenchSessionSummary) => void,
): Promise<{ stoq: Stoq; receiver: BenchReceiver; port: number; fingerprint: string; engine: string; udpBackend: string }> {
  const stoq = await Stoq.create(CLI_APP_NAME, {
    endpoint: { engine: common.engine, udpBackend: common.udpBackend, transport: { maxUdpPayloadSize: common.packetSize } },
  })
  try {
    let receiver: BenchReceiver | null = null
    const ep = await stoq.listen(
      { host, port },
      {
        ...(identity ?? {}),
        onStream: (stream, conn) => receiver!.handle(stream, conn),
      },
    )
    receiver = new BenchReceiver(ep, onSession)
    ep.on('error', () => {
      // Socket/engine trouble not tied to one stream: the affected streams report their own errors.
    })
    const fingerprint = identity ? fingerprintPem(identity.cert) : (await stoq.identity()).fingerprint
    const stats = ep.stats()
    return { stoq, receiver, port: ep.address.port, fingerprint, engine: stats.engine, udpBackend: stats.udp.backend }
  } catch (err) {
    await stoq.close()
    throw err
  }
}

function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals): void => {
      process.off('SIGINT', on)
      process.off('SIGTERM', on)
      resolve(sig)
    }
    process.on('SIGINT', on)
    process.on('SIGTERM', on)
  })
}

async function benchServer(host: string, port: number, common: CommonOptions, io: CommandIo): Promise<number> {
  const json = common.json
  const onSession = (s: BenchSessionSummary): void => {
    if (json) {
      io.out(`${JSON.stringify({ event: 'session', ...s })}\n`)
      return
    }
    const complete = s.streams === s.expectedStreams ? '' : ` (${s.streams} of ${s.expectedStreams} streams arrived)`
    io.out(
      `session ${s.session} from ${s.remote}: ${s.streams} stream${s.streams === 1 ? '' : 's'}${complete}, ${formatBytes(s.bytes)} (${s.bytes} bytes) ` +
        `received and verified in ${s.durationSec.toFixed(3)} s = ${formatGbps(s.gbps)} Gbps; pattern ${s.patternOk ? 'ok' : 'MISMATCH'}\n`,
    )
    for (const e of s.errors) io.out(`  error: ${e}\n`)
  }
  const srv = await listenBench(host, port, common, null, onSession)
  const where = formatHostPort(host, srv.port)
  if (json) {
    io.out(`${JSON.stringify({ event: 'listening', host, port: srv.port, fingerprint: srv.fingerprint, engine: srv.engine, udpBackend: srv.udpBackend })}\n`)
  } else {
    io.out(`stoq bench server listening on ${where} (engine ${srv.engine}, UDP backend ${srv.udpBackend})\n`)
    io.out(`fingerprint ${srv.fingerprint}\n`)
    io.out(`clients: stoq bench HOST:${srv.port} --pin ${srv.fingerprint}\n`)
  }
  await untilSignal()
  srv.receiver.close()
  await srv.stoq.close()
  return 0
}

/** benchChild's session callback: the local server prints nothing, the client in the parent process reports the run. */
function ignoreSession(): void {
  // Nothing to report from this side.
}

/** The local server: an ephemeral identity (nothing written to the user's config), reporting over IPC. */
async function benchChild(host: string, port: number, common: CommonOptions): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-bench-'))
  let identity: { cert: string; key: string }
  try {
    const id = await loadOrCreateIdentity('bench', { dir, validityDays: 1, renewBeforeDays: 0 })
    identity = { cert: id.cert, key: id.key }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const srv = await listenBench(host, port, common, identity, ignoreSession)
  const stopped = new Promise<void>((resolve) => {
    process.once('disconnect', () => resolve())
    process.once('SIGTERM', () => resolve())
    process.once('SIGINT', () => resolve())
  })
  process.send!({ type: 'listening', port: srv.port, fingerprint: srv.fingerprint })
  await stopped
  srv.receiver.close()
  await srv.stoq.close()
  return 0
}
