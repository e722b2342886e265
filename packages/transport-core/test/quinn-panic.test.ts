/**
 * The quinn engine's panic boundary.
 *
 * RUSTSEC-2026-0037: quinn-proto before 0.11.14 panicked while parsing a client's transport
 * parameters when max_datagram_frame_size (0x20) has length 0 and comes last. With
 * quinn-proto 0.11.19 that Initial is refused as a protocol error (a CONNECTION_CLOSE goes
 * back, nothing panics), which the first test proves. The boundary itself stays (every
 * exported function runs under catch_unwind, `receive` per datagram): a panic injected on
 * purpose, while working on one connection, must close that connection alone and leave the
 * endpoint serving.
 */
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { craftClientInitial, encodeTransportParameter, TransportParameterId, testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type QuinnEngine, quinnAvailability, type Endpoint, type QuicConnection } from '../src/index.js'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'

let pki: TestPki
let server: Endpoint
const serverConns: QuicConnection[] = []

beforeAll(async () => {
  expect(quinnAvailability().detail).toContain('loaded')
  pki = await testPki()
  // No Retry and a small connection limit: a slot kept per refused Initial would soon refuse everyone.
  server = await createEndpoint({
    host: '127.0.0.1',
    engine: 'quinn',
    server: { cert: pki.server.cert, key: pki.server.key, retry: false, maxConnections: 10 },
  })
  server.on('connection', (conn) => {
    serverConns.push(conn)
    serveEcho(conn)
  })
})

afterAll(async () => {
  await server?.close()
})

function malformedInitial(): Uint8Array {
  const scid = crypto.randomBytes(8)
  const valid = craftClientInitial({ scid }).transportParameters!
  const tp = Uint8Array.from([...valid, ...encodeTransportParameter(TransportParameterId.maxDatagramFrameSize, new Uint8Array(0))])
  return craftClientInitial({ scid, transportParameters: tp }).packet
}

async function echoes(ep: Endpoint): Promise<void> {
  const client = await createEndpoint({ host: '127.0.0.1' })
  try {
    const conn = await client.connect({ host: '127.0.0.1', port: ep.address.port, ca: pki.ca, serverName: 'localhost' })
    const data = pattern(200_000, 5)
    expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
  } finally {
    await client.close()
  }
}

describe('quinn engine: RUSTSEC-2026-0037 and the panic boundary', () => {
  it('refuses 100 RUSTSEC-2026-0037 Initials with a CONNECTION_CLOSE, without a panic, keeps no slot, and still serves', async () => {
    const engine = server.engine as QuinnEngine
    expect(engine.name).toBe('quinn')
    const panicsBefore = engine.panics
    const droppedBefore = engine.droppedPackets
    const sock = dgram.createSocket('udp4')
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
    const replies: Buffer[] = []
    sock.on('message', (m) => replies.push(m))
    for (let i = 0; i < 100; i++) {
      await new Promise<void>((r) => sock.send(malformedInitial(), server.address.port, '127.0.0.1', () => r()))
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 5))
    }
    // Wait until the server has read them all and answered.
    for (let i = 0; i < 300 && (engine.droppedPackets - droppedBefore < 100 || replies.length < 100); i++) await new Promise((r) => setTimeout(r, 10))
    sock.close()
    // Each one reached quinn's transport-parameter parser, was refused there, and was answered
    // with an Initial (long header, type 0) carrying the close: no handshake went on.
    expect(engine.panics - panicsBefore).toBe(0)
    expect(engine.droppedPackets - droppedBefore).toBe(100)
    expect(replies.length).toBe(100)
    expect(replies.every((m) => (m[0]! & 0xf0) === 0xc0)).toBe(true)
    expect(server.stats().connections).toBe(0)
    // 10 times the connection limit was refused: a slot kept per packet would refuse this client.
    await echoes(server)
  }, 30_000)

  it("a panic while handling one connection's datagram closes that connection alone (INTERNAL_ERROR); the process and the endpoint go on", async () => {
    const engine = server.engine as QuinnEngine
    const panicsBefore = engine.panics
    const client = await createEndpoint({ host: '127.0.0.1' })
    try {
      const victim = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      const data = pattern(50_000, 7)
      expect(sha256(await echoOnce(victim.openStream(), data))).toBe(sha256(data))
      const serverSide = serverConns.at(-1)!
      const closed = serverSide.closed
      // The next datagram quinn routes to this connection panics inside the library.
      engine.injectPanic(serverSide.handle, 'next-datagram')
      victim
        .openStream()
        .writable!.getWriter()
        .write(pattern(1000, 1))
        .catch(() => {})
      const info = await closed
      expect(info.code).toBe(0x1) // INTERNAL_ERROR
      expect(info.reason).toMatch(/^engine panic: injected test panic/)
      expect(engine.panics - panicsBefore).toBe(1)
      expect(engine.lastError).toMatch(/injected test panic/)
      // Another connection, and the rest of the endpoint, are untouched.
      await echoes(server)
      // A panic inside an API call on a connection: the same containment.
      const other = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      expect(sha256(await echoOnce(other.openStream(), data))).toBe(sha256(data))
      const second = serverConns.at(-1)!
      engine.injectPanic(second.handle, 'now')
      expect(engine.panics - panicsBefore).toBe(2)
      await echoes(server)
    } finally {
      await client.close()
    }
  }, 30_000)
})
