import { StoqAbortedError, StoqInvalidArgumentError, StoqStreamStateError, checkOptions, signalOption, throwIfAborted, whenAborted } from '@stoq/interface'
import type { QuicEngine } from '@stoq/interface'
import type { QuicStream } from './stream.js'
import { ignoreRejection } from './ignore.js'

const encoder = new TextEncoder()

/** What `send()` accepts: bytes, text, or any (async) iterable / Node or Web stream of those. */
export type SendSource = Uint8Array | ArrayBuffer | string | Iterable<Uint8Array | string> | AsyncIterable<Uint8Array | string>

/** The chunks of a `send()` source, as bytes; a wrong chunk throws StoqInvalidArgumentError. */
export async function* toChunks(data: SendSource): AsyncGenerator<Uint8Array> {
  if (typeof data === 'string') {
    yield encoder.encode(data)
    return
  }
  if (data instanceof Uint8Array) {
    yield data
    return
  }
  if (data instanceof ArrayBuffer) {
    yield new Uint8Array(data)
    return
  }
  const iterable = data as Partial<AsyncIterable<unknown> & Iterable<unknown>> | null
  if (iterable && (typeof iterable[Symbol.asyncIterator] === 'function' || typeof iterable[Symbol.iterator] === 'function')) {
    for await (const chunk of data as AsyncIterable<unknown>) {
      if (typeof chunk === 'string') yield encoder.encode(chunk)
      else if (chunk instanceof Uint8Array) yield chunk
      else throw new StoqInvalidArgumentError('data', 'stream chunks must be Uint8Array, Buffer or string')
    }
    return
  }
  throw new StoqInvalidArgumentError('data', 'expected a Uint8Array, Buffer, ArrayBuffer, string, or an (async) iterable or stream of them')
}

/** What `sendMessage` uses of its connection (a QuicConnection). */
interface SendingConnection {
  readonly engine: QuicEngine
  readonly handle: number
  readonly isClosed: boolean
  connectionError(): Error | null
  createStream(options: { unidirectional: boolean; timeoutMs: number; signal?: AbortSignal }): Promise<QuicStream>
}

const SEND_KEYS = ['confirm', 'signal', 'timeoutMs'] as const

/** `conn.send()`: a whole message on a new unidirectional stream (see there). */
export async function sendMessage(
  conn: SendingConnection,
  data: SendSource,
  options: { confirm?: boolean; signal?: AbortSignal; timeoutMs?: number },
): Promise<number> {
  checkOptions(options, SEND_KEYS)
  const signal = signalOption('signal', options.signal)
  const timeoutMs = options.timeoutMs ?? 30_000
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new StoqInvalidArgumentError('timeoutMs', 'expected a positive integer (ms)')
  const iterable = typeof data === 'object' && data !== null && (Symbol.asyncIterator in data || Symbol.iterator in data)
  if (typeof data !== 'string' && !(data instanceof Uint8Array) && !(data instanceof ArrayBuffer) && !iterable) {
    throw new StoqInvalidArgumentError('data', 'expected a Uint8Array, Buffer, ArrayBuffer, string, or an (async) iterable or stream of them')
  }
  throwIfAborted(signal, 'send')
  const chunks = toChunks(data)
  // The first chunk before the stream: a source that is wrong from the start leaves no stream.
  const first = await chunks.next()
  throwIfAborted(signal, 'send')
  // Waits for the peer's stream credit (within timeoutMs), like the rest of send().
  let stream: QuicStream
  try {
    stream = await conn.createStream({ unidirectional: true, timeoutMs, ...(signal !== undefined ? { signal } : {}) })
  } catch (err) {
    throw err instanceof StoqAbortedError ? new StoqAbortedError('send', signal?.reason) : err
  }
  const writer = stream.writable!.getWriter()
  // An abort resets the stream: a write waiting for credit rejects, nothing more goes out.
  let aborted: StoqAbortedError | null = null
  const stopListening = whenAborted(signal, 'send', (err) => {
    aborted = err
    writer.abort(err).catch(ignoreRejection) // the pending write rejects with the abort, which send() reports
  })
  try {
    try {
      if (first.done !== true) await writer.write(first.value)
      for await (const chunk of chunks) await writer.write(chunk)
      await writer.close()
    } catch (err) {
      writer.abort(err).catch(ignoreRejection) // the write error is what send() reports; a stream already reset makes the abort reject
      throw aborted ?? err
    }
    const sent = stream.bytesWritten
    if (options.confirm !== true) return sent
    // The engine forgets a send-only stream once the peer acknowledged all of it.
    const deadline = performance.now() + timeoutMs
    while (!conn.engine.streamComplete(conn.handle, stream.id)) {
      if (aborted !== null) throw aborted
      const err = conn.connectionError()
      if (err) throw err
      if (performance.now() > deadline) {
        throw new StoqStreamStateError(stream.id, `Peer did not acknowledge stream ${stream.id} within ${timeoutMs} ms`)
      }
      const rtt = conn.isClosed ? 1 : Math.max(1, Math.min(50, conn.engine.stats(conn.handle).rttMs / 2))
      await new Promise((resolve) => setTimeout(resolve, rtt))
    }
    return sent
  } finally {
    stopListening()
  }
}
