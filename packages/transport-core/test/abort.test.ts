import dgram from 'node:dgram'
import { getEventListeners } from 'node:events'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type Endpoint, type QuicConnection } from '../src/index.js'
import { failure, waitFor } from './fixtures/peers.js'

/**
 * `signal` wherever a call can wait (connect, accept, createStream, send): an aborted signal
 * rejects with STOQ_ERR_ABORTED (the reason as `cause`) and releases what the call held; an
 * already-aborted one rejects at once; a call that settles leaves no listener on the signal.
 */

const listeners = (signal: AbortSignal): number => getEventListeners(signal, 'abort').length

describe('AbortSignal on waiting calls', () => {
  let pki: TestPki
  const endpoints: Endpoint[] = []
  const sockets: dgram.Socket[] = []

  beforeAll(async () => {
    pki = await testPki()
  })

  afterEach(async () => {
    for (const ep of endpoints.splice(0)) await ep.destroy()
    for (const s of sockets.splice(0)) s.close()
  })

  async function server(transport: Record<string, number> = {}, setup: (conn: QuicConnection) => void = () => {}): Promise<Endpoint> {
    const ep = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key }, transport })
    endpoints.push(ep)
    ep.on('connection', setup)
    return ep
  }

  async function client(): Promise<Endpoint> {
    const ep = await createEndpoint({ host: '127.0.0.1' })
    endpoints.push(ep)
    return ep
  }

  async function pair(transport: Record<string, number> = {}, setup?: (conn: QuicConnection) => void): Promise<QuicConnection> {
    const s = await server(transport, setup)
    return (await client()).connect({ host: '127.0.0.1', port: s.address.port, ca: pki.ca, serverName: 'localhost' })
  }

  /** A UDP port that swallows every packet: a handshake to it never completes. */
  async function blackHole(): Promise<number> {
    const s = dgram.createSocket('udp4')
    sockets.push(s)
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve))
    return s.address().port
  }

  describe('endpoint.connect', () => {
    it('an already-aborted signal rejects at once and opens no connection', async () => {
      const ep = await client()
      const ac = new AbortController()
      const reason = new Error('not now')
      ac.abort(reason)
      const port = await blackHole()
      const err = await failure(() => ep.connect({ host: '127.0.0.1', port, insecure: true, signal: ac.signal }))
      expect(err).toMatchObject({ code: 'STOQ_ERR_ABORTED', data: { operation: 'connect' }, cause: reason })
      expect(ep.connections).toHaveLength(0)
      expect(listeners(ac.signal)).toBe(0)
    })

    it('an abort during the handshake rejects and closes the half-made connection', async () => {
      const ep = await client()
      const ac = new AbortController()
      const connecting = ep.connect({ host: '127.0.0.1', port: await blackHole(), insecure: true, signal: ac.signal })
      await waitFor(() => ep.connections.length === 1, 'the connection was not created')
      expect(listeners(ac.signal)).toBe(1)
      ac.abort()
      const err = await failure(() => connecting)
      expect(err.code).toBe('STOQ_ERR_ABORTED')
      expect((err.cause as Error).name).toBe('AbortError')
      await waitFor(() => ep.connections.length === 0, 'the aborted connection was not closed')
      expect(listeners(ac.signal)).toBe(0)
    })

    it('a signal that never aborts keeps no listener once connect resolved', async () => {
      const s = await server()
      const ep = await client()
      const ac = new AbortController()
      for (let i = 0; i < 3; i++) {
        const conn = await ep.connect({ host: '127.0.0.1', port: s.address.port, ca: pki.ca, serverName: 'localhost', signal: ac.signal })
        expect(conn.established).toBe(true)
      }
      expect(listeners(ac.signal)).toBe(0)
      expect((await failure(() => ep.connect({ host: '127.0.0.1', port: s.address.port, insecure: true, signal: 'x' as never }))).data).toEqual({
        argument: 'signal',
      })
    })
  })

  describe('conn.accept', () => {
    it('aborted before, aborted during, and served (no listener left)', async () => {
      let serverConn: QuicConnection | null = null
      const conn = await pair({}, (c) => (serverConn = c))
      const before = new AbortController()
      before.abort('early')
      await expect(conn.accept({ signal: before.signal })).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', cause: 'early' })

      const during = new AbortController()
      const waiting = conn.accept({ signal: during.signal })
      expect(listeners(during.signal)).toBe(1)
      during.abort('late')
      await expect(waiting).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', data: { operation: 'accept' }, cause: 'late' })
      expect(listeners(during.signal)).toBe(0)

      const never = new AbortController()
      const served = conn.accept({ signal: never.signal })
      await waitFor(() => serverConn !== null, 'no server connection')
      const w = serverConn!.openStream({ unidirectional: true }).writable!.getWriter()
      await w.write(new Uint8Array([1]))
      await w.close()
      const stream = await served
      expect(stream.id).toBeGreaterThanOrEqual(0)
      expect(listeners(never.signal)).toBe(0)
    })
  })

  describe('conn.createStream', () => {
    it('aborted before, aborted while waiting for credit, and opened (no listener left)', async () => {
      const conn = await pair({ initialMaxStreamsBidi: 1 })
      const before = new AbortController()
      before.abort()
      await expect(conn.createStream({ signal: before.signal })).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', data: { operation: 'createStream' } })

      const never = new AbortController()
      const first = await conn.createStream({ signal: never.signal })
      expect(listeners(never.signal)).toBe(0)

      // The peer's limit (1) is used up: the next one waits.
      const during = new AbortController()
      const waiting = conn.createStream({ signal: during.signal })
      expect(listeners(during.signal)).toBe(1)
      during.abort('gave up')
      await expect(waiting).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', cause: 'gave up' })
      expect(listeners(during.signal)).toBe(0)
      first.reset(0)
    })
  })

  describe('conn.send', () => {
    it('an already-aborted signal rejects at once and opens no stream', async () => {
      const conn = await pair()
      const ac = new AbortController()
      ac.abort('no')
      await expect(conn.send('x', { signal: ac.signal })).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', data: { operation: 'send' }, cause: 'no' })
      expect(conn.streamsOpen).toBe(0)
    })

    it('an abort while waiting for stream credit rejects as send', async () => {
      const conn = await pair({ initialMaxStreamsUni: 0 })
      const ac = new AbortController()
      const sending = conn.send('x', { signal: ac.signal })
      await waitFor(() => listeners(ac.signal) === 1, 'send did not wait')
      ac.abort('late')
      await expect(sending).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', data: { operation: 'send' }, cause: 'late' })
      expect(listeners(ac.signal)).toBe(0)
    })

    it('an abort while a write waits for flow-control credit rejects and resets the stream', async () => {
      // The server never reads: after 4 KiB of stream credit, the write waits.
      const conn = await pair({ initialMaxStreamData: 4096, maxStreamWindow: 4096 })
      const ac = new AbortController()
      const sending = conn.send(new Uint8Array(1024 * 1024), { signal: ac.signal })
      await waitFor(() => conn.counters.streamBytesWritten > 0 || listeners(ac.signal) === 1, 'send did not start')
      await waitFor(() => listeners(ac.signal) === 1, 'send did not wait for credit')
      ac.abort('enough')
      await expect(sending).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', data: { operation: 'send' }, cause: 'enough' })
      expect(listeners(ac.signal)).toBe(0)
    })

    it('a send that completes leaves no listener', async () => {
      const conn = await pair()
      const ac = new AbortController()
      for (let i = 0; i < 3; i++) expect(await conn.send('hello', { signal: ac.signal, confirm: true })).toBe(5)
      expect(listeners(ac.signal)).toBe(0)
    })
  })
})
