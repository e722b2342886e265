import path from 'node:path'
import {
  CONNECT_OPTION_KEYS,
  ENDPOINT_OPTION_KEYS,
  TRANSPORT_OPTION_KEYS,
  createEndpoint,
  DEFAULT_ALPN,
  StoqClosedError,
  StoqInvalidArgumentError,
  type ConnectOptions,
  type Endpoint,
  type EndpointComponents,
  type EndpointOptions,
  type QuicConnection,
  type QuicStream,
  type ServerOptions,
} from '@stoq/transport-core'
import { ThroughputSeries } from '@stoq/monitoring'
import { checkOptions, optionKeys, raceAbort } from '@stoq/interface'
import { parseTarget, type ConnectTarget } from './target.js'
import {
  KnownHosts,
  appConfigDir,
  DEFAULT_BROWSER_CERT_RENEW_BEFORE_DAYS,
  loadOrCreateBrowserCertificate,
  loadOrCreateIdentity,
  resolveBrowserCertificateOptions,
  resolveIdentityOptions,
  type AppIdentity,
  type BrowserCertificate,
  type BrowserCertificateOptions,
  type IdentityOptions,
} from './identity.js'
import { H3_ALPN, serveWebTransport, type WebTransportServer, type WebTransportServerOptions, type WebTransportSession } from '@stoq/webtransport'
import { fingerprintDer } from '@stoq/transport-core'
import { ignoreRejection } from './ignore.js'
import { ConnectionPool, poolKey, type PoolOptions, type PoolStats } from './pool.js'
import { batching } from '@stoq/batching'
import { classifyTier, tierProfile, NETWORK_TIERS, type NetworkTier, type TierProfile } from './tiers.js'
import { Multiplexer, validateMultiplexOptions, type MultiplexStrategy } from './multiplex.js'

export interface StoqOptions {
  /** Options for every endpoint this instance creates (bind address, transport parameters...). */
  endpoint: Partial<Omit<EndpointOptions, 'server' | 'port'>>
  /** Replace a layer (engine, UDP I/O, pool, batcher) with your own factory. */
  components: Partial<EndpointComponents>
  /** Where and how the app's own identity is kept (used when `listen` gets no cert/key). */
  identity: Partial<IdentityOptions>
  /**
   * The short-lived browser certificate served when `listen` gets `webtransport`
   * and no cert/key (stored in `identity.dir`): validity (1..14 days, default
   * 13), rotation margin (default 2 days), extra DNS names and the IPs.
   */
  browserCertificate: Partial<Omit<BrowserCertificateOptions, 'dir'>>
  /** Connection pooling: reuse of live connections by `connect`. */
  pool: Partial<PoolOptions>
  /**
   * Network tier: `auto` (default) classifies the path from measured throughput (the
   * per-second series, or `probe()`) and applies that tier's profile to endpoints created
   * afterwards; a tier name applies its profile from the start.
   */
  tier: 'auto' | NetworkTier
}

export interface TierState {
  /** Current tier, or null in `auto` mode before anything was measured. */
  tier: NetworkTier | null
  /** Where it comes from: the `tier` option, the throughput series, or `probe()`. */
  source: 'configured' | 'measured' | 'probe' | null
  /** Throughput the classification used (Gbit/s), null when configured. */
  gbps: number | null
  /** The profile endpoints created from now on get (null: STOQ's defaults). */
  profile: TierProfile | null
}

export interface StoqConnectOptions extends Omit<ConnectOptions, 'host' | 'port'> {
  /**
   * `tofu`: trust on first use. The first certificate seen for this host:port
   * is recorded in the app's known-hosts file; a different one later fails
   * with STOQ_ERR_CERT_PIN. Used when no `ca`, `pin` or `insecure` is given.
   */
  trust?: 'tofu'
  /** Reuse a live pooled connection with the same peer and options (default true). */
  reuse?: boolean
  /**
   * Abort the connect (STOQ_ERR_ABORTED). With `reuse: false` the half-made connection is
   * closed; a pooled connect (the default) stops waiting, and a handshake it started goes on
   * for the pool (other callers may share it), bounded by `handshakeTimeoutMs`.
   */
  signal?: AbortSignal
}

/** WebTransport on a `listen` port: browsers (and `connectWebTransport`) reach it over HTTP/3. */
export interface ListenWebTransportOptions {
  /** Paths served (a string matches the path without query; a RegExp is tested on the whole path). Default: every path. Others get 404. */
  path?: string | RegExp
  /**
   * Called with each accepted session. A session offers what a native
   * connection does: `openStream()`, 'stream' events, `sendDatagram()`,
   * 'datagram' events, `close()` and `closed`.
   */
  onSession: (session: WebTransportSession) => void
  /** Decide per request after `path`: return 200 to accept, another HTTP status to refuse. */
  accept?: WebTransportServerOptions['accept']
  /** Per-connection WebTransport limits (sessions, buffered streams...). */
  limits?: WebTransportServerOptions['limits']
}

const WEBTRANSPORT_KEYS = optionKeys<ListenWebTransportOptions>({ path: true, onSession: true, accept: true, limits: true })

/** The keys of the connect options: the endpoint's (but host and port, which the target gives) and the SDK's own. */
const CONNECT_KEYS = [...CONNECT_OPTION_KEYS.filter((k) => k !== 'host' && k !== 'port'), 'trust', 'reuse'] as const
const PROBE_KEYS = [...CONNECT_KEYS, 'bytes'] as const
const MULTIPLEX_KEYS = [...CONNECT_KEYS.filter((k) => k !== 'trust' && k !== 'reuse'), 'connections', 'strategy'] as const
/** `endpoint` of `Stoq.create`: every endpoint option but `server` and `port` (given by `listen`). */
const STOQ_ENDPOINT_KEYS = ENDPOINT_OPTION_KEYS.filter((k) => k !== 'server' && k !== 'port')
const STOQ_KEYS = optionKeys<StoqOptions>({ endpoint: true, components: true, identity: true, browserCertificate: true, pool: true, tier: true })
const COMPONENT_KEYS = optionKeys<EndpointComponents>({ engine: true, udp: true, pool: true, batcher: true, metrics: true, throughputSampleMs: true })
const LISTEN_KEYS = optionKeys<ListenHandlers>({
  cert: true,
  key: true,
  alpn: true,
  retry: true,
  maxConnections: true,
  earlyData: true,
  onConnection: true,
  onStream: true,
  onDatagram: true,
  webtransport: true,
})

function isOptionsObject(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** `options` of connect/probe/multiplex: undefined or a plain object of the accepted keys. */
function connectOptionsArg<T>(options: T | undefined, accepted: readonly string[]): T {
  if (options === undefined) return {} as T
  return checkOptions(options, accepted) as T
}

function checkWebTransportOptions(wt: unknown): ListenWebTransportOptions {
  const o = checkOptions(wt, WEBTRANSPORT_KEYS, 'handlers.webtransport') as ListenWebTransportOptions
  if (typeof o.onSession !== 'function') throw new StoqInvalidArgumentError('handlers.webtransport.onSession', 'expected a function')
  if (o.accept !== undefined && typeof o.accept !== 'function') throw new StoqInvalidArgumentError('handlers.webtransport.accept', 'expected a function')
  if (o.path !== undefined && !(o.path instanceof RegExp) && !(typeof o.path === 'string' && o.path.startsWith('/'))) {
    throw new StoqInvalidArgumentError('handlers.webtransport.path', `expected a string starting with "/" or a RegExp, got ${String(o.path)}`)
  }
  if (o.limits !== undefined && (typeof o.limits !== 'object' || o.limits === null)) {
    throw new StoqInvalidArgumentError('handlers.webtransport.limits', 'expected an object')
  }
  return o
}

export interface ListenHandlers {
  /**
   * Server identity (PEM). Default: the app's own identity, created on first
   * use — or, with `webtransport`, the browser certificate (see
   * `Stoq.browserCertificate`). Your own cert/key always win.
   */
  cert?: ServerOptions['cert']
  key?: ServerOptions['key']
  /** ALPN for native STOQ clients (default `['stoq/1']`); with `webtransport`, `h3` is added. */
  alpn?: string[]
  retry?: boolean
  maxConnections?: number
  /** Accept 0-RTT from resuming clients (see `ServerOptions.earlyData`: replayable). Default false. */
  earlyData?: boolean
  onConnection?: (conn: QuicConnection) => void
  onStream?: (stream: QuicStream, conn: QuicConnection) => void
  onDatagram?: (data: Uint8Array, conn: QuicConnection) => void
  /**
   * Also serve WebTransport on this port: connections that negotiate ALPN
   * `h3` carry WebTransport sessions to `webtransport.onSession`; the others
   * (`stoq/1`, or your `alpn`) still go to onConnection / onStream / onDatagram.
   */
  webtransport?: ListenWebTransportOptions
}

export interface StoqStats {
  name: string
  endpoints: number
  connections: number
  /** Stream payload the application received and sent, over every connection ever made (bytes). */
  appBytesReceived: number
  appBytesSent: number
  /** Payload throughput (received + sent) over the last sampled second, in Gbit/s (0 before the first second). */
  throughputGbps: number
  /** Average and peak of the per-second samples since the first connection. */
  averageGbps: number
  peakGbps: number
  /** Connection pool: pooled connections, reuses (hits), new handshakes (misses), evictions. */
  pool: PoolStats
  bytesSent: number
  bytesReceived: number
  packetsSent: number
  packetsReceived: number
  packetsLost: number
  /** Network tier, where the classification came from, and the tuning profile applied. */
  tier: TierState
  /** QUIC engine of this instance's endpoints (`quinn`, `quiche`), or null before the first endpoint. */
  engine: string | null
  /** Why that engine was chosen; says so when the faster engine could not load. */
  engineChoice: string | null
}

/**
 * The STOQ facade: wires the default layers (the quinn engine where it loads, else
 * quiche; the fastest UDP backend the machine proves; a shared buffer pool; the
 * batcher) and hands out connections and listeners.
 */
export class Stoq {
  readonly name: string
  private readonly options: StoqOptions
  private client: Promise<Endpoint> | null = null
  private readonly endpoints = new Set<Endpoint>()
  private readonly webTransportServers = new Set<WebTransportServer>()
  private closed = false
  /** Live connections, and the payload totals of those that ended (so totals never go back). */
  private readonly live = new Set<QuicConnection>()
  private endedRead = 0
  private endedWritten = 0
  private readonly series = new ThroughputSeries()

  private readonly pool: ConnectionPool
  private tierState: TierState = { tier: null, source: null, gbps: null, profile: null }

  private constructor(name: string, options: StoqOptions) {
    this.name = name
    this.options = options
    this.pool = new ConnectionPool(options.pool)
    if (options.tier !== 'auto') this.tierState = { tier: options.tier, source: 'configured', gbps: null, profile: tierProfile(options.tier) }
  }

  /** Endpoint options and components with the current tier profile under the user's own. */
  private endpointSetup(): { options: StoqOptions['endpoint']; components: StoqOptions['components'] } {
    const p = this.tierState.profile
    if (p === null) return { options: this.options.endpoint, components: this.options.components }
    const user = this.options.endpoint
    return {
      options: {
        socketBufferSize: p.socketBufferSize,
        poolMaxBuffers: p.poolMaxBuffers,
        ...user,
        transport: { ...p.transport, ...(user.transport ?? {}) },
      },
      components: { batcher: batching({ maxPacketsPerBatch: p.maxPacketsPerBatch }), ...this.options.components },
    }
  }

  /** Classify from a measured rate and, in auto mode, adopt that tier's profile. */
  private adoptTier(gbps: number, source: 'measured' | 'probe'): void {
    if (this.options.tier !== 'auto') return
    const tier = classifyTier(gbps)
    if (tier === this.tierState.tier && source === this.tierState.source) {
      this.tierState.gbps = gbps
      return
    }
    this.tierState = { tier, source, gbps, profile: tierProfile(tier) }
  }

  /**
   * Measure the path to `target`: send `bytes` (default 8 MiB) on one unidirectional
   * stream and time it until the peer acknowledged every byte. The peer sees that stream
   * (a STOQ server may simply cancel it). In `auto` mode the result sets the tier.
   */
  async probe(
    target: ConnectTarget,
    options: StoqConnectOptions & { bytes?: number } = {},
  ): Promise<{ gbps: number; tier: NetworkTier; profile: TierProfile }> {
    this.assertOpen()
    const { bytes = 8 * 1024 * 1024, ...connectOptions } = connectOptionsArg(options, PROBE_KEYS)
    if (!Number.isInteger(bytes) || bytes < 64 * 1024 || bytes > 1024 * 1024 * 1024) {
      throw new StoqInvalidArgumentError('bytes', 'expected an integer from 65536 to 1073741824')
    }
    const conn = await this.connect(target, connectOptions)
    const payload = new Uint8Array(bytes)
    const started = performance.now()
    await conn.send(payload, { confirm: true })
    const seconds = (performance.now() - started) / 1000
    const gbps = (bytes * 8) / seconds / 1e9
    this.adoptTier(gbps, 'probe')
    const tier = classifyTier(gbps)
    return { gbps, tier, profile: tierProfile(tier) }
  }

  /** `const stoq = await Stoq.create('my-app')`. */
  static async create(name: string, options: Partial<StoqOptions> = {}): Promise<Stoq> {
    if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(name) || name === '.' || name === '..') {
      throw new StoqInvalidArgumentError('name', 'expected 1-64 characters of letters, digits, ".", "_" or "-"')
    }
    checkOptions(options, STOQ_KEYS)
    for (const k of ['endpoint', 'components', 'identity', 'pool'] as const) {
      if (options[k] !== undefined && !isOptionsObject(options[k])) throw new StoqInvalidArgumentError(k, 'expected an object')
    }
    // Checked now, not when the first endpoint is created: a misspelt key fails at create.
    if (options.endpoint !== undefined) {
      checkOptions(options.endpoint, STOQ_ENDPOINT_KEYS, 'endpoint')
      if (options.endpoint.transport !== undefined) checkOptions(options.endpoint.transport, TRANSPORT_OPTION_KEYS, 'endpoint.transport')
    }
    if (options.components !== undefined) checkOptions(options.components, COMPONENT_KEYS, 'components')
    resolveIdentityOptions(options.identity ?? {})
    resolveBrowserCertificateOptions(options.browserCertificate ?? {})
    const tier = options.tier ?? 'auto'
    if (tier !== 'auto' && !NETWORK_TIERS.includes(tier)) {
      throw new StoqInvalidArgumentError(
        'tier',
        `expected 'auto' or one of ${NETWORK_TIERS.join(', ')}, got ${typeof tier === 'string' ? JSON.stringify(tier) : typeof tier}`,
      )
    }
    return new Stoq(name, {
      endpoint: options.endpoint ?? {},
      components: options.components ?? {},
      identity: options.identity ?? {},
      browserCertificate: options.browserCertificate ?? {},
      pool: options.pool ?? {},
      tier,
    })
  }

  private assertOpen(): void {
    if (this.closed) throw new StoqClosedError('stoq', `STOQ instance "${this.name}" is closed`)
  }

  /**
   * Accept connections on `port` (or `{ host, port }`). Resolves with the bound endpoint.
   *
   * With `handlers.webtransport`, the same port also serves WebTransport: the
   * endpoint accepts ALPN `h3` besides the native ones, `h3` connections carry
   * sessions to `webtransport.onSession`, native connections keep going to
   * the other handlers. Without cert/key it then serves the browser
   * certificate (`await stoq.browserCertificate()` gives the hash browsers
   * pass as `serverCertificateHashes`; native clients on that port pin its
   * `sha256Hex`, and it changes when rotated).
   */
  async listen(port: number | { host: string; port: number }, handlers: ListenHandlers): Promise<Endpoint> {
    this.assertOpen()
    checkOptions(handlers, LISTEN_KEYS, 'handlers')
    if (typeof port !== 'number' && !isOptionsObject(port)) {
      throw new StoqInvalidArgumentError(
        'port',
        `expected a port number or { host, port }, got ${typeof port === 'string' ? JSON.stringify(port) : typeof port}`,
      )
    }
    for (const k of ['onConnection', 'onStream', 'onDatagram'] as const) {
      if (handlers[k] !== undefined && typeof handlers[k] !== 'function') throw new StoqInvalidArgumentError(`handlers.${k}`, 'expected a function')
    }
    const where = typeof port === 'number' ? { port } : { host: port.host, port: port.port }
    if ((handlers.cert === undefined) !== (handlers.key === undefined)) {
      throw new StoqInvalidArgumentError('handlers.cert', '`cert` and `key` must be given together (or neither, for the app identity)')
    }
    const wt = handlers.webtransport === undefined ? null : checkWebTransportOptions(handlers.webtransport)
    let alpn = handlers.alpn
    if (wt !== null) {
      if (alpn !== undefined && (!Array.isArray(alpn) || alpn.length === 0)) {
        throw new StoqInvalidArgumentError('handlers.alpn', 'expected a non-empty array of protocol names')
      }
      alpn = [...(alpn ?? DEFAULT_ALPN).filter((a) => a !== H3_ALPN), H3_ALPN]
    }
    let own: { cert: string; key: string } | null = null
    if (handlers.cert === undefined) own = wt !== null ? await this.browserCertificate() : await this.identity()
    const server: ServerOptions = {
      cert: own ? own.cert : handlers.cert!,
      key: own ? own.key : handlers.key!,
      ...(alpn ? { alpn } : {}),
      ...(handlers.retry !== undefined ? { retry: handlers.retry } : {}),
      ...(handlers.maxConnections !== undefined ? { maxConnections: handlers.maxConnections } : {}),
      ...(handlers.earlyData !== undefined ? { earlyData: handlers.earlyData } : {}),
    }
    const setup = this.endpointSetup()
    // Servers use every core by default (engine workers where this machine can run them,
    // else this thread; `stats().engineChoice` says which). `endpoint.workers` overrides.
    const ep = await createEndpoint({ workers: 'auto', ...setup.options, ...where, server }, setup.components)
    if (this.closed) {
      // close() ran while the endpoint was being bound: it would outlive the instance.
      await ep.close().catch(ignoreRejection) // the instance is closed, which assertOpen() reports; a failed close adds nothing
      this.assertOpen()
    }
    this.endpoints.add(ep)
    ep.on('connection', (conn) => {
      this.track(conn)
      // h3 connections belong to the WebTransport server (it listens on the same endpoint).
      if (wt !== null && conn.alpn === H3_ALPN) return
      if (handlers.onStream) conn.on('stream', (s) => handlers.onStream!(s, conn))
      if (handlers.onDatagram) conn.on('datagram', (d) => handlers.onDatagram!(d, conn))
      handlers.onConnection?.(conn)
    })
    if (wt !== null) {
      try {
        const wts = await serveWebTransport(ep, {
          onSession: wt.onSession,
          ...(wt.path !== undefined ? { path: wt.path } : {}),
          ...(wt.accept !== undefined ? { accept: wt.accept } : {}),
          ...(wt.limits !== undefined ? { limits: wt.limits } : {}),
        })
        this.webTransportServers.add(wts)
        ep.once('close', () => this.webTransportServers.delete(wts))
      } catch (err) {
        this.endpoints.delete(ep)
        await ep.close().catch(ignoreRejection) // the WebTransport setup error is what the caller gets; a failed close adds nothing
        throw err
      }
    }
    return ep
  }

  // Private (#) so that util.inspect / console.log of a Stoq instance never shows the keys they hold.
  #browserCertPromise: Promise<BrowserCertificate> | null = null

  /**
   * This app's browser certificate: self-signed ECDSA P-256, valid for at
   * most 14 days (Chromium's rule for `serverCertificateHashes`; default 13),
   * stored in the app's config dir next to the identity (`webtransport-cert.pem`,
   * key `webtransport-key.pem` with mode 0600) and created on first use.
   * `listen` with `webtransport` and no cert/key serves it.
   *
   * Rotation: whenever it is loaded — the first call on an instance, and any
   * later call (so any later `listen`) once fewer than
   * `browserCertificate.renewBeforeDays` (default 2) days remain — a
   * certificate that close to expiry is replaced by a new one with a new hash.
   * A listener keeps the certificate it started with, so a process serving
   * longer than validity minus margin (11 days by default) should listen again.
   *
   * Give browsers `serverCertificateHashes` (or `sha256`) and native STOQ
   * clients `pin: sha256Hex`. When you pass your own cert/key to `listen`,
   * that certificate is served instead and this one is not used.
   */
  browserCertificate(): Promise<BrowserCertificate> {
    const options = { ...this.options.browserCertificate, ...(this.options.identity.dir !== undefined ? { dir: this.options.identity.dir } : {}) }
    const margin = (options.renewBeforeDays ?? DEFAULT_BROWSER_CERT_RENEW_BEFORE_DAYS) * 86_400_000
    const current = this.#browserCertPromise
    const next =
      current === null
        ? loadOrCreateBrowserCertificate(this.name, options)
        : current.then((c) => (c.notAfter.getTime() - Date.now() > margin ? c : loadOrCreateBrowserCertificate(this.name, options)))
    this.#browserCertPromise = next
    next.catch(() => {
      if (this.#browserCertPromise === next) this.#browserCertPromise = null
    })
    return next
  }

  #identityPromise: Promise<AppIdentity> | null = null

  /** This app's identity (created and stored on first use, rotated before expiry). */
  identity(): Promise<AppIdentity> {
    this.#identityPromise ??= loadOrCreateIdentity(this.name, this.options.identity)
    this.#identityPromise.catch(() => {
      this.#identityPromise = null
    })
    return this.#identityPromise
  }

  /** Connect to `host:port`, `[v6]:port`, a stoq:// URL or `{ host, port }`. */
  async connect(target: ConnectTarget, options: StoqConnectOptions = {}): Promise<QuicConnection> {
    this.assertOpen()
    const { host, port } = parseTarget(target)
    const { trust, ...rest } = connectOptionsArg(options, CONNECT_KEYS)
    if (trust === 'tofu' && rest.ca === undefined && rest.pin === undefined && !rest.insecure) {
      const known = new KnownHosts(path.join(this.options.identity.dir ?? appConfigDir(this.name), 'known_hosts.json'))
      const peer = `${host}:${port}`
      const pinned = known.get(peer)
      const conn = await this.connect(target, pinned ? { ...rest, pin: pinned } : { ...rest, insecure: true })
      if (!pinned) {
        const leaf = conn.peerCertificates[0]
        try {
          if (!leaf) throw new StoqInvalidArgumentError('trust', `${peer} presented no certificate`)
          known.remember(peer, fingerprintDer(leaf))
        } catch (err) {
          await conn.close(0x1, 'certificate not trusted')
          throw err
        }
      }
      return conn
    }
    if (trust !== undefined && trust !== 'tofu') throw new StoqInvalidArgumentError('trust', "expected 'tofu'")
    const { reuse, signal, ...connectOptions } = rest
    if (reuse === false) return this.open(host, port, signal !== undefined ? { ...connectOptions, signal } : connectOptions)
    // Pooled: the signal is not part of the key, and a shared handshake is not aborted for one caller.
    return raceAbort(
      this.pool.acquire(poolKey(host, port, connectOptions as Record<string, unknown>), () => this.open(host, port, connectOptions)),
      signal,
      'connect',
    )
  }

  /** A new connection from this instance's client endpoint. */
  private async open(host: string, port: number, options: Omit<ConnectOptions, 'host' | 'port'>): Promise<QuicConnection> {
    if (this.client === null) {
      const setup = this.endpointSetup()
      this.client = createEndpoint(setup.options, setup.components).then(async (ep) => {
        if (this.closed) {
          // close() ran while the endpoint was being bound: it would outlive the instance.
          await ep.close().catch(ignoreRejection) // the instance is closed, which assertOpen() reports; a failed close adds nothing
          this.assertOpen()
        }
        this.endpoints.add(ep)
        return ep
      })
      this.client.catch(() => {
        this.client = null
      })
    }
    const ep = await this.client
    this.assertOpen()
    const conn = await ep.connect({ ...options, host, port })
    this.track(conn)
    return conn
  }

  /**
   * N parallel connections to one peer behind one sender: messages and
   * streams go to members by `strategy`; failed members are replaced.
   */
  async multiplex(
    target: ConnectTarget,
    options: Omit<StoqConnectOptions, 'reuse' | 'trust'> & { connections?: number; strategy?: MultiplexStrategy } = {},
  ): Promise<Multiplexer> {
    this.assertOpen()
    const { connections, strategy, signal, ...connectOptions } = connectOptionsArg(options, MULTIPLEX_KEYS)
    const checked = validateMultiplexOptions(connections, strategy)
    // `signal` bounds the first connects only, not the replacements of failed members later.
    const dial = (abort?: AbortSignal): Promise<QuicConnection> =>
      this.connect(target, { ...connectOptions, reuse: false, ...(abort !== undefined ? { signal: abort } : {}) })
    const conns = await Promise.all(Array.from({ length: checked.connections }, () => dial(signal)))
    return new Multiplexer(() => dial(), conns, checked.strategy)
  }

  /** Count a connection's payload into the totals, now and after it closes. */
  private track(conn: QuicConnection): void {
    this.live.add(conn)
    conn.once('close', () => {
      this.live.delete(conn)
      this.endedRead += conn.counters.streamBytesRead
      this.endedWritten += conn.counters.streamBytesWritten
    })
    if (!this.series.sampling) this.series.start(1000, () => this.appBytes().read + this.appBytes().written)
  }

  private appBytes(): { read: number; written: number } {
    let read = this.endedRead
    let written = this.endedWritten
    for (const conn of this.live) {
      read += conn.counters.streamBytesRead
      written += conn.counters.streamBytesWritten
    }
    return { read, written }
  }

  /** Totals over every connection of every endpoint of this instance. */
  stats(): StoqStats {
    const app = this.appBytes()
    const s: StoqStats = {
      name: this.name,
      endpoints: this.endpoints.size,
      connections: 0,
      appBytesReceived: app.read,
      appBytesSent: app.written,
      throughputGbps: this.series.current()?.instantGbps ?? 0,
      averageGbps: this.series.averageGbps,
      peakGbps: this.series.peakGbps,
      pool: this.pool.stats(),
      bytesSent: 0,
      bytesReceived: 0,
      packetsSent: 0,
      packetsReceived: 0,
      packetsLost: 0,
      tier: { ...this.tierState },
      engine: null,
      engineChoice: null,
    }
    // Auto mode: the busiest second so far (a probe, when there was one, wins).
    if (this.options.tier === 'auto' && this.tierState.source !== 'probe' && this.series.peakGbps > 0) {
      this.adoptTier(this.series.peakGbps, 'measured')
      s.tier = { ...this.tierState }
    }
    for (const ep of this.endpoints) {
      if (s.engine === null) {
        const e = ep.stats()
        s.engine = e.engine
        s.engineChoice = e.engineChoice
      }
      for (const conn of ep.connections) {
        const c = conn.stats()
        s.connections++
        s.bytesSent += c.bytesSent
        s.bytesReceived += c.bytesReceived
        s.packetsSent += c.packetsSent
        s.packetsReceived += c.packetsReceived
        s.packetsLost += c.packetsLost
      }
    }
    return s
  }

  /** Close every endpoint (and their connections). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.series.stop()
    this.pool.close()
    // WebTransport sessions end with a CLOSE_WEBTRANSPORT_SESSION first, then the endpoints go.
    await Promise.all([...this.webTransportServers].map((s) => s.close().catch(ignoreRejection))) // closing down: a WebTransport server that fails to close still has its endpoint closed next
    this.webTransportServers.clear()
    await Promise.all([...this.endpoints].map((ep) => ep.close()))
    this.endpoints.clear()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
