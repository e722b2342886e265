#!/usr/bin/env node
// Fails when a publishable package's sources changed since the release baseline and no pending
// changeset written since then names that package.
//
// - Publishable: packages/*/package.json without `"private": true` and not in
//   .changeset/config.json's `ignore`. A changeset naming any package of a `fixed` or `linked`
//   group counts for the whole group (they are released together).
// - Sources: files under the package's `src/` or `native/src/` (tests, docs and scripts are not
//   released behaviour).
// - Baseline: the newer of two commits: the one recorded in .changeset/baseline (a line
//   `commit <40 hex>`; changesets written before it are taken as already covering what came
//   before) and the last `chore: version packages` (or changesets' default `Version Packages`)
//   commit, which consumed the changesets before it. Needs the history back to the baseline: a
//   plain `git clone` has it; a shallow clone fails with a clear message.
// - Changed: `git diff <baseline>` against the work tree, plus untracked files, so a local run sees
//   uncommitted work; on a clean CI clone that is baseline..HEAD, merges included.
// - Pending changeset: a .changeset/*.md (not README.md) present now and added or changed since
//   the baseline. An internal-only change still takes one (a patch saying so).
//
// Usage: node scripts/check-changesets.mjs [--root DIR] [--json]
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const args = process.argv.slice(2)
const rootAt = args.indexOf('--root')
const root = rootAt === -1 ? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..') : path.resolve(args[rootAt + 1])
const asJson = args.includes('--json')

const VERSION_SUBJECT = /^(chore: version packages|version packages)\b/i

function git(gitArgs) {
  const r = spawnSync('git', gitArgs, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 })
  return { ok: r.status === 0, out: (r.stdout ?? '').trim(), err: (r.stderr ?? '').trim() }
}

function fail(message) {
  console.error(`check-changesets: ${message}`)
  process.exit(1)
}

/** The baseline commit and how it was found. */
function baseline() {
  const candidates = []
  const file = path.join(root, '.changeset', 'baseline')
  if (fs.existsSync(file)) {
    const sha = /^commit ([0-9a-f]{40})$/m.exec(fs.readFileSync(file, 'utf8'))?.[1]
    if (sha === undefined) fail('.changeset/baseline has no line `commit <40 hex digits>`')
    if (!git(['cat-file', '-e', `${sha}^{commit}`]).ok) {
      const shallow = git(['rev-parse', '--is-shallow-repository']).out === 'true'
      fail(
        `the baseline commit ${sha} (.changeset/baseline) is not in this clone${shallow ? ': it is shallow, fetch the full history (git fetch --unshallow)' : ''}`,
      )
    }
    candidates.push({ sha, why: '.changeset/baseline' })
  }
  const log = git(['log', '--format=%H %s', '-E', '-i', '--grep=^(chore: )?version packages', 'HEAD'])
  const version = log.out
    .split('\n')
    .filter(Boolean)
    .map((l) => ({ sha: l.slice(0, 40), subject: l.slice(41) }))
    .find((c) => VERSION_SUBJECT.test(c.subject))
  if (version) candidates.push({ sha: version.sha, why: `last version commit "${version.subject}"` })
  if (candidates.length === 0) fail('no baseline: neither .changeset/baseline nor a "chore: version packages" commit')
  // The newer of the two: the one the other is an ancestor of.
  return candidates.reduce((a, b) => (git(['merge-base', '--is-ancestor', a.sha, b.sha]).ok ? b : a))
}

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'))
}

/** The package names a changeset's front matter names. */
function namedPackages(text) {
  const front = /^---\r?\n([\s\S]*?)\r?\n---/.exec(text)
  if (!front) return []
  const names = []
  for (const line of front[1].split('\n')) {
    const m = /^\s*["']?([^"':\s][^"':]*)["']?\s*:\s*(major|minor|patch|none)\s*$/.exec(line)
    if (m) names.push(m[1])
  }
  return names
}

const base = baseline()
const diff = git(['diff', '--name-only', base.sha])
if (!diff.ok) fail(`git diff ${base.sha} failed: ${diff.err}`)
const untracked = git(['ls-files', '--others', '--exclude-standard'])
const changed = [...new Set([...diff.out.split('\n'), ...untracked.out.split('\n')].filter(Boolean))]

const config = fs.existsSync(path.join(root, '.changeset', 'config.json')) ? readJson(path.join(root, '.changeset', 'config.json')) : {}
const groups = [...(config.fixed ?? []), ...(config.linked ?? [])]
const ignored = new Set(config.ignore ?? [])

const packagesDir = path.join(root, 'packages')
const publishable = []
for (const dir of fs.existsSync(packagesDir) ? fs.readdirSync(packagesDir).sort() : []) {
  const file = path.join(packagesDir, dir, 'package.json')
  if (!fs.existsSync(file)) continue
  const pkg = readJson(file)
  if (pkg.private === true || ignored.has(pkg.name)) continue
  publishable.push({ dir, name: pkg.name })
}

const named = new Set()
const changesets = []
for (const file of changed) {
  if (!/^\.changeset\/[^/]+\.md$/.test(file) || file === '.changeset/README.md') continue
  const full = path.join(root, file)
  if (!fs.existsSync(full)) continue // deleted since the baseline: consumed, not pending
  const names = namedPackages(fs.readFileSync(full, 'utf8'))
  changesets.push({ file, names })
  for (const n of names) {
    named.add(n)
    for (const g of groups) if (g.includes(n)) for (const m of g) named.add(m)
  }
}

const missing = []
for (const { dir, name } of publishable) {
  const prefix = `packages/${dir}/`
  const files = changed.filter((f) => f.startsWith(prefix) && /^(native\/)?src\//.test(f.slice(prefix.length)))
  if (files.length > 0 && !named.has(name)) missing.push({ name, files })
}

if (asJson) console.log(JSON.stringify({ baseline: base, changesets, missing }, null, 2))
console.log(`check-changesets: baseline ${base.sha.slice(0, 12)} (${base.why}); ${changesets.length} changeset(s) since then`)
for (const { name, files } of missing) {
  console.log(`  ${name}: sources changed without a changeset naming it:`)
  for (const f of files.slice(0, 8)) console.log(`    ${f}`)
  if (files.length > 8) console.log(`    ... and ${files.length - 8} more`)
}
if (missing.length > 0) {
  console.log('Add one with `npx -y pnpm@9.15.9 changeset` (for an internal change, a patch that says so).')
  process.exit(1)
}
console.log('check-changesets: every package whose sources changed is named by a pending changeset')
