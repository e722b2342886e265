/** Most packets one batch may carry: the kernel's UDP_MAX_SEGMENTS is 64 per GSO send; 512 bounds a flush's work per socket call vector. */
export const DEFAULT_MAX_PACKETS_PER_BATCH = 64

/** Largest GSO super-buffer: a UDP datagram (and so a GSO send) cannot exceed 64 KiB minus headers. */
export const DEFAULT_MAX_SUPER_BUFFER_BYTES = 65000

/** Flushes allowed in one `flush()` call before yielding to the event loop, so receive and timers keep running. */
export const DEFAULT_MAX_BATCHES_PER_FLUSH = 256

/**
 * Time one `flush()` may run before the rest is deferred to the next event-loop turn, in
 * microseconds: a sender with a deep queue must not starve its own receive path (ACKs) or
 * timers. 2 ms is several hundred 1350-byte packets on this kind of machine.
 */
export const DEFAULT_FLUSH_DEADLINE_US = 2000
