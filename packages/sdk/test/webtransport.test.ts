import { X509Certificate, createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readAllText } from '@stoq/compliance-tests'
import {
  connectWebTransport,
  createWebTransportCertificate,
  Stoq,
  StoqError,
  StoqWebTransportError,
  type BrowserCertificate,
  type Endpoint,
  type QuicConnection,
  type WebTransportSession,
} from '../src/index.js'

const DAY = 86_400_000
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-sdk-wt-'))
const savedXdg = process.env.XDG_CONFIG_HOME
// Anything that falls back to the XDG dir stays inside the temp dir.
process.env.XDG_CONFIG_HOME = path.join(root, 'xdg')
afterAll(() => {
  if (savedXdg === undefined) delete process.env.XDG_CONFIG_HOME
  else process.env.XDG_CONFIG_HOME = savedXdg
  fs.rmSync(root, { recursive: true, force: true })
})

const enc = new TextEncoder()
const dec = new TextDecoder()

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<unknown> {
  try {
    await (typeof p === 'function' ? p() : p)
  } catch (e) {
    return e
  }
  return null
}

/** Polls `check`; a hang guard, not a timing assertion. */
async function eventually(check: () => boolean, limitMs = 10_000): Promise<void> {
  const deadline = Date.now() + limitMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached')
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('listen with webtransport and native handlers on one port', () => {
  const dir = path.join(root, 'server-id')
  let server: Stoq
  let ep: Endpoint
  let cert: BrowserCertificate
  const sessions: WebTransportSession[] = []
  const native: QuicConnection[] = []

  beforeAll(async () => {
    server = await Stoq.create('wt-server', { identity: { dir } })
    ep = await server.listen(
      { host: '127.0.0.1', port: 0 },
      {
        onConnection: (conn) => native.push(conn),
        onStream: (stream) => void stream.readable!.pipeTo(stream.writable!).catch(() => {}),
        onDatagram: (d, conn) => void conn.sendDatagram(d),
        webtransport: {
          path: '/echo',
          onSession: (session) => {
            sessions.push(session)
            session.on('stream', (s) => void s.readable!.pipeTo(s.writable!).catch(() => {}))
            session.on('datagram', (d) => {
              try {
                session.sendDatagram(d)
              } catch {
                // Session closed.
              }
            })
          },
        },
      },
    )
    cert = await server.browserCertificate()
  })
  afterAll(async () => {
    await server?.close()
  })

  const url = (p = '/echo') => `https://127.0.0.1:${ep.address.port}${p}`

  it('serves the browser certificate (ECDSA P-256, at most 14 days) and exposes its hash', async () => {
    const x = new X509Certificate(cert.cert)
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1')
    expect(new Date(x.validTo).getTime() - new Date(x.validFrom).getTime()).toBeLessThanOrEqual(14 * DAY)
    expect(cert.notAfter.getTime()).toBe(new Date(x.validTo).getTime())
    expect(cert.sha256Hex).toBe(createHash('sha256').update(x.raw).digest('hex'))
    expect(Buffer.from(cert.sha256).toString('hex')).toBe(cert.sha256Hex)
    expect(cert.serverCertificateHashes).toEqual([{ algorithm: 'sha-256', value: cert.sha256 }])
    expect(cert.dir).toBe(dir)
  })

  it('a WebTransport client echoes on a bidirectional stream and round-trips a datagram', async () => {
    const session = await connectWebTransport(url(), { serverCertificateHashes: cert.serverCertificateHashes, origin: 'https://app.test' })
    try {
      expect(session.connection.alpn).toBe('h3')
      await eventually(() => sessions.some((s) => s.id === session.id && !s.isClosed))
      expect(sessions.at(-1)!.origin).toBe('https://app.test')

      const stream = session.openStream()
      const w = stream.writable!.getWriter()
      const echoed = readAllText(stream.readable!)
      await w.write(enc.encode('hello over WebTransport'))
      await w.close()
      expect(await echoed).toBe('hello over WebTransport')

      // Datagrams are unreliable: resend until one comes back (bounded rounds).
      let got: string | null = null
      session.on('datagram', (d) => {
        got = dec.decode(d)
      })
      for (let round = 0; round < 50 && got === null; round++) {
        session.sendDatagram('ping-wt')
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(got).toBe('ping-wt')
    } finally {
      await session.close()
    }
    // The WebTransport connection never reached the native handlers.
    expect(native.every((c) => c.alpn === 'stoq/1')).toBe(true)
  })

  it('a native stoq.connect client on the same port still echoes (pinning the browser certificate)', async () => {
    const client = await Stoq.create('wt-native-client', { identity: { dir: path.join(root, 'native-client') } })
    try {
      const before = native.length
      const conn = await client.connect(`127.0.0.1:${ep.address.port}`, { pin: cert.sha256Hex })
      expect(conn.alpn).toBe('stoq/1')
      const stream = conn.openStream()
      const w = stream.writable!.getWriter()
      const echoed = readAllText(stream.readable!)
      await w.write(enc.encode('hello over STOQ'))
      await w.close()
      expect(await echoed).toBe('hello over STOQ')
      await eventually(() => native.length === before + 1)
      expect(native.at(-1)!.alpn).toBe('stoq/1')

      let got: string | null = null
      conn.on('datagram', (d) => {
        got = dec.decode(d)
      })
      for (let round = 0; round < 50 && got === null; round++) {
        conn.sendDatagram(enc.encode('ping-native'))
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(got).toBe('ping-native')
    } finally {
      await client.close()
    }
  })

  it('refuses other paths with 404 as a typed error', async () => {
    const err = await rejection(connectWebTransport(url('/elsewhere'), { serverCertificateHashes: cert.serverCertificateHashes }))
    expect(err).toBeInstanceOf(StoqWebTransportError)
    expect((err as StoqWebTransportError).status).toBe(404)
  })

  it('persists the certificate: a second instance with the same identity dir serves the same hash', async () => {
    const keyFile = path.join(dir, 'webtransport-key.pem')
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600)
    expect(fs.existsSync(path.join(dir, 'webtransport-cert.pem'))).toBe(true)
    const again = await Stoq.create('wt-server', { identity: { dir } })
    try {
      const ep2 = await again.listen({ host: '127.0.0.1', port: 0 }, { webtransport: { onSession: (s) => void s.close() } })
      const c2 = await again.browserCertificate()
      expect(c2.created).toBe(false)
      expect(c2.sha256Hex).toBe(cert.sha256Hex)
      // What the second listener serves is that certificate.
      const session = await connectWebTransport(`https://127.0.0.1:${ep2.address.port}/any`, { serverCertificateHashes: c2.serverCertificateHashes })
      await session.closed
    } finally {
      await again.close()
    }
  })
})

describe('one port for both with the quiche engine', () => {
  it('negotiates h3 for WebTransport and stoq/1 for native clients', async () => {
    const server = await Stoq.create('wt-quiche', { identity: { dir: path.join(root, 'quiche') }, endpoint: { engine: 'quiche' } })
    const client = await Stoq.create('wt-quiche-client', { identity: { dir: path.join(root, 'quiche-client') }, endpoint: { engine: 'quiche' } })
    try {
      const ep = await server.listen(
        { host: '127.0.0.1', port: 0 },
        {
          onStream: (stream) => void stream.readable!.pipeTo(stream.writable!).catch(() => {}),
          webtransport: { onSession: (session) => session.on('stream', (s) => void s.readable!.pipeTo(s.writable!).catch(() => {})) },
        },
      )
      expect(ep.stats().engine).toBe('quiche')
      const cert = await server.browserCertificate()
      const session = await connectWebTransport(`https://127.0.0.1:${ep.address.port}/`, {
        serverCertificateHashes: cert.serverCertificateHashes,
        engine: 'quiche',
      })
      const ws = session.openStream()
      const ww = ws.writable!.getWriter()
      const wEcho = readAllText(ws.readable!)
      await ww.write(enc.encode('wt via quiche'))
      await ww.close()
      expect(await wEcho).toBe('wt via quiche')
      await session.close()

      const conn = await client.connect(`127.0.0.1:${ep.address.port}`, { pin: cert.sha256Hex })
      expect(conn.alpn).toBe('stoq/1')
      const ns = conn.openStream()
      const nw = ns.writable!.getWriter()
      const nEcho = readAllText(ns.readable!)
      await nw.write(enc.encode('native via quiche'))
      await nw.close()
      expect(await nEcho).toBe('native via quiche')
    } finally {
      await client.close()
      await server.close()
    }
  })
})

describe('browser certificate management', () => {
  it('defaults to the XDG config dir of the app', async () => {
    const stoq = await Stoq.create('wt-xdg')
    try {
      const c = await stoq.browserCertificate()
      expect(c.dir).toBe(path.join(root, 'xdg', 'stoq', 'wt-xdg'))
      expect(fs.statSync(path.join(c.dir, 'webtransport-key.pem')).mode & 0o777).toBe(0o600)
    } finally {
      await stoq.close()
    }
  })

  it('rotates a certificate close to expiry (renewal margin)', async () => {
    const dir = path.join(root, 'rotate')
    const shortLived = await Stoq.create('wt-rotate', { identity: { dir }, browserCertificate: { validityDays: 2, renewBeforeDays: 1 } })
    const first = await shortLived.browserCertificate()
    await shortLived.close()
    expect(first.created).toBe(true)
    // Same margin: still more than a day left, so it is kept.
    const same = await Stoq.create('wt-rotate', { identity: { dir }, browserCertificate: { validityDays: 2, renewBeforeDays: 1 } })
    expect((await same.browserCertificate()).sha256Hex).toBe(first.sha256Hex)
    await same.close()
    // Default margin (2 days): fewer than 2 days left, so listen rotates it.
    const later = await Stoq.create('wt-rotate', { identity: { dir } })
    try {
      const ep = await later.listen({ host: '127.0.0.1', port: 0 }, { webtransport: { onSession: () => {} } })
      const rotated = await later.browserCertificate()
      expect(rotated.created).toBe(true)
      expect(rotated.sha256Hex).not.toBe(first.sha256Hex)
      expect(rotated.notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime())
      expect(rotated.notAfter.getTime() - rotated.notBefore.getTime()).toBeLessThanOrEqual(14 * DAY)
      expect(fs.statSync(path.join(dir, 'webtransport-key.pem')).mode & 0o777).toBe(0o600)
      // The listener serves the rotated certificate: the old hash is refused.
      const err = await rejection(connectWebTransport(`https://127.0.0.1:${ep.address.port}/`, { serverCertificateHashes: first.serverCertificateHashes }))
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_CERT_PIN')
      const ok = await connectWebTransport(`https://127.0.0.1:${ep.address.port}/`, { serverCertificateHashes: rotated.serverCertificateHashes })
      await ok.close()
    } finally {
      await later.close()
    }
  })

  it('replaces a stored certificate that is about to expire or that browsers would refuse', async () => {
    const dir = path.join(root, 'stale')
    fs.mkdirSync(dir, { recursive: true })
    // An old certificate written by hand: one day of validity, less than the 2-day margin.
    const old = await createWebTransportCertificate({ days: 1 })
    fs.writeFileSync(path.join(dir, 'webtransport-cert.pem'), old.cert)
    fs.writeFileSync(path.join(dir, 'webtransport-key.pem'), old.key, { mode: 0o600 })
    const stoq = await Stoq.create('wt-stale', { identity: { dir } })
    const fresh = await stoq.browserCertificate()
    await stoq.close()
    expect(fresh.created).toBe(true)
    expect(fresh.sha256Hex).not.toBe(old.sha256Hex)
    // A key that does not match the certificate (e.g. a crash between the two writes) is replaced too.
    const other = await createWebTransportCertificate()
    fs.writeFileSync(path.join(dir, 'webtransport-key.pem'), other.key, { mode: 0o600 })
    const again = await Stoq.create('wt-stale', { identity: { dir } })
    const replaced = await again.browserCertificate()
    await again.close()
    expect(replaced.created).toBe(true)
    expect(replaced.sha256Hex).not.toBe(fresh.sha256Hex)
  })

  it('user PEM files win over the browser certificate', async () => {
    const dir = path.join(root, 'user-pem')
    const mine = await createWebTransportCertificate()
    const stoq = await Stoq.create('wt-user-pem', { identity: { dir } })
    try {
      const ep = await stoq.listen({ host: '127.0.0.1', port: 0 }, { cert: mine.cert, key: mine.key, webtransport: { onSession: () => {} } })
      expect(fs.existsSync(path.join(dir, 'webtransport-cert.pem'))).toBe(false)
      const session = await connectWebTransport(`https://127.0.0.1:${ep.address.port}/`, { serverCertificateHashes: mine.serverCertificateHashes })
      await session.close()
    } finally {
      await stoq.close()
    }
  })
})

describe('typed errors for bad options', () => {
  it('refuses bad webtransport options before binding anything', async () => {
    const stoq = await Stoq.create('wt-bad', { identity: { dir: path.join(root, 'bad') } })
    try {
      const bad: unknown[] = [
        null,
        'yes',
        {},
        { onSession: 'not a function' },
        { onSession: () => {}, path: 'no-slash' },
        { onSession: () => {}, path: 42 },
        { onSession: () => {}, accept: 200 },
        { onSession: () => {}, limits: 'lots' },
        { onsession: () => {} },
      ]
      for (const webtransport of bad) {
        const err = await rejection(stoq.listen({ host: '127.0.0.1', port: 0 }, { webtransport } as never))
        expect(StoqError.isInstance(err) && err.code, JSON.stringify(String(webtransport))).toBe('STOQ_ERR_INVALID_ARG')
      }
      expect(stoq.stats().endpoints).toBe(0)
      // Invalid limits are caught by the WebTransport server; the endpoint is closed again.
      const err = await rejection(stoq.listen({ host: '127.0.0.1', port: 0 }, { webtransport: { onSession: () => {}, limits: { maxBufferedStreams: -1 } } }))
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
      expect(stoq.stats().endpoints).toBe(0)
    } finally {
      await stoq.close()
    }
  })

  it('refuses bad browser certificate options', async () => {
    for (const browserCertificate of [
      { validityDays: 15 },
      { validityDays: 0 },
      { validityDays: 5, renewBeforeDays: 5 },
      { renewBeforeDays: -1 },
      { names: 'x' },
    ]) {
      const err = await rejection(Stoq.create('wt-bad-cert', { browserCertificate } as never))
      expect(StoqError.isInstance(err) && err.code, JSON.stringify(browserCertificate)).toBe('STOQ_ERR_INVALID_ARG')
    }
  })
})
