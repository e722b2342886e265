import { EventEmitter } from 'node:events'
import { show } from './args.js'
import { StoqInvalidArgumentError, type SocketAddress, checkOptions, optionKeys, whenAborted } from '@stoq/interface'
import { Endpoint, createEndpoint, type EndpointOptions, type QuicConnection } from '@stoq/transport-core'
import type { WebTransportConnectRequest } from '@stoq/h3'
import {
  WebTransportConnection,
  drainTimeout,
  resolveLimits,
  type DrainOptions,
  type WebTransportConnectionStats,
  type WebTransportLimits,
} from './connection.js'
import type { WebTransportSession } from './session.js'
import { ignoreRejection } from './ignore.js'

/** ALPN of HTTP/3. */
export const H3_ALPN = 'h3'

export interface WebTransportServerOptions {
  /**
   * Paths served: a string matches the request path without its query, a
   * RegExp is tested against the whole `:path`. Other paths get 404. Default:
   * every path.
   */
  path?: string | RegExp
  /** Decide per request: return 200 to accept, another status to refuse. Runs after `path`. */
  accept?: (request: WebTransportConnectRequest) => number
  /** Called with each new session (attach 'stream' / 'datagram' listeners here). */
  onSession?: (session: WebTransportSession) => void
  /** Per-connection limits. */
  limits?: Partial<WebTransportLimits>
}

/** Every key `serveWebTransport` accepts. */
const SERVER_OPTION_KEYS = optionKeys<WebTransportServerOptions>({ path: true, accept: true, onSession: true, limits: true })

export interface WebTransportServerStats extends WebTransportConnectionStats {
  connections: number
}

function matcher(path: string | RegExp | undefined): (p: string) => boolean {
  if (path === undefined) return () => true
  if (path instanceof RegExp) return (p) => path.test(p)
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new StoqInvalidArgumentError('path', `expected a string starting with "/" or a RegExp, got ${show(path)}`)
  }
  return (p) => {
    const q = p.indexOf('?')
    return (q < 0 ? p : p.slice(0, q)) === path
  }
}

function isEndpoint(value: unknown): value is Endpoint {
  return (
    value instanceof Endpoint ||
    (typeof value === 'object' &&
      value !== null &&
      typeof (value as Endpoint).connect === 'function' &&
      typeof (value as Endpoint).on === 'function' &&
      'address' in value)
  )
}

/**
 * WebTransport over HTTP/3 on a STOQ endpoint. Each QUIC connection that
 * negotiated ALPN `h3` becomes a `WebTransportConnection`; its accepted
 * sessions go to `onSession` and the 'session' event.
 */
export class WebTransportServer extends EventEmitter<{ session: [WebTransportSession]; connection: [WebTransportConnection] }> {
  readonly endpoint: Endpoint
  readonly #owned: boolean
  readonly #connections = new Set<WebTransportConnection>()
  readonly #limits: WebTransportLimits
  readonly #match: (p: string) => boolean
  readonly #accept: ((r: WebTransportConnectRequest) => number) | undefined
  readonly #onSession: ((s: WebTransportSession) => void) | undefined
  readonly #onConnection = (quic: QuicConnection): void => this.#adopt(quic)
  #closed = false
  #closing: Promise<void> | null = null
  #draining: Promise<void> | null = null
  #drainDeadline = Infinity
  #totals = { sessionsOpened: 0, rejectedStreams: 0, datagramsDropped: 0 }

  private constructor(endpoint: Endpoint, owned: boolean, options: WebTransportServerOptions) {
    super()
    this.endpoint = endpoint
    this.#owned = owned
    this.#limits = resolveLimits(options.limits)
    this.#match = matcher(options.path)
    if (options.accept !== undefined && typeof options.accept !== 'function') throw new StoqInvalidArgumentError('accept', 'expected a function')
    if (options.onSession !== undefined && typeof options.onSession !== 'function') throw new StoqInvalidArgumentError('onSession', 'expected a function')
    this.#accept = options.accept
    this.#onSession = options.onSession
    endpoint.on('connection', this.#onConnection)
    for (const quic of endpoint.connections) if (quic.side === 'server' && quic.established) this.#adopt(quic)
  }

  /**
   * Serve WebTransport on `endpoint` (which must be listening with ALPN `h3`),
   * or on a new endpoint made from `options` (its `server.alpn` is set to `h3`).
   */
  static async create(endpointOrOptions: Endpoint | Partial<EndpointOptions>, options: WebTransportServerOptions = {}): Promise<WebTransportServer> {
    checkOptions(options, SERVER_OPTION_KEYS)
    // Validate before binding anything.
    if (options.accept !== undefined && typeof options.accept !== 'function') throw new StoqInvalidArgumentError('accept', 'expected a function')
    if (options.onSession !== undefined && typeof options.onSession !== 'function') throw new StoqInvalidArgumentError('onSession', 'expected a function')
    matcher(options.path)
    resolveLimits(options.limits)
    if (isEndpoint(endpointOrOptions)) return new WebTransportServer(endpointOrOptions, false, options)
    if (typeof endpointOrOptions !== 'object' || endpointOrOptions === null || endpointOrOptions.server === undefined) {
      throw new StoqInvalidArgumentError('endpoint', 'expected a STOQ Endpoint or endpoint options with `server: { cert, key }`')
    }
    const endpoint = await createEndpoint({ ...endpointOrOptions, server: { ...endpointOrOptions.server, alpn: [H3_ALPN] } })
    return new WebTransportServer(endpoint, true, options)
  }

  get address(): SocketAddress {
    return this.endpoint.address
  }

  get connections(): WebTransportConnection[] {
    return [...this.#connections]
  }

  get sessions(): WebTransportSession[] {
    return this.connections.flatMap((c) => c.sessions)
  }

  stats(): WebTransportServerStats {
    const out: WebTransportServerStats = { connections: this.#connections.size, sessions: 0, bufferedStreams: 0, ...this.#totals }
    for (const c of this.#connections) {
      const s = c.stats()
      out.sessions += s.sessions
      out.bufferedStreams += s.bufferedStreams
      out.sessionsOpened += s.sessionsOpened
      out.rejectedStreams += s.rejectedStreams
      out.datagramsDropped += s.datagramsDropped
    }
    return out
  }

  #adopt(quic: QuicConnection): void {
    if (this.#closed) return
    if (quic.alpn !== H3_ALPN) return
    const conn = new WebTransportConnection(quic, 'server', this.#limits, {
      route: (request) => {
        if (!this.#match(request.path)) return 404
        return this.#accept ? this.#accept(request) : 200
      },
      onSession: (session) => {
        this.#onSession?.(session)
        this.emit('session', session)
      },
    })
    this.#connections.add(conn)
    // A connection arriving during a drain gets GOAWAY at once and the time left.
    if (this.#draining !== null) conn.drain({ timeoutMs: this.#drainLeft() }).catch(ignoreRejection) // a drain rejects only when the connection closes, which its close event reports
    conn.on('close', () => {
      const s = conn.stats()
      this.#totals.sessionsOpened += s.sessionsOpened
      this.#totals.rejectedStreams += s.rejectedStreams
      this.#totals.datagramsDropped += s.datagramsDropped
      this.#connections.delete(conn)
    })
    this.emit('connection', conn)
  }

  /** True once `drain` was called (until the server is closed). */
  get isDraining(): boolean {
    return this.#draining !== null
  }

  /**
   * Close every session and connection at once (CONNECTION_CLOSE with
   * H3_NO_ERROR); closes the endpoint too when this server created it. Also
   * cuts short a `drain` in progress.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true
      this.endpoint.off('connection', this.#onConnection)
      await Promise.all([...this.#connections].map((c) => c.close(0x100, 'server closing')))
      if (this.#owned) await this.endpoint.close()
    })()
    return this.#closing
  }

  /**
   * Graceful shutdown (HTTP/3 GOAWAY, RFC 9114 §5.2), then `close()`.
   *
   * Every live connection gets a GOAWAY on its control stream carrying the
   * first client-initiated bidirectional stream ID it has not seen (see
   * `WebTransportConnection.goAway`): clients stop opening sessions on it
   * ('goaway' event, `openSession` fails with `StoqWebTransportError` kind
   * 'closed'), and CONNECT requests at or above that ID are reset with
   * H3_REQUEST_REJECTED. Existing sessions keep working. Each connection is
   * closed (H3_NO_ERROR) as soon as its last session has ended, or when
   * `timeoutMs` (default 10 s) has passed — sessions still open then end with
   * code 0. Connections arriving meanwhile get GOAWAY at once.
   *
   * Resolves once every connection is closed and the server is closed as by
   * `close()` (the endpoint too when this server created it). Calling it again
   * returns the same promise; a shorter `timeoutMs` brings the deadline
   * forward. `close()` during a drain closes everything at once.
   */
  drain(options?: DrainOptions): Promise<void> {
    let timeoutMs: number
    try {
      timeoutMs = drainTimeout(options)
    } catch (err) {
      return Promise.reject(err)
    }
    const draining = this.#drain(timeoutMs)
    // An abort later brings the deadline to now; the listener goes with the drain.
    const stopListening = whenAborted(options?.signal, 'drain', () => {
      this.drain({ timeoutMs: 0 }).catch(ignoreRejection) // the same drain: it resolves or rejects through the caller's promise
    })
    draining.then(stopListening, stopListening)
    return draining
  }

  #drain(timeoutMs: number): Promise<void> {
    if (this.#closing !== null) return this.#draining ?? this.#closing
    const deadline = Date.now() + timeoutMs
    if (this.#draining !== null) {
      if (deadline < this.#drainDeadline) {
        this.#drainDeadline = deadline
        for (const c of this.#connections) c.drain({ timeoutMs }).catch(ignoreRejection) // a drain rejects only when the connection closes, which its close event reports
      }
      return this.#draining
    }
    this.#drainDeadline = deadline
    this.#draining = (async () => {
      const done = new Set<WebTransportConnection>()
      for (;;) {
        const next = [...this.#connections].filter((c) => !done.has(c))
        if (next.length === 0) break
        for (const c of next) done.add(c)
        await Promise.all(next.map((c) => c.drain({ timeoutMs: this.#drainLeft() }).catch(ignoreRejection))) // a drain rejects only when the connection closes, which its close event reports
      }
      await this.close()
    })()
    return this.#draining
  }

  #drainLeft(): number {
    return Math.max(0, Math.min(2 ** 31 - 1, Math.ceil(this.#drainDeadline - Date.now())))
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** `WebTransportServer.create` as a function. */
export function serveWebTransport(
  endpointOrOptions: Endpoint | Partial<EndpointOptions>,
  options: WebTransportServerOptions = {},
): Promise<WebTransportServer> {
  return WebTransportServer.create(endpointOrOptions, options)
}
