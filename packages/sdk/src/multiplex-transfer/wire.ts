/**
 * The wire format of a multiplex transfer (see ../multiplex-transfer.ts for the layout), the
 * limits both sides share, and `sendChunk`, one chunk on one stream.
 */
import { createHash } from 'node:crypto'
import type { QuicConnection, QuicStream } from '@stoq/transport-core'
import { StoqProtocolError } from '../errors.js'
import { ignoreRejection } from '../ignore.js'

export const CHUNK_MAGIC = Buffer.from('SQM1', 'latin1')
export const CHUNK_VERSION = 1
export const CHUNK_HEADER_BYTES = 72
/** Answers of the receiver, one byte per chunk stream. */
export const CHUNK_STATUS = {
  /** Verified and stored. */
  stored: 0,
  /** Already had it (a re-sent chunk): dropped. */
  duplicate: 1,
  /** The bytes do not match the header's SHA-256: dropped. */
  integrity: 2,
  /** Malformed header or a chunk inconsistent with the transfer: the transfer failed. */
  protocol: 3,
  /** The receiver is closed, has too many transfers, or this transfer already failed. */
  refused: 4,
} as const
export type ChunkStatus = (typeof CHUNK_STATUS)[keyof typeof CHUNK_STATUS]

/** Default chunk: large enough that per-stream costs vanish, small enough to spread over members. */
export const DEFAULT_TRANSFER_CHUNK_BYTES = 1024 * 1024
/** Smallest chunk (but the last): keeps the receiver's bookkeeping per window small. */
export const MIN_TRANSFER_CHUNK_BYTES = 64 * 1024
/** Largest chunk; a receiver refuses longer ones. */
export const MAX_TRANSFER_CHUNK_BYTES = 16 * 1024 * 1024
/** Chunks in flight per member. */
export const DEFAULT_TRANSFER_DEPTH = 4
export const MAX_TRANSFER_DEPTH = 64
/**
 * Out-of-order data a receiver holds per transfer, and the span of offsets a
 * sender keeps in flight (the sender's must not exceed the receiver's).
 */
export const DEFAULT_TRANSFER_WINDOW_BYTES = 64 * 1024 * 1024
export const MAX_TRANSFER_WINDOW_BYTES = 1024 * 1024 * 1024
/** A transfer fails when no chunk was confirmed (sender) or nothing happened (receiver) for this long. */
export const DEFAULT_TRANSFER_STALL_MS = 60_000
/** Times one chunk may be sent again before the transfer fails. */
export const DEFAULT_TRANSFER_MAX_RETRIES = 8
/** Transfers a receiver keeps open at once; chunks of further ones are refused. */
export const DEFAULT_RECEIVER_MAX_TRANSFERS = 64
/** Ended transfer ids a receiver remembers, so that late duplicates are recognised. */
export const FINISHED_IDS_KEPT = 1024
export const PROTOCOL = 'multiplex transfer'
const MAX_OFFSET = Number.MAX_SAFE_INTEGER
/** Stream error code when a failed transfer abandons its chunk streams. */
export const ABANDON_CODE = 0x5351

// ---------------------------------------------------------------------------
// Wire format

export interface ChunkHeader {
  /** 32 lowercase hex digits. */
  transferId: string
  index: number
  offset: number
  length: number
  final: boolean
  /** SHA-256 of the chunk's bytes. */
  sha256: Uint8Array
}

export function encodeChunkHeader(h: ChunkHeader): Buffer {
  const out = Buffer.alloc(CHUNK_HEADER_BYTES)
  CHUNK_MAGIC.copy(out, 0)
  out[4] = CHUNK_VERSION
  out[5] = h.final ? 1 : 0
  out.write(h.transferId, 8, 16, 'hex')
  out.writeUInt32BE(h.index, 24)
  out.writeUInt32BE(h.length, 28)
  out.writeBigUInt64BE(BigInt(h.offset), 32)
  out.set(h.sha256, 40)
  return out
}

/** Parse and check a header; throws StoqProtocolError on anything malformed. */
export function decodeChunkHeader(bytes: Uint8Array, maxChunkBytes = MAX_TRANSFER_CHUNK_BYTES): ChunkHeader {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.length !== CHUNK_HEADER_BYTES || !b.subarray(0, 4).equals(CHUNK_MAGIC)) {
    throw new StoqProtocolError(PROTOCOL, 'not a chunk stream (bad magic)')
  }
  if (b[4] !== CHUNK_VERSION) throw new StoqProtocolError(PROTOCOL, `unsupported chunk version ${b[4]}`)
  if ((b[5]! & ~1) !== 0 || b.readUInt16BE(6) !== 0) throw new StoqProtocolError(PROTOCOL, 'unknown flags in a chunk header')
  const final = b[5] === 1
  const index = b.readUInt32BE(24)
  const length = b.readUInt32BE(28)
  const offset64 = b.readBigUInt64BE(32)
  if (offset64 > BigInt(MAX_OFFSET)) throw new StoqProtocolError(PROTOCOL, 'chunk offset beyond 2^53 - 1')
  const offset = Number(offset64)
  if (offset + length > MAX_OFFSET) throw new StoqProtocolError(PROTOCOL, 'chunk ends beyond 2^53 - 1')
  if (length > maxChunkBytes) throw new StoqProtocolError(PROTOCOL, `chunk of ${length} bytes exceeds the limit of ${maxChunkBytes}`)
  if (!final && length < MIN_TRANSFER_CHUNK_BYTES) {
    throw new StoqProtocolError(PROTOCOL, `only the final chunk may be shorter than ${MIN_TRANSFER_CHUNK_BYTES} bytes`)
  }
  return { transferId: b.toString('hex', 8, 24), index, offset, length, final, sha256: new Uint8Array(b.subarray(40, 72)) }
}

export function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest()
}

/** Header bytes for one chunk of `payload` (hashes it). */
export function chunkHeaderFor(transferId: string, index: number, offset: number, payload: Uint8Array, final: boolean): Buffer {
  return encodeChunkHeader({ transferId, index, offset, length: payload.length, final, sha256: sha256(payload) })
}

/**
 * Send one chunk on a new bidirectional stream of `conn` and wait for the
 * receiver's status byte. Rejects with the stream's or connection's typed
 * error when the chunk may not have arrived. `live` tracks the stream while
 * it is open (so that a failed transfer can reset it).
 */
export async function sendChunk(conn: QuicConnection, header: Uint8Array, payload: Uint8Array, live?: Set<QuicStream>): Promise<ChunkStatus> {
  // Waits for the peer's stream credit: a quinn peer raises its limit as streams are used.
  const stream = await conn.createStream({ timeoutMs: 30_000 })
  live?.add(stream)
  try {
    const reply = readStatus(stream)
    reply.catch(ignoreRejection) // marks it handled: it is awaited once the chunk is sent
    const writer = stream.writable!.getWriter()
    try {
      await writer.write(header)
      if (payload.length > 0) await writer.write(payload)
      await writer.close()
    } catch (err) {
      writer.abort(err).catch(ignoreRejection) // the write error is what the caller gets; a stream already reset makes the abort reject
      stream.stopSending(ABANDON_CODE)
      throw err
    }
    return await reply
  } finally {
    live?.delete(stream)
  }
}

async function readStatus(stream: QuicStream): Promise<ChunkStatus> {
  const reader = stream.readable!.getReader()
  let status = -1
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    if (value.length === 0) continue
    if (status >= 0 || value.length > 1) {
      reader.cancel().catch(ignoreRejection) // the protocol error is what the caller gets; a failed cancel adds nothing
      throw new StoqProtocolError(PROTOCOL, 'the receiver answered a chunk with more than one byte')
    }
    status = value[0]!
  }
  if (status < 0) throw new StoqProtocolError(PROTOCOL, 'the receiver closed a chunk stream without answering')
  if (status > CHUNK_STATUS.refused) throw new StoqProtocolError(PROTOCOL, `unknown chunk status ${status}`)
  return status as ChunkStatus
}
