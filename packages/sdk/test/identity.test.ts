import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { KnownHosts, loadOrCreateIdentity, Stoq, StoqError } from '../src/index.js'

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-identity-'))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

describe('automatic identity', () => {
  it('creates an ECDSA P-256 identity on first use, key readable by the owner only, and reuses it', async () => {
    const dir = path.join(root, 'app1')
    const first = await loadOrCreateIdentity('app1', { dir })
    expect(first.created).toBe(true)
    expect(first.fingerprint).toMatch(/^[0-9a-f]{64}$/)
    expect(fs.statSync(path.join(dir, 'identity-key.pem')).mode & 0o777).toBe(0o600)
    const { X509Certificate } = await import('node:crypto')
    const cert = new X509Certificate(first.cert)
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1')
    expect(cert.subjectAltName).toContain('DNS:localhost')
    const again = await loadOrCreateIdentity('app1', { dir })
    expect(again.created).toBe(false)
    expect(again.fingerprint).toBe(first.fingerprint)
  })

  it('rotates an identity close to expiry', async () => {
    const dir = path.join(root, 'app2')
    const short = await loadOrCreateIdentity('app2', { dir, validityDays: 2, renewBeforeDays: 1 })
    const rotated = await loadOrCreateIdentity('app2', { dir, validityDays: 30, renewBeforeDays: 7 })
    expect(rotated.created).toBe(true)
    expect(rotated.fingerprint).not.toBe(short.fingerprint)
    expect(rotated.notAfter.getTime()).toBeGreaterThan(short.notAfter.getTime())
  })

  it('serves with the app identity when listen gets no PEM, and clients can pin it', async () => {
    const server = await Stoq.create('auto-server', { identity: { dir: path.join(root, 'srv') } })
    const ep = await server.listen({ host: '127.0.0.1', port: 0 }, {})
    const id = await server.identity()
    const client = await Stoq.create('auto-client', { identity: { dir: path.join(root, 'cli') } })
    const conn = await client.connect(`127.0.0.1:${ep.address.port}`, { pin: id.fingerprint })
    expect(conn.established).toBe(true)
    await client.close()
    await server.close()
  })

  it('trusts on first use and fails loudly when the key changes', async () => {
    const server = await Stoq.create('tofu-server', { identity: { dir: path.join(root, 'tofu-srv') } })
    const ep = await server.listen({ host: '127.0.0.1', port: 0 }, {})
    const dir = path.join(root, 'tofu-cli')
    const client = await Stoq.create('tofu-client', { identity: { dir } })
    const target = `127.0.0.1:${ep.address.port}`
    await client.connect(target, { trust: 'tofu' })
    const known = new KnownHosts(path.join(dir, 'known_hosts.json'))
    expect(known.get(target)).toBe((await server.identity()).fingerprint)
    expect((await client.connect(target, { trust: 'tofu' })).established).toBe(true)
    // The server's key "changes": the recorded one no longer matches.
    fs.writeFileSync(path.join(dir, 'known_hosts.json'), JSON.stringify({ [target]: 'ab'.repeat(32) }))
    let err: unknown
    try {
      await client.connect(target, { trust: 'tofu' })
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_CERT_PIN')
    await client.close()
    await server.close()
  })
})
