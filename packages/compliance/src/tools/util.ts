import { StoqError, type SocketAddress } from '@stoq/interface'

/** How long any wait in the suites may take before it fails the test (never a timing assertion). */
export const WAIT_LIMIT_MS = 10_000

/**
 * Resolve once `condition()` holds, checking on every event-loop turn; reject
 * with what was awaited and `detail()` after `limitMs`. Bounds every wait.
 */
export async function waitUntil(what: string, condition: () => boolean, detail: () => string = () => '', limitMs = WAIT_LIMIT_MS): Promise<void> {
  const deadline = Date.now() + limitMs
  let turns = 0
  while (!condition()) {
    if (Date.now() > deadline) {
      const more = detail()
      throw new Error(`Gave up after ${limitMs} ms waiting for ${what}${more ? ` (${more})` : ''}`)
    }
    // Mostly setImmediate (I/O runs in between), sometimes a timer so that a
    // timer-driven implementation progresses too.
    await (++turns % 8 === 0 ? sleep(1) : nextTurn())
  }
}

/** One event-loop turn (I/O callbacks run before it resolves). */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Let callbacks that are already due run: a few immediates and a short timer. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await nextTurn()
  await sleep(20)
  for (let i = 0; i < 3; i++) await nextTurn()
}

/** The `code` of the STOQ error that `call` throws ('none' when it returns). */
export function thrownCode(call: () => unknown): string {
  try {
    call()
    return 'none'
  } catch (err) {
    return describeError(err)
  }
}

/** The `code` of the STOQ error that `promise` rejects with ('none' when it resolves). */
export async function rejectedCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise
    return 'none'
  } catch (err) {
    return describeError(err)
  }
}

function describeError(err: unknown): string {
  return StoqError.isInstance(err) ? err.code : `not a StoqError: ${String(err)}`
}

/** `address:port` with IPv6 in brackets, for messages and map keys. */
export function addressKey(address: SocketAddress): string {
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`
}

/**
 * Split a (GSO or GRO) super-buffer into its datagrams: `segmentSize` bytes
 * each, the last possibly shorter. A segmentSize below 1 yields the whole buffer.
 */
export function splitSegments(data: Uint8Array, segmentSize: number): Uint8Array[] {
  if (!(segmentSize >= 1) || segmentSize >= data.length) return [data]
  const out: Uint8Array[] = []
  for (let off = 0; off < data.length; off += segmentSize) out.push(data.subarray(off, Math.min(off + segmentSize, data.length)))
  return out
}

/** Deterministic 32-bit PRNG (mulberry32), so that every run sees the same "random" script. */
export function prng(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
