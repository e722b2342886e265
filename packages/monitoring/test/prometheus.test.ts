import { once } from 'node:events'
import { createServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { StoqError } from '@stoq/interface'
import { afterEach, describe, expect, it } from 'vitest'
import { DEFAULT_RTT_BUCKETS_MS, PROMETHEUS_CONTENT_TYPE, createMetricsHandler, createMetricsRegistry, toPrometheusText } from '../src/index.js'
import { parseExposition, sampleValue } from './exposition-parser.js'

describe('exposition text', () => {
  it('writes the exact 0.0.4 text for a small registry', () => {
    const registry = createMetricsRegistry()
    registry.counter('stoq_bytes_sent_total', 'Bytes sent to the peer.', { conn: '1' }).add(4096)
    registry.counter('stoq_bytes_sent_total', 'Bytes sent to the peer.', { conn: '2' }).add(12)
    registry.gauge('stoq_cwnd_bytes', 'Congestion window.').set(14720)
    const rtt = registry.histogram('stoq_rtt_ms', 'Smoothed RTT.', [0.5, 1, 2.5])
    for (const v of [0.2, 0.5, 0.7, 3]) rtt.observe(v)
    expect(toPrometheusText(registry)).toBe(
      [
        '# HELP stoq_bytes_sent_total Bytes sent to the peer.',
        '# TYPE stoq_bytes_sent_total counter',
        'stoq_bytes_sent_total{conn="1"} 4096',
        'stoq_bytes_sent_total{conn="2"} 12',
        '# HELP stoq_cwnd_bytes Congestion window.',
        '# TYPE stoq_cwnd_bytes gauge',
        'stoq_cwnd_bytes 14720',
        '# HELP stoq_rtt_ms Smoothed RTT.',
        '# TYPE stoq_rtt_ms histogram',
        'stoq_rtt_ms_bucket{le="0.5"} 2',
        'stoq_rtt_ms_bucket{le="1"} 3',
        'stoq_rtt_ms_bucket{le="2.5"} 3',
        'stoq_rtt_ms_bucket{le="+Inf"} 4',
        'stoq_rtt_ms_sum 4.4',
        'stoq_rtt_ms_count 4',
        '',
      ].join('\n'),
    )
  })

  it('is empty for an empty registry', () => {
    expect(toPrometheusText(createMetricsRegistry())).toBe('')
  })

  it('parses line by line and carries every value', () => {
    const registry = createMetricsRegistry({ defaultLabels: { instance: 'edge-1' } })
    const expected = new Map<string, number>()
    for (let conn = 0; conn < 20; conn++) {
      for (const direction of ['sent', 'received']) {
        const value = conn * 1_000_003 + (direction === 'sent' ? 7 : 0)
        registry.counter('stoq_bytes_total', 'Bytes.', { conn: String(conn), direction }).add(value)
        expected.set(`${conn}/${direction}`, value)
      }
    }
    registry.gauge('stoq_ratio', 'A fraction.').set(0.1 + 0.2)
    registry.gauge('stoq_big', 'A large number.').set(1e21)
    registry.gauge('stoq_tiny', 'A small number.').set(-5e-7)
    registry.gauge('stoq_nan', 'Not a number.').set(NaN)
    registry.gauge('stoq_inf', 'Infinite.').set(-Infinity)
    const rtt = registry.histogram('stoq_rtt_ms', 'RTT.', DEFAULT_RTT_BUCKETS_MS, { peer: '[::1]:4433' })
    const observed = [0.04, 0.3, 0.3, 12, 700, 5000]
    for (const v of observed) rtt.observe(v)

    const families = parseExposition(toPrometheusText(registry))
    expect(families.get('stoq_bytes_total')).toMatchObject({ type: 'counter', help: 'Bytes.' })
    expect(families.get('stoq_bytes_total')!.samples).toHaveLength(40)
    for (const [key, value] of expected) {
      const [conn, direction] = key.split('/') as [string, string]
      expect(sampleValue(families, 'stoq_bytes_total', { instance: 'edge-1', conn, direction })).toBe(value)
    }
    expect(sampleValue(families, 'stoq_ratio', { instance: 'edge-1' })).toBe(0.1 + 0.2)
    expect(sampleValue(families, 'stoq_big', { instance: 'edge-1' })).toBe(1e21)
    expect(sampleValue(families, 'stoq_tiny', { instance: 'edge-1' })).toBe(-5e-7)
    expect(sampleValue(families, 'stoq_nan', { instance: 'edge-1' })).toBeNaN()
    expect(sampleValue(families, 'stoq_inf', { instance: 'edge-1' })).toBe(-Infinity)

    const labels = { instance: 'edge-1', peer: '[::1]:4433' }
    expect(families.get('stoq_rtt_ms')!.type).toBe('histogram')
    for (const le of DEFAULT_RTT_BUCKETS_MS) {
      expect(sampleValue(families, 'stoq_rtt_ms_bucket', { ...labels, le: String(le) })).toBe(observed.filter((v) => v <= le).length)
    }
    expect(sampleValue(families, 'stoq_rtt_ms_bucket', { ...labels, le: '+Inf' })).toBe(6)
    expect(sampleValue(families, 'stoq_rtt_ms_count', labels)).toBe(6)
    expect(sampleValue(families, 'stoq_rtt_ms_sum', labels)).toBe(observed.reduce((a, b) => a + b, 0))
  })

  it('round-trips label values and help text with backslashes, quotes and newlines', () => {
    const values = [
      'plain',
      '',
      'back\\slash',
      'quote"d',
      'new\nline',
      '\\n is not a newline',
      '\\"',
      'trailing backslash\\',
      '"\n\\"\n\\',
      'unicode ✓ 日本 {},=',
    ]
    const help = 'Help with a \\ backslash,\na newline and "quotes".'
    const registry = createMetricsRegistry()
    values.forEach((value, i) => {
      registry.gauge('escaped', help, { v: value }).set(i)
    })
    const text = toPrometheusText(registry)
    // Every sample stays on one line.
    expect(text.trimEnd().split('\n')).toHaveLength(2 + values.length)
    const families = parseExposition(text)
    expect(families.get('escaped')!.help).toBe(help)
    values.forEach((value, i) => {
      expect(sampleValue(families, 'escaped', { v: value })).toBe(i)
    })
  })

  it('runs collectors before writing', () => {
    const registry = createMetricsRegistry()
    const source = { inUse: 3 }
    const gauge = registry.gauge('pool_in_use', 'In use.')
    registry.collect(() => gauge.set(source.inUse))
    source.inUse = 11
    expect(sampleValue(parseExposition(toPrometheusText(registry)), 'pool_in_use')).toBe(11)
  })
})

describe('the test parser itself', () => {
  it('refuses malformed lines', () => {
    const bad = [
      'a{b="c"}1\n',
      'a{b="c",} 1\n',
      'a{b="c} 1\n',
      'a{b="\\x"} 1\n',
      'a{1b="c"} 1\n',
      'a{b="c",b="d"} 1\n',
      'a one\n',
      'a  1\n',
      'a 1',
      '# TYPE a counter\n# TYPE a counter\n',
      '# TYPE a thing\n',
      'a 1\nb 1\na 2\n',
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
    ]
    for (const text of bad) expect(() => parseExposition(text), JSON.stringify(text)).toThrow()
  })
})

describe('HTTP handler', () => {
  let server: Server | undefined

  afterEach(async () => {
    if (server?.listening) {
      server.close()
      await once(server, 'close')
    }
  })

  async function serve(handler: ReturnType<typeof createMetricsHandler>): Promise<number> {
    server = createServer(handler)
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    return (server.address() as AddressInfo).port
  }

  function fetchRaw(
    port: number,
    method: string,
    path: string,
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
      req.on('error', reject)
      req.end()
    })
  }

  it('serves GET /metrics, 404 elsewhere, 405 for other methods', async () => {
    const registry = createMetricsRegistry()
    const requests = registry.counter('stoq_scrapes_total', 'Scrapes.')
    registry.collect(() => requests.add(1))
    registry.gauge('stoq_label', 'Label.', { v: 'a"b\\c\nd' }).set(1)
    const port = await serve(createMetricsHandler(registry))

    const ok = await fetchRaw(port, 'GET', '/metrics')
    expect(ok.status).toBe(200)
    expect(ok.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8')
    expect(ok.headers['content-type']).toBe(PROMETHEUS_CONTENT_TYPE)
    expect(Number(ok.headers['content-length'])).toBe(Buffer.byteLength(ok.body))
    const families = parseExposition(ok.body)
    expect(sampleValue(families, 'stoq_scrapes_total')).toBe(1)
    expect(sampleValue(families, 'stoq_label', { v: 'a"b\\c\nd' })).toBe(1)

    const withQuery = await fetchRaw(port, 'GET', '/metrics?name[]=x')
    expect(withQuery.status).toBe(200)
    expect(sampleValue(parseExposition(withQuery.body), 'stoq_scrapes_total')).toBe(2)

    const head = await fetchRaw(port, 'HEAD', '/metrics')
    expect(head.status).toBe(200)
    expect(head.headers['content-type']).toBe(PROMETHEUS_CONTENT_TYPE)
    expect(head.body).toBe('')

    for (const path of ['/other', '/', '/metrics/', '/metricsx']) {
      expect((await fetchRaw(port, 'GET', path)).status).toBe(404)
    }
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const refused = await fetchRaw(port, method, '/metrics')
      expect(refused.status).toBe(405)
      expect(refused.headers['allow']).toBe('GET, HEAD')
    }
  })

  it('serves a custom path and reports a failing collector as 500', async () => {
    const registry = createMetricsRegistry()
    let fail = false
    registry.collect(() => {
      if (fail) throw new Error('pool closed')
    })
    const port = await serve(createMetricsHandler(registry, { path: '/stoq/metrics' }))
    expect((await fetchRaw(port, 'GET', '/stoq/metrics')).status).toBe(200)
    expect((await fetchRaw(port, 'GET', '/metrics')).status).toBe(404)
    fail = true
    const failed = await fetchRaw(port, 'GET', '/stoq/metrics')
    expect(failed.status).toBe(500)
    expect(failed.body).toContain('pool closed')
  })

  it('validates its options', () => {
    const registry = createMetricsRegistry()
    for (const options of [{ path: 'metrics' }, { path: '/a?b' }, { paht: '/x' }] as never[]) {
      try {
        createMetricsHandler(registry, options)
        throw new Error('expected a StoqError')
      } catch (err) {
        expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
      }
    }
    expect(() => createMetricsHandler({} as never)).toThrow(/snapshot/)
  })
})
