import { createHash } from 'node:crypto'

/**
 * Deterministic test bytes (xorshift32 from `seed`): the same `size` and `seed` give the same
 * bytes, and different seeds differ, so a receiver can check what arrived without a copy.
 */
export function pattern(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size)
  let x = seed >>> 0 || 1
  for (let i = 0; i < size; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** SHA-256 of the bytes (or of the chunks, in order), as hex. */
export function sha256Hex(data: Uint8Array | readonly Uint8Array[]): string {
  const h = createHash('sha256')
  for (const d of data instanceof Uint8Array ? [data] : data) h.update(d)
  return h.digest('hex')
}
