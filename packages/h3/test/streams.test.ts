import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import {
  H3_ID_ERROR,
  STREAM_TYPE_CONTROL,
  STREAM_TYPE_PUSH,
  STREAM_TYPE_QPACK_DECODER,
  STREAM_TYPE_QPACK_ENCODER,
  STREAM_TYPE_WEBTRANSPORT_UNI,
  WEBTRANSPORT_BIDI_SIGNAL,
  decodeBidiStreamPreface,
  decodeUniStreamPreface,
  encodeHeadersFrame,
  encodeUniStreamPreface,
  encodeWebTransportBidiPreface,
  encodeWebTransportUniPreface,
  isClientBidiStreamId,
  reservedCodepoint,
  streamIdInfo,
  type UniStreamPreface,
} from '../src/index.js'
import { concat, expectH3Error, hex, toHex } from './helpers.js'

describe('unidirectional stream prefaces', () => {
  it('has the stream type codepoints', () => {
    expect([STREAM_TYPE_CONTROL, STREAM_TYPE_PUSH, STREAM_TYPE_QPACK_ENCODER, STREAM_TYPE_QPACK_DECODER]).toEqual([0, 1, 2, 3])
    expect(STREAM_TYPE_WEBTRANSPORT_UNI).toBe(0x54)
    expect(WEBTRANSPORT_BIDI_SIGNAL).toBe(0x41)
  })

  it('encodes and decodes every kind', () => {
    const cases: Array<[UniStreamPreface, string]> = [
      [{ kind: 'control' }, '00'],
      [{ kind: 'push', pushId: 3 }, '0103'],
      [{ kind: 'qpack_encoder' }, '02'],
      [{ kind: 'qpack_decoder' }, '03'],
      [{ kind: 'webtransport', sessionId: 0 }, '405400'],
      [{ kind: 'webtransport', sessionId: 2n ** 62n - 4n }, '4054' + 'fffffffffffffffc'],
      [{ kind: 'unknown', type: 0x21, reserved: true }, '21'],
      [{ kind: 'unknown', type: 0x10, reserved: false }, '10'],
    ]
    for (const [preface, bytes] of cases) {
      expect(toHex(encodeUniStreamPreface(preface))).toBe(bytes)
      expect(decodeUniStreamPreface(hex(bytes))).toEqual({ preface, length: bytes.length / 2 })
    }
    expect(toHex(encodeWebTransportUniPreface(8))).toBe('405408')
    const grease = reservedCodepoint(1000n)
    expect(decodeUniStreamPreface(encodeUniStreamPreface({ kind: 'unknown', type: grease, reserved: true }))!.preface).toEqual({
      kind: 'unknown',
      type: grease,
      reserved: true,
    })
  })

  it('needs more bytes (null) until the whole preface arrived, one byte at a time', () => {
    const bytes = concat(encodeWebTransportUniPreface(1_000_000), hex('cafe'))
    for (let n = 0; n < 6; n++) expect(decodeUniStreamPreface(bytes.subarray(0, n))).toBeNull()
    expect(decodeUniStreamPreface(bytes)).toEqual({ preface: { kind: 'webtransport', sessionId: 1_000_000 }, length: 6 })
    expect(decodeUniStreamPreface(hex('01'))).toBeNull()
    expect(decodeUniStreamPreface(hex('40'))).toBeNull()
    expect(decodeUniStreamPreface(hex('ff 00'), 1)).toEqual({ preface: { kind: 'control' }, length: 1 })
  })

  it('refuses a session ID that is not a client-initiated bidirectional stream', () => {
    expectH3Error(() => decodeUniStreamPreface(hex('4054 01')), H3_ID_ERROR)
    expectH3Error(() => decodeUniStreamPreface(hex('4054 02')), H3_ID_ERROR)
    try {
      encodeWebTransportUniPreface(3)
      expect.unreachable()
    } catch (err) {
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
    }
  })
})

describe('bidirectional stream prefaces', () => {
  it('tells WebTransport streams from request streams', () => {
    expect(toHex(encodeWebTransportBidiPreface(4))).toBe('404104')
    expect(decodeBidiStreamPreface(hex('404104 aabb'))).toEqual({ kind: 'webtransport', sessionId: 4, length: 3 })
    expect(decodeBidiStreamPreface(encodeHeadersFrame(hex('0000c1')))).toEqual({ kind: 'http3', length: 0 })
    expect(decodeBidiStreamPreface(hex('00'))).toEqual({ kind: 'http3', length: 0 })
    // Non-minimal 0x41 still counts.
    expect(decodeBidiStreamPreface(hex('80000041 08'))).toEqual({ kind: 'webtransport', sessionId: 8, length: 5 })
    expect(decodeBidiStreamPreface(new Uint8Array(0))).toBeNull()
    expect(decodeBidiStreamPreface(hex('40'))).toBeNull()
    expect(decodeBidiStreamPreface(hex('4041'))).toBeNull()
    expect(decodeBidiStreamPreface(hex('4041 40'))).toBeNull()
    expectH3Error(() => decodeBidiStreamPreface(hex('4041 05')), H3_ID_ERROR)
    expect(() => encodeWebTransportBidiPreface(1)).toThrow(/session ID/)
  })
})

describe('stream IDs (RFC 9000 §2.1)', () => {
  it('classifies stream IDs', () => {
    expect(streamIdInfo(0)).toEqual({ initiator: 'client', bidirectional: true })
    expect(streamIdInfo(1)).toEqual({ initiator: 'server', bidirectional: true })
    expect(streamIdInfo(2)).toEqual({ initiator: 'client', bidirectional: false })
    expect(streamIdInfo(3n)).toEqual({ initiator: 'server', bidirectional: false })
    expect(isClientBidiStreamId(8)).toBe(true)
    expect(isClientBidiStreamId(2n ** 62n - 4n)).toBe(true)
    expect(isClientBidiStreamId(6)).toBe(false)
    expect(isClientBidiStreamId(-4)).toBe(false)
    expect(() => streamIdInfo(-1)).toThrow(/stream ID/)
  })
})
