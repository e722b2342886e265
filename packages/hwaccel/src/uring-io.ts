import os from 'node:os'
import { readFileSync } from 'node:fs'
import { StoqInvalidArgumentError, type UdpIo, checkOptions, optionKeys } from '@stoq/interface'
import { errnoName, errorMessage, loadLibc } from './koffi/libc.js'
import { S_RECEIVE_RETRIES, S_RING_ENTERS, S_SEND_REORDERED, S_SEND_RETRIES, S_SENDS_LINKED } from './worker/protocol.js'
import { type UringKit, uringKit } from './worker/uring-kit.js'
import { nativeMemoryBytes, socketKit } from './worker/socket-kit.js'
import { type UringWorkerData, uringWorkerMain } from './worker/uring-worker.js'
import { WorkerUdpIo, type WorkerUdpIoOptions, type WorkerUdpIoStats } from './worker-io.js'
import { WORKER_OPTION_FLAGS } from './worker/options.js'

/** RECVMSG requests the uring worker keeps in flight, each into its own 64 KiB buffer (capped at `receiveSlots`). */
export const DEFAULT_URING_RECEIVE_DEPTH = 16

/** SENDMSG requests per batch: the most one io_uring_enter hands the kernel. */
export const DEFAULT_URING_SEND_BATCH = 32

/** How long each bind-time probe (a NOP, a loopback send and receive) may wait for its completion. */
const PROBE_WAIT_MS = 1000

// io_uring_setup flags (include/uapi/linux/io_uring.h).
const IORING_SETUP_SUBMIT_ALL = 1 << 7
const IORING_SETUP_COOP_TASKRUN = 1 << 8
const IORING_SETUP_SINGLE_ISSUER = 1 << 12

/**
 * Flag sets tried in order, the first the kernel accepts wins (it refuses
 * unknown flags with EINVAL): one submitting thread and cooperative task work
 * (Linux 6.0+), cooperative task work alone (5.19+), none (5.1+).
 *
 * Not IORING_SETUP_DEFER_TASKRUN: with it the kernel issues the next request of
 * an IOSQE_IO_LINK chain only when the ring is entered again, and an enter that
 * does not wait runs one step, so a chain of N sends took N io_uring_enter calls
 * (measured: one enter per SENDMSG); with cooperative task work the whole chain
 * completes within one enter.
 */
export const URING_SETUP_FLAGS: readonly number[] = [
  IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
  0,
]

/**
 * Internal, for tests: `io[kUringSetupFlags](flags)` replaces the flag sets
 * the worker tries, e.g. with an invalid bit so that the kernel refuses the
 * ring. Not exported from the package index.
 */
export const kUringSetupFlags = Symbol('stoq.hwaccel.uringSetupFlags')

export interface UringUdpIoOptions extends WorkerUdpIoOptions {
  /** RECVMSG requests kept in flight, each into its own receive buffer (1 to `receiveSlots`; default 16). */
  receiveDepth: number
  /** Here: SENDMSG requests per batch, i.e. per io_uring_enter (1 to 1024; default 32). */
  syscallBatch: number
  /** Here: the longest io_uring_enter waits for a completion (it is woken earlier by the eventfd). */
  pollTimeoutMs: number
}

/** Every key `UringUdpIo` accepts: the worker backend's and `receiveDepth`. */
const URING_OPTION_KEYS: readonly string[] = optionKeys<UringUdpIoOptions>({ ...WORKER_OPTION_FLAGS, receiveDepth: true })

export interface UringUdpIoStats extends WorkerUdpIoStats {
  /**
   * io_uring_enter calls. In this backend `receiveSyscalls` / `sendSyscalls`
   * count RECVMSG / SENDMSG requests submitted, and `polls` the io_uring_enter
   * calls that waited.
   */
  ringEnters: number
  /** Receives that completed without data (EAGAIN, ECANCELED, an ICMP error) and were posted again. */
  receiveRetries: number
  /** Sends refused with EAGAIN (socket buffer full), or cancelled behind one in their chain, and sent again. */
  sendRetries: number
  /** Sends submitted in an IOSQE_IO_LINK chain (slower) because the send buffer was close to full. */
  sendsLinked: number
  /**
   * Sends that got through after an earlier send of the same batch was refused,
   * i.e. left out of order. 0 unless the worst-case charge estimate was wrong.
   */
  sendReordered: number
  /** How the ring was set up and what the bind-time probes proved. */
  ring: string
}

let uringSource: string | null = null
/**
 * The worker's program: `uringWorkerMain` with `socketKit` and `uringKit`, all from their source text.
 * The helpers go in as arguments (function expressions), so nothing depends on the names a bundler gives them.
 */
function source(): string {
  uringSource ??= `(${uringWorkerMain.toString()})(require('node:worker_threads').workerData, require, ${socketKit.toString()}, ${uringKit.toString()})`
  return uringSource
}

/**
 * UdpIo on io_uring: a worker thread owns the socket and drives it through an
 * io_uring set up with raw system calls through koffi (no liburing): several
 * IORING_OP_RECVMSG in flight with UDP_GRO (one completion carries up to 64
 * KiB of datagrams of one sender, `onPacket` reports their segment size),
 * IORING_OP_SENDMSG chains with a UDP_SEGMENT cmsg per GSO message, and one
 * io_uring_enter per round to submit and reap. Everything else (the shared
 * rings, the send queue and its backpressure, `onPacket` data valid only
 * during the call, the pool options) is the gro backend's: see `WorkerUdpIo`
 * and worker/uring-worker.ts.
 *
 * At bind the worker proves io_uring works before it opens the socket: a ring
 * is set up, IORING_REGISTER_PROBE must list the opcodes it uses, a NOP must
 * complete, and a two-segment GSO message must go out through SENDMSG and come
 * back through RECVMSG on a loopback socket. `bind` rejects with
 * `StoqUnsupportedError` (feature `uring`) when that fails, or where koffi,
 * UDP_GRO or UDP_SEGMENT are missing, so that callers can fall back to
 * another backend.
 *
 * `close()` stops the worker, which cancels and reaps every request before it
 * closes the socket, so the port is free when `close()` resolves. Should the
 * worker die instead (terminated, crashed), the main thread unmaps and closes
 * the ring and closes the socket; the kernel then tears the ring down
 * asynchronously, and the port comes free a few milliseconds later.
 */
export class UringUdpIo extends WorkerUdpIo {
  override readonly backend = 'uring' as const
  private readonly receiveDepth: number
  private setupFlags: number[] = [...URING_SETUP_FLAGS]
  /**
   * The worker's native-side memory (msghdrs, addresses, cmsgs the kernel
   * reads and writes), held here so that it stays valid for requests still in
   * flight should the worker die. Replaced at the next bind.
   */
  private nativeMemory: SharedArrayBuffer | null = null

  constructor(options: Partial<UringUdpIoOptions> = {}) {
    super({ ...options, syscallBatch: options.syscallBatch ?? DEFAULT_URING_SEND_BATCH })
    const depth = options.receiveDepth ?? Math.min(DEFAULT_URING_RECEIVE_DEPTH, this.rxSlots)
    if (!Number.isInteger(depth) || depth < 1 || depth > this.rxSlots) {
      throw new StoqInvalidArgumentError('receiveDepth', `expected an integer from 1 to receiveSlots (${this.rxSlots}), got ${String(depth)}`)
    }
    this.receiveDepth = depth
  }

  protected override acceptedOptions(): readonly string[] {
    return URING_OPTION_KEYS
  }

  protected override workerSource(): string {
    return source()
  }

  protected override workerExtras(): Record<string, unknown> {
    this.nativeMemory = new SharedArrayBuffer(nativeMemoryBytes(this.rxSlots, this.txSlots))
    const uring: UringWorkerData['uring'] = {
      receiveDepth: this.receiveDepth,
      setupFlags: this.setupFlags,
      probeWaitMs: PROBE_WAIT_MS,
      memory: this.nativeMemory,
    }
    return { uring }
  }

  /** The uring worker sends from its slot buffers only: `sendSlabs` are copied like any data. */
  protected override zeroCopySupported(): boolean {
    return false
  }

  protected override backendLabel(): string {
    return 'io_uring UDP backend'
  }

  protected override precheck(): string | null {
    return layoutSupported()
  }

  override stats(): UringUdpIoStats {
    const s = this.workerStats
    const at = (i: number): number => (s.length > i ? s[i]! : 0)
    return {
      ...super.stats(),
      ringEnters: at(S_RING_ENTERS),
      receiveRetries: at(S_RECEIVE_RETRIES),
      sendRetries: at(S_SEND_RETRIES),
      sendsLinked: at(S_SENDS_LINKED),
      sendReordered: at(S_SEND_REORDERED),
      ring: this.engineDetail || 'not bound',
    }
  }

  /** Internal (see `kUringSetupFlags`). */
  [kUringSetupFlags](flags: number[]): void {
    this.setupFlags = [...flags]
  }
}

/** A new, unbound `UringUdpIo`. `bind` rejects with `StoqUnsupportedError` where io_uring cannot work. */
export function createUringUdpIo(options: Partial<UringUdpIoOptions> = {}): UringUdpIo {
  return new UringUdpIo(options)
}

/** Factory for the uring backend, like `workerUdpIo` for gro. */
export function uringUdpIo(options: Partial<UringUdpIoOptions> = {}): () => UdpIo {
  return () => new UringUdpIo(options)
}

/** The struct layouts of the worker assume LP64 little-endian and the generic syscall numbers 425-427. */
function layoutSupported(): string | null {
  if (process.platform !== 'linux') return `io_uring is Linux-only (platform is ${process.platform})`
  if (process.arch !== 'x64' && process.arch !== 'arm64') return `only x64 and arm64 are supported (arch is ${process.arch})`
  if (os.endianness() !== 'LE') return 'only little-endian machines are supported'
  return null
}

export interface IoUringProbeResult {
  /** A ring was set up, the opcodes the uring backend uses are supported, and a NOP completed. */
  ok: boolean
  /** One line: what was proven, or which call failed and why. */
  detail: string
  /** errno name of the failing call ('' when none failed). */
  errno: string
  /** IORING_FEAT_* bits of the ring (0 when none was set up). */
  features: number
  /** kernel.io_uring_disabled (null when the sysctl does not exist). */
  disabledSysctl: number | null
}

export interface IoUringProbeOptions {
  /** io_uring_setup flag sets to try (default: 0, a plain ring). */
  setupFlags: number[]
}

let mainKit: UringKit | null = null

/**
 * Prove io_uring on this thread without blocking: io_uring_setup of an
 * 8-entry ring (raw syscall through koffi, no liburing), mmap of its rings,
 * IORING_REGISTER_PROBE for NOP, POLL_ADD, SENDMSG, RECVMSG and ASYNC_CANCEL,
 * then one NOP submitted and reaped (a NOP completes during the submit, so
 * nothing waits). The ring is closed again. Never throws.
 */
export function probeIoUring(options: Partial<IoUringProbeOptions> = {}): IoUringProbeResult {
  checkOptions(options, ['setupFlags'])
  const disabled = readSysctl()
  const fail = (detail: string, errno = 0, features = 0): IoUringProbeResult => ({
    ok: false,
    detail,
    errno: errno > 0 ? errnoName(errno) : '',
    features,
    disabledSysctl: disabled,
  })
  const layout = layoutSupported()
  if (layout !== null) return fail(layout)
  const loaded = loadLibc()
  if (!loaded.ok) return fail(`unknown: ${loaded.reason}`)
  try {
    mainKit ??= uringKit(loaded.libc.koffi, loaded.libc.koffi.load(loaded.libc.name))
    const kit = mainKit
    const made = kit.setup(8, options.setupFlags ?? [0])
    if (!made.ok) return fail(`${made.message}: ${errnoName(made.errno)}${setupHint(made.errno, disabled)}`, made.errno)
    const ring = made.ring
    try {
      const ops = kit.probeOpcodes(ring, [0, 6, 9, 10, 14])
      if (!ops.ok) return fail(`io_uring_setup works, but ${ops.detail}`, ops.errno, ring.features)
      const nop = kit.nop(ring, 0)
      if (!nop.ok) return fail(`io_uring_setup works, but ${nop.detail}`, nop.errno, ring.features)
      return {
        ok: true,
        errno: '',
        features: ring.features,
        disabledSysctl: disabled,
        detail:
          `io_uring_setup works (raw syscall, ${ring.sqEntries} SQ / ${ring.cqEntries} CQ entries, features 0x${(ring.features >>> 0).toString(16)}), ` +
          `${nop.detail}; ${ops.detail}`,
      }
    } finally {
      ring.close()
    }
  } catch (err) {
    return fail(`io_uring probe failed: ${errorMessage(err)}`)
  }
}

function readSysctl(): number | null {
  try {
    const n = Number(readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim())
    return Number.isFinite(n) ? n : null
  } catch {
    return null
  }
}

/** Why io_uring_setup may have been refused. */
function setupHint(errno: number, disabled: number | null): string {
  const e = errnoName(errno)
  if (e === 'ENOSYS') return ' (the kernel has no io_uring, or a seccomp filter such as a container default profile blocks it)'
  if (e === 'EPERM') {
    return disabled !== null && disabled > 0
      ? ` (kernel.io_uring_disabled=${disabled}${disabled === 1 ? ': only members of kernel.io_uring_group or CAP_SYS_ADMIN may create rings' : ': io_uring is off'})`
      : ' (refused by a security policy: seccomp or an LSM)'
  }
  if (e === 'EINVAL') return ' (the kernel refused these setup flags or the entry count)'
  return ''
}
