import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki } from '@stoq/compliance-tests'
import { createEndpoint, StoqError, type Endpoint, type QuicConnection } from '../src/index.js'
import { pattern, readAll, sha256 } from './fixtures/echo.js'

let server: Endpoint
let client: Endpoint
let conn: QuicConnection
const received: Promise<Uint8Array>[] = []

beforeAll(async () => {
  const pki = await testPki()
  server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } })
  server.on('connection', (c) =>
    c.on('stream', (s) => {
      const all = readAll(s.readable!)
      all.catch(() => {}) // a stream the sender reset is awaited (and fails) only where a test expects it
      received.push(all)
    }),
  )
  client = await createEndpoint({ host: '127.0.0.1' })
  conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
})

afterAll(async () => {
  await client?.close()
  await server?.close()
})

async function next(): Promise<Uint8Array> {
  while (received.length === 0) await new Promise((r) => setTimeout(r, 5))
  return received.shift()!
}

describe('connection.send()', () => {
  it('sends bytes, strings, iterables and Node/Web streams as one message each', async () => {
    const big = pattern(4 * 1024 * 1024, 21)
    await conn.send(big)
    expect(sha256(await next())).toBe(sha256(big))
    await conn.send('hello, peer')
    expect(Buffer.from(await next()).toString()).toBe('hello, peer')
    await conn.send(['a', new Uint8Array([98]), 'c'])
    expect(Buffer.from(await next()).toString()).toBe('abc')
    await conn.send(Readable.from([Buffer.from('node '), Buffer.from('stream')]))
    expect(Buffer.from(await next()).toString()).toBe('node stream')
    await conn.send(new Blob(['web stream']).stream() as unknown as AsyncIterable<Uint8Array>)
    expect(Buffer.from(await next()).toString()).toBe('web stream')
  })

  it('waits for the peer to acknowledge everything when asked', async () => {
    const data = pattern(2 * 1024 * 1024, 5)
    await conn.send(data, { confirm: true })
    expect(sha256(await next())).toBe(sha256(data))
    expect(conn.stats().streamBytesWritten).toBeGreaterThanOrEqual(data.length)
  })

  it('refuses other inputs with a typed error', async () => {
    for (const bad of [42, null, { length: 3 }, [1, 2]]) {
      let err: unknown
      try {
        await conn.send(bad as never)
      } catch (e) {
        err = e
      }
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
    }
    // None of them opened a stream: the next message is the next one sent.
    await conn.send('after the refusals')
    expect(Buffer.from(await next()).toString()).toBe('after the refusals')
  })
})
