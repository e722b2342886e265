// The checks of scripts/test-all.mjs that read the sources without building them: Biome's lint
// (biome.json: packages/*/src, test, scripts and the root scripts), Biome's format check (only once
// the tree has been reformatted: see FORMAT_MARKER), `cargo fmt --check` and
// `cargo clippy --release -- -D warnings` on the quinn crate, scripts/check-changesets.mjs and
// its test (node --test).
// Each is one result in test-all's final line. Run alone: `node scripts/static-checks.mjs`.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * `biome format` joins the checks when this file exists at the repository root. The maintainer
 * creates it in the commit after the one that runs `pnpm run format` over the tree; until then
 * the check is skipped with a note (the tree is not in Biome's format yet).
 */
export const FORMAT_MARKER = '.format-enforced'

const nativeDir = path.join(root, 'packages', 'engine-quinn', 'native')

function has(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: 'pipe' })
  return r.status === 0
}

/**
 * Runs the checks; returns one `{ label, passed, failed }` per check that ran and prints a note
 * for each one skipped. On CI (CI set), a missing cargo component (clippy, rustfmt) where cargo
 * itself exists is a failure: the CI machine has rustup's full toolchain. Without cargo at all the
 * Rust checks are skipped everywhere (the SDK then runs on quiche, as the build says).
 */
export function staticChecks({ env = process.env } = {}) {
  const results = []
  const check = (label, cmd, args, cwd = root) => {
    console.log(`\n$ ${[cmd, ...args].join(' ')}${cwd === root ? '' : ` (in ${path.relative(root, cwd)})`}`)
    const t = Date.now()
    const r = spawnSync(cmd, args, { cwd, stdio: 'inherit', env, timeout: 15 * 60_000, killSignal: 'SIGKILL' })
    if (r.error) console.error(`${label} stopped: ${r.error.message}`)
    const ok = r.status === 0
    console.log(`${label}: ${ok ? 'ok' : 'FAILED'} (${((Date.now() - t) / 1000).toFixed(1)} s)`)
    results.push({ label, passed: ok ? 1 : 0, failed: ok ? 0 : 1 })
  }
  const skip = (label, why) => {
    const failing = env.CI !== undefined && env.CI !== '' && env.CI !== 'false'
    console.log(`${label}: ${failing ? 'FAILED' : 'skipped'}: ${why}`)
    if (failing) results.push({ label, passed: 0, failed: 1 })
  }
  const biome = path.join(root, 'node_modules', '.bin', 'biome')

  // Lint fails on any finding (warnings included), in every package and the root scripts.
  const packages = fs.readdirSync(path.join(root, 'packages')).filter((d) => fs.existsSync(path.join(root, 'packages', d, 'package.json')))
  check('lint (biome)', biome, ['lint', '--error-on-warnings', ...packages.map((d) => `packages/${d}`), 'scripts'])
  if (fs.existsSync(path.join(root, FORMAT_MARKER))) check('format (biome)', biome, ['format'])
  else console.log(`format (biome): not enforced yet (it is once ${FORMAT_MARKER} exists at the root, after the reformat commit)`)

  const cargo = ['cargo', path.join(os.homedir(), '.cargo', 'bin', 'cargo')].find((c) => has(c, ['--version']))
  if (cargo === undefined) {
    console.log('cargo fmt / cargo clippy: skipped: cargo not found (the quinn crate is not checked on this machine)')
  } else {
    if (has(cargo, ['fmt', '--version'])) check('cargo fmt --check (engine-quinn/native)', cargo, ['fmt', '--check'], nativeDir)
    else skip('cargo fmt --check (engine-quinn/native)', 'rustfmt is not installed (rustup component add rustfmt)')
    if (has(cargo, ['clippy', '--version'])) {
      // build-native.mjs resolves the crates (Debian's packaged crates, cached, else crates.io)
      // exactly as the build does, and runs clippy with them.
      check('cargo clippy --release -D warnings (engine-quinn/native)', process.execPath, [
        path.join(root, 'packages', 'engine-quinn', 'scripts', 'build-native.mjs'),
        '--cargo',
        'clippy',
        '--release',
        '--',
        '-D',
        'warnings',
      ])
    } else {
      skip('cargo clippy (engine-quinn/native)', 'clippy is not installed (rustup component add clippy)')
    }
  }

  check('scripts tests (node --test)', process.execPath, ['--test', path.join(root, 'scripts', 'check-changesets.test.mjs')])
  check('changesets (scripts/check-changesets.mjs)', process.execPath, [path.join(root, 'scripts', 'check-changesets.mjs')])
  return results
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const results = staticChecks()
  const passed = results.reduce((n, r) => n + r.passed, 0)
  const failed = results.reduce((n, r) => n + r.failed, 0)
  console.log(`static checks: ${passed} passed, ${failed} failed`)
  process.exit(failed > 0 ? 1 : 0)
}
