import { beforeAll, describe, expect, it } from 'vitest'
import { parseTarget, Stoq, StoqError } from '../src/index.js'
import { quickstart } from '../examples/quickstart.js'
import { testPki, type TestPki } from '@stoq/compliance-tests'

let pki: TestPki
beforeAll(async () => {
  pki = await testPki()
})

describe('Stoq facade', () => {
  it('runs the README quick start', async () => {
    expect(await quickstart({ cert: pki.server.cert, key: pki.server.key, ca: pki.ca })).toBe('hello, STOQ')
  })

  it('parses connect targets', () => {
    expect(parseTarget('example.com:9292')).toEqual({ host: 'example.com', port: 9292 })
    expect(parseTarget('[::1]:443')).toEqual({ host: '::1', port: 443 })
    expect(parseTarget('stoq://[2001:db8::1]:7000')).toEqual({ host: '2001:db8::1', port: 7000 })
    expect(parseTarget(new URL('quic://10.0.0.1:4433'))).toEqual({ host: '10.0.0.1', port: 4433 })
    expect(parseTarget({ host: 'h', port: 1 })).toEqual({ host: 'h', port: 1 })
    for (const bad of ['nohost', '::1:443', 'h:0', 'h:99999', 'http://x:1', 'stoq://x', 42]) {
      let err: unknown
      try {
        parseTarget(bad as string)
      } catch (e) {
        err = e
      }
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
    }
  })

  it('aggregates stats and refuses use after close', async () => {
    const server = await Stoq.create('srv')
    const ep = await server.listen({ host: '127.0.0.1', port: 0 }, { cert: pki.server.cert, key: pki.server.key })
    const client = await Stoq.create('cli')
    const conn = await client.connect(`127.0.0.1:${ep.address.port}`, { pin: pki.server.fingerprint })
    expect(conn.established).toBe(true)
    const stats = client.stats()
    expect(stats).toMatchObject({ name: 'cli', endpoints: 1, connections: 1 })
    expect(stats.bytesSent).toBeGreaterThan(0)
    await client.close()
    await client.close()
    let err: unknown
    try {
      await client.connect(`127.0.0.1:${ep.address.port}`, { insecure: true })
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_CLOSED')
    await server.close()
  })

  it('validates the app name', async () => {
    let err: unknown
    try {
      await Stoq.create('bad name/with slash')
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
  })
})
