import { ReadableStream } from 'node:stream/web'
import { describe, expect, it } from 'vitest'
import { StoqClosedError, StoqInvalidArgumentError } from '@stoq/interface'
import { WRONG_VALUE_NAMES, pattern, readAll, readAllText, sha256Hex, stoqErrorOf, waitFor, withoutWrongValues, wrongValues } from '../src/index.js'

describe('kit: wrongValues', () => {
  it('returns every value by default, each under its name, in the table order', () => {
    const all = wrongValues()
    expect(all.map(([n]) => n)).toEqual([...WRONG_VALUE_NAMES])
    const byName = new Map(all)
    expect(byName.get('null')).toBeNull()
    expect(byName.has('undefined')).toBe(true)
    expect(byName.get('undefined')).toBeUndefined()
    expect(byName.get('NaN')).toBeNaN()
    expect(byName.get('2^64')).toBe(2 ** 64)
    expect(byName.get('2^62 as BigInt')).toBe(2n ** 62n)
    expect(typeof byName.get('a Symbol')).toBe('symbol')
    expect(Object.getPrototypeOf(byName.get('a null-prototype object'))).toBeNull()
    expect(byName.get('bytes')).toBeInstanceOf(Uint8Array)
  })

  it('picks by name in table order, and refuses a name it does not have', () => {
    expect(wrongValues('true', 'null', '-1')).toEqual([
      ['null', null],
      ['-1', -1],
      ['true', true],
    ])
    expect(() => wrongValues('nul' as never)).toThrow(/no wrong value named "nul"/)
  })

  it('gives fresh objects on each call', () => {
    const a = new Map(wrongValues('an object', 'an array'))
    const b = new Map(wrongValues('an object', 'an array'))
    expect(a.get('an object')).not.toBe(b.get('an object'))
    expect(a.get('an array')).not.toBe(b.get('an array'))
  })

  it('withoutWrongValues drops names, and refuses one that is not in the list', () => {
    const some = wrongValues('null', 'NaN', 'true')
    expect(withoutWrongValues(some, 'null').map(([n]) => n)).toEqual(['NaN', 'true'])
    expect(() => withoutWrongValues(some, 'bytes')).toThrow(/"bytes" is not in the list/)
  })
})

describe('kit: pattern and sha256Hex', () => {
  it('is deterministic per seed and differs between seeds', () => {
    expect(pattern(1000, 7)).toEqual(pattern(1000, 7))
    expect(pattern(1000, 7)).not.toEqual(pattern(1000, 8))
    expect(pattern(0)).toHaveLength(0)
    // xorshift32 from seed 1: 1 -> 270369 (0x42021) -> low byte 0x21.
    expect(pattern(1)[0]).toBe(0x21)
    // Seed 0 would stick at 0: it is taken as 1.
    expect(pattern(16, 0)).toEqual(pattern(16, 1))
  })

  it('hashes bytes and chunk lists alike', () => {
    const data = pattern(100, 3)
    expect(sha256Hex(data)).toBe(sha256Hex([data.subarray(0, 40), data.subarray(40)]))
    expect(sha256Hex(new Uint8Array(0))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  })
})

describe('kit: readAll', () => {
  it('joins the chunks of a ReadableStream in order', async () => {
    const chunks = [pattern(10, 1), pattern(0), pattern(5, 2)]
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (const x of chunks) c.enqueue(x)
        c.close()
      },
    })
    expect(await readAll(stream)).toEqual(new Uint8Array([...chunks[0]!, ...chunks[2]!]))
  })

  it('reads an async iterable, and text as UTF-8', async () => {
    async function* gen(): AsyncGenerator<Uint8Array> {
      yield new TextEncoder().encode('hé')
      yield new TextEncoder().encode('llo')
    }
    expect(await readAllText(gen())).toBe('héllo')
  })

  it('rejects when the stream errors', async () => {
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.error(new Error('reset'))
      },
    })
    await expect(readAll(stream)).rejects.toThrow('reset')
  })
})

describe('kit: waitFor', () => {
  it('resolves once the condition holds, sync or async', async () => {
    let n = 0
    await waitFor(() => ++n >= 3, { everyMs: 1 })
    expect(n).toBe(3)
    let m = 0
    await waitFor(async () => ++m >= 2, { everyMs: 1 })
    expect(m).toBe(2)
  })

  it('throws saying what it waited for, with the detail', async () => {
    await expect(waitFor(() => false, { what: 'the peer', limitMs: 20, everyMs: 1, detail: () => 'seen 0' })).rejects.toThrow(
      'the peer: not reached within 20 ms; seen 0',
    )
  })
})

describe('kit: stoqErrorOf', () => {
  it('returns the StoqError a call throws or rejects with', async () => {
    const thrown = await stoqErrorOf(() => {
      throw new StoqInvalidArgumentError('port', 'expected a port')
    })
    expect(thrown.code).toBe('STOQ_ERR_INVALID_ARG')
    const rejected = await stoqErrorOf(() => Promise.reject(new StoqClosedError('endpoint')))
    expect(rejected.code).toBe('STOQ_ERR_CLOSED')
  })

  it('rethrows anything else, and fails when the call succeeds', async () => {
    await expect(stoqErrorOf(() => Promise.reject(new TypeError('not ours')))).rejects.toThrow('not ours')
    await expect(stoqErrorOf(() => 42)).rejects.toThrow(/expected a StoqError/)
  })
})
