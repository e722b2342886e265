/**
 * Runs benchmark cases: for each run, a receiver process and a sender process
 * (peer.js), wired over IPC, with a deadline. Collects receiver-counted,
 * verified figures and summarises them.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { makeIdentity, type BenchIdentity } from './pki.js'
import { CASES, type CaseSpec, type CpuFigures, type FromPeer, type ToPeer } from './protocol.js'

const PEER_SCRIPT = fileURLToPath(new URL('./peer.js', import.meta.url))

const GiB = 1024 ** 3

/** Time peers get to report and exit after a run before they are killed. */
const EXIT_GRACE_MS = 5000

/** Characters of a peer's stderr kept for error messages. */
const STDERR_TAIL = 4000

// ---------------------------------------------------------------------------
// Children: every forked peer is killed when the harness exits, however it exits.

const live = new Set<ChildProcess>()

function killAll(): void {
  for (const child of live) child.kill('SIGKILL')
  live.clear()
}

process.on('exit', killAll)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    killAll()
    process.exit(128 + (os.constants.signals[signal] ?? 0))
  })
}

type Role = 'receiver' | 'sender'

/** A forked peer: typed messages in, failures (error message, early exit) out. */
class Peer {
  readonly role: Role
  readonly child: ChildProcess
  /** Last `progress` figure and when it came. */
  progressBytes = 0
  progressAt = performance.now()
  private stderr = ''
  private readonly waiting = new Map<string, (msg: FromPeer) => void>()
  private readonly arrived = new Map<string, FromPeer>()
  private expectExit = false
  readonly exited: Promise<number | null>

  constructor(
    role: Role,
    execArgv: string[],
    private readonly onFailure: (err: Error) => void,
  ) {
    this.role = role
    this.child = fork(PEER_SCRIPT, [role], { execArgv, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] })
    live.add(this.child)
    this.child.stderr!.setEncoding('utf8')
    this.child.stderr!.on('data', (s: string) => {
      this.stderr = (this.stderr + s).slice(-STDERR_TAIL)
    })
    this.child.on('message', (msg: FromPeer) => this.onMessage(msg))
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        live.delete(this.child)
        if (!this.expectExit) {
          this.onFailure(
            new Error(`${role} exited unexpectedly (${signal ?? `code ${String(code)}`})${this.stderr ? `; its stderr ends with:\n${this.stderr}` : ''}`),
          )
        }
        resolve(code)
      })
    })
    this.child.on('error', (err) => this.onFailure(new Error(`${role} process error: ${err.message}`)))
  }

  private onMessage(msg: FromPeer): void {
    if (msg.type === 'progress') {
      if (msg.bytes !== this.progressBytes) this.progressAt = performance.now()
      this.progressBytes = msg.bytes
      return
    }
    if (msg.type === 'error') {
      this.onFailure(new Error(`${this.role} failed: ${msg.message}${msg.code ? ` [${msg.code}]` : ''}`))
      return
    }
    const waiter = this.waiting.get(msg.type)
    if (waiter) {
      this.waiting.delete(msg.type)
      waiter(msg)
    } else {
      this.arrived.set(msg.type, msg)
    }
  }

  send(msg: ToPeer): void {
    this.child.send(msg)
  }

  /** The next message of a type (failures arrive through `onFailure`, raced by the caller). */
  next<T extends FromPeer['type']>(type: T): Promise<Extract<FromPeer, { type: T }>> {
    const ready = this.arrived.get(type)
    if (ready) {
      this.arrived.delete(type)
      return Promise.resolve(ready as Extract<FromPeer, { type: T }>)
    }
    return new Promise((resolve) => this.waiting.set(type, resolve as (msg: FromPeer) => void))
  }

  /** Ask the peer to report and exit; kill it if it takes longer than the grace time. */
  async finish(): Promise<Extract<FromPeer, { type: 'report' }>> {
    this.expectExit = true
    const report = this.next('report')
    this.send({ type: 'finish' })
    return report
  }

  async stop(): Promise<void> {
    this.expectExit = true
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const timer = setTimeout(() => this.child.kill('SIGKILL'), EXIT_GRACE_MS)
    await this.exited
    clearTimeout(timer)
  }

  kill(): void {
    this.expectExit = true
    this.child.kill('SIGKILL')
  }
}

// ---------------------------------------------------------------------------
// One run

export interface RunOptions {
  bytes: number
  /** STOQ: socket buffer size for both endpoints, or null for the transport's default. */
  socketBufferSize: number | null
  /** Sender gives every write a fresh buffer instead of reusing its ring (diagnostic). */
  copyWrites: boolean
  host: string
  timeoutMs: number
  /** Directory for `--cpu-prof` profiles of both peers, or null. */
  cpuProfDir: string | null
}

export interface RunResult {
  case: string
  run: number
  bytes: number
  /** Receiver wall time from first to last byte. */
  seconds: number
  gbps: number
  receiverCpu: CpuFigures
  senderCpu: CpuFigures | null
  /**
   * CPU seconds (user + system, every thread, sender and receiver processes) per GiB moved:
   * what matters where the link, not the CPU, is the limit.
   */
  cpuSecondsPerGiB: number | null
  /** Event-loop delay p99 (ms) of each side while it moved data. */
  receiverLoopP99Ms: number
  senderLoopP99Ms: number | null
  /** STOQ: datagrams per socket send call on the sender (1 without GSO/sendmmsg). */
  packetsPerSendCall: number | null
  /**
   * Change of the kernel's UDP counters over the run (Linux /proc/net/snmp,
   * system-wide: other UDP traffic on the machine counts too), or null.
   * RcvbufErrors are datagrams dropped because a receive buffer was full.
   */
  kernelUdp: Record<string, number> | null
  /** STOQ: sender connection stats, sender and receiver endpoint stats. */
  senderConnection?: unknown
  senderEndpoint?: unknown
  receiverConnection?: unknown
  receiverEndpoint?: unknown
}

/**
 * The kernel's UDP counters (Linux): IPv4 ones from /proc/net/snmp under their
 * own names (`RcvbufErrors`), IPv6 ones from /proc/net/snmp6 (`Udp6RcvbufErrors`).
 * Null where they cannot be read.
 */
function kernelUdpCounters(): Record<string, number> | null {
  try {
    const lines = fs
      .readFileSync('/proc/net/snmp', 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('Udp:'))
    const names = lines[0]?.split(/\s+/).slice(1) ?? []
    const values = lines[1]?.split(/\s+/).slice(1).map(Number) ?? []
    const counters: Record<string, number> = Object.fromEntries(names.map((n, i) => [n, values[i] ?? 0]))
    try {
      for (const line of fs.readFileSync('/proc/net/snmp6', 'utf8').split('\n')) {
        const [name, value] = line.trim().split(/\s+/)
        if (name?.startsWith('Udp6') && value !== undefined) counters[name] = Number(value)
      }
    } catch {
      // No IPv6 counters on this kernel.
    }
    return counters
  } catch {
    return null
  }
}

function counterDelta(a: Record<string, number> | null, b: Record<string, number> | null): Record<string, number> | null {
  if (a === null || b === null) return null
  return Object.fromEntries(Object.keys(b).map((k) => [k, (b[k] ?? 0) - (a[k] ?? 0)]))
}

function execArgvFor(o: RunOptions, spec: CaseSpec, role: Role, run: number): string[] {
  if (o.cpuProfDir === null) return []
  return ['--cpu-prof', '--cpu-prof-interval=100', `--cpu-prof-dir=${o.cpuProfDir}`, `--cpu-prof-name=${spec.name}-run${run}-${role}.cpuprofile`]
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`
}

/** Run one sender/receiver pair; rejects on timeout, peer failure or data that does not verify. */
export async function runOnce(spec: CaseSpec, o: RunOptions, identity: BenchIdentity, run: number): Promise<RunResult> {
  let failWith!: (err: Error) => void
  const failure = new Promise<never>((_, reject) => {
    failWith = reject
  })
  failure.catch(() => {
    // Marks it handled: the race below is where the failure is seen.
  })
  const race = <T>(p: Promise<T>): Promise<T> => Promise.race([p, failure])
  const peers: Peer[] = []
  const timer = setTimeout(() => {
    const [receiver, sender] = peers
    const now = performance.now()
    const parts = [`${spec.label} run ${run} did not finish within ${o.timeoutMs} ms (--timeout-ms)`]
    if (receiver) {
      parts.push(
        `receiver had verified ${mib(receiver.progressBytes)} of ${mib(o.bytes)} (last progress ${((now - receiver.progressAt) / 1000).toFixed(1)} s ago)` +
          (receiver.progressBytes === o.bytes ? ', so every byte arrived but the end of the stream (FIN) did not' : ''),
      )
    }
    if (sender) {
      parts.push(`sender had handed ${mib(sender.progressBytes)} to the transport (last progress ${((now - sender.progressAt) / 1000).toFixed(1)} s ago)`)
    } else {
      parts.push('the sender had not started (receiver never listened)')
    }
    failWith(new Error(parts.join('; ')))
  }, o.timeoutMs)

  try {
    const receiver = new Peer('receiver', execArgvFor(o, spec, 'receiver', run), failWith)
    peers.push(receiver)
    receiver.send({
      type: 'start',
      role: 'receiver',
      spec,
      host: o.host,
      bytes: o.bytes,
      socketBufferSize: o.socketBufferSize,
      cert: identity.cert,
      key: identity.key,
    })
    const { port, dialInfo } = await race(receiver.next('listening'))

    const sender = new Peer('sender', execArgvFor(o, spec, 'sender', run), failWith)
    peers.push(sender)
    sender.send({
      type: 'start',
      role: 'sender',
      spec,
      host: o.host,
      port,
      ...(dialInfo !== undefined ? { dialInfo } : {}),
      bytes: o.bytes,
      socketBufferSize: o.socketBufferSize,
      copyWrites: o.copyWrites,
      pin: identity.pin,
      cert: identity.cert,
    })

    const udpBefore = kernelUdpCounters()
    const [received] = await race(Promise.all([receiver.next('received'), sender.next('sent')]))
    const udpAfter = kernelUdpCounters()
    const senderReport = await race(sender.finish())
    const receiverReport = await race(receiver.finish())
    await race(Promise.all([sender.stop(), receiver.stop()]))

    const seconds = received.firstToLastMs / 1000
    const endpoint = senderReport.endpoint as { udp?: { sendCalls?: number; packetsSent?: number } } | undefined
    const udp = endpoint?.udp
    return {
      case: spec.name,
      run,
      bytes: received.bytes,
      seconds,
      gbps: (received.bytes * 8) / seconds / 1e9,
      receiverCpu: received.cpu,
      senderCpu: senderReport.cpu ?? null,
      cpuSecondsPerGiB: senderReport.cpu
        ? ((senderReport.cpu.userMs + senderReport.cpu.systemMs + received.cpu.userMs + received.cpu.systemMs) / 1000) * (GiB / received.bytes)
        : null,
      receiverLoopP99Ms: received.loopP99Ms,
      senderLoopP99Ms: senderReport.loopP99Ms ?? null,
      packetsPerSendCall: udp?.sendCalls ? (udp.packetsSent ?? 0) / udp.sendCalls : null,
      kernelUdp: counterDelta(udpBefore, udpAfter),
      ...(spec.transport === 'stoq'
        ? {
            senderConnection: senderReport.connection,
            senderEndpoint: senderReport.endpoint,
            receiverConnection: receiverReport.connection,
            receiverEndpoint: receiverReport.endpoint,
          }
        : {}),
    }
  } finally {
    clearTimeout(timer)
    for (const p of peers) p.kill()
  }
}

// ---------------------------------------------------------------------------
// A suite: every case, `runs` times, interleaved so noise hits all cases alike.

export interface CaseSummary {
  case: string
  label: string
  runs: RunResult[]
  /** Set when a run failed: the case then has no figure. */
  error: string | null
  medianGbps: number | null
  minGbps: number | null
  maxGbps: number | null
  /** Median Gbps over the TCP median of the same invocation. */
  ratioVsTcp: number | null
  /** Median Gbps over the Node tls median of the same invocation (when the `tls` case ran). */
  ratioVsTls: number | null
  /** Median CPU seconds per GiB, both processes (see RunResult). */
  cpuSecondsPerGiB: number | null
  /** Median over runs of the larger of the two sides' event-loop delay p99, ms. */
  loopP99Ms: number | null
  senderCpuPct: number | null
  receiverCpuPct: number | null
  packetsPerSendCall: number | null
}

export interface SuiteOptions extends RunOptions {
  runs: number
  cases: CaseSpec[]
}

export interface SuiteResult {
  benchmark: string
  startedAt: string
  machine: {
    cpu: string
    cores: number
    memoryGiB: number
    kernel: string
    node: string
    /** 1-minute load average when the suite started: other work on the machine skews every figure. */
    loadAverage1m: number
  }
  /** Which build of @stoq/transport-core was measured: its version and the SHA-256 of its dist entry. */
  transportCore: { version: string; distSha256: string; distModified: string } | null
  /** Set when transport-core's dist changed while the suite ran: its runs mixed builds. */
  transportCoreChanged: boolean
  options: {
    bytes: number
    runs: number
    host: string
    timeoutMs: number
    socketBufferSize: number | null
    copyWrites: boolean
    cases: string[]
  }
  cases: CaseSummary[]
  ok: boolean
}

export function median(values: number[]): number | null {
  if (values.length === 0) return null
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

function transportCoreBuild(): SuiteResult['transportCore'] {
  try {
    const entry = fileURLToPath(import.meta.resolve('@stoq/transport-core'))
    const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(entry), '..', 'package.json'), 'utf8')) as { version: string }
    return {
      version: pkg.version,
      distSha256: createHash('sha256').update(fs.readFileSync(entry)).digest('hex'),
      distModified: fs.statSync(entry).mtime.toISOString(),
    }
  } catch {
    return null
  }
}

function machine(): SuiteResult['machine'] {
  const cpus = os.cpus()
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    loadAverage1m: Math.round(os.loadavg()[0]! * 100) / 100,
  }
}

export function fmtGbps(g: number | null): string {
  if (g === null) return '—'
  return g >= 10 ? g.toFixed(1) : g >= 1 ? g.toFixed(2) : g.toFixed(3)
}

function fmtPct(p: number | null): string {
  return p === null ? '—' : `${Math.round(p)}%`
}

function describeRun(r: RunResult): string {
  const parts = [
    `${fmtGbps(r.gbps)} Gbps (${mib(r.bytes)} in ${r.seconds.toFixed(2)} s)`,
    `sender CPU ${fmtPct(r.senderCpu?.cpuPct ?? null)}`,
    `receiver CPU ${fmtPct(r.receiverCpu.cpuPct)}`,
    `${r.cpuSecondsPerGiB === null ? '—' : r.cpuSecondsPerGiB.toFixed(2)} CPU s/GiB`,
    `loop p99 ${r.receiverLoopP99Ms.toFixed(1)}/${r.senderLoopP99Ms?.toFixed(1) ?? '—'} ms (receiver/sender)`,
  ]
  if (r.packetsPerSendCall !== null) parts.push(`${r.packetsPerSendCall.toFixed(2)} pkts/send call`)
  const c = r.senderConnection as { packetsSent?: number; packetsLost?: number; rttMs?: number } | undefined
  if (c?.packetsSent) {
    parts.push(
      `${c.packetsSent} pkts sent, ${c.packetsLost ?? 0} lost (${(((c.packetsLost ?? 0) / c.packetsSent) * 100).toFixed(2)}%), rtt ${c.rttMs?.toFixed(2)} ms`,
    )
    if (r.kernelUdp) {
      const drops = (r.kernelUdp.RcvbufErrors ?? 0) + (r.kernelUdp.Udp6RcvbufErrors ?? 0)
      parts.push(`kernel UDP RcvbufErrors +${drops} (system-wide)`)
    }
  }
  return parts.join(', ')
}

export async function runSuite(o: SuiteOptions, log: (line: string) => void = console.log): Promise<SuiteResult> {
  const host = machine()
  const coreBefore = transportCoreBuild()
  const identity = await makeIdentity()
  if (o.cpuProfDir !== null) fs.mkdirSync(o.cpuProfDir, { recursive: true })
  const byCase = new Map<string, { runs: RunResult[]; error: string | null }>()
  for (const spec of o.cases) byCase.set(spec.name, { runs: [], error: null })
  for (let run = 1; run <= o.runs; run++) {
    for (const spec of o.cases) {
      const entry = byCase.get(spec.name)!
      if (entry.error !== null) continue
      const prefix = `${spec.name.padEnd(10)} run ${run}/${o.runs}:`
      try {
        const r = await runOnce(spec, o, identity, run)
        entry.runs.push(r)
        log(`${prefix} ${describeRun(r)}`)
      } catch (err) {
        entry.error = (err as Error).message
        log(`${prefix} FAILED: ${entry.error}`)
      }
    }
  }
  const summaries: CaseSummary[] = o.cases.map((spec) => {
    const { runs, error } = byCase.get(spec.name)!
    const ok = error === null && runs.length > 0
    const g = runs.map((r) => r.gbps)
    const ppsc = runs.map((r) => r.packetsPerSendCall).filter((x): x is number => x !== null)
    return {
      case: spec.name,
      label: spec.label,
      runs,
      error,
      medianGbps: ok ? median(g) : null,
      minGbps: ok ? Math.min(...g) : null,
      maxGbps: ok ? Math.max(...g) : null,
      ratioVsTcp: null,
      ratioVsTls: null,
      cpuSecondsPerGiB: ok && runs.every((r) => r.cpuSecondsPerGiB !== null) ? median(runs.map((r) => r.cpuSecondsPerGiB!)) : null,
      loopP99Ms: ok ? median(runs.map((r) => Math.max(r.receiverLoopP99Ms, r.senderLoopP99Ms ?? 0))) : null,
      senderCpuPct: ok ? median(runs.map((r) => r.senderCpu?.cpuPct ?? 0)) : null,
      receiverCpuPct: ok ? median(runs.map((r) => r.receiverCpu.cpuPct)) : null,
      packetsPerSendCall: ok ? median(ppsc) : null,
    }
  })
  const coreAfter = transportCoreBuild()
  const tcp = summaries.find((s) => s.case === 'tcp')?.medianGbps ?? null
  const tlsGbps = summaries.find((s) => s.case === 'tls')?.medianGbps ?? null
  for (const s of summaries) {
    s.ratioVsTcp = tcp !== null && s.medianGbps !== null ? s.medianGbps / tcp : null
    s.ratioVsTls = tlsGbps !== null && s.medianGbps !== null ? s.medianGbps / tlsGbps : null
  }
  return {
    benchmark: 'throughput',
    startedAt: new Date().toISOString(),
    machine: host,
    transportCore: coreBefore,
    transportCoreChanged: coreBefore?.distSha256 !== coreAfter?.distSha256,
    options: {
      bytes: o.bytes,
      runs: o.runs,
      host: o.host,
      timeoutMs: o.timeoutMs,
      socketBufferSize: o.socketBufferSize,
      copyWrites: o.copyWrites,
      cases: o.cases.map((c) => c.name),
    },
    cases: summaries,
    ok: summaries.every((s) => s.error === null),
  }
}

// ---------------------------------------------------------------------------
// Output

export function formatTable(result: SuiteResult): string {
  const header = ['case', 'median Gbps', 'min–max', 'vs TCP', 'vs TLS', 'CPU s/GiB', 'loop p99 ms', 'sender CPU', 'receiver CPU', 'pkts/send call']
  const rows = result.cases.map((s) =>
    s.error !== null
      ? [s.label, 'FAILED', '', '', '', '', '', '', '', '']
      : [
          s.label,
          fmtGbps(s.medianGbps),
          `${fmtGbps(s.minGbps)}–${fmtGbps(s.maxGbps)}`,
          s.ratioVsTcp === null ? '—' : `${s.ratioVsTcp.toFixed(3)}×`,
          s.ratioVsTls === null ? '—' : `${s.ratioVsTls.toFixed(3)}×`,
          s.cpuSecondsPerGiB === null ? '—' : s.cpuSecondsPerGiB.toFixed(2),
          s.loopP99Ms === null ? '—' : s.loopP99Ms.toFixed(1),
          fmtPct(s.senderCpuPct),
          fmtPct(s.receiverCpuPct),
          s.packetsPerSendCall === null ? '—' : s.packetsPerSendCall.toFixed(2),
        ],
  )
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`
  const sep = `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`
  const m = result.machine
  const core = result.transportCore
  const out = [
    `${mib(result.options.bytes)} on one stream in 64 KiB writes, ${result.options.host}, ${result.options.runs} run(s) per case; ` +
      `Gbps counted by the receiver from first to last byte, every byte verified.` +
      (result.options.socketBufferSize !== null ? ` STOQ socket buffers: ${result.options.socketBufferSize} bytes.` : '') +
      (result.options.copyWrites ? ' Sender copies every write (--copy-writes).' : ''),
    `machine: ${m.cpu}, ${m.cores} cores, ${m.kernel}, Node ${m.node}, load average ${m.loadAverage1m} at start. CPU% is of one core over the transfer; ` +
      `CPU s/GiB adds both processes, all threads; loop p99 is the worse side's event-loop delay while moving data.`,
    `@stoq/transport-core ${core ? `${core.version}, dist sha256 ${core.distSha256.slice(0, 12)} built ${core.distModified}` : 'build unknown'}` +
      (result.transportCoreChanged ? ' — WARNING: its dist was rebuilt during this invocation, runs mixed builds' : ''),
    '',
    line(header),
    sep,
    ...rows.map(line),
  ]
  for (const s of result.cases) if (s.error !== null) out.push('', `${s.label} FAILED: ${s.error}`)
  return out.join('\n')
}

export function writeJson(file: string, result: SuiteResult): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true })
  fs.writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`)
}

// ---------------------------------------------------------------------------
// Command line

export class UsageError extends Error {}

const SIZE = /^(\d+(?:\.\d+)?)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)$/i
const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1e3, kib: 1024, m: 2 ** 20, mb: 1e6, mib: 2 ** 20, g: 2 ** 30, gb: 1e9, gib: 2 ** 30 }

export function parseBytes(text: string, name = '--bytes'): number {
  const m = SIZE.exec(text.trim())
  const n = m ? Math.round(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!) : NaN
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new UsageError(`${name}: expected a positive size such as 1073741824, 256MiB or 1GiB, got ${JSON.stringify(text)}`)
  }
  return n
}

function parseInteger(name: string, text: string, min: number, max: number): number {
  const n = Number(text)
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`)
  }
  return n
}

export interface CliDefaults {
  bytes: number
  runs: number
  cases: string[]
  host: string
  timeoutMs: number
}

export interface CliOptions extends SuiteOptions {
  json: string | null
}

export const HOSTS = ['127.0.0.1', '::1']

export function usage(script: string, d: CliDefaults): string {
  return [
    `usage: node dist/${script}.js [options]`,
    '',
    `  --bytes SIZE        bytes per run (default ${d.bytes}); suffixes KiB, MiB, GiB accepted`,
    `  --runs N            runs per case (default ${d.runs}); the table shows the median and min–max`,
    `  --cases LIST        comma-separated, from ${Object.keys(CASES).join(', ')} (default ${d.cases.join(',')})`,
    `  --host ADDR         ${HOSTS.join(' or ')} (default ${d.host})`,
    `  --timeout-ms MS     a run that takes longer fails (default ${d.timeoutMs})`,
    "  --socket-buffer SIZE  STOQ: socketBufferSize of both endpoints (default: the transport's own)",
    '  --copy-writes       sender gives each write a fresh buffer instead of reusing one (diagnostic)',
    '  --json FILE         also write the results as JSON',
    '  --cpu-prof DIR      run both peers under node --cpu-prof, profiles in DIR (see dist/profile-top.js)',
    '  -h, --help',
  ].join('\n')
}

/** Parse argv; returns null when help was asked for. */
export function parseCli(argv: string[], d: CliDefaults): CliOptions | null {
  // biome-ignore lint/suspicious/noImplicitAnyLet: TypeScript types it from the parseArgs assignment below
  let values
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        bytes: { type: 'string' },
        runs: { type: 'string' },
        cases: { type: 'string' },
        host: { type: 'string' },
        'timeout-ms': { type: 'string' },
        json: { type: 'string' },
        'socket-buffer': { type: 'string' },
        'copy-writes': { type: 'boolean' },
        'cpu-prof': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }))
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  if (values.help) return null
  const names =
    values.cases === undefined
      ? d.cases
      : values.cases
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
  if (names.length === 0) throw new UsageError(`--cases: expected a list from ${Object.keys(CASES).join(', ')}`)
  const cases = names.map((n) => {
    const spec = CASES[n]
    if (!spec) throw new UsageError(`--cases: unknown case ${JSON.stringify(n)}; expected ${Object.keys(CASES).join(', ')}`)
    return spec
  })
  const host = values.host ?? d.host
  if (!HOSTS.includes(host)) throw new UsageError(`--host: expected ${HOSTS.join(' or ')}, got ${JSON.stringify(host)}`)
  return {
    bytes: values.bytes === undefined ? d.bytes : parseBytes(values.bytes),
    runs: values.runs === undefined ? d.runs : parseInteger('--runs', values.runs, 1, 100),
    cases,
    host,
    timeoutMs: values['timeout-ms'] === undefined ? d.timeoutMs : parseInteger('--timeout-ms', values['timeout-ms'], 1000, 24 * 3600_000),
    json: values.json ?? null,
    copyWrites: values['copy-writes'] ?? false,
    socketBufferSize: values['socket-buffer'] === undefined ? null : parseBytes(values['socket-buffer'], '--socket-buffer'),
    cpuProfDir: values['cpu-prof'] === undefined ? null : path.resolve(values['cpu-prof']),
  }
}

/** Shared main: parse, run, print; exit code 0 only when every run verified. */
export async function main(script: string, d: CliDefaults, print: (r: SuiteResult) => void): Promise<void> {
  let o: CliOptions | null
  try {
    o = parseCli(process.argv.slice(2), d)
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n\n${usage(script, d)}`)
      process.exit(2)
    }
    throw err
  }
  if (o === null) {
    console.log(usage(script, d))
    return
  }
  const result = await runSuite(o)
  console.log('')
  print(result)
  if (o.json !== null) {
    writeJson(o.json, result)
    console.log(`\nJSON written to ${o.json}`)
  }
  process.exitCode = result.ok ? 0 : 1
}
