#!/usr/bin/env node
// Builds every package, checks the packed packages (scripts/check-packages.mjs), runs every
// package's tests (one package at a time, so socket tests do not fight for 2 cores), installs the
// packed packages with npm in a fresh project (scripts/packed-install.mjs), and always
// ends with one plain line "N passed, N failed" counted from vitest's JSON reports and the
// package checks, so a run that executed no test is visible. Exit code: non-zero when anything
// failed.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

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

let rc = run(['run', 'build'])
const built = rc === 0
const packaging = built ? checkPackages() : null
if (built) rc = run(['run', 'test', '--concurrency=1', '--continue'])

/**
 * What a user's `npm install` gets (scripts/packed-install.mjs): the packed tarballs in a fresh
 * project outside the workspace, quinn from the prebuilt package, an echo over loopback, engine
 * workers, and the warning without the prebuilt. Counted as one test.
 */
let packed = null
if (built) {
  console.log('\n$ node scripts/packed-install.mjs')
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'packed-install.mjs')], { cwd: root, stdio: 'inherit', env, timeout: 10 * 60_000, killSignal: 'SIGKILL' })
  if (r.error) console.error(`packed-install stopped: ${r.error.message}`)
  packed = r.status === 0
}

let passed = 0
let failed = 0
if (packaging !== null) {
  console.log(`packed packages (check:packages): ${packaging.passed} passed, ${packaging.failed} failed`)
  passed += packaging.passed
  failed += packaging.failed
}
for (const { dir, name } of withTests) {
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
if (rc !== 0 && failed === 0) failed = 1
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed > 0 || rc !== 0 ? 1 : 0)
