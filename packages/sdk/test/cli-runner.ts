import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The built `stoq` command. */
export const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))

export interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * Runs the built CLI as child processes with its own XDG_CONFIG_HOME (a fresh temp dir), and
 * kills whatever is still running at `cleanup()`.
 */
export class CliRunner {
  readonly config: string
  readonly children = new Set<ChildProcess>()

  constructor(prefix: string) {
    this.config = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  }

  /** Run to completion, feeding `input` on stdin when given; killed (and rejected) after `timeoutMs`. */
  run(args: string[], options: { timeoutMs?: number; input?: Buffer | string } = {}): Promise<Run> {
    const timeoutMs = options.timeoutMs ?? 45_000
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], {
        env: { ...process.env, XDG_CONFIG_HOME: this.config },
        stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      })
      this.children.add(child)
      let stdout = ''
      let stderr = ''
      child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
      if (options.input !== undefined) {
        child.stdin!.on('error', () => {})
        child.stdin!.end(options.input)
      }
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`stoq ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`))
      }, timeoutMs)
      child.on('exit', (code) => {
        clearTimeout(timer)
        this.children.delete(child)
        resolve({ code, stdout, stderr })
      })
    })
  }

  cleanup(): void {
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGKILL')
    fs.rmSync(this.config, { recursive: true, force: true })
  }
}
