import { channels } from './diagnostics.js'
import { EventEmitter } from 'node:events'
import {
  StoqError,
  StoqCertificatePinError,
  StoqClosedError,
  StoqInvalidArgumentError,
  StoqStreamLimitError,
  StoqStreamStateError,
  StoqAbortedError,
  checkOptions,
  isClientInitiated,
  whenAborted,
  type CloseInfo,
  type ConnectionStatsSnapshot,
  type EngineCloseInfo,
  type QuicEngine,
  type SocketAddress,
} from '@stoq/interface'
import { QuicStream } from './stream.js'
import { fingerprintDer } from './pem.js'
import { ignoreRejection } from './ignore.js'
import { X509Certificate } from 'node:crypto'
import { DEFAULT_CLOSE_TIMEOUT_MS } from './defaults.js'
import { holdPeerStreamLimits, unlimitedGovernor, type Governor } from './limits.js'
import { sendMessage, type SendSource } from './send-source.js'
import { CREATE_STREAM_KEYS, parkWaiter, waitOptions, type Waiter } from './waiters.js'
import { ALERT_CERTIFICATE_UNKNOWN, CA_LEAF_REASON, CRYPTO_ERROR_START, closeArgs, closeError, tlsError } from './close.js'
import { ThroughputSampler, emptyStats, type ConnectionCounters, type ConnectionStats, type ConnectionThroughput } from './connection-stats.js'
import { DatagramInbox } from './datagram-inbox.js'
import { FinishedStreams } from './finished-streams.js'

export type { SendSource } from './send-source.js'
export { holdPeerStreamLimits } from './limits.js'
export { emptyStats, type ConnectionCounters, type ConnectionStats, type ConnectionThroughput, type ThroughputRate } from './connection-stats.js'

const decoder = new TextDecoder()
const encoder = new TextEncoder()
const EMPTY = new Uint8Array(0)

export interface ConnectionEvents {
  /** The peer opened a stream. */
  stream: [QuicStream]
  /** A datagram arrived. */
  datagram: [Uint8Array]
  /** The connection ended; `info` says who closed it, with which code and reason. */
  close: [CloseInfo]
}

/** What a connection needs from its endpoint. */
export interface ConnectionOwner {
  readonly engine: QuicEngine
  readonly readScratch: Uint8Array
  schedule(): void
  /** The connection holds stream data to push before the next transmit. */
  connectionPending(conn: QuicConnection): void
  connectionGone(conn: QuicConnection): void
  /** The endpoint's options: `closeTimeoutMs` is the default bound of a graceful `close()`. */
  readonly options?: {
    readonly closeTimeoutMs: number
    readonly transport?: { maxConnectionWindow: number; initialMaxStreamsBidi: number; initialMaxStreamsUni: number }
  }
  /** The endpoint's budgets (see limits.ts); none when absent. */
  readonly governor?: Governor
  /** The connection has work left for a later turn (waiting peer streams, queued datagrams). */
  connectionDeferred?(conn: QuicConnection): void
  /** A stream reader stopped taking data because a read budget was full. */
  readStarved?(stream: QuicStream): void
}

/**
 * A QUIC connection. Create it with `endpoint.connect()` or receive it from the
 * endpoint's `connection` event.
 *
 * It is its streams' StreamHost (checked in `QuicStream.create(this, …)`); those members are internal
 * (left out of the published declarations), so the class does not name the interface.
 */
export class QuicConnection extends EventEmitter<ConnectionEvents> {
  /** @internal The engine's handle of the connection. */
  readonly handle: number
  readonly side: 'client' | 'server'
  /** The peer's address, as last seen: a server follows a client whose address changes (`stats().pathChanges`). */
  get remoteAddress(): SocketAddress {
    if (this.closeInfo === null) {
      try {
        this.remote = this.engine.peerAddress(this.handle)
      } catch {
        // Closing meanwhile: the last known address.
      }
    }
    return this.remote
  }
  private remote: SocketAddress
  /** Resolves once the connection has ended. Never rejects. */
  readonly closed: Promise<CloseInfo>
  /**
   * Resolves when the handshake has completed (and, on a client, the server's certificate
   * passed its checks); rejects with the connection's error when it ends before. Already
   * settled when `connect()` resolves, except for a client connected with `earlyData` that
   * sent 0-RTT, and a server connection the endpoint announced early (`server.earlyData`):
   * data that such a server connection received before this resolved may be a replay.
   */
  readonly handshake: Promise<void>

  private readonly owner: ConnectionOwner
  private readonly streams = new Map<number, QuicStream>()
  private readonly startedAt = performance.now()
  private establishedAt = -1
  private closeInfo: CloseInfo | null = null
  private closeError: Error | null = null
  private resolveClosed!: (info: CloseInfo) => void
  /** CONNECTION_CLOSE was asked of the engine. */
  private closing = false
  /** A graceful `close()` waits for finished streams before it sends CONNECTION_CLOSE. */
  private gracefulClose: Promise<void> | null = null
  /** Finished streams a graceful close waits for (see finished-streams.ts). */
  private readonly finished = new FinishedStreams(this)
  /** Highest peer-initiated stream id seen per type (bidi, uni), and ids below it not yet seen. */
  private readonly peerMax = [-1, -1]
  private readonly peerGaps = new Set<number>()
  /** @internal Payload counters the connection and its streams add to (users read `counters`). */
  readonly payload: ConnectionCounters = {
    streamBytesRead: 0,
    streamBytesWritten: 0,
    datagramsSent: 0,
    datagramsReceived: 0,
    datagramsDropped: 0,
    datagramsDroppedReceived: 0,
  }
  /** Throughput samples (see connection-stats.ts). */
  private readonly tp = new ThroughputSampler()
  /** Payload counters: stream bytes handed to readers and accepted from writers, datagrams (read-only). */
  get counters(): Readonly<ConnectionCounters> {
    return this.payload
  }
  /** @internal Set by the endpoint: settles a pending `connect()`. */
  onHandshakeSettled: ((err: Error | null) => void) | null = null
  private resolveHandshake!: () => void
  private rejectHandshake!: (err: Error) => void
  /** @internal the endpoint emitted `connection` for it (a server connection). */
  announced = false
  /** @internal Pinned SHA-256 fingerprints the server certificate must match (client side). */
  pins: string[] = []
  /** @internal Client side: the server's chain was verified against the `ca` option. */
  verifiedWithCa = false

  /** Budgets shared with the endpoint's other connections. */
  private readonly gov: Governor
  /** Peer streams seen but not accepted yet (a budget was full), in arrival order. */
  private readonly waiting = new Set<number>()
  /** Received datagrams not yet delivered. */
  private readonly inbox: DatagramInbox
  /** Per-turn work counters (reset when the governor's turn moves on). */
  private workTurn = -1
  private streamsThisTurn = 0
  /** @internal Stream bytes queued for this connection's readers, not yet read (users read `stats().readBufferBytes`). */
  readBufferBytes = 0
  /** Receive window: current size, what the budget holds for this connection, reads since the last check. */
  private window = 0
  private windowCommitted = 0
  private windowRead = 0
  private windowMarkAt = 0

  /** @internal A connection of `owner` (its endpoint) for the engine's connection `handle`. */
  static create(owner: ConnectionOwner, handle: number, side: 'client' | 'server', remote: SocketAddress): QuicConnection {
    return new QuicConnection(owner, handle, side, remote)
  }

  private constructor(owner: ConnectionOwner, handle: number, side: 'client' | 'server', remote: SocketAddress) {
    super()
    this.owner = owner
    this.gov = owner.governor ?? unlimitedGovernor()
    this.inbox = new DatagramInbox(this, this.gov, () => this.owner.connectionDeferred?.(this))
    ;(this as EventEmitter).on('newListener', this.onNewListener)
    this.handle = handle
    this.side = side
    this.remote = remote
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve
    })
    this.handshake = new Promise<void>((resolve, reject) => {
      this.resolveHandshake = resolve
      this.rejectHandshake = reject
    })
    // Awaiting it is optional: a failed handshake also shows in `closed` and connect().
    this.handshake.catch(ignoreRejection) // marks it handled: whoever awaits handshake still sees the rejection
    if (channels.connectionCreate.hasSubscribers) channels.connectionCreate.publish({ connection: this })
  }

  /** @internal */
  get engine(): QuicEngine {
    return this.owner.engine
  }

  /** @internal */
  get readScratch(): Uint8Array {
    return this.owner.readScratch
  }

  /** @internal Ask the endpoint to run its cycle soon. */
  schedule(): void {
    this.owner.schedule()
  }

  private readonly pendingStreams = new Set<QuicStream>()

  /** @internal A stream holds a chunk to push at the end of the tick. */
  streamPending(stream: QuicStream): void {
    this.pendingStreams.add(stream)
    this.owner.connectionPending(this)
  }

  /** @internal a stream's FIN was accepted by the engine: a graceful close waits for its acknowledgement. */
  streamFinished(stream: QuicStream): void {
    if (this.closeInfo !== null) return
    this.finished.add(stream.id)
  }

  /** @internal push held stream chunks into the engine (end of tick). */
  flushStreams(): void {
    if (this.pendingStreams.size === 0) return
    const streams = [...this.pendingStreams]
    this.pendingStreams.clear()
    for (const s of streams) s.flushPending()
  }

  /** @internal The error of the connection once it ended, else null. */
  connectionError(): Error | null {
    return this.closeError
  }

  /** Handshake duration in ms, or -1 until established. */
  get handshakeMs(): number {
    return this.establishedAt < 0 ? -1 : this.establishedAt - this.startedAt
  }

  /**
   * @internal Record one throughput sample at `nowMs` (a `performance.now()` time). The
   * endpoint calls this for every live connection from one shared timer; the
   * first sample sets the origin, a sample that does not move the clock
   * forward is ignored. No allocation.
   */
  sampleThroughput(nowMs: number): void {
    if (typeof nowMs !== 'number' || !Number.isFinite(nowMs)) throw new StoqInvalidArgumentError('nowMs', 'expected a time from performance.now()')
    this.tp.sample(nowMs, this.payload.streamBytesRead, this.payload.streamBytesWritten)
  }

  /** Payload throughput from the endpoint's samples (zeros before the second sample). */
  get throughput(): ConnectionThroughput {
    return this.tp.value
  }

  /** True once the handshake completed and until the connection closes. */
  get established(): boolean {
    return this.establishedAt >= 0 && this.closeInfo === null
  }

  get isClosed(): boolean {
    return this.closeInfo !== null
  }

  /** Negotiated application protocol. */
  get alpn(): string {
    return this.closeInfo ? '' : this.engine.alpn(this.handle)
  }

  /** SNI the client sent (server side) or asked for (client side). */
  get serverName(): string | null {
    return this.closeInfo ? null : this.engine.serverName(this.handle)
  }

  /** The peer's certificate chain as DER, leaf first. */
  get peerCertificates(): Uint8Array[] {
    return this.closeInfo ? [] : (this.engine.peerCertificates(this.handle) ?? [])
  }

  // -------------------------------------------------------------------------
  // Streams

  /**
   * Open a stream. Bidirectional by default; `{ unidirectional: true }` opens a
   * send-only stream. Throws StoqStreamLimitError when the peer's concurrent
   * stream limit is reached.
   */
  openStream(options: { unidirectional?: boolean } = {}): QuicStream {
    this.assertOpen()
    checkOptions(options, ['unidirectional'])
    const bidi = options.unidirectional !== true
    const id = this.engine.openStream(this.handle, bidi)
    if (id < 0) throw new StoqStreamLimitError(bidi)
    // Creating the stream in the engine counts it against the peer's limit now.
    this.engine.streamSend(this.handle, id, EMPTY, false)
    const stream = QuicStream.create(this, id, true)
    this.streams.set(id, stream)
    this.gov.streams++
    if (channels.streamOpen.hasSubscribers) channels.streamOpen.publish({ connection: this, stream, local: true })
    return stream
  }

  get streamsOpen(): number {
    return this.streams.size
  }

  /** @internal A stream is finished in both directions. */
  streamDone(stream: QuicStream): void {
    if (this.streams.get(stream.id) !== stream) return
    this.streams.delete(stream.id)
    this.gov.streams--
    if (!stream.local) {
      const type = (stream.id & 0x2) >> 1
      this.peerOpen[type]!--
      this.raisePeerLimit(type)
    }
    // A stream ended: a peer stream waiting for the budget may be accepted now.
    if (this.gov.streamsWaiting > 0) this.owner.connectionDeferred?.(this)
    if (channels.streamClosed.hasSubscribers) channels.streamClosed.publish({ connection: this, stream })
  }

  /** @internal engine event */
  onStreamReadable(id: number): void {
    let stream = this.streams.get(id)
    if (stream === undefined) {
      if (this.waiting.has(id) || !this.acceptPeerStream(id)) return
      // Earlier peer streams still waiting go first.
      if (this.waiting.size > 0 || !this.mayAcceptStream()) {
        this.waiting.add(id)
        this.gov.streamsWaiting++
        this.owner.connectionDeferred?.(this)
        return
      }
      stream = this.acceptStream(id)
    }
    stream.onReadable()
  }

  private acceptStream(id: number): QuicStream {
    const stream = QuicStream.create(this, id, false)
    this.streams.set(id, stream)
    this.gov.streams++
    this.streamsThisTurn++
    if (channels.streamOpen.hasSubscribers) channels.streamOpen.publish({ connection: this, stream, local: false })
    this.deliverIncoming(stream)
    return stream
  }

  // Incoming streams: never lost ------------------------------------------------------

  /** Peer streams accepted while nobody took them (no `stream` listener, no `accept()`). */
  private readonly unclaimed: QuicStream[] = []
  private readonly accepters: Waiter<QuicStream>[] = []
  private claimScheduled = false

  /**
   * A new peer stream goes to a pending `accept()`, else to the `stream` listeners, else it
   * waits (a peer may open streams in its first packets, before `connect()` resolved and the
   * application attached anything): the first `stream` listener or `accept()` gets it.
   */
  private deliverIncoming(stream: QuicStream): void {
    const accepter = this.accepters.shift()
    if (accepter !== undefined) accepter.resolve(stream)
    else if (this.unclaimed.length === 0 && this.listenerCount('stream') > 0) this.emit('stream', stream)
    else this.unclaimed.push(stream)
  }

  /** A `stream` listener was added: hand it what waited (after `on()` returned). */
  private readonly onNewListener = (event: string | symbol): void => {
    if (event !== 'stream' || this.unclaimed.length === 0 || this.claimScheduled) return
    this.claimScheduled = true
    queueMicrotask(() => {
      this.claimScheduled = false
      while (this.unclaimed.length > 0 && this.listenerCount('stream') > 0) this.emit('stream', this.unclaimed.shift()!)
    })
  }

  /**
   * The next stream the peer opens (or one it opened before anyone was listening). Rejects
   * with the connection's error once it has ended, with STOQ_ERR_STREAM_STATE when
   * `timeoutMs` passes, and with STOQ_ERR_ABORTED (the signal's reason as `cause`) when `signal` aborts.
   */
  accept(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<QuicStream> {
    const { signal, timeoutMs } = waitOptions(options)
    const waiting = this.unclaimed.shift()
    if (waiting !== undefined) return Promise.resolve(waiting)
    if (this.closeError) return Promise.reject(this.closeError)
    return parkWaiter(this.accepters, {}, signal, timeoutMs, () => new StoqStreamStateError(-1, `No stream from the peer within ${timeoutMs} ms`), 'accept')
  }

  /** Every stream the peer opens, in order, until the connection ends: `for await (const s of conn.incomingStreams)`. */
  get incomingStreams(): AsyncIterable<QuicStream> {
    return {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<QuicStream>> => {
          try {
            return { value: await this.accept(), done: false }
          } catch (err) {
            if (this.closeError !== null && err === this.closeError) return { value: undefined, done: true }
            throw err
          }
        },
      }),
    }
  }

  // Opening when the peer's limit allows -----------------------------------------------

  private readonly openers: (Waiter<QuicStream> & { bidi: boolean })[] = []

  /**
   * Open a stream, waiting for the peer's stream credit (MAX_STREAMS) when its limit is used
   * up, unlike `openStream()`, which throws StoqStreamLimitError at once. Waiting opens are
   * served in order. Rejects with StoqStreamLimitError after `timeoutMs`, with STOQ_ERR_ABORTED
   * (the signal's reason as `cause`) when `signal` aborts, and with the connection's error when it ends.
   */
  createStream(options: { unidirectional?: boolean; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<QuicStream> {
    let wait: { signal?: AbortSignal; timeoutMs?: number }
    try {
      this.assertOpen()
      wait = waitOptions(options, CREATE_STREAM_KEYS)
    } catch (err) {
      return Promise.reject(err)
    }
    const bidi = options.unidirectional !== true
    const { signal, timeoutMs } = wait
    if (signal?.aborted) return Promise.reject(new StoqAbortedError('createStream', signal.reason))
    if (!this.openers.some((o) => o.bidi === bidi)) {
      const stream = this.tryOpen(bidi)
      if (stream !== null) return Promise.resolve(stream)
    }
    const waiting = parkWaiter(this.openers, { bidi }, signal, timeoutMs, () => new StoqStreamLimitError(bidi), 'createStream')
    this.owner.connectionDeferred?.(this)
    return waiting
  }

  private tryOpen(bidi: boolean): QuicStream | null {
    try {
      return this.openStream({ unidirectional: !bidi })
    } catch (err) {
      if (StoqError.isInstance(err) && err.code === 'STOQ_ERR_STREAM_LIMIT') return null
      throw err
    }
  }

  /** Serve waiting `createStream()` calls, in order, while the peer's limit allows. */
  private serveOpeners(): void {
    // Once a kind meets the peer's limit, later opens of that kind wait; the other kind goes on.
    let blockedBidi = false
    let blockedUni = false
    for (let i = 0; i < this.openers.length; ) {
      const o = this.openers[i]!
      if (o.bidi ? blockedBidi : blockedUni) {
        i++
        continue
      }
      let stream: QuicStream | null
      try {
        stream = this.tryOpen(o.bidi)
      } catch (err) {
        this.openers.splice(i, 1)
        o.reject(err as Error)
        continue
      }
      if (stream === null) {
        if (o.bidi) blockedBidi = true
        else blockedUni = true
        i++
        continue
      }
      this.openers.splice(i, 1)
      o.resolve(stream)
    }
  }

  private newTurn(): void {
    if (this.workTurn === this.gov.turn) return
    this.workTurn = this.gov.turn
    this.streamsThisTurn = 0
  }

  /**
   * May one more peer stream become a QuicStream now: within this turn's work budget, and
   * within the endpoint's stream budget (or this connection's guaranteed minimum).
   */
  private mayAcceptStream(): boolean {
    this.newTurn()
    const l = this.gov.limits
    if (this.streamsThisTurn >= l.streamsPerTurn) return false
    return this.gov.streams < l.maxStreams || this.streams.size < l.minStreamsPerConnection
  }

  /**
   * @internal Work left from earlier turns: peer streams that waited for a budget, datagrams
   * beyond a turn's share. True when some is still left (the endpoint asks again).
   */
  resumeDeferred(): boolean {
    if (this.closeInfo !== null) return false
    for (const id of this.waiting) {
      if (!this.mayAcceptStream()) break
      this.waiting.delete(id)
      this.gov.streamsWaiting--
      this.acceptStream(id).onReadable()
    }
    this.inbox.deliver()
    if (this.openers.length > 0) this.serveOpeners()
    return this.waiting.size > 0 || this.inbox.pending || this.openers.length > 0
  }

  /** @internal the endpoint's cycle: is there work held back by this turn's share only? */
  get deferredByTurn(): boolean {
    this.newTurn()
    const l = this.gov.limits
    const streams = this.waiting.size > 0 && this.streamsThisTurn >= l.streamsPerTurn
    return streams || this.inbox.pending
  }

  // Reading budget and receive window -------------------------------------------------

  /** @internal may a reader of this connection take more bytes from the engine now? */
  readAllowed(): boolean {
    const l = this.gov.limits
    return this.gov.readBufferBytes < l.maxReadBufferBytes && this.readBufferBytes < l.maxReadBufferBytesPerConnection
  }

  /** @internal bytes queued for this connection's readers changed by `delta`. */
  readBuffered(delta: number): void {
    // Once closed, the connection gave its whole share back at once.
    if (this.closeInfo !== null) return
    this.readBufferBytes += delta
    this.gov.readBufferBytes += delta
  }

  /** @internal a reader stopped because a read budget was full. */
  readStarved(stream: QuicStream): void {
    this.gov.readsDeferred++
    this.owner.readStarved?.(stream)
  }

  /**
   * @internal The endpoint admitted this connection with `committed` bytes of its receive
   * budget for a window of `window` bytes (plus its datagram queue).
   */
  setWindow(window: number, committed: number): void {
    this.window = window
    this.windowCommitted = committed
    this.windowMarkAt = performance.now()
  }

  /**
   * @internal The application took `bytes` from the engine. When it consumed half the
   * window within a few round trips, the window limits the peer: double it, within
   * `transport.maxConnectionWindow` and the endpoint's receive budget. Only for engines that
   * grow windows when told to (`setReceiveWindow`).
   */
  readProgress(bytes: number): void {
    if (this.window === 0) return
    this.windowRead += bytes
    if (this.windowRead < this.window / 2) return
    const now = performance.now()
    const elapsed = now - this.windowMarkAt
    this.windowRead = 0
    this.windowMarkAt = now
    const max = this.owner.options?.transport?.maxConnectionWindow ?? this.window
    if (this.window >= max || this.closeInfo !== null || this.engine.setReceiveWindow === undefined) return
    const rttMs = (this.lastStats ?? this.engine.stats(this.handle)).rttMs
    if (elapsed > Math.max(4 * rttMs, 20)) return
    const next = Math.min(max, this.window * 2)
    if (!this.gov.commitWindow(next - this.window)) return
    this.windowCommitted += next - this.window
    this.window = next
    this.engine.setReceiveWindow(this.handle, next)
    this.schedule()
  }

  /** Current connection receive window (0 when the engine tunes its own). */
  get receiveWindow(): number {
    return this.window
  }

  /** @internal engine event */
  onStreamWritable(id: number): void {
    this.streams.get(id)?.onWritable()
  }

  /** Decide whether an unknown id is a new peer stream (not one we already finished). */
  private acceptPeerStream(id: number): boolean {
    const peerInitiated = isClientInitiated(id) !== (this.side === 'client')
    if (!peerInitiated) return false
    const type = (id & 0x2) >> 1
    const max = this.peerMax[type]!
    if (id > max) {
      // Ids skipped over are implicitly opened (RFC 9000 §3.2); remember them.
      const first = max < 0 ? id & 0x3 : max + 4
      for (let gap = first; gap < id; gap += 4) this.peerGaps.add(gap)
      this.peerMax[type] = id
      this.peerOpen[type]! += (id - first) / 4 + 1
      this.raisePeerLimit(type)
      return true
    }
    return this.peerGaps.delete(id)
  }

  // Lean connections: the peer's stream limits grow with use ---------------------------

  /** Peer streams of each type (bidi, uni) open now, and the limits the engine announces (0: the engine's own). */
  private readonly peerOpen = [0, 0]
  private readonly peerLimit = [0, 0]

  /**
   * @internal With an engine that keeps state for every stream a limit allows (quinn), start
   * the peer at a modest limit and raise it as the peer uses streams: see `raisePeerLimit`.
   */
  initPeerStreamLimits(): void {
    const t = this.owner.options?.transport
    if (t === undefined) return
    const start = holdPeerStreamLimits(this.engine, this.handle, t)
    if (start !== null) [this.peerLimit[0], this.peerLimit[1]] = start
  }

  /**
   * Double the peer's limit of one stream type once it has half of it open, up to the
   * configured limit, and only while the endpoint's stream budget has room: a peer beyond it
   * gets no more MAX_STREAMS until streams end.
   */
  private raisePeerLimit(type: number): void {
    const limit = this.peerLimit[type]!
    if (limit === 0 || this.closeInfo !== null) return
    const t = this.owner.options!.transport!
    const max = type === 0 ? t.initialMaxStreamsBidi : t.initialMaxStreamsUni
    if (limit >= max || this.peerOpen[type]! * 2 < limit || this.gov.streams >= this.gov.limits.maxStreams) return
    const next = Math.min(max, limit * 2)
    this.engine.setPeerStreamLimit!(this.handle, type === 0, next)
    this.peerLimit[type] = next
    this.schedule()
  }

  /** Current peer stream limits [bidi, uni] the endpoint set (0: the engine's own). */
  get peerStreamLimits(): readonly [number, number] {
    return [this.peerLimit[0]!, this.peerLimit[1]!]
  }

  /**
   * Send a whole message on a new unidirectional stream: bytes, a string, or
   * an (async) iterable / Node or Web stream of chunks. Resolves when every
   * byte and the FIN were handed to the engine, within the peer's flow
   * control; with `{ confirm: true }`, only once the peer acknowledged them
   * all. Resolves with the number of bytes sent. Rejects with the stream's or
   * the connection's typed error, or with STOQ_ERR_ABORTED when `signal` aborts
   * (the stream, if opened, is reset).
   */
  async send(data: SendSource, options: { confirm?: boolean; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<number> {
    return sendMessage(this, data, options)
  }

  // -------------------------------------------------------------------------
  // Datagrams

  /** Largest datagram the peer accepts now, or -1 when datagrams are not negotiated. */
  get maxDatagramSize(): number {
    return this.closeInfo ? -1 : this.engine.datagramMaxSize(this.handle)
  }

  /**
   * Send an unreliable datagram (RFC 9221). Returns false when the send queue
   * is full (the datagram is dropped). Throws StoqDatagramTooLargeError or
   * StoqDatagramUnsupportedError.
   */
  sendDatagram(data: Uint8Array | string): boolean {
    this.assertOpen()
    const bytes = typeof data === 'string' ? encoder.encode(data) : data
    if (!(bytes instanceof Uint8Array)) throw new StoqInvalidArgumentError('data', 'expected a Uint8Array or string')
    const ok = this.engine.datagramSend(this.handle, bytes)
    if (ok) {
      this.payload.datagramsSent++
      this.schedule()
    } else {
      this.payload.datagramsDropped++
    }
    return ok
  }

  /**
   * @internal engine event: take every datagram out of the engine into this connection's
   * queue (bounded per connection and per endpoint: beyond, they are dropped and counted),
   * then deliver this turn's share. The rest goes out on later turns, so a flood from one
   * peer cannot hold the event loop.
   */
  onDatagramReadable(): void {
    this.inbox.takeFromEngine()
  }

  /** Give back every budget this connection holds (it ended). */
  private releaseBudgets(): void {
    this.gov.streams -= this.streams.size
    this.gov.streamsWaiting -= this.waiting.size
    this.waiting.clear()
    this.inbox.release()
    this.gov.readBufferBytes -= this.readBufferBytes
    this.readBufferBytes = 0
    this.gov.receiveWindowBytes -= this.windowCommitted
    this.windowCommitted = 0
  }

  // -------------------------------------------------------------------------
  // Lifecycle

  /** @internal engine event */
  onEstablished(): void {
    this.establishedAt = performance.now()
    if (this.side === 'client' && this.verifiedWithCa && this.peerLeafIsCa()) {
      // quiche (BoringSSL) accepts a CA certificate as the server's; quinn (webpki) does not.
      this.engine.close(this.handle, false, CRYPTO_ERROR_START + ALERT_CERTIFICATE_UNKNOWN, encoder.encode(CA_LEAF_REASON))
      this.schedule()
      this.settleHandshake(
        tlsError({ remote: false, app: false, code: CRYPTO_ERROR_START + ALERT_CERTIFICATE_UNKNOWN, reason: CA_LEAF_REASON, idleTimeout: false }),
      )
      return
    }
    if (this.side === 'client' && this.pins.length > 0) {
      const leaf = this.engine.peerCertificates(this.handle)?.[0]
      const actual = leaf ? fingerprintDer(leaf) : null
      if (actual === null || !this.pins.includes(actual)) {
        const err = new StoqCertificatePinError(this.pins, actual)
        // TLS alert bad_certificate (42) as a crypto transport error.
        this.engine.close(this.handle, false, CRYPTO_ERROR_START + 42, encoder.encode('certificate pin mismatch'))
        this.schedule()
        this.settleHandshake(err)
        return
      }
    }
    if (channels.connectionEstablished.hasSubscribers) channels.connectionEstablished.publish({ connection: this })
    this.settleHandshake(null)
  }

  /** True when the peer's leaf certificate says basicConstraints CA:TRUE. */
  private peerLeafIsCa(): boolean {
    const leaf = this.engine.peerCertificates(this.handle)?.[0]
    if (leaf === undefined) return false
    try {
      return new X509Certificate(leaf).ca
    } catch {
      return false // unparsable: the TLS stack verified it, nothing to add
    }
  }

  private settleHandshake(err: Error | null): void {
    const settle = this.onHandshakeSettled
    this.onHandshakeSettled = null
    settle?.(err)
    if (err) this.rejectHandshake(err)
    else this.resolveHandshake()
  }

  /**
   * Close the connection gracefully with an application error code and reason,
   * which the peer receives in its `close` event. Resolves when the connection
   * is gone (never rejects for a connection that ends: the `CloseInfo` says how).
   *
   * Data is not dropped: before CONNECTION_CLOSE goes out, `close()` waits until
   * every stream we finished writing (the writer was closed, or `send()`
   * resolved) is complete in the engine, i.e. the peer acknowledged all its
   * bytes and the FIN. Writes already under way are pushed first: a write still
   * waiting for flow-control credit goes on (and whatever its writer queued
   * behind it, `writer.close()` included), and a stream's held last byte is
   * sent. The wait is bounded by `options.timeoutMs` (default: the endpoint's
   * `closeTimeoutMs`, 2000 ms unless set); when it runs out, or when the peer
   * closes first, or `closeNow()` is called, the connection closes at once and
   * whatever was not acknowledged is lost. `timeoutMs: 0` closes at once.
   *
   * Not waited for: streams the application has not finished writing (they end
   * with the connection, the peer sees them cut off), and bidirectional streams
   * whose readable side is still open (the engine reports a bidirectional
   * stream complete only when both directions are; read them to the end first,
   * like an HTTP/2 `session.close()` waits for its streams).
   *
   * As soon as `close()` is called, `openStream()`, `send()` and
   * `sendDatagram()` throw StoqClosedError; so do writes on existing streams
   * from the next turn of the event loop on (writes and `writer.close()` made
   * in the same turn as `close()` still go out), except on a stream whose write
   * is still waiting for credit, as said above. Reading goes on until the end.
   * Calling `close()` again returns the same promise (its arguments are ignored).
   */
  async close(code = 0, reason = '', options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<CloseInfo> {
    const { bytes, timeoutMs, signal } = closeArgs(code, reason, options, this.owner.options?.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS)
    if (this.closeInfo === null && !this.closing && this.gracefulClose === null) {
      let stopListening: (() => void) | null = null
      const sendClose = (): void => {
        stopListening?.()
        if (this.closeInfo !== null || this.closing) return
        this.closing = true
        this.engine.close(this.handle, true, code, bytes)
        this.schedule()
      }
      if (timeoutMs === 0 || signal?.aborted) sendClose()
      else {
        // An abort ends the graceful phase: CONNECTION_CLOSE goes out at once, as after timeoutMs.
        stopListening = whenAborted(signal, 'close', sendClose)
        this.gracefulClose = this.finished.drain(this.streams, () => this.closeInfo !== null || this.closing, timeoutMs).then(sendClose, sendClose)
      }
    }
    return this.closed
  }

  /**
   * Close at once, without waiting for unacknowledged stream data (what
   * `close()` does after its graceful phase); also ends a graceful `close()`
   * under way. The endpoint uses it on shutdown and on handshake timeout.
   */
  closeNow(code: number, reason: string): void {
    if (this.closeInfo !== null || this.closing) return
    this.closing = true
    this.engine.close(this.handle, true, code, encoder.encode(reason))
    // Without a cycle the CONNECTION_CLOSE would wait for the next engine timer (with
    // quiche the peer then only learnt of the close by idle timeout).
    this.schedule()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** @internal engine event */
  onClosed(info: EngineCloseInfo): void {
    if (this.closeInfo !== null) return
    this.snapshotStats()
    const ci: CloseInfo = {
      remote: info.remote,
      app: info.app,
      code: info.code,
      reason: decoder.decode(info.reason),
      idleTimeout: info.idleTimeout,
    }
    this.closeInfo = ci
    const err = closeError(info, ci)
    this.closeError = err
    this.settleHandshake(err)
    for (const a of this.accepters.splice(0)) a.reject(err)
    for (const o of this.openers.splice(0)) o.reject(err)
    // Data the peer sent before its CONNECTION_CLOSE (a graceful close waited for our
    // acknowledgement of it) is still readable in the engine during this call.
    const salvage = ci.remote
    const streams = [...this.streams.values()]
    this.releaseBudgets()
    this.streams.clear()
    for (const stream of streams) stream.onConnectionClosed(err, salvage)
    this.finished.clear()
    this.pendingStreams.clear()
    this.owner.connectionGone(this)
    this.resolveClosed(ci)
    if (channels.connectionClosed.hasSubscribers) channels.connectionClosed.publish({ connection: this, info: ci })
    this.emit('close', ci)
  }

  /** Error for operations on a closed connection. */
  private assertOpen(): void {
    if (this.closeError) throw new StoqClosedError('connection', `Connection is closed: ${this.closeError.message}`, { cause: this.closeError })
    if (this.closing || this.gracefulClose !== null) throw new StoqClosedError('connection', 'Connection is closing')
  }

  stats(): ConnectionStats {
    const base: ConnectionStatsSnapshot = this.closeInfo ? (this.lastStats ?? emptyStats()) : (this.lastStats = this.engine.stats(this.handle))
    return {
      ...base,
      resumed: base.resumed ?? false,
      earlyData: base.earlyData ?? 'none',
      durationMs: performance.now() - this.startedAt,
      handshakeMs: this.handshakeMs,
      streamsOpen: this.streams.size,
      ...this.payload,
      streamsWaiting: this.waiting.size,
      readBufferBytes: this.readBufferBytes,
      receiveWindow: this.window,
    }
  }

  private lastStats: ConnectionStatsSnapshot | null = null

  /** @internal refresh the cached stats before the engine forgets the connection. */
  snapshotStats(): void {
    if (this.closeInfo === null) this.lastStats = this.engine.stats(this.handle)
  }
}
