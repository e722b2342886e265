import dgram from 'node:dgram'
import crypto from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import { Readable, Writable, type Duplex } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEndpoint, resolveTransport, StoqError, type Endpoint, type QuicConnection, type QuicStream, type TransmitBatch } from '../src/index.js'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { QuicheEngine } from '@stoq/engine-quiche'
import { detectCapabilities, udpIoAuto } from '@stoq/hwaccel'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'

let pki: TestPki

beforeAll(async () => {
  pki = await testPki()
})

async function failure(fn: () => unknown): Promise<StoqError> {
  try {
    await fn()
  } catch (err) {
    expect(StoqError.isInstance(err)).toBe(true)
    return err as StoqError
  }
  throw new Error('expected a typed error')
}

function udpClient(): Promise<dgram.Socket> {
  const sock = dgram.createSocket('udp4')
  return new Promise((resolve) => sock.bind(0, '127.0.0.1', () => resolve(sock)))
}

/** A real client Initial packet, produced by a client-side engine. */
function clientInitial(port: number): Uint8Array {
  const engine = new QuicheEngine({ transport: resolveTransport(undefined) })
  engine.connect(
    { peer: { address: '127.0.0.1', port, family: 'IPv4' }, serverName: 'localhost', alpn: ['stoq/1'], verifyPeer: false },
    { address: '127.0.0.1', port: 1, family: 'IPv4' },
  )
  const batch: TransmitBatch = { buffer: new Uint8Array(65536), lengths: new Uint32Array(8), count: 0, bytes: 0, peer: null }
  expect(engine.pollTransmit(batch, 1)).toBe(true)
  const pkt = batch.buffer.slice(0, batch.lengths[0])
  engine.destroy()
  return pkt
}

function nextMessage(sock: dgram.Socket, timeoutMs = 2000): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sock.off('message', onMessage)
      resolve(null)
    }, timeoutMs)
    const onMessage = (msg: Buffer): void => {
      clearTimeout(timer)
      resolve(msg)
    }
    sock.once('message', onMessage)
  })
}

describe('hostile and malformed input', () => {
  let server: Endpoint

  beforeAll(async () => {
    server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } })
    server.on('connection', serveEcho)
  })

  afterAll(async () => {
    await server?.close()
  })

  it('survives 10 000 random, truncated and replayed packets and still serves a new client', async () => {
    const sock = await udpClient()
    const initial = clientInitial(server.address.port)
    const send = (buf: Uint8Array): Promise<void> => new Promise((resolve) => sock.send(buf, server.address.port, '127.0.0.1', () => resolve()))
    for (let i = 0; i < 10_000; i++) {
      let pkt: Uint8Array
      switch (i % 5) {
        case 0: // random bytes of random length
          pkt = crypto.randomBytes(1 + (i % 1500))
          break
        case 1: // truncated real Initial
          pkt = initial.subarray(0, 1 + (i % initial.length))
          break
        case 2: // replayed real Initial
          pkt = initial
          break
        case 3: // short header with random CID
          pkt = crypto.randomBytes(60)
          pkt[0] = 0x40 | (pkt[0]! & 0x3f)
          break
        default: // long header, absurd CID length
          pkt = crypto.randomBytes(1200)
          pkt[0] = 0xc0
          pkt[5] = 0xff
      }
      await send(pkt)
      // Let the server read: a burst beyond its socket buffer would only test the kernel.
      if (i % 20 === 19) await new Promise((r) => setImmediate(r))
    }
    sock.close()
    const client = await createEndpoint({ host: '127.0.0.1' })
    const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const data = pattern(100_000, 9)
    expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
    const stats = server.stats()
    expect(stats.udp.packetsReceived).toBeGreaterThan(9000)
    expect(stats.packetsDropped).toBeGreaterThan(5000)
    // Replayed Initials only ever earn a Retry: no state is kept for them.
    expect(server.stats().connections).toBeLessThanOrEqual(1)
    await client.close()
  })

  it('answers an unknown QUIC version with version negotiation', async () => {
    const sock = await udpClient()
    const pkt = Buffer.alloc(1200)
    pkt[0] = 0xc0
    pkt.writeUInt32BE(0x1a2a3a4a, 1)
    pkt[5] = 8
    crypto.randomFillSync(pkt, 6, 8)
    pkt[14] = 8
    crypto.randomFillSync(pkt, 15, 8)
    const reply = nextMessage(sock)
    sock.send(pkt, server.address.port, '127.0.0.1')
    const msg = await reply
    sock.close()
    expect(msg).not.toBeNull()
    expect(msg![0]! & 0x80).toBe(0x80)
    expect(msg!.readUInt32BE(1)).toBe(0) // version 0 = Version Negotiation
    const versions: number[] = []
    const dcidLen = msg![5]!
    const scidLen = msg![6 + dcidLen]!
    for (let off = 7 + dcidLen + scidLen; off + 4 <= msg!.length; off += 4) versions.push(msg!.readUInt32BE(off))
    expect(versions).toContain(1)
  })

  it('validates addresses with a Retry before keeping state', async () => {
    const sock = await udpClient()
    const reply = nextMessage(sock)
    sock.send(clientInitial(server.address.port), server.address.port, '127.0.0.1')
    const msg = await reply
    sock.close()
    expect(msg).not.toBeNull()
    // Long header, type bits 0b11 = Retry (RFC 9000 §17.2.5).
    expect(msg![0]! & 0xf0).toBe(0xf0)
  })

  it('refuses connections beyond the limit with a typed error', async () => {
    const limited = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key, maxConnections: 2 },
    })
    const client = await createEndpoint({ host: '127.0.0.1' })
    const opts = { host: '127.0.0.1', port: limited.address.port, ca: pki.ca, serverName: 'localhost' }
    await client.connect(opts)
    await client.connect(opts)
    // The refusal follows the server's first flight. Usually it arrives with it
    // and connect() rejects; if it lands in a later read batch, connect()
    // resolves and the connection ends at once with CONNECTION_REFUSED (0x2).
    let refused: { code: number; remote: boolean }
    try {
      const third = await client.connect(opts)
      refused = await third.closed
    } catch (err) {
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_CONNECTION_REFUSED')
      refused = (err as StoqError<{ code: number; remote: boolean }>).data
    }
    expect(refused).toMatchObject({ code: 0x2, remote: true })
    expect(limited.stats().connections).toBe(2)
    await client.close()
    await limited.close()
  })
})

describe('streams', () => {
  let server: Endpoint
  let client: Endpoint
  let conn: QuicConnection
  const incoming: QuicStream[] = []
  let onServerStream: ((s: QuicStream) => void) | null = null

  beforeAll(async () => {
    server = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      // A fixed window (no auto-tuning) makes the backpressure bound exact.
      transport: { initialMaxStreamData: 256 * 1024, maxStreamWindow: 256 * 1024, initialMaxStreamsBidi: 4000 },
    })
    server.on('connection', (c) =>
      c.on('stream', (s) => {
        incoming.push(s)
        onServerStream?.(s)
      }),
    )
    client = await createEndpoint({ host: '127.0.0.1', transport: { initialMaxStreamData: 256 * 1024 } })
    conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
  })

  afterAll(async () => {
    await client?.close()
    await server?.close()
  })

  it('reports a peer reset with its code', async () => {
    const got = new Promise<QuicStream>((resolve) => (onServerStream = resolve))
    const s = conn.openStream()
    const w = s.writable!.getWriter()
    await w.write(pattern(1000))
    const remote = await got
    s.reset(77)
    const reader = remote.readable!.getReader()
    let err: unknown
    try {
      for (;;) if ((await reader.read()).done) break
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_STREAM_RESET')
    expect((err as StoqError<{ code: number }>).data.code).toBe(77)
  })

  it('reports STOP_SENDING to the writer with its code', async () => {
    const got = new Promise<QuicStream>((resolve) => (onServerStream = resolve))
    const s = conn.openStream()
    const w = s.writable!.getWriter()
    await w.write(pattern(1000))
    const remote = await got
    remote.stopSending(88)
    let err: unknown
    try {
      for (let i = 0; i < 1000; i++) {
        await w.write(pattern(16 * 1024))
        await new Promise((r) => setTimeout(r, 2))
      }
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_STREAM_STOPPED')
    expect((err as StoqError<{ code: number }>).data.code).toBe(88)
  })

  it('stops a fast writer when the reader does not read (flow-control backpressure)', async () => {
    const got = new Promise<QuicStream>((resolve) => (onServerStream = resolve))
    const s = conn.openStream()
    const w = s.writable!.getWriter()
    const chunk = pattern(64 * 1024)
    let accepted = 0
    let stalled = false
    const writing = (async () => {
      for (let i = 0; i < 1024; i++) {
        await w.write(chunk)
        accepted += chunk.length
      }
    })()
    writing.catch(() => {})
    await got
    // Give the writer time to run into the window.
    await new Promise((r) => setTimeout(r, 500))
    const first = accepted
    await new Promise((r) => setTimeout(r, 300))
    stalled = accepted === first
    expect(stalled).toBe(true)
    // Bounded by the peer's stream window (256 KiB) plus the reader's queue (1 MiB) and one chunk.
    expect(accepted).toBeLessThanOrEqual(256 * 1024 + 1024 * 1024 + 2 * chunk.length)
    s.reset(1)
  })

  it('refuses to open more streams than the peer allows, with a typed error', async () => {
    const small = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      transport: { initialMaxStreamsBidi: 10 },
    })
    const c = await client.connect({ host: '127.0.0.1', port: small.address.port, ca: pki.ca, serverName: 'localhost' })
    for (let i = 0; i < 10; i++) c.openStream()
    const err = await failure(() => c.openStream())
    expect(err.code).toBe('STOQ_ERR_STREAM_LIMIT')
    await small.close()
  })

  it('allows 4000 concurrent streams by default', async () => {
    const before = incoming.length
    onServerStream = null
    const fresh = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    // A quinn server starts a peer at 128 streams per direction (quinn-proto keeps state for
    // every stream it allows) and doubles the limit as the peer uses them, up to the configured
    // 4000: open as a client would, waiting for credit (createStream), and use each stream at
    // once (the server only learns of a stream from its first bytes).
    const streams: QuicStream[] = []
    const writes: Promise<void>[] = []
    while (streams.length < 4000) {
      const s = await fresh.createStream({ timeoutMs: 10_000 })
      streams.push(s)
      writes.push(s.writable!.getWriter().write(new Uint8Array([1])))
    }
    await Promise.all(writes)
    const deadline = Date.now() + 20_000
    while (incoming.length - before < 4000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(incoming.length - before).toBe(4000)
    for (const s of streams) s.reset(0)
  })

  it('offers a Node.js Duplex over a stream', async () => {
    const echoServer = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } })
    echoServer.on('connection', serveEcho)
    const c = await client.connect({ host: '127.0.0.1', port: echoServer.address.port, ca: pki.ca, serverName: 'localhost' })
    const duplex = c.openStream().toNodeStream() as Duplex
    const data = pattern(300_000, 5)
    const parts: Buffer[] = []
    await Promise.all([
      pipeline(Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]), duplex),
      pipeline(
        duplex,
        new Writable({
          write(chunk: Buffer, _enc, cb) {
            parts.push(chunk)
            cb()
          },
        }),
      ),
    ])
    expect(sha256(Buffer.concat(parts))).toBe(sha256(data))
    await echoServer.close()
  })
})

describe('datagrams and options', () => {
  let server: Endpoint
  let client: Endpoint
  let conn: QuicConnection

  beforeAll(async () => {
    server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } })
    server.on('connection', serveEcho)
    client = await createEndpoint({ host: '127.0.0.1' })
    conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
  })

  afterAll(async () => {
    await client?.close()
    await server?.close()
  })

  it('reports the datagram size limit and refuses larger ones with a typed error', async () => {
    const max = conn.maxDatagramSize
    expect(max).toBeGreaterThan(1000)
    expect(max).toBeLessThan(1350)
    const err = await failure(() => conn.sendDatagram(new Uint8Array(max + 1)))
    expect(err.code).toBe('STOQ_ERR_DATAGRAM_TOO_LARGE')
    expect(err.data).toEqual({ size: max + 1, maxSize: max })
    expect(conn.sendDatagram(new Uint8Array(max))).toBe(true)
  })

  it('refuses datagrams when the peer did not enable them', async () => {
    const noDgram = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      transport: { datagrams: false },
    })
    const c = await client.connect({ host: '127.0.0.1', port: noDgram.address.port, ca: pki.ca, serverName: 'localhost' })
    const err = await failure(() => c.sendDatagram('x'))
    expect(err.code).toBe('STOQ_ERR_DATAGRAM_UNSUPPORTED')
    await noDgram.close()
  })

  it.each(['cubic', 'reno', 'bbr'] as const)('transfers with %s congestion control', async (cc) => {
    const s = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      transport: { congestionControl: cc },
    })
    s.on('connection', serveEcho)
    const c = await client.connect({ host: '127.0.0.1', port: s.address.port, ca: pki.ca, serverName: 'localhost' })
    const data = pattern(1024 * 1024, 11)
    expect(sha256(await echoOnce(c.openStream(), data))).toBe(sha256(data))
    const stats = c.stats()
    expect(stats.bytesReceived).toBeGreaterThan(data.length)
    expect(stats.packetsSent).toBeGreaterThan(0)
    expect(stats.rttMs).toBeGreaterThanOrEqual(0)
    expect(stats.cwndBytes).toBeGreaterThan(0)
    await s.close()
  })

  it('validates every option with a typed error that says what is accepted', async () => {
    const cases: Array<[() => unknown, string]> = [
      [() => createEndpoint({ port: -1 }), 'port'],
      [() => createEndpoint({ port: 70000 }), 'port'],
      [() => createEndpoint({ host: 'not-an-ip' }), 'host'],
      [() => createEndpoint({ host: '127.0.0.1', ipv6Only: true }), 'ipv6Only'],
      [() => createEndpoint({ transport: { congestionControl: 'bbr2' as 'bbr' } }), 'transport.congestionControl'],
      [() => createEndpoint({ transport: { maxUdpPayloadSize: 100 } }), 'transport.maxUdpPayloadSize'],
      [() => createEndpoint({ transport: { initialMaxData: 1e12 } }), 'transport.initialMaxData'],
      [() => createEndpoint('oops' as never), 'options'],
      [() => client.connect({ host: 5 as never, port: 1, insecure: true }), 'host'],
      [() => client.connect({ host: '127.0.0.1', port: 0, insecure: true }), 'port'],
      [() => client.connect({ host: '127.0.0.1', port: 1, pin: 'abc' }), 'pin'],
      [() => client.connect({ host: '127.0.0.1', port: 1, insecure: true, alpn: [] }), 'alpn'],
      [() => conn.close(-1), 'code'],
      [() => conn.close(0, 'x'.repeat(2000)), 'reason'],
      [() => conn.sendDatagram(42 as never), 'data'],
    ]
    for (const [fn, argument] of cases) {
      const err = await failure(fn)
      expect(err.code).toBe('STOQ_ERR_INVALID_ARG')
      expect((err.data as { argument: string }).argument).toBe(argument)
    }
  })

  it('gives typed errors on closed objects', async () => {
    const ep = await createEndpoint({ host: '127.0.0.1' })
    const c = await ep.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const s = c.openStream()
    const w = s.writable!.getWriter()
    await c.close(0, 'done')
    expect((await failure(() => c.openStream())).code).toBe('STOQ_ERR_CLOSED')
    expect((await failure(() => c.sendDatagram('x'))).code).toBe('STOQ_ERR_CLOSED')
    expect((await failure(() => w.write(new Uint8Array(1)))).code).toBe('STOQ_ERR_CONNECTION_CLOSED')
    await ep.close()
    await ep.close() // idempotent
    expect((await failure(() => ep.connect({ host: '127.0.0.1', port: 1, insecure: true }))).code).toBe('STOQ_ERR_CLOSED')
  })
})

describe('stateless reset', () => {
  it('lets a restarted server with the same secret end its lost connections at once', async () => {
    const secret = crypto.randomBytes(32)
    const first = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key, secret },
    })
    const port = first.address.port
    const client = await createEndpoint({ host: '127.0.0.1', transport: { maxIdleTimeoutMs: 30_000 } })
    const conn = await client.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: 'localhost' })
    // The server "crashes": its state is gone, no CONNECTION_CLOSE is sent.
    await first.destroy()
    const second = await createEndpoint({
      host: '127.0.0.1',
      port,
      server: { cert: pki.server.cert, key: pki.server.key, secret },
    })
    const started = Date.now()
    // Any packet from the client now draws a stateless reset.
    const w = conn.openStream().writable!.getWriter()
    await w.write(pattern(2000)).catch(() => {})
    const info = await conn.closed
    expect(Date.now() - started).toBeLessThan(10_000) // far below the 30 s idle timeout
    expect(info).toMatchObject({ remote: true, idleTimeout: false, reason: 'stateless reset' })
    expect(second.stats().packetsDropped).toBeGreaterThan(0)
    await client.close()
    await second.close()
  })

  it('rejects a secret of the wrong size', async () => {
    const err = await failure(() => createEndpoint({ server: { cert: pki.server.cert, key: pki.server.key, secret: new Uint8Array(16) } }))
    expect(err.code).toBe('STOQ_ERR_INVALID_ARG')
  })
})

describe('UDP backend choice', () => {
  it.each(['dgram', 'gso', 'gro', 'uring', 'auto'] as const)(
    'carries a verified transfer with udpBackend %s and says which backend runs',
    async (udpBackend) => {
      let server: Endpoint
      try {
        server = await createEndpoint({ host: '127.0.0.1', udpBackend, server: { cert: pki.server.cert, key: pki.server.key } })
      } catch (err) {
        // An explicit accelerated backend may only be refused where the machine lacks it.
        expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_UNSUPPORTED')
        const caps = await detectCapabilities()
        if (udpBackend === 'uring') expect(caps.ioUring.available).toBe(false)
        else expect(udpBackend === 'gso' ? caps.gso.available : caps.gso.available && caps.gro.available).toBe(false)
        return
      }
      server.on('connection', serveEcho)
      const client = await createEndpoint({ host: '127.0.0.1', udpBackend })
      const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      const data = pattern(2 * 1024 * 1024, 17)
      expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
      const stats = client.stats()
      if (udpBackend === 'auto') expect(['gro', 'gso', 'dgram']).toContain(stats.udp.backend)
      else expect(stats.udp.backend).toBe(udpBackend)
      expect(stats.udpChoice).toContain(`udpBackend ${udpBackend}`)
      expect(stats.batching.packets).toBeGreaterThan(0)
      // With GSO, equal-size packets share sends: fewer syscalls than packets.
      if (stats.udp.backend !== 'dgram') expect(stats.batching.syscalls).toBeLessThan(stats.batching.packets)
      await client.close()
      await server.close()
    },
  )

  it("hwaccel's udpIoAuto() picks the backend an auto endpoint runs on", async () => {
    const auto = await udpIoAuto()
    const ep = await createEndpoint({ host: '127.0.0.1' })
    try {
      expect(ep.stats().udp.backend).toBe(auto.backend)
    } finally {
      await ep.close()
    }
  })

  it('pins the network thread when asked (gro backend)', async () => {
    const ep = await createEndpoint({ host: '127.0.0.1', udpBackend: 'gro', cpuAffinity: [0] })
    const udp = ep.stats().udp as unknown as { affinity: string }
    expect(udp.affinity).toBe('pinned to CPU 0')
    await ep.close()
    const err = await failure(() => createEndpoint({ cpuAffinity: [-1] }))
    expect(err.code).toBe('STOQ_ERR_INVALID_ARG')
  })

  it('refuses an unknown backend name', async () => {
    const err = await failure(() => createEndpoint({ udpBackend: 'netmap' as never }))
    expect(err.code).toBe('STOQ_ERR_INVALID_ARG')
  })
})
