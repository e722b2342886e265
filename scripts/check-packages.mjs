#!/usr/bin/env node
// Packs every public package (`pnpm pack`, as a publish would) and checks each tarball as a
// user would receive it:
//   - @arethetypeswrong/cli: the types resolve for require() and import() under node10,
//     node16 (CommonJS and ESM) and bundler resolution (ESM-only packages: the esm-only profile);
//   - publint --strict: exports, main, types and files point at files in the tarball, in the
//     right format;
//   - README.md and LICENSE are in the tarball, the LICENSE is the root one, and no
//     `workspace:` version range is left in the packed package.json.
// Needs built packages (`turbo run build`). Ends with "N passed, N failed" (one per package);
// `--report FILE` also writes { passed, failed, packages } as JSON. Exit code 1 on any problem.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const packagesDir = path.join(root, 'packages')
const bin = (name) => path.join(root, 'node_modules', '.bin', name)
const reportAt = process.argv.indexOf('--report')
const reportFile = reportAt > 0 ? path.resolve(process.argv[reportAt + 1] ?? '') : null
/** Packages checked at once: two, for a 2-core machine. */
const PARALLEL = 2

/** pnpm as this script was started with (`pnpm run check:packages`), else through npx. */
function pnpmCommand() {
  const execPath = process.env.npm_execpath ?? ''
  if (/pnpm/.test(path.basename(execPath)) && fs.existsSync(execPath)) {
    return /\.c?js$/.test(execPath) ? [process.execPath, execPath] : [execPath]
  }
  return ['npx', '-y', 'pnpm@9.15.9']
}

function run(command, args, cwd) {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd,
      env: { ...process.env, FORCE_COLOR: '0', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    child.on('error', (err) => resolve({ code: 1, output: `${output}${err.message}\n` }))
    child.on('close', (code) => resolve({ code: code ?? 1, output }))
  })
}

const publicPackages = fs
  .readdirSync(packagesDir)
  .map((d) => path.join(packagesDir, d))
  .filter((dir) => fs.existsSync(path.join(dir, 'package.json')))
  .map((dir) => ({ dir, pkg: JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) }))
  .filter(({ pkg }) => pkg.private !== true)
  .sort((a, b) => a.pkg.name.localeCompare(b.pkg.name))

const rootLicense = fs.readFileSync(path.join(root, 'LICENSE'), 'utf8')
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-check-packages-'))
const pnpm = pnpmCommand()

async function check({ dir, pkg }) {
  const problems = []
  const slug = pkg.name.replace(/^@/, '').replace('/', '-')
  const dest = path.join(work, slug)
  fs.mkdirSync(dest)
  const packed = await run(pnpm[0], [...pnpm.slice(1), 'pack', '--pack-destination', dest], dir)
  const tarball = fs.readdirSync(dest).find((f) => f.endsWith('.tgz'))
  if (packed.code !== 0 || tarball === undefined) return { name: pkg.name, problems: [`pnpm pack failed:\n${packed.output}`] }
  const file = path.join(dest, tarball)

  const unpacked = path.join(dest, 'unpacked')
  fs.mkdirSync(unpacked)
  const untar = await run('tar', ['-xzf', file, '-C', unpacked], dest)
  if (untar.code !== 0) problems.push(`cannot unpack ${tarball}: ${untar.output}`)
  const inside = (f) => path.join(unpacked, 'package', f)
  if (!fs.existsSync(inside('README.md'))) problems.push('README.md is not in the tarball')
  if (!fs.existsSync(inside('LICENSE'))) problems.push('LICENSE is not in the tarball')
  else if (fs.readFileSync(inside('LICENSE'), 'utf8') !== rootLicense) problems.push('LICENSE differs from the root LICENSE')
  if (fs.existsSync(inside('package.json')) && fs.readFileSync(inside('package.json'), 'utf8').includes('workspace:')) {
    problems.push('the packed package.json still has a workspace: range')
  }

  // A package without a require condition is ESM only (@stoq/compliance-tests: vitest refuses require()).
  const esmOnly = !('require' in (pkg.exports?.['.'] ?? {}))
  const attw = await run(
    bin('attw'),
    [file, '--profile', esmOnly ? 'esm-only' : 'strict', '--no-definitely-typed', '--format', 'ascii', '--no-color', '--no-emoji'],
    dest,
  )
  if (attw.code !== 0) problems.push(`@arethetypeswrong/cli found problems:\n${attw.output}`)
  const publint = await run(bin('publint'), ['run', file, '--strict'], dest)
  if (publint.code !== 0) problems.push(`publint found problems:\n${publint.output}`)
  else if (/^\d+\.\s/m.test(publint.output)) problems.push(`publint has suggestions:\n${publint.output}`)
  return { name: pkg.name, problems }
}

const results = []
const queue = [...publicPackages]
await Promise.all(
  Array.from({ length: PARALLEL }, async () => {
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
      const r = await check(next)
      results.push(r)
      if (r.problems.length === 0) console.log(`${r.name}: packed, attw and publint clean, README.md and LICENSE included`)
      else console.log(`${r.name}: ${r.problems.length} problem(s)\n  ${r.problems.join('\n').replace(/\n/g, '\n  ')}`)
    }
  }),
)
fs.rmSync(work, { recursive: true, force: true })

const failed = results.filter((r) => r.problems.length > 0).length
const passed = results.length - failed
if (reportFile !== null) {
  fs.writeFileSync(reportFile, `${JSON.stringify({ passed, failed, packages: results }, null, 2)}\n`)
}
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed > 0 || results.length === 0 ? 1 : 0)
