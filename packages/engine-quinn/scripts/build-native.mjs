#!/usr/bin/env node
/**
 * Builds the quinn engine's native library (native/, a Rust cdylib over quinn-proto 0.11 and
 * rustls 0.23) with `cargo build --release` from the exact versions in native/Cargo.lock, and
 * puts it at native/libstoq_quinn.so, where src/native.ts looks for a local build.
 *
 * Two uses:
 * - In the repository, as part of the package's `build`. cargo's target directory is
 *   native/target, and the library is also copied into the platform package of this machine
 *   (packages/engine-quinn-linux-x64-gnu on Linux x64 glibc) with its library.json: the glibc it
 *   needs (glibc-requirement.mjs), the system it was built on, its SHA-256.
 * - From an installed package, by hand, where no prebuilt fits (another platform, an older
 *   glibc): `node node_modules/@stoq/engine-quinn/scripts/build-native.mjs`. cargo's target
 *   directory is then $XDG_CACHE_HOME/stoq/cargo-target (not node_modules: it grows to ~80 MB),
 *   and only the library is copied into the package. Root is not needed. If the package
 *   directory is not writable, the library stays in the cache and the script says to point
 *   STOQ_QUINN_LIBRARY at it.
 *
 * It never fails the install (exit 0): when the library cannot be built, the reason goes to
 * native/build-status.json and the SDK runs on the quiche engine, saying why in its stats, in
 * `stoq doctor` and in a warning. `--strict` exits 1 instead (for a user who ran it by hand).
 *
 * Where the crates come from, first that works:
 * 1. STOQ_CARGO_REGISTRY=DIR: a directory of unpacked crates (e.g. /usr/share/cargo/registry
 *    on a Debian system that has them); STOQ_CARGO_REGISTRY=crates.io: plain cargo.
 * 2. Debian's packaged crates (suite DEB_SUITE), fetched without root and without touching the
 *    system's apt configuration: our own sources list and state directories, `apt-cache depends`
 *    for the closure of DEB_ROOTS, `apt-get download`, `dpkg-deb -x`. The unpacked registry is
 *    cached in $XDG_CACHE_HOME/stoq (default ~/.cache/stoq), one directory per package list,
 *    and reused: once fetched, builds are offline.
 * 3. crates.io, with cargo's own network access (a machine without apt): `cargo build --release
 *    --locked`, exactly the committed lock. No committed cargo configuration names another
 *    registry, so in native/ a plain `cargo build --release --locked` does the same.
 *
 * Cargo.lock holds crates.io checksums. Debian records many crates without one ("Could not get
 * crate checksum"), so cargo is pointed at an overlay of the registry (symlinks) whose
 * .cargo-checksum.json carries the lock's checksum for those crates; the .debs themselves were
 * verified by apt against the signed archive. Debian's manifests of a few crates name
 * dependencies that crates.io's do not (cargo adds cpufeatures 0.3, syn 3 and tinyvec to the
 * lock), so that build cannot be --locked: the committed Cargo.lock is restored afterwards.
 *
 * `--cargo SUBCOMMAND [ARGS...]` runs that cargo command on the crate instead of building (CI's
 * `clippy --release -- -D warnings`, from scripts/test-all.mjs), with the crates from the same
 * sources in the same order and the same target directory; it exits with cargo's status (2 when
 * cargo is missing) and writes no build status.
 *
 * Environment: STOQ_SKIP_QUINN=1 skips the build (status says so); STOQ_CARGO_REGISTRY (above);
 * STOQ_DEB_MIRROR (default http://deb.debian.org/debian); CARGO_TARGET_DIR (where cargo builds).
 */
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { privateApt } from './debian-apt.mjs'
import { glibcRequirement } from './glibc-requirement.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const packageRoot = path.resolve(here, '..')
const nativeDir = path.join(packageRoot, 'native')
const statusFile = path.join(nativeDir, 'build-status.json')
/** Where the loader (src/native.ts) looks for a local build. */
const library = path.join(nativeDir, 'libstoq_quinn.so')
const LIBRARY_FILE = 'libstoq_quinn.so'
const verbose = process.argv.includes('--verbose')
const strict = process.argv.includes('--strict')
/** An installed copy (under node_modules), not the repository. */
const installed = packageRoot.split(path.sep).includes('node_modules')

function writable(dir) {
  try {
    fs.accessSync(dir, fs.constants.W_OK)
    return true
  } catch {
    return false
  }
}

/**
 * The crate cargo builds: native/, or a copy of it under the cache when the installed package
 * cannot be written (cargo writes Cargo.lock next to Cargo.toml).
 */
function crateDir() {
  if (writable(nativeDir)) return nativeDir
  const copy = path.join(cacheRoot(), 'quinn-crate')
  fs.rmSync(copy, { recursive: true, force: true })
  fs.mkdirSync(copy, { recursive: true })
  for (const entry of ['Cargo.toml', 'Cargo.lock', 'rustfmt.toml', 'src']) fs.cpSync(path.join(nativeDir, entry), path.join(copy, entry), { recursive: true })
  return copy
}

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
  const status = { ok, library: ok ? (extra.library ?? library) : null, reason, builtAt: new Date().toISOString(), ...extra }
  try {
    fs.writeFileSync(statusFile, `${JSON.stringify(status, null, 2)}\n`)
  } catch (err) {
    log(`cannot write ${statusFile}: ${err.message}`)
  }
  log(ok ? `native library ready: ${status.library}` : `native library NOT built (the quiche engine will be used): ${reason}`)
  process.exit(ok || !strict ? 0 : 1)
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
  const key = crypto
    .createHash('sha256')
    .update(JSON.stringify([DEB_SUITE, mirror, DEB_ROOTS]))
    .digest('hex')
    .slice(0, 16)
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
  const { options: opts, debs, root: unpacked } = privateApt(work, DEB_SUITE, mirror)
  try {
    let r = run('apt-get', [...opts, 'update'], { stdio: 'pipe' })
    if (!r.ok) throw new Error(`apt-get update (${DEB_SUITE}) failed: ${tail(r.output, 5)}`)
    r = run(
      'apt-cache',
      [...opts, 'depends', '--recurse', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', ...DEB_ROOTS],
      { stdio: 'pipe' },
    )
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
    fs.writeFileSync(
      marker,
      `${JSON.stringify({ suite: DEB_SUITE, mirror, roots: DEB_ROOTS, debs: files.sort(), fetchedAt: new Date().toISOString() }, null, 2)}\n`,
    )
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

/**
 * cargo's target directory: native/target in the repository (incremental builds next to the
 * sources); in an installed package, one under the user's cache, so that node_modules does not
 * keep ~80 MB of intermediate files. CARGO_TARGET_DIR, when set, wins.
 */
const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(process.env.CARGO_TARGET_DIR)
  : installed
    ? path.join(cacheRoot(), 'cargo-target')
    : path.join(nativeDir, 'target')
const cargoOutput = path.join(targetDir, 'release', LIBRARY_FILE)

/** cargo build --release, from `registry` (a directory) or from crates.io (null, exactly the lock). */
function cargoBuild(cargo, registry) {
  return cargoRun(cargo, registry, ['build', '--release'])
}

/** `cargo SUBCOMMAND ...` (command[0] is the subcommand) with the crates from `registry`, as cargoBuild. */
function cargoRun(cargo, registry, command) {
  const separator = command.indexOf('--')
  const own = separator === -1 ? command : command.slice(0, separator)
  const passed = separator === -1 ? [] : command.slice(separator)
  const args = [...own, '--target-dir', targetDir]
  if (registry !== null) {
    args.push(
      '--offline',
      '--config',
      'source.crates-io.replace-with="stoq-vendored"',
      '--config',
      `source.stoq-vendored.directory=${JSON.stringify(checksumOverlay(registry))}`,
    )
  } else {
    args.push('--locked')
  }
  args.push(...passed)
  const lockBefore = fs.readFileSync(lockFile)
  const started = Date.now()
  const r = run(cargo, args, { cwd: crate })
  // The committed lock stays as it is (see the header).
  if (!fs.readFileSync(lockFile).equals(lockBefore)) fs.writeFileSync(lockFile, lockBefore)
  return { ...r, seconds: Math.round((Date.now() - started) / 100) / 10 }
}

/** Copy `from` to `to` through a temporary file and a rename: a process that has the old file loaded keeps its copy intact. */
function install(from, to) {
  const tmp = `${to}.tmp-${process.pid}`
  fs.copyFileSync(from, tmp)
  fs.renameSync(tmp, to)
}

/** glibc's version from a diagnostic report (null: not glibc), without the report's network part. */
function glibcVersion() {
  const report = process.report
  if (!report) return null
  const exclude = report.excludeNetwork
  try {
    report.excludeNetwork = true
    return report.getReport().header?.glibcVersionRuntime ?? null
  } catch {
    return null
  } finally {
    report.excludeNetwork = exclude
  }
}

function osDescription() {
  let name = `${os.type()} ${os.release()}`
  try {
    name = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? name
  } catch {
    // No /etc/os-release: the kernel's name and release above describe the system.
  }
  const glibc = glibcVersion()
  return glibc ? `${name}, glibc ${glibc}` : name
}

/** The platform package name for this machine, as src/native.ts computes it. */
function platformPackageDir() {
  const libc = process.platform === 'linux' ? (glibcVersion() ? '-gnu' : '-musl') : ''
  return path.resolve(packageRoot, '..', `engine-quinn-${process.platform}-${process.arch}${libc}`)
}

/**
 * In the repository: the library and its library.json into this machine's platform package
 * (which is what gets published). Returns its directory, or null when there is none.
 */
function fillPlatformPackage(source, meta) {
  if (installed) return null
  const dir = platformPackageDir()
  if (!fs.existsSync(path.join(dir, 'package.json'))) return null
  install(source, path.join(dir, LIBRARY_FILE))
  fs.writeFileSync(path.join(dir, 'library.json'), `${JSON.stringify({ file: LIBRARY_FILE, ...meta }, null, 2)}\n`)
  return dir
}

/** After a successful cargo build: the library into the package (and the platform package), then exit. */
function deliver(source, seconds) {
  const requirement = glibcRequirement(cargoOutput)
  const rustc = run('rustc', ['--version'], { stdio: 'pipe' }).stdout.trim() || 'unknown'
  const meta = {
    glibc: requirement.glibc,
    glibcVersions: requirement.versions,
    builtOn: osDescription(),
    rustc,
    sha256: crypto.createHash('sha256').update(fs.readFileSync(cargoOutput)).digest('hex'),
  }
  const extra = { source, seconds, targetDir, ...meta }
  try {
    install(cargoOutput, library)
  } catch (err) {
    // A package directory this user cannot write (e.g. a global install by root): the library
    // stays in the cache, and the loader is pointed at it by hand.
    log(`cannot copy the library into ${nativeDir} (${err.code ?? err.message}): use it from the cache with`)
    log(`  export STOQ_QUINN_LIBRARY=${cargoOutput}`)
    finish(true, `built, left in ${cargoOutput} (set STOQ_QUINN_LIBRARY to it)`, { ...extra, library: cargoOutput })
  }
  const platformDir = fillPlatformPackage(library, meta)
  if (platformDir) log(`copied into ${path.relative(path.resolve(packageRoot, '..', '..'), platformDir)} (needs glibc >= ${meta.glibc})`)
  finish(true, 'built', { ...extra, platformPackage: platformDir })
}

if (process.platform !== 'linux') finish(false, `unsupported platform ${process.platform} (the library is built for Linux)`)
if (process.env.STOQ_SKIP_QUINN === '1' && !process.argv.includes('--cargo')) finish(false, 'STOQ_SKIP_QUINN=1: build skipped')

// cargo: PATH first, then rustup's default location.
const cargoCandidates = ['cargo', path.join(os.homedir(), '.cargo', 'bin', 'cargo')]
let cargo = null
for (const c of cargoCandidates) {
  if (run(c, ['--version'], { stdio: 'pipe' }).ok) {
    cargo = c
    break
  }
}
const cargoModeAt = process.argv.indexOf('--cargo')
const cargoCommand = cargoModeAt === -1 ? null : process.argv.slice(cargoModeAt + 1)
if (cargoCommand !== null && cargo === null) {
  log('cargo not found')
  process.exit(2)
}
if (cargo === null) finish(false, 'cargo not found (install Rust with rustup, or cargo from apt)')
const crate = crateDir()
const lockFile = path.join(crate, 'Cargo.lock')
if (installed) log(`cargo target directory: ${targetDir}${crate === nativeDir ? '' : `; crate copied to ${crate} (${nativeDir} is not writable)`}`)

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
  if (cargoCommand !== null) {
    log(`cargo ${cargoCommand.join(' ')} (${source.name})`)
    const r = cargoRun(cargo, registry, cargoCommand)
    if (!verbose) process.stdout.write(r.output)
    process.exit(r.status ?? 1)
  }
  log(`cargo build --release (${source.name})`)
  const build = cargoBuild(cargo, registry)
  if (build.ok && fs.existsSync(cargoOutput)) deliver(source.name, build.seconds)
  attempts.push(`${source.name}: cargo build failed:\n${tail(build.output)}`)
  log(`cargo build from ${source.name} failed`)
}
finish(false, attempts.join('\n\n'))
