import { StoqError } from '@stoq/interface'

/** Why a WebTransport operation failed. */
export type WebTransportFailure =
  /** The server answered the CONNECT with a non-2xx status (see `status`). */
  | 'refused'
  /** The peer broke HTTP/3 or WebTransport (see `h3Code`). */
  | 'protocol'
  /** The peer does not offer WebTransport draft-02 or extended CONNECT in its SETTINGS (see `missingSettings`). */
  | 'unsupported'
  /** The peer did not answer in time. */
  | 'timeout'
  /** The session or its connection is gone. */
  | 'closed'

export interface StoqWebTransportErrorData {
  kind: WebTransportFailure
  /** HTTP status of a refused session. */
  status?: number
  /** HTTP/3 error code involved, when there is one. */
  h3Code?: number
  /** 'unsupported': the settings the server did not send with value 1. */
  missingSettings?: WebTransportMissingSetting[]
}

/** A setting a server needs to carry WebTransport draft-02 sessions. */
export type WebTransportMissingSetting = 'SETTINGS_ENABLE_CONNECT_PROTOCOL' | 'SETTINGS_ENABLE_WEBTRANSPORT'

/** A WebTransport session could not be established or was lost. */
export class StoqWebTransportError extends StoqError<StoqWebTransportErrorData> {
  readonly kind: WebTransportFailure
  readonly status: number | undefined

  constructor(kind: WebTransportFailure, message: string, data: Omit<StoqWebTransportErrorData, 'kind'> = {}, options?: { cause?: unknown }) {
    super(kind === 'refused' ? 'STOQ_ERR_CONNECTION_REFUSED' : kind === 'closed' ? 'STOQ_ERR_CLOSED' : 'STOQ_ERR_PROTOCOL', message, { kind, ...data }, options)
    this.kind = kind
    this.status = data.status
  }
}
