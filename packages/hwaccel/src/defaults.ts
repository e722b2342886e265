/** Sends queued in libuv above which the backend asks the sender to pause (bounds memory held by queued datagrams). */
export const DEFAULT_SEND_QUEUE_HIGH_WATER = 2048

/** Sends queued below which a paused sender resumes (hysteresis avoids flapping). */
export const DEFAULT_SEND_QUEUE_LOW_WATER = 512

/** Socket buffer requested by default: 4 MiB absorbs a burst of a large congestion window on loopback. */
export const DEFAULT_SOCKET_BUFFER_SIZE = 4 * 1024 * 1024

// The worker backends (worker-io.ts, uring-io.ts).

/** Receive slots: 128 buffers of 64 KiB hold up to 8 MiB of GRO-coalesced data between two drains of the main thread. */
export const DEFAULT_WORKER_RECEIVE_SLOTS = 128

/** Send slots: 128 super-buffers of up to 64 KiB queued for the worker (8 MiB, a large loopback congestion window). */
export const DEFAULT_WORKER_SEND_SLOTS = 128

/** Queued send slots at which `send()` returns false: three quarters of the default ring, so callers pause before it overflows. */
export const DEFAULT_WORKER_SEND_HIGH_WATER = 96

/** Queued send slots at or below which `onDrain` fires: a quarter of the ring keeps the worker busy while the caller refills. */
export const DEFAULT_WORKER_SEND_LOW_WATER = 32

/** poll() timeout of the worker: how long it may take to notice a stop request if the eventfd wake-up were lost. */
export const DEFAULT_WORKER_POLL_TIMEOUT_MS = 50

/**
 * Time one drain of the receive ring may run, in microseconds, before the rest waits for the
 * next event-loop turn: 128 full slots are 8 MiB of datagrams, tens of milliseconds of
 * decryption in one turn, which would hold every timer and I/O callback of the process that
 * long. 2 ms matches the batcher's flush deadline.
 */
export const DEFAULT_WORKER_DRAIN_DEADLINE_US = 2000

/** Messages per recvmmsg / sendmmsg: 16 keeps one native call per burst without holding slots back from the main thread. */
export const DEFAULT_WORKER_SYSCALL_BATCH = 16

/** Bytes of every slot buffer: a GRO read returns up to 64 KiB. */
export const WORKER_BUFFER_SIZE = 65536
