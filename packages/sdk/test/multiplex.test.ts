import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { Stoq, type Endpoint, type QuicConnection } from '../src/index.js'

let pki: TestPki
let server: Stoq
let ep: Endpoint
const perConnection = new Map<QuicConnection, number>()
const serverConns: QuicConnection[] = []

beforeAll(async () => {
  pki = await testPki()
  server = await Stoq.create('mux-server')
  ep = await server.listen(
    { host: '127.0.0.1', port: 0 },
    {
      cert: pki.server.cert,
      key: pki.server.key,
      onConnection: (c) => serverConns.push(c),
      onStream: (s, c) =>
        void (async () => {
          let n = 0
          for await (const chunk of s.readable!) n += chunk.length
          perConnection.set(c, (perConnection.get(c) ?? 0) + n)
        })(),
    },
  )
})

afterAll(async () => {
  await server?.close()
})

describe('multiplexing', () => {
  it('spreads messages round-robin over N connections and counts per member and in total', async () => {
    const client = await Stoq.create('mux-client')
    const mux = await client.multiplex(`127.0.0.1:${ep.address.port}`, { connections: 4, pin: pki.server.fingerprint })
    const message = new Uint8Array(256 * 1024).fill(1)
    await Promise.all(Array.from({ length: 8 }, () => mux.send(message, { confirm: true })))
    const stats = mux.stats()
    expect(stats.alive).toBe(4)
    expect(stats.messagesSent).toBe(8)
    expect(stats.members.map((m) => m.messagesSent)).toEqual([2, 2, 2, 2])
    expect(stats.bytesSent).toBe(8 * message.length)
    const deadline = Date.now() + 5000
    while ([...perConnection.values()].reduce((a, b) => a + b, 0) < 8 * message.length && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10))
    }
    // The server saw the bytes arrive over four different connections.
    expect([...perConnection.values()].filter((n) => n > 0).length).toBe(4)
    await mux.close()
    await client.close()
  })

  it('replaces a member that fails', async () => {
    const client = await Stoq.create('mux-client')
    const before = serverConns.length
    const mux = await client.multiplex(`127.0.0.1:${ep.address.port}`, { connections: 2, strategy: 'least-loaded', pin: pki.server.fingerprint })
    while (serverConns.length < before + 2) await new Promise((r) => setTimeout(r, 5))
    await serverConns[before]!.close(7, 'kicked')
    const deadline = Date.now() + 5000
    while (mux.stats().replacements < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    expect(mux.stats().replacements).toBe(1)
    expect(mux.stats().alive).toBe(2)
    await mux.send('still works', { confirm: true })
    await mux.close()
    await client.close()
  })

  it('validates its options', async () => {
    const client = await Stoq.create('mux-client')
    await expect(client.multiplex(`127.0.0.1:${ep.address.port}`, { connections: 0, insecure: true })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    await expect(client.multiplex(`127.0.0.1:${ep.address.port}`, { strategy: 'random' as never, insecure: true })).rejects.toMatchObject({
      code: 'STOQ_ERR_INVALID_ARG',
    })
    await client.close()
  })
})
