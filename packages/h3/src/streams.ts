/**
 * Stream prefaces.
 *
 * Unidirectional streams (RFC 9114 §6.2) start with a stream type varint:
 * control 0x00, push 0x01 (followed by the push ID), QPACK encoder 0x02, QPACK
 * decoder 0x03 (RFC 9204 §4.2), and WebTransport's 0x54 followed by the
 * session ID (draft-ietf-webtrans-http3-02 §4.1).
 *
 * Bidirectional streams carry HTTP/3 frames, except WebTransport streams,
 * which start with the WEBTRANSPORT_STREAM signal 0x41 and the session ID
 * (draft-ietf-webtrans-http3-02 §4.2).
 *
 * Also: QUIC stream ID helpers (RFC 9000 §2.1).
 */

import { bytesArg, offsetArg, optionsArg, show } from './args.js'
import { StoqInvalidArgumentError } from '@stoq/interface'
import { ByteWriter } from './bytes.js'
import { H3_ID_ERROR, StoqH3Error, isReservedCodepoint } from './errors.js'
import { FRAME_WEBTRANSPORT_STREAM } from './frames.js'
import { readVarint, isVarInt, varintToBigInt, type VarInt } from './varint.js'

export const STREAM_TYPE_CONTROL = 0x00
export const STREAM_TYPE_PUSH = 0x01
export const STREAM_TYPE_QPACK_ENCODER = 0x02
export const STREAM_TYPE_QPACK_DECODER = 0x03
/** draft-ietf-webtrans-http3: WebTransport unidirectional stream. */
export const STREAM_TYPE_WEBTRANSPORT_UNI = 0x54
/** draft-ietf-webtrans-http3: the signal opening a WebTransport bidirectional stream (same value as the frame type). */
export const WEBTRANSPORT_BIDI_SIGNAL = FRAME_WEBTRANSPORT_STREAM

/** A decoded unidirectional stream preface. */
export type UniStreamPreface =
  | { kind: 'control' }
  | { kind: 'push'; pushId: VarInt }
  | { kind: 'qpack_encoder' }
  | { kind: 'qpack_decoder' }
  | { kind: 'webtransport'; sessionId: VarInt }
  /**
   * An unknown or reserved stream type: RFC 9114 §6.2 says to stop reading it
   * (STOP_SENDING with H3_STREAM_CREATION_ERROR) or discard its data, and not to
   * treat it as a connection error. `reserved` is true for grease types.
   */
  | { kind: 'unknown'; type: VarInt; reserved: boolean }

// --- stream IDs ------------------------------------------------------------------

/** True for a client-initiated bidirectional stream ID (ID % 4 == 0): request streams and WebTransport session IDs. */
export function isClientBidiStreamId(id: VarInt): boolean {
  return isVarInt(id) && (varintToBigInt(id) & 3n) === 0n
}

/** Who opened a stream and in which direction (RFC 9000 §2.1). */
export function streamIdInfo(id: VarInt): { initiator: 'client' | 'server'; bidirectional: boolean } {
  if (!isVarInt(id)) throw new StoqInvalidArgumentError('id', `stream ID must be an integer in 0..2^62-1 (got ${show(id)})`)
  const low = Number(varintToBigInt(id) & 3n)
  return { initiator: (low & 1) === 0 ? 'client' : 'server', bidirectional: (low & 2) === 0 }
}

function checkSessionIdArg(sessionId: VarInt): void {
  if (!isClientBidiStreamId(sessionId)) {
    throw new StoqInvalidArgumentError(
      'sessionId',
      `a WebTransport session ID is the ID of a client-initiated bidirectional stream (ID % 4 == 0), got ${show(sessionId)}`,
    )
  }
}

function checkSessionId(sessionId: VarInt): void {
  if ((varintToBigInt(sessionId) & 3n) !== 0n) {
    throw new StoqH3Error(H3_ID_ERROR, `WebTransport session ID ${sessionId} is not a client-initiated bidirectional stream ID`)
  }
}

// --- unidirectional prefaces ---------------------------------------------------------

/** Encodes a unidirectional stream preface (the stream type, plus push ID / session ID). */
export function encodeUniStreamPreface(preface: UniStreamPreface): Uint8Array {
  optionsArg('preface', preface)
  const w = new ByteWriter(16)
  switch (preface.kind) {
    case 'control':
      return w.varint(STREAM_TYPE_CONTROL).finish()
    case 'push':
      if (!isVarInt(preface.pushId)) throw new StoqInvalidArgumentError('pushId', `must be a varint (got ${show(preface.pushId)})`)
      return w.varint(STREAM_TYPE_PUSH).varint(preface.pushId).finish()
    case 'qpack_encoder':
      return w.varint(STREAM_TYPE_QPACK_ENCODER).finish()
    case 'qpack_decoder':
      return w.varint(STREAM_TYPE_QPACK_DECODER).finish()
    case 'webtransport':
      checkSessionIdArg(preface.sessionId)
      return w.varint(STREAM_TYPE_WEBTRANSPORT_UNI).varint(preface.sessionId).finish()
    case 'unknown':
      if (!isVarInt(preface.type)) throw new StoqInvalidArgumentError('type', `must be a varint (got ${show(preface.type)})`)
      return w.varint(preface.type).finish()
    default:
      throw new StoqInvalidArgumentError('preface', `unknown preface kind ${show((preface as { kind: unknown }).kind)}`)
  }
}

/** Preface of a WebTransport unidirectional stream: 0x54, session ID. */
export function encodeWebTransportUniPreface(sessionId: VarInt): Uint8Array {
  return encodeUniStreamPreface({ kind: 'webtransport', sessionId })
}

/**
 * Decodes the preface at the start of a unidirectional stream. Returns
 * `null` while more bytes are needed; otherwise the preface and its length
 * in bytes (the stream's payload starts right after). A WebTransport session
 * ID that is not a client-initiated bidirectional stream ID is H3_ID_ERROR.
 */
export function decodeUniStreamPreface(buf: Uint8Array, offset = 0): { preface: UniStreamPreface; length: number } | null {
  bytesArg('buf', buf)
  offsetArg(offset, buf)
  const type = readVarint(buf, offset)
  if (type === null) return null
  const t = type.value
  if (t === STREAM_TYPE_PUSH || t === STREAM_TYPE_WEBTRANSPORT_UNI) {
    const id = readVarint(buf, offset + type.length)
    if (id === null) return null
    const length = type.length + id.length
    if (t === STREAM_TYPE_PUSH) return { preface: { kind: 'push', pushId: id.value }, length }
    checkSessionId(id.value)
    return { preface: { kind: 'webtransport', sessionId: id.value }, length }
  }
  switch (t) {
    case STREAM_TYPE_CONTROL:
      return { preface: { kind: 'control' }, length: type.length }
    case STREAM_TYPE_QPACK_ENCODER:
      return { preface: { kind: 'qpack_encoder' }, length: type.length }
    case STREAM_TYPE_QPACK_DECODER:
      return { preface: { kind: 'qpack_decoder' }, length: type.length }
    default:
      return { preface: { kind: 'unknown', type: t, reserved: isReservedCodepoint(t) }, length: type.length }
  }
}

// --- bidirectional prefaces --------------------------------------------------------

/** Preface of a WebTransport bidirectional stream: 0x41, session ID. */
export function encodeWebTransportBidiPreface(sessionId: VarInt): Uint8Array {
  checkSessionIdArg(sessionId)
  return new ByteWriter(16).varint(WEBTRANSPORT_BIDI_SIGNAL).varint(sessionId).finish()
}

/** What a bidirectional stream starts with. */
export type BidiStreamPreface =
  /** WEBTRANSPORT_STREAM: `length` bytes of preface, then raw WebTransport data. */
  | { kind: 'webtransport'; sessionId: VarInt; length: number }
  /** HTTP/3 frames (a request); nothing is consumed (`length` 0). */
  | { kind: 'http3'; length: 0 }

/**
 * Tells a WebTransport bidirectional stream from an HTTP/3 request stream by
 * its first bytes. Returns `null` while more bytes are needed.
 */
export function decodeBidiStreamPreface(buf: Uint8Array, offset = 0): BidiStreamPreface | null {
  bytesArg('buf', buf)
  offsetArg(offset, buf)
  const type = readVarint(buf, offset)
  if (type === null) return null
  if (type.value !== WEBTRANSPORT_BIDI_SIGNAL) return { kind: 'http3', length: 0 }
  const id = readVarint(buf, offset + type.length)
  if (id === null) return null
  checkSessionId(id.value)
  return { kind: 'webtransport', sessionId: id.value, length: type.length + id.length }
}
