/** The quinn engine sends packets far above quiche's 16383-byte cap where the path allows. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type Endpoint } from '../src/index.js'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'
import { waitFor } from './fixtures/peers.js'

let pki: TestPki
const endpoints: Endpoint[] = []

beforeAll(async () => {
  pki = await testPki()
})

afterAll(async () => {
  for (const e of endpoints) await e.close()
})

describe('quinn engine: large packets', () => {
  it.each([
    [16383, 'dgram'],
    [65000, 'gro'],
  ] as const)(
    'echoes 4 MiB with %i-byte packets (%s backend), verified by hash',
    async (size, udpBackend) => {
      const transport = { maxUdpPayloadSize: size }
      const server = await createEndpoint({ host: '127.0.0.1', engine: 'quinn', udpBackend, transport, server: { cert: pki.server.cert, key: pki.server.key } })
      endpoints.push(server)
      server.on('connection', serveEcho)
      const client = await createEndpoint({ host: '127.0.0.1', engine: 'quinn', udpBackend, transport })
      endpoints.push(client)
      const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      // Path MTU discovery starts at 1200 and climbs to the ceiling (loopback carries 65536).
      await waitFor(() => conn.stats().pathMtu === size, `the path MTU to reach ${size}`)
      const before = client.stats().udp
      const data = pattern(4 * 1024 * 1024, 11)
      expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
      const s = client.stats().udp
      // Most of 4 MiB went in full-size packets: far fewer packets than at 1350 bytes.
      expect((s.bytesSent - before.bytesSent) / (s.packetsSent - before.packetsSent)).toBeGreaterThan(size / 2)
    },
    60_000,
  )
})
