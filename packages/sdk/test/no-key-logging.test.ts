import { spawn } from 'node:child_process'
import { createPrivateKey } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { inspect } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, Stoq, StoqError, type EngineChoice } from '../src/index.js'
import { CLI, CliRunner } from './cli-runner.js'

/**
 * No key material in anything STOQ prints or serialises: CLI output (help, doctor,
 * serve, send, errors), util.inspect of endpoints, connections, Stoq instances and
 * thrown errors (deep, hidden properties included), JSON of stats. A private key shows
 * up neither as PEM text nor as its bytes (base64, hex, decimal, as Buffers print).
 */

/**
 * Every way a private key could appear in text: its PEM header, the base64 of its
 * secret part, and its bytes as Buffers and arrays print them (hex, decimal). Only the
 * part of the PKCS#8 encoding up to the end of the private scalar counts: the public
 * key that follows it is also in the certificate, which may be printed.
 */
function leaksOf(keyPem: string, text: string): string[] {
  const found: string[] = []
  if (/PRIVATE KEY/.test(text)) found.push('a "PRIVATE KEY" PEM header')
  const d = Buffer.from(createPrivateKey(keyPem).export({ format: 'jwk' }).d!, 'base64url')
  const body = keyPem
    .split('\n')
    .filter((l) => l && !l.startsWith('-----'))
    .join('')
  const der = Buffer.from(body, 'base64')
  const end = der.indexOf(d) + d.length
  if (end < d.length) throw new Error('private scalar not found in the key encoding')
  const secret64 = body.slice(0, Math.ceil(end / 3) * 4)
  const compact = text.replace(/[\s,:]/g, '')
  for (let i = 0; i + 16 <= secret64.length; i += 4) {
    if (text.includes(secret64.slice(i, i + 16))) {
      found.push('base64 of the key')
      break
    }
  }
  for (let i = 0; i + 8 <= d.length; i += 4) {
    const w = d.subarray(i, i + 8)
    if (compact.includes(w.toString('hex')) || (text.includes(w.toString('base64url').slice(0, 8)) && text.includes(d.toString('base64url')))) {
      found.push('the private scalar (hex or JWK)')
      break
    }
    if (text.includes([...w].join(', '))) {
      found.push('the private scalar (decimal)')
      break
    }
  }
  const pemBytes = Buffer.from(secret64)
  for (let i = 0; i + 8 <= pemBytes.length; i += 4) {
    const w = pemBytes.subarray(i, i + 8)
    if (compact.includes(w.toString('hex'))) {
      found.push('PEM bytes of the key (hex)')
      break
    }
    if (text.includes([...w].join(', ')) || compact.includes([...w].join(''))) {
      found.push('PEM bytes of the key (decimal)')
      break
    }
  }
  return found
}

function expectNoKey(keyPem: string, text: string, where: string): void {
  expect(leaksOf(keyPem, text), where).toEqual([])
}

/** Deep, with hidden (non-enumerable) properties; bounded so that packet pools do not take minutes. */
const deep = (v: unknown): string => inspect(v, { depth: 6, showHidden: true, maxStringLength: Infinity })

let pki: TestPki
let root: string
beforeAll(async () => {
  pki = await testPki()
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-no-key-'))
})
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

describe('the detector', () => {
  it('finds a key printed in every form it checks', () => {
    const key = pki.server.key
    expect(leaksOf(key, key)).not.toEqual([])
    expect(leaksOf(key, inspect(Buffer.from(key)).replace(/PRIVATE KEY/g, ''))).toContain('PEM bytes of the key (hex)')
    expect(leaksOf(key, inspect(new Uint8Array(Buffer.from(key)), { maxArrayLength: Infinity }))).toContain('PEM bytes of the key (decimal)')
    expect(leaksOf(key, JSON.stringify(Buffer.from(key)))).toContain('PEM bytes of the key (decimal)')
    const body = key
      .split('\n')
      .filter((l) => l && !l.startsWith('-----'))
      .join('')
    expect(leaksOf(key, Buffer.from(body, 'base64').toString('hex'))).toContain('the private scalar (hex or JWK)')
    expect(leaksOf(key, body.slice(8, 40))).toContain('base64 of the key')
    expect(leaksOf(key, inspect(pki.server.cert))).toEqual([])
  })
})

describe.each(['quinn', 'quiche'] as EngineChoice[])('objects and errors (%s)', (engine) => {
  it('util.inspect of endpoints and connections (deep, hidden properties too) and JSON of stats show no key', async () => {
    const server = await createEndpoint({ host: '127.0.0.1', engine, server: { cert: pki.server.cert, key: pki.server.key } })
    const client = await createEndpoint({ host: '127.0.0.1', engine })
    try {
      // A client identity too: its key must not show either.
      const conn = await client.connect({
        host: '127.0.0.1',
        port: server.address.port,
        ca: pki.ca,
        serverName: 'localhost',
        cert: pki.rogue.cert,
        key: pki.rogue.key,
      })
      const accepted = server.connections[0]!
      for (const [what, v] of [
        ['server endpoint', server],
        ['client endpoint', client],
        ['client connection', conn],
        ['server connection', accepted],
      ] as const) {
        for (const key of [pki.server.key, pki.rogue.key]) {
          expectNoKey(key, inspect(v), `inspect ${what}`)
          expectNoKey(key, deep(v), `deep inspect ${what}`)
        }
      }
      for (const key of [pki.server.key, pki.rogue.key]) {
        expectNoKey(key, JSON.stringify([server.stats(), client.stats(), conn.stats(), accepted.stats()]), 'JSON of stats')
        expectNoKey(key, String(server) + String(conn), 'String()')
      }
      await conn.close()
    } finally {
      await client.close()
      await server.close()
    }
  })

  it('errors thrown around certificate and key options carry no key, message or inspected', async () => {
    const key = pki.server.key
    const client = await createEndpoint({ host: '127.0.0.1', engine })
    const server = await createEndpoint({ host: '127.0.0.1', engine, server: { cert: pki.server.cert, key } })
    const port = server.address.port
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ['cert and key swapped', () => createEndpoint({ host: '127.0.0.1', engine, server: { cert: key, key: pki.server.cert } })],
      ['key given as cert', () => createEndpoint({ host: '127.0.0.1', engine, server: { cert: key, key } })],
      ['key of another certificate', () => createEndpoint({ host: '127.0.0.1', engine, server: { cert: pki.rogue.cert, key } })],
      [
        'corrupted key',
        () => createEndpoint({ host: '127.0.0.1', engine, server: { cert: pki.server.cert, key: key.replace(/\n[A-Za-z0-9+/]{8}/, '\n!!!!!!!!') } }),
      ],
      ['key as host', () => createEndpoint({ host: key, engine })],
      ['key as alpn', () => createEndpoint({ host: '127.0.0.1', engine, server: { cert: pki.server.cert, key, alpn: [key] } })],
      ['key as ca', () => client.connect({ host: '127.0.0.1', port, ca: key, serverName: 'localhost', handshakeTimeoutMs: 3000 })],
      ['key as pin', () => client.connect({ host: '127.0.0.1', port, pin: key })],
      ['key as serverName', () => client.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: key, handshakeTimeoutMs: 3000 })],
      ['key as host to connect', () => client.connect({ host: key, port, insecure: true })],
      [
        'client cert and key swapped',
        () => client.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: 'localhost', cert: key, key: pki.server.cert, handshakeTimeoutMs: 3000 }),
      ],
    ]
    try {
      for (const [what, attempt] of attempts) {
        let error: unknown = null
        let result: unknown = null
        let timer: NodeJS.Timeout | undefined
        try {
          result = await Promise.race([
            attempt(),
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error('HANG')), 10_000)
            }),
          ])
        } catch (err) {
          error = err
        } finally {
          clearTimeout(timer)
        }
        if (result !== null) await (result as { close(): Promise<unknown> }).close().catch(() => {})
        if (error === null) continue // accepted (a server may take a cert and key it cannot use together): nothing thrown to print
        expect(StoqError.isInstance(error), `${what}: ${String(error)}`).toBe(true)
        const e = error as StoqError
        expectNoKey(key, `${e.message}\n${e.stack}`, `${what}: message`)
        expectNoKey(key, deep(e), `${what}: inspect`)
        expectNoKey(key, JSON.stringify(e), `${what}: JSON`)
      }
    } finally {
      await client.close()
      await server.close()
    }
  })

  it('util.inspect of a Stoq instance holding its app identity and browser certificate shows no key', async () => {
    const stoq = await Stoq.create('nokey', { identity: { dir: path.join(root, `stoq-${engine}`) }, endpoint: { engine } })
    try {
      const ep = await stoq.listen({ host: '127.0.0.1', port: 0 }, {})
      const id = await stoq.identity()
      const browser = await stoq.browserCertificate()
      const conn = await stoq.connect(`127.0.0.1:${ep.address.port}`, { pin: id.fingerprint })
      for (const key of [id.key, browser.key]) {
        expectNoKey(key, inspect(stoq), 'inspect Stoq')
        expectNoKey(key, deep(stoq), 'deep inspect Stoq')
        expectNoKey(key, deep(ep), 'deep inspect its endpoint')
        expectNoKey(key, deep(conn), 'deep inspect its connection')
        expectNoKey(key, JSON.stringify(stoq.stats()), 'JSON of Stoq stats')
      }
    } finally {
      await stoq.close()
    }
  })
})

describe('CLI output', () => {
  const cli = new CliRunner('stoq-no-key-config-')
  afterAll(() => cli.cleanup())
  const outputs: string[] = []
  const keyFile = (): string => path.join(cli.config, 'stoq', 'cli', 'identity-key.pem')

  it('help texts, doctor, serve and send (also refused sends) print no key', async () => {
    for (const args of [
      ['help'],
      ['--help'],
      ['serve', '--help'],
      ['send', '--help'],
      ['doctor', '--help'],
      ['bench', '--help'],
      ['stats', '--help'],
      ['doctor', '--json'],
    ]) {
      const r = await cli.run(args, { timeoutMs: 30_000 })
      expect(r.code, args.join(' ')).toBe(0)
      outputs.push(r.stdout, r.stderr)
    }
    // serve creates the CLI identity; send pins it; then a send whose --ca is that key.
    const dir = fs.mkdtempSync(path.join(root, 'serve-'))
    const file = path.join(root, 'payload.bin')
    fs.writeFileSync(file, Buffer.alloc(4096, 7))
    const serve = spawn(process.execPath, [CLI, 'serve', dir, '--port', '0', '--host', '127.0.0.1'], {
      env: { ...process.env, XDG_CONFIG_HOME: cli.config },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    cli.children.add(serve)
    let out = ''
    let err = ''
    serve.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    serve.stderr!.on('data', (d: Buffer) => (err += d.toString()))
    const exited = new Promise<void>((resolve) => serve.on('exit', () => resolve()))
    try {
      const deadline = Date.now() + 20_000
      let m: RegExpExecArray | null = null
      while ((m = /listening on 127\.0\.0\.1:(\d+)[\s\S]*fingerprint ([0-9a-f]{64})/.exec(out)) === null) {
        if (Date.now() > deadline || serve.exitCode !== null) throw new Error(`stoq serve did not start:\n${out}\n${err}`)
        await new Promise((r) => setTimeout(r, 50))
      }
      const [, port, fingerprint] = m
      const sent = await cli.run(['send', file, `127.0.0.1:${port}`, '--pin', fingerprint!], { timeoutMs: 30_000 })
      expect(sent.code, sent.stderr).toBe(0)
      outputs.push(sent.stdout, sent.stderr)
      const refused = await cli.run(['send', file, `127.0.0.1:${port}`, '--ca', keyFile(), '--name', 'other.bin'], { timeoutMs: 30_000 })
      expect(refused.code).not.toBe(0)
      outputs.push(refused.stdout, refused.stderr)
      const keyAsPin = await cli.run(['send', file, `127.0.0.1:${port}`, '--pin', fs.readFileSync(keyFile(), 'utf8')], { timeoutMs: 30_000 })
      expect(keyAsPin.code).not.toBe(0)
      outputs.push(keyAsPin.stdout, keyAsPin.stderr)
    } finally {
      serve.kill('SIGTERM')
      await exited
    }
    outputs.push(out, err)
    const key = fs.readFileSync(keyFile(), 'utf8')
    expect(key).toContain('PRIVATE KEY')
    for (const text of outputs) expectNoKey(key, text, `CLI output:\n${text.slice(0, 300)}`)
  })
})
