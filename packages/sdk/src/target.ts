import { StoqInvalidArgumentError } from '@stoq/interface'

/** Where to connect: `host:port`, `[v6]:port`, a `stoq://` or `quic://` URL, or `{ host, port }`. */
export type ConnectTarget = string | URL | { host: string; port: number }

/** Parse a connect target into host and port; throws StoqInvalidArgumentError with what is accepted. */
export function parseTarget(target: ConnectTarget): { host: string; port: number } {
  const accepted = 'expected "host:port", "[ipv6]:port", a stoq:// or quic:// URL, or { host, port }'
  if (target instanceof URL || (typeof target === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(target))) {
    let url: URL
    try {
      url = target instanceof URL ? target : new URL(target)
    } catch {
      throw new StoqInvalidArgumentError('target', `${accepted}, got ${JSON.stringify(String(target))}`)
    }
    if (url.protocol !== 'stoq:' && url.protocol !== 'quic:') {
      throw new StoqInvalidArgumentError('target', `URL scheme must be stoq: or quic:, got ${url.protocol}`)
    }
    const port = Number(url.port)
    if (!url.hostname || !Number.isInteger(port) || port < 1) throw new StoqInvalidArgumentError('target', `${accepted}; the URL needs a host and a port`)
    return { host: url.hostname.replace(/^\[|\]$/g, ''), port }
  }
  if (typeof target === 'object' && target !== null) {
    if (typeof target.host !== 'string' || target.host.length === 0 || !Number.isInteger(target.port) || target.port < 1 || target.port > 65535) {
      throw new StoqInvalidArgumentError('target', `${accepted} (port 1-65535)`)
    }
    return { host: target.host, port: target.port }
  }
  if (typeof target !== 'string') throw new StoqInvalidArgumentError('target', accepted)
  let host: string
  let portText: string
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(target)
  if (v6) {
    host = v6[1]!
    portText = v6[2]!
  } else {
    const i = target.lastIndexOf(':')
    if (i <= 0 || target.indexOf(':') !== i) throw new StoqInvalidArgumentError('target', `${accepted}, got ${JSON.stringify(target)}`)
    host = target.slice(0, i)
    portText = target.slice(i + 1)
  }
  const port = Number(portText)
  if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) {
    throw new StoqInvalidArgumentError('target', `port must be 1-65535, got ${JSON.stringify(portText)}`)
  }
  return { host, port }
}
