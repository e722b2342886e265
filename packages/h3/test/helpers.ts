import { StoqError } from '@stoq/interface'
import { expect } from 'vitest'
import { StoqH3Error, h3ErrorName } from '../src/index.js'

/** Bytes from hex, ignoring spaces: `hex('0000 510b')`. */
export function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, '')
  if (clean.length % 2 !== 0) throw new Error(`odd hex length: ${text}`)
  const out = new Uint8Array(clean.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16)
  return out
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

export function latin1Bytes(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0))
}

/** Runs `call`, expects a StoqH3Error with `h3Code`, returns it. */
export function expectH3Error(call: () => unknown, h3Code: number): StoqH3Error {
  try {
    call()
  } catch (err) {
    if (!StoqH3Error.isH3Error(err)) throw err
    expect(StoqError.isInstance(err)).toBe(true)
    expect(err).toBeInstanceOf(StoqH3Error)
    expect(h3ErrorName(err.h3Code)).toBe(h3ErrorName(h3Code))
    expect(err.data.h3Code).toBe(h3Code)
    return err
  }
  throw new Error(`expected StoqH3Error ${h3ErrorName(h3Code)}, nothing was thrown`)
}

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function randomBytes(next: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = Math.floor(next() * 256)
  return out
}

/** Splits `bytes` into chunks of random sizes (1..maxChunk). */
export function randomChunks(next: () => number, bytes: Uint8Array, maxChunk: number): Uint8Array[] {
  const chunks: Uint8Array[] = []
  let at = 0
  while (at < bytes.length) {
    const n = 1 + Math.floor(next() * maxChunk)
    chunks.push(bytes.slice(at, at + n))
    at += n
  }
  return chunks
}

/** Each byte as its own chunk. */
export function byteChunks(bytes: Uint8Array): Uint8Array[] {
  return Array.from(bytes, (b) => Uint8Array.of(b))
}
