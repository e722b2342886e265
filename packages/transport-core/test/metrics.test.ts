import { describe, expect, it } from 'vitest'
import { createMetricsRegistry, toPrometheusText } from '@stoq/monitoring'
import { testPki } from '@stoq/compliance-tests'
import { createEndpoint } from '../src/index.js'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'

function sample(text: string, name: string, port: number): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`port="${port}"`))
  if (!line) throw new Error(`no sample ${name} for port ${port} in:\n${text}`)
  return Number(line.slice(line.lastIndexOf(' ') + 1))
}

describe('endpoint metrics', () => {
  it('reports exact counters through a MetricsSink, read when scraped', async () => {
    const pki = await testPki()
    const registry = createMetricsRegistry()
    const server = await createEndpoint(
      { host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } },
      { metrics: registry },
    )
    server.on('connection', serveEcho)
    const client = await createEndpoint({ host: '127.0.0.1' }, { metrics: registry })
    const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const data = pattern(1024 * 1024, 3)
    expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))

    const text = toPrometheusText(registry)
    const s = server.stats()
    const c = client.stats()
    for (const [ep, stats] of [
      [server, s],
      [client, c],
    ] as const) {
      const port = ep.address.port
      expect(sample(text, 'stoq_udp_bytes_received_total', port)).toBe(stats.udp.bytesReceived)
      expect(sample(text, 'stoq_udp_datagrams_sent_total', port)).toBe(stats.udp.packetsSent)
      expect(sample(text, 'stoq_batch_packets_total', port)).toBe(stats.batching.packets)
      expect(sample(text, 'stoq_connections', port)).toBe(1)
    }
    // What one side sent on the wire, the other received (loopback, no loss expected at this size).
    expect(sample(text, 'stoq_udp_bytes_sent_total', client.address.port)).toBeGreaterThan(data.length)
    expect(text).toContain(`backend="${c.udp.backend}"`)
    await client.close()
    await server.close()
  })
})
