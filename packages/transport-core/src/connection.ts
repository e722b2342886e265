import { channels } from './diagnostics.js'
import { EventEmitter } from 'node:events'
import {
  StoqError,
  StoqCertificatePinError,
  StoqClosedError,
  StoqConnectionClosedError,
  StoqConnectionRefusedError,
  StoqIdleTimeoutError,
  StoqInvalidArgumentError,
  StoqStreamLimitError,
  StoqStreamStateError,
  StoqTlsError,
  StoqVersionNegotiationError,
  StoqAbortedError,
  checkOptions,
  isClientInitiated,
  signalOption,
  throwIfAborted,
  whenAborted,
  type CloseInfo,
  type ConnectionStatsSnapshot,
  type EarlyDataState,
  type EngineCloseInfo,
  type QuicEngine,
  type SocketAddress,
} from '@stoq/interface'
import { QuicStream, type StreamHost } from './stream.js'
import { fingerprintDer } from './pem.js'
import { X509Certificate } from 'node:crypto'
import { DEFAULT_CLOSE_TIMEOUT_MS } from './defaults.js'
import { unlimitedGovernor, type Governor } from './limits.js'

const decoder = new TextDecoder()

/** What `send()` accepts: bytes, text, or any (async) iterable / Node or Web stream of those. */
export type SendSource =
  | Uint8Array
  | ArrayBuffer
  | string
  | Iterable<Uint8Array | string>
  | AsyncIterable<Uint8Array | string>

async function* toChunks(data: SendSource): AsyncGenerator<Uint8Array> {
  if (typeof data === 'string') {
    yield encoder.encode(data)
    return
  }
  if (data instanceof Uint8Array) {
    yield data
    return
  }
  if (data instanceof ArrayBuffer) {
    yield new Uint8Array(data)
    return
  }
  const iterable = data as Partial<AsyncIterable<unknown> & Iterable<unknown>> | null
  if (iterable && (typeof iterable[Symbol.asyncIterator] === 'function' || typeof iterable[Symbol.iterator] === 'function')) {
    for await (const chunk of data as AsyncIterable<unknown>) {
      if (typeof chunk === 'string') yield encoder.encode(chunk)
      else if (chunk instanceof Uint8Array) yield chunk
      else throw new StoqInvalidArgumentError('data', 'stream chunks must be Uint8Array, Buffer or string')
    }
    return
  }
  throw new StoqInvalidArgumentError('data', 'expected a Uint8Array, Buffer, ArrayBuffer, string, or an (async) iterable or stream of them')
}
const encoder = new TextEncoder()
const EMPTY = new Uint8Array(0)

const WAIT_KEYS = ['signal', 'timeoutMs'] as const
const CREATE_STREAM_KEYS = ['unidirectional', 'signal', 'timeoutMs'] as const
const SEND_KEYS = ['confirm', 'signal', 'timeoutMs'] as const

/** `{ signal, timeoutMs }` of a waiting call, checked. */
function waitOptions(options: { signal?: unknown; timeoutMs?: unknown }, accepted: readonly string[] = WAIT_KEYS): { signal?: AbortSignal; timeoutMs?: number } {
  const { signal: given, timeoutMs } = checkOptions(options, accepted) as { signal?: unknown; timeoutMs?: unknown }
  const signal = signalOption('signal', given)
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 2 ** 31 - 1)) {
    throw new StoqInvalidArgumentError('timeoutMs', 'expected an integer number of ms')
  }
  return { ...(signal !== undefined ? { signal: signal as AbortSignal } : {}), ...(timeoutMs !== undefined ? { timeoutMs: timeoutMs as number } : {}) }
}

/** A call waiting in a queue (accept, createStream): settled by whoever serves the queue. */
interface Waiter<T> {
  resolve: (value: T) => void
  reject: (err: Error) => void
}

/**
 * Queue a waiting call: it settles when the queue's owner serves it, or leaves the queue when
 * `timeoutMs` passes (rejecting with `onTimeout()`) or `signal` aborts (with StoqAbortedError,
 * the signal's reason as `cause`). The abort listener goes when the call settles.
 */
function parkWaiter<T, X extends object>(
  queue: (Waiter<T> & X)[],
  extra: X,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  onTimeout: () => Error,
  operation: string,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = (): void => {
      if (timer) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const leave = (err: Error): void => {
      const i = queue.indexOf(entry)
      if (i >= 0) queue.splice(i, 1)
      done()
      reject(err)
    }
    const entry = Object.assign(extra, {
      resolve: (v: T): void => {
        done()
        resolve(v)
      },
      reject: (err: Error): void => {
        done()
        reject(err)
      },
    }) as Waiter<T> & X
    const onAbort = (): void => leave(new StoqAbortedError(operation, signal!.reason))
    const timer = timeoutMs === undefined ? null : setTimeout(() => leave(onTimeout()), timeoutMs)
    if (signal?.aborted) {
      leave(new StoqAbortedError(operation, signal.reason))
      return
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    queue.push(entry)
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

/** What an aborted wait rejects with: the signal's reason (an AbortError DOMException by default). */

/** Transport error codes 0x100-0x1ff carry a TLS alert (RFC 9001 §4.8). */
const CRYPTO_ERROR_START = 0x100
const CRYPTO_ERROR_END = 0x1ff
/** TLS alert certificate_unknown: what rustls sends for a CA certificate used as the server's. */
const ALERT_CERTIFICATE_UNKNOWN = 46
/** Reason of our close when the server's certificate is a CA certificate (quiche path). */
const CA_LEAF_REASON = 'server certificate is a CA certificate'
/**
 * Why a client refuses a server whose certificate is marked CA:TRUE, and what to do instead.
 * webpki (quinn) refuses it as CaUsedAsEndEntity; BoringSSL (quiche) accepts it, so the
 * connection checks the leaf itself (`onEstablished`) and both engines say the same.
 */
const CA_LEAF_ADVICE =
  "the server's certificate is a CA certificate (basicConstraints CA:TRUE); issue a leaf certificate from that CA, or connect with `pin` (its SHA-256 fingerprint)"

/** The typed error of a connection closed by a TLS alert (a crypto transport error). */
function tlsError(ci: CloseInfo): StoqTlsError {
  const alert = ci.code - CRYPTO_ERROR_START
  const caLeaf = !ci.remote && (ci.reason === CA_LEAF_REASON || ci.reason.includes('CaUsedAsEndEntity'))
  const what = caLeaf ? `: ${CA_LEAF_ADVICE} (alert ${alert})` : ` alert ${alert}${ci.reason ? ` (${ci.reason})` : ''} ${ci.remote ? 'from the peer' : 'raised locally'}`
  return new StoqTlsError(`TLS handshake failed${what}`, { ...ci, alert })
}
const CONNECTION_REFUSED = 0x2
/** Application error codes must fit a QUIC varint (62 bits); we accept safe integers. */
const MAX_CODE = Number.MAX_SAFE_INTEGER
/** Reason phrases are sent in one CONNECTION_CLOSE frame: keep them short. */
const MAX_REASON_BYTES = 1024
/** Largest `close()` timeout accepted (10 minutes, like the endpoint's closeTimeoutMs). */
const MAX_CLOSE_TIMEOUT_MS = 600_000
/**
 * Finished streams whose acknowledgement is still unknown: the set is pruned (streams the
 * engine reports complete are dropped) whenever it reaches this size or twice its size after
 * the last pruning, so it stays proportional to the streams really in flight.
 */
const FINISHED_PRUNE_MIN = 256

export interface ConnectionStats extends ConnectionStatsSnapshot {
  /** The handshake resumed a TLS session (no certificate exchanged): known once it completed. */
  resumed: boolean
  /**
   * 0-RTT of this connection: `none`, `pending` (client: sent before the handshake, the
   * server's verdict not known yet), `accepted`, or `rejected` (the engine sent the data again
   * after the handshake; nothing was lost).
   */
  earlyData: EarlyDataState
  /** Milliseconds since the connection was created. */
  durationMs: number
  /** Handshake duration in ms (-1 until established). */
  handshakeMs: number
  streamsOpen: number
  /** Stream payload bytes delivered to readers (what the application received). */
  streamBytesRead: number
  /** Stream payload bytes the engine accepted from writers (what the application sent). */
  streamBytesWritten: number
  datagramsSent: number
  datagramsReceived: number
  datagramsDropped: number
  /** Received datagrams dropped because the connection's or the endpoint's datagram queue was full. */
  datagramsDroppedReceived: number
  /** Peer streams waiting for the endpoint's stream budget (not announced yet). */
  streamsWaiting: number
  /** Stream bytes queued for this connection's readers, not yet read. */
  readBufferBytes: number
  /** Connection receive window now (0 when the engine tunes its own). */
  receiveWindow: number
}

/** Payload rate in one direction, in Gbit/s (10^9 bits per second). */
export interface ThroughputRate {
  /** Payload bytes counted since the first sample. */
  bytes: number
  /** Rate over the latest sample interval (0 before the second sample). */
  instantGbps: number
  /** Rate from the first sample to the latest. */
  averageGbps: number
  /** Highest `instantGbps` of any interval so far. */
  peakGbps: number
}

/**
 * `conn.throughput`: payload throughput of one connection (stream bytes the
 * application wrote and read), sampled by its endpoint's shared timer while
 * the connection lives. The top-level rates count both directions together.
 */
export interface ConnectionThroughput extends ThroughputRate {
  /** Samples taken; the first sets the origin, every later one closes an interval. */
  samples: number
  /** Seconds from the first sample to the latest. */
  durationSec: number
  sent: ThroughputRate
  received: ThroughputRate
}

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
 */
export class QuicConnection extends EventEmitter<ConnectionEvents> implements StreamHost {
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
  /**
   * Streams whose FIN the engine accepted, by id, until the engine reports them complete (the
   * peer acknowledged every byte and the FIN): what a graceful close waits for. The stream
   * objects themselves leave `streams` as soon as both directions are done locally.
   */
  private readonly finished = new Set<number>()
  private finishedPruneAt = FINISHED_PRUNE_MIN
  /** Highest peer-initiated stream id seen per type (bidi, uni), and ids below it not yet seen. */
  private readonly peerMax = [-1, -1]
  private readonly peerGaps = new Set<number>()
  /** Payload counters: stream bytes handed to readers and accepted from writers, datagrams. */
  readonly counters = { streamBytesRead: 0, streamBytesWritten: 0, datagramsSent: 0, datagramsReceived: 0, datagramsDropped: 0, datagramsDroppedReceived: 0 }
  /** Throughput samples: origin, latest sample and peaks (plain numbers, updated once per sample). */
  private readonly tp = {
    samples: 0,
    originMs: 0,
    originRead: 0,
    originWritten: 0,
    lastMs: 0,
    lastRead: 0,
    lastWritten: 0,
    instantRead: 0,
    instantWritten: 0,
    peakRead: 0,
    peakWritten: 0,
    peakTotal: 0,
  }
  /** Set by the endpoint: settles a pending `connect()`. */
  onHandshakeSettled: ((err: Error | null) => void) | null = null
  private resolveHandshake!: () => void
  private rejectHandshake!: (err: Error) => void
  /** @internal the endpoint emitted `connection` for it (a server connection). */
  announced = false
  /** Pinned SHA-256 fingerprints the server certificate must match (client side). */
  pins: string[] = []
  /** Client side: the server's chain was verified against the `ca` option. */
  verifiedWithCa = false

  /** Budgets shared with the endpoint's other connections. */
  private readonly gov: Governor
  /** Peer streams seen but not accepted yet (a budget was full), in arrival order. */
  private readonly waiting = new Set<number>()
  /** Received datagrams not yet delivered (a ring: `dgramHead` is the next one). */
  private dgramQueue: Uint8Array[] = []
  private dgramHead = 0
  /** Per-turn work counters (reset when the governor's turn moves on). */
  private workTurn = -1
  private streamsThisTurn = 0
  private datagramsThisTurn = 0
  /** Stream bytes queued for this connection's readers, not yet read. */
  readBufferBytes = 0
  /** Receive window: current size, what the budget holds for this connection, reads since the last check. */
  private window = 0
  private windowCommitted = 0
  private windowRead = 0
  private windowMarkAt = 0

  constructor(owner: ConnectionOwner, handle: number, side: 'client' | 'server', remote: SocketAddress) {
    super()
    this.owner = owner
    this.gov = owner.governor ?? unlimitedGovernor()
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
    this.handshake.catch(() => {})
    if (channels.connectionCreate.hasSubscribers) channels.connectionCreate.publish({ connection: this })
  }

  get engine(): QuicEngine {
    return this.owner.engine
  }

  get readScratch(): Uint8Array {
    return this.owner.readScratch
  }

  schedule(): void {
    this.owner.schedule()
  }

  private readonly pendingStreams = new Set<QuicStream>()

  streamPending(stream: QuicStream): void {
    this.pendingStreams.add(stream)
    this.owner.connectionPending(this)
  }

  /** @internal a stream's FIN was accepted by the engine: a graceful close waits for its acknowledgement. */
  streamFinished(stream: QuicStream): void {
    if (this.closeInfo !== null) return
    this.finished.add(stream.id)
    if (this.finished.size >= this.finishedPruneAt) {
      for (const id of this.finished) if (this.engine.streamComplete(this.handle, id)) this.finished.delete(id)
      this.finishedPruneAt = Math.max(FINISHED_PRUNE_MIN, 2 * this.finished.size)
    }
  }

  /** @internal push held stream chunks into the engine (end of tick). */
  flushStreams(): void {
    if (this.pendingStreams.size === 0) return
    const streams = [...this.pendingStreams]
    this.pendingStreams.clear()
    for (const s of streams) s.flushPending()
  }

  connectionError(): Error | null {
    return this.closeError
  }

  /** Handshake duration in ms, or -1 until established. */
  get handshakeMs(): number {
    return this.establishedAt < 0 ? -1 : this.establishedAt - this.startedAt
  }

  /**
   * Record one throughput sample at `nowMs` (a `performance.now()` time). The
   * endpoint calls this for every live connection from one shared timer; the
   * first sample sets the origin, a sample that does not move the clock
   * forward is ignored. No allocation.
   */
  sampleThroughput(nowMs: number): void {
    if (typeof nowMs !== 'number' || !Number.isFinite(nowMs)) throw new StoqInvalidArgumentError('nowMs', 'expected a time from performance.now()')
    const t = this.tp
    const read = this.counters.streamBytesRead
    const written = this.counters.streamBytesWritten
    if (t.samples === 0) {
      t.originMs = t.lastMs = nowMs
      t.originRead = t.lastRead = read
      t.originWritten = t.lastWritten = written
      t.samples = 1
      return
    }
    if (!(nowMs > t.lastMs)) return
    const bitsPerNs = 8 / ((nowMs - t.lastMs) * 1e6) // Gbit/s = bits per ns
    t.instantRead = (read - t.lastRead) * bitsPerNs
    t.instantWritten = (written - t.lastWritten) * bitsPerNs
    if (t.instantRead > t.peakRead) t.peakRead = t.instantRead
    if (t.instantWritten > t.peakWritten) t.peakWritten = t.instantWritten
    if (t.instantRead + t.instantWritten > t.peakTotal) t.peakTotal = t.instantRead + t.instantWritten
    t.lastMs = nowMs
    t.lastRead = read
    t.lastWritten = written
    t.samples++
  }

  /** Payload throughput from the endpoint's samples (zeros before the second sample). */
  get throughput(): ConnectionThroughput {
    const t = this.tp
    const spanMs = t.samples > 1 ? t.lastMs - t.originMs : 0
    const avg = (bytes: number): number => (spanMs > 0 ? (bytes * 8) / (spanMs * 1e6) : 0)
    const readBytes = t.lastRead - t.originRead
    const writtenBytes = t.lastWritten - t.originWritten
    return {
      samples: t.samples,
      durationSec: spanMs / 1000,
      bytes: readBytes + writtenBytes,
      instantGbps: t.instantRead + t.instantWritten,
      averageGbps: avg(readBytes + writtenBytes),
      peakGbps: t.peakTotal,
      sent: { bytes: writtenBytes, instantGbps: t.instantWritten, averageGbps: avg(writtenBytes), peakGbps: t.peakWritten },
      received: { bytes: readBytes, instantGbps: t.instantRead, averageGbps: avg(readBytes), peakGbps: t.peakRead },
    }
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
    const stream = new QuicStream(this, id, true)
    this.streams.set(id, stream)
    this.gov.streams++
    if (channels.streamOpen.hasSubscribers) channels.streamOpen.publish({ connection: this, stream, local: true })
    return stream
  }

  get streamsOpen(): number {
    return this.streams.size
  }

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
    const stream = new QuicStream(this, id, false)
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
    this.datagramsThisTurn = 0
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
    this.deliverDatagrams()
    if (this.openers.length > 0) this.serveOpeners()
    return this.waiting.size > 0 || this.dgramHead < this.dgramQueue.length || this.openers.length > 0
  }

  /** @internal the endpoint's cycle: is there work held back by this turn's share only? */
  get deferredByTurn(): boolean {
    this.newTurn()
    const l = this.gov.limits
    const streams = this.waiting.size > 0 && this.streamsThisTurn >= l.streamsPerTurn
    const dgrams = this.dgramHead < this.dgramQueue.length
    return streams || dgrams
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
      const first = max < 0 ? (id & 0x3) : max + 4
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
    checkOptions(options, SEND_KEYS)
    const signal = signalOption('signal', options.signal)
    const timeoutMs = options.timeoutMs ?? 30_000
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new StoqInvalidArgumentError('timeoutMs', 'expected a positive integer (ms)')
    const iterable = typeof data === 'object' && data !== null && (Symbol.asyncIterator in data || Symbol.iterator in data)
    if (typeof data !== 'string' && !(data instanceof Uint8Array) && !(data instanceof ArrayBuffer) && !iterable) {
      throw new StoqInvalidArgumentError('data', 'expected a Uint8Array, Buffer, ArrayBuffer, string, or an (async) iterable or stream of them')
    }
    throwIfAborted(signal, 'send')
    const chunks = toChunks(data)
    // The first chunk before the stream: a source that is wrong from the start leaves no stream.
    const first = await chunks.next()
    throwIfAborted(signal, 'send')
    // Waits for the peer's stream credit (within timeoutMs), like the rest of send().
    let stream: QuicStream
    try {
      stream = await this.createStream({ unidirectional: true, timeoutMs, ...(signal !== undefined ? { signal } : {}) })
    } catch (err) {
      throw err instanceof StoqAbortedError ? new StoqAbortedError('send', signal?.reason) : err
    }
    const writer = stream.writable!.getWriter()
    // An abort resets the stream: a write waiting for credit rejects, nothing more goes out.
    let aborted: StoqAbortedError | null = null
    const stopListening = whenAborted(signal, 'send', (err) => {
      aborted = err
      writer.abort(err).catch(() => {})
    })
    try {
      try {
        if (first.done !== true) await writer.write(first.value)
        for await (const chunk of chunks) await writer.write(chunk)
        await writer.close()
      } catch (err) {
        writer.abort(err).catch(() => {})
        throw aborted ?? err
      }
      const sent = stream.bytesWritten
      if (options.confirm !== true) return sent
      // The engine forgets a send-only stream once the peer acknowledged all of it.
      const deadline = performance.now() + timeoutMs
      while (!this.engine.streamComplete(this.handle, stream.id)) {
        if (aborted !== null) throw aborted
        const err = this.closeError
        if (err) throw err
        if (performance.now() > deadline) {
          throw new StoqStreamStateError(stream.id, `Peer did not acknowledge stream ${stream.id} within ${timeoutMs} ms`)
        }
        const rtt = this.closeInfo ? 1 : Math.max(1, Math.min(50, this.engine.stats(this.handle).rttMs / 2))
        await new Promise((resolve) => setTimeout(resolve, rtt))
      }
      return sent
    } finally {
      stopListening()
    }
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
      this.counters.datagramsSent++
      this.schedule()
    } else {
      this.counters.datagramsDropped++
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
    const scratch = this.readScratch
    const l = this.gov.limits
    for (;;) {
      const n = this.engine.datagramRecv(this.handle, scratch)
      if (n < 0) break
      const queued = this.dgramQueue.length - this.dgramHead
      if (queued >= l.maxQueuedDatagramsPerConnection || this.gov.queuedDatagrams >= l.maxQueuedDatagrams) {
        this.counters.datagramsDroppedReceived++
        this.gov.datagramsDropped++
        continue
      }
      this.dgramQueue.push(scratch.slice(0, n))
      this.gov.queuedDatagrams++
    }
    this.deliverDatagrams()
  }

  private deliverDatagrams(): void {
    if (this.dgramHead >= this.dgramQueue.length) return
    this.newTurn()
    const gov = this.gov
    const share = gov.limits.datagramsPerTurn
    const timeShare = gov.handlerShareMs
    while (this.dgramHead < this.dgramQueue.length && this.datagramsThisTurn < share && this.closeInfo === null) {
      // Past the turn's handler time, one datagram per connection and turn still goes out.
      if (gov.handlerMs >= timeShare && this.datagramsThisTurn > 0) break
      const d = this.dgramQueue[this.dgramHead]!
      this.dgramQueue[this.dgramHead++] = EMPTY
      gov.queuedDatagrams--
      this.datagramsThisTurn++
      this.counters.datagramsReceived++
      const t = performance.now()
      this.emit('datagram', d)
      gov.handlerEndAt = performance.now()
      gov.handlerMs += gov.handlerEndAt - t
    }
    if (this.dgramHead >= this.dgramQueue.length) {
      this.dgramQueue = []
      this.dgramHead = 0
    } else {
      if (this.dgramHead > 1024) {
        this.dgramQueue = this.dgramQueue.slice(this.dgramHead)
        this.dgramHead = 0
      }
      this.owner.connectionDeferred?.(this)
    }
  }

  /** Give back every budget this connection holds (it ended). */
  private releaseBudgets(): void {
    this.gov.streams -= this.streams.size
    this.gov.streamsWaiting -= this.waiting.size
    this.waiting.clear()
    this.gov.queuedDatagrams -= this.dgramQueue.length - this.dgramHead
    this.dgramQueue = []
    this.dgramHead = 0
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
  async close(code = 0, reason = '', options: { timeoutMs?: number } = {}): Promise<CloseInfo> {
    if (!Number.isInteger(code) || code < 0 || code > MAX_CODE) {
      throw new StoqInvalidArgumentError('code', `expected a non-negative integer, got ${String(code)}`)
    }
    if (typeof reason !== 'string') throw new StoqInvalidArgumentError('reason', 'expected a string')
    const bytes = encoder.encode(reason)
    if (bytes.length > MAX_REASON_BYTES) {
      throw new StoqInvalidArgumentError('reason', `expected at most ${MAX_REASON_BYTES} bytes, got ${bytes.length}`)
    }
    checkOptions(options, ['timeoutMs'])
    const timeoutMs = options.timeoutMs ?? this.owner.options?.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS
    if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_CLOSE_TIMEOUT_MS) {
      throw new StoqInvalidArgumentError('timeoutMs', `expected an integer from 0 to ${MAX_CLOSE_TIMEOUT_MS} (ms), got ${String(timeoutMs)}`)
    }
    if (this.closeInfo === null && !this.closing && this.gracefulClose === null) {
      const sendClose = (): void => {
        if (this.closeInfo !== null || this.closing) return
        this.closing = true
        this.engine.close(this.handle, true, code, bytes)
        this.schedule()
      }
      if (timeoutMs === 0) sendClose()
      else this.gracefulClose = this.drainStreams(timeoutMs).then(sendClose, sendClose)
    }
    return this.closed
  }

  /**
   * The graceful phase of `close()`: wait until every finished stream is
   * acknowledged and no write is left in a stream, or the deadline passes, or
   * the connection ends. Polls the engine (it reports no event when the peer
   * acknowledges), every half RTT between 1 and 50 ms.
   */
  private async drainStreams(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs
    // Writes and writer.close() the application issued in this turn reach the streams first.
    await new Promise<void>((resolve) => setImmediate(resolve))
    for (;;) {
      if (this.closeInfo !== null || this.closing) return
      let pending = false
      for (const stream of this.streams.values()) {
        // From now on an idle stream refuses writes; a busy one (a write waiting for credit)
        // goes on with what its writer queued, and its held last byte goes out now.
        if (stream.prepareForClose()) pending = true
      }
      if (!pending) pending = !this.finishedAcknowledged()
      if (!pending || performance.now() >= deadline) return
      const rttMs = this.engine.stats(this.handle).rttMs
      const waitMs = Math.max(1, Math.min(50, rttMs / 2, deadline - performance.now()))
      await new Promise<void>((resolve) => setTimeout(resolve, waitMs))
    }
  }

  /**
   * True when every finished stream a graceful close waits for is complete in
   * the engine (all bytes and the FIN acknowledged). Bidirectional streams whose
   * readable side is still open are skipped: the engine reports a stream
   * complete only once both directions are. quiche 0.18 never retransmits a
   * lost FIN-only STREAM frame, so such a stream would never complete: the
   * stream keeps its last byte back to carry the FIN (see QuicStream.write),
   * which leaves only empty streams exposed; the timeout bounds those.
   */
  private finishedAcknowledged(): boolean {
    for (const id of this.finished) {
      const stream = this.streams.get(id)
      if (stream !== undefined && !stream.readEnded) continue
      if (!this.engine.streamComplete(this.handle, id)) return false
      this.finished.delete(id)
    }
    return true
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
    let err: Error
    if (ci.idleTimeout) err = new StoqIdleTimeoutError(ci)
    else if (info.offeredVersions !== undefined) err = new StoqVersionNegotiationError(info.offeredVersions, ci)
    else if (!ci.app && ci.code >= CRYPTO_ERROR_START && ci.code <= CRYPTO_ERROR_END) err = tlsError(ci)
    else if (!ci.app && ci.code === CONNECTION_REFUSED && ci.remote) err = new StoqConnectionRefusedError(ci)
    else err = new StoqConnectionClosedError(ci)
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
    const base: ConnectionStatsSnapshot = this.closeInfo
      ? (this.lastStats ?? emptyStats())
      : (this.lastStats = this.engine.stats(this.handle))
    return {
      ...base,
      resumed: base.resumed ?? false,
      earlyData: base.earlyData ?? 'none',
      durationMs: performance.now() - this.startedAt,
      handshakeMs: this.handshakeMs,
      streamsOpen: this.streams.size,
      ...this.counters,
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

/** A connection's statistics before the engine reported any. */
export function emptyStats(): ConnectionStatsSnapshot {
  return {
    packetsSent: 0,
    packetsReceived: 0,
    packetsLost: 0,
    packetsRetransmitted: 0,
    bytesSent: 0,
    bytesReceived: 0,
    bytesLost: 0,
    rttMs: 0,
    cwndBytes: 0,
    deliveryRateBps: 0,
    pathMtu: 0,
    peerMaxDatagramFrameSize: 0,
    pathChanges: 0,
    resumed: false,
    earlyData: 'none',
  }
}
