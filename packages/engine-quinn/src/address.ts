import net from 'node:net'
import type { SocketAddress } from '@stoq/interface'

/**
 * Addresses cross the C ABI as 16 bytes + port + family (4 or 6). Conversions are cached:
 * a connection's peer is the same object on every batch, and parsing happens once.
 */

export interface WireAddress {
  ip: Uint8Array
  port: number
  family: 4 | 6
}

const MAX_CACHE = 4096
const toWire = new Map<string, WireAddress>()
const fromWire = new Map<string, SocketAddress>()

function parseIpv4(s: string, out: Uint8Array, at: number): boolean {
  const parts = s.split('.')
  if (parts.length !== 4) return false
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!
    if (!/^\d{1,3}$/.test(p)) return false
    const n = Number(p)
    if (n > 255) return false
    out[at + i] = n
  }
  return true
}

function parseIpv6(s: string, out: Uint8Array): boolean {
  const zone = s.indexOf('%')
  if (zone >= 0) s = s.slice(0, zone)
  const groups: number[] = []
  const halves = s.split('::')
  if (halves.length > 2) return false
  const parseHalf = (h: string): number[] | null => {
    if (h === '') return []
    const res: number[] = []
    const items = h.split(':')
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!
      if (it.includes('.')) {
        if (i !== items.length - 1) return null
        const v4 = new Uint8Array(4)
        if (!parseIpv4(it, v4, 0)) return null
        res.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!)
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return null
        res.push(parseInt(it, 16))
      }
    }
    return res
  }
  const head = parseHalf(halves[0]!)
  const tail = halves.length === 2 ? parseHalf(halves[1]!) : []
  if (head === null || tail === null) return false
  if (halves.length === 1) {
    if (head.length !== 8) return false
    groups.push(...head)
  } else {
    const fill = 8 - head.length - tail.length
    if (fill < 1) return false
    groups.push(...head, ...new Array<number>(fill).fill(0), ...tail)
  }
  for (let i = 0; i < 8; i++) {
    out[i * 2] = groups[i]! >> 8
    out[i * 2 + 1] = groups[i]! & 0xff
  }
  return true
}

/** SocketAddress → wire form, or null when the address is not an IP literal. */
export function wireAddress(addr: SocketAddress): WireAddress | null {
  const key = `${addr.address}|${addr.port}`
  const hit = toWire.get(key)
  if (hit !== undefined) return hit
  if (!Number.isInteger(addr.port) || addr.port < 0 || addr.port > 65535) return null
  const ip = new Uint8Array(16)
  let family: 4 | 6
  const kind = net.isIP(addr.address)
  if (kind === 4) {
    if (!parseIpv4(addr.address, ip, 0)) return null
    family = 4
  } else if (kind === 6) {
    if (!parseIpv6(addr.address, ip)) return null
    family = 6
    // IPv4-mapped (::ffff:a.b.c.d): present as IPv4, as the contract asks.
    if (ip.subarray(0, 10).every((b) => b === 0) && ip[10] === 0xff && ip[11] === 0xff) {
      ip.copyWithin(0, 12, 16)
      ip.fill(0, 4)
      family = 4
    }
  } else {
    return null
  }
  const w: WireAddress = { ip, port: addr.port, family }
  if (toWire.size >= MAX_CACHE) toWire.clear()
  toWire.set(key, w)
  return w
}

/** 19-byte wire form (16 address bytes, port big endian, family) → a shared SocketAddress. */
export function socketAddress(buf: Uint8Array): SocketAddress {
  const family = buf[18] === 6 ? 6 : 4
  const port = (buf[16]! << 8) | buf[17]!
  let address: string
  if (family === 4) {
    address = `${buf[0]}.${buf[1]}.${buf[2]}.${buf[3]}`
  } else {
    const g: string[] = []
    for (let i = 0; i < 8; i++) g.push(((buf[i * 2]! << 8) | buf[i * 2 + 1]!).toString(16))
    address = compressIpv6(g)
  }
  const key = `${address}|${port}`
  const hit = fromWire.get(key)
  if (hit !== undefined) return hit
  const a: SocketAddress = Object.freeze({ address, port, family: family === 4 ? 'IPv4' : 'IPv6' })
  if (fromWire.size >= MAX_CACHE) fromWire.clear()
  fromWire.set(key, a)
  return a
}

/** RFC 5952 text form: the longest run of zero groups (2+) becomes `::`. */
function compressIpv6(groups: string[]): string {
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === '0') j++
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  if (bestStart < 0) return groups.join(':')
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`
}
