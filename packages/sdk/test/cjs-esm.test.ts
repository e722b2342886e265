import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

/**
 * Every public package loads through `require()` and through `import()` from its built dist,
 * resolved as a user's code resolves it (a child `node -e` whose working directory is a
 * workspace package that depends on it, so the `exports` map and pnpm's links are what find
 * the files). The export names must be the same set both ways, and the two must be separate
 * module instances (the `.cjs` and the `.js` files, not one format wrapped by the other).
 * `@stoq/sdk` then echoes bytes over loopback through its CommonJS entry, with the worker
 * threads and native libraries the ESM entry uses on this machine.
 */

const root = fileURLToPath(new URL('../../..', import.meta.url))
const packagesDir = path.join(root, 'packages')
/** Where the children would keep app identities (none is expected: the examples bring certificates). */
let configHome = ''

beforeAll(() => {
  configHome = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-cjs-esm-'))
})
afterAll(() => {
  if (configHome) fs.rmSync(configHome, { recursive: true, force: true })
})

interface PackageInfo {
  name: string
  dir: string
  /** Has a `require` condition; the others are ESM only, or CommonJS only (`commonjs`). */
  dual: boolean
  /** A CommonJS package (the prebuilt library's platform package): import() loads the same module. */
  commonjs: boolean
}

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>
}

const publicPackages: PackageInfo[] = fs
  .readdirSync(packagesDir)
  .map((d) => path.join(packagesDir, d))
  .filter((dir) => fs.existsSync(path.join(dir, 'package.json')))
  .map((dir) => ({ dir, pkg: readJson(path.join(dir, 'package.json')) }))
  .filter(({ pkg }) => pkg.private !== true)
  .map(({ dir, pkg }) => {
    const dot = (pkg.exports as Record<string, Record<string, unknown>>)['.']!
    const commonjs = pkg.type === 'commonjs' && !('import' in dot)
    return { name: pkg.name as string, dir, dual: 'require' in dot || commonjs, commonjs }
  })
  .sort((a, b) => a.name.localeCompare(b.name))

/** A workspace package with `name` among its dependencies (pnpm linked it), else the package itself (self-reference). */
function consumerOf(p: PackageInfo): string {
  const dirs = fs.readdirSync(packagesDir).map((d) => path.join(packagesDir, d))
  return dirs.find((d) => fs.existsSync(path.join(d, 'node_modules', p.name, 'package.json'))) ?? p.dir
}

/** Runs `node [args] -e code` in `cwd`; stdout's last line is JSON. */
function node(cwd: string, code: string, args: string[] = [], timeout = 60_000): Record<string, unknown> {
  const out = execFileSync(process.execPath, [...args, '-e', code], {
    cwd,
    encoding: 'utf8',
    timeout,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '', XDG_CONFIG_HOME: configHome },
  })
  const last = out.trim().split('\n').at(-1) ?? ''
  return JSON.parse(last) as Record<string, unknown>
}

// CommonJS: require() the package, then import() it, from the same process.
const LOAD_BOTH = `
const name = process.argv[1]
const out = {}
try {
  out.resolved = require.resolve(name)
  const cjs = require(name)
  out.cjs = Object.keys(cjs).sort()
  import(name).then((esm) => {
    out.esm = Object.keys(esm).filter((k) => k !== 'default' && k !== 'module.exports').sort()
    out.sharedFunctions = out.esm.filter((k) => typeof esm[k] === 'function' && esm[k] === cjs[k])
    out.functions = out.esm.filter((k) => typeof esm[k] === 'function').length
    console.log(JSON.stringify(out))
  })
} catch (err) {
  out.requireError = err.code ?? err.message
  import(name).then((esm) => {
    out.esm = Object.keys(esm).filter((k) => k !== 'default' && k !== 'module.exports').sort()
    console.log(JSON.stringify(out))
  })
}
`

describe('CommonJS and ESM entries of every public package', () => {
  it('finds the public packages', () => {
    expect(publicPackages.map((p) => p.name)).toContain('@stoq/sdk')
    expect(publicPackages.length).toBeGreaterThanOrEqual(10)
  })

  for (const p of publicPackages) {
    it(`${p.name}: require() and import() give the same export names`, () => {
      const cwd = consumerOf(p)
      const r = node(cwd, LOAD_BOTH.replace('process.argv[1]', JSON.stringify(p.name)))
      const esm = r.esm as string[]
      expect(esm.length).toBeGreaterThan(0)
      if (!p.dual) {
        // @stoq/compliance-tests: vitest suites, ESM only (vitest refuses require()).
        expect(r.requireError).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED')
        return
      }
      expect(r.requireError).toBeUndefined()
      if (p.commonjs) {
        // One module, reached both ways (Node's import of CommonJS finds its named exports; Node 23+
        // also names the whole `module.exports`, left out above).
        expect(r.resolved).toBe(path.join(fs.realpathSync(p.dir), 'index.js'))
        expect(r.cjs).toEqual(esm)
        return
      }
      expect(r.resolved).toBe(path.join(fs.realpathSync(p.dir), 'dist', 'index.cjs'))
      expect(r.cjs).toEqual(esm)
      // Two module instances: import() did not fall back to the CommonJS file.
      expect(r.functions as number).toBeGreaterThan(0)
      expect(r.sharedFunctions).toEqual([])
    })
  }

  it('@stoq/sdk echoes over loopback through require(), taking the same paths as import()', () => {
    // The same program under both module systems: the facade (listen with engine workers where
    // the machine runs them, connect with a pin), then endpoints with workers: 'auto' and the
    // default UDP backend (a worker thread through koffi where the machine has it).
    const body = `
      const data = new Uint8Array(48 * 1024)
      crypto.getRandomValues(data)
      async function echo(conn) {
        const stream = conn.openStream()
        const reading = (async () => {
          const parts = []
          for await (const c of stream.readable) parts.push(Buffer.from(c))
          return Buffer.concat(parts)
        })()
        const writer = stream.writable.getWriter()
        await writer.write(data)
        await writer.close()
        const back = await reading
        if (Buffer.compare(back, Buffer.from(data)) !== 0) throw new Error('the echo differs from what was sent')
        return back.length
      }
      const id = await sdk.createWebTransportCertificate()
      const report = {}

      const server = await sdk.Stoq.create('stoq-cjs-esm-server')
      const listening = await server.listen({ host: '::1', port: 0 }, { cert: id.cert, key: id.key, onStream: (s) => void s.readable.pipeTo(s.writable) })
      const client = await sdk.Stoq.create('stoq-cjs-esm-client')
      const conn = await client.connect('[::1]:' + listening.address.port, { pin: id.sha256Hex, serverName: 'localhost' })
      report.facadeEcho = await echo(conn)
      report.facade = { server: server.stats().engineChoice, client: client.stats().engineChoice }
      await client.close()
      await server.close()

      const srv = await sdk.createEndpoint({ host: '127.0.0.1', port: 0, workers: 'auto', server: { cert: id.cert, key: id.key } })
      srv.on('connection', (c) => c.on('stream', (s) => void s.readable.pipeTo(s.writable).catch(() => {})))
      const cli = await sdk.createEndpoint({ host: '127.0.0.1', port: 0 })
      const c2 = await cli.connect({ host: '127.0.0.1', port: srv.address.port, pin: id.sha256Hex, serverName: 'localhost' })
      report.endpointEcho = await echo(c2)
      const s = srv.stats()
      const c = cli.stats()
      report.server = { engine: s.engine, engineChoice: s.engineChoice, udp: s.udp.backend }
      report.client = { engine: c.engine, udp: c.udp.backend, udpChoice: c.udpChoice }
      await cli.close()
      await srv.close()
      console.log(JSON.stringify(report))
      setTimeout(() => process.exit(0), 1000).unref()
    `
    const sdk = publicPackages.find((p) => p.name === '@stoq/sdk')!
    const cwd = consumerOf(sdk)
    const viaRequire = node(cwd, `const sdk = require('@stoq/sdk');\n(async () => {${body}})().catch((e) => { console.error(e); process.exit(1) })`)
    const viaImport = node(cwd, `import * as sdk from '@stoq/sdk';\n${body}`, ['--input-type=module'])
    console.log(`require: ${JSON.stringify(viaRequire)}\nimport:  ${JSON.stringify(viaImport)}`)
    expect(viaRequire.facadeEcho).toBe(48 * 1024)
    expect(viaRequire.endpointEcho).toBe(48 * 1024)
    expect(viaRequire).toEqual(viaImport)
  }, 120_000)
})
