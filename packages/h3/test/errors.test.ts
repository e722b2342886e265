import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import {
  H3_DATAGRAM_ERROR,
  H3_ERROR_CODES,
  H3_FRAME_ERROR,
  H3_NO_ERROR,
  H3_VERSION_FALLBACK,
  QPACK_DECODER_STREAM_ERROR,
  QPACK_DECOMPRESSION_FAILED,
  STOQ_H3_ERROR_CODE,
  StoqH3Error,
  WT_APPLICATION_ERROR_FIRST,
  WT_APPLICATION_ERROR_LAST,
  WT_SESSION_GONE,
  h3ErrorName,
  http3ErrorToWebTransport,
  isReservedCodepoint,
  reservedCodepoint,
  webTransportErrorToHttp3,
} from '../src/index.js'

describe('error codes', () => {
  it('has the RFC 9114 §8.1, RFC 9204 §6, RFC 9297 and WebTransport values', () => {
    expect(H3_NO_ERROR).toBe(0x100)
    expect(H3_VERSION_FALLBACK).toBe(0x110)
    expect(Object.keys(H3_ERROR_CODES).filter((n) => n.startsWith('H3_') && n !== 'H3_DATAGRAM_ERROR')).toHaveLength(17)
    expect(QPACK_DECOMPRESSION_FAILED).toBe(0x200)
    expect(QPACK_DECODER_STREAM_ERROR).toBe(0x202)
    expect(H3_DATAGRAM_ERROR).toBe(0x33)
    expect(WT_SESSION_GONE).toBe(0x170d7b68)
    expect(h3ErrorName(0x106)).toBe('H3_FRAME_ERROR')
    expect(h3ErrorName(0x21)).toBe('RESERVED(0x21)')
    expect(h3ErrorName(0x1234)).toBe('UNKNOWN(0x1234)')
    expect(h3ErrorName(WT_APPLICATION_ERROR_FIRST + 1)).toBe('WT_APPLICATION_ERROR(1)')
    expect(h3ErrorName(2n ** 62n - 1n)).toBe('UNKNOWN(0x3fffffffffffffff)')
  })

  it('recognises reserved codepoints 0x1f * N + 0x21', () => {
    expect(isReservedCodepoint(0x21)).toBe(true)
    expect(isReservedCodepoint(0x40)).toBe(true)
    expect(isReservedCodepoint(0x41)).toBe(false)
    expect(isReservedCodepoint(0x20)).toBe(false)
    expect(reservedCodepoint(0)).toBe(0x21)
    expect(reservedCodepoint(2)).toBe(0x5f)
    const big = reservedCodepoint((2n ** 62n - 1n - 0x21n) / 0x1fn)
    expect(big).toBe(0x3ffffffffffffffen)
    expect(isReservedCodepoint(big)).toBe(true)
    expect(() => reservedCodepoint(2n ** 62n)).toThrow(/out of range/)
  })
})

describe('WebTransport application error code mapping', () => {
  it('maps 0 to the first code and 2^32-1 to the last', () => {
    expect(webTransportErrorToHttp3(0)).toBe(0x52e4a40fa8db)
    expect(webTransportErrorToHttp3(0xffffffff)).toBe(0x52e5ac983162)
    expect(WT_APPLICATION_ERROR_LAST).toBe(WT_APPLICATION_ERROR_FIRST + 0xffffffff + Math.floor(0xffffffff / 0x1e))
  })

  it('skips the reserved codepoints inside the range', () => {
    // The code just before the first is reserved, so the next reserved one is first + 0x1e:
    // n = 0 … 0x1d map straight, n = 0x1e steps over it.
    expect(isReservedCodepoint(WT_APPLICATION_ERROR_FIRST - 1)).toBe(true)
    const reserved = WT_APPLICATION_ERROR_FIRST + 0x1e
    expect(isReservedCodepoint(reserved)).toBe(true)
    expect(http3ErrorToWebTransport(reserved)).toBeNull()
    expect(webTransportErrorToHttp3(0x1d)).toBe(reserved - 1)
    expect(webTransportErrorToHttp3(0x1e)).toBe(reserved + 1)
    for (let n = 0; n < 2000; n++) {
      const h = webTransportErrorToHttp3(n)
      expect(isReservedCodepoint(h)).toBe(false)
      expect(http3ErrorToWebTransport(h)).toBe(n)
    }
  })

  it('round-trips across the whole 32-bit range', () => {
    for (let n = 0; n <= 0xffffffff; n += 0x1000193) {
      expect(http3ErrorToWebTransport(webTransportErrorToHttp3(n))).toBe(n)
    }
    expect(http3ErrorToWebTransport(webTransportErrorToHttp3(0xffffffff))).toBe(0xffffffff)
    expect(http3ErrorToWebTransport(BigInt(WT_APPLICATION_ERROR_FIRST) + 2n)).toBe(2)
  })

  it('returns null outside the range, and every in-range non-reserved code decodes', () => {
    expect(http3ErrorToWebTransport(WT_APPLICATION_ERROR_FIRST - 1)).toBeNull()
    expect(http3ErrorToWebTransport(WT_APPLICATION_ERROR_LAST + 1)).toBeNull()
    expect(http3ErrorToWebTransport(H3_NO_ERROR)).toBeNull()
    expect(http3ErrorToWebTransport(2n ** 62n - 1n)).toBeNull()
    for (let h = WT_APPLICATION_ERROR_FIRST; h < WT_APPLICATION_ERROR_FIRST + 200; h++) {
      const n = http3ErrorToWebTransport(h)
      if (isReservedCodepoint(h)) expect(n).toBeNull()
      else expect(webTransportErrorToHttp3(n!)).toBe(h)
    }
    expect(() => webTransportErrorToHttp3(-1)).toThrow(/32/)
    expect(() => webTransportErrorToHttp3(2 ** 32)).toThrow(/32/)
  })
})

describe('StoqH3Error', () => {
  it('is a StoqError carrying the HTTP/3 code', () => {
    const err = new StoqH3Error(H3_FRAME_ERROR, 'bad frame')
    expect(StoqError.isInstance(err)).toBe(true)
    expect(StoqH3Error.isH3Error(err)).toBe(true)
    expect(StoqH3Error.isH3Error(new Error('x'))).toBe(false)
    expect(err.code).toBe(STOQ_H3_ERROR_CODE)
    expect(err.h3Code).toBe(0x106)
    expect(err.data).toEqual({ h3Code: 0x106, h3CodeName: 'H3_FRAME_ERROR' })
    expect(err.message).toBe('H3_FRAME_ERROR: bad frame')
    expect(err.name).toBe('StoqH3Error')
  })
})
