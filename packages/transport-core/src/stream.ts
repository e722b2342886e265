import { Duplex, Readable, Writable } from 'node:stream'
import { ReadableStream, WritableStream, type ReadableStreamDefaultController } from 'node:stream/web'
import {
  StoqClosedError,
  StoqError,
  StoqInvalidArgumentError,
  StoqStreamResetError,
  StoqStreamStateError,
  StoqStreamStoppedError,
  isBidirectional,
  STREAM_BLOCKED,
  STREAM_STOPPED,
  type StreamRecvError,
  type StreamRecvResult,
} from '@stoq/interface'
import { DEFAULT_STREAM_READ_HIGH_WATER } from './defaults.js'
import { ignoreRejection } from './ignore.js'

/** What a stream needs from its connection (kept narrow so streams are testable alone). */
export interface StreamHost {
  readonly handle: number
  readonly engine: import('@stoq/interface').QuicEngine
  /** Shared scratch buffer for reads. */
  readonly readScratch: Uint8Array
  /** Ask the endpoint to run its send/receive cycle soon. */
  schedule(): void
  /** The stream holds a chunk to push at the end of the tick. */
  streamPending(stream: QuicStream): void
  /** The stream is finished in both directions. */
  streamDone(stream: QuicStream): void
  /** The engine accepted the stream's FIN (a graceful close waits until the peer acknowledged it). */
  streamFinished(stream: QuicStream): void
  /** Error to use when the connection is gone, or null while it is alive. */
  connectionError(): Error | null
  /** Connection-wide payload counters the stream adds to. */
  readonly payload: { streamBytesRead: number; streamBytesWritten: number }
  /** Read budgets (see limits.ts): may the reader take more from the engine now? */
  readAllowed?(): boolean
  /** Bytes queued for readers changed by `delta`. */
  readBuffered?(delta: number): void
  /** The reader stopped because a read budget was full: pump it again when there is room. */
  readStarved?(stream: QuicStream): void
  /** The application took `bytes` from the engine (receive-window tuning). */
  readProgress?(bytes: number): void
}

const encoder = new TextEncoder()
const EMPTY = new Uint8Array(0)

/** QUIC application error codes are 62-bit varints: below 2^62 (2^62 - 1 is not a double). */
const APP_CODE_LIMIT = 2 ** 62

/** An application error code for RESET_STREAM / STOP_SENDING: an integer from 0 to 2^62-1. */
export function checkAppCode(code: unknown, name = 'code'): void {
  if (typeof code !== 'number' || !Number.isInteger(code) || code < 0 || code >= APP_CODE_LIMIT) {
    throw new StoqInvalidArgumentError(name, `expected an integer from 0 to 2^62-1, got ${typeof code === 'number' ? code : typeof code}`)
  }
}

function errorCode(reason: unknown): number {
  if (typeof reason === 'number' && Number.isInteger(reason) && reason >= 0) return reason
  if (StoqError.isInstance(reason)) {
    const data = reason.data as { code?: unknown } | undefined
    if (data && typeof data.code === 'number') return data.code
  }
  return 0
}

function toBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk
  if (typeof chunk === 'string') return encoder.encode(chunk)
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk)
  throw new StoqInvalidArgumentError('chunk', 'stream writes take a Uint8Array, Buffer, ArrayBuffer view or string')
}

/**
 * One QUIC stream as a Web Streams pair. The readable side pulls from the
 * engine only while its queue has room, so a slow reader stops crediting the
 * peer's flow control; the writable side resolves a write only once the engine
 * accepted every byte (but a copied last byte, see `write`), so a blocked peer
 * stops the writer.
 */
export class QuicStream {
  readonly id: number
  readonly bidirectional: boolean
  /** True when we opened the stream. */
  readonly local: boolean
  readonly readable: ReadableStream<Uint8Array> | null
  readonly writable: WritableStream<Uint8Array> | null

  private readonly host: StreamHost
  private controller: ReadableStreamDefaultController<Uint8Array> | null = null
  private readDone: boolean
  private writeDone: boolean
  /** Bytes of the current write the engine has not taken yet (the caller's buffer). */
  private rest: Uint8Array | null = null
  /** Copy of the last byte of the latest write, not sent yet. */
  private held: Uint8Array | null = null
  /** End-of-tick flushes the held byte has waited. */
  private heldTicks = 0
  /** `close()` was called: the next push of the held byte carries the FIN. */
  private finRequested = false
  /** Sending failed outside a write call (stopped by the peer): reported on the next write. */
  private writeError: Error | null = null
  /** The write or close waiting for send capacity. */
  private waiter: { resolve: () => void; reject: (err: Error) => void } | null = null
  private readonly recvResult: StreamRecvResult & StreamRecvError = { bytes: 0, fin: false, resetCode: -1 }
  /** The connection is closing gracefully and this stream takes no more writes. */
  private closedForWrites = false
  /**
   * Data the peer sent up to its FIN, taken out of the engine when the peer
   * closed the connection: handed to the reader at its pace, then the end.
   */
  private salvaged: Uint8Array[] | null = null
  /** Bytes handed to the reader and accepted from the writer (`bytesRead`, `bytesWritten`). */
  private readCount = 0
  private writtenCount = 0

  /** Bytes handed to the reader. */
  get bytesRead(): number {
    return this.readCount
  }

  /** Bytes the engine accepted from the writer. */
  get bytesWritten(): number {
    return this.writtenCount
  }

  /** The readable queue's high-water mark: bytes queued = highWater - desiredSize. */
  private readonly readHighWater: number
  /** Queued bytes last reported to the host's read budget. */
  private accounted = 0
  /** The FIN was read from the engine; the readable side closes once its queue is empty. */
  private finQueued = false

  /** @internal Stream `id` of `host` (its connection); `local` when this side opened it. */
  static create(host: StreamHost, id: number, local: boolean, readHighWater = DEFAULT_STREAM_READ_HIGH_WATER): QuicStream {
    return new QuicStream(host, id, local, readHighWater)
  }

  private constructor(host: StreamHost, id: number, local: boolean, readHighWater: number) {
    this.host = host
    this.readHighWater = readHighWater
    this.id = id
    this.local = local
    this.bidirectional = isBidirectional(id)
    const canRead = this.bidirectional || !local
    const canWrite = this.bidirectional || local
    this.readDone = !canRead
    this.writeDone = !canWrite
    this.readable = canRead
      ? new ReadableStream<Uint8Array>(
          {
            start: (controller) => {
              this.controller = controller
            },
            pull: () => {
              this.onPull()
            },
            cancel: (reason) => {
              this.stopReading(errorCode(reason))
            },
          },
          { highWaterMark: readHighWater, size: (chunk) => chunk.byteLength },
        )
      : null
    this.writable = canWrite
      ? new WritableStream<Uint8Array>(
          {
            write: (chunk) => this.write(toBytes(chunk)),
            close: () => this.finish(),
            abort: (reason) => {
              this.resetWriting(errorCode(reason))
            },
          },
          { highWaterMark: 4 },
        )
      : null
  }

  // -------------------------------------------------------------------------
  // Reading

  /** @internal Engine says data (or FIN/reset) is available. */
  onReadable(): void {
    this.pump()
  }

  /**
   * Bring the host's read budget up to date with the queue (the reader consumed or data was
   * queued). Queued bytes are exact: the queue's size function counts bytes.
   */
  private account(): void {
    const c = this.controller
    const queued = c === null ? 0 : Math.max(0, this.readHighWater - (c.desiredSize ?? this.readHighWater))
    const delta = queued - this.accounted
    if (delta === 0) return
    this.accounted = queued
    this.host.readBuffered?.(delta)
  }

  /** The queue is gone (closed empty, errored, cancelled): nothing is held for the reader. */
  private unaccount(): void {
    if (this.accounted === 0) return
    this.host.readBuffered?.(-this.accounted)
    this.accounted = 0
  }

  /** The reader took a chunk or waits for one. */
  private onPull(): void {
    this.account()
    if (this.finQueued) {
      this.closeWhenDrained()
      return
    }
    this.pump()
  }

  /** Close the readable side once the reader took every queued chunk (so the budget sees each read). */
  private closeWhenDrained(): void {
    const c = this.controller
    if (c === null || (c.desiredSize ?? 0) < this.readHighWater) return
    this.finQueued = false
    this.unaccount()
    c.close()
  }

  private pumping = false

  private pump(): void {
    const c = this.controller
    if (c === null || this.readDone || this.pumping) return
    if (this.salvaged !== null) {
      this.pumpSalvaged(c)
      return
    }
    const conErr = this.host.connectionError()
    if (conErr) {
      this.failRead(conErr)
      return
    }
    const { engine, handle, readScratch } = this.host
    const r = this.recvResult
    let read = false
    let taken = 0
    // enqueue() may call pull() synchronously: the flag keeps that from re-entering.
    this.pumping = true
    try {
      while ((c.desiredSize ?? 0) > 0) {
        if (this.host.readAllowed !== undefined && !this.host.readAllowed()) {
          // A read budget is full: leave the bytes in the engine (no credit for the peer).
          this.host.readStarved?.(this)
          break
        }
        let chunk: Uint8Array | null = null
        try {
          if (engine.streamRecvChunk) {
            chunk = engine.streamRecvChunk(handle, this.id, readScratch.length, r)
            if (chunk === null) break
          } else if (!engine.streamRecv(handle, this.id, readScratch, r)) break
        } catch {
          // The engine already forgot the connection (its close event comes in this same
          // drain and ends the stream): stop here rather than abort the endpoint's cycle.
          break
        }
        read = true
        const { bytes, fin, resetCode } = r
        if (resetCode >= 0) {
          this.failRead(new StoqStreamResetError(this.id, resetCode))
          return
        }
        if (bytes > 0) {
          this.readCount += bytes
          taken += bytes
          this.host.payload.streamBytesRead += bytes
          c.enqueue(chunk ?? readScratch.slice(0, bytes))
          this.account()
        }
        if (fin) {
          this.readDone = true
          this.finQueued = true
          this.closeWhenDrained()
          this.maybeDone()
          break
        }
      }
    } finally {
      this.pumping = false
      if (taken > 0) this.host.readProgress?.(taken)
      if (read) this.host.schedule()
    }
  }

  private pumpSalvaged(c: ReadableStreamDefaultController<Uint8Array>): void {
    const chunks = this.salvaged!
    this.pumping = true
    try {
      while (chunks.length > 0 && (c.desiredSize ?? 0) > 0) c.enqueue(chunks.shift()!)
    } finally {
      this.pumping = false
    }
    if (chunks.length > 0) return
    this.salvaged = null
    this.readDone = true
    c.close()
    this.maybeDone()
  }

  /**
   * The peer closed the connection: take what it sent out of the engine (the
   * connection is still readable during its close event). True when that
   * reaches the stream's FIN; the reader then gets all of it and a normal end.
   * Without the FIN the data is incomplete and nothing is kept.
   */
  private salvage(): boolean {
    const { engine, handle, readScratch } = this.host
    const r = this.recvResult
    const chunks: Uint8Array[] = []
    try {
      while (engine.streamRecv(handle, this.id, readScratch, r)) {
        if (r.resetCode >= 0) return false
        if (r.bytes > 0) chunks.push(readScratch.slice(0, r.bytes))
        if (r.fin) {
          let bytes = 0
          for (const c of chunks) bytes += c.length
          this.readCount += bytes
          this.host.payload.streamBytesRead += bytes
          this.salvaged = chunks
          return true
        }
      }
    } catch {
      // The engine already forgot the connection.
    }
    return false
  }

  private failRead(err: Error): void {
    // Every byte and the FIN arrived: the reader still gets them, then the end.
    if (this.finQueued) return
    if (this.readDone) return
    this.readDone = true
    this.unaccount()
    try {
      this.controller?.error(err)
    } catch {
      // Already closed by the reader.
    }
    this.maybeDone()
  }

  /** Ask the peer to stop sending (STOP_SENDING with `code`). */
  private stopReading(code: number): void {
    // The reader cancelled: its queue is dropped.
    this.finQueued = false
    this.unaccount()
    if (this.readDone) return
    this.readDone = true
    if (this.host.connectionError() === null) {
      this.host.engine.streamShutdown(this.host.handle, this.id, 'read', code)
      this.host.schedule()
    }
    this.maybeDone()
  }

  // -------------------------------------------------------------------------
  // Writing
  //
  // A write pushes all but its last byte into the engine (which copies what it
  // accepts) and keeps a copy of that last byte. The held byte goes out with
  // the next write, with the FIN if `close()` comes first, or on its own two
  // ticks later. Why: quiche 0.18 never retransmits a lost FIN-only frame once
  // the data before it was acknowledged, so a FIN must ride on data to be
  // reliable, and `pipeTo` and friends close a tick or so after their last
  // write. A write resolves once the engine took all its other bytes, so the
  // caller's buffer is never referenced afterwards, and a blocked peer stops
  // the writer.

  private write(chunk: Uint8Array): Promise<void> | void {
    this.assertWritable()
    if (chunk.length === 0) return
    if (this.held !== null) {
      // Order: the byte held from the previous write goes first.
      const pushed = this.pushHeld(false)
      if (!pushed) {
        return this.waitWritable().then(() => {
          this.assertWritable()
          return this.startWrite(chunk)
        })
      }
    }
    return this.startWrite(chunk)
  }

  private startWrite(chunk: Uint8Array): Promise<void> | void {
    const last = chunk.length - 1
    this.held = Uint8Array.of(chunk[last]!)
    this.heldTicks = 0
    this.host.streamPending(this)
    if (last === 0) return
    this.rest = chunk.subarray(0, last)
    if (this.pushRest()) return
    return this.waitWritable()
  }

  private assertWritable(): void {
    const conErr = this.host.connectionError()
    if (conErr) throw conErr
    if (this.writeError) throw this.writeError
    if (this.closedForWrites) throw new StoqClosedError('connection', `Connection is closing: stream ${this.id} takes no more writes`)
    if (this.writeDone || this.finRequested) {
      throw new StoqStreamStateError(this.id, `Stream ${this.id} is closed for writing`)
    }
  }

  /** Send the rest of the current write; true when all of it was accepted. Throws when stopped. */
  private pushRest(): boolean {
    const rest = this.rest!
    const n = this.send(rest, false)
    if (n < rest.length) {
      this.rest = rest.subarray(Math.max(0, n))
      return false
    }
    this.rest = null
    return true
  }

  /** Send the held byte (with the FIN when `fin`); true when accepted. Throws when stopped. */
  private pushHeld(fin: boolean): boolean {
    const data = this.held ?? EMPTY
    const n = this.send(data, fin)
    if (n < data.length || n === STREAM_BLOCKED) return false
    this.held = null
    if (fin) {
      this.writeDone = true
      this.host.streamFinished(this)
      this.maybeDone()
    }
    return true
  }

  /** streamSend, with STREAM_STOPPED turned into the typed error. Returns bytes accepted or STREAM_BLOCKED. */
  private send(data: Uint8Array, fin: boolean): number {
    let n = this.host.engine.streamSend(this.host.handle, this.id, data, fin)
    // A stream the engine already reports complete cannot take more: the peer stopped it and
    // the engine forgot it. quiche 0.18 does that when STOP_SENDING and RESET_STREAM arrive
    // together and the reader consumes the reset first (the stream is then "collected"), and
    // its stream_send answers Done for a collected stream, which reads as "blocked": the
    // writer would wait for a writable event that never comes.
    if (n === STREAM_BLOCKED && this.host.engine.streamComplete(this.host.handle, this.id)) n = STREAM_STOPPED
    if (n === STREAM_STOPPED) {
      this.rest = null
      this.held = null
      throw this.stoppedError()
    }
    if (n > 0) {
      this.writtenCount += n
      this.host.payload.streamBytesWritten += n
      this.host.schedule()
    } else if (fin && n === 0) {
      this.host.schedule()
    }
    return n
  }

  private stoppedError(): Error {
    const code = this.host.engine.streamStopCode(this.host.handle, this.id)
    this.writeDone = true
    const err =
      code >= 0 ? new StoqStreamStoppedError(this.id, code) : new StoqStreamStateError(this.id, `Stream ${this.id} cannot be written (finished or reset)`)
    this.writeError = err
    this.maybeDone()
    return err
  }

  private waitWritable(): Promise<void> {
    this.host.engine.streamWantWritable(this.host.handle, this.id)
    return new Promise<void>((resolve, reject) => {
      this.waiter = { resolve, reject }
    })
  }

  /** @internal Engine says the stream can take data again: continue whatever waits. */
  onWritable(): void {
    if (this.waiter === null) {
      // Nobody waits: a held byte that could not go out at its tick.
      if (this.held !== null && this.heldTicks >= 2 && !this.finRequested) this.flushPending()
      return
    }
    let done: boolean
    try {
      if (this.rest !== null) done = this.pushRest()
      else if (this.finRequested) done = this.pushHeld(true)
      else if (this.held !== null) done = this.pushHeld(false)
      else done = true
    } catch (err) {
      this.settleWrite(err as Error)
      return
    }
    if (done) this.settleWrite(null)
    else this.host.engine.streamWantWritable(this.host.handle, this.id)
  }

  /** @internal Called by the connection at the end of each tick: the held byte goes out at the second. */
  flushPending(): void {
    if (this.held === null || this.finRequested || this.rest !== null || this.waiter !== null) return
    if (++this.heldTicks < 2) {
      this.host.streamPending(this)
      return
    }
    try {
      if (!this.pushHeld(false)) this.host.engine.streamWantWritable(this.host.handle, this.id)
    } catch {
      // Stopped: writeError is set and the next write reports it.
    }
  }

  private settleWrite(err: Error | null): void {
    const waiter = this.waiter
    this.waiter = null
    if (err) {
      this.rest = null
      waiter?.reject(err)
    } else {
      waiter?.resolve()
    }
    this.maybeDone()
  }

  private finish(): Promise<void> | void {
    this.assertWritable()
    this.finRequested = true
    if (this.pushHeld(true)) return
    return this.waitWritable()
  }

  /** Abandon sending (RESET_STREAM with `code`). */
  private resetWriting(code: number): void {
    if (this.writeDone) return
    this.writeDone = true
    this.held = null
    if (this.host.connectionError() === null) {
      this.host.engine.streamShutdown(this.host.handle, this.id, 'write', code)
      this.host.schedule()
    }
    this.settleWrite(new StoqStreamStateError(this.id, `Stream ${this.id} was reset locally with code ${code}`))
    this.maybeDone()
  }

  // -------------------------------------------------------------------------
  // Control

  /** Reset the sending side with an application error code. */
  reset(code = 0): void {
    checkAppCode(code)
    if (this.writable === null || this.writeDone) return
    this.resetWriting(code)
    this.writable.abort(code).catch(ignoreRejection) // the reset is already queued to the engine; the abort only errors the writable side
  }

  /** Ask the peer to stop sending, with an application error code. */
  stopSending(code = 0): void {
    checkAppCode(code)
    if (this.readable === null || this.readDone) return
    this.stopReading(code)
    try {
      this.controller?.error(new StoqStreamStateError(this.id, `Stream ${this.id} reading was stopped locally`))
    } catch {
      // Already errored.
    }
  }

  /** Set the stream's scheduling priority (RFC 9218 urgency 0-7, lower is sooner). */
  setPriority(urgency: number, incremental = true): void {
    if (!Number.isInteger(urgency) || urgency < 0 || urgency > 7) {
      throw new StoqInvalidArgumentError('urgency', `expected an integer from 0 to 7, got ${typeof urgency === 'number' ? urgency : typeof urgency}`)
    }
    if (typeof incremental !== 'boolean') throw new StoqInvalidArgumentError('incremental', `expected a boolean, got ${typeof incremental}`)
    this.host.engine.streamPriority(this.host.handle, this.id, urgency, incremental)
    this.host.schedule()
  }

  /**
   * @internal The connection ended: fail whatever is still open. With `salvage` (the
   * peer closed it), a readable side whose data and FIN all arrived still
   * delivers them to the reader and ends normally.
   */
  onConnectionClosed(err: Error, salvage = false): void {
    this.settleWrite(err)
    if (!this.writeDone) {
      this.writeDone = true
      // Make later writer operations fail fast with the connection's error.
    }
    if (salvage && !this.readDone && this.controller !== null && this.salvage()) {
      this.pump()
      return
    }
    this.failRead(err)
    this.maybeDone()
  }

  /** @internal True once the readable side is over (FIN read, reset, stopped or failed), or there is none. */
  get readEnded(): boolean {
    return this.readDone
  }

  /**
   * @internal The connection closes gracefully (called once per turn while it
   * waits). An idle stream takes no more writes from now on; a write waiting
   * for credit goes on, with whatever its writer queued behind it. A held last
   * byte goes out now instead of two ticks later. True while bytes accepted
   * from the writer have not all been handed to the engine.
   */
  prepareForClose(): boolean {
    if (this.waiter === null) this.closedForWrites = true
    if (this.held !== null && this.rest === null && this.waiter === null && !this.finRequested) {
      this.heldTicks = Math.max(this.heldTicks, 1)
      this.flushPending()
    }
    return this.writeError === null && !this.writeDone && (this.waiter !== null || this.rest !== null || this.held !== null)
  }

  private maybeDone(): void {
    if (this.readDone && this.writeDone && this.waiter === null) this.host.streamDone(this)
  }

  /** A Node.js Duplex (or Readable/Writable for unidirectional streams) over this stream. */
  toNodeStream(): Duplex | Readable | Writable {
    if (this.readable && this.writable) return Duplex.fromWeb({ readable: this.readable, writable: this.writable })
    if (this.readable) return Readable.fromWeb(this.readable)
    return Writable.fromWeb(this.writable!)
  }
}
