import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEndpoint, StoqError, type Endpoint } from '../src/index.js'
import { testPki, type TestPki } from '@stoq/compliance-tests'

/**
 * Certificate validity: a server whose certificate was issued by the trusted CA for
 * the right name, but is outside its validity window, is refused with a typed TLS
 * error, and no connection is established. Runs once per engine (vitest projects).
 */

let pki: TestPki
let client: Endpoint
const servers: Endpoint[] = []

beforeAll(async () => {
  pki = await testPki()
  client = await createEndpoint({ host: '127.0.0.1' })
})

afterAll(async () => {
  await client?.close()
  for (const s of servers) await s.close()
})

async function serve(identity: { cert: string; key: string }): Promise<Endpoint> {
  const ep = await createEndpoint({ host: '127.0.0.1', server: { cert: identity.cert, key: identity.key } })
  servers.push(ep)
  return ep
}

/** Settles within `ms` (the handshake timeout is far below it), so a hang fails instead of hanging. */
async function refusal(promise: Promise<unknown>, ms = 15_000): Promise<StoqError> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
  })
  try {
    const conn = await Promise.race([promise, hang])
    throw new Error(`expected a refusal, got ${String(conn)}`)
  } catch (err) {
    if (!StoqError.isInstance(err)) throw err
    return err
  } finally {
    clearTimeout(timer)
  }
}

describe('certificate validity', () => {
  it('the test certificates are what they claim to be', async () => {
    const { X509Certificate } = await import('node:crypto')
    const now = Date.now()
    const expired = new X509Certificate(pki.expired.cert)
    expect(new Date(expired.validTo).getTime()).toBeLessThan(now)
    expect(expired.verify(new X509Certificate(pki.ca).publicKey)).toBe(true)
    const future = new X509Certificate(pki.notYetValid.cert)
    expect(new Date(future.validFrom).getTime()).toBeGreaterThan(now)
    expect(future.verify(new X509Certificate(pki.ca).publicKey)).toBe(true)
  })

  it('accepts the valid certificate of the same CA (control)', async () => {
    const ep = await serve(pki.server)
    const conn = await client.connect({ host: '127.0.0.1', port: ep.address.port, ca: pki.ca, serverName: 'localhost', handshakeTimeoutMs: 5000 })
    expect(conn.established).toBe(true)
    await conn.close()
  })

  it('refuses an expired server certificate with STOQ_ERR_TLS', async () => {
    const ep = await serve(pki.expired)
    const err = await refusal(client.connect({ host: '127.0.0.1', port: ep.address.port, ca: pki.ca, serverName: 'localhost', handshakeTimeoutMs: 5000 }))
    expect(err.code).toBe('STOQ_ERR_TLS')
    expect((err.data as { remote: boolean }).remote).toBe(false)
    expect(ep.connections.filter((c) => c.established && !c.isClosed)).toHaveLength(0)
  })

  it('refuses a server certificate that is not valid yet with STOQ_ERR_TLS', async () => {
    const ep = await serve(pki.notYetValid)
    const err = await refusal(client.connect({ host: '127.0.0.1', port: ep.address.port, ca: pki.ca, serverName: 'localhost', handshakeTimeoutMs: 5000 }))
    expect(err.code).toBe('STOQ_ERR_TLS')
    expect((err.data as { remote: boolean }).remote).toBe(false)
  })

  it('refuses an expired certificate whatever else is right: pinned fingerprint plus CA, and IP-literal name', async () => {
    const ep = await serve(pki.expired)
    const err = await refusal(
      client.connect({ host: '127.0.0.1', port: ep.address.port, ca: pki.ca, serverName: '127.0.0.1', pin: pki.expired.fingerprint, handshakeTimeoutMs: 5000 }),
    )
    expect(err.code).toBe('STOQ_ERR_TLS')
  })

  it('keeps refusing wrong name, untrusted CA and wrong pin with typed errors (same server set-up)', async () => {
    const good = await serve(pki.server)
    const rogue = await serve(pki.rogue)
    const wrongName = await refusal(
      client.connect({ host: '127.0.0.1', port: good.address.port, ca: pki.ca, serverName: 'elsewhere.example', handshakeTimeoutMs: 5000 }),
    )
    expect(wrongName.code).toBe('STOQ_ERR_TLS')
    const untrusted = await refusal(
      client.connect({ host: '127.0.0.1', port: rogue.address.port, ca: pki.ca, serverName: 'localhost', handshakeTimeoutMs: 5000 }),
    )
    expect(untrusted.code).toBe('STOQ_ERR_TLS')
    const wrongPin = await refusal(client.connect({ host: '127.0.0.1', port: good.address.port, pin: pki.rogue.fingerprint, handshakeTimeoutMs: 5000 }))
    expect(wrongPin.code).toBe('STOQ_ERR_CERT_PIN')
    expect(wrongPin.data).toMatchObject({ expected: [pki.rogue.fingerprint], actual: pki.server.fingerprint })
  })
})

describe('a self-signed CA certificate (CA:TRUE) as the server certificate', () => {
  it('the test certificate is a self-signed CA', async () => {
    const { X509Certificate } = await import('node:crypto')
    const cert = new X509Certificate(pki.selfSignedCa.cert)
    expect(cert.ca).toBe(true)
    expect(cert.checkIssued(cert)).toBe(true)
  })

  it('is refused when given as `ca`, with STOQ_ERR_TLS saying what to do instead', async () => {
    const ep = await serve(pki.selfSignedCa)
    const err = await refusal(
      client.connect({ host: '127.0.0.1', port: ep.address.port, ca: pki.selfSignedCa.cert, serverName: 'localhost', handshakeTimeoutMs: 5000 }),
    )
    expect(err.code).toBe('STOQ_ERR_TLS')
    expect(err.message).toMatch(/CA certificate \(basicConstraints CA:TRUE\)/)
    expect(err.message).toMatch(/issue a leaf certificate from that CA/)
    expect(err.message).toMatch(/pin/)
    // The same alert on both engines: certificate_unknown, what rustls sends.
    expect(err.data).toMatchObject({ remote: false, alert: 46 })
    expect(client.connections.filter((c) => !c.isClosed)).toHaveLength(0)
  })

  it('is accepted by its pinned fingerprint (what the error suggests)', async () => {
    const ep = await serve(pki.selfSignedCa)
    const conn = await client.connect({ host: '127.0.0.1', port: ep.address.port, pin: pki.selfSignedCa.fingerprint, handshakeTimeoutMs: 5000 })
    expect(conn.established).toBe(true)
    await conn.close()
  })
})
