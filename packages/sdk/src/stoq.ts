import path from 'node:path'
import {
  createEndpoint,
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
import { parseTarget, type ConnectTarget } from './target.js'
import { KnownHosts, appConfigDir, loadOrCreateIdentity, type AppIdentity, type IdentityOptions } from './identity.js'
import { fingerprintDer } from '@stoq/transport-core'
import { ConnectionPool, poolKey, type PoolOptions, type PoolStats } from './pool.js'
import { Multiplexer, validateMultiplexOptions, type MultiplexStrategy } from './multiplex.js'

export interface StoqOptions {
  /** Options for every endpoint this instance creates (bind address, transport parameters...). */
  endpoint: Partial<Omit<EndpointOptions, 'server' | 'port'>>
  /** Replace a layer (engine, UDP I/O, pool, batcher) with your own factory. */
  components: Partial<EndpointComponents>
  /** Where and how the app's own identity is kept (used when `listen` gets no cert/key). */
  identity: Partial<IdentityOptions>
  /** Connection pooling: reuse of live connections by `connect`. */
  pool: Partial<PoolOptions>
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
}

export interface ListenHandlers {
  /** Server identity (PEM). Default: the app's own identity, created on first use. */
  cert?: ServerOptions['cert']
  key?: ServerOptions['key']
  alpn?: string[]
  retry?: boolean
  maxConnections?: number
  onConnection?: (conn: QuicConnection) => void
  onStream?: (stream: QuicStream, conn: QuicConnection) => void
  onDatagram?: (data: Uint8Array, conn: QuicConnection) => void
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
  private closed = false
  /** Live connections, and the payload totals of those that ended (so totals never go back). */
  private readonly live = new Set<QuicConnection>()
  private endedRead = 0
  private endedWritten = 0
  private readonly series = new ThroughputSeries()

  private readonly pool: ConnectionPool

  private constructor(name: string, options: StoqOptions) {
    this.name = name
    this.options = options
    this.pool = new ConnectionPool(options.pool)
  }

  /** `const stoq = await Stoq.create('my-app')`. */
  static async create(name: string, options: Partial<StoqOptions> = {}): Promise<Stoq> {
    if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(name)) {
      throw new StoqInvalidArgumentError('name', 'expected 1-64 characters of letters, digits, ".", "_" or "-"')
    }
    if (typeof options !== 'object' || options === null) throw new StoqInvalidArgumentError('options', 'expected an object')
    return new Stoq(name, {
      endpoint: options.endpoint ?? {},
      components: options.components ?? {},
      identity: options.identity ?? {},
      pool: options.pool ?? {},
    })
  }

  private assertOpen(): void {
    if (this.closed) throw new StoqClosedError('stoq', `STOQ instance "${this.name}" is closed`)
  }

  /** Accept connections on `port` (or `{ host, port }`). Resolves with the bound endpoint. */
  async listen(port: number | { host: string; port: number }, handlers: ListenHandlers): Promise<Endpoint> {
    this.assertOpen()
    if (typeof handlers !== 'object' || handlers === null) throw new StoqInvalidArgumentError('handlers', 'expected an object with cert and key')
    const where = typeof port === 'number' ? { port } : port
    if ((handlers.cert === undefined) !== (handlers.key === undefined)) {
      throw new StoqInvalidArgumentError('handlers.cert', '`cert` and `key` must be given together (or neither, for the app identity)')
    }
    const own = handlers.cert === undefined ? await this.identity() : null
    const server: ServerOptions = {
      cert: own ? own.cert : handlers.cert!,
      key: own ? own.key : handlers.key!,
      ...(handlers.alpn ? { alpn: handlers.alpn } : {}),
      ...(handlers.retry !== undefined ? { retry: handlers.retry } : {}),
      ...(handlers.maxConnections !== undefined ? { maxConnections: handlers.maxConnections } : {}),
    }
    const ep = await createEndpoint({ ...this.options.endpoint, ...where, server }, this.options.components)
    this.endpoints.add(ep)
    ep.on('connection', (conn) => {
      this.track(conn)
      if (handlers.onStream) conn.on('stream', (s) => handlers.onStream!(s, conn))
      if (handlers.onDatagram) conn.on('datagram', (d) => handlers.onDatagram!(d, conn))
      handlers.onConnection?.(conn)
    })
    return ep
  }

  private identityPromise: Promise<AppIdentity> | null = null

  /** This app's identity (created and stored on first use, rotated before expiry). */
  identity(): Promise<AppIdentity> {
    this.identityPromise ??= loadOrCreateIdentity(this.name, this.options.identity)
    this.identityPromise.catch(() => {
      this.identityPromise = null
    })
    return this.identityPromise
  }

  /** Connect to `host:port`, `[v6]:port`, a stoq:// URL or `{ host, port }`. */
  async connect(target: ConnectTarget, options: StoqConnectOptions = {}): Promise<QuicConnection> {
    this.assertOpen()
    const { host, port } = parseTarget(target)
    const { trust, ...rest } = options
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
    const { reuse, ...connectOptions } = rest
    if (reuse === false) return this.open(host, port, connectOptions)
    return this.pool.acquire(poolKey(host, port, connectOptions as Record<string, unknown>), () =>
      this.open(host, port, connectOptions),
    )
  }

  /** A new connection from this instance's client endpoint. */
  private async open(host: string, port: number, options: Omit<ConnectOptions, 'host' | 'port'>): Promise<QuicConnection> {
    if (this.client === null) {
      this.client = createEndpoint(this.options.endpoint, this.options.components).then((ep) => {
        this.endpoints.add(ep)
        return ep
      })
      this.client.catch(() => {
        this.client = null
      })
    }
    const ep = await this.client
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
    const { connections, strategy, ...connectOptions } = options
    const checked = validateMultiplexOptions(connections, strategy)
    const dial = (): Promise<QuicConnection> => this.connect(target, { ...connectOptions, reuse: false })
    const conns = await Promise.all(Array.from({ length: checked.connections }, dial))
    return new Multiplexer(dial, conns, checked.strategy)
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
      engine: null,
      engineChoice: null,
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
    await Promise.all([...this.endpoints].map((ep) => ep.close()))
    this.endpoints.clear()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
