import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { inspect } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  testPki,
  type TestPki,
  boundedOutcome,
  type MisuseOutcome,
  withoutWrongValues,
  wrongValues,
  type WrongValue,
  type WrongValueName,
} from '@stoq/compliance-tests'
import {
  appConfigDir,
  classifyTier,
  ConnectionPool,
  createTransferReceiver,
  KnownHosts,
  loadOrCreateBrowserCertificate,
  loadOrCreateIdentity,
  parseTarget,
  poolKey,
  Stoq,
  StoqError,
  tierProfile,
  type Endpoint,
} from '../src/index.js'

/**
 * API misuse of the SDK: wrong types, out-of-range numbers and closed objects (closed
 * Stoq instance, closed pool, closed multiplexer) answer with a typed StoqError within a
 * bounded time, never another error, a crash or a hang.
 */

const LIMIT_MS = 10_000
const WRONG: WrongValue[] = wrongValues('null', 'NaN', 'Infinity', '-1', '1.5', 'a string', 'an object', 'an array', 'a Symbol', 'a function', 'a BigInt')
const not = (...names: WrongValueName[]): WrongValue[] => withoutWrongValues(WRONG, ...names)

type Outcome = MisuseOutcome

const outcome = (fn: () => unknown): Promise<Outcome> => boundedOutcome(fn, LIMIT_MS)

async function expectTyped(fn: () => unknown, code: string, label = ''): Promise<StoqError> {
  const r = await outcome(fn)
  if (r.ok) {
    // Something was opened on a wrong argument: close it so the test stops by itself.
    const v = r.value as { close?: () => unknown } | null
    if (v && typeof v.close === 'function') await Promise.resolve(v.close()).catch(() => {})
    throw new Error(`${label}: expected ${code}, got a result: ${inspect(r.value, { depth: 0 })}`)
  }
  if (!StoqError.isInstance(r.error)) throw new Error(`${label}: expected ${code}, got a non-STOQ error: ${inspect(r.error)}`)
  expect(r.error.code, label).toBe(code)
  return r.error
}

let pki: TestPki
let root: string
let server: Stoq
let ep: Endpoint
const target = (): string => `127.0.0.1:${ep.address.port}`

beforeAll(async () => {
  pki = await testPki()
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-sdk-misuse-'))
  server = await Stoq.create('misuse-server', { identity: { dir: path.join(root, 'server') } })
  ep = await server.listen({ host: '127.0.0.1', port: 0 }, { cert: pki.server.cert, key: pki.server.key })
})

afterAll(async () => {
  await server?.close()
  fs.rmSync(root, { recursive: true, force: true })
})

describe('Stoq.create', () => {
  it('refuses a bad name, options that are not objects, and bad sub-options', async () => {
    for (const [label, v] of [...not('a string'), ['an empty name', ''], ['a path', '../x'], ['..', '..'], ['65 characters', 'a'.repeat(65)]] as Array<
      [string, unknown]
    >) {
      await expectTyped(() => Stoq.create(v as never), 'STOQ_ERR_INVALID_ARG', `name ${label}`)
    }
    for (const [label, v] of not('an object', 'a function')) await expectTyped(() => Stoq.create('a', v as never), 'STOQ_ERR_INVALID_ARG', `options ${label}`)
    for (const key of ['endpoint', 'components', 'identity', 'pool', 'browserCertificate']) {
      for (const [label, v] of not('null', 'an object', 'a function')) {
        await expectTyped(() => Stoq.create('a', { [key]: v } as never), 'STOQ_ERR_INVALID_ARG', `${key} ${label}`)
      }
    }
    for (const [label, v] of [...not('null'), ['unknown', 'fastest']] as Array<[string, unknown]>) {
      await expectTyped(() => Stoq.create('a', { tier: v } as never), 'STOQ_ERR_INVALID_ARG', `tier ${label}`)
    }
    for (const [label, v] of not('null')) {
      await expectTyped(() => Stoq.create('a', { pool: { maxConnections: v } } as never), 'STOQ_ERR_INVALID_ARG', `pool.maxConnections ${label}`)
      await expectTyped(() => Stoq.create('a', { identity: { validityDays: v } } as never), 'STOQ_ERR_INVALID_ARG', `identity.validityDays ${label}`)
      await expectTyped(
        () => Stoq.create('a', { browserCertificate: { validityDays: v } } as never),
        'STOQ_ERR_INVALID_ARG',
        `browserCertificate.validityDays ${label}`,
      )
    }
    for (const [label, v] of not('null', 'a string')) {
      await expectTyped(() => Stoq.create('a', { identity: { dir: v } } as never), 'STOQ_ERR_INVALID_ARG', `identity.dir ${label}`)
    }
  })
})

describe('Stoq methods', () => {
  it('listen refuses a bad port, bad handlers, and handler callbacks that are not functions', async () => {
    const s = await Stoq.create('misuse-listen', { identity: { dir: path.join(root, 'listen') } })
    try {
      const id = { cert: pki.server.cert, key: pki.server.key }
      for (const [label, v] of [...not('an object', 'a function'), ['a numeric string', '8080'], ['undefined', undefined]] as Array<[string, unknown]>) {
        await expectTyped(() => s.listen(v as never, id), 'STOQ_ERR_INVALID_ARG', `port ${label}`)
      }
      for (const [label, v] of [...not('an object', 'a function'), ['undefined', undefined]] as Array<[string, unknown]>) {
        await expectTyped(() => s.listen({ host: '127.0.0.1', port: 0 }, v as never), 'STOQ_ERR_INVALID_ARG', `handlers ${label}`)
      }
      for (const k of ['onConnection', 'onStream', 'onDatagram']) {
        for (const [label, v] of not('null', 'a function')) {
          await expectTyped(() => s.listen({ host: '127.0.0.1', port: 0 }, { ...id, [k]: v } as never), 'STOQ_ERR_INVALID_ARG', `${k} ${label}`)
        }
      }
      await expectTyped(() => s.listen({ host: '127.0.0.1', port: 0 }, { cert: pki.server.cert }), 'STOQ_ERR_INVALID_ARG', 'cert alone')
      for (const [label, v] of not('null', 'an object')) {
        await expectTyped(() => s.listen({ host: '127.0.0.1', port: 0 }, { ...id, webtransport: v } as never), 'STOQ_ERR_INVALID_ARG', `webtransport ${label}`)
      }
      await expectTyped(() => s.listen({ host: '127.0.0.1', port: 0 }, { ...id, webtransport: { onSession: 5 } } as never), 'STOQ_ERR_INVALID_ARG', 'onSession')
      await expectTyped(
        () => s.listen({ host: '127.0.0.1', port: 0 }, { ...id, webtransport: { onSession: () => {}, path: 'x' } }),
        'STOQ_ERR_INVALID_ARG',
        'path',
      )
      for (const [label, v] of not('null', 'a string')) {
        await expectTyped(() => s.listen({ host: '127.0.0.1', port: 0 }, { cert: v, key: pki.server.key } as never), 'STOQ_ERR_INVALID_ARG', `cert ${label}`)
      }
      expect(s.stats().endpoints).toBe(0)
    } finally {
      await s.close()
    }
  })

  it('connect, probe and multiplex refuse bad targets and options', async () => {
    const c = await Stoq.create('misuse-client', { identity: { dir: path.join(root, 'client') } })
    try {
      for (const [label, v] of [
        ...not('a string', 'an object'),
        ['{ host, port: 0 }', { host: 'h', port: 0 }],
        ['{ host, port: 70000 }', { host: 'h', port: 70000 }],
        ['an empty host', { host: '', port: 1 }],
      ] as Array<[string, unknown]>) {
        await expectTyped(() => c.connect(v as never, { insecure: true }), 'STOQ_ERR_INVALID_ARG', `target ${label}`)
        await expectTyped(() => c.probe(v as never, { insecure: true }), 'STOQ_ERR_INVALID_ARG', `probe target ${label}`)
        await expectTyped(() => c.multiplex(v as never, { insecure: true, connections: 1 }), 'STOQ_ERR_INVALID_ARG', `multiplex target ${label}`)
      }
      for (const [label, v] of not('an object', 'a function')) {
        await expectTyped(() => c.connect(target(), v as never), 'STOQ_ERR_INVALID_ARG', `connect options ${label}`)
        await expectTyped(() => c.probe(target(), v as never), 'STOQ_ERR_INVALID_ARG', `probe options ${label}`)
        await expectTyped(() => c.multiplex(target(), v as never), 'STOQ_ERR_INVALID_ARG', `multiplex options ${label}`)
      }
      for (const [label, v] of [...not('null'), ['tofu2', 'tofu2']] as Array<[string, unknown]>) {
        await expectTyped(() => c.connect(target(), { insecure: true, trust: v } as never), 'STOQ_ERR_INVALID_ARG', `trust ${label}`)
      }
      for (const [label, v] of [...not('null'), ['1023', 1023]] as Array<[string, unknown]>) {
        await expectTyped(() => c.probe(target(), { insecure: true, bytes: v } as never), 'STOQ_ERR_INVALID_ARG', `bytes ${label}`)
      }
      for (const [label, v] of [...not('null'), ['0', 0], ['1025', 1025]] as Array<[string, unknown]>) {
        await expectTyped(() => c.multiplex(target(), { insecure: true, connections: v } as never), 'STOQ_ERR_INVALID_ARG', `connections ${label}`)
      }
      for (const [label, v] of not('null')) {
        await expectTyped(() => c.multiplex(target(), { insecure: true, strategy: v } as never), 'STOQ_ERR_INVALID_ARG', `strategy ${label}`)
        await expectTyped(() => c.connect(target(), { pin: v } as never), 'STOQ_ERR_INVALID_ARG', `pin ${label}`)
      }
      await expectTyped(() => c.connect(target()), 'STOQ_ERR_INVALID_ARG', 'no verification method')
    } finally {
      await c.close()
    }
  })
})

describe('unknown option keys', () => {
  // One policy (@stoq/interface checkOptions): a misspelt key is refused, named, with the closest accepted key.
  it('every SDK entry point refuses an unknown key, naming it', async () => {
    const c = await Stoq.create('misuse-keys', { identity: { dir: path.join(root, 'keys') } })
    const id = { cert: pki.server.cert, key: pki.server.key }
    const cases: Array<[string, string | null, () => unknown]> = [
      ['tire', 'tier', () => Stoq.create('a', { tire: 'lan' } as never)],
      ['endpoint.udpBackned', 'endpoint.udpBackend', () => Stoq.create('a', { endpoint: { udpBackned: 'gro' } } as never)],
      // `port` and `server` come from listen, not from the shared endpoint options.
      ['endpoint.port', null, () => Stoq.create('a', { endpoint: { port: 1 } } as never)],
      ['endpoint.transport.pacng', 'endpoint.transport.pacing', () => Stoq.create('a', { endpoint: { transport: { pacng: true } } } as never)],
      ['components.metric', 'components.metrics', () => Stoq.create('a', { components: { metric: {} } } as never)],
      ['identity.validDays', null, () => Stoq.create('a', { identity: { validDays: 3 } } as never)],
      ['browserCertificate.ip', 'browserCertificate.ips', () => Stoq.create('a', { browserCertificate: { ip: [] } } as never)],
      ['pool.maxConnection', 'pool.maxConnections', () => Stoq.create('a', { pool: { maxConnection: 3 } } as never)],
      ['handlers.onstream', 'handlers.onStream', () => c.listen({ host: '127.0.0.1', port: 0 }, { ...id, onstream: () => {} } as never)],
      [
        'handlers.webtransport.onsession',
        'handlers.webtransport.onSession',
        () => c.listen({ host: '127.0.0.1', port: 0 }, { ...id, webtransport: { onsession: () => {} } } as never),
      ],
      ['handshakeTimeout', 'handshakeTimeoutMs', () => c.connect(target(), { insecure: true, handshakeTimeout: 5 } as never)],
      ['resuse', 'reuse', () => c.connect(target(), { insecure: true, resuse: false } as never)],
      ['byte', 'bytes', () => c.probe(target(), { insecure: true, byte: 65536 } as never)],
      ['connection', 'connections', () => c.multiplex(target(), { insecure: true, connection: 1 } as never)],
      // Multiplexed members never come from the pool.
      ['reuse', null, () => c.multiplex(target(), { insecure: true, reuse: true } as never)],
      ['windowByte', 'windowBytes', () => createTransferReceiver({ onTransfer: () => {}, windowByte: 1 } as never)],
      ['pool.idleTimeout', 'pool.idleTimeoutMs', () => new ConnectionPool({ idleTimeout: 5 } as never)],
    ]
    try {
      for (const [argument, near, call] of cases) {
        const err = await expectTyped(call, 'STOQ_ERR_INVALID_ARG', argument)
        expect(err.data, argument).toEqual({ argument })
        if (near === null) expect(err.message, argument).not.toContain('did you mean')
        else expect(err.message, argument).toContain(`did you mean \`${near}\`?`)
      }
      // Refused before anything was bound or dialled.
      expect(c.stats().endpoints).toBe(0)
    } finally {
      await c.close()
    }
  })
})

describe('closed objects', () => {
  it('a closed Stoq instance refuses listen, connect, probe and multiplex; close is idempotent; stats still answer', async () => {
    const s = await Stoq.create('misuse-closed', { identity: { dir: path.join(root, 'closed') } })
    const conn = await s.connect(target(), { pin: pki.server.fingerprint })
    await s.close()
    expect(conn.isClosed).toBe(true)
    await expectTyped(() => s.listen(0, { cert: pki.server.cert, key: pki.server.key }), 'STOQ_ERR_CLOSED', 'listen')
    await expectTyped(() => s.connect(target(), { pin: pki.server.fingerprint }), 'STOQ_ERR_CLOSED', 'connect')
    await expectTyped(() => s.probe(target(), { pin: pki.server.fingerprint }), 'STOQ_ERR_CLOSED', 'probe')
    await expectTyped(() => s.multiplex(target(), { pin: pki.server.fingerprint }), 'STOQ_ERR_CLOSED', 'multiplex')
    await expectTyped(() => s.connect(null as never), 'STOQ_ERR_CLOSED', 'connect(null)')
    expect((await outcome(() => s.close())).ok).toBe(true)
    expect(s.stats().endpoints).toBe(0)
  })

  it('closing while connect and listen are under way leaves nothing open behind', async () => {
    const s = await Stoq.create('misuse-race', { identity: { dir: path.join(root, 'race') } })
    const dialling = outcome(() => s.connect(target(), { pin: pki.server.fingerprint }))
    const listening = outcome(() => s.listen({ host: '127.0.0.1', port: 0 }, { cert: pki.server.cert, key: pki.server.key }))
    await s.close()
    for (const r of [await dialling, await listening]) {
      if (r.ok) {
        // Whatever it gave back must be closed already.
        const v = r.value as { isClosed?: boolean; listening?: boolean }
        expect(v.isClosed === true || v.listening === false).toBe(true)
      } else {
        expect(StoqError.isInstance(r.error) && r.error.code).toBe('STOQ_ERR_CLOSED')
      }
    }
    expect(s.stats().endpoints).toBe(0)
  })

  it('a closed multiplexer refuses send, openStream and transfer', async () => {
    const s = await Stoq.create('misuse-mux', { identity: { dir: path.join(root, 'mux') } })
    try {
      const mux = await s.multiplex(target(), { pin: pki.server.fingerprint, connections: 2 })
      for (const [label, v] of not('a string', 'an array')) await expectTyped(() => mux.send(v as never), 'STOQ_ERR_INVALID_ARG', `send ${label}`)
      await mux.close()
      await expectTyped(() => mux.send('x'), 'STOQ_ERR_CLOSED', 'send')
      await expectTyped(() => mux.openStream(), 'STOQ_ERR_CLOSED', 'openStream')
      await expectTyped(() => mux.transfer(new Uint8Array(10)), 'STOQ_ERR_CLOSED', 'transfer')
      expect((await outcome(() => mux.close())).ok).toBe(true)
      expect(mux.stats().alive).toBe(0)
    } finally {
      await s.close()
    }
  })

  it('a closed pool refuses acquire', async () => {
    const pool = new ConnectionPool()
    pool.close()
    await expectTyped(() => pool.acquire('k', () => Promise.reject(new Error('must not be called'))), 'STOQ_ERR_CLOSED', 'acquire')
  })
})

describe('helpers', () => {
  it('ConnectionPool and poolKey refuse wrong arguments', async () => {
    for (const [label, v] of not('an object', 'a function'))
      await expectTyped(() => new ConnectionPool(v as never), 'STOQ_ERR_INVALID_ARG', `pool options ${label}`)
    for (const [label, v] of not('null')) {
      await expectTyped(() => new ConnectionPool({ maxConnections: v } as never), 'STOQ_ERR_INVALID_ARG', `maxConnections ${label}`)
      await expectTyped(() => new ConnectionPool({ idleTimeoutMs: v } as never), 'STOQ_ERR_INVALID_ARG', `idleTimeoutMs ${label}`)
    }
    const pool = new ConnectionPool()
    for (const [label, v] of not('a string'))
      await expectTyped(() => pool.acquire(v as never, () => Promise.reject(new Error('x'))), 'STOQ_ERR_INVALID_ARG', `key ${label}`)
    for (const [label, v] of not('a function')) await expectTyped(() => pool.acquire('k', v as never), 'STOQ_ERR_INVALID_ARG', `open ${label}`)
    pool.close()
    for (const [label, v] of not('a string')) await expectTyped(() => poolKey(v as never, 1, {}), 'STOQ_ERR_INVALID_ARG', `poolKey host ${label}`)
    for (const [label, v] of not('-1').filter(([, x]) => !Number.isInteger(x)))
      await expectTyped(() => poolKey('h', v as never, {}), 'STOQ_ERR_INVALID_ARG', `poolKey port ${label}`)
    for (const [label, v] of not('an object', 'a function'))
      await expectTyped(() => poolKey('h', 1, v as never), 'STOQ_ERR_INVALID_ARG', `poolKey options ${label}`)
    await expectTyped(() => poolKey('h', 1, { x: 10n }), 'STOQ_ERR_INVALID_ARG', 'BigInt option')
    await expectTyped(() => poolKey('h', 1, { x: Symbol('s') }), 'STOQ_ERR_INVALID_ARG', 'Symbol option')
  })

  it('parseTarget, classifyTier and tierProfile refuse wrong arguments', async () => {
    for (const [label, v] of not('a string', 'an object')) await expectTyped(() => parseTarget(v as never), 'STOQ_ERR_INVALID_ARG', `target ${label}`)
    for (const [label, v] of [
      ['{}', {}],
      ['port 70000', { host: 'h', port: 70000 }],
      ['empty host', { host: '', port: 1 }],
    ] as Array<[string, unknown]>) {
      await expectTyped(() => parseTarget(v as never), 'STOQ_ERR_INVALID_ARG', `target ${label}`)
    }
    for (const [label, v] of WRONG.filter(([, x]) => typeof x !== 'number' || !Number.isFinite(x) || x < 0)) {
      await expectTyped(() => classifyTier(v as never), 'STOQ_ERR_INVALID_ARG', `gbps ${label}`)
    }
    for (const [label, v] of WRONG) await expectTyped(() => tierProfile(v as never), 'STOQ_ERR_INVALID_ARG', `tier ${label}`)
    for (const [label, v] of not('1.5')) await expectTyped(() => tierProfile('home', v as never), 'STOQ_ERR_INVALID_ARG', `rttMs ${label}`)
  })

  it('identity functions and KnownHosts refuse wrong arguments (no path outside the config dir)', async () => {
    for (const [label, v] of [...not('a string'), ['..', '..'], ['a path', '../../etc'], ['an empty name', '']] as Array<[string, unknown]>) {
      await expectTyped(() => appConfigDir(v as never), 'STOQ_ERR_INVALID_ARG', `appConfigDir ${label}`)
      await expectTyped(() => loadOrCreateIdentity(v as never, { dir: path.join(root, 'never') }), 'STOQ_ERR_INVALID_ARG', `identity name ${label}`)
      await expectTyped(() => loadOrCreateBrowserCertificate(v as never, { dir: path.join(root, 'never') }), 'STOQ_ERR_INVALID_ARG', `browser name ${label}`)
    }
    for (const [label, v] of not('an object', 'a function')) {
      await expectTyped(() => loadOrCreateIdentity('a', v as never), 'STOQ_ERR_INVALID_ARG', `identity options ${label}`)
      await expectTyped(() => loadOrCreateBrowserCertificate('a', v as never), 'STOQ_ERR_INVALID_ARG', `browser options ${label}`)
    }
    for (const [label, v] of not('null')) {
      await expectTyped(() => loadOrCreateIdentity('a', { dir: path.join(root, 'never'), names: v } as never), 'STOQ_ERR_INVALID_ARG', `names ${label}`)
      await expectTyped(
        () => loadOrCreateIdentity('a', { dir: path.join(root, 'never'), renewBeforeDays: v } as never),
        'STOQ_ERR_INVALID_ARG',
        `renewBeforeDays ${label}`,
      )
    }
    expect(fs.existsSync(path.join(root, 'never'))).toBe(false)
    for (const [label, v] of [...not('a string'), ['an empty path', '']] as Array<[string, unknown]>) {
      await expectTyped(() => new KnownHosts(v as never), 'STOQ_ERR_INVALID_ARG', `KnownHosts ${label}`)
    }
    const known = new KnownHosts(path.join(root, 'kh', 'known_hosts.json'))
    for (const [label, v] of not('a string')) await expectTyped(() => known.remember(v as never, 'ab'.repeat(32)), 'STOQ_ERR_INVALID_ARG', `peer ${label}`)
    for (const [label, v] of [...WRONG, ['short', 'abcd']] as Array<[string, unknown]>) {
      await expectTyped(() => known.remember('h:1', v as never), 'STOQ_ERR_INVALID_ARG', `fingerprint ${label}`)
    }
    expect(known.get('h:1')).toBeUndefined()
    expect(known.get('__proto__')).toBeUndefined()
    expect(known.get('constructor')).toBeUndefined()
  })

  it('createTransferReceiver refuses wrong options', async () => {
    for (const [label, v] of not('an object', 'a function'))
      await expectTyped(() => createTransferReceiver(v as never), 'STOQ_ERR_INVALID_ARG', `options ${label}`)
    for (const [label, v] of not('a function', 'null')) {
      await expectTyped(() => createTransferReceiver({ onTransfer: v } as never), 'STOQ_ERR_INVALID_ARG', `onTransfer ${label}`)
      await expectTyped(() => createTransferReceiver({ onTransfer: () => {}, windowBytes: v } as never), 'STOQ_ERR_INVALID_ARG', `windowBytes ${label}`)
      await expectTyped(() => createTransferReceiver({ onTransfer: () => {}, maxTransfers: v } as never), 'STOQ_ERR_INVALID_ARG', `maxTransfers ${label}`)
    }
  })
})
