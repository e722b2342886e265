import { EventEmitter } from 'node:events'
import { isOptions, show, timeoutArg } from './args.js'
import { ReadableStream, type ReadableStreamDefaultController, type WritableStreamDefaultWriter } from 'node:stream/web'
import {
  WT_BUFFERED_STREAM_REJECTED,
  WT_SESSION_GONE,
  encodeCloseWebTransportSession,
  encodeDataFrame,
  encodeHttpDatagram,
  encodeWebTransportBidiPreface,
  encodeWebTransportUniPreface,
  type Capsule,
  type FieldLine,
} from '@stoq/h3'
import { StoqClosedError, StoqInvalidArgumentError, checkOptions, signalOption } from '@stoq/interface'
import type { QuicConnection, QuicStream } from '@stoq/transport-core'
import { WebTransportStream, type ByteReader } from './stream.js'
import { ignoreRejection } from './ignore.js'

/** How a session ended. */
export interface WebTransportCloseInfo {
  /** WebTransport application error code (0 when none was given). */
  code: number
  reason: string
  /** True when the peer closed the session (or its connection went away). */
  remote: boolean
}

export interface SessionEvents {
  /** The peer opened a stream (preface stripped). */
  stream: [WebTransportStream]
  /** An HTTP/3 datagram for this session arrived (payload only). */
  datagram: [Uint8Array]
  /** The peer asked to drain the session (DRAIN_WEBTRANSPORT_SESSION). */
  draining: []
  close: [WebTransportCloseInfo]
}

/** What a session needs from its HTTP/3 connection. */
export interface SessionHost {
  readonly quic: QuicConnection
  sessionEnded(session: WebTransportSession): void
}

export interface SessionInit {
  side: 'client' | 'server'
  connectStream: QuicStream
  writer: WritableStreamDefaultWriter<Uint8Array>
  path: string
  authority: string
  origin: string | undefined
  headers: FieldLine[]
  /** Incoming streams queued for `incomingStreams` while no 'stream' listener is attached. */
  maxQueuedStreams: number
}

const encoder = new TextEncoder()

/**
 * A WebTransport session: an extended CONNECT stream and the streams and
 * datagrams bound to it. Its API mirrors a STOQ `QuicConnection` so that one
 * handler serves STOQ and WebTransport clients: `openStream`, 'stream',
 * `sendDatagram`, 'datagram', `close`, `closed`.
 *
 * It is its streams' StreamOwner (checked in `new WebTransportStream(…, this, …)`); those members
 * are internal (left out of the published declarations), so the class does not name the interface.
 */
export class WebTransportSession extends EventEmitter<SessionEvents> {
  /** The session ID: the CONNECT stream's ID. */
  readonly id: number
  readonly side: 'client' | 'server'
  /** `:path` of the CONNECT request (with its query). */
  readonly path: string
  /** `:authority` of the CONNECT request. */
  readonly authority: string
  /** The request's `origin` field (browsers always send it). */
  readonly origin: string | undefined
  /** Regular fields of the request (server side) or of the response (client side). */
  readonly headers: FieldLine[]
  /** Resolves once the session has ended. Never rejects. */
  readonly closed: Promise<WebTransportCloseInfo>
  /** Peer streams, for readers who prefer pulling to the 'stream' event (bounded; overflow is refused). */
  readonly incomingStreams: ReadableStream<WebTransportStream>

  readonly #host: SessionHost
  readonly #connectStream: QuicStream
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>
  readonly #streams = new Set<WebTransportStream>()
  readonly #datagramPrefixLength: number
  #incoming: ReadableStreamDefaultController<WebTransportStream> | null = null
  /** Peer streams nobody took yet (no 'stream' listener, no pending read of `incomingStreams`). */
  readonly #unclaimed: WebTransportStream[] = []
  /** `incomingStreams` has a read waiting for a stream. */
  #pullPending = false
  #claimScheduled = false
  readonly #maxQueuedStreams: number
  #closeInfo: WebTransportCloseInfo | null = null
  #resolveClosed!: (info: WebTransportCloseInfo) => void
  #sendClosed = false
  #connectEnded = false
  #connectEndWaiters: Array<() => void> = []

  constructor(host: SessionHost, init: SessionInit) {
    // Built by WebTransportConnection; checked for direct callers.
    if (!isOptions(host) || !isOptions(host.quic))
      throw new StoqInvalidArgumentError('host', `expected the session's WebTransportConnection, got ${show(host)}`)
    if (!isOptions(init) || !isOptions(init.connectStream) || !isOptions(init.writer)) {
      throw new StoqInvalidArgumentError('init', `expected { connectStream, writer, side, path, ... }, got ${show(init)}`)
    }
    super()
    this.#host = host
    this.#connectStream = init.connectStream
    this.#writer = init.writer
    this.id = init.connectStream.id
    this.side = init.side
    this.path = init.path
    this.authority = init.authority
    this.origin = init.origin
    this.headers = init.headers
    this.#datagramPrefixLength = encodeHttpDatagram(this.id, new Uint8Array(0)).length
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve
    })
    this.#maxQueuedStreams = init.maxQueuedStreams
    // One queue behind both ways of receiving: a stream goes to a pending read of
    // incomingStreams, else to the 'stream' listeners, else it waits for the first of them.
    this.incomingStreams = new ReadableStream<WebTransportStream>(
      {
        start: (controller) => {
          this.#incoming = controller
        },
        pull: (controller) => {
          const next = this.#unclaimed.shift()
          if (next !== undefined) controller.enqueue(next)
          else this.#pullPending = true
        },
      },
      { highWaterMark: 0 },
    )
    ;(this as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event !== 'stream' || this.#unclaimed.length === 0 || this.#claimScheduled) return
      this.#claimScheduled = true
      queueMicrotask(() => {
        this.#claimScheduled = false
        while (this.#unclaimed.length > 0 && this.listenerCount('stream') > 0) this.emit('stream', this.#unclaimed.shift()!)
      })
    })
  }

  /** The QUIC connection carrying this session (shared with other sessions). */
  get connection(): QuicConnection {
    return this.#host.quic
  }

  get isClosed(): boolean {
    return this.#closeInfo !== null
  }

  /** Largest datagram payload `sendDatagram` can send now, or -1 without datagram support. */
  get maxDatagramSize(): number {
    const max = this.#host.quic.maxDatagramSize
    return max < 0 ? -1 : Math.max(0, max - this.#datagramPrefixLength)
  }

  /** Streams of this session not finished yet. */
  get streamsOpen(): number {
    return this.#streams.size
  }

  #assertOpen(): void {
    if (this.#closeInfo !== null) {
      throw new StoqClosedError('session', `WebTransport session ${this.id} is closed${this.#closeInfo.reason ? `: ${this.#closeInfo.reason}` : ''}`)
    }
  }

  /**
   * Open a stream on this session: bidirectional by default, send-only with
   * `{ unidirectional: true }`. The preface goes out ahead of the first bytes
   * written. Throws `StoqStreamLimitError` at the peer's stream limit.
   */
  openStream(options: { unidirectional?: boolean } = {}): WebTransportStream {
    checkOptions(options, ['unidirectional'])
    if (options.unidirectional !== undefined && typeof options.unidirectional !== 'boolean') {
      throw new StoqInvalidArgumentError('unidirectional', `expected a boolean, got ${show(options.unidirectional)}`)
    }
    this.#assertOpen()
    const uni = options.unidirectional === true
    const qs = this.#host.quic.openStream({ unidirectional: uni })
    const preface = uni ? encodeWebTransportUniPreface(this.id) : encodeWebTransportBidiPreface(this.id)
    const reader = qs.readable === null ? null : qs.readable.getReader()
    const stream = new WebTransportStream(qs, this, reader, new Uint8Array(0), preface)
    this.#streams.add(stream)
    return stream
  }

  /**
   * Send an HTTP/3 datagram on this session. Returns false when the send
   * queue is full (dropped). Throws like `QuicConnection.sendDatagram`.
   */
  sendDatagram(data: Uint8Array | string): boolean {
    this.#assertOpen()
    const bytes = typeof data === 'string' ? encoder.encode(data) : data
    if (!(bytes instanceof Uint8Array)) throw new StoqInvalidArgumentError('data', 'expected a Uint8Array or string')
    return this.#host.quic.sendDatagram(encodeHttpDatagram(this.id, bytes))
  }

  /**
   * Close the session: CLOSE_WEBTRANSPORT_SESSION with `code` (32 bits) and
   * `reason` (at most 1024 bytes of UTF-8) on the CONNECT stream, then its FIN;
   * the session's streams are reset. Resolves with the close info once the
   * peer finished the CONNECT stream too, after `timeoutMs` (default 2 s), or when `signal`
   * aborts (the close itself is done at once; only the wait for the peer ends early).
   */
  async close(options: { code?: number; reason?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WebTransportCloseInfo> {
    checkOptions(options, ['code', 'reason', 'timeoutMs', 'signal'])
    const signal = signalOption('signal', options.signal)
    const code = options.code ?? 0
    const reason = options.reason ?? ''
    const timeoutMs = options.timeoutMs ?? 2000
    if (typeof reason !== 'string') throw new StoqInvalidArgumentError('reason', 'expected a string')
    timeoutArg('timeoutMs', timeoutMs)
    const capsule = encodeCloseWebTransportSession(code, reason) // validates code and reason
    if (this.#closeInfo !== null) return this.#closeInfo
    const info: WebTransportCloseInfo = { code, reason, remote: false }
    this.#sendFinal(capsule)
    this.#finish(info)
    await this.waitConnectEnd(timeoutMs, signal)
    return info
  }

  #sendFinal(capsule: Uint8Array | null): void {
    if (this.#sendClosed) return
    this.#sendClosed = true
    if (this.#host.quic.isClosed) return
    if (capsule !== null) this.#writer.write(encodeDataFrame(capsule)).catch(ignoreRejection) // the session is closing; a send side the peer already reset makes this reject
    this.#writer.close().catch(ignoreRejection) // the session is closing; a send side the peer already reset makes this reject
  }

  /** @internal resolves once the peer finished the CONNECT stream (or the connection ended), or after `timeoutMs`. */
  waitConnectEnd(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.#connectEnded || this.#host.quic.isClosed || timeoutMs === 0 || signal?.aborted) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs)
      const onClose = (): void => done()
      signal?.addEventListener('abort', done, { once: true })
      function done(): void {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      this.#connectEndWaiters.push(onClose)
    })
  }

  /** Marks the session closed: resets its streams, settles `closed`, emits 'close'. */
  #finish(info: WebTransportCloseInfo): void {
    if (this.#closeInfo !== null) return
    this.#closeInfo = info
    const alive = !this.#host.quic.isClosed
    for (const s of this.#streams) {
      if (alive) s.abandon(WT_SESSION_GONE)
    }
    this.#streams.clear()
    this.#unclaimed.length = 0
    try {
      this.#incoming?.close()
    } catch {
      // Already closed.
    }
    this.#host.sessionEnded(this)
    this.#resolveClosed(info)
    this.emit('close', info)
  }

  // --- called by the HTTP/3 connection ---------------------------------------

  /** @internal */
  streamDone(stream: WebTransportStream): void {
    this.#streams.delete(stream)
  }

  /** @internal a peer stream bound to this session. */
  deliverStream(qs: QuicStream, reader: ByteReader, rest: Uint8Array): void {
    if (this.#closeInfo !== null) {
      qs.reset(WT_SESSION_GONE)
      qs.stopSending(WT_SESSION_GONE)
      return
    }
    const stream = new WebTransportStream(qs, this, reader, rest, null)
    const c = this.#incoming
    if (this.#pullPending && c !== null) {
      this.#pullPending = false
      this.#streams.add(stream)
      c.enqueue(stream)
      return
    }
    if (this.#unclaimed.length === 0 && this.listenerCount('stream') > 0) {
      this.#streams.add(stream)
      this.emit('stream', stream)
      return
    }
    if (this.#unclaimed.length < this.#maxQueuedStreams) {
      this.#streams.add(stream)
      this.#unclaimed.push(stream)
      return
    }
    stream.abandon(WT_BUFFERED_STREAM_REJECTED)
  }

  /** @internal */
  deliverDatagram(payload: Uint8Array): void {
    if (this.#closeInfo === null) this.emit('datagram', payload)
  }

  /** @internal a capsule on the CONNECT stream. */
  onCapsule(capsule: Capsule): void {
    switch (capsule.kind) {
      case 'close_webtransport_session':
        this.#finish({ code: capsule.code, reason: capsule.reason, remote: true })
        this.#sendFinal(null)
        break
      case 'datagram':
        this.deliverDatagram(capsule.payload)
        break
      case 'drain_webtransport_session':
        if (this.#closeInfo === null) this.emit('draining')
        break
    }
  }

  /** @internal the peer finished (err null) or broke off the CONNECT stream. */
  onConnectStreamEnd(err: Error | null): void {
    this.#connectEnded = true
    const waiters = this.#connectEndWaiters
    this.#connectEndWaiters = []
    for (const w of waiters) w()
    if (this.#closeInfo === null) {
      this.#finish({ code: 0, reason: err === null ? '' : err.message, remote: true })
    }
    if (err === null) this.#sendFinal(null)
    else if (!this.#host.quic.isClosed) this.#connectStream.reset(WT_SESSION_GONE)
  }

  /** @internal the connection went away. */
  onConnectionClosed(reason: string): void {
    this.#connectEnded = true
    const waiters = this.#connectEndWaiters
    this.#connectEndWaiters = []
    for (const w of waiters) w()
    this.#sendClosed = true
    this.#finish({ code: 0, reason, remote: true })
  }
}
