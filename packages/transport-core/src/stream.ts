import { Duplex, Readable, Writable } from 'node:stream'
import { ReadableStream, WritableStream, type ReadableStreamDefaultController } from 'node:stream/web'
import {
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
  /** Error to use when the connection is gone, or null while it is alive. */
  connectionError(): Error | null
}

const encoder = new TextEncoder()
const EMPTY = new Uint8Array(0)

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
 * accepted every byte, so a blocked peer stops the writer.
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
  private pendingChunk: Uint8Array | null = null
  /** The pending send carries the FIN. */
  private pendingFin = false
  /** The held chunk is down to its last byte, kept one more tick for the FIN. */
  private tailHeld = false
  /** Sending failed outside a write call (stopped by the peer): reported on the next write. */
  private writeError: Error | null = null
  private pendingResolve: (() => void) | null = null
  private pendingReject: ((err: Error) => void) | null = null
  private readonly recvResult: StreamRecvResult & StreamRecvError = { bytes: 0, fin: false, resetCode: -1 }
  /** Bytes handed to the reader and accepted from the writer (for tests and stats). */
  bytesRead = 0
  bytesWritten = 0

  constructor(host: StreamHost, id: number, local: boolean, readHighWater = DEFAULT_STREAM_READ_HIGH_WATER) {
    this.host = host
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
              this.pump()
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

  /** Engine says data (or FIN/reset) is available. */
  onReadable(): void {
    this.pump()
  }

  private pumping = false

  private pump(): void {
    const c = this.controller
    if (c === null || this.readDone || this.pumping) return
    const conErr = this.host.connectionError()
    if (conErr) {
      this.failRead(conErr)
      return
    }
    const { engine, handle, readScratch } = this.host
    const r = this.recvResult
    let read = false
    // enqueue() may call pull() synchronously: the flag keeps that from re-entering.
    this.pumping = true
    try {
      while ((c.desiredSize ?? 0) > 0) {
        if (!engine.streamRecv(handle, this.id, readScratch, r)) break
        read = true
        const { bytes, fin, resetCode } = r
        if (resetCode >= 0) {
          this.failRead(new StoqStreamResetError(this.id, resetCode))
          return
        }
        if (bytes > 0) {
          this.bytesRead += bytes
          c.enqueue(readScratch.slice(0, bytes))
        }
        if (fin) {
          this.readDone = true
          c.close()
          this.maybeDone()
          break
        }
      }
    } finally {
      this.pumping = false
      if (read) this.host.schedule()
    }
  }

  private failRead(err: Error): void {
    if (this.readDone) return
    this.readDone = true
    try {
      this.controller?.error(err)
    } catch {
      // Already closed by the reader.
    }
    this.maybeDone()
  }

  /** Ask the peer to stop sending (STOP_SENDING with `code`). */
  private stopReading(code: number): void {
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

  /**
   * A write is held as the pending chunk until the endpoint's next cycle (or
   * the next write) pushes it into the engine. A `close()` that arrives first
   * sends the chunk and the FIN together: quiche 0.18 never retransmits a lost
   * FIN-only frame once the data before it was acknowledged, so a FIN riding
   * on data is what keeps stream ends reliable. At most one chunk is held.
   */
  private write(chunk: Uint8Array): Promise<void> | void {
    this.assertWritable()
    if (chunk.length === 0) return
    const drained = this.drainPending()
    if (drained === undefined) {
      this.hold(chunk)
      return
    }
    return drained.then(() => {
      this.assertWritable()
      this.hold(chunk)
    })
  }

  private assertWritable(): void {
    if (this.writeError) throw this.writeError
    if (this.writeDone) throw new StoqStreamStateError(this.id, `Stream ${this.id} is closed for writing`)
    const conErr = this.host.connectionError()
    if (conErr) throw conErr
  }

  private hold(chunk: Uint8Array): void {
    this.tailHeld = false
    this.pendingChunk = chunk
    this.pendingFin = false
    this.host.streamPending(this)
  }

  /** Push the held chunk; returns a promise when it must wait for capacity. */
  private drainPending(): Promise<void> | undefined {
    if (this.pendingChunk === null) return undefined
    if (this.trySend()) return undefined
    return this.waitWritable()
  }

  /**
   * Called by the connection at the end of a tick: send what is held, without
   * FIN. The last byte stays held for one more tick, because a `close()` often
   * follows a write a tick later (e.g. `pipeTo`), and the FIN must ride on data.
   */
  flushPending(): void {
    const chunk = this.pendingChunk
    if (chunk === null || this.pendingResolve !== null || this.pendingFin) return
    try {
      if (!this.tailHeld && chunk.length > 1) {
        this.pendingChunk = chunk.subarray(0, chunk.length - 1)
        const sent = this.trySend()
        const rest = this.pendingChunk as Uint8Array | null
        // Re-attach the held byte behind whatever the engine did not take.
        this.pendingChunk = sent || rest === null ? chunk.subarray(chunk.length - 1) : chunk.subarray(chunk.length - 1 - rest.length)
        if (sent) {
          this.tailHeld = true
          this.host.streamPending(this)
          return
        }
      } else if (this.trySend()) {
        this.tailHeld = false
        return
      }
      this.host.engine.streamWantWritable(this.host.handle, this.id)
    } catch (err) {
      this.writeError = err as Error
    }
  }

  private waitWritable(): Promise<void> {
    this.host.engine.streamWantWritable(this.host.handle, this.id)
    return new Promise<void>((resolve, reject) => {
      this.pendingResolve = resolve
      this.pendingReject = reject
    })
  }

  /**
   * Push the pending chunk (and FIN if asked) into the engine. Returns true
   * when all of it was accepted; throws when the stream was stopped.
   */
  private trySend(): boolean {
    const chunk = this.pendingChunk!
    const n = this.host.engine.streamSend(this.host.handle, this.id, chunk, this.pendingFin)
    if (n === STREAM_STOPPED) {
      this.pendingChunk = null
      throw this.stoppedError()
    }
    if (n === STREAM_BLOCKED) return false
    this.bytesWritten += n
    this.host.schedule()
    if (n < chunk.length) {
      this.pendingChunk = chunk.subarray(n)
      return false
    }
    this.pendingChunk = null
    if (this.pendingFin) {
      this.writeDone = true
      this.maybeDone()
    }
    return true
  }

  private stoppedError(): Error {
    const code = this.host.engine.streamStopCode(this.host.handle, this.id)
    this.writeDone = true
    this.maybeDone()
    return code >= 0
      ? new StoqStreamStoppedError(this.id, code)
      : new StoqStreamStateError(this.id, `Stream ${this.id} cannot be written (finished or reset)`)
  }

  /** Engine says the stream can take data again. */
  onWritable(): void {
    if (this.pendingChunk === null) return
    let done: boolean
    try {
      done = this.trySend()
    } catch (err) {
      this.writeError = err as Error
      this.settleWrite(err as Error)
      return
    }
    if (done) this.settleWrite(null)
    else this.host.engine.streamWantWritable(this.host.handle, this.id)
  }

  private settleWrite(err: Error | null): void {
    const resolve = this.pendingResolve
    const reject = this.pendingReject
    this.pendingChunk = null
    this.pendingResolve = null
    this.pendingReject = null
    if (err) reject?.(err)
    else resolve?.()
  }

  private finish(): Promise<void> | void {
    this.assertWritable()
    const wait = this.pendingResolve !== null ? this.waitForWaiter() : undefined
    const sendFin = (): Promise<void> | void => {
      this.assertWritable()
      if (this.pendingChunk === null) this.pendingChunk = EMPTY
      this.pendingFin = true
      if (this.trySend()) return
      return this.waitWritable()
    }
    return wait ? wait.then(sendFin) : sendFin()
  }

  /** A write is waiting for capacity: resolve when it is done. */
  private waitForWaiter(): Promise<void> {
    const resolve = this.pendingResolve!
    const reject = this.pendingReject!
    return new Promise<void>((res, rej) => {
      this.pendingResolve = () => {
        resolve()
        res()
      }
      this.pendingReject = (err) => {
        reject(err)
        rej(err)
      }
    })
  }

  /** Abandon sending (RESET_STREAM with `code`). */
  private resetWriting(code: number): void {
    if (this.writeDone) return
    this.writeDone = true
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
    if (this.writable === null || this.writeDone) return
    this.resetWriting(code)
    this.writable.abort(code).catch(() => {})
  }

  /** Ask the peer to stop sending, with an application error code. */
  stopSending(code = 0): void {
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
      throw new StoqInvalidArgumentError('urgency', `expected an integer from 0 to 7, got ${String(urgency)}`)
    }
    this.host.engine.streamPriority(this.host.handle, this.id, urgency, incremental)
    this.host.schedule()
  }

  /** The connection ended: fail whatever is still open. */
  onConnectionClosed(err: Error): void {
    this.settleWrite(err)
    if (!this.writeDone) {
      this.writeDone = true
      // Make later writer operations fail fast with the connection's error.
    }
    this.failRead(err)
    this.maybeDone()
  }

  private maybeDone(): void {
    if (this.readDone && this.writeDone && this.pendingChunk === null) this.host.streamDone(this)
  }

  /** A Node.js Duplex (or Readable/Writable for unidirectional streams) over this stream. */
  toNodeStream(): Duplex | Readable | Writable {
    if (this.readable && this.writable) return Duplex.fromWeb({ readable: this.readable, writable: this.writable })
    if (this.readable) return Readable.fromWeb(this.readable)
    return Writable.fromWeb(this.writable!)
  }
}
