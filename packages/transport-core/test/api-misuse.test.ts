import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { inspect } from 'node:util'
import { testPki, type TestPki, boundedOutcome, type MisuseOutcome, withoutWrongValues, wrongValues, type WrongValue } from '@stoq/compliance-tests'
import {
  createEndpoint,
  fingerprintPem,
  normaliseFingerprint,
  resolveConnectOptions,
  resolveEndpointOptions,
  resolveTransport,
  selectEngine,
  splitPemChain,
  StoqError,
  type Endpoint,
  type QuicConnection,
  type QuicStream,
} from '../src/index.js'

/**
 * API misuse: every public entry point given wrong types, out-of-range numbers or
 * closed objects answers with a typed StoqError (thrown or rejected) within a bounded
 * time: never another error, a crash or a hang. Runs once per engine.
 */

const LIMIT_MS = 5000

/** Wrong values of every kind, from the kit's table (no `undefined`: for options that means "the default"). */
const WRONG: WrongValue[] = wrongValues(
  'null',
  'NaN',
  'Infinity',
  '-1',
  '1.5',
  '2^64',
  'a string',
  'an object',
  'an array',
  'a Symbol',
  'a function',
  'a BigInt',
)
/**
 * For optional options, `null` means "not given" (the default), as `undefined` does:
 * the option tables use these lists without it.
 */
const OPT = withoutWrongValues(WRONG, 'null')
const NOT_BOOLEAN = OPT
const NOT_STRING = OPT.filter(([, v]) => typeof v !== 'string')
const BAD_CODE: WrongValue[] = [
  ...WRONG.filter(([, v]) => typeof v !== 'number'),
  ...wrongValues('-1', 'NaN', '1.5', 'Infinity'),
  // Kept local: the kit has no 2^62 as a number (one past the largest QUIC varint, 2^62 - 1).
  ['2^62', 2 ** 62],
]

type Outcome = MisuseOutcome

/** Run `fn` (sync or async); a hang fails after LIMIT_MS. */
const outcome = (fn: () => unknown): Promise<Outcome> => boundedOutcome(fn, LIMIT_MS)

/** Expect a StoqError with `code` (and `data.argument` when given). */
async function expectTyped(fn: () => unknown, code: string, argument?: string): Promise<StoqError> {
  const r = await outcome(fn)
  if (r.ok) throw new Error(`expected ${code}${argument ? ` (${argument})` : ''}, got a result: ${inspect(r.value, { depth: 0 })}`)
  if (!StoqError.isInstance(r.error)) throw new Error(`expected ${code}, got a non-STOQ error: ${inspect(r.error)}`)
  expect(r.error.code).toBe(code)
  if (argument !== undefined) expect((r.error.data as { argument?: string }).argument).toBe(argument)
  return r.error
}

/** Either a result or a StoqError, never another error (for calls whose answer may be a no-op). */
async function expectNoCrash(fn: () => unknown): Promise<void> {
  const r = await outcome(fn)
  if (!r.ok && !StoqError.isInstance(r.error)) throw new Error(`expected a result or a StoqError, got ${inspect(r.error)}`)
}

let pki: TestPki
let server: Endpoint
let client: Endpoint
let conn: QuicConnection

beforeAll(async () => {
  pki = await testPki()
  server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } })
  server.on('connection', (c) =>
    c.on('stream', (s) => {
      void (async () => {
        try {
          for await (const _ of s.readable ?? []) void _
        } catch {
          // reset by the tests
        }
      })()
    }),
  )
  client = await createEndpoint({ host: '127.0.0.1' })
  // Kept alive: later tests use it after the slow ones, which on a loaded machine outlast the idle timeout.
  conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost', keepAliveMs: 5000 })
})

afterAll(async () => {
  await client?.close()
  await server?.close()
})

describe('createEndpoint options', () => {
  const cases: Array<[string, (v: unknown) => unknown, Array<[string, unknown]>]> = [
    ['host', (v) => ({ host: v }), [...NOT_STRING, ['a host name', 'localhost'], ['an empty string', '']]],
    ['port', (v) => ({ port: v }), [...OPT, ['65536', 65536]]],
    ['ipv6Only', (v) => ({ ipv6Only: v }), NOT_BOOLEAN],
    ['server', (v) => ({ server: v }), OPT.filter(([n]) => n !== 'an object' && n !== 'a function')],
    ['server.cert', (v) => ({ server: { cert: v, key: pki.server.key } }), [...OPT.filter(([n]) => n !== 'a string'), ['non-PEM text', 'x']]],
    ['server.key', (v) => ({ server: { cert: pki.server.cert, key: v } }), [...OPT.filter(([n]) => n !== 'a string'), ['non-PEM text', 'x']]],
    [
      'alpn',
      (v) => ({ server: { cert: pki.server.cert, key: pki.server.key, alpn: v } }),
      [...OPT, ['an empty array', []], ['an empty name', ['']], ['a 256-byte name', ['a'.repeat(256)]]],
    ],
    ['server.retry', (v) => ({ server: { cert: pki.server.cert, key: pki.server.key, retry: v } }), NOT_BOOLEAN],
    ['server.maxConnections', (v) => ({ server: { cert: pki.server.cert, key: pki.server.key, maxConnections: v } }), [...OPT, ['0', 0]]],
    ['server.statelessReset', (v) => ({ server: { cert: pki.server.cert, key: pki.server.key, statelessReset: v } }), NOT_BOOLEAN],
    ['server.secret', (v) => ({ server: { cert: pki.server.cert, key: pki.server.key, secret: v } }), [...OPT, ['16 bytes', new Uint8Array(16)]]],
    ['transport', (v) => ({ transport: v }), OPT.filter(([n]) => n !== 'an object' && n !== 'a function')],
    ['transport.maxIdleTimeoutMs', (v) => ({ transport: { maxIdleTimeoutMs: v } }), OPT],
    ['transport.initialMaxData', (v) => ({ transport: { initialMaxData: v } }), OPT],
    ['transport.initialMaxStreamData', (v) => ({ transport: { initialMaxStreamData: v } }), OPT],
    ['transport.maxStreamWindow', (v) => ({ transport: { maxStreamWindow: v } }), OPT],
    ['transport.maxConnectionWindow', (v) => ({ transport: { maxConnectionWindow: v } }), OPT],
    ['transport.initialMaxStreamsBidi', (v) => ({ transport: { initialMaxStreamsBidi: v } }), OPT],
    ['transport.initialMaxStreamsUni', (v) => ({ transport: { initialMaxStreamsUni: v } }), OPT],
    ['transport.maxUdpPayloadSize', (v) => ({ transport: { maxUdpPayloadSize: v } }), [...OPT, ['1199', 1199], ['65528', 65528]]],
    ['transport.datagramQueueLength', (v) => ({ transport: { datagramQueueLength: v } }), [...OPT, ['0', 0]]],
    ['transport.congestionControl', (v) => ({ transport: { congestionControl: v } }), [...OPT, ['bbr2', 'bbr2']]],
    ['transport.datagrams', (v) => ({ transport: { datagrams: v } }), NOT_BOOLEAN],
    ['transport.pacing', (v) => ({ transport: { pacing: v } }), NOT_BOOLEAN],
    ['transport.hystart', (v) => ({ transport: { hystart: v } }), NOT_BOOLEAN],
    ['socketBufferSize', (v) => ({ socketBufferSize: v }), [...OPT, ['0', 0], ['2^31', 2 ** 31]]],
    ['closeTimeoutMs', (v) => ({ closeTimeoutMs: v }), OPT],
    ['limits', (v) => ({ limits: v }), OPT.filter(([n]) => n !== 'an object' && n !== 'a function')],
    // An unknown key (a misspelt maxStreams) is refused, whatever its value.
    [
      'limits.maxStream',
      (v) => ({ limits: { maxStream: v } }),
      [
        ['10', 10],
        ['a string', '10'],
      ],
    ],
    ['limits.maxStreams', (v) => ({ limits: { maxStreams: v } }), [...OPT, ['0', 0]]],
    ['limits.maxReceiveWindowBytes', (v) => ({ limits: { maxReceiveWindowBytes: v } }), [...OPT, ['1 KiB', 1024]]],
    ['limits.handlerMsPerTurn', (v) => ({ limits: { handlerMsPerTurn: v } }), [...OPT, ['0', 0]]],
    ['limits.workerStallMs', (v) => ({ limits: { workerStallMs: v } }), [...OPT, ['10', 10]]],
    ['udpBackend', (v) => ({ udpBackend: v }), [...OPT, ['unknown', 'fast']]],
    ['cpuAffinity', (v) => ({ cpuAffinity: v }), [...OPT.filter(([n]) => n !== 'an array'), ['[-1]', [-1]], ['[4096]', [4096]], ['["0"]', ['0']]]],
    ['engine', (v) => ({ engine: v }), [...OPT, ['unknown', 'msquic']]],
    ['poolMaxBuffers', (v) => ({ poolMaxBuffers: v }), [...OPT, ['15', 15]]],
    ['zeroCopySend', (v) => ({ zeroCopySend: v }), NOT_BOOLEAN],
    ['numaNode', (v) => ({ numaNode: v }), [...OPT, ['1024', 1024]]],
  ]
  it.each(cases.map(([argument, make, values]) => ({ argument, make, values })))(
    '$argument: every wrong value gives STOQ_ERR_INVALID_ARG',
    async ({ argument, make, values }) => {
      for (const [label, v] of values) {
        const options = { host: '127.0.0.1', ...(make(v) as object) }
        try {
          await expectTyped(() => createEndpoint(options as never), 'STOQ_ERR_INVALID_ARG', argument)
        } catch (err) {
          throw new Error(`${argument} = ${label}: ${(err as Error).message}`)
        }
      }
    },
  )

  it('refuses options that are not an object, and the resolvers do the same', async () => {
    for (const [, v] of WRONG.filter(([n]) => n !== 'an object' && n !== 'a function')) {
      await expectTyped(() => createEndpoint(v as never), 'STOQ_ERR_INVALID_ARG', 'options')
      expect(() => resolveEndpointOptions(v)).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }))
      expect(() => resolveConnectOptions(v)).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }))
      expect(() => resolveTransport(v)).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }))
    }
  })

  it('refuses PEM of the wrong kind: a key where a certificate goes, a certificate where a key goes', async () => {
    // quiche's binding aborted the process on a certificate chain with no certificate in it.
    const key = pki.server.key
    const cert = pki.server.cert
    await expectTyped(() => createEndpoint({ host: '127.0.0.1', server: { cert: key, key } }), 'STOQ_ERR_INVALID_ARG', 'server.cert')
    await expectTyped(() => createEndpoint({ host: '127.0.0.1', server: { cert, key: cert } }), 'STOQ_ERR_INVALID_ARG', 'server.key')
    await expectTyped(() => client.connect({ host: '127.0.0.1', port: server.address.port, ca: key, serverName: 'localhost' }), 'STOQ_ERR_INVALID_ARG', 'ca')
    await expectTyped(() => client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, cert: key, key: cert }), 'STOQ_ERR_INVALID_ARG', 'cert')
    await expectTyped(
      () => client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'a b\nc' }),
      'STOQ_ERR_INVALID_ARG',
      'serverName',
    )
  })

  it('selectEngine refuses unknown names with a typed error', async () => {
    for (const [, v] of WRONG) await expectTyped(() => selectEngine(v as never), 'STOQ_ERR_INVALID_ARG')
  })

  it('refuses components of the wrong type with a typed error', async () => {
    // Bugs in endpoint.ts (not validated): see the report of the misuse sweep.
    const bad: Array<[string, unknown]> = [
      ['components', null],
      ['engine', { engine: 5 }],
      ['udp', { udp: 'x' }],
      ['batcher', { batcher: {} }],
      ['pool', { pool: 5 }],
      ['metrics', { metrics: 5 }],
      ['throughputSampleMs', { throughputSampleMs: -1 }],
      ['throughputSampleMs', { throughputSampleMs: Symbol('s') }],
    ]
    for (const [argument, components] of bad) {
      try {
        const err = await expectTyped(() => createEndpoint({ host: '127.0.0.1' }, components as never), 'STOQ_ERR_INVALID_ARG')
        expect((err.data as { argument: string }).argument).toContain(argument)
      } catch (err) {
        throw new Error(`components ${argument}: ${(err as Error).message}`)
      }
    }
  })
})

describe('unknown option keys', () => {
  // A misspelt key is refused with its path named and the closest accepted key suggested.
  const srv = (): Record<string, unknown> => ({ cert: pki.server.cert, key: pki.server.key })
  const connectBase = (): Record<string, unknown> => ({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
  const cases: Array<[string, string, string | null, () => unknown]> = [
    ['createEndpoint', 'udpBackned', 'udpBackend', () => createEndpoint({ host: '127.0.0.1', udpBackned: 'gro' } as never)],
    ['createEndpoint', 'wholly', null, () => createEndpoint({ host: '127.0.0.1', wholly: 1 } as never)],
    [
      'createEndpoint server',
      'server.maxConnection',
      'server.maxConnections',
      () => createEndpoint({ host: '127.0.0.1', server: { ...srv(), maxConnection: 5 } } as never),
    ],
    ['createEndpoint transport', 'transport.maxStreamz', null, () => createEndpoint({ host: '127.0.0.1', transport: { maxStreamz: 5 } } as never)],
    [
      'createEndpoint transport',
      'transport.initialMaxDta',
      'transport.initialMaxData',
      () => createEndpoint({ host: '127.0.0.1', transport: { initialMaxDta: 5 } } as never),
    ],
    ['createEndpoint limits', 'limits.maxStream', 'limits.maxStreams', () => createEndpoint({ host: '127.0.0.1', limits: { maxStream: 5 } } as never)],
    [
      'createEndpoint server.cert file',
      'server.cert.flie',
      'server.cert.file',
      () => createEndpoint({ host: '127.0.0.1', server: { ...srv(), cert: { flie: '/x' } } } as never),
    ],
    ['createEndpoint components', 'components.udpp', 'components.udp', () => createEndpoint({ host: '127.0.0.1' }, { udpp: () => null } as never)],
    ['resolveTransport', 'transport.pacin', 'transport.pacing', () => resolveTransport({ pacin: true })],
    ['connect', 'handshakeTimeout', 'handshakeTimeoutMs', () => client.connect({ ...connectBase(), handshakeTimeout: 5 } as never)],
    ['connect', 'singal', 'signal', () => client.connect({ ...connectBase(), singal: new AbortController().signal } as never)],
    ['openStream', 'unidirectinal', 'unidirectional', () => conn.openStream({ unidirectinal: true } as never)],
    ['createStream', 'timeout', 'timeoutMs', () => conn.createStream({ timeout: 5 } as never)],
    ['accept', 'timeoutMS', 'timeoutMs', () => conn.accept({ timeoutMS: 5 } as never)],
    ['send', 'confirmed', 'confirm', () => conn.send('x', { confirmed: true } as never)],
    ['close', 'timeout', 'timeoutMs', () => conn.close(0, '', { timeout: 5 } as never)],
  ]
  it.each(cases.map(([api, argument, near, call]) => ({ api, argument, near, call })))('$api refuses $argument', async ({ argument, near, call }) => {
    const err = await expectTyped(call, 'STOQ_ERR_INVALID_ARG', argument)
    expect(err.message).toContain(`Invalid ${argument}: unknown option`)
    if (near === null) expect(err.message).not.toContain('did you mean')
    else expect(err.message).toContain(`did you mean \`${near}\`?`)
    expect(err.message).toContain('accepted: ')
    expect(conn.isClosed).toBe(false)
  })
})

describe('pem helpers', () => {
  it('fingerprintPem, splitPemChain and normaliseFingerprint refuse wrong input with typed errors or null', async () => {
    for (const [, v] of WRONG) {
      await expectNoCrash(() => fingerprintPem(v as never))
      await expectNoCrash(() => splitPemChain(v as never))
      await expectNoCrash(() => normaliseFingerprint(v as never))
    }
    expect(normaliseFingerprint('zz')).toBeNull()
  })
})

describe('connect options', () => {
  const base = (): Record<string, unknown> => ({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
  const cases: Array<[string, string, Array<[string, unknown]>]> = [
    ['host', 'host', [...NOT_STRING, ['an empty string', ''], ['254 characters', 'a'.repeat(254)]]],
    ['port', 'port', [...OPT, ['0', 0], ['65536', 65536]]],
    ['serverName', 'serverName', [...NOT_STRING, ['an empty string', '']]],
    ['alpn', 'alpn', [...OPT, ['an empty array', []], ['a number in the list', [1]]]],
    ['ca', 'ca', [...OPT.filter(([n]) => n !== 'a string'), ['non-PEM text', 'x'], ['a missing file', { file: '/nonexistent/ca.pem' }]]],
    ['pin', 'pin', [...OPT.filter(([n]) => n !== 'an array'), ['an empty list', []], ['short hex', 'abcd'], ['a key as pin', 'x']]],
    ['insecure', 'insecure', NOT_BOOLEAN],
    ['handshakeTimeoutMs', 'handshakeTimeoutMs', [...OPT, ['0', 0], ['600001', 600_001]]],
    ['keepAliveMs', 'keepAliveMs', OPT],
  ]
  it.each(cases.map(([option, argument, values]) => ({ option, argument, values })))(
    '$option: every wrong value gives STOQ_ERR_INVALID_ARG',
    async ({ option, argument, values }) => {
      for (const [label, v] of values) {
        try {
          await expectTyped(() => client.connect({ ...base(), [option]: v } as never), 'STOQ_ERR_INVALID_ARG', argument)
        } catch (err) {
          throw new Error(`${option} = ${label}: ${(err as Error).message}`)
        }
      }
    },
  )

  it('refuses cert without key, key without cert, and non-PEM client identities', async () => {
    await expectTyped(() => client.connect({ ...base(), cert: pki.server.cert } as never), 'STOQ_ERR_INVALID_ARG', 'cert')
    await expectTyped(() => client.connect({ ...base(), key: pki.server.key } as never), 'STOQ_ERR_INVALID_ARG', 'cert')
    await expectTyped(() => client.connect({ ...base(), cert: pki.server.cert, key: 42 } as never), 'STOQ_ERR_INVALID_ARG', 'key')
  })

  it('refuses connect options that are not an object', async () => {
    for (const [, v] of [...WRONG.filter(([n]) => n !== 'an object' && n !== 'a function'), ['undefined', undefined] as [string, unknown]]) {
      await expectTyped(() => client.connect(v as never), 'STOQ_ERR_INVALID_ARG', 'options')
    }
  })

  it('an unresolvable host name is a typed error', async () => {
    await expectTyped(() => client.connect({ ...base(), host: 'no-such-host.invalid' } as never), 'STOQ_ERR_INVALID_ARG', 'host')
  })
})

describe('connection methods', () => {
  it('openStream refuses options that are not an object', async () => {
    for (const [, v] of WRONG.filter(([n]) => n !== 'an object' && n !== 'an array' && n !== 'a function')) {
      await expectTyped(() => conn.openStream(v as never), 'STOQ_ERR_INVALID_ARG', 'options')
    }
  })

  it('send refuses wrong data and wrong options', async () => {
    for (const [, v] of WRONG.filter(([n]) => n !== 'a string' && n !== 'an array')) {
      await expectTyped(() => conn.send(v as never), 'STOQ_ERR_INVALID_ARG', 'data')
    }
    await expectTyped(() => conn.send([1, 2] as never), 'STOQ_ERR_INVALID_ARG', 'data')
    for (const [, v] of WRONG.filter(([n]) => n !== 'an object' && n !== 'an array' && n !== 'a function')) {
      await expectTyped(() => conn.send('x', v as never), 'STOQ_ERR_INVALID_ARG', 'options')
    }
    for (const [, v] of [...OPT.filter(([n]) => n !== '2^64'), ['0', 0] as [string, unknown]]) {
      await expectTyped(() => conn.send('x', { timeoutMs: v as number }), 'STOQ_ERR_INVALID_ARG', 'timeoutMs')
    }
  })

  it('sendDatagram refuses anything but bytes and strings', async () => {
    for (const [, v] of WRONG.filter(([n]) => n !== 'a string')) {
      await expectTyped(() => conn.sendDatagram(v as never), 'STOQ_ERR_INVALID_ARG', 'data')
    }
  })

  it('close refuses a bad code or reason (and the connection stays usable)', async () => {
    for (const [, v] of BAD_CODE) await expectTyped(() => conn.close(v as never), 'STOQ_ERR_INVALID_ARG', 'code')
    for (const [, v] of [...NOT_STRING, ['2000 bytes', 'x'.repeat(2000)] as [string, unknown]]) {
      await expectTyped(() => conn.close(0, v as never), 'STOQ_ERR_INVALID_ARG', 'reason')
    }
    expect(conn.isClosed).toBe(false)
    const s = conn.openStream()
    s.reset(0)
  })

  it('sampleThroughput refuses a time that is not a finite number', async () => {
    // Bug in connection.ts / endpoint.ts (not validated): see the report of the misuse sweep.
    for (const [, v] of WRONG.filter(([, v]) => typeof v !== 'number' || !Number.isFinite(v))) {
      await expectTyped(() => conn.sampleThroughput(v as never), 'STOQ_ERR_INVALID_ARG')
      await expectTyped(() => client.sampleThroughput(v as never), 'STOQ_ERR_INVALID_ARG')
    }
  })
})

describe('stream methods', () => {
  it('setPriority refuses a bad urgency or incremental flag', async () => {
    const s = conn.openStream()
    for (const [, v] of [...WRONG, ['8', 8] as [string, unknown]]) await expectTyped(() => s.setPriority(v as never), 'STOQ_ERR_INVALID_ARG', 'urgency')
    // incremental: not validated in stream.ts (the quinn engine ignores it, quiche mislabels it): see the report.
    for (const [, v] of NOT_BOOLEAN) await expectTyped(() => s.setPriority(3, v as never), 'STOQ_ERR_INVALID_ARG', 'incremental')
    s.reset(0)
  })

  it('writes refuse chunks that are not bytes or strings', async () => {
    for (const [, v] of WRONG.filter(([n]) => n !== 'a string')) {
      const s = conn.openStream()
      const w = s.writable!.getWriter()
      await expectTyped(() => w.write(v as never), 'STOQ_ERR_INVALID_ARG', 'chunk')
      s.reset(0)
    }
  })

  /**
   * reset/stopSending with a code that is not a QUIC varint. With quiche such a code
   * aborted the whole process when the frame was built (octets panics): when the call
   * does not throw, the endpoint is destroyed at once, before it builds a packet.
   */
  it.each([
    ['reset', (s: QuicStream, v: unknown) => s.reset(v as never)],
    ['stopSending', (s: QuicStream, v: unknown) => s.stopSending(v as never)],
  ] as const)('%s refuses a code that is not an integer from 0 to 2^62-1', async (_name, call) => {
    for (const [label, v] of BAD_CODE) {
      const ep = await createEndpoint({ host: '127.0.0.1' })
      try {
        const c = await ep.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
        const s = c.openStream()
        await s.writable!.getWriter().write(new Uint8Array(10))
        let error: unknown = null
        try {
          call(s, v)
        } catch (err) {
          error = err
        }
        if (error === null) void ep.destroy() // before the next cycle builds a frame with that code
        expect(StoqError.isInstance(error) && error.code, `code ${label}`).toBe('STOQ_ERR_INVALID_ARG')
      } finally {
        await ep.destroy()
      }
    }
  })
})

describe('closed objects', () => {
  it('a closed connection: typed errors for new work, its streams fail typed, close() and stats() still answer', async () => {
    const ep = await createEndpoint({ host: '127.0.0.1' })
    try {
      const c = await ep.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      const s = c.openStream()
      const w = s.writable!.getWriter()
      await w.write(new Uint8Array(10))
      await c.close(0, 'bye')
      await expectTyped(() => c.openStream(), 'STOQ_ERR_CLOSED')
      await expectTyped(() => c.openStream({ unidirectional: true }), 'STOQ_ERR_CLOSED')
      await expectTyped(() => c.send('x'), 'STOQ_ERR_CLOSED')
      await expectTyped(() => c.sendDatagram('x'), 'STOQ_ERR_CLOSED')
      await expectTyped(() => w.write(new Uint8Array(1)), 'STOQ_ERR_CONNECTION_CLOSED')
      await expectTyped(() => s.readable!.getReader().read(), 'STOQ_ERR_CONNECTION_CLOSED')
      await expectNoCrash(() => s.setPriority(1))
      await expectNoCrash(() => s.reset(1))
      await expectNoCrash(() => s.stopSending(1))
      const info = (await outcome(() => c.close())) as Outcome
      expect(info.ok).toBe(true)
      await expectTyped(() => c.close(-1), 'STOQ_ERR_INVALID_ARG', 'code')
      expect(typeof c.stats().bytesSent).toBe('number')
      expect(c.maxDatagramSize).toBe(-1)
      expect(c.isClosed).toBe(true)
    } finally {
      await ep.close()
    }
  })

  it('a stream reset locally: later writes fail with a StoqError, not the raw code', async () => {
    // Bug in stream.ts: reset() aborts the WritableStream with the number itself; see the report.
    const s = conn.openStream()
    const w = s.writable!.getWriter()
    await w.write(new Uint8Array(10))
    s.reset(5)
    await expectTyped(() => w.write(new Uint8Array(1)), 'STOQ_ERR_STREAM_STATE')
  })

  it('a stream whose reading was stopped: reads fail with a StoqError', async () => {
    const s = conn.openStream()
    const r = s.readable!.getReader()
    s.stopSending(3)
    await expectTyped(() => r.read(), 'STOQ_ERR_STREAM_STATE')
    s.reset(0)
  })

  it('a closed endpoint: connect is refused, close/destroy are idempotent, nothing crashes', async () => {
    const ep = await createEndpoint({ host: '127.0.0.1' })
    await ep.close()
    await expectTyped(() => ep.connect({ host: '127.0.0.1', port: server.address.port, insecure: true }), 'STOQ_ERR_CLOSED')
    await expectTyped(() => ep.connect(null as never), 'STOQ_ERR_CLOSED')
    expect((await outcome(() => ep.close())).ok).toBe(true)
    expect((await outcome(() => ep.destroy())).ok).toBe(true)
    await expectNoCrash(() => ep.stats())
    await expectNoCrash(() => ep.sampleThroughput())
    expect(ep.listening).toBe(false)
    expect(ep.connections).toEqual([])
  })

  it('a destroyed endpoint refuses connect with a typed error', async () => {
    const ep = await createEndpoint({ host: '127.0.0.1' })
    await ep.destroy()
    await expectTyped(() => ep.connect({ host: '127.0.0.1', port: server.address.port, insecure: true }), 'STOQ_ERR_CLOSED')
  })

  it('endpoint.close refuses a bad code or reason before closing anything', async () => {
    // Bug in endpoint.ts (not validated; with quiche a bad code aborted the process while
    // connections were open): see the report. No connection here, so nothing can abort.
    const ep = await createEndpoint({ host: '127.0.0.1' })
    try {
      for (const [label, v] of BAD_CODE) {
        const r = await outcome(() => ep.close(v as never))
        expect(!r.ok && StoqError.isInstance(r.error) && r.error.code, `close(${label})`).toBe('STOQ_ERR_INVALID_ARG')
        if (r.ok) return
      }
      for (const [, v] of NOT_STRING) {
        await expectTyped(() => ep.close(0, v as never), 'STOQ_ERR_INVALID_ARG', 'reason')
      }
    } finally {
      await ep.destroy()
    }
  })
})
