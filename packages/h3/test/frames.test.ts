import { describe, expect, it } from 'vitest'
import {
  FRAME_DATA,
  FRAME_HEADERS,
  FRAME_SETTINGS,
  FrameParser,
  H3_CLOSED_CRITICAL_STREAM,
  H3_EXCESSIVE_LOAD,
  H3_FRAME_ERROR,
  H3_FRAME_UNEXPECTED,
  H3_ID_ERROR,
  H3_MISSING_SETTINGS,
  H3_SETTINGS_ERROR,
  SETTINGS_ENABLE_WEBTRANSPORT,
  SETTINGS_H3_DATAGRAM,
  checkFrameAllowed,
  decodeFramePayload,
  decodeFrames,
  encodeCancelPushFrame,
  encodeDataFrame,
  encodeDataFrameHeader,
  encodeFrame,
  encodeFrameHeader,
  encodeGoawayFrame,
  encodeH3Frame,
  encodeHeadersFrame,
  encodeMaxPushIdFrame,
  encodePushPromiseFrame,
  encodeReservedFrame,
  encodeSettingsFrame,
  encodeVarint,
  encodeWebTransportBidiPreface,
  frameTypeName,
  isFrameAllowed,
  reservedCodepoint,
  type FrameParserEvent,
  type FrameParserOptions,
  type H3Frame,
} from '../src/index.js'
import { byteChunks, concat, expectH3Error, hex, randomBytes, randomChunks, rng, toHex } from './helpers.js'

const SAMPLE_FRAMES: H3Frame[] = [
  {
    kind: 'settings',
    settings: new Map([
      [SETTINGS_H3_DATAGRAM, 1],
      [SETTINGS_ENABLE_WEBTRANSPORT, 1],
      [0x1f * 7 + 0x21, 99],
    ]),
  },
  { kind: 'data', payload: Uint8Array.of(1, 2, 3) },
  { kind: 'data', payload: new Uint8Array(0) },
  { kind: 'headers', fieldSection: hex('0000 510b 2f69 6e64 6578 2e68 746d 6c') },
  { kind: 'cancel_push', pushId: 7 },
  { kind: 'push_promise', pushId: 2n ** 60n, fieldSection: hex('0000 c1') },
  { kind: 'goaway', id: 16 },
  { kind: 'max_push_id', pushId: 1234567 },
  { kind: 'data', payload: new Uint8Array(20_000).fill(0xab) },
]

/** Feeds `chunks` to a parser, then ends it; returns all events, with data chunks copied. */
function parseChunks(chunks: Uint8Array[], options: FrameParserOptions = {}): FrameParserEvent[] {
  const parser = new FrameParser(options)
  const events: FrameParserEvent[] = []
  for (const chunk of chunks) {
    for (const e of parser.push(chunk)) {
      if (e.kind === 'data_chunk') events.push({ ...e, payload: e.payload.slice() })
      else if (e.kind === 'stream_data') events.push({ ...e, data: e.data.slice() })
      else events.push(e)
    }
  }
  parser.end()
  return events
}

/** Merges data_chunk / stream_data events so differently-chunked parses compare equal. */
function normalise(events: FrameParserEvent[]): unknown[] {
  const out: unknown[] = []
  let data: Uint8Array[] = []
  const stream: Uint8Array[] = []
  for (const e of events) {
    if (e.kind === 'data_chunk') {
      data.push(e.payload)
      if (e.frameEnd) {
        out.push({ kind: 'data', payload: concat(...data) })
        data = []
      }
    } else if (e.kind === 'stream_data') {
      stream.push(e.data)
    } else {
      out.push(e)
    }
  }
  if (stream.length > 0) out.push({ kind: 'stream_data', data: concat(...stream) })
  return out
}

describe('frame encoders', () => {
  it('encodes frames as Type, Length, Payload', () => {
    expect(toHex(encodeDataFrame(Uint8Array.of(0xaa, 0xbb)))).toBe('0002aabb')
    expect(toHex(encodeDataFrameHeader(300))).toBe('00412c')
    expect(toHex(encodeHeadersFrame(hex('0000c1')))).toBe('01030000c1')
    expect(toHex(encodeCancelPushFrame(3))).toBe('030103')
    expect(
      toHex(
        encodeSettingsFrame([
          [0x33, 1],
          [0x08, 1],
        ]),
      ),
    ).toBe('0404' + '3301' + '0801')
    expect(toHex(encodePushPromiseFrame(1, hex('0000c1')))).toBe('0504' + '01' + '0000c1')
    expect(toHex(encodeGoawayFrame(64))).toBe('07024040')
    expect(toHex(encodeMaxPushIdFrame(0))).toBe('0d0100')
    expect(toHex(encodeFrameHeader(0x21, 0))).toBe('2100')
    expect(toHex(encodeReservedFrame(0, Uint8Array.of(9)))).toBe('210109')
    expect(toHex(encodeFrame(2n ** 62n - 1n, new Uint8Array(0)))).toBe('ffffffffffffffff00')
  })

  it('encodes Chromium-style SETTINGS with 4-byte identifiers', () => {
    const bytes = encodeSettingsFrame([
      [0x06, 16384],
      [0x07, 100],
      [0x33, 1],
      [0xffd277, 1],
      [0x2b603742, 1],
    ])
    // 16384 needs 4 bytes (> 0x3fff); 0xffd277 and 0x2b603742 need 4 bytes each.
    expect(toHex(bytes)).toBe(toHex(hex('04 14  06 80004000  07 4064  33 01  80ffd277 01  ab603742 01')))
  })
})

describe('FrameParser', () => {
  const stream = concat(...SAMPLE_FRAMES.map(encodeH3Frame))

  it('round-trips every frame type from one buffer', () => {
    expect(decodeFrames(stream, { maxFramePayloadSize: 1 << 20 })).toEqual(SAMPLE_FRAMES)
  })

  it('gives the same frames fed one byte at a time and in random chunks', () => {
    const opts = { maxFramePayloadSize: 1 << 20 }
    expect(parseChunks(byteChunks(stream), opts)).toEqual(SAMPLE_FRAMES)
    const next = rng(11)
    for (let i = 0; i < 20; i++) expect(parseChunks(randomChunks(next, stream, 64), opts)).toEqual(SAMPLE_FRAMES)
  })

  it('streams DATA payloads with streamData, equal to buffered frames once merged', () => {
    const opts = { maxFramePayloadSize: 100, streamData: true }
    const whole = parseChunks([stream], { ...opts, maxFramePayloadSize: 1 << 20 })
    const bytewise = parseChunks(byteChunks(stream), opts)
    expect(normalise(whole)).toEqual(SAMPLE_FRAMES)
    expect(normalise(bytewise)).toEqual(SAMPLE_FRAMES)
    expect(bytewise.filter((e) => e.kind === 'data_chunk').length).toBeGreaterThan(20_000)
  })

  it('skips unknown and reserved (grease) frame types, including 62-bit ones', () => {
    const bytes = concat(
      encodeReservedFrame(0, Uint8Array.of(1, 2, 3)),
      encodeDataFrame(Uint8Array.of(7)),
      encodeFrame(reservedCodepoint(2n ** 50n), new Uint8Array(100_000)), // larger than the limit: skipped, not buffered
      encodeFrame(0x2f, new Uint8Array(0)),
      encodeFrame(2n ** 62n - 1n, Uint8Array.of(5)),
      encodeHeadersFrame(hex('0000c1')),
    )
    const expected = [
      { kind: 'data', payload: Uint8Array.of(7) },
      { kind: 'headers', fieldSection: hex('0000c1') },
    ]
    expect(decodeFrames(bytes)).toEqual(expected)
    expect(parseChunks(byteChunks(bytes))).toEqual(expected)
    const reported = decodeFrames(bytes, { reportUnknown: true }).filter((e) => e.kind === 'unknown')
    expect(reported).toEqual([
      { kind: 'unknown', type: 0x21, length: 3 },
      { kind: 'unknown', type: reservedCodepoint(2n ** 50n), length: 100_000 },
      { kind: 'unknown', type: 0x2f, length: 0 },
      { kind: 'unknown', type: 2n ** 62n - 1n, length: 1 },
    ])
  })

  it('refuses frames above maxFramePayloadSize with H3_EXCESSIVE_LOAD, from the header alone', () => {
    const parser = new FrameParser({ maxFramePayloadSize: 10 })
    expect(parser.push(encodeDataFrame(new Uint8Array(10)))).toHaveLength(1)
    expectH3Error(() => parser.push(encodeDataFrameHeader(11)), H3_EXCESSIVE_LOAD)
    // The parser stays failed.
    expectH3Error(() => parser.push(encodeDataFrame(new Uint8Array(1))), H3_EXCESSIVE_LOAD)
    expectH3Error(() => parser.end(), H3_EXCESSIVE_LOAD)
    // A SETTINGS frame claiming 2^62-1 bytes.
    expectH3Error(() => new FrameParser().push(hex('04 ffffffffffffffff')), H3_EXCESSIVE_LOAD)
    // Default limit: 64 KiB.
    expectH3Error(() => new FrameParser().push(encodeFrameHeader(FRAME_HEADERS, 65537)), H3_EXCESSIVE_LOAD)
  })

  it('refuses a stream that ends inside a frame (H3_FRAME_ERROR)', () => {
    for (const bytes of [stream, encodeSettingsFrame([[0x33, 1]]), encodeReservedFrame(3, new Uint8Array(4))]) {
      for (let n = 1; n < Math.min(bytes.length, 40); n++) {
        const parser = new FrameParser({ maxFramePayloadSize: 1 << 20 })
        parser.push(bytes.subarray(0, n))
        if (!parser.atFrameBoundary) expectH3Error(() => parser.end(), H3_FRAME_ERROR)
      }
    }
    expectH3Error(() => decodeFrames(hex('00')), H3_FRAME_ERROR) // type only
    expectH3Error(() => decodeFrames(hex('0040')), H3_FRAME_ERROR) // truncated length varint
    expectH3Error(() => decodeFrames(hex('0005 0102')), H3_FRAME_ERROR) // truncated payload
  })

  it('refuses malformed payloads with H3_FRAME_ERROR', () => {
    expectH3Error(() => decodeFrames(hex('03 00')), H3_FRAME_ERROR) // CANCEL_PUSH without push ID
    expectH3Error(() => decodeFrames(hex('03 02 0101')), H3_FRAME_ERROR) // extra byte
    expectH3Error(() => decodeFrames(hex('07 01 40')), H3_FRAME_ERROR) // GOAWAY with truncated varint
    expectH3Error(() => decodeFrames(hex('0d 03 000000')), H3_FRAME_ERROR)
    expectH3Error(() => decodeFrames(hex('05 01 40')), H3_FRAME_ERROR) // PUSH_PROMISE truncated push ID
    expectH3Error(() => decodeFrames(hex('04 01 33')), H3_FRAME_ERROR) // SETTINGS id without value
    expectH3Error(() => decodeFrames(hex('04 04 3301 3301')), H3_SETTINGS_ERROR) // duplicate
    expectH3Error(() => decodeFrames(hex('04 02 0200')), H3_SETTINGS_ERROR) // HTTP/2 id
  })

  it('refuses HTTP/2-reserved frame types with H3_FRAME_UNEXPECTED', () => {
    for (const type of [0x02, 0x06, 0x08, 0x09]) {
      expectH3Error(() => decodeFrames(encodeFrame(type, new Uint8Array(0))), H3_FRAME_UNEXPECTED)
    }
  })

  it('parses a WebTransport bidirectional stream (0x41, session ID, raw data)', () => {
    const payload = randomBytes(rng(5), 3000)
    const bytes = concat(encodeWebTransportBidiPreface(4), payload)
    const expected = [
      { kind: 'webtransport_stream', sessionId: 4 },
      { kind: 'stream_data', data: payload },
    ]
    expect(normalise(parseChunks([bytes], { webTransport: true, streamKind: 'request', receiver: 'server' }))).toEqual(expected)
    expect(normalise(parseChunks(byteChunks(bytes), { webTransport: true }))).toEqual(expected)
    // Preface only, then FIN: fine.
    expect(parseChunks([encodeWebTransportBidiPreface(0)], { webTransport: true })).toEqual([{ kind: 'webtransport_stream', sessionId: 0 }])
    // Ending inside the preface is a truncated frame.
    expectH3Error(() => decodeFrames(hex('4041'), { webTransport: true }), H3_FRAME_ERROR)
    // A session ID that is not a client-initiated bidirectional stream.
    expectH3Error(() => decodeFrames(hex('4041 01'), { webTransport: true }), H3_ID_ERROR)
    // 0x41 after other frames.
    expectH3Error(() => decodeFrames(concat(encodeHeadersFrame(hex('0000c1')), hex('4041 00')), { webTransport: true }), H3_FRAME_ERROR)
    // Without webTransport, 0x41 is an unknown frame with a length.
    expect(decodeFrames(hex('4041 01 00'), { reportUnknown: true })).toEqual([{ kind: 'unknown', type: 0x41, length: 1 }])
  })

  it('refuses an invalid maxFramePayloadSize', () => {
    expect(() => new FrameParser({ maxFramePayloadSize: -1 })).toThrow(/maxFramePayloadSize/)
  })
})

describe('per-stream frame rules (RFC 9114 §7.2)', () => {
  it('isFrameAllowed follows Table 1', () => {
    const table: Array<[number, boolean, boolean, boolean]> = [
      // type, control, request, push
      [0x00, false, true, true],
      [0x01, false, true, true],
      [0x03, true, false, false],
      [0x04, true, false, false],
      [0x05, false, true, false],
      [0x07, true, false, false],
      [0x0d, true, false, false],
      [0x21, true, true, true],
      [0x02, false, false, false],
    ]
    for (const [type, control, request, push] of table) {
      expect(isFrameAllowed('control', type), `${frameTypeName(type)} on control`).toBe(control)
      expect(isFrameAllowed('request', type), `${frameTypeName(type)} on request`).toBe(request)
      expect(isFrameAllowed('push', type), `${frameTypeName(type)} on push`).toBe(push)
    }
    expect(isFrameAllowed('request', 0x05, 'server')).toBe(false) // PUSH_PROMISE to a server
    expect(isFrameAllowed('request', 0x05, 'client')).toBe(true)
    expect(isFrameAllowed('control', 0x0d, 'client')).toBe(false) // MAX_PUSH_ID to a client
    expect(isFrameAllowed('control', 0x0d, 'server')).toBe(true)
    expectH3Error(() => checkFrameAllowed('control', FRAME_DATA), H3_FRAME_UNEXPECTED)
    expectH3Error(() => checkFrameAllowed('request', FRAME_SETTINGS), H3_FRAME_UNEXPECTED)
  })

  it('control stream: SETTINGS first and once, no request frames, must not close', () => {
    const settings = encodeSettingsFrame([[0x33, 1]])
    const opts = { streamKind: 'control', receiver: 'server' } as const
    const parser = new FrameParser(opts)
    expect(parser.push(concat(settings, encodeReservedFrame(1), encodeGoawayFrame(8), encodeMaxPushIdFrame(3)))).toHaveLength(3)
    expectH3Error(() => parser.end(), H3_CLOSED_CRITICAL_STREAM)

    expectH3Error(() => new FrameParser(opts).push(encodeGoawayFrame(0)), H3_MISSING_SETTINGS)
    expectH3Error(() => new FrameParser(opts).push(encodeReservedFrame(0)), H3_MISSING_SETTINGS)
    expectH3Error(() => new FrameParser(opts).push(concat(settings, settings)), H3_FRAME_UNEXPECTED)
    expectH3Error(() => new FrameParser(opts).push(concat(settings, encodeDataFrame(new Uint8Array(1)))), H3_FRAME_UNEXPECTED)
    expectH3Error(() => new FrameParser(opts).push(concat(settings, encodeHeadersFrame(hex('0000')))), H3_FRAME_UNEXPECTED)
    expectH3Error(() => new FrameParser({ streamKind: 'control', receiver: 'client' }).push(concat(settings, encodeMaxPushIdFrame(1))), H3_FRAME_UNEXPECTED)
  })

  it('control stream: GOAWAY and MAX_PUSH_ID ID rules (H3_ID_ERROR)', () => {
    const settings = encodeSettingsFrame([])
    const toClient = { streamKind: 'control', receiver: 'client' } as const
    const toServer = { streamKind: 'control', receiver: 'server' } as const
    expect(new FrameParser(toClient).push(concat(settings, encodeGoawayFrame(8), encodeGoawayFrame(8), encodeGoawayFrame(4)))).toHaveLength(4)
    expectH3Error(() => new FrameParser(toClient).push(concat(settings, encodeGoawayFrame(2))), H3_ID_ERROR)
    expectH3Error(() => new FrameParser(toClient).push(concat(settings, encodeGoawayFrame(4), encodeGoawayFrame(8))), H3_ID_ERROR)
    // From a client, GOAWAY carries a push ID: any value, but never increasing.
    expect(new FrameParser(toServer).push(concat(settings, encodeGoawayFrame(3)))).toHaveLength(2)
    expectH3Error(() => new FrameParser(toServer).push(concat(settings, encodeGoawayFrame(3), encodeGoawayFrame(5))), H3_ID_ERROR)
    expectH3Error(() => new FrameParser(toServer).push(concat(settings, encodeMaxPushIdFrame(5), encodeMaxPushIdFrame(4))), H3_ID_ERROR)
  })

  it('request stream: HEADERS before DATA, nothing after trailers, no control frames', () => {
    const h = encodeHeadersFrame(hex('0000c1'))
    const d = encodeDataFrame(Uint8Array.of(1))
    const opts = { streamKind: 'request', receiver: 'server' } as const
    expect(decodeFrames(concat(h, d, d, h), opts)).toHaveLength(4)
    expect(decodeFrames(concat(h, h, d), { streamKind: 'request', receiver: 'client' })).toHaveLength(3) // interim + final
    expectH3Error(() => decodeFrames(d, opts), H3_FRAME_UNEXPECTED)
    expectH3Error(() => decodeFrames(concat(h, d, h, d), opts), H3_FRAME_UNEXPECTED)
    expectH3Error(() => decodeFrames(concat(h, d, h, h), opts), H3_FRAME_UNEXPECTED)
    expectH3Error(() => decodeFrames(concat(h, encodeSettingsFrame([])), opts), H3_FRAME_UNEXPECTED)
    expectH3Error(() => decodeFrames(concat(h, encodeGoawayFrame(0)), opts), H3_FRAME_UNEXPECTED)
    expectH3Error(() => decodeFrames(concat(h, encodePushPromiseFrame(0, hex('0000'))), opts), H3_FRAME_UNEXPECTED)
    expect(decodeFrames(concat(encodePushPromiseFrame(0, hex('0000')), h), { streamKind: 'request', receiver: 'client' })).toHaveLength(2)
    expect(decodeFrames(concat(h, encodeReservedFrame(9), d), opts)).toHaveLength(2)
  })

  it('push stream: no PUSH_PROMISE, no control frames', () => {
    const h = encodeHeadersFrame(hex('0000c1'))
    expectH3Error(() => decodeFrames(concat(h, encodePushPromiseFrame(0, hex('0000'))), { streamKind: 'push' }), H3_FRAME_UNEXPECTED)
    expectH3Error(() => decodeFrames(encodeCancelPushFrame(0), { streamKind: 'push' }), H3_FRAME_UNEXPECTED)
  })
})

describe('decodeFramePayload', () => {
  it('decodes single-varint payloads exactly', () => {
    expect(decodeFramePayload(0x07, encodeVarint(2n ** 61n))).toEqual({ kind: 'goaway', id: 2n ** 61n })
    expect(decodeFramePayload(0x0d, encodeVarint(5, 8))).toEqual({ kind: 'max_push_id', pushId: 5 })
    expect(() => decodeFramePayload(0x21, new Uint8Array(0))).toThrow(/not a known/)
  })
})
