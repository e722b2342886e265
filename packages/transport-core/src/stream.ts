import { Duplex, Readable, Writable } from 'node:stream'
import { ReadableStream, WritableStream, type ReadableStreamDefaultController } from 'node:stream/web'
import {
  StoqError,
  StoqInvalidArgumentError,
  StoqStreamResetError,
  StoqStreamStateError,
  StoqStreamStoppedError,
  isBidirectional,
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
  /** The stream is finished in both directions. */
  streamDone(stream: QuicStream): void
  /** Error to use when the connection is gone, or null while it is alive. */
  connectionError(): Error | null
}

const encoder = new TextEncoder()

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

  private write(chunk: Uint8Array): Promise<void> | void {
    if (this.writeDone) throw new StoqStreamStateError(this.id, `Stream ${this.id} is closed for writing`)
    const conErr = this.host.connectionError()
    if (conErr) throw conErr
    if (chunk.length === 0) return
    const n = this.host.engine.streamSend(this.host.handle, this.id, chunk, false)
    if (n < 0) throw this.stoppedError()
    this.bytesWritten += n
    this.host.schedule()
    if (n === chunk.length) return
    this.pendingChunk = chunk.subarray(n)
    this.host.engine.streamWantWritable(this.host.handle, this.id)
    return new Promise<void>((resolve, reject) => {
      this.pendingResolve = resolve
      this.pendingReject = reject
    })
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
    const chunk = this.pendingChunk
    if (chunk === null) return
    const n = this.host.engine.streamSend(this.host.handle, this.id, chunk, false)
    if (n < 0) {
      this.settleWrite(this.stoppedError())
      return
    }
    this.bytesWritten += n
    this.host.schedule()
    if (n === chunk.length) {
      this.settleWrite(null)
    } else {
      this.pendingChunk = chunk.subarray(n)
      this.host.engine.streamWantWritable(this.host.handle, this.id)
    }
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

  private finish(): void {
    if (this.writeDone) return
    const conErr = this.host.connectionError()
    if (conErr) throw conErr
    const n = this.host.engine.streamSend(this.host.handle, this.id, new Uint8Array(0), true)
    if (n < 0) throw this.stoppedError()
    this.writeDone = true
    this.host.schedule()
    this.maybeDone()
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
