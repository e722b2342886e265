import { StoqInvalidArgumentError } from '@stoq/interface'

/** `{ signal, timeoutMs }` of a waiting call, checked. */
export function waitOptions(options: { signal?: unknown; timeoutMs?: unknown }): { signal?: AbortSignal; timeoutMs?: number } {
  if (typeof options !== 'object' || options === null) throw new StoqInvalidArgumentError('options', 'expected { signal?, timeoutMs? }')
  const { signal, timeoutMs } = options
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new StoqInvalidArgumentError('signal', 'expected an AbortSignal')
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
 * `timeoutMs` passes (rejecting with `onTimeout()`) or `signal` aborts (with its reason).
 */
export function parkWaiter<T, X extends object>(
  queue: (Waiter<T> & X)[],
  extra: X,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  onTimeout: () => Error,
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
    const onAbort = (): void => leave(abortReason(signal!))
    const timer = timeoutMs === undefined ? null : setTimeout(() => leave(onTimeout()), timeoutMs)
    if (signal?.aborted) {
      leave(abortReason(signal))
      return
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    queue.push(entry)
  })
}

/** What an aborted wait rejects with: the signal's reason (an AbortError DOMException by default). */
export function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DOMException('The operation was aborted', 'AbortError')
}
