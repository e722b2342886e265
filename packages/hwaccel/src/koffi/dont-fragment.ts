/**
 * Don't Fragment on a UDP socket (Linux): IP_MTU_DISCOVER / IPV6_MTU_DISCOVER set to PROBE,
 * so every datagram leaves with DF set and one larger than the path is dropped (by this host
 * with EMSGSIZE, or by a router on the way) instead of being split into IP fragments, and the
 * kernel's path MTU cache does not shrink what we may send. QUIC asks for it (RFC 9000 §14) and
 * path MTU discovery depends on it: a probe that arrives in fragments would claim a size the
 * path cannot carry whole.
 */

// include/uapi/linux/in.h and in6.h
const IPPROTO_IP = 0
const IP_MTU_DISCOVER = 10
const IP_PMTUDISC_PROBE = 3
const IPPROTO_IPV6 = 41
const IPV6_MTU_DISCOVER = 23
const IPV6_PMTUDISC_PROBE = 3

export interface DontFragmentResult {
  /** Every datagram the socket sends (IPv4 and, on a dual-stack socket, IPv4-mapped) carries DF. */
  ok: boolean
  detail: string
}

/**
 * Set Don't Fragment on `fd`. `setInt(fd, level, name, value)` returns 0 or the errno.
 * An IPv6 socket needs the IPv6 option, and the IPv4 one too unless it is IPv6-only (the
 * IPv4-mapped traffic of a dual-stack socket follows the IPv4 option).
 */
export function setDontFragment(
  setInt: (fd: number, level: number, name: number, value: number) => number,
  fd: number,
  v6: boolean,
  ipv6Only: boolean,
): DontFragmentResult {
  if (process.platform !== 'linux') return { ok: false, detail: `Don't Fragment is set on Linux only (this is ${process.platform})` }
  if (v6) {
    const e6 = setInt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
    if (e6 !== 0) return { ok: false, detail: `setsockopt(IPV6_MTU_DISCOVER, PROBE) failed (errno ${e6})` }
    if (ipv6Only) return { ok: true, detail: 'IPV6_MTU_DISCOVER=PROBE' }
  }
  const e4 = setInt(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
  if (e4 !== 0) return { ok: false, detail: `setsockopt(IP_MTU_DISCOVER, PROBE) failed (errno ${e4})` }
  return { ok: true, detail: v6 ? 'IPV6_MTU_DISCOVER=PROBE and IP_MTU_DISCOVER=PROBE' : 'IP_MTU_DISCOVER=PROBE' }
}
