/**
 * The engine workers of a multi-core endpoint (see ./cluster.ts): starting them one socket after
 * another on one port, steering packets to them by connection ID, watching for stalls and
 * deaths, stopping them, and the batched records exchanged with them (./protocol.ts), which
 * keep the application thread's mirror of their connections up to date.
 */
import { Worker } from 'node:worker_threads'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import {
  StoqEngineError,
  StoqSocketError,
  StoqUnsupportedError,
  type ConnectionStatsSnapshot,
  type EngineCloseInfo,
  type EngineEventSink,
  type SocketAddress,
  type TransportParameters,
  type UdpBindOptions,
  type UdpIo,
  type UdpIoStats,
  type UdpReceiver,
} from '@stoq/interface'
import { RecordReader, RecordRing, RecordWriter, createBufferPool, isRecordChannelMessage, type SharedBufferPool } from '@stoq/mempool'
import { attachCidSteering, closeSocketFd } from '@stoq/hwaccel'
import * as P from './protocol.js'

/** Stream bytes the application may hand to a worker before the engine took them, per stream. */
export const SEND_WINDOW = 1 << 20
export const DGRAM_WINDOW = 128
export const STATS_INTERVAL_MS = 1000
/** A worker silent this long is reported stalled (workers report at least three times as often). */
export const STALL_MS = 5000
export const EMPTY = new Uint8Array(0)
export const CLOSE_WAIT_MS = 5000

export interface WorkerClusterOptions {
  workers: number
  engine: 'auto' | 'quinn' | 'quiche'
  udpBackend: 'gro' | 'uring'
  /** CPU lists; worker i is pinned to `cpus[i % cpus.length]` (empty: not pinned). */
  cpus: number[]
  transport: TransportParameters
  keyExchange?: import('@stoq/interface').KeyExchangeGroup[] | undefined
  /** Most 64 KiB buffers of each worker's shared pool. */
  poolMaxBuffers: number
  /** A worker silent for longer than this is reported stalled (default STALL_MS). */
  stallMs?: number
  /** Servers whose session tickets each worker keeps for the connections it dials. */
  sessionCacheSize?: number
}

export interface MStream {
  sid: number
  credit: number
  want: boolean
  stop: number
  finSent: boolean
  complete: boolean
  inQ: { slot: number; off: number; len: number; fin: boolean }[]
  reset: number
  readStopped: boolean
}

export interface MConn {
  id: number
  w: number
  peer: SocketAddress
  established: boolean
  closed: boolean
  alpn: string
  serverName: string | null
  certificates: Uint8Array[] | null
  maxDgram: number
  stats: ConnectionStatsSnapshot | null
  streams: Map<number, MStream>
  reserved: [number[], number[]]
  dgramIn: { slot: number; len: number }[]
  dgramCredit: number
  dgramReadBack: number
}

/** Records per direction's ring; tests make it tiny so that writers spill (@internal). */
export const ringShape = { capacity: P.RING_CAPACITY }

export interface WorkerSlot {
  index: number
  worker: Worker
  pool: SharedBufferPool
  alive: boolean
  fd: number
  /** Position of its socket in the kernel's reuseport group (-1 once gone). */
  socketIndex: number
  /** Records to the worker, and from it. */
  out: RecordWriter
  in: RecordReader
  /** Buffer the current turn's writes are packed into (-1: none), and how full it is. */
  pack: number
  packLen: number
  load: P.WorkerLoad
  udp: UdpIoStats | null
  closing: boolean
  closedWaiter: (() => void) | null
  /** performance.now() when the worker was last heard from (records, messages, stats). */
  lastHeard: number
  stalled: boolean
}

/**
 * The worker's options: this process's Node flags, except those a worker thread cannot take
 * (Node refuses per-process flags such as --expose-gc or --max-old-space-size in a worker's
 * execArgv with ERR_WORKER_INVALID_EXEC_ARGV; a server started with a heap cap is common).
 * They are left out, a heap cap becomes the worker's own `resourceLimits`, and the
 * endpoint's `engineChoice` names what was left out (`droppedWorkerFlags`). Only if the worker
 * is still refused is it unsupported (`workers: 'auto'` then stays on the application thread).
 */
export const droppedWorkerFlags: string[] = []

function newWorker(script: URL, init: P.WorkerInit): Worker {
  const argv = process.execArgv.filter((a) => !a.startsWith('--input-type') && a !== '-e' && a !== '--eval')
  let first: Error
  try {
    return new Worker(script, { workerData: init, execArgv: argv })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw err
    first = err as Error
  }
  // "Initiated Worker with invalid execArgv flags: --a, --b=1"
  const bad = new Set(
    (first.message.split('flags:')[1] ?? '')
      .split(',')
      .map((f) => f.trim())
      .filter((f) => f.length > 0),
  )
  const kept = argv.filter((a) => !bad.has(a))
  const heap = [...bad].map((f) => /^--max[-_]old[-_]space[-_]size=(\d+)$/.exec(f)).find((m) => m !== null)
  let worker: Worker
  try {
    worker = new Worker(script, {
      workerData: init,
      execArgv: kept,
      ...(heap ? { resourceLimits: { maxOldGenerationSizeMb: Number(heap[1]) } } : {}),
    })
  } catch (err) {
    throw new StoqUnsupportedError(
      'engine workers',
      `Node was started with flags a worker thread cannot take (${first.message}; without them: ${(err as Error).message})`,
    )
  }
  for (const f of bad) if (!droppedWorkerFlags.includes(f)) droppedWorkerFlags.push(f)
  return worker
}

function workerScript(): URL {
  const candidates = [
    new URL('./workers/engine-worker.js', import.meta.url), // dist/index.js or a dist chunk
    new URL('./engine-worker.js', import.meta.url), // dist/workers/
    new URL('../../dist/workers/engine-worker.js', import.meta.url), // src/workers/ (tests run the sources)
  ]
  for (const url of candidates) if (existsSync(fileURLToPath(url))) return url
  throw new StoqUnsupportedError('engine workers', 'engine-worker.js was not found next to @stoq/transport-core (build the package)')
}

/**
 * The workers and the mirror of their connections; `WorkerEngine` (./cluster.ts) puts the
 * QuicEngine contract on top.
 */
export class WorkerSupervisor {
  readonly specificationVersion = 'v1' as const
  readonly maxPacketSize: number
  readonly io: UdpIo & { readonly choice: string }
  protected readonly opts: WorkerClusterOptions
  protected readonly slots: WorkerSlot[] = []
  protected readonly conns = new Map<number, MConn>()
  protected nextOutgoing = 0
  protected receiver: UdpReceiver | null = null
  protected readonly events: (() => void)[] = []
  protected readonly poolBlocked = new Set<MStream & { conn: MConn }>()
  /** Connections whose application read datagrams since the last flush (their credit goes back). */
  protected readonly dgramRead = new Set<MConn>()
  protected flushQueued = false
  protected wakeQueued = false
  /** Buffers of a worker's pool that sending may hold at once (three quarters of its limit). */
  protected readonly sendPoolLimit: number
  protected destroyed = false
  protected port = 0
  protected engineName = ''

  constructor(options: WorkerClusterOptions) {
    this.opts = options
    this.sendPoolLimit = Math.max(8, Math.floor((options.poolMaxBuffers * 3) / 4))
    this.maxPacketSize = options.transport.maxUdpPayloadSize
    const self = this
    this.io = {
      specificationVersion: 'v1',
      get backend() {
        return `${options.udpBackend}×${options.workers} workers`
      },
      get choice() {
        return `${options.workers} engine workers (${self.engineName || options.engine}), each with its own ${options.udpBackend} socket on one port (SO_REUSEPORT, steered by connection ID)`
      },
      maxSegments: 1,
      pendingSends: 0,
      get localAddress() {
        return self.address
      },
      bind: (o, r) => this.start(o, r),
      send: () => {
        throw new StoqEngineError('workers', 'a multi-core endpoint sends from its workers')
      },
      stats: () => this.udpStats(),
      close: () => this.stop(),
    }
  }

  protected address: SocketAddress | null = null

  /** The workers' engine, e.g. `quinn×2` (`workers` before they started). */
  get name(): string {
    return this.engineName ? `${this.engineName}×${this.opts.workers}` : 'workers'
  }

  // Workers ---------------------------------------------------------------------------------

  protected async start(bind: UdpBindOptions, receiver: UdpReceiver): Promise<SocketAddress> {
    this.receiver = receiver
    const script = workerScript()
    const n = this.opts.workers
    let port = bind.port
    try {
      // One after another: a socket's index in the reuseport group is the order it joined.
      for (let i = 0; i < n; i++) {
        const slot = await this.spawn(i, script, { ...bind, port }, i)
        this.slots.push(slot)
        port = this.port
      }
      this.steer()
      this.stallTimer = setInterval(this.checkStalls, Math.min(1000, this.opts.stallMs ?? STALL_MS))
      this.stallTimer.unref()
    } catch (err) {
      await this.stop()
      throw err
    }
    return this.address!
  }

  protected spawn(index: number, script: URL, bind: UdpBindOptions, socketIndex: number): Promise<WorkerSlot> {
    const pool = createBufferPool({ bufferSize: 65536, initialBuffers: 64, maxBuffers: this.opts.poolMaxBuffers, shared: true })
    const cpus = this.opts.cpus.length > 0 ? [this.opts.cpus[index % this.opts.cpus.length]!] : []
    const toWorker = RecordRing.create({ width: P.RECORD_WIDTH, capacity: ringShape.capacity })
    const toMain = RecordRing.create({ width: P.RECORD_WIDTH, capacity: ringShape.capacity })
    const init: P.WorkerInit = {
      index,
      workers: this.opts.workers,
      engine: this.opts.engine,
      transport: this.opts.transport,
      keyExchange: this.opts.keyExchange,
      bind,
      udpBackend: this.opts.udpBackend,
      cpus,
      pool: pool.share(),
      toWorker: toWorker.handle,
      toMain: toMain.handle,
      // Often enough that a healthy worker never looks stalled.
      statsIntervalMs: Math.min(STATS_INTERVAL_MS, Math.floor((this.opts.stallMs ?? STALL_MS) / 3)),
      ...(this.opts.sessionCacheSize !== undefined ? { sessionCacheSize: this.opts.sessionCacheSize } : {}),
    }
    let worker: Worker
    try {
      worker = newWorker(script, init)
    } catch (err) {
      pool.close()
      return Promise.reject(err)
    }
    const slot: WorkerSlot = {
      index,
      worker,
      pool,
      alive: true,
      fd: -1,
      socketIndex,
      out: new RecordWriter(toWorker, worker, P.CHANNEL),
      in: new RecordReader(
        toMain,
        (r, at, x) => this.onRecord(slot, r, at, x),
        () => this.recordsDrained(slot),
        P.CHANNEL,
      ),
      pack: -1,
      packLen: 0,
      load: {
        index,
        alive: true,
        threadId: 0,
        cpus,
        connections: 0,
        eventLoopUtilization: 0,
        cpuPercent: -1,
        packetsReceived: 0,
        packetsSent: 0,
        bytesReceived: 0,
        bytesSent: 0,
        packetsDropped: 0,
        heapUsedBytes: 0,
        sendBuffersHeld: 0,
        poolBuffersInUse: 0,
        exit: '',
        stalled: false,
        silentMs: 0,
      },
      udp: null,
      closing: false,
      closedWaiter: null,
      lastHeard: performance.now(),
      stalled: false,
    }
    return new Promise((resolve, reject) => {
      let ready = false
      worker.on('message', (msg: P.WorkerControl | null) => {
        slot.lastHeard = performance.now()
        slot.stalled = false
        if (isRecordChannelMessage(msg)) {
          slot.in.message(msg)
          return
        }
        if (msg.type === 'ready') {
          ready = true
          slot.fd = msg.fd
          slot.udp = msg.udpStats
          this.address ??= msg.address
          this.port = msg.address.port
          this.engineName = msg.engine
          resolve(slot)
        } else if (msg.type === 'bind-error') {
          this.retire(slot)
          void worker.terminate()
          pool.close()
          reject(
            msg.code === 'STOQ_ERR_UNSUPPORTED'
              ? new StoqUnsupportedError(msg.feature ?? 'engine workers', msg.message)
              : new StoqSocketError(`engine worker ${index} could not bind: ${msg.message}`, { syscall: 'bind' }),
          )
        } else if (msg.type === 'stats') {
          slot.load = { ...msg.load, cpus: slot.load.cpus }
          slot.udp = msg.udp
          for (const [id, st, max, peer] of msg.conns) {
            const c = this.conns.get(id)
            if (c) {
              c.stats = st
              if (c.established) c.maxDgram = max
              if (peer !== undefined) c.peer = peer
            }
          }
        } else if (msg.type === 'closed') {
          slot.closedWaiter?.()
        }
      })
      worker.on('error', (err) => {
        if (!ready) {
          reject(new StoqEngineError('workers', `engine worker ${index} failed to start: ${err.message}`, { cause: err }))
          return
        }
        this.died(slot, `crashed: ${err.message}`, err)
      })
      worker.on('exit', (code) => {
        slot.closedWaiter?.()
        if (!ready) {
          reject(new StoqEngineError('workers', `engine worker ${index} exited with code ${code} before binding`))
          return
        }
        if (slot.alive && !slot.closing) this.died(slot, `exited with code ${code}`, null)
        this.retire(slot)
      })
    })
  }

  /**
   * Once a second: a live worker that sent nothing (not even its once-a-second stats) for
   * longer than the stall threshold has a blocked event loop. It is reported (stats and an
   * `error` event), never shown as healthy; its connections are not served meanwhile.
   */
  protected readonly checkStalls = (): void => {
    const now = performance.now()
    const limit = this.opts.stallMs ?? STALL_MS
    for (const slot of this.slots) {
      if (!slot.alive || slot.closing || slot.stalled) continue
      const silent = now - slot.lastHeard
      if (silent <= limit) continue
      slot.stalled = true
      this.receiver?.onError(
        new StoqEngineError(
          'workers',
          `engine worker ${slot.index} stalled: its event loop has not answered for ${Math.round(silent)} ms (threshold ${limit} ms); its ${slot.load.connections} connection(s) are not being served`,
        ),
      )
    }
  }

  /** Test hook: block worker `index`'s event loop for `ms`, as a spinning bug would. */
  blockWorker(index: number, ms: number): void {
    this.slots[index]?.worker.postMessage({ type: 'block', ms } satisfies P.MainControl)
  }

  /** The worker is gone or going: no records to it or from it any more. */
  protected retire(slot: WorkerSlot): void {
    slot.alive = false
    slot.out.close()
    slot.in.close()
  }

  /** A worker is gone: its connections fail with a typed error, its socket leaves the group. */
  protected died(slot: WorkerSlot, why: string, cause: Error | null): void {
    if (!slot.alive) return
    this.retire(slot)
    slot.load = { ...slot.load, alive: false, connections: 0, exit: why }
    const reason = new TextEncoder().encode(`engine worker ${slot.index} ${why}`)
    for (const c of [...this.conns.values()]) {
      if (c.w !== slot.index || c.closed) continue
      this.closeLocal(c, { remote: false, app: false, code: 0x1, reason, idleTimeout: false })
    }
    if (slot.fd >= 0 && this.port > 0) {
      try {
        closeSocketFd(slot.fd, this.port)
      } catch (err) {
        this.receiver?.onError(err as Error)
      }
    }
    // Its socket left the reuseport group (closed here, or already by the dying thread):
    // the kernel moved the group's last socket into its place.
    const live = this.slots.filter((s) => s.socketIndex >= 0).length
    const last = this.slots.find((s) => s.socketIndex === live - 1)
    if (last && last !== slot) last.socketIndex = slot.socketIndex
    slot.socketIndex = -1
    slot.fd = -1
    try {
      if (this.slots.some((s) => s.socketIndex >= 0)) this.steer()
    } catch (err) {
      this.receiver?.onError(err as Error)
    }
    this.receiver?.onError(
      new StoqEngineError('workers', `engine worker ${slot.index} ${why}; its connections were closed, the others continue`, cause ? { cause } : undefined),
    )
    this.wake()
  }

  /** (Re)attach the steering program: connection-ID prefix p → socket of worker p. */
  protected steer(): void {
    const live = this.slots.find((s) => s.alive && s.fd >= 0)
    if (!live) return
    const table = Array.from({ length: this.opts.workers }, (_, p) => {
      const s = this.slots[p]
      return s?.alive && s.socketIndex >= 0 ? s.socketIndex : -1
    })
    attachCidSteering(live.fd, table)
  }

  protected stallTimer: NodeJS.Timeout | null = null

  protected async stop(): Promise<void> {
    if (this.stallTimer) clearInterval(this.stallTimer)
    this.stallTimer = null
    const waits: Promise<void>[] = []
    for (const slot of this.slots) {
      if (!slot.alive) continue
      slot.closing = true
      waits.push(
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            void slot.worker.terminate().then(() => resolve())
          }, CLOSE_WAIT_MS)
          slot.closedWaiter = () => {
            clearTimeout(timer)
            resolve()
          }
          slot.worker.postMessage({ type: 'close' } satisfies P.MainControl)
        }),
      )
    }
    await Promise.all(waits)
    for (const slot of this.slots) {
      this.retire(slot)
      await slot.worker.terminate().catch(() => 0)
      try {
        slot.pool.close()
      } catch {
        // Already closed.
      }
    }
  }

  /** Test hook: make worker `index` throw an uncaught exception, as a bug would. */
  crashWorker(index: number, message = 'crash requested by a test'): void {
    this.slots[index]?.worker.postMessage({ type: 'crash', message } satisfies P.MainControl)
  }

  /** Per-worker load, as each worker last reported it (once a second). */
  workerStats(): P.WorkerLoad[] {
    return this.slots.map((s) => {
      let inUse = 0
      try {
        inUse = s.pool.stats().inUse
      } catch {
        // Closed with its worker.
      }
      const silentMs = s.alive ? Math.round(performance.now() - s.lastHeard) : 0
      return { ...s.load, connections: s.alive ? s.load.connections : 0, poolBuffersInUse: inUse, stalled: s.alive && s.stalled, silentMs }
    })
  }

  get droppedPackets(): number {
    let n = 0
    for (const s of this.slots) n += s.load.packetsDropped
    return n
  }

  protected udpStats(): UdpIoStats {
    const sum: UdpIoStats = {
      backend: this.io.backend,
      sendCalls: 0,
      packetsSent: 0,
      bytesSent: 0,
      receiveCalls: 0,
      packetsReceived: 0,
      bytesReceived: 0,
      sendErrors: 0,
      sendBufferSize: 0,
      receiveBufferSize: 0,
    }
    for (const s of this.slots) {
      const u = s.udp
      if (!u) continue
      sum.sendCalls += u.sendCalls
      sum.packetsSent += u.packetsSent
      sum.bytesSent += u.bytesSent
      sum.receiveCalls += u.receiveCalls
      sum.packetsReceived += u.packetsReceived
      sum.bytesReceived += u.bytesReceived
      sum.sendErrors += u.sendErrors
      sum.sendBufferSize = u.sendBufferSize
      sum.receiveBufferSize = u.receiveBufferSize
    }
    return sum
  }

  // Records ---------------------------------------------------------------------------------

  protected rec(w: number, op: number, id: number, sid = 0, a = 0, b = 0, c = 0, d = 0): void {
    const slot = this.slots[w]
    if (!slot?.alive) return
    slot.out.rec(op, id, sid, a, b, c, d)
    this.queueFlush()
  }

  protected extra(w: number, v: unknown): number {
    return this.slots[w]!.out.extra(v)
  }

  /**
   * No more records will name worker `w`'s current pack buffer: tell the worker (it gives the
   * buffer back once it consumed them all), or give back a pack no record named.
   */
  protected endPack(w: WorkerSlot): void {
    if (w.pack >= 0) {
      if (w.packLen > 0) this.rec(w.index, P.C_PACKED, 0, 0, w.pack)
      else w.pool.release(w.pack)
    }
    w.pack = -1
    w.packLen = 0
  }

  protected queueFlush(): void {
    if (this.flushQueued) return
    this.flushQueued = true
    setImmediate(this.flush)
  }

  protected readonly flush = (): void => {
    // Records written here go out with this flush: no second flush queued for them.
    for (const c of this.dgramRead) {
      this.rec(c.w, P.C_DGRAM_CREDIT, c.id, 0, c.dgramReadBack)
      c.dgramReadBack = 0
    }
    this.dgramRead.clear()
    // A pack buffer serves one turn's writes: the next turn starts a new one.
    for (const slot of this.slots) this.endPack(slot)
    this.flushQueued = false
    for (const slot of this.slots) if (slot.alive) slot.out.flush()
  }

  protected event(fn: () => void): void {
    this.events.push(fn)
  }

  /** Run the endpoint's cycle soon (it drains our events). */
  protected wake(): void {
    if (this.wakeQueued) return
    this.wakeQueued = true
    setImmediate(() => {
      this.wakeQueued = false
      if (!this.destroyed) this.receiver?.onBatchEnd()
    })
  }

  protected onRecord(slot: WorkerSlot, r: Float64Array, i: number, x: unknown[]): void {
    if (!slot.alive) return
    const op = r[i]!
    const id = r[i + 1]!
    const sid = r[i + 2]!
    const a = r[i + 3]!
    const b = r[i + 4]!
    const cc = r[i + 5]!
    if (op === P.E_INCOMING) {
      const c = this.newConn(id, slot.index, x[a] as SocketAddress)
      this.event(() => this.sink?.onIncoming(c.id, c.peer))
      return
    }
    const c = this.conns.get(id)
    if (c === undefined || c.closed) {
      if ((op === P.E_DATA || op === P.E_DGRAM) && a >= 0) slot.pool.release(a)
      return
    }
    switch (op) {
      case P.E_ESTABLISHED: {
        const info = x[a] as P.EstablishedInfo
        c.established = true
        c.alpn = info.alpn
        c.serverName = info.serverName
        c.certificates = info.certificates
        c.maxDgram = info.maxDatagram
        this.event(() => this.sink?.onEstablished(id))
        break
      }
      case P.E_CLOSED: {
        const info = x[a] as P.ClosedInfo
        if (info.stats) c.stats = info.stats
        this.closeLocal(c, info)
        break
      }
      case P.E_RESERVE:
        c.reserved[(sid & 2) === 0 ? 0 : 1].push(sid)
        break
      case P.E_DATA: {
        const s = this.stream(c, sid)
        if (s.readStopped) {
          if (a >= 0) slot.pool.release(a)
          break
        }
        s.inQ.push({ slot: a, off: 0, len: b, fin: cc === 1 })
        this.event(() => this.sink?.onStreamReadable(id, sid))
        break
      }
      case P.E_RESET: {
        const s = this.stream(c, sid)
        s.reset = a
        this.event(() => this.sink?.onStreamReadable(id, sid))
        break
      }
      case P.E_STOPPED: {
        const s = this.stream(c, sid)
        s.stop = a
        if (s.want) this.writable(c, s)
        break
      }
      case P.E_CREDIT: {
        const s = c.streams.get(sid) as (MStream & { conn: MConn }) | undefined
        if (!s) break
        s.credit += a
        if (s.want) this.writable(c, s)
        break
      }
      case P.E_COMPLETE: {
        const s = c.streams.get(sid)
        if (!s) break
        s.complete = true
        if (s.inQ.length === 0) c.streams.delete(sid)
        break
      }
      case P.E_DGRAM:
        if (c.dgramIn.length === 0) this.event(() => this.sink?.onDatagramReadable(id))
        c.dgramIn.push({ slot: a, len: b })
        break
      case P.E_DGRAM_CREDIT:
        c.dgramCredit += a
        break
    }
  }

  /** After a drain of worker records: writers waiting for buffers, and the endpoint's cycle. */
  protected recordsDrained(slot: WorkerSlot): void {
    slot.lastHeard = performance.now()
    slot.stalled = false
    this.buffersBack(slot.index)
    this.wake()
  }

  /** Buffers of worker `w`'s pool came back: writers that waited for one may go on. */
  protected buffersBack(w: number): void {
    if (this.poolBlocked.size === 0) return
    for (const s of this.poolBlocked) if (s.conn.w === w && s.want) this.writable(s.conn, s)
  }

  protected writable(c: MConn, s: MStream & { conn: MConn }): void {
    s.want = false
    this.poolBlocked.delete(s)
    this.event(() => this.sink?.onStreamWritable(c.id, s.sid))
    this.wake()
  }

  protected closeLocal(c: MConn, info: EngineCloseInfo): void {
    c.closed = true
    for (const s of c.streams.values()) this.poolBlocked.delete(s as MStream & { conn: MConn })
    this.event(() => {
      // Streams stay readable during the close event (a peer's close delivers what fully
      // arrived); their buffers go back after it.
      this.sink?.onClosed(c.id, info)
      this.conns.delete(c.id)
      const pool = this.slots[c.w]?.pool
      if (pool) {
        for (const s of c.streams.values()) for (const e of s.inQ) if (e.slot >= 0) pool.release(e.slot)
        for (const d of c.dgramIn) pool.release(d.slot)
      }
      c.streams.clear()
      c.dgramIn.length = 0
    })
    this.wake()
  }

  protected newConn(id: number, w: number, peer: SocketAddress): MConn {
    const c: MConn = {
      id,
      w,
      peer,
      established: false,
      closed: false,
      alpn: '',
      serverName: null,
      certificates: null,
      maxDgram: -1,
      stats: null,
      streams: new Map(),
      reserved: [[], []],
      dgramIn: [],
      dgramCredit: DGRAM_WINDOW,
      dgramReadBack: 0,
    }
    this.conns.set(id, c)
    return c
  }

  protected stream(c: MConn, sid: number): MStream & { conn: MConn } {
    let s = c.streams.get(sid) as (MStream & { conn: MConn }) | undefined
    if (s === undefined) {
      s = {
        sid,
        conn: c,
        credit: SEND_WINDOW,
        want: false,
        stop: -1,
        finSent: false,
        complete: false,
        inQ: [],
        reset: -1,
        readStopped: false,
      }
      c.streams.set(sid, s)
    }
    return s
  }

  protected sink: EngineEventSink | null = null
}
