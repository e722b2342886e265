import dns from 'node:dns/promises'
import { EventEmitter } from 'node:events'
import net from 'node:net'
import {
  StoqClosedError,
  StoqEngineError,
  StoqError,
  StoqHandshakeTimeoutError,
  StoqInvalidArgumentError,
  StoqResourceLimitError,
  StoqSocketError,
  StoqUnsupportedError,
  type BufferPool,
  type EngineCloseInfo,
  type EngineEventSink,
  type MetricHandle,
  type MetricsSink,
  type PacketBatcher,
  type PacketBatcherFactory,
  type QuicEngine,
  type QuicEngineFactory,
  type SocketAddress,
  type UdpIo,
  type UdpIoFactory,
  type UdpReceiver,
} from '@stoq/interface'
import { batching } from '@stoq/batching'
import { createBufferPool, type SharedBufferPool } from '@stoq/mempool'
import { DgramUdpIo, GsoUdpIo, UringUdpIo, WorkerUdpIo, bindToNumaNode, numaNodes, releaseFreeMemory } from '@stoq/hwaccel'
import { QuicConnection, type ConnectionOwner } from './connection.js'
import { checkAppCode, type QuicStream } from './stream.js'
import { Governor, type LimitsUsage } from './limits.js'
import { preloadQuicheEngine, quicheEngineFactory } from './engine/quiche.js'
import { quinnAvailability, quinnEngine } from '@stoq/engine-quinn'
import { DEFAULT_STREAM_READ_CHUNK } from './defaults.js'
import { WorkerEngine, droppedWorkerFlags } from './workers/cluster.js'
import type { WorkerLoad } from './workers/protocol.js'
import os from 'node:os'
import {
  resolveConnectOptions,
  resolveEndpointOptions,
  type ConnectOptions,
  type EndpointOptions,
  type EngineChoice,
  type ResolvedEndpointOptions,
} from './options.js'

/**
 * What `udpBackend: 'auto'` tries, fastest first: the worker thread with GRO
 * receive and GSO send, then GSO send on the event loop, then plain dgram.
 */
const AUTO_ORDER = ['gro', 'gso', 'dgram'] as const

function newUdpIo(backend: 'gro' | 'uring' | 'gso' | 'dgram', cpus: number[], sendSlabs: SharedArrayBuffer[]): UdpIo {
  if (backend === 'gro') return new WorkerUdpIo({ ...(cpus.length > 0 ? { cpus } : {}), sendSlabs })
  if (backend === 'uring') return new UringUdpIo(cpus.length > 0 ? { cpus } : {})
  if (backend === 'gso') return new GsoUdpIo()
  return new DgramUdpIo()
}

/** Replaceable layers of an endpoint; each defaults to STOQ's own. */
export interface EndpointComponents {
  engine: QuicEngineFactory
  udp: UdpIoFactory
  /** Pool for transmit batches; must hold buffers of at least one max-size packet. */
  pool: BufferPool
  batcher: PacketBatcherFactory
  /**
   * Where the endpoint reports its counters. A sink with a `collect(fn)` hook
   * (like @stoq/monitoring's registry) is read when scraped, at no cost on the
   * data path; any other sink is updated once per second.
   */
  metrics: MetricsSink
  /**
   * Not a layer: milliseconds between the samples of every connection's
   * `throughput`, taken by one timer shared by the endpoint's connections
   * (runs only while a connection lives, does not keep the process alive).
   * Default 1000; 0 disables the timer (call `sampleThroughput()` yourself).
   */
  throughputSampleMs: number
}

/** Default interval of the shared per-connection throughput sampler. */
const THROUGHPUT_SAMPLE_MS = 1000
/** Hand freed memory back to the kernel after this many connections closed (or none is left). */
const TRIM_AFTER_CLOSES = 256
/** ... this long after the last of them: engines keep a closed connection a few PTOs. */
const TRIM_DELAY_MS = 2000
/** CONNECTION_REFUSED reason of a connection a budget did not admit. */
const SERVER_BUSY = new TextEncoder().encode('server busy: receive budget full')

/** Handshake duration buckets in seconds: loopback (~1 ms) to slow intercontinental paths (~5 s). */
const HANDSHAKE_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** Per-connection figures of connections that have closed, kept so that the summed counters never go back. */
interface ClosedTotals {
  packetsSent: number
  packetsReceived: number
  packetsLost: number
  packetsRetransmitted: number
  bytesSent: number
  bytesReceived: number
  bytesLost: number
  streamBytesRead: number
  streamBytesWritten: number
  datagramsSent: number
  datagramsReceived: number
  datagramsDropped: number
  connections: number
}

export interface EndpointEvents {
  /** A peer connected (handshake complete). */
  connection: [QuicConnection]
  /** A socket or engine error not tied to one connection (without a listener it becomes a process warning). */
  error: [Error]
  close: []
}

export interface EndpointStats {
  connections: number
  /** Packets dropped by the engine (malformed, unknown connection, refused). */
  packetsDropped: number
  udp: ReturnType<UdpIo['stats']>
  /** Why the UDP backend in `udp.backend` was chosen. */
  udpChoice: string
  /** QUIC engine in use (`quinn`, `quiche`, or a caller's). */
  engine: string
  /** Why that engine was chosen (and why the faster one was not, when it could not load). */
  engineChoice: string
  /** Whether connections probe the path MTU (`transport.mtuDiscovery`), and why not when they do not. */
  mtuDiscovery: string
  /** NUMA placement of the packet pool (`numaNode` option): slabs and bytes bound, last result. */
  numa: { node: number | null; slabs: number; bytes: number; detail: string }
  batching: ReturnType<PacketBatcher['stats']>
  pool: ReturnType<BufferPool['stats']>
  /** Engine workers (`workers` option), as each last reported (once a second); empty on a single-thread endpoint. */
  workers: WorkerLoad[]
  /** The endpoint's budgets (`limits` option) and what is in use of each. */
  limits: LimitsUsage
  /**
   * Session tickets kept for dialled connections (`sessionCacheSize`): servers with an entry,
   * tickets held, most servers kept. Null when the engine keeps none (quiche, engine workers).
   */
  sessionCache: { servers: number; tickets: number; capacity: number } | null
}

/** Fewest CPUs at which `workers: 'auto'` starts engine workers (see `Endpoint.create`). */
const AUTO_WORKERS_MIN_CPUS = 4

/** The engine factory for an `engine` option, with the reason for the choice. */
export function selectEngine(choice: EngineChoice): { factory: QuicEngineFactory; choice: string } {
  if (choice !== 'auto' && choice !== 'quinn' && choice !== 'quiche') {
    throw new StoqInvalidArgumentError('engine', `expected 'auto', 'quinn' or 'quiche', got ${typeof choice === 'string' ? JSON.stringify(choice) : typeof choice}`)
  }
  if (choice === 'quiche') return { factory: quicheEngineFactory('engine quiche was asked for'), choice: 'engine quiche (asked for)' }
  const quinn = quinnAvailability()
  if (choice === 'quinn') {
    if (!quinn.available) throw new StoqUnsupportedError('quinn engine', `engine quinn cannot run here: ${quinn.detail}`)
    return { factory: quinnEngine(), choice: 'engine quinn (asked for)' }
  }
  if (quinn.available) return { factory: quinnEngine(), choice: 'engine auto: quinn, the faster engine, loads here' }
  const factory = quicheEngineFactory(`engine auto: quinn is unavailable (${quinn.detail}; to fix: ${quinn.fix ?? 'see `stoq doctor`'})`)
  warnQuinnUnavailable(quinn.detail, quinn.fix)
  return { factory, choice: `engine auto: quiche, because quinn is unavailable (${quinn.detail})` }
}

/** The code of the process warning `engine: 'auto'` emits when it falls back to quiche. */
export const QUINN_UNAVAILABLE_WARNING = 'STOQ_QUINN_UNAVAILABLE'
let warnedQuinnUnavailable = false

/**
 * Once per process, on stderr (process.emitWarning, so `--no-warnings` and a 'warning' listener
 * work as usual): an `auto` endpoint runs on quiche because quinn cannot load, at about half the
 * throughput and without engine workers. Not emitted when quiche was asked for.
 */
function warnQuinnUnavailable(detail: string, fix: string | null): void {
  if (warnedQuinnUnavailable) return
  warnedQuinnUnavailable = true
  process.emitWarning(
    `STOQ is using the quiche engine because the quinn engine cannot load (${detail}). quiche has about half of ` +
      `quinn's throughput and no engine workers. To fix: ${fix ?? 'see `stoq doctor`'}. ` +
      "To use quiche on purpose and silence this warning: engine: 'quiche' or STOQ_ENGINE=quiche.",
    { code: QUINN_UNAVAILABLE_WARNING },
  )
}

/**
 * A bound UDP socket that carries QUIC connections: it can accept connections
 * (when given a server identity) and dial out at the same time.
 */
export class Endpoint extends EventEmitter<EndpointEvents> implements ConnectionOwner, UdpReceiver, EngineEventSink {
  readonly engine: QuicEngine
  readonly readScratch = new Uint8Array(DEFAULT_STREAM_READ_CHUNK)
  readonly options: ResolvedEndpointOptions

  private io: UdpIo
  /** Why this UDP backend was chosen (visible in stats). */
  private udpChoice = ''
  private mtuDiscovery = 'not bound yet'
  private readonly engineChoice: string
  private readonly pool: BufferPool
  private readonly ownsPool: boolean
  private batcher!: PacketBatcher
  private local!: SocketAddress
  private readonly conns = new Map<number, QuicConnection>()
  private scheduled = false
  private timer: NodeJS.Timeout | null = null
  private timerAt = -1
  private state: 'new' | 'open' | 'closing' | 'closed' = 'new'
  private closePromise: Promise<void> | null = null

  private constructor(options: ResolvedEndpointOptions, components: Partial<EndpointComponents>, workers: WorkerEngine | null = null) {
    super()
    this.options = options
    this.governor = new Governor(options.limits)
    this.workerEngine = workers
    const sampleMs = components.throughputSampleMs ?? THROUGHPUT_SAMPLE_MS
    if (typeof sampleMs !== 'number' || !Number.isInteger(sampleMs) || sampleMs < 0 || sampleMs > 2 ** 31 - 1) {
      throw new StoqInvalidArgumentError('throughputSampleMs', `expected an integer number of ms >= 0, got ${typeof sampleMs === 'number' ? sampleMs : typeof sampleMs}`)
    }
    this.throughputSampleMs = sampleMs
    const engine = workers
      ? { factory: () => workers, choice: '' }
      : components.engine
        ? { factory: components.engine, choice: 'given by the caller' }
        : selectEngine(options.engine)
    this.engine = engine.factory({
      transport: options.transport,
      sessionCacheSize: options.sessionCacheSize,
      ...(options.keyExchange !== undefined ? { keyExchange: options.keyExchange } : {}),
    })
    this.engineChoice = engine.choice
    this.ownsPool = components.pool === undefined
    const numaNode = options.numaNode
    if (numaNode !== null && components.pool === undefined && !numaNodes().includes(numaNode)) {
      throw new StoqInvalidArgumentError('numaNode', `NUMA node ${numaNode} does not exist here (nodes: ${numaNodes().join(', ') || 'unknown'})`)
    }
    this.numa = { node: numaNode, slabs: 0, bytes: 0, detail: numaNode === null ? 'no placement asked' : 'no slab yet' }
    const onSlab =
      numaNode === null
        ? undefined
        : (slab: ArrayBufferLike): void => {
            const r = bindToNumaNode(new Uint8Array(slab), numaNode)
            if (r.ok) {
              this.numa.slabs++
              this.numa.bytes += r.bytes
            }
            this.numa.detail = r.detail
          }
    this.pool = components.pool ?? createBufferPool({ bufferSize: 65536, initialBuffers: 16, maxBuffers: options.poolMaxBuffers }, { onSlab })
    // Zero-copy sends (opt-in): the batcher fills buffers of this pool, and a worker backend
    // that maps its slabs sends them in place. share() reserves every slab up to the pool's
    // limit. On 2 cores it showed no consistent gain over the copy into the send ring (see
    // docs/ARCHITECTURE.md), so it is off by default.
    this.sendSlabs =
      options.zeroCopySend && this.ownsPool && typeof (this.pool as Partial<SharedBufferPool>).share === 'function'
        ? [...(this.pool as SharedBufferPool).share().slabs]
        : []
    this.io = workers
      ? workers.io
      : components.udp
      ? components.udp()
      : newUdpIo(options.udpBackend === 'auto' ? AUTO_ORDER[0]! : options.udpBackend, options.cpuAffinity, this.sendSlabs)
    this.udpChoice = workers ? workers.io.choice : components.udp ? 'given by the caller' : `udpBackend ${options.udpBackend}`
  }

  /** The engine of a multi-core endpoint (`workers` option), else null. */
  private readonly workerEngine: WorkerEngine | null
  /** Why a `workers: 'auto'` endpoint runs on this thread (empty otherwise). */
  private workersNote = ''

  private readonly sendSlabs: SharedArrayBuffer[]
  private readonly throughputSampleMs: number
  private throughputTimer: NodeJS.Timeout | null = null
  /** Handshake histogram of the metrics sink, observed once per established connection. */
  private handshakeHistogram: { observe(value: number): void } | null = null
  private readonly closedTotals: ClosedTotals = {
    packetsSent: 0,
    packetsReceived: 0,
    packetsLost: 0,
    packetsRetransmitted: 0,
    bytesSent: 0,
    bytesReceived: 0,
    bytesLost: 0,
    streamBytesRead: 0,
    streamBytesWritten: 0,
    datagramsSent: 0,
    datagramsReceived: 0,
    datagramsDropped: 0,
    connections: 0,
  }
  /** NUMA placement of the packet pool's slabs. */
  private readonly numa: { node: number | null; slabs: number; bytes: number; detail: string }

  /** Bind a socket and start an endpoint. */
  static async create(options?: Partial<EndpointOptions>, components: Partial<EndpointComponents> = {}): Promise<Endpoint> {
    const resolved = resolveEndpointOptions(options)
    checkComponents(components)
    await preloadQuicheEngine()
    if (resolved.workers === 0 || components.engine || components.udp) return Endpoint.open({ ...resolved, workers: 0 }, components, null)
    const auto = resolved.workers < 0
    const single = (why: string): Promise<Endpoint> =>
      Endpoint.open({ ...resolved, workers: 0 }, components, null).then((ep) => {
        ep.workersNote = why
        return ep
      })
    const backend = resolved.udpBackend
    if (backend === 'gso' || backend === 'dgram') {
      const why = `engine workers need the gro or uring backend (SO_REUSEPORT is set through koffi before bind; Node 20's dgram cannot), udpBackend is ${backend}`
      if (auto) return single(`workers auto: ${why}`)
      throw new StoqUnsupportedError('engine workers', why)
    }
    // quiche's napi binding corrupts the heap when engines run in several threads of one
    // process (glibc aborts, "corrupted size vs. prev_size", in 3 of 8 runs of 64 connections
    // over 2 workers): engine workers run quinn only.
    const quinn = quinnAvailability()
    if (resolved.engine === 'quiche' || !quinn.available) {
      const why =
        resolved.engine === 'quiche'
          ? "engine workers run the quinn engine only: quiche's napi binding corrupts memory when several threads of one process use it"
          : `engine workers need the quinn engine, which cannot load here (${quinn.detail})`
      if (auto) return single(`workers auto: ${why}`)
      throw new StoqUnsupportedError('engine workers', why)
    }
    // `auto`: each engine worker is two busy threads (its engine and its UDP socket thread), as
    // is this thread with its socket thread. On 2 CPUs, 2 workers measured 0.71x, 0.78x and
    // 0.91x of this thread's throughput with 1, 2 and 4 connections (bench:workers), so workers
    // start at 4 CPUs, one per 2 CPUs. (Where the crossover lies above 2 CPUs was not measured.)
    const cpus = os.availableParallelism()
    if (auto && cpus < AUTO_WORKERS_MIN_CPUS) {
      return single(`workers auto: ${cpus} CPU${cpus === 1 ? '' : 's'}, connections stay on this thread (engine workers pay off from ${AUTO_WORKERS_MIN_CPUS} CPUs)`)
    }
    const n = auto ? Math.floor(cpus / 2) : resolved.workers
    const workers = new WorkerEngine({
      workers: n,
      engine: 'quinn',
      udpBackend: backend === 'uring' ? 'uring' : 'gro',
      cpus: resolved.cpuAffinity,
      transport: resolved.transport,
      keyExchange: resolved.keyExchange,
      poolMaxBuffers: resolved.poolMaxBuffers,
      stallMs: resolved.limits.workerStallMs,
      sessionCacheSize: resolved.sessionCacheSize,
    })
    try {
      return await Endpoint.open(resolved, components, workers)
    } catch (err) {
      if (auto && StoqError.isInstance(err) && err.code === 'STOQ_ERR_UNSUPPORTED') return single(`workers auto: ${(err as Error).message}`)
      throw err
    }
  }

  private static async open(resolved: ResolvedEndpointOptions, components: Partial<EndpointComponents>, workers: WorkerEngine | null): Promise<Endpoint> {
    const ep = new Endpoint(resolved, components, workers)
    try {
      await ep.start(components)
    } catch (err) {
      ep.engine.destroy()
      if (ep.ownsPool) ep.pool.close()
      await ep.io.close().catch(() => {})
      throw err
    }
    return ep
  }

  private async start(components: Partial<EndpointComponents>): Promise<void> {
    const o = this.options
    const bindOptions = {
      host: o.host,
      port: o.port,
      ipv6Only: o.ipv6Only,
      sendBufferSize: o.socketBufferSize,
      receiveBufferSize: o.socketBufferSize,
    }
    // 'auto' walks AUTO_ORDER: a backend this machine cannot run (probe
    // failed, koffi missing) refuses to bind with STOQ_ERR_UNSUPPORTED.
    const skipped: string[] = []
    for (let next = 1; ; next++) {
      try {
        this.local = await this.io.bind(bindOptions, this)
        if (o.udpBackend === 'auto' && skipped.length === 0 && !components.udp && !this.workerEngine) {
          this.udpChoice = `udpBackend auto: ${this.io.backend}, the fastest backend, works here`
        }
        break
      } catch (err) {
        const unsupported = StoqError.isInstance(err) && err.code === 'STOQ_ERR_UNSUPPORTED'
        if (components.udp || this.workerEngine || o.udpBackend !== 'auto' || !unsupported || next >= AUTO_ORDER.length) throw err
        await this.io.close().catch(() => {})
        skipped.push(`${this.io.backend}: ${(err as Error).message}`)
        this.io = newUdpIo(AUTO_ORDER[next]!, o.cpuAffinity, this.sendSlabs)
        this.udpChoice = `udpBackend auto: ${skipped.join('; ')}; using ${this.io.backend}`
      }
    }
    // Path MTU discovery needs a socket that never fragments (DF): probes too large for the
    // path must be lost, not delivered in pieces.
    const df = this.io.dontFragment === true
    this.engine.setPathMtuDiscovery?.(df)
    this.mtuDiscovery = !o.transport.mtuDiscovery
      ? 'off (transport.mtuDiscovery is false): every packet is maxUdpPayloadSize'
      : this.workerEngine
        ? "decided by each engine worker's own socket: on where it sets Don't Fragment"
        : this.engine.setPathMtuDiscovery === undefined
        ? `off: engine ${this.engine.name} has no path MTU discovery; every packet is maxUdpPayloadSize`
        : !df
          ? `off: the ${this.io.backend} socket cannot set Don't Fragment; every packet is maxUdpPayloadSize`
          : `on: packets start at 1200 bytes and probe up to ${o.transport.maxUdpPayloadSize} (the socket sets Don't Fragment)`
    this.batcher = (components.batcher ?? batching())({ engine: this.engine, io: this.io, pool: this.pool })
    if (components.metrics) this.reportTo(components.metrics)
    if (o.server) {
      this.engine.listen({
        identity: { cert: o.server.cert, key: o.server.key },
        alpn: o.server.alpn,
        retry: o.server.retry,
        maxConnections: o.server.maxConnections,
        statelessReset: o.server.statelessReset,
        ...(o.server.secret !== undefined ? { secret: o.server.secret } : {}),
        ...(o.server.earlyData ? { earlyData: true } : {}),
      })
    }
    this.state = 'open'
  }

  /** The bound address (port resolved when 0 was asked). */
  get address(): SocketAddress {
    return this.local
  }

  get listening(): boolean {
    return this.state === 'open' && this.options.server !== null
  }

  /** Live connections, both accepted and dialled. */
  get connections(): QuicConnection[] {
    return [...this.conns.values()]
  }

  // -------------------------------------------------------------------------
  // Dialling

  /**
   * Open a connection; resolves when the handshake completed and the certificate was accepted,
   * or, with `earlyData` and a session ticket that allows 0-RTT, at once (see
   * `ConnectOptions.earlyData`; `conn.handshake` then says when the handshake completed).
   */
  async connect(options: ConnectOptions): Promise<QuicConnection> {
    if (this.state !== 'open') throw new StoqClosedError('endpoint')
    const o = resolveConnectOptions(options)
    const peer = await this.resolvePeer(o.host, o.port)
    if (this.state !== 'open') throw new StoqClosedError('endpoint')
    const commit = this.windowCommitment()
    if (!this.governor.commitWindow(commit.committed)) {
      const g = this.governor
      throw new StoqResourceLimitError(
        'maxReceiveWindowBytes',
        g.receiveWindowBytes,
        g.limits.maxReceiveWindowBytes,
        `Cannot open a connection: the endpoint's receive budget is full (${g.receiveWindowBytes} of ${g.limits.maxReceiveWindowBytes} bytes committed to ${this.conns.size} connections; a new one needs ${commit.committed}). Raise limits.maxReceiveWindowBytes or lower transport.initialMaxData.`,
      )
    }
    let handle: number
    try {
      handle = this.engine.connect(
      {
        peer,
        serverName: o.serverName,
        alpn: o.alpn,
        ...(o.ca !== undefined ? { ca: o.ca } : {}),
        verifyPeer: !o.insecure && o.ca !== undefined,
        ...(o.identity !== undefined ? { identity: o.identity } : {}),
        ...(o.earlyData ? { earlyData: true } : {}),
      },
      this.local,
      )
    } catch (err) {
      this.governor.receiveWindowBytes -= commit.committed
      throw err
    }
    const conn = this.newConnection(handle, 'client', peer, commit)
    conn.pins = o.pins
    conn.verifiedWithCa = !o.insecure && o.ca !== undefined
    if (o.keepAliveMs > 0) this.engine.setKeepAlive(handle, o.keepAliveMs)
    const established = new Promise<QuicConnection>((resolve, reject) => {
      const timer = setTimeout(() => {
        conn.onHandshakeSettled = null
        conn.closeNow(0, 'handshake timeout')
        this.schedule()
        reject(new StoqHandshakeTimeoutError(o.handshakeTimeoutMs))
      }, o.handshakeTimeoutMs)
      conn.onHandshakeSettled = (err) => {
        clearTimeout(timer)
        if (err) reject(err)
        else resolve(conn)
      }
      // 0-RTT keys: the connection carries data now (the timer still bounds the handshake).
      if (o.earlyData && this.engine.stats(handle).earlyData === 'pending') resolve(conn)
    })
    this.schedule()
    return established
  }

  private async resolvePeer(host: string, port: number): Promise<SocketAddress> {
    const v6Socket = this.local.family === 'IPv6'
    let address = host
    let family = net.isIP(host)
    if (family === 0) {
      let results: { address: string; family: number }[]
      try {
        results = await dns.lookup(host, { all: true, verbatim: true })
      } catch (err) {
        throw new StoqInvalidArgumentError('host', `cannot resolve ${JSON.stringify(host)}: ${(err as Error).message}`)
      }
      // IPv6 first, as the resolver orders them; skip families the socket cannot reach.
      const usable = results.filter((r) =>
        r.family === 6 ? v6Socket : !v6Socket || !this.options.ipv6Only,
      )
      const pick = usable.find((r) => r.family === 6) ?? usable[0]
      if (pick === undefined) throw new StoqInvalidArgumentError('host', `${host} has no address this endpoint can reach`)
      address = pick.address
      family = pick.family
    }
    if (family === 6 && !v6Socket) {
      throw new StoqInvalidArgumentError('host', `${address} is IPv6 but the endpoint is bound to IPv4 ${this.local.address}`)
    }
    if (family === 4 && v6Socket && this.options.ipv6Only) {
      throw new StoqInvalidArgumentError('host', `${address} is IPv4 but the endpoint is IPv6-only`)
    }
    return Object.freeze({ address, port, family: family === 6 ? 'IPv6' : 'IPv4' })
  }

  // -------------------------------------------------------------------------
  // The cycle: receive → events → transmit → timer

  schedule(): void {
    if (this.scheduled || this.state === 'closed') return
    this.scheduled = true
    setImmediate(this.run)
  }

  private readonly run = (): void => {
    this.scheduled = false
    this.process()
  }

  private readonly pendingConns = new Set<QuicConnection>()

  connectionPending(conn: QuicConnection): void {
    this.pendingConns.add(conn)
    this.schedule()
  }

  private process(): void {
    if (this.state === 'closed') return
    try {
      this.resumeDeferred()
      this.engine.drainEvents(this)
      if (this.pendingConns.size > 0) {
        // Streams may ask again for the next tick while being flushed.
        const conns = [...this.pendingConns]
        this.pendingConns.clear()
        for (const conn of conns) conn.flushStreams()
      }
      this.batcher.flush()
      if (this.refuse.length > 0) {
        for (const handle of this.refuse.splice(0)) this.engine.close(handle, false, 0x2, SERVER_BUSY)
        this.batcher.flush()
      }
      // Transmitting can close connections (e.g. after CONNECTION_CLOSE is sent).
      this.engine.drainEvents(this)
      if (this.deferred.size > 0) this.continueDeferred()
    } catch (err) {
      this.report(new StoqEngineError(this.engine.name, `endpoint cycle failed: ${(err as Error).message}`, { cause: err }))
    }
    this.armTimer()
  }

  /** Surface an error without ever crashing the process: `error` listeners, else a process warning. */
  private report(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err)
    else process.emitWarning(err)
  }

  private armTimer(): void {
    const ms = this.engine.nextTimeout()
    if (ms < 0) {
      if (this.timer) {
        clearTimeout(this.timer)
        this.timer = null
        this.timerAt = -1
      }
      return
    }
    if (ms < 1) {
      // A sub-millisecond deadline (an engine's pacer between two bursts): setTimeout
      // cannot wait less than 1 ms, which would cap a paced sender at one burst per
      // millisecond. Check again on the next turn of the event loop instead; I/O
      // callbacks still run in between.
      if (this.immediate === null) this.immediate = setImmediate(this.onImmediate)
      return
    }
    const at = performance.now() + ms
    // Keep an earlier timer; it re-arms when it fires.
    if (this.timer && this.timerAt <= at + 1) return
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(this.onTimer, Math.ceil(ms))
  }

  private readonly onTimer = (): void => {
    this.timer = null
    this.timerAt = -1
    if (this.state === 'closed') return
    this.engine.handleTimeout()
    this.process()
  }

  private immediate: NodeJS.Immediate | null = null

  private readonly onImmediate = (): void => {
    this.immediate = null
    if (this.state === 'closed') return
    this.engine.handleTimeout()
    this.process()
  }

  // UdpReceiver ---------------------------------------------------------------

  onPacket(data: Uint8Array, segmentSize: number, from: SocketAddress): void {
    try {
      this.engine.receive(data, segmentSize, from, this.local)
    } catch (err) {
      // A packet must never take the endpoint down.
      this.report(new StoqEngineError(this.engine.name, `receive failed: ${(err as Error).message}`, { cause: err }))
    }
  }

  onBatchEnd(): void {
    this.process()
  }

  onSendComplete(token: number): void {
    this.batcher?.onSendComplete(token)
  }

  onDrain(): void {
    this.batcher?.onDrain()
  }

  onError(err: Error): void {
    // Typed errors (an engine worker that died, a socket error a backend already typed) pass as they are.
    this.report(StoqError.isInstance(err) ? err : new StoqSocketError(`UDP socket error: ${err.message}`, {}, { cause: err }))
  }

  // EngineEventSink -------------------------------------------------------------

  onIncoming(handle: number, peer: SocketAddress): void {
    if (this.state !== 'open') {
      this.engine.close(handle, false, 0x2, new TextEncoder().encode('endpoint closing'))
      return
    }
    const commit = this.windowCommitment()
    if (!this.governor.commitWindow(commit.committed)) {
      // Refused with a reason the client sees (StoqConnectionRefusedError): the credit this
      // endpoint may grant is all committed to the connections it has.
      // Closed once its first flight went out: both engines send nothing for a connection
      // closed before it, and the client would only learn by its handshake timeout.
      this.governor.connectionsRefused++
      this.refuse.push(handle)
      this.schedule()
      return
    }
    const conn = this.newConnection(handle, 'server', peer, commit)
    // 0-RTT accepted (server.earlyData): announce it now, so its early data is served at once.
    if (this.options.server?.earlyData && this.engine.stats(handle).earlyData === 'accepted') {
      conn.announced = true
      this.emit('connection', conn)
    }
  }

  /** A connection admitted with `commit` of the receive budget, at its starting stream limits. */
  private newConnection(handle: number, side: 'client' | 'server', peer: SocketAddress, commit: { window: number; committed: number }): QuicConnection {
    const conn = new QuicConnection(this, handle, side, peer)
    conn.setWindow(commit.window, commit.committed)
    conn.initPeerStreamLimits()
    this.conns.set(handle, conn)
    return conn
  }

  /**
   * What a new connection takes from the receive budget: its starting window (an engine that
   * grows windows only when told to) or its largest (one that tunes its own), plus its
   * datagram receive queue.
   */
  private windowCommitment(): { window: number; committed: number } {
    const t = this.options.transport
    const dgrams = t.datagrams ? t.datagramQueueLength * t.maxUdpPayloadSize : 0
    if (this.engine.setReceiveWindow !== undefined) return { window: t.initialMaxData, committed: t.initialMaxData + dgrams }
    return { window: 0, committed: t.maxConnectionWindow + dgrams }
  }

  // Budgets: work held back from earlier turns, readers waiting for the read budget ----------

  readonly governor: Governor
  /** Incoming connections refused by a budget, closed after their first flight. */
  private readonly refuse: number[] = []
  private readonly deferred = new Set<QuicConnection>()
  private readonly starved = new Set<QuicStream>()
  /** Read budget in use when starved readers were last retried. */
  private starvedAt = 0

  connectionDeferred(conn: QuicConnection): void {
    this.deferred.add(conn)
    this.schedule()
  }

  readStarved(stream: QuicStream): void {
    if (this.starved.size === 0) this.starvedAt = this.governor.readBufferBytes
    this.starved.add(stream)
  }

  /** A turn of the event loop is under way (per-turn shares count within it). */
  private turnOpen = false
  private readonly closeTurn = (): void => {
    this.turnOpen = false
  }

  /**
   * Start of a cycle: the first cycle of an event-loop turn starts a new turn for the per-turn
   * shares (cycles run by I/O callbacks in the same turn share it: a busy peer's work then waits
   * for the next turn, after the poll phase took the packets of everyone else); then resume
   * what waited.
   */
  private resumeDeferred(): void {
    if (!this.turnOpen) {
      this.turnOpen = true
      const g = this.governor
      g.turn++
      g.handlerMs = 0
      g.handlerShareMs = Math.min(g.limits.handlerMsPerTurn, Math.max(1, performance.now() - g.handlerEndAt))
      setImmediate(this.closeTurn)
    }
    if (this.deferred.size > 0) {
      const conns = [...this.deferred]
      this.deferred.clear()
      for (const conn of conns) if (conn.resumeDeferred()) this.deferred.add(conn)
    }
    if (this.starved.size > 0 && this.governor.readBufferBytes < this.starvedAt) {
      const streams = [...this.starved]
      this.starved.clear()
      this.starvedAt = this.governor.readBufferBytes
      for (const s of streams) s.onReadable()
    }
  }

  /** End of a cycle: work held back only by this turn's share goes on next turn. */
  private continueDeferred(): void {
    for (const conn of this.deferred) {
      if (conn.deferredByTurn) {
        this.schedule()
        return
      }
    }
  }

  onEstablished(handle: number): void {
    const conn = this.conns.get(handle)
    if (!conn) return
    conn.onEstablished()
    if (conn.established) {
      this.handshakeHistogram?.observe(conn.handshakeMs / 1000)
      if (this.throughputSampleMs > 0) {
        conn.sampleThroughput(performance.now()) // the origin of its series
        if (this.throughputTimer === null) {
          this.throughputTimer = setInterval(this.onThroughputTimer, this.throughputSampleMs)
          this.throughputTimer.unref()
        }
      }
    }
    if (conn.side === 'server' && !conn.announced) {
      conn.announced = true
      this.emit('connection', conn)
    }
  }

  private readonly onThroughputTimer = (): void => {
    this.sampleThroughput()
  }

  /**
   * Take one throughput sample of every established connection at `nowMs`
   * (default now). The shared timer calls this every `throughputSampleMs`;
   * call it yourself when that is 0.
   */
  sampleThroughput(nowMs: number = performance.now()): void {
    if (typeof nowMs !== 'number' || !Number.isFinite(nowMs)) throw new StoqInvalidArgumentError('nowMs', 'expected a time from performance.now()')
    for (const conn of this.conns.values()) if (conn.established) conn.sampleThroughput(nowMs)
  }

  /** True while the shared throughput timer runs (there are live connections and sampling is on). */
  get throughputSampling(): boolean {
    return this.throughputTimer !== null
  }

  private stopThroughputTimer(): void {
    if (this.throughputTimer) clearInterval(this.throughputTimer)
    this.throughputTimer = null
  }

  onStreamReadable(handle: number, streamId: number): void {
    const conn = this.conns.get(handle)
    if (conn === undefined) return
    // 0-RTT the engine accepted after the connection's first datagram (a ClientHello in two):
    // announce the connection with its first early stream, as onIncoming does otherwise.
    if (!conn.announced && conn.side === 'server' && this.options.server?.earlyData && this.engine.stats(handle).earlyData === 'accepted') {
      conn.announced = true
      this.emit('connection', conn)
    }
    conn.onStreamReadable(streamId)
  }

  onStreamWritable(handle: number, streamId: number): void {
    this.conns.get(handle)?.onStreamWritable(streamId)
  }

  onDatagramReadable(handle: number): void {
    this.conns.get(handle)?.onDatagramReadable()
  }

  onClosed(handle: number, info: EngineCloseInfo): void {
    const conn = this.conns.get(handle)
    if (conn) conn.onClosed(info)
  }

  connectionGone(conn: QuicConnection): void {
    if (this.conns.get(conn.handle) === conn) {
      // Its last figures stay in the endpoint's totals (counters must never go back).
      const s = conn.stats()
      const t = this.closedTotals
      t.packetsSent += s.packetsSent
      t.packetsReceived += s.packetsReceived
      t.packetsLost += s.packetsLost
      t.packetsRetransmitted += s.packetsRetransmitted
      t.bytesSent += s.bytesSent
      t.bytesReceived += s.bytesReceived
      t.bytesLost += s.bytesLost
      t.streamBytesRead += s.streamBytesRead
      t.streamBytesWritten += s.streamBytesWritten
      t.datagramsSent += s.datagramsSent
      t.datagramsReceived += s.datagramsReceived
      t.datagramsDropped += s.datagramsDropped
      t.connections++
    }
    this.conns.delete(conn.handle)
    this.pendingConns.delete(conn)
    this.deferred.delete(conn)
    if (++this.closedSinceTrim >= TRIM_AFTER_CLOSES || this.conns.size === 0) this.scheduleTrim()
    if (this.conns.size === 0) this.stopThroughputTimer()
  }

  /** Connections gone since memory was last handed back (see releaseFreeMemory). */
  private closedSinceTrim = 0
  private trimTimer: NodeJS.Timeout | null = null

  /**
   * After a load went away, give the C allocator's free memory back to the kernel, once the
   * engines have dropped the closed connections (they linger a few PTOs). Every thread's arena
   * is trimmed, so this also covers engine workers.
   */
  private scheduleTrim(): void {
    // Connections whose CONNECTION_CLOSE was lost stay in the engine until their idle timeout:
    // trim again every TRIM_DELAY_MS until that has passed since the last close.
    this.trimUntil = performance.now() + this.options.transport.maxIdleTimeoutMs + 2 * TRIM_DELAY_MS
    if (this.trimTimer !== null) return
    const run = (): void => {
      this.trimTimer = null
      this.closedSinceTrim = 0
      releaseFreeMemory()
      if (performance.now() < this.trimUntil && this.state !== 'closed') {
        this.trimTimer = setTimeout(run, TRIM_DELAY_MS * 2)
        this.trimTimer.unref()
      }
    }
    this.trimTimer = setTimeout(run, TRIM_DELAY_MS)
    this.trimTimer.unref()
  }

  private trimUntil = 0

  // -------------------------------------------------------------------------

  private metricsTimer: NodeJS.Timeout | null = null

  private stopMetrics(): void {
    if (this.metricsTimer) clearInterval(this.metricsTimer)
    this.metricsTimer = null
    this.stopThroughputTimer()
    this.uncollect?.()
    this.uncollect = null
  }

  private uncollect: (() => void) | null = null

  /**
   * Mirror the endpoint's counters into a MetricsSink, labelled by local port and UDP backend.
   * Per-connection figures are summed over live connections plus those that closed;
   * RTT is averaged and the congestion window summed over live connections.
   */
  private reportTo(sink: MetricsSink): void {
    const labels = { port: String(this.local.port), backend: this.io.backend }
    const c = (name: string, help: string): MetricHandle => sink.counter(name, help, labels)
    const g = (name: string, help: string): MetricHandle => sink.gauge(name, help, labels)
    sink.gauge('stoq_endpoint_info', 'the endpoint\'s UDP backend and QUIC engine (always 1)', { ...labels, engine: this.engine.name }).set(1)
    this.handshakeHistogram = sink.histogram(
      'stoq_handshake_duration_seconds',
      'QUIC handshake duration, observed once per established connection',
      HANDSHAKE_BUCKETS_S,
      labels,
    )
    const h = {
      datagramsSent: c('stoq_udp_datagrams_sent_total', 'UDP datagrams sent'),
      datagramsReceived: c('stoq_udp_datagrams_received_total', 'UDP datagrams received'),
      bytesSent: c('stoq_udp_bytes_sent_total', 'UDP payload bytes sent'),
      bytesReceived: c('stoq_udp_bytes_received_total', 'UDP payload bytes received'),
      sendCalls: c('stoq_udp_send_calls_total', 'socket send calls made'),
      receiveCalls: c('stoq_udp_receive_calls_total', 'socket receive callbacks (buffers handed up by the backend)'),
      sendErrors: c('stoq_udp_send_errors_total', 'socket sends that failed'),
      dropped: c('stoq_packets_dropped_total', 'packets the engine dropped (malformed, unknown connection, refused)'),
      batched: c('stoq_batch_packets_total', 'packets moved by the batcher'),
      batchSyscalls: c('stoq_batch_syscalls_total', 'socket send calls the batcher made'),
      batchFlushes: c('stoq_batch_flushes_total', 'batches the batcher flushed'),
      saved: c('stoq_batch_syscalls_saved_total', 'send calls saved by batching (packets - sends)'),
      perSyscall: g('stoq_batch_packets_per_syscall', 'packets per socket send call of the batcher, since start'),
      connections: g('stoq_connections', 'live connections'),
      connectionsClosed: c('stoq_connections_closed_total', 'connections that have ended'),
      poolInUse: g('stoq_pool_buffers_in_use', 'transmit pool buffers in use'),
      poolHighWater: g('stoq_pool_buffers_in_use_high_water', 'highest number of transmit pool buffers in use at once'),
      poolCapacity: g('stoq_pool_buffers', 'transmit pool buffers owned (all slabs)'),
      poolHits: c('stoq_pool_hits_total', 'transmit pool acquisitions served from the free list'),
      poolMisses: c('stoq_pool_misses_total', 'transmit pool acquisitions that found the free list empty'),
      quicPacketsSent: c('stoq_quic_packets_sent_total', 'QUIC packets sent, over all connections'),
      quicPacketsReceived: c('stoq_quic_packets_received_total', 'QUIC packets received, over all connections'),
      quicPacketsLost: c('stoq_quic_packets_lost_total', 'QUIC packets declared lost, over all connections'),
      quicPacketsRetransmitted: c('stoq_quic_packets_retransmitted_total', 'QUIC packets retransmitted, over all connections'),
      quicBytesSent: c('stoq_quic_bytes_sent_total', 'QUIC bytes sent, over all connections'),
      quicBytesReceived: c('stoq_quic_bytes_received_total', 'QUIC bytes received, over all connections'),
      quicBytesLost: c('stoq_quic_bytes_lost_total', 'QUIC bytes declared lost, over all connections'),
      streamBytesWritten: c('stoq_stream_bytes_written_total', 'stream payload bytes the application wrote (accepted by the engine)'),
      streamBytesRead: c('stoq_stream_bytes_read_total', 'stream payload bytes delivered to the application'),
      quicDatagramsSent: c('stoq_quic_datagrams_sent_total', 'QUIC DATAGRAM frames the application sent'),
      quicDatagramsReceived: c('stoq_quic_datagrams_received_total', 'QUIC DATAGRAM frames delivered to the application'),
      quicDatagramsDropped: c('stoq_quic_datagrams_dropped_total', 'QUIC DATAGRAM frames refused because the send queue was full'),
      streamsOpen: g('stoq_streams_open', 'open streams over all live connections'),
      rtt: g('stoq_rtt_seconds', 'smoothed RTT, mean over live connections (0 without one)'),
      rttMax: g('stoq_rtt_max_seconds', 'smoothed RTT, highest over live connections (0 without one)'),
      cwnd: g('stoq_congestion_window_bytes', 'congestion window, summed over live connections'),
      throughput: g('stoq_payload_throughput_gbps', 'stream payload Gbit/s (both ways) over the latest sample interval, summed over live connections'),
      throughputPeak: g('stoq_payload_throughput_peak_gbps', 'highest per-connection payload Gbit/s of a sample interval, over live connections'),
      limitStreams: g('stoq_limit_streams', 'open streams counted against limits.maxStreams'),
      limitStreamsMax: g('stoq_limit_streams_max', 'limits.maxStreams'),
      limitStreamsWaiting: g('stoq_limit_streams_waiting', 'peer streams waiting for the stream budget'),
      limitReadBuffer: g('stoq_limit_read_buffer_bytes', 'stream bytes queued for readers, not yet read'),
      limitReadBufferMax: g('stoq_limit_read_buffer_bytes_max', 'limits.maxReadBufferBytes'),
      limitWindow: g('stoq_limit_receive_window_bytes', 'flow-control credit committed to connections'),
      limitWindowMax: g('stoq_limit_receive_window_bytes_max', 'limits.maxReceiveWindowBytes'),
      limitDatagrams: g('stoq_limit_queued_datagrams', 'received datagrams waiting for listeners'),
      limitDatagramsMax: g('stoq_limit_queued_datagrams_max', 'limits.maxQueuedDatagrams'),
      limitRefused: c('stoq_limit_connections_refused_total', 'connections refused because a budget was full'),
      limitDatagramsDropped: c('stoq_limit_datagrams_dropped_total', 'received datagrams dropped over the queue limits'),
      limitReadsDeferred: c('stoq_limit_reads_deferred_total', 'times a reader stopped because a read budget was full'),
    }
    // Backend-specific counters, registered only when this backend reports them.
    const udp0 = this.io.stats() as unknown as Record<string, unknown>
    const optional = (key: string, name: string, help: string): { key: string; h: MetricHandle } | null =>
      typeof udp0[key] === 'number' ? { key, h: c(name, help) } : null
    const backendCounters = [
      optional('gsoWrites', 'stoq_udp_gso_writes_total', 'socket writes that carried several segments (GSO)'),
      optional('groBuffers', 'stoq_udp_gro_buffers_total', 'received buffers that held several datagrams (GRO)'),
      optional('sendSyscalls', 'stoq_udp_send_syscalls_total', 'send system calls (sendmmsg / io_uring SENDMSG) of the backend'),
      optional('receiveSyscalls', 'stoq_udp_receive_syscalls_total', 'receive system calls (recvmmsg / io_uring RECVMSG) of the backend'),
      optional('zeroCopySends', 'stoq_zero_copy_sends_total', 'sends handed to the socket thread in place, without a copy'),
      optional('receiveRingFull', 'stoq_udp_receive_ring_full_total', 'times the receive ring was full (datagrams left in the kernel)'),
      optional('overflowSends', 'stoq_udp_overflow_sends_total', 'sends that waited in the overflow queue because the send ring was full'),
    ].filter((x): x is { key: string; h: MetricHandle } => x !== null)
    const update = (): void => {
      if (this.state === 'closed') return
      const s = this.stats()
      h.datagramsSent.set(s.udp.packetsSent)
      h.datagramsReceived.set(s.udp.packetsReceived)
      h.bytesSent.set(s.udp.bytesSent)
      h.bytesReceived.set(s.udp.bytesReceived)
      h.sendCalls.set(s.udp.sendCalls)
      h.receiveCalls.set(s.udp.receiveCalls)
      h.sendErrors.set(s.udp.sendErrors)
      h.dropped.set(s.packetsDropped)
      h.batched.set(s.batching.packets)
      h.batchSyscalls.set(s.batching.syscalls)
      h.batchFlushes.set(s.batching.flushes)
      h.saved.set(Math.max(0, s.batching.syscallsSaved))
      h.perSyscall.set(s.batching.syscalls > 0 ? s.batching.packets / s.batching.syscalls : 0)
      h.connections.set(s.connections)
      const l = s.limits
      h.limitStreams.set(l.streams)
      h.limitStreamsMax.set(l.limits.maxStreams)
      h.limitStreamsWaiting.set(l.streamsWaiting)
      h.limitReadBuffer.set(l.readBufferBytes)
      h.limitReadBufferMax.set(l.limits.maxReadBufferBytes)
      h.limitWindow.set(l.receiveWindowBytes)
      h.limitWindowMax.set(l.limits.maxReceiveWindowBytes)
      h.limitDatagrams.set(l.queuedDatagrams)
      h.limitDatagramsMax.set(l.limits.maxQueuedDatagrams)
      h.limitRefused.set(l.connectionsRefused)
      h.limitDatagramsDropped.set(l.datagramsDropped)
      h.limitReadsDeferred.set(l.readsDeferred)
      h.poolInUse.set(s.pool.inUse)
      h.poolHighWater.set(s.pool.highWaterMark)
      h.poolCapacity.set(s.pool.capacity)
      h.poolHits.set(s.pool.hits)
      h.poolMisses.set(s.pool.misses)
      const udp = s.udp as unknown as Record<string, number>
      for (const b of backendCounters) b.h.set(udp[b.key] ?? 0)
      // Per-connection figures: closed connections' totals plus the live ones.
      const t = this.closedTotals
      let packetsSent = t.packetsSent
      let packetsReceived = t.packetsReceived
      let packetsLost = t.packetsLost
      let packetsRetransmitted = t.packetsRetransmitted
      let bytesSent = t.bytesSent
      let bytesReceived = t.bytesReceived
      let bytesLost = t.bytesLost
      let streamBytesRead = t.streamBytesRead
      let streamBytesWritten = t.streamBytesWritten
      let dgSent = t.datagramsSent
      let dgReceived = t.datagramsReceived
      let dgDropped = t.datagramsDropped
      let streamsOpen = 0
      let rttSum = 0
      let rttMax = 0
      let cwnd = 0
      let gbps = 0
      let peakGbps = 0
      for (const conn of this.conns.values()) {
        const tp = conn.throughput
        gbps += tp.instantGbps
        if (tp.peakGbps > peakGbps) peakGbps = tp.peakGbps
        const cs = conn.stats()
        packetsSent += cs.packetsSent
        packetsReceived += cs.packetsReceived
        packetsLost += cs.packetsLost
        packetsRetransmitted += cs.packetsRetransmitted
        bytesSent += cs.bytesSent
        bytesReceived += cs.bytesReceived
        bytesLost += cs.bytesLost
        streamBytesRead += cs.streamBytesRead
        streamBytesWritten += cs.streamBytesWritten
        dgSent += cs.datagramsSent
        dgReceived += cs.datagramsReceived
        dgDropped += cs.datagramsDropped
        streamsOpen += cs.streamsOpen
        rttSum += cs.rttMs
        if (cs.rttMs > rttMax) rttMax = cs.rttMs
        cwnd += cs.cwndBytes
      }
      h.connectionsClosed.set(t.connections)
      h.quicPacketsSent.set(packetsSent)
      h.quicPacketsReceived.set(packetsReceived)
      h.quicPacketsLost.set(packetsLost)
      h.quicPacketsRetransmitted.set(packetsRetransmitted)
      h.quicBytesSent.set(bytesSent)
      h.quicBytesReceived.set(bytesReceived)
      h.quicBytesLost.set(bytesLost)
      h.streamBytesRead.set(streamBytesRead)
      h.streamBytesWritten.set(streamBytesWritten)
      h.quicDatagramsSent.set(dgSent)
      h.quicDatagramsReceived.set(dgReceived)
      h.quicDatagramsDropped.set(dgDropped)
      h.streamsOpen.set(streamsOpen)
      h.rtt.set(this.conns.size > 0 ? rttSum / this.conns.size / 1000 : 0)
      h.rttMax.set(rttMax / 1000)
      h.cwnd.set(cwnd)
      h.throughput.set(gbps)
      h.throughputPeak.set(peakGbps)
    }
    const pull = (sink as { collect?: (fn: () => void) => (() => void) | void }).collect
    if (typeof pull === 'function') {
      const off = pull.call(sink, update)
      this.uncollect = typeof off === 'function' ? off : null
    } else {
      this.metricsTimer = setInterval(update, 1000)
      this.metricsTimer.unref()
    }
  }

  stats(): EndpointStats {
    return {
      connections: this.conns.size,
      packetsDropped: (this.engine as { droppedPackets?: number }).droppedPackets ?? 0,
      udp: this.io.stats(),
      udpChoice: this.udpChoice,
      engine: this.engine.name,
      engineChoice: this.workerEngine
        ? `${this.options.workers < 0 ? 'workers auto' : 'workers'}: ${this.workerEngine.workerStats().length} engine workers, each running quinn (workers run quinn only)${
            droppedWorkerFlags.length > 0
              ? `; Node flags a worker thread cannot take were left out of the workers (${droppedWorkerFlags.join(', ')}; a heap cap becomes each worker's own)`
              : ''
          }`
        : this.workersNote
          ? `${this.engineChoice}; ${this.workersNote}`
          : this.engineChoice,
      mtuDiscovery: this.mtuDiscovery,
      numa: { ...this.numa },
      batching: this.batcher.stats(),
      pool: this.poolStats(),
      workers: this.workerEngine ? this.workerEngine.workerStats() : [],
      limits: this.governor.usage(),
      sessionCache: this.state !== 'closed' ? (this.engine.sessionCache?.() ?? null) : null,
    }
  }

  /** The pool's figures; once the endpoint released its own pool, the last ones it had. */
  private poolStats(): ReturnType<BufferPool['stats']> {
    return this.lastPoolStats ?? this.pool.stats()
  }

  /** Pool figures taken just before the endpoint closed its own pool. */
  private lastPoolStats: ReturnType<BufferPool['stats']> | null = null

  /** Test hook of a multi-core endpoint: make engine worker `index` throw, as a bug would. */
  crashWorkerForTest(index: number): void {
    if (!this.workerEngine) throw new StoqUnsupportedError('engine workers', 'this endpoint runs no engine workers')
    this.workerEngine.crashWorker(index)
  }

  /** @internal Test hook of a multi-core endpoint: block engine worker `index`'s event loop for `ms`. */
  blockWorkerForTest(index: number, ms: number): void {
    if (!this.workerEngine) throw new StoqUnsupportedError('engine workers', 'this endpoint runs no engine workers')
    this.workerEngine.blockWorker(index, ms)
  }

  /**
   * Stop accepting, close every connection with `code`/`reason` (they get up to
   * `closeTimeoutMs` to finish), then release the socket. Idempotent.
   */
  close(code = 0, reason = ''): Promise<void> {
    try {
      checkAppCode(code)
      if (typeof reason !== 'string') throw new StoqInvalidArgumentError('reason', `expected a string, got ${typeof reason}`)
      if (Buffer.byteLength(reason) > 1024) throw new StoqInvalidArgumentError('reason', 'expected at most 1024 bytes')
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.closePromise) return this.closePromise
    this.closePromise = this.shutdown(code, reason)
    return this.closePromise
  }

  /**
   * Drop everything at once: no CONNECTION_CLOSE is sent, peers find out by
   * idle timeout or stateless reset (as after a crash). Connections end here
   * with a local close. Idempotent; also ends a `close()` under way.
   */
  async destroy(): Promise<void> {
    if (this.state === 'closed') return this.closePromise ?? undefined
    const wasOpen = this.state !== 'new'
    this.state = 'closed'
    this.closePromise ??= Promise.resolve()
    this.stopTimers()
    for (const conn of [...this.conns.values()]) {
      conn.onClosed({ remote: false, app: true, code: 0, reason: new TextEncoder().encode('endpoint destroyed'), idleTimeout: false })
    }
    if (wasOpen) await this.release()
  }

  /** The engine timer, a pending sub-millisecond poll, and the metrics and throughput timers. */
  private stopTimers(): void {
    if (this.trimTimer) clearTimeout(this.trimTimer)
    this.trimTimer = null
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (this.immediate) clearImmediate(this.immediate)
    this.immediate = null
    this.stopMetrics()
  }

  /** Stop the batcher, then give back the socket, the engine and the pool, and say so. */
  private async release(): Promise<void> {
    this.batcher?.close?.()
    await this.io.close()
    this.engine.destroy()
    if (this.ownsPool) {
      this.lastPoolStats = this.pool.stats()
      this.pool.close()
    }
    this.emit('close')
  }

  private async shutdown(code: number, reason: string): Promise<void> {
    if (this.state === 'new') {
      this.state = 'closed'
      return
    }
    this.state = 'closing'
    this.engine.stopListening()
    const pending = [...this.conns.values()]
    // Each connection first delivers what its finished streams still owe (graceful close,
    // half of closeTimeoutMs), then sends CONNECTION_CLOSE; the timer below bounds it all.
    const graceMs = Math.floor(this.options.closeTimeoutMs / 2)
    for (const conn of pending) {
      conn.close(code, reason, { timeoutMs: graceMs }).catch(() => conn.closeNow(code, reason))
    }
    this.process()
    if (pending.length > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.all(pending.map((c) => c.closed)),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, this.options.closeTimeoutMs)
        }),
      ])
      clearTimeout(timer)
    }
    if ((this.state as string) === 'closed') return // destroy() ran meanwhile
    // Whatever did not finish in time is closed locally.
    for (const conn of [...this.conns.values()]) {
      conn.onClosed({ remote: false, app: true, code, reason: new TextEncoder().encode(reason), idleTimeout: false })
    }
    this.state = 'closed'
    this.stopTimers()
    await this.release()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** Typed errors for components of the wrong shape (before anything is built). */
function checkComponents(c: unknown): asserts c is Partial<EndpointComponents> {
  if (typeof c !== 'object' || c === null || Array.isArray(c)) {
    throw new StoqInvalidArgumentError('components', `expected an object, got ${c === null ? 'null' : Array.isArray(c) ? 'an array' : typeof c}`)
  }
  const o = c as Record<string, unknown>
  const fn = (name: string): void => {
    if (o[name] !== undefined && typeof o[name] !== 'function') throw new StoqInvalidArgumentError(name, `expected a factory function, got ${typeof o[name]}`)
  }
  fn('engine')
  fn('udp')
  fn('batcher')
  const methods = (name: string, list: string[]): void => {
    const v = o[name] as Record<string, unknown> | undefined
    if (v === undefined) return
    if (typeof v !== 'object' || v === null || list.some((m) => typeof v[m] !== 'function')) {
      throw new StoqInvalidArgumentError(name, `expected an object with ${list.join(', ')} methods`)
    }
  }
  methods('pool', ['acquire', 'tryAcquire', 'release', 'view', 'stats', 'close'])
  methods('metrics', ['counter', 'gauge', 'histogram'])
  const ms = o.throughputSampleMs
  if (ms !== undefined && (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0 || ms > 2 ** 31 - 1)) {
    throw new StoqInvalidArgumentError('throughputSampleMs', `expected an integer number of ms >= 0, got ${typeof ms === 'number' ? ms : typeof ms}`)
  }
}

/** Bind an endpoint. Same as `Endpoint.create`. */
export function createEndpoint(options?: Partial<EndpointOptions>, components?: Partial<EndpointComponents>): Promise<Endpoint> {
  return Endpoint.create(options, components)
}
