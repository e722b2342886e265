/**
 * Headless Chromium for browser tests: Debian's `chromium` (installed with apt
 * when missing; an apt failure throws with apt's message, never skips),
 * launched in a process group of its own with a throw-away profile, and a
 * minimal Chrome DevTools Protocol client: RFC 6455 WebSocket framing over a
 * `node:http` upgrade (Node 20 has no global WebSocket), JSON-RPC on top.
 * Test support only; no dependency beyond Node.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import type { Duplex } from 'node:stream'

/** Largest message accepted from the browser (bounded buffering). */
const MAX_MESSAGE = 64 * 1024 * 1024

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** The path of `chromium` (or `chromium-browser`) on PATH, or null. */
export function findChromium(): string | null {
  for (const name of ['chromium', 'chromium-browser']) {
    const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' })
    if (r.status === 0 && r.stdout.trim() !== '') return r.stdout.trim()
  }
  return null
}

/**
 * The path of a Chromium binary, installing Debian's `chromium` with apt-get
 * when none is on PATH (after one `apt-get update` if the first install fails).
 * Throws with apt's output when it cannot be installed.
 */
export function ensureChromium(): string {
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
    throw new Error(
      `apt-get install -y chromium failed (status ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${(r.stderr || r.stdout || '').slice(-4000)}`,
    )
  }
  const after = findChromium()
  if (!after) throw new Error('apt-get installed chromium but no chromium binary is on PATH')
  return after
}

/** GETs a JSON document over `node:http` (the DevTools `/json/*` endpoints, or any local server). */
export function getJson<T>(host: string, port: string | number, urlPath: string): Promise<T> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: host.replace(/^\[|\]$/g, ''), port, path: urlPath }, (res) => {
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

export interface CdpEvaluateOptions {
  /** Await the value when the expression yields a promise (default true). */
  awaitPromise?: boolean
}

export interface CdpWaitForOptions {
  /** How long to poll before throwing (default 30 s). */
  timeoutMs?: number
  /** Start of the error message on timeout (default `page did not load`); the last value is appended. */
  what?: string
}

/** CDP errors of a page between two documents: its execution context is gone or not there yet. */
const TRANSIENT_CDP_ERROR = /execution context|Execution context was destroyed|Inspected target navigated/i

/** A DevTools-protocol connection to one page target. */
export class CdpPage {
  #socket: Duplex
  #buf: Buffer = Buffer.alloc(0)
  #fragments: Buffer[] = []
  #nextId = 1
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  #closed: Error | null = null

  private constructor(socket: Duplex, head: Buffer) {
    this.#socket = socket
    socket.on('data', (d: Buffer) => this.#onData(d))
    socket.on('close', () => this.#fail(new Error('DevTools socket closed')))
    socket.on('error', (e) => this.#fail(e))
    if (head.length > 0) this.#onData(head)
  }

  /** Connects to a target's `webSocketDebuggerUrl`. */
  static connect(wsUrl: string): Promise<CdpPage> {
    const url = new URL(wsUrl)
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port,
        path: url.pathname + url.search,
        headers: {
          Connection: 'Upgrade',
          Upgrade: 'websocket',
          'Sec-WebSocket-Version': '13',
          'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        },
      })
      req.on('upgrade', (_res, socket, head) => resolve(new CdpPage(socket, head)))
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
    this.#buf = this.#buf.length === 0 ? data : Buffer.concat([this.#buf, data])
    for (;;) {
      const b = this.#buf
      if (b.length < 2) return
      const fin = (b[0]! & 0x80) !== 0
      const opcode = b[0]! & 0x0f
      const masked = (b[1]! & 0x80) !== 0
      let len = b[1]! & 0x7f
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
      if (len > MAX_MESSAGE) {
        this.#fail(new Error(`DevTools frame of ${len} bytes is too large`))
        this.#socket.destroy()
        return
      }
      const maskAt = at
      if (masked) at += 4
      if (b.length < at + len) return
      let payload = b.subarray(at, at + len)
      if (masked) {
        payload = Buffer.from(payload)
        for (let i = 0; i < payload.length; i++) payload[i]! ^= b[maskAt + (i & 3)]!
      }
      this.#buf = b.subarray(at + len)
      if (opcode === 0x8) {
        this.#fail(new Error('DevTools closed the WebSocket'))
        this.#socket.end()
        return
      }
      if (opcode === 0x9) {
        this.#send(0xa, payload)
        continue
      }
      if (opcode === 0xa) continue
      this.#fragments.push(Buffer.from(payload))
      if (this.#fragments.reduce((n, f) => n + f.length, 0) > MAX_MESSAGE) {
        this.#fail(new Error('DevTools message too large'))
        this.#socket.destroy()
        return
      }
      if (!fin) continue
      const message = Buffer.concat(this.#fragments).toString('utf8')
      this.#fragments = []
      this.#onMessage(message)
    }
  }

  #onMessage(text: string): void {
    let msg: { id?: number; result?: unknown; error?: { message: string } }
    try {
      msg = JSON.parse(text) as typeof msg
    } catch {
      return
    }
    if (typeof msg.id !== 'number') return // an event
    const p = this.#pending.get(msg.id)
    if (!p) return
    this.#pending.delete(msg.id)
    if (msg.error) p.reject(new Error(`CDP error: ${msg.error.message}`))
    else p.resolve(msg.result)
  }

  #send(opcode: number, payload: Buffer): void {
    const mask = randomBytes(4)
    const len = payload.length
    const header = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10)
    header[0] = 0x80 | opcode
    if (len < 126) header[1] = 0x80 | len
    else if (len < 65536) {
      header[1] = 0x80 | 126
      header.writeUInt16BE(len, 2)
    } else {
      header[1] = 0x80 | 127
      header.writeBigUInt64BE(BigInt(len), 2)
    }
    const body = Buffer.from(payload)
    for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!
    this.#socket.write(Buffer.concat([header, mask, body]))
  }

  /** Sends one DevTools-protocol command and resolves with its result. */
  call<T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed)
    const id = this.#nextId++
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.#send(0x1, Buffer.from(JSON.stringify({ id, method, params })))
    })
  }

  /** Evaluates an expression in the page (awaiting it when it is a promise) and returns its JSON value. */
  async evaluate<T>(expression: string, { awaitPromise = true }: CdpEvaluateOptions = {}): Promise<T> {
    const r = await this.call<{ result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } }>('Runtime.evaluate', {
      expression,
      awaitPromise,
      returnByValue: true,
    })
    if (r.exceptionDetails) throw new Error(`page threw: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`)
    return r.result.value as T
  }

  /**
   * Evaluates `expression` every 100 ms until `until` accepts its value, and
   * returns that value; throws `${what}: <last value>` after `timeoutMs`.
   */
  async waitFor<T>(expression: string, until: (value: T) => boolean, { timeoutMs = 30_000, what = 'page did not load' }: CdpWaitForOptions = {}): Promise<T> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      let last: string
      try {
        const value = await this.evaluate<T>(expression)
        if (until(value)) return value
        last = JSON.stringify(value)
      } catch (err) {
        // While the page navigates (e.g. to Chromium's own error page) it has no execution
        // context for a moment: not ready yet. Any other error is real.
        if (!TRANSIENT_CDP_ERROR.test((err as Error).message)) throw err
        last = (err as Error).message
      }
      if (Date.now() > deadline) throw new Error(`${what}: ${last}`)
      await sleep(100)
    }
  }

  /** Drops the DevTools connection (the page stays open). */
  close(): void {
    this.#socket.destroy()
  }
}

export interface LaunchChromiumOptions {
  /** The Chromium binary (default: {@link ensureChromium}). */
  binary?: string
  /** The page the browser opens. */
  pageUrl: string
  /** The profile directory (created if missing); default a fresh `stoq-chromium-*` under the OS temp dir. Removed by `close()`. */
  userDir?: string
  /** How long to wait for the DevTools URL (default 60 s). */
  timeoutMs?: number
  /** More command-line switches, placed before the page URL. */
  args?: readonly string[]
}

/** Whether any process of the group led by `pid` is alive. */
function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0)
    return true
  } catch {
    return false
  }
}

/** SIGKILLs the process group led by `proc` and waits until the leader has exited and no member is left. */
async function killGroup(proc: ChildProcess, limitMs = 10_000): Promise<void> {
  const pid = proc.pid
  if (pid === undefined) return // never started
  const exited = proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise((resolve) => proc.once('exit', resolve))
  if (groupAlive(pid)) {
    try {
      process.kill(-pid, 'SIGKILL')
    } catch {
      // Gone in between.
    }
  }
  await exited
  const deadline = Date.now() + limitMs
  while (groupAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`Chromium process group ${pid} is still alive ${limitMs} ms after SIGKILL`)
    await sleep(50)
  }
}

/** A headless Chromium in a process group of its own, with its own profile directory. */
export class HeadlessChromium {
  readonly process: ChildProcess
  readonly devtoolsUrl: string
  readonly userDir: string
  readonly pageUrl: string
  #pages = new Set<CdpPage>()
  #closing: Promise<void> | null = null

  /** @internal use {@link launchChromium} */
  constructor(proc: ChildProcess, devtoolsUrl: string, userDir: string, pageUrl: string) {
    this.process = proc
    this.devtoolsUrl = devtoolsUrl
    this.userDir = userDir
    this.pageUrl = pageUrl
  }

  /** The DevTools WebSocket URL of the first page target whose URL starts with `urlPrefix` (waits up to 30 s for it). */
  async pageTarget(urlPrefix: string = this.pageUrl): Promise<string> {
    const base = new URL(this.devtoolsUrl)
    const deadline = Date.now() + 30_000
    for (;;) {
      const list = await getJson<Array<{ type: string; url: string; webSocketDebuggerUrl: string }>>(base.hostname, base.port, '/json/list')
      const page = list.find((t) => t.type === 'page' && t.url.startsWith(urlPrefix))
      if (page) return page.webSocketDebuggerUrl
      if (Date.now() > deadline) throw new Error(`no DevTools page for ${urlPrefix}: ${JSON.stringify(list)}`)
      await sleep(100)
    }
  }

  /** A DevTools connection to the page whose URL starts with `urlPrefix` (default: the launched page). */
  async page(urlPrefix: string = this.pageUrl): Promise<CdpPage> {
    const page = await CdpPage.connect(await this.pageTarget(urlPrefix))
    this.#pages.add(page)
    return page
  }

  /**
   * Drops the DevTools connections, SIGKILLs the browser's whole process group,
   * waits until it is gone, then removes the profile directory (with retries).
   * Safe to call more than once.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const p of this.#pages) p.close()
      this.#pages.clear()
      await killGroup(this.process)
      fs.rmSync(this.userDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
    })()
    return this.#closing
  }
}

/**
 * Launches headless Chromium on `pageUrl` with remote debugging on a free
 * port, in a process group of its own (its helper processes outlive the main
 * one, so the group is what gets killed), and resolves once it prints its
 * DevTools URL. On failure the group is killed and the profile removed.
 */
export async function launchChromium(options: LaunchChromiumOptions): Promise<{ browser: HeadlessChromium; devtoolsUrl: string }> {
  const binary = options.binary ?? ensureChromium()
  const userDir = options.userDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-chromium-'))
  fs.mkdirSync(userDir, { recursive: true })
  const timeoutMs = options.timeoutMs ?? 60_000
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
      ...(options.args ?? []),
      options.pageUrl,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  )
  let devtoolsUrl: string
  try {
    devtoolsUrl = await new Promise<string>((resolve, reject) => {
      let err = ''
      const timer = setTimeout(() => reject(new Error(`Chromium printed no DevTools URL:\n${err.slice(-2000)}`)), timeoutMs)
      proc.stderr!.setEncoding('utf8')
      proc.stderr!.on('data', (d: string) => {
        if (err.length < 100_000) err += d
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(err)
        if (m) {
          clearTimeout(timer)
          resolve(m[1]!)
        }
      })
      proc.on('error', (e) => {
        clearTimeout(timer)
        reject(new Error(`Chromium (${binary}) did not start: ${e.message}`))
      })
      proc.on('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`Chromium exited with ${code}:\n${err.slice(-2000)}`))
      })
    })
  } catch (e) {
    await new HeadlessChromium(proc, '', userDir, options.pageUrl).close().catch(() => {
      // The launch error is what the caller gets; a failed cleanup adds nothing.
    })
    throw e
  }
  return { browser: new HeadlessChromium(proc, devtoolsUrl, userDir, options.pageUrl), devtoolsUrl }
}
