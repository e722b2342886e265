/**
 * Entry point of one engine worker thread (see ./cluster.ts): a real QUIC
 * engine and its own UDP socket (SO_REUSEPORT, one per worker, packets steered
 * by the first byte of their connection ID), driven by an ordinary Endpoint.
 * The engine's events do not become QuicConnection objects here: `TapEngine`
 * hands them to `WorkerHost`, which forwards them to the application thread
 * and moves stream and datagram bytes through the shared pool.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import {
  STREAM_BLOCKED,
  STREAM_STOPPED,
  StoqError,
  type EngineCloseInfo,
  type EngineEventSink,
  type QuicEngine,
  type QuicEngineFactory,
  type SocketAddress,
  type StreamRecvError,
  type StreamRecvResult,
  type UdpBindOptions,
  type UdpIo,
  type UdpReceiver,
} from '@stoq/interface'
import { RecordReader, RecordRing, RecordWriter, attachBufferPool, isRecordChannelMessage } from '@stoq/mempool'
import { UringUdpIo, WorkerUdpIo, currentThreadId, setCpuAffinity } from '@stoq/hwaccel'
import { Endpoint, selectEngine } from '../endpoint.js'
import { holdPeerStreamLimits } from '../connection.js'
import * as P from './protocol.js'

const init = workerData as P.WorkerInit
const port = parentPort!
const pool = attachBufferPool(init.pool)
const out = new RecordWriter(RecordRing.attach(init.toMain), port, P.CHANNEL)
const SLOT = pool.bufferSize
const EMPTY = new Uint8Array(0)

/** Bytes the worker may read ahead of the application, per stream. */
const RECV_WINDOW = 1 << 20
/** Datagrams the worker may hand over before the application reads them, per connection. */
const DGRAM_WINDOW = 128
/** Streams of each kind opened ahead for the application (grows with demand). */
const RESERVE_MIN = [32, 8]
const RESERVE_MAX = 512

interface WStream {
  sid: number
  /** Buffers the application sent that the engine has not taken yet. */
  sendQ: { slot: number; off: number; end: number; fin: boolean }[]
  creditBack: number
  recvCredit: number
  /** The engine may hold more to read (credit or buffers ran out). */
  readBlocked: boolean
  readDone: boolean
  sendDone: boolean
  watch: boolean
}

interface WConn {
  id: number
  h: number
  established: boolean
  streams: Map<number, WStream>
  reserved: [number, number]
  taken: [number, number]
  dgramCredit: number
  dgramPending: boolean
  dgramCreditBack: number
  maxDgram: number
}

// ---------------------------------------------------------------------------

/**
 * References per shared send buffer (the writes of one turn share a buffer): one per record
 * naming it not yet consumed, plus one from its first record until C_PACKED says the
 * application thread wrote the last record naming it.
 */
const sendRefs = new Map<number, number>()

function holdSend(slot: number): void {
  if (slot >= 0) sendRefs.set(slot, (sendRefs.get(slot) ?? 1) + 1)
}

function dropSend(slot: number): void {
  if (slot < 0) return
  const n = (sendRefs.get(slot) ?? 1) - 1
  if (n > 0) sendRefs.set(slot, n)
  else {
    sendRefs.delete(slot)
    pool.release(slot)
  }
}

class WorkerHost implements EngineEventSink {
  engine!: QuicEngine
  endpoint!: Endpoint
  private readonly byH = new Map<number, WConn>()
  private readonly byId = new Map<number, WConn>()
  private flushQueued = false
  private nextIncoming = 0
  private readonly res: StreamRecvResult & StreamRecvError = { bytes: 0, fin: false, resetCode: -1 }
  private readonly creditDirty = new Set<WStream & { conn: WConn }>()
  private readonly watched = new Set<WStream & { conn: WConn }>()
  private readonly readStarved = new Set<WStream & { conn: WConn }>()
  private readonly refill = new Set<WConn>()
  /** Connections whose datagrams from the application went to the engine since the last flush. */
  private readonly dgramSent = new Set<WConn>()

  get connections(): number {
    return this.byId.size
  }

  private rec(op: number, id: number, sid = 0, a = 0, b = 0, c = 0): void {
    out.rec(op, id, sid, a, b, c, 0)
    this.queueFlush()
  }

  private extra(v: unknown): number {
    return out.extra(v)
  }

  private queueFlush(): void {
    if (this.flushQueued) return
    this.flushQueued = true
    setImmediate(this.flush)
  }

  readonly flush = (): void => {
    this.flushQueued = false
    this.settle()
    out.flush()
  }

  /**
   * After every cycle of the worker's endpoint (packets in, timers): acknowledgements and
   * MAX_STREAMS raise no engine event, so check the streams waiting to complete and the
   * connections whose stream reserve is short here.
   */
  afterDrain(): void {
    this.retryStarved()
    if (this.watched.size > 0) this.checkComplete()
    if (this.reserveShort.size > 0) {
      // refillReserve() adds a connection back while the peer's limit still refuses opens:
      // iterate over a copy, or the Set's iterator visits the re-added entry forever.
      const short = [...this.reserveShort]
      this.reserveShort.clear()
      for (const c of short) if (this.byId.get(c.id) === c) this.refillReserve(c)
    }
    if (out.pending) this.queueFlush()
  }

  private readonly reserveShort = new Set<WConn>()

  private checkComplete(): void {
    for (const s of this.watched) {
      const c = s.conn
      if (this.byId.get(c.id) !== c) {
        this.watched.delete(s)
        continue
      }
      if (s.sendQ.length === 0 && this.engine.streamComplete(c.h, s.sid)) {
        this.watched.delete(s)
        c.streams.delete(s.sid)
        out.rec(P.E_COMPLETE, c.id, s.sid)
      }
    }
  }

  /** Return credit, report completed streams, refill reserves, retry starved reads. */
  private settle(): void {
    for (const s of this.creditDirty) {
      if (s.creditBack > 0) out.rec(P.E_CREDIT, s.conn.id, s.sid, s.creditBack)
      s.creditBack = 0
    }
    this.creditDirty.clear()
    this.checkComplete()
    for (const c of this.refill) this.refillReserve(c)
    this.refill.clear()
    for (const c of this.dgramSent) {
      if (this.byId.get(c.id) === c) out.rec(P.E_DGRAM_CREDIT, c.id, 0, c.dgramCreditBack)
      c.dgramCreditBack = 0
    }
    this.dgramSent.clear()
  }

  private conn(id: number, h: number): WConn {
    // The application thread raises the peer's stream limits as they are used (lean
    // connections): hold the engine at the starting limits from the first packet on, before
    // the application thread's records can arrive.
    holdPeerStreamLimits(this.engine, h, init.transport)
    const c: WConn = {
      id,
      h,
      established: false,
      streams: new Map(),
      reserved: [0, 0],
      taken: [0, 0],
      dgramCredit: DGRAM_WINDOW,
      dgramPending: false,
      dgramCreditBack: 0,
      maxDgram: -1,
    }
    this.byH.set(h, c)
    this.byId.set(id, c)
    return c
  }

  private stream(c: WConn, sid: number): WStream & { conn: WConn } {
    let s = c.streams.get(sid) as (WStream & { conn: WConn }) | undefined
    if (s === undefined) {
      s = { sid, conn: c, sendQ: [], creditBack: 0, recvCredit: RECV_WINDOW, readBlocked: false, readDone: false, sendDone: false, watch: false }
      c.streams.set(sid, s)
    }
    return s
  }

  // Engine events --------------------------------------------------------------

  onIncoming(h: number, peer: SocketAddress): void {
    const id = (this.nextIncoming++ * init.workers + init.index) * 2 + 1
    this.conn(id, h)
    this.rec(P.E_INCOMING, id, 0, this.extra(peer))
  }

  onEstablished(h: number): void {
    const c = this.byH.get(h)
    if (!c) return
    c.established = true
    this.refillReserve(c)
    c.maxDgram = this.engine.datagramMaxSize(h)
    const info: P.EstablishedInfo = {
      alpn: this.engine.alpn(h),
      serverName: this.engine.serverName(h),
      certificates: this.engine.peerCertificates(h),
      maxDatagram: c.maxDgram,
    }
    this.rec(P.E_ESTABLISHED, c.id, 0, this.extra(info))
  }

  // An engine may report a connection's stream events in the same drain as its close, after it
  // forgot the connection: its calls then throw, and the close event that follows cleans up.

  onStreamReadable(h: number, sid: number): void {
    const c = this.byH.get(h)
    if (!c) return
    const s = this.stream(c, sid)
    try {
      this.read(c, s)
    } catch {
      // Closing (see above).
    }
  }

  onStreamWritable(h: number, sid: number): void {
    const c = this.byH.get(h)
    const s = c?.streams.get(sid) as (WStream & { conn: WConn }) | undefined
    if (!c || !s) return
    try {
      this.pumpSend(c, s)
    } catch {
      // Closing (see above).
    }
  }

  onDatagramReadable(h: number): void {
    const c = this.byH.get(h)
    if (!c) return
    try {
      this.readDatagrams(c)
    } catch {
      // Closing (see above).
    }
  }

  onClosed(h: number, info: EngineCloseInfo): void {
    const c = this.byH.get(h)
    if (!c) return
    let stats = null
    try {
      stats = this.engine.stats(h)
    } catch {
      // Already forgotten by the engine.
    }
    const closed: P.ClosedInfo = { ...info, reason: new Uint8Array(info.reason), stats }
    // The peer closed: hand over what its streams still hold in the engine, whatever the
    // read-ahead credit (the application thread delivers a stream that reached its FIN, as
    // a single-thread endpoint does from its engine during the close event).
    try {
      if (info.remote) for (const st of c.streams.values()) this.salvage(c, st as WStream & { conn: WConn })
    } catch {
      // The engine already forgot the connection's streams (quinn does before this event).
    } finally {
      this.forget(c)
      this.rec(P.E_CLOSED, c.id, 0, this.extra(closed))
    }
  }

  private forget(c: WConn): void {
    for (const s of c.streams.values()) for (const e of s.sendQ) dropSend(e.slot)
    c.streams.clear()
    this.byH.delete(c.h)
    this.byId.delete(c.id)
  }

  // Reading: engine → pool buffer → application ------------------------------------

  private read(c: WConn, s: WStream & { conn: WConn }): void {
    if (s.readDone) return
    const res = this.res
    while (s.recvCredit > 0) {
      const slot = pool.tryAcquire()
      if (slot < 0) {
        s.readBlocked = true
        this.readStarved.add(s)
        this.queueFlush()
        return
      }
      const view = pool.view(slot)
      const limit = Math.min(SLOT, s.recvCredit)
      let off = 0
      let fin = false
      let reset = -1
      let drained = false
      while (off < limit) {
        let got: boolean
        try {
          got = this.engine.streamRecv(c.h, s.sid, off === 0 ? view.subarray(0, limit) : view.subarray(off, limit), res)
        } catch (err) {
          if (off === 0) pool.release(slot)
          else this.rec(P.E_DATA, c.id, s.sid, slot, off, 0)
          throw err
        }
        if (!got) {
          drained = true
          break
        }
        if (res.resetCode >= 0) {
          reset = res.resetCode
          break
        }
        off += res.bytes
        if (res.fin) {
          fin = true
          break
        }
        if (res.bytes === 0) {
          drained = true
          break
        }
      }
      if (off > 0 || fin) this.rec(P.E_DATA, c.id, s.sid, slot, off, fin ? 1 : 0)
      else pool.release(slot)
      s.recvCredit -= off
      if (reset >= 0) this.rec(P.E_RESET, c.id, s.sid, reset)
      if (fin || reset >= 0) {
        s.readDone = true
        s.readBlocked = false
        this.maybeWatch(s)
        return
      }
      if (drained) {
        s.readBlocked = false
        return
      }
    }
    s.readBlocked = true
  }

  private salvage(c: WConn, s: WStream & { conn: WConn }): void {
    if (s.readDone) return
    s.recvCredit = Number.MAX_SAFE_INTEGER
    this.read(c, s)
  }

  // Sending: pool buffer → engine -----------------------------------------------------

  private pumpSend(c: WConn, s: WStream & { conn: WConn }): void {
    while (s.sendQ.length > 0) {
      const e = s.sendQ[0]!
      const data = e.slot >= 0 ? pool.view(e.slot).subarray(e.off, e.end) : EMPTY
      const n = this.engine.streamSend(c.h, s.sid, data, e.fin)
      if (n === STREAM_STOPPED) {
        this.rec(P.E_STOPPED, c.id, s.sid, this.engine.streamStopCode(c.h, s.sid))
        for (const q of s.sendQ) dropSend(q.slot)
        s.sendQ.length = 0
        s.sendDone = true
        this.maybeWatch(s)
        return
      }
      if (n === STREAM_BLOCKED) {
        this.engine.streamWantWritable(c.h, s.sid)
        return
      }
      if (n > 0) {
        e.off += n
        s.creditBack += n
        this.creditDirty.add(s)
        this.queueFlush()
      }
      if (e.off < e.end) {
        this.engine.streamWantWritable(c.h, s.sid)
        return
      }
      dropSend(e.slot)
      s.sendQ.shift()
      if (e.fin) {
        s.sendDone = true
        this.maybeWatch(s)
      }
    }
  }

  private maybeWatch(s: WStream & { conn: WConn }): void {
    if (s.watch) return
    s.watch = true
    this.watched.add(s)
    this.queueFlush()
  }

  private readDatagrams(c: WConn): void {
    while (c.dgramCredit > 0) {
      const slot = pool.tryAcquire()
      if (slot < 0) {
        c.dgramPending = true
        return
      }
      const n = this.engine.datagramRecv(c.h, pool.view(slot))
      if (n < 0) {
        pool.release(slot)
        c.dgramPending = false
        return
      }
      c.dgramCredit--
      this.rec(P.E_DGRAM, c.id, 0, slot, n)
    }
    c.dgramPending = true
  }

  private refillReserve(c: WConn): void {
    if (!c.established) return
    for (let t = 0; t < 2; t++) {
      const bidi = t === 0
      const target = Math.min(RESERVE_MAX, Math.max(RESERVE_MIN[t]!, 2 * c.taken[t]!))
      c.taken[t] = 0
      while (c.reserved[t]! < target) {
        const sid = this.engine.openStream(c.h, bidi)
        if (sid < 0) {
          // The peer's limit: try again after later cycles (its MAX_STREAMS raises no event).
          this.reserveShort.add(c)
          break
        }
        // Creating it in the engine counts it against the peer's limit now.
        this.engine.streamSend(c.h, sid, EMPTY, false)
        c.reserved[t]!++
        this.rec(P.E_RESERVE, c.id, sid)
      }
    }
  }

  // Commands from the application thread -----------------------------------------------

  /** One record from the application thread (`x`: the extras its indices name). */
  command(r: Float64Array, i: number, x: unknown[]): void {
    const e = this.engine
    const op = r[i]!
    const id = r[i + 1]!
    const sid = r[i + 2]!
    const a = r[i + 3]!
    const b = r[i + 4]!
    const cc = r[i + 5]!
    const d = r[i + 6]!
    // Held from here until consumed (and, for the first record naming it, until C_PACKED).
    if (op === P.C_SEND || op === P.C_DGRAM) holdSend(a)
    try {
      if (op === P.C_CONNECT) {
        this.connect(id, x[a] as Parameters<QuicEngine['connect']>[0])
        return
      }
      if (op === P.C_LISTEN) {
        e.listen(x[a] as Parameters<QuicEngine['listen']>[0])
        return
      }
      if (op === P.C_STOP_LISTENING) {
        e.stopListening()
        return
      }
      if (op === P.C_PACKED) {
        dropSend(a)
        return
      }
      const c = this.byId.get(id)
      if (c === undefined) {
        // The connection is gone here: give back the buffers the command carried.
        if (op === P.C_SEND || op === P.C_DGRAM) dropSend(a)
        return
      }
      switch (op) {
        case P.C_SEND: {
          const s = this.stream(c, sid)
          if (s.sendDone) {
            dropSend(a)
            break
          }
          s.sendQ.push({ slot: a, off: b, end: b + cc, fin: d === 1 })
          if (s.sendQ.length === 1) this.pumpSend(c, s)
          break
        }
        case P.C_RECV_CREDIT: {
          const s = c.streams.get(sid) as (WStream & { conn: WConn }) | undefined
          if (s && !s.readDone) {
            s.recvCredit += a
            if (s.readBlocked) this.read(c, s)
          }
          break
        }
        case P.C_TAKEN: {
          const t = (sid & 2) === 0 ? 0 : 1
          c.reserved[t]!--
          c.taken[t]!++
          this.stream(c, sid)
          this.refill.add(c)
          this.queueFlush()
          break
        }
        case P.C_CLOSE:
          e.close(c.h, a === 1, b, (x[cc] as Uint8Array) ?? EMPTY)
          break
        case P.C_KEEPALIVE:
          e.setKeepAlive(c.h, a)
          break
        case P.C_PEER_STREAMS:
          e.setPeerStreamLimit?.(c.h, a === 1, b)
          break
        case P.C_RECV_WINDOW:
          e.setReceiveWindow?.(c.h, a)
          break
        case P.C_SHUTDOWN: {
          const s = this.stream(c, sid)
          if (a === 1) {
            for (const q of s.sendQ) dropSend(q.slot)
            s.sendQ.length = 0
            s.sendDone = true
          } else s.readDone = true
          e.streamShutdown(c.h, sid, a === 1 ? 'write' : 'read', b)
          this.maybeWatch(s)
          break
        }
        case P.C_PRIORITY:
          e.streamPriority(c.h, sid, a, b === 1)
          break
        case P.C_DGRAM: {
          try {
            e.datagramSend(c.h, pool.view(a).subarray(b, b + cc))
          } catch {
            // Too large for the path now: datagrams are unreliable, the application
            // thread already checked against the last size it was told.
          }
          dropSend(a)
          c.dgramCreditBack++
          this.dgramSent.add(c)
          this.queueFlush()
          break
        }
        case P.C_DGRAM_CREDIT:
          c.dgramCredit += a
          if (c.dgramPending) this.readDatagrams(c)
          break
      }
    } catch (err) {
      this.report(err)
    }
  }

  /** After a drain of commands. */
  commandsDone(): void {
    // The application thread gave buffers back: reads that found the pool empty go on.
    this.retryStarved()
    this.endpoint.schedule()
  }

  private retryStarved(): void {
    if (this.readStarved.size === 0) return
    for (const s of this.readStarved) {
      this.readStarved.delete(s)
      if (this.byId.get(s.conn.id) === s.conn) this.read(s.conn, s)
    }
  }

  private connect(id: number, options: Parameters<QuicEngine['connect']>[0]): void {
    let h: number
    try {
      h = this.engine.connect(options, this.endpoint.address)
    } catch (err) {
      const reason = new TextEncoder().encode((err as Error).message)
      const closed: P.ClosedInfo = { remote: false, app: false, code: 0x1, reason, idleTimeout: false, stats: null }
      this.rec(P.E_CLOSED, id, 0, this.extra(closed))
      return
    }
    this.conn(id, h)
  }

  report(err: unknown): void {
    process.emitWarning(StoqError.isInstance(err) ? err : new Error(`engine worker ${init.index}: ${(err as Error)?.message ?? String(err)}`))
  }

  // Stats -------------------------------------------------------------------------------

  statsSnapshot(): [number, import('@stoq/interface').ConnectionStatsSnapshot, number, import('@stoq/interface').SocketAddress?][] {
    const out: [number, import('@stoq/interface').ConnectionStatsSnapshot, number, import('@stoq/interface').SocketAddress?][] = []
    for (const c of this.byId.values()) {
      try {
        const max = c.established ? this.engine.datagramMaxSize(c.h) : -1
        const st = this.engine.stats(c.h)
        // The peer's address only once it changed (a migrating client).
        out.push(st.pathChanges > 0 ? [c.id, st, max, this.engine.peerAddress(c.h)] : [c.id, st, max])
      } catch {
        // Closing meanwhile.
      }
    }
    return out
  }
}

/** The real engine, with its events sent to the WorkerHost instead of the endpoint. */
function tapEngine(real: QuicEngine, host: WorkerHost): QuicEngine {
  return new Proxy(real, {
    get(target, prop, receiver) {
      if (prop === 'drainEvents') {
        return (_sink: EngineEventSink) => {
          target.drainEvents(host)
          host.afterDrain()
        }
      }
      const v = Reflect.get(target, prop, receiver) as unknown
      return typeof v === 'function' ? (v as (...args: unknown[]) => unknown).bind(target) : v
    },
  })
}

/** A UdpIo that binds with SO_REUSEPORT (the backends' own bind does the rest). */
class ReusePortIo implements UdpIo {
  constructor(readonly inner: WorkerUdpIo | UringUdpIo) {}
  get specificationVersion() {
    return this.inner.specificationVersion
  }
  get backend() {
    return this.inner.backend
  }
  get maxSegments() {
    return this.inner.maxSegments
  }
  get dontFragment() {
    return this.inner.dontFragment
  }
  get pendingSends() {
    return this.inner.pendingSends
  }
  get localAddress() {
    return this.inner.localAddress
  }
  bind(options: UdpBindOptions, receiver: UdpReceiver): Promise<SocketAddress> {
    return this.inner.bind({ ...options, reusePort: true }, receiver)
  }
  send(data: Uint8Array, segmentSize: number, to: SocketAddress, token: number): boolean {
    return this.inner.send(data, segmentSize, to, token)
  }
  stats() {
    return this.inner.stats()
  }
  close(): Promise<void> {
    return this.inner.close()
  }
}

/** CPU time of this thread in ms, from /proc (Linux); -1 elsewhere. */
function threadCpuMs(): number {
  try {
    const stat = readFileSync('/proc/thread-self/stat', 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 (1-based) of the whole line: 11 and 12 after the name.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return -1
  }
}

async function main(): Promise<void> {
  const host = new WorkerHost()
  let threadId = 0
  try {
    threadId = currentThreadId()
  } catch {
    threadId = 0
  }
  const selected = selectEngine(init.engine)
  const factory: QuicEngineFactory = (o) => {
    const real = selected.factory({ ...o, cidPrefix: init.index })
    host.engine = real
    return tapEngine(real, host)
  }
  const inner =
    init.udpBackend === 'uring'
      ? new UringUdpIo(init.cpus.length > 0 ? { cpus: init.cpus } : {})
      : new WorkerUdpIo(init.cpus.length > 0 ? { cpus: init.cpus } : {})
  const io = new ReusePortIo(inner)
  let endpoint: Endpoint
  try {
    endpoint = await Endpoint.create(
      {
        host: init.bind.host,
        port: init.bind.port,
        ipv6Only: init.bind.ipv6Only,
        transport: init.transport,
        ...(init.sessionCacheSize !== undefined ? { sessionCacheSize: init.sessionCacheSize } : {}),
        ...(init.keyExchange !== undefined ? { keyExchange: init.keyExchange } : {}),
        ...(init.bind.sendBufferSize !== undefined ? { socketBufferSize: init.bind.sendBufferSize } : {}),
      },
      { engine: factory, udp: () => io, throughputSampleMs: 0 },
    )
  } catch (err) {
    const e = err as StoqError
    port.postMessage({
      type: 'bind-error',
      code: e.code ?? 'STOQ_ERR_SOCKET',
      message: e.message,
      feature: (e.data as { feature?: string } | undefined)?.feature,
    } satisfies P.WorkerControl)
    return
  }
  host.endpoint = endpoint
  // Pin after the network thread started: its own pinning is checked against this thread's CPUs.
  if (init.cpus.length > 0) {
    try {
      setCpuAffinity(init.cpus)
    } catch (err) {
      host.report(err)
    }
  }
  endpoint.on('error', (err) => host.report(err))
  port.postMessage({
    type: 'ready',
    address: endpoint.address,
    fd: inner.fd,
    engine: endpoint.engine.name,
    engineChoice: selected.choice,
    udp: inner.backend,
    udpStats: endpoint.stats().udp,
  } satisfies P.WorkerControl)

  let lastElu = performance.eventLoopUtilization()
  let lastCpu = threadCpuMs()
  let lastAt = performance.now()
  const statsTimer = setInterval(() => {
    const elu = performance.eventLoopUtilization(lastElu)
    lastElu = performance.eventLoopUtilization()
    const cpu = threadCpuMs()
    const now = performance.now()
    const cpuPercent = cpu >= 0 && lastCpu >= 0 ? ((cpu - lastCpu) / (now - lastAt)) * 100 : -1
    lastCpu = cpu
    lastAt = now
    const st = endpoint.stats()
    port.postMessage({
      type: 'stats',
      load: {
        index: init.index,
        alive: true,
        threadId,
        cpus: init.cpus,
        connections: host.connections,
        eventLoopUtilization: elu.utilization,
        cpuPercent,
        packetsReceived: st.udp.packetsReceived,
        packetsSent: st.udp.packetsSent,
        bytesReceived: st.udp.bytesReceived,
        bytesSent: st.udp.bytesSent,
        packetsDropped: st.packetsDropped,
        heapUsedBytes: getHeapStatistics().used_heap_size,
        sendBuffersHeld: sendRefs.size,
        poolBuffersInUse: 0,
        exit: '',
        stalled: false,
        silentMs: 0,
      },
      udp: st.udp,
      conns: host.statsSnapshot(),
    } satisfies P.WorkerControl)
  }, init.statsIntervalMs)

  const commands = new RecordReader(
    RecordRing.attach(init.toWorker),
    (r, at, x) => host.command(r, at, x),
    () => host.commandsDone(),
    P.CHANNEL,
  )
  port.on('message', (msg: P.MainControl | null) => {
    if (isRecordChannelMessage(msg)) {
      commands.message(msg)
      return
    }
    if (msg.type === 'crash') {
      // Test hook: an uncaught exception, exactly what a bug in the worker would raise.
      setImmediate(() => {
        throw new Error(msg.message)
      })
      return
    }
    if (msg.type === 'block') {
      // Test hook: hold the event loop, as a spinning bug would.
      setImmediate(() => {
        const until = performance.now() + msg.ms
        while (performance.now() < until) {
          // busy
        }
      })
      return
    }
    if (msg.type === 'close') {
      clearInterval(statsTimer)
      void endpoint.destroy().finally(() => {
        port.postMessage({ type: 'closed' } satisfies P.WorkerControl)
        port.close()
      })
    }
  })
}

void main()
