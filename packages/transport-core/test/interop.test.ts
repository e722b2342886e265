/**
 * Interop with a foreign QUIC stack: quic-go (Debian's golang-github-lucas-clemente-quic-go-dev),
 * through the small echo peer in interop/quic-go. The peer is built (and its
 * packages installed with apt) by interop/quic-go/build.sh; when that fails the
 * tests fail with its message, they are never skipped.
 */
import type { ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEndpoint, type Endpoint } from '../src/index.js'
import { buildQuicGoPeer, runQuicGoClient, startQuicGoPeer, testPki, type TestPki } from '@stoq/compliance-tests'
import { echoOnce, pattern, readAll, serveEcho, sha256 } from './fixtures/echo.js'

let pki: TestPki
let dir: string
const children: ChildProcess[] = []

beforeAll(async () => {
  await buildQuicGoPeer()
  pki = await testPki()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-interop-'))
  fs.writeFileSync(path.join(dir, 'cert.pem'), pki.server.cert)
  fs.writeFileSync(path.join(dir, 'key.pem'), pki.server.key)
  fs.writeFileSync(path.join(dir, 'ca.pem'), pki.ca)
}, 600_000)

afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

function startGoServer(listen: string): Promise<number> {
  return startQuicGoPeer('server', ['--listen', listen, '--cert', path.join(dir, 'cert.pem'), '--key', path.join(dir, 'key.pem'), '--alpn', 'stoq/1'], children)
}

const runGoClient = runQuicGoClient

for (const family of ['127.0.0.1', '::1'] as const) {
  describe(`STOQ client against quic-go server over ${family}`, () => {
    let client: Endpoint
    let port: number

    beforeAll(async () => {
      port = await startGoServer(family === '::1' ? '[::1]:0' : '127.0.0.1:0')
      client = await createEndpoint({ host: family })
    })

    afterAll(async () => {
      await client?.close()
    })

    it('negotiates ALPN, echoes 10 MiB and 100 concurrent streams, uni streams and datagrams', async () => {
      const conn = await client.connect({ host: family, port, ca: pki.ca, serverName: 'localhost' })
      expect(conn.alpn).toBe('stoq/1')

      const big = pattern(10 * 1024 * 1024, 21)
      expect(sha256(await echoOnce(conn.openStream(), big))).toBe(sha256(big))

      const ok = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const data = pattern(1000 + i, 100 + i)
          return sha256(await echoOnce(conn.openStream(), data)) === sha256(data)
        }),
      )
      expect(ok.every(Boolean)).toBe(true)

      const uniData = pattern(64 * 1024, 5)
      const back = new Promise<Uint8Array>((resolve) => conn.once('stream', (s) => resolve(readAll(s.readable!))))
      const uni = conn.openStream({ unidirectional: true })
      const w = uni.writable!.getWriter()
      await w.write(uniData)
      await w.close()
      expect(sha256(await back)).toBe(sha256(uniData))

      // quic-go 0.29 accepts datagram frames up to 1220 bytes.
      expect(conn.maxDatagramSize).toBeGreaterThan(1000)
      const received = new Set<string>()
      conn.on('datagram', (d) => received.add(Buffer.from(d).toString()))
      const want = Array.from({ length: 10 }, (_, i) => `interop-datagram-${i}`)
      for (let round = 0; round < 10 && received.size < want.length; round++) {
        for (const d of want) if (!received.has(d)) conn.sendDatagram(d)
        await new Promise((r) => setTimeout(r, 100))
      }
      expect([...received].sort()).toEqual([...want].sort())
      await conn.close(0, 'done')
    })

    it('resumes a second connection with the session ticket quic-go sent (quinn; quiche does not resume)', async () => {
      const ep = await createEndpoint({ host: family })
      try {
        const quinn = ep.stats().engine === 'quinn'
        const dial = () => ep.connect({ host: family, port, ca: pki.ca, serverName: 'localhost' })
        const first = await dial()
        expect(first.stats().resumed).toBe(false)
        if (quinn) {
          // quic-go sends its ticket just after the handshake.
          for (let i = 0; i < 500 && ep.stats().sessionCache!.tickets === 0; i++) await new Promise((r) => setTimeout(r, 10))
          expect(ep.stats().sessionCache!.tickets).toBeGreaterThan(0)
        }
        await first.close(0, 'done')
        const second = await dial()
        const resumed = second.stats()
        // (Byte counts: with this one small leaf certificate both flights fit one padded datagram;
        // resumption.test.ts shows the saving with a realistic chain.)
        expect(resumed.resumed).toBe(quinn)
        const data = pattern(100 * 1024, 8)
        expect(sha256(await echoOnce(second.openStream(), data))).toBe(sha256(data))
        await second.close(0, 'done')
      } finally {
        await ep.close()
      }
    })
  })

  describe(`quic-go client against STOQ server over ${family}`, () => {
    let server: Endpoint

    beforeAll(async () => {
      server = await createEndpoint({ host: family, server: { cert: pki.server.cert, key: pki.server.key } })
      server.on('connection', serveEcho)
    })

    afterAll(async () => {
      await server?.close()
    })

    it('echoes 10 MiB, 100 concurrent streams, a uni stream and datagrams', async () => {
      const host = family === '::1' ? `[::1]:${server.address.port}` : `127.0.0.1:${server.address.port}`
      const result = await runGoClient([
        '--connect',
        host,
        '--alpn',
        'stoq/1',
        '--ca',
        path.join(dir, 'ca.pem'),
        '--sni',
        'localhost',
        '--bytes',
        String(10 * 1024 * 1024),
        '--streams',
        '100',
        '--datagrams',
        '20',
        '--uni',
      ])
      expect(result).toMatchObject({
        ok: true,
        alpn: 'stoq/1',
        bytesVerified: true,
        streams: 100,
        streamsOk: 100,
        uniOk: true,
        datagramsEchoed: 20,
      })
    })

    it('is refused by the STOQ server when it offers no common ALPN', async () => {
      const host = family === '::1' ? `[::1]:${server.address.port}` : `127.0.0.1:${server.address.port}`
      let failure: unknown
      try {
        await runGoClient(['--connect', host, '--alpn', 'h3', '--ca', path.join(dir, 'ca.pem'), '--sni', 'localhost', '--bytes', '10'])
      } catch (err) {
        failure = err
      }
      expect(String(failure)).toMatch(/"ok":false/)
      expect(String(failure)).toMatch(/handshake/)
    })
  })
}
