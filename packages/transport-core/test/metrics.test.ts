import { describe, expect, it, vi } from 'vitest'
import { createMetricsRegistry, parsePrometheusText, toPrometheusText } from '@stoq/monitoring'
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
    const server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } }, { metrics: registry })
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
      // Budgets: usage and size, as stats() reports them.
      expect(sample(text, 'stoq_limit_streams_max', port)).toBe(stats.limits.limits.maxStreams)
      expect(sample(text, 'stoq_limit_receive_window_bytes', port)).toBe(stats.limits.receiveWindowBytes)
      expect(stats.limits.receiveWindowBytes).toBeGreaterThan(0)
    }
    // What one side sent on the wire, the other received (loopback, no loss expected at this size).
    expect(sample(text, 'stoq_udp_bytes_sent_total', client.address.port)).toBeGreaterThan(data.length)
    expect(text).toContain(`backend="${c.udp.backend}"`)
    await client.close()
    await server.close()
  })

  it('counts application bytes exactly both ways, keeps them after close, and exposes every layer', async () => {
    const pki = await testPki()
    const registry = createMetricsRegistry()
    const server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } }, { metrics: registry })
    server.on('connection', serveEcho)
    const client = await createEndpoint({ host: '127.0.0.1' }, { metrics: registry })
    const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const sizes = [1024 * 1024 + 7, 100_003]
    for (const [i, size] of sizes.entries()) {
      const data = pattern(size, 11 + i)
      expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
    }
    const total = sizes.reduce((a, b) => a + b, 0)
    const cPort = client.address.port
    const sPort = server.address.port

    const check = (text: string, live: number): void => {
      // What the client's application wrote is exactly what the server's application read, and back.
      expect(sample(text, 'stoq_stream_bytes_written_total', cPort)).toBe(total)
      expect(sample(text, 'stoq_stream_bytes_read_total', sPort)).toBe(total)
      expect(sample(text, 'stoq_stream_bytes_written_total', sPort)).toBe(total)
      expect(sample(text, 'stoq_stream_bytes_read_total', cPort)).toBe(total)
      expect(sample(text, 'stoq_connections', cPort)).toBe(live)
      expect(sample(text, 'stoq_connections_closed_total', cPort)).toBe(1 - live)
      for (const port of [cPort, sPort]) {
        expect(sample(text, 'stoq_quic_bytes_sent_total', port)).toBeGreaterThan(total)
        expect(sample(text, 'stoq_quic_packets_received_total', port)).toBeGreaterThan(total / 1500)
        expect(sample(text, 'stoq_quic_packets_lost_total', port)).toBeGreaterThanOrEqual(0)
        expect(sample(text, 'stoq_quic_packets_retransmitted_total', port)).toBeGreaterThanOrEqual(0)
        // One handshake observed per endpoint, under the +Inf bucket and in the count.
        expect(sample(text, 'stoq_handshake_duration_seconds_count', port)).toBe(1)
        expect(sample(text, 'stoq_handshake_duration_seconds_sum', port)).toBeGreaterThan(0)
      }
    }

    const liveText = toPrometheusText(registry)
    check(liveText, 1)
    // The whole exposition reads back with the strict parser; every family is typed and has help.
    const families = parsePrometheusText(liveText)
    expect(families.length).toBeGreaterThan(30)
    for (const f of families) {
      expect(f.type, f.name).not.toBe('untyped')
      expect(f.help, f.name).not.toBe('')
      if (f.type === 'counter') expect(f.name).toMatch(/_total$/)
    }
    expect(sample(liveText, 'stoq_payload_throughput_gbps', cPort)).toBeGreaterThanOrEqual(0)
    const cs = conn.stats()
    expect(sample(liveText, 'stoq_quic_packets_sent_total', cPort)).toBeGreaterThanOrEqual(cs.packetsSent)
    // quiche reports whole milliseconds (0 on loopback); quinn a fraction.
    expect(sample(liveText, 'stoq_rtt_seconds', cPort)).toBeGreaterThanOrEqual(0)
    if (client.stats().engine === 'quinn') expect(sample(liveText, 'stoq_rtt_seconds', cPort)).toBeGreaterThan(0)
    expect(sample(liveText, 'stoq_rtt_max_seconds', cPort)).toBeGreaterThanOrEqual(sample(liveText, 'stoq_rtt_seconds', cPort))
    expect(sample(liveText, 'stoq_congestion_window_bytes', cPort)).toBeGreaterThan(0)
    expect(sample(liveText, 'stoq_streams_open', cPort)).toBeGreaterThanOrEqual(0)

    const st = client.stats()
    expect(sample(liveText, 'stoq_pool_buffers_in_use_high_water', cPort)).toBe(st.pool.highWaterMark)
    expect(sample(liveText, 'stoq_pool_buffers', cPort)).toBe(st.pool.capacity)
    expect(sample(liveText, 'stoq_batch_syscalls_total', cPort)).toBe(st.batching.syscalls)
    expect(sample(liveText, 'stoq_batch_packets_per_syscall', cPort)).toBe(st.batching.packets / st.batching.syscalls)
    // The backend and the engine as labels of an info-style gauge.
    expect(liveText).toContain(`stoq_endpoint_info{backend="${st.udp.backend}",engine="${st.engine}",port="${cPort}"} 1`)
    // Backend counters appear when the backend has them, zero-copy sends included.
    const udp = st.udp as unknown as Record<string, unknown>
    if (typeof udp.zeroCopySends === 'number') expect(liveText).toContain('stoq_zero_copy_sends_total{')
    if (typeof udp.gsoWrites === 'number') expect(liveText).toContain('stoq_udp_gso_writes_total{')
    if (typeof udp.groBuffers === 'number') expect(liveText).toContain('stoq_udp_gro_buffers_total{')
    for (const name of ['stoq_batch_syscalls_saved_total', 'stoq_pool_hits_total', 'stoq_pool_misses_total', 'stoq_pool_buffers_in_use']) {
      expect(liveText).toContain(`# TYPE ${name} `)
    }

    // Closing the connection moves its figures into the endpoint's totals: counters never go back.
    await conn.close()
    await vi.waitFor(() => expect(server.connections).toHaveLength(0))
    check(toPrometheusText(registry), 0)
    await client.close()
    await server.close()
  })
})

describe('per-connection throughput', () => {
  it('samples payload Gbps per connection from explicit sample times', async () => {
    const pki = await testPki()
    const server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } }, { throughputSampleMs: 0 })
    server.on('connection', serveEcho)
    const client = await createEndpoint({ host: '127.0.0.1' }, { throughputSampleMs: 0 })
    const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    expect(client.throughputSampling).toBe(false)
    expect(conn.throughput).toMatchObject({ samples: 0, instantGbps: 0, averageGbps: 0, peakGbps: 0 })

    client.sampleThroughput(1000) // origin
    const first = pattern(500_000, 5)
    expect(sha256(await echoOnce(conn.openStream(), first))).toBe(sha256(first))
    client.sampleThroughput(2000) // one second later: 500 kB each way
    let t = conn.throughput
    expect(t.samples).toBe(2)
    expect(t.durationSec).toBe(1)
    expect(t.sent.bytes).toBe(500_000)
    expect(t.sent.instantGbps).toBeCloseTo(0.004, 12)
    expect(t.sent.averageGbps).toBeCloseTo(0.004, 12)
    expect(t.sent.peakGbps).toBeCloseTo(0.004, 12)
    expect(t.received.bytes).toBe(500_000)
    expect(t.received.instantGbps).toBeCloseTo(0.004, 12)
    expect(t.instantGbps).toBeCloseTo(0.008, 12)

    client.sampleThroughput(2000) // the clock did not move: ignored
    expect(conn.throughput.samples).toBe(2)
    client.sampleThroughput(4000) // two idle seconds: the instant rate drops, the peak stays
    t = conn.throughput
    expect(t.samples).toBe(3)
    expect(t.instantGbps).toBe(0)
    expect(t.peakGbps).toBeCloseTo(0.008, 12)
    expect(t.sent.averageGbps).toBeCloseTo(0.004 / 3, 12)

    await conn.close()
    client.sampleThroughput(9000) // gone from the endpoint: no more samples
    expect(conn.throughput.samples).toBe(3)
    await client.close()
    await server.close()
  })

  it('runs one shared timer per endpoint, only while connections live', async () => {
    const pki = await testPki()
    const server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } }, { throughputSampleMs: 10 })
    server.on('connection', serveEcho)
    const client = await createEndpoint({ host: '127.0.0.1' }, { throughputSampleMs: 10 })
    expect(client.throughputSampling).toBe(false)
    const target = { host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' }
    const [a, b] = await Promise.all([client.connect(target), client.connect(target)])
    expect(client.throughputSampling).toBe(true)
    const data = pattern(200_000, 9)
    await Promise.all([echoOnce(a.openStream(), data), echoOnce(b.openStream(), data)])
    // Both connections are sampled by the endpoint's timer until each has a full interval after the transfer.
    await vi.waitFor(
      () => {
        for (const conn of [a, b]) {
          expect(conn.throughput.sent.bytes).toBe(data.length)
          expect(conn.throughput.peakGbps).toBeGreaterThan(0)
          expect(conn.throughput.averageGbps).toBeGreaterThan(0)
        }
      },
      { timeout: 20_000 },
    )
    await a.close()
    expect(client.throughputSampling).toBe(true)
    await b.close()
    expect(client.throughputSampling).toBe(false)
    await client.close()
    await server.close()
  })

  it('refuses a bad sampling interval with a typed error', async () => {
    await expect(createEndpoint({ host: '127.0.0.1' }, { throughputSampleMs: -1 })).rejects.toMatchObject({
      code: 'STOQ_ERR_INVALID_ARG',
    })
  })
})
