import net from 'node:net'
import { StoqInvalidArgumentError, type SocketAddress } from '@stoq/interface'

const MAPPED_PREFIX = '::ffff:'

let lastRaw = ''
let lastPort = -1
let last: SocketAddress | null = null

/**
 * Build a SocketAddress from what a socket reports, presenting IPv4-mapped
 * IPv6 addresses as plain IPv4. The last result is reused when the same peer
 * sends again, so a steady flow allocates nothing here.
 */
export function toSocketAddress(address: string, port: number): SocketAddress {
  if (last !== null && port === lastPort && address === lastRaw) return last
  let family: 'IPv4' | 'IPv6' = address.includes(':') ? 'IPv6' : 'IPv4'
  let plain = address
  if (family === 'IPv6' && address.startsWith(MAPPED_PREFIX) && net.isIPv4(address.slice(MAPPED_PREFIX.length))) {
    plain = address.slice(MAPPED_PREFIX.length)
    family = 'IPv4'
  }
  const result: SocketAddress = Object.freeze({ address: plain, port, family })
  lastRaw = address
  lastPort = port
  last = result
  return result
}

const mappedCache = new Map<string, string>()

/** The host string to hand to a socket of the given family. */
export function toWireHost(to: SocketAddress, socketIsV6: boolean): string {
  if (!socketIsV6 || to.family === 'IPv6') return to.address
  let mapped = mappedCache.get(to.address)
  if (mapped === undefined) {
    mapped = MAPPED_PREFIX + to.address
    if (mappedCache.size > 4096) mappedCache.clear()
    mappedCache.set(to.address, mapped)
  }
  return mapped
}

/** Parse `host:port`, `[v6]:port` or a bare IP literal with a separate port. */
export function parseHostPort(input: string, defaultPort?: number): { host: string; port: number } | null {
  let host: string
  let portText: string | undefined
  if (input.startsWith('[')) {
    const end = input.indexOf(']')
    if (end < 0) return null
    host = input.slice(1, end)
    const rest = input.slice(end + 1)
    if (rest.length > 0) {
      if (!rest.startsWith(':')) return null
      portText = rest.slice(1)
    }
  } else {
    const colons = input.split(':').length - 1
    if (colons === 1) {
      const i = input.indexOf(':')
      host = input.slice(0, i)
      portText = input.slice(i + 1)
    } else {
      host = input // bare IPv6 literal or host without port
    }
  }
  let port = defaultPort ?? -1
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText)) return null
    port = Number(portText)
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535 || host.length === 0) return null
  return { host, port }
}

/**
 * Check a bind target and return its IP family (4 or 6). Node's dgram would
 * quietly bind another port for a bad one, so every backend checks first.
 */
export function checkBindTarget(host: string, port: number): 4 | 6 {
  const family = net.isIP(host)
  if (family === 0) throw new StoqInvalidArgumentError('host', `expected an IP literal, got ${JSON.stringify(host)}`)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new StoqInvalidArgumentError('port', `expected an integer from 0 to 65535, got ${String(port)}`)
  }
  return family as 4 | 6
}
