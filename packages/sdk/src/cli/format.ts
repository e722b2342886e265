/** `1.50 GiB`, `512 B`: powers of 1024, as file sizes are usually shown. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${n} B` : `${v.toFixed(2)} ${units[u]}`
}

/** Gbit/s (10^9 bits per second) of `bytes` over `ms` milliseconds; 0 for an empty interval. */
export function gbpsOf(bytes: number, ms: number): number {
  return ms > 0 ? (bytes * 8) / (ms * 1e6) : 0
}

export function formatGbps(gbps: number): string {
  return gbps.toFixed(gbps >= 100 ? 1 : gbps >= 0.1 ? 2 : 4)
}

/** Round for JSON output (keeps documents readable without losing meaningful digits). */
export function round(n: number, digits = 4): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}
