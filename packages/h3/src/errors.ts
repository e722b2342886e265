/**
 * HTTP/3, QPACK and WebTransport error codes, and the typed error every decoder
 * of this package throws when the peer's bytes break the protocol.
 *
 * - RFC 9114 §8.1: HTTP/3 error codes (H3_*).
 * - RFC 9204 §6: QPACK error codes (QPACK_*).
 * - RFC 9297 §5.2: H3_DATAGRAM_ERROR.
 * - draft-ietf-webtrans-http3: WT_* codes and the mapping of WebTransport
 *   application error codes into the HTTP/3 error code space.
 */

import { show } from './args.js'
import { isVarInt } from './varint.js'
import { StoqError, StoqInvalidArgumentError, type StoqErrorCode } from '@stoq/interface'

// --- RFC 9114 §8.1 ---------------------------------------------------------

/** No error; used when closing the connection or a stream without a problem. */
export const H3_NO_ERROR = 0x0100
/** Peer violated the protocol in a way no more specific code covers. */
export const H3_GENERAL_PROTOCOL_ERROR = 0x0101
/** An internal error in the HTTP stack. */
export const H3_INTERNAL_ERROR = 0x0102
/** The peer created a stream that will not be accepted. */
export const H3_STREAM_CREATION_ERROR = 0x0103
/** A stream required by the HTTP/3 connection was closed or reset. */
export const H3_CLOSED_CRITICAL_STREAM = 0x0104
/** A frame was received that is not permitted in the current state or on the current stream. */
export const H3_FRAME_UNEXPECTED = 0x0105
/** A frame fails its layout requirements or has an invalid size. */
export const H3_FRAME_ERROR = 0x0106
/** The peer is generating excessive load. */
export const H3_EXCESSIVE_LOAD = 0x0107
/** A stream ID or push ID was used incorrectly. */
export const H3_ID_ERROR = 0x0108
/** An error in the payload of a SETTINGS frame. */
export const H3_SETTINGS_ERROR = 0x0109
/** No SETTINGS frame at the beginning of the control stream. */
export const H3_MISSING_SETTINGS = 0x010a
/** A server rejected a request without performing any application processing. */
export const H3_REQUEST_REJECTED = 0x010b
/** The request or its response (including pushed responses) is cancelled. */
export const H3_REQUEST_CANCELLED = 0x010c
/** The client's stream terminated without containing a fully formed request. */
export const H3_REQUEST_INCOMPLETE = 0x010d
/** An HTTP message was malformed and cannot be processed. */
export const H3_MESSAGE_ERROR = 0x010e
/** The TCP connection established in response to a CONNECT request was reset or abnormally closed. */
export const H3_CONNECT_ERROR = 0x010f
/** The requested operation cannot be served over HTTP/3; the peer should retry over HTTP/1.1. */
export const H3_VERSION_FALLBACK = 0x0110

// --- RFC 9204 §6 -----------------------------------------------------------

/** The decoder failed to interpret an encoded field section. */
export const QPACK_DECOMPRESSION_FAILED = 0x0200
/** The decoder failed to interpret an encoder instruction on the encoder stream. */
export const QPACK_ENCODER_STREAM_ERROR = 0x0201
/** The encoder failed to interpret a decoder instruction on the decoder stream. */
export const QPACK_DECODER_STREAM_ERROR = 0x0202

// --- RFC 9297 §5.2 ---------------------------------------------------------

/** Datagram or Capsule Protocol parse error. */
export const H3_DATAGRAM_ERROR = 0x33

// --- draft-ietf-webtrans-http3 --------------------------------------------

/** The WebTransport session is gone (streams still open when the session ends). */
export const WT_SESSION_GONE = 0x170d7b68
/** A stream arrived for a session that could not be buffered (later drafts). */
export const WT_BUFFERED_STREAM_REJECTED = 0x3994bd84
/** First HTTP/3 error code of the range WebTransport application error codes map into. */
export const WT_APPLICATION_ERROR_FIRST = 0x52e4a40fa8db
/** Last HTTP/3 error code of that range (the image of 0xffffffff). */
export const WT_APPLICATION_ERROR_LAST = 0x52e5ac983162
/** Largest WebTransport application error code (32 bits). */
export const WT_APPLICATION_ERROR_MAX = 0xffffffff

/** Every named code of this module, by name. */
export const H3_ERROR_CODES = {
  H3_NO_ERROR,
  H3_GENERAL_PROTOCOL_ERROR,
  H3_INTERNAL_ERROR,
  H3_STREAM_CREATION_ERROR,
  H3_CLOSED_CRITICAL_STREAM,
  H3_FRAME_UNEXPECTED,
  H3_FRAME_ERROR,
  H3_EXCESSIVE_LOAD,
  H3_ID_ERROR,
  H3_SETTINGS_ERROR,
  H3_MISSING_SETTINGS,
  H3_REQUEST_REJECTED,
  H3_REQUEST_CANCELLED,
  H3_REQUEST_INCOMPLETE,
  H3_MESSAGE_ERROR,
  H3_CONNECT_ERROR,
  H3_VERSION_FALLBACK,
  QPACK_DECOMPRESSION_FAILED,
  QPACK_ENCODER_STREAM_ERROR,
  QPACK_DECODER_STREAM_ERROR,
  H3_DATAGRAM_ERROR,
  WT_SESSION_GONE,
  WT_BUFFERED_STREAM_REJECTED,
} as const

export type H3ErrorName = keyof typeof H3_ERROR_CODES

const NAMES = new Map<number, string>(Object.entries(H3_ERROR_CODES).map(([name, code]) => [code, name]))

/**
 * True for the reserved ("grease") codepoints `0x1f * N + 0x21` that RFC 9114
 * keeps free in the frame type, stream type, setting and error code spaces.
 */
export function isReservedCodepoint(value: number | bigint): boolean {
  if (typeof value === 'bigint') return value >= 0x21n && (value - 0x21n) % 0x1fn === 0n
  return Number.isSafeInteger(value) && value >= 0x21 && (value - 0x21) % 0x1f === 0
}

/** The `n`th reserved codepoint, `0x1f * n + 0x21` (a bigint once it passes 2^53). */
export function reservedCodepoint(n: number | bigint): number | bigint {
  if (!(typeof n === 'bigint' || (typeof n === 'number' && Number.isSafeInteger(n)))) {
    throw new StoqInvalidArgumentError('n', `reserved codepoint index must be an integer (got ${show(n)})`)
  }
  const v = BigInt(n) * 0x1fn + 0x21n
  if (BigInt(n) < 0n || v > (1n << 62n) - 1n) {
    throw new StoqInvalidArgumentError('n', `reserved codepoint index ${n} is out of range`)
  }
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v
}

/**
 * Name of an HTTP/3 / QPACK / WebTransport error code: `H3_FRAME_ERROR`,
 * `WT_APPLICATION_ERROR(7)`, `RESERVED(0x…)`, or `UNKNOWN(0x…)`.
 */
export function h3ErrorName(code: number | bigint): string {
  if (!isVarInt(code)) throw new StoqInvalidArgumentError('code', `expected an HTTP/3 error code (an integer in 0..2^62-1), got ${show(code)}`)
  const n = typeof code === 'bigint' && code <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(code) : code
  if (typeof n === 'number') {
    const name = NAMES.get(n)
    if (name !== undefined) return name
    const app = http3ErrorToWebTransport(n)
    if (app !== null) return `WT_APPLICATION_ERROR(${app})`
  }
  if (isReservedCodepoint(n)) return `RESERVED(0x${n.toString(16)})`
  return `UNKNOWN(0x${n.toString(16)})`
}

/**
 * Maps a WebTransport application error code (0 … 2^32-1) to the HTTP/3 error
 * code carried in RESET_STREAM / STOP_SENDING: `first + n + floor(n / 0x1e)`,
 * which steps over the reserved codepoints inside the range.
 */
export function webTransportErrorToHttp3(code: number): number {
  if (!Number.isInteger(code) || code < 0 || code > WT_APPLICATION_ERROR_MAX) {
    throw new StoqInvalidArgumentError('code', `WebTransport error code must be an integer in 0..2^32-1, got ${show(code)}`)
  }
  return WT_APPLICATION_ERROR_FIRST + code + Math.floor(code / 0x1e)
}

/**
 * The WebTransport application error code an HTTP/3 error code carries, or
 * `null` when the code is outside the mapped range or is a reserved codepoint.
 */
export function http3ErrorToWebTransport(code: number | bigint): number | null {
  if (typeof code === 'bigint') {
    if (code < BigInt(WT_APPLICATION_ERROR_FIRST) || code > BigInt(WT_APPLICATION_ERROR_LAST)) return null
    code = Number(code)
  }
  if (!Number.isSafeInteger(code) || code < WT_APPLICATION_ERROR_FIRST || code > WT_APPLICATION_ERROR_LAST) {
    return null
  }
  if ((code - 0x21) % 0x1f === 0) return null
  const shifted = code - WT_APPLICATION_ERROR_FIRST
  return shifted - Math.floor(shifted / 0x1f)
}

// --- the typed error ---------------------------------------------------------

/**
 * The `StoqErrorCode` that `StoqH3Error` carries.
 *
 * `@stoq/interface` has no protocol-violation code yet; until it gains
 * `'STOQ_ERR_H3'`, this package uses the closest existing one. Compare on
 * `StoqH3Error.isH3Error(err)` and `err.h3Code`, not on `err.code`.
 */
export const STOQ_H3_ERROR_CODE: StoqErrorCode = 'STOQ_ERR_H3'

const H3_BRAND = Symbol.for('@stoq/h3-error')

/** Details of a `StoqH3Error`. */
export interface StoqH3ErrorData {
  /** The HTTP/3 (or QPACK) error code to close the connection or stream with. */
  h3Code: number
  /** Its name, e.g. `H3_FRAME_ERROR`. */
  h3CodeName: string
}

/**
 * The peer's bytes broke HTTP/3, QPACK, the Capsule Protocol or WebTransport.
 * `h3Code` is the error code (RFC 9114 §8.1 / RFC 9204 §6 / RFC 9297) to abort
 * the stream or close the connection with.
 */
export class StoqH3Error extends StoqError<StoqH3ErrorData> {
  /** HTTP/3 / QPACK error code, e.g. `H3_FRAME_ERROR` (0x106). */
  readonly h3Code: number

  constructor(h3Code: number, message: string, options?: { cause?: unknown }) {
    if (typeof h3Code !== 'number') {
      throw new StoqInvalidArgumentError('h3Code', `expected an HTTP/3 error code (a number), got ${show(h3Code)}`)
    }
    if (typeof message !== 'string') throw new StoqInvalidArgumentError('message', `expected a string, got ${show(message)}`)
    const h3CodeName = h3ErrorName(h3Code)
    super(STOQ_H3_ERROR_CODE, `${h3CodeName}: ${message}`, { h3Code, h3CodeName }, options)
    this.h3Code = h3Code
    Object.defineProperty(this, H3_BRAND, { value: true })
  }

  /** True for a `StoqH3Error` from any copy of this package. */
  static isH3Error(value: unknown): value is StoqH3Error {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[H3_BRAND] === true
  }
}
