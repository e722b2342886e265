#!/usr/bin/env node
/**
 * Builds the quinn engine's native library: `cargo build --release --offline` against
 * Debian's packaged crates (/usr/share/cargo/registry, see native/.cargo/config.toml).
 *
 * It never fails the install. When the library cannot be built, it writes the reason to
 * native/build-status.json and exits 0: the SDK then runs on the quiche engine and says
 * so in its stats and in `stoq doctor`.
 *
 * Steps: find cargo; when Debian's crates are missing and we are root with apt-get,
 * install them (librust-quinn-proto-dev, librust-rustls-dev, librust-rustls-pemfile-dev);
 * build; record the result.
 *
 * Environment: STOQ_SKIP_QUINN=1 skips the build (status says so).
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const nativeDir = path.resolve(here, '..', 'native')
const statusFile = path.join(nativeDir, 'build-status.json')
const library = path.join(nativeDir, 'target', 'release', 'libstoq_quinn.so')
const REGISTRY = '/usr/share/cargo/registry'
const CRATES = ['quinn-proto-0.9.2', 'rustls-0.20.8', 'rustls-pemfile-1.0.0', 'ring-0.16.20']
const APT_PACKAGES = ['librust-quinn-proto-dev', 'librust-rustls-dev', 'librust-rustls-pemfile-dev']
const verbose = process.argv.includes('--verbose')

function log(msg) {
  process.stdout.write(`[engine-quinn] ${msg}\n`)
}

function finish(ok, reason, extra = {}) {
  const status = { ok, library: ok ? library : null, reason, builtAt: new Date().toISOString(), ...extra }
  fs.writeFileSync(statusFile, `${JSON.stringify(status, null, 2)}\n`)
  log(ok ? `native library ready: ${library}` : `native library NOT built (the quiche engine will be used): ${reason}`)
  process.exit(0)
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: verbose ? 'inherit' : 'pipe', ...opts })
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`
  return { ok: r.status === 0, status: r.status, error: r.error, output }
}

function tail(text, lines = 15) {
  return text.trim().split('\n').slice(-lines).join('\n')
}

if (process.platform !== 'linux') finish(false, `unsupported platform ${process.platform} (the library is built for Linux)`)
if (process.env.STOQ_SKIP_QUINN === '1') finish(false, 'STOQ_SKIP_QUINN=1: build skipped')

// cargo: PATH first, then rustup's default location.
const cargoCandidates = ['cargo', path.join(os.homedir(), '.cargo', 'bin', 'cargo')]
let cargo = null
for (const c of cargoCandidates) {
  const r = run(c, ['--version'], { stdio: 'pipe' })
  if (r.ok) {
    cargo = c
    break
  }
}
if (cargo === null) finish(false, 'cargo not found (install Rust with rustup, or cargo from apt)')

const missing = () => CRATES.filter((c) => !fs.existsSync(path.join(REGISTRY, c)))
if (missing().length > 0) {
  const root = typeof process.getuid === 'function' && process.getuid() === 0
  const haveApt = run('apt-get', ['--version'], { stdio: 'pipe' }).ok
  if (!root || !haveApt) {
    finish(false, `Debian crates missing (${missing().join(', ')}); install as root: apt-get install ${APT_PACKAGES.join(' ')}`)
  }
  log(`installing Debian crates: ${APT_PACKAGES.join(' ')}`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  let r = run('apt-get', ['install', '-y', '--no-install-recommends', ...APT_PACKAGES], { env })
  if (!r.ok) {
    log('apt-get install failed; refreshing package lists and retrying')
    run('apt-get', ['update'], { env })
    r = run('apt-get', ['install', '-y', '--no-install-recommends', ...APT_PACKAGES], { env })
  }
  if (!r.ok || missing().length > 0) finish(false, `apt-get could not install the crates: ${tail(r.output, 5)}`)
}

log(`cargo build --release --offline (${cargo})`)
const started = Date.now()
const build = run(cargo, ['build', '--release', '--offline'], { cwd: nativeDir })
if (!build.ok) finish(false, `cargo build failed:\n${tail(build.output)}`)
if (!fs.existsSync(library)) finish(false, `cargo succeeded but ${library} is missing`)
finish(true, 'built', { seconds: Math.round((Date.now() - started) / 100) / 10 })
