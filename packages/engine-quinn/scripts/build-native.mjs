#!/usr/bin/env node
/**
 * Builds the quinn engine's native library (native/, a Rust cdylib over quinn-proto 0.11 and
 * rustls 0.23) with `cargo build --release` from the exact versions in native/Cargo.lock.
 *
 * It never fails the install. When the library cannot be built, it writes the reason to
 * native/build-status.json and exits 0: the SDK then runs on the quiche engine and says so in
 * its stats and in `stoq doctor`.
 *
 * Where the crates come from, first that works:
 * 1. STOQ_CARGO_REGISTRY=DIR: a directory of unpacked crates (e.g. /usr/share/cargo/registry
 *    on a Debian system that has them); STOQ_CARGO_REGISTRY=crates.io: plain cargo.
 * 2. Debian's packaged crates (suite DEB_SUITE), fetched without root and without touching the
 *    system's apt configuration: our own sources list and state directories, `apt-cache depends`
 *    for the closure of DEB_ROOTS, `apt-get download`, `dpkg-deb -x`. The unpacked registry is
 *    cached in $XDG_CACHE_HOME/stoq (default ~/.cache/stoq), one directory per package list,
 *    and reused: once fetched, builds are offline.
 * 3. crates.io, with cargo's own network access (a machine without apt).
 *
 * Cargo.lock holds crates.io checksums. Debian records many crates without one ("Could not get
 * crate checksum"), so cargo is pointed at an overlay of the registry (symlinks) whose
 * .cargo-checksum.json carries the lock's checksum for those crates; the .debs themselves were
 * verified by apt against the signed archive. Cargo.lock is restored if cargo rewrote it: the
 * crates whose crates.io checksum is not recorded there (tinyvec, cpufeatures, syn 3) resolve
 * at build time.
 *
 * Environment: STOQ_SKIP_QUINN=1 skips the build (status says so); STOQ_CARGO_REGISTRY (above);
 * STOQ_DEB_MIRROR (default http://deb.debian.org/debian).
 */
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const nativeDir = path.resolve(here, '..', 'native')
const statusFile = path.join(nativeDir, 'build-status.json')
const lockFile = path.join(nativeDir, 'Cargo.lock')
const library = path.join(nativeDir, 'target', 'release', 'libstoq_quinn.so')
const verbose = process.argv.includes('--verbose')

/** Debian suite that packages quinn-proto 0.11.19, rustls 0.23.45, ring 0.17.14, ml-kem 0.3.2 and x25519-dalek 3.0.0. */
const DEB_SUITE = 'forky'
const DEB_ROOTS = [
  'librust-quinn-proto-dev',
  'librust-rustls-dev',
  'librust-ring-dev',
  'librust-rustls-pki-types-dev',
  'librust-bytes-dev',
  // X25519MLKEM768 (native/src/kx.rs): ML-KEM-768 and X25519.
  'librust-ml-kem-dev',
  'librust-x25519-dalek-dev',
]

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
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: verbose ? ['ignore', 'inherit', 'inherit'] : 'pipe', maxBuffer: 64 << 20, ...opts })
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`
  return { ok: r.status === 0, status: r.status, error: r.error, output, stdout: r.stdout ?? '' }
}

function tail(text, lines = 15) {
  return text.trim().split('\n').slice(-lines).join('\n')
}

function cacheRoot() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache')
  return path.join(base, 'stoq')
}

/**
 * Debian's crates for DEB_ROOTS, unpacked into a cached directory. Returns the registry
 * directory, or throws with the reason.
 */
function debianRegistry() {
  const mirror = process.env.STOQ_DEB_MIRROR || 'http://deb.debian.org/debian'
  const key = crypto.createHash('sha256').update(JSON.stringify([DEB_SUITE, mirror, DEB_ROOTS])).digest('hex').slice(0, 16)
  const dir = path.join(cacheRoot(), `deb-registry-${key}`)
  const registry = path.join(dir, 'usr', 'share', 'cargo', 'registry')
  const marker = path.join(dir, 'complete.json')
  if (fs.existsSync(marker) && fs.existsSync(registry)) {
    log(`Debian crates (cached): ${registry}`)
    return registry
  }
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb']) {
    if (!run(tool, ['--version'], { stdio: 'pipe' }).ok) throw new Error(`${tool} not found (not a Debian-based system)`)
  }
  log(`fetching Debian ${DEB_SUITE} crates into ${dir} (once)`)
  const work = `${dir}.tmp-${process.pid}`
  fs.rmSync(work, { recursive: true, force: true })
  const lists = path.join(work, 'lists')
  const cache = path.join(work, 'cache')
  const debs = path.join(work, 'debs')
  const unpacked = path.join(work, 'root')
  for (const d of [path.join(lists, 'partial'), path.join(cache, 'archives', 'partial'), debs, unpacked]) fs.mkdirSync(d, { recursive: true })
  const sources = path.join(work, 'sources.list')
  fs.writeFileSync(sources, `deb ${mirror} ${DEB_SUITE} main\n`)
  const status = path.join(work, 'status')
  fs.writeFileSync(status, '')
  const opts = [
    '-o', `Dir::Etc::SourceList=${sources}`,
    '-o', 'Dir::Etc::SourceParts=/dev/null',
    '-o', `Dir::State::Lists=${lists}`,
    '-o', `Dir::Cache=${cache}`,
    // An empty dpkg status: resolve against the suite alone, not what this system has installed.
    '-o', `Dir::State::status=${status}`,
    '-o', 'Debug::NoLocking=1',
  ]
  // As root, apt drops to the _apt user, who cannot write into a home directory.
  if (typeof process.getuid === 'function' && process.getuid() === 0) opts.push('-o', 'APT::Sandbox::User=root')
  try {
    let r = run('apt-get', [...opts, 'update'], { stdio: 'pipe' })
    if (!r.ok) throw new Error(`apt-get update (${DEB_SUITE}) failed: ${tail(r.output, 5)}`)
    r = run('apt-cache', [...opts, 'depends', '--recurse', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', ...DEB_ROOTS], { stdio: 'pipe' })
    if (!r.ok) throw new Error(`apt-cache depends failed: ${tail(r.output, 5)}`)
    // Top-level lines are package names; keep the crate packages (feature packages, with a
    // '+', are provided by them).
    const packages = [...new Set(r.stdout.split('\n').filter((l) => /^librust-[a-z0-9.-]+-dev$/.test(l)))].sort()
    for (const root of DEB_ROOTS) if (!packages.includes(root)) throw new Error(`${root} is not in Debian ${DEB_SUITE}`)
    r = run('apt-get', [...opts, 'download', ...packages], { cwd: debs, stdio: 'pipe' })
    if (!r.ok) throw new Error(`apt-get download failed: ${tail(r.output, 5)}`)
    const files = fs.readdirSync(debs).filter((f) => f.endsWith('.deb'))
    if (files.length !== packages.length) throw new Error(`downloaded ${files.length} of ${packages.length} packages`)
    for (const f of files) {
      const x = run('dpkg-deb', ['-x', path.join(debs, f), unpacked], { stdio: 'pipe' })
      if (!x.ok) throw new Error(`dpkg-deb -x ${f} failed: ${tail(x.output, 3)}`)
    }
    fs.rmSync(dir, { recursive: true, force: true })
    fs.mkdirSync(dir, { recursive: true })
    fs.renameSync(path.join(unpacked, 'usr'), path.join(dir, 'usr'))
    fs.writeFileSync(marker, `${JSON.stringify({ suite: DEB_SUITE, mirror, roots: DEB_ROOTS, debs: files.sort(), fetchedAt: new Date().toISOString() }, null, 2)}\n`)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
  log(`Debian crates ready: ${registry}`)
  return registry
}

/** name-version → checksum, for the crates.io packages of Cargo.lock. */
function lockChecksums() {
  const out = new Map()
  const text = fs.readFileSync(lockFile, 'utf8')
  for (const block of text.split('[[package]]')) {
    const name = /^name = "([^"]+)"/m.exec(block)?.[1]
    const version = /^version = "([^"]+)"/m.exec(block)?.[1]
    const sum = /^checksum = "([0-9a-f]{64})"/m.exec(block)?.[1]
    if (name && version && sum) out.set(`${name}-${version}`, sum)
  }
  return out
}

/**
 * A view of `registry` whose crates carry Cargo.lock's checksums where the registry has none:
 * a directory of symlinks, rebuilt on each run (cheap), under the cache.
 */
function checksumOverlay(registry) {
  const sums = lockChecksums()
  const key = crypto.createHash('sha256').update(path.resolve(registry)).digest('hex').slice(0, 16)
  const overlay = path.join(cacheRoot(), `registry-overlay-${key}`)
  fs.rmSync(overlay, { recursive: true, force: true })
  fs.mkdirSync(overlay, { recursive: true })
  let patched = 0
  for (const crate of fs.readdirSync(registry)) {
    const src = path.join(registry, crate)
    if (!fs.statSync(src).isDirectory()) continue
    const dst = path.join(overlay, crate)
    const want = sums.get(crate)
    let have = null
    try {
      have = JSON.parse(fs.readFileSync(path.join(src, '.cargo-checksum.json'), 'utf8')).package ?? null
    } catch {
      have = null
    }
    if (want === undefined || have === want || /^[0-9a-f]{64}$/.test(have ?? '')) {
      // Nothing to fix; a differing real checksum is left for cargo to report.
      fs.symlinkSync(src, dst)
      continue
    }
    fs.mkdirSync(dst)
    for (const entry of fs.readdirSync(src)) {
      if (entry !== '.cargo-checksum.json') fs.symlinkSync(path.join(src, entry), path.join(dst, entry))
    }
    fs.writeFileSync(path.join(dst, '.cargo-checksum.json'), JSON.stringify({ package: want, files: {} }))
    patched++
  }
  if (verbose) log(`registry overlay ${overlay}: ${patched} checksums taken from Cargo.lock`)
  return overlay
}

/** cargo build --release, from `registry` (a directory) or from crates.io (null). */
function cargoBuild(cargo, registry) {
  const args = ['build', '--release']
  if (registry !== null) {
    args.push(
      '--offline',
      '--config', 'source.crates-io.replace-with="stoq-vendored"',
      '--config', `source.stoq-vendored.directory=${JSON.stringify(checksumOverlay(registry))}`,
    )
  }
  const lockBefore = fs.readFileSync(lockFile)
  const started = Date.now()
  const r = run(cargo, args, { cwd: nativeDir })
  // The committed lock stays as it is (see the header).
  if (!fs.readFileSync(lockFile).equals(lockBefore)) fs.writeFileSync(lockFile, lockBefore)
  return { ...r, seconds: Math.round((Date.now() - started) / 100) / 10 }
}

if (process.platform !== 'linux') finish(false, `unsupported platform ${process.platform} (the library is built for Linux)`)
if (process.env.STOQ_SKIP_QUINN === '1') finish(false, 'STOQ_SKIP_QUINN=1: build skipped')

// cargo: PATH first, then rustup's default location.
const cargoCandidates = ['cargo', path.join(os.homedir(), '.cargo', 'bin', 'cargo')]
let cargo = null
for (const c of cargoCandidates) {
  if (run(c, ['--version'], { stdio: 'pipe' }).ok) {
    cargo = c
    break
  }
}
if (cargo === null) finish(false, 'cargo not found (install Rust with rustup, or cargo from apt)')

const attempts = []
const override = process.env.STOQ_CARGO_REGISTRY
const sources = []
if (override === 'crates.io') sources.push({ name: 'crates.io', registry: () => null })
else if (override) sources.push({ name: `STOQ_CARGO_REGISTRY=${override}`, registry: () => override })
else {
  sources.push({ name: `Debian ${DEB_SUITE} crates`, registry: debianRegistry })
  sources.push({ name: 'crates.io', registry: () => null })
}
for (const source of sources) {
  let registry
  try {
    registry = source.registry()
  } catch (err) {
    attempts.push(`${source.name}: ${err.message}`)
    log(`${source.name} unavailable: ${err.message}`)
    continue
  }
  log(`cargo build --release (${source.name})`)
  const build = cargoBuild(cargo, registry)
  if (build.ok && fs.existsSync(library)) finish(true, 'built', { source: source.name, seconds: build.seconds })
  attempts.push(`${source.name}: cargo build failed:\n${tail(build.output)}`)
  log(`cargo build from ${source.name} failed`)
}
finish(false, attempts.join('\n\n'))
