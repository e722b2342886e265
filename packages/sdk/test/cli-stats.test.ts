import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki } from '@stoq/compliance-tests'
import { createMetricsHandler, createMetricsRegistry } from '@stoq/monitoring'
import { createEndpoint, type Endpoint, type QuicConnection } from '@stoq/transport-core'
import { STATS_EXIT_NOT_METRICS, STATS_EXIT_UNREACHABLE, type StatsFigures } from '../src/cli/stats.js'
import { CliRunner, type Run } from './cli-runner.js'

const cli = new CliRunner('stoq-cli-stats-')
const runCli = (args: string[], timeoutMs?: number): Promise<Run> => cli.run(args, { timeoutMs: timeoutMs ?? 30_000 })

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; url: string }> {
  const server = createServer(handler!)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

let serverEp: Endpoint
let clientEp: Endpoint
let conn: QuicConnection
let metrics: { server: Server; url: string }
const SENT = 300_001

beforeAll(async () => {
  const pki = await testPki()
  const registry = createMetricsRegistry()
  serverEp = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } }, { metrics: registry })
  const received = new Promise<number>((resolve) => {
    serverEp.on('connection', (c) => {
      c.on('stream', async (s) => {
        let n = 0
        for await (const chunk of s.readable!) n += chunk.length
        resolve(n)
      })
    })
  })
  clientEp = await createEndpoint({ host: '127.0.0.1' }, { metrics: registry })
  conn = await clientEp.connect({ host: '127.0.0.1', port: serverEp.address.port, ca: pki.ca, serverName: 'localhost' })
  await conn.send(new Uint8Array(SENT).fill(7))
  expect(await received).toBe(SENT)
  metrics = await listen(createMetricsHandler(registry))
})

afterAll(async () => {
  cli.cleanup()
  metrics?.server.close()
  await clientEp?.close()
  await serverEp?.close()
})

describe('stoq stats', () => {
  it('prints the key figures of a live /metrics endpoint as JSON', async () => {
    const udpBefore = serverEp.stats().udp.bytesSent + clientEp.stats().udp.bytesSent
    const run = await runCli(['stats', `${metrics.url}/metrics`, '--json'])
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const f = JSON.parse(run.stdout) as StatsFigures
    expect(f.url).toBe(`${metrics.url}/metrics`)
    expect(f.connections).toBe(2) // one per endpoint
    // What the client's application sent is what the server's application read: summed, both counted once.
    expect(f.appBytesSent).toBe(SENT)
    expect(f.appBytesReceived).toBe(SENT)
    const s = serverEp.stats()
    const c = clientEp.stats()
    // UDP totals are those of the two endpoints at the moment of the scrape (an ACK may leave meanwhile).
    expect(f.udpBytesSent).toBeGreaterThanOrEqual(udpBefore)
    expect(f.udpBytesSent).toBeLessThanOrEqual(s.udp.bytesSent + c.udp.bytesSent)
    expect(f.handshakes).toBe(2)
    expect(f.packetsSent).toBeGreaterThan(0)
    expect(f.packetsLost).toBeGreaterThanOrEqual(0)
    expect(f.rttMs).toBeGreaterThanOrEqual(0) // quiche reports whole ms: 0 on loopback
    if (c.engine === 'quinn') expect(f.rttMs).toBeGreaterThan(0)
    expect(f.scrapeRateGbps).toBeNull()
    expect(f.endpoints).toHaveLength(2)
    expect(f.endpoints).toContainEqual({ port: String(clientEp.address.port), backend: c.udp.backend, engine: c.engine })
  })

  it('prints a readable summary, and appends one line per refresh with --watch when not a terminal', async () => {
    const once = await runCli(['stats', `${metrics.url}/metrics`])
    expect(once.code).toBe(0)
    for (const label of ['throughput', 'connections', 'app bytes', 'UDP bytes', 'loss', 'RTT', 'endpoints']) {
      expect(once.stdout).toContain(label)
    }
    expect(once.stdout).toContain(`:${serverEp.address.port} ${serverEp.stats().engine}/${serverEp.stats().udp.backend}`)

    const watch = await runCli(['stats', `${metrics.url}/metrics`, '--watch', '--interval', '0.05', '--count', '3'])
    expect(watch.code).toBe(0)
    const lines = watch.stdout.trimEnd().split('\n')
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatch(/rate=-Gbps conns=2 sent=300001 received=300001 /)
    expect(lines[2]).toMatch(/rate=\d+(\.\d+)?Gbps/)
    expect(watch.stdout).not.toContain('\x1b[')

    const json = await runCli(['stats', `${metrics.url}/metrics`, '--watch', '--json', '--interval', '0.05', '--count', '2'])
    const docs = json.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as StatsFigures)
    expect(docs).toHaveLength(2)
    expect(docs[0]!.scrapeRateGbps).toBeNull()
    expect(docs[1]!.scrapeRateGbps).toBe(0) // nothing moved between the scrapes
  })

  it('exits with distinct codes and clear messages for unreachable URLs and answers that are not metrics', async () => {
    // A port nothing listens on: bind one, note it, close it.
    const gone = await listen((_, res) => res.end())
    gone.server.close()
    await once(gone.server, 'close')
    const refused = await runCli(['stats', `${gone.url}/metrics`, '--json'])
    expect(refused.code).toBe(STATS_EXIT_UNREACHABLE)
    expect(refused.stderr).toMatch(/^stoq stats: STOQ_ERR_SOCKET: cannot reach .*ECONNREFUSED/)
    expect(refused.stdout).toBe('')

    const html = await listen((_, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end('<!doctype html>\n<html><body>hello</body></html>\n')
    })
    try {
      const notMetrics = await runCli(['stats', `${html.url}/`])
      expect(notMetrics.code).toBe(STATS_EXIT_NOT_METRICS)
      expect(notMetrics.stderr).toMatch(/STOQ_ERR_PROTOCOL: .* did not answer with Prometheus metrics: .*line 1/)
    } finally {
      html.server.close()
    }

    const missing = await runCli(['stats', `${metrics.url}/nope`])
    expect(missing.code).toBe(STATS_EXIT_NOT_METRICS)
    expect(missing.stderr).toContain('answered HTTP 404')

    const usage = await runCli(['stats', 'ftp://x/metrics'])
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain('expected an http:// or https:// URL')
    const noUrl = await runCli(['stats'])
    expect(noUrl.code).toBe(2)
  })

  it('has --help and is listed in the command list', async () => {
    const help = await runCli(['stats', '--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/^Usage: stoq stats URL/)
    expect(help.stdout).toContain('--watch')
    expect(help.stdout).toContain('--interval S')
    const all = await runCli(['help'])
    expect(all.stdout).toContain('stats URL')
    expect((await runCli(['help', 'stats'])).stdout).toBe(help.stdout)
  })
})
