/**
 * `stoq serve DIR|-` and `stoq send FILE|- HOST:PORT`: one file per stream,
 * checked end to end with SHA-256 (wire format in transfer-protocol.ts).
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { StoqError, StoqInvalidArgumentError, type EngineChoice, type QuicConnection, type QuicStream, type UdpBackendChoice } from '@stoq/transport-core'
import { Stoq, type StoqConnectOptions } from '../stoq.js'
import { formatHostPort, parseArgs, parseTargetArg, type OptionKind } from './args.js'
import { StoqIntegrityError, StoqProtocolError, StoqRemoteError, StoqUsageError, describeError, unlessStalled } from './errors.js'
import { formatBytes, formatGbps, gbpsOf } from './format.js'
import { ignoreRejection } from '../ignore.js'
import { LineSplitter } from './bench-protocol.js'
import { CLI_APP_NAME, BENCH_DEFAULT_PACKET_SIZE, type CommandIo } from './bench.js'
import { IncomingTransfer, OutgoingTransfer, parseTransferReply, validateTransferName, type TransferReply, type TransferTrailer } from './transfer-protocol.js'
import { WEBTRANSPORT_DEFAULT_HTTP_PORT, WEBTRANSPORT_DEFAULT_PATH, serveWebTransportCommand } from './serve-webtransport.js'

export const SERVE_DEFAULT_PORT = 4433
/** Time the sender waits for the receiver's verdict once everything is sent. */
export const SEND_REPLY_TIMEOUT_MS = 60_000
const READ_CHUNK = 256 * 1024
/** A write the receiver makes no room for during this long fails the transfer. */
export const SEND_STALL_MS = 30_000
/** With --once, how long the receiver waits for the sender to close after the verdict. */
const ONCE_LINGER_MS = 5000

const encoder = new TextEncoder()

const TRANSPORT_SPECS: Record<string, OptionKind> = {
  'packet-size': { type: 'int', min: 1200, max: 65527 },
  engine: { type: 'choice', choices: ['auto', 'quinn', 'quiche'] },
  'udp-backend': { type: 'choice', choices: ['auto', 'gro', 'gso', 'dgram'] },
}

function endpointOptions(v: Record<string, unknown>): { engine: EngineChoice; udpBackend: UdpBackendChoice; transport: { maxUdpPayloadSize: number } } {
  return {
    engine: ((v.engine as string | undefined) ?? 'auto') as EngineChoice,
    udpBackend: ((v['udp-backend'] as string | undefined) ?? 'auto') as UdpBackendChoice,
    transport: { maxUdpPayloadSize: (v['packet-size'] as number | undefined) ?? BENCH_DEFAULT_PACKET_SIZE },
  }
}

const TRANSPORT_HELP = `  --packet-size BYTES  largest UDP payload (1200-65527, default ${BENCH_DEFAULT_PACKET_SIZE})
  --engine NAME        QUIC engine: auto, quinn or quiche (default auto)
  --udp-backend NAME   UDP backend: auto, gro, gso or dgram (default auto)
  -h, --help           this text`

// ---------------------------------------------------------------------------
// serve

export const SERVE_HELP = `Usage:
  stoq serve DIR [options]            store each received file in DIR
  stoq serve - [options]              write one received file to stdout, then exit
  stoq serve --webtransport [options] WebTransport echo server for browsers, with an example page

Listens with this machine's STOQ identity ($XDG_CONFIG_HOME/stoq/${CLI_APP_NAME}, created on
first use) and prints its SHA-256 fingerprint for senders to pin. Each file is
checked end to end: the sender's SHA-256 must match the data received, else the
transfer fails on both sides and nothing is stored.

Options:
  --port N             UDP port (default ${SERVE_DEFAULT_PORT}; 0 picks one)
  --host IP            address to bind (default ::, all IPv4 and IPv6 addresses)
  --force              replace existing files (default: refuse)
  --once               exit after the first transfer (implied by -)
${TRANSPORT_HELP}

Names are taken as plain file names: a name with "/" or "\\", "." or ".." is
refused. Messages go to stdout (stderr with -). Exit status: 0 when every
transfer succeeded, 1 when one failed (with --once: that transfer's result),
2 on bad arguments.

WebTransport (--webtransport, no DIR):
  Serves WebTransport (HTTP/3) on the UDP port with the app's short-lived
  browser certificate ($XDG_CONFIG_HOME/stoq/${CLI_APP_NAME}/webtransport-cert.pem: ECDSA P-256,
  at most 14 days, renewed when near expiry at start-up), which Chrome accepts
  through serverCertificateHashes. Every session is echoed: bidirectional
  streams are sent back on themselves, each unidirectional stream is answered
  on a new unidirectional stream with the same bytes, datagrams are sent back.
  Sessions are logged on stdout.
  The example page is served over plain HTTP (a secure context on localhost):
  open http://localhost:HTTP-PORT/ in Chrome; it loads /webtransport.json
  ({ url, serverCertificateHashes }) and connects by itself.
  Prints the WebTransport URL, the certificate SHA-256, the page URL and the
  line "ports udp=N http=N"; runs until SIGINT or SIGTERM (exit 0).

  --webtransport       serve WebTransport instead of receiving files
  --port N             UDP port (default ${SERVE_DEFAULT_PORT}; 0 picks one)
  --host IP            address to bind, UDP and HTTP (default ::)
  --http-port N        TCP port of the page (default ${WEBTRANSPORT_DEFAULT_HTTP_PORT}; 0 picks one)
  --path PATH          WebTransport path (default ${WEBTRANSPORT_DEFAULT_PATH})
  --packet-size, --engine, --udp-backend as above.`

const SERVE_SPECS: Record<string, OptionKind> = {
  port: { type: 'int', min: 0, max: 65535 },
  host: { type: 'ip' },
  force: { type: 'flag' },
  once: { type: 'flag' },
  webtransport: { type: 'flag' },
  'http-port': { type: 'int', min: 0, max: 65535 },
  path: { type: 'string' },
  ...TRANSPORT_SPECS,
}

interface Sink {
  write(data: Uint8Array): Promise<void>
  /** Everything arrived and checked: make it visible under its name. Returns where. */
  commit(): Promise<string>
  abort(): Promise<void>
}

class FileSink implements Sink {
  private constructor(
    private readonly fh: fsp.FileHandle,
    private readonly tmp: string,
    private readonly target: string,
    private readonly force: boolean,
  ) {}

  static async open(dir: string, name: string, force: boolean): Promise<FileSink> {
    const target = path.join(dir, name)
    if (!force && fs.existsSync(target)) {
      throw new StoqInvalidArgumentError(
        'name',
        `${JSON.stringify(name)} already exists in the receiver's directory (the receiver can allow replacing with --force)`,
      )
    }
    const tmp = path.join(dir, `.stoq-partial-${randomBytes(6).toString('hex')}`)
    const fh = await fsp.open(tmp, 'wx', 0o644)
    return new FileSink(fh, tmp, target, force)
  }

  async write(data: Uint8Array): Promise<void> {
    let at = 0
    while (at < data.length) {
      const { bytesWritten } = await this.fh.write(data, at, data.length - at)
      at += bytesWritten
    }
  }

  async commit(): Promise<string> {
    await this.fh.datasync()
    await this.fh.close()
    try {
      if (this.force) {
        await fsp.rename(this.tmp, this.target)
        return this.target
      }
      try {
        // link() fails if the name exists meanwhile: never replaces a file.
        await fsp.link(this.tmp, this.target)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'EEXIST')
          throw new StoqInvalidArgumentError('name', `${JSON.stringify(path.basename(this.target))} already exists in the receiver's directory`)
        // A file system without hard links: check, then rename.
        if (fs.existsSync(this.target))
          throw new StoqInvalidArgumentError('name', `${JSON.stringify(path.basename(this.target))} already exists in the receiver's directory`)
        await fsp.rename(this.tmp, this.target)
        return this.target
      }
      await fsp.unlink(this.tmp)
      return this.target
    } catch (err) {
      await fsp.unlink(this.tmp).catch(ignoreRejection) // the commit error is what the caller gets; a temporary file already gone is fine
      throw err
    }
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(ignoreRejection) // aborting: a handle that fails to close is dropped all the same
    await fsp.unlink(this.tmp).catch(ignoreRejection) // aborting: a temporary file already gone is fine
  }
}

class StdoutSink implements Sink {
  async write(data: Uint8Array): Promise<void> {
    if (!process.stdout.write(data)) {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error): void => {
          process.stdout.off('drain', ok)
          process.stdout.off('error', done)
          if (err) reject(err)
          else resolve()
        }
        const ok = (): void => done()
        process.stdout.once('drain', ok)
        process.stdout.once('error', done)
      })
    }
  }

  async commit(): Promise<string> {
    return 'stdout'
  }

  async abort(): Promise<void> {
    // What went to stdout cannot be taken back: nothing to undo.
  }
}

/** Receiver-side duration and rate; a rate over less than 10 ms says nothing and is left out. */
function timing(bytes: number, ms: number): string {
  if (ms < 10) return `${ms.toFixed(1)} ms, too short to give a rate`
  return `${(ms / 1000).toFixed(3)} s, ${formatGbps(gbpsOf(bytes, ms))} Gbps`
}

function peerText(conn: QuicConnection): string {
  const a = conn.remoteAddress
  const host = a.address.startsWith('::ffff:') ? a.address.slice(7) : a.address
  return formatHostPort(host, a.port)
}

function generatedName(): string {
  const d = new Date()
  const p = (n: number): string => String(n).padStart(2, '0')
  return `stdin-${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}-${randomBytes(2).toString('hex')}`
}

export interface ReceiveResult {
  ok: boolean
  peer: string
  name: string | null
  bytes: number
  sha256?: string
  storedAt?: string
  ms?: number
  error?: string
}

/** Receive one file on `stream`; never throws (failures are replied to the sender and returned). */
export async function receiveTransfer(stream: QuicStream, conn: QuicConnection, dir: string | null, force: boolean): Promise<ReceiveResult> {
  const peer = peerText(conn)
  if (stream.readable === null || stream.writable === null) {
    stream.stopSending(1)
    return { ok: false, peer, name: null, bytes: 0, error: 'STOQ_ERR_PROTOCOL: a unidirectional stream (no way to reply)' }
  }
  const reader = stream.readable.getReader()
  const writer = stream.writable.getWriter()
  const reply = async (r: TransferReply): Promise<void> => {
    try {
      await writer.write(encoder.encode(`${JSON.stringify(r)}\n`))
      await writer.close()
    } catch {
      // The sender is gone; its own side reports that.
    }
  }
  const incoming = new IncomingTransfer()
  let sink: Sink | null = null
  let name: string | null = null
  let firstAt = -1
  let endAt = -1
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      for (const ev of incoming.push(value)) {
        if (ev.kind === 'header') {
          if (dir === null) {
            name = ev.header.name ?? 'stdin'
            sink = new StdoutSink()
          } else {
            name = ev.header.name === null ? generatedName() : validateTransferName(ev.header.name)
            sink = await FileSink.open(dir, name, force)
          }
        } else if (ev.kind === 'data') {
          if (firstAt < 0) firstAt = performance.now()
          await sink!.write(ev.data)
        } else {
          endAt = performance.now()
        }
      }
    }
    const trailer = incoming.finish()
    const storedAt = await sink!.commit()
    const ms = firstAt < 0 ? 0 : endAt - firstAt
    // "-" tells the sender the data went to the receiver's stdout.
    await reply({ ok: true, name: dir === null ? '-' : name!, bytes: trailer.bytes, sha256: trailer.sha256, ms })
    return { ok: true, peer, name, bytes: trailer.bytes, sha256: trailer.sha256, storedAt, ms }
  } catch (err) {
    await sink?.abort()
    const code = StoqError.isInstance(err) ? err.code : 'STOQ_ERR_PROTOCOL'
    const message = err instanceof Error ? err.message : String(err)
    try {
      stream.stopSending(1)
    } catch {
      // Already finished reading.
    }
    await reply({ ok: false, code, error: message })
    return { ok: false, peer, name, bytes: incoming.bytes, error: `${code}: ${message}` }
  }
}

/** A promise that never settles: `stoq serve` without `--once` runs until a signal. */
function never(): Promise<never> {
  return new Promise<never>(() => {
    // Never settles, by design.
  })
}

function untilSignal(): { promise: Promise<void>; cancel: () => void } {
  let cancel = (): void => {
    // Replaced below, as soon as the listeners are on.
  }
  const promise = new Promise<void>((resolve) => {
    const on = (): void => {
      cancel()
      resolve()
    }
    cancel = () => {
      process.off('SIGINT', on)
      process.off('SIGTERM', on)
    }
    process.on('SIGINT', on)
    process.on('SIGTERM', on)
  })
  return { promise, cancel }
}

export async function serveCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values: v, positionals, help } = parseArgs('serve', argv, SERVE_SPECS)
  if (help) {
    io.out(`${SERVE_HELP}\n`)
    return 0
  }
  if (v.webtransport === true) {
    if (positionals.length > 0)
      throw new StoqUsageError('serve', positionals[0]!, `unexpected argument ${JSON.stringify(positionals[0])}: --webtransport takes no DIR`)
    for (const o of ['force', 'once'] as const) {
      if (v[o] === true) throw new StoqUsageError('serve', `--${o}`, `--${o} is for receiving files, not for --webtransport`)
    }
    const wtPath = (v.path as string | undefined) ?? WEBTRANSPORT_DEFAULT_PATH
    if (!/^\/[\x21-\x7e]*$/.test(wtPath) || wtPath.includes('?') || wtPath.includes('#')) {
      throw new StoqUsageError('serve', '--path', `--path expects a path starting with "/" (printable characters, no query), got ${JSON.stringify(wtPath)}`)
    }
    return serveWebTransportCommand(
      CLI_APP_NAME,
      {
        host: (v.host as string | undefined) ?? '::',
        port: (v.port as number | undefined) ?? SERVE_DEFAULT_PORT,
        httpPort: (v['http-port'] as number | undefined) ?? WEBTRANSPORT_DEFAULT_HTTP_PORT,
        path: wtPath,
        endpoint: endpointOptions(v),
      },
      io,
    )
  }
  for (const o of ['http-port', 'path'] as const) {
    if (v[o] !== undefined) throw new StoqUsageError('serve', `--${o}`, `--${o} needs --webtransport`)
  }
  if (positionals.length === 0) throw new StoqUsageError('serve', 'DIR', 'missing DIR (a directory to store files in, or - for stdout), or --webtransport')
  if (positionals.length > 1) throw new StoqUsageError('serve', positionals[1]!, `unexpected argument ${JSON.stringify(positionals[1])}`)
  const toStdout = positionals[0] === '-'
  let dir: string | null = null
  if (!toStdout) {
    dir = path.resolve(positionals[0]!)
    let st: fs.Stats
    try {
      st = fs.statSync(dir)
    } catch (err) {
      throw new StoqUsageError('serve', 'DIR', `cannot use directory ${JSON.stringify(positionals[0])}: ${(err as Error).message}`)
    }
    if (!st.isDirectory()) throw new StoqUsageError('serve', 'DIR', `${JSON.stringify(positionals[0])} is not a directory`)
  }
  if (toStdout && v.force === true) throw new StoqUsageError('serve', '--force', '--force is for a directory; - writes to stdout')
  const once = toStdout || v.once === true
  // With -, stdout carries the data: every message goes to stderr.
  const log = toStdout ? io.err : io.out
  const host = (v.host as string | undefined) ?? '::'
  const port = (v.port as number | undefined) ?? SERVE_DEFAULT_PORT

  let failures = 0
  let busy = false
  let finishOnce: ((r: { ok: boolean; conn: QuicConnection }) => void) | null = null
  const firstDone = new Promise<{ ok: boolean; conn: QuicConnection }>((resolve) => {
    finishOnce = resolve
  })
  const stoq = await Stoq.create(CLI_APP_NAME, { endpoint: endpointOptions(v) })
  try {
    const ep = await stoq.listen(
      { host, port },
      {
        onStream: (stream, conn) => {
          if (once && busy) {
            // Only one transfer with --once (or to stdout): refuse the others.
            stream.stopSending(2)
            if (stream.writable) {
              const w = stream.writable.getWriter()
              w.write(encoder.encode(`${JSON.stringify({ ok: false, code: 'STOQ_ERR_CLOSED', error: 'the receiver takes one transfer only and is busy' })}\n`))
                .then(() => w.close())
                .catch(ignoreRejection) // a courtesy to a second sender: if its stream is gone, there is no one to tell
            }
            return
          }
          busy = true
          void receiveTransfer(stream, conn, dir, v.force === true).then((r) => {
            if (r.ok) {
              log(
                `received ${r.name} from ${r.peer}: ${r.bytes} bytes (${formatBytes(r.bytes)}), SHA-256 ${r.sha256}, verified; ` +
                  `${dir === null ? 'written to stdout' : `stored as ${r.storedAt}`} (${timing(r.bytes, r.ms!)})\n`,
              )
            } else {
              failures++
              io.err(`stoq serve: transfer${r.name ? ` of ${r.name}` : ''} from ${r.peer} failed: ${r.error}\n`)
            }
            if (once) finishOnce?.({ ok: r.ok, conn })
          })
        },
      },
    )
    ep.on('error', (err) => io.err(`stoq serve: ${describeError(err)}\n`))
    const id = await stoq.identity()
    const stats = ep.stats()
    const where = formatHostPort(host, ep.address.port)
    log(
      `stoq serve listening on ${where}, ${dir === null ? 'writing one file to stdout' : `storing files in ${dir}`} ` +
        `(engine ${stats.engine}, UDP backend ${stats.udp.backend})\n`,
    )
    log(`fingerprint ${id.fingerprint}\n`)
    log(`senders: stoq send FILE HOST:${ep.address.port} --pin ${id.fingerprint}\n`)
    const signal = untilSignal()
    const ended = await Promise.race([signal.promise.then(() => null), once ? firstDone : never()])
    signal.cancel()
    if (ended !== null) {
      // Closing now could drop the verdict still in flight: let the sender read it and close first.
      let linger: NodeJS.Timeout | undefined
      await Promise.race([ended.conn.closed, new Promise((resolve) => (linger = setTimeout(resolve, ONCE_LINGER_MS)))])
      clearTimeout(linger)
      return ended.ok ? 0 : 1
    }
    return failures > 0 ? 1 : 0
  } finally {
    await stoq.close()
  }
}

// ---------------------------------------------------------------------------
// send

export const SEND_HELP = `Usage:
  stoq send FILE HOST:PORT [options]   send a file to "stoq serve"
  stoq send - HOST:PORT [options]      send stdin

The content is hashed (SHA-256) as it streams and the hash is sent after it;
the receiver hashes what arrived, compares, and answers. The command succeeds
only when the receiver confirms the same length and SHA-256.

Options:
  --name NAME          name to store the file under (default: FILE's base name;
                       for stdin, the receiver picks one)
  --pin HEX            accept only this SHA-256 certificate fingerprint (printed by stoq serve)
  --ca FILE            verify the server certificate against this CA (PEM)
  --insecure           do not verify the server certificate
  --server-name NAME   name checked in the server certificate (default: HOST)
                       Default without --pin/--ca/--insecure: trust on first use
                       (known hosts in $XDG_CONFIG_HOME/stoq/${CLI_APP_NAME}/known_hosts.json)
${TRANSPORT_HELP}

A progress bar is drawn on stderr when it is a terminal. Exit status: 0 when
the receiver verified the file, 1 on a mismatch, refusal or any error, 2 on
bad arguments.`

const SEND_SPECS: Record<string, OptionKind> = {
  name: { type: 'string' },
  pin: { type: 'fingerprint' },
  ca: { type: 'string' },
  insecure: { type: 'flag' },
  'server-name': { type: 'string' },
  ...TRANSPORT_SPECS,
}

/** A one-line progress bar on a terminal; does nothing elsewhere. */
class ProgressBar {
  private last = 0
  private drawn = false

  constructor(
    private readonly total: number | null,
    private readonly tty: NodeJS.WriteStream | null,
  ) {}

  update(sent: number, force = false): void {
    if (this.tty === null) return
    const now = performance.now()
    if (!force && now - this.last < 100) return
    this.last = now
    const width = Math.max(10, Math.min(40, (this.tty.columns ?? 80) - 45))
    let line: string
    if (this.total !== null && this.total > 0) {
      const f = Math.min(1, sent / this.total)
      const full = Math.round(f * width)
      line = `[${'#'.repeat(full)}${'.'.repeat(width - full)}] ${(f * 100).toFixed(0).padStart(3)}%  ${formatBytes(sent)} of ${formatBytes(this.total)} sent`
    } else {
      line = `${formatBytes(sent)} sent`
    }
    this.tty.write(`\r${line}\u001b[K`)
    this.drawn = true
  }

  clear(): void {
    if (this.tty !== null && this.drawn) this.tty.write('\r\u001b[K')
    this.drawn = false
  }
}

/** Reads the receiver's one-line verdict. */
async function readReply(stream: QuicStream): Promise<TransferReply> {
  const lines = new LineSplitter('stoq send')
  const reader = stream.readable!.getReader()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    const got = lines.push(value)
    if (got.length > 0) {
      reader.cancel().catch(ignoreRejection) // the reply is read; a stream the receiver already closed makes this reject
      return parseTransferReply(got[0]!)
    }
  }
  lines.end()
  throw new StoqProtocolError('stoq send', 'the receiver closed the stream without an answer')
}

function refusal(r: Extract<TransferReply, { ok: false }>): Error {
  if (r.code === 'STOQ_ERR_INTEGRITY') return new StoqIntegrityError('receiver', `the receiver reports: ${r.error}`)
  return new StoqRemoteError(r.code, `the receiver refused the transfer: ${r.error}`)
}

function timeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoqProtocolError('stoq send', message)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

export async function sendCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values: v, positionals, help } = parseArgs('send', argv, SEND_SPECS)
  if (help) {
    io.out(`${SEND_HELP}\n`)
    return 0
  }
  if (positionals.length < 2) {
    throw new StoqUsageError(
      'send',
      positionals.length === 0 ? 'FILE' : 'HOST:PORT',
      `missing ${positionals.length === 0 ? 'FILE (or - for stdin) and HOST:PORT' : 'HOST:PORT'}`,
    )
  }
  if (positionals.length > 2) throw new StoqUsageError('send', positionals[2]!, `unexpected argument ${JSON.stringify(positionals[2])}`)
  const [file, targetText] = positionals as [string, string]
  const target = parseTargetArg('send', targetText)
  if (v.insecure === true && ('pin' in v || 'ca' in v)) throw new StoqUsageError('send', '--insecure', '--insecure cannot be combined with --pin or --ca')
  if (typeof v.ca === 'string') {
    try {
      fs.accessSync(v.ca, fs.constants.R_OK)
    } catch (err) {
      throw new StoqUsageError('send', '--ca', `cannot read --ca file ${JSON.stringify(v.ca)}: ${(err as Error).message}`)
    }
  }
  const fromStdin = file === '-'
  let name: string | null = typeof v.name === 'string' ? v.name : fromStdin ? null : path.basename(file)
  if (name !== null) {
    try {
      name = validateTransferName(name)
    } catch (err) {
      throw new StoqUsageError('send', '--name', `bad file name: ${(err as Error).message.replace(/^Invalid name: /, '')}`)
    }
  }
  let size: number | null = null
  let fd: number | null = null
  if (!fromStdin) {
    try {
      fd = fs.openSync(file, 'r')
      const st = fs.fstatSync(fd)
      if (!st.isFile()) throw new Error('not a regular file')
      size = st.size
    } catch (err) {
      if (fd !== null) fs.closeSync(fd)
      throw new StoqUsageError('send', 'FILE', `cannot read ${JSON.stringify(file)}: ${(err as Error).message}`)
    }
  }
  const source: AsyncIterable<Uint8Array> = fromStdin ? process.stdin : fs.createReadStream('', { fd: fd!, highWaterMark: READ_CHUNK })
  const trust: StoqConnectOptions = {
    reuse: false,
    ...(typeof v['server-name'] === 'string' ? { serverName: v['server-name'] } : {}),
    ...(typeof v.pin === 'string' ? { pin: v.pin } : {}),
    ...(typeof v.ca === 'string' ? { ca: { file: v.ca } } : {}),
    ...(v.insecure === true ? { insecure: true } : {}),
  }
  if (trust.pin === undefined && trust.ca === undefined && trust.insecure !== true) trust.trust = 'tofu'

  const ep = endpointOptions(v)
  const stoq = await Stoq.create(CLI_APP_NAME, { endpoint: { ...ep, host: net.isIPv4(target.host) ? '0.0.0.0' : '::' } })
  const bar = new ProgressBar(size, process.stderr.isTTY ? process.stderr : null)
  try {
    const conn = await stoq.connect(target, trust)
    const stream = conn.openStream()
    const replied = readReply(stream)
    replied.catch(ignoreRejection) // marks it handled: it is awaited below, after the file is sent
    const writer = stream.writable!.getWriter()
    const out = new OutgoingTransfer()
    let trailer: TransferTrailer
    // A receiver that stops reading would block a write for ever: reset the stream instead.
    const guarded = (p: Promise<void>): Promise<void> => unlessStalled(p, SEND_STALL_MS, 'stoq send', 'sending', () => stream.reset(2))
    try {
      await guarded(writer.write(out.start({ name, size })))
      for await (const chunk of source) {
        for (const frame of out.data(chunk)) await guarded(writer.write(frame))
        bar.update(out.bytes)
      }
      const end = out.end()
      trailer = end.trailer
      await guarded(writer.write(end.frame))
      await guarded(writer.close())
      bar.update(out.bytes, true)
    } catch (err) {
      writer.abort(err).catch(ignoreRejection) // the send error (or the receiver's answer) is what the caller gets
      // The receiver may have stopped us on purpose: its answer says why.
      const answer = await timeout(replied, 5000, 'no answer').catch(() => null)
      if (answer !== null && !answer.ok) throw refusal(answer)
      throw err
    } finally {
      bar.clear()
    }
    const answer = await timeout(replied, SEND_REPLY_TIMEOUT_MS, `no answer from the receiver within ${SEND_REPLY_TIMEOUT_MS / 1000} s`)
    if (!answer.ok) throw refusal(answer)
    // Belt and braces: the receiver's figures must be ours.
    if (answer.bytes !== trailer.bytes || answer.sha256 !== trailer.sha256) {
      throw new StoqIntegrityError(
        'receiver',
        `the receiver acknowledged ${answer.bytes} bytes with SHA-256 ${answer.sha256}, but ${trailer.bytes} bytes with SHA-256 ${trailer.sha256} were sent`,
      )
    }
    const label = name ?? 'stdin'
    io.out(`sent ${label} to ${formatHostPort(target.host, target.port)}: ${trailer.bytes} bytes (${formatBytes(trailer.bytes)}), SHA-256 ${trailer.sha256}\n`)
    io.out(
      `verified by the receiver (same length and SHA-256), ${answer.name === '-' ? "written to the receiver's stdout" : `stored as ${answer.name}`}; ` +
        `receiver timing: ${timing(answer.bytes, answer.ms)}\n`,
    )
    await conn.close(0, 'sent')
    return 0
  } finally {
    bar.clear()
    if (!fromStdin) (source as fs.ReadStream).destroy()
    await stoq.close()
  }
}
