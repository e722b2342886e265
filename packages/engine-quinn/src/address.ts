import net from 'node:net'
import { formatIpv6, writeIpv4, writeIpv6, type SocketAddress } from '@stoq/interface'

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
    writeIpv4(addr.address, ip, 0)
    family = 4
  } else if (kind === 6) {
    const zone = addr.address.indexOf('%')
    writeIpv6(zone >= 0 ? addr.address.slice(0, zone) : addr.address, ip)
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
    address = formatIpv6(buf.subarray(0, 16))
  }
  const key = `${address}|${port}`
  const hit = fromWire.get(key)
  if (hit !== undefined) return hit
  const a: SocketAddress = Object.freeze({ address, port, family: family === 4 ? 'IPv4' : 'IPv6' })
  if (fromWire.size >= MAX_CACHE) fromWire.clear()
  fromWire.set(key, a)
  return a
}
