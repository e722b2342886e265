import { describe, expect, it } from 'vitest'
import { HUFFMAN_EOS, HUFFMAN_TABLE, QPACK_DECOMPRESSION_FAILED, huffmanDecode, huffmanEncode, huffmanEncodedLength } from '../src/index.js'
import { expectH3Error, hex, latin1Bytes, randomBytes, rng, toHex } from './helpers.js'

/** RFC 7541 Appendix C.4 and C.6 Huffman-coded strings. */
const RFC7541_VECTORS: Array<[string, string]> = [
  ['www.example.com', 'f1e3 c2e5 f23a 6ba0 ab90 f4ff'], // C.4.1
  ['no-cache', 'a8eb 1064 9cbf'], // C.4.2
  ['custom-key', '25a8 49e9 5ba9 7d7f'], // C.4.3
  ['custom-value', '25a8 49e9 5bb8 e8b4 bf'], // C.4.3
  ['302', '6402'], // C.6.1
  ['private', 'aec3 771a 4b'], // C.6.1
  ['Mon, 21 Oct 2013 20:13:21 GMT', 'd07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff'], // C.6.1
  ['https://www.example.com', '9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3'], // C.6.1
  ['307', '640e ff'], // C.6.2
  ['Mon, 21 Oct 2013 20:13:22 GMT', 'd07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff'], // C.6.3
  ['gzip', '9bd9 ab'], // C.6.3
  [
    'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1',
    '94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
  ], // C.6.3
]

describe('Huffman table (RFC 7541 Appendix B)', () => {
  it('has 257 entries forming a complete prefix code (Kraft sum exactly 1)', () => {
    expect(HUFFMAN_TABLE.length).toBe(257)
    let kraft = 0n
    for (const [code, bits] of HUFFMAN_TABLE) {
      expect(bits).toBeGreaterThanOrEqual(5)
      expect(bits).toBeLessThanOrEqual(30)
      expect(code).toBeLessThan(2 ** bits)
      kraft += 1n << BigInt(30 - bits)
    }
    expect(kraft).toBe(1n << 30n)
  })

  it('is canonical: sorted by (length, symbol), codes are consecutive', () => {
    const order = [...HUFFMAN_TABLE.keys()].sort((a, b) => HUFFMAN_TABLE[a]![1] - HUFFMAN_TABLE[b]![1] || a - b)
    let expected = 0
    let prevBits = HUFFMAN_TABLE[order[0]!]![1]
    for (const sym of order) {
      const [code, bits] = HUFFMAN_TABLE[sym]!
      expected *= 2 ** (bits - prevBits)
      prevBits = bits
      expect(code, `symbol ${sym}`).toBe(expected)
      expected++
    }
  })

  it('matches spot entries of Appendix B', () => {
    const spots: Array<[number, number, number]> = [
      [0, 0x1ff8, 13],
      [1, 0x7fffd8, 23],
      [9, 0xffffea, 24],
      [10, 0x3ffffffc, 30],
      [13, 0x3ffffffd, 30],
      [22, 0x3ffffffe, 30],
      [32, 0x14, 6],
      [48, 0x0, 5],
      [97, 0x3, 5],
      [116, 0x9, 5],
      [123, 0x7ffe, 15],
      [127, 0xffffffc, 28],
      [128, 0xfffe6, 20],
      [255, 0x3ffffee, 26],
      [HUFFMAN_EOS, 0x3fffffff, 30],
    ]
    for (const [sym, code, bits] of spots) expect(HUFFMAN_TABLE[sym], `symbol ${sym}`).toEqual([code, bits])
  })
})

describe('Huffman coding', () => {
  it('encodes and decodes the RFC 7541 C.4 / C.6 examples', () => {
    for (const [text, coded] of RFC7541_VECTORS) {
      expect(toHex(huffmanEncode(latin1Bytes(text))), text).toBe(toHex(hex(coded)))
      expect(huffmanEncodedLength(latin1Bytes(text))).toBe(hex(coded).length)
      expect(huffmanDecode(hex(coded))).toEqual(latin1Bytes(text))
    }
  })

  it('round-trips every octet and random strings', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i)
    expect(huffmanDecode(huffmanEncode(all))).toEqual(all)
    const next = rng(7)
    for (let i = 0; i < 500; i++) {
      const bytes = randomBytes(next, Math.floor(next() * 64))
      expect(huffmanDecode(huffmanEncode(bytes))).toEqual(bytes)
    }
    expect(huffmanEncode(new Uint8Array(0))).toEqual(new Uint8Array(0))
    expect(huffmanDecode(new Uint8Array(0))).toEqual(new Uint8Array(0))
  })

  it('accepts up to 7 bits of all-ones padding', () => {
    // 'a' is 00011 (5 bits): + 111 padding.
    expect(huffmanDecode(hex('1f'))).toEqual(latin1Bytes('a'))
    // '0' '0' '0' = 15 bits of zeros, then 1 bit of padding.
    expect(huffmanDecode(hex('0001'))).toEqual(latin1Bytes('000'))
  })

  it('refuses padding longer than 7 bits', () => {
    // 'a' then a whole byte of ones: 8+ bits of padding.
    expectH3Error(() => huffmanDecode(hex('1fff')), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => huffmanDecode(hex('ff')), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => huffmanDecode(hex('ffff')), QPACK_DECOMPRESSION_FAILED)
  })

  it('refuses padding that is not all ones', () => {
    // 'a' (00011) followed by 000: a zero bit in the padding.
    expectH3Error(() => huffmanDecode(hex('18')), QPACK_DECOMPRESSION_FAILED)
    // 'a' followed by 110.
    expectH3Error(() => huffmanDecode(hex('1e')), QPACK_DECOMPRESSION_FAILED)
  })

  it('refuses EOS inside the string', () => {
    // EOS (30 ones) followed by 2 bits of padding.
    expectH3Error(() => huffmanDecode(hex('ffffffff')), QPACK_DECOMPRESSION_FAILED)
    // 'a', then EOS: 00011 111111111111111111111111111111 + 11111 padding.
    expectH3Error(() => huffmanDecode(hex('1fffffffff')), QPACK_DECOMPRESSION_FAILED)
  })

  it('enforces the output limit', () => {
    const coded = huffmanEncode(latin1Bytes('www.example.com'))
    expect(huffmanDecode(coded, 15)).toEqual(latin1Bytes('www.example.com'))
    expectH3Error(() => huffmanDecode(coded, 14), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => huffmanDecode(coded, 0, 0x107), 0x107)
  })
})
