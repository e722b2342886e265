/**
 * QUIC variable-length integers (RFC 9000 §16).
 *
 * The two most significant bits of the first byte give the length (1, 2, 4 or
 * 8 bytes); the remaining 6, 14, 30 or 62 bits hold the value, big-endian.
 *
 * Values are exchanged as `VarInt = number | bigint` in a *canonical* form: a
 * `number` when the value is at most `Number.MAX_SAFE_INTEGER` (2^53-1), a
 * `bigint` above that. Decoders always return the canonical form, so decoded
 * values compare with `===` against plain number constants and can be used as
 * `Map` keys. Encoders accept either type.
 *
 * Decoders never throw on truncated input: they return `null`, meaning "need
 * more bytes", so they can be used on partially received stream data.
 */

import { bytesArg, intArg, offsetArg, show } from './args.js'
import { StoqInvalidArgumentError } from '@stoq/interface'

/** A varint value: a `number` up to 2^53-1, a `bigint` above (canonical form). */
export type VarInt = number | bigint

/** Largest value a varint can carry: 2^62-1. */
export const VARINT_MAX = (1n << 62n) - 1n

/** Largest varint value that fits in 1, 2 and 4 bytes. */
export const VARINT_MAX_1 = 0x3f
export const VARINT_MAX_2 = 0x3fff
export const VARINT_MAX_4 = 0x3fffffff

const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER)

/** A decoded value and how many bytes it took. */
export interface DecodedVarint<T = VarInt> {
  value: T
  length: 1 | 2 | 4 | 8
}

/** The canonical form of a value: a number when it is a safe integer, else a bigint. */
export function toVarInt(value: number | bigint): VarInt {
  checkVarInt(value, 'value')
  if (typeof value === 'bigint') return value <= MAX_SAFE_BIG && value >= 0n ? Number(value) : value
  return value
}

/** The value as a bigint. */
export function varintToBigInt(value: VarInt): bigint {
  checkVarInt(value, 'value')
  return typeof value === 'bigint' ? value : BigInt(value)
}

/** True when `value` is an integer a varint can carry (0 … 2^62-1). */
export function isVarInt(value: unknown): value is VarInt {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0
  if (typeof value === 'bigint') return value >= 0n && value <= VARINT_MAX
  return false
}

function checkVarInt(value: unknown, what: string): asserts value is VarInt {
  if (!isVarInt(value)) {
    throw new StoqInvalidArgumentError(what, `must be an integer in 0..2^62-1 (got ${show(value)})`)
  }
}

/** Bytes needed to encode `value` on the shortest form. */
export function varintLength(value: VarInt): 1 | 2 | 4 | 8 {
  checkVarInt(value, 'varint')
  if (typeof value === 'bigint') {
    if (value <= 0x3fn) return 1
    if (value <= 0x3fffn) return 2
    if (value <= 0x3fffffffn) return 4
    return 8
  }
  if (value <= VARINT_MAX_1) return 1
  if (value <= VARINT_MAX_2) return 2
  if (value <= VARINT_MAX_4) return 4
  return 8
}

/** Length of the varint whose first byte is `firstByte`. */
export function varintLengthFromFirstByte(firstByte: number): 1 | 2 | 4 | 8 {
  intArg('firstByte', firstByte, 0, 255)
  return (1 << (firstByte >> 6)) as 1 | 2 | 4 | 8
}

/**
 * Writes `value` at `target[offset]` and returns the offset after it. `length`
 * forces a longer-than-needed encoding (RFC 9000 allows it); it must be 1, 2,
 * 4 or 8 and large enough.
 */
export function writeVarint(target: Uint8Array, offset: number, value: VarInt, length?: 1 | 2 | 4 | 8): number {
  bytesArg('target', target)
  const min = varintLength(value)
  const len = length ?? min
  if (len !== 1 && len !== 2 && len !== 4 && len !== 8) {
    throw new StoqInvalidArgumentError('length', `varint length must be 1, 2, 4 or 8 (got ${show(len)})`)
  }
  if (len < min) {
    throw new StoqInvalidArgumentError('length', `${String(value)} does not fit in a ${len}-byte varint`)
  }
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0 || offset + len > target.length) {
    throw new StoqInvalidArgumentError('target', `no room for a ${len}-byte varint at offset ${show(offset)}`)
  }
  if (len === 8) {
    const big = varintToBigInt(value)
    const hi = Number(big >> 32n)
    const lo = Number(big & 0xffffffffn)
    target[offset] = 0xc0 | (hi >>> 24)
    target[offset + 1] = (hi >>> 16) & 0xff
    target[offset + 2] = (hi >>> 8) & 0xff
    target[offset + 3] = hi & 0xff
    target[offset + 4] = lo >>> 24
    target[offset + 5] = (lo >>> 16) & 0xff
    target[offset + 6] = (lo >>> 8) & 0xff
    target[offset + 7] = lo & 0xff
    return offset + 8
  }
  const v = Number(value)
  if (len === 1) {
    target[offset] = v
  } else if (len === 2) {
    target[offset] = 0x40 | (v >>> 8)
    target[offset + 1] = v & 0xff
  } else {
    target[offset] = 0x80 | (v >>> 24)
    target[offset + 1] = (v >>> 16) & 0xff
    target[offset + 2] = (v >>> 8) & 0xff
    target[offset + 3] = v & 0xff
  }
  return offset + len
}

/** Encodes `value` (shortest form unless `length` is given). */
export function encodeVarint(value: VarInt, length?: 1 | 2 | 4 | 8): Uint8Array {
  if (length !== undefined && length !== 1 && length !== 2 && length !== 4 && length !== 8) {
    throw new StoqInvalidArgumentError('length', `varint length must be 1, 2, 4 or 8 (got ${show(length)})`)
  }
  const out = new Uint8Array(length ?? varintLength(value))
  writeVarint(out, 0, value, length)
  return out
}

/**
 * Decodes the varint at `buf[offset]` in canonical form (number up to 2^53-1,
 * bigint above). Returns `null` when `buf` ends before the varint does.
 */
export function decodeVarint(buf: Uint8Array, offset = 0): DecodedVarint<VarInt> | null {
  bytesArg('buf', buf)
  offsetArg(offset, buf)
  return readVarint(buf, offset)
}

/** `decodeVarint` without the argument checks, for the decoders of this package (internal). */
export function readVarint(buf: Uint8Array, offset: number): DecodedVarint<VarInt> | null {
  if (offset >= buf.length) return null
  const first = buf[offset]!
  const length = (1 << (first >> 6)) as 1 | 2 | 4 | 8
  if (offset + length > buf.length) return null
  switch (length) {
    case 1:
      return { value: first & 0x3f, length }
    case 2:
      return { value: ((first & 0x3f) << 8) | buf[offset + 1]!, length }
    case 4:
      return {
        value: (first & 0x3f) * 0x1000000 + (buf[offset + 1]! << 16) + ((buf[offset + 2]! << 8) | buf[offset + 3]!),
        length,
      }
    default: {
      const hi = (first & 0x3f) * 0x1000000 + ((buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!)
      const lo = buf[offset + 4]! * 0x1000000 + ((buf[offset + 5]! << 16) | (buf[offset + 6]! << 8) | buf[offset + 7]!)
      // hi < 2^21 means hi * 2^32 + lo < 2^53: exact as a double.
      if (hi < 0x200000) return { value: hi * 0x100000000 + lo, length }
      return { value: (BigInt(hi) << 32n) | BigInt(lo), length }
    }
  }
}

/** Like `decodeVarint` but always returns a bigint. */
export function decodeVarintBig(buf: Uint8Array, offset = 0): DecodedVarint<bigint> | null {
  const r = decodeVarint(buf, offset)
  if (r === null) return null
  return { value: varintToBigInt(r.value), length: r.length }
}

/**
 * One QUIC varint read across chunks of any size, for the incremental parsers: `feed` takes the
 * bytes it needs from `chunk` at `at` and returns how many it took; when the varint is whole,
 * `complete` is true and `value` holds it. No allocation per varint.
 */
export class VarintAccumulator {
  readonly #buf = new Uint8Array(8)
  #len = 0
  #need = 0
  /** The last completed varint. */
  value: VarInt = 0
  /** Whether the last `feed` completed a varint. */
  complete = false

  /** True while a varint has begun but is not whole yet. */
  get pending(): boolean {
    return this.#len > 0
  }

  feed(chunk: Uint8Array, at: number): number {
    if (this.#len === 0) this.#need = 1 << (chunk[at]! >> 6)
    const take = Math.min(this.#need - this.#len, chunk.length - at)
    for (let k = 0; k < take; k++) this.#buf[this.#len++] = chunk[at + k]!
    this.complete = this.#len === this.#need
    if (this.complete) {
      this.value = readVarint(this.#buf.subarray(0, this.#need), 0)!.value
      this.#len = 0
    }
    return take
  }
}
