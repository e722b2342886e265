/** Engine selection: quinn where its library loads, quiche otherwise, and the reason in stats. */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { createEndpoint, StoqError } from '../src/index.js'

const run = promisify(execFile)
const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url))

interface Probe {
  engine?: string
  engineChoice?: string
  error?: string
  /** Everything the process wrote to stderr (where process warnings go). */
  stderr: string
}

/** Start `endpoints` endpoints (one after another) in a fresh process with `env`, and return the last one's engine fields. */
async function engineIn(env: Record<string, string>, options = '{}', endpoints = 1): Promise<Probe> {
  const script = `
    const { createEndpoint } = await import(${JSON.stringify(dist)})
    try {
      let s
      for (let i = 0; i < ${endpoints}; i++) {
        const ep = await createEndpoint({ host: '127.0.0.1', ...${options} })
        s = ep.stats()
        await ep.close()
      }
      console.log(JSON.stringify({ engine: s.engine, engineChoice: s.engineChoice }))
    } catch (err) {
      console.log(JSON.stringify({ error: err.code + ': ' + err.message }))
    }`
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-engine-'))
  const file = path.join(dir, 'probe.mjs')
  fs.writeFileSync(file, script)
  try {
    // NODE_OPTIONS from the test runner could carry --no-warnings: the child gets none.
    const { stdout, stderr } = await run(process.execPath, [file], { env: { ...process.env, NODE_OPTIONS: '', ...env } })
    return { ...JSON.parse(stdout.trim().split('\n').pop()!), stderr }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** The STOQ_QUINN_UNAVAILABLE warnings in a process's stderr. */
const quinnWarnings = (stderr: string): string[] => stderr.split('\n').filter((l) => l.includes('[STOQ_QUINN_UNAVAILABLE]'))

describe('engine choice', () => {
  it('auto takes quinn where its library loads, and says so', async () => {
    const ep = await createEndpoint({ host: '127.0.0.1', engine: 'auto' })
    try {
      expect(ep.stats()).toMatchObject({ engine: 'quinn', engineChoice: 'engine auto: quinn, the faster engine, loads here' })
    } finally {
      await ep.close()
    }
  })

  it('falls back to quiche when the quinn library is missing, with the reason', async () => {
    const r = await engineIn({ STOQ_QUINN_LIBRARY: '/nonexistent/libstoq_quinn.so', STOQ_ENGINE: '' })
    expect(r.engine).toBe('quiche')
    expect(r.engineChoice).toContain('quinn is unavailable')
    expect(r.engineChoice).toContain('/nonexistent/libstoq_quinn.so')
  })

  it('warns once per process on stderr when auto falls back to quiche, with the reason and the fix', async () => {
    const r = await engineIn({ STOQ_QUINN_LIBRARY: '/nonexistent/libstoq_quinn.so', STOQ_ENGINE: '' }, '{}', 3)
    expect(r.engine).toBe('quiche')
    expect(r.engineChoice).toContain('quinn is unavailable')
    const warnings = quinnWarnings(r.stderr)
    expect(warnings, r.stderr).toHaveLength(1)
    expect(warnings[0]).toContain('Warning: STOQ is using the quiche engine because the quinn engine cannot load')
    expect(warnings[0]).toContain('/nonexistent/libstoq_quinn.so missing')
    expect(warnings[0]).toContain('To fix: unset STOQ_QUINN_LIBRARY')
  })

  it('does not warn when quiche is asked for, nor when quinn loads', async () => {
    const quiche = await engineIn({ STOQ_QUINN_LIBRARY: '/nonexistent/libstoq_quinn.so', STOQ_ENGINE: 'quiche' })
    expect(quiche.engine).toBe('quiche')
    expect(quinnWarnings(quiche.stderr)).toEqual([])
    const explicit = await engineIn({ STOQ_QUINN_LIBRARY: '/nonexistent/libstoq_quinn.so', STOQ_ENGINE: '' }, "{ engine: 'quiche' }")
    expect(explicit.engine).toBe('quiche')
    expect(quinnWarnings(explicit.stderr)).toEqual([])
    const quinn = await engineIn({ STOQ_ENGINE: '' })
    expect(quinn.engine).toBe('quinn')
    expect(quinnWarnings(quinn.stderr)).toEqual([])
  })

  it('refuses an explicit quinn that cannot load, with a typed error', async () => {
    const r = await engineIn({ STOQ_QUINN_LIBRARY: '/nonexistent/libstoq_quinn.so', STOQ_ENGINE: '' }, "{ engine: 'quinn' }")
    expect(r.error).toMatch(/^STOQ_ERR_UNSUPPORTED: engine quinn cannot run here/)
  })

  it('names the package to install when quiche is needed and @stoq/engine-quiche is not installed', async () => {
    // A resolve hook makes @stoq/engine-quiche unresolvable, as in a project that installed transport-core alone.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-no-quiche-'))
    try {
      fs.writeFileSync(
        path.join(dir, 'hooks.mjs'),
        `export async function resolve(specifier, context, next) {
          if (specifier === '@stoq/engine-quiche') throw Object.assign(new Error("Cannot find package '@stoq/engine-quiche'"), { code: 'ERR_MODULE_NOT_FOUND' })
          return next(specifier, context)
        }`,
      )
      fs.writeFileSync(
        path.join(dir, 'register.mjs'),
        `import { register } from 'node:module'\nregister(${JSON.stringify(pathToFileURL(path.join(dir, 'hooks.mjs')).href)})\n`,
      )
      const env = { NODE_OPTIONS: `--import ${pathToFileURL(path.join(dir, 'register.mjs')).href}`, STOQ_ENGINE: '' }
      const asked = await engineIn(env, "{ engine: 'quiche' }")
      expect(asked.error).toMatch(
        /^STOQ_ERR_UNSUPPORTED: engine quiche was asked for, but @stoq\/engine-quiche is not installed\. To fix: npm install @stoq\/engine-quiche /,
      )
      const auto = await engineIn({ ...env, STOQ_QUINN_LIBRARY: '/nonexistent/libstoq_quinn.so' })
      expect(auto.error).toMatch(
        /^STOQ_ERR_UNSUPPORTED: engine auto: quinn is unavailable \(.*\/nonexistent\/libstoq_quinn\.so.*\), but @stoq\/engine-quiche is not installed\. To fix: npm install @stoq\/engine-quiche /,
      )
      // No warning that quiche is in use: it is not.
      expect(quinnWarnings(auto.stderr)).toEqual([])
      // quinn alone still serves auto.
      expect(await engineIn(env)).toMatchObject({ engine: 'quinn', engineChoice: 'engine auto: quinn, the faster engine, loads here' })
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('honours STOQ_ENGINE and refuses unknown engine names', async () => {
    expect(await engineIn({ STOQ_ENGINE: 'quiche' })).toMatchObject({ engine: 'quiche', engineChoice: 'engine quiche (asked for)' })
    expect((await engineIn({ STOQ_ENGINE: 'msquic' })).error).toMatch(/^STOQ_ERR_INVALID_ARG/)
    let err: unknown
    try {
      await createEndpoint({ host: '127.0.0.1', engine: 'msquic' as never })
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
  })
})
