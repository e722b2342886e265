/**
 * Wire format of `stoq send` / `stoq serve`, one bidirectional stream per file.
 *
 * Sender → receiver: "SQF1", then frames of [type u8][length u32 BE][payload]:
 *
 *   1 HEADER  JSON { v: 1, name: string | null, size: number | null }   exactly once, first
 *   2 DATA    1 byte to 1 MiB of file content                             any number
 *   3 END     JSON { bytes: number, sha256: hex }                          exactly once, last
 *
 * then FIN. The sender hashes the content as it streams and sends the
 * SHA-256 in END; the receiver hashes what it received and compares
 * (`checkTrailer`). Receiver → sender: one JSON line, `{ ok: true, name, bytes,
 * sha256, ms }` or `{ ok: false, code, error }`, then FIN.
 */
import { createHash, type Hash } from 'node:crypto'
import { StoqInvalidArgumentError } from '@stoq/transport-core'
import { StoqIntegrityError, StoqProtocolError } from './errors.js'

export const TRANSFER_MAGIC = Buffer.from('SQF1', 'latin1')
export const FRAME_HEADER_BYTES = 5
export const FRAME_HEADER = 1
export const FRAME_DATA = 2
export const FRAME_END = 3
/** Largest DATA payload. */
export const MAX_DATA_FRAME = 1024 * 1024
/** Largest HEADER or END payload. */
export const MAX_CONTROL_FRAME = 4096

export interface TransferHeader {
  v: 1
  /** File name to store under (a plain name), or null to let the receiver pick one. */
  name: string | null
  /** Size in bytes when known in advance (a file), null for a pipe. */
  size: number | null
}

export interface TransferTrailer {
  bytes: number
  /** SHA-256 of the content, lowercase hex. */
  sha256: string
}

export type TransferReply = { ok: true; name: string; bytes: number; sha256: string; ms: number } | { ok: false; code: string; error: string }

export type TransferEvent = { kind: 'header'; header: TransferHeader } | { kind: 'data'; data: Uint8Array } | { kind: 'end'; trailer: TransferTrailer }

const PROTOCOL = 'stoq send'

/**
 * A plain file name: 1-255 bytes, not "." or "..", without "/", "\" or
 * control characters. Anything else could leave the target directory.
 */
export function validateTransferName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new StoqInvalidArgumentError('name', 'expected a non-empty file name')
  if (Buffer.byteLength(name) > 255) throw new StoqInvalidArgumentError('name', 'file names are at most 255 bytes')
  if (name === '.' || name === '..') throw new StoqInvalidArgumentError('name', `${JSON.stringify(name)} is not a file name`)
  if (/[/\\]/.test(name)) throw new StoqInvalidArgumentError('name', `${JSON.stringify(name)} contains a path separator; only plain file names are accepted`)
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what a file name may not contain
  if (/[\u0000-\u001f\u007f]/.test(name)) throw new StoqInvalidArgumentError('name', 'file names may not contain control characters')
  return name
}

export function encodeFrame(type: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length)
  out[0] = type
  out.writeUInt32BE(payload.length, 1)
  out.set(payload, FRAME_HEADER_BYTES)
  return out
}

/** Compare what the sender announced with what arrived; throws StoqIntegrityError on any difference. */
export function checkTrailer(announced: TransferTrailer, received: TransferTrailer): void {
  if (announced.bytes !== received.bytes) {
    throw new StoqIntegrityError('length', `the sender sent ${announced.bytes} bytes but ${received.bytes} arrived`)
  }
  if (announced.sha256.toLowerCase() !== received.sha256.toLowerCase()) {
    throw new StoqIntegrityError('sha256', `SHA-256 mismatch: the sender computed ${announced.sha256}, the received data hashes to ${received.sha256}`)
  }
}

/** Builds the sender's side of the stream, hashing the content as it goes. */
export class OutgoingTransfer {
  private readonly hash: Hash = createHash('sha256')
  bytes = 0

  /** Magic and HEADER frame. */
  start(header: Omit<TransferHeader, 'v'>): Buffer {
    const h: TransferHeader = { v: 1, name: header.name, size: header.size }
    return Buffer.concat([TRANSFER_MAGIC, encodeFrame(FRAME_HEADER, Buffer.from(JSON.stringify(h), 'utf8'))])
  }

  /** DATA frames for a chunk of content (split at MAX_DATA_FRAME). */
  data(chunk: Uint8Array): Buffer[] {
    const frames: Buffer[] = []
    for (let at = 0; at < chunk.length; at += MAX_DATA_FRAME) {
      const piece = chunk.subarray(at, Math.min(chunk.length, at + MAX_DATA_FRAME))
      this.hash.update(piece)
      this.bytes += piece.length
      frames.push(encodeFrame(FRAME_DATA, piece))
    }
    return frames
  }

  /** The END frame; call once, after the last `data`. */
  end(): { frame: Buffer; trailer: TransferTrailer } {
    const trailer: TransferTrailer = { bytes: this.bytes, sha256: this.hash.digest('hex') }
    return { frame: encodeFrame(FRAME_END, Buffer.from(JSON.stringify(trailer), 'utf8')), trailer }
  }
}

function parseJson(what: string, payload: Uint8Array): Record<string, unknown> {
  try {
    const v = JSON.parse(Buffer.from(payload).toString('utf8')) as unknown
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>
  } catch {
    // Reported below.
  }
  throw new StoqProtocolError(PROTOCOL, `${what} frame is not a JSON object`)
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}

/**
 * Parses and checks the receiver's side of the stream, in any chunking: frame
 * order, sizes, and at END the length and SHA-256 of everything received
 * (StoqIntegrityError on a mismatch, StoqProtocolError on a malformed stream).
 */
export class IncomingTransfer {
  private readonly hash: Hash = createHash('sha256')
  private stage: 'magic' | 'head' | 'payload' | 'closed' = 'magic'
  private small = Buffer.alloc(0)
  private type = 0
  private remaining = 0
  private header: TransferHeader | null = null
  private trailer: TransferTrailer | null = null
  /** Content bytes received so far. */
  bytes = 0

  push(chunk: Uint8Array): TransferEvent[] {
    const events: TransferEvent[] = []
    let i = 0
    while (i < chunk.length) {
      if (this.stage === 'closed') throw new StoqProtocolError(PROTOCOL, 'data after the END frame')
      if (this.stage === 'magic' || this.stage === 'head') {
        const want = this.stage === 'magic' ? TRANSFER_MAGIC.length : FRAME_HEADER_BYTES
        const n = Math.min(want - this.small.length, chunk.length - i)
        this.small = Buffer.concat([this.small, chunk.subarray(i, i + n)])
        i += n
        if (this.small.length < want) break
        if (this.stage === 'magic') {
          if (!this.small.equals(TRANSFER_MAGIC)) throw new StoqProtocolError(PROTOCOL, 'not a stoq send stream (bad magic)')
          this.small = Buffer.alloc(0)
          this.stage = 'head'
          continue
        }
        this.startFrame(this.small[0]!, this.small.readUInt32BE(1))
        this.small = Buffer.alloc(0)
        if (this.remaining === 0) events.push(this.endFrame(Buffer.alloc(0)))
        continue
      }
      // Payload.
      const n = Math.min(this.remaining, chunk.length - i)
      const piece = chunk.subarray(i, i + n)
      i += n
      this.remaining -= n
      if (this.type === FRAME_DATA) {
        this.hash.update(piece)
        this.bytes += piece.length
        events.push({ kind: 'data', data: piece })
        if (this.remaining === 0) this.stage = 'head'
      } else {
        this.small = Buffer.concat([this.small, piece])
        if (this.remaining === 0) {
          const payload = this.small
          this.small = Buffer.alloc(0)
          events.push(this.endFrame(payload))
        }
      }
    }
    return events
  }

  private startFrame(type: number, length: number): void {
    if (type === FRAME_DATA) {
      if (this.header === null) throw new StoqProtocolError(PROTOCOL, 'DATA frame before the HEADER frame')
      if (length === 0 || length > MAX_DATA_FRAME) throw new StoqProtocolError(PROTOCOL, `DATA frame of ${length} bytes (expected 1 to ${MAX_DATA_FRAME})`)
    } else if (type === FRAME_HEADER || type === FRAME_END) {
      if (type === FRAME_HEADER && this.header !== null) throw new StoqProtocolError(PROTOCOL, 'a second HEADER frame')
      if (type === FRAME_END && this.header === null) throw new StoqProtocolError(PROTOCOL, 'END frame before the HEADER frame')
      if (length > MAX_CONTROL_FRAME) throw new StoqProtocolError(PROTOCOL, `control frame of ${length} bytes (at most ${MAX_CONTROL_FRAME})`)
    } else {
      throw new StoqProtocolError(PROTOCOL, `unknown frame type ${type}`)
    }
    this.type = type
    this.remaining = length
    this.stage = 'payload'
  }

  /** A complete HEADER or END frame (DATA frames never come here). */
  private endFrame(payload: Buffer): TransferEvent {
    if (this.type === FRAME_DATA) throw new StoqProtocolError(PROTOCOL, 'empty DATA frame')
    if (this.type === FRAME_HEADER) {
      const h = parseJson('HEADER', payload)
      if (h.v !== 1) throw new StoqProtocolError(PROTOCOL, `unsupported version ${JSON.stringify(h.v)} (expected 1)`)
      if (h.name !== null && typeof h.name !== 'string') throw new StoqProtocolError(PROTOCOL, 'HEADER name must be a string or null')
      if (h.size !== null && !isSize(h.size)) throw new StoqProtocolError(PROTOCOL, 'HEADER size must be a byte count or null')
      this.header = { v: 1, name: h.name as string | null, size: h.size as number | null }
      this.stage = 'head'
      return { kind: 'header', header: this.header }
    }
    const t = parseJson('END', payload)
    if (!isSize(t.bytes) || typeof t.sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(t.sha256)) {
      throw new StoqProtocolError(PROTOCOL, 'END frame needs bytes (a count) and sha256 (64 hex digits)')
    }
    const announced: TransferTrailer = { bytes: t.bytes, sha256: t.sha256.toLowerCase() }
    checkTrailer(announced, { bytes: this.bytes, sha256: this.hash.copy().digest('hex') })
    if (this.header!.size !== null && this.header!.size !== this.bytes) {
      throw new StoqIntegrityError('length', `the sender announced ${this.header!.size} bytes but sent ${this.bytes}`)
    }
    this.trailer = announced
    this.stage = 'closed'
    return { kind: 'end', trailer: announced }
  }

  /** The stream ended (FIN): the verified trailer, or StoqProtocolError when the transfer is incomplete. */
  finish(): TransferTrailer {
    if (this.trailer === null) {
      throw new StoqProtocolError(PROTOCOL, `the stream ended after ${this.bytes} bytes without the END frame (transfer incomplete)`)
    }
    return this.trailer
  }
}

export function parseTransferReply(line: string): TransferReply {
  let r: unknown
  try {
    r = JSON.parse(line)
  } catch {
    throw new StoqProtocolError(PROTOCOL, `unreadable reply from the receiver ${JSON.stringify(line.slice(0, 80))}`)
  }
  const o = r as Record<string, unknown> | null
  if (typeof o === 'object' && o !== null) {
    if (o.ok === true && typeof o.name === 'string' && isSize(o.bytes) && typeof o.sha256 === 'string' && typeof o.ms === 'number') {
      return { ok: true, name: o.name, bytes: o.bytes, sha256: o.sha256, ms: o.ms }
    }
    if (o.ok === false && typeof o.code === 'string' && typeof o.error === 'string') return { ok: false, code: o.code, error: o.error }
  }
  throw new StoqProtocolError(PROTOCOL, `unexpected reply from the receiver ${JSON.stringify(line.slice(0, 80))}`)
}
