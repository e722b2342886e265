import { StoqError, StoqInvalidArgumentError, type StoqErrorCode } from '@stoq/transport-core'

import { StoqProtocolError } from '../errors.js'

export { StoqIntegrityError, StoqProtocolError } from '../errors.js'

/** The remote side refused or failed an operation and said why (its error code is `code`). */
export class StoqRemoteError extends StoqError<{ remoteCode: string; remote: true }> {
  constructor(remoteCode: string, message: string) {
    const code = /^STOQ_ERR_[A-Z_]+$/.test(remoteCode) ? remoteCode : 'STOQ_ERR_PROTOCOL'
    super(code as StoqErrorCode, message, { remoteCode, remote: true })
  }
}

/** A bad command line: unknown option, bad or missing value, bad HOST:PORT. The CLI exits with 2. */
export class StoqUsageError extends StoqInvalidArgumentError {
  readonly command: string
  constructor(command: string, argument: string, message: string) {
    super(argument, message)
    this.command = command
    // The generic "Invalid <argument>: ..." prefix reads badly for options; say it plainly.
    this.message = message
  }
}

/** `code: message` for any error, as the CLI prints it. */
export function describeError(err: unknown): string {
  if (StoqError.isInstance(err)) return `${err.code}: ${err.message}`
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message
  }
  return String(err)
}

/**
 * Wait for `p`, but give up after `ms` without it settling: `onStall` runs (to
 * reset the stream, say) and the result rejects with StoqProtocolError. For
 * writes a peer never makes room for (it stopped reading but keeps the
 * connection alive), which would otherwise wait for ever.
 */
export function unlessStalled<T>(p: Promise<T>, ms: number, protocol: string, what: string, onStall: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        onStall()
        reject(new StoqProtocolError(protocol, `${what ? `${what}: ` : ''}no progress for ${ms / 1000} s (the peer stopped reading)`))
      }, ms)
    }),
  ]).finally(() => clearTimeout(timer))
}
