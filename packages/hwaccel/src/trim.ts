/**
 * Give freed heap memory back to the kernel: glibc's `malloc_trim(0)`, which walks every
 * arena (each thread that allocated has its own) and returns the free pages inside them too,
 * not only the top of each heap. Without it, memory freed after a load stays in the process:
 * glibc keeps up to M_TRIM_THRESHOLD at the top of each arena (raised to 64 MiB by the quinn
 * engine, which allocates per batch) and never returns pages in the middle of an arena. Measured
 * with `packages/benchmarks` memory.js: after 1000 connections closed, a server's RSS stayed
 * at 1.0-2.6 GiB against a 92-144 MiB baseline.
 */
import { loadSystemLibc } from './koffi/affinity.js'

let trim: ((pad: number) => number) | null | undefined

/** True when the C library returned memory to the kernel; false when it had none, or is not glibc. Never throws. */
export function releaseFreeMemory(): boolean {
  if (trim === undefined) {
    trim = null
    const libc = loadSystemLibc()
    if (libc.ok) {
      try {
        trim = libc.lib.func('int malloc_trim(size_t pad)') as (pad: number) => number
      } catch {
        // Not glibc (musl has no malloc_trim).
      }
    }
  }
  if (trim === null) return false
  try {
    return trim(0) === 1
  } catch {
    return false
  }
}
