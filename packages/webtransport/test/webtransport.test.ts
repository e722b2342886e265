import { getEventListeners } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  FrameParser,
  H3_NO_ERROR,
  H3_REQUEST_REJECTED,
  SETTINGS_ENABLE_CONNECT_PROTOCOL,
  SETTINGS_ENABLE_WEBTRANSPORT,
  SETTINGS_H3_DATAGRAM,
  SETTINGS_QPACK_BLOCKED_STREAMS,
  SETTINGS_QPACK_MAX_TABLE_CAPACITY,
  STREAM_TYPE_CONTROL,
  decodeFieldSection,
  encodeFieldSection,
  encodeGoawayFrame,
  encodeHeadersFrame,
  encodeSettingsFrame,
  encodeVarint,
  encodeWebTransportBidiPreface,
  encodeWebTransportUniPreface,
  encodeHttpDatagram,
  type FrameParserEvent,
  type VarInt,
} from '@stoq/h3'
import type { CloseInfo } from '@stoq/interface'
import { createEndpoint, type QuicStream } from '@stoq/transport-core'
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
import { pattern, readAll, sha256Hex, waitFor } from '@stoq/compliance-tests'
import { startEchoServer, urlFor } from './helpers.js'

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
        await waitFor(() => serverSessions.length === before + 1)
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
        expect(sha256Hex(got)).toBe(sha256Hex(data))
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
        expect(sha256Hex(got)).toBe(sha256Hex(data))
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
        await waitFor(() => serverSessions.at(-1)?.id === session.id && !serverSessions.at(-1)!.isClosed)
        const peer = serverSessions.at(-1)!
        const info = await session.close({ code: 4242, reason: 'done here ✓' })
        expect(info).toEqual({ code: 4242, reason: 'done here ✓', remote: false })
        expect(await peer.closed).toEqual({ code: 4242, reason: 'done here ✓', remote: true })
      })

      it('delivers the close code and reason to the peer (server closes)', async () => {
        const session = await connect()
        await waitFor(() => serverSessions.at(-1)?.id === session.id && !serverSessions.at(-1)!.isClosed)
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
            expect(sha256Hex(await got)).toBe(sha256Hex(data))
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
          await gw.write(
            encodeHeadersFrame(
              encodeFieldSection([
                [':method', 'GET'],
                [':scheme', 'https'],
                [':authority', 'localhost'],
                [':path', '/'],
              ]),
            ),
          )
          await gw.close()
          const getFields = decodeFieldSection(
            (new FrameParser().push(await readAll(get.readable!)).find((f) => f.kind === 'headers') as { fieldSection: Uint8Array }).fieldSection,
          )
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
          await waitFor(() => serverConn() !== undefined)
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
          await waitFor(() => conn.stats().rejectedStreams - before.rejectedStreams >= n - limit)
          expect(conn.stats().bufferedStreams).toBeLessThanOrEqual(limit)
          expect(conn.stats().rejectedStreams - before.rejectedStreams).toBe(n - limit)
          // The real session still works.
          const st = session.openStream()
          const w = st.writable!.getWriter()
          const data = pattern(10_000, 99)
          const got = readAll(st.readable!)
          await w.write(data)
          await w.close()
          expect(sha256Hex(await got)).toBe(sha256Hex(data))
          // Closing the connection releases the buffered streams.
          await session.close()
        } finally {
          await client.close()
        }
        await waitFor(() => server.stats().bufferedStreams === 0)
      })
    })
  }
}

/** Echo `size` bytes on a new bidirectional stream of `session`; true when they came back intact. */
async function echoes(session: WebTransportSession, size: number, seed: number): Promise<boolean> {
  const data = pattern(size, seed)
  const st = session.openStream()
  const w = st.writable!.getWriter()
  const got = readAll(st.readable!)
  await w.write(data)
  await w.close()
  return sha256Hex(await got) === sha256Hex(data)
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0))
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

function indexOfBytes(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer
    return i
  }
  return -1
}

for (const engine of ENGINES) {
  for (const host of ['127.0.0.1', '::1'] as const) {
    describe(`${engine} over ${host}: GOAWAY and drain`, () => {
      const clientFor = (server: WebTransportServer) =>
        WebTransportClient.connect(urlFor(server, host), { serverCertificateHashes: cert.serverCertificateHashes, engine })

      it('drain(): GOAWAY reaches the client, the open session keeps working, new sessions are refused, the drain ends with the session', async () => {
        const serverSessions: WebTransportSession[] = []
        const server = await startEchoServer(cert, host, engine, serverSessions)
        const client = await clientFor(server)
        try {
          const session = await client.openSession('/echo')
          await waitFor(() => serverSessions.length === 1)
          const peer = serverSessions[0]!
          const serverConn = server.connections[0]!
          const goaway = new Promise<VarInt>((resolve) => client.connection.once('goaway', resolve))
          const clientClosed = new Promise<CloseInfo>((resolve) => client.connection.once('close', resolve))
          let drained = false
          const drain = server.drain({ timeoutMs: 60_000 }).then(() => {
            drained = true
          })
          expect(server.isDraining).toBe(true)
          const id = Number(await goaway)
          expect(id % 4).toBe(0)
          expect(id).toBeGreaterThan(session.id)
          expect(serverConn.goawaySent).toBe(id)
          expect(Number(client.connection.goaway)).toBe(id)
          // The session opened before GOAWAY goes on: a stream opened after it still echoes.
          expect(await echoes(session, 50_000, 21)).toBe(true)
          // No new session on this connection: a typed error, without sending anything.
          const err = await client.openSession('/echo').then(
            () => null,
            (e: unknown) => e,
          )
          expect(err).toBeInstanceOf(StoqWebTransportError)
          expect((err as StoqWebTransportError).kind).toBe('closed')
          expect((err as StoqWebTransportError).code).toBe('STOQ_ERR_CLOSED')
          expect(session.isClosed).toBe(false)
          expect(drained).toBe(false)
          expect(server.connections).toHaveLength(1)
          // The client ends its session: the drain finishes and closes the connection.
          await session.close({ code: 5, reason: 'finished' })
          await drain
          expect(await peer.closed).toEqual({ code: 5, reason: 'finished', remote: true })
          const info = await clientClosed
          expect(info.remote).toBe(true)
          expect(info.code).toBe(H3_NO_ERROR)
          expect(client.connection.isClosed).toBe(true)
          expect(server.connections).toHaveLength(0)
          expect(server.isDraining).toBe(true)
          // Drained means closed.
          await expect(server.drain()).resolves.toBeUndefined()
        } finally {
          await client.close()
          await server.close()
        }
      })

      it('drain(): a session that never ends is closed when timeoutMs passes', async () => {
        const serverSessions: WebTransportSession[] = []
        const server = await startEchoServer(cert, host, engine, serverSessions)
        const client = await clientFor(server)
        try {
          const session = await client.openSession('/echo')
          await waitFor(() => serverSessions.length === 1)
          const peer = serverSessions[0]!
          const goaway = new Promise<VarInt>((resolve) => client.connection.once('goaway', resolve))
          await server.drain({ timeoutMs: 300 })
          // The server ended the session itself (code 0, its drain reason), then the connection.
          expect(await peer.closed).toEqual({ code: 0, reason: 'server draining', remote: false })
          expect(server.connections).toHaveLength(0)
          const clientInfo = await session.closed
          expect(clientInfo.remote).toBe(true)
          await waitFor(() => client.connection.isClosed)
          expect(Number(await goaway) % 4).toBe(0)
        } finally {
          await client.close()
          await server.close()
        }
      })

      it('drain({ signal }): an abort ends the wait for a session that never ends; no listener is left', async () => {
        const serverSessions: WebTransportSession[] = []
        const server = await startEchoServer(cert, host, engine, serverSessions)
        const client = await clientFor(server)
        try {
          const session = await client.openSession('/echo')
          await waitFor(() => serverSessions.length === 1)
          const peer = serverSessions[0]!
          const ac = new AbortController()
          // Without the abort the drain would wait a minute for the open session.
          const drained = server.drain({ timeoutMs: 60_000, signal: ac.signal })
          await client.connection.peerSettings
          expect(peer.isClosed).toBe(false)
          ac.abort()
          await drained
          expect(await peer.closed).toEqual({ code: 0, reason: 'server draining', remote: false })
          expect((await session.closed).remote).toBe(true)
          expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0)
        } finally {
          await client.close()
          await server.close()
        }
      })

      it('drain() with no session closes the connection at once; close() cuts a drain short', async () => {
        const server = await startEchoServer(cert, host, engine)
        const idle = await clientFor(server)
        try {
          await idle.connection.peerSettings
          await waitFor(() => server.connections.length === 1)
          await server.drain({ timeoutMs: 60_000 })
          await waitFor(() => idle.connection.isClosed)
        } finally {
          await idle.close()
          await server.close()
        }
        const server2 = await startEchoServer(cert, host, engine)
        const client = await clientFor(server2)
        try {
          const session = await client.openSession('/echo')
          const drain = server2.drain({ timeoutMs: 60_000 })
          await server2.close()
          await drain
          expect((await session.closed).remote).toBe(true)
          expect(server2.connections).toHaveLength(0)
        } finally {
          await client.close()
        }
        await expect(server2.drain({ timeoutMs: -1 })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
      })

      it('a CONNECT sent after the server decided on GOAWAY fails with a typed error', async () => {
        const server = await startEchoServer(cert, host, engine)
        const client = await clientFor(server)
        try {
          const first = await client.openSession('/echo')
          await waitFor(() => server.connections.length === 1 && server.connections[0]!.sessions.length === 1)
          const serverConn = server.connections[0]!
          // GOAWAY without drain: the ID is fixed now, so this CONNECT is at or above it.
          const id = serverConn.goAway()
          expect(id).toBeGreaterThan(first.id)
          const err = await client.openSession('/echo').then(
            () => null,
            (e: unknown) => e,
          )
          // Either the server reset it (H3_REQUEST_REJECTED) or GOAWAY arrived first and failed it: typed either way.
          expect(err).toBeInstanceOf(StoqWebTransportError)
          expect((err as StoqWebTransportError).kind).toBe('closed')
          expect(serverConn.sessions).toHaveLength(1)
          expect(await echoes(first, 10_000, 22)).toBe(true)
          expect(serverConn.goAway()).toBe(id)
          await first.close()
        } finally {
          await client.close()
          await server.close()
        }
      })

      it('records a GOAWAY from the client (push ID) and changes nothing else', async () => {
        const server = await startEchoServer(cert, host, engine)
        const client = await clientFor(server)
        try {
          const a = await client.openSession('/echo')
          await waitFor(() => server.connections.length === 1)
          const serverConn = server.connections[0]!
          const got = new Promise<VarInt>((resolve) => serverConn.once('goaway', resolve))
          expect(client.connection.goAway()).toBe(0)
          expect(Number(await got)).toBe(0)
          expect(Number(serverConn.goaway)).toBe(0)
          expect(serverConn.goawaySent).toBeNull()
          // Sessions go on and new ones open: a client GOAWAY only refuses pushes.
          expect(await echoes(a, 10_000, 23)).toBe(true)
          const b = await client.openSession('/echo')
          expect(await echoes(b, 10_000, 24)).toBe(true)
          expect(serverConn.isClosed).toBe(false)
          await a.close()
          await b.close()
        } finally {
          await client.close()
          await server.close()
        }
      })

      it('sends GOAWAY with a client bidi stream ID above the last CONNECT and rejects CONNECTs at or above it (raw HTTP/3)', async () => {
        const server = await startEchoServer(cert, host, engine)
        const endpoint = await createEndpoint({ host: host === '::1' ? '::' : '0.0.0.0', engine })
        try {
          const quic = await endpoint.connect({ host, port: server.address.port, alpn: ['h3'], pin: cert.sha256Hex })
          // The server's control stream, raw.
          const controlBytes: Uint8Array[] = []
          let controlFrames: FrameParserEvent[] = []
          quic.on('stream', (qs: QuicStream) => {
            if (qs.bidirectional) return
            void (async () => {
              const chunks: Uint8Array[] = []
              try {
                for await (const c of qs.readable!) {
                  chunks.push(c)
                  const all = concat(chunks)
                  if (all[0] === STREAM_TYPE_CONTROL) {
                    controlBytes.length = 0
                    controlBytes.push(all)
                    controlFrames = new FrameParser().push(all.subarray(1))
                  }
                }
              } catch {
                // Connection closed.
              }
            })()
          })
          const control = quic.openStream({ unidirectional: true }).writable!.getWriter()
          await control.write(
            concat([
              encodeVarint(STREAM_TYPE_CONTROL),
              encodeSettingsFrame([
                [SETTINGS_QPACK_MAX_TABLE_CAPACITY, 0],
                [SETTINGS_QPACK_BLOCKED_STREAMS, 0],
                [SETTINGS_H3_DATAGRAM, 1],
                [SETTINGS_ENABLE_WEBTRANSPORT, 1],
              ]),
            ]),
          )
          const connectFields = encodeFieldSection([
            [':method', 'CONNECT'],
            [':protocol', 'webtransport'],
            [':scheme', 'https'],
            [':authority', 'localhost'],
            [':path', '/echo'],
            ['sec-webtransport-http3-draft02', '1'],
          ])
          /** Sends a CONNECT; resolves with the stream once the response HEADERS came (or rejects with the read error). */
          const sendConnect = async (): Promise<{ qs: QuicStream; status: string }> => {
            const qs = quic.openStream()
            const w = qs.writable!.getWriter()
            await w.write(encodeHeadersFrame(connectFields))
            w.releaseLock()
            const reader = qs.readable!.getReader()
            const parser = new FrameParser()
            for (;;) {
              const r = await reader.read()
              if (r.done) throw new Error('CONNECT stream ended without HEADERS')
              const h = parser.push(r.value).find((f) => f.kind === 'headers')
              if (h !== undefined) {
                reader.releaseLock()
                const status = decodeFieldSection((h as { fieldSection: Uint8Array }).fieldSection).find(([n]) => n === ':status')![1]
                return { qs, status }
              }
            }
          }
          const first = await sendConnect()
          expect(first.status).toBe('200')
          const second = await sendConnect()
          expect(second.status).toBe('200')
          await waitFor(() => server.connections.length === 1 && server.connections[0]!.sessions.length === 2)
          const lastAccepted = Math.max(first.qs.id, second.qs.id)
          const drain = server.drain({ timeoutMs: 60_000 })
          await waitFor(() => controlFrames.some((f) => f.kind === 'goaway'))
          expect(controlFrames[0]!.kind).toBe('settings')
          const frame = controlFrames.find((f) => f.kind === 'goaway') as { kind: 'goaway'; id: VarInt }
          const id = Number(frame.id)
          // A client-initiated bidirectional stream ID (low two bits 00) above the last accepted CONNECT.
          expect(id & 3).toBe(0)
          expect(id).toBeGreaterThan(lastAccepted)
          expect(id).toBe(lastAccepted + 4)
          // Byte for byte as encodeGoawayFrame writes it (type 0x07, length, varint ID).
          expect(indexOfBytes(controlBytes[0]!, encodeGoawayFrame(id))).toBeGreaterThan(0)
          // A new CONNECT (stream ID >= the GOAWAY ID) is reset with H3_REQUEST_REJECTED.
          const refused = await sendConnect().then(
            () => null,
            (e: unknown) => e,
          )
          expect(refused).toMatchObject({ code: 'STOQ_ERR_STREAM_RESET', data: { code: H3_REQUEST_REJECTED } })
          expect(server.connections[0]!.sessions).toHaveLength(2)
          // Ending both sessions (FIN on their CONNECT streams) ends the drain and the connection.
          const closed = quic.closed
          for (const s of [first, second]) await s.qs.writable!.getWriter().close()
          await drain
          const info = await closed
          expect(info.code).toBe(H3_NO_ERROR)
          expect(info.remote).toBe(true)
        } finally {
          await endpoint.close()
          await server.close()
        }
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

  it('names the one setting a server lacks: extended CONNECT offered, WebTransport not', async () => {
    // A bare HTTP/3 server: its control stream offers ENABLE_CONNECT_PROTOCOL only.
    const server = await createEndpoint({ host: '127.0.0.1', engine: 'quiche', server: { cert: cert.cert, key: cert.key, alpn: ['h3'] } })
    server.on('connection', (conn) => {
      const w = conn.openStream({ unidirectional: true }).writable!.getWriter()
      w.write(Buffer.concat([encodeVarint(STREAM_TYPE_CONTROL), encodeSettingsFrame([[SETTINGS_ENABLE_CONNECT_PROTOCOL, 1]])])).catch(() => {})
    })
    try {
      const err = await connectWebTransport(`https://127.0.0.1:${server.address.port}/`, {
        serverCertificateHashes: cert.serverCertificateHashes,
        engine: 'quiche',
      }).then(
        () => null,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(StoqWebTransportError)
      expect(err).toMatchObject({ kind: 'unsupported', data: { kind: 'unsupported', missingSettings: ['SETTINGS_ENABLE_WEBTRANSPORT'] } })
      expect((err as Error).message).toMatch(/SETTINGS_ENABLE_WEBTRANSPORT/)
      expect((err as Error).message).not.toMatch(/SETTINGS_ENABLE_CONNECT_PROTOCOL/)
    } finally {
      await server.close()
    }
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
