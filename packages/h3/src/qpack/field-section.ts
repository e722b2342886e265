/**
 * QPACK encoded field sections (RFC 9204 §4.5) limited to the static table.
 *
 * We advertise SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0, so a conformant peer
 * never references the dynamic table: Required Insert Count must be 0, and
 * any dynamic or post-base reference is QPACK_DECOMPRESSION_FAILED.
 *
 * Field names and values are exchanged as latin1 strings, one char per octet
 * (like Node's `http` module), so any octet sequence survives a round trip.
 * Encoding a string with a char above U+00FF is refused; pass UTF-8 text
 * through `Buffer.from(s).toString('latin1')` first if you need it.
 */

import { boolOption, bytesArg, intArg, iterableArg, offsetArg, optionsArg, show, stringArg } from '../args.js'
import { StoqInvalidArgumentError } from '@stoq/interface'
import { ByteWriter, latin1 } from '../bytes.js'
import { H3_EXCESSIVE_LOAD, QPACK_DECOMPRESSION_FAILED, StoqH3Error } from '../errors.js'
import { huffmanDecode, huffmanEncode, huffmanEncodedLength } from './huffman.js'
import { QPACK_STATIC_TABLE, STATIC_ENTRY_INDEX, STATIC_NAME_INDEX } from './static-table.js'

/** A field line: `[name, value]`. */
export type FieldLine = [name: string, value: string]

/** Default `maxFieldSectionSize` of `decodeFieldSection`: 64 KiB. */
export const DEFAULT_MAX_FIELD_SECTION_SIZE = 64 * 1024

/** Per-field overhead in the field section size (RFC 9114 §4.2.2). */
export const FIELD_OVERHEAD = 32

/** Size of a field section as RFC 9114 §4.2.2 counts it: Σ name + value + 32. */
export function fieldSectionSize(fields: Iterable<readonly [string, string]>): number {
  iterableArg('fields', fields)
  let size = 0
  for (const field of fields) {
    iterableArg('fields', field)
    const [name, value] = field
    stringArg('name', name)
    stringArg('value', value)
    size += name.length + value.length + FIELD_OVERHEAD
  }
  return size
}

// --- prefixed integers (RFC 7541 §5.1, used by RFC 9204 §4.1.1) ---------------

function writeInt(w: ByteWriter, flags: number, prefixBits: number, value: number): void {
  const max = (1 << prefixBits) - 1
  if (value < max) {
    w.byte(flags | value)
    return
  }
  w.byte(flags | max)
  let rest = value - max
  while (rest >= 128) {
    w.byte((rest % 128) | 0x80)
    rest = Math.floor(rest / 128)
  }
  w.byte(rest)
}

/** Encodes an N-bit-prefix integer; `flags` fills the bits above the prefix in the first byte. */
export function encodeQpackInteger(value: number, prefixBits: number, flags = 0): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new StoqInvalidArgumentError('value', `must be a non-negative safe integer (got ${show(value)})`)
  }
  intArg('prefixBits', prefixBits, 1, 8)
  intArg('flags', flags, 0, 255)
  const w = new ByteWriter(12)
  writeInt(w, flags & ~((1 << prefixBits) - 1) & 0xff, prefixBits, value)
  return w.finish()
}

function truncated(): StoqH3Error {
  return new StoqH3Error(QPACK_DECOMPRESSION_FAILED, 'field section is truncated')
}

/** Reads an N-bit-prefix integer at `at`; returns [value, next offset]. */
function readInt(buf: Uint8Array, at: number, prefixBits: number): [number, number] {
  if (at >= buf.length) throw truncated()
  const max = (1 << prefixBits) - 1
  let value = buf[at++]! & max
  if (value < max) return [value, at]
  let shift = 0
  for (;;) {
    if (at >= buf.length) throw truncated()
    const b = buf[at++]!
    value += (b & 0x7f) * 2 ** shift
    if (value > Number.MAX_SAFE_INTEGER) {
      throw new StoqH3Error(QPACK_DECOMPRESSION_FAILED, 'integer exceeds 2^53-1')
    }
    if ((b & 0x80) === 0) return [value, at]
    shift += 7
    if (shift > 56) throw new StoqH3Error(QPACK_DECOMPRESSION_FAILED, 'integer encoding is too long')
  }
}

/**
 * Decodes an N-bit-prefix integer. Throws `StoqH3Error`
 * (QPACK_DECOMPRESSION_FAILED) on truncation or a value above 2^53-1.
 */
export function decodeQpackInteger(buf: Uint8Array, offset: number, prefixBits: number): { value: number; length: number } {
  bytesArg('buf', buf)
  offsetArg(offset, buf)
  intArg('prefixBits', prefixBits, 1, 8)
  const [value, next] = readInt(buf, offset, prefixBits)
  return { value, length: next - offset }
}

// --- strings (RFC 9204 §4.1.2) -----------------------------------------------------

function toLatin1Bytes(text: string, what: string): Uint8Array {
  if (typeof text !== 'string') throw new StoqInvalidArgumentError(what, `must be a string (got ${show(text)})`)
  const out = new Uint8Array(text.length)
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c > 0xff) {
      throw new StoqInvalidArgumentError(what, `char U+${c.toString(16).padStart(4, '0')} at ${i} is not latin1 (one octet per char)`)
    }
    out[i] = c
  }
  return out
}

/** String literal with an H bit just above a `prefixBits` length prefix; `flags` fills the bits above H. */
function writeString(w: ByteWriter, bytes: Uint8Array, prefixBits: number, huffman: boolean, flags = 0): void {
  if (huffman) {
    const hlen = huffmanEncodedLength(bytes)
    if (hlen < bytes.length) {
      writeInt(w, flags | (1 << prefixBits), prefixBits, hlen)
      w.bytes(huffmanEncode(bytes))
      return
    }
  }
  writeInt(w, flags, prefixBits, bytes.length)
  w.bytes(bytes)
}

/** Reads a string literal whose length has a `prefixBits` prefix; the H bit is just above it. */
function readString(buf: Uint8Array, at: number, prefixBits: number, budget: number): [string, number] {
  if (at >= buf.length) throw truncated()
  const huffman = (buf[at]! & (1 << prefixBits)) !== 0
  const [length, start] = readInt(buf, at, prefixBits)
  if (length > buf.length - start) throw truncated()
  const end = start + length
  if (!huffman) {
    if (length > budget) throw overSize()
    return [latin1(buf, start, end), end]
  }
  const decoded = huffmanDecode(buf.subarray(start, end), Math.max(0, budget), H3_EXCESSIVE_LOAD)
  return [latin1(decoded), end]
}

function overSize(): StoqH3Error {
  return new StoqH3Error(H3_EXCESSIVE_LOAD, 'field section exceeds the maximum field section size')
}

function staticEntry(index: number): readonly [string, string] {
  const entry = QPACK_STATIC_TABLE[index]
  if (entry === undefined) {
    throw new StoqH3Error(QPACK_DECOMPRESSION_FAILED, `static table index ${index} is out of range (0-98)`)
  }
  return entry
}

function dynamicReference(what: string): StoqH3Error {
  return new StoqH3Error(QPACK_DECOMPRESSION_FAILED, `${what} references the dynamic table, whose capacity is 0`)
}

// --- field sections -------------------------------------------------------------

export interface EncodeFieldSectionOptions {
  /** Huffman-encode each string when that makes it shorter. Default false. */
  huffman?: boolean
}

/**
 * Encodes fields as a QPACK field section without the dynamic table:
 * prefix 0x00 0x00 (Required Insert Count 0, Base 0), then for each field an
 * indexed static line when the static table has the exact field, a literal
 * with a static name reference when it has the name, else a literal with a
 * literal name. Fields are encoded as given: validate them first.
 */
export function encodeFieldSection(fields: Iterable<readonly [string, string]>, options: EncodeFieldSectionOptions = {}): Uint8Array {
  iterableArg('fields', fields)
  optionsArg('options', options, ['huffman'])
  const huffman = boolOption('huffman', options.huffman)
  const w = new ByteWriter(128)
  w.byte(0x00).byte(0x00)
  for (const field of fields) {
    iterableArg('fields', field)
    const [name, value] = field
    const nameBytes = toLatin1Bytes(name, 'name')
    const valueBytes = toLatin1Bytes(value, 'value')
    const exact = STATIC_ENTRY_INDEX.get(`${name}\0${value}`)
    if (exact !== undefined) {
      writeInt(w, 0xc0, 6, exact) // 1 T=1 index(6)
      continue
    }
    const nameIndex = STATIC_NAME_INDEX.get(name)
    if (nameIndex !== undefined) {
      writeInt(w, 0x50, 4, nameIndex) // 01 N=0 T=1 index(4)
      writeString(w, valueBytes, 7, huffman)
    } else {
      writeString(w, nameBytes, 3, huffman, 0x20) // 001 N=0 H len(3)
      writeString(w, valueBytes, 7, huffman)
    }
  }
  return w.finish()
}

export interface DecodeFieldSectionOptions {
  /**
   * Largest field section accepted, counted as RFC 9114 §4.2.2 does (Σ name +
   * value + 32); larger is H3_EXCESSIVE_LOAD. Default 64 KiB. Use the value you
   * advertised in SETTINGS_MAX_FIELD_SECTION_SIZE.
   */
  maxFieldSectionSize?: number
}

/**
 * Decodes a complete QPACK field section (the payload of a HEADERS or
 * PUSH_PROMISE frame) into `[name, value]` pairs, in order. Performs no HTTP
 * validation (see `validateRequestHeaders`). Throws `StoqH3Error`:
 * QPACK_DECOMPRESSION_FAILED for truncation, any dynamic-table reference
 * (non-zero Required Insert Count or Base, dynamic or post-base lines), a
 * static index above 98 or bad Huffman data; H3_EXCESSIVE_LOAD when the
 * section exceeds `maxFieldSectionSize`.
 */
export function decodeFieldSection(bytes: Uint8Array, options: DecodeFieldSectionOptions = {}): FieldLine[] {
  bytesArg('bytes', bytes)
  optionsArg('options', options, ['maxFieldSectionSize'])
  const max = options.maxFieldSectionSize ?? DEFAULT_MAX_FIELD_SECTION_SIZE
  if (typeof max !== 'number' || !(max >= 0)) {
    throw new StoqInvalidArgumentError('maxFieldSectionSize', `must be a non-negative number (got ${show(max)})`)
  }

  // Prefix (§4.5.1): Required Insert Count (8-bit prefix), S + Delta Base (7-bit prefix).
  const [ric, afterRic] = readInt(bytes, 0, 8)
  if (ric !== 0) throw dynamicReference(`Required Insert Count (encoded ${ric})`)
  if (afterRic >= bytes.length) throw truncated()
  const sign = (bytes[afterRic]! & 0x80) !== 0
  const [deltaBase, first] = readInt(bytes, afterRic, 7)
  if (sign || deltaBase !== 0) {
    throw new StoqH3Error(QPACK_DECOMPRESSION_FAILED, `Base must be 0 without a dynamic table (sign ${sign ? 1 : 0}, delta ${deltaBase})`)
  }

  const fields: FieldLine[] = []
  let size = 0
  let at = first
  while (at < bytes.length) {
    const b = bytes[at]!
    let name: string
    let value: string
    if ((b & 0x80) !== 0) {
      // Indexed field line: 1 T index(6).
      if ((b & 0x40) === 0) throw dynamicReference('indexed field line')
      const [index, next] = readInt(bytes, at, 6)
      ;[name, value] = staticEntry(index)
      at = next
      size += name.length + value.length + FIELD_OVERHEAD
      if (size > max) throw overSize()
    } else if ((b & 0x40) !== 0) {
      // Literal field line with name reference: 01 N T index(4), value.
      if ((b & 0x10) === 0) throw dynamicReference('literal field line with name reference')
      const [index, next] = readInt(bytes, at, 4)
      name = staticEntry(index)[0]
      const budget = max - size - FIELD_OVERHEAD - name.length
      if (budget < 0) throw overSize()
      ;[value, at] = readString(bytes, next, 7, budget)
      size += name.length + value.length + FIELD_OVERHEAD
      if (size > max) throw overSize()
    } else if ((b & 0x20) !== 0) {
      // Literal field line with literal name: 001 N H len(3), name, value.
      const nameBudget = max - size - FIELD_OVERHEAD
      if (nameBudget < 0) throw overSize()
      const [n, next] = readString(bytes, at, 3, nameBudget)
      name = n
      ;[value, at] = readString(bytes, next, 7, nameBudget - name.length)
      size += name.length + value.length + FIELD_OVERHEAD
      if (size > max) throw overSize()
    } else if ((b & 0x10) !== 0) {
      throw dynamicReference('indexed field line with post-base index')
    } else {
      throw dynamicReference('literal field line with post-base name reference')
    }
    fields.push([name, value])
  }
  return fields
}
