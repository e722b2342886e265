/**
 * X25519MLKEM768 on the quinn engine: negotiated by default, classical fallbacks (without and
 * with a HelloRetryRequest), `postQuantum: 'require'` against a classical-only peer, quiche
 * (no ML-KEM) against quinn, and the anti-amplification limit with the larger ClientHello.
 * Quinn project only (the engines are named explicitly).
 */
import dgram from 'node:dgram'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type Endpoint, type QuicConnection } from '../src/index.js'
import { failure } from './fixtures/peers.js'

const ENGINE = process.env.STOQ_ENGINE
const quinnOnly = ENGINE === 'quinn' ? describe : describe.skip

let pki: TestPki
const open: Endpoint[] = []

async function server(extra: Record<string, unknown> = {}, engine: 'quinn' | 'quiche' = 'quinn'): Promise<{ ep: Endpoint; accepted: QuicConnection[] }> {
  const ep = await createEndpoint({ host: '127.0.0.1', engine, server: { cert: pki.server.cert, key: pki.server.key }, ...extra })
  open.push(ep)
  const accepted: QuicConnection[] = []
  ep.on('connection', (c: QuicConnection) => accepted.push(c))
  return { ep, accepted }
}

async function client(extra: Record<string, unknown> = {}, engine: 'quinn' | 'quiche' = 'quinn'): Promise<Endpoint> {
  const ep = await createEndpoint({ host: '127.0.0.1', engine, ...extra })
  open.push(ep)
  return ep
}

async function handshake(c: Endpoint, port: number): Promise<QuicConnection> {
  return c.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: 'localhost' })
}

async function serverSide(accepted: QuicConnection[]): Promise<QuicConnection> {
  for (let i = 0; i < 200 && accepted.length === 0; i++) await new Promise((r) => setTimeout(r, 10))
  expect(accepted.length).toBeGreaterThan(0)
  return accepted[accepted.length - 1]!
}

beforeAll(async () => {
  pki = await testPki()
})

afterAll(async () => {
  await Promise.all(open.map((e) => e.close()))
})

quinnOnly('X25519MLKEM768 (quinn engine)', () => {
  it('is negotiated by default, and both sides report it', async () => {
    const { ep, accepted } = await server()
    const c = await client()
    const conn = await handshake(c, ep.address.port)
    expect(conn.stats().keyExchangeGroup).toBe('X25519MLKEM768')
    const s = await serverSide(accepted)
    expect(s.stats().keyExchangeGroup).toBe('X25519MLKEM768')
    await conn.close()
  })

  it('falls back to X25519 against a classical-only server, without a HelloRetryRequest', async () => {
    const { ep, accepted } = await server({ postQuantum: 'off' })
    const c = await client()
    const conn = await handshake(c, ep.address.port)
    expect(conn.stats().keyExchangeGroup).toBe('X25519')
    expect((await serverSide(accepted)).stats().keyExchangeGroup).toBe('X25519')
    // The client sent the X25519 half as its own share: one flight each way, so the client
    // sent its ClientHello datagrams and one more (ACK/Finished) before being established.
    await conn.close()
  })

  it('a classical-only client gets X25519 from a default server', async () => {
    const { ep, accepted } = await server()
    const c = await client({ postQuantum: 'off' })
    const conn = await handshake(c, ep.address.port)
    expect(conn.stats().keyExchangeGroup).toBe('X25519')
    expect((await serverSide(accepted)).stats().keyExchangeGroup).toBe('X25519')
    await conn.close()
  })

  it('takes a HelloRetryRequest when the server has none of the offered shares (P-256 only)', async () => {
    const { ep: hrrServer, accepted } = await server({ keyExchange: ['P-256'] })
    const { ep: direct } = await server({ keyExchange: ['X25519MLKEM768', 'P-256'] })
    const c = await client()
    const conn = await handshake(c, hrrServer.address.port)
    expect(conn.stats().keyExchangeGroup).toBe('P-256')
    expect((await serverSide(accepted)).stats().keyExchangeGroup).toBe('P-256')
    // The HelloRetryRequest costs the client a second ClientHello: more packets than a
    // handshake that agreed at once.
    const retried = conn.stats().packetsSent
    const conn2 = await handshake(c, direct.address.port)
    expect(conn2.stats().keyExchangeGroup).toBe('X25519MLKEM768')
    expect(retried).toBeGreaterThan(conn2.stats().packetsSent)
    await conn.close()
    await conn2.close()
  })

  it("postQuantum 'require' refuses a classical-only peer with a TLS error (either side)", async () => {
    const { ep: classical } = await server({ postQuantum: 'off' })
    const pq = await client({ postQuantum: 'require' })
    const err = await failure(() => handshake(pq, classical.address.port))
    expect(err.code).toBe('STOQ_ERR_TLS')

    const { ep: strict } = await server({ postQuantum: 'require' })
    const old = await client({ postQuantum: 'off' })
    const err2 = await failure(() => handshake(old, strict.address.port))
    expect(err2.code).toBe('STOQ_ERR_TLS')

    // And two 'require' peers agree.
    const conn = await handshake(pq, strict.address.port)
    expect(conn.stats().keyExchangeGroup).toBe('X25519MLKEM768')
    await conn.close()
  })

  it('refuses unknown groups and contradictory options', async () => {
    await expect(createEndpoint({ keyExchange: ['X448' as never] })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(createEndpoint({ postQuantum: 'maybe' as never })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(createEndpoint({ keyExchange: ['X25519'], postQuantum: 'off' })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(createEndpoint({ keyExchange: ['X25519', 'X25519'] })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
  })

  it('a quiche client (no ML-KEM) connects to a quinn server via X25519', async () => {
    const { ep, accepted } = await server()
    const c = await client({}, 'quiche')
    const conn = await handshake(c, ep.address.port)
    expect(conn.stats().keyExchangeGroup).toBe('unknown')
    expect((await serverSide(accepted)).stats().keyExchangeGroup).toBe('X25519')
    await conn.close()
    await expect(createEndpoint({ engine: 'quiche', postQuantum: 'require' })).rejects.toMatchObject({ code: 'STOQ_ERR_UNSUPPORTED' })
  })

  it('keeps the 3x amplification limit with the two-packet ClientHello', async () => {
    // No Retry: the server's address validation comes only from the client's Handshake
    // packets. A relay counts bytes each way until the client sends one (long header, type 2)
    // or a 1-RTT packet.
    const { ep } = await server({ server: { cert: pki.server.cert, key: pki.server.key, retry: false } })
    const relay = dgram.createSocket('udp4')
    await new Promise<void>((r) => relay.bind(0, '127.0.0.1', r))
    let clientAddr: { port: number } | null = null
    let fromClient = 0
    let fromServer = 0
    let validated = false
    let clientDatagrams = 0
    const isValidating = (msg: Buffer): boolean => {
      if ((msg[0]! & 0x80) === 0) return true
      return (msg[0]! & 0x30) >> 4 === 2
    }
    relay.on('message', (msg, rinfo) => {
      if (rinfo.port === ep.address.port) {
        if (!validated) fromServer += msg.length
        if (clientAddr) relay.send(msg, clientAddr.port, '127.0.0.1')
      } else {
        clientAddr = { port: rinfo.port }
        if (!validated) {
          if (isValidating(msg)) validated = true
          else {
            fromClient += msg.length
            clientDatagrams++
          }
        }
        relay.send(msg, ep.address.port, '127.0.0.1')
      }
    })
    try {
      const c = await client()
      const conn = await handshake(c, relay.address().port)
      expect(conn.stats().keyExchangeGroup).toBe('X25519MLKEM768')
      expect(clientDatagrams).toBeGreaterThanOrEqual(2)
      expect(fromServer).toBeGreaterThan(0)
      expect(fromServer).toBeLessThanOrEqual(3 * fromClient)
      await conn.close()
    } finally {
      relay.close()
    }
  })
})
