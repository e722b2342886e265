/**
 * WebTransport from a real browser: Debian's headless Chromium (installed with
 * apt when missing; an apt failure fails the test) driven over the DevTools
 * protocol against a STOQ WebTransport server.
 */
import { X509Certificate, createHash } from 'node:crypto'
import http from 'node:http'
import { ensureChromium, launchChromium, type HeadlessChromium } from '@stoq/compliance-tests'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createWebTransportCertificate,
  serveWebTransport,
  type WebTransportCertificate,
  type WebTransportCloseInfo,
  type WebTransportServer,
  type WebTransportSession,
} from '../src/index.js'
import { echoSession } from './helpers.js'

/** The page-side checks; runs in Chromium. Returns a JSON report. */
function pageScript(url: string, hash: number[], badHash: number[]): string {
  return `(async () => {
    const pattern = (size, seed) => { const out = new Uint8Array(size); let x = seed >>> 0 || 1;
      for (let i = 0; i < size; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; out[i] = x & 0xff } return out }
    const readAll = async (readable) => { const chunks = []; let n = 0; const r = readable.getReader();
      for (;;) { const { value, done } = await r.read(); if (done) break; chunks.push(value); n += value.length }
      const out = new Uint8Array(n); let at = 0; for (const c of chunks) { out.set(c, at); at += c.length } return out }
    const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i])
    const report = {}
    const wt = new WebTransport(${JSON.stringify(url)}, { serverCertificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(${JSON.stringify(hash)}) }] })
    await wt.ready
    report.ready = true
    // 1 MiB bidirectional echo.
    const data = pattern(1024 * 1024, 5)
    const bidi = await wt.createBidirectionalStream()
    const echoed = readAll(bidi.readable)
    const w = bidi.writable.getWriter()
    for (let at = 0; at < data.length; at += 65536) await w.write(data.subarray(at, at + 65536))
    await w.close()
    const got = await echoed
    report.bidiLength = got.length
    report.bidiSame = same(got, data)
    // Unidirectional both ways: the server answers on a stream of its own.
    const uniData = pattern(50000, 9)
    const uni = await wt.createUnidirectionalStream()
    const uw = uni.getWriter()
    await uw.write(uniData)
    await uw.close()
    const incoming = await wt.incomingUnidirectionalStreams.getReader().read()
    report.uniSame = same(await readAll(incoming.value), uniData)
    // Five datagrams each way, resending what has not come back.
    const dw = wt.datagrams.writable.getWriter()
    const dr = wt.datagrams.readable.getReader()
    const seen = new Set()
    let reading = (async () => { for (;;) { const { value, done } = await dr.read(); if (done) return; seen.add(new TextDecoder().decode(value)) } })()
    const all = [0, 1, 2, 3, 4].map((i) => 'browser-datagram-' + i)
    for (let round = 0; round < 20 && seen.size < all.length; round++) {
      for (const d of all) if (!seen.has(d)) await dw.write(new TextEncoder().encode(d))
      await new Promise((r) => setTimeout(r, 100))
    }
    report.datagrams = [...seen].sort()
    // A clean close with a code and reason.
    wt.close({ closeCode: 42, reason: 'browser bye' })
    const closed = await wt.closed
    report.closed = { closeCode: closed.closeCode, reason: closed.reason }
    // A wrong certificate hash is refused.
    const bad = new WebTransport(${JSON.stringify(url)}, { serverCertificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(${JSON.stringify(badHash)}) }] })
    try { await bad.ready; report.badHashRefused = false; bad.close() } catch (e) { report.badHashRefused = true; report.badHashError = String(e) }
    return report
  })()`
}

for (const engine of ['quinn', 'quiche'] as const)
  describe(`Chromium against the ${engine} engine`, () => {
    let chromium: string
    let cert: WebTransportCertificate
    let server: WebTransportServer
    let page: http.Server
    let browser: HeadlessChromium | null = null
    const sessions: WebTransportSession[] = []
    /** The key exchange group of each session's QUIC connection, read as the session arrives. */
    const groups: string[] = []

    beforeAll(async () => {
      chromium = ensureChromium()
      cert = await createWebTransportCertificate()
      // Chromium resolves localhost to ::1 first: listen dual-stack.
      server = await serveWebTransport(
        { host: '::', engine, server: { cert: cert.cert, key: cert.key } },
        {
          path: '/echo',
          onSession: (s) => {
            sessions.push(s)
            groups.push(s.connection.stats().keyExchangeGroup ?? 'not reported')
            echoSession(s)
          },
        },
      )
      page = http.createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' })
        res.end('<!doctype html><title>stoq webtransport</title>')
      })
      await new Promise<void>((resolve) => page.listen(0, '::', resolve))
    }, 1_000_000)

    afterAll(async () => {
      // Kills Chromium's process group, waits for it, then removes its profile directory.
      await browser?.close()
      await server?.close()
      await new Promise<void>((resolve) => (page ? page.close(() => resolve()) : resolve()))
    })

    it('echoes streams and datagrams, closes cleanly and refuses a wrong certificate hash', async () => {
      const pagePort = (page.address() as { port: number }).port
      const pageUrl = `http://localhost:${pagePort}/`
      browser = (await launchChromium({ binary: chromium, pageUrl })).browser
      const cdp = await browser.page()
      try {
        // Wait for the page's own document (the target can show its URL before the navigation commits).
        const state = await cdp.waitFor<{ href: string; ready: string; secure: boolean; wt: boolean }>(
          '({ href: location.href, ready: document.readyState, secure: isSecureContext, wt: typeof WebTransport === "function" })',
          (s) => s.href === pageUrl && s.ready === 'complete',
        )
        expect(state.secure).toBe(true)
        expect(state.wt).toBe(true)
        const url = `https://localhost:${server.address.port}/echo`
        const badHash = Array.from(cert.sha256, (b) => b ^ 0xff)
        const report = await cdp.evaluate<Record<string, unknown>>(pageScript(url, Array.from(cert.sha256), badHash))
        expect(report.ready).toBe(true)
        expect(report.bidiLength).toBe(1024 * 1024)
        expect(report.bidiSame).toBe(true)
        expect(report.uniSame).toBe(true)
        expect(report.datagrams).toEqual([0, 1, 2, 3, 4].map((i) => `browser-datagram-${i}`))
        expect(report.closed).toEqual({ closeCode: 42, reason: 'browser bye' })
        expect(report.badHashRefused).toBe(true)
        expect(sessions.length).toBe(1)
        // Measured (Debian's Chromium 150): its WebTransport ClientHello carries one key share,
        // X25519, so the quinn server takes it (no HelloRetryRequest); X25519MLKEM768 is NOT
        // negotiated with Chromium over WebTransport. quiche reports no group.
        expect(groups).toEqual([engine === 'quinn' ? 'X25519' : 'unknown'])
        const info: WebTransportCloseInfo = await sessions[0]!.closed
        expect(info).toEqual({ code: 42, reason: 'browser bye', remote: true })
        expect(sessions[0]!.origin).toBe(`http://localhost:${pagePort}`)
      } finally {
        cdp.close()
      }
    })
  })

/**
 * Chromium's HTTP/3 (its QUIC session pool, not WebTransport) offers X25519MLKEM768 first.
 * The server requires a post-quantum group, so the page's fetch succeeds only if Chromium
 * negotiates it. The origin is forced onto QUIC and the self-signed certificate is trusted by
 * its key hash (`--ignore-certificate-errors-spki-list`), as a Chromium developer would.
 */
describe('Chromium over HTTP/3 against a post-quantum-only quinn server', () => {
  let cert: WebTransportCertificate
  let server: WebTransportServer
  let browser: HeadlessChromium | null = null
  const groups: string[] = []

  beforeAll(async () => {
    cert = await createWebTransportCertificate()
    server = await serveWebTransport(
      { host: '::', engine: 'quinn', postQuantum: 'require', server: { cert: cert.cert, key: cert.key } },
      { path: '/echo', onSession: (s) => s.close() },
    )
    server.on('connection', (c) => groups.push(c.quic.stats().keyExchangeGroup ?? 'not reported'))
  }, 1_000_000)

  afterAll(async () => {
    await browser?.close()
    await server?.close()
  })

  it('negotiates X25519MLKEM768 for a page load', async () => {
    const port = server.address.port
    // A path the server does not serve: Chromium shows the 404 it got over HTTP/3.
    const pageUrl = `https://localhost:${port}/not-here`
    const spki = createHash('sha256')
      .update(new X509Certificate(cert.cert).publicKey.export({ type: 'spki', format: 'der' }))
      .digest('base64')
    browser = (
      await launchChromium({
        binary: ensureChromium(),
        pageUrl,
        args: [`--origin-to-force-quic-on=localhost:${port}`, `--ignore-certificate-errors-spki-list=${spki}`],
      })
    ).browser
    const cdp = await browser.page()
    try {
      // Chromium's own error page shows the status and the address it was refused for.
      const state = await cdp.waitFor<{ ready: string; text: string }>(
        '({ ready: document.readyState, text: document.body ? document.body.innerText : "" })',
        (s) => s.ready === 'complete' && /HTTP ERROR|ERR_/.test(s.text),
      )
      expect(state.text).toContain('HTTP ERROR 404')
      expect(state.text).toContain(pageUrl)
      // Chromium may open more than one connection to the origin (seen: two); every one of them
      // negotiated the hybrid (the server accepts nothing else).
      expect(groups.length).toBeGreaterThan(0)
      expect([...new Set(groups)]).toEqual(['X25519MLKEM768'])
    } finally {
      cdp.close()
    }
  })
})
