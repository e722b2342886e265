/**
 * WebTransport from a real browser: Debian's headless Chromium (installed with
 * apt when missing; an apt failure fails the test) driven over the DevTools
 * protocol against a STOQ WebTransport server.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createWebTransportCertificate, serveWebTransport, type WebTransportCertificate, type WebTransportCloseInfo, type WebTransportServer, type WebTransportSession } from '../src/index.js'
import { CdpClient } from './cdp.js'
import { echoSession } from './helpers.js'

function findChromium(): string | null {
  for (const name of ['chromium', 'chromium-browser']) {
    const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' })
    if (r.status === 0 && r.stdout.trim() !== '') return r.stdout.trim()
  }
  return null
}

function ensureChromium(): string {
  const found = findChromium()
  if (found) return found
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const install = () => spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'], { encoding: 'utf8', env, timeout: 900_000 })
  let r = install()
  if (r.status !== 0) {
    // A fresh machine may have no package lists yet: refresh them once and retry.
    spawnSync('apt-get', ['update'], { encoding: 'utf8', env, timeout: 300_000 })
    r = install()
  }
  if (r.status !== 0) {
    throw new Error(`apt-get install -y chromium failed (status ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${(r.stderr || r.stdout || '').slice(-4000)}`)
  }
  const after = findChromium()
  if (!after) throw new Error('apt-get installed chromium but no chromium binary is on PATH')
  return after
}

/** SIGKILL Chromium's whole process group (by its leader's PID) and wait until it is gone. */
async function killGroup(pid: number): Promise<void> {
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {
    return // already gone
  }
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(-pid, 0)
    } catch {
      return
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

function launch(binary: string, userDir: string, pageUrl: string): Promise<{ proc: ChildProcess; devtools: string }> {
  const proc = spawn(
    binary,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--remote-debugging-port=0',
      `--user-data-dir=${userDir}`,
      pageUrl,
    ],
    // Its own process group, so that the browser and every helper process it starts can be
    // stopped together before the profile directory is removed.
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  )
  return new Promise((resolve, reject) => {
    let err = ''
    const timer = setTimeout(() => reject(new Error(`Chromium printed no DevTools URL:\n${err.slice(-2000)}`)), 60_000)
    proc.stderr!.setEncoding('utf8')
    proc.stderr!.on('data', (d: string) => {
      if (err.length < 100_000) err += d
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err)
      if (m) {
        clearTimeout(timer)
        resolve({ proc, devtools: m[1]! })
      }
    })
    proc.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`Chromium exited with ${code}:\n${err.slice(-2000)}`))
    })
  })
}

async function pageTarget(devtools: string, pageUrl: string): Promise<string> {
  const base = new URL(devtools)
  const deadline = Date.now() + 30_000
  for (;;) {
    const list = await new Promise<Array<{ type: string; url: string; webSocketDebuggerUrl: string }>>((resolve, reject) => {
      http
        .get({ host: base.hostname, port: base.port, path: '/json/list' }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (body += d))
          res.on('end', () => {
            try {
              resolve(JSON.parse(body) as Array<{ type: string; url: string; webSocketDebuggerUrl: string }>)
            } catch (e) {
              reject(e as Error)
            }
          })
        })
        .on('error', reject)
    })
    const page = list.find((t) => t.type === 'page' && t.url.startsWith(pageUrl))
    if (page) return page.webSocketDebuggerUrl
    if (Date.now() > deadline) throw new Error(`no DevTools page for ${pageUrl}: ${JSON.stringify(list)}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

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

for (const engine of ['quinn', 'quiche'] as const) describe(`Chromium against the ${engine} engine`, () => {
  let chromium: string
  let cert: WebTransportCertificate
  let server: WebTransportServer
  let page: http.Server
  let browser: ChildProcess | null = null
  let userDir: string
  const sessions: WebTransportSession[] = []

  beforeAll(async () => {
    chromium = ensureChromium()
    cert = await createWebTransportCertificate()
    // Chromium resolves localhost to ::1 first: listen dual-stack.
    server = await serveWebTransport({ host: '::', engine, server: { cert: cert.cert, key: cert.key } }, {
      path: '/echo',
      onSession: (s) => {
        sessions.push(s)
        echoSession(s)
      },
    })
    page = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end('<!doctype html><title>stoq webtransport</title>')
    })
    await new Promise<void>((resolve) => page.listen(0, '::', resolve))
    userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-chromium-'))
  }, 1_000_000)

  afterAll(async () => {
    if (browser?.pid !== undefined) await killGroup(browser.pid)
    await server?.close()
    await new Promise<void>((resolve) => (page ? page.close(() => resolve()) : resolve()))
    if (userDir) fs.rmSync(userDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
  })

  it('echoes streams and datagrams, closes cleanly and refuses a wrong certificate hash', async () => {
    const pagePort = (page.address() as { port: number }).port
    const pageUrl = `http://localhost:${pagePort}/`
    const launched = await launch(chromium, userDir, pageUrl)
    browser = launched.proc
    const cdp = await CdpClient.connect(await pageTarget(launched.devtools, pageUrl))
    try {
      // Wait for the page's own document (the target can show its URL before the navigation commits).
      const deadline = Date.now() + 30_000
      for (;;) {
        const state = await cdp.evaluate<{ href: string; ready: string; secure: boolean; wt: boolean }>(
          '({ href: location.href, ready: document.readyState, secure: isSecureContext, wt: typeof WebTransport === "function" })',
        )
        if (state.href === pageUrl && state.ready === 'complete') {
          expect(state.secure).toBe(true)
          expect(state.wt).toBe(true)
          break
        }
        if (Date.now() > deadline) throw new Error(`page did not load: ${JSON.stringify(state)}`)
        await new Promise((r) => setTimeout(r, 100))
      }
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
      const info: WebTransportCloseInfo = await sessions[0]!.closed
      expect(info).toEqual({ code: 42, reason: 'browser bye', remote: true })
      expect(sessions[0]!.origin).toBe(`http://localhost:${pagePort}`)
    } finally {
      cdp.close()
    }
  })
})
