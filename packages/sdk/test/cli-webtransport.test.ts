/**
 * `stoq serve --webtransport`: the built CLI in a child process, reached over
 * HTTP (page and settings), by the Node WebTransport client, and by Debian's
 * headless Chromium driving the example page over the DevTools protocol
 * (installed with apt when missing; an apt failure fails the test).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { X509Certificate, randomBytes } from 'node:crypto'
import type { Duplex } from 'node:stream'
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
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

async function readAll(readable: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  for await (const c of readable) chunks.push(c)
  return new Uint8Array(Buffer.concat(chunks))
}

// ---------------------------------------------------------------------------
// Chromium (after packages/webtransport/test/browser.test.ts)

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

function launchChromium(binary: string, userDir: string, pageUrl: string): Promise<{ proc: ChildProcess; devtools: string }> {
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
    // A process group of its own: its helper processes outlive the main one, so the group is killed.
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  )
  return new Promise((resolve, reject) => {
    let err = ''
    const timer = setTimeout(() => {
      try {
        process.kill(-proc.pid!, 'SIGKILL')
      } catch {
        // Already gone.
      }
      reject(new Error(`Chromium printed no DevTools URL:\n${err.slice(-2000)}`))
    }, 60_000)
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

/** SIGKILL Chromium's process group (by the main process's id) and wait until no member is left. */
async function killGroup(proc: ChildProcess): Promise<void> {
  const pid = proc.pid!
  const exited = proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise((resolve) => proc.once('exit', resolve))
  const alive = (): boolean => {
    try {
      process.kill(-pid, 0)
      return true
    } catch {
      return false
    }
  }
  if (alive()) process.kill(-pid, 'SIGKILL')
  await exited
  await eventually(() => !alive(), 'Chromium process group gone', 10_000)
}

function getJson<T>(host: string, port: string, p: string): Promise<T> {
  return new Promise((resolve, reject) => {
    http
      .get({ host, port, path: p }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => (body += d))
        res.on('end', () => {
          try {
            resolve(JSON.parse(body) as T)
          } catch (e) {
            reject(e as Error)
          }
        })
      })
      .on('error', reject)
  })
}

async function pageTarget(devtools: string, pageUrl: string): Promise<string> {
  const base = new URL(devtools)
  const deadline = Date.now() + 30_000
  for (;;) {
    const list = await getJson<Array<{ type: string; url: string; webSocketDebuggerUrl: string }>>(base.hostname, base.port, '/json/list')
    const page = list.find((t) => t.type === 'page' && t.url.startsWith(pageUrl))
    if (page) return page.webSocketDebuggerUrl
    if (Date.now() > deadline) throw new Error(`no DevTools page for ${pageUrl}: ${JSON.stringify(list)}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/**
 * Just enough of the DevTools protocol for Runtime.evaluate (trimmed from
 * packages/webtransport/test/cdp.ts): RFC 6455 text frames over a node:http
 * upgrade (Node 20 has no global WebSocket), JSON-RPC on top.
 */
class Cdp {
  #buf = Buffer.alloc(0)
  #fragments: Buffer[] = []
  #nextId = 1
  #pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>()
  #closed: Error | null = null

  private constructor(private readonly socket: Duplex) {
    socket.on('data', (d: Buffer) => this.#onData(d))
    socket.on('close', () => this.#fail(new Error('DevTools socket closed')))
    socket.on('error', (e) => this.#fail(e))
  }

  static connect(wsUrl: string): Promise<Cdp> {
    const url = new URL(wsUrl)
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port,
        path: url.pathname,
        headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64') },
      })
      req.on('upgrade', (_res, socket, head) => {
        const c = new Cdp(socket)
        if (head.length > 0) c.#onData(head)
        resolve(c)
      })
      req.on('response', (res) => reject(new Error(`DevTools answered HTTP ${res.statusCode} instead of upgrading`)))
      req.on('error', reject)
      req.end()
    })
  }

  #fail(err: Error): void {
    if (this.#closed) return
    this.#closed = err
    for (const p of this.#pending.values()) p.reject(err)
    this.#pending.clear()
  }

  #onData(data: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, data])
    for (;;) {
      const b = this.#buf
      if (b.length < 2) return
      const fin = (b[0]! & 0x80) !== 0
      const opcode = b[0]! & 0x0f
      let len = b[1]! & 0x7f // the server never masks
      let at = 2
      if (len === 126) {
        if (b.length < 4) return
        len = b.readUInt16BE(2)
        at = 4
      } else if (len === 127) {
        if (b.length < 10) return
        len = Number(b.readBigUInt64BE(2))
        at = 10
      }
      if (b.length < at + len) return
      const payload = Buffer.from(b.subarray(at, at + len))
      this.#buf = b.subarray(at + len)
      if (opcode === 0x8) return this.#fail(new Error('DevTools closed the WebSocket'))
      if (opcode === 0x9) this.#send(0xa, payload)
      if (opcode >= 0x8) continue
      this.#fragments.push(payload)
      if (!fin) continue
      const msg = JSON.parse(Buffer.concat(this.#fragments).toString('utf8')) as { id?: number; result?: unknown; error?: { message: string } }
      this.#fragments = []
      const p = typeof msg.id === 'number' ? this.#pending.get(msg.id) : undefined
      if (!p) continue // an event
      this.#pending.delete(msg.id!)
      if (msg.error) p.reject(new Error(`CDP error: ${msg.error.message}`))
      else p.resolve(msg.result)
    }
  }

  #send(opcode: number, payload: Buffer): void {
    const mask = randomBytes(4)
    const len = payload.length
    const header = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len]) : Buffer.alloc(len < 65536 ? 4 : 10)
    if (len >= 126) {
      header[0] = 0x80 | opcode
      header[1] = 0x80 | (len < 65536 ? 126 : 127)
      if (len < 65536) header.writeUInt16BE(len, 2)
      else header.writeBigUInt64BE(BigInt(len), 2)
    }
    const body = Buffer.from(payload)
    for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!
    this.socket.write(Buffer.concat([header, mask, body]))
  }

  /** Evaluates an (async) expression in the page and returns its JSON value. */
  evaluate<T>(expression: string): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed)
    const id = this.#nextId++
    return new Promise<{ result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } }>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject })
      this.#send(0x1, Buffer.from(JSON.stringify({ id, method: 'Runtime.evaluate', params: { expression, awaitPromise: true, returnByValue: true } })))
    }).then((r) => {
      if (r.exceptionDetails) throw new Error(`page threw: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`)
      return r.result.value as T
    })
  }

  close(): void {
    this.socket.destroy()
  }
}

// ---------------------------------------------------------------------------

describe('stoq serve --webtransport', () => {
  let server: ChildProcess
  let out = ''
  let err = ''
  let exited: Promise<number | null>
  let udpPort = 0
  let httpPort = 0
  let sha256Hex = ''
  let browser: ChildProcess | null = null
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
    if (browser?.pid !== undefined) await killGroup(browser)
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
    fs.mkdirSync(userDir, { recursive: true })
    const pageUrl = `http://localhost:${httpPort}/`
    const launched = await launchChromium(chromium, userDir, pageUrl)
    browser = launched.proc
    const cdp = await Cdp.connect(await pageTarget(launched.devtools, pageUrl))
    try {
      const deadline = Date.now() + 30_000
      for (;;) {
        const state = await cdp.evaluate<{ href: string; ready: string; secure: boolean; demo: string }>(
          '({ href: location.href, ready: document.readyState, secure: isSecureContext, demo: typeof window.stoqDemo })',
        )
        if (state.href === pageUrl && state.ready === 'complete' && state.demo === 'object') {
          expect(state.secure).toBe(true)
          break
        }
        if (Date.now() > deadline) throw new Error(`page did not load: ${JSON.stringify(state)}`)
        await new Promise((r) => setTimeout(r, 100))
      }
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
