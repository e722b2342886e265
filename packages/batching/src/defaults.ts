/** Most packets one batch may carry: the kernel's UDP_MAX_SEGMENTS is 64 per GSO send; 512 bounds a flush's work per socket call vector. */
export const DEFAULT_MAX_PACKETS_PER_BATCH = 64

/** Largest GSO super-buffer: a UDP datagram (and so a GSO send) cannot exceed 64 KiB minus headers. */
export const DEFAULT_MAX_SUPER_BUFFER_BYTES = 65000

/** Flushes allowed in one `flush()` call before yielding to the event loop, so receive and timers keep running. */
export const DEFAULT_MAX_BATCHES_PER_FLUSH = 256
