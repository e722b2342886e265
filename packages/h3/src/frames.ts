/**
 * HTTP/3 frames (RFC 9114 §7): types, encoders, payload decoders, an
 * incremental `FrameParser`, and the per-stream rules of §7.2 / §4.1 / §6.2.1.
 *
 * Frame layout: Type (varint), Length (varint), Payload (Length bytes).
 *
 * WebTransport (draft-ietf-webtrans-http3-02 §4.2) adds the WEBTRANSPORT_STREAM
 * signal 0x41 at the start of a bidirectional stream: it is followed by the
 * session ID (varint) and then by raw stream data to the end of the stream, with
 * no length. `FrameParser` recognises it when `webTransport: true`.
 */

import { boolOption, bytesArg, optionsArg, show } from './args.js'
import { StoqClosedError, StoqInvalidArgumentError } from '@stoq/interface'
import { ByteWriter } from './bytes.js'
import {
  H3_CLOSED_CRITICAL_STREAM,
  H3_EXCESSIVE_LOAD,
  H3_FRAME_ERROR,
  H3_FRAME_UNEXPECTED,
  H3_ID_ERROR,
  H3_MISSING_SETTINGS,
  StoqH3Error,
  reservedCodepoint,
} from './errors.js'
import { decodeSettings, encodeSettings, type Settings, type SettingsInput } from './settings.js'
import { VarintAccumulator, readVarint, encodeVarint, isVarInt, varintLength, varintToBigInt, writeVarint, type VarInt } from './varint.js'

export const FRAME_DATA = 0x00
export const FRAME_HEADERS = 0x01
export const FRAME_CANCEL_PUSH = 0x03
export const FRAME_SETTINGS = 0x04
export const FRAME_PUSH_PROMISE = 0x05
export const FRAME_GOAWAY = 0x07
export const FRAME_MAX_PUSH_ID = 0x0d
/** draft-ietf-webtrans-http3: WEBTRANSPORT_STREAM signal on bidirectional streams. */
export const FRAME_WEBTRANSPORT_STREAM = 0x41

/** HTTP/2 frame types with no HTTP/3 counterpart (RFC 9114 §7.2.8): receiving one is H3_FRAME_UNEXPECTED. */
export const RESERVED_HTTP2_FRAME_TYPES: readonly number[] = [0x02, 0x06, 0x08, 0x09]

/** Default largest payload `FrameParser` buffers for one frame: 64 KiB. */
export const DEFAULT_MAX_FRAME_PAYLOAD_SIZE = 64 * 1024

export interface DataFrame {
  kind: 'data'
  payload: Uint8Array
}
export interface HeadersFrame {
  kind: 'headers'
  /** The QPACK-encoded field section (decode with `decodeFieldSection`). */
  fieldSection: Uint8Array
}
export interface CancelPushFrame {
  kind: 'cancel_push'
  pushId: VarInt
}
export interface SettingsFrame {
  kind: 'settings'
  settings: Settings
}
export interface PushPromiseFrame {
  kind: 'push_promise'
  pushId: VarInt
  fieldSection: Uint8Array
}
export interface GoawayFrame {
  kind: 'goaway'
  /** A client-initiated bidirectional stream ID (from a server) or a push ID (from a client). */
  id: VarInt
}
export interface MaxPushIdFrame {
  kind: 'max_push_id'
  pushId: VarInt
}

/** A complete, known HTTP/3 frame. */
export type H3Frame = DataFrame | HeadersFrame | CancelPushFrame | SettingsFrame | PushPromiseFrame | GoawayFrame | MaxPushIdFrame

/** Part of a DATA frame's payload (with `FrameParser({ streamData: true })`). */
export interface DataChunkEvent {
  kind: 'data_chunk'
  /** A view into the pushed chunk; copy it if you keep it past the next `push`. */
  payload: Uint8Array
  /** True on the chunk that completes the DATA frame. */
  frameEnd: boolean
}

/** An unknown or reserved frame whose payload was skipped (with `reportUnknown: true`). */
export interface UnknownFrameEvent {
  kind: 'unknown'
  type: VarInt
  length: number
}

/** The stream opened with WEBTRANSPORT_STREAM (0x41) for `sessionId` (with `webTransport: true`). */
export interface WebTransportStreamEvent {
  kind: 'webtransport_stream'
  sessionId: VarInt
}

/** Stream bytes after a WEBTRANSPORT_STREAM preface. A view into the pushed chunk. */
export interface StreamDataEvent {
  kind: 'stream_data'
  data: Uint8Array
}

export type FrameParserEvent = H3Frame | DataChunkEvent | UnknownFrameEvent | WebTransportStreamEvent | StreamDataEvent

const KNOWN_FRAME_NAMES: ReadonlyMap<number, string> = new Map([
  [FRAME_DATA, 'DATA'],
  [FRAME_HEADERS, 'HEADERS'],
  [FRAME_CANCEL_PUSH, 'CANCEL_PUSH'],
  [FRAME_SETTINGS, 'SETTINGS'],
  [FRAME_PUSH_PROMISE, 'PUSH_PROMISE'],
  [FRAME_GOAWAY, 'GOAWAY'],
  [FRAME_MAX_PUSH_ID, 'MAX_PUSH_ID'],
])

/** `DATA`, `SETTINGS`, … or `0x21` for an unknown type. */
export function frameTypeName(type: VarInt): string {
  checkArg(type, 'type')
  return (typeof type === 'number' ? KNOWN_FRAME_NAMES.get(type) : undefined) ?? `0x${type.toString(16)}`
}

/** True for the frame types this package decodes (RFC 9114 §7.2). */
export function isKnownFrameType(type: VarInt): type is number {
  return typeof type === 'number' && KNOWN_FRAME_NAMES.has(type)
}

function isReservedHttp2FrameType(type: VarInt): boolean {
  return type === 0x02 || type === 0x06 || type === 0x08 || type === 0x09
}

// --- encoders ----------------------------------------------------------------

function checkArg(value: unknown, what: string): asserts value is VarInt {
  if (!isVarInt(value)) throw new StoqInvalidArgumentError(what, `must be an integer in 0..2^62-1 (got ${show(value)})`)
}

function checkStreamKind(streamKind: unknown): asserts streamKind is StreamKind {
  if (streamKind !== 'control' && streamKind !== 'request' && streamKind !== 'push') {
    throw new StoqInvalidArgumentError('streamKind', `expected 'control', 'request' or 'push', got ${show(streamKind)}`)
  }
}

function checkRole(receiver: unknown): asserts receiver is Role | undefined {
  if (receiver !== undefined && receiver !== 'client' && receiver !== 'server') {
    throw new StoqInvalidArgumentError('receiver', `expected 'client', 'server' or undefined, got ${show(receiver)}`)
  }
}

/** Type and Length of a frame, without payload (write the payload after it). */
export function encodeFrameHeader(type: VarInt, length: VarInt): Uint8Array {
  checkArg(type, 'type')
  checkArg(length, 'length')
  const out = new Uint8Array(varintLength(type) + varintLength(length))
  writeVarint(out, writeVarint(out, 0, type), length)
  return out
}

/** A complete frame of any type. */
export function encodeFrame(type: VarInt, payload: Uint8Array): Uint8Array {
  checkArg(type, 'type')
  bytesArg('payload', payload)
  const tl = varintLength(type)
  const ll = varintLength(payload.length)
  const out = new Uint8Array(tl + ll + payload.length)
  writeVarint(out, writeVarint(out, 0, type), payload.length)
  out.set(payload, tl + ll)
  return out
}

/** DATA frame header for `length` payload bytes (send the payload after it, no copy). */
export function encodeDataFrameHeader(length: number): Uint8Array {
  return encodeFrameHeader(FRAME_DATA, length)
}

export function encodeDataFrame(payload: Uint8Array): Uint8Array {
  bytesArg('payload', payload)
  return encodeFrame(FRAME_DATA, payload)
}

export function encodeHeadersFrame(fieldSection: Uint8Array): Uint8Array {
  bytesArg('fieldSection', fieldSection)
  return encodeFrame(FRAME_HEADERS, fieldSection)
}

export function encodeCancelPushFrame(pushId: VarInt): Uint8Array {
  checkArg(pushId, 'pushId')
  return encodeFrame(FRAME_CANCEL_PUSH, encodeVarint(pushId))
}

export function encodeSettingsFrame(settings: SettingsInput): Uint8Array {
  return encodeFrame(FRAME_SETTINGS, encodeSettings(settings))
}

export function encodePushPromiseFrame(pushId: VarInt, fieldSection: Uint8Array): Uint8Array {
  checkArg(pushId, 'pushId')
  bytesArg('fieldSection', fieldSection)
  return encodeFrame(FRAME_PUSH_PROMISE, new ByteWriter(fieldSection.length + 8).varint(pushId).bytes(fieldSection).finish())
}

export function encodeGoawayFrame(id: VarInt): Uint8Array {
  checkArg(id, 'id')
  return encodeFrame(FRAME_GOAWAY, encodeVarint(id))
}

export function encodeMaxPushIdFrame(pushId: VarInt): Uint8Array {
  checkArg(pushId, 'pushId')
  return encodeFrame(FRAME_MAX_PUSH_ID, encodeVarint(pushId))
}

/** A reserved ("grease") frame of type `0x1f * n + 0x21` (RFC 9114 §7.2.8); peers must ignore it. */
export function encodeReservedFrame(n: number | bigint, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  bytesArg('payload', payload)
  return encodeFrame(reservedCodepoint(n), payload)
}

/** Encodes any `H3Frame`. */
export function encodeH3Frame(frame: H3Frame): Uint8Array {
  optionsArg('frame', frame)
  switch (frame.kind) {
    case 'data':
      return encodeDataFrame(frame.payload)
    case 'headers':
      return encodeHeadersFrame(frame.fieldSection)
    case 'cancel_push':
      return encodeCancelPushFrame(frame.pushId)
    case 'settings':
      return encodeSettingsFrame(frame.settings)
    case 'push_promise':
      return encodePushPromiseFrame(frame.pushId, frame.fieldSection)
    case 'goaway':
      return encodeGoawayFrame(frame.id)
    case 'max_push_id':
      return encodeMaxPushIdFrame(frame.pushId)
    default:
      throw new StoqInvalidArgumentError('frame', `unknown frame kind ${show((frame as { kind: unknown }).kind)}`)
  }
}

// --- payload decoding ---------------------------------------------------------

function singleVarint(payload: Uint8Array, name: string): VarInt {
  const v = readVarint(payload, 0)
  if (v === null) throw new StoqH3Error(H3_FRAME_ERROR, `${name} payload is truncated`)
  if (v.length !== payload.length) {
    throw new StoqH3Error(H3_FRAME_ERROR, `${name} payload has ${payload.length - v.length} extra byte(s)`)
  }
  return v.value
}

/**
 * Decodes the complete payload of a known frame type. Throws `StoqH3Error`
 * H3_FRAME_ERROR when the payload does not match the frame's layout (and
 * H3_SETTINGS_ERROR for bad SETTINGS content).
 */
export function decodeFramePayload(type: number, payload: Uint8Array): H3Frame {
  bytesArg('payload', payload)
  switch (type) {
    case FRAME_DATA:
      return { kind: 'data', payload }
    case FRAME_HEADERS:
      return { kind: 'headers', fieldSection: payload }
    case FRAME_CANCEL_PUSH:
      return { kind: 'cancel_push', pushId: singleVarint(payload, 'CANCEL_PUSH') }
    case FRAME_SETTINGS:
      return { kind: 'settings', settings: decodeSettings(payload) }
    case FRAME_PUSH_PROMISE: {
      const id = readVarint(payload, 0)
      if (id === null) throw new StoqH3Error(H3_FRAME_ERROR, 'PUSH_PROMISE payload is truncated')
      return { kind: 'push_promise', pushId: id.value, fieldSection: payload.subarray(id.length) }
    }
    case FRAME_GOAWAY:
      return { kind: 'goaway', id: singleVarint(payload, 'GOAWAY') }
    case FRAME_MAX_PUSH_ID:
      return { kind: 'max_push_id', pushId: singleVarint(payload, 'MAX_PUSH_ID') }
    default:
      throw new StoqInvalidArgumentError('type', `${typeof type === 'number' ? `0x${type.toString(16)}` : show(type)} is not a known HTTP/3 frame type`)
  }
}

// --- per-stream rules -----------------------------------------------------------

/** The kinds of HTTP/3 stream that carry frames. */
export type StreamKind = 'control' | 'request' | 'push'
/** Which side of the connection an endpoint is. */
export type Role = 'client' | 'server'

function unexpected(type: VarInt, where: string): StoqH3Error {
  return new StoqH3Error(H3_FRAME_UNEXPECTED, `${frameTypeName(type)} frame is not allowed on ${where}`)
}

/**
 * Whether a frame type may be received on a stream kind (RFC 9114 §7.2, Table
 * 1). `receiver` (the side receiving the frame) enables the direction rules:
 * PUSH_PROMISE only reaches clients, MAX_PUSH_ID only servers. Unknown and
 * reserved types are allowed everywhere; HTTP/2-reserved types nowhere. This
 * ignores ordering (SETTINGS first, DATA after HEADERS): see
 * `StreamFrameValidator` for that.
 */
export function isFrameAllowed(streamKind: StreamKind, type: VarInt, receiver?: Role): boolean {
  checkStreamKind(streamKind)
  checkArg(type, 'type')
  checkRole(receiver)
  if (isReservedHttp2FrameType(type)) return false
  switch (type) {
    case FRAME_DATA:
    case FRAME_HEADERS:
      return streamKind !== 'control'
    case FRAME_CANCEL_PUSH:
    case FRAME_SETTINGS:
    case FRAME_GOAWAY:
      return streamKind === 'control'
    case FRAME_MAX_PUSH_ID:
      return streamKind === 'control' && receiver !== 'client'
    case FRAME_PUSH_PROMISE:
      return streamKind === 'request' && receiver !== 'server'
    default:
      return true
  }
}

/** Throws `StoqH3Error` H3_FRAME_UNEXPECTED when `isFrameAllowed` is false. */
export function checkFrameAllowed(streamKind: StreamKind, type: VarInt, receiver?: Role): void {
  if (!isFrameAllowed(streamKind, type, receiver)) {
    const where = receiver === undefined ? `a ${streamKind} stream` : `a ${streamKind} stream received by a ${receiver}`
    throw unexpected(type, where)
  }
}

/**
 * Stateful receive-side checks for the frames of one stream:
 *
 * - control stream: SETTINGS must come first (else H3_MISSING_SETTINGS) and
 *   only once; DATA/HEADERS/PUSH_PROMISE are unexpected; GOAWAY IDs must not
 *   increase and, from a server, must be client-initiated bidirectional stream
 *   IDs (else H3_ID_ERROR); MAX_PUSH_ID must not decrease; the stream must not
 *   end (H3_CLOSED_CRITICAL_STREAM).
 * - request / push stream: control-stream frames are unexpected; DATA before
 *   any HEADERS is unexpected; after trailers (HEADERS following DATA) no more
 *   DATA or HEADERS may come.
 */
export class StreamFrameValidator {
  readonly streamKind: StreamKind
  readonly receiver: Role | undefined
  #frames = 0
  #lastGoaway: bigint | null = null
  #lastMaxPushId: bigint | null = null
  /** Request/push: 0 nothing, 1 headers, 2 data, 3 trailers. */
  #message = 0

  constructor(streamKind: StreamKind, receiver?: Role) {
    checkStreamKind(streamKind)
    checkRole(receiver)
    this.streamKind = streamKind
    this.receiver = receiver
  }

  /** Checks a frame type as soon as its header is read (before its payload). */
  onFrameType(type: VarInt): void {
    checkArg(type, 'type')
    const first = this.#frames === 0
    this.#frames++
    if (this.streamKind === 'control') {
      if (first && type !== FRAME_SETTINGS) {
        throw new StoqH3Error(H3_MISSING_SETTINGS, `first frame on the control stream is ${frameTypeName(type)}, not SETTINGS`)
      }
      if (!first && type === FRAME_SETTINGS) throw unexpected(type, 'the control stream after the first SETTINGS')
      checkFrameAllowed('control', type, this.receiver)
      return
    }
    checkFrameAllowed(this.streamKind, type, this.receiver)
    if (type === FRAME_DATA) {
      if (this.#message === 0) throw unexpected(type, `a ${this.streamKind} stream before HEADERS`)
      if (this.#message === 3) throw unexpected(type, `a ${this.streamKind} stream after trailers`)
      this.#message = 2
    } else if (type === FRAME_HEADERS) {
      if (this.#message === 3) throw unexpected(type, `a ${this.streamKind} stream after trailers`)
      this.#message = this.#message === 2 ? 3 : 1
    }
  }

  /** Checks the content of a complete frame. */
  onFrame(frame: H3Frame): void {
    optionsArg('frame', frame)
    if (frame.kind === 'goaway') {
      const id = varintToBigInt(frame.id)
      if (this.receiver === 'client' && (id & 3n) !== 0n) {
        throw new StoqH3Error(H3_ID_ERROR, `GOAWAY carries ${id}, not a client-initiated bidirectional stream ID`)
      }
      if (this.#lastGoaway !== null && id > this.#lastGoaway) {
        throw new StoqH3Error(H3_ID_ERROR, `GOAWAY ID increased from ${this.#lastGoaway} to ${id}`)
      }
      this.#lastGoaway = id
    } else if (frame.kind === 'max_push_id') {
      const id = varintToBigInt(frame.pushId)
      if (this.#lastMaxPushId !== null && id < this.#lastMaxPushId) {
        throw new StoqH3Error(H3_ID_ERROR, `MAX_PUSH_ID decreased from ${this.#lastMaxPushId} to ${id}`)
      }
      this.#lastMaxPushId = id
    }
  }

  /** Checks the clean end of the stream. */
  onEnd(): void {
    if (this.streamKind === 'control') {
      throw new StoqH3Error(H3_CLOSED_CRITICAL_STREAM, 'the peer closed its control stream')
    }
  }
}

// --- incremental parser -----------------------------------------------------------

export interface FrameParserOptions {
  /**
   * Largest frame payload buffered, in bytes (default 64 KiB). A larger frame
   * is refused with H3_EXCESSIVE_LOAD as soon as its header is read. DATA frames
   * in `streamData` mode and skipped unknown frames are not buffered and not
   * limited.
   */
  maxFramePayloadSize?: number
  /** Validate frames against the rules of this stream kind (`StreamFrameValidator`). */
  streamKind?: StreamKind
  /** The side receiving these frames, for the direction rules. */
  receiver?: Role
  /**
   * Recognise WEBTRANSPORT_STREAM (0x41) as the first thing on the stream
   * (bidirectional streams, once WebTransport is negotiated). 0x41 anywhere
   * else is then H3_FRAME_ERROR.
   */
  webTransport?: boolean
  /** Emit DATA payloads as `data_chunk` events as they arrive instead of buffering whole frames. */
  streamData?: boolean
  /** Emit an `unknown` event for each skipped unknown/reserved frame. */
  reportUnknown?: boolean
}

const S_TYPE = 0
const S_LENGTH = 1
const S_PAYLOAD = 2
const S_SKIP = 3
const S_DATA = 4
const S_WT_SESSION = 5
const S_RAW = 6

/**
 * Incremental HTTP/3 frame parser for one stream. Feed it chunks of any size
 * with `push`; it returns the events completed by that chunk. Call `end` when
 * the stream ends cleanly. After an error it stays failed and rethrows it.
 *
 * Unknown and reserved frame types are skipped without buffering their payload.
 */
export class FrameParser {
  readonly #max: number
  readonly #webTransport: boolean
  readonly #streamData: boolean
  readonly #reportUnknown: boolean
  readonly #validator: StreamFrameValidator | undefined

  #state = S_TYPE
  readonly #varint = new VarintAccumulator()
  #type: VarInt = 0
  #payload: Uint8Array = new Uint8Array(0)
  #filled = 0
  #remaining = 0
  #framesStarted = 0
  #error: unknown = undefined
  #ended = false

  constructor(options: FrameParserOptions = {}) {
    optionsArg('options', options, ['maxFramePayloadSize', 'streamKind', 'receiver', 'webTransport', 'streamData', 'reportUnknown'])
    const max = options.maxFramePayloadSize ?? DEFAULT_MAX_FRAME_PAYLOAD_SIZE
    if (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 0) {
      throw new StoqInvalidArgumentError('maxFramePayloadSize', `must be a non-negative integer (got ${show(max)})`)
    }
    this.#max = max
    this.#webTransport = boolOption('webTransport', options.webTransport)
    this.#streamData = boolOption('streamData', options.streamData)
    this.#reportUnknown = boolOption('reportUnknown', options.reportUnknown)
    if (options.streamKind === undefined) checkRole(options.receiver)
    this.#validator = options.streamKind !== undefined ? new StreamFrameValidator(options.streamKind, options.receiver) : undefined
  }

  /** True when the parser sits between frames (a clean place for the stream to end). */
  get atFrameBoundary(): boolean {
    return (this.#state === S_TYPE && !this.#varint.pending) || this.#state === S_RAW
  }

  /** Feeds stream bytes; returns the events they complete. */
  push(chunk: Uint8Array): FrameParserEvent[] {
    if (this.#error !== undefined) throw this.#error
    if (this.#ended) throw new StoqClosedError('frame parser', 'frame parser: push() after end()')
    bytesArg('chunk', chunk)
    try {
      return this.#run(chunk)
    } catch (err) {
      this.#error = err
      throw err
    }
  }

  /** The stream ended cleanly (FIN). Throws H3_FRAME_ERROR if it ended inside a frame. */
  end(): void {
    if (this.#error !== undefined) throw this.#error
    if (this.#ended) return
    this.#ended = true
    try {
      if (this.#validator) this.#validator.onEnd()
      if (!this.atFrameBoundary) {
        throw new StoqH3Error(H3_FRAME_ERROR, 'the stream ended inside a frame')
      }
    } catch (err) {
      this.#error = err
      throw err
    }
  }

  #run(chunk: Uint8Array): FrameParserEvent[] {
    const events: FrameParserEvent[] = []
    let i = 0
    const n = chunk.length
    while (i < n) {
      switch (this.#state) {
        case S_TYPE:
        case S_LENGTH:
        case S_WT_SESSION: {
          i += this.#varint.feed(chunk, i)
          if (this.#varint.complete) this.#onVarint(this.#varint.value, events)
          break
        }
        case S_PAYLOAD: {
          const take = Math.min(this.#remaining, n - i)
          this.#payload.set(chunk.subarray(i, i + take), this.#filled)
          this.#filled += take
          this.#remaining -= take
          i += take
          if (this.#remaining === 0) this.#completeFrame(events)
          break
        }
        case S_SKIP: {
          const take = Math.min(this.#remaining, n - i)
          this.#remaining -= take
          i += take
          if (this.#remaining === 0) this.#state = S_TYPE
          break
        }
        case S_DATA: {
          const take = Math.min(this.#remaining, n - i)
          this.#remaining -= take
          events.push({ kind: 'data_chunk', payload: chunk.subarray(i, i + take), frameEnd: this.#remaining === 0 })
          i += take
          if (this.#remaining === 0) this.#state = S_TYPE
          break
        }
        default: {
          // S_RAW: everything after a WEBTRANSPORT_STREAM preface.
          events.push({ kind: 'stream_data', data: chunk.subarray(i) })
          i = n
        }
      }
    }
    return events
  }

  #onVarint(value: VarInt, events: FrameParserEvent[]): void {
    if (this.#state === S_TYPE) {
      const first = this.#framesStarted === 0
      this.#framesStarted++
      if (this.#webTransport && value === FRAME_WEBTRANSPORT_STREAM) {
        if (!first) throw new StoqH3Error(H3_FRAME_ERROR, 'WEBTRANSPORT_STREAM (0x41) after the start of the stream')
        this.#state = S_WT_SESSION
        return
      }
      if (isReservedHttp2FrameType(value)) {
        throw new StoqH3Error(H3_FRAME_UNEXPECTED, `received HTTP/2-reserved frame type 0x${value.toString(16)}`)
      }
      this.#validator?.onFrameType(value)
      this.#type = value
      this.#state = S_LENGTH
      return
    }
    if (this.#state === S_WT_SESSION) {
      if ((varintToBigInt(value) & 3n) !== 0n) {
        throw new StoqH3Error(H3_ID_ERROR, `WebTransport session ID ${value} is not a client-initiated bidirectional stream ID`)
      }
      events.push({ kind: 'webtransport_stream', sessionId: value })
      this.#state = S_RAW
      return
    }
    // S_LENGTH
    const type = this.#type
    if (!isKnownFrameType(type)) {
      if (typeof value !== 'number') {
        throw new StoqH3Error(H3_EXCESSIVE_LOAD, `unknown frame 0x${type.toString(16)} claims ${value} bytes`)
      }
      if (this.#reportUnknown) events.push({ kind: 'unknown', type, length: value })
      this.#remaining = value
      this.#state = value === 0 ? S_TYPE : S_SKIP
      return
    }
    if (type === FRAME_DATA && this.#streamData) {
      if (typeof value !== 'number') {
        throw new StoqH3Error(H3_EXCESSIVE_LOAD, `DATA frame claims ${value} bytes`)
      }
      this.#remaining = value
      if (value === 0) {
        events.push({ kind: 'data_chunk', payload: new Uint8Array(0), frameEnd: true })
        this.#state = S_TYPE
      } else {
        this.#state = S_DATA
      }
      return
    }
    if (typeof value !== 'number' || value > this.#max) {
      throw new StoqH3Error(H3_EXCESSIVE_LOAD, `${frameTypeName(type)} frame of ${value} bytes exceeds the limit of ${this.#max} bytes`)
    }
    this.#payload = new Uint8Array(value)
    this.#filled = 0
    this.#remaining = value
    if (value === 0) this.#completeFrame(events)
    else this.#state = S_PAYLOAD
  }

  #completeFrame(events: FrameParserEvent[]): void {
    const frame = decodeFramePayload(this.#type as number, this.#payload)
    this.#validator?.onFrame(frame)
    this.#payload = new Uint8Array(0)
    this.#state = S_TYPE
    events.push(frame)
  }
}

/** Parses a complete stream's bytes (push + end). */
export function decodeFrames(bytes: Uint8Array, options: FrameParserOptions = {}): FrameParserEvent[] {
  const parser = new FrameParser(options)
  const events = parser.push(bytes)
  parser.end()
  return events
}
