/** The receiving side of a multiplex transfer: chunks checked, ordered within a window, and read back. */
import { checkOptions, optionKeys } from '@stoq/interface'
import { createHash } from 'node:crypto'
import type { ReadableStreamDefaultReader } from 'node:stream/web'
import { StoqError, StoqClosedError, StoqInvalidArgumentError, type QuicConnection, type QuicStream } from '@stoq/transport-core'
import { StoqIntegrityError, StoqProtocolError } from '../errors.js'
import {
  ABANDON_CODE,
  CHUNK_HEADER_BYTES,
  CHUNK_STATUS,
  type ChunkHeader,
  type ChunkStatus,
  DEFAULT_RECEIVER_MAX_TRANSFERS,
  DEFAULT_TRANSFER_STALL_MS,
  DEFAULT_TRANSFER_WINDOW_BYTES,
  FINISHED_IDS_KEPT,
  MAX_TRANSFER_CHUNK_BYTES,
  MAX_TRANSFER_WINDOW_BYTES,
  MIN_TRANSFER_CHUNK_BYTES,
  PROTOCOL,
  decodeChunkHeader,
} from './wire.js'
import { intOption } from './sender.js'
import { ignoreRejection } from '../ignore.js'

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
    this.result.catch(ignoreRejection) // marks it handled: whoever awaits result still sees the rejection
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
    this.#timer = setTimeout(
      () => {
        this.#timer = null
        if (this.#done) return
        const idle = performance.now() - this.#lastActivity
        if (idle >= this.#idleMs) {
          this.fail(new StoqProtocolError(PROTOCOL, `transfer ${this.id}: nothing arrived or was read for ${this.#idleMs} ms`))
        } else {
          this.#arm(this.#idleMs - idle)
        }
      },
      Math.max(1, Math.ceil(ms)),
    )
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
    this.#reader.cancel(ABANDON_CODE).catch(ignoreRejection) // abandoning the stream; one the peer already reset makes this reject
  }
}

/** `StreamInput.take`'s sink for bytes read only to be dropped. */
function dropPiece(): void {
  // Dropped: the chunk is refused, a duplicate or malformed.
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
    optionKeys<TransferReceiverOptions>({
      onTransfer: true,
      onError: true,
      onChunk: true,
      windowBytes: true,
      maxChunkBytes: true,
      maxTransfers: true,
      idleTimeoutMs: true,
    }),
  )
  if (typeof options.onTransfer !== 'function') throw new StoqInvalidArgumentError('onTransfer', 'expected a function')
  if (options.onError !== undefined && typeof options.onError !== 'function') throw new StoqInvalidArgumentError('onError', 'expected a function')
  if (options.onChunk !== undefined && typeof options.onChunk !== 'function') throw new StoqInvalidArgumentError('onChunk', 'expected a function')
  const windowBytes = intOption(options.windowBytes, 'windowBytes', MIN_TRANSFER_CHUNK_BYTES, MAX_TRANSFER_WINDOW_BYTES, DEFAULT_TRANSFER_WINDOW_BYTES)
  const maxChunkBytes = intOption(
    options.maxChunkBytes,
    'maxChunkBytes',
    MIN_TRANSFER_CHUNK_BYTES,
    Math.min(windowBytes, MAX_TRANSFER_CHUNK_BYTES),
    Math.min(windowBytes, MAX_TRANSFER_CHUNK_BYTES),
  )
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
      whole = (await input.take(h.length, dropPiece)) && (await input.atEnd())
    } catch (err) {
      // Reset, or the connection is gone: nobody to answer.
      report(err, h.transferId, stream, conn)
      return
    }
    if (!whole) {
      input.cancel()
      if (status === CHUNK_STATUS.stored || status === CHUNK_STATUS.duplicate) {
        report(
          new StoqProtocolError(PROTOCOL, `chunk ${h.index} of transfer ${h.transferId}: the stream does not hold exactly ${h.length} bytes`),
          h.transferId,
          stream,
          conn,
        )
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
