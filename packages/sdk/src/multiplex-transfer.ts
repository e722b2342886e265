/**
 * One transfer over the members of a `Multiplexer`: the data is cut into
 * chunks, each chunk goes on its own bidirectional stream of whichever member
 * the strategy picks, and the receiver answers each chunk with one status byte
 * once it verified and stored it (or knew it already). A chunk whose member
 * dies before that answer is sent again on another member, so the receiver
 * sees duplicates and drops them.
 *
 * Chunk stream, sender → receiver: a 72-byte header, then `length` bytes, then FIN.
 *
 *    0  magic "SQM1"
 *    4  version u8 (1)
 *    5  flags u8: bit 0 = final chunk (the transfer is offset + length bytes long)
 *    6  reserved u16 (0)
 *    8  transfer id, 16 bytes
 *   24  chunk index u32 BE
 *   28  length u32 BE
 *   32  offset u64 BE (at most 2^53 - 1)
 *   40  SHA-256 of the chunk's bytes, 32 bytes
 *
 * Receiver → sender: one status byte (`CHUNK_STATUS`), then FIN.
 *
 * Memory is bounded on both sides. The sender has at most `depth` chunks in
 * flight per member, and only chunks within `windowBytes` of the lowest chunk
 * not yet confirmed. The receiver reads a chunk's body only once the chunk lies
 * within `windowBytes` of what its reader has consumed; until then the chunk
 * waits in QUIC flow control (backpressure, no copy).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { ReadableStream as WebReadableStream, ReadableStreamDefaultReader } from 'node:stream/web'
import {
  StoqError,
  StoqClosedError,
  StoqInvalidArgumentError,
  type QuicConnection,
  type QuicStream,
} from '@stoq/transport-core'
import { checkOptions, optionKeys } from '@stoq/interface'
import { StoqIntegrityError, StoqProtocolError } from './cli-errors.js'

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
const FINISHED_IDS_KEPT = 1024
const PROTOCOL = 'multiplex transfer'
const MAX_OFFSET = Number.MAX_SAFE_INTEGER
/** Stream error code when a failed transfer abandons its chunk streams. */
const ABANDON_CODE = 0x5351

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

function sha256(data: Uint8Array): Buffer {
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
    reply.catch(() => {})
    const writer = stream.writable!.getWriter()
    try {
      await writer.write(header)
      if (payload.length > 0) await writer.write(payload)
      await writer.close()
    } catch (err) {
      writer.abort(err).catch(() => {})
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
      reader.cancel().catch(() => {})
      throw new StoqProtocolError(PROTOCOL, 'the receiver answered a chunk with more than one byte')
    }
    status = value[0]!
  }
  if (status < 0) throw new StoqProtocolError(PROTOCOL, 'the receiver closed a chunk stream without answering')
  if (status > CHUNK_STATUS.refused) throw new StoqProtocolError(PROTOCOL, `unknown chunk status ${status}`)
  return status as ChunkStatus
}

// ---------------------------------------------------------------------------
// Sender side: options and the source, cut into chunks

/** What `Multiplexer.transfer` sends: bytes, or an (async) iterable / Web stream of byte chunks. */
export type TransferSource =
  | Uint8Array
  | ArrayBuffer
  | Iterable<Uint8Array>
  | AsyncIterable<Uint8Array>
  | WebReadableStream<Uint8Array>

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

function intOption(value: unknown, name: string, min: number, max: number, fallback: number): number {
  const v = value ?? fallback
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new StoqInvalidArgumentError(name, `expected an integer from ${min} to ${max}, got ${String(value)}`)
  }
  return v
}

export function validateTransferOptions(options: unknown): ResolvedTransferOptions {
  const o = checkOptions(options, optionKeys<TransferOptions>({ chunkSize: true, id: true, depth: true, windowBytes: true, stallTimeoutMs: true, maxRetries: true })) as TransferOptions
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

// ---------------------------------------------------------------------------
// Receiver side

export interface IncomingTransferResult {
  id: string
  /** Bytes stored, each chunk verified against its SHA-256, duplicates not counted. */
  bytes: number
  chunks: number
  /** Chunks that arrived again and were dropped. */
  duplicates: number
  /** Chunks refused because their bytes did not match their SHA-256. */
  corrupted: number
  /** From the first chunk header to the last byte stored (receiver clock). */
  durationMs: number
  /** `bytes` over `durationMs`, counted by the receiver (Gbit/s). */
  gbps: number
}

export interface ChunkInfo {
  transferId: string
  index: number
  offset: number
  length: number
  streamId: number
  conn: QuicConnection
}

export interface TransferReceiverOptions {
  /** A new transfer began (its first chunk header arrived). Read it with `for await` or `bytes()`. */
  onTransfer: (transfer: IncomingTransfer) => void | Promise<void>
  /** A chunk stream failed or was refused; the receiver carries on. */
  onError?: (err: StoqError, context: { transferId: string | null; streamId: number; conn: QuicConnection }) => void
  /** A chunk was verified and stored (before its answer is sent). */
  onChunk?: (chunk: ChunkInfo) => void
  /** Data held per transfer beyond what its reader consumed (default 64 MiB). */
  windowBytes?: number
  /** Longest chunk accepted (default 16 MiB, at most `windowBytes`). */
  maxChunkBytes?: number
  /** Transfers open at once (default 64). */
  maxTransfers?: number
  /** Fail a transfer (and give up on a stream's header) after this long without progress (default 60 000 ms). */
  idleTimeoutMs?: number
}

export interface TransferReceiverStats {
  active: number
  completed: number
  failed: number
  chunks: number
  duplicates: number
  corrupted: number
  /** Chunk streams refused or failed (malformed, refused, broken). */
  errors: number
  /** Verified bytes stored over every transfer. */
  bytes: number
}

type Decision = 'accept' | 'duplicate' | 'wait'

/**
 * One transfer being received: an async iterable of its bytes, in order, each
 * piece verified. Read it once (`for await` or `bytes()`); breaking out of the
 * loop cancels it. `result` settles when every byte was stored.
 */
export class IncomingTransfer implements AsyncIterable<Uint8Array> {
  readonly id: string
  /** Resolves when every byte was received and verified; rejects with the transfer's error. */
  readonly result: Promise<IncomingTransferResult>
  readonly #startedAt = performance.now()
  readonly #window: number
  readonly #idleMs: number
  readonly #onEnd: (t: IncomingTransfer, ok: boolean) => void
  #total: number | null = null
  #finalOffset = -1
  /** Contiguous bytes stored from offset 0. */
  #next = 0
  /** Bytes handed to the reader. */
  #consumed = 0
  /** Stored in-order bytes in [consumed, next), not read yet. */
  readonly #queue: Uint8Array[] = []
  /** Verified chunks beyond `next`, by offset. */
  readonly #pending = new Map<number, Uint8Array>()
  /** Chunks whose body is being read now: offset → length. */
  readonly #reading = new Map<number, number>()
  readonly #waiters = new Set<() => void>()
  readonly #cancels = new Set<() => void>()
  #error: StoqError | null = null
  #done = false
  #claimed = false
  #chunks = 0
  #bytes = 0
  #duplicates = 0
  #corrupted = 0
  #lastActivity = performance.now()
  #timer: NodeJS.Timeout | null = null
  #resolve!: (r: IncomingTransferResult) => void
  #reject!: (err: Error) => void

  /** @internal created by the receiver */
  constructor(id: string, windowBytes: number, idleMs: number, onEnd: (t: IncomingTransfer, ok: boolean) => void) {
    this.id = id
    this.#window = windowBytes
    this.#idleMs = idleMs
    this.#onEnd = onEnd
    this.result = new Promise<IncomingTransferResult>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    this.result.catch(() => {})
    this.#arm(idleMs)
  }

  /** Length in bytes, once the final chunk arrived (null before). */
  get totalBytes(): number | null {
    return this.#total
  }

  /** Verified bytes stored so far (duplicates not counted). */
  get receivedBytes(): number {
    return this.#bytes
  }

  get duplicates(): number {
    return this.#duplicates
  }

  get corrupted(): number {
    return this.#corrupted
  }

  /**
   * Bytes this transfer holds in memory: stored but not read yet, out of
   * order, and being read. Never more than the receiver's `windowBytes`.
   */
  get bufferedBytes(): number {
    let n = this.#next - this.#consumed
    for (const p of this.#pending.values()) n += p.length
    for (const length of this.#reading.values()) n += length
    return n
  }

  /** The transfer's error, if it failed. */
  get error(): StoqError | null {
    return this.#error
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    if (this.#claimed) throw new StoqInvalidArgumentError('transfer', 'a transfer can be read only once')
    this.#claimed = true
    return this.#read()
  }

  async *#read(): AsyncGenerator<Uint8Array> {
    let finished = false
    try {
      for (;;) {
        const piece = this.#queue.shift()
        if (piece !== undefined) {
          this.#consumed += piece.length
          this.#touch()
          this.#notify()
          yield piece
          continue
        }
        if (this.#error) throw this.#error
        if (this.#total !== null && this.#consumed === this.#total) {
          finished = true
          return
        }
        await this.#change()
      }
    } finally {
      if (!finished) this.cancel()
    }
  }

  /** The whole transfer as one buffer (reads it). */
  async bytes(): Promise<Uint8Array> {
    const parts: Uint8Array[] = []
    let n = 0
    for await (const part of this) {
      parts.push(part)
      n += part.length
    }
    const out = new Uint8Array(n)
    let at = 0
    for (const part of parts) {
      out.set(part, at)
      at += part.length
    }
    return out
  }

  /** Give up on the transfer: its further chunks are refused. No effect once it completed. */
  cancel(reason?: StoqError): void {
    if (this.#done) return
    this.fail(reason ?? new StoqClosedError('transfer', `Transfer ${this.id} was cancelled by its reader`))
  }

  // -------------------------------------------------------------------------
  // For the receiver

  /** @internal what to do with a chunk now; throws StoqProtocolError when it cannot belong to this transfer. */
  decide(h: ChunkHeader): Decision {
    const o = h.offset
    const end = o + h.length
    if (h.final) {
      if (this.#total !== null) {
        if (this.#finalOffset !== o || this.#total !== end) throw this.#inconsistent('a second, different final chunk')
        return this.#reading.has(o) ? 'wait' : 'duplicate'
      }
      if (end < this.#next || end < this.#highestEnd()) throw this.#inconsistent('the final chunk ends before data already received')
    } else if (this.#total !== null && end > this.#total) {
      throw this.#inconsistent('a chunk beyond the final chunk')
    }
    if (h.length > 0 && end <= this.#next) return 'duplicate'
    if (o < this.#next) throw this.#inconsistent('a chunk overlapping delivered data at another boundary')
    const same = this.#pending.get(o)
    if (same !== undefined) {
      if (same.length !== h.length) throw this.#inconsistent('two chunks at one offset with different lengths')
      return 'duplicate'
    }
    const reading = this.#reading.get(o)
    if (reading !== undefined) {
      if (reading !== h.length) throw this.#inconsistent('two chunks at one offset with different lengths')
      return 'wait'
    }
    for (const [po, p] of this.#pending) if (o < po + p.length && po < end) throw this.#inconsistent('overlapping chunks')
    for (const [ro, rl] of this.#reading) if (o < ro + rl && ro < end) throw this.#inconsistent('overlapping chunks')
    return end > this.#consumed + this.#window ? 'wait' : 'accept'
  }

  #highestEnd(): number {
    let max = this.#next
    for (const [po, p] of this.#pending) max = Math.max(max, po + p.length)
    for (const [ro, rl] of this.#reading) max = Math.max(max, ro + rl)
    return max
  }

  #inconsistent(what: string): StoqProtocolError {
    return new StoqProtocolError(PROTOCOL, `transfer ${this.id}: ${what}`)
  }

  /** @internal a body is being read (`decide` said accept) */
  beginRead(h: ChunkHeader, cancel: () => void): void {
    this.#reading.set(h.offset, h.length)
    this.#cancels.add(cancel)
    this.#touch()
  }

  /** @internal the body was read, or its stream failed */
  endRead(h: ChunkHeader, cancel: () => void): void {
    this.#reading.delete(h.offset)
    this.#cancels.delete(cancel)
    this.#notify()
  }

  /** @internal a verified chunk; true when stored, false when it was a duplicate after all */
  store(h: ChunkHeader, body: Uint8Array): boolean {
    if (this.#error) throw this.#error
    const decision = this.decide(h)
    if (decision === 'duplicate') {
      this.#duplicates++
      return false
    }
    // `wait` here is only the window: the bytes are already in memory, keep them.
    if (h.final) {
      this.#total = h.offset + h.length
      this.#finalOffset = h.offset
    }
    this.#chunks++
    this.#bytes += body.length
    if (body.length > 0) this.#pending.set(h.offset, body)
    for (let next = this.#pending.get(this.#next); next !== undefined; next = this.#pending.get(this.#next)) {
      this.#pending.delete(this.#next)
      this.#queue.push(next)
      this.#next += next.length
    }
    this.#touch()
    if (this.#total !== null && this.#next === this.#total) this.#complete()
    this.#notify()
    return true
  }

  /** @internal */
  countDuplicate(): void {
    this.#duplicates++
  }

  /** @internal */
  countCorrupted(): void {
    this.#corrupted++
    this.#touch()
  }

  /** @internal wait until anything changes (a chunk stored, data read, a read ended, failure) */
  waitChange(): Promise<void> {
    return this.#change()
  }

  /** @internal fail the transfer: pending data is dropped, streams in progress are cancelled. */
  fail(err: StoqError): void {
    if (this.#done) return
    this.#done = true
    this.#error = err
    this.#pending.clear()
    this.#disarm()
    for (const cancel of [...this.#cancels]) cancel()
    this.#reject(err)
    this.#notify()
    this.#onEnd(this, false)
  }

  /** True once the transfer completed or failed. */
  get ended(): boolean {
    return this.#done
  }

  #complete(): void {
    this.#done = true
    this.#disarm()
    const durationMs = performance.now() - this.#startedAt
    this.#resolve({
      id: this.id,
      bytes: this.#bytes,
      chunks: this.#chunks,
      duplicates: this.#duplicates,
      corrupted: this.#corrupted,
      durationMs,
      gbps: durationMs > 0 ? (this.#bytes * 8) / (durationMs * 1e6) : 0,
    })
    this.#onEnd(this, true)
  }

  #change(): Promise<void> {
    return new Promise((resolve) => this.#waiters.add(resolve))
  }

  #notify(): void {
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const w of waiters) w()
  }

  #touch(): void {
    this.#lastActivity = performance.now()
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = null
      if (this.#done) return
      const idle = performance.now() - this.#lastActivity
      if (idle >= this.#idleMs) {
        this.fail(new StoqProtocolError(PROTOCOL, `transfer ${this.id}: nothing arrived or was read for ${this.#idleMs} ms`))
      } else {
        this.#arm(this.#idleMs - idle)
      }
    }, Math.max(1, Math.ceil(ms)))
    this.#timer.unref()
  }

  #disarm(): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
  }
}

/** Reads a stream piece by piece, keeping what a read took beyond what was asked. */
class StreamInput {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>
  #rest: Uint8Array | null = null

  constructor(stream: QuicStream) {
    this.#reader = stream.readable!.getReader() as ReadableStreamDefaultReader<Uint8Array>
  }

  async #piece(): Promise<Uint8Array | null> {
    if (this.#rest !== null) {
      const rest = this.#rest
      this.#rest = null
      return rest
    }
    const { done, value } = await this.#reader.read()
    return done ? null : value
  }

  /** Take exactly `n` bytes, handing each piece to `sink`; false when the stream ended first. */
  async take(n: number, sink: (piece: Uint8Array) => void): Promise<boolean> {
    while (n > 0) {
      const piece = await this.#piece()
      if (piece === null) return false
      if (piece.length > n) {
        sink(piece.subarray(0, n))
        this.#rest = piece.subarray(n)
        return true
      }
      sink(piece)
      n -= piece.length
    }
    return true
  }

  /** True when the stream ends here. */
  async atEnd(): Promise<boolean> {
    for (;;) {
      const piece = await this.#piece()
      if (piece === null) return true
      if (piece.length > 0) return false
    }
  }

  cancel(): void {
    this.#reader.cancel(ABANDON_CODE).catch(() => {})
  }
}

function asStoqError(err: unknown): StoqError {
  if (StoqError.isInstance(err)) return err
  return new StoqProtocolError(PROTOCOL, `chunk stream failed: ${err instanceof Error ? err.message : String(err)}`)
}

/** Receives transfers sent by `Multiplexer.transfer`: plug `handle` into `onStream`. */
export interface TransferReceiver {
  /** Serve one incoming stream as a chunk stream. Never throws or rejects; problems go to `onError`. */
  handle(stream: QuicStream, conn: QuicConnection): Promise<void>
  stats(): TransferReceiverStats
  /** Fail every open transfer and refuse further chunks. */
  close(): void
}

export function createTransferReceiver(options: TransferReceiverOptions): TransferReceiver {
  checkOptions(
    options,
    optionKeys<TransferReceiverOptions>({ onTransfer: true, onError: true, onChunk: true, windowBytes: true, maxChunkBytes: true, maxTransfers: true, idleTimeoutMs: true }),
  )
  if (typeof options.onTransfer !== 'function') throw new StoqInvalidArgumentError('onTransfer', 'expected a function')
  if (options.onError !== undefined && typeof options.onError !== 'function') throw new StoqInvalidArgumentError('onError', 'expected a function')
  if (options.onChunk !== undefined && typeof options.onChunk !== 'function') throw new StoqInvalidArgumentError('onChunk', 'expected a function')
  const windowBytes = intOption(options.windowBytes, 'windowBytes', MIN_TRANSFER_CHUNK_BYTES, MAX_TRANSFER_WINDOW_BYTES, DEFAULT_TRANSFER_WINDOW_BYTES)
  const maxChunkBytes = intOption(options.maxChunkBytes, 'maxChunkBytes', MIN_TRANSFER_CHUNK_BYTES, Math.min(windowBytes, MAX_TRANSFER_CHUNK_BYTES), Math.min(windowBytes, MAX_TRANSFER_CHUNK_BYTES))
  const maxTransfers = intOption(options.maxTransfers, 'maxTransfers', 1, 65_536, DEFAULT_RECEIVER_MAX_TRANSFERS)
  const idleMs = intOption(options.idleTimeoutMs, 'idleTimeoutMs', 1, 2 ** 31 - 1, DEFAULT_TRANSFER_STALL_MS)
  const { onTransfer, onError, onChunk } = options

  const active = new Map<string, IncomingTransfer>()
  /** Ended transfers, oldest first: true when completed, false when failed. */
  const finished = new Map<string, boolean>()
  const counts = { completed: 0, failed: 0, chunks: 0, duplicates: 0, corrupted: 0, errors: 0, bytes: 0 }
  let closed = false

  const report = (err: unknown, transferId: string | null, stream: QuicStream, conn: QuicConnection): void => {
    counts.errors++
    if (!onError) return
    try {
      onError(asStoqError(err), { transferId, streamId: stream.id, conn })
    } catch {
      // A throwing callback must not take the receiver down.
    }
  }

  const ended = (t: IncomingTransfer, ok: boolean): void => {
    if (active.get(t.id) === t) active.delete(t.id)
    finished.set(t.id, ok)
    if (finished.size > FINISHED_IDS_KEPT) finished.delete(finished.keys().next().value!)
    if (ok) counts.completed++
    else counts.failed++
  }

  const reply = async (stream: QuicStream, status: ChunkStatus): Promise<void> => {
    if (stream.writable === null) return
    const writer = stream.writable.getWriter()
    try {
      await writer.write(Uint8Array.of(status))
      await writer.close()
    } catch {
      // The connection is gone: the sender sends the chunk again elsewhere.
    }
  }

  /**
   * Read and drop the rest of a chunk (its header parsed), then answer
   * `status`: the sender gets every answer only after it sent the whole
   * chunk, so that its write never fails on a refusal. A stream that does not
   * hold exactly the announced bytes is answered `protocol`.
   */
  const answer = async (input: StreamInput, stream: QuicStream, conn: QuicConnection, h: ChunkHeader, status: ChunkStatus): Promise<void> => {
    let whole: boolean
    try {
      whole = (await input.take(h.length, () => {})) && (await input.atEnd())
    } catch (err) {
      // Reset, or the connection is gone: nobody to answer.
      report(err, h.transferId, stream, conn)
      return
    }
    if (!whole) {
      input.cancel()
      if (status === CHUNK_STATUS.stored || status === CHUNK_STATUS.duplicate) {
        report(new StoqProtocolError(PROTOCOL, `chunk ${h.index} of transfer ${h.transferId}: the stream does not hold exactly ${h.length} bytes`), h.transferId, stream, conn)
        status = CHUNK_STATUS.protocol
      }
    }
    await reply(stream, status)
  }

  const serve = async (stream: QuicStream, conn: QuicConnection): Promise<void> => {
    if (stream.readable === null) {
      report(new StoqProtocolError(PROTOCOL, `stream ${stream.id} cannot be read`), null, stream, conn)
      return
    }
    const input = new StreamInput(stream)
    let h: ChunkHeader
    // The header, within the idle timeout.
    const header = new Uint8Array(CHUNK_HEADER_BYTES)
    let at = 0
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      input.cancel()
    }, idleMs)
    timer.unref()
    try {
      const whole = await input.take(CHUNK_HEADER_BYTES, (piece) => {
        header.set(piece, at)
        at += piece.length
      })
      if (!whole) {
        throw new StoqProtocolError(PROTOCOL, timedOut ? `no chunk header within ${idleMs} ms` : `stream ended after ${at} bytes, inside the chunk header`)
      }
      h = decodeChunkHeader(header, maxChunkBytes)
    } catch (err) {
      input.cancel()
      report(err, null, stream, conn)
      await reply(stream, CHUNK_STATUS.protocol)
      return
    } finally {
      clearTimeout(timer)
    }

    if (closed) {
      report(new StoqClosedError('transfer receiver'), h.transferId, stream, conn)
      await answer(input, stream, conn, h, CHUNK_STATUS.refused)
      return
    }
    let t = active.get(h.transferId)
    if (t === undefined) {
      const before = finished.get(h.transferId)
      if (before === true) {
        // Completed already: a late copy of one of its chunks.
        counts.duplicates++
        await answer(input, stream, conn, h, CHUNK_STATUS.duplicate)
        return
      }
      if (before === false || active.size >= maxTransfers) {
        report(
          new StoqProtocolError(PROTOCOL, before === false ? `transfer ${h.transferId} failed earlier` : `too many transfers at once (${maxTransfers})`),
          h.transferId,
          stream,
          conn,
        )
        await answer(input, stream, conn, h, CHUNK_STATUS.refused)
        return
      }
      const created = new IncomingTransfer(h.transferId, windowBytes, idleMs, ended)
      t = created
      active.set(t.id, t)
      const failed = (err: unknown): void => {
        const e = asStoqError(err)
        report(e, created.id, stream, conn)
        created.fail(e)
      }
      try {
        const pending = onTransfer(created) as unknown
        if (pending !== null && typeof pending === 'object' && typeof (pending as Promise<void>).then === 'function') {
          ;(pending as Promise<void>).then(undefined, failed)
        }
      } catch (err) {
        failed(err)
      }
    }

    // Wait until the chunk fits the window (or turns out a duplicate).
    let decision: Decision
    for (;;) {
      if (t.error) {
        report(t.error, t.id, stream, conn)
        await answer(input, stream, conn, h, CHUNK_STATUS.refused)
        return
      }
      try {
        decision = t.decide(h)
      } catch (err) {
        t.fail(asStoqError(err))
        report(err, t.id, stream, conn)
        await answer(input, stream, conn, h, CHUNK_STATUS.protocol)
        return
      }
      if (decision !== 'wait') break
      await t.waitChange()
    }
    if (decision === 'duplicate') {
      t.countDuplicate()
      counts.duplicates++
      await answer(input, stream, conn, h, CHUNK_STATUS.duplicate)
      return
    }

    // Read the body, hashing as it comes.
    const body = new Uint8Array(h.length)
    const hash = createHash('sha256')
    let filled = 0
    const cancel = (): void => input.cancel()
    t.beginRead(h, cancel)
    let complete = false
    try {
      complete =
        (await input.take(h.length, (piece) => {
          body.set(piece, filled)
          filled += piece.length
          hash.update(piece)
        })) && (await input.atEnd())
    } catch (err) {
      report(err, t.id, stream, conn)
      return
    } finally {
      t.endRead(h, cancel)
    }
    if (!complete) {
      input.cancel()
      const err = t.error ?? new StoqProtocolError(PROTOCOL, `chunk ${h.index} of transfer ${t.id}: the stream does not hold exactly ${h.length} bytes`)
      report(err, t.id, stream, conn)
      await reply(stream, t.error ? CHUNK_STATUS.refused : CHUNK_STATUS.protocol)
      return
    }
    if (!hash.digest().equals(h.sha256)) {
      t.countCorrupted()
      counts.corrupted++
      report(new StoqIntegrityError('chunk', `chunk ${h.index} of transfer ${t.id} (offset ${h.offset}): SHA-256 mismatch, chunk dropped`), t.id, stream, conn)
      await reply(stream, CHUNK_STATUS.integrity)
      return
    }
    let stored: boolean
    const earlier = t.error
    try {
      stored = t.store(h, body)
    } catch (err) {
      // The transfer failed meanwhile, or the chunk contradicts what arrived meanwhile.
      const e = asStoqError(err)
      if (earlier === null) t.fail(e)
      report(e, t.id, stream, conn)
      await reply(stream, earlier === null ? CHUNK_STATUS.protocol : CHUNK_STATUS.refused)
      return
    }
    if (stored) {
      counts.chunks++
      counts.bytes += h.length
      if (onChunk) {
        try {
          onChunk({ transferId: t.id, index: h.index, offset: h.offset, length: h.length, streamId: stream.id, conn })
        } catch {
          // Ignored, like a throwing onError.
        }
      }
    } else {
      counts.duplicates++
    }
    await reply(stream, stored ? CHUNK_STATUS.stored : CHUNK_STATUS.duplicate)
  }

  return {
    async handle(stream, conn) {
      try {
        await serve(stream, conn)
      } catch (err) {
        report(err, null, stream, conn)
      }
    },
    stats() {
      return { active: active.size, ...counts }
    },
    close() {
      if (closed) return
      closed = true
      for (const t of [...active.values()]) t.fail(new StoqClosedError('transfer receiver'))
    },
  }
}
