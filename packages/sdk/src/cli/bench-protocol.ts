/**
 * Wire format of `stoq bench`, one bidirectional stream per data stream:
 *
 *   client → server   "SQB1", u16 BE length, JSON BenchStreamHeader, then the pattern (bench-pattern.ts) until FIN
 *   server → client   newline-delimited JSON: a `tick` per second of the session, then one `done`, then FIN
 *
 * Every figure the client shows comes from these messages: bytes counted and
 * checked by the server, at times taken on the server's clock. A session is
 * all the streams of one client run; the server samples all of them at the
 * same instants (ticks), measured from the first pattern byte of the session.
 */
import { StoqProtocolError } from './errors.js'

export const BENCH_MAGIC = Buffer.from('SQB1', 'latin1')
export const BENCH_HEADER_MAX = 4096
/** Longest reply line accepted. */
export const BENCH_LINE_MAX = 64 * 1024

export interface BenchStreamHeader {
  v: 1
  /** Random hex id shared by every stream of one client run. */
  session: string
  /** Connection number (0-based) and stream number within it. */
  connection: number
  stream: number
  /** Streams in the whole session (connections x streams per connection). */
  streams: number
}

/** Sample of one stream at a session tick. */
export interface BenchTick {
  type: 'tick'
  /** Tick number: 1 at about 1 s after the session's first byte, then one per second. */
  i: number
  /** Milliseconds since the session's first pattern byte (server clock). */
  t: number
  /** Bytes of this stream received and verified so far. */
  bytes: number
}

export interface BenchEngineInfo {
  engine: string
  udpBackend: string
}

export interface BenchDone {
  type: 'done'
  ok: boolean
  /** Bytes received and verified (up to the first wrong byte when ok is false). */
  bytes: number
  /** First and last pattern byte of this stream, ms since the session's first byte; null when none arrived. */
  firstT: number | null
  lastT: number | null
  server: BenchEngineInfo
  code?: string
  error?: string
}

export type BenchReply = BenchTick | BenchDone

export function encodeBenchHeader(h: BenchStreamHeader): Buffer {
  const json = Buffer.from(JSON.stringify(h), 'utf8')
  const out = Buffer.alloc(BENCH_MAGIC.length + 2 + json.length)
  BENCH_MAGIC.copy(out, 0)
  out.writeUInt16BE(json.length, BENCH_MAGIC.length)
  json.copy(out, BENCH_MAGIC.length + 2)
  return out
}

function isCount(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max
}

export function validateBenchHeader(raw: unknown): BenchStreamHeader {
  const h = raw as Partial<BenchStreamHeader> | null
  if (typeof h !== 'object' || h === null || h.v !== 1) throw new StoqProtocolError('bench', 'stream header: unsupported version (expected v 1)')
  if (typeof h.session !== 'string' || !/^[0-9a-f]{16,64}$/.test(h.session))
    throw new StoqProtocolError('bench', 'stream header: session must be 16-64 hex digits')
  if (!isCount(h.connection, 1 << 16) || !isCount(h.stream, 1 << 16)) throw new StoqProtocolError('bench', 'stream header: bad connection or stream number')
  if (!isCount(h.streams, 1 << 20) || h.streams < 1) throw new StoqProtocolError('bench', 'stream header: bad stream count')
  return { v: 1, session: h.session, connection: h.connection, stream: h.stream, streams: h.streams }
}

/** Reads the stream header off the front of the stream, in any chunking. */
export class BenchHeaderReader {
  private buf = Buffer.alloc(0)

  /** Null while more bytes are needed; then the header and whatever followed it in the chunk. */
  push(chunk: Uint8Array): { header: BenchStreamHeader; rest: Uint8Array } | null {
    this.buf = Buffer.concat([this.buf, chunk])
    if (this.buf.length >= BENCH_MAGIC.length && !this.buf.subarray(0, BENCH_MAGIC.length).equals(BENCH_MAGIC)) {
      throw new StoqProtocolError('bench', 'not a stoq bench stream (bad magic)')
    }
    if (this.buf.length < BENCH_MAGIC.length + 2) return null
    const len = this.buf.readUInt16BE(BENCH_MAGIC.length)
    if (len > BENCH_HEADER_MAX) throw new StoqProtocolError('bench', `stream header of ${len} bytes is too large (at most ${BENCH_HEADER_MAX})`)
    const end = BENCH_MAGIC.length + 2 + len
    if (this.buf.length < end) return null
    let parsed: unknown
    try {
      parsed = JSON.parse(this.buf.subarray(BENCH_MAGIC.length + 2, end).toString('utf8'))
    } catch {
      throw new StoqProtocolError('bench', 'stream header is not valid JSON')
    }
    const rest = this.buf.subarray(end)
    this.buf = Buffer.alloc(0)
    return { header: validateBenchHeader(parsed), rest }
  }
}

/** Splits a byte stream into lines (UTF-8, "\n"-terminated); a line longer than `max` is a protocol error. */
export class LineSplitter {
  private readonly decoder = new TextDecoder()
  private partial = ''

  constructor(
    private readonly protocol: string,
    private readonly max = BENCH_LINE_MAX,
  ) {}

  push(chunk: Uint8Array): string[] {
    const text = this.partial + this.decoder.decode(chunk, { stream: true })
    const lines = text.split('\n')
    this.partial = lines.pop()!
    if (this.partial.length > this.max) throw new StoqProtocolError(this.protocol, `reply line longer than ${this.max} characters`)
    return lines
  }

  /** The stream ended: a trailing unterminated line is an error. */
  end(): void {
    if ((this.partial + this.decoder.decode()).length > 0) throw new StoqProtocolError(this.protocol, 'reply ended in the middle of a line')
  }
}

export function parseBenchReply(line: string): BenchReply {
  let m: unknown
  try {
    m = JSON.parse(line)
  } catch {
    throw new StoqProtocolError('bench', `unreadable server report ${JSON.stringify(line.slice(0, 80))}`)
  }
  const r = m as Record<string, unknown> | null
  if (typeof r === 'object' && r !== null) {
    if (
      r.type === 'tick' &&
      isCount(r.i, 2 ** 31) &&
      typeof r.t === 'number' &&
      r.t >= 0 &&
      Number.isFinite(r.t) &&
      isCount(r.bytes, Number.MAX_SAFE_INTEGER)
    ) {
      return { type: 'tick', i: r.i, t: r.t, bytes: r.bytes }
    }
    if (r.type === 'done' && typeof r.ok === 'boolean' && isCount(r.bytes, Number.MAX_SAFE_INTEGER)) {
      const time = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null)
      const server = (r.server ?? {}) as Partial<BenchEngineInfo>
      return {
        type: 'done',
        ok: r.ok,
        bytes: r.bytes,
        firstT: time(r.firstT),
        lastT: time(r.lastT),
        server: { engine: String(server.engine ?? 'unknown'), udpBackend: String(server.udpBackend ?? 'unknown') },
        ...(typeof r.code === 'string' ? { code: r.code } : {}),
        ...(typeof r.error === 'string' ? { error: r.error } : {}),
      }
    }
  }
  throw new StoqProtocolError('bench', `unexpected server report ${JSON.stringify(line.slice(0, 80))}`)
}
