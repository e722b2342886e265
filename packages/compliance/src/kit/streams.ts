import type { ReadableStream } from 'node:stream/web'

/** Any byte source a test reads to its end: a WHATWG ReadableStream (Node's or the global) or an async iterable. */
export type ByteSource = AsyncIterable<Uint8Array> | ReadableStream<Uint8Array> | globalThis.ReadableStream<Uint8Array>

/** Reads `source` to its end and returns all its bytes in one array. */
export async function readAll(source: ByteSource): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  let total = 0
  for await (const chunk of source as AsyncIterable<Uint8Array>) {
    chunks.push(chunk)
    total += chunk.length
  }
  const out = new Uint8Array(total)
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

/** Reads `source` to its end as UTF-8 text. */
export async function readAllText(source: ByteSource): Promise<string> {
  return new TextDecoder().decode(await readAll(source))
}
