/** zeroCopySend: packet buffers go to the gro worker in place; data must arrive intact. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type Endpoint } from '../src/index.js'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'

let pki: TestPki
const endpoints: Endpoint[] = []

beforeAll(async () => {
  pki = await testPki()
})

afterAll(async () => {
  for (const e of endpoints) await e.close()
})

describe('packet memory: zero-copy sends and NUMA placement', () => {
  it('echoes 8 MiB verified by hash with zeroCopySend on both sides, and hands packets over in place', async () => {
    const server = await createEndpoint({ host: '127.0.0.1', udpBackend: 'gro', zeroCopySend: true, server: { cert: pki.server.cert, key: pki.server.key } })
    endpoints.push(server)
    server.on('connection', serveEcho)
    const client = await createEndpoint({ host: '127.0.0.1', udpBackend: 'gro', zeroCopySend: true })
    endpoints.push(client)
    const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const data = pattern(8 * 1024 * 1024, 21)
    expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
    const udp = client.stats().udp as unknown as { zeroCopySends: number; sendCalls: number }
    expect(udp.zeroCopySends).toBeGreaterThan(0)
    expect(udp.zeroCopySends).toBe(udp.sendCalls)
  }, 60_000)

  it('is off by default', async () => {
    const ep = await createEndpoint({ host: '127.0.0.1', udpBackend: 'gro' })
    endpoints.push(ep)
    const udp = ep.stats().udp as unknown as { zeroCopySends: number }
    expect(udp.zeroCopySends).toBe(0)
  })

  it('places the packet pool on a NUMA node when asked, and refuses a node that does not exist', async () => {
    const server = await createEndpoint({ host: '127.0.0.1', numaNode: 0, server: { cert: pki.server.cert, key: pki.server.key } })
    endpoints.push(server)
    server.on('connection', serveEcho)
    const client = await createEndpoint({ host: '127.0.0.1', numaNode: 0 })
    endpoints.push(client)
    const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const data = pattern(1024 * 1024, 5)
    expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
    const numa = client.stats().numa
    expect(numa.node).toBe(0)
    expect(numa.slabs).toBeGreaterThan(0)
    expect(numa.bytes).toBeGreaterThan(0)
    expect(numa.detail).toMatch(/node 0/)
    await expect(createEndpoint({ host: '127.0.0.1', numaNode: 1000 })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
    expect(server.stats().numa.node).toBe(0)
    const plain = await createEndpoint({ host: '127.0.0.1' })
    endpoints.push(plain)
    expect(plain.stats().numa).toMatchObject({ node: null, slabs: 0 })
  }, 60_000)
})
