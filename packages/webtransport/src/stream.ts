import { ReadableStream, WritableStream, type ReadableStreamDefaultReader } from 'node:stream/web'
import { show } from './args.js'
import { http3ErrorToWebTransport, webTransportErrorToHttp3, WT_APPLICATION_ERROR_MAX } from '@stoq/h3'
import { StoqError, StoqInvalidArgumentError, StoqStreamResetError, StoqStreamStoppedError } from '@stoq/interface'
import type { QuicStream } from '@stoq/transport-core'
import { ignoreRejection } from './ignore.js'

export type ByteReader = ReadableStreamDefaultReader<Uint8Array>

const EMPTY: Uint8Array = new Uint8Array(0)

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

/**
 * Reads from `reader` until `decode` recognises the stream's preface. Returns
 * the preface and the bytes read past it, or `null` when the stream ended
 * first. Stream prefaces are at most 16 bytes, so at most one short buffer is
 * kept.
 */
export async function readPreface<T>(
  reader: ByteReader,
  decode: (buf: Uint8Array) => { value: T; length: number } | null,
): Promise<{ value: T; rest: Uint8Array } | null> {
  let buf: Uint8Array = EMPTY
  for (;;) {
    const r = await reader.read()
    if (r.done) return null
    buf = concat(buf, r.value)
    const d = decode(buf)
    if (d !== null) return { value: d.value, rest: buf.subarray(d.length) }
  }
}

/** Reads a stream to its end, discarding the bytes (keeps the peer's flow control moving). */
export async function drain(reader: ByteReader): Promise<void> {
  for (;;) {
    const r = await reader.read()
    if (r.done) return
  }
}

/** A WebTransport code (0..2^32-1) becomes its HTTP/3 code; anything else passes through. */
function toHttp3Code(code: unknown): unknown {
  if (typeof code === 'number' && Number.isInteger(code) && code >= 0 && code <= WT_APPLICATION_ERROR_MAX) {
    return webTransportErrorToHttp3(code)
  }
  return code
}

function checkCode(code: unknown): number {
  if (typeof code !== 'number' || !Number.isInteger(code) || code < 0 || code > WT_APPLICATION_ERROR_MAX) {
    throw new StoqInvalidArgumentError('code', `expected a WebTransport error code from 0 to 2^32-1, got ${show(code)}`)
  }
  return code
}

/** Reset / stop codes on WebTransport streams are HTTP/3 codes: give the application its own code back. */
function mapStreamError(err: unknown): unknown {
  if (StoqError.isInstance(err)) {
    const data = err.data as { streamId?: unknown; code?: unknown } | undefined
    if (data && typeof data.streamId === 'number' && typeof data.code === 'number') {
      const app = http3ErrorToWebTransport(data.code)
      if (app !== null) {
        if (err.code === 'STOQ_ERR_STREAM_RESET') return new StoqStreamResetError(data.streamId, app)
        if (err.code === 'STOQ_ERR_STREAM_STOPPED') return new StoqStreamStoppedError(data.streamId, app)
      }
    }
  }
  return err
}

/** Told when a stream is finished in both directions. */
export interface StreamOwner {
  streamDone(stream: WebTransportStream): void
}

/**
 * One WebTransport stream: a QUIC stream after its preface, as a Web Streams
 * pair. Error codes the application gives (`reset`, `stopSending`, `abort`,
 * `cancel`) and receives (`StoqStreamResetError` / `StoqStreamStoppedError`
 * `data.code`) are WebTransport codes (0..2^32-1), mapped to and from the
 * HTTP/3 range on the wire.
 */
export class WebTransportStream {
  readonly id: number
  readonly bidirectional: boolean
  /** True when this side opened the stream. */
  readonly local: boolean
  readonly readable: ReadableStream<Uint8Array> | null
  readonly writable: WritableStream<Uint8Array> | null
  /** The underlying QUIC stream (its bytes include the preface). */
  readonly quicStream: QuicStream

  #readDone: boolean
  #writeDone: boolean
  #owner: StreamOwner | null

  /**
   * @param reader the QUIC stream's reader, positioned after the preface (incoming) or fresh (local)
   * @param rest bytes already read past the preface
   * @param preface written first on the send side (local streams)
   */
  constructor(quicStream: QuicStream, owner: StreamOwner, reader: ByteReader | null, rest: Uint8Array, preface: Uint8Array | null) {
    // Built by WebTransportSession; checked for direct callers.
    if (typeof quicStream !== 'object' || quicStream === null || typeof quicStream.reset !== 'function') {
      throw new StoqInvalidArgumentError('quicStream', 'expected a STOQ QuicStream')
    }
    if (!(rest instanceof Uint8Array)) throw new StoqInvalidArgumentError('rest', 'expected a Uint8Array')
    this.quicStream = quicStream
    this.id = quicStream.id
    this.bidirectional = quicStream.bidirectional
    this.local = quicStream.local
    this.#owner = owner
    this.#readDone = reader === null
    this.#writeDone = quicStream.writable === null
    this.readable = reader === null ? null : this.#wrapReadable(reader, rest)
    this.writable = quicStream.writable === null ? null : this.#wrapWritable(quicStream, preface)
  }

  #wrapReadable(reader: ByteReader, rest: Uint8Array): ReadableStream<Uint8Array> {
    let first: Uint8Array | null = rest.length > 0 ? rest : null
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          if (first !== null) {
            controller.enqueue(first)
            first = null
            return
          }
          try {
            const r = await reader.read()
            if (r.done) {
              controller.close()
              this.#markRead()
            } else {
              controller.enqueue(r.value)
            }
          } catch (err) {
            controller.error(mapStreamError(err))
            this.#markRead()
          }
        },
        cancel: async (reason) => {
          this.#markRead()
          await reader.cancel(toHttp3Code(reason)).catch(ignoreRejection) // the application cancelled; a stream the peer already reset makes this reject
        },
      },
      { highWaterMark: 0 },
    )
  }

  #wrapWritable(qs: QuicStream, preface: Uint8Array | null): WritableStream<Uint8Array> {
    const writer = qs.writable!.getWriter()
    if (preface !== null) {
      // Queued ahead of anything the application writes; a failure shows on the next write.
      writer.write(preface).catch(ignoreRejection)
    }
    return new WritableStream<Uint8Array>(
      {
        write: async (chunk) => {
          try {
            await writer.write(chunk)
          } catch (err) {
            this.#markWrite()
            throw mapStreamError(err)
          }
        },
        close: async () => {
          try {
            await writer.close()
          } catch (err) {
            throw mapStreamError(err)
          } finally {
            this.#markWrite()
          }
        },
        abort: async (reason) => {
          this.#markWrite()
          await writer.abort(toHttp3Code(reason)).catch(ignoreRejection) // the application aborted; a stream the peer already reset makes this reject
        },
      },
      { highWaterMark: 1 },
    )
  }

  #markRead(): void {
    if (this.#readDone) return
    this.#readDone = true
    this.#maybeDone()
  }

  #markWrite(): void {
    if (this.#writeDone) return
    this.#writeDone = true
    this.#maybeDone()
  }

  #maybeDone(): void {
    if (this.#readDone && this.#writeDone && this.#owner !== null) {
      const owner = this.#owner
      this.#owner = null
      owner.streamDone(this)
    }
  }

  /** Abandon sending: RESET_STREAM with WebTransport error `code`. */
  reset(code = 0): void {
    this.quicStream.reset(webTransportErrorToHttp3(checkCode(code)))
    this.#markWrite()
  }

  /** Ask the peer to stop sending: STOP_SENDING with WebTransport error `code`. */
  stopSending(code = 0): void {
    this.quicStream.stopSending(webTransportErrorToHttp3(checkCode(code)))
    this.#markRead()
  }

  /** @internal the session ended: abandon both directions with an HTTP/3 code. */
  abandon(h3Code: number): void {
    this.quicStream.reset(h3Code)
    this.quicStream.stopSending(h3Code)
    this.#writeDone = true
    this.#readDone = true
    this.#owner = null
  }
}
