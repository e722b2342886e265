import { readFileSync, readdirSync } from 'node:fs'
import net from 'node:net'
import { StoqInvalidArgumentError, formatIpv6, writeIpv4, writeIpv6, type SocketAddress } from '@stoq/interface'

export { formatIpv6 }

/**
 * Peer addresses as the rings carry them: the 16 bytes of an IPv6 address
 * (IPv4 as `::ffff:a.b.c.d`) in four Int32 words, each word the native
 * (little-endian) reading of 4 address bytes, as an Int32Array over a
 * sockaddr_in6 reads them, plus the port and the IPv6 scope id.
 *
 * Both directions are cached so that a steady flow allocates nothing: a
 * received peer is looked up in a small direct-mapped table keyed by its
 * words, and a destination is found by object identity first (the receiver
 * usually replies with the very SocketAddress it was handed), then by its
 * address string.
 */

/** Word 2 of an IPv4-mapped address: bytes 00 00 ff ff. */
const MAPPED_WORD = 0xffff0000 | 0

/** Entries of the received-peer table (a power of two). */
const PEER_CACHE_SIZE = 256
/** Address strings remembered for sends; the map is cleared when it grows past this. */
const DESTINATION_CACHE_LIMIT = 4096

export class AddressCodec {
  // Received peers: direct-mapped, parallel arrays.
  private readonly peerWords = new Int32Array(PEER_CACHE_SIZE * 6)
  private readonly peerValid = new Uint8Array(PEER_CACHE_SIZE)
  private readonly peers: (SocketAddress | null)[] = new Array<SocketAddress | null>(PEER_CACHE_SIZE).fill(null)

  // Destinations.
  private lastTo: SocketAddress | null = null
  private lastAddress = ''
  private lastPort = -1
  private readonly lastWords = new Int32Array(6)
  private readonly byString = new Map<string, Int32Array>()

  private readonly scratchWords = new Int32Array(4)
  private readonly scratchBytes = new Uint8Array(this.scratchWords.buffer)
  private readonly indexToName = new Map<number, string>()
  private readonly nameToIndex = new Map<string, number>()

  /**
   * The SocketAddress for a received peer (hot): words `w0..w3`, `port`,
   * `scope` as the worker stored them. IPv4-mapped addresses come out as IPv4.
   */
  decode(w0: number, w1: number, w2: number, w3: number, port: number, scope: number): SocketAddress {
    let h = Math.imul(w0 ^ w1, 0x9e3779b1) ^ Math.imul(w2 ^ w3, 0x85ebca6b) ^ Math.imul(port ^ (scope << 16), 0xc2b2ae35)
    h = (h ^ (h >>> 15)) & (PEER_CACHE_SIZE - 1)
    const words = this.peerWords
    const at = h * 6
    if (
      this.peerValid[h] === 1 &&
      words[at] === w0 &&
      words[at + 1] === w1 &&
      words[at + 2] === w2 &&
      words[at + 3] === w3 &&
      words[at + 4] === port &&
      words[at + 5] === scope
    ) {
      return this.peers[h]!
    }
    const result = this.format(w0, w1, w2, w3, port, scope)
    words[at] = w0
    words[at + 1] = w1
    words[at + 2] = w2
    words[at + 3] = w3
    words[at + 4] = port
    words[at + 5] = scope
    this.peerValid[h] = 1
    this.peers[h] = result
    return result
  }

  /**
   * Write the words of `to` (w0..w3, port, scope) into `out` at `offset` (hot).
   * Throws `StoqInvalidArgumentError` for an address that is not an IP literal
   * or a port out of range.
   */
  encode(to: SocketAddress, out: Int32Array, offset: number): void {
    // Identity first, then the fields: a caller may reuse one mutable object for several peers.
    if (to !== this.lastTo || to.port !== this.lastPort || to.address !== this.lastAddress) this.lookup(to)
    const w = this.lastWords
    out[offset] = w[0]!
    out[offset + 1] = w[1]!
    out[offset + 2] = w[2]!
    out[offset + 3] = w[3]!
    out[offset + 4] = w[4]!
    out[offset + 5] = w[5]!
  }

  /** True when `words` (an encoded destination) is an IPv4(-mapped) address. */
  static isMapped(w0: number, w1: number, w2: number): boolean {
    return w0 === 0 && w1 === 0 && w2 === MAPPED_WORD
  }

  private lookup(to: SocketAddress): void {
    const port = to.port
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new StoqInvalidArgumentError('to.port', `expected an integer from 0 to 65535, got ${String(port)}`)
    }
    let words = this.byString.get(to.address)
    if (words === undefined) {
      words = this.parse(to.address)
      if (this.byString.size >= DESTINATION_CACHE_LIMIT) this.byString.clear()
      this.byString.set(to.address, words)
    }
    const w = this.lastWords
    w[0] = words[0]!
    w[1] = words[1]!
    w[2] = words[2]!
    w[3] = words[3]!
    w[4] = port
    w[5] = words[4]!
    this.lastTo = to
    this.lastAddress = to.address
    this.lastPort = port
  }

  /** Words 0..3 and the scope id of an IP literal. */
  parse(address: string): Int32Array {
    const family = typeof address === 'string' ? net.isIP(address) : 0
    if (family === 0) {
      throw new StoqInvalidArgumentError('to.address', `expected an IP literal, got ${JSON.stringify(address)}`)
    }
    const bytes = this.scratchBytes
    bytes.fill(0)
    let scope = 0
    if (family === 4) {
      bytes[10] = 0xff
      bytes[11] = 0xff
      writeIpv4(address, bytes, 12)
    } else {
      let text = address
      const percent = text.indexOf('%')
      if (percent >= 0) {
        scope = this.scopeIndex(text.slice(percent + 1))
        text = text.slice(0, percent)
      }
      writeIpv6(text, bytes)
    }
    const w = this.scratchWords
    return Int32Array.of(w[0]!, w[1]!, w[2]!, w[3]!, scope)
  }

  private format(w0: number, w1: number, w2: number, w3: number, port: number, scope: number): SocketAddress {
    if (AddressCodec.isMapped(w0, w1, w2)) {
      const address = `${w3 & 0xff}.${(w3 >>> 8) & 0xff}.${(w3 >>> 16) & 0xff}.${w3 >>> 24}`
      return Object.freeze({ address, port, family: 'IPv4' as const })
    }
    const w = this.scratchWords
    w[0] = w0
    w[1] = w1
    w[2] = w2
    w[3] = w3
    let address = formatIpv6(this.scratchBytes)
    if (scope !== 0) address += `%${this.scopeName(scope)}`
    return Object.freeze({ address, port, family: 'IPv6' as const })
  }

  /** Interface index of a zone id: numeric, or a name looked up in /sys/class/net. */
  private scopeIndex(zone: string): number {
    if (/^\d+$/.test(zone)) return Number(zone) >>> 0
    let index = this.nameToIndex.get(zone)
    if (index === undefined) {
      index = readInterfaceIndex(zone)
      this.nameToIndex.set(zone, index)
    }
    return index
  }

  /** Interface name of a scope id, as Node's dgram reports it (`fe80::1%eth0`), else the number. */
  private scopeName(scope: number): string {
    let name = this.indexToName.get(scope)
    if (name === undefined) {
      name = String(scope >>> 0)
      try {
        for (const entry of readdirSync('/sys/class/net')) {
          if (readInterfaceIndex(entry) === scope) {
            name = entry
            break
          }
        }
      } catch {
        // No sysfs: keep the number.
      }
      this.indexToName.set(scope, name)
    }
    return name
  }
}

function readInterfaceIndex(name: string): number {
  if (name.includes('/') || name === '.' || name === '..') return 0
  try {
    const n = Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim())
    return Number.isInteger(n) && n > 0 ? n : 0
  } catch {
    return 0
  }
}
