import { StoqAbortedError, StoqInvalidArgumentError, checkOptions, signalOption } from '@stoq/interface'

export const WAIT_KEYS = ['signal', 'timeoutMs'] as const
export const CREATE_STREAM_KEYS = ['unidirectional', 'signal', 'timeoutMs'] as const

/** `{ signal, timeoutMs }` of a waiting call, checked. */
export function waitOptions(
  options: { signal?: unknown; timeoutMs?: unknown },
  accepted: readonly string[] = WAIT_KEYS,
): { signal?: AbortSignal; timeoutMs?: number } {
  const { signal: given, timeoutMs } = checkOptions(options, accepted) as { signal?: unknown; timeoutMs?: unknown }
  const signal = signalOption('signal', given)
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 2 ** 31 - 1)) {
    throw new StoqInvalidArgumentError('timeoutMs', 'expected an integer number of ms')
  }
  return { ...(signal !== undefined ? { signal: signal as AbortSignal } : {}), ...(timeoutMs !== undefined ? { timeoutMs: timeoutMs as number } : {}) }
}

/** A call waiting in a queue (accept, createStream): settled by whoever serves the queue. */
export interface Waiter<T> {
  resolve: (value: T) => void
  reject: (err: Error) => void
}

/**
 * Queue a waiting call: it settles when the queue's owner serves it, or leaves the queue when
 * `timeoutMs` passes (rejecting with `onTimeout()`) or `signal` aborts (with StoqAbortedError,
 * the signal's reason as `cause`). The abort listener goes when the call settles.
 */
export function parkWaiter<T, X extends object>(
  queue: (Waiter<T> & X)[],
  extra: X,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  onTimeout: () => Error,
  operation: string,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = (): void => {
      if (timer) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const leave = (err: Error): void => {
      const i = queue.indexOf(entry)
      if (i >= 0) queue.splice(i, 1)
      done()
      reject(err)
    }
    const entry = Object.assign(extra, {
      resolve: (v: T): void => {
        done()
        resolve(v)
      },
      reject: (err: Error): void => {
        done()
        reject(err)
      },
    }) as Waiter<T> & X
    const onAbort = (): void => leave(new StoqAbortedError(operation, signal!.reason))
    const timer = timeoutMs === undefined ? null : setTimeout(() => leave(onTimeout()), timeoutMs)
    if (signal?.aborted) {
      leave(new StoqAbortedError(operation, signal.reason))
      return
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    queue.push(entry)
  })
}
