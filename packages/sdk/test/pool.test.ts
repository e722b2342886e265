import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { Stoq, type Endpoint } from '../src/index.js'

let pki: TestPki
let server: Stoq
let ep: Endpoint

beforeAll(async () => {
  pki = await testPki()
  server = await Stoq.create('pool-server')
  ep = await server.listen({ host: '127.0.0.1', port: 0 }, { cert: pki.server.cert, key: pki.server.key })
})

afterAll(async () => {
  await server?.close()
})

describe('connection pooling', () => {
  it('reuses a live connection for the same peer and options, and shares a handshake under way', async () => {
    const client = await Stoq.create('pool-client')
    const target = `127.0.0.1:${ep.address.port}`
    const [a, b] = await Promise.all([
      client.connect(target, { ca: pki.ca, serverName: 'localhost' }),
      client.connect(target, { ca: pki.ca, serverName: 'localhost' }),
    ])
    expect(a).toBe(b)
    const c = await client.connect(target, { ca: pki.ca, serverName: 'localhost' })
    expect(c).toBe(a)
    // Other trust options: another connection.
    const d = await client.connect(target, { pin: pki.server.fingerprint })
    expect(d).not.toBe(a)
    // reuse: false always opens a new one.
    const e = await client.connect(target, { ca: pki.ca, serverName: 'localhost', reuse: false })
    expect(e).not.toBe(a)
    expect(client.stats().pool).toMatchObject({ size: 2, hits: 2, misses: 2 })
    await client.close()
  })

  it('replaces a dead pooled connection transparently', async () => {
    const client = await Stoq.create('pool-client')
    const target = `127.0.0.1:${ep.address.port}`
    const first = await client.connect(target, { pin: pki.server.fingerprint })
    await first.close(0, 'gone')
    const second = await client.connect(target, { pin: pki.server.fingerprint })
    expect(second).not.toBe(first)
    expect(second.established).toBe(true)
    await client.close()
  })

  it('a replaced pooled connection resumes the session of the one before (tickets live in the client endpoint)', async () => {
    const client = await Stoq.create('pool-client')
    const target = `127.0.0.1:${ep.address.port}`
    const first = await client.connect(target, { ca: pki.ca, serverName: 'localhost' })
    expect(first.stats().resumed).toBe(false)
    // Acknowledged data: the server's session tickets, sent when its handshake completed, are in.
    await first.send('hello', { confirm: true })
    await first.close(0, 'gone')
    const second = await client.connect(target, { ca: pki.ca, serverName: 'localhost' })
    expect(second).not.toBe(first)
    // The server runs engine workers (Stoq.listen's default where it can): they share sessions.
    expect(second.stats().resumed).toBe(true)
    await client.close()
  })

  it('evicts the least recently used idle connection beyond the size limit', async () => {
    const client = await Stoq.create('pool-client', { pool: { maxConnections: 2 } })
    const target = `127.0.0.1:${ep.address.port}`
    const a = await client.connect(target, { pin: pki.server.fingerprint, alpn: ['stoq/1'] })
    const b = await client.connect(target, { pin: pki.server.fingerprint })
    await client.connect(target, { ca: pki.ca, serverName: 'localhost' })
    await a.closed // the oldest idle one was closed to make room
    expect(b.established).toBe(true)
    expect(client.stats().pool).toMatchObject({ size: 2, evictions: 1 })
    await client.close()
  })

  it('closes connections idle for longer than the idle timeout, but not busy ones', async () => {
    const client = await Stoq.create('pool-client', { pool: { idleTimeoutMs: 200 } })
    const target = `127.0.0.1:${ep.address.port}`
    const idle = await client.connect(target, { pin: pki.server.fingerprint })
    const busy = await client.connect(target, { ca: pki.ca, serverName: 'localhost' })
    busy.openStream() // an open stream keeps it in use
    await idle.closed
    expect(busy.established).toBe(true)
    await client.close()
  })

  it('validates pool options', async () => {
    await expect(Stoq.create('p', { pool: { maxConnections: 0 } })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
  })
})
