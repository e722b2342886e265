import type { PoolExhaustionPolicy } from '@stoq/interface'

/** 64 KiB: one buffer holds a whole GSO super-buffer (up to 64 KiB of segments). */
export const DEFAULT_BUFFER_SIZE = 65536

/** 64 buffers (4 MiB at the default size): enough for a send batch without growing, cheap to preallocate. */
export const DEFAULT_INITIAL_BUFFERS = 64

/** 8192 buffers (512 MiB at the default size): bounds memory while leaving room for many busy connections. */
export const DEFAULT_MAX_BUFFERS = 8192

/** 64 bytes: a cache line, so that two buffers never share one and no buffer straddles one needlessly. */
export const DEFAULT_ALIGNMENT = 64

/** Grow rather than fail: an empty pool under a burst should cost memory, not dropped packets. */
export const DEFAULT_EXHAUSTION: PoolExhaustionPolicy = 'grow'

/** SharedArrayBuffer memory, so that worker threads can attach to the pool without copies. */
export const DEFAULT_SHARED = true

/** Misuse checks off: poisoning writes every released buffer in full. */
export const DEFAULT_DEBUG = false
