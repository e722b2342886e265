/** Small byte helpers shared by the encoders (internal). */

import { writeVarint, varintLength, type VarInt } from './varint.js'

/** A growable byte buffer for encoders. */
export class ByteWriter {
  #buf: Uint8Array
  #len = 0

  constructor(initialSize = 64) {
    // A NaN size would give an empty buffer that never grows (an endless loop in #reserve).
    this.#buf = new Uint8Array(Number.isSafeInteger(initialSize) ? Math.max(16, initialSize) : 64)
  }

  get length(): number {
    return this.#len
  }

  #reserve(extra: number): void {
    const need = this.#len + extra
    if (need <= this.#buf.length) return
    let size = Math.max(16, this.#buf.length * 2)
    while (size < need) size *= 2
    const next = new Uint8Array(size)
    next.set(this.#buf.subarray(0, this.#len))
    this.#buf = next
  }

  byte(b: number): this {
    this.#reserve(1)
    this.#buf[this.#len++] = b & 0xff
    return this
  }

  bytes(data: Uint8Array): this {
    this.#reserve(data.length)
    this.#buf.set(data, this.#len)
    this.#len += data.length
    return this
  }

  /** Writes each char code of a latin1 string (every code must be < 256). */
  latin1(text: string): this {
    this.#reserve(text.length)
    for (let i = 0; i < text.length; i++) this.#buf[this.#len++] = text.charCodeAt(i)
    return this
  }

  varint(value: VarInt): this {
    const n = varintLength(value)
    this.#reserve(n)
    this.#len = writeVarint(this.#buf, this.#len, value)
    return this
  }

  /** A copy of the written bytes. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len)
  }
}

/** Concatenates byte arrays. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0
  for (const p of parts) total += p.length
  const out = new Uint8Array(total)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** Reads a latin1 string (one char per byte). */
export function latin1(bytes: Uint8Array, start = 0, end = bytes.length): string {
  let s = ''
  // Chunked to stay clear of argument-count limits on long values.
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode.apply(null, Array.from(bytes.subarray(i, Math.min(end, i + 4096))))
  }
  return s
}
