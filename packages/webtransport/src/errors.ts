import { StoqError } from '@stoq/interface'

/** Why a WebTransport operation failed. */
export type WebTransportFailure =
  /** The server answered the CONNECT with a non-2xx status (see `status`). */
  | 'refused'
  /** The peer broke HTTP/3 or WebTransport (see `h3Code`). */
  | 'protocol'
  /** The peer does not offer WebTransport draft-02 (SETTINGS). */
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
}

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
