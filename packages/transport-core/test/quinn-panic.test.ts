/**
 * RUSTSEC-2026-0037: quinn-proto 0.9.2 (Debian's) panics while parsing a client's
 * transport parameters when max_datagram_frame_size (0x20) has length 0 and comes last.
 * The quinn engine catches the panic at the native boundary, drops that datagram, frees
 * the connection slot the endpoint had taken for it, and goes on serving.
 */
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { craftClientInitial, encodeTransportParameter, TransportParameterId, testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, QuinnEngine, quinnAvailability, type Endpoint } from '../src/index.js'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'

let pki: TestPki
let server: Endpoint

beforeAll(async () => {
  expect(quinnAvailability().detail).toContain('loaded')
  pki = await testPki()
  // No Retry and a small connection limit: leaked slots would soon refuse everyone.
  server = await createEndpoint({
    host: '127.0.0.1',
    engine: 'quinn',
    server: { cert: pki.server.cert, key: pki.server.key, retry: false, maxConnections: 10 },
  })
  server.on('connection', serveEcho)
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

describe('quinn engine: panic safety (RUSTSEC-2026-0037)', () => {
  it('survives 100 Initials that make quinn-proto panic, frees their slots, and still serves', async () => {
    const engine = server.engine as QuinnEngine
    expect(engine.name).toBe('quinn')
    const panicsBefore = engine.panics
    const sock = dgram.createSocket('udp4')
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
    for (let i = 0; i < 100; i++) {
      await new Promise<void>((r) => sock.send(malformedInitial(), server.address.port, '127.0.0.1', () => r()))
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 5))
    }
    // Wait until the server has read them all.
    for (let i = 0; i < 200 && engine.panics - panicsBefore < 100; i++) await new Promise((r) => setTimeout(r, 10))
    sock.close()
    // Each malformed Initial really reached the panicking code path, and was contained.
    expect(engine.panics - panicsBefore).toBe(100)
    expect(server.stats().connections).toBe(0)
    // 10 times the connection limit went through the panic path: a leaked slot per
    // packet would refuse this client.
    const client = await createEndpoint({ host: '127.0.0.1' })
    try {
      const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      const data = pattern(200_000, 5)
      expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
    } finally {
      await client.close()
    }
  }, 30_000)
})
