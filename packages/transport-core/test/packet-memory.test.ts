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
    // The quinn engine builds the packets in transmit slots of its own, which the worker sends
    // (quiche into pool buffers).
    for (const ep of [client, server]) expect(ep.stats().transmitSlots).toBe(ep.stats().engine === 'quinn' ? 64 : 0)
  }, 60_000)

  it('is on by default for the gro backend; off with zeroCopySend: false, the quiche engine or another backend', async () => {
    const server = await createEndpoint({ host: '127.0.0.1', engine: 'quinn', udpBackend: 'gro', server: { cert: pki.server.cert, key: pki.server.key } })
    endpoints.push(server)
    server.on('connection', serveEcho)
    expect(server.stats().transmitSlots).toBe(64)
    const cases = [
      { options: { engine: 'quinn' as const, zeroCopySend: false }, inPlace: false, slots: 0 },
      { options: { engine: 'quiche' as const }, inPlace: true, slots: 0 },
      { options: { engine: 'quinn' as const, udpBackend: 'gso' as const }, inPlace: false, slots: 0 },
      { options: { engine: 'quinn' as const }, inPlace: true, slots: 64 },
    ]
    for (const { options, inPlace, slots } of cases) {
      const client = await createEndpoint({ host: '127.0.0.1', udpBackend: 'gro', ...options })
      endpoints.push(client)
      const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      const data = pattern(2 * 1024 * 1024, 7)
      expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
      const udp = client.stats().udp as unknown as { zeroCopySends?: number }
      expect((udp.zeroCopySends ?? 0) > 0, JSON.stringify(options)).toBe(inPlace)
      expect(client.stats().transmitSlots, JSON.stringify(options)).toBe(slots)
      await conn.close()
    }
  }, 60_000)

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
