import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  FrameParser,
  decodeFieldSection,
  encodeFieldSection,
  encodeHeadersFrame,
  encodeWebTransportBidiPreface,
  encodeWebTransportUniPreface,
  encodeHttpDatagram,
} from '@stoq/h3'
import {
  StoqWebTransportError,
  WebTransportClient,
  connectWebTransport,
  createWebTransportCertificate,
  type WebTransportCertificate,
  type WebTransportServer,
  type WebTransportSession,
  type WebTransportStream,
} from '../src/index.js'
import { eventually, pattern, readAll, sha256, startEchoServer, urlFor } from './helpers.js'

let cert: WebTransportCertificate

beforeAll(async () => {
  cert = await createWebTransportCertificate()
})

const ENGINES = ['quinn', 'quiche'] as const

for (const engine of ENGINES) {
  for (const host of ['127.0.0.1', '::1'] as const) {
    describe(`${engine} over ${host}`, () => {
      let server: WebTransportServer
      const serverSessions: WebTransportSession[] = []

      beforeAll(async () => {
        server = await startEchoServer(cert, host, engine, serverSessions)
      })
      afterAll(async () => {
        await server?.close()
      })

      const connect = (path = '/echo') =>
        connectWebTransport(urlFor(server, host, path), { serverCertificateHashes: cert.serverCertificateHashes, engine, origin: 'https://example.test' })

      it('completes the handshake', async () => {
        const before = serverSessions.length
        const session = await connect()
        expect(session.path).toBe('/echo')
        expect(session.headers).toContainEqual(['sec-webtransport-http3-draft', 'draft02'])
        await eventually(() => serverSessions.length === before + 1)
        const peer = serverSessions.at(-1)!
        expect(peer.path).toBe('/echo')
        expect(peer.origin).toBe('https://example.test')
        expect(peer.id).toBe(session.id)
        expect(session.connection.alpn).toBe('h3')
        expect(server.endpoint.stats().engine).toBe(engine)
        await session.close()
        await peer.closed
      })

      it('echoes 1 MiB on a bidirectional stream byte for byte', async () => {
        const session = await connect()
        const data = pattern(1024 * 1024, 7)
        const stream = session.openStream()
        const w = stream.writable!.getWriter()
        const echoed = readAll(stream.readable!)
        for (let at = 0; at < data.length; at += 50_000) await w.write(data.subarray(at, at + 50_000))
        await w.close()
        const got = await echoed
        expect(got.length).toBe(data.length)
        expect(sha256(got)).toBe(sha256(data))
        await session.close()
      })

      it('carries unidirectional streams both ways', async () => {
        const session = await connect()
        const incoming = new Promise<WebTransportStream>((resolve) => session.once('stream', resolve))
        const data = pattern(100_000, 3)
        const out = session.openStream({ unidirectional: true })
        expect(out.readable).toBeNull()
        const w = out.writable!.getWriter()
        await w.write(data)
        await w.close()
        const back = await incoming
        expect(back.bidirectional).toBe(false)
        expect(back.writable).toBeNull()
        const got = await readAll(back.readable!)
        expect(sha256(got)).toBe(sha256(data))
        await session.close()
      })

      it('exchanges 5 datagrams each way', async () => {
        const session = await connect()
        const peer = serverSessions.at(-1)!
        const serverGot = new Set<string>()
        peer.on('datagram', (d) => serverGot.add(Buffer.from(d).toString()))
        const clientGot = new Set<string>()
        session.on('datagram', (d) => clientGot.add(Buffer.from(d).toString()))
        expect(session.maxDatagramSize).toBeGreaterThan(100)
        const all = [0, 1, 2, 3, 4].map((i) => `datagram-${i}`)
        // Datagrams are unreliable: resend what has not come back, for a few rounds.
        for (let round = 0; round < 20 && clientGot.size < all.length; round++) {
          for (const d of all) if (!clientGot.has(d)) session.sendDatagram(d)
          await new Promise((r) => setTimeout(r, 100))
        }
        expect([...clientGot].sort()).toEqual(all)
        expect([...serverGot].sort()).toEqual(all)
        await session.close()
      })

      it('delivers the close code and reason to the peer (client closes)', async () => {
        const session = await connect()
        await eventually(() => serverSessions.at(-1)?.id === session.id && !serverSessions.at(-1)!.isClosed)
        const peer = serverSessions.at(-1)!
        const info = await session.close({ code: 4242, reason: 'done here ✓' })
        expect(info).toEqual({ code: 4242, reason: 'done here ✓', remote: false })
        expect(await peer.closed).toEqual({ code: 4242, reason: 'done here ✓', remote: true })
      })

      it('delivers the close code and reason to the peer (server closes)', async () => {
        const session = await connect()
        await eventually(() => serverSessions.at(-1)?.id === session.id && !serverSessions.at(-1)!.isClosed)
        const peer = serverSessions.at(-1)!
        await peer.close({ code: 7, reason: 'server says bye' })
        expect(await session.closed).toEqual({ code: 7, reason: 'server says bye', remote: true })
        expect(() => session.openStream()).toThrow(/closed/)
      })

      it('runs two sessions on one connection', async () => {
        const client = await WebTransportClient.connect(urlFor(server, host), { serverCertificateHashes: cert.serverCertificateHashes, engine })
        try {
          const a = await client.openSession('/echo')
          const b = await client.openSession('/echo?second')
          expect(a.id).not.toBe(b.id)
          expect(a.connection).toBe(b.connection)
          expect(client.endpoint.stats().engine).toBe(engine)
          const echo = async (s: WebTransportSession, seed: number) => {
            const data = pattern(70_000, seed)
            const st = s.openStream()
            const w = st.writable!.getWriter()
            const got = readAll(st.readable!)
            await w.write(data)
            await w.close()
            expect(sha256(await got)).toBe(sha256(data))
          }
          await Promise.all([echo(a, 11), echo(b, 12)])
          await a.close({ code: 1, reason: 'a' })
          // b survives a's end.
          await echo(b, 13)
          const serverConn = server.connections.find((c) => c.sessions.some((s) => s.id === b.id))
          expect(serverConn).toBeDefined()
          await b.close({ code: 2, reason: 'b' })
        } finally {
          await client.close()
        }
      })

      it('refuses a wrong path with 404 as a typed error', async () => {
        const err = await connect('/nope').then(
          () => null,
          (e: unknown) => e,
        )
        expect(err).toBeInstanceOf(StoqWebTransportError)
        expect((err as StoqWebTransportError).kind).toBe('refused')
        expect((err as StoqWebTransportError).status).toBe(404)
      })

      it('refuses a malformed CONNECT (no :protocol) with 400', async () => {
        const client = await WebTransportClient.connect(urlFor(server, host), { serverCertificateHashes: cert.serverCertificateHashes, engine })
        try {
          await client.connection.peerSettings
          const qs = client.connection.quic.openStream()
          const w = qs.writable!.getWriter()
          await w.write(
            encodeHeadersFrame(
              encodeFieldSection([
                [':method', 'CONNECT'],
                [':scheme', 'https'],
                [':authority', 'localhost'],
                [':path', '/echo'],
              ]),
            ),
          )
          await w.close()
          const bytes = await readAll(qs.readable!)
          const parser = new FrameParser()
          const frames = parser.push(bytes)
          const headers = frames.find((f) => f.kind === 'headers')
          expect(headers).toBeDefined()
          const fields = decodeFieldSection((headers as { fieldSection: Uint8Array }).fieldSection)
          expect(fields).toContainEqual([':status', '400'])
          // A plain GET is answered too, without breaking the connection.
          const get = client.connection.quic.openStream()
          const gw = get.writable!.getWriter()
          await gw.write(encodeHeadersFrame(encodeFieldSection([[':method', 'GET'], [':scheme', 'https'], [':authority', 'localhost'], [':path', '/']])))
          await gw.close()
          const getFields = decodeFieldSection((new FrameParser().push(await readAll(get.readable!)).find((f) => f.kind === 'headers') as { fieldSection: Uint8Array }).fieldSection)
          expect(getFields).toContainEqual([':status', '404'])
          const s = await client.openSession('/echo')
          await s.close()
        } finally {
          await client.close()
        }
      })

      it('bounds streams and datagrams for unknown sessions', async () => {
        const client = await WebTransportClient.connect(urlFor(server, host), { serverCertificateHashes: cert.serverCertificateHashes, engine })
        try {
          const session = await client.openSession('/echo')
          const quic = client.connection.quic
          const serverConn = () => server.connections.find((c) => c.sessions.some((s) => s.id === session.id))
          await eventually(() => serverConn() !== undefined)
          const conn = serverConn()!
          const before = conn.stats()
          const bogus = 4 * 1000
          const limit = conn.limits.maxBufferedStreams
          const n = limit + 20
          for (let i = 0; i < n; i++) {
            const st = quic.openStream({ unidirectional: i % 2 === 1 })
            const w = st.writable!.getWriter()
            w.write(i % 2 === 1 ? encodeWebTransportUniPreface(bogus) : encodeWebTransportBidiPreface(bogus)).catch(() => {})
            w.write(pattern(1000, i)).catch(() => {})
            w.releaseLock()
          }
          for (let i = 0; i < 10; i++) quic.sendDatagram(encodeHttpDatagram(bogus, new Uint8Array([1, 2, 3])))
          await eventually(() => conn.stats().rejectedStreams - before.rejectedStreams >= n - limit)
          expect(conn.stats().bufferedStreams).toBeLessThanOrEqual(limit)
          expect(conn.stats().rejectedStreams - before.rejectedStreams).toBe(n - limit)
          // The real session still works.
          const st = session.openStream()
          const w = st.writable!.getWriter()
          const data = pattern(10_000, 99)
          const got = readAll(st.readable!)
          await w.write(data)
          await w.close()
          expect(sha256(await got)).toBe(sha256(data))
          // Closing the connection releases the buffered streams.
          await session.close()
        } finally {
          await client.close()
        }
        await eventually(() => server.stats().bufferedStreams === 0)
      })
    })
  }
}

describe('certificates and arguments', () => {
  it('makes a short-lived ECDSA P-256 certificate with its SHA-256', async () => {
    const { X509Certificate, createHash } = await import('node:crypto')
    const c = await createWebTransportCertificate({ days: 10 })
    const x = new X509Certificate(c.cert)
    expect(x.publicKey.asymmetricKeyType).toBe('ec')
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1')
    const span = new Date(x.validTo).getTime() - new Date(x.validFrom).getTime()
    expect(span).toBeLessThanOrEqual(14 * 86_400_000)
    expect(c.sha256Hex).toBe(createHash('sha256').update(x.raw).digest('hex'))
    expect(Buffer.from(c.sha256).toString('hex')).toBe(c.sha256Hex)
    await expect(createWebTransportCertificate({ days: 15 })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
  })

  it('refuses bad URLs and hashes with typed errors', async () => {
    await expect(connectWebTransport('http://127.0.0.1:1/x', { insecure: true })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(connectWebTransport('not a url', { insecure: true })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(
      connectWebTransport('https://127.0.0.1:1/x', { serverCertificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(5) }] }),
    ).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
  })

  it('refuses a server whose certificate hash does not match', async () => {
    const server = await startEchoServer(cert, '127.0.0.1', 'quinn')
    try {
      const other = await createWebTransportCertificate()
      await expect(connectWebTransport(urlFor(server, '127.0.0.1'), { serverCertificateHashes: other.serverCertificateHashes })).rejects.toMatchObject({
        code: 'STOQ_ERR_CERT_PIN',
      })
    } finally {
      await server.close()
    }
  })
})
