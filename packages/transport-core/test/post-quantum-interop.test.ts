/**
 * X25519MLKEM768 against foreign stacks (issue #19), quinn engine only:
 * - OpenSSL 3.5's QUIC client (`openssl s_client -quic`, Debian trixie's packages, fetched into
 *   a cache by fixtures/openssl-trixie.ts) negotiates X25519MLKEM768 with a STOQ server, and
 *   X25519 when it offers only X25519;
 * - quic-go 0.29 (interop/quic-go, Debian's; no ML-KEM) connects both ways through X25519. A
 *   relay (fixtures/handshake-relay.ts) reads the packet types of each datagram, which shows
 *   whether a HelloRetryRequest happened; it is calibrated on a STOQ server that forces one.
 * A missing download or peer fails the tests with the reason; they are never skipped.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildQuicGoPeer, quicGoPeerBinary, startQuicGoPeer, testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type Endpoint, type QuicConnection } from '../src/index.js'
import { serveEcho } from './fixtures/echo.js'
import { handshakeRelay, type HandshakeRelay } from './fixtures/handshake-relay.js'
import { ensureTrixieOpenssl, type TrixieOpenssl } from './fixtures/openssl-trixie.js'

const ENGINE = process.env.STOQ_ENGINE
const quinnOnly = ENGINE === 'quinn' ? describe : describe.skip

const execFileP = promisify(execFile)

let pki: TestPki
let dir: string
const open: Endpoint[] = []
const relays: HandshakeRelay[] = []
const children: ChildProcess[] = []

beforeAll(async () => {
  pki = await testPki()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-pq-interop-'))
  fs.writeFileSync(path.join(dir, 'cert.pem'), pki.server.cert)
  fs.writeFileSync(path.join(dir, 'key.pem'), pki.server.key)
  fs.writeFileSync(path.join(dir, 'ca.pem'), pki.ca)
})

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL')
  for (const r of relays) r.close()
  await Promise.all(open.map((e) => e.close()))
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

async function server(extra: Record<string, unknown> = {}): Promise<{ ep: Endpoint; accepted: QuicConnection[] }> {
  const ep = await createEndpoint({ host: '127.0.0.1', engine: 'quinn', server: { cert: pki.server.cert, key: pki.server.key }, ...extra })
  open.push(ep)
  const accepted: QuicConnection[] = []
  ep.on('connection', (c: QuicConnection) => {
    accepted.push(c)
    serveEcho(c)
  })
  return { ep, accepted }
}

async function serverSide(accepted: QuicConnection[]): Promise<QuicConnection> {
  for (let i = 0; i < 300 && accepted.length === 0; i++) await new Promise((r) => setTimeout(r, 10))
  expect(accepted.length).toBeGreaterThan(0)
  return accepted[accepted.length - 1]!
}

async function relay(port: number): Promise<HandshakeRelay> {
  const r = await handshakeRelay(port)
  relays.push(r)
  return r
}

quinnOnly("OpenSSL 3.5's QUIC client (Debian trixie) against a STOQ server", () => {
  let openssl: TrixieOpenssl

  beforeAll(() => {
    try {
      openssl = ensureTrixieOpenssl()
    } catch (err) {
      throw new Error(`Cannot get OpenSSL 3.5 from Debian trixie: ${(err as Error).message}`)
    }
  }, 600_000)

  /** The group in the ServerHello's key_share, from s_client's -trace output. */
  function serverHelloGroup(out: string): string | undefined {
    const at = out.lastIndexOf('ServerHello, Length=')
    return at < 0 ? undefined : /NamedGroup: (\S+)/.exec(out.slice(at))?.[1]
  }

  /** Runs s_client until the handshake is done (stdin closed: it then says goodbye). */
  async function sClient(port: number, groups: string): Promise<string> {
    const args = [
      ...openssl.prefix,
      's_client',
      '-quic',
      '-alpn',
      'stoq/1',
      '-connect',
      `127.0.0.1:${port}`,
      '-servername',
      'localhost',
      '-verify_hostname',
      'localhost',
      '-verify_return_error',
      '-trace',
      '-groups',
      groups,
      '-CAfile',
      path.join(dir, 'ca.pem'),
    ]
    return new Promise((resolve, reject) => {
      const child = spawn(openssl.command, args, { stdio: ['pipe', 'pipe', 'pipe'] })
      children.push(child)
      let out = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      child.stderr.on('data', (d: Buffer) => (out += d.toString()))
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`s_client did not finish:\n${out}`))
      }, 20_000)
      child.once('exit', () => {
        clearTimeout(timer)
        resolve(out)
      })
      child.stdin.end()
    })
  }

  it('negotiates X25519MLKEM768, and the certificate verifies', async () => {
    expect(openssl.version).toMatch(/^OpenSSL 3\.5/)
    const { ep, accepted } = await server()
    const r = await relay(ep.address.port)
    const out = await sClient(r.port, 'X25519MLKEM768')
    // (s_client prints no group name for a hybrid KEM outside its -trace of the ServerHello.)
    expect(out).toMatch(/Protocol: QUICv1/)
    expect(out).toMatch(/ALPN protocol: stoq\/1/)
    expect(serverHelloGroup(out)).toBe('X25519MLKEM768')
    expect(out).toMatch(/Verification: OK/)
    expect(out).toMatch(/Verify return code: 0 \(ok\)/)
    expect((await serverSide(accepted)).stats().keyExchangeGroup).toBe('X25519MLKEM768')
    // On the wire: OpenSSL sends the hybrid share alone (a 1445-byte ClientHello, more than
    // one datagram: measured 3 after the Retry, OpenSSL's own packetization).
    expect(r.hellos.map((h) => [h.type, h.groups])).toEqual([
      ['ClientHello', ['X25519MLKEM768']],
      ['ServerHello', ['X25519MLKEM768']],
    ])
    expect(r.hellos[0]!.datagrams).toBeGreaterThanOrEqual(2)
  })

  it('gets X25519 when it offers only X25519', async () => {
    const { ep, accepted } = await server()
    const out = await sClient(ep.address.port, 'X25519')
    expect(serverHelloGroup(out)).toBe('ecdh_x25519') // OpenSSL's trace name for X25519
    expect(out).toMatch(/Verification: OK/)
    expect((await serverSide(accepted)).stats().keyExchangeGroup).toBe('X25519')
  })
})

quinnOnly('quic-go 0.29 (no ML-KEM) and STOQ agree on X25519', () => {
  beforeAll(async () => {
    await buildQuicGoPeer()
  }, 600_000)

  function startGoServer(): Promise<number> {
    return startQuicGoPeer(
      'server',
      ['--listen', '127.0.0.1:0', '--cert', path.join(dir, 'cert.pem'), '--key', path.join(dir, 'key.pem'), '--alpn', 'stoq/1'],
      children,
    )
  }

  it('the relay reads hellos on the wire: a P-256-only STOQ server forces a HelloRetryRequest, a default one does not', async () => {
    const { ep: hrr } = await server({ keyExchange: ['P-256'] })
    const { ep: direct } = await server()
    const c = await createEndpoint({ host: '127.0.0.1', engine: 'quinn' })
    open.push(c)
    const r1 = await relay(hrr.address.port)
    const conn1 = await c.connect({ host: '127.0.0.1', port: r1.port, ca: pki.ca, serverName: 'localhost' })
    expect(conn1.stats().keyExchangeGroup).toBe('P-256')
    expect(r1.hellos.map((h) => [h.type, h.groups])).toEqual([
      ['ClientHello', ['X25519MLKEM768', 'X25519']],
      ['HelloRetryRequest', ['P-256']],
      ['ClientHello', ['P-256']],
      ['ServerHello', ['P-256']],
    ])
    // A fresh client: rustls remembers the group a server name last needed (P-256 here) and
    // would offer only that share to the next server of the same name.
    const c2 = await createEndpoint({ host: '127.0.0.1', engine: 'quinn' })
    open.push(c2)
    const r2 = await relay(direct.address.port)
    const conn2 = await c2.connect({ host: '127.0.0.1', port: r2.port, ca: pki.ca, serverName: 'localhost' })
    expect(conn2.stats().keyExchangeGroup).toBe('X25519MLKEM768')
    expect(r2.hellos.map((h) => [h.type, h.groups])).toEqual([
      ['ClientHello', ['X25519MLKEM768', 'X25519']],
      ['ServerHello', ['X25519MLKEM768']],
    ])
    // The hybrid ClientHello (a 1216-byte ML-KEM key plus X25519's 32) takes two datagrams.
    expect(r2.hellos[0]!.datagrams).toBe(2)
    // (STOQ servers send a Retry first by default, one per ClientHello datagram; the client
    // follows the first, and the relay counts from there.)
    expect(r2.retries).toBe(2)
    await conn1.close()
    await conn2.close()
  })

  it('a STOQ client (hybrid plus X25519 shares) gets X25519 from a quic-go server, without a HelloRetryRequest', async () => {
    const port = await startGoServer()
    const r = await relay(port)
    const c = await createEndpoint({ host: '127.0.0.1', engine: 'quinn' })
    open.push(c)
    const conn = await c.connect({ host: '127.0.0.1', port: r.port, ca: pki.ca, serverName: 'localhost' })
    expect(conn.alpn).toBe('stoq/1')
    expect(conn.stats().keyExchangeGroup).toBe('X25519')
    // quic-go 0.29 (Go 1.19's TLS) does not know 0x11ec, takes the X25519 share it was also
    // offered, and answers with a ServerHello at once.
    expect(r.hellos.map((h) => [h.type, h.groups])).toEqual([
      ['ClientHello', ['X25519MLKEM768', 'X25519']],
      ['ServerHello', ['X25519']],
    ])
    expect(r.hellos[0]!.datagrams).toBe(2)
    expect(r.retries).toBe(0)
    await conn.close()
  })

  it('a quic-go client (X25519 share only) gets X25519 from a default STOQ server, without a HelloRetryRequest', async () => {
    const { ep, accepted } = await server()
    const r = await relay(ep.address.port)
    let result: Record<string, unknown>
    try {
      const { stdout } = await execFileP(
        quicGoPeerBinary,
        ['client', '--connect', `127.0.0.1:${r.port}`, '--alpn', 'stoq/1', '--ca', path.join(dir, 'ca.pem'), '--sni', 'localhost', '--bytes', '100000'],
        { timeout: 60_000 },
      )
      result = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string }
      throw new Error(`quic-go client failed: ${e.stdout ?? ''} ${e.stderr ?? ''} ${e.message}`)
    }
    expect(result).toMatchObject({ ok: true, alpn: 'stoq/1', bytesVerified: true })
    expect((await serverSide(accepted)).stats().keyExchangeGroup).toBe('X25519')
    // Go 1.19's client sends one X25519 share; the STOQ server (X25519MLKEM768 first) has
    // that share and takes it: no HelloRetryRequest. The ClientHello fits one datagram.
    expect(r.hellos.map((h) => [h.type, h.groups])).toEqual([
      ['ClientHello', ['X25519']],
      ['ServerHello', ['X25519']],
    ])
    expect(r.hellos[0]!.datagrams).toBe(1)
  })
})
