import { StoqError } from '@stoq/transport-core'

/*
 * Errors of the SDK's own protocols (multiplex transfers, and the `stoq` command's bench and serve/send): StoqErrors
 * (`StoqError.isInstance(err)` holds) with the codes STOQ_ERR_INTEGRITY and
 * STOQ_ERR_PROTOCOL.
 */

/** Received data differs from what the sender sent (pattern, SHA-256 or length mismatch). */
export class StoqIntegrityError extends StoqError<{ what: string }> {
  constructor(what: string, message: string) {
    super('STOQ_ERR_INTEGRITY', message, { what })
  }
}

/** The peer broke the wire format of a `stoq` protocol (bad frame, truncated stream, unreadable reply). */
export class StoqProtocolError extends StoqError<{ protocol: string }> {
  constructor(protocol: string, message: string) {
    super('STOQ_ERR_PROTOCOL', message, { protocol })
  }
}
