import dns from 'node:dns/promises'
import net from 'node:net'
import { StoqInvalidArgumentError, type SocketAddress } from '@stoq/interface'

/**
 * The address to dial for `host` (an IP address or a name to look up) from a socket bound to
 * `local`: IPv6 first, as the resolver orders them, skipping families the socket cannot reach.
 */
export async function resolvePeer(host: string, port: number, local: SocketAddress, ipv6Only: boolean): Promise<SocketAddress> {
  const v6Socket = local.family === 'IPv6'
  let address = host
  let family = net.isIP(host)
  if (family === 0) {
    let results: { address: string; family: number }[]
    try {
      results = await dns.lookup(host, { all: true, verbatim: true })
    } catch (err) {
      throw new StoqInvalidArgumentError('host', `cannot resolve ${JSON.stringify(host)}: ${(err as Error).message}`)
    }
    // IPv6 first, as the resolver orders them; skip families the socket cannot reach.
    const usable = results.filter((r) => (r.family === 6 ? v6Socket : !v6Socket || !ipv6Only))
    const pick = usable.find((r) => r.family === 6) ?? usable[0]
    if (pick === undefined) throw new StoqInvalidArgumentError('host', `${host} has no address this endpoint can reach`)
    address = pick.address
    family = pick.family
  }
  if (family === 6 && !v6Socket) {
    throw new StoqInvalidArgumentError('host', `${address} is IPv6 but the endpoint is bound to IPv4 ${local.address}`)
  }
  if (family === 4 && v6Socket && ipv6Only) {
    throw new StoqInvalidArgumentError('host', `${address} is IPv4 but the endpoint is IPv6-only`)
  }
  return Object.freeze({ address, port, family: family === 6 ? 'IPv6' : 'IPv4' })
}
