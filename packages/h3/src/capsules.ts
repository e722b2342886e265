/**
 * The Capsule Protocol (RFC 9297 §3) with the WebTransport session capsules,
 * and the HTTP/3 Datagram payload format (RFC 9297 §2.1).
 *
 * Capsule { Type (i), Length (i), Value (..) } — carried in the DATA frames of
 * the CONNECT stream. WebTransport (draft-ietf-webtrans-http3) defines:
 *
 * - CLOSE_WEBTRANSPORT_SESSION (0x2843): Application Error Code (32 bits),
 *   Application Error Message (UTF-8, at most 1024 bytes);
 * - DRAIN_WEBTRANSPORT_SESSION (0x78ae): no value.
 *
 * HTTP/3 Datagram { Quarter Stream ID (i), HTTP Datagram Payload (..) } — the
 * QUIC DATAGRAM payload; the quarter stream ID is the CONNECT stream's ID / 4.
 *
 * Capsule and datagram format errors are H3_DATAGRAM_ERROR ("Datagram or
 * Capsule Protocol parse error", RFC 9297 §5.2).
 */

import { boolOption, bytesArg, optionsArg, show, stringArg } from './args.js'
import { StoqClosedError, StoqInvalidArgumentError } from '@stoq/interface'
import { ByteWriter } from './bytes.js'
import { H3_DATAGRAM_ERROR, H3_EXCESSIVE_LOAD, StoqH3Error } from './errors.js'
import { VarintAccumulator, readVarint, isVarInt, toVarInt, varintToBigInt, type VarInt } from './varint.js'

export const CAPSULE_DATAGRAM = 0x00
export const CAPSULE_CLOSE_WEBTRANSPORT_SESSION = 0x2843
export const CAPSULE_DRAIN_WEBTRANSPORT_SESSION = 0x78ae

/** Largest Application Error Message of CLOSE_WEBTRANSPORT_SESSION, in bytes. */
export const MAX_CLOSE_REASON_BYTES = 1024

/** Default largest capsule value `CapsuleParser` buffers: 64 KiB. */
export const DEFAULT_MAX_CAPSULE_SIZE = 64 * 1024

/** Largest quarter stream ID: stream IDs stop at 2^62-1 (RFC 9297 §2.1). */
export const MAX_QUARTER_STREAM_ID = (1n << 60n) - 1n

export type Capsule =
  | { kind: 'datagram'; payload: Uint8Array }
  | { kind: 'close_webtransport_session'; code: number; reason: string }
  | { kind: 'drain_webtransport_session' }

/** An unknown capsule that was skipped (with `reportUnknown: true`). */
export interface UnknownCapsuleEvent {
  kind: 'unknown'
  type: VarInt
  length: number
}

export type CapsuleParserEvent = Capsule | UnknownCapsuleEvent

const utf8Encoder = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

// --- encoders ---------------------------------------------------------------------

/** Any capsule: Type, Length, Value. */
export function encodeCapsule(type: VarInt, value: Uint8Array): Uint8Array {
  if (!isVarInt(type)) throw new StoqInvalidArgumentError('type', `must be a varint (got ${show(type)})`)
  bytesArg('value', value)
  return new ByteWriter(value.length + 16).varint(type).varint(value.length).bytes(value).finish()
}

/** DATAGRAM capsule (RFC 9297 §3.5). */
export function encodeDatagramCapsule(payload: Uint8Array): Uint8Array {
  return encodeCapsule(CAPSULE_DATAGRAM, payload)
}

/** CLOSE_WEBTRANSPORT_SESSION with a 32-bit error code and a UTF-8 reason of at most 1024 bytes. */
export function encodeCloseWebTransportSession(code: number, reason = ''): Uint8Array {
  if (!Number.isInteger(code) || code < 0 || code > 0xffffffff) {
    throw new StoqInvalidArgumentError('code', `must be a 32-bit unsigned integer (got ${show(code)})`)
  }
  stringArg('reason', reason)
  const text = utf8Encoder.encode(reason)
  if (text.length > MAX_CLOSE_REASON_BYTES) {
    throw new StoqInvalidArgumentError('reason', `is ${text.length} bytes of UTF-8, the limit is ${MAX_CLOSE_REASON_BYTES}`)
  }
  const value = new Uint8Array(4 + text.length)
  new DataView(value.buffer).setUint32(0, code)
  value.set(text, 4)
  return encodeCapsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, value)
}

/** DRAIN_WEBTRANSPORT_SESSION (empty value). */
export function encodeDrainWebTransportSession(): Uint8Array {
  return encodeCapsule(CAPSULE_DRAIN_WEBTRANSPORT_SESSION, new Uint8Array(0))
}

/** Encodes any `Capsule`. */
export function encodeCapsuleObject(capsule: Capsule): Uint8Array {
  optionsArg('capsule', capsule)
  switch (capsule.kind) {
    case 'datagram':
      return encodeDatagramCapsule(capsule.payload)
    case 'close_webtransport_session':
      return encodeCloseWebTransportSession(capsule.code, capsule.reason)
    case 'drain_webtransport_session':
      return encodeDrainWebTransportSession()
    default:
      throw new StoqInvalidArgumentError('capsule', `unknown capsule kind ${show((capsule as { kind: unknown }).kind)}`)
  }
}

// --- decoding -----------------------------------------------------------------------

function capsuleError(message: string): StoqH3Error {
  return new StoqH3Error(H3_DATAGRAM_ERROR, message)
}

/**
 * Decodes the value of a known capsule type (0x00, 0x2843, 0x78ae). Throws
 * `StoqH3Error` H3_DATAGRAM_ERROR when the value is malformed.
 */
export function decodeCapsuleValue(type: number, value: Uint8Array): Capsule {
  bytesArg('value', value)
  switch (type) {
    case CAPSULE_DATAGRAM:
      return { kind: 'datagram', payload: value }
    case CAPSULE_CLOSE_WEBTRANSPORT_SESSION: {
      if (value.length < 4) throw capsuleError(`CLOSE_WEBTRANSPORT_SESSION value is ${value.length} bytes, less than 4`)
      if (value.length - 4 > MAX_CLOSE_REASON_BYTES) {
        throw capsuleError(`CLOSE_WEBTRANSPORT_SESSION message is ${value.length - 4} bytes, more than ${MAX_CLOSE_REASON_BYTES}`)
      }
      const code = new DataView(value.buffer, value.byteOffset, value.byteLength).getUint32(0)
      let reason: string
      try {
        reason = utf8Decoder.decode(value.subarray(4))
      } catch (cause) {
        throw new StoqH3Error(H3_DATAGRAM_ERROR, 'CLOSE_WEBTRANSPORT_SESSION message is not valid UTF-8', { cause })
      }
      return { kind: 'close_webtransport_session', code, reason }
    }
    case CAPSULE_DRAIN_WEBTRANSPORT_SESSION:
      if (value.length !== 0) throw capsuleError(`DRAIN_WEBTRANSPORT_SESSION has a ${value.length}-byte value`)
      return { kind: 'drain_webtransport_session' }
    default:
      throw new StoqInvalidArgumentError('type', `${typeof type === 'number' ? `0x${type.toString(16)}` : show(type)} is not a known capsule type`)
  }
}

function isKnownCapsuleType(type: VarInt): type is number {
  return type === CAPSULE_DATAGRAM || type === CAPSULE_CLOSE_WEBTRANSPORT_SESSION || type === CAPSULE_DRAIN_WEBTRANSPORT_SESSION
}

export interface CapsuleParserOptions {
  /** Largest known-capsule value buffered (default 64 KiB); larger is H3_EXCESSIVE_LOAD. */
  maxCapsuleSize?: number
  /** Emit an `unknown` event for each skipped unknown capsule. */
  reportUnknown?: boolean
}

const C_TYPE = 0
const C_LENGTH = 1
const C_VALUE = 2
const C_SKIP = 3

/**
 * Incremental capsule parser for the data of a CONNECT stream (the
 * concatenated payloads of its DATA frames). Unknown capsule types are skipped
 * without buffering (RFC 9297 §3.2). `end` checks that the stream did not stop
 * inside a capsule. After an error the parser stays failed.
 */
export class CapsuleParser {
  readonly #max: number
  readonly #reportUnknown: boolean
  #state = C_TYPE
  readonly #varint = new VarintAccumulator()
  #type: VarInt = 0
  #value: Uint8Array = new Uint8Array(0)
  #filled = 0
  #remaining = 0
  #error: unknown = undefined
  #ended = false

  constructor(options: CapsuleParserOptions = {}) {
    optionsArg('options', options, ['maxCapsuleSize', 'reportUnknown'])
    const max = options.maxCapsuleSize ?? DEFAULT_MAX_CAPSULE_SIZE
    if (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 0) {
      throw new StoqInvalidArgumentError('maxCapsuleSize', `must be a non-negative integer (got ${show(max)})`)
    }
    this.#max = max
    this.#reportUnknown = boolOption('reportUnknown', options.reportUnknown)
  }

  /** True between capsules. */
  get atCapsuleBoundary(): boolean {
    return this.#state === C_TYPE && !this.#varint.pending
  }

  push(chunk: Uint8Array): CapsuleParserEvent[] {
    if (this.#error !== undefined) throw this.#error
    if (this.#ended) throw new StoqClosedError('capsule parser', 'capsule parser: push() after end()')
    bytesArg('chunk', chunk)
    try {
      return this.#run(chunk)
    } catch (err) {
      this.#error = err
      throw err
    }
  }

  /** The stream ended; throws H3_DATAGRAM_ERROR if it ended inside a capsule. */
  end(): void {
    if (this.#error !== undefined) throw this.#error
    if (this.#ended) return
    this.#ended = true
    if (!this.atCapsuleBoundary) {
      this.#error = capsuleError('the stream ended inside a capsule')
      throw this.#error
    }
  }

  #run(chunk: Uint8Array): CapsuleParserEvent[] {
    const events: CapsuleParserEvent[] = []
    let i = 0
    while (i < chunk.length) {
      if (this.#state === C_TYPE || this.#state === C_LENGTH) {
        i += this.#varint.feed(chunk, i)
        if (!this.#varint.complete) break
        const value = this.#varint.value
        if (this.#state === C_TYPE) {
          this.#type = value
          this.#state = C_LENGTH
        } else {
          this.#onLength(value, events)
        }
      } else {
        const take = Math.min(this.#remaining, chunk.length - i)
        if (this.#state === C_VALUE) {
          this.#value.set(chunk.subarray(i, i + take), this.#filled)
          this.#filled += take
        }
        this.#remaining -= take
        i += take
        if (this.#remaining === 0) {
          if (this.#state === C_VALUE) this.#complete(events)
          else this.#state = C_TYPE
        }
      }
    }
    return events
  }

  #onLength(length: VarInt, events: CapsuleParserEvent[]): void {
    const type = this.#type
    if (!isKnownCapsuleType(type)) {
      if (typeof length !== 'number') {
        throw new StoqH3Error(H3_EXCESSIVE_LOAD, `unknown capsule 0x${type.toString(16)} claims ${length} bytes`)
      }
      if (this.#reportUnknown) events.push({ kind: 'unknown', type, length })
      this.#remaining = length
      this.#state = length === 0 ? C_TYPE : C_SKIP
      return
    }
    if (typeof length !== 'number' || length > this.#max) {
      throw new StoqH3Error(H3_EXCESSIVE_LOAD, `capsule 0x${type.toString(16)} of ${length} bytes exceeds the limit of ${this.#max} bytes`)
    }
    this.#value = new Uint8Array(length)
    this.#filled = 0
    this.#remaining = length
    if (length === 0) this.#complete(events)
    else this.#state = C_VALUE
  }

  #complete(events: CapsuleParserEvent[]): void {
    const capsule = decodeCapsuleValue(this.#type as number, this.#value)
    this.#value = new Uint8Array(0)
    this.#state = C_TYPE
    events.push(capsule)
  }
}

/** Parses a complete sequence of capsules (push + end). */
export function decodeCapsules(bytes: Uint8Array, options: CapsuleParserOptions = {}): CapsuleParserEvent[] {
  const parser = new CapsuleParser(options)
  const events = parser.push(bytes)
  parser.end()
  return events
}

// --- HTTP/3 datagrams -----------------------------------------------------------------

function checkDatagramStreamId(streamId: VarInt): bigint {
  if (!isVarInt(streamId) || (varintToBigInt(streamId) & 3n) !== 0n) {
    throw new StoqInvalidArgumentError('streamId', `HTTP/3 datagrams belong to client-initiated bidirectional streams (ID % 4 == 0), got ${show(streamId)}`)
  }
  return varintToBigInt(streamId)
}

/** The Quarter Stream ID prefix of an HTTP/3 datagram for `streamId` (write the payload after it). */
export function encodeHttpDatagramHeader(streamId: VarInt): Uint8Array {
  return new ByteWriter(8).varint(toVarInt(checkDatagramStreamId(streamId) >> 2n)).finish()
}

/** An HTTP/3 datagram: Quarter Stream ID (`streamId / 4`), then `payload`. */
export function encodeHttpDatagram(streamId: VarInt, payload: Uint8Array): Uint8Array {
  const q = toVarInt(checkDatagramStreamId(streamId) >> 2n)
  bytesArg('payload', payload)
  return new ByteWriter(payload.length + 8).varint(q).bytes(payload).finish()
}

/**
 * Decodes a QUIC DATAGRAM payload as an HTTP/3 datagram. Throws `StoqH3Error`
 * H3_DATAGRAM_ERROR when it is too short for the Quarter Stream ID or that ID
 * exceeds 2^60-1. `payload` is a view into `bytes`.
 */
export function decodeHttpDatagram(bytes: Uint8Array): { streamId: VarInt; quarterStreamId: VarInt; payload: Uint8Array } {
  bytesArg('bytes', bytes)
  const q = readVarint(bytes, 0)
  if (q === null) throw capsuleError('HTTP/3 datagram is too short for its Quarter Stream ID')
  const quarter = varintToBigInt(q.value)
  if (quarter > MAX_QUARTER_STREAM_ID) throw capsuleError(`Quarter Stream ID ${quarter} exceeds 2^60-1`)
  return { streamId: toVarInt(quarter << 2n), quarterStreamId: q.value, payload: bytes.subarray(q.length) }
}
