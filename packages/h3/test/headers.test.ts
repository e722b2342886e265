import { describe, expect, it } from 'vitest'
import {
  H3_MESSAGE_ERROR,
  decodeFieldSection,
  encodeFieldSection,
  isWebTransportConnect,
  validateRequestHeaders,
  validateResponseHeaders,
  validateWebTransportConnect,
  webTransportResponseFields,
  type FieldLine,
} from '../src/index.js'
import { expectH3Error } from './helpers.js'

const WT_CONNECT: FieldLine[] = [
  [':method', 'CONNECT'],
  [':scheme', 'https'],
  [':authority', '127.0.0.1:4433'],
  [':path', '/echo'],
  [':protocol', 'webtransport'],
  ['sec-webtransport-http3-draft02', '1'],
  ['origin', 'https://app.example'],
]

function without(fields: FieldLine[], name: string): FieldLine[] {
  return fields.filter(([n]) => n !== name)
}

function replace(fields: FieldLine[], name: string, value: string): FieldLine[] {
  return fields.map(([n, v]) => [n, n === name ? value : v])
}

describe('validateWebTransportConnect (RFC 9220 + draft-02)', () => {
  it('accepts what Chromium sends, after a QPACK round trip', () => {
    const decoded = decodeFieldSection(encodeFieldSection(WT_CONNECT, { huffman: true }))
    const req = validateWebTransportConnect(decoded)
    expect(req).toEqual({
      method: 'CONNECT',
      scheme: 'https',
      authority: '127.0.0.1:4433',
      path: '/echo',
      protocol: 'webtransport',
      origin: 'https://app.example',
      draft02: true,
      fields: [
        ['sec-webtransport-http3-draft02', '1'],
        ['origin', 'https://app.example'],
      ],
    })
    expect(isWebTransportConnect(req)).toBe(true)
    expect(validateWebTransportConnect(without(WT_CONNECT, 'sec-webtransport-http3-draft02')).draft02).toBe(false)
  })

  it('refuses requests that are not a WebTransport extended CONNECT', () => {
    expectH3Error(() => validateWebTransportConnect(replace(WT_CONNECT, ':protocol', 'websocket')), H3_MESSAGE_ERROR)
    expectH3Error(() => validateWebTransportConnect(replace(WT_CONNECT, ':scheme', 'http')), H3_MESSAGE_ERROR)
    expectH3Error(() => validateWebTransportConnect(replace(WT_CONNECT, ':method', 'GET')), H3_MESSAGE_ERROR)
    expectH3Error(() => validateWebTransportConnect(without(WT_CONNECT, ':protocol')), H3_MESSAGE_ERROR)
    for (const name of [':scheme', ':path', ':authority', ':method']) {
      expectH3Error(() => validateWebTransportConnect(without(WT_CONNECT, name)), H3_MESSAGE_ERROR)
    }
  })
})

describe('validateRequestHeaders (RFC 9114 §4.2, §4.3)', () => {
  it('accepts a GET and returns its control data', () => {
    const head = validateRequestHeaders([
      [':method', 'GET'],
      [':scheme', 'https'],
      [':authority', 'example.com'],
      [':path', '/'],
      ['accept', '*/*'],
      ['te', 'trailers'],
    ])
    expect(head).toEqual({
      method: 'GET',
      scheme: 'https',
      authority: 'example.com',
      path: '/',
      protocol: undefined,
      fields: [
        ['accept', '*/*'],
        ['te', 'trailers'],
      ],
    })
    expect(isWebTransportConnect(head)).toBe(false)
    // host instead of :authority
    expect(
      validateRequestHeaders([
        [':method', 'GET'],
        [':scheme', 'https'],
        [':path', '/'],
        ['host', 'h'],
      ]).authority,
    ).toBeUndefined()
  })

  it('accepts a classic CONNECT with :authority only', () => {
    expect(
      validateRequestHeaders([
        [':method', 'CONNECT'],
        [':authority', 'proxy:443'],
      ]).method,
    ).toBe('CONNECT')
    expectH3Error(
      () =>
        validateRequestHeaders([
          [':method', 'CONNECT'],
          [':authority', 'a'],
          [':path', '/'],
        ]),
      H3_MESSAGE_ERROR,
    )
    expectH3Error(
      () =>
        validateRequestHeaders([
          [':method', 'CONNECT'],
          [':authority', 'a'],
          [':scheme', 'https'],
        ]),
      H3_MESSAGE_ERROR,
    )
    expectH3Error(() => validateRequestHeaders([[':method', 'CONNECT']]), H3_MESSAGE_ERROR)
  })

  it('refuses :protocol when extended CONNECT is off or the method is not CONNECT', () => {
    expectH3Error(() => validateRequestHeaders(WT_CONNECT, { allowExtendedConnect: false }), H3_MESSAGE_ERROR)
    expectH3Error(() => validateRequestHeaders(replace(WT_CONNECT, ':method', 'POST')), H3_MESSAGE_ERROR)
    expectH3Error(() => validateRequestHeaders(replace(WT_CONNECT, ':protocol', '')), H3_MESSAGE_ERROR)
  })

  it('refuses pseudo-headers after regular fields, duplicates, unknown and response ones', () => {
    const moved: FieldLine[] = [...without(WT_CONNECT, ':path'), [':path', '/echo']]
    expectH3Error(() => validateRequestHeaders(moved), H3_MESSAGE_ERROR)
    expectH3Error(() => validateRequestHeaders([...WT_CONNECT.slice(0, 2), [':method', 'CONNECT'], ...WT_CONNECT.slice(2)]), H3_MESSAGE_ERROR)
    expectH3Error(() => validateRequestHeaders([[':status', '200'], ...WT_CONNECT]), H3_MESSAGE_ERROR)
    expectH3Error(() => validateRequestHeaders([[':foo', 'x'], ...WT_CONNECT]), H3_MESSAGE_ERROR)
  })

  it('refuses uppercase or invalid names, connection-specific fields and bad values', () => {
    for (const field of [
      ['Origin', 'x'],
      ['x y', 'x'],
      ['', 'x'],
      ['x\u00e9', 'x'],
      ['connection', 'close'],
      ['keep-alive', '1'],
      ['transfer-encoding', 'chunked'],
      ['upgrade', 'websocket'],
      ['proxy-connection', 'x'],
      ['te', 'gzip'],
      ['x', 'a\r\nb'],
      ['x', 'a\u0000'],
    ] as FieldLine[]) {
      expectH3Error(() => validateRequestHeaders([...WT_CONNECT, field]), H3_MESSAGE_ERROR)
    }
    expectH3Error(() => validateRequestHeaders(replace(WT_CONNECT, ':path', '/a\nb')), H3_MESSAGE_ERROR)
    expectH3Error(() => validateRequestHeaders(replace(WT_CONNECT, ':authority', 'user@host')), H3_MESSAGE_ERROR)
  })

  it('refuses requests missing required pseudo-headers', () => {
    expectH3Error(
      () =>
        validateRequestHeaders([
          [':scheme', 'https'],
          [':path', '/'],
        ]),
      H3_MESSAGE_ERROR,
    )
    expectH3Error(
      () =>
        validateRequestHeaders([
          [':method', 'GET'],
          [':path', '/'],
          [':authority', 'a'],
        ]),
      H3_MESSAGE_ERROR,
    )
    expectH3Error(
      () =>
        validateRequestHeaders([
          [':method', 'GET'],
          [':scheme', 'https'],
          [':authority', 'a'],
        ]),
      H3_MESSAGE_ERROR,
    )
    expectH3Error(
      () =>
        validateRequestHeaders([
          [':method', 'GET'],
          [':scheme', 'https'],
          [':authority', 'a'],
          [':path', ''],
        ]),
      H3_MESSAGE_ERROR,
    )
    expectH3Error(
      () =>
        validateRequestHeaders([
          [':method', 'GET'],
          [':scheme', 'https'],
          [':path', '/'],
        ]),
      H3_MESSAGE_ERROR,
    )
  })
})

describe('responses', () => {
  it('builds and validates the draft-02 WebTransport response', () => {
    const fields = webTransportResponseFields(200, [['server', 'stoq']])
    expect(fields).toEqual([
      [':status', '200'],
      ['sec-webtransport-http3-draft', 'draft02'],
      ['server', 'stoq'],
    ])
    expect(validateResponseHeaders(decodeFieldSection(encodeFieldSection(fields)))).toEqual({
      status: 200,
      fields: fields.slice(1),
    })
  })

  it('refuses malformed responses', () => {
    expectH3Error(() => validateResponseHeaders([['server', 'x']]), H3_MESSAGE_ERROR)
    expectH3Error(() => validateResponseHeaders([[':status', '20']]), H3_MESSAGE_ERROR)
    expectH3Error(() => validateResponseHeaders([[':status', '099']]), H3_MESSAGE_ERROR)
    expectH3Error(
      () =>
        validateResponseHeaders([
          [':status', '200'],
          [':status', '200'],
        ]),
      H3_MESSAGE_ERROR,
    )
    expectH3Error(
      () =>
        validateResponseHeaders([
          [':status', '200'],
          [':path', '/'],
        ]),
      H3_MESSAGE_ERROR,
    )
    expectH3Error(
      () =>
        validateResponseHeaders([
          ['server', 'x'],
          [':status', '200'],
        ]),
      H3_MESSAGE_ERROR,
    )
  })
})
