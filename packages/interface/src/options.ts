/**
 * The one option-validation policy every STOQ package follows: an options object is a plain
 * object whose keys are all known (a misspelt key is refused, never ignored), and each value
 * is checked eagerly with a `StoqInvalidArgumentError` that names the key path and says what
 * is accepted. Nested objects (`server`, `transport`, `limits`) are checked the same way with
 * their path (`transport.maxStreamz`).
 */

import { StoqAbortedError, StoqInvalidArgumentError, describeValue } from './errors.js'

/** True for a plain options object: not null, an array, bytes or a function. */
export function isOptionsObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !ArrayBuffer.isView(value) && !(value instanceof ArrayBuffer)
}

/**
 * The keys of an options type, listed once as a record so that the compiler refuses a list
 * that misses an option (or names one the type does not have):
 * `optionKeys<EndpointOptions>({ host: true, port: true, ... })`.
 */
export function optionKeys<T>(keys: { [K in keyof T & string]-?: true }): Array<keyof T & string> {
  return Object.keys(keys) as Array<keyof T & string>
}

/** `prefix.key`, or `key` at the top level. */
function joinPath(prefix: string | undefined, key: string): string {
  return prefix === undefined || prefix === '' ? key : `${prefix}.${key}`
}

/** Edit distance with adjacent transpositions counted as one edit (`udpBackned` is 1 from `udpBackend`). */
function editDistance(a: string, b: string): number {
  const rows = a.length + 1
  const cols = b.length + 1
  const d: number[] = new Array<number>(rows * cols).fill(0)
  for (let i = 0; i < rows; i++) d[i * cols] = i
  for (let j = 0; j < cols; j++) d[j] = j
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let best = Math.min(d[(i - 1) * cols + j]! + 1, d[i * cols + j - 1]! + 1, d[(i - 1) * cols + j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[(i - 2) * cols + j - 2]! + 1)
      d[i * cols + j] = best
    }
  }
  return d[rows * cols - 1]!
}

/**
 * The accepted key closest to `key` when it is a likely typo: same letters in another case,
 * or at most 2 edits away (1 for keys of up to 4 characters). Null when nothing is close.
 */
export function closestKey(key: string, accepted: readonly string[]): string | null {
  const lower = key.toLowerCase()
  const sameCase = accepted.find((k) => k.toLowerCase() === lower)
  if (sameCase !== undefined) return sameCase
  const limit = key.length <= 4 ? 1 : 2
  let best: string | null = null
  let bestDistance = limit + 1
  for (const k of accepted) {
    const distance = editDistance(lower, k.toLowerCase())
    if (distance < bestDistance) {
      best = k
      bestDistance = distance
    }
  }
  return best
}

/**
 * Check that `value` is an options object whose keys are all in `accepted`, and return it.
 * `path` names the object in errors: `''` (or undefined) for a function's top-level options,
 * `'transport'` for a nested one, so that a refused key reads `transport.maxStreamz`. A key
 * given as `undefined` counts as given: a typo is a typo whatever its value.
 */
export function checkOptions<K extends string>(value: unknown, accepted: readonly K[], path?: string): Partial<Record<K, unknown>> {
  if (!isOptionsObject(value)) {
    throw new StoqInvalidArgumentError(
      path === undefined || path === '' ? 'options' : path,
      `expected an object with any of ${accepted.join(', ')}, got ${describeValue(value)}`,
    )
  }
  for (const key of Object.keys(value)) {
    if ((accepted as readonly string[]).includes(key)) continue
    const near = closestKey(key, accepted)
    throw new StoqInvalidArgumentError(
      joinPath(path, key),
      `unknown option${near === null ? '' : ` (did you mean \`${joinPath(path, near)}\`?)`}; accepted: ${accepted.length > 0 ? accepted.join(', ') : '(none)'}`,
    )
  }
  return value as Partial<Record<K, unknown>>
}

/** An integer from `min` to `max`. */
export function integerOption(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new StoqInvalidArgumentError(name, `expected an integer from ${min} to ${max}, got ${describeValue(value)}`)
  }
  return value
}

/** `true` or `false`. */
export function booleanOption(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new StoqInvalidArgumentError(name, `expected true or false, got ${describeValue(value)}`)
  return value
}

/** One of `choices`. */
export function enumOption<T extends string>(name: string, value: unknown, choices: readonly T[]): T {
  if (!(choices as readonly unknown[]).includes(value)) {
    throw new StoqInvalidArgumentError(name, `expected one of ${choices.join(', ')}, got ${describeValue(value)}`)
  }
  return value as T
}

/** An `AbortSignal` or undefined. */
export function signalOption(name: string, value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined
  if (
    typeof value !== 'object' ||
    value === null ||
    typeof (value as AbortSignal).aborted !== 'boolean' ||
    typeof (value as AbortSignal).addEventListener !== 'function' ||
    typeof (value as AbortSignal).removeEventListener !== 'function'
  ) {
    throw new StoqInvalidArgumentError(name, `expected an AbortSignal, got ${describeValue(value)}`)
  }
  return value as AbortSignal
}

/** Throw `StoqAbortedError` (with the signal's reason as `cause`) when `signal` has aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, operation: string): void {
  if (signal?.aborted === true) throw new StoqAbortedError(operation, signal.reason)
}

/**
 * Call `onAbort` (once) with a `StoqAbortedError` when `signal` aborts. Returns the function
 * that removes the listener: call it when the operation settles, so that a long-lived signal
 * keeps no listener per finished operation. An already-aborted signal calls `onAbort` at once.
 */
export function whenAborted(signal: AbortSignal | undefined, operation: string, onAbort: (err: StoqAbortedError) => void): () => void {
  if (signal === undefined) return noop
  if (signal.aborted) {
    onAbort(new StoqAbortedError(operation, signal.reason))
    return noop
  }
  const listener = (): void => onAbort(new StoqAbortedError(operation, signal.reason))
  signal.addEventListener('abort', listener, { once: true })
  return () => signal.removeEventListener('abort', listener)
}

function noop(): void {
  // Nothing to undo: no signal, no listener.
}

/**
 * `promise`, or a rejection with `StoqAbortedError` as soon as `signal` aborts (at once when it
 * already has). `onAbort` runs on abort to release what the operation holds (close a half-made
 * connection, drop a waiter). The abort listener is removed when either side settles.
 */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined, operation: string, onAbort?: (err: StoqAbortedError) => void): Promise<T> {
  if (signal === undefined) return promise
  return new Promise<T>((resolve, reject) => {
    let settled = false
    const dispose = whenAborted(signal, operation, (err) => {
      if (settled) return
      settled = true
      onAbort?.(err)
      reject(err)
    })
    promise.then(
      (v) => {
        dispose()
        if (settled) return
        settled = true
        resolve(v)
      },
      (e: unknown) => {
        dispose()
        if (settled) return
        settled = true
        reject(e)
      },
    )
  })
}
