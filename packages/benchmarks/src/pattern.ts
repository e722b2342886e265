/**
 * The benchmark payload: a stream of 64 KiB blocks. Each block starts with its
 * index as an 8-byte big-endian counter, followed by a fixed pseudo-random
 * pattern. The receiver checks every byte against what must be at that stream
 * offset (counter bytes one by one, the pattern with one memcmp per block), so
 * loss, duplication, reordering or corruption anywhere fails the run.
 */

/** Bytes per write on the sender, and the period of the pattern. */
export const BLOCK_SIZE = 64 * 1024

/** Bytes of the block counter at the start of each block. */
export const COUNTER_BYTES = 8

/** Blocks the sender keeps in flight; a block is restamped only after its previous write completed. */
export const SEND_DEPTH = 16

const PATTERN_SEED = 0x9e3779b9

function makePattern(): Buffer {
  const b = Buffer.allocUnsafe(BLOCK_SIZE)
  let x = PATTERN_SEED
  for (let i = 0; i < BLOCK_SIZE; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    b[i] = x & 0xff
  }
  b.fill(0, 0, COUNTER_BYTES)
  return b
}

/** One block with counter 0; every block is this with its own counter stamped in front. */
export const PATTERN: Buffer = makePattern()

/** Write `index` as the 8-byte big-endian counter at the start of `block`. */
export function stampCounter(block: Uint8Array, index: number): void {
  const hi = Math.floor(index / 0x1_0000_0000)
  const lo = index >>> 0
  block[0] = hi >>> 24
  block[1] = (hi >>> 16) & 0xff
  block[2] = (hi >>> 8) & 0xff
  block[3] = hi & 0xff
  block[4] = lo >>> 24
  block[5] = (lo >>> 16) & 0xff
  block[6] = (lo >>> 8) & 0xff
  block[7] = lo & 0xff
}

/**
 * Send `total` bytes of the pattern through `write`, in BLOCK_SIZE chunks, with
 * up to SEND_DEPTH writes outstanding. A buffer is restamped and written again
 * once its previous write resolved, as applications reuse buffers: a transport
 * that still reads a chunk after resolving its write sends wrong bytes, and the
 * receiver fails the run. With `copyWrites` every write gets a fresh copy
 * instead (a diagnostic: it tells buffer reuse bugs from real corruption).
 */
export async function sendPattern(
  total: number,
  write: (chunk: Uint8Array) => Promise<void>,
  onProgress?: (bytes: number) => void,
  copyWrites = false,
): Promise<void> {
  const ring = Array.from({ length: SEND_DEPTH }, () => Buffer.from(PATTERN))
  const inflight: (Promise<void> | null)[] = new Array<Promise<void> | null>(SEND_DEPTH).fill(null)
  let sent = 0
  for (let index = 0; sent < total; index++) {
    const slot = index % SEND_DEPTH
    const previous = inflight[slot]
    if (previous) await previous
    const block = ring[slot]!
    stampCounter(block, index)
    const n = Math.min(BLOCK_SIZE, total - sent)
    const chunk = n === BLOCK_SIZE ? block : block.subarray(0, n)
    const p = write(copyWrites ? Buffer.from(chunk) : chunk)
    // Seen when the slot comes round again (or at the end); never an unhandled rejection meanwhile.
    p.catch(() => {
      // Marks it handled; the rejection is seen when this slot is awaited.
    })
    inflight[slot] = p
    sent += n
    onProgress?.(sent)
  }
  await Promise.all(inflight.filter((p): p is Promise<void> => p !== null))
}

/** The received data differs from what was sent. */
export class PatternMismatchError extends Error {
  readonly code = 'STOQ_BENCH_VERIFY_FAILED'
}

/** Checks a received byte stream against the pattern, chunk by chunk, in any chunking. */
export class PatternVerifier {
  readonly total: number
  private offset = 0
  private readonly counter = new Uint8Array(COUNTER_BYTES)
  private counterBlock = -1

  constructor(total: number) {
    this.total = total
  }

  /** Bytes verified so far. */
  get verified(): number {
    return this.offset
  }

  /** Verify the next chunk of the stream; throws PatternMismatchError at the first wrong byte. */
  update(chunk: Uint8Array): void {
    if (this.offset + chunk.length > this.total) {
      throw new PatternMismatchError(`received more than the ${this.total} bytes sent: a chunk of ${chunk.length} bytes arrived at offset ${this.offset}`)
    }
    let i = 0
    while (i < chunk.length) {
      const within = this.offset % BLOCK_SIZE
      if (within < COUNTER_BYTES) {
        const block = Math.floor(this.offset / BLOCK_SIZE)
        if (block !== this.counterBlock) {
          stampCounter(this.counter, block)
          this.counterBlock = block
        }
        const n = Math.min(COUNTER_BYTES - within, chunk.length - i)
        for (let k = 0; k < n; k++) {
          if (chunk[i + k] !== this.counter[within + k]) this.fail(this.offset + k, chunk[i + k]!, this.counter[within + k]!)
        }
        i += n
        this.offset += n
      } else {
        const n = Math.min(BLOCK_SIZE - within, chunk.length - i)
        if (PATTERN.compare(chunk, i, i + n, within, within + n) !== 0) {
          for (let k = 0; k < n; k++) {
            if (chunk[i + k] !== PATTERN[within + k]) this.fail(this.offset + k, chunk[i + k]!, PATTERN[within + k]!)
          }
        }
        i += n
        this.offset += n
      }
    }
  }

  /** The stream ended: throws unless exactly `total` bytes arrived. */
  finish(): void {
    if (this.offset !== this.total) {
      throw new PatternMismatchError(`stream ended after ${this.offset} bytes, expected ${this.total}`)
    }
  }

  private fail(streamOffset: number, actual: number, expected: number): never {
    const hex = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`
    throw new PatternMismatchError(
      `byte at stream offset ${streamOffset} (block ${Math.floor(streamOffset / BLOCK_SIZE)}, byte ${streamOffset % BLOCK_SIZE}) is ${hex(actual)}, expected ${hex(expected)}`,
    )
  }
}
