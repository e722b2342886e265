/** Engine selection: quinn where its library loads, quiche otherwise, and the reason in stats. */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { createEndpoint, StoqError } from '../src/index.js'

const run = promisify(execFile)
const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url))

/** Start an endpoint in a fresh process with `env`, and return its engine fields. */
async function engineIn(env: Record<string, string>, options = '{}'): Promise<{ engine?: string; engineChoice?: string; error?: string }> {
  const script = `
    const { createEndpoint } = await import(${JSON.stringify(dist)})
    try {
      const ep = await createEndpoint({ host: '127.0.0.1', ...${options} })
      const s = ep.stats()
      console.log(JSON.stringify({ engine: s.engine, engineChoice: s.engineChoice }))
      await ep.close()
    } catch (err) {
      console.log(JSON.stringify({ error: err.code + ': ' + err.message }))
    }`
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-engine-'))
  const file = path.join(dir, 'probe.mjs')
  fs.writeFileSync(file, script)
  try {
    const { stdout } = await run(process.execPath, [file], { env: { ...process.env, ...env } })
    return JSON.parse(stdout.trim().split('\n').pop()!)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

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

  it('refuses an explicit quinn that cannot load, with a typed error', async () => {
    const r = await engineIn({ STOQ_QUINN_LIBRARY: '/nonexistent/libstoq_quinn.so', STOQ_ENGINE: '' }, "{ engine: 'quinn' }")
    expect(r.error).toMatch(/^STOQ_ERR_UNSUPPORTED: engine quinn cannot run here/)
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
