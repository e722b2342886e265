/**
 * IP literals as 16 bytes and back, for the code that hands addresses to native code
 * (the UDP worker rings, the quinn engine's C ABI). The parsers take text that
 * `net.isIP` accepted (IPv6 without a zone).
 */

/** Write a dotted-quad IPv4 literal into `out[at..at+4]`. */
export function writeIpv4(text: string, out: Uint8Array, at: number): void {
  const parts = text.split('.')
  for (let i = 0; i < 4; i++) out[at + i] = Number(parts[i])
}

/** Parse an IPv6 literal (no zone) into 16 bytes. */
export function writeIpv6(text: string, out: Uint8Array): void {
  const groups: number[] = []
  let tail: number[] = []
  const double = text.indexOf('::')
  const head = double >= 0 ? text.slice(0, double) : text
  const rest = double >= 0 ? text.slice(double + 2) : ''
  const parseGroups = (part: string, into: number[]): void => {
    if (part === '') return
    for (const piece of part.split(':')) {
      if (piece.includes('.')) {
        const v4 = new Uint8Array(4)
        writeIpv4(piece, v4, 0)
        into.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!)
      } else {
        into.push(parseInt(piece, 16))
      }
    }
  }
  parseGroups(head, groups)
  if (double >= 0) {
    parseGroups(rest, tail)
  } else {
    tail = []
  }
  const all = double >= 0 ? [...groups, ...new Array<number>(8 - groups.length - tail.length).fill(0), ...tail] : groups
  for (let i = 0; i < 8; i++) {
    const g = all[i] ?? 0
    out[i * 2] = g >>> 8
    out[i * 2 + 1] = g & 0xff
  }
}

/**
 * Text of an IPv6 address as libuv's inet_ntop (and so Node's dgram) writes
 * it: lowercase hex, the first longest run of two or more zero groups as `::`,
 * and the deprecated IPv4-compatible forms with a dotted quad.
 */
export function formatIpv6(bytes: Uint8Array): string {
  const words: number[] = []
  for (let i = 0; i < 8; i++) words.push((bytes[i * 2]! << 8) | bytes[i * 2 + 1]!)
  let bestBase = -1
  let bestLen = 0
  let curBase = -1
  let curLen = 0
  for (let i = 0; i < 8; i++) {
    if (words[i] === 0) {
      if (curBase === -1) {
        curBase = i
        curLen = 1
      } else {
        curLen++
      }
    } else if (curBase !== -1) {
      if (bestBase === -1 || curLen > bestLen) {
        bestBase = curBase
        bestLen = curLen
      }
      curBase = -1
    }
  }
  if (curBase !== -1 && (bestBase === -1 || curLen > bestLen)) {
    bestBase = curBase
    bestLen = curLen
  }
  if (bestBase !== -1 && bestLen < 2) bestBase = -1
  let out = ''
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ':'
      continue
    }
    if (i !== 0) out += ':'
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 7 && words[7] !== 0x0001) || (bestLen === 5 && words[5] === 0xffff))) {
      out += `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`
      break
    }
    out += words[i]!.toString(16)
  }
  if (bestBase !== -1 && bestBase + bestLen === 8) out += ':'
  return out
}
