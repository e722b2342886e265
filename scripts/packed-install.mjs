#!/usr/bin/env node
/**
 * Packed-install check: what a user gets from `npm install`, not what the workspace links.
 *
 * 1. `pnpm pack` every public package (the platform package of the prebuilt quinn library
 *    included) into a temporary directory. Run after a build: the tarballs carry dist/ and
 *    the prebuilt library.
 * 2. A fresh project in another temporary directory, outside the workspace, installs
 *    @stoq/sdk with npm. Every @stoq/* name is mapped to its tarball through `overrides`, so
 *    nothing of ours comes from the registry; third-party packages (koffi, @matrixai/quic, ...)
 *    come from npm's cache or the registry (--prefer-offline). The platform package is not
 *    listed as a dependency: it must arrive as @stoq/engine-quinn's optional dependency, as
 *    it would for a user.
 * 3. A small ESM program in that project: a STOQ server (engine workers, as `listen` starts
 *    them by default) and a client over loopback, 1 MiB echoed and compared by SHA-256; every
 *    endpoint must report the quinn engine, loaded from the prebuilt package. A CommonJS
 *    script must load the same library through require().
 *    Then, in that project, what the issue lists: the README's quick start exactly as shown
 *    (packages/sdk/examples/quickstart.mjs, copied in and run: it must print the echo and a
 *    client on quinn), an echo through `require('@stoq/sdk')`, and `npx stoq doctor`, whose
 *    text report must name quinn as the QUIC engine in use, loaded from the installed
 *    platform package.
 * 4. A selective install: @stoq/transport-core alone in a second fresh project (its
 *    dependencies' tarballs through overrides; no sdk, h3, webtransport or monitoring may
 *    come, nor the quiche engine: @stoq/engine-quiche is an optional peer dependency, so neither
 *    it nor @matrixai/quic's binding arrives), a loopback echo with an openssl-made certificate,
 *    both endpoints on quinn; `engine: 'quiche'` there fails with STOQ_ERR_UNSUPPORTED naming
 *    the package to install.
 * 5. With the platform package removed (an install that omitted optional dependencies), an
 *    endpoint of the sdk project runs on quiche (@stoq/engine-quiche, which @stoq/sdk depends on)
 *    and the process prints one STOQ_QUINN_UNAVAILABLE warning naming the fix.
 *
 * Prints what it does and "packed install: ok (N s)" or the failure; exit code 0 or 1.
 * Options: --keep keeps the temporary directories.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const keep = process.argv.includes('--keep')
const started = Date.now()
const PLATFORM_PACKAGE = '@stoq/engine-quinn-linux-x64-gnu'

function log(msg) {
  console.log(`[packed-install] ${msg}`)
}

/** The temporary directory, left in place after a failure for a look. */
let workDir = null

function fail(msg) {
  console.error(`[packed-install] FAILED: ${msg}`)
  if (workDir) console.error(`[packed-install] tarballs and project left in ${workDir}`)
  console.log(`packed install: failed (${((Date.now() - started) / 1000).toFixed(1)} s)`)
  process.exit(1)
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts })
  if (r.error) fail(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  return r
}

function must(cmd, args, opts = {}) {
  const r = run(cmd, args, opts)
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited ${r.status}:\n${`${r.stdout}${r.stderr}`.trim().split('\n').slice(-20).join('\n')}`)
  return r
}

const seconds = (t) => `${((Date.now() - t) / 1000).toFixed(1)} s`

if (process.platform !== 'linux' || process.arch !== 'x64') {
  // The check proves the prebuilt of linux-x64-gnu, the only one there is.
  fail(`this check runs on Linux x64 (here: ${process.platform}-${process.arch})`)
}

// 1. Pack.
const packages = []
for (const name of fs.readdirSync(path.join(root, 'packages')).sort()) {
  const dir = path.join(root, 'packages', name)
  const file = path.join(dir, 'package.json')
  if (!fs.existsSync(file)) continue
  const pkg = JSON.parse(fs.readFileSync(file, 'utf8'))
  if (pkg.private) continue
  packages.push({ name: pkg.name, dir })
}
const platformDir = path.join(root, 'packages', 'engine-quinn-linux-x64-gnu')
for (const f of ['libstoq_quinn.so', 'library.json']) {
  if (!fs.existsSync(path.join(platformDir, f))) fail(`${path.join(platformDir, f)} missing: build first (pnpm exec turbo run build)`)
}
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-packed-'))
workDir = work
const tarballs = path.join(work, 'tarballs')
fs.mkdirSync(tarballs)
let t = Date.now()
// pnpm (as pinned in packageManager; corepack is not used) resolved once, not one npx per package.
const pnpm = must('npx', ['-y', '-p', 'pnpm@9.15.9', 'which', 'pnpm'], { cwd: root }).stdout.trim()
const byName = {}
for (const { name, dir } of packages) {
  const before = new Set(fs.readdirSync(tarballs))
  must(pnpm, ['pack', '--pack-destination', tarballs], { cwd: dir })
  const made = fs.readdirSync(tarballs).filter((f) => !before.has(f))
  if (made.length !== 1) fail(`pnpm pack of ${name} made ${made.length} files`)
  byName[name] = path.join(tarballs, made[0])
}
log(`packed ${packages.length} packages in ${seconds(t)}: ${Object.keys(byName).join(', ')}`)
if (!byName[PLATFORM_PACKAGE]) fail(`${PLATFORM_PACKAGE} was not packed`)
const platformFiles = must('tar', ['-tzf', byName[PLATFORM_PACKAGE]]).stdout.split('\n')
for (const f of ['package/libstoq_quinn.so', 'package/library.json', 'package/index.js']) {
  if (!platformFiles.includes(f)) fail(`${PLATFORM_PACKAGE}'s tarball lacks ${f} (has: ${platformFiles.join(' ')})`)
}

// 2. A fresh project outside the workspace.
const project = path.join(work, 'project')
fs.mkdirSync(project)
const overrides = Object.fromEntries(Object.entries(byName).map(([n, f]) => [n, `file:${f}`]))
fs.writeFileSync(
  path.join(project, 'package.json'),
  `${JSON.stringify({ name: 'stoq-packed-install-check', private: true, type: 'module', dependencies: { '@stoq/sdk': overrides['@stoq/sdk'] }, overrides }, null, 2)}\n`,
)
t = Date.now()
// Own npm cache dir is not used: the user's cache makes a second run fast; --prefer-offline
// takes cached registry metadata without revalidating it.
must('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], { cwd: project })
log(`npm install in ${project}: ${seconds(t)}`)
for (const name of ['@stoq/sdk', '@stoq/transport-core', '@stoq/engine-quinn', '@stoq/engine-quiche', '@matrixai/quic', PLATFORM_PACKAGE]) {
  if (!fs.existsSync(path.join(project, 'node_modules', name, 'package.json'))) fail(`${name} was not installed`)
}
const installedLib = path.join(project, 'node_modules', PLATFORM_PACKAGE, 'libstoq_quinn.so')
if (!fs.existsSync(installedLib)) fail(`${installedLib} missing`)
const nativeDir = path.join(project, 'node_modules', '@stoq', 'engine-quinn', 'native')
if (fs.existsSync(path.join(nativeDir, 'libstoq_quinn.so')) || fs.existsSync(path.join(nativeDir, 'target'))) {
  fail(`@stoq/engine-quinn came with a local build in ${nativeDir}: the tarball must carry sources only`)
}

// 3. The program: echo over loopback, quinn from the prebuilt, engine workers.
const program = `
import crypto from 'node:crypto'
import { Stoq } from '@stoq/sdk'
import { createEndpoint, quinnAvailability } from '@stoq/transport-core'

const out = {}
out.quinn = quinnAvailability()
const server = await Stoq.create('packed-check-server')
const listening = await server.listen({ host: '127.0.0.1', port: 0 }, {
  onStream: (stream) => void stream.readable.pipeTo(stream.writable),
})
const identity = await server.identity()
const client = await Stoq.create('packed-check-client')
const conn = await client.connect('127.0.0.1:' + listening.address.port, { pin: identity.fingerprint, serverName: 'localhost' })
const data = crypto.randomBytes(1 << 20)
const stream = conn.openStream()
const writer = stream.writable.getWriter()
const written = (async () => {
  for (let i = 0; i < data.length; i += 64 * 1024) await writer.write(data.subarray(i, i + 64 * 1024))
  await writer.close()
})()
const hash = crypto.createHash('sha256')
let received = 0
for await (const chunk of stream.readable) {
  hash.update(chunk)
  received += chunk.length
}
await written
out.received = received
out.echoOk = received === data.length && hash.digest('hex') === crypto.createHash('sha256').update(data).digest('hex')
const s = listening.stats()
out.server = { engine: s.engine, engineChoice: s.engineChoice, workers: s.workers.length }
out.client = { engine: client.stats().engine, engineChoice: client.stats().engineChoice }
// Engine workers asked for explicitly: they run quinn only, so this proves the prebuilt serves them.
const two = await createEndpoint({ host: '127.0.0.1', port: 0, workers: 2 })
out.twoWorkers = { engine: two.stats().engine, workers: two.stats().workers.length, engineChoice: two.stats().engineChoice }
await two.close()
await conn.close()
await client.close()
await server.close()
console.log(JSON.stringify(out))
`
fs.writeFileSync(path.join(project, 'check.mjs'), program)
// The program's identities go to this temporary directory, not the user's config.
const env = { ...process.env, XDG_CONFIG_HOME: path.join(work, 'config'), STOQ_ENGINE: '', STOQ_QUINN_LIBRARY: '', NODE_OPTIONS: '' }
t = Date.now()
let r = run(process.execPath, ['check.mjs'], { cwd: project, env, timeout: 60_000 })
if (r.status !== 0) fail(`check.mjs exited ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`)
const result = JSON.parse(r.stdout.trim().split('\n').pop())
log(`echo program: ${seconds(t)}`)
log(`quinn: ${result.quinn.detail}`)
log(`server: ${JSON.stringify(result.server)}`)
log(`client: ${JSON.stringify(result.client)}`)
log(`workers: 2: ${JSON.stringify(result.twoWorkers)}`)
if (!result.quinn.available) fail(`quinn unavailable in the packed install: ${result.quinn.detail}`)
if (!result.quinn.detail.includes(`${PLATFORM_PACKAGE}`)) fail(`quinn was not loaded from ${PLATFORM_PACKAGE}: ${result.quinn.detail}`)
if (!result.echoOk) fail(`echo of 1 MiB: received ${result.received} bytes, or they differ`)
// A worker endpoint's engine reads "quinn×2".
if (result.client.engine !== 'quinn') fail(`client engine: ${JSON.stringify(result.client)}`)
if (!/^quinn/.test(result.server.engine)) fail(`server engine: ${JSON.stringify(result.server)}`)
if (result.twoWorkers.workers !== 2 || result.twoWorkers.engine !== 'quinn×2')
  fail(`workers: 2 did not run 2 quinn workers: ${JSON.stringify(result.twoWorkers)}`)
if (/\[STOQ_QUINN_UNAVAILABLE\]/.test(r.stderr)) fail(`a STOQ_QUINN_UNAVAILABLE warning although quinn loaded:\n${r.stderr}`)

// The same library from CommonJS: require() of the packages' .cjs builds.
fs.writeFileSync(
  path.join(project, 'check.cjs'),
  `const { quinnAvailability } = require('@stoq/transport-core')
console.log(JSON.stringify({ quinn: quinnAvailability(), prebuilt: require('${PLATFORM_PACKAGE}').library }))
`,
)
r = run(process.execPath, ['check.cjs'], { cwd: project, env, timeout: 60_000 })
if (r.status !== 0) fail(`check.cjs exited ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`)
const cjs = JSON.parse(r.stdout.trim().split('\n').pop())
log(`from CommonJS: ${cjs.quinn.available ? 'quinn loads' : 'quinn unavailable'} from ${cjs.quinn.library}`)
if (!cjs.quinn.available || fs.realpathSync(cjs.quinn.library) !== fs.realpathSync(cjs.prebuilt)) {
  fail(`from CommonJS the prebuilt is not what loads: ${JSON.stringify(cjs)}`)
}

// The README's quick start, exactly as shown: packages/sdk/examples/quickstart.mjs (a README test
// keeps the two identical), copied into the fresh project and run there as a user would.
const quickstart = path.join(root, 'packages', 'sdk', 'examples', 'quickstart.mjs')
fs.copyFileSync(quickstart, path.join(project, 'quickstart.mjs'))
t = Date.now()
r = run(process.execPath, ['quickstart.mjs'], { cwd: project, env, timeout: 60_000 })
if (r.status !== 0) fail(`the README quick start (quickstart.mjs) exited ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`)
log(`README quick start: ${seconds(t)}; first line: ${r.stdout.split('\n')[0]}`)
if (r.stdout.split('\n')[0] !== 'hello, STOQ') fail(`the quick start did not print the echo "hello, STOQ" first:\n${r.stdout}`)
// It prints client.stats() with console.log (util.inspect): the engine is a quoted string.
if (!/\bengine: 'quinn'/.test(r.stdout)) fail(`the quick start's client did not run on quinn:\n${r.stdout}`)
if (r.stderr.trim() !== '') fail(`the quick start wrote to stderr:\n${r.stderr}`)

// CommonJS, as a user of require() would write it: the sdk's .cjs build, an endpoint on quinn.
fs.writeFileSync(
  path.join(project, 'require-sdk.cjs'),
  `const { Stoq } = require('@stoq/sdk')

async function main() {
  const server = await Stoq.create('packed-cjs-server')
  const listening = await server.listen({ host: '127.0.0.1', port: 0 }, { onStream: (s) => void s.readable.pipeTo(s.writable) })
  const client = await Stoq.create('packed-cjs-client')
  const conn = await client.connect('127.0.0.1:' + listening.address.port, { pin: (await server.identity()).fingerprint, serverName: 'localhost' })
  const stream = conn.openStream()
  const writer = stream.writable.getWriter()
  await writer.write(new TextEncoder().encode('from require'))
  await writer.close()
  let echo = ''
  for await (const chunk of stream.readable) echo += new TextDecoder().decode(chunk)
  console.log(JSON.stringify({ echo, client: client.stats().engine, server: listening.stats().engine }))
  await client.close()
  await server.close()
}
main().catch((err) => {
  console.error(err)
  process.exit(1)
})
`,
)
r = run(process.execPath, ['require-sdk.cjs'], { cwd: project, env, timeout: 60_000 })
if (r.status !== 0) fail(`require-sdk.cjs exited ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`)
const cjsSdk = JSON.parse(r.stdout.trim().split('\n').pop())
log(`require('@stoq/sdk'): ${JSON.stringify(cjsSdk)}`)
if (cjsSdk.echo !== 'from require' || cjsSdk.client !== 'quinn' || !/^quinn/.test(cjsSdk.server)) fail(`require('@stoq/sdk'): ${JSON.stringify(cjsSdk)}`)

// `npx stoq doctor`, the bin the sdk installs: its text report must say quinn is the engine in use,
// loaded from the installed platform package.
t = Date.now()
r = run('npx', ['--no-install', 'stoq', 'doctor'], { cwd: project, env, timeout: 120_000 })
if (r.status !== 0) fail(`npx stoq doctor exited ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`)
const engineInUse = /^\s*QUIC engine\s+(\S+?):/m.exec(r.stdout)?.[1]
const quinnLine = /^\s*quinn\s+(available|unavailable): (.*)$/m.exec(r.stdout)
log(`npx stoq doctor: ${seconds(t)}; QUIC engine in use: ${engineInUse}; quinn ${quinnLine?.[1]}`)
if (engineInUse !== 'quinn') fail(`stoq doctor names ${engineInUse ?? 'no'} QUIC engine in use, not quinn:\n${r.stdout}`)
if (quinnLine?.[1] !== 'available' || !quinnLine[2].includes(path.join(project, 'node_modules', PLATFORM_PACKAGE))) {
  fail(`stoq doctor does not report quinn loaded from the installed ${PLATFORM_PACKAGE}:\n${r.stdout}`)
}

// 4. A selective install: @stoq/transport-core alone, in a second fresh project. Only its own
// dependencies come (their tarballs through overrides); the sdk must not. A loopback connection
// with a certificate made by openssl (transport-core has no certificate generator), and its engine.
const selective = path.join(work, 'core-only')
fs.mkdirSync(selective)
fs.writeFileSync(
  path.join(selective, 'package.json'),
  `${JSON.stringify({ name: 'stoq-core-only-check', private: true, type: 'module', dependencies: { '@stoq/transport-core': overrides['@stoq/transport-core'] }, overrides }, null, 2)}\n`,
)
t = Date.now()
must('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], { cwd: selective })
const installedStoq = fs.readdirSync(path.join(selective, 'node_modules', '@stoq')).sort()
log(`npm install @stoq/transport-core alone: ${seconds(t)}; @stoq packages: ${installedStoq.join(', ')}`)
for (const unwanted of ['sdk', 'h3', 'webtransport', 'monitoring']) {
  if (installedStoq.includes(unwanted)) fail(`installing @stoq/transport-core alone brought @stoq/${unwanted}`)
}
if (!installedStoq.includes(PLATFORM_PACKAGE.split('/')[1])) fail(`installing @stoq/transport-core alone did not bring ${PLATFORM_PACKAGE}`)
if (installedStoq.includes('engine-quiche')) fail('installing @stoq/transport-core alone brought @stoq/engine-quiche (an optional peer dependency)')
if (fs.existsSync(path.join(selective, 'node_modules', '@matrixai', 'quic')))
  fail("installing @stoq/transport-core alone brought quiche's binding (@matrixai/quic)")
must(
  'openssl',
  [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout',
    'key.pem',
    '-out',
    'cert.pem',
  ],
  { cwd: selective },
)
fs.writeFileSync(
  path.join(selective, 'loopback.mjs'),
  `import fs from 'node:fs'
import { createEndpoint, fingerprintPem } from '@stoq/transport-core'

const cert = fs.readFileSync('cert.pem', 'utf8')
const key = fs.readFileSync('key.pem', 'utf8')
const server = await createEndpoint({ host: '127.0.0.1', port: 0, server: { cert, key } })
server.on('connection', (conn) => conn.on('stream', (stream) => void stream.readable.pipeTo(stream.writable)))
const client = await createEndpoint({ host: '127.0.0.1', port: 0 })
const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, pin: fingerprintPem(cert), serverName: 'localhost' })
const stream = conn.openStream()
const writer = stream.writable.getWriter()
await writer.write(new TextEncoder().encode('core only'))
await writer.close()
let echo = ''
for await (const chunk of stream.readable) echo += new TextDecoder().decode(chunk)
let quiche
try {
  await (await createEndpoint({ host: '127.0.0.1', port: 0, engine: 'quiche' })).close()
  quiche = 'an endpoint on quiche'
} catch (err) {
  quiche = err.code + ': ' + err.message
}
console.log(JSON.stringify({ echo, client: client.stats().engine, server: server.stats().engine, quiche }))
await conn.close()
await client.close()
await server.close()
`,
)
t = Date.now()
r = run(process.execPath, ['loopback.mjs'], { cwd: selective, env, timeout: 60_000 })
if (r.status !== 0) fail(`loopback.mjs (transport-core alone) exited ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`)
const core = JSON.parse(r.stdout.trim().split('\n').pop())
log(`transport-core alone, loopback: ${seconds(t)}; ${JSON.stringify(core)}`)
if (core.echo !== 'core only') fail(`transport-core alone: echo ${JSON.stringify(core.echo)}`)
if (core.client !== 'quinn' || !/^quinn/.test(core.server)) fail(`transport-core alone does not run quinn: ${JSON.stringify(core)}`)
if (/\[STOQ_QUINN_UNAVAILABLE\]/.test(r.stderr)) fail(`transport-core alone warned that quinn is unavailable:\n${r.stderr}`)
if (!/^STOQ_ERR_UNSUPPORTED: .*npm install @stoq\/engine-quiche/.test(core.quiche))
  fail(`transport-core alone, engine: 'quiche' did not name the package to install: ${core.quiche}`)

// 5. Without the optional dependency: quiche, one warning, and the fix named.
fs.rmSync(path.join(project, 'node_modules', PLATFORM_PACKAGE), { recursive: true, force: true })
fs.writeFileSync(
  path.join(project, 'fallback.mjs'),
  `import { createEndpoint } from '@stoq/transport-core'
for (let i = 0; i < 2; i++) {
  const ep = await createEndpoint({ host: '127.0.0.1', port: 0 })
  console.log(JSON.stringify({ engine: ep.stats().engine, engineChoice: ep.stats().engineChoice }))
  await ep.close()
}
`,
)
r = run(process.execPath, ['fallback.mjs'], { cwd: project, env, timeout: 60_000 })
if (r.status !== 0) fail(`fallback.mjs exited ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`)
const fallback = JSON.parse(r.stdout.trim().split('\n').pop())
const warnings = r.stderr.split('\n').filter((l) => l.includes('[STOQ_QUINN_UNAVAILABLE]'))
log(`without ${PLATFORM_PACKAGE}: ${fallback.engine}; warning: ${warnings[0] ?? '(none)'}`)
if (fallback.engine !== 'quiche') fail(`expected quiche without the prebuilt, got ${JSON.stringify(fallback)}`)
if (warnings.length !== 1) fail(`expected one STOQ_QUINN_UNAVAILABLE warning, got ${warnings.length}:\n${r.stderr}`)
if (!warnings[0].includes(`npm install ${PLATFORM_PACKAGE}@`) || !warnings[0].includes('scripts/build-native.mjs --strict')) {
  fail(`the warning does not name the fix: ${warnings[0]}`)
}

if (keep) log(`kept ${work}`)
else fs.rmSync(work, { recursive: true, force: true })
console.log(`packed install: ok (${((Date.now() - started) / 1000).toFixed(1)} s)`)
