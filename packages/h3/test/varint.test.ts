import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import {
  VARINT_MAX,
  decodeVarint,
  decodeVarintBig,
  encodeVarint,
  isVarInt,
  toVarInt,
  varintLength,
  varintLengthFromFirstByte,
  writeVarint,
} from '../src/index.js'
import { hex, rng, toHex } from './helpers.js'

describe('QUIC varints (RFC 9000 §16)', () => {
  it('decodes the RFC 9000 Appendix A.1 examples', () => {
    expect(decodeVarint(hex('c2197c5eff14e88c'))).toEqual({ value: 151288809941952652n, length: 8 })
    expect(decodeVarint(hex('9d7f3e7d'))).toEqual({ value: 494878333, length: 4 })
    expect(decodeVarint(hex('7bbd'))).toEqual({ value: 15293, length: 2 })
    expect(decodeVarint(hex('25'))).toEqual({ value: 37, length: 1 })
    // The same value on two bytes: non-minimal encodings are valid.
    expect(decodeVarint(hex('4025'))).toEqual({ value: 37, length: 2 })
  })

  it('encodes the RFC 9000 Appendix A.1 examples', () => {
    expect(toHex(encodeVarint(151288809941952652n))).toBe('c2197c5eff14e88c')
    expect(toHex(encodeVarint(494878333))).toBe('9d7f3e7d')
    expect(toHex(encodeVarint(15293))).toBe('7bbd')
    expect(toHex(encodeVarint(37))).toBe('25')
    expect(toHex(encodeVarint(37, 2))).toBe('4025')
  })

  it('uses the shortest length at each boundary', () => {
    const cases: Array<[number | bigint, number]> = [
      [0, 1],
      [63, 1],
      [64, 2],
      [16383, 2],
      [16384, 4],
      [1073741823, 4],
      [1073741824, 8],
      [Number.MAX_SAFE_INTEGER, 8],
      [VARINT_MAX, 8],
    ]
    for (const [value, length] of cases) {
      expect(varintLength(value)).toBe(length)
      const bytes = encodeVarint(value)
      expect(bytes.length).toBe(length)
      expect(varintLengthFromFirstByte(bytes[0]!)).toBe(length)
      expect(decodeVarint(bytes)).toEqual({ value: toVarInt(BigInt(value)), length })
    }
  })

  it('returns numbers up to 2^53-1 and bigints above (canonical form)', () => {
    expect(decodeVarint(encodeVarint(Number.MAX_SAFE_INTEGER))!.value).toBe(Number.MAX_SAFE_INTEGER)
    expect(decodeVarint(encodeVarint(2n ** 53n))!.value).toBe(2n ** 53n)
    expect(decodeVarint(encodeVarint(VARINT_MAX))!.value).toBe(VARINT_MAX)
    expect(decodeVarint(encodeVarint(5n))!.value).toBe(5)
    expect(decodeVarintBig(encodeVarint(5))!.value).toBe(5n)
    expect(toVarInt(2n ** 60n)).toBe(2n ** 60n)
    expect(toVarInt(12n)).toBe(12)
  })

  it('round-trips random values of every length, as number and bigint', () => {
    const next = rng(1)
    for (let i = 0; i < 2000; i++) {
      const bits = Math.floor(next() * 62) + 1
      let v = 0n
      for (let b = 0; b < bits; b++) v = (v << 1n) | (next() < 0.5 ? 1n : 0n)
      const bytes = encodeVarint(v)
      expect(decodeVarintBig(bytes)!.value).toBe(v)
      expect(decodeVarint(bytes)!.value).toBe(toVarInt(v))
      if (v <= BigInt(Number.MAX_SAFE_INTEGER)) expect(encodeVarint(Number(v))).toEqual(bytes)
      for (const forced of [1, 2, 4, 8] as const) {
        if (forced < varintLength(v)) continue
        const long = encodeVarint(v, forced)
        expect(long.length).toBe(forced)
        expect(decodeVarintBig(long)!.value).toBe(v)
      }
    }
  })

  it('reports "need more bytes" (null) on truncation instead of throwing', () => {
    const full = encodeVarint(151288809941952652n)
    for (let n = 0; n < full.length; n++) expect(decodeVarint(full.subarray(0, n))).toBeNull()
    expect(decodeVarint(hex('7b'))).toBeNull()
    expect(decodeVarint(hex('9d7f3e'))).toBeNull()
    expect(decodeVarint(new Uint8Array(0))).toBeNull()
    expect(decodeVarint(hex('25'), 1)).toBeNull()
    expect(decodeVarintBig(hex('c0'))).toBeNull()
  })

  it('decodes at an offset', () => {
    const buf = hex('ff 7bbd 25')
    expect(decodeVarint(buf, 1)).toEqual({ value: 15293, length: 2 })
    expect(decodeVarint(buf, 3)).toEqual({ value: 37, length: 1 })
  })

  it('refuses values it cannot encode with StoqInvalidArgumentError', () => {
    for (const bad of [-1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1, -1n, VARINT_MAX + 1n]) {
      expect(isVarInt(bad)).toBe(false)
      try {
        encodeVarint(bad as number)
        expect.unreachable()
      } catch (err) {
        expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
      }
    }
    expect(() => encodeVarint(64, 1)).toThrow(/does not fit/)
    expect(() => encodeVarint(1, 3 as 4)).toThrow(/1, 2, 4 or 8/)
    expect(() => writeVarint(new Uint8Array(1), 0, 64)).toThrow(/no room/)
  })
})
