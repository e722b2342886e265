/** Drives one peer.mjs (or relay.mjs) child running inside a namespace (JSON lines both ways). */
import { spawn, type ChildProcess } from 'node:child_process'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

export const PEER_SCRIPT = fileURLToPath(new URL('./peer.mjs', import.meta.url))

export type PeerEvent = { ev: string; [k: string]: unknown }

export class PeerProcess {
  readonly child: ChildProcess
  readonly events: PeerEvent[] = []
  readonly stderr: string[] = []
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>()
  private readonly waiters: { match: (e: PeerEvent) => boolean; resolve: (e: PeerEvent) => void }[] = []
  private exited: string | null = null

  constructor(
    readonly label: string,
    ns: string,
    script: string = PEER_SCRIPT,
    env: Record<string, string> = {},
  ) {
    // STOQ_ENGINE (set per vitest project) goes through to the child untouched.
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, script], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => this.onLine(line))
    readline.createInterface({ input: this.child.stderr! }).on('line', (line) => {
      this.stderr.push(line)
      if (this.stderr.length > 200) this.stderr.shift()
    })
    this.child.on('exit', (code, signal) => {
      this.exited = `exited (code ${code}, signal ${signal})`
      const err = new Error(`${this.label} peer ${this.exited}; stderr: ${this.stderr.slice(-20).join('\n')}`)
      for (const p of this.pending.values()) p.reject(err)
      this.pending.clear()
    })
    this.child.stdin!.on('error', () => {})
  }

  private onLine(line: string): void {
    let msg: any
    try {
      msg = JSON.parse(line)
    } catch {
      this.stderr.push(`[stdout] ${line}`)
      return
    }
    if (typeof msg.id === 'number' && 'ok' in msg) {
      const p = this.pending.get(msg.id)
      if (!p) return
      this.pending.delete(msg.id)
      if (msg.ok) p.resolve(msg.result)
      else {
        const e = new Error(`${this.label}: ${msg.error?.code ?? ''} ${msg.error?.message ?? 'failed'}`) as Error & { code?: string }
        e.code = msg.error?.code
        p.reject(e)
      }
      return
    }
    this.events.push(msg)
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!
      if (w.match(msg)) {
        this.waiters.splice(i, 1)
        w.resolve(msg)
      }
    }
  }

  /** Send a command; resolves with its result, rejects on error, exit or timeout. */
  cmd<T = any>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.label} peer ${this.exited}`))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`${this.label}: ${cmd} timed out after ${timeoutMs} ms; stderr: ${this.stderr.slice(-10).join('\n')}`))
      }, timeoutMs)
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer)
          resolve(v)
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        },
      })
      this.child.stdin!.write(JSON.stringify({ ...args, cmd, id }) + '\n')
    })
  }

  /** The first event (already seen or coming) that matches. */
  waitFor(match: (e: PeerEvent) => boolean, timeoutMs: number, what = 'event'): Promise<PeerEvent> {
    const seen = this.events.find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(entry)
        if (i >= 0) this.waiters.splice(i, 1)
        reject(new Error(`${this.label}: no ${what} within ${timeoutMs} ms; stderr: ${this.stderr.slice(-10).join('\n')}`))
      }, timeoutMs)
      const entry = {
        match,
        resolve: (e: PeerEvent) => {
          clearTimeout(timer)
          resolve(e)
        },
      }
      this.waiters.push(entry)
    })
  }

  /** Ask the peer to exit; kill it if it does not within a second. */
  async stop(): Promise<void> {
    if (this.exited) return
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    this.child.stdin!.end()
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 1500)
    await gone
    clearTimeout(timer)
  }
}
