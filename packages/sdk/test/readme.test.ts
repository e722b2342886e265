import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

/**
 * The README examples run as written, from the built packages:
 * - the root README's quick start is `examples/quickstart.mjs` word for word, and runs;
 * - every ```js block of every public package's README runs in a consumer directory whose
 *   node_modules links each public package (as an install would), as an .mjs file, as a .cjs
 *   file when it calls require(), and through vitest when it is a test file.
 */

const root = fileURLToPath(new URL('../../..', import.meta.url))
const packagesDir = path.join(root, 'packages')
const vitestCli = path.join(root, 'node_modules', 'vitest', 'vitest.mjs')

const publicPackages = fs
  .readdirSync(packagesDir)
  .map((d) => path.join(packagesDir, d))
  .filter((dir) => fs.existsSync(path.join(dir, 'package.json')))
  .map((dir) => ({ dir, pkg: JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name: string; private?: boolean } }))
  .filter(({ pkg }) => pkg.private !== true)
  .map(({ dir, pkg }) => ({ dir, name: pkg.name }))
  .sort((a, b) => a.name.localeCompare(b.name))

/** What an example prints, where its output says it worked. */
const EXPECTED: Record<string, string[]> = {
  '@stoq/interface': ['STOQ_ERR_INVALID_ARG'],
  '@stoq/mempool': ['hello'],
  '@stoq/h3': [':authority'],
  '@stoq/monitoring': ['requests_total{route="/"} 1'],
  '@stoq/transport-core': ['ping'],
  '@stoq/engine-quiche': ['quiche loads here, through @matrixai/quic@'],
  '@stoq/webtransport': ['hello over WebTransport'],
  '@stoq/sdk': ['hello, STOQ', 'hello from CommonJS'],
  '@stoq/compliance-tests': ['9 passed'],
  '@stoq/engine-quinn-linux-x64-gnu': ['libstoq_quinn.so needs glibc >= 2.'],
}

function jsBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]!)
}

let consumer: string
let env: NodeJS.ProcessEnv

beforeAll(() => {
  consumer = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-readme-'))
  for (const p of publicPackages) {
    const link = path.join(consumer, 'node_modules', p.name)
    fs.mkdirSync(path.dirname(link), { recursive: true })
    fs.symlinkSync(p.dir, link, 'dir')
  }
  // A clean environment for the examples: no vitest state, app identities under the temporary directory.
  env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST') && k !== 'NODE_OPTIONS'))
  env.XDG_CONFIG_HOME = path.join(consumer, 'config')
  env.FORCE_COLOR = '0'
  env.NO_COLOR = '1'
})

afterAll(() => {
  if (consumer) fs.rmSync(consumer, { recursive: true, force: true })
})

function runNode(args: string[], cwd: string): string {
  const r = spawnSync(process.execPath, args, { cwd, env, encoding: 'utf8', timeout: 60_000 })
  const output = `${r.stdout}${r.stderr}`
  expect(r.status, `node ${args.join(' ')} exited with ${r.status ?? r.signal}:\n${output}`).toBe(0)
  return output
}

describe('README examples', () => {
  it('the root quick start is examples/quickstart.mjs, which runs', () => {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8')
    const quickStart = readme.slice(readme.indexOf('## Quick start'))
    const file = fs.readFileSync(path.join(packagesDir, 'sdk', 'examples', 'quickstart.mjs'), 'utf8')
    expect(jsBlocks(quickStart)[0]).toBe(file)
    const output = runNode(['examples/quickstart.mjs'], path.join(packagesDir, 'sdk'))
    expect(output).toContain('hello, STOQ')
  })

  for (const p of publicPackages) {
    it(`${p.name}: README.md has an example, and it runs`, () => {
      const readme = fs.readFileSync(path.join(p.dir, 'README.md'), 'utf8')
      expect(readme).toContain('https://github.com/stoq-dev/stoq#readme')
      const blocks = jsBlocks(readme)
      expect(blocks.length).toBeGreaterThan(0)
      let output = ''
      blocks.forEach((code, i) => {
        const base = `${p.name.replace(/^@stoq\//, '')}-${i}`
        if (/from '(vitest|@stoq\/compliance-tests)'/.test(code)) {
          const file = `${base}.test.mjs`
          fs.writeFileSync(path.join(consumer, file), code)
          output += runNode([vitestCli, 'run', '--root', consumer, file], consumer)
        } else {
          const file = /\brequire\(/.test(code) ? `${base}.cjs` : `${base}.mjs`
          fs.writeFileSync(path.join(consumer, file), code)
          output += runNode([file], consumer)
        }
      })
      expect(output.trim().length).toBeGreaterThan(0)
      for (const text of EXPECTED[p.name] ?? []) expect(output).toContain(text)
    }, 120_000)
  }
})
