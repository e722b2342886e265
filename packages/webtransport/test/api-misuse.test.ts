import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { boundedOutcome, type MisuseOutcome, wrongValues, withoutWrongValues, type WrongValue, type WrongValueName } from '@stoq/compliance-tests'
import { inspect } from 'node:util'
import { StoqError } from '@stoq/interface'
import * as api from '../src/index.js'
import {
  WebTransportClient,
  WebTransportConnection,
  WebTransportSession,
  WebTransportStream,
  connectWebTransport,
  createWebTransportCertificate,
  serveWebTransport,
  type WebTransportCertificate,
  type WebTransportServer,
} from '../src/index.js'
import { startEchoServer, urlFor } from './helpers.js'

/**
 * API misuse (issue #6): every public entry point given wrong types, out-of-range
 * numbers or closed objects answers with a typed StoqError (thrown or rejected)
 * within a bounded time: never a TypeError, a crash or a hang. Option checks run
 * before anything is bound or sent.
 */

const LIMIT_MS = 5000

const WRONG = wrongValues(
  'null',
  'NaN',
  'Infinity',
  '-1',
  '1.5',
  '2^64',
  'a string',
  'an object',
  'a null-prototype object',
  'an array',
  'a Symbol',
  'a function',
  'a BigInt',
  'bytes',
  'true',
)
const except = (...names: WrongValueName[]): WrongValue[] => withoutWrongValues(WRONG, ...names)
/** For an option, `undefined` means "the default". */
const NOT_OBJECT = except('an object', 'a null-prototype object')

type Outcome = MisuseOutcome

const outcome = (fn: () => unknown): Promise<Outcome> => boundedOutcome(fn, LIMIT_MS)

/** Problems of the current test, reported together. */
async function table(cases: Array<[string, () => unknown, string?, string?]>): Promise<void> {
  const problems: string[] = []
  for (const [label, fn, code = 'STOQ_ERR_INVALID_ARG', argument] of cases) {
    const r = await outcome(fn)
    if (r.ok) {
      problems.push(`${label}: expected ${code}, got a result: ${inspect(r.value, { depth: 0 })}`)
      // Do not leak what was created by mistake.
      const v = r.value as { close?: () => Promise<unknown> } | null
      if (typeof v?.close === 'function') await v.close().catch(() => {})
    } else if (!StoqError.isInstance(r.error)) problems.push(`${label}: expected ${code}, threw a non-STOQ error: ${inspect(r.error).split('\n')[0]}`)
    else if (r.error.code !== code) problems.push(`${label}: expected ${code}, got ${r.error.code}: ${r.error.message}`)
    else if (argument !== undefined && (r.error.data as { argument?: string }).argument !== argument) {
      problems.push(`${label}: expected argument ${argument}, got ${(r.error.data as { argument?: string }).argument}`)
    }
  }
  if (problems.length > 0) throw new Error(`${problems.length} misuse case(s) failed:\n${problems.join('\n')}`)
}

let cert: WebTransportCertificate

beforeAll(async () => {
  cert = await createWebTransportCertificate()
})

describe('webtransport: API misuse', () => {
  it('covers every export of src/index.ts', () => {
    const functions = [
      'StoqWebTransportError',
      'WebTransportClient',
      'WebTransportConnection',
      'WebTransportServer',
      'WebTransportSession',
      'WebTransportStream',
      'connectWebTransport',
      'createWebTransportCertificate',
      'serveWebTransport',
    ]
    const constants = ['DEFAULT_DRAIN_TIMEOUT_MS', 'DEFAULT_WEBTRANSPORT_LIMITS', 'H3_ALPN', 'MAX_WEBTRANSPORT_CERT_DAYS']
    expect(Object.keys(api).sort()).toEqual([...functions, ...constants].sort())
  })

  it('createWebTransportCertificate refuses wrong options', async () => {
    const cases: Array<[string, () => unknown, string?, string?]> = []
    for (const [label, v] of NOT_OBJECT) cases.push([`options = ${label}`, () => createWebTransportCertificate(v as never), undefined, 'options'])
    for (const [label, v] of [...except('null'), ['0', 0], ['15', 15]] as Array<[string, unknown]>) {
      cases.push([`days = ${label}`, () => createWebTransportCertificate({ days: v as never }), undefined, 'days'])
    }
    for (const [label, v] of [...except('null', 'an array'), ['[5]', [5]], ['[""]', ['']], ['["a b"]', ['a b']]] as Array<[string, unknown]>) {
      cases.push([`names = ${label}`, () => createWebTransportCertificate({ names: v as never }), undefined, 'names'])
    }
    for (const [label, v] of [...except('null', 'an array'), ['["not an ip"]', ['not an ip']], ['["1.2.3"]', ['1.2.3']]] as Array<[string, unknown]>) {
      cases.push([`ips = ${label}`, () => createWebTransportCertificate({ ips: v as never }), undefined, 'ips'])
    }
    for (const [label, v] of [...except('null', 'a string'), ['""', ''], ['"a/b"', 'a/b']] as Array<[string, unknown]>) {
      cases.push([`commonName = ${label}`, () => createWebTransportCertificate({ commonName: v as never }), undefined, 'commonName'])
    }
    await table(cases)
  })

  it('serveWebTransport refuses wrong endpoints and options before binding', async () => {
    const good = { host: '127.0.0.1', server: { cert: cert.cert, key: cert.key } }
    const cases: Array<[string, () => unknown, string?, string?]> = []
    for (const [label, v] of NOT_OBJECT) cases.push([`endpoint = ${label}`, () => serveWebTransport(v as never)])
    cases.push(['endpoint options without server', () => serveWebTransport({ host: '127.0.0.1' })])
    for (const [label, v] of NOT_OBJECT) cases.push([`options = ${label}`, () => serveWebTransport(good, v as never), undefined, 'options'])
    for (const [label, v] of [...except('null'), ['"no-slash"', 'no-slash']] as Array<[string, unknown]>) {
      cases.push([`path = ${label}`, () => serveWebTransport(good, { path: v as never }), undefined, 'path'])
    }
    for (const [label, v] of except('null', 'a function')) {
      cases.push([`accept = ${label}`, () => serveWebTransport(good, { accept: v as never }), undefined, 'accept'])
      cases.push([`onSession = ${label}`, () => serveWebTransport(good, { onSession: v as never }), undefined, 'onSession'])
    }
    for (const [label, v] of NOT_OBJECT) cases.push([`limits = ${label}`, () => serveWebTransport(good, { limits: v as never }), undefined, 'limits'])
    for (const [label, v] of except('null')) {
      cases.push([`limits.maxSessions = ${label}`, () => serveWebTransport(good, { limits: { maxSessions: v as never } }), undefined, 'maxSessions'])
    }
    // Endpoint options are checked by createEndpoint (typed errors of @stoq/transport-core).
    cases.push(['a bad port', () => serveWebTransport({ ...good, port: -1 })])
    cases.push(['a bad key', () => serveWebTransport({ ...good, server: { cert: cert.cert, key: 'nope' } })])
    await table(cases)
  })

  it('connectWebTransport refuses wrong URLs and options before connecting', async () => {
    const url = 'https://127.0.0.1:9/echo'
    const cases: Array<[string, () => unknown, string?, string?]> = []
    for (const [label, v] of [...WRONG, ['http://', 'http://127.0.0.1:9/'], ['credentials', 'https://u:p@127.0.0.1:9/'], ['not a URL', 'https://']] as Array<
      [string, unknown]
    >) {
      cases.push([`url = ${label}`, () => connectWebTransport(v as never), undefined, 'url'])
      cases.push([`WebTransportClient.connect(${label})`, () => WebTransportClient.connect(v as never), undefined, 'url'])
    }
    for (const [label, v] of NOT_OBJECT) cases.push([`options = ${label}`, () => connectWebTransport(url, v as never), undefined, 'options'])
    for (const [label, v] of [...except('null', 'an array'), ['[]', []]] as Array<[string, unknown]>) {
      cases.push([
        `serverCertificateHashes = ${label}`,
        () => connectWebTransport(url, { serverCertificateHashes: v as never }),
        undefined,
        'serverCertificateHashes',
      ])
    }
    for (const [label, v] of WRONG) {
      cases.push([`serverCertificateHashes[0] = ${label}`, () => connectWebTransport(url, { serverCertificateHashes: [v as never] })])
      cases.push([
        `serverCertificateHashes[0].value = ${label}`,
        () => connectWebTransport(url, { serverCertificateHashes: [{ algorithm: 'sha-256', value: v as never }] }),
      ])
      cases.push([
        `serverCertificateHashes[0].algorithm = ${label}`,
        () => connectWebTransport(url, { serverCertificateHashes: [{ algorithm: v as never, value: cert.sha256 }] }),
      ])
    }
    for (const [label, v] of except('null', 'a string'))
      cases.push([`origin = ${label}`, () => connectWebTransport(url, { origin: v as never }), undefined, 'origin'])
    for (const [label, v] of [...except('null', 'an array'), ['[[1, 2]]', [[1, 2]]], ['["a"]', ['a']]] as Array<[string, unknown]>) {
      cases.push([`headers = ${label}`, () => connectWebTransport(url, { headers: v as never }), undefined, 'headers'])
    }
    for (const [label, v] of except('null'))
      cases.push([`timeoutMs = ${label}`, () => connectWebTransport(url, { timeoutMs: v as never }), undefined, 'timeoutMs'])
    for (const [label, v] of NOT_OBJECT) cases.push([`limits = ${label}`, () => connectWebTransport(url, { limits: v as never }), undefined, 'limits'])
    for (const [label, v] of except('null', 'a string', 'an array'))
      cases.push([`pin = ${label}`, () => connectWebTransport(url, { pin: v as never }), undefined, 'pin'])
    for (const [label, v] of except('null'))
      cases.push([`endpoint = ${label}`, () => connectWebTransport(url, { endpoint: v as never }), undefined, 'endpoint'])
    // Passed on to transport-core, which refuses them with its own typed errors.
    cases.push(['insecure = "yes"', () => connectWebTransport(url, { insecure: 'yes' as never })])
    cases.push(['handshakeTimeoutMs = -1', () => connectWebTransport(url, { handshakeTimeoutMs: -1 })])
    cases.push(['engine = "nope"', () => connectWebTransport(url, { engine: 'nope' as never })])
    await table(cases)
  })

  it('the exported classes refuse to be built from wrong parts', async () => {
    const cases: Array<[string, () => unknown, string?, string?]> = []
    for (const [label, v] of WRONG) {
      cases.push([`new WebTransportConnection(${label})`, () => new WebTransportConnection(v as never, 'client', {} as never), undefined, 'quic'])
      cases.push([`new WebTransportSession(${label})`, () => new WebTransportSession(v as never, {} as never), undefined, 'host'])
      cases.push([
        `new WebTransportStream(${label})`,
        () => new WebTransportStream(v as never, null as never, null, new Uint8Array(0), null),
        undefined,
        'quicStream',
      ])
    }
    await table(cases)
  })

  describe('on live and closed objects', () => {
    let server: WebTransportServer

    beforeAll(async () => {
      server = await startEchoServer(cert, '127.0.0.1', 'quinn')
    })
    afterAll(async () => {
      await server?.close()
    })

    it('a session refuses wrong arguments while open, and answers typed errors once closed', async () => {
      const client = await WebTransportClient.connect(urlFor(server, '127.0.0.1'), { serverCertificateHashes: cert.serverCertificateHashes, engine: 'quinn' })
      const cases: Array<[string, () => unknown, string?, string?]> = []
      for (const [label, v] of [...except('a string'), ['"no-slash"', 'no-slash']] as Array<[string, unknown]>) {
        cases.push([`openSession(${label})`, () => client.openSession(v as never), undefined, 'path'])
      }
      for (const [label, v] of NOT_OBJECT) cases.push([`openSession("/echo", ${label})`, () => client.openSession('/echo', v as never), undefined, 'options'])
      for (const [label, v] of except('null'))
        cases.push([`openSession timeoutMs = ${label}`, () => client.openSession('/echo', { timeoutMs: v as never }), undefined, 'timeoutMs'])
      await table(cases)

      const session = await client.openSession('/echo')
      const open: Array<[string, () => unknown, string?, string?]> = []
      for (const [label, v] of NOT_OBJECT) open.push([`openStream(${label})`, () => session.openStream(v as never), undefined, 'options'])
      for (const [label, v] of except('null', 'true'))
        open.push([`openStream unidirectional = ${label}`, () => session.openStream({ unidirectional: v as never }), undefined, 'unidirectional'])
      for (const [label, v] of except('a string', 'bytes')) open.push([`sendDatagram(${label})`, () => session.sendDatagram(v as never), undefined, 'data'])
      for (const [label, v] of NOT_OBJECT) open.push([`close(${label})`, () => session.close(v as never), undefined, 'options'])
      for (const [label, v] of except('null')) {
        open.push([`close code = ${label}`, () => session.close({ code: v as never }), undefined, 'code'])
        open.push([`close timeoutMs = ${label}`, () => session.close({ timeoutMs: v as never }), undefined, 'timeoutMs'])
      }
      for (const [label, v] of except('null', 'a string'))
        open.push([`close reason = ${label}`, () => session.close({ reason: v as never }), undefined, 'reason'])
      open.push(['close reason > 1024 bytes', () => session.close({ reason: 'x'.repeat(1025) }), undefined, 'reason'])
      await table(open)

      const stream = session.openStream()
      const streamCases: Array<[string, () => unknown, string?, string?]> = []
      for (const [label, v] of except('null')) {
        streamCases.push([`stream.reset(${label})`, () => stream.reset(v as never)])
        streamCases.push([`stream.stopSending(${label})`, () => stream.stopSending(v as never)])
      }
      streamCases.push(['stream.reset(2^32)', () => stream.reset(2 ** 32)])
      await table(streamCases)

      await session.close()
      await table([
        ['openStream after close', () => session.openStream(), 'STOQ_ERR_CLOSED'],
        ['sendDatagram after close', () => session.sendDatagram(new Uint8Array(1)), 'STOQ_ERR_CLOSED'],
      ])
      // Closing again answers the same close info.
      expect((await outcome(() => session.close())).ok).toBe(true)

      await client.close()
      await client.close()
      await table([['openSession on a closed client', () => client.openSession('/echo'), 'STOQ_ERR_CLOSED']])
      await table([
        ['drain({ timeoutMs: -1 })', () => client.connection.drain({ timeoutMs: -1 }), undefined, 'timeoutMs'],
        ['drain(null)', () => client.connection.drain(null as never), undefined, 'options'],
      ])
    })

    it('a server whose accept() answers something other than a status refuses the session with 500', async () => {
      for (const answer of [Object.create(null), 'x', 1.5, 42, 1000, Symbol('s')]) {
        const own = await serveWebTransport({ host: '127.0.0.1', engine: 'quinn', server: { cert: cert.cert, key: cert.key } }, { accept: () => answer })
        try {
          const r = await outcome(() =>
            connectWebTransport(urlFor(own, '127.0.0.1'), { serverCertificateHashes: cert.serverCertificateHashes, engine: 'quinn' }),
          )
          expect(r.ok).toBe(false)
          const error = (r as { error: StoqError }).error
          expect(StoqError.isInstance(error)).toBe(true)
          expect(error.code).toBe('STOQ_ERR_CONNECTION_REFUSED')
          expect((error.data as { status?: number }).status).toBe(500)
        } finally {
          await own.close()
        }
      }
    })

    it('a server refuses wrong drain options and stays closed once closed', async () => {
      const own = await startEchoServer(cert, '127.0.0.1', 'quinn')
      const cases: Array<[string, () => unknown, string?, string?]> = []
      for (const [label, v] of NOT_OBJECT) cases.push([`drain(${label})`, () => own.drain(v as never), undefined, 'options'])
      for (const [label, v] of except('null')) cases.push([`drain timeoutMs = ${label}`, () => own.drain({ timeoutMs: v as never }), undefined, 'timeoutMs'])
      await table(cases)
      await own.close()
      await own.close()
      // A drain after close resolves at once (nothing left to drain), without a hang.
      expect((await outcome(() => own.drain({ timeoutMs: 1000 }))).ok).toBe(true)
      await table([
        [
          'connect to a closed server',
          () =>
            connectWebTransport(urlFor(own, '127.0.0.1'), { serverCertificateHashes: cert.serverCertificateHashes, engine: 'quinn', handshakeTimeoutMs: 1000 }),
          'STOQ_ERR_HANDSHAKE_TIMEOUT',
        ],
      ])
    })
  })
})
