/**
 * Argument checks for the public entry points (internal). The codecs check their
 * arguments once, where the caller hands them over; the parsers' inner loops call
 * unchecked helpers.
 */

import { StoqInvalidArgumentError, checkOptions, describeValue as show } from '@stoq/interface'

/** A wrong value, described for an error message (the helper every package shares). */
export { show }

/** Throws `StoqInvalidArgumentError` unless `value` is a Uint8Array (a Node Buffer is one). */
export function bytesArg(name: string, value: unknown): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new StoqInvalidArgumentError(name, `expected a Uint8Array, got ${show(value)}`)
}

/** Throws unless `value` is an integer from `min` to `max`. */
export function intArg(name: string, value: unknown, min: number, max: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new StoqInvalidArgumentError(name, `expected an integer from ${min} to ${max}, got ${show(value)}`)
  }
}

/** An offset into `buf`: an integer from 0 (the end of `buf` is allowed: nothing left to read). */
export function offsetArg(value: unknown, buf: Uint8Array): asserts value is number {
  intArg('offset', value, 0, Math.max(buf.length, 0) + 2 ** 31)
}

/**
 * Throws unless `value` is a plain options object (or undefined, handled by the caller's default);
 * with `accepted`, an unknown key is refused too (the one policy of @stoq/interface's checkOptions).
 */
export function optionsArg(name: string, value: unknown, accepted?: readonly string[]): asserts value is object {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
    throw new StoqInvalidArgumentError(name, `expected an options object, got ${show(value)}`)
  }
  if (accepted !== undefined) checkOptions(value, accepted)
}

/** Throws unless `value` is a string. */
export function stringArg(name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') throw new StoqInvalidArgumentError(name, `expected a string, got ${show(value)}`)
}

/** Throws unless `value` can be iterated (an array, a Map, a generator...). */
export function iterableArg(name: string, value: unknown): asserts value is Iterable<unknown> {
  if (value === null || value === undefined || typeof (value as { [Symbol.iterator]?: unknown })[Symbol.iterator] !== 'function' || typeof value === 'string') {
    throw new StoqInvalidArgumentError(name, `expected an iterable (an array, a Map...), got ${show(value)}`)
  }
}

/** An optional boolean option: undefined means false. */
export function boolOption(name: string, value: unknown): boolean {
  if (value === undefined) return false
  if (typeof value !== 'boolean') throw new StoqInvalidArgumentError(name, `expected a boolean, got ${show(value)}`)
  return value
}
