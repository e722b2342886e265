#!/usr/bin/env node
/**
 * Layer check: the dependency rule of docs/ARCHITECTURE.md ("Layers"), checked rather than written.
 *
 * Parses every packages/<pkg>/src file (TypeScript's parser: static imports, re-exports, `import()`
 * and `require()` with a string) and fails, naming file, line and import, when a package
 *  - imports a workspace package (`@stoq/*`) that is not in its allowed list below,
 *  - imports a name of a wiring package that is not in that package's allowed names (transport-core
 *    wires the default UDP backends, packet pool and batcher: it may use those, nothing else of them),
 *  - imports a workspace package it does not declare in package.json (dependencies, peer or optional),
 *  - deep-imports another package's internals (`@stoq/x/src/...`, `@stoq/x/dist/...`: only the
 *    package name, or `@stoq/x/package.json`), or reaches into another package by a relative path.
 *
 *   node scripts/check-layers.mjs [--root DIR] [--report FILE] [--self-test]
 *
 * --root checks another tree laid out like this repository (the self-test's fixture); --report writes
 * {"passed","failed"} (one result per package) for scripts/test-all.mjs; --self-test builds a fixture
 * in a temporary directory with one violation of each kind and fails unless each is reported (and a
 * clean fixture passes). Exit code 0 or 1.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const INTERFACE = '@stoq/interface'

/**
 * What each package's src/ may import of the workspace. `true`: the whole public API of that
 * package; a list: only these names (a wiring exception). Packages not listed may import
 * `@stoq/interface` only.
 */
export const LAYER_RULES = {
  '@stoq/interface': {},
  '@stoq/transport-core': {
    [INTERFACE]: true,
    // The default engine (a dependency) and the portable one (an optional peer, loaded by name).
    '@stoq/engine-quinn': true,
    '@stoq/engine-quiche': true,
    // The Endpoint's defaults: the UDP backends, NUMA placement, zero-copy slab sharing, the packet
    // pool and the batcher; and what engine workers need (CPU pinning, CID steering, shared pools).
    '@stoq/hwaccel': [
      'DgramUdpIo',
      'GsoUdpIo',
      'WorkerUdpIo',
      'UringUdpIo',
      'bindToNumaNode',
      'numaNodes',
      'releaseFreeMemory',
      'currentThreadId',
      'setCpuAffinity',
      'attachCidSteering',
      'closeSocketFd',
    ],
    '@stoq/mempool': [
      'createBufferPool',
      'attachBufferPool',
      'SharedBufferPool',
      'SharedBufferPoolHandle',
      'RecordRing',
      'RecordRingHandle',
      'RecordWriter',
      'RecordReader',
      'isRecordChannelMessage',
    ],
    '@stoq/batching': ['batching'],
  },
  // The quiche adapter shares hwaccel's address parser (one parse of the host strings quiche returns).
  '@stoq/engine-quiche': { [INTERFACE]: true, '@stoq/hwaccel': ['toSocketAddress'] },
  '@stoq/webtransport': { [INTERFACE]: true, '@stoq/h3': true, '@stoq/transport-core': true },
  // The SDK wires the whole stack and re-exports it.
  '@stoq/sdk': {
    [INTERFACE]: true,
    '@stoq/transport-core': true,
    '@stoq/engine-quiche': true,
    '@stoq/mempool': true,
    '@stoq/batching': true,
    '@stoq/hwaccel': true,
    '@stoq/monitoring': true,
    '@stoq/webtransport': true,
  },
  // A private package of scripts that measure the published stack.
  '@stoq/benchmarks': {
    [INTERFACE]: true,
    '@stoq/transport-core': true,
    '@stoq/engine-quiche': true,
    '@stoq/hwaccel': true,
    '@stoq/monitoring': true,
    '@stoq/mempool': true,
    '@stoq/sdk': true,
  },
}
const DEFAULT_RULE = { [INTERFACE]: true }

/** Every import of a source file: specifier, imported names (null: all, e.g. `import *`, `import()`), line. */
function importsOf(file) {
  const text = fs.readFileSync(file, 'utf8')
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, file.endsWith('x') ? ts.ScriptKind.TSX : ts.ScriptKind.TS)
  const out = []
  const line = (node) => sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1
  const visit = (node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      let names = null
      if (ts.isImportDeclaration(node)) {
        const clause = node.importClause
        if (clause === undefined)
          names = [] // side-effect import
        else if (clause.name)
          names = null // default import: the whole module
        else if (clause.namedBindings && ts.isNamedImports(clause.namedBindings)) {
          names = clause.namedBindings.elements.map((e) => (e.propertyName ?? e.name).text)
        }
      } else if (node.exportClause && ts.isNamedExports(node.exportClause)) {
        names = node.exportClause.elements.map((e) => (e.propertyName ?? e.name).text)
      }
      out.push({ spec: node.moduleSpecifier.text, names, line: line(node) })
    } else if (ts.isCallExpression(node) && node.arguments.length >= 1 && ts.isStringLiteralLike(node.arguments[0])) {
      const callee = node.expression
      const dynamic = callee.kind === ts.SyntaxKind.ImportKeyword
      const required = ts.isIdentifier(callee) && callee.text === 'require'
      if (dynamic || required) out.push({ spec: node.arguments[0].text, names: null, line: line(node) })
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push({
        spec: node.argument.literal.text,
        names: node.qualifier ? [ts.isIdentifier(node.qualifier) ? node.qualifier.text : node.qualifier.right.text] : null,
        line: line(node),
      })
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

function sourceFiles(dir) {
  const files = []
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name)
    if (entry.isDirectory()) files.push(...sourceFiles(p))
    else if (/\.(?:[cm]?ts|tsx|[cm]?js)$/.test(entry.name) && !entry.name.endsWith('.d.ts')) files.push(p)
  }
  return files
}

/** Check the packages under `root`/packages; returns { results: [{ name, problems: string[] }] }. */
export function checkLayers(root) {
  const packagesDir = path.join(root, 'packages')
  const packages = []
  for (const dir of fs.readdirSync(packagesDir).sort()) {
    const file = path.join(packagesDir, dir, 'package.json')
    if (!fs.existsSync(file)) continue
    const pkg = JSON.parse(fs.readFileSync(file, 'utf8'))
    packages.push({ name: pkg.name, dir: path.join(packagesDir, dir), pkg })
  }
  const workspace = new Set(packages.map((p) => p.name))
  const dirs = packages.map((p) => p.dir)
  const results = []
  for (const { name, dir, pkg } of packages) {
    const src = path.join(dir, 'src')
    if (!fs.existsSync(src)) continue
    const rule = LAYER_RULES[name] ?? DEFAULT_RULE
    const declared = new Set(Object.keys({ ...pkg.dependencies, ...pkg.peerDependencies, ...pkg.optionalDependencies }))
    const problems = []
    for (const file of sourceFiles(src)) {
      const where = path.relative(root, file)
      for (const { spec, names, line } of importsOf(file)) {
        const at = `${where}:${line}: import '${spec}'`
        if (spec.startsWith('.')) {
          const target = path.resolve(path.dirname(file), spec)
          const other = dirs.find((d) => d !== dir && (target === d || target.startsWith(d + path.sep)))
          if (other) problems.push(`${at} reaches into ${path.relative(root, other)} by a relative path (import the package by name)`)
          else if (!(target === dir || target.startsWith(dir + path.sep))) problems.push(`${at} leaves the package`)
          continue
        }
        const m = /^(@stoq\/[^/]+)(?:\/(.*))?$/.exec(spec)
        if (!m || !workspace.has(m[1])) continue
        const [, target, subpath] = m
        if (target === name) {
          problems.push(`${at} imports its own package by name (use a relative import)`)
          continue
        }
        if (subpath !== undefined && subpath !== 'package.json') {
          problems.push(`${at} deep-imports the internals of ${target} (only '${target}' itself may be imported)`)
          continue
        }
        const allowed = rule[target]
        if (allowed === undefined) {
          problems.push(`${at}: ${name} may not depend on ${target} (allowed: ${Object.keys(rule).join(', ') || 'nothing'}; see docs/ARCHITECTURE.md, Layers)`)
          continue
        }
        if (!declared.has(target)) problems.push(`${at}: ${target} is not declared in ${path.relative(root, path.join(dir, 'package.json'))}`)
        if (Array.isArray(allowed) && subpath === undefined) {
          const wanted = names ?? ['*']
          const extra = wanted.filter((n) => !allowed.includes(n))
          if (extra.length > 0) problems.push(`${at}: ${name} may import only ${allowed.join(', ')} of ${target}, not ${extra.join(', ')}`)
        }
      }
    }
    results.push({ name, problems })
  }
  return { results }
}

/** A fixture tree with one violation of each kind (and a clean package); fails unless each is caught. */
function selfTest() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-layers-'))
  const write = (rel, text) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true })
    fs.writeFileSync(path.join(root, rel), text)
  }
  const pkg = (dir, name, deps = {}) => write(`packages/${dir}/package.json`, JSON.stringify({ name, dependencies: deps }))
  try {
    pkg('interface', '@stoq/interface')
    write('packages/interface/src/index.ts', 'export type X = 1\n')
    pkg('mempool', '@stoq/mempool', { '@stoq/interface': '*', '@stoq/hwaccel': '*' })
    write('packages/mempool/src/index.ts', "import type { X } from '@stoq/interface'\nexport type Y = X\n")
    write('packages/mempool/src/bad.ts', "import { numaNodes } from '@stoq/hwaccel'\nexport const n = numaNodes\n")
    pkg('hwaccel', '@stoq/hwaccel', { '@stoq/interface': '*' })
    write('packages/hwaccel/src/index.ts', "export { splitPemChain } from '../../transport-core/src/pem.js'\n")
    pkg('transport-core', '@stoq/transport-core', { '@stoq/interface': '*', '@stoq/hwaccel': '*', '@stoq/mempool': '*', '@stoq/batching': '*' })
    write(
      'packages/transport-core/src/index.ts',
      "import { WorkerUdpIo, detectCapabilities } from '@stoq/hwaccel'\nimport { createBufferPool } from '@stoq/mempool'\nexport { WorkerUdpIo, detectCapabilities, createBufferPool }\n",
    )
    write('packages/transport-core/src/deep.ts', "import { x } from '@stoq/mempool/src/pool.js'\nexport const y = x\n")
    write('packages/transport-core/src/lazy.ts', "export const m = () => import('@stoq/batching')\n")
    pkg('batching', '@stoq/batching', { '@stoq/interface': '*' })
    write('packages/batching/src/index.ts', "export const b = () => require('@stoq/monitoring')\n")
    pkg('monitoring', '@stoq/monitoring', { '@stoq/interface': '*' })
    write('packages/monitoring/src/index.ts', "export type { X } from '@stoq/interface'\n")
    const expected = [
      ['@stoq/mempool', /packages\/mempool\/src\/bad\.ts:1: import '@stoq\/hwaccel': @stoq\/mempool may not depend on @stoq\/hwaccel/],
      ['@stoq/hwaccel', /packages\/hwaccel\/src\/index\.ts:1: import '\.\.\/\.\.\/transport-core\/src\/pem\.js' reaches into packages\/transport-core/],
      [
        '@stoq/transport-core',
        /src\/index\.ts:1: import '@stoq\/hwaccel': @stoq\/transport-core may import only .* of @stoq\/hwaccel, not detectCapabilities$/,
      ],
      ['@stoq/transport-core', /src\/deep\.ts:1: import '@stoq\/mempool\/src\/pool\.js' deep-imports the internals of @stoq\/mempool/],
      ['@stoq/transport-core', /src\/lazy\.ts:1: import '@stoq\/batching': @stoq\/transport-core may import only batching of @stoq\/batching, not \*/],
      ['@stoq/batching', /packages\/batching\/src\/index\.ts:1: import '@stoq\/monitoring': @stoq\/batching may not depend on @stoq\/monitoring/],
    ]
    const { results } = checkLayers(root)
    const byName = Object.fromEntries(results.map((r) => [r.name, r.problems]))
    const missed = expected.filter(([name, re]) => !(byName[name] ?? []).some((p) => re.test(p)))
    const clean = ['@stoq/interface', '@stoq/monitoring'].filter((n) => (byName[n] ?? ['missing']).length > 0)
    const count = Object.values(byName).reduce((n, p) => n + p.length, 0)
    if (missed.length > 0 || clean.length > 0 || count !== expected.length) {
      console.error(
        `[check-layers] self-test FAILED: missed ${missed.map(([n, re]) => `${n} ${re}`).join('; ') || 'none'}; not clean: ${clean.join(', ') || 'none'}; ${count} problems for ${expected.length} violations:`,
      )
      for (const r of results) for (const p of r.problems) console.error(`  ${p}`)
      return false
    }
    console.log(`[check-layers] self-test: the ${expected.length} planted violations were reported, the clean packages passed`)
    return true
  } finally {
    fs.rmSync(root, { recursive: true, force: true })
  }
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (isMain) {
  const args = process.argv.slice(2)
  const opt = (name) => {
    const i = args.indexOf(name)
    return i >= 0 ? args[i + 1] : undefined
  }
  if (args.includes('--self-test')) process.exit(selfTest() ? 0 : 1)
  const root = path.resolve(opt('--root') ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'))
  const { results } = checkLayers(root)
  let failed = 0
  for (const { name, problems } of results) {
    if (problems.length === 0) continue
    failed++
    console.error(`${name}:`)
    for (const p of problems) console.error(`  ${p}`)
  }
  const passed = results.length - failed
  const report = opt('--report')
  if (report) fs.writeFileSync(report, JSON.stringify({ passed, failed }))
  console.log(`layers: ${passed} packages follow the rule, ${failed} do not`)
  process.exit(failed > 0 ? 1 : 0)
}
