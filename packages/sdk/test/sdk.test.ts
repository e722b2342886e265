import os from 'node:os'
import { beforeAll, describe, expect, it } from 'vitest'
import { parseTarget, Stoq, StoqError } from '../src/index.js'
import { browsers } from '../examples/browsers.js'
import { testPki, type TestPki } from '@stoq/compliance-tests'

let pki: TestPki
beforeAll(async () => {
  pki = await testPki()
})

describe('Stoq facade', () => {
  it('runs the README browsers example (WebTransport and native clients on one port)', async () => {
    const fs = await import('node:fs')
    const os = await import('node:os')
    const path = await import('node:path')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-browsers-'))
    try {
      expect(await browsers({ identityDir: dir })).toBe('hello, browser')
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 30_000)

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
    expect(stats).toMatchObject({ name: 'cli', endpoints: 1, connections: 1, engine: 'quinn' })
    expect(stats.engineChoice).toContain('quinn')
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

describe('stoq doctor', () => {
  it('reports capabilities and the paths STOQ takes, as text and as JSON from the CLI', async () => {
    const { doctor, formatDoctor } = await import('../src/index.js')
    const report = await doctor()
    // Where the README's install built the quinn library, auto picks it; quiche is always there.
    expect(report.engine).toMatchObject({ name: 'quinn', available: true })
    expect(report.engine.detail).toContain('engine auto: quinn')
    expect(report.engines.map((e) => [e.name, e.available])).toEqual([
      ['quinn', true],
      ['quiche', true],
    ])
    expect(formatDoctor(report)).toContain('QUIC engines:')
    expect(['gro', 'gso', 'dgram']).toContain(report.udp.backend)
    expect(report.udp.detail).toContain('udpBackend auto')
    expect(typeof report.capabilities.gso.available).toBe('boolean')
    expect(formatDoctor(report)).toContain('STOQ will use:')
    // Servers (listen) run engine workers where this machine can and it pays (one per two CPUs
    // from 4 CPUs on), or none and why.
    if (report.capabilities.gro.available && os.availableParallelism() >= 4) {
      expect(report.workers.count).toBe(Math.floor(os.availableParallelism() / 2))
      expect(report.workers.detail).toMatch(/engine workers, each running quinn.*SO_REUSEPORT, steered by connection ID/)
    } else {
      expect(report.workers.count).toBe(0)
      expect(report.workers.detail).toMatch(/workers auto: /)
    }
    expect(formatDoctor(report)).toMatch(/ {2}servers {7}/)

    const { execFile } = await import('node:child_process')
    const { promisify } = await import('node:util')
    const { fileURLToPath } = await import('node:url')
    const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
    const { stdout } = await promisify(execFile)(process.execPath, [cli, 'doctor', '--json'])
    const json = JSON.parse(stdout) as { udp: { backend: string }; capabilities: Record<string, unknown> }
    expect(json.udp.backend).toBe(report.udp.backend)
    expect(Object.keys(json.capabilities)).toContain('nicOffloads')
    let code = 0
    try {
      await promisify(execFile)(process.execPath, [cli, 'no-such-command'])
    } catch (err) {
      code = (err as { code: number }).code
    }
    expect(code).toBe(2)
  })
})

describe('Stoq stats', () => {
  it('counts payload exactly on both sides and reports throughput per second', async () => {
    const server = await Stoq.create('sink')
    const size = 8 * 1024 * 1024
    let received = 0
    const done = new Promise<void>((resolve) => {
      void server
        .listen(
          { host: '127.0.0.1', port: 0 },
          {
            cert: pki.server.cert,
            key: pki.server.key,
            onStream: (stream) =>
              void (async () => {
                for await (const chunk of stream.readable!) received += chunk.length
                resolve()
              })(),
          },
        )
        .then((ep) => {
          port = ep.address.port
          ready()
        })
    })
    let port = 0
    let ready!: () => void
    await new Promise<void>((r) => (ready = r))
    const client = await Stoq.create('source')
    const conn = await client.connect(`127.0.0.1:${port}`, { ca: pki.ca, serverName: 'localhost' })
    const w = conn.openStream().writable!.getWriter()
    const chunk = new Uint8Array(64 * 1024).fill(9)
    for (let sent = 0; sent < size; sent += chunk.length) await w.write(chunk)
    await w.close()
    await done
    expect(received).toBe(size)
    // Wait for a per-second sample to cover the transfer.
    await new Promise((r) => setTimeout(r, 1100))
    const c = client.stats()
    const s = server.stats()
    expect(c.appBytesSent).toBe(size)
    expect(s.appBytesReceived).toBe(size)
    expect(c.peakGbps).toBeGreaterThan(0)
    expect(s.averageGbps).toBeGreaterThan(0)
    await conn.close()
    // Totals survive the connection's end.
    expect(client.stats().appBytesSent).toBe(size)
    await client.close()
    await server.close()
  })
})
