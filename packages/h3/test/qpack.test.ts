import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import {
  H3_EXCESSIVE_LOAD,
  QPACK_DECOMPRESSION_FAILED,
  QPACK_STATIC_TABLE,
  decodeFieldSection,
  decodeQpackInteger,
  encodeFieldSection,
  encodeQpackInteger,
  fieldSectionSize,
  huffmanEncode,
  type FieldLine,
} from '../src/index.js'
import { concat, expectH3Error, hex, latin1Bytes, randomBytes, rng, toHex } from './helpers.js'

const CHROMIUM_CONNECT: FieldLine[] = [
  [':method', 'CONNECT'],
  [':scheme', 'https'],
  [':authority', 'localhost:4433'],
  [':path', '/wt/echo?x=1'],
  [':protocol', 'webtransport'],
  ['sec-webtransport-http3-draft02', '1'],
  ['origin', 'https://example.com'],
  ['user-agent', 'Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0.0.0'],
]

describe('QPACK static table (RFC 9204 Appendix A)', () => {
  it('has 99 entries with the well-known anchors', () => {
    expect(QPACK_STATIC_TABLE.length).toBe(99)
    expect(QPACK_STATIC_TABLE[0]).toEqual([':authority', ''])
    expect(QPACK_STATIC_TABLE[1]).toEqual([':path', '/'])
    expect(QPACK_STATIC_TABLE[15]).toEqual([':method', 'CONNECT'])
    expect(QPACK_STATIC_TABLE[17]).toEqual([':method', 'GET'])
    expect(QPACK_STATIC_TABLE[23]).toEqual([':scheme', 'https'])
    expect(QPACK_STATIC_TABLE[25]).toEqual([':status', '200'])
    expect(QPACK_STATIC_TABLE[31]).toEqual(['accept-encoding', 'gzip, deflate, br'])
    expect(QPACK_STATIC_TABLE[72]).toEqual(['accept-language', ''])
    expect(QPACK_STATIC_TABLE[85]).toEqual(['content-security-policy', "script-src 'none'; object-src 'none'; base-uri 'none'"])
    expect(QPACK_STATIC_TABLE[90]).toEqual(['origin', ''])
    expect(QPACK_STATIC_TABLE[98]).toEqual(['x-frame-options', 'sameorigin'])
  })

  it('has lowercase names and unique entries', () => {
    const seen = new Set<string>()
    for (const [name, value] of QPACK_STATIC_TABLE) {
      expect(name).toBe(name.toLowerCase())
      const key = `${name}\0${value}`
      expect(seen.has(key)).toBe(false)
      seen.add(key)
    }
  })

  it('decodes every static entry as an indexed field line', () => {
    QPACK_STATIC_TABLE.forEach(([name, value], index) => {
      const section = concat(hex('0000'), encodeQpackInteger(index, 6, 0xc0))
      expect(decodeFieldSection(section)).toEqual([[name, value]])
      expect(encodeFieldSection([[name, value]])).toEqual(section)
    })
  })
})

describe('QPACK prefixed integers (RFC 7541 §5.1)', () => {
  it('matches the RFC 7541 Appendix C.1 examples', () => {
    expect(toHex(encodeQpackInteger(10, 5))).toBe('0a') // C.1.1
    expect(toHex(encodeQpackInteger(1337, 5))).toBe('1f9a0a') // C.1.2
    expect(toHex(encodeQpackInteger(42, 8))).toBe('2a') // C.1.3
    expect(decodeQpackInteger(hex('0a'), 0, 5)).toEqual({ value: 10, length: 1 })
    expect(decodeQpackInteger(hex('1f9a0a'), 0, 5)).toEqual({ value: 1337, length: 3 })
    expect(decodeQpackInteger(hex('ea'), 0, 5)).toEqual({ value: 10, length: 1 }) // flag bits ignored
  })

  it('round-trips around every prefix boundary', () => {
    for (let prefix = 1; prefix <= 8; prefix++) {
      for (const v of [0, 1, (1 << prefix) - 2, (1 << prefix) - 1, 1 << prefix, 127 + (1 << prefix), 2 ** 32, 2 ** 53 - 1]) {
        const bytes = encodeQpackInteger(v, prefix)
        expect(decodeQpackInteger(bytes, 0, prefix)).toEqual({ value: v, length: bytes.length })
      }
    }
  })

  it('refuses truncated, overlong and too-large integers', () => {
    expectH3Error(() => decodeQpackInteger(hex('1f'), 0, 5), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => decodeQpackInteger(hex('1f9a'), 0, 5), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => decodeQpackInteger(hex('1f 80808080808080808080 00'), 0, 5), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => decodeQpackInteger(hex('ff ffffffffffffffff7f'), 0, 8), QPACK_DECOMPRESSION_FAILED)
  })
})

describe('QPACK field sections', () => {
  it('encodes and decodes RFC 9204 Appendix B.1 byte for byte', () => {
    const b1 = hex('0000 510b 2f69 6e64 6578 2e68 746d 6c')
    expect(decodeFieldSection(b1)).toEqual([[':path', '/index.html']])
    expect(toHex(encodeFieldSection([[':path', '/index.html']]))).toBe(toHex(b1))
  })

  it('decodes the static-only field line of Appendix B.4 (c1 → :path /)', () => {
    expect(decodeFieldSection(hex('0000 c1'))).toEqual([[':path', '/']])
  })

  it('uses indexed, name-reference and literal-name lines', () => {
    const bytes = encodeFieldSection([
      [':method', 'CONNECT'], // static 15, exact
      [':authority', 'a'], // name ref 0
      ['x-custom', 'v'], // literal name
    ])
    expect(toHex(bytes)).toBe(
      '0000' + 'cf' + '50' + '0161' + '2701' + '782d637573746f6d' + '0176', // 8 = 7 + 1 on a 3-bit prefix
    )
    expect(decodeFieldSection(bytes)).toEqual([
      [':method', 'CONNECT'],
      [':authority', 'a'],
      ['x-custom', 'v'],
    ])
  })

  it('round-trips a Chromium WebTransport CONNECT with and without Huffman', () => {
    for (const huffman of [false, true]) {
      const bytes = encodeFieldSection(CHROMIUM_CONNECT, { huffman })
      expect(decodeFieldSection(bytes)).toEqual(CHROMIUM_CONNECT)
    }
    expect(encodeFieldSection(CHROMIUM_CONNECT, { huffman: true }).length).toBeLessThan(encodeFieldSection(CHROMIUM_CONNECT).length)
  })

  it('uses Huffman only when shorter, and decodes Huffman names and values', () => {
    // "www.example.com" is 12 bytes Huffman-coded vs 15 raw.
    const bytes = encodeFieldSection([[':authority', 'www.example.com']], { huffman: true })
    expect(toHex(bytes)).toBe('0000' + '50' + '8c' + 'f1e3c2e5f23a6ba0ab90f4ff')
    // A string whose Huffman code is longer stays raw.
    const raw = encodeFieldSection([['x', '\u00ff\u00fe']], { huffman: true })
    expect(decodeFieldSection(raw)).toEqual([['x', '\u00ff\u00fe']])
    // A literal name, Huffman-coded (H bit 0x08 of the first byte).
    const name = huffmanEncode(latin1Bytes('custom-key'))
    const section = concat(hex('0000'), Uint8Array.of(0x20 | 0x08 | 0x07, name.length - 7), name, hex('0176'))
    expect(decodeFieldSection(section)).toEqual([['custom-key', 'v']])
  })

  it('round-trips every octet in values and long strings (multi-byte lengths)', () => {
    const all = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i))
    const long = 'x'.repeat(5000)
    for (const huffman of [false, true]) {
      const fields: FieldLine[] = [
        ['all', all],
        ['long', long],
        [long.slice(0, 300), 'name-is-long'],
        ['empty', ''],
      ]
      expect(decodeFieldSection(encodeFieldSection(fields, { huffman }))).toEqual(fields)
    }
  })

  it('round-trips random field lists', () => {
    const next = rng(3)
    const names = [...QPACK_STATIC_TABLE.map(([n]) => n), 'x-a', 'x-b', 'sec-webtransport-http3-draft02']
    for (let i = 0; i < 300; i++) {
      const fields: FieldLine[] = []
      const n = Math.floor(next() * 10)
      for (let k = 0; k < n; k++) {
        const [sName, sValue] = QPACK_STATIC_TABLE[Math.floor(next() * 99)]!
        const pick = next()
        if (pick < 0.3) fields.push([sName, sValue])
        else {
          const value = String.fromCharCode(...randomBytes(next, Math.floor(next() * 40)))
          fields.push([names[Math.floor(next() * names.length)]!, value])
        }
      }
      const huffman = next() < 0.5
      expect(decodeFieldSection(encodeFieldSection(fields, { huffman }))).toEqual(fields)
    }
  })

  it('refuses non-latin1 strings when encoding', () => {
    try {
      encodeFieldSection([['x', '€']])
      expect.unreachable()
    } catch (err) {
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
    }
  })

  it('refuses dynamic table references (RFC 9204 Appendix B.2 / B.4 sections)', () => {
    // B.2 stream 4: Required Insert Count 2, post-base indexed lines.
    expectH3Error(() => decodeFieldSection(hex('0381 10 11')), QPACK_DECOMPRESSION_FAILED)
    // B.4 stream 8: Required Insert Count 4, dynamic indexed lines.
    expectH3Error(() => decodeFieldSection(hex('0500 80 c1 81')), QPACK_DECOMPRESSION_FAILED)
    // Zero Required Insert Count but non-zero Base / sign bit.
    expectH3Error(() => decodeFieldSection(hex('0001 c1')), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => decodeFieldSection(hex('0080 c1')), QPACK_DECOMPRESSION_FAILED)
    // Dynamic references with a zero prefix.
    expectH3Error(() => decodeFieldSection(hex('0000 80')), QPACK_DECOMPRESSION_FAILED) // indexed, T=0
    expectH3Error(() => decodeFieldSection(hex('0000 4001 61')), QPACK_DECOMPRESSION_FAILED) // name ref, T=0
    expectH3Error(() => decodeFieldSection(hex('0000 10')), QPACK_DECOMPRESSION_FAILED) // post-base indexed
    expectH3Error(() => decodeFieldSection(hex('0000 0001 61')), QPACK_DECOMPRESSION_FAILED) // post-base name ref
  })

  it('refuses static indexes 99 and above', () => {
    expectH3Error(() => decodeFieldSection(concat(hex('0000'), encodeQpackInteger(99, 6, 0xc0))), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => decodeFieldSection(concat(hex('0000'), encodeQpackInteger(1000, 6, 0xc0))), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => decodeFieldSection(concat(hex('0000'), encodeQpackInteger(99, 4, 0x50), hex('0161'))), QPACK_DECOMPRESSION_FAILED)
  })

  it('refuses truncated sections', () => {
    const good = encodeFieldSection(CHROMIUM_CONNECT, { huffman: true })
    expectH3Error(() => decodeFieldSection(new Uint8Array(0)), QPACK_DECOMPRESSION_FAILED)
    expectH3Error(() => decodeFieldSection(hex('00')), QPACK_DECOMPRESSION_FAILED)
    let refused = 0
    for (let n = 2; n < good.length; n++) {
      try {
        const fields = decodeFieldSection(good.subarray(0, n))
        // Cutting exactly between two field lines gives a valid shorter section.
        expect(CHROMIUM_CONNECT.slice(0, fields.length)).toEqual(fields)
      } catch (err) {
        expectH3Error(() => {
          throw err
        }, QPACK_DECOMPRESSION_FAILED)
        refused++
      }
    }
    expect(refused).toBeGreaterThan(good.length / 2)
    // A string length running past the end.
    expectH3Error(() => decodeFieldSection(hex('0000 5105 2f61')), QPACK_DECOMPRESSION_FAILED)
  })

  it('refuses bad Huffman data inside a section', () => {
    // Literal with name ref :path, H=1, length 1, byte ff (8 bits of padding).
    expectH3Error(() => decodeFieldSection(hex('0000 51 81 ff')), QPACK_DECOMPRESSION_FAILED)
    // H=1, 4 bytes of ones: EOS.
    expectH3Error(() => decodeFieldSection(hex('0000 51 84 ffffffff')), QPACK_DECOMPRESSION_FAILED)
  })

  it('enforces maxFieldSectionSize (Σ name + value + 32)', () => {
    const fields: FieldLine[] = [
      [':path', '/index.html'],
      ['x-long', 'y'.repeat(100)],
    ]
    const size = fieldSectionSize(fields)
    expect(size).toBe(5 + 11 + 32 + 6 + 100 + 32)
    for (const huffman of [false, true]) {
      const bytes = encodeFieldSection(fields, { huffman })
      expect(decodeFieldSection(bytes, { maxFieldSectionSize: size })).toEqual(fields)
      expectH3Error(() => decodeFieldSection(bytes, { maxFieldSectionSize: size - 1 }), H3_EXCESSIVE_LOAD)
      expectH3Error(() => decodeFieldSection(bytes, { maxFieldSectionSize: 40 }), H3_EXCESSIVE_LOAD)
      expectH3Error(() => decodeFieldSection(bytes, { maxFieldSectionSize: 0 }), H3_EXCESSIVE_LOAD)
    }
    // Indexed lines count too.
    expectH3Error(() => decodeFieldSection(hex('0000 c1 c1'), { maxFieldSectionSize: 40 }), H3_EXCESSIVE_LOAD)
    expect(decodeFieldSection(hex('0000 c1'), { maxFieldSectionSize: 38 })).toEqual([[':path', '/']])
    // The default limit is 64 KiB.
    const big = encodeFieldSection([['x', 'z'.repeat(70_000)]])
    expectH3Error(() => decodeFieldSection(big), H3_EXCESSIVE_LOAD)
    expect(decodeFieldSection(big, { maxFieldSectionSize: 1 << 20 })[0]![1].length).toBe(70_000)
  })
})
