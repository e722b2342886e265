import { describe, expect, it } from 'vitest'
import { boundedOutcome, type MisuseOutcome, wrongValues } from '@stoq/compliance-tests'
import { inspect } from 'node:util'
import { StoqError } from '@stoq/interface'
import * as api from '../src/index.js'
import { RecordReader, RecordRing, RecordWriter, attachBufferPool, createBufferPool, type SharedBufferPool } from '../src/index.js'

/**
 * API misuse (issue #6): every public entry point given wrong types, out-of-range
 * numbers or closed objects answers with a typed StoqError (thrown or rejected)
 * within a bounded time: never a TypeError, a corrupted free list, a crash or a hang.
 */

const LIMIT_MS = 2000

const WRONG = wrongValues(
  'null',
  'NaN',
  'Infinity',
  '-1',
  '1.5',
  '2^64',
  'a string',
  'an object',
  'a null-prototype object',
  'an array',
  'a Symbol',
  'a function',
  'a BigInt',
  'bytes',
)
/** For an option, `null` and `undefined` mean "the default". */
const OPT = WRONG.filter(([n]) => n !== 'null')

type Outcome = MisuseOutcome

const outcome = (fn: () => unknown): Promise<Outcome> => boundedOutcome(fn, LIMIT_MS)

async function expectTyped(label: string, fn: () => unknown, code: string, argument?: string): Promise<void> {
  const r = await outcome(fn)
  if (r.ok) throw new Error(`${label}: expected ${code}, got a result: ${inspect(r.value, { depth: 0 })}`)
  if (!StoqError.isInstance(r.error)) throw new Error(`${label}: expected ${code}, got a non-STOQ error: ${inspect(r.error)}`)
  expect(r.error.code, label).toBe(code)
  if (argument !== undefined) expect((r.error.data as { argument?: string }).argument, label).toBe(argument)
}

/** Every buffer of the pool can be taken exactly once: the free list is intact. */
function expectIntact(pool: SharedBufferPool): void {
  const capacity = pool.stats().capacity
  const taken: number[] = []
  for (let i = 0; i < capacity; i++) taken.push(pool.acquire())
  expect(new Set(taken).size).toBe(capacity)
  expect(pool.tryAcquire()).toBe(-1)
  for (const index of taken) pool.release(index)
  expect(pool.stats().inUse).toBe(0)
}

/** Index values that are not a buffer of a 4-buffer pool. */
const BAD_INDEX: Array<[string, unknown]> = [...WRONG, ['4 (= capacity)', 4], ['1e9', 1e9], ['-0.5', -0.5], ['"0"', '0'], ['0n', 0n], ['undefined', undefined]]

describe('mempool: API misuse', () => {
  it('covers every export of src/index.ts', () => {
    const constants = [
      'DEFAULT_ALIGNMENT',
      'DEFAULT_BUFFER_SIZE',
      'DEFAULT_DEBUG',
      'DEFAULT_EXHAUSTION',
      'DEFAULT_INITIAL_BUFFERS',
      'DEFAULT_MAX_BUFFERS',
      'DEFAULT_SHARED',
      'DEFAULT_RECORD_RING_CAPACITY',
    ]
    expect(Object.keys(api).sort()).toEqual(
      ['RecordRing', 'RecordReader', 'RecordWriter', 'isRecordChannelMessage', 'attachBufferPool', 'createBufferPool', ...constants].sort(),
    )
    for (const name of constants) expect(typeof (api as Record<string, unknown>)[name]).not.toBe('function')
  })

  it('createBufferPool refuses options that are not an object, and every wrong option', async () => {
    for (const [label, v] of WRONG.filter(([n]) => n !== 'an object' && n !== 'a null-prototype object' && n !== 'a function')) {
      await expectTyped(`createBufferPool(${label})`, () => createBufferPool(v as never), 'STOQ_ERR_INVALID_ARG', 'options')
    }
    const numeric: Record<string, [number, number]> = { bufferSize: [64, 16 * 1024 * 1024], maxBuffers: [1, 2 ** 20 - 1], initialBuffers: [1, 64] }
    for (const [option, [min, max]] of Object.entries(numeric)) {
      for (const [label, v] of [...OPT, ['min - 1', min - 1], ['max + 1', max + 1]] as Array<[string, unknown]>) {
        await expectTyped(
          `${option} = ${label}`,
          () => createBufferPool({ [option]: v, ...(option === 'initialBuffers' ? { maxBuffers: 64 } : {}) } as never),
          'STOQ_ERR_INVALID_ARG',
          option,
        )
      }
    }
    for (const option of ['exhaustion', 'debug', 'shared']) {
      for (const [label, v] of OPT) {
        await expectTyped(`${option} = ${label}`, () => createBufferPool({ [option]: v } as never), 'STOQ_ERR_INVALID_ARG', option)
      }
    }
    // Unknown keys name themselves (the argument is the key, not "options").
    for (const [options, hooks, argument] of [
      [{ size: 1 }, {}, 'size'],
      [{ bufferSise: 64 }, {}, 'bufferSise'],
      [{ maxBuffer: 4 }, {}, 'maxBuffer'],
      [{}, { onslab: () => {} }, 'hooks.onslab'],
    ] as Array<[object, object, string]>) {
      await expectTyped(`unknown option ${argument}`, () => createBufferPool(options as never, hooks as never), 'STOQ_ERR_INVALID_ARG', argument)
    }
  })

  it('createBufferPool refuses hooks that are not an object with a function onSlab', async () => {
    for (const [label, v] of WRONG.filter(([n]) => !['an object', 'a null-prototype object', 'a function', 'bytes'].includes(n))) {
      await expectTyped(`hooks = ${label}`, () => createBufferPool({ initialBuffers: 1, maxBuffers: 1 }, v as never), 'STOQ_ERR_INVALID_ARG', 'hooks')
    }
    for (const [label, v] of OPT.filter(([n]) => n !== 'a function')) {
      await expectTyped(
        `onSlab = ${label}`,
        () => createBufferPool({ initialBuffers: 1, maxBuffers: 1 }, { onSlab: v } as never),
        'STOQ_ERR_INVALID_ARG',
        'onSlab',
      )
    }
  })

  it('attachBufferPool refuses anything share() did not return', async () => {
    const pool = createBufferPool({ bufferSize: 64, initialBuffers: 2, maxBuffers: 4 })
    const handle = pool.share()
    const broken: Array<[string, unknown]> = [
      ...WRONG,
      ['undefined', undefined],
      ['control = null', { ...handle, control: null }],
      ['options = null', { ...handle, options: null }],
      ['options = Symbol', { ...handle, options: Symbol('o') }],
      ['slabs = null', { ...handle, slabs: null }],
      ['slabs of numbers', { ...handle, slabs: handle.slabs.map(() => 1) }],
      ['a smaller control block', { ...handle, control: new SharedArrayBuffer(64) }],
      ['debug = true', { ...handle, options: { ...handle.options, debug: true } }],
      ['maxBuffers = 8', { ...handle, options: { ...handle.options, maxBuffers: 8 } }],
    ]
    for (const [label, v] of broken) {
      await expectTyped(`attachBufferPool(${label})`, () => attachBufferPool(v as never), 'STOQ_ERR_INVALID_ARG')
    }
    pool.close()
    // A non-shared pool cannot be shared.
    const local = createBufferPool({ shared: false, initialBuffers: 1, maxBuffers: 1 })
    await expectTyped('share() of a non-shared pool', () => local.share(), 'STOQ_ERR_INVALID_ARG', 'shared')
    local.close()
  })

  for (const debug of [false, true]) {
    describe(`debug: ${debug}`, () => {
      const make = (): SharedBufferPool => createBufferPool({ bufferSize: 64, initialBuffers: 4, maxBuffers: 4, exhaustion: 'error', debug })

      it('release(), view() and checkPoison() refuse every index that is not a buffer', async () => {
        const pool = make()
        const held = pool.acquire()
        for (const [label, v] of BAD_INDEX) {
          await expectTyped(`release(${label})`, () => pool.release(v as never), 'STOQ_ERR_INVALID_ARG', 'index')
          await expectTyped(`view(${label})`, () => pool.view(v as never), 'STOQ_ERR_INVALID_ARG', 'index')
          await expectTyped(`checkPoison(${label})`, () => pool.checkPoison(v as never), 'STOQ_ERR_INVALID_ARG', debug ? 'index' : 'debug')
        }
        expect(pool.stats().inUse).toBe(1)
        pool.release(held)
        expectIntact(pool)
        pool.close()
      })

      it('refuses a double release and a release of a buffer never acquired, and stays consistent', async () => {
        const pool = make()
        const a = pool.acquire()
        const b = pool.acquire()
        pool.release(a)
        await expectTyped('double release', () => pool.release(a), 'STOQ_ERR_POOL_MISUSE')
        // The two free ones were never acquired.
        const free = [0, 1, 2, 3].filter((i) => i !== a && i !== b)
        for (const i of free) await expectTyped(`release(${i}) never acquired`, () => pool.release(i), 'STOQ_ERR_POOL_MISUSE')
        expect(pool.stats().inUse).toBe(1)
        pool.release(b)
        await expectTyped('double release of b', () => pool.release(b), 'STOQ_ERR_POOL_MISUSE')
        expect(pool.stats().inUse).toBe(0)
        expectIntact(pool)
        pool.close()
      })

      it('reports exhaustion under the error policy with a typed error', async () => {
        const pool = make()
        for (let i = 0; i < 4; i++) pool.acquire()
        await expectTyped('acquire() of an empty pool', () => pool.acquire(), 'STOQ_ERR_POOL_EXHAUSTED')
        expect(pool.tryAcquire()).toBe(-1)
        pool.close()
      })

      it('answers every call on a closed pool with StoqClosedError; close() is idempotent', async () => {
        const pool = make()
        const index = pool.acquire()
        pool.close()
        pool.close()
        const calls: Array<[string, () => unknown]> = [
          ['acquire', () => pool.acquire()],
          ['tryAcquire', () => pool.tryAcquire()],
          ['release', () => pool.release(index)],
          ['release(-1)', () => pool.release(-1)],
          ['view', () => pool.view(index)],
          ['view(1e9)', () => pool.view(1e9)],
          ['stats', () => pool.stats()],
          ['share', () => pool.share()],
        ]
        if (debug) calls.push(['checkPoison', () => pool.checkPoison(index)])
        for (const [label, call] of calls) await expectTyped(`${label} after close`, call, 'STOQ_ERR_CLOSED')
      })

      it('closing an attached view leaves the creator usable, and the reverse', async () => {
        const pool = make()
        const other = attachBufferPool(pool.share())
        const index = other.acquire()
        other.close()
        await expectTyped('attached release after close', () => other.release(index), 'STOQ_ERR_CLOSED')
        pool.release(index)
        expectIntact(pool)
        const again = attachBufferPool(pool.share())
        pool.close()
        expectIntact(again)
        again.close()
      })
    })
  }

  it('RecordRing.create and attach refuse every wrong options object, shape and handle', async () => {
    for (const [label, v] of WRONG.filter(([n]) => n !== 'an object' && n !== 'a null-prototype object' && n !== 'a function')) {
      await expectTyped(`RecordRing.create(${label})`, () => RecordRing.create(v as never), 'STOQ_ERR_INVALID_ARG', 'options')
      await expectTyped(`RecordRing.attach(${label})`, () => RecordRing.attach(v as never), 'STOQ_ERR_INVALID_ARG', 'handle')
    }
    for (const [label, v] of OPT) {
      await expectTyped(`RecordRing.create({ width: ${label} })`, () => RecordRing.create({ width: v as number }), 'STOQ_ERR_INVALID_ARG', 'width')
      await expectTyped(
        `RecordRing.create({ capacity: ${label} })`,
        () => RecordRing.create({ width: 2, capacity: v as number }),
        'STOQ_ERR_INVALID_ARG',
        'capacity',
      )
    }
    await expectTyped('unknown key', () => RecordRing.create({ width: 2, capacty: 8 } as never), 'STOQ_ERR_INVALID_ARG', 'capacty')
    const ring = RecordRing.create({ width: 2, capacity: 8 })
    await expectTyped(
      'a plain ArrayBuffer',
      () => RecordRing.attach({ ...ring.handle, buffer: new ArrayBuffer(400) as never }),
      'STOQ_ERR_INVALID_ARG',
      'handle',
    )
    await expectTyped('a handle of another shape', () => RecordRing.attach({ ...ring.handle, width: 3 }), 'STOQ_ERR_INVALID_ARG', 'handle')
    // The ring still works after all of it.
    ring.append(1, 2)
    ring.publish()
    expect(ring.available).toBe(1)
  })

  it('RecordWriter and RecordReader refuse a wrong ring or extrasOp', async () => {
    const port = { postMessage: () => undefined }
    const nop = () => undefined
    for (const [label, v] of WRONG) {
      await expectTyped(`new RecordWriter(${label})`, () => new RecordWriter(v as never, port, { extrasOp: -1 }), 'STOQ_ERR_INVALID_ARG', 'ring')
      await expectTyped(`new RecordReader(${label})`, () => new RecordReader(v as never, nop, nop, { extrasOp: -1 }), 'STOQ_ERR_INVALID_ARG', 'ring')
    }
    const ring = RecordRing.create({ width: 2, capacity: 4 })
    for (const [label, v] of [...WRONG.filter(([n]) => n !== '-1'), ['undefined', undefined] as [string, unknown]]) {
      await expectTyped(`RecordWriter extrasOp ${label}`, () => new RecordWriter(ring, port, { extrasOp: v as number }), 'STOQ_ERR_INVALID_ARG', 'extrasOp')
      await expectTyped(`RecordReader extrasOp ${label}`, () => new RecordReader(ring, nop, nop, { extrasOp: v as number }), 'STOQ_ERR_INVALID_ARG', 'extrasOp')
    }
  })
})
