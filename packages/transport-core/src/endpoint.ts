import { EventEmitter } from 'node:events'
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
  type MetricsSink,
  type PacketBatcher,
  type QuicEngine,
  type SocketAddress,
  type UdpIo,
  throwIfAborted,
  whenAborted,
} from '@stoq/interface'
import { batching } from '@stoq/batching'
import { createBufferPool, type SharedBufferPool } from '@stoq/mempool'
import { bindToNumaNode, numaNodes, releaseFreeMemory } from '@stoq/hwaccel'
import { QuicConnection } from './connection.js'
import { checkAppCode, type QuicStream } from './stream.js'
import { Governor } from './limits.js'
import { preloadQuicheEngine } from './engine/quiche.js'
import { DEFAULT_STREAM_READ_CHUNK } from './defaults.js'
import { type WorkerEngine, droppedWorkerFlags } from './workers/cluster.js'
import { resolveConnectOptions, resolveEndpointOptions, type ConnectOptions, type EndpointOptions, type ResolvedEndpointOptions } from './options.js'
import { AUTO_ORDER, newUdpIo, selectEngine } from './choice.js'
import { checkComponents, type EndpointComponents } from './components.js'
import { addClosedTotals, newClosedTotals, reportMetrics, type ClosedTotals, type EndpointStats } from './endpoint-metrics.js'
import { resolvePeer } from './resolve-peer.js'
import { ignoreRejection } from './ignore.js'
import { decideWorkers } from './worker-decision.js'

export { selectEngine, QUINN_UNAVAILABLE_WARNING } from './choice.js'
export type { EndpointComponents } from './components.js'
export type { EndpointStats } from './endpoint-metrics.js'

/**
 * Transmit slots asked of an engine that has them (zero-copy sends): batches in flight to the
 * socket thread at once. 64 KiB each, native memory committed as it is written.
 */
const TX_SLOTS = 64

/** Default interval of the shared per-connection throughput sampler. */
const THROUGHPUT_SAMPLE_MS = 1000
/** Hand freed memory back to the kernel after this many connections closed (or none is left). */
const TRIM_AFTER_CLOSES = 256
/** ... this long after the last of them: engines keep a closed connection a few PTOs. */
const TRIM_DELAY_MS = 2000
/** CONNECTION_REFUSED reason of a connection a budget did not admit. */
const SERVER_BUSY = new TextEncoder().encode('server busy: receive budget full')

export interface EndpointEvents {
  /** A peer connected (handshake complete). */
  connection: [QuicConnection]
  /** A socket or engine error not tied to one connection (without a listener it becomes a process warning). */
  error: [Error]
  close: []
}

/**
 * A bound UDP socket that carries QUIC connections: it can accept connections
 * (when given a server identity) and dial out at the same time.
 *
 * It is its socket's UdpReceiver, its engine's EngineEventSink and its connections'
 * ConnectionOwner (checked where it is handed over: `io.bind(…, this)`, `engine.drainEvents(this)`,
 * `QuicConnection.create(this, …)`); those members are internal (left out of the published
 * declarations), so the class does not name the interfaces.
 */
export class Endpoint extends EventEmitter<EndpointEvents> {
  /** @internal The QUIC engine (tests and the implementation; users read `stats().engine`). */
  readonly engine: QuicEngine
  /** @internal Scratch buffer shared by the connections' stream and datagram reads. */
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
      throw new StoqInvalidArgumentError(
        'throughputSampleMs',
        `expected an integer number of ms >= 0, got ${typeof sampleMs === 'number' ? sampleMs : typeof sampleMs}`,
      )
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
    // Zero-copy sends (default on): the batcher fills buffers of this pool, and the gro worker
    // maps its slabs and sends them in place. share() reserves every slab up to the pool's
    // limit (address space; pages are committed when used), so only for that backend.
    const firstBackend = options.udpBackend === 'auto' ? AUTO_ORDER[0] : options.udpBackend
    this.sendSlabs =
      options.zeroCopySend &&
      firstBackend === 'gro' &&
      !workers &&
      !components.udp &&
      this.ownsPool &&
      typeof (this.pool as Partial<SharedBufferPool>).share === 'function'
        ? [...(this.pool as SharedBufferPool).share().slabs]
        : []
    // With zero-copy sends, an engine that builds packets in memory of its own (transmit
    // slots) saves the copy into the pool buffer too: the gro worker sends from the slots.
    this.txSlots = (this.sendSlabs.length > 0 && this.engine.transmitSlots?.(TX_SLOTS, this.pool.bufferSize)) || []
    this.io = workers
      ? workers.io
      : components.udp
        ? components.udp()
        : newUdpIo(options.udpBackend === 'auto' ? AUTO_ORDER[0]! : options.udpBackend, options.cpuAffinity, this.sendSlabs, this.txSlots)
    this.udpChoice = workers ? workers.io.choice : components.udp ? 'given by the caller' : `udpBackend ${options.udpBackend}`
  }

  /** The engine of a multi-core endpoint (`workers` option), else null. */
  private readonly workerEngine: WorkerEngine | null
  /** Why a `workers: 'auto'` endpoint runs on this thread (empty otherwise). */
  private workersNote = ''

  private readonly sendSlabs: SharedArrayBuffer[]
  /** The engine's transmit slots the gro worker sends from (empty: batches go into pool buffers). */
  private readonly txSlots: Uint8Array[]
  private batcherSlots = 0
  private readonly throughputSampleMs: number
  private throughputTimer: NodeJS.Timeout | null = null
  /** Handshake histogram of the metrics sink, observed once per established connection. */
  private handshakeHistogram: { observe(value: number): void } | null = null
  private readonly closedTotals: ClosedTotals = newClosedTotals()
  /** NUMA placement of the packet pool's slabs. */
  private readonly numa: { node: number | null; slabs: number; bytes: number; detail: string }

  /** Bind a socket and start an endpoint. */
  static async create(options?: Partial<EndpointOptions>, components: Partial<EndpointComponents> = {}): Promise<Endpoint> {
    const resolved = resolveEndpointOptions(options)
    checkComponents(components)
    await preloadQuicheEngine()
    const single = (why: string): Promise<Endpoint> =>
      Endpoint.open({ ...resolved, workers: 0 }, components, null).then((ep) => {
        ep.workersNote = why
        return ep
      })
    const decision = decideWorkers(resolved, components)
    if (decision.workers === null) return single(decision.note)
    try {
      return await Endpoint.open(resolved, components, decision.workers)
    } catch (err) {
      if (decision.auto && StoqError.isInstance(err) && err.code === 'STOQ_ERR_UNSUPPORTED') return single(`workers auto: ${(err as Error).message}`)
      throw err
    }
  }

  private static async open(resolved: ResolvedEndpointOptions, components: Partial<EndpointComponents>, workers: WorkerEngine | null): Promise<Endpoint> {
    const ep = new Endpoint(resolved, components, workers)
    try {
      await ep.start(components)
    } catch (err) {
      // The socket first: its thread may send from the engine's transmit slots until closed.
      await ep.io.close().catch(ignoreRejection) // the start error is what the caller gets; a failed close of the socket adds nothing
      ep.engine.destroy()
      if (ep.ownsPool) ep.pool.close()
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
        await this.io.close().catch(ignoreRejection) // this backend failed to bind and is dropped for the next one; its close failing changes nothing
        skipped.push(`${this.io.backend}: ${(err as Error).message}`)
        this.io = newUdpIo(AUTO_ORDER[next]!, o.cpuAffinity, this.sendSlabs, this.txSlots)
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
    // Slots only where the socket sends them in place (the gro worker); other backends copy.
    const slots = this.io.backend === 'gro' ? this.txSlots : []
    this.batcherSlots = slots.length
    this.batcher = (components.batcher ?? batching())({ engine: this.engine, io: this.io, pool: this.pool, ...(slots.length > 0 ? { slots } : {}) })
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
    throwIfAborted(o.signal, 'connect')
    const peer = await resolvePeer(o.host, o.port, this.local, this.options.ipv6Only)
    if (this.state !== 'open') throw new StoqClosedError('endpoint')
    throwIfAborted(o.signal, 'connect')
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
        stopListening()
        conn.onHandshakeSettled = null
        conn.closeNow(0, 'handshake timeout')
        this.schedule()
        reject(new StoqHandshakeTimeoutError(o.handshakeTimeoutMs))
      }, o.handshakeTimeoutMs)
      // An abort before `connect` settled closes the half-made connection; the listener goes
      // when the connect settles, so a long-lived signal keeps none.
      const stopListening = whenAborted(o.signal, 'connect', (err) => {
        clearTimeout(timer)
        conn.onHandshakeSettled = null
        conn.closeNow(0, 'connect aborted')
        this.schedule()
        reject(err)
      })
      conn.onHandshakeSettled = (err) => {
        stopListening()
        clearTimeout(timer)
        if (err) reject(err)
        else resolve(conn)
      }
      // 0-RTT keys: the connection carries data now (the timer still bounds the handshake).
      if (o.earlyData && this.engine.stats(handle).earlyData === 'pending') {
        stopListening()
        resolve(conn)
      }
    })
    this.schedule()
    return established
  }

  // -------------------------------------------------------------------------
  // The cycle: receive → events → transmit → timer

  /** @internal Run the send/receive cycle soon (once per turn however often asked). */
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

  /** @internal A connection holds stream data to push before the next transmit. */
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

  /** @internal UdpReceiver: a datagram (or a GRO batch of `segmentSize` segments) arrived. */
  onPacket(data: Uint8Array, segmentSize: number, from: SocketAddress): void {
    try {
      this.engine.receive(data, segmentSize, from, this.local)
    } catch (err) {
      // A packet must never take the endpoint down.
      this.report(new StoqEngineError(this.engine.name, `receive failed: ${(err as Error).message}`, { cause: err }))
    }
  }

  /** @internal UdpReceiver */
  onBatchEnd(): void {
    this.process()
  }

  /** @internal UdpReceiver */
  onSendComplete(token: number): void {
    this.batcher?.onSendComplete(token)
  }

  /** @internal UdpReceiver */
  onDrain(): void {
    this.batcher?.onDrain()
  }

  /** @internal UdpReceiver */
  onError(err: Error): void {
    // Typed errors (an engine worker that died, a socket error a backend already typed) pass as they are.
    this.report(StoqError.isInstance(err) ? err : new StoqSocketError(`UDP socket error: ${err.message}`, {}, { cause: err }))
  }

  // EngineEventSink -------------------------------------------------------------

  /** @internal EngineEventSink: a peer started a handshake. */
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
    const conn = QuicConnection.create(this, handle, side, peer)
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

  /** @internal The endpoint's budgets (users read `stats().limits`). */
  readonly governor: Governor
  /** Incoming connections refused by a budget, closed after their first flight. */
  private readonly refuse: number[] = []
  private readonly deferred = new Set<QuicConnection>()
  private readonly starved = new Set<QuicStream>()
  /** Read budget in use when starved readers were last retried. */
  private starvedAt = 0

  /** @internal A connection has work left for a later turn. */
  connectionDeferred(conn: QuicConnection): void {
    this.deferred.add(conn)
    this.schedule()
  }

  /** @internal A stream reader stopped because a read budget was full. */
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

  /** @internal EngineEventSink */
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

  /** @internal EngineEventSink */
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

  /** @internal EngineEventSink */
  onStreamWritable(handle: number, streamId: number): void {
    this.conns.get(handle)?.onStreamWritable(streamId)
  }

  /** @internal EngineEventSink */
  onDatagramReadable(handle: number): void {
    this.conns.get(handle)?.onDatagramReadable()
  }

  /** @internal EngineEventSink */
  onClosed(handle: number, info: EngineCloseInfo): void {
    const conn = this.conns.get(handle)
    if (conn) conn.onClosed(info)
  }

  /** @internal A connection ended: forget it, keep its figures in the totals. */
  connectionGone(conn: QuicConnection): void {
    if (this.conns.get(conn.handle) === conn) {
      // Its last figures stay in the endpoint's totals (counters must never go back).
      addClosedTotals(this.closedTotals, conn.stats())
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

  private stopMetrics(): void {
    this.stopThroughputTimer()
    this.stopReporting?.()
    this.stopReporting = null
  }

  /** Stops reporting to the metrics sink (see endpoint-metrics.ts). */
  private stopReporting: (() => void) | null = null

  /**
   * Mirror the endpoint's counters into a MetricsSink, labelled by local port and UDP backend
   * (see `reportMetrics`).
   */
  private reportTo(sink: MetricsSink): void {
    const r = reportMetrics(sink, {
      labels: { port: String(this.local.port), backend: this.io.backend },
      engineName: this.engine.name,
      udp: this.io.stats(),
      isClosed: () => this.state === 'closed',
      stats: () => this.stats(),
      closedTotals: this.closedTotals,
      conns: this.conns,
    })
    this.handshakeHistogram = r.handshakeHistogram
    this.stopReporting = r.stop
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
      transmitSlots: this.batcherSlots,
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

  /** @internal Test hook of a multi-core endpoint: make engine worker `index` throw, as a bug would. */
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

/** Bind an endpoint. Same as `Endpoint.create`. */
export function createEndpoint(options?: Partial<EndpointOptions>, components?: Partial<EndpointComponents>): Promise<Endpoint> {
  return Endpoint.create(options, components)
}
