import { getEventListeners } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type CloseInfo, type Endpoint, type QuicConnection, type QuicStream } from '../src/index.js'
import { pattern, readAll, sha256 } from './fixtures/echo.js'
import { failure, waitFor } from './fixtures/peers.js'

/**
 * Graceful close: `conn.close()` delivers what `send()` and closed writers
 * handed over before CONNECTION_CLOSE goes out, and a peer that never reads
 * cannot hold it beyond its timeout. Runs once per engine (vitest projects).
 */

let pki: TestPki
let server: Endpoint
let client: Endpoint

/** What the server saw of one connection: every stream's bytes (or error) and the close. */
interface Seen {
  conn: QuicConnection
  streams: Promise<Uint8Array | Error>[]
  closed: Promise<CloseInfo>
}

const seen: Seen[] = []
/** When false, the server accepts streams but never reads them. */
let serverReads = true

beforeAll(async () => {
  pki = await testPki()
  server = await createEndpoint({
    host: '127.0.0.1',
    server: { cert: pki.server.cert, key: pki.server.key },
    // Fixed windows: a peer that never reads blocks the sender at a known point.
    transport: { initialMaxStreamData: 1024 * 1024, maxStreamWindow: 1024 * 1024 },
  })
  server.on('connection', (conn) => {
    const entry: Seen = { conn, streams: [], closed: conn.closed }
    conn.on('stream', (s: QuicStream) => {
      // Data that arrived before the peer's CONNECTION_CLOSE stays readable after it.
      if (serverReads) entry.streams.push(readAll(s.readable!).catch((err: Error) => err))
    })
    seen.push(entry)
  })
  client = await createEndpoint({ host: '127.0.0.1' })
})

afterAll(async () => {
  await client?.close()
  await server?.close()
})

async function dial(): Promise<{ conn: QuicConnection; peer: Seen }> {
  const before = seen.length
  const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
  await waitFor(() => seen.length > before, 'server side of the connection')
  return { conn, peer: seen[seen.length - 1]! }
}

describe('graceful close()', () => {
  it('delivers 8 MiB sent with send() (not confirmed) before the close, then the close code', async () => {
    serverReads = true
    const { conn, peer } = await dial()
    const data = pattern(8 * 1024 * 1024, 99)
    const sent = await conn.send(data)
    expect(sent).toBe(data.length)
    const local = await conn.close(4321, 'all sent')
    expect(local).toMatchObject({ remote: false, app: true, code: 4321 })

    const info = await peer.closed
    expect(info).toMatchObject({ remote: true, app: true, code: 4321, reason: 'all sent' })
    expect(peer.streams.length).toBe(1)
    const got = await peer.streams[0]!
    expect(got).toBeInstanceOf(Uint8Array)
    expect((got as Uint8Array).length).toBe(data.length)
    expect(sha256(got as Uint8Array)).toBe(sha256(data))
    // Nothing left behind on either side.
    expect(conn.streamsOpen).toBe(0)
    expect(peer.conn.streamsOpen).toBe(0)
  })

  it('delivers several streams at once: send() messages and a closed writer, written just before close()', async () => {
    serverReads = true
    const { conn, peer } = await dial()
    const messages = Array.from({ length: 8 }, (_, i) => pattern(256 * 1024 + i, 200 + i))
    await Promise.all(messages.map((m) => conn.send(m)))
    // A writer closed in the same turn as close(): its write and FIN still go out.
    const last = pattern(3 * 1024 * 1024, 77)
    const s = conn.openStream({ unidirectional: true })
    const w = s.writable!.getWriter()
    const wrote = w.write(last)
    const closedWriter = w.close()
    const closing = conn.close(7, 'bye')
    await wrote
    await closedWriter
    // Later writes are refused with a typed error, on new and existing streams.
    expect((await failure(() => conn.openStream())).code).toBe('STOQ_ERR_CLOSED')
    expect((await failure(() => conn.send('late'))).code).toBe('STOQ_ERR_CLOSED')
    expect((await closing).code).toBe(7)

    expect((await peer.closed).code).toBe(7)
    const got = (await Promise.all(peer.streams)) as Uint8Array[]
    const want = [...messages, last].map((m) => sha256(m)).sort()
    expect(got.map((g) => (g instanceof Uint8Array ? sha256(g) : String(g))).sort()).toEqual(want)
    expect(peer.conn.streamsOpen).toBe(0)
  })

  it('refuses writes on an idle open stream once closing, with StoqClosedError', async () => {
    serverReads = false
    const { conn } = await dial()
    // A stream blocked by the peer's window keeps the graceful phase going.
    const blocked = conn.send(pattern(4 * 1024 * 1024, 4))
    blocked.catch(() => {})
    await waitFor(() => conn.stats().streamBytesWritten >= 512 * 1024, 'the first window to be sent')
    const s = conn.openStream({ unidirectional: true })
    const w = s.writable!.getWriter()
    await w.write(pattern(1000, 5))
    const closing = conn.close(0, 'done', { timeoutMs: 60_000 })
    // From the next turn on the idle stream is closed for writes, the connection not yet.
    await new Promise((r) => setTimeout(r, 5))
    expect(conn.isClosed).toBe(false)
    const err = await failure(() => w.write(pattern(10, 6)))
    expect(err.code).toBe('STOQ_ERR_CLOSED')
    expect((await failure(() => conn.sendDatagram('late'))).code).toBe('STOQ_ERR_CLOSED')
    conn.closeNow(0, 'done')
    await closing
    expect((await failure(() => blocked)).code).toBe('STOQ_ERR_CONNECTION_CLOSED')
  })

  it('gives up after timeoutMs when the peer never reads, and closes anyway', async () => {
    serverReads = false
    const { conn, peer } = await dial()
    // More than the peer's 1 MiB stream window: send() itself would wait for credit.
    const data = pattern(4 * 1024 * 1024, 3)
    const sending = conn.send(data)
    sending.catch(() => {})
    // Let the writer run into the window.
    await waitFor(() => conn.stats().streamBytesWritten >= 512 * 1024, 'the first window to be sent')
    const info = await conn.close(9, 'giving up', { timeoutMs: 300 })
    // Ended by our CONNECTION_CLOSE after the timeout, not by the idle timeout (30 s).
    expect(info).toMatchObject({ remote: false, app: true, code: 9, idleTimeout: false })
    // The pending send() fails with the connection's typed error.
    const err = await failure(() => sending)
    expect(err.code).toBe('STOQ_ERR_CONNECTION_CLOSED')
    expect(conn.stats().streamBytesWritten).toBeLessThan(data.length)
    expect((await peer.closed).code).toBe(9)
    expect(conn.streamsOpen).toBe(0)
  })

  it('closes at once with timeoutMs 0 and validates the options', async () => {
    serverReads = true
    const { conn, peer } = await dial()
    expect((await failure(() => conn.close(0, '', { timeoutMs: -1 }))).code).toBe('STOQ_ERR_INVALID_ARG')
    expect((await failure(() => conn.close(0, '', { timeoutMs: 1.5 }))).code).toBe('STOQ_ERR_INVALID_ARG')
    expect((await failure(() => conn.close(0, '', null as never))).code).toBe('STOQ_ERR_INVALID_ARG')
    const info = await conn.close(5, 'now', { timeoutMs: 0 })
    expect(info.code).toBe(5)
    expect((await peer.closed).code).toBe(5)
  })

  it('closeNow() ends a graceful close() under way', async () => {
    serverReads = false
    const { conn, peer } = await dial()
    const sending = conn.send(pattern(4 * 1024 * 1024, 8))
    sending.catch(() => {})
    await waitFor(() => conn.stats().streamBytesWritten >= 512 * 1024, 'the first window to be sent')
    // The graceful phase would wait for a minute: closeNow() cuts it short.
    const closing = conn.close(1, 'graceful', { timeoutMs: 60_000 })
    await new Promise((r) => setTimeout(r, 20))
    conn.closeNow(2, 'now')
    const info = await closing
    expect(info.code).toBe(2)
    expect((await peer.closed).code).toBe(2)
  })

  it('a signal ends the graceful phase: close() sends CONNECTION_CLOSE when it aborts, and leaves no listener', async () => {
    serverReads = false
    const { conn, peer } = await dial()
    const sending = conn.send(pattern(4 * 1024 * 1024, 9))
    sending.catch(() => {})
    await waitFor(() => conn.stats().streamBytesWritten >= 512 * 1024, 'the first window to be sent')
    // Without the abort the graceful phase would wait a minute for data the peer never reads.
    const ac = new AbortController()
    const closing = conn.close(3, 'aborted wait', { timeoutMs: 60_000, signal: ac.signal })
    expect(getEventListeners(ac.signal, 'abort').length).toBe(1)
    await new Promise((r) => setTimeout(r, 20))
    expect(conn.isClosed).toBe(false)
    ac.abort()
    const info = await closing
    expect(info).toMatchObject({ remote: false, app: true, code: 3, idleTimeout: false })
    expect((await peer.closed).code).toBe(3)
    expect(getEventListeners(ac.signal, 'abort').length).toBe(0)
    expect((await failure(() => conn.close(0, '', { signal: 'no' as never }))).code).toBe('STOQ_ERR_INVALID_ARG')
  })

  it('an already aborted signal closes at once; a signal that never aborts is let go when the close is done', async () => {
    serverReads = true
    const first = await dial()
    const info = await first.conn.close(6, 'at once', { timeoutMs: 60_000, signal: AbortSignal.abort() })
    expect(info.code).toBe(6)
    expect((await first.peer.closed).code).toBe(6)
    const second = await dial()
    const ac = new AbortController()
    expect((await second.conn.close(7, 'done', { signal: ac.signal })).code).toBe(7)
    expect(getEventListeners(ac.signal, 'abort').length).toBe(0)
  })
})
