import { StoqInvalidArgumentError, optionKeys, type BufferPool, type UdpIoStats } from '@stoq/interface'

/** The options and stats of the worker backends (../worker-io.ts, ../uring-io.ts). */

export interface WorkerUdpIoOptions {
  /**
   * Where the slot buffers come from: a BufferPool whose buffers are
   * SharedArrayBuffer memory of at least 64 KiB each, e.g. `@stoq/mempool`'s
   * `createBufferPool({ shared: true, bufferSize: 65536 })`. The backend takes
   * `receiveSlots + sendSlots` buffers at bind and gives them back at close;
   * the caller keeps ownership of the pool. Default: a private pool of exactly
   * that many buffers, closed with the socket.
   */
  pool: BufferPool
  /**
   * Shared memory that data given to `send()` may already live in, e.g. the slabs of the
   * packet pool the batcher fills (`pool.share().slabs`). A send whose data lies in one of
   * them is handed to the worker by position, without a copy (zero-copy); any other data
   * is copied into a send slot as before. The caller keeps the data untouched until its
   * `onSendComplete`, as the UdpIo contract already requires.
   */
  sendSlabs: SharedArrayBuffer[]
  /**
   * Native memory that data given to `send()` may already live in, as views (e.g. a QUIC
   * engine's transmit slots, `QuicEngine.transmitSlots`): such a send is handed to the worker
   * by address, without a copy, like `sendSlabs`. The memory must stay valid and in place
   * until `close()` has resolved (the worker may still be sending from it before that).
   */
  sendRegions: Uint8Array[]
  /** Receive ring slots (a power of two from 2 to 4096). */
  receiveSlots: number
  /** Send ring slots (a power of two from 2 to 4096). */
  sendSlots: number
  /** Queued send slots (ring plus overflow) at which `send()` returns false. */
  sendQueueHighWater: number
  /** Queued send slots at or below which `onDrain` fires after `send()` returned false. */
  sendQueueLowWater: number
  /** SO_SNDBUF / SO_RCVBUF requested when `UdpBindOptions` does not say (SO_*BUFFORCE first). */
  socketBufferSize: number
  /** The worker's poll() timeout in ms. */
  pollTimeoutMs: number
  /** Messages per recvmmsg / sendmmsg call. */
  syscallBatch: number
  /**
   * Time one drain of the receive ring may take, in microseconds (from 100 to 1,000,000;
   * default 2000): what is left is taken on the next event-loop turn, so timers and other
   * I/O run in between. The slot in hand is always finished.
   */
  drainDeadlineUs: number
  /** Pin the network thread to these CPUs (default: not pinned). */
  cpus: number[]
}

/** Every key `WorkerUdpIo` accepts, as the record `optionKeys` checks (backends over the same rings extend it). */
export const WORKER_OPTION_FLAGS: { [K in keyof WorkerUdpIoOptions]-?: true } = {
  pool: true,
  sendSlabs: true,
  sendRegions: true,
  receiveSlots: true,
  sendSlots: true,
  sendQueueHighWater: true,
  sendQueueLowWater: true,
  socketBufferSize: true,
  pollTimeoutMs: true,
  syscallBatch: true,
  drainDeadlineUs: true,
  cpus: true,
}

/** Every key `WorkerUdpIo` accepts. */
export const WORKER_OPTION_KEYS: readonly string[] = optionKeys<WorkerUdpIoOptions>(WORKER_OPTION_FLAGS)

export interface WorkerUdpIoStats extends UdpIoStats {
  /** Kernel thread id of the network worker thread (0 before bind). */
  workerThreadId: number
  /** Whether the worker thread was pinned to the `cpus` option, and to which CPUs. */
  affinity: string
  /** Sends that carried more than one segment (one UDP_SEGMENT cmsg each). */
  gsoWrites: number
  /** Received buffers that held more than one datagram (GRO-coalesced). */
  groBuffers: number
  /** recvmmsg / sendmmsg calls the worker made. */
  receiveSyscalls: number
  sendSyscalls: number
  /** Times the worker found the receive ring full and left datagrams in the kernel buffer. */
  receiveRingFull: number
  /** Received messages dropped because they did not fit a buffer (MSG_TRUNC). */
  receiveTruncated: number
  /** Times the worker waited for the socket to become writable (EAGAIN). */
  sendWaits: number
  /** Blocking poll() calls of the worker, and eventfd wake-ups the main thread wrote. */
  polls: number
  wakeups: number
  /** Send slots that waited in the main-thread overflow queue because the ring was full. */
  overflowSends: number
  /** Sends handed to the worker in place, without a copy (their data was in a `sendSlabs` slab). */
  zeroCopySends: number
  /** Drains of the receive ring that stopped at `drainDeadlineUs` and left the rest for the next turn. */
  drainDeferrals: number
  /** errno name of the latest failed send, or '' */
  lastSendError: string
  /** How the socket buffers were set (SO_*BUFFORCE or capped SO_*BUF). */
  socketBuffers: string
}

/** A ring size: a power of two from 2 to 4096, else STOQ_ERR_INVALID_ARG naming the option. */
export function powerOfTwo(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 2 || value > 4096 || (value & (value - 1)) !== 0) {
    throw new StoqInvalidArgumentError(name, `expected a power of two from 2 to 4096, got ${String(value)}`)
  }
  return value
}
