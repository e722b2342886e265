import { wrongValues } from '@stoq/compliance-tests'
import { afterEach, describe, expect, it } from 'vitest'
import { inspect } from 'node:util'
import { StoqError } from '@stoq/interface'
import * as api from '../src/index.js'
import {
  CapsuleParser,
  FrameParser,
  StoqH3Error,
  StreamFrameValidator,
  decodeVarint,
  encodeCapsule,
  encodeCapsuleObject,
  encodeDataFrame,
  encodeFrame,
  encodeVarint,
} from '../src/index.js'

/**
 * API misuse (issue #6): every public entry point given wrong types, out-of-range
 * numbers or ended parsers answers with a typed StoqError (StoqInvalidArgumentError
 * for a wrong argument, StoqH3Error for bad wire bytes) within a bounded time:
 * never a TypeError, a RangeError, a crash or a hang.
 */

const LIMIT_MS = 2000

const WRONG = wrongValues(
  'null',
  'undefined',
  'NaN',
  'Infinity',
  '-1',
  '1.5',
  '2^64',
  '2^62 as BigInt',
  '-1n',
  'a string',
  'an object',
  'a null-prototype object',
  'an array',
  'an array of strings',
  'a Symbol',
  'a function',
  'a BigInt',
  'true',
  'an ArrayBuffer',
  'a DataView',
  'a Uint16Array',
  'a Buffer',
)

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown }

function outcome(fn: () => unknown): Outcome {
  // The codecs are synchronous: a call that takes longer than LIMIT_MS is a hang.
  const started = performance.now()
  let r: Outcome
  try {
    r = { ok: true, value: fn() }
  } catch (error) {
    r = { ok: false, error }
  }
  const ms = performance.now() - started
  if (ms > LIMIT_MS) throw new Error(`HANG: the call took ${Math.round(ms)} ms`)
  return r
}

/** Problems found by the current test: all of them are reported at once, at its end. */
let problems: string[] = []

afterEach(() => {
  const found = problems
  problems = []
  if (found.length > 0) throw new Error(`${found.length} misuse case(s) failed:\n${found.join('\n')}`)
})

/** The call returns, or throws a StoqError (of any code): never anything else. */
function expectNoCrash(label: string, fn: () => unknown): Outcome {
  const r = outcome(fn)
  if (!r.ok && !StoqError.isInstance(r.error))
    problems.push(`${label}: threw a non-STOQ error: ${String((r.error as Error)?.message ?? r.error).split('\n')[0]}`)
  if (r.ok && r.value instanceof Promise) problems.push(`${label}: a codec returned a promise`)
  return r
}

/** The call throws a StoqError with `code`. */
function expectTyped(label: string, fn: () => unknown, code = 'STOQ_ERR_INVALID_ARG'): void {
  const r = outcome(fn)
  if (r.ok) problems.push(`${label}: expected ${code}, got a result: ${inspect(r.value, { depth: 1, breakLength: Infinity })}`)
  else if (!StoqError.isInstance(r.error))
    problems.push(`${label}: expected ${code}, threw a non-STOQ error: ${String((r.error as Error)?.message ?? r.error).split('\n')[0]}`)
  else if (r.error.code !== code) problems.push(`${label}: expected ${code}, got ${r.error.code}: ${r.error.message}`)
}

const bytes = (...b: number[]): Uint8Array => new Uint8Array(b)

/**
 * Valid arguments of every exported function and class, in order; each position is
 * replaced by every wrong value in turn.
 */
const VALID: Record<string, unknown[]> = {
  StoqH3Error: [0x106, 'message'],
  h3ErrorName: [0x106],
  http3ErrorToWebTransport: [0x52e4a40fa8db],
  isReservedCodepoint: [0x21],
  reservedCodepoint: [1],
  webTransportErrorToHttp3: [1],
  decodeVarint: [bytes(0x25), 0],
  decodeVarintBig: [bytes(0x25), 0],
  encodeVarint: [37, 1],
  isVarInt: [1],
  toVarInt: [1],
  varintLength: [1],
  varintLengthFromFirstByte: [0x40],
  varintToBigInt: [1],
  writeVarint: [new Uint8Array(8), 0, 37, 1],
  FrameParser: [{ maxFramePayloadSize: 1024 }],
  StreamFrameValidator: ['control', 'server'],
  checkFrameAllowed: ['request', 0, 'server'],
  decodeFramePayload: [0, bytes(1, 2)],
  decodeFrames: [bytes(0, 1, 7), {}],
  encodeCancelPushFrame: [1],
  encodeDataFrame: [bytes(1, 2)],
  encodeDataFrameHeader: [2],
  encodeFrame: [0, bytes(1)],
  encodeFrameHeader: [0, 1],
  encodeGoawayFrame: [4],
  encodeH3Frame: [{ kind: 'data', payload: bytes(1) }],
  encodeHeadersFrame: [bytes(0, 0)],
  encodeMaxPushIdFrame: [1],
  encodePushPromiseFrame: [1, bytes(0, 0)],
  encodeReservedFrame: [1, bytes(1)],
  encodeSettingsFrame: [[[6, 100]]],
  frameTypeName: [0],
  isFrameAllowed: ['request', 0, 'server'],
  isKnownFrameType: [0],
  decodeBidiStreamPreface: [bytes(0x40, 0x41, 0), 0],
  decodeUniStreamPreface: [bytes(0), 0],
  encodeUniStreamPreface: [{ kind: 'control' }],
  encodeWebTransportBidiPreface: [0],
  encodeWebTransportUniPreface: [0],
  isClientBidiStreamId: [0],
  streamIdInfo: [0],
  decodeSettings: [bytes(6, 0x40, 100), {}],
  encodeSettings: [[[6, 100]]],
  peerWebTransportSupport: [new Map([[0x33, 1]])],
  readKnownSettings: [new Map([[6, 100]])],
  webTransportServerSettings: [{ maxFieldSectionSize: 1024 }],
  huffmanDecode: [bytes(0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff), 100, 0x200],
  huffmanEncode: [bytes(0x61, 0x62)],
  huffmanEncodedLength: [bytes(0x61, 0x62)],
  decodeFieldSection: [bytes(0, 0, 0xd1), {}],
  decodeQpackInteger: [bytes(0x0a), 0, 5],
  encodeFieldSection: [[[':method', 'GET']], {}],
  encodeQpackInteger: [10, 5, 0],
  fieldSectionSize: [[[':method', 'GET']]],
  isWebTransportConnect: [{ method: 'CONNECT', protocol: 'webtransport', scheme: 'https', authority: 'a', path: '/', headers: [] }],
  validateRequestHeaders: [
    [
      [':method', 'GET'],
      [':scheme', 'https'],
      [':authority', 'a'],
      [':path', '/'],
    ],
    {},
  ],
  validateResponseHeaders: [[[':status', '200']]],
  validateWebTransportConnect: [
    [
      [':method', 'CONNECT'],
      [':protocol', 'webtransport'],
      [':scheme', 'https'],
      [':authority', 'a'],
      [':path', '/'],
    ],
  ],
  webTransportResponseFields: [200, [['x', 'y']]],
  CapsuleParser: [{ maxCapsuleSize: 1024 }],
  decodeCapsuleValue: [0, bytes(1)],
  decodeCapsules: [bytes(0, 1, 7), {}],
  decodeHttpDatagram: [bytes(0, 1)],
  encodeCapsule: [0, bytes(1)],
  encodeCapsuleObject: [{ kind: 'datagram', payload: bytes(1) }],
  encodeCloseWebTransportSession: [1, 'bye'],
  encodeDatagramCapsule: [bytes(1)],
  encodeDrainWebTransportSession: [],
  encodeHttpDatagram: [0, bytes(1)],
  encodeHttpDatagramHeader: [0],
}

/** Classes: called with `new`. */
const CLASSES = new Set(['StoqH3Error', 'FrameParser', 'StreamFrameValidator', 'CapsuleParser'])

/** Arguments that must be bytes: a wrong value there is refused with StoqInvalidArgumentError. */
const BYTES_ARGS: Array<[string, number]> = [
  ['decodeVarint', 0],
  ['decodeVarintBig', 0],
  ['writeVarint', 0],
  ['decodeFramePayload', 1],
  ['decodeFrames', 0],
  ['encodeDataFrame', 0],
  ['encodeFrame', 1],
  ['encodeHeadersFrame', 0],
  ['encodePushPromiseFrame', 1],
  ['encodeReservedFrame', 1],
  ['decodeBidiStreamPreface', 0],
  ['decodeUniStreamPreface', 0],
  ['decodeSettings', 0],
  ['huffmanDecode', 0],
  ['huffmanEncode', 0],
  ['huffmanEncodedLength', 0],
  ['decodeFieldSection', 0],
  ['decodeQpackInteger', 0],
  ['decodeCapsuleValue', 1],
  ['decodeCapsules', 0],
  ['decodeHttpDatagram', 0],
  ['encodeCapsule', 1],
  ['encodeDatagramCapsule', 0],
  ['encodeHttpDatagram', 1],
]

/** Arguments that must be a QUIC varint (a number or BigInt in 0..2^62-1). */
const VARINT_ARGS: Array<[string, number]> = [
  ['encodeVarint', 0],
  ['toVarInt', 0],
  ['varintLength', 0],
  ['encodeFrame', 0],
  ['encodeFrameHeader', 0],
  ['encodeFrameHeader', 1],
  ['encodeCancelPushFrame', 0],
  ['encodeGoawayFrame', 0],
  ['encodeMaxPushIdFrame', 0],
  ['encodePushPromiseFrame', 0],
  ['encodeWebTransportBidiPreface', 0],
  ['encodeWebTransportUniPreface', 0],
  ['encodeCapsule', 0],
  ['encodeHttpDatagram', 0],
  ['encodeHttpDatagramHeader', 0],
]

function call(name: string, args: unknown[]): unknown {
  const f = (api as Record<string, unknown>)[name] as (...a: unknown[]) => unknown
  if (CLASSES.has(name)) return new (f as unknown as new (...a: unknown[]) => unknown)(...args)
  return f(...args)
}

function isBytesLike(v: unknown): boolean {
  return v instanceof Uint8Array
}

describe('h3: API misuse', () => {
  it('covers every export of src/index.ts', () => {
    const functions = Object.entries(api)
      .filter(([, v]) => typeof v === 'function')
      .map(([k]) => k)
      .sort()
    expect(functions).toEqual(Object.keys(VALID).sort())
    // Every other export is a constant: a number, a string, a table.
    for (const [name, v] of Object.entries(api)) if (!(name in VALID)) expect(['number', 'string', 'object', 'bigint'], name).toContain(typeof v)
  })

  it('the valid arguments of the table are valid', () => {
    for (const [name, args] of Object.entries(VALID)) {
      const r = outcome(() => call(name, args))
      if (!r.ok) throw new Error(`${name}(${inspect(args)}): ${inspect(r.error)}`)
    }
  })

  it('every function and class, given a wrong value in any position, returns or throws a StoqError', () => {
    for (const [name, args] of Object.entries(VALID)) {
      const positions = Math.max(args.length, ((api as Record<string, unknown>)[name] as (...a: unknown[]) => unknown).length, 1)
      for (let i = 0; i < positions; i++) {
        for (const [label, v] of WRONG) {
          const a = args.slice()
          a[i] = v
          expectNoCrash(`${name}(arg ${i} = ${label})`, () => call(name, a))
        }
      }
    }
  })

  it('refuses what is not a Uint8Array where bytes are expected', () => {
    for (const [name, position] of BYTES_ARGS) {
      for (const [label, v] of WRONG) {
        if (isBytesLike(v)) continue
        // An omitted optional payload is the default (empty).
        if (v === undefined && name === 'encodeReservedFrame') continue
        const a = VALID[name]!.slice()
        a[position] = v
        expectTyped(`${name}(arg ${position} = ${label})`, () => call(name, a))
      }
    }
  })

  it('refuses what is not a varint where a varint is expected', () => {
    const bad: Array<[string, unknown]> = [
      ...WRONG.filter(([, v]) => typeof v !== 'number' && typeof v !== 'bigint' && v !== undefined),
      ['NaN', NaN],
      ['-1', -1],
      ['1.5', 1.5],
      ['2^62', 2 ** 62],
      ['2^62n', 2n ** 62n],
      ['-1n', -1n],
      ['Infinity', Infinity],
    ]
    for (const [name, position] of VARINT_ARGS) {
      for (const [label, v] of bad) {
        const a = VALID[name]!.slice()
        a[position] = v
        expectTyped(`${name}(arg ${position} = ${label})`, () => call(name, a))
      }
    }
  })

  it('reported cases: decoders on null, parsers built from null, StoqH3Error(undefined), encoders of null and BigInt', () => {
    for (const name of Object.keys(VALID).filter((n) => n.startsWith('decode'))) {
      expectTyped(`${name}(null)`, () => call(name, [null]))
      expectTyped(`${name}(undefined)`, () => call(name, [undefined]))
    }
    expectTyped('new FrameParser(null)', () => new FrameParser(null as never))
    expectTyped('new CapsuleParser(null)', () => new CapsuleParser(null as never))
    expectTyped('new StoqH3Error(undefined)', () => new StoqH3Error(undefined as never, 'x'))
    expectTyped('encodeCapsuleObject(null)', () => encodeCapsuleObject(null as never))
    expectTyped('encodeDataFrame(null)', () => encodeDataFrame(null as never))
    // A BigInt capsule type is a valid varint; a BigInt where bytes go is not.
    expect(encodeCapsule(0x190b4d3bn, bytes(1))).toEqual(encodeCapsule(0x190b4d3b, bytes(1)))
    expectTyped('encodeCapsule(0, 5n)', () => encodeCapsule(0, 5n as never))
  })

  it('parsers refuse wrong chunks, and every call after end()', () => {
    for (const make of [() => new FrameParser(), () => new CapsuleParser()]) {
      const parser = make()
      for (const [label, v] of WRONG) {
        if (isBytesLike(v)) continue
        expectTyped(`${parser.constructor.name}.push(${label})`, () => parser.push(v as never))
      }
      // Still usable after the refusals.
      expect(parser.push(encodeFrame(0, bytes(1, 2, 3)))).toHaveLength(1)
      parser.end()
      expectTyped('push after end', () => parser.push(bytes(0, 0)), 'STOQ_ERR_CLOSED')
      expectNoCrash('end after end', () => parser.end())
    }
    // Options of the wrong kind.
    for (const [label, v] of WRONG) {
      if (v === undefined) continue
      const isObject = typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v) && !(v instanceof ArrayBuffer)
      if (isObject) continue
      expectTyped(`new FrameParser(${label})`, () => new FrameParser(v as never))
      expectTyped(`new CapsuleParser(${label})`, () => new CapsuleParser(v as never))
    }
    for (const [label, v] of WRONG) {
      // null and undefined mean "the default".
      if (v === undefined || v === null || (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 2 ** 53)) continue
      expectTyped(`FrameParser maxFramePayloadSize = ${label}`, () => new FrameParser({ maxFramePayloadSize: v as never }))
      expectTyped(`CapsuleParser maxCapsuleSize = ${label}`, () => new CapsuleParser({ maxCapsuleSize: v as never }))
    }
  })

  it('StreamFrameValidator refuses wrong stream kinds, roles and frame types', () => {
    for (const [label, v] of WRONG) {
      expectTyped(`new StreamFrameValidator(${label})`, () => new StreamFrameValidator(v as never))
      if (v !== undefined) expectTyped(`new StreamFrameValidator('control', ${label})`, () => new StreamFrameValidator('control', v as never))
    }
    const validator = new StreamFrameValidator('request', 'server')
    for (const [label, v] of WRONG) {
      if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 2 ** 62) continue
      if (typeof v === 'bigint' && v >= 0n && v < 2n ** 62n) continue
      expectTyped(`onFrameType(${label})`, () => validator.onFrameType(v as never))
    }
    for (const [label, v] of WRONG) expectNoCrash(`onFrame(${label})`, () => validator.onFrame(v as never))
  })

  it('a decoded varint still round-trips (valid input unchanged)', () => {
    for (const v of [0, 63, 64, 16383, 16384, 2 ** 30, 2 ** 53 - 1]) expect(decodeVarint(encodeVarint(v))!.value).toBe(v)
  })
})

describe('h3: unknown option keys', () => {
  // One policy (@stoq/interface checkOptions): a misspelt key is refused, named, with the closest accepted key.
  it.each([
    ['FrameParser', 'reportUnkown', 'reportUnknown', () => new api.FrameParser({ reportUnkown: true } as never)],
    ['decodeFrames', 'webtransport', 'webTransport', () => api.decodeFrames(new Uint8Array(0), { webtransport: true } as never)],
    ['CapsuleParser', 'maxCapsuleSise', 'maxCapsuleSize', () => new api.CapsuleParser({ maxCapsuleSise: 1 } as never)],
    ['decodeSettings', 'checkValue', 'checkValues', () => api.decodeSettings(new Uint8Array(0), { checkValue: true } as never)],
    ['validateRequestHeaders', 'allowExtendedConect', 'allowExtendedConnect', () => api.validateRequestHeaders([], { allowExtendedConect: true } as never)],
    ['encodeFieldSection', 'huffmann', 'huffman', () => api.encodeFieldSection([], { huffmann: true } as never)],
    [
      'decodeFieldSection',
      'maxFieldSectionSise',
      'maxFieldSectionSize',
      () => api.decodeFieldSection(new Uint8Array([0, 0]), { maxFieldSectionSise: 1 } as never),
    ],
    ['webTransportServerSettings', 'maxFieldSection', null, () => api.webTransportServerSettings({ maxFieldSection: 1 } as never)],
  ])('%s refuses %s', (_api, argument, near, call) => {
    let err: unknown = null
    try {
      call()
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err)).toBe(true)
    const e = err as StoqError
    expect(e.code).toBe('STOQ_ERR_INVALID_ARG')
    expect(e.data).toEqual({ argument })
    if (near === null) expect(e.message).not.toContain('did you mean')
    else expect(e.message).toContain(`did you mean \`${near}\`?`)
  })
})
