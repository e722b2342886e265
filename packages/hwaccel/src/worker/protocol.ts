/**
 * The memory the main thread and the UDP worker share, as Int32 word offsets
 * into one SharedArrayBuffer (the "control block"). Computed once on the main
 * thread and handed to the worker in `workerData`, so that both sides read the
 * same numbers (the worker's code is self-contained and imports nothing).
 *
 * Words written by one side and read by the other each sit on their own 64-byte
 * cache line. Two single-producer/single-consumer rings follow the header:
 *
 * - receive ring (worker → main): the worker fills slot `rxHead % rxSlots`
 *   and publishes it by storing `rxHead + 1`; the main thread hands the slot
 *   to `onPacket` and frees it by storing `rxTail + 1`.
 * - send ring (main → worker): the main thread fills slot `txHead % txSlots`
 *   and publishes it; the worker writes it to the socket and stores `txTail + 1`,
 *   which is also the completion report (sends complete in ring order).
 *
 * Heads and tails are free-running 32-bit counters; `head - tail` (wrapping)
 * is the occupancy. Slot `k` of a ring always owns buffer `k` of that ring's
 * buffer set, so the buffers never change hands mid-flight.
 */

/** Receive ring head: slots the worker has published (worker writes). */
export const W_RX_HEAD = 0
/** Receive ring tail: slots the main thread has consumed (main writes). */
export const W_RX_TAIL = 16
/** Send ring head: slots the main thread has published (main writes). */
export const W_TX_HEAD = 32
/** Send ring tail: slots the worker has written to the socket (worker writes). */
export const W_TX_TAIL = 48
/** Bumped by the worker after it published receives or completed sends; the main thread `Atomics.waitAsync`s on it. */
export const W_SIGNAL = 64
/**
 * The worker's sleep state, set before it blocks in poll(): 0 awake,
 * `SLEEP_POLLING` (socket and eventfd polled), `SLEEP_RX_FULL` (receive ring
 * full, only the eventfd polled for reads). The main thread swaps it to 0 and
 * writes the eventfd when it published sends (any sleep) or freed receive
 * slots (`SLEEP_RX_FULL` only).
 */
export const W_SLEEP = 80
/** Set to 1 by the main thread to stop the worker. */
export const W_STOP = 96
/** errno of the latest failed send (worker writes, for stats). */
export const W_LAST_SEND_ERRNO = 97
/**
 * Set to 1 by the worker right before it closes the socket. A worker that died
 * without setting it (terminated, or crashed outside its loop) left the socket
 * open, and the main thread closes it once the worker has exited.
 */
export const W_SOCKET_CLOSING = 98

export const SLEEP_AWAKE = 0
export const SLEEP_POLLING = 1
export const SLEEP_RX_FULL = 2

/** Byte offset of the worker's statistics: Float64 counters the worker writes and the main thread reads. */
export const STATS_BYTE_OFFSET = 512
export const S_RECEIVE_SYSCALLS = 0
export const S_SEND_SYSCALLS = 1
export const S_SEND_ERRORS = 2
/** Times the worker found the receive ring full and stopped reading the socket. */
export const S_RX_RING_FULL = 3
/** Receives dropped because they did not fit the buffer (MSG_TRUNC). */
export const S_RX_TRUNCATED = 4
/** Times a send had to wait for the socket to become writable (EAGAIN). */
export const S_SEND_WAITS = 5
/** poll() calls that blocked (the uring worker: blocking io_uring_enter calls). */
export const S_POLLS = 6
/** uring worker only: every io_uring_enter call. */
export const S_RING_ENTERS = 7
/** uring worker only: receives that completed without data (-EAGAIN, -ECANCELED...) and were posted again. */
export const S_RECEIVE_RETRIES = 8
/** uring worker only: sends refused with EAGAIN (socket buffer full) and sent again. */
export const S_SEND_RETRIES = 9
/** uring worker only: sends that got through in a batch after an earlier one of the batch was refused (left out of order). */
export const S_SEND_REORDERED = 10
/** uring worker only: sends submitted in an IOSQE_IO_LINK chain because the send buffer was close to full. */
export const S_SENDS_LINKED = 11
/** Float64 counters (64 bytes each side of the 8 used by the gro worker; they end well before the rings). */
export const STATS_COUNT = 16

/** Words per ring slot (one cache line). */
export const SLOT_WORDS = 16
/** Receive slot: pool index of its buffer, bytes, segment size, peer (4 address words, port, IPv6 scope id). */
export const RX_INDEX = 0
export const RX_LENGTH = 1
export const RX_SEGMENT = 2
export const RX_ADDR = 3
export const RX_PORT = 7
export const RX_SCOPE = 8
/**
 * Receive slot: which receive buffer (0 to rxSlots - 1) holds the data. The
 * gro worker always reads slot k into buffer k; the uring worker hands buffers
 * out in completion order, so a slot carries whichever buffer its read used.
 */
export const RX_BUFFER = 9
/** Send slot: bytes (or `TX_TOO_LARGE`), GSO segment size (0: one datagram), destination (as above), result errno. */
export const TX_LENGTH = 0
export const TX_SEGMENT = 1
export const TX_ADDR = 2
export const TX_PORT = 6
export const TX_SCOPE = 7
export const TX_ERRNO = 8
/**
 * Zero-copy send slot: the data lives in shared slab `TX_ZC_SLAB` (an index into the
 * worker's `sendSlabs`) at byte `TX_ZC_OFFSET`, not in the slot's own buffer; -1: it was
 * copied into the slot's buffer.
 */
export const TX_ZC_SLAB = 9
export const TX_ZC_OFFSET = 10
/** A send slot whose data did not fit a buffer: the worker reports EMSGSIZE without a syscall. */
export const TX_TOO_LARGE = -1

/** First word of the rings. */
const RINGS_WORD = 192

/** Where everything lives for given ring sizes. Plain numbers: structured-clonable into `workerData`. */
export interface ControlLayout {
  rxSlots: number
  txSlots: number
  /** First word of receive slot 0. */
  rxBase: number
  /** First word of send slot 0. */
  txBase: number
  /** Bytes of the control block. */
  bytes: number
  // The header words, repeated so that the worker needs nothing but this object.
  rxHead: number
  rxTail: number
  txHead: number
  txTail: number
  signal: number
  sleep: number
  stop: number
  lastSendErrno: number
  socketClosing: number
  statsByteOffset: number
  /** Slot word offsets and stats indexes, for the worker. */
  slot: {
    words: number
    rxIndex: number
    rxLength: number
    rxSegment: number
    rxAddr: number
    rxPort: number
    rxScope: number
    rxBuffer: number
    txLength: number
    txSegment: number
    txAddr: number
    txPort: number
    txScope: number
    txErrno: number
    txZcSlab: number
    txZcOffset: number
    txTooLarge: number
  }
  stats: {
    receiveSyscalls: number
    sendSyscalls: number
    sendErrors: number
    rxRingFull: number
    rxTruncated: number
    sendWaits: number
    polls: number
    ringEnters: number
    receiveRetries: number
    sendRetries: number
    sendReordered: number
    sendsLinked: number
  }
  sleepStates: { awake: number; polling: number; rxFull: number }
}

export function controlLayout(rxSlots: number, txSlots: number): ControlLayout {
  const rxBase = RINGS_WORD
  const txBase = rxBase + rxSlots * SLOT_WORDS
  return {
    rxSlots,
    txSlots,
    rxBase,
    txBase,
    bytes: (txBase + txSlots * SLOT_WORDS) * 4,
    rxHead: W_RX_HEAD,
    rxTail: W_RX_TAIL,
    txHead: W_TX_HEAD,
    txTail: W_TX_TAIL,
    signal: W_SIGNAL,
    sleep: W_SLEEP,
    stop: W_STOP,
    lastSendErrno: W_LAST_SEND_ERRNO,
    socketClosing: W_SOCKET_CLOSING,
    statsByteOffset: STATS_BYTE_OFFSET,
    slot: {
      words: SLOT_WORDS,
      rxIndex: RX_INDEX,
      rxLength: RX_LENGTH,
      rxSegment: RX_SEGMENT,
      rxAddr: RX_ADDR,
      rxPort: RX_PORT,
      rxScope: RX_SCOPE,
      rxBuffer: RX_BUFFER,
      txLength: TX_LENGTH,
      txSegment: TX_SEGMENT,
      txAddr: TX_ADDR,
      txPort: TX_PORT,
      txScope: TX_SCOPE,
      txErrno: TX_ERRNO,
      txZcSlab: TX_ZC_SLAB,
      txZcOffset: TX_ZC_OFFSET,
      txTooLarge: TX_TOO_LARGE,
    },
    stats: {
      receiveSyscalls: S_RECEIVE_SYSCALLS,
      sendSyscalls: S_SEND_SYSCALLS,
      sendErrors: S_SEND_ERRORS,
      rxRingFull: S_RX_RING_FULL,
      rxTruncated: S_RX_TRUNCATED,
      sendWaits: S_SEND_WAITS,
      polls: S_POLLS,
      ringEnters: S_RING_ENTERS,
      receiveRetries: S_RECEIVE_RETRIES,
      sendRetries: S_SEND_RETRIES,
      sendReordered: S_SEND_REORDERED,
      sendsLinked: S_SENDS_LINKED,
    },
    sleepStates: { awake: SLEEP_AWAKE, polling: SLEEP_POLLING, rxFull: SLEEP_RX_FULL },
  }
}
