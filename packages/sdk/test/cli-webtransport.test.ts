/**
 * `stoq serve --webtransport`: the built CLI in a child process, reached over
 * HTTP (page and settings), by the Node WebTransport client, and by Debian's
 * headless Chromium driving the example page over the DevTools protocol
 * (installed with apt when missing; an apt failure fails the test).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { X509Certificate, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ensureChromium, getJson, launchChromium, readAll, type HeadlessChromium } from '@stoq/compliance-tests'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectWebTransport, type WebTransportSession, type WebTransportStream } from '../src/index.js'

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
const PAGE = fileURLToPath(new URL('../examples/webtransport.html', import.meta.url))
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-cli-wt-'))
const config = path.join(root, 'config')
const enc = new TextEncoder()
const dec = new TextDecoder()

interface PageConfig {
  url: string
  serverCertificateHashes: Array<{ algorithm: string; value: number[] }>
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, XDG_CONFIG_HOME: config }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

/** Polls `check`; a hang guard, not a timing assertion. */
async function eventually(check: () => boolean, what: string, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('stoq serve --webtransport', () => {
  let server: ChildProcess
  let out = ''
  let err = ''
  let exited: Promise<number | null>
  let udpPort = 0
  let httpPort = 0
  let sha256Hex = ''
  let browser: HeadlessChromium | null = null
  const userDir = path.join(root, 'chromium')

  beforeAll(async () => {
    server = spawn(process.execPath, [CLI, 'serve', '--webtransport', '--port', '0', '--http-port', '0'], {
      env: { ...process.env, XDG_CONFIG_HOME: config },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    server.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    server.stderr!.on('data', (d: Buffer) => (err += d.toString()))
    exited = new Promise((resolve) => server.on('exit', (code) => resolve(code)))
    await eventually(() => /^ports udp=\d+ http=\d+$/m.test(out) || server.exitCode !== null, 'server start')
    const ports = /^ports udp=(\d+) http=(\d+)$/m.exec(out)
    if (!ports) throw new Error(`stoq serve --webtransport did not start:\n${out}\n${err}`)
    udpPort = Number(ports[1])
    httpPort = Number(ports[2])
    sha256Hex = /^certificate sha256 ([0-9a-f]{64})/m.exec(out)![1]!
  })

  afterAll(async () => {
    // Kills Chromium's process group and waits for it before its profile (under root) is removed.
    await browser?.close()
    if (server?.pid !== undefined && server.exitCode === null && server.signalCode === null) {
      process.kill(server.pid, 'SIGKILL')
      await exited
    }
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
  })

  it('documents itself in --help and refuses bad arguments with exit 2', async () => {
    const help = await runCli(['serve', '--help'])
    expect(help.code).toBe(0)
    for (const text of ['--webtransport', '--http-port N', '--path PATH', '/webtransport.json', 'ports udp=N http=N']) expect(help.stdout).toContain(text)
    const bad: Array<[string[], string]> = [
      [['serve', '--webtransport', '--path', 'echo'], '--path'],
      [['serve', '--webtransport', '--http-port', '70000'], '--http-port'],
      [['serve', '--webtransport', 'somedir'], 'takes no DIR'],
      [['serve', '--webtransport', '--once'], '--once'],
      [['serve', root, '--http-port', '8080'], 'needs --webtransport'],
      [['serve', root, '--path', '/x'], 'needs --webtransport'],
    ]
    for (const [args, message] of bad) {
      const r = await runCli(args)
      expect(r.code, args.join(' ')).toBe(2)
      expect(r.stderr).toContain(message)
    }
  })

  it('prints the URL, the certificate hash and the page, and serves the page and its settings', async () => {
    expect(out).toContain(`webtransport https://localhost:${udpPort}/echo\n`)
    expect(out).toContain(`page http://localhost:${httpPort}/`)
    // The hash printed is the stored browser certificate's.
    const pem = fs.readFileSync(path.join(config, 'stoq', 'cli', 'webtransport-cert.pem'), 'utf8')
    expect(new X509Certificate(pem).fingerprint256.replace(/:/g, '').toLowerCase()).toBe(sha256Hex)

    const json = await fetch(`http://localhost:${httpPort}/webtransport.json`)
    expect(json.status).toBe(200)
    expect(json.headers.get('content-type')).toBe('application/json')
    const cfg = (await json.json()) as PageConfig
    expect(cfg).toEqual({
      url: `https://localhost:${udpPort}/echo`,
      serverCertificateHashes: [{ algorithm: 'sha-256', value: Array.from(Buffer.from(sha256Hex, 'hex')) }],
    })

    const page = await fetch(`http://localhost:${httpPort}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await page.text()).toBe(fs.readFileSync(PAGE, 'utf8'))
    expect((await fetch(`http://localhost:${httpPort}/missing`)).status).toBe(404)
    expect((await fetch(`http://localhost:${httpPort}/`, { method: 'POST' })).status).toBe(405)
  })

  it('echoes a bidi stream, answers a uni stream and echoes datagrams for the Node client', async () => {
    const cfg = await getJson<PageConfig>('localhost', String(httpPort), '/webtransport.json')
    const session: WebTransportSession = await connectWebTransport(cfg.url, {
      serverCertificateHashes: cfg.serverCertificateHashes.map((h) => ({ algorithm: 'sha-256' as const, value: new Uint8Array(h.value) })),
      origin: 'https://node.test',
    })
    const incoming: WebTransportStream[] = []
    session.on('stream', (s) => incoming.push(s))
    try {
      // Bidirectional: 512 KiB of random bytes come back unchanged.
      const data = new Uint8Array(randomBytes(512 * 1024))
      const bidi = session.openStream()
      const echoed = readAll(bidi.readable!)
      const w = bidi.writable!.getWriter()
      await w.write(data)
      await w.close()
      expect(Buffer.from(await echoed).equals(Buffer.from(data))).toBe(true)

      // Unidirectional: the server answers on a unidirectional stream of its own.
      const uni = session.openStream({ unidirectional: true })
      const uw = uni.writable!.getWriter()
      await uw.write(enc.encode('uni from node'))
      await uw.close()
      await eventually(() => incoming.length === 1, 'uni answer')
      expect(incoming[0]!.bidirectional).toBe(false)
      expect(dec.decode(await readAll(incoming[0]!.readable!))).toBe('uni from node')

      // Datagrams are unreliable: resend the missing ones (bounded rounds).
      const seen = new Set<string>()
      session.on('datagram', (d) => seen.add(dec.decode(d)))
      const all = [1, 2, 3, 4, 5].map((i) => `node datagram ${i}`)
      for (let round = 0; round < 30 && seen.size < all.length; round++) {
        for (const d of all) if (!seen.has(d)) session.sendDatagram(d)
        await new Promise((r) => setTimeout(r, 100))
      }
      expect([...seen].sort()).toEqual(all)
    } finally {
      await session.close({ code: 7, reason: 'node done' })
    }
    await eventually(() => /session \d+ closed by the peer: code 7 "node done"/.test(out), 'session close logged')
    expect(out).toMatch(/session \d+ from \S+: origin https:\/\/node\.test, path \/echo/)
  })

  it('the example page, in headless Chromium, runs every step against the server', async () => {
    const chromium = ensureChromium()
    const pageUrl = `http://localhost:${httpPort}/`
    browser = (await launchChromium({ binary: chromium, pageUrl, userDir })).browser
    const cdp = await browser.page()
    try {
      const state = await cdp.waitFor<{ href: string; ready: string; secure: boolean; demo: string }>(
        '({ href: location.href, ready: document.readyState, secure: isSecureContext, demo: typeof window.stoqDemo })',
        (s) => s.href === pageUrl && s.ready === 'complete' && s.demo === 'object',
      )
      expect(state.secure).toBe(true)
      const report = await cdp.evaluate<Record<string, any>>(`(async () => {
        const d = window.stoqDemo
        const r = {}
        r.connect = await d.connect()
        r.text = await d.echoText('hello from Chromium')
        r.random = await d.echoRandom(1024 * 1024)
        r.uni = await d.uniRoundTrip('uni from Chromium')
        r.datagrams = await d.datagrams(5)
        r.close = await d.close('chromium done')
        r.log = document.getElementById('log').textContent
        return r
      })()`)
      expect(report.connect).toEqual({ url: `https://localhost:${udpPort}/echo` })
      expect(report.text).toEqual({ sent: 'hello from Chromium', echoed: 'hello from Chromium', same: true })
      expect(report.random.bytes).toBe(1024 * 1024)
      expect(report.random.received).toBe(1024 * 1024)
      expect(report.random.same).toBe(true)
      expect(Number.isFinite(report.random.gbps)).toBe(true)
      expect(report.uni).toEqual({ sent: 'uni from Chromium', echoed: 'uni from Chromium', same: true })
      expect(report.datagrams.received).toEqual([1, 2, 3, 4, 5].map((i) => `datagram ${i} of 5`))
      expect(report.close).toEqual({ closeCode: 0, reason: 'chromium done' })
      expect(report.log).toContain('identical byte for byte')
      expect(report.log).toContain('Gbps')
    } finally {
      cdp.close()
    }
    await eventually(() => /session \d+ closed by the peer: code 0 "chromium done"/.test(out), 'browser session close logged')
    expect(out).toContain(`origin http://localhost:${httpPort}, path /echo`)
  })

  it('closes cleanly on SIGTERM', async () => {
    process.kill(server.pid!, 'SIGTERM')
    expect(await exited).toBe(0)
    expect(out).toContain('stoq serve: SIGTERM, closing')
    expect(err).toBe('')
  })
})
