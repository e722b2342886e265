/**
 * STOQ's error classes. Every error thrown or rejected by a STOQ package is a
 * `StoqError` with a stable string `code` (`STOQ_ERR_*`). Because several copies
 * of a package can coexist in node_modules, `instanceof` is not reliable: use
 * `StoqError.isInstance(err)` (a `Symbol.for` brand) or compare `err.code`.
 */

const BRAND = Symbol.for('@stoq/error')

export type StoqErrorCode =
  | 'STOQ_ERR_INVALID_ARG'
  | 'STOQ_ERR_CLOSED'
  | 'STOQ_ERR_SOCKET'
  | 'STOQ_ERR_ENGINE'
  | 'STOQ_ERR_TLS'
  | 'STOQ_ERR_CERT_PIN'
  | 'STOQ_ERR_HANDSHAKE_TIMEOUT'
  | 'STOQ_ERR_VERSION_NEGOTIATION'
  | 'STOQ_ERR_IDLE_TIMEOUT'
  | 'STOQ_ERR_CONNECTION_CLOSED'
  | 'STOQ_ERR_CONNECTION_REFUSED'
  | 'STOQ_ERR_STREAM_LIMIT'
  | 'STOQ_ERR_STREAM_RESET'
  | 'STOQ_ERR_STREAM_STOPPED'
  | 'STOQ_ERR_STREAM_STATE'
  | 'STOQ_ERR_DATAGRAM_TOO_LARGE'
  | 'STOQ_ERR_DATAGRAM_UNSUPPORTED'
  | 'STOQ_ERR_POOL_EXHAUSTED'
  | 'STOQ_ERR_POOL_MISUSE'
  | 'STOQ_ERR_UNSUPPORTED'
  | 'STOQ_ERR_RESOURCE_LIMIT'
  | 'STOQ_ERR_INTEGRITY'
  | 'STOQ_ERR_PROTOCOL'
  | 'STOQ_ERR_H3'
  | 'STOQ_ERR_ABORTED'

export class StoqError<D = unknown> extends Error {
  /** Stable machine-readable code, e.g. `STOQ_ERR_TLS`. */
  readonly code: StoqErrorCode
  /** Typed details (peer close code, reason, transport error code...). */
  readonly data: D

  constructor(code: StoqErrorCode, message: string, data?: D, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.data = data as D
    Object.defineProperty(this, BRAND, { value: true })
  }

  override get name(): string {
    return this.constructor.name
  }

  /** True for any STOQ error, whatever copy of this package created it. */
  static isInstance(value: unknown): value is StoqError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true
  }
}

/** An API argument or option had the wrong type or an out-of-range value. */
export class StoqInvalidArgumentError extends StoqError<{ argument: string }> {
  constructor(argument: string, message: string) {
    super('STOQ_ERR_INVALID_ARG', `Invalid ${argument}: ${message}`, { argument })
  }
}

/** The object (endpoint, connection, stream, pool) is closed. */
export class StoqClosedError extends StoqError<{ what: string }> {
  constructor(what: string, message = `${what} is closed`, options?: { cause?: unknown }) {
    super('STOQ_ERR_CLOSED', message, { what }, options)
  }
}

/** A socket operation failed (bind, send). */
export class StoqSocketError extends StoqError<{ syscall?: string; errno?: string }> {
  constructor(message: string, data: { syscall?: string; errno?: string } = {}, options?: { cause?: unknown }) {
    super('STOQ_ERR_SOCKET', message, data, options)
  }
}

/** The QUIC engine reported an internal failure. */
export class StoqEngineError extends StoqError<{ engine: string }> {
  constructor(engine: string, message: string, options?: { cause?: unknown }) {
    super('STOQ_ERR_ENGINE', message, { engine }, options)
  }
}

/** Details of how a connection ended. */
export interface CloseInfo {
  /** True when the peer closed the connection; false when we did (or a timeout). */
  remote: boolean
  /** True for an application close (CONNECTION_CLOSE 0x1d), false for a transport close. */
  app: boolean
  /** Application or transport error code. */
  code: number
  /** Reason phrase (UTF-8 decoded, may be empty). */
  reason: string
  /** True when the connection ended because of the idle timeout. */
  idleTimeout: boolean
}

/** TLS refused the handshake (untrusted certificate, wrong name, no common ALPN...). */
export class StoqTlsError extends StoqError<CloseInfo & { alert?: number }> {
  constructor(message: string, data: CloseInfo & { alert?: number }) {
    super('STOQ_ERR_TLS', message, data)
  }
}

/** The peer's certificate did not match the pinned SHA-256 fingerprint. */
export class StoqCertificatePinError extends StoqError<{ expected: string[]; actual: string | null }> {
  constructor(expected: string[], actual: string | null) {
    super('STOQ_ERR_CERT_PIN', `Peer certificate fingerprint ${actual ?? '(none)'} matches none of the pinned fingerprints`, { expected, actual })
  }
}

/** The handshake did not complete within the configured time. */
export class StoqHandshakeTimeoutError extends StoqError<{ timeoutMs: number }> {
  constructor(timeoutMs: number) {
    super('STOQ_ERR_HANDSHAKE_TIMEOUT', `QUIC handshake did not complete within ${timeoutMs} ms`, { timeoutMs })
  }
}

/** QUIC version 1, the one version STOQ's engines speak. */
export const QUIC_V1 = 0x00000001

/**
 * The server answered with Version Negotiation and offers no QUIC version we speak
 * (RFC 9000 §6): `data.offered` lists its versions (empty when unknown).
 */
export class StoqVersionNegotiationError extends StoqError<CloseInfo & { offered: number[] }> {
  constructor(offered: number[], info: CloseInfo) {
    const hex = (v: number): string => `0x${v.toString(16).padStart(8, '0')}`
    super(
      'STOQ_ERR_VERSION_NEGOTIATION',
      `No common QUIC version with the server: it offered ${offered.length > 0 ? offered.map(hex).join(', ') : '(none readable)'}, this endpoint speaks QUIC v1 (${hex(QUIC_V1)})`,
      { ...info, offered },
    )
  }
}

/** The connection was idle for longer than the negotiated idle timeout. */
export class StoqIdleTimeoutError extends StoqError<CloseInfo> {
  constructor(info: CloseInfo) {
    super('STOQ_ERR_IDLE_TIMEOUT', 'Connection closed by idle timeout', info)
  }
}

/** The connection is closed (by us or by the peer); `data` says how. */
export class StoqConnectionClosedError extends StoqError<CloseInfo> {
  constructor(info: CloseInfo, message?: string) {
    super(
      'STOQ_ERR_CONNECTION_CLOSED',
      message ??
        `Connection closed by ${info.remote ? 'peer' : 'local endpoint'} with ${info.app ? 'application' : 'transport'} code ${info.code}${info.reason ? ` (${info.reason})` : ''}`,
      info,
    )
  }
}

/** The server refused the connection (connection limit, shutting down). */
export class StoqConnectionRefusedError extends StoqError<CloseInfo> {
  constructor(info: CloseInfo) {
    super('STOQ_ERR_CONNECTION_REFUSED', `Connection refused by peer${info.reason ? `: ${info.reason}` : ''}`, info)
  }
}

/** No more streams may be opened now: the peer's stream limit is reached. */
export class StoqStreamLimitError extends StoqError<{ bidirectional: boolean }> {
  constructor(bidirectional: boolean) {
    super('STOQ_ERR_STREAM_LIMIT', `Peer's limit of concurrent ${bidirectional ? 'bidirectional' : 'unidirectional'} streams is reached`, { bidirectional })
  }
}

/** The peer reset the stream (RESET_STREAM) with `data.code`. */
export class StoqStreamResetError extends StoqError<{ streamId: number; code: number }> {
  constructor(streamId: number, code: number) {
    super('STOQ_ERR_STREAM_RESET', `Stream ${streamId} was reset by the peer with code ${code}`, { streamId, code })
  }
}

/** The peer asked us to stop sending (STOP_SENDING) with `data.code`. */
export class StoqStreamStoppedError extends StoqError<{ streamId: number; code: number }> {
  constructor(streamId: number, code: number) {
    super('STOQ_ERR_STREAM_STOPPED', `Peer stopped reading stream ${streamId} with code ${code}`, { streamId, code })
  }
}

/** An operation is not valid in the stream's state (write on a receive-only stream...). */
export class StoqStreamStateError extends StoqError<{ streamId: number }> {
  constructor(streamId: number, message: string) {
    super('STOQ_ERR_STREAM_STATE', message, { streamId })
  }
}

/** A datagram is larger than the peer accepts on this path. */
export class StoqDatagramTooLargeError extends StoqError<{ size: number; maxSize: number }> {
  constructor(size: number, maxSize: number) {
    super('STOQ_ERR_DATAGRAM_TOO_LARGE', `Datagram of ${size} bytes exceeds the maximum of ${maxSize} bytes`, {
      size,
      maxSize,
    })
  }
}

/** Datagrams were not negotiated (the peer did not advertise max_datagram_frame_size). */
export class StoqDatagramUnsupportedError extends StoqError<Record<string, never>> {
  constructor() {
    super('STOQ_ERR_DATAGRAM_UNSUPPORTED', 'The peer does not accept QUIC datagrams (RFC 9221)', {})
  }
}

/** The buffer pool has no free buffer and its exhaustion policy is `error`. */
export class StoqPoolExhaustedError extends StoqError<{ capacity: number }> {
  constructor(capacity: number) {
    super('STOQ_ERR_POOL_EXHAUSTED', `Buffer pool exhausted (${capacity} buffers in use)`, { capacity })
  }
}

/** A pool buffer was released twice or used after release (debug mode). */
export class StoqPoolMisuseError extends StoqError<{ index: number }> {
  constructor(index: number, message: string) {
    super('STOQ_ERR_POOL_MISUSE', message, { index })
  }
}

/** The feature is not available on this machine or engine. */
export class StoqUnsupportedError extends StoqError<{ feature: string }> {
  constructor(feature: string, message: string) {
    super('STOQ_ERR_UNSUPPORTED', message, { feature })
  }
}

/**
 * An endpoint budget (its `limits`) is full: e.g. a dial whose connection window does not
 * fit the receive budget. `data.limit` names the limit, with what is in use and its size.
 */
export class StoqResourceLimitError extends StoqError<{ limit: string; used: number; max: number }> {
  constructor(limit: string, used: number, max: number, message: string) {
    super('STOQ_ERR_RESOURCE_LIMIT', message, { limit, used, max })
  }
}

/**
 * The caller's `AbortSignal` aborted the operation (`data.operation` names it, e.g. `connect`).
 * `cause` is the signal's `reason` (an `AbortError` DOMException for a plain `abort()`, or
 * whatever was passed to `abort(reason)`, e.g. a `TimeoutError` from `AbortSignal.timeout`).
 */
export class StoqAbortedError extends StoqError<{ operation: string }> {
  constructor(operation: string, reason?: unknown) {
    super('STOQ_ERR_ABORTED', `${operation} was aborted by its signal`, { operation }, { cause: reason })
  }
}

/**
 * A wrong value, described for an error message: every package's argument checks use this one.
 * Never throws (`String()` does on an object without a prototype, a template literal on a
 * Symbol) and never echoes PEM text, which may be a private key passed in the wrong place.
 */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') {
    if (value.includes('-----BEGIN')) return `PEM text of ${value.length} characters (not shown)`
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}...` : value)
  }
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of ${value.byteLength} bytes`
  if (value instanceof ArrayBuffer) return 'an ArrayBuffer'
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'bigint') return `${value}n`
  return String(value)
}
