import { execFile, spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

/**
 * The quic-go interop peer (interop/quic-go: an echo server and client, and an HTTP/3 server, on
 * Debian's quic-go 0.29), for tests that check STOQ against a QUIC stack nobody here wrote.
 */

const execFileP = promisify(execFile)
/** The package root: this file is dist/index.js (the build) or src/tools/quic-go.ts (the sources). */
const HERE = path.dirname(fileURLToPath(import.meta.url))
const PACKAGE_ROOT = path.basename(HERE) === 'tools' ? path.resolve(HERE, '../..') : path.resolve(HERE, '..')
const PEER_DIR = path.resolve(PACKAGE_ROOT, '../../interop/quic-go')

/** The peer's binary (built by `buildQuicGoPeer`). */
export const quicGoPeerBinary = path.join(PEER_DIR, 'bin', 'stoq-interop-peer')

/**
 * Build the peer (interop/quic-go/build.sh installs Debian's Go and quic-go with apt when they
 * are missing, then builds offline; a no-op when the binary is newer than its sources). Throws
 * with the script's stderr when it cannot.
 */
export async function buildQuicGoPeer(): Promise<string> {
  try {
    await execFileP('bash', [path.join(PEER_DIR, 'build.sh')], { timeout: 600_000 })
  } catch (err) {
    const e = err as { stderr?: string; message: string }
    throw new Error(`Cannot build the quic-go interop peer (interop/quic-go/build.sh): ${e.stderr || e.message}`)
  }
  return quicGoPeerBinary
}

/**
 * Start the peer in a listening mode (`server`, `h3server`) with `args`, and resolve with the
 * port it printed (`LISTENING <port>`). `children` collects the process for the caller to kill.
 */
export function startQuicGoPeer(mode: 'server' | 'h3server', args: string[], children: ChildProcess[]): Promise<number> {
  const child = spawn(quicGoPeerBinary, [mode, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  return new Promise((resolve, reject) => {
    let out = ''
    let err = ''
    const timer = setTimeout(() => reject(new Error(`quic-go ${mode} did not start: ${err}`)), 10_000)
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /LISTENING (\d+)/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve(Number(m[1]))
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`quic-go ${mode} exited with ${code}: ${err}`))
    })
  })
}

/** Run the peer's client with `args`; its last stdout line is JSON. */
export async function runQuicGoClient(args: string[]): Promise<Record<string, unknown>> {
  try {
    const { stdout } = await execFileP(quicGoPeerBinary, ['client', ...args], { timeout: 90_000 })
    return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string }
    throw new Error(`quic-go client failed: ${e.stdout ?? ''} ${e.stderr ?? ''} ${e.message}`)
  }
}
