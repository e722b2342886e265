import type dgram from 'node:dgram'

/**
 * The file descriptor libuv holds for a bound `dgram` socket, or -1.
 *
 * Node does not expose it publicly. The UDP handle (UDPWrap) has an `fd`
 * getter on Unix; it is reached through the socket's internal state symbol,
 * which avoids the DEP0112 warning that reading `socket._handle` prints, with
 * `_handle` as the fallback for Node versions that name the symbol otherwise.
 */
export function socketFd(socket: dgram.Socket): number {
  const record = socket as unknown as Record<symbol | string, unknown>
  let handle: unknown
  for (const sym of Object.getOwnPropertySymbols(socket)) {
    if (sym.description === 'state symbol') {
      handle = (record[sym] as { handle?: unknown } | undefined)?.handle
      break
    }
  }
  if (handle === undefined || handle === null) handle = record['_handle']
  const fd = (handle as { fd?: unknown } | null | undefined)?.fd
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : -1
}
