import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEndpoint, StoqError, type Endpoint, type QuicConnection, type CloseInfo } from '../src/index.js'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { echoOnce, pattern, readAll, serveEcho, sha256 } from './fixtures/echo.js'

let pki: TestPki

beforeAll(async () => {
  pki = await testPki()
})

for (const family of ['127.0.0.1', '::1'] as const) {
  describe(`over ${family}`, () => {
    let server: Endpoint
    let client: Endpoint
    let conn: QuicConnection
    const serverConns: QuicConnection[] = []

    beforeAll(async () => {
      server = await createEndpoint({ host: family, server: { cert: pki.server.cert, key: pki.server.key } })
      server.on('connection', (c) => {
        serverConns.push(c)
        serveEcho(c)
      })
      client = await createEndpoint({ host: family })
      const accepted = new Promise((resolve) => server.once('connection', resolve))
      conn = await client.connect({ host: family, port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      await accepted
    })

    afterAll(async () => {
      await client?.close()
      await server?.close()
    })

    it('completes the handshake with ALPN stoq/1 and SNI', () => {
      expect(conn.established).toBe(true)
      expect(conn.alpn).toBe('stoq/1')
      expect(serverConns[0]?.serverName).toBe('localhost')
      expect(serverConns[0]?.remoteAddress.family).toBe(family === '::1' ? 'IPv6' : 'IPv4')
      expect(conn.remoteAddress.address).toBe(family)
      expect(conn.peerCertificates.length).toBeGreaterThan(0)
    })

    it('echoes 8 MiB on one stream, verified by hash', async () => {
      const data = pattern(8 * 1024 * 1024, 7)
      const back = await echoOnce(conn.openStream(), data)
      expect(back.length).toBe(data.length)
      expect(sha256(back)).toBe(sha256(data))
    })

    it('echoes on 1000 concurrent streams', async () => {
      const results = await Promise.all(
        Array.from({ length: 1000 }, async (_, i) => {
          const data = pattern(1000 + i, i + 1)
          // Waiting for credit: a quinn peer raises its limit (128 at first) as streams are used.
          const back = await echoOnce(await conn.createStream({ timeoutMs: 20_000 }), data)
          return sha256(back) === sha256(data)
        }),
      )
      expect(results.filter(Boolean).length).toBe(1000)
    })

    it('echoes datagrams', async () => {
      const received = new Set<string>()
      const onDatagram = (d: Uint8Array): void => {
        received.add(Buffer.from(d).toString())
      }
      conn.on('datagram', onDatagram)
      const want = Array.from({ length: 20 }, (_, i) => `datagram-${i}`)
      // Datagrams are unreliable: resend missing ones for a few rounds.
      for (let round = 0; round < 10 && received.size < want.length; round++) {
        for (const d of want) if (!received.has(d)) conn.sendDatagram(d)
        await new Promise((r) => setTimeout(r, 100))
      }
      conn.off('datagram', onDatagram)
      expect([...received].sort()).toEqual([...want].sort())
      expect(conn.maxDatagramSize).toBeGreaterThan(1000)
    })

    it('lets the server open a bidirectional stream to the client', async () => {
      conn.once('stream', (cs) => {
        expect(cs.bidirectional).toBe(true)
        expect(cs.local).toBe(false)
        // The client echoes what the server sent.
        cs.readable!.pipeTo(cs.writable!).catch(() => {})
      })
      const s = serverConns[0]!.openStream()
      expect(s.local).toBe(true)
      const data = pattern(200_000, 13)
      expect(sha256(await echoOnce(s, data))).toBe(sha256(data))
    })

    it('carries unidirectional streams both ways', async () => {
      const data = pattern(100_000, 3)
      const incoming = new Promise<Uint8Array>((resolve) => {
        conn.once('stream', (s) => {
          expect(s.bidirectional).toBe(false)
          expect(s.writable).toBeNull()
          resolve(readAll(s.readable!))
        })
      })
      const out = conn.openStream({ unidirectional: true })
      expect(out.readable).toBeNull()
      const w = out.writable!.getWriter()
      await w.write(data)
      await w.close()
      expect(sha256(await incoming)).toBe(sha256(data))
    })
  })
}

describe('connection lifecycle', () => {
  let server: Endpoint
  let client: Endpoint

  beforeAll(async () => {
    server = await createEndpoint({
      host: '::',
      server: { cert: pki.server.cert, key: pki.server.key },
      transport: { maxIdleTimeoutMs: 400 },
    })
    client = await createEndpoint({ transport: { maxIdleTimeoutMs: 400 } })
  })

  afterAll(async () => {
    await client?.close()
    await server?.close()
  })

  it('delivers close code and reason to the peer', async () => {
    const peerClosed = new Promise<CloseInfo>((resolve) => {
      server.once('connection', (c) => c.once('close', resolve))
    })
    const conn = await client.connect({ host: '::1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const local = await conn.close(4242, 'shutting down for maintenance')
    expect(local).toMatchObject({ remote: false, app: true, code: 4242 })
    const info = await peerClosed
    expect(info).toMatchObject({ remote: true, app: true, code: 4242, reason: 'shutting down for maintenance' })
  })

  it('closes an idle connection with a typed idle-timeout on both sides', async () => {
    const serverSide = new Promise<CloseInfo>((resolve) => {
      server.once('connection', (c) => c.once('close', resolve))
    })
    const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const info = await conn.closed
    expect(info.idleTimeout).toBe(true)
    expect((await serverSide).idleTimeout).toBe(true)
    let error: unknown
    try {
      conn.openStream()
    } catch (err) {
      error = err
    }
    expect(StoqError.isInstance(error)).toBe(true)
    expect((error as StoqError).code).toBe('STOQ_ERR_CLOSED')
  })

  it('keeps an idle connection alive with keep-alive', async () => {
    const conn = await client.connect({
      host: '127.0.0.1',
      port: server.address.port,
      ca: pki.ca,
      serverName: 'localhost',
      keepAliveMs: 100,
    })
    await new Promise((r) => setTimeout(r, 1200))
    expect(conn.established).toBe(true)
    await conn.close()
  })

  it('reaches a dual-stack server over IPv4 and IPv6', async () => {
    const v4 = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const v6 = await client.connect({ host: '::1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    expect(v4.remoteAddress).toMatchObject({ address: '127.0.0.1', family: 'IPv4' })
    expect(v6.remoteAddress).toMatchObject({ address: '::1', family: 'IPv6' })
    await Promise.all([v4.close(), v6.close()])
  })

  it('resolves host names (localhost), IPv6 first', async () => {
    const conn = await client.connect({ host: 'localhost', port: server.address.port, ca: pki.ca })
    expect(conn.established).toBe(true)
    await conn.close()
  })
})
