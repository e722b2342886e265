/**
 * The HPACK Huffman code (RFC 7541 Appendix B), which QPACK reuses for string
 * literals (RFC 9204 §4.1.2), with a decoder that enforces RFC 7541 §5.2:
 * padding of more than 7 bits, padding that is not a prefix of EOS (all ones),
 * and an EOS symbol inside the string are decoding errors.
 */

import { StoqInvalidArgumentError } from '@stoq/interface'
import { bytesArg, show } from '../args.js'
import { isVarInt } from '../varint.js'
import { QPACK_DECOMPRESSION_FAILED, StoqH3Error } from '../errors.js'

/**
 * `[code, bit length]` for symbols 0-255 and EOS (256), as in RFC 7541
 * Appendix B. The code is canonical: codes of one length are consecutive,
 * in symbol order (the tests check this and the Kraft sum).
 */
export const HUFFMAN_TABLE: ReadonlyArray<readonly [code: number, bits: number]> = [
  /*   0      */ [0x1ff8, 13],
  /*   1      */ [0x7fffd8, 23],
  /*   2      */ [0xfffffe2, 28],
  /*   3      */ [0xfffffe3, 28],
  /*   4      */ [0xfffffe4, 28],
  /*   5      */ [0xfffffe5, 28],
  /*   6      */ [0xfffffe6, 28],
  /*   7      */ [0xfffffe7, 28],
  /*   8      */ [0xfffffe8, 28],
  /*   9      */ [0xffffea, 24],
  /*  10      */ [0x3ffffffc, 30],
  /*  11      */ [0xfffffe9, 28],
  /*  12      */ [0xfffffea, 28],
  /*  13      */ [0x3ffffffd, 30],
  /*  14      */ [0xfffffeb, 28],
  /*  15      */ [0xfffffec, 28],
  /*  16      */ [0xfffffed, 28],
  /*  17      */ [0xfffffee, 28],
  /*  18      */ [0xfffffef, 28],
  /*  19      */ [0xffffff0, 28],
  /*  20      */ [0xffffff1, 28],
  /*  21      */ [0xffffff2, 28],
  /*  22      */ [0x3ffffffe, 30],
  /*  23      */ [0xffffff3, 28],
  /*  24      */ [0xffffff4, 28],
  /*  25      */ [0xffffff5, 28],
  /*  26      */ [0xffffff6, 28],
  /*  27      */ [0xffffff7, 28],
  /*  28      */ [0xffffff8, 28],
  /*  29      */ [0xffffff9, 28],
  /*  30      */ [0xffffffa, 28],
  /*  31      */ [0xffffffb, 28],
  /*  32 ' '  */ [0x14, 6],
  /*  33 '!'  */ [0x3f8, 10],
  /*  34 '"'  */ [0x3f9, 10],
  /*  35 '#'  */ [0xffa, 12],
  /*  36 '$'  */ [0x1ff9, 13],
  /*  37 '%'  */ [0x15, 6],
  /*  38 '&'  */ [0xf8, 8],
  /*  39 '\'' */ [0x7fa, 11],
  /*  40 '('  */ [0x3fa, 10],
  /*  41 ')'  */ [0x3fb, 10],
  /*  42 '*'  */ [0xf9, 8],
  /*  43 '+'  */ [0x7fb, 11],
  /*  44 ','  */ [0xfa, 8],
  /*  45 '-'  */ [0x16, 6],
  /*  46 '.'  */ [0x17, 6],
  /*  47 '/'  */ [0x18, 6],
  /*  48 '0'  */ [0x0, 5],
  /*  49 '1'  */ [0x1, 5],
  /*  50 '2'  */ [0x2, 5],
  /*  51 '3'  */ [0x19, 6],
  /*  52 '4'  */ [0x1a, 6],
  /*  53 '5'  */ [0x1b, 6],
  /*  54 '6'  */ [0x1c, 6],
  /*  55 '7'  */ [0x1d, 6],
  /*  56 '8'  */ [0x1e, 6],
  /*  57 '9'  */ [0x1f, 6],
  /*  58 ':'  */ [0x5c, 7],
  /*  59 ';'  */ [0xfb, 8],
  /*  60 '<'  */ [0x7ffc, 15],
  /*  61 '='  */ [0x20, 6],
  /*  62 '>'  */ [0xffb, 12],
  /*  63 '?'  */ [0x3fc, 10],
  /*  64 '@'  */ [0x1ffa, 13],
  /*  65 'A'  */ [0x21, 6],
  /*  66 'B'  */ [0x5d, 7],
  /*  67 'C'  */ [0x5e, 7],
  /*  68 'D'  */ [0x5f, 7],
  /*  69 'E'  */ [0x60, 7],
  /*  70 'F'  */ [0x61, 7],
  /*  71 'G'  */ [0x62, 7],
  /*  72 'H'  */ [0x63, 7],
  /*  73 'I'  */ [0x64, 7],
  /*  74 'J'  */ [0x65, 7],
  /*  75 'K'  */ [0x66, 7],
  /*  76 'L'  */ [0x67, 7],
  /*  77 'M'  */ [0x68, 7],
  /*  78 'N'  */ [0x69, 7],
  /*  79 'O'  */ [0x6a, 7],
  /*  80 'P'  */ [0x6b, 7],
  /*  81 'Q'  */ [0x6c, 7],
  /*  82 'R'  */ [0x6d, 7],
  /*  83 'S'  */ [0x6e, 7],
  /*  84 'T'  */ [0x6f, 7],
  /*  85 'U'  */ [0x70, 7],
  /*  86 'V'  */ [0x71, 7],
  /*  87 'W'  */ [0x72, 7],
  /*  88 'X'  */ [0xfc, 8],
  /*  89 'Y'  */ [0x73, 7],
  /*  90 'Z'  */ [0xfd, 8],
  /*  91 '['  */ [0x1ffb, 13],
  /*  92 '\\' */ [0x7fff0, 19],
  /*  93 ']'  */ [0x1ffc, 13],
  /*  94 '^'  */ [0x3ffc, 14],
  /*  95 '_'  */ [0x22, 6],
  /*  96 '`'  */ [0x7ffd, 15],
  /*  97 'a'  */ [0x3, 5],
  /*  98 'b'  */ [0x23, 6],
  /*  99 'c'  */ [0x4, 5],
  /* 100 'd'  */ [0x24, 6],
  /* 101 'e'  */ [0x5, 5],
  /* 102 'f'  */ [0x25, 6],
  /* 103 'g'  */ [0x26, 6],
  /* 104 'h'  */ [0x27, 6],
  /* 105 'i'  */ [0x6, 5],
  /* 106 'j'  */ [0x74, 7],
  /* 107 'k'  */ [0x75, 7],
  /* 108 'l'  */ [0x28, 6],
  /* 109 'm'  */ [0x29, 6],
  /* 110 'n'  */ [0x2a, 6],
  /* 111 'o'  */ [0x7, 5],
  /* 112 'p'  */ [0x2b, 6],
  /* 113 'q'  */ [0x76, 7],
  /* 114 'r'  */ [0x2c, 6],
  /* 115 's'  */ [0x8, 5],
  /* 116 't'  */ [0x9, 5],
  /* 117 'u'  */ [0x2d, 6],
  /* 118 'v'  */ [0x77, 7],
  /* 119 'w'  */ [0x78, 7],
  /* 120 'x'  */ [0x79, 7],
  /* 121 'y'  */ [0x7a, 7],
  /* 122 'z'  */ [0x7b, 7],
  /* 123 '{'  */ [0x7ffe, 15],
  /* 124 '|'  */ [0x7fc, 11],
  /* 125 '}'  */ [0x3ffd, 14],
  /* 126 '~'  */ [0x1ffd, 13],
  /* 127      */ [0xffffffc, 28],
  /* 128      */ [0xfffe6, 20],
  /* 129      */ [0x3fffd2, 22],
  /* 130      */ [0xfffe7, 20],
  /* 131      */ [0xfffe8, 20],
  /* 132      */ [0x3fffd3, 22],
  /* 133      */ [0x3fffd4, 22],
  /* 134      */ [0x3fffd5, 22],
  /* 135      */ [0x7fffd9, 23],
  /* 136      */ [0x3fffd6, 22],
  /* 137      */ [0x7fffda, 23],
  /* 138      */ [0x7fffdb, 23],
  /* 139      */ [0x7fffdc, 23],
  /* 140      */ [0x7fffdd, 23],
  /* 141      */ [0x7fffde, 23],
  /* 142      */ [0xffffeb, 24],
  /* 143      */ [0x7fffdf, 23],
  /* 144      */ [0xffffec, 24],
  /* 145      */ [0xffffed, 24],
  /* 146      */ [0x3fffd7, 22],
  /* 147      */ [0x7fffe0, 23],
  /* 148      */ [0xffffee, 24],
  /* 149      */ [0x7fffe1, 23],
  /* 150      */ [0x7fffe2, 23],
  /* 151      */ [0x7fffe3, 23],
  /* 152      */ [0x7fffe4, 23],
  /* 153      */ [0x1fffdc, 21],
  /* 154      */ [0x3fffd8, 22],
  /* 155      */ [0x7fffe5, 23],
  /* 156      */ [0x3fffd9, 22],
  /* 157      */ [0x7fffe6, 23],
  /* 158      */ [0x7fffe7, 23],
  /* 159      */ [0xffffef, 24],
  /* 160      */ [0x3fffda, 22],
  /* 161      */ [0x1fffdd, 21],
  /* 162      */ [0xfffe9, 20],
  /* 163      */ [0x3fffdb, 22],
  /* 164      */ [0x3fffdc, 22],
  /* 165      */ [0x7fffe8, 23],
  /* 166      */ [0x7fffe9, 23],
  /* 167      */ [0x1fffde, 21],
  /* 168      */ [0x7fffea, 23],
  /* 169      */ [0x3fffdd, 22],
  /* 170      */ [0x3fffde, 22],
  /* 171      */ [0xfffff0, 24],
  /* 172      */ [0x1fffdf, 21],
  /* 173      */ [0x3fffdf, 22],
  /* 174      */ [0x7fffeb, 23],
  /* 175      */ [0x7fffec, 23],
  /* 176      */ [0x1fffe0, 21],
  /* 177      */ [0x1fffe1, 21],
  /* 178      */ [0x3fffe0, 22],
  /* 179      */ [0x1fffe2, 21],
  /* 180      */ [0x7fffed, 23],
  /* 181      */ [0x3fffe1, 22],
  /* 182      */ [0x7fffee, 23],
  /* 183      */ [0x7fffef, 23],
  /* 184      */ [0xfffea, 20],
  /* 185      */ [0x3fffe2, 22],
  /* 186      */ [0x3fffe3, 22],
  /* 187      */ [0x3fffe4, 22],
  /* 188      */ [0x7ffff0, 23],
  /* 189      */ [0x3fffe5, 22],
  /* 190      */ [0x3fffe6, 22],
  /* 191      */ [0x7ffff1, 23],
  /* 192      */ [0x3ffffe0, 26],
  /* 193      */ [0x3ffffe1, 26],
  /* 194      */ [0xfffeb, 20],
  /* 195      */ [0x7fff1, 19],
  /* 196      */ [0x3fffe7, 22],
  /* 197      */ [0x7ffff2, 23],
  /* 198      */ [0x3fffe8, 22],
  /* 199      */ [0x1ffffec, 25],
  /* 200      */ [0x3ffffe2, 26],
  /* 201      */ [0x3ffffe3, 26],
  /* 202      */ [0x3ffffe4, 26],
  /* 203      */ [0x7ffffde, 27],
  /* 204      */ [0x7ffffdf, 27],
  /* 205      */ [0x3ffffe5, 26],
  /* 206      */ [0xfffff1, 24],
  /* 207      */ [0x1ffffed, 25],
  /* 208      */ [0x7fff2, 19],
  /* 209      */ [0x1fffe3, 21],
  /* 210      */ [0x3ffffe6, 26],
  /* 211      */ [0x7ffffe0, 27],
  /* 212      */ [0x7ffffe1, 27],
  /* 213      */ [0x3ffffe7, 26],
  /* 214      */ [0x7ffffe2, 27],
  /* 215      */ [0xfffff2, 24],
  /* 216      */ [0x1fffe4, 21],
  /* 217      */ [0x1fffe5, 21],
  /* 218      */ [0x3ffffe8, 26],
  /* 219      */ [0x3ffffe9, 26],
  /* 220      */ [0xffffffd, 28],
  /* 221      */ [0x7ffffe3, 27],
  /* 222      */ [0x7ffffe4, 27],
  /* 223      */ [0x7ffffe5, 27],
  /* 224      */ [0xfffec, 20],
  /* 225      */ [0xfffff3, 24],
  /* 226      */ [0xfffed, 20],
  /* 227      */ [0x1fffe6, 21],
  /* 228      */ [0x3fffe9, 22],
  /* 229      */ [0x1fffe7, 21],
  /* 230      */ [0x1fffe8, 21],
  /* 231      */ [0x7ffff3, 23],
  /* 232      */ [0x3fffea, 22],
  /* 233      */ [0x3fffeb, 22],
  /* 234      */ [0x1ffffee, 25],
  /* 235      */ [0x1ffffef, 25],
  /* 236      */ [0xfffff4, 24],
  /* 237      */ [0xfffff5, 24],
  /* 238      */ [0x3ffffea, 26],
  /* 239      */ [0x7ffff4, 23],
  /* 240      */ [0x3ffffeb, 26],
  /* 241      */ [0x7ffffe6, 27],
  /* 242      */ [0x3ffffec, 26],
  /* 243      */ [0x3ffffed, 26],
  /* 244      */ [0x7ffffe7, 27],
  /* 245      */ [0x7ffffe8, 27],
  /* 246      */ [0x7ffffe9, 27],
  /* 247      */ [0x7ffffea, 27],
  /* 248      */ [0x7ffffeb, 27],
  /* 249      */ [0xffffffe, 28],
  /* 250      */ [0x7ffffec, 27],
  /* 251      */ [0x7ffffed, 27],
  /* 252      */ [0x7ffffee, 27],
  /* 253      */ [0x7ffffef, 27],
  /* 254      */ [0x7fffff0, 27],
  /* 255      */ [0x3ffffee, 26],
  /* 256 EOS  */ [0x3fffffff, 30],
]

/** The EOS symbol. */
export const HUFFMAN_EOS = 256

// Decoding tree: internal nodes 0..255 (0 is the root). children[2*node+bit]
// is another internal node (>= 0) or a leaf, stored as -(symbol + 1).
const children = new Int32Array(512).fill(0x7fffffff)
const depth = new Uint8Array(256)
const allOnes = new Uint8Array(256)
{
  let nodes = 1
  allOnes[0] = 1
  HUFFMAN_TABLE.forEach(([code, bits], sym) => {
    let node = 0
    for (let b = bits - 1; b >= 0; b--) {
      const bit = Math.floor(code / 2 ** b) & 1
      const slot = 2 * node + bit
      if (b === 0) {
        children[slot] = -(sym + 1)
      } else {
        if (children[slot] === 0x7fffffff) {
          const next = nodes++
          children[slot] = next
          depth[next] = depth[node]! + 1
          allOnes[next] = allOnes[node]! & bit
        }
        node = children[slot]!
      }
    }
  })
}

// Nibble-at-a-time transitions: for state s and nibble x, index 16*s + x.
// NEXT is the state after the 4 bits, SYM the symbol completed in them (-1
// none, -2 EOS). Codes are at least 5 bits long, so 4 bits complete at most one.
const NEXT = new Uint8Array(256 * 16)
const SYM = new Int16Array(256 * 16)
for (let s = 0; s < 256; s++) {
  for (let x = 0; x < 16; x++) {
    let node = s
    let sym = -1
    for (let b = 3; b >= 0; b--) {
      const child = children[2 * node + ((x >> b) & 1)]!
      if (child < 0) {
        const symbol = -child - 1
        sym = symbol === HUFFMAN_EOS ? -2 : symbol
        node = 0
        if (sym === -2) break
      } else {
        node = child
      }
    }
    NEXT[16 * s + x] = node
    SYM[16 * s + x] = sym
  }
}

/** Bytes `huffmanEncode(bytes)` produces. */
export function huffmanEncodedLength(bytes: Uint8Array): number {
  bytesArg('bytes', bytes)
  let bits = 0
  for (let i = 0; i < bytes.length; i++) bits += HUFFMAN_TABLE[bytes[i]!]![1]
  return Math.ceil(bits / 8)
}

/** Huffman-encodes `bytes`, padding the last byte with the most significant bits of EOS (ones). */
export function huffmanEncode(bytes: Uint8Array): Uint8Array {
  bytesArg('bytes', bytes)
  const out = new Uint8Array(huffmanEncodedLength(bytes))
  let at = 0
  let acc = 0 // pending bits, fewer than 8 between symbols
  let n = 0
  for (let i = 0; i < bytes.length; i++) {
    const [code, bits] = HUFFMAN_TABLE[bytes[i]!]!
    acc = acc * 2 ** bits + code // < 2^38: exact
    n += bits
    while (n >= 8) {
      n -= 8
      const p = 2 ** n
      out[at++] = Math.floor(acc / p)
      acc %= p
    }
  }
  if (n > 0) out[at++] = (acc << (8 - n)) | (0xff >> n)
  return out
}

/**
 * Decodes a Huffman-encoded string. Throws `StoqH3Error`
 * (QPACK_DECOMPRESSION_FAILED) on EOS inside the string, padding longer than
 * 7 bits or not all ones; with `overLimitCode` (default the same) when the
 * result would be longer than `maxLength`.
 */
export function huffmanDecode(bytes: Uint8Array, maxLength = Infinity, overLimitCode: number = QPACK_DECOMPRESSION_FAILED): Uint8Array {
  bytesArg('bytes', bytes)
  if (typeof maxLength !== 'number' || !(maxLength >= 0)) {
    throw new StoqInvalidArgumentError('maxLength', `expected a number >= 0 (Infinity allowed), got ${show(maxLength)}`)
  }
  if (!isVarInt(overLimitCode) || typeof overLimitCode !== 'number') {
    throw new StoqInvalidArgumentError('overLimitCode', `expected an HTTP/3 error code (an integer >= 0), got ${show(overLimitCode)}`)
  }
  const out = new Uint8Array(Math.min(Math.floor((bytes.length * 8) / 5), Math.floor(maxLength) + 1))
  let at = 0
  let state = 0
  for (let i = 0; i < 2 * bytes.length; i++) {
    const byte = bytes[i >> 1]!
    const k = 16 * state + ((i & 1) === 0 ? byte >> 4 : byte & 0x0f)
    const sym = SYM[k]!
    if (sym !== -1) {
      if (sym === -2) throw new StoqH3Error(QPACK_DECOMPRESSION_FAILED, 'Huffman string contains EOS')
      if (at >= maxLength) {
        throw new StoqH3Error(overLimitCode, `Huffman string decodes to more than ${maxLength} bytes`)
      }
      out[at++] = sym
    }
    state = NEXT[k]!
  }
  if (depth[state]! > 7) throw new StoqH3Error(QPACK_DECOMPRESSION_FAILED, 'Huffman padding is longer than 7 bits')
  if (!allOnes[state]) throw new StoqH3Error(QPACK_DECOMPRESSION_FAILED, 'Huffman padding is not all ones (EOS prefix)')
  return out.slice(0, at)
}
