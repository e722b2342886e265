import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import {
  CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
  CAPSULE_DATAGRAM,
  CAPSULE_DRAIN_WEBTRANSPORT_SESSION,
  CapsuleParser,
  FrameParser,
  H3_DATAGRAM_ERROR,
  H3_EXCESSIVE_LOAD,
  decodeCapsules,
  decodeHttpDatagram,
  encodeCapsule,
  encodeCapsuleObject,
  encodeCloseWebTransportSession,
  encodeDataFrame,
  encodeDatagramCapsule,
  encodeDrainWebTransportSession,
  encodeHttpDatagram,
  encodeHttpDatagramHeader,
  encodeVarint,
  reservedCodepoint,
  type Capsule,
  type CapsuleParserEvent,
} from '../src/index.js'
import { byteChunks, concat, expectH3Error, hex, randomChunks, rng, toHex } from './helpers.js'

const SAMPLE: Capsule[] = [
  { kind: 'datagram', payload: Uint8Array.of(1, 2, 3) },
  { kind: 'close_webtransport_session', code: 0, reason: '' },
  { kind: 'close_webtransport_session', code: 0xffffffff, reason: 'bye 👋 ünïcödé' },
  { kind: 'close_webtransport_session', code: 42, reason: 'x'.repeat(1024) },
  { kind: 'drain_webtransport_session' },
  { kind: 'datagram', payload: new Uint8Array(0) },
]

function parseAll(chunks: Uint8Array[], parser = new CapsuleParser()): CapsuleParserEvent[] {
  const out: CapsuleParserEvent[] = []
  for (const c of chunks) out.push(...parser.push(c))
  parser.end()
  return out
}

describe('capsules (RFC 9297 §3)', () => {
  it('has the capsule type codepoints', () => {
    expect([CAPSULE_DATAGRAM, CAPSULE_CLOSE_WEBTRANSPORT_SESSION, CAPSULE_DRAIN_WEBTRANSPORT_SESSION]).toEqual([0, 0x2843, 0x78ae])
  })

  it('encodes CLOSE_WEBTRANSPORT_SESSION and DRAIN_WEBTRANSPORT_SESSION', () => {
    expect(toHex(encodeCloseWebTransportSession(0x01020304, 'ok'))).toBe('6843' + '06' + '01020304' + '6f6b')
    expect(toHex(encodeDrainWebTransportSession())).toBe('800078ae' + '00')
    expect(toHex(encodeDatagramCapsule(Uint8Array.of(9)))).toBe('000109')
  })

  it('round-trips whole, byte by byte and in random chunks', () => {
    const bytes = concat(...SAMPLE.map(encodeCapsuleObject))
    expect(decodeCapsules(bytes)).toEqual(SAMPLE)
    expect(parseAll(byteChunks(bytes))).toEqual(SAMPLE)
    const next = rng(21)
    for (let i = 0; i < 20; i++) expect(parseAll(randomChunks(next, bytes, 50))).toEqual(SAMPLE)
  })

  it('parses capsules carried in the DATA frames of a CONNECT stream', () => {
    const capsules = concat(...SAMPLE.map(encodeCapsuleObject))
    const frames = concat(encodeDataFrame(capsules.subarray(0, 7)), encodeDataFrame(capsules.subarray(7)))
    const frameParser = new FrameParser({ streamData: true })
    const capsuleParser = new CapsuleParser()
    const out: CapsuleParserEvent[] = []
    for (const chunk of byteChunks(frames)) {
      for (const e of frameParser.push(chunk)) if (e.kind === 'data_chunk') out.push(...capsuleParser.push(e.payload))
    }
    frameParser.end()
    capsuleParser.end()
    expect(out).toEqual(SAMPLE)
  })

  it('skips unknown capsule types without buffering them', () => {
    const bytes = concat(
      encodeCapsule(reservedCodepoint(3), new Uint8Array(200_000)),
      encodeDrainWebTransportSession(),
      encodeCapsule(0x1234, new Uint8Array(0)),
    )
    expect(decodeCapsules(bytes)).toEqual([{ kind: 'drain_webtransport_session' }])
    expect(decodeCapsules(bytes, { reportUnknown: true })).toEqual([
      { kind: 'unknown', type: reservedCodepoint(3), length: 200_000 },
      { kind: 'drain_webtransport_session' },
      { kind: 'unknown', type: 0x1234, length: 0 },
    ])
  })

  it('refuses malformed WebTransport capsules with H3_DATAGRAM_ERROR', () => {
    expectH3Error(() => decodeCapsules(encodeCapsule(0x2843, hex('000000'))), H3_DATAGRAM_ERROR) // code truncated
    expectH3Error(() => decodeCapsules(encodeCapsule(0x2843, new Uint8Array(4 + 1025))), H3_DATAGRAM_ERROR) // reason too long
    expectH3Error(() => decodeCapsules(encodeCapsule(0x2843, hex('00000000 c328'))), H3_DATAGRAM_ERROR) // bad UTF-8
    expectH3Error(() => decodeCapsules(encodeCapsule(0x78ae, hex('00'))), H3_DATAGRAM_ERROR) // drain with a value
  })

  it('refuses a stream that ends inside a capsule, and oversized capsules', () => {
    const bytes = encodeCloseWebTransportSession(7, 'reason')
    for (let n = 1; n < bytes.length; n++) {
      const p = new CapsuleParser()
      p.push(bytes.subarray(0, n))
      expectH3Error(() => p.end(), H3_DATAGRAM_ERROR)
    }
    expectH3Error(() => decodeCapsules(encodeCapsule(0, new Uint8Array(11)), { maxCapsuleSize: 10 }), H3_EXCESSIVE_LOAD)
    expectH3Error(() => new CapsuleParser().push(hex('00 ffffffffffffffff')), H3_EXCESSIVE_LOAD)
    const failed = new CapsuleParser({ maxCapsuleSize: 1 })
    expectH3Error(() => failed.push(encodeDatagramCapsule(new Uint8Array(2))), H3_EXCESSIVE_LOAD)
    expectH3Error(() => failed.push(encodeDrainWebTransportSession()), H3_EXCESSIVE_LOAD)
  })

  it('refuses invalid arguments when encoding', () => {
    for (const call of [
      () => encodeCloseWebTransportSession(-1),
      () => encodeCloseWebTransportSession(2 ** 32),
      () => encodeCloseWebTransportSession(0, 'é'.repeat(513)),
    ]) {
      try {
        call()
        expect.unreachable()
      } catch (err) {
        expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
      }
    }
    expect(decodeCapsules(encodeCloseWebTransportSession(1, 'é'.repeat(512)))).toHaveLength(1)
  })
})

describe('HTTP/3 datagrams (RFC 9297 §2.1)', () => {
  it('prefixes the payload with the quarter stream ID', () => {
    expect(toHex(encodeHttpDatagram(0, Uint8Array.of(0xaa)))).toBe('00aa')
    expect(toHex(encodeHttpDatagram(4, Uint8Array.of(0xaa)))).toBe('01aa')
    expect(toHex(encodeHttpDatagram(400, new Uint8Array(0)))).toBe('4064')
    expect(toHex(encodeHttpDatagramHeader(2n ** 62n - 4n))).toBe('cfffffffffffffff')
  })

  it('round-trips, including the largest stream ID', () => {
    for (const id of [0, 4, 256, 2 ** 40, 2n ** 62n - 4n]) {
      const d = decodeHttpDatagram(encodeHttpDatagram(id, Uint8Array.of(1, 2)))
      expect(d.streamId).toBe(typeof id === 'bigint' && id > BigInt(Number.MAX_SAFE_INTEGER) ? id : Number(id))
      expect(d.payload).toEqual(Uint8Array.of(1, 2))
    }
    expect(decodeHttpDatagram(hex('4001'))).toEqual({ streamId: 4, quarterStreamId: 1, payload: new Uint8Array(0) })
  })

  it('refuses truncated datagrams and quarter stream IDs above 2^60-1', () => {
    expectH3Error(() => decodeHttpDatagram(new Uint8Array(0)), H3_DATAGRAM_ERROR)
    expectH3Error(() => decodeHttpDatagram(hex('40')), H3_DATAGRAM_ERROR)
    expectH3Error(() => decodeHttpDatagram(hex('c0ffffff')), H3_DATAGRAM_ERROR)
    expectH3Error(() => decodeHttpDatagram(encodeVarint(2n ** 60n)), H3_DATAGRAM_ERROR)
    expect(decodeHttpDatagram(encodeVarint(2n ** 60n - 1n)).streamId).toBe(2n ** 62n - 4n)
    expect(() => encodeHttpDatagram(2, new Uint8Array(0))).toThrow(/client-initiated bidirectional/)
  })
})
