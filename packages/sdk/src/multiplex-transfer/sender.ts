/** The sending side of a multiplex transfer: its options, and the source cut into chunks. */
import { checkOptions, optionKeys } from '@stoq/interface'
import { randomBytes } from 'node:crypto'
import type { ReadableStream as WebReadableStream } from 'node:stream/web'
import { type StoqError, StoqInvalidArgumentError } from '@stoq/transport-core'
import { StoqIntegrityError, StoqProtocolError } from '../errors.js'
import {
  CHUNK_STATUS,
  type ChunkStatus,
  DEFAULT_TRANSFER_CHUNK_BYTES,
  DEFAULT_TRANSFER_DEPTH,
  DEFAULT_TRANSFER_MAX_RETRIES,
  DEFAULT_TRANSFER_STALL_MS,
  DEFAULT_TRANSFER_WINDOW_BYTES,
  MAX_TRANSFER_CHUNK_BYTES,
  MAX_TRANSFER_DEPTH,
  MAX_TRANSFER_WINDOW_BYTES,
  MIN_TRANSFER_CHUNK_BYTES,
  PROTOCOL,
  chunkHeaderFor,
} from './wire.js'

// ---------------------------------------------------------------------------
// Sender side: options and the source, cut into chunks

/** What `Multiplexer.transfer` sends: bytes, or an (async) iterable / Web stream of byte chunks. */
export type TransferSource = Uint8Array | ArrayBuffer | Iterable<Uint8Array> | AsyncIterable<Uint8Array> | WebReadableStream<Uint8Array>

export interface TransferOptions {
  /** Bytes per chunk (default 1 MiB, 64 KiB to 16 MiB); the last chunk may be shorter. */
  chunkSize?: number
  /** Transfer id, 32 hex digits (default: random). The receiver tells transfers apart by it. */
  id?: string
  /** Chunks in flight per member (default 4, 1 to 64). */
  depth?: number
  /** Span of offsets in flight (default 64 MiB); must not exceed the receiver's `windowBytes`. */
  windowBytes?: number
  /** Fail when no chunk was confirmed for this long (default 60 000 ms). */
  stallTimeoutMs?: number
  /** Times one chunk may be re-sent (after its member failed) before the transfer fails (default 8). */
  maxRetries?: number
}

export interface ResolvedTransferOptions {
  chunkSize: number
  id: string
  depth: number
  windowBytes: number
  stallTimeoutMs: number
  maxRetries: number
}

export interface TransferMemberResult {
  index: number
  /** Bytes of the chunks this member delivered (each confirmed by the receiver). */
  bytes: number
  chunks: number
  /** Chunks sent on this member that had to be re-sent elsewhere. */
  retries: number
}

export interface TransferResult {
  id: string
  /** Bytes the receiver confirmed, each chunk verified against its SHA-256. */
  bytes: number
  chunks: number
  /** From the call to the last confirmation. */
  durationMs: number
  /** `bytes` over `durationMs`, timed at the sender (Gbit/s). */
  senderGbps: number
  /** Chunks re-sent because a member failed (or the receiver refused a corrupted copy). */
  retries: number
  members: TransferMemberResult[]
}

const ID_RE = /^[0-9a-f]{32}$/

export function intOption(value: unknown, name: string, min: number, max: number, fallback: number): number {
  const v = value ?? fallback
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new StoqInvalidArgumentError(name, `expected an integer from ${min} to ${max}, got ${String(value)}`)
  }
  return v
}

export function validateTransferOptions(options: unknown): ResolvedTransferOptions {
  const o = checkOptions(
    options,
    optionKeys<TransferOptions>({ chunkSize: true, id: true, depth: true, windowBytes: true, stallTimeoutMs: true, maxRetries: true }),
  ) as TransferOptions
  const chunkSize = intOption(o.chunkSize, 'chunkSize', MIN_TRANSFER_CHUNK_BYTES, MAX_TRANSFER_CHUNK_BYTES, DEFAULT_TRANSFER_CHUNK_BYTES)
  const depth = intOption(o.depth, 'depth', 1, MAX_TRANSFER_DEPTH, DEFAULT_TRANSFER_DEPTH)
  const windowBytes = intOption(o.windowBytes, 'windowBytes', chunkSize, MAX_TRANSFER_WINDOW_BYTES, Math.max(chunkSize, DEFAULT_TRANSFER_WINDOW_BYTES))
  const stallTimeoutMs = intOption(o.stallTimeoutMs, 'stallTimeoutMs', 1, 2 ** 31 - 1, DEFAULT_TRANSFER_STALL_MS)
  const maxRetries = intOption(o.maxRetries, 'maxRetries', 0, 1000, DEFAULT_TRANSFER_MAX_RETRIES)
  let id: string
  if (o.id === undefined) id = randomBytes(16).toString('hex')
  else if (typeof o.id === 'string' && ID_RE.test(o.id.toLowerCase())) id = o.id.toLowerCase()
  else throw new StoqInvalidArgumentError('id', 'expected 32 hex digits')
  return { chunkSize, id, depth, windowBytes, stallTimeoutMs, maxRetries }
}

export interface OutgoingChunk {
  index: number
  offset: number
  payload: Uint8Array
  final: boolean
  header: Buffer
  /** Times it was sent and failed. */
  attempts: number
}

/**
 * The source cut into chunks of `chunkSize` (the last one shorter, or empty
 * for empty data), each with its header. A Uint8Array is not copied: its
 * chunks are views, so it must not change until the transfer settled. Throws
 * StoqInvalidArgumentError at once for a source of the wrong type.
 */
export function sourceChunks(source: TransferSource, chunkSize: number, transferId: string): AsyncGenerator<OutgoingChunk> {
  const make = (index: number, offset: number, payload: Uint8Array, final: boolean): OutgoingChunk => ({
    index,
    offset,
    payload,
    final,
    header: chunkHeaderFor(transferId, index, offset, payload, final),
    attempts: 0,
  })
  if (source instanceof Uint8Array || source instanceof ArrayBuffer) {
    const bytes = source instanceof ArrayBuffer ? new Uint8Array(source) : source
    return (async function* () {
      let index = 0
      let offset = 0
      do {
        const end = Math.min(bytes.length, offset + chunkSize)
        yield make(index++, offset, bytes.subarray(offset, end), end === bytes.length)
        offset = end
      } while (offset < bytes.length)
    })()
  }
  const s = source as unknown as Record<PropertyKey, unknown> | null
  let pieces: AsyncIterable<unknown> | Iterable<unknown>
  if (s !== null && typeof s === 'object' && typeof s.getReader === 'function' && typeof s[Symbol.asyncIterator] !== 'function') {
    pieces = readerPieces(source as WebReadableStream<Uint8Array>)
  } else if (s !== null && typeof s === 'object' && (typeof s[Symbol.asyncIterator] === 'function' || typeof s[Symbol.iterator] === 'function')) {
    pieces = source as AsyncIterable<unknown>
  } else {
    throw new StoqInvalidArgumentError('source', 'expected a Uint8Array, ArrayBuffer, or an (async) iterable or ReadableStream of Uint8Array')
  }
  return (async function* () {
    let index = 0
    let offset = 0
    let buf = new Uint8Array(chunkSize)
    let fill = 0
    for await (const piece of pieces) {
      if (!(piece instanceof Uint8Array)) throw new StoqInvalidArgumentError('source', 'stream pieces must be Uint8Array or Buffer')
      let at = 0
      while (at < piece.length) {
        if (fill === chunkSize) {
          // More bytes follow, so the full chunk is not the last one.
          yield make(index++, offset, buf, false)
          offset += fill
          buf = new Uint8Array(chunkSize)
          fill = 0
        }
        const n = Math.min(chunkSize - fill, piece.length - at)
        buf.set(piece.subarray(at, at + n), fill)
        fill += n
        at += n
      }
    }
    yield make(index, offset, buf.subarray(0, fill), true)
  })()
}

async function* readerPieces(stream: WebReadableStream<Uint8Array>): AsyncGenerator<unknown> {
  const reader = stream.getReader()
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      yield value
    }
  } finally {
    reader.releaseLock()
  }
}

/** The typed error for a status that is not a success. */
export function chunkStatusError(status: ChunkStatus, chunk: { index: number; offset: number }): StoqError {
  const where = `chunk ${chunk.index} (offset ${chunk.offset})`
  if (status === CHUNK_STATUS.integrity) return new StoqIntegrityError('chunk', `the receiver found ${where} corrupted (SHA-256 mismatch)`)
  if (status === CHUNK_STATUS.protocol) return new StoqProtocolError(PROTOCOL, `the receiver rejected ${where} as malformed or inconsistent`)
  return new StoqProtocolError(PROTOCOL, `the receiver refused ${where} (closed, too many transfers, or the transfer failed there)`)
}
