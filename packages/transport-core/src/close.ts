import {
  checkOptions,
  signalOption,
  StoqConnectionClosedError,
  StoqInvalidArgumentError,
  StoqConnectionRefusedError,
  StoqIdleTimeoutError,
  StoqTlsError,
  StoqVersionNegotiationError,
  type CloseInfo,
  type EngineCloseInfo,
} from '@stoq/interface'

/** Transport error codes 0x100-0x1ff carry a TLS alert (RFC 9001 §4.8). */
export const CRYPTO_ERROR_START = 0x100
const CRYPTO_ERROR_END = 0x1ff
/** TLS alert certificate_unknown: what rustls sends for a CA certificate used as the server's. */
export const ALERT_CERTIFICATE_UNKNOWN = 46
/** Reason of our close when the server's certificate is a CA certificate (quiche path). */
export const CA_LEAF_REASON = 'server certificate is a CA certificate'
/**
 * Why a client refuses a server whose certificate is marked CA:TRUE, and what to do instead.
 * webpki (quinn) refuses it as CaUsedAsEndEntity; BoringSSL (quiche) accepts it, so the
 * connection checks the leaf itself (`onEstablished`) and both engines say the same.
 */
const CA_LEAF_ADVICE =
  "the server's certificate is a CA certificate (basicConstraints CA:TRUE); issue a leaf certificate from that CA, or connect with `pin` (its SHA-256 fingerprint)"

/** The typed error of a connection closed by a TLS alert (a crypto transport error). */
export function tlsError(ci: CloseInfo): StoqTlsError {
  const alert = ci.code - CRYPTO_ERROR_START
  const caLeaf = !ci.remote && (ci.reason === CA_LEAF_REASON || ci.reason.includes('CaUsedAsEndEntity'))
  const what = caLeaf
    ? `: ${CA_LEAF_ADVICE} (alert ${alert})`
    : ` alert ${alert}${ci.reason ? ` (${ci.reason})` : ''} ${ci.remote ? 'from the peer' : 'raised locally'}`
  return new StoqTlsError(`TLS handshake failed${what}`, { ...ci, alert })
}
const CONNECTION_REFUSED = 0x2

/** The typed error of a connection that ended as the engine reports (`ci`: the same, decoded). */
export function closeError(info: EngineCloseInfo, ci: CloseInfo): Error {
  if (ci.idleTimeout) return new StoqIdleTimeoutError(ci)
  if (info.offeredVersions !== undefined) return new StoqVersionNegotiationError(info.offeredVersions, ci)
  if (!ci.app && ci.code >= CRYPTO_ERROR_START && ci.code <= CRYPTO_ERROR_END) return tlsError(ci)
  if (!ci.app && ci.code === CONNECTION_REFUSED && ci.remote) return new StoqConnectionRefusedError(ci)
  return new StoqConnectionClosedError(ci)
}

/** Application error codes must fit a QUIC varint (62 bits); we accept safe integers. */
const MAX_CODE = Number.MAX_SAFE_INTEGER
/** Reason phrases are sent in one CONNECTION_CLOSE frame: keep them short. */
const MAX_REASON_BYTES = 1024
/** Largest `close()` timeout accepted (10 minutes, like the endpoint's closeTimeoutMs). */
const MAX_CLOSE_TIMEOUT_MS = 600_000

const encoder = new TextEncoder()

/** `conn.close()`'s arguments, checked: the reason as bytes and the graceful phase's bound. */
export function closeArgs(
  code: number,
  reason: string,
  options: { timeoutMs?: number; signal?: AbortSignal },
  defaultTimeoutMs: number,
): { bytes: Uint8Array; timeoutMs: number; signal: AbortSignal | undefined } {
  if (!Number.isInteger(code) || code < 0 || code > MAX_CODE) {
    throw new StoqInvalidArgumentError('code', `expected a non-negative integer, got ${String(code)}`)
  }
  if (typeof reason !== 'string') throw new StoqInvalidArgumentError('reason', 'expected a string')
  const bytes = encoder.encode(reason)
  if (bytes.length > MAX_REASON_BYTES) {
    throw new StoqInvalidArgumentError('reason', `expected at most ${MAX_REASON_BYTES} bytes, got ${bytes.length}`)
  }
  checkOptions(options, ['timeoutMs', 'signal'])
  const signal = signalOption('signal', options.signal)
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs
  if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_CLOSE_TIMEOUT_MS) {
    throw new StoqInvalidArgumentError('timeoutMs', `expected an integer from 0 to ${MAX_CLOSE_TIMEOUT_MS} (ms), got ${String(timeoutMs)}`)
  }
  return { bytes, timeoutMs, signal }
}
