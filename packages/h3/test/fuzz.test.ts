/**
 * Fuzz-ish robustness: random and mutated inputs into every decoder. Each call
 * must either succeed or throw a `StoqH3Error` with a known code; nothing else
 * (no RangeError, TypeError, StoqInvalidArgumentError…), and it must finish.
 * Incremental parsers must reach the same outcome whatever the chunking.
 */

import { describe, expect, it } from 'vitest'
import {
  CapsuleParser,
  FrameParser,
  H3_ERROR_CODES,
  StoqH3Error,
  decodeBidiStreamPreface,
  decodeCapsules,
  decodeFieldSection,
  decodeFrames,
  decodeHttpDatagram,
  decodeSettings,
  decodeUniStreamPreface,
  decodeVarint,
  encodeCapsuleObject,
  encodeCloseWebTransportSession,
  encodeDataFrame,
  encodeFieldSection,
  encodeGoawayFrame,
  encodeHeadersFrame,
  encodeReservedFrame,
  encodeSettings,
  encodeSettingsFrame,
  encodeWebTransportBidiPreface,
  huffmanDecode,
  huffmanEncode,
  validateRequestHeaders,
  webTransportServerSettings,
  type FrameParserEvent,
  type FrameParserOptions,
} from '../src/index.js'
import { byteChunks, concat, latin1Bytes, randomBytes, randomChunks, rng } from './helpers.js'

const KNOWN_CODES = new Set<number>(Object.values(H3_ERROR_CODES))
const ITERATIONS = 3000

/** Runs `call`; returns the H3 code it threw, or null. Anything else fails the test. */
function outcome<T>(call: () => T): { code: number | null; value?: T } {
  try {
    return { code: null, value: call() }
  } catch (err) {
    if (!StoqH3Error.isH3Error(err)) throw new Error(`non-H3 error: ${String(err)}`, { cause: err })
    expect(KNOWN_CODES.has(err.h3Code)).toBe(true)
    return { code: err.h3Code }
  }
}

function mutate(next: () => number, bytes: Uint8Array): Uint8Array {
  const out = Array.from(bytes)
  const edits = 1 + Math.floor(next() * 4)
  for (let e = 0; e < edits; e++) {
    const r = next()
    const at = Math.floor(next() * (out.length + 1))
    if (r < 0.5 && out.length > 0) out[at % out.length] = Math.floor(next() * 256)
    else if (r < 0.75) out.splice(at, 0, Math.floor(next() * 256))
    else if (out.length > 0) out.splice(at % out.length, 1)
  }
  return Uint8Array.from(out)
}

const SEEDS: Uint8Array[] = [
  concat(encodeSettingsFrame(webTransportServerSettings()), encodeGoawayFrame(8), encodeReservedFrame(2, Uint8Array.of(1))),
  concat(
    encodeHeadersFrame(
      encodeFieldSection(
        [
          [':method', 'CONNECT'],
          [':protocol', 'webtransport'],
          ['origin', 'https://a.b'],
        ],
        { huffman: true },
      ),
    ),
    encodeDataFrame(encodeCloseWebTransportSession(3, 'done')),
  ),
  concat(encodeWebTransportBidiPreface(4), Uint8Array.of(1, 2, 3)),
  encodeFieldSection(
    [
      [':path', '/index.html'],
      ['user-agent', 'Chrome'],
      ['x-a', 'b'],
    ],
    { huffman: true },
  ),
  encodeSettings([
    [0x33, 1],
    [0x2b603742, 1],
    [0x21, 5],
  ]),
  encodeCapsuleObject({ kind: 'close_webtransport_session', code: 9, reason: 'r' }),
  huffmanEncode(latin1Bytes('www.example.com')),
]

function input(next: () => number): Uint8Array {
  if (next() < 0.5) return randomBytes(next, Math.floor(next() * 96))
  return mutate(next, SEEDS[Math.floor(next() * SEEDS.length)]!)
}

function runParser(chunks: Uint8Array[], options: FrameParserOptions): { code: number | null; events: unknown[] } {
  const parser = new FrameParser(options)
  const events: FrameParserEvent[] = []
  const r = outcome(() => {
    for (const c of chunks) events.push(...parser.push(c))
    parser.end()
  })
  // Normalise chunked payloads so different chunkings compare.
  const merged: unknown[] = []
  let data: number[] = []
  for (const e of events) {
    if (e.kind === 'data_chunk') {
      data.push(...e.payload)
      if (e.frameEnd) {
        merged.push({ kind: 'data', payload: Uint8Array.from(data) })
        data = []
      }
    } else if (e.kind === 'stream_data') data.push(...e.data)
    else merged.push(e)
  }
  if (data.length > 0) merged.push(Uint8Array.from(data))
  return { code: r.code, events: merged }
}

describe('fuzz', () => {
  it('FrameParser only throws StoqH3Error and is chunking-independent', { timeout: 60_000 }, () => {
    const next = rng(0xf00d)
    const variants: FrameParserOptions[] = [
      {},
      { maxFramePayloadSize: 16 },
      { streamKind: 'control', receiver: 'client' },
      { streamKind: 'control', receiver: 'server' },
      { streamKind: 'request', receiver: 'server', webTransport: true },
      { streamKind: 'request', receiver: 'client', streamData: true },
      { streamKind: 'push', reportUnknown: true, streamData: true },
    ]
    const started = Date.now()
    for (let i = 0; i < ITERATIONS; i++) {
      const bytes = input(next)
      const options = variants[i % variants.length]!
      const whole = runParser([bytes], options)
      const single = runParser(byteChunks(bytes), options)
      const random = runParser(randomChunks(next, bytes, 7), options)
      expect(single.code).toBe(whole.code)
      expect(random.code).toBe(whole.code)
      if (whole.code === null) {
        expect(single.events).toEqual(whole.events)
        expect(random.events).toEqual(whole.events)
      }
    }
    expect(Date.now() - started).toBeLessThan(50_000)
  })

  it('CapsuleParser only throws StoqH3Error and is chunking-independent', { timeout: 60_000 }, () => {
    const next = rng(0xcafe)
    for (let i = 0; i < ITERATIONS; i++) {
      const bytes = input(next)
      const opts = i % 2 === 0 ? { reportUnknown: true } : { maxCapsuleSize: 8 }
      const whole = outcome(() => decodeCapsules(bytes, opts))
      const parser = new CapsuleParser(opts)
      const pieces: unknown[] = []
      const chunked = outcome(() => {
        for (const c of byteChunks(bytes)) pieces.push(...parser.push(c))
        parser.end()
      })
      expect(chunked.code).toBe(whole.code)
      if (whole.code === null) expect(pieces).toEqual(whole.value)
    }
  })

  it('one-shot decoders only throw StoqH3Error', { timeout: 60_000 }, () => {
    const next = rng(0xbeef)
    for (let i = 0; i < ITERATIONS; i++) {
      const bytes = input(next)
      const section = outcome(() => decodeFieldSection(bytes, { maxFieldSectionSize: next() < 0.5 ? 64 : 4096 }))
      if (section.value) outcome(() => validateRequestHeaders(section.value!))
      outcome(() => decodeSettings(bytes))
      outcome(() => decodeSettings(bytes, { checkValues: false }))
      outcome(() => huffmanDecode(bytes))
      outcome(() => decodeUniStreamPreface(bytes))
      outcome(() => decodeBidiStreamPreface(bytes))
      outcome(() => decodeHttpDatagram(bytes))
      outcome(() => decodeFrames(bytes, { webTransport: true, reportUnknown: true }))
      // decodeVarint never throws.
      for (let at = 0; at <= bytes.length; at++) decodeVarint(bytes, at)
    }
  })

  it('survives adversarial shapes quickly (huge lengths, long varint runs, deep padding)', () => {
    const cases = [
      Uint8Array.of(0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), // DATA of 2^62-1 bytes
      Uint8Array.of(0x21, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), // unknown frame of 2^62-1 bytes
      concat(Uint8Array.of(0x00, 0x00, 0x5f), new Uint8Array(10_000).fill(0xff)), // endless QPACK integer
      new Uint8Array(100_000).fill(0xff), // all ones: Huffman padding / EOS
      new Uint8Array(100_000), // all zeros: DATA frames of length 0
    ]
    const started = Date.now()
    for (const bytes of cases) {
      outcome(() => decodeFrames(bytes))
      outcome(() => decodeFrames(bytes, { streamData: true, streamKind: 'request' }))
      outcome(() => decodeFieldSection(bytes))
      outcome(() => huffmanDecode(bytes))
      outcome(() => decodeCapsules(bytes))
      outcome(() => decodeSettings(bytes))
    }
    expect(Date.now() - started).toBeLessThan(5_000)
  })
})
