/** Argument checks shared by the public entry points (internal). */

import { StoqInvalidArgumentError, describeValue as show } from '@stoq/interface'

/** Longest delay a Node timer takes (2^31 - 1 ms); a larger one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** A wrong value, described for an error message (the helper every package shares). */
export { show }

/** True for a plain options object (not null, an array or bytes). */
export function isOptions(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !ArrayBuffer.isView(value)
}

/** Throws unless `value` is an options object. */
export function optionsArg(name: string, value: unknown, expected = 'an options object'): asserts value is object {
  if (!isOptions(value)) throw new StoqInvalidArgumentError(name, `expected ${expected}, got ${show(value)}`)
}

/** Throws unless `value` is a timer delay in milliseconds: an integer from 0 to 2^31 - 1. */
export function timeoutArg(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_TIMER_MS) {
    throw new StoqInvalidArgumentError(name, `expected an integer from 0 to ${MAX_TIMER_MS} (ms), got ${show(value)}`)
  }
}
