/**
 * Wrong values of every kind, for the API-misuse tests (issue #6): each package's tests pick the
 * ones that are wrong for the argument at hand, by name, from this one table.
 */

/** One wrong value and the name a test label shows for it. */
export type WrongValue = [name: string, value: unknown]

/** The names of the table, in its order. */
export const WRONG_VALUE_NAMES = [
  'null',
  'undefined',
  'NaN',
  'Infinity',
  '-Infinity',
  '-1',
  '0',
  '1.5',
  '2^64',
  '2^62 as BigInt',
  '-1n',
  'a string',
  'a numeric string',
  'an object',
  'a null-prototype object',
  'an array',
  'an array of strings',
  'a Symbol',
  'a function',
  'a BigInt',
  'bytes',
  'an ArrayBuffer',
  'a DataView',
  'a Uint16Array',
  'a Buffer',
  'true',
] as const

export type WrongValueName = (typeof WRONG_VALUE_NAMES)[number]

/** A fresh value for each name (objects are new on every call, so no test sees another's). */
function make(name: WrongValueName): unknown {
  switch (name) {
    case 'null':
      return null
    case 'undefined':
      return undefined
    case 'NaN':
      return Number.NaN
    case 'Infinity':
      return Number.POSITIVE_INFINITY
    case '-Infinity':
      return Number.NEGATIVE_INFINITY
    case '-1':
      return -1
    case '0':
      return 0
    case '1.5':
      return 1.5
    case '2^64':
      return 2 ** 64
    case '2^62 as BigInt':
      return 2n ** 62n
    case '-1n':
      return -1n
    case 'a string':
      return 'x'
    case 'a numeric string':
      return '5'
    case 'an object':
      return {}
    case 'a null-prototype object':
      return Object.create(null)
    case 'an array':
      return [1]
    case 'an array of strings':
      return ['a', 'b']
    case 'a Symbol':
      return Symbol('s')
    case 'a function':
      return () => 1
    case 'a BigInt':
      return 10n
    case 'bytes':
      return new Uint8Array(4)
    case 'an ArrayBuffer':
      return new ArrayBuffer(4)
    case 'a DataView':
      return new DataView(new ArrayBuffer(4))
    case 'a Uint16Array':
      return new Uint16Array(4)
    case 'a Buffer':
      return Buffer.from([0x00, 0x01])
    case 'true':
      return true
  }
}

/**
 * The wrong values with these names, in the table's order; with no name, all of them. A name
 * the table does not have throws, so a typo cannot quietly shrink a test.
 */
export function wrongValues(...names: WrongValueName[]): WrongValue[] {
  for (const n of names) if (!(WRONG_VALUE_NAMES as readonly string[]).includes(n)) throw new Error(`wrongValues: no wrong value named ${JSON.stringify(n)}`)
  const wanted = names.length === 0 ? WRONG_VALUE_NAMES : WRONG_VALUE_NAMES.filter((n) => names.includes(n))
  return wanted.map((n) => [n, make(n)])
}

/** The entries of `values` whose names are not among `names` (a name not in `values` throws). */
export function withoutWrongValues(values: WrongValue[], ...names: WrongValueName[]): WrongValue[] {
  for (const n of names) if (!values.some(([name]) => name === n)) throw new Error(`withoutWrongValues: ${JSON.stringify(n)} is not in the list`)
  return values.filter(([n]) => !(names as string[]).includes(n))
}
