/**
 * Argument checks shared by the public entry points. Internal: not exported
 * from the package.
 */

/**
 * A wrong value, described for an error message. Never throws: `String()` does on an
 * object without a prototype, a template literal does on a Symbol.
 */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}...` : value)
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'bigint') return `BigInt ${value}n`
  return String(value)
}
