// scripts/check-changesets.mjs on throwaway git repositories (node:test; run by
// scripts/static-checks.mjs, or alone: node --test scripts/check-changesets.test.mjs).
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, test } from 'node:test'
import { fileURLToPath } from 'node:url'

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'check-changesets.mjs')
const dirs = []

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

function git(cwd, ...args) {
  const r = spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'commit.gpgsign=false', ...args], { cwd, encoding: 'utf8' })
  assert.equal(r.status, 0, `git ${args.join(' ')}: ${r.stderr}`)
  return r.stdout.trim()
}

function write(dir, file, text) {
  fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true })
  fs.writeFileSync(path.join(dir, file), text)
}

/** A repository with a public package `@t/a` (fixed with `@t/a-bin`), a private `@t/b` and an ignored `@t/c`. */
function repo({ baselineFile = true } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-changesets-'))
  dirs.push(dir)
  git(dir, 'init', '-q', '-b', 'main')
  write(dir, '.changeset/config.json', JSON.stringify({ fixed: [['@t/a', '@t/a-bin']], ignore: ['@t/c'] }))
  write(dir, '.changeset/README.md', '# Changesets\n')
  write(dir, '.changeset/old.md', '---\n"@t/a": minor\n---\n\nWritten before the baseline.\n')
  for (const [d, pkg] of [
    ['a', { name: '@t/a' }],
    ['a-bin', { name: '@t/a-bin' }],
    ['b', { name: '@t/b', private: true }],
    ['c', { name: '@t/c' }],
  ]) {
    write(dir, `packages/${d}/package.json`, JSON.stringify(pkg))
    write(dir, `packages/${d}/src/index.ts`, 'export const x = 1\n')
  }
  git(dir, 'add', '-A')
  git(dir, 'commit', '-qm', 'initial')
  if (baselineFile) {
    write(dir, '.changeset/baseline', `commit ${git(dir, 'rev-parse', 'HEAD')}\n`)
    git(dir, 'add', '-A')
    git(dir, 'commit', '-qm', 'record the baseline')
  }
  return dir
}

function check(dir) {
  const r = spawnSync(process.execPath, [script, '--root', dir, '--json'], { encoding: 'utf8' })
  const json = r.stdout.slice(r.stdout.indexOf('{'), r.stdout.lastIndexOf('}') + 1)
  return { status: r.status, out: `${r.stdout}${r.stderr}`, report: json ? JSON.parse(json) : null }
}

function change(dir, file, message = `change ${file}`) {
  write(dir, file, `export const x = ${Math.random()}\n`)
  git(dir, 'add', '-A')
  git(dir, 'commit', '-qm', message)
}

test('passes when nothing changed since the baseline', () => {
  const dir = repo()
  const r = check(dir)
  assert.equal(r.status, 0, r.out)
  assert.equal(r.report.baseline.why, '.changeset/baseline')
})

test('fails when a public package’s src changed after the baseline, even with an older changeset naming it', () => {
  const dir = repo()
  change(dir, 'packages/a/src/index.ts')
  const r = check(dir)
  assert.equal(r.status, 1, r.out)
  assert.deepEqual(
    r.report.missing.map((m) => m.name),
    ['@t/a'],
  )
  assert.match(r.out, /@t\/a: sources changed without a changeset naming it/)
})

test('passes once a changeset added after the baseline names the package', () => {
  const dir = repo()
  change(dir, 'packages/a/src/index.ts')
  write(dir, '.changeset/new.md', '---\n"@t/a": patch\n---\n\nA fix.\n')
  git(dir, 'add', '-A')
  git(dir, 'commit', '-qm', 'changeset')
  assert.equal(check(dir).status, 0)
})

test('a changeset naming one package of a fixed group covers the group', () => {
  const dir = repo()
  change(dir, 'packages/a-bin/src/index.ts')
  assert.equal(check(dir).status, 1)
  write(dir, '.changeset/new.md', "---\n'@t/a': patch\n---\n\nA fix.\n")
  assert.equal(check(dir).status, 0, 'uncommitted changesets count too')
})

test('private and ignored packages, and files outside src, need no changeset', () => {
  const dir = repo()
  change(dir, 'packages/b/src/index.ts')
  change(dir, 'packages/c/src/index.ts')
  change(dir, 'packages/a/test/a.test.ts')
  change(dir, 'packages/a/README.md')
  const r = check(dir)
  assert.equal(r.status, 0, r.out)
})

test('uncommitted and untracked source files are seen', () => {
  const dir = repo()
  write(dir, 'packages/a/src/new.ts', 'export {}\n')
  assert.equal(check(dir).status, 1)
})

test('a later version commit becomes the baseline: changes before it are released', () => {
  const dir = repo()
  change(dir, 'packages/a/src/index.ts')
  assert.equal(check(dir).status, 1)
  change(dir, '.changeset/ignored.txt', 'chore: version packages')
  const r = check(dir)
  assert.equal(r.status, 0, r.out)
  assert.match(r.report.baseline.why, /version packages/)
  change(dir, 'packages/a/src/index.ts')
  assert.equal(check(dir).status, 1)
})

test('a version commit alone is enough; with no baseline at all the check fails with a reason', () => {
  const dir = repo({ baselineFile: false })
  let r = check(dir)
  assert.equal(r.status, 1)
  assert.match(r.out, /no baseline/)
  change(dir, 'packages/a/src/index.ts', 'Version Packages')
  r = check(dir)
  assert.equal(r.status, 0, r.out)
})

test('a baseline commit missing from the clone fails with a reason', () => {
  const dir = repo()
  write(dir, '.changeset/baseline', `commit ${'1'.repeat(40)}\n`)
  const r = check(dir)
  assert.equal(r.status, 1)
  assert.match(r.out, /is not in this clone/)
})
