import { createRequire } from 'node:module'
import os from 'node:os'
import { Worker } from 'node:worker_threads'
import {
  StoqClosedError,
  StoqInvalidArgumentError,
  StoqSocketError,
  StoqUnsupportedError,
  type BufferPool,
  type SocketAddress,
  type UdpBindOptions,
  type UdpIo,
  type UdpReceiver,
  checkOptions,
} from '@stoq/interface'
import {
  DEFAULT_SOCKET_BUFFER_SIZE,
  DEFAULT_WORKER_POLL_TIMEOUT_MS,
  DEFAULT_WORKER_RECEIVE_SLOTS,
  DEFAULT_WORKER_SEND_HIGH_WATER,
  DEFAULT_WORKER_SEND_LOW_WATER,
  DEFAULT_WORKER_SEND_SLOTS,
  DEFAULT_WORKER_DRAIN_DEADLINE_US,
  DEFAULT_WORKER_SYSCALL_BATCH,
  WORKER_BUFFER_SIZE,
} from './defaults.js'
import { GSO_MAX_SEGMENTS, GSO_MAX_WRITE_BYTES_IPV4, GSO_MAX_WRITE_BYTES_IPV6 } from './gso-io.js'
import { type EventFdCalls, bindEventFdCalls, errnoName, errorMessage, loadLibc } from './koffi/libc.js'
import { checkBindTarget } from './address.js'
import { wantsReusePort } from './dgram-common.js'
import { AddressCodec } from './worker/address-codec.js'
import {
  type ControlLayout,
  RX_ADDR,
  RX_BUFFER,
  RX_LENGTH,
  RX_PORT,
  RX_SCOPE,
  RX_SEGMENT,
  SLEEP_AWAKE,
  SLEEP_RX_FULL,
  SLOT_WORDS,
  STATS_BYTE_OFFSET,
  STATS_COUNT,
  S_POLLS,
  S_RECEIVE_SYSCALLS,
  S_RX_RING_FULL,
  S_RX_TRUNCATED,
  S_SEND_ERRORS,
  S_SEND_SYSCALLS,
  S_SEND_WAITS,
  W_LAST_SEND_ERRNO,
  W_RX_HEAD,
  W_RX_TAIL,
  W_SIGNAL,
  W_SLEEP,
  W_SOCKET_CLOSING,
  W_STOP,
  W_TX_HEAD,
  W_TX_TAIL,
  controlLayout,
} from './worker/protocol.js'
import { WORKER_OPTION_KEYS, powerOfTwo, type WorkerUdpIoOptions, type WorkerUdpIoStats } from './worker/options.js'
import { createSlotPool } from './worker/slot-pool.js'
import { SendRing } from './worker/send-ring.js'
import type { UdpWorkerData, UdpWorkerMessage } from './worker/udp-worker.js'
import { source } from './worker/program.js'

/**
 * Internal: `io[kUdpWorker]()` returns the worker thread of a bound socket, so
 * that tests can kill it. Not exported from the package index.
 */
export const kUdpWorker = Symbol('stoq.hwaccel.udpWorker')

/** How long close() waits for the worker to stop by itself before terminating it. */
const STOP_TIMEOUT_MS = 5000

export type { WorkerUdpIoOptions, WorkerUdpIoStats } from './worker/options.js'
export { WORKER_OPTION_KEYS } from './worker/options.js'
export {
  DEFAULT_WORKER_DRAIN_DEADLINE_US,
  DEFAULT_WORKER_POLL_TIMEOUT_MS,
  DEFAULT_WORKER_RECEIVE_SLOTS,
  DEFAULT_WORKER_SEND_HIGH_WATER,
  DEFAULT_WORKER_SEND_LOW_WATER,
  DEFAULT_WORKER_SEND_SLOTS,
  DEFAULT_WORKER_SYSCALL_BATCH,
  WORKER_BUFFER_SIZE,
} from './defaults.js'

type State = 'idle' | 'binding' | 'bound' | 'failed' | 'closed'

interface WaitAsyncResult {
  async: boolean
  value: Promise<'ok' | 'not-equal' | 'timed-out'> | 'not-equal' | 'timed-out'
}
type WaitAsync = (typedArray: Int32Array, index: number, value: number) => WaitAsyncResult
const waitAsync = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync

/**
 * The drain that follows a waitAsync wake runs in a promise reaction, where an exception thrown by
 * the receiver would become an unhandled rejection. Rethrown on the next tick, it is an uncaught
 * exception, exactly as when the drain runs from setImmediate.
 */
function throwUncaught(err: unknown): void {
  process.nextTick(() => {
    throw err
  })
}

/**
 * UdpIo whose socket lives in a worker thread that talks to the kernel through
 * koffi: GSO sends (a UDP_SEGMENT cmsg per message, sendmmsg) and, unlike the
 * libuv-based backends, GRO receives: one read returns up to 64 KiB of
 * datagrams of one sender and `onPacket` reports their segment size.
 *
 * Main thread and worker share two rings of slots in a SharedArrayBuffer (see
 * worker/protocol.ts); each slot owns one 64 KiB buffer of a shared
 * BufferPool. `send()` copies the caller's bytes into a send slot (one copy
 * per super-buffer) and wakes the worker through an eventfd only when it
 * sleeps; received buffers are handed to `onPacket` straight from the shared
 * memory, so `data` is valid only during the call (copy it to keep it), and
 * the slot is given back to the worker when the call returns. The main thread
 * waits for the worker with `Atomics.waitAsync`, one wait per drain of the
 * rings: no message per packet, no polling.
 *
 * `bind` rejects with `StoqUnsupportedError` where koffi, libc, UDP_GRO or
 * UDP_SEGMENT are missing, so that callers can fall back to another backend.
 *
 * Zero-copy sends (a batcher writing packets straight into pool buffers and
 * handing over their indexes) are not wired yet; `sharedPool` is exposed for it.
 */
export class WorkerUdpIo implements UdpIo {
  readonly specificationVersion = 'v1' as const
  /** `gro` here; the io_uring subclass (uring-io.ts) says `uring`. */
  readonly backend: 'gro' | 'uring' = 'gro'
  readonly maxSegments = GSO_MAX_SEGMENTS
  /** The pool the slot buffers come from (shared memory). */
  readonly sharedPool: BufferPool

  private readonly ownsPool: boolean
  /** sendSlabs, then sendRegions → their index for the worker. */
  private readonly slabIds = new Map<ArrayBufferLike, number>()
  private readonly sendSlabs: SharedArrayBuffer[]
  private readonly sendRegions: Uint8Array[]
  protected readonly rxSlots: number
  protected readonly txSlots: number
  private readonly highWater: number
  private readonly lowWater: number
  private readonly socketBufferSize: number
  private readonly pollTimeoutMs: number
  private readonly syscallBatch: number
  /** `drainDeadlineUs` in milliseconds. */
  private readonly drainDeadlineMs: number
  private readonly cpus: number[]

  private state: State = 'idle'
  private failure: Error | null = null
  private closing: Promise<void> | null = null
  private receiver: UdpReceiver | null = null
  private local: SocketAddress | null = null
  private worker: Worker | null = null
  private exited: Promise<void> = Promise.resolve()
  private settleBind: ((message: UdpWorkerMessage | Error) => void) | null = null
  private eventFdCalls: EventFdCalls | null = null
  private eventFd = -1
  private socketFd = -1
  /** A descriptor the worker owns besides the socket (the uring worker's ring), -1 if none, and what it mapped of it. */
  private ringFd = -1
  private ringMaps: { address: number; length: number }[] = []
  /** What the worker reported about its engine at bind (the uring worker: the ring and its probes). */
  protected engineDetail = ''
  private v6 = true
  private readonly codec = new AddressCodec()

  // Per bind: shared control block and slot buffers.
  private layout: ControlLayout = controlLayout(2, 2)
  private control: SharedArrayBuffer | null = null
  private ctl: Int32Array<ArrayBufferLike> = new Int32Array(0)
  protected workerStats: Float64Array<ArrayBufferLike> = new Float64Array(0)
  private rxIndexes: number[] = []
  private txIndexes: number[] = []
  private rxViews: Uint8Array[] = []
  private txViews: Uint8Array[] = []
  /** Per receive slot: the last exact-length view handed out, reused while lengths repeat. */
  private rxSub: (Uint8Array | null)[] = []
  private rxSubLength = new Int32Array(0)
  private buffersHeld = false
  private armed = false

  // Ring positions this thread owns (the send ring's are in `ring`).
  private rxTail = 0

  private pendingTokens = 0
  private wantDrain = false
  private buffersDetail = 'not bound'
  private df = false
  private threadId = 0
  private affinityDetail = 'not bound'
  private effectiveSendBuffer = 0
  private effectiveReceiveBuffer = 0
  private readonly counters = {
    sendCalls: 0,
    packetsSent: 0,
    bytesSent: 0,
    receiveCalls: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    gsoWrites: 0,
    groBuffers: 0,
    wakeups: 0,
    overflowSends: 0,
    /** Sends handed to the worker in place (their data was in a shared send slab). */
    zeroCopySends: 0,
    drainDeferrals: 0,
  }
  /** The send slots and the sends waiting for one (worker/send-ring.ts). */
  private readonly ring = new SendRing(this.slabIds, this.counters)

  constructor(options: Partial<WorkerUdpIoOptions> = {}) {
    checkOptions(options, this.acceptedOptions())
    this.rxSlots = powerOfTwo('receiveSlots', options.receiveSlots ?? DEFAULT_WORKER_RECEIVE_SLOTS)
    this.txSlots = powerOfTwo('sendSlots', options.sendSlots ?? DEFAULT_WORKER_SEND_SLOTS)
    const defaultHigh = options.sendSlots === undefined ? DEFAULT_WORKER_SEND_HIGH_WATER : Math.max(1, (this.txSlots * 3) >> 2)
    const defaultLow = options.sendSlots === undefined ? DEFAULT_WORKER_SEND_LOW_WATER : this.txSlots >> 2
    this.highWater = options.sendQueueHighWater ?? defaultHigh
    this.lowWater = options.sendQueueLowWater ?? Math.min(defaultLow, this.highWater - 1)
    if (!Number.isInteger(this.highWater) || this.highWater < 1) {
      throw new StoqInvalidArgumentError('sendQueueHighWater', 'expected a positive integer (send slots)')
    }
    if (!Number.isInteger(this.lowWater) || this.lowWater < 0 || this.lowWater >= this.highWater) {
      throw new StoqInvalidArgumentError('sendQueueLowWater', 'expected an integer from 0 to sendQueueHighWater - 1')
    }
    const slabs = options.sendSlabs ?? []
    if (!Array.isArray(slabs) || !slabs.every((x) => x instanceof SharedArrayBuffer)) {
      throw new StoqInvalidArgumentError('sendSlabs', 'expected an array of SharedArrayBuffer')
    }
    this.sendSlabs = this.zeroCopySupported() ? slabs.slice() : []
    for (const [i, sab] of this.sendSlabs.entries()) this.slabIds.set(sab, i)
    const regions = options.sendRegions ?? []
    if (
      !Array.isArray(regions) ||
      !regions.every((x) => x instanceof Uint8Array && x.byteOffset === 0 && x.byteLength === x.buffer.byteLength && !(x.buffer instanceof SharedArrayBuffer))
    ) {
      throw new StoqInvalidArgumentError('sendRegions', 'expected an array of Uint8Array, each spanning a whole ArrayBuffer over native memory')
    }
    this.sendRegions = this.zeroCopySupported() ? regions.slice() : []
    for (const [i, v] of this.sendRegions.entries()) this.slabIds.set(v.buffer, this.sendSlabs.length + i)
    this.socketBufferSize = options.socketBufferSize ?? DEFAULT_SOCKET_BUFFER_SIZE
    if (!Number.isInteger(this.socketBufferSize) || this.socketBufferSize < 1024) {
      throw new StoqInvalidArgumentError('socketBufferSize', 'expected an integer of at least 1024 (bytes)')
    }
    this.pollTimeoutMs = options.pollTimeoutMs ?? DEFAULT_WORKER_POLL_TIMEOUT_MS
    if (!Number.isInteger(this.pollTimeoutMs) || this.pollTimeoutMs < 1 || this.pollTimeoutMs > 10_000) {
      throw new StoqInvalidArgumentError('pollTimeoutMs', 'expected an integer from 1 to 10000 (ms)')
    }
    const online = os.availableParallelism()
    this.cpus = options.cpus ?? []
    if (!Array.isArray(this.cpus) || this.cpus.some((c) => !Number.isInteger(c) || c < 0 || c >= Math.min(online, 1024))) {
      throw new StoqInvalidArgumentError('cpus', `expected an array of CPU numbers from 0 to ${online - 1}`)
    }
    this.cpus = [...this.cpus]
    this.syscallBatch = options.syscallBatch ?? DEFAULT_WORKER_SYSCALL_BATCH
    if (!Number.isInteger(this.syscallBatch) || this.syscallBatch < 1 || this.syscallBatch > 1024) {
      throw new StoqInvalidArgumentError('syscallBatch', 'expected an integer from 1 to 1024')
    }
    const drainUs = options.drainDeadlineUs ?? DEFAULT_WORKER_DRAIN_DEADLINE_US
    if (typeof drainUs !== 'number' || !Number.isInteger(drainUs) || drainUs < 100 || drainUs > 1_000_000) {
      throw new StoqInvalidArgumentError('drainDeadlineUs', `expected an integer from 100 to 1000000 (microseconds), got ${String(drainUs)}`)
    }
    this.drainDeadlineMs = drainUs / 1000
    if (options.pool !== undefined) {
      const pool = options.pool
      if (typeof pool !== 'object' || pool === null || typeof pool.tryAcquire !== 'function' || typeof pool.view !== 'function') {
        throw new StoqInvalidArgumentError('pool', 'expected a BufferPool')
      }
      if (!(pool.bufferSize >= WORKER_BUFFER_SIZE)) {
        throw new StoqInvalidArgumentError('pool', `expected buffers of at least ${WORKER_BUFFER_SIZE} bytes, got ${pool.bufferSize}`)
      }
      this.sharedPool = pool
      this.ownsPool = false
    } else {
      this.sharedPool = createSlotPool(this.rxSlots + this.txSlots, WORKER_BUFFER_SIZE)
      this.ownsPool = true
    }
  }

  get pendingSends(): number {
    return this.pendingTokens
  }

  get localAddress(): SocketAddress | null {
    return this.local
  }

  /** Bound with Don't Fragment set (see `UdpIo.dontFragment`). */
  get dontFragment(): boolean {
    return this.state === 'bound' && this.df
  }

  /**
   * The socket's file descriptor while bound (the worker thread uses it; the fd table is
   * the process's), e.g. for `attachCidSteering`; -1 when not bound. Do not close it.
   */
  get fd(): number {
    return this.state === 'bound' ? this.socketFd : -1
  }

  // Hooks for the backends that run another worker program over the same rings (uring-io.ts).

  /** The option keys this backend accepts (a subclass adds its own). Called from the constructor. */
  protected acceptedOptions(): readonly string[] {
    return WORKER_OPTION_KEYS
  }

  /** Source text of the worker program, run with `workerData` and `require`. */
  protected workerSource(): string {
    return source()
  }

  /** Fields the worker program needs besides `UdpWorkerData`. */
  protected workerExtras(): Record<string, unknown> {
    return {}
  }

  /** How messages name this backend. */
  protected backendLabel(): string {
    return 'UDP worker backend'
  }

  /** Whether the worker program reads zero-copy send slots (the gro worker does). */
  protected zeroCopySupported(): boolean {
    return true
  }

  /** Where each send region starts, for the worker (koffi is loadable: bind checked). */
  private regionAddresses(): number[] {
    if (this.sendRegions.length === 0) return []
    const koffi = createRequire(import.meta.url)('koffi') as { address(value: unknown): bigint }
    return this.sendRegions.map((v) => Number(koffi.address(v)))
  }

  /** Why this backend cannot run here before anything is allocated, or null. */
  protected precheck(): string | null {
    return null
  }

  async bind(options: UdpBindOptions, receiver: UdpReceiver): Promise<SocketAddress> {
    if (this.state === 'closed' || this.state === 'failed') throw new StoqClosedError('UDP socket')
    if (this.state !== 'idle') throw new StoqSocketError('UDP socket is already bound')
    const family = checkBindTarget(options.host, options.port)
    const reusePort = wantsReusePort(options)
    const feature = this.backend
    const label = this.backendLabel()
    const loaded = loadLibc()
    if (!loaded.ok) throw new StoqUnsupportedError(feature, `${label} unavailable: ${loaded.reason}`)
    if (waitAsync === undefined) throw new StoqUnsupportedError(feature, `${label} unavailable: Atomics.waitAsync is missing`)
    const refused = this.precheck()
    if (refused !== null) throw new StoqUnsupportedError(feature, `${label} unavailable: ${refused}`)
    let koffiPath: string
    try {
      koffiPath = createRequire(import.meta.url).resolve('koffi')
      this.eventFdCalls ??= bindEventFdCalls(loaded.libc)
    } catch (err) {
      throw new StoqUnsupportedError(feature, `${label} unavailable: ${errorMessage(err)}`)
    }
    const words = this.codec.parse(options.host)
    this.v6 = family === 6

    this.setUpRings()
    const eventFd = this.eventFdCalls!.open()
    if (eventFd < 0) {
      this.releaseBuffers()
      throw new StoqSocketError(`eventfd() failed: ${errnoName(-eventFd)}`, { syscall: 'eventfd', errno: errnoName(-eventFd) })
    }
    this.eventFd = eventFd
    this.state = 'binding'
    this.receiver = receiver
    const data: UdpWorkerData & Record<string, unknown> = {
      ...this.workerExtras(),
      koffiPath,
      libcName: loaded.libc.name,
      control: this.control!,
      layout: this.layout,
      rxViews: this.rxViews,
      rxIndexes: this.rxIndexes,
      txViews: this.txViews,
      sendSlabs: this.sendSlabs,
      sendRegions: this.regionAddresses(),
      eventFd,
      bind: {
        v6: this.v6,
        words: [words[0]!, words[1]!, words[2]!, words[3]!],
        scope: words[4]!,
        port: options.port,
        ipv6Only: this.v6 && options.ipv6Only,
        sendBufferSize: options.sendBufferSize ?? this.socketBufferSize,
        receiveBufferSize: options.receiveBufferSize ?? this.socketBufferSize,
        reusePort,
      },
      pollTimeoutMs: this.pollTimeoutMs,
      receiveBatch: Math.min(this.syscallBatch, this.rxSlots),
      sendBatch: Math.min(this.syscallBatch, this.txSlots),
      cpus: this.cpus,
    }

    const first = new Promise<UdpWorkerMessage | Error>((resolve) => {
      this.settleBind = resolve
    })
    let worker: Worker
    try {
      // The worker program is CommonJS text run with `eval`: flags that change how eval'd
      // code is read (`node --input-type=module ...`) must not reach it.
      const execArgv = process.execArgv.filter((a, i, all) => !a.startsWith('--input-type') && all[i - 1] !== '--input-type')
      worker = new Worker(this.workerSource(), { eval: true, workerData: data, execArgv })
    } catch (err) {
      this.finish()
      this.state = 'idle'
      this.receiver = null
      throw new StoqUnsupportedError(feature, `cannot start the UDP worker: ${errorMessage(err)}`)
    }
    this.worker = worker
    worker.on('message', this.onWorkerMessage)
    worker.on('error', this.onWorkerError)
    this.exited = new Promise((resolve) => {
      worker.once('exit', (code) => {
        this.onWorkerExit(code)
        resolve()
      })
    })

    const outcome = await first
    this.settleBind = null
    // Known before anything else, so that finish() can close the socket should the worker die holding it.
    if (!(outcome instanceof Error) && outcome.type === 'bound') {
      this.socketFd = outcome.socketFd
      this.ringFd = outcome.ringFd ?? -1
      this.ringMaps = outcome.ringMaps ?? []
    }
    if (this.isClosed()) {
      // close() ran meanwhile: it stops the worker and releases everything. Reject
      // only once close() has resolved, as the dgram backends do.
      await this.closing
      throw new StoqClosedError('UDP socket')
    }
    if (outcome instanceof Error || outcome.type !== 'bound') {
      await this.exited
      if (this.isClosed()) {
        await this.closing
        throw new StoqClosedError('UDP socket')
      }
      this.finish()
      this.state = 'idle'
      this.receiver = null
      if (outcome instanceof Error) throw new StoqSocketError(`UDP worker failed during bind: ${outcome.message}`, { syscall: 'bind' }, { cause: outcome })
      const where = `${options.host} port ${options.port}`
      const errno = outcome.errno > 0 ? errnoName(outcome.errno) : ''
      if (outcome.type === 'bind-error' && outcome.kind === 'unsupported')
        throw new StoqUnsupportedError(feature, `${outcome.message}${errno ? ` (${errno})` : ''}`)
      throw new StoqSocketError(`Cannot bind UDP socket to ${where}: ${outcome.syscall} ${errno || outcome.message}`, {
        syscall: outcome.syscall,
        errno,
      })
    }
    this.effectiveSendBuffer = outcome.sendBufferSize
    this.effectiveReceiveBuffer = outcome.receiveBufferSize
    this.buffersDetail = outcome.buffersDetail
    this.df = outcome.dontFragment
    this.threadId = outcome.threadId
    this.affinityDetail = outcome.affinityDetail
    this.engineDetail = outcome.engineDetail ?? ''
    const [w0, w1, w2, w3] = outcome.words as [number, number, number, number]
    this.local = this.codec.decode(w0, w1, w2, w3, outcome.port, outcome.scope)
    this.state = 'bound'
    this.arm()
    return this.local
  }

  /** A method, so that TypeScript does not narrow `state` across an await. */
  private isClosed(): boolean {
    return this.state === 'closed'
  }

  /** Take the slot buffers and build the control block for a new worker. */
  private setUpRings(): void {
    const pool = this.sharedPool
    const rx: number[] = []
    const tx: number[] = []
    try {
      for (let i = 0; i < this.rxSlots; i++) rx.push(pool.acquire())
      for (let i = 0; i < this.txSlots; i++) tx.push(pool.acquire())
    } catch (err) {
      for (const index of [...rx, ...tx]) pool.release(index)
      throw err
    }
    const views = (indexes: number[]): Uint8Array[] => indexes.map((i) => pool.view(i).subarray(0, WORKER_BUFFER_SIZE))
    this.rxIndexes = rx
    this.txIndexes = tx
    this.buffersHeld = true
    this.rxViews = views(rx)
    this.txViews = views(tx)
    if (!this.rxViews.every((v) => v.buffer instanceof SharedArrayBuffer)) {
      this.releaseBuffers()
      throw new StoqInvalidArgumentError('pool', 'expected a pool of SharedArrayBuffer memory (e.g. createBufferPool({ shared: true }))')
    }
    this.layout = controlLayout(this.rxSlots, this.txSlots)
    const control = new SharedArrayBuffer(this.layout.bytes)
    this.control = control
    this.ctl = new Int32Array(control)
    this.workerStats = new Float64Array(control, STATS_BYTE_OFFSET, STATS_COUNT)
    this.rxSub = new Array<Uint8Array | null>(this.rxSlots).fill(null)
    this.rxSubLength = new Int32Array(this.rxSlots).fill(-1)
    this.ring.reset(this.ctl, this.layout.txBase, this.txSlots, this.txViews)
    this.rxTail = 0
    this.armed = false
  }

  private releaseBuffers(): void {
    if (!this.buffersHeld) return
    this.buffersHeld = false
    for (const index of this.rxIndexes) this.sharedPool.release(index)
    for (const index of this.txIndexes) this.sharedPool.release(index)
    this.rxIndexes = []
    this.txIndexes = []
    this.rxViews = []
    this.txViews = []
    this.rxSub = []
  }

  send(data: Uint8Array, segmentSize: number, to: SocketAddress, token: number): boolean {
    if (this.state !== 'bound') {
      throw this.failure !== null
        ? new StoqClosedError('UDP socket', `UDP socket failed: ${this.failure.message}`, { cause: this.failure })
        : new StoqClosedError('UDP socket')
    }
    if (!(segmentSize >= 1) || segmentSize !== Math.floor(segmentSize)) {
      throw new StoqInvalidArgumentError('segmentSize', `expected a positive integer, got ${segmentSize}`)
    }
    const ring = this.ring
    const dest = ring.dest
    this.codec.encode(to, dest, 0)
    const c = this.counters
    const length = data.length
    this.pendingTokens++
    if (segmentSize >= length) {
      ring.enqueue(data, 0, length, 0, token)
      c.sendCalls++
      c.packetsSent++
      c.bytesSent += length
    } else {
      // One message carries at most GSO_MAX_SEGMENTS segments and at most the
      // largest UDP payload; a bigger super-buffer becomes several messages,
      // and its token is reported when the last one completes.
      const maxBytes = AddressCodec.isMapped(dest[0]!, dest[1]!, dest[2]!) ? GSO_MAX_WRITE_BYTES_IPV4 : GSO_MAX_WRITE_BYTES_IPV6
      const perWrite = Math.max(1, Math.min(GSO_MAX_SEGMENTS, Math.floor(maxBytes / segmentSize)))
      const chunk = perWrite * segmentSize
      for (let off = 0; off < length; off += chunk) {
        const end = Math.min(off + chunk, length)
        const n = end - off
        const gso = n > segmentSize
        ring.enqueue(data, off, n, gso ? segmentSize : 0, end === length ? token : -1)
        c.sendCalls++
        c.packetsSent += gso ? Math.ceil(n / segmentSize) : 1
        c.bytesSent += n
        if (gso) c.gsoWrites++
      }
    }
    this.publish()
    if (((ring.head - ring.done) | 0) + ring.ovCount >= this.highWater) {
      this.wantDrain = true
      return false
    }
    return true
  }

  /**
   * Publish filled send slots and wake the worker if it sleeps, at most twice per
   * event-loop turn: the first publish of a turn wakes it at once (it sends while we fill
   * more), later ones only move the head, and one check at the end of the turn wakes it
   * again if it went back to sleep meanwhile. A batcher flush issues one send per run of
   * packets, and an eventfd write per send cost the sender ~10-20% of its main thread.
   */
  private publish(): void {
    const ctl = this.ctl
    Atomics.store(ctl, W_TX_HEAD, this.ring.head)
    if (this.wakeCheckQueued) return
    this.wakeCheckQueued = true
    queueMicrotask(this.endOfTurn)
    this.wakeIfAsleep()
  }

  private wakeCheckQueued = false

  private readonly endOfTurn = (): void => {
    this.wakeCheckQueued = false
    if (this.state === 'bound') this.wakeIfAsleep()
  }

  private wakeIfAsleep(): void {
    const ctl = this.ctl
    if (Atomics.load(ctl, W_SLEEP) !== SLEEP_AWAKE && Atomics.exchange(ctl, W_SLEEP, SLEEP_AWAKE) !== SLEEP_AWAKE) this.wake()
  }

  private wake(): void {
    if (this.eventFd < 0) return
    this.counters.wakeups++
    this.eventFdCalls!.signal(this.eventFd)
  }

  /** Wait for the worker's next signal, or drain at once (on the next turn) when work is already there. */
  private arm(): void {
    if (this.state !== 'bound' || this.armed) return
    const ctl = this.ctl
    const seen = Atomics.load(ctl, W_SIGNAL)
    this.armed = true
    if (Atomics.load(ctl, W_RX_HEAD) !== this.rxTail || Atomics.load(ctl, W_TX_TAIL) !== this.ring.done) {
      setImmediate(this.onSignal)
      return
    }
    const result = waitAsync!(ctl, W_SIGNAL, seen)
    if (result.async) (result.value as Promise<unknown>).then(this.onSignal).catch(throwUncaught)
    else setImmediate(this.onSignal)
  }

  private readonly onSignal = (): void => {
    this.armed = false
    if (this.state !== 'bound') return
    try {
      this.drain()
    } finally {
      this.arm()
    }
  }

  /** Report completed sends, then hand received buffers to the receiver (hot). */
  private drain(): void {
    this.completeSends()
    const receiver = this.receiver!
    const ctl = this.ctl
    const head = Atomics.load(ctl, W_RX_HEAD)
    const mask = this.rxSlots - 1
    const rxBase = this.layout.rxBase
    const c = this.counters
    let delivered = 0
    const freedFrom = this.rxTail
    const started = performance.now()
    while (this.rxTail !== head) {
      if (delivered > 0 && performance.now() - started > this.drainDeadlineMs) {
        // The rest waits for the next turn (arm() sees it and schedules one at once).
        c.drainDeferrals++
        break
      }
      const k = this.rxTail & mask
      const slot = rxBase + k * SLOT_WORDS
      const length = ctl[slot + RX_LENGTH]!
      try {
        if (length >= 0) {
          const segment = ctl[slot + RX_SEGMENT]!
          const from = this.codec.decode(
            ctl[slot + RX_ADDR]!,
            ctl[slot + RX_ADDR + 1]!,
            ctl[slot + RX_ADDR + 2]!,
            ctl[slot + RX_ADDR + 3]!,
            ctl[slot + RX_PORT]!,
            ctl[slot + RX_SCOPE]!,
          )
          c.receiveCalls++
          c.bytesReceived += length
          if (segment > 0 && segment < length) {
            c.packetsReceived += Math.ceil(length / segment)
            c.groBuffers++
          } else {
            c.packetsReceived++
          }
          delivered++
          receiver.onPacket(this.rxData(ctl[slot + RX_BUFFER]!, length), segment > 0 && segment < length ? segment : length, from)
        }
      } finally {
        // The buffer goes back to the worker once onPacket has returned (or thrown).
        this.rxTail = (this.rxTail + 1) | 0
        Atomics.store(ctl, W_RX_TAIL, this.rxTail)
      }
      if (this.state !== 'bound') return // closed from inside onPacket
    }
    if (this.rxTail !== freedFrom && Atomics.compareExchange(ctl, W_SLEEP, SLEEP_RX_FULL, SLEEP_AWAKE) === SLEEP_RX_FULL) this.wake()
    if (delivered > 0) receiver.onBatchEnd()
  }

  /** The exact-length view of receive buffer `k` (reused while the length repeats, so steady flows allocate nothing). */
  private rxData(k: number, length: number): Uint8Array {
    const full = this.rxViews[k]!
    if (length === full.length) return full
    if (this.rxSubLength[k] === length) return this.rxSub[k]!
    const view = full.subarray(0, length)
    this.rxSub[k] = view
    this.rxSubLength[k] = length
    return view
  }

  /** Report the sends the worker has written (in ring order), refill from the overflow queue, and signal drain. */
  private completeSends(): void {
    const ring = this.ring
    const tail = Atomics.load(this.ctl, W_TX_TAIL)
    if (tail === ring.done && ring.ovCount === 0) return
    const mask = this.txSlots - 1
    while (ring.done !== tail) {
      const token = ring.tokens[ring.done & mask]!
      ring.done = (ring.done + 1) | 0
      if (token >= 0) {
        this.pendingTokens--
        this.receiver?.onSendComplete(token)
        if (this.state !== 'bound') return
      }
    }
    if (ring.ovCount > 0) {
      ring.refill()
      this.publish()
    }
    if (this.wantDrain && ((ring.head - ring.done) | 0) + ring.ovCount <= this.lowWater) {
      this.wantDrain = false
      this.receiver?.onDrain()
    }
  }

  private readonly onWorkerMessage = (message: UdpWorkerMessage): void => {
    if (message.type === 'fatal') {
      const errno = message.errno > 0 ? errnoName(message.errno) : ''
      this.failure ??= new StoqSocketError(`UDP worker: ${message.message}${errno ? ` (${errno})` : ''}`, {
        syscall: message.syscall,
        errno,
      })
      return
    }
    this.settleBind?.(message)
  }

  private readonly onWorkerError = (err: Error): void => {
    this.failure ??= new StoqSocketError(`UDP worker crashed: ${errorMessage(err)}`, { syscall: 'worker' }, { cause: err })
    this.settleBind?.(err)
  }

  private onWorkerExit(code: number): void {
    this.worker = null
    this.settleBind?.(this.failure ?? new Error(`the UDP worker exited with code ${code} before binding`))
    if (this.state !== 'bound') return
    // Neither close() nor a bind failure: the worker died under a bound socket.
    const error = this.failure ?? new StoqSocketError(`UDP worker exited unexpectedly with code ${code}`, { syscall: 'worker' })
    this.failure = error
    this.state = 'failed'
    this.local = null
    const receiver = this.receiver
    try {
      this.completeSends()
    } catch {
      // A throwing receiver must not prevent the cleanup below.
    }
    receiver?.onError(error)
    this.finish()
  }

  /**
   * Give everything back once the worker is gone: report the sends it wrote,
   * then every send still queued (cancelled), release the slot buffers.
   * Idempotent.
   */
  private finish(): void {
    const receiver = this.receiver
    const ring = this.ring
    if (this.ctl.length > 0) {
      const mask = this.txSlots - 1
      while (ring.done !== ring.head) {
        const token = ring.tokens[ring.done & mask]!
        ring.done = (ring.done + 1) | 0
        if (token >= 0) {
          this.pendingTokens--
          receiver?.onSendComplete(token)
        }
      }
    }
    while (ring.ovCount > 0) {
      const token = ring.dropOverflowed()
      if (token >= 0) {
        this.pendingTokens--
        receiver?.onSendComplete(token)
      }
    }
    this.wantDrain = false
    this.releaseBuffers()
    // The worker has exited (finish runs only then): nobody polls the eventfd any more, and a
    // socket it did not get to close is still ours (its fd number cannot have been reused).
    const workerClosed = this.ctl.length > 0 && Atomics.load(this.ctl, W_SOCKET_CLOSING) !== 0
    // The ring first: its requests hold references to the socket. Its mappings hold the ring
    // itself, so a worker that died without unmapping them would keep everything alive.
    if (this.ringFd >= 0) {
      if (!workerClosed) {
        for (const m of this.ringMaps) this.eventFdCalls?.unmap(m.address, m.length)
        this.eventFdCalls?.close(this.ringFd)
      }
      this.ringFd = -1
      this.ringMaps = []
    }
    if (this.socketFd >= 0) {
      if (!workerClosed) this.eventFdCalls?.close(this.socketFd)
      this.socketFd = -1
    }
    if (this.eventFd >= 0) {
      this.eventFdCalls?.close(this.eventFd)
      this.eventFd = -1
    }
  }

  stats(): WorkerUdpIoStats {
    const s = this.workerStats
    const at = (i: number): number => (s.length > i ? s[i]! : 0)
    const lastErrno = this.ctl.length > W_LAST_SEND_ERRNO ? Atomics.load(this.ctl, W_LAST_SEND_ERRNO) : 0
    return {
      backend: this.backend,
      ...this.counters,
      sendErrors: at(S_SEND_ERRORS),
      sendBufferSize: this.effectiveSendBuffer,
      receiveBufferSize: this.effectiveReceiveBuffer,
      receiveSyscalls: at(S_RECEIVE_SYSCALLS),
      sendSyscalls: at(S_SEND_SYSCALLS),
      receiveRingFull: at(S_RX_RING_FULL),
      receiveTruncated: at(S_RX_TRUNCATED),
      sendWaits: at(S_SEND_WAITS),
      polls: at(S_POLLS),
      lastSendError: lastErrno > 0 ? errnoName(lastErrno) : '',
      socketBuffers: this.buffersDetail,
      workerThreadId: this.threadId,
      affinity: this.affinityDetail,
    }
  }

  /** Internal (see `kUdpWorker`). */
  [kUdpWorker](): Worker | null {
    return this.worker
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  private async shutdown(): Promise<void> {
    this.state = 'closed'
    this.local = null
    const worker = this.worker
    if (worker !== null && this.ctl.length > 0) {
      Atomics.store(this.ctl, W_STOP, 1)
      this.wake()
      let timer: NodeJS.Timeout | undefined
      const stopped = await Promise.race([
        this.exited.then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), STOP_TIMEOUT_MS)
        }),
      ])
      clearTimeout(timer)
      if (!stopped) {
        // Not expected: the worker checks the stop word at least every pollTimeoutMs.
        await worker.terminate()
        await this.exited
      }
    }
    this.finish()
    // Resolve a pending Atomics.waitAsync of ours so that nothing waits on a dead control block.
    if (this.ctl.length > 0) Atomics.notify(this.ctl, W_SIGNAL)
    this.receiver = null
    if (this.ownsPool) this.sharedPool.close()
  }
}

/** Factory for the worker (GRO) backend. `bind` rejects with `StoqUnsupportedError` where it cannot work. */
export function workerUdpIo(options: Partial<WorkerUdpIoOptions> = {}): () => UdpIo {
  return () => new WorkerUdpIo(options)
}
