import { EventEmitter } from 'node:events'
import { MAX_TIMER_MS, isOptions, show, timeoutArg } from './args.js'
import type { WritableStreamDefaultWriter } from 'node:stream/web'
import {
  CapsuleParser,
  FrameParser,
  H3_CLOSED_CRITICAL_STREAM,
  H3_GENERAL_PROTOCOL_ERROR,
  H3_ID_ERROR,
  H3_MISSING_SETTINGS,
  H3_NO_ERROR,
  H3_REQUEST_CANCELLED,
  H3_REQUEST_INCOMPLETE,
  H3_REQUEST_REJECTED,
  H3_STREAM_CREATION_ERROR,
  STREAM_TYPE_CONTROL,
  STREAM_TYPE_QPACK_DECODER,
  STREAM_TYPE_QPACK_ENCODER,
  StoqH3Error,
  WT_BUFFERED_STREAM_REJECTED,
  decodeBidiStreamPreface,
  decodeFieldSection,
  decodeHttpDatagram,
  decodeUniStreamPreface,
  encodeFieldSection,
  encodeGoawayFrame,
  encodeHeadersFrame,
  encodeSettingsFrame,
  encodeVarint,
  isWebTransportConnect,
  peerWebTransportSupport,
  validateRequestHeaders,
  validateResponseHeaders,
  validateWebTransportConnect,
  varintToBigInt,
  webTransportResponseFields,
  webTransportServerSettings,
  SETTINGS_ENABLE_WEBTRANSPORT,
  SETTINGS_H3_DATAGRAM,
  SETTINGS_H3_DATAGRAM_DRAFT04,
  SETTINGS_QPACK_BLOCKED_STREAMS,
  SETTINGS_QPACK_MAX_TABLE_CAPACITY,
  WEBTRANSPORT_DRAFT02_REQUEST_HEADER,
  type FieldLine,
  type Settings,
  type VarInt,
  type WebTransportConnectRequest,
} from '@stoq/h3'
import {
  StoqError,
  StoqInvalidArgumentError,
  type CloseInfo,
  checkOptions,
  optionKeys,
  raceAbort,
  signalOption,
  throwIfAborted,
  whenAborted,
} from '@stoq/interface'
import type { QuicConnection, QuicStream } from '@stoq/transport-core'
import { StoqWebTransportError, type WebTransportMissingSetting } from './errors.js'
import { WebTransportSession } from './session.js'
import { drain, readPreface, type ByteReader } from './stream.js'
import { ignoreRejection } from './ignore.js'

/** Limits of one HTTP/3 connection carrying WebTransport. */
export interface WebTransportLimits {
  /** Streams held for a session not known yet (they may overtake its CONNECT). Default 16. */
  maxBufferedStreams: number
  /** Concurrent sessions on one connection. Default 64. */
  maxSessions: number
  /** Peer streams a session queues for `incomingStreams` while nobody listens to 'stream'. Default 64. */
  maxQueuedStreams: number
  /** Time to wait for the peer's SETTINGS before answering / sending a CONNECT. Default 10 s. */
  settingsTimeoutMs: number
  /** Largest request/response field section accepted (RFC 9114 §4.2.2). Default 16 KiB. */
  maxFieldSectionSize: number
}

export const DEFAULT_WEBTRANSPORT_LIMITS: Readonly<WebTransportLimits> = {
  maxBufferedStreams: 16,
  maxSessions: 64,
  maxQueuedStreams: 64,
  settingsTimeoutMs: 10_000,
  maxFieldSectionSize: 16 * 1024,
}

/** Every key of `limits`. */
const LIMIT_KEYS = optionKeys<WebTransportLimits>({
  maxBufferedStreams: true,
  maxSessions: true,
  maxQueuedStreams: true,
  settingsTimeoutMs: true,
  maxFieldSectionSize: true,
})

export function resolveLimits(input: Partial<WebTransportLimits> | undefined): WebTransportLimits {
  const out = { ...DEFAULT_WEBTRANSPORT_LIMITS }
  if (input === undefined) return out
  checkOptions(input, LIMIT_KEYS, 'limits')
  const ranges: Record<keyof WebTransportLimits, [number, number]> = {
    maxBufferedStreams: [0, 1 << 16],
    maxSessions: [1, 1 << 16],
    maxQueuedStreams: [0, 1 << 16],
    settingsTimeoutMs: [1, 600_000],
    maxFieldSectionSize: [256, 1 << 20],
  }
  for (const key of Object.keys(ranges) as Array<keyof WebTransportLimits>) {
    const v = input[key]
    if (v === undefined) continue
    const [min, max] = ranges[key]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new StoqInvalidArgumentError(key, `expected an integer from ${min} to ${max}, got ${show(v)}`)
    }
    out[key] = v
  }
  return out
}

/** What the server decides for a well-formed WebTransport CONNECT: 200 accepts, anything else refuses. */
export interface RequestRouter {
  route(request: WebTransportConnectRequest): number
  onSession(session: WebTransportSession): void
}

export interface WebTransportConnectionStats {
  sessions: number
  sessionsOpened: number
  /** Streams waiting for their session now. */
  bufferedStreams: number
  /** Streams refused: buffer full, unknown or closed session, unknown stream type. */
  rejectedStreams: number
  datagramsDropped: number
}

interface Buffered {
  qs: QuicStream
  reader: ByteReader
  rest: Uint8Array
}

/** Answers with another `:status` and ends the stream. */
const STATUS_ONLY = (status: number): FieldLine[] => [[':status', String(status)]]
/** Closed session IDs remembered to refuse their late streams at once. */
const MAX_CLOSED_IDS = 1024
/** Default time `drain` lets existing sessions run. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000

/** Options of `WebTransportConnection.drain` and `WebTransportServer.drain`. */
export interface DrainOptions {
  /**
   * How long existing sessions may go on after GOAWAY before the connection is
   * closed anyway (their sessions end with code 0). Default 10 s.
   */
  timeoutMs?: number
  /**
   * Aborting it brings the deadline to now, as `drain({ timeoutMs: 0 })` would: sessions still
   * open end with code 0 and the connection closes. The drain resolves as usual.
   */
  signal?: AbortSignal
}

/** Validates `DrainOptions`; returns the timeout (0 when the signal has already aborted). */
export function drainTimeout(options: DrainOptions | undefined): number {
  if (options === undefined) return DEFAULT_DRAIN_TIMEOUT_MS
  checkOptions(options, ['timeoutMs', 'signal'])
  if (signalOption('signal', options.signal)?.aborted) return 0
  const t = options.timeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > MAX_TIMER_MS) {
    throw new StoqInvalidArgumentError('timeoutMs', `expected an integer from 0 to ${MAX_TIMER_MS}, got ${show(t)}`)
  }
  return t
}

/** True for a peer reset (RESET_STREAM) with HTTP/3 code `code`. */
function isResetWith(err: unknown, code: number): boolean {
  return StoqError.isInstance(err) && err.code === 'STOQ_ERR_STREAM_RESET' && (err.data as { code?: number } | undefined)?.code === code
}

function h3CodeOf(err: unknown): number | null {
  return StoqH3Error.isH3Error(err) ? err.h3Code : null
}

/**
 * HTTP/3 on one QUIC connection, as much as WebTransport draft-02 needs:
 * control and QPACK streams, SETTINGS, extended CONNECT, and the routing of
 * WebTransport streams and datagrams to their sessions. Client or server.
 */
export class WebTransportConnection extends EventEmitter<{ session: [WebTransportSession]; goaway: [VarInt]; close: [CloseInfo] }> {
  readonly quic: QuicConnection
  readonly role: 'client' | 'server'
  readonly limits: WebTransportLimits
  /** Resolves with the peer's SETTINGS; rejects when they do not come in time or the connection ends. */
  readonly peerSettings: Promise<Settings>

  readonly #router: RequestRouter | null
  readonly #sessions = new Map<number, WebTransportSession>()
  /** CONNECT streams seen whose outcome is not known yet. */
  readonly #pending = new Set<number>()
  readonly #buffered = new Map<number, Buffered[]>()
  #bufferedCount = 0
  readonly #closedIds = new Set<number>()
  readonly #uniSeen = new Set<string>()
  readonly #keep: Array<WritableStreamDefaultWriter<Uint8Array>> = []
  #settings: Settings | null = null
  #resolveSettings!: (s: Settings) => void
  #rejectSettings!: (err: Error) => void
  #settingsTimer: NodeJS.Timeout | null = null
  #goaway: VarInt | null = null
  /** The ID of the GOAWAY we sent (server: first request stream ID not processed; client: push ID). */
  #goawaySent: number | null = null
  /** Server: highest client-initiated bidirectional stream ID seen, -1 before any. */
  #maxPeerBidi = -1
  #control: WritableStreamDefaultWriter<Uint8Array> | null = null
  /** Client: how to fail each CONNECT still waiting for its response. */
  readonly #connectFailers = new Map<number, (err: Error) => void>()
  #draining: Promise<void> | null = null
  #drainTimer: NodeJS.Timeout | null = null
  #drainDeadline = Infinity
  #wakeDrain: (() => void) | null = null
  #closing = false
  #stats = { sessionsOpened: 0, rejectedStreams: 0, datagramsDropped: 0 }

  constructor(quic: QuicConnection, role: 'client' | 'server', limits: WebTransportLimits, router: RequestRouter | null = null) {
    // Usually built by serveWebTransport / connectWebTransport; checked for direct callers.
    if (!isOptions(quic) || typeof quic.openStream !== 'function' || typeof quic.on !== 'function') {
      throw new StoqInvalidArgumentError('quic', `expected a STOQ QuicConnection, got ${show(quic)}`)
    }
    if (role !== 'client' && role !== 'server') throw new StoqInvalidArgumentError('role', `expected 'client' or 'server', got ${show(role)}`)
    limits = resolveLimits(limits)
    if (router !== null && (!isOptions(router) || typeof router.route !== 'function')) {
      throw new StoqInvalidArgumentError('router', `expected { route, onSession } or null, got ${show(router)}`)
    }
    super()
    this.quic = quic
    this.role = role
    this.limits = limits
    this.#router = router
    this.peerSettings = new Promise<Settings>((resolve, reject) => {
      this.#resolveSettings = resolve
      this.#rejectSettings = reject
    })
    this.peerSettings.catch(ignoreRejection) // marks it handled: whoever awaits peerSettings still sees the rejection
    this.#settingsTimer = setTimeout(() => {
      this.#settingsTimer = null
      if (this.#settings === null) {
        this.#rejectSettings(
          new StoqWebTransportError('timeout', `the peer sent no HTTP/3 SETTINGS within ${limits.settingsTimeoutMs} ms`, { h3Code: H3_MISSING_SETTINGS }),
        )
        this.#connectionError(H3_MISSING_SETTINGS, 'no SETTINGS received')
      }
    }, limits.settingsTimeoutMs)
    quic.on('stream', (qs) => this.#onStream(qs))
    quic.on('datagram', (d) => this.#onDatagram(d))
    quic.on('close', (info) => this.#onClose(info))
    if (quic.isClosed) {
      queueMicrotask(() => this.#onClose({ remote: false, app: false, code: 0, reason: 'closed', idleTimeout: false }))
      return
    }
    try {
      this.#openCriticalStreams()
    } catch (err) {
      this.#connectionError(H3_GENERAL_PROTOCOL_ERROR, `cannot open the HTTP/3 control streams: ${(err as Error).message}`)
    }
  }

  /**
   * The ID of the last GOAWAY the peer sent, if any. From a server: the first
   * request stream ID it will not process (no new sessions after it). From a
   * client: a push ID — it only says the client accepts no more pushes, and
   * since we never push it changes nothing.
   */
  get goaway(): VarInt | null {
    return this.#goaway
  }

  /** The ID of the GOAWAY we sent (see `goAway`), or null. */
  get goawaySent(): number | null {
    return this.#goawaySent
  }

  /** True once `drain` was called. */
  get isDraining(): boolean {
    return this.#draining !== null
  }

  /**
   * Send GOAWAY on our control stream (RFC 9114 §5.2) without closing anything.
   *
   * Server: the ID is the first client-initiated bidirectional stream ID not
   * processed — one past the highest the client has opened so far (0 when
   * none); from then on CONNECT requests on streams at or above it are reset
   * with H3_REQUEST_REJECTED (the client may retry them elsewhere), while
   * existing sessions, their streams and requests below it carry on.
   * Client: the ID is push ID 0 (we never allowed pushes); it changes nothing
   * else.
   *
   * GOAWAY is sent once: later calls return the ID already sent. Returns the ID.
   */
  goAway(): number {
    if (this.#goawaySent !== null) return this.#goawaySent
    const id = this.role === 'server' ? this.#maxPeerBidi + 4 : 0
    this.#goawaySent = id
    if (!this.quic.isClosed && this.#control !== null) this.#control.write(encodeGoawayFrame(id)).catch(ignoreRejection) // GOAWAY is advisory; a failed write means the connection is closing, which quic.closed reports
    if (this.role === 'server') {
      // Streams waiting for a session that can no longer be accepted.
      for (const sessionId of [...this.#buffered.keys()]) if (sessionId >= id) for (const b of this.#takeBuffered(sessionId)) this.#refuse(b.qs, b.reader)
    }
    return id
  }

  /**
   * Graceful shutdown of this connection: `goAway()`, then wait until every
   * session (and every CONNECT still being answered) has ended, or
   * `timeoutMs` (default 10 s) has passed, then close the connection with
   * H3_NO_ERROR (sessions still open end with code 0). Resolves once closed.
   * A client also stops opening sessions. Calling it again returns the same
   * promise; a shorter `timeoutMs` brings the deadline forward. `close()`
   * still closes at once.
   */
  drain(options?: DrainOptions): Promise<void> {
    let timeoutMs: number
    try {
      timeoutMs = drainTimeout(options)
    } catch (err) {
      return Promise.reject(err)
    }
    const deadline = Date.now() + timeoutMs
    // Bring the deadline forward (unless the drain is already closing the connection).
    if (deadline < this.#drainDeadline && (this.#draining === null || this.#wakeDrain !== null)) {
      this.#drainDeadline = deadline
      if (this.#drainTimer !== null) clearTimeout(this.#drainTimer)
      this.#drainTimer = setTimeout(() => {
        this.#drainTimer = null
        this.#wakeDrain?.()
      }, timeoutMs)
    }
    this.#draining ??= (async () => {
      if (!this.quic.isClosed) {
        this.goAway()
        if (!this.#idle()) {
          await new Promise<void>((resolve) => {
            this.#wakeDrain = resolve
          })
        }
      }
      this.#wakeDrain = null
      if (this.#drainTimer !== null) clearTimeout(this.#drainTimer)
      this.#drainTimer = null
      await this.close(H3_NO_ERROR, this.role === 'server' ? 'server draining' : 'client draining')
    })()
    // An abort later brings the deadline to now; the listener goes with the drain.
    const stopListening = whenAborted(options?.signal, 'drain', () => {
      this.drain({ timeoutMs: 0 }).catch(ignoreRejection) // the same drain: it resolves or rejects through the caller's promise
    })
    this.#draining.then(stopListening, stopListening)
    return this.#draining
  }

  /** No session and no CONNECT in progress. */
  #idle(): boolean {
    return this.#sessions.size === 0 && this.#pending.size === 0
  }

  #checkDrained(): void {
    if (this.#wakeDrain !== null && (this.#idle() || this.quic.isClosed)) this.#wakeDrain()
  }

  get sessions(): WebTransportSession[] {
    return [...this.#sessions.values()]
  }

  get isClosed(): boolean {
    return this.quic.isClosed
  }

  stats(): WebTransportConnectionStats {
    return {
      sessions: this.#sessions.size,
      sessionsOpened: this.#stats.sessionsOpened,
      bufferedStreams: this.#bufferedCount,
      rejectedStreams: this.#stats.rejectedStreams,
      datagramsDropped: this.#stats.datagramsDropped,
    }
  }

  #openCriticalStreams(): void {
    const settings =
      this.role === 'server'
        ? webTransportServerSettings({ maxFieldSectionSize: this.limits.maxFieldSectionSize })
        : ([
            [SETTINGS_QPACK_MAX_TABLE_CAPACITY, 0],
            [SETTINGS_QPACK_BLOCKED_STREAMS, 0],
            [SETTINGS_H3_DATAGRAM, 1],
            [SETTINGS_H3_DATAGRAM_DRAFT04, 1],
            [SETTINGS_ENABLE_WEBTRANSPORT, 1],
          ] as Array<[number, number]>)
    const control = encodeVarint(STREAM_TYPE_CONTROL)
    const frame = encodeSettingsFrame(settings)
    const first = new Uint8Array(control.length + frame.length)
    first.set(control)
    first.set(frame, control.length)
    for (const bytes of [first, encodeVarint(STREAM_TYPE_QPACK_ENCODER), encodeVarint(STREAM_TYPE_QPACK_DECODER)]) {
      const qs = this.quic.openStream({ unidirectional: true })
      const writer = qs.writable!.getWriter()
      writer.write(bytes).catch(ignoreRejection) // a failed preface write fails the connection, which quic.closed reports
      // Critical streams stay open for the connection's life.
      this.#keep.push(writer)
      this.#control ??= writer
    }
  }

  #connectionError(code: number, reason: string): void {
    if (this.quic.isClosed || this.#closing) return
    this.#closing = true
    this.quic.close(code, reason.slice(0, 200)).catch(ignoreRejection) // closing on a connection error: its outcome is the connection's end, which quic.closed reports
  }

  /** Close the connection (and its sessions) with an HTTP/3 code. */
  async close(code = H3_NO_ERROR, reason = ''): Promise<void> {
    for (const s of [...this.#sessions.values()]) await s.close({ code: 0, reason, timeoutMs: 0 }).catch(ignoreRejection) // sessions close with the connection; each one's own closed promise reports it
    if (this.quic.isClosed) return
    this.#closing = true
    await this.quic.close(code, reason).catch(ignoreRejection) // its outcome is the connection's end, which quic.closed reports
  }

  // --- peer streams --------------------------------------------------------------

  #onStream(qs: QuicStream): void {
    // Every bidirectional stream a client opens counts: GOAWAY names the first one not seen.
    if (qs.bidirectional && this.role === 'server' && qs.id > this.#maxPeerBidi) this.#maxPeerBidi = qs.id
    const task = qs.bidirectional ? this.#onBidi(qs) : this.#onUni(qs)
    task.catch((err: unknown) => this.#streamFailed(qs, err))
  }

  #streamFailed(qs: QuicStream, err: unknown): void {
    const code = h3CodeOf(err)
    if (code !== null) {
      this.#connectionError(code, (err as Error).message)
      return
    }
    // Stream reset by the peer or connection gone: nothing to answer.
    if (!StoqError.isInstance(err) && !this.quic.isClosed) {
      qs.stopSending(H3_GENERAL_PROTOCOL_ERROR)
      qs.reset(H3_GENERAL_PROTOCOL_ERROR)
    }
  }

  async #onUni(qs: QuicStream): Promise<void> {
    const reader = qs.readable!.getReader()
    const pre = await readPreface(reader, (buf) => {
      const d = decodeUniStreamPreface(buf)
      return d && { value: d.preface, length: d.length }
    })
    if (pre === null) return
    const p = pre.value
    switch (p.kind) {
      case 'control':
      case 'qpack_encoder':
      case 'qpack_decoder':
        if (this.#uniSeen.has(p.kind)) throw new StoqH3Error(H3_STREAM_CREATION_ERROR, `second ${p.kind} stream`)
        this.#uniSeen.add(p.kind)
        if (p.kind === 'control') return this.#readControl(reader, pre.rest)
        // Our decoder has no dynamic table: the peer's encoder has nothing useful to say.
        return drain(reader)
      case 'webtransport':
        this.#route(Number(varintToBigInt(p.sessionId)), qs, reader, pre.rest)
        return
      case 'push':
        if (this.role === 'server') throw new StoqH3Error(H3_STREAM_CREATION_ERROR, 'a client opened a push stream')
        // We never sent MAX_PUSH_ID.
        throw new StoqH3Error(H3_ID_ERROR, 'push stream without MAX_PUSH_ID')
      default:
        // Unknown or reserved type: ignore it (RFC 9114 §6.2).
        this.#stats.rejectedStreams++
        await reader.cancel(H3_STREAM_CREATION_ERROR)
    }
  }

  async #readControl(reader: ByteReader, rest: Uint8Array): Promise<void> {
    const parser = new FrameParser({ streamKind: 'control', receiver: this.role, maxFramePayloadSize: 16 * 1024 })
    let chunk: Uint8Array = rest
    for (;;) {
      for (const ev of parser.push(chunk)) {
        if (ev.kind === 'settings') {
          this.#settings = ev.settings
          if (this.#settingsTimer !== null) clearTimeout(this.#settingsTimer)
          this.#settingsTimer = null
          this.#resolveSettings(ev.settings)
        } else if (ev.kind === 'goaway') {
          // The parser checked it: from a server a client bidi stream ID, never increasing.
          this.#goaway = ev.id
          if (this.role === 'client') this.#peerGoaway(Number(varintToBigInt(ev.id)))
          this.emit('goaway', ev.id)
        }
      }
      let r: Awaited<ReturnType<ByteReader['read']>>
      try {
        r = await reader.read()
      } catch (err) {
        if (!this.quic.isClosed) throw new StoqH3Error(H3_CLOSED_CRITICAL_STREAM, 'the peer reset its control stream', { cause: err })
        return
      }
      if (r.done) {
        parser.end() // throws H3_CLOSED_CRITICAL_STREAM
        return
      }
      chunk = r.value
    }
  }

  async #onBidi(qs: QuicStream): Promise<void> {
    const reader = qs.readable!.getReader()
    const pre = await readPreface(reader, (buf) => {
      const d = decodeBidiStreamPreface(buf)
      return d && { value: d, length: d.length }
    })
    if (pre === null) {
      // Ended before saying anything.
      qs.reset(H3_REQUEST_INCOMPLETE)
      return
    }
    if (pre.value.kind === 'webtransport') {
      this.#route(Number(varintToBigInt(pre.value.sessionId)), qs, reader, pre.rest)
      return
    }
    if (this.role === 'client') throw new StoqH3Error(H3_STREAM_CREATION_ERROR, 'the server opened a request stream')
    await this.#serveRequest(qs, reader, pre.rest)
  }

  /** Client: the server will not process CONNECTs at or above `id`: fail them now (they may be retried elsewhere). */
  #peerGoaway(id: number): void {
    for (const [streamId, fail] of [...this.#connectFailers]) {
      if (streamId >= id)
        fail(new StoqWebTransportError('closed', `the server sent GOAWAY (${id}): it will not process the WebTransport CONNECT on stream ${streamId}`))
    }
  }

  /** A WebTransport stream for `sessionId`: deliver, buffer or refuse. */
  #route(sessionId: number, qs: QuicStream, reader: ByteReader, rest: Uint8Array): void {
    const session = this.#sessions.get(sessionId)
    if (session !== undefined) {
      session.deliverStream(qs, reader, rest)
      return
    }
    // A session must be a client-initiated bidirectional stream (checked by the preface decoder);
    // the client only accepts streams for CONNECTs it sent.
    const known = this.#pending.has(sessionId)
    // After our GOAWAY a server accepts no session at or above its ID.
    const impossible = this.role === 'client' ? !known : this.#goawaySent !== null && sessionId >= this.#goawaySent && !known
    if (this.#closedIds.has(sessionId) || impossible || this.#bufferedCount >= this.limits.maxBufferedStreams) {
      this.#refuse(qs, reader)
      return
    }
    let list = this.#buffered.get(sessionId)
    if (list === undefined) {
      list = []
      this.#buffered.set(sessionId, list)
    }
    list.push({ qs, reader, rest })
    this.#bufferedCount++
  }

  #refuse(qs: QuicStream, reader: ByteReader): void {
    this.#stats.rejectedStreams++
    reader.cancel(WT_BUFFERED_STREAM_REJECTED).catch(ignoreRejection) // the stream is refused; a peer that already reset it makes the cancel reject
    qs.reset(WT_BUFFERED_STREAM_REJECTED)
  }

  #takeBuffered(sessionId: number): Buffered[] {
    const list = this.#buffered.get(sessionId) ?? []
    this.#buffered.delete(sessionId)
    this.#bufferedCount -= list.length
    return list
  }

  /** A CONNECT did not become a session (or the session ended): its streams go. */
  #forget(sessionId: number): void {
    this.#pending.delete(sessionId)
    for (const b of this.#takeBuffered(sessionId)) this.#refuse(b.qs, b.reader)
    this.#closedIds.add(sessionId)
    if (this.#closedIds.size > MAX_CLOSED_IDS) {
      const oldest = this.#closedIds.values().next().value
      if (oldest !== undefined) this.#closedIds.delete(oldest)
    }
    this.#checkDrained()
  }

  #startSession(session: WebTransportSession): void {
    this.#pending.delete(session.id)
    this.#sessions.set(session.id, session)
    this.#stats.sessionsOpened++
  }

  #flushBuffered(session: WebTransportSession): void {
    for (const b of this.#takeBuffered(session.id)) session.deliverStream(b.qs, b.reader, b.rest)
  }

  /** @internal */
  sessionEnded(session: WebTransportSession): void {
    if (this.#sessions.get(session.id) === session) this.#sessions.delete(session.id)
    this.#forget(session.id)
  }

  // --- datagrams -------------------------------------------------------------------

  #onDatagram(bytes: Uint8Array): void {
    let d: ReturnType<typeof decodeHttpDatagram>
    try {
      d = decodeHttpDatagram(bytes)
    } catch {
      this.#stats.datagramsDropped++
      return
    }
    const session = typeof d.streamId === 'number' ? this.#sessions.get(d.streamId) : undefined
    if (session === undefined) {
      // Unknown (or not yet known) session: datagrams are unreliable, drop it.
      this.#stats.datagramsDropped++
      return
    }
    session.deliverDatagram(d.payload)
  }

  #onClose(info: CloseInfo): void {
    if (this.#settingsTimer !== null) clearTimeout(this.#settingsTimer)
    this.#settingsTimer = null
    if (this.#settings === null) {
      this.#rejectSettings(new StoqWebTransportError('closed', `the connection closed before HTTP/3 SETTINGS arrived${info.reason ? `: ${info.reason}` : ''}`))
    }
    const reason = `connection closed${info.reason ? `: ${info.reason}` : ''}`
    for (const s of [...this.#sessions.values()]) s.onConnectionClosed(reason)
    this.#buffered.clear()
    this.#bufferedCount = 0
    this.#wakeDrain?.()
    this.emit('close', info)
  }

  // --- CONNECT streams ---------------------------------------------------------------

  /**
   * Runs a CONNECT stream: the message HEADERS go to `onHead`, which returns
   * `undefined` to wait for more HEADERS (interim responses), `null` to stop
   * (refused), or the session; then DATA carries capsules to the session.
   */
  async #runConnectStream(
    _qs: QuicStream,
    reader: ByteReader,
    rest: Uint8Array,
    onHead: (fieldSection: Uint8Array) => Promise<WebTransportSession | null | undefined>,
  ): Promise<WebTransportSession | null> {
    const parser = new FrameParser({ streamKind: 'request', receiver: this.role, streamData: true, maxFramePayloadSize: this.limits.maxFieldSectionSize })
    const capsules = new CapsuleParser()
    let session: WebTransportSession | null = null
    let chunk = rest
    try {
      for (;;) {
        for (const ev of parser.push(chunk)) {
          if (session === null) {
            if (ev.kind !== 'headers') continue
            const outcome = await onHead(ev.fieldSection)
            if (outcome === null) return null
            if (outcome !== undefined) session = outcome
          } else if (ev.kind === 'data_chunk') {
            for (const c of capsules.push(ev.payload)) if (c.kind !== 'unknown') session.onCapsule(c)
          }
        }
        const r = await reader.read()
        if (r.done) break
        chunk = r.value
      }
      parser.end()
      capsules.end()
    } catch (err) {
      if (session !== null) session.onConnectStreamEnd(err as Error)
      throw err
    }
    if (session === null) throw new StoqH3Error(H3_REQUEST_INCOMPLETE, 'the CONNECT stream ended before its HEADERS')
    session.onConnectStreamEnd(null)
    return session
  }

  async #serveRequest(qs: QuicStream, reader: ByteReader, rest: Uint8Array): Promise<void> {
    const id = qs.id
    if (this.#goawaySent !== null && id >= this.#goawaySent) {
      // RFC 9114 §5.2: after GOAWAY, requests at or above its ID are rejected unprocessed.
      reader.cancel(H3_REQUEST_REJECTED).catch(ignoreRejection) // the request is refused; a peer that already reset it makes the cancel reject
      qs.reset(H3_REQUEST_REJECTED)
      return
    }
    const writer = qs.writable!.getWriter()
    this.#pending.add(id)
    const respond = async (status: number): Promise<null> => {
      this.#forget(id)
      const fields = status === 200 ? webTransportResponseFields(200) : STATUS_ONLY(status)
      writer.write(encodeHeadersFrame(encodeFieldSection(fields))).catch(ignoreRejection) // a best-effort answer: a peer that reset the request makes it reject
      writer.close().catch(ignoreRejection) // a best-effort answer: a peer that reset the request makes it reject
      // We answered; the rest of the request is not needed.
      await reader.cancel(H3_NO_ERROR).catch(ignoreRejection) // a peer that reset the request makes the cancel reject; nothing is lost
      return null
    }
    const onHead = async (fieldSection: Uint8Array): Promise<WebTransportSession | null> => {
      let fields: FieldLine[]
      try {
        fields = decodeFieldSection(fieldSection, { maxFieldSectionSize: this.limits.maxFieldSectionSize })
      } catch {
        return respond(400)
      }
      let request: WebTransportConnectRequest
      try {
        const head = validateRequestHeaders(fields, { allowExtendedConnect: true })
        if (!isWebTransportConnect(head)) {
          if (head.method === 'CONNECT') return respond(501)
          return respond(head.method === 'GET' || head.method === 'HEAD' ? 404 : 405)
        }
        request = validateWebTransportConnect(fields)
      } catch {
        return respond(400)
      }
      let settings: Settings
      try {
        settings = await this.peerSettings
      } catch {
        return respond(400)
      }
      if (!peerWebTransportSupport(settings).draft02) return respond(400)
      if (this.#closing || this.quic.isClosed) return respond(503)
      if (this.#sessions.size >= this.limits.maxSessions) return respond(429)
      let status: number
      try {
        status = this.#router!.route(request)
      } catch {
        status = 500
      }
      // A router that answers something other than an HTTP status is a server error, not a crash.
      if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599) status = 500
      if (status !== 200) return respond(status)
      const session = new WebTransportSession(this, {
        side: 'server',
        connectStream: qs,
        writer,
        path: request.path,
        authority: request.authority,
        origin: request.origin,
        headers: request.fields,
        maxQueuedStreams: this.limits.maxQueuedStreams,
      })
      this.#startSession(session)
      writer.write(encodeHeadersFrame(encodeFieldSection(webTransportResponseFields(200)))).catch(ignoreRejection) // a failed write resets the CONNECT stream, which ends the session through its own path
      try {
        this.#router!.onSession(session)
      } catch {
        // The application's handler failed: end this session, keep the connection.
        session.close({ code: 0, reason: 'internal error', timeoutMs: 0 }).catch(ignoreRejection) // the handler already failed; this close is best-effort
        return session
      }
      this.emit('session', session)
      this.#flushBuffered(session)
      return session
    }
    try {
      await this.#runConnectStream(qs, reader, rest, onHead)
    } catch (err) {
      this.#forget(id)
      const code = h3CodeOf(err)
      if (code === H3_REQUEST_INCOMPLETE) {
        qs.reset(H3_REQUEST_INCOMPLETE)
        return
      }
      throw err
    }
  }

  /**
   * Client: send an extended CONNECT for `path` and wait for the answer.
   * Rejects with `StoqWebTransportError` ('refused' with the status, 'unsupported',
   * 'timeout', 'closed'), and with STOQ_ERR_ABORTED when `signal` aborts (the CONNECT
   * stream is then cancelled).
   */
  async openSession(authority: string, path: string, extra: FieldLine[] = [], timeoutMs = 10_000, signal?: AbortSignal): Promise<WebTransportSession> {
    if (this.role !== 'client') throw new StoqInvalidArgumentError('role', 'only a client opens sessions')
    if (typeof authority !== 'string') throw new StoqInvalidArgumentError('authority', `expected a string, got ${show(authority)}`)
    if (typeof path !== 'string' || !path.startsWith('/')) throw new StoqInvalidArgumentError('path', `expected a path starting with "/", got ${show(path)}`)
    if (!Array.isArray(extra)) throw new StoqInvalidArgumentError('headers', `expected [name, value] string pairs, got ${show(extra)}`)
    timeoutArg('timeoutMs', timeoutMs)
    throwIfAborted(signal, 'openSession')
    const settings = await raceAbort(this.peerSettings, signal, 'openSession')
    const support = peerWebTransportSupport(settings)
    if (!support.draft02 || !support.extendedConnect) {
      // Name exactly what the server's SETTINGS lack: an HTTP/3 server without extended
      // CONNECT (most of them) cannot carry any WebTransport session.
      const missingSettings: WebTransportMissingSetting[] = []
      const what: string[] = []
      if (!support.extendedConnect) {
        missingSettings.push('SETTINGS_ENABLE_CONNECT_PROTOCOL')
        what.push('SETTINGS_ENABLE_CONNECT_PROTOCOL (extended CONNECT, RFC 9220)')
      }
      if (!support.draft02) {
        missingSettings.push('SETTINGS_ENABLE_WEBTRANSPORT')
        what.push('SETTINGS_ENABLE_WEBTRANSPORT (WebTransport draft-02)')
      }
      throw new StoqWebTransportError('unsupported', `the server does not support WebTransport: its HTTP/3 SETTINGS lack ${what.join(' and ')}`, {
        missingSettings,
      })
    }
    if (this.#goaway !== null) throw new StoqWebTransportError('closed', `the server sent GOAWAY (${String(this.#goaway)}): no new sessions on this connection`)
    if (this.#draining !== null || this.#closing || this.quic.isClosed) throw new StoqWebTransportError('closed', 'the connection is closing')
    throwIfAborted(signal, 'openSession')
    const qs = this.quic.openStream()
    const writer = qs.writable!.getWriter()
    const reader = qs.readable!.getReader()
    const id = qs.id
    this.#pending.add(id)
    const fields: FieldLine[] = [
      [':method', 'CONNECT'],
      [':protocol', 'webtransport'],
      [':scheme', 'https'],
      [':authority', authority],
      [':path', path],
      [WEBTRANSPORT_DRAFT02_REQUEST_HEADER, '1'],
      ...extra,
    ]
    writer.write(encodeHeadersFrame(encodeFieldSection(fields))).catch(ignoreRejection) // a failed write shows as the CONNECT stream failing, which settles the request below

    return new Promise<WebTransportSession>((resolve, reject) => {
      let settled = false
      let stopListening: (() => void) | undefined
      const settle = (err: Error | null, session?: WebTransportSession): void => {
        if (settled) return
        settled = true
        this.#connectFailers.delete(id)
        clearTimeout(timer)
        stopListening?.()
        if (err) reject(err)
        else resolve(session!)
      }
      const timer = setTimeout(() => {
        settle(new StoqWebTransportError('timeout', `no answer to the WebTransport CONNECT within ${timeoutMs} ms`))
        this.#forget(id)
        qs.reset(H3_REQUEST_CANCELLED)
        reader.cancel(H3_REQUEST_CANCELLED).catch(ignoreRejection) // the request is abandoned and reset; the cancel may reject on the reset stream
      }, timeoutMs)
      // An abort cancels the CONNECT like the timeout does; the listener goes when it settles.
      stopListening = whenAborted(signal, 'openSession', (err) => {
        settle(err)
        this.#forget(id)
        qs.reset(H3_REQUEST_CANCELLED)
        reader.cancel(H3_REQUEST_CANCELLED).catch(ignoreRejection) // the CONNECT is being abandoned; a failed cancel changes nothing
      })
      this.#connectFailers.set(id, (err) => {
        settle(err)
        this.#forget(id)
        qs.reset(H3_REQUEST_CANCELLED)
        reader.cancel(H3_REQUEST_CANCELLED).catch(ignoreRejection) // the request is abandoned and reset; the cancel may reject on the reset stream
      })
      const onHead = async (fieldSection: Uint8Array): Promise<WebTransportSession | null | undefined> => {
        if (settled) return null
        const response = validateResponseHeaders(decodeFieldSection(fieldSection, { maxFieldSectionSize: this.limits.maxFieldSectionSize }))
        if (response.status < 200) return undefined
        if (response.status >= 300) {
          this.#forget(id)
          settle(
            new StoqWebTransportError('refused', `the server refused the WebTransport session with status ${response.status}`, { status: response.status }),
          )
          writer.close().catch(ignoreRejection) // refused: the stream is done; a peer that reset it makes this reject
          await reader.cancel(H3_NO_ERROR).catch(ignoreRejection) // refused: the stream is done; a peer that reset it makes this reject
          return null
        }
        const session = new WebTransportSession(this, {
          side: 'client',
          connectStream: qs,
          writer,
          path,
          authority,
          origin: extra.find(([n]) => n === 'origin')?.[1],
          headers: response.fields,
          maxQueuedStreams: this.limits.maxQueuedStreams,
        })
        this.#startSession(session)
        settle(null, session)
        this.#flushBuffered(session)
        return session
      }
      this.#runConnectStream(qs, reader, new Uint8Array(0), onHead).then(
        (session) => {
          if (session === null) return
          if (!settled) settle(new StoqWebTransportError('protocol', 'the CONNECT stream ended without a response'))
        },
        (err: unknown) => {
          this.#forget(id)
          const h3 = h3CodeOf(err)
          if (!settled) {
            settle(
              isResetWith(err, H3_REQUEST_REJECTED)
                ? new StoqWebTransportError(
                    'closed',
                    'the server rejected the WebTransport CONNECT unprocessed (H3_REQUEST_REJECTED, after GOAWAY); it may be retried on a new connection',
                    { h3Code: H3_REQUEST_REJECTED },
                    { cause: err },
                  )
                : h3 !== null
                  ? new StoqWebTransportError('protocol', `bad response to the WebTransport CONNECT: ${(err as Error).message}`, { h3Code: h3 }, { cause: err })
                  : new StoqWebTransportError('closed', `the WebTransport CONNECT failed: ${(err as Error).message}`, {}, { cause: err }),
            )
          }
          if (h3 !== null && h3 !== H3_REQUEST_INCOMPLETE) this.#connectionError(h3, (err as Error).message)
        },
      )
    })
  }
}
