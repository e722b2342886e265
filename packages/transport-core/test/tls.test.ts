import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEndpoint, StoqError, type Endpoint } from '../src/index.js'
import { testPki, type TestPki } from '@stoq/compliance-tests'

let pki: TestPki
let server: Endpoint
let rogueServer: Endpoint
let client: Endpoint

beforeAll(async () => {
  pki = await testPki()
  server = await createEndpoint({ host: '::1', server: { cert: pki.server.cert, key: pki.server.key } })
  rogueServer = await createEndpoint({ host: '::1', server: { cert: pki.rogue.cert, key: pki.rogue.key } })
  client = await createEndpoint({ host: '::1' })
})

afterAll(async () => {
  await client?.close()
  await server?.close()
  await rogueServer?.close()
})

async function failure(promise: Promise<unknown>): Promise<StoqError> {
  try {
    await promise
  } catch (err) {
    expect(StoqError.isInstance(err)).toBe(true)
    return err as StoqError
  }
  throw new Error('expected the connection to be refused')
}

describe('certificate verification', () => {
  it('accepts a server issued by the given CA', async () => {
    const conn = await client.connect({ host: '::1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    expect(conn.established).toBe(true)
    await conn.close()
  })

  it('refuses a server whose certificate comes from an untrusted CA', async () => {
    const err = await failure(client.connect({ host: '::1', port: rogueServer.address.port, ca: pki.ca, serverName: 'localhost' }))
    expect(err.code).toBe('STOQ_ERR_TLS')
    expect((err.data as { remote: boolean }).remote).toBe(false)
  })

  it('refuses a certificate that does not name the server', async () => {
    const err = await failure(client.connect({ host: '::1', port: server.address.port, ca: pki.ca, serverName: 'not-the-server.example' }))
    expect(err.code).toBe('STOQ_ERR_TLS')
  })

  it('accepts a pinned certificate fingerprint (hex with colons accepted)', async () => {
    const pin = pki.server.fingerprint.toUpperCase().match(/../g)!.join(':')
    const conn = await client.connect({ host: '::1', port: server.address.port, pin })
    expect(conn.established).toBe(true)
    await conn.close()
  })

  it('refuses a certificate that does not match the pin', async () => {
    const err = await failure(client.connect({ host: '::1', port: rogueServer.address.port, pin: pki.server.fingerprint }))
    expect(err.code).toBe('STOQ_ERR_CERT_PIN')
    expect(err.data).toMatchObject({ expected: [pki.server.fingerprint], actual: pki.rogue.fingerprint })
  })

  it('refuses a peer with no common ALPN', async () => {
    const err = await failure(client.connect({ host: '::1', port: server.address.port, ca: pki.ca, serverName: 'localhost', alpn: ['h3'] }))
    expect(err.code).toBe('STOQ_ERR_TLS')
  })

  it('requires a verification method, or an explicit insecure flag', async () => {
    const err = await failure(client.connect({ host: '::1', port: server.address.port }))
    expect(err.code).toBe('STOQ_ERR_INVALID_ARG')
    const conn = await client.connect({ host: '::1', port: server.address.port, insecure: true })
    expect(conn.established).toBe(true)
    await conn.close()
  })

  it('fails with a handshake timeout when nobody answers', async () => {
    const silent = await createEndpoint({ host: '::1' })
    const err = await failure(client.connect({ host: '::1', port: silent.address.port, insecure: true, handshakeTimeoutMs: 300 }))
    expect(err.code).toBe('STOQ_ERR_HANDSHAKE_TIMEOUT')
    await silent.close()
  })
})

describe('server options', () => {
  it('reads PEM files and refuses non-PEM input with a typed error', async () => {
    const bad = await failure(createEndpoint({ server: { cert: 'not a certificate', key: pki.server.key } }))
    expect(bad.code).toBe('STOQ_ERR_INVALID_ARG')
    const missing = await failure(createEndpoint({ server: { cert: { file: '/nonexistent/cert.pem' }, key: pki.server.key } }))
    expect(missing.code).toBe('STOQ_ERR_INVALID_ARG')
    expect(missing.message).toContain('/nonexistent/cert.pem')
  })
})
