/**
 * The receiving side of `stoq bench`: accepts bench streams, checks every byte
 * against the pattern, and reports verified byte counts per stream once per
 * second of the session and at the end (see bench-protocol.ts).
 */
import { StoqError, type Endpoint, type QuicConnection, type QuicStream, type SocketAddress } from '@stoq/transport-core'
import { BenchHeaderReader, type BenchDone, type BenchEngineInfo, type BenchReply, type BenchStreamHeader } from './bench-protocol.js'
import { PatternChecker, patternKey } from './bench-pattern.js'
import { describeError, StoqProtocolError } from './errors.js'
import { ignoreRejection } from '../ignore.js'

/** Sampling period of a session, in ms. */
export const BENCH_TICK_MS = 1000
/** A session whose streams have all ended is forgotten after this long without a new stream. */
const SESSION_IDLE_MS = 10_000

const encoder = new TextEncoder()

/** What the server tells its operator about a finished session. */
export interface BenchSessionSummary {
  session: string
  remote: string
  streams: number
  expectedStreams: number
  bytes: number
  durationSec: number
  gbps: number
  /** Every stream's bytes matched the pattern (the client also checks the counts). */
  patternOk: boolean
  errors: string[]
}

class ServerStream {
  readonly checker: PatternChecker
  firstT: number | null = null
  lastT: number | null = null
  done = false
  ok = true
  error: string | null = null

  constructor(
    readonly header: BenchStreamHeader,
    private readonly write: (msg: BenchReply) => void,
  ) {
    this.checker = new PatternChecker(patternKey(header.session, header.connection, header.stream))
  }

  send(msg: BenchReply): void {
    this.write(msg)
  }
}

class Session {
  origin = -1
  private tickIndex = 0
  private timer: NodeJS.Timeout | null = null
  private idle: NodeJS.Timeout | null = null
  readonly streams = new Set<ServerStream>()
  private finished = 0

  constructor(
    readonly id: string,
    readonly expected: number,
    readonly remote: string,
    private readonly onEnd: (s: Session) => void,
  ) {}

  join(stream: ServerStream): void {
    if (this.idle) clearTimeout(this.idle)
    this.idle = null
    this.streams.add(stream)
  }

  /** Milliseconds since the session's first byte, starting the clock at the first call. */
  now(): number {
    const now = performance.now()
    if (this.origin < 0) {
      this.origin = now
      this.scheduleTick()
    }
    return now - this.origin
  }

  private scheduleTick(): void {
    const due = this.origin + (this.tickIndex + 1) * BENCH_TICK_MS
    this.timer = setTimeout(() => this.tick(), Math.max(0, due - performance.now()))
  }

  private tick(): void {
    this.tickIndex++
    const t = performance.now() - this.origin
    for (const s of this.streams) {
      if (!s.done) s.send({ type: 'tick', i: this.tickIndex, t, bytes: s.checker.verified })
    }
    this.scheduleTick()
  }

  streamEnded(): void {
    this.finished++
    if (this.finished >= this.expected) {
      this.end()
      return
    }
    if ([...this.streams].every((s) => s.done)) {
      this.idle = setTimeout(() => this.end(), SESSION_IDLE_MS)
      this.idle.unref()
    }
  }

  private ended = false

  end(): void {
    if (this.ended) return
    this.ended = true
    if (this.timer) clearTimeout(this.timer)
    if (this.idle) clearTimeout(this.idle)
    this.onEnd(this)
  }

  summary(): BenchSessionSummary {
    let bytes = 0
    let last = 0
    const errors: string[] = []
    for (const s of this.streams) {
      bytes += s.checker.verified
      if (s.lastT !== null) last = Math.max(last, s.lastT)
      if (s.error) errors.push(`connection ${s.header.connection} stream ${s.header.stream}: ${s.error}`)
    }
    return {
      session: this.id,
      remote: this.remote,
      streams: this.streams.size,
      expectedStreams: this.expected,
      bytes,
      durationSec: last / 1000,
      gbps: last > 0 ? (bytes * 8) / (last * 1e6) : 0,
      patternOk: errors.length === 0 && [...this.streams].every((s) => s.ok),
      errors,
    }
  }
}

function addressText(a: SocketAddress): string {
  const host = a.address.startsWith('::ffff:') ? a.address.slice(7) : a.address
  return host.includes(':') ? `[${host}]:${a.port}` : `${host}:${a.port}`
}

/**
 * Serves bench streams on `endpoint`'s connections. `onSession` is called when
 * a session ends (all its streams reported, or abandoned).
 */
export class BenchReceiver {
  private readonly sessions = new Map<string, Session>()

  constructor(
    private readonly endpoint: Endpoint,
    private readonly onSession: (summary: BenchSessionSummary) => void,
  ) {}

  private engineInfo(): BenchEngineInfo {
    const s = this.endpoint.stats()
    return { engine: s.engine, udpBackend: s.udp.backend }
  }

  /** Handle one stream a client opened. Never throws: failures are reported to the client. */
  handle(stream: QuicStream, conn: QuicConnection): void {
    void this.serve(stream, conn)
  }

  private async serve(stream: QuicStream, conn: QuicConnection): Promise<void> {
    if (stream.readable === null || stream.writable === null) {
      // A unidirectional stream: nowhere to report, so refuse it.
      stream.stopSending(1)
      return
    }
    const reader = stream.readable.getReader()
    const writer = stream.writable.getWriter()
    const write = (msg: BenchReply): void => {
      writer.write(encoder.encode(`${JSON.stringify(msg)}\n`)).catch(ignoreRejection) // a reply to a client that reset its stream has no one to reach
    }
    const headerReader = new BenchHeaderReader()
    let state: ServerStream | null = null
    let session: Session | null = null
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        let data: Uint8Array = value
        if (state === null) {
          const got = headerReader.push(value)
          if (got === null) continue
          session = this.sessionFor(got.header, conn)
          state = new ServerStream(got.header, write)
          session.join(state)
          data = got.rest
        }
        if (data.length > 0) {
          const t = session!.now()
          state.firstT ??= t
          state.checker.push(data)
          state.lastT = t
        }
      }
      if (state === null) throw new StoqProtocolError('bench', 'the stream ended before its header')
      state.done = true
      write(this.doneMessage(state))
    } catch (err) {
      const code = StoqError.isInstance(err) ? err.code : 'STOQ_ERR_PROTOCOL'
      const message = err instanceof Error ? err.message : String(err)
      if (state !== null) {
        state.done = true
        state.ok = false
        state.error = describeError(err)
        write({ ...this.doneMessage(state), code, error: message })
      } else {
        write({ type: 'done', ok: false, bytes: 0, firstT: null, lastT: null, server: this.engineInfo(), code, error: message })
      }
      try {
        stream.stopSending(1)
      } catch {
        // Already finished.
      }
    } finally {
      writer.close().catch(ignoreRejection) // the session is over; a stream the client already reset makes this reject
      session?.streamEnded()
    }
  }

  private doneMessage(s: ServerStream): BenchDone {
    return { type: 'done', ok: s.ok, bytes: s.checker.verified, firstT: s.firstT, lastT: s.lastT, server: this.engineInfo() }
  }

  private sessionFor(h: BenchStreamHeader, conn: QuicConnection): Session {
    let s = this.sessions.get(h.session)
    if (s === undefined) {
      s = new Session(h.session, h.streams, addressText(conn.remoteAddress), (ended) => {
        this.sessions.delete(ended.id)
        this.onSession(ended.summary())
      })
      this.sessions.set(h.session, s)
    }
    return s
  }

  /** End every session now (server shutting down). */
  close(): void {
    for (const s of [...this.sessions.values()]) s.end()
  }
}
