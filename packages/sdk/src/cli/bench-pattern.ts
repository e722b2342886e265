/**
 * The payload of `stoq bench`: a byte stream that the receiver can check at
 * every offset without being told anything but a per-stream key.
 *
 * The stream is cut into 64 KiB blocks. Block b is
 *
 *   bytes 0-7    b as an unsigned 64-bit big-endian integer
 *   bytes 8-15   the stream key (8 bytes derived from the session and stream number)
 *   bytes 16-    a fixed filler: SHA-256 in counter mode over a constant label
 *
 * so a lost, repeated or reordered range shows up as a wrong block number, data
 * of another stream as a wrong key, and any corrupted byte as a filler mismatch.
 * Checking costs two memcmp per block.
 */
import { createHash } from 'node:crypto'
import { StoqIntegrityError } from './errors.js'

export const PATTERN_BLOCK = 64 * 1024
export const PATTERN_BLOCK_HEADER = 16

function makeFiller(): Buffer {
  const out = Buffer.alloc(PATTERN_BLOCK)
  let counter = 0
  for (let at = 0; at < PATTERN_BLOCK; at += 32) {
    createHash('sha256').update(`stoq bench filler v1/${counter++}`).digest().copy(out, at)
  }
  out.fill(0, 0, PATTERN_BLOCK_HEADER)
  return out
}

const FILLER = makeFiller()

/** The 8-byte key of one stream of one bench session. */
export function patternKey(session: string, connection: number, stream: number): Buffer {
  return createHash('sha256').update(`stoq bench key v1/${session}/${connection}/${stream}`).digest().subarray(0, 8)
}

/** Write block `index`'s 16-byte header (number + key) at the start of `target`. */
export function writeBlockHeader(target: Buffer, index: number, key: Uint8Array): void {
  target.writeUInt32BE(Math.floor(index / 0x1_0000_0000), 0)
  target.writeUInt32BE(index >>> 0, 4)
  target.set(key.subarray(0, 8), 8)
}

/** A fresh block buffer (filler in place); stamp it with `writeBlockHeader` before each use. */
export function newPatternBlock(): Buffer {
  return Buffer.from(FILLER)
}

/**
 * Checks a received stream against the pattern, in any chunking. `verified`
 * counts the bytes that matched; the first wrong byte throws StoqIntegrityError.
 */
export class PatternChecker {
  private offset = 0
  private readonly key: Uint8Array
  private readonly header = Buffer.alloc(PATTERN_BLOCK_HEADER)
  private headerBlock = -1

  constructor(key: Uint8Array) {
    if (!(key instanceof Uint8Array) || key.length !== 8) throw new TypeError('pattern key must be 8 bytes')
    this.key = key
  }

  /** Bytes received and found correct so far. */
  get verified(): number {
    return this.offset
  }

  push(chunk: Uint8Array): void {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    let i = 0
    while (i < buf.length) {
      const within = this.offset % PATTERN_BLOCK
      let expected: Buffer
      let end: number
      if (within < PATTERN_BLOCK_HEADER) {
        const block = Math.floor(this.offset / PATTERN_BLOCK)
        if (block !== this.headerBlock) {
          writeBlockHeader(this.header, block, this.key)
          this.headerBlock = block
        }
        expected = this.header
        end = PATTERN_BLOCK_HEADER
      } else {
        expected = FILLER
        end = PATTERN_BLOCK
      }
      const n = Math.min(end - within, buf.length - i)
      if (buf.compare(expected, within, within + n, i, i + n) !== 0) this.fail(buf, i, expected, within, n)
      i += n
      this.offset += n
    }
  }

  private fail(buf: Buffer, at: number, expected: Buffer, within: number, n: number): never {
    let k = 0
    while (k < n && buf[at + k] === expected[within + k]) k++
    // The bytes before the wrong one were checked and are right: count them.
    this.offset += k
    const offset = this.offset
    const hex = (b: number | undefined): string => `0x${(b ?? 0).toString(16).padStart(2, '0')}`
    const where = within + k < PATTERN_BLOCK_HEADER ? 'block header' : 'filler'
    throw new StoqIntegrityError(
      'pattern',
      `byte at stream offset ${offset} (block ${Math.floor(offset / PATTERN_BLOCK)}, ${where} byte ${offset % PATTERN_BLOCK}) is ${hex(buf[at + k])}, expected ${hex(expected[within + k])}`,
    )
  }
}
