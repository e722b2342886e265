#!/usr/bin/env node
// The public API of every published package, as its users' type checker sees it: the built
// declarations (dist/*.d.ts, after `@internal` members were stripped), written down in
// packages/<dir>/api/<dir>.api.md and committed, so that a new export or a changed signature shows
// in review as a change of that file. Each report lists the names every entry point exports (with
// their kind, `export *` resolved) and the declarations themselves without their doc comments (a
// doc change does not touch the report). The declarations must also type-check on their own: a
// public signature that names a stripped `@internal` type fails here.
//
//   node scripts/check-api.mjs            compare the built declarations with the reports (CI)
//   node scripts/check-api.mjs --update   rewrite the reports from the built declarations
//
// Needs a build (`turbo run build`). `--report FILE` also writes { passed, failed, packages } as
// JSON (one result per package), as scripts/check-packages.mjs does. Exit code 1 on any
// difference or declaration error.
import fs from 'node:fs'
import path from 'node:path'
import ts from 'typescript'

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const packagesDir = path.join(root, 'packages')
const update = process.argv.includes('--update')
const reportAt = process.argv.indexOf('--report')
const reportFile = reportAt > 0 ? path.resolve(process.argv[reportAt + 1] ?? '') : null
const UPDATE_HINT = 'node scripts/check-api.mjs --update'

/** The declaration file of each entry point of a package (`exports`, the `import` condition). */
function entries(pkg, dir) {
  const out = []
  const exp = pkg.exports ?? { '.': { types: pkg.types } }
  for (const [subpath, target] of Object.entries(typeof exp === 'string' ? { '.': exp } : exp)) {
    if (subpath === './package.json') continue
    const types = typeof target === 'string' ? null : (target.import?.types ?? target.types ?? null)
    if (typeof types !== 'string') continue
    out.push({ subpath, file: path.join(dir, types) })
  }
  return out
}

const packages = []
for (const name of fs.readdirSync(packagesDir).sort()) {
  const dir = path.join(packagesDir, name)
  const pkgFile = path.join(dir, 'package.json')
  if (!fs.existsSync(pkgFile)) continue
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'))
  if (pkg.private === true) continue
  const list = entries(pkg, dir)
  if (list.length === 0) continue
  packages.push({ name: pkg.name, dirName: name, dir, entries: list })
}

const missing = packages.flatMap((p) => p.entries.filter((e) => !fs.existsSync(e.file)).map((e) => path.relative(root, e.file)))
if (missing.length > 0) {
  console.error(`check-api: no built declarations (${missing.join(', ')}); build first: turbo run build`)
  process.exit(1)
}

// One program over every entry: workspace packages resolve each other's built declarations
// through node_modules, as a user's project would.
const program = ts.createProgram(
  packages.flatMap((p) => p.entries.map((e) => e.file)),
  {
    target: ts.ScriptTarget.ES2022,
    lib: ['lib.es2023.d.ts'],
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noEmit: true,
    skipLibCheck: false,
    types: ['node'],
  },
)
const checker = program.getTypeChecker()
const printer = ts.createPrinter({ removeComments: true, newLine: ts.NewLineKind.LineFeed })

function kindOf(symbol) {
  const s = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol
  const f = s.flags
  if (f & ts.SymbolFlags.Class) return 'class'
  if (f & ts.SymbolFlags.Enum) return 'enum'
  if (f & ts.SymbolFlags.Function) return 'function'
  if (f & ts.SymbolFlags.Interface) return 'interface'
  if (f & ts.SymbolFlags.TypeAlias) return 'type'
  if (f & ts.SymbolFlags.Variable) return 'const'
  if (f & ts.SymbolFlags.Module) return 'namespace'
  return 'unknown'
}

/** The package's own declaration files reachable from `file` (bundler chunks), entry first. */
function ownFiles(file, dir) {
  const seen = [file]
  for (let i = 0; i < seen.length; i++) {
    const sf = program.getSourceFile(seen[i])
    if (sf === undefined) continue
    for (const stmt of sf.statements) {
      const spec =
        (ts.isImportDeclaration(stmt) || ts.isExportDeclaration(stmt)) && stmt.moduleSpecifier && ts.isStringLiteral(stmt.moduleSpecifier)
          ? stmt.moduleSpecifier.text
          : null
      if (spec === null || !spec.startsWith('.')) continue
      const resolved = ts.resolveModuleName(spec, sf.fileName, program.getCompilerOptions(), ts.sys).resolvedModule
      const target = resolved?.resolvedFileName
      if (target?.startsWith(dir) && !seen.includes(target)) seen.push(target)
    }
  }
  return seen
}

/**
 * The declarations without private class members: TypeScript declares them by name only (no
 * type) and users cannot touch them. A private constructor stays: it says "not constructible".
 */
function withoutPrivate(file) {
  const isPrivate = (m) =>
    !ts.isConstructorDeclaration(m) &&
    ((m.name !== undefined && ts.isPrivateIdentifier(m.name)) || (ts.getCombinedModifierFlags(m) & ts.ModifierFlags.Private) !== 0)
  const visit = (node) => {
    if (ts.isClassDeclaration(node)) {
      return ts.factory.updateClassDeclaration(
        node,
        node.modifiers,
        node.name,
        node.typeParameters,
        node.heritageClauses,
        node.members.filter((m) => !isPrivate(m)),
      )
    }
    return ts.visitEachChild(node, visit, undefined)
  }
  return ts.visitEachChild(file, visit, undefined)
}

/** Bundler chunk names carry a content hash (`protocol-B3xZ9kQa.d.ts`): not part of the API. */
const unhash = (s) => s.replace(/-[A-Za-z0-9_-]{8}(\.d\.c?ts|\.c?js)\b/g, '$1')

function report(p) {
  const problems = []
  let md = `# API report: ${p.name}\n\n`
  md += `Generated from the built declarations by \`${UPDATE_HINT}\`; \`node scripts/check-api.mjs\` (CI) fails when\n`
  md += 'they differ. Doc comments are left out. A change here is a change of the public API: it needs a changeset.\n'
  for (const e of p.entries) {
    const sf = program.getSourceFile(e.file)
    const moduleSymbol = sf && checker.getSymbolAtLocation(sf)
    if (!moduleSymbol) {
      problems.push(`${path.relative(root, e.file)}: not a module`)
      continue
    }
    const names = checker
      .getExportsOfModule(moduleSymbol)
      .map((s) => `${kindOf(s)} ${s.name}`)
      .sort((a, b) => a.split(' ')[1].localeCompare(b.split(' ')[1]) || a.localeCompare(b))
    md += `\n## Entry \`${p.name}${e.subpath === '.' ? '' : e.subpath.slice(1)}\` (${path.relative(p.dir, e.file)})\n\n`
    md += `### Exports (${names.length})\n\n${names.map((n) => `- ${n}`).join('\n')}\n`
    for (const f of ownFiles(e.file, p.dir)) {
      const file = program.getSourceFile(f)
      for (const d of program.getSemanticDiagnostics(file)) {
        const { line } = d.start !== undefined ? file.getLineAndCharacterOfPosition(d.start) : { line: -1 }
        problems.push(`${path.relative(root, f)}:${line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`)
      }
      md += `\n### Declarations: ${unhash(path.relative(p.dir, f))}\n\n\`\`\`ts\n${unhash(printer.printFile(withoutPrivate(file))).trimEnd()}\n\`\`\`\n`
    }
  }
  return { md, problems }
}

const results = []
for (const p of packages) {
  const { md, problems } = report(p)
  const out = path.join(p.dir, 'api', `${p.dirName}.api.md`)
  const rel = path.relative(root, out)
  if (update) {
    fs.mkdirSync(path.dirname(out), { recursive: true })
    const before = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : null
    fs.writeFileSync(out, md)
    if (before !== md) console.log(`check-api: ${before === null ? 'wrote' : 'updated'} ${rel}`)
  } else {
    const before = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : null
    if (before === null) problems.push(`${rel} is missing: run \`${UPDATE_HINT}\` and commit it`)
    else if (before !== md) {
      const a = before.split('\n')
      const b = md.split('\n')
      let i = 0
      while (i < a.length && i < b.length && a[i] === b[i]) i++
      problems.push(
        `${rel} differs from the built declarations (first at line ${i + 1}: report ${JSON.stringify(a[i] ?? '')}, built ${JSON.stringify(b[i] ?? '')}).\n` +
          `  If the API change is intended, run \`${UPDATE_HINT}\`, commit the report and add a changeset.`,
      )
    }
  }
  for (const problem of problems) console.error(`check-api: ${p.name}: ${problem}`)
  results.push({ name: p.name, ok: problems.length === 0, problems })
}

const passed = results.filter((r) => r.ok).length
const failed = results.length - passed
console.log(`check-api: ${passed} packages match their API report, ${failed} do not${update ? ' (reports rewritten)' : ''}`)
if (reportFile !== null) fs.writeFileSync(reportFile, `${JSON.stringify({ passed, failed, packages: results }, null, 2)}\n`)
process.exit(failed > 0 ? 1 : 0)
