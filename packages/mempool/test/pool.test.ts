import { existsSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import {
  DEFAULT_ALIGNMENT,
  DEFAULT_BUFFER_SIZE,
  DEFAULT_INITIAL_BUFFERS,
  attachBufferPool,
  createBufferPool,
  type BufferPoolOptions,
  type SharedBufferPool,
  type SharedBufferPoolHandle,
} from '../src/index.js'

/** The code and message of the STOQ error `call` throws. */
function thrown(call: () => unknown): { code: string; message: string } {
  try {
    call()
  } catch (err) {
    if (StoqError.isInstance(err)) return { code: err.code, message: err.message }
    throw err
  }
  throw new Error('expected a StoqError, nothing was thrown')
}

const acquireMany = (pool: SharedBufferPool, count: number): number[] => Array.from({ length: count }, () => pool.acquire())

describe('defaults', () => {
  it('creates 64 buffers of 64 KiB, shared', () => {
    const pool = createBufferPool()
    expect(pool.bufferSize).toBe(DEFAULT_BUFFER_SIZE)
    expect(pool.stats().capacity).toBe(DEFAULT_INITIAL_BUFFERS)
    expect(pool.view(0).buffer).toBeInstanceOf(SharedArrayBuffer)
    pool.close()
  })

  it('backs a non-shared pool with ArrayBuffer', () => {
    const pool = createBufferPool({ shared: false, initialBuffers: 2 })
    expect(pool.view(0).buffer).toBeInstanceOf(ArrayBuffer)
    pool.close()
  })
})

describe('alignment', () => {
  it.each([
    [64, 64],
    [100, 128],
    [1500, 1536],
    [65536, 65536],
  ])('rounds bufferSize %i up to %i and aligns every buffer to 64 bytes', (requested, size) => {
    const pool = createBufferPool({ bufferSize: requested, initialBuffers: 3, maxBuffers: 9 })
    expect(pool.bufferSize).toBe(size)
    const indexes = acquireMany(pool, 9)
    for (const index of indexes) {
      const view = pool.view(index)
      expect(view.byteLength).toBe(size)
      expect(view.byteOffset % DEFAULT_ALIGNMENT).toBe(0)
    }
    pool.close()
  })
})

describe('exhaustion', () => {
  it('grows by slabs of initialBuffers up to maxBuffers, then refuses', () => {
    const pool = createBufferPool({ bufferSize: 64, initialBuffers: 4, maxBuffers: 10 })
    const first = acquireMany(pool, 4)
    expect(pool.stats()).toMatchObject({ capacity: 4, hits: 4, misses: 0 })
    const grown = pool.acquire()
    expect(pool.stats()).toMatchObject({ capacity: 8, hits: 4, misses: 1, inUse: 5 })
    expect(pool.view(grown).buffer).not.toBe(pool.view(first[0]!).buffer)
    const rest = acquireMany(pool, 5)
    // The last slab holds the remaining 2 buffers.
    expect(pool.stats()).toMatchObject({ capacity: 10, inUse: 10, misses: 2 })
    expect(new Set([...first, grown, ...rest]).size).toBe(10)
    expect(pool.tryAcquire()).toBe(-1)
    expect(thrown(() => pool.acquire())).toMatchObject({ code: 'STOQ_ERR_POOL_EXHAUSTED' })
    expect(pool.stats()).toMatchObject({ capacity: 10, misses: 4, inUse: 10 })
    pool.close()
  })

  it("never grows under the 'error' policy", () => {
    const pool = createBufferPool({ bufferSize: 64, initialBuffers: 4, exhaustion: 'error' })
    acquireMany(pool, 4)
    expect(pool.tryAcquire()).toBe(-1)
    expect(thrown(() => pool.acquire())).toEqual({
      code: 'STOQ_ERR_POOL_EXHAUSTED',
      message: 'Buffer pool exhausted (4 buffers in use)',
    })
    expect(pool.stats()).toMatchObject({ capacity: 4, misses: 2, inUse: 4 })
    pool.close()
  })
})

describe('debug mode', () => {
  const debugPool = (): SharedBufferPool => createBufferPool({ bufferSize: 128, initialBuffers: 4, debug: true })

  it('poisons released buffers with 0xdb', () => {
    const pool = debugPool()
    const index = pool.acquire()
    pool.view(index).fill(1)
    pool.release(index)
    expect(pool.view(index).every((byte) => byte === 0xdb)).toBe(true)
    pool.close()
  })

  it('detects a double release', () => {
    const pool = debugPool()
    const index = pool.acquire()
    pool.release(index)
    expect(thrown(() => pool.release(index))).toMatchObject({ code: 'STOQ_ERR_POOL_MISUSE' })
    expect(thrown(() => pool.release(3))).toMatchObject({ code: 'STOQ_ERR_POOL_MISUSE' })
    expect(pool.stats().inUse).toBe(0)
    pool.close()
  })

  it('detects a write after release, from checkPoison() and from acquire()', () => {
    const pool = debugPool()
    const index = pool.acquire()
    pool.release(index)
    pool.view(index)[100] = 7
    expect(thrown(() => pool.checkPoison(index))).toMatchObject({
      code: 'STOQ_ERR_POOL_MISUSE',
      message: expect.stringMatching(/use after release/i),
    })
    // The free list is a stack: the next acquisition takes the same buffer and notices too.
    expect(thrown(() => pool.acquire())).toMatchObject({
      code: 'STOQ_ERR_POOL_MISUSE',
      message: expect.stringMatching(/use after release/i),
    })
    // The buffer went back re-poisoned: the pool stays usable and consistent.
    expect(() => pool.checkPoison(index)).not.toThrow()
    expect(pool.acquire()).toBe(index)
    expect(pool.stats().inUse).toBe(1)
    pool.close()
  })

  it('leaves buffers in use alone in checkPoison()', () => {
    const pool = debugPool()
    const index = pool.acquire()
    pool.view(index).fill(0)
    expect(() => pool.checkPoison(index)).not.toThrow()
    pool.close()
  })

  it('is required by checkPoison()', () => {
    const pool = createBufferPool({ initialBuffers: 1 })
    expect(thrown(() => pool.checkPoison(0))).toEqual({
      code: 'STOQ_ERR_INVALID_ARG',
      message: 'Invalid debug: checkPoison() needs a pool created with debug: true',
    })
    pool.close()
  })
})

describe('indexes', () => {
  it.each([-1, 4, 1.5, Number.NaN])('rejects index %s in release() and view()', (index) => {
    const pool = createBufferPool({ bufferSize: 64, initialBuffers: 4 })
    const expected = { code: 'STOQ_ERR_INVALID_ARG', message: `Invalid index: expected an integer from 0 to 3, got ${index}` }
    expect(thrown(() => pool.release(index))).toEqual(expected)
    expect(thrown(() => pool.view(index))).toEqual(expected)
    expect(pool.stats().inUse).toBe(0)
    pool.close()
  })
})

describe('option validation', () => {
  it.each<[Partial<BufferPoolOptions>, string]>([
    [{ bufferSize: 0 }, 'Invalid bufferSize: expected an integer from 64 to 16777216, got 0'],
    [{ bufferSize: 16 * 1024 * 1024 + 1 }, 'Invalid bufferSize: expected an integer from 64 to 16777216, got 16777217'],
    [{ bufferSize: 1500.5 }, 'Invalid bufferSize: expected an integer from 64 to 16777216, got 1500.5'],
    [{ bufferSize: '2048' as unknown as number }, 'Invalid bufferSize: expected an integer from 64 to 16777216, got "2048"'],
    [{ maxBuffers: 0 }, 'Invalid maxBuffers: expected an integer from 1 to 1048575, got 0'],
    [{ maxBuffers: 2 ** 20 }, 'Invalid maxBuffers: expected an integer from 1 to 1048575, got 1048576'],
    [{ initialBuffers: 0 }, 'Invalid initialBuffers: expected an integer from 1 to 8192, got 0'],
    [{ initialBuffers: 20, maxBuffers: 16 }, 'Invalid initialBuffers: expected an integer from 1 to 16, got 20'],
    [{ exhaustion: 'drop' as 'grow' }, `Invalid exhaustion: expected 'grow' or 'error', got "drop"`],
    [{ debug: 'yes' as unknown as boolean }, 'Invalid debug: expected true or false, got "yes"'],
    [{ shared: 1 as unknown as boolean }, 'Invalid shared: expected true or false, got 1'],
    [
      { bufferSise: 1024 } as Partial<BufferPoolOptions>,
      'Invalid bufferSise: unknown option (did you mean `bufferSize`?); accepted: bufferSize, initialBuffers, maxBuffers, exhaustion, debug, shared',
    ],
    [
      null as unknown as Partial<BufferPoolOptions>,
      'Invalid options: expected an object with any of bufferSize, initialBuffers, maxBuffers, exhaustion, debug, shared, got null',
    ],
  ])('rejects %o', (options, message) => {
    expect(thrown(() => createBufferPool(options))).toEqual({ code: 'STOQ_ERR_INVALID_ARG', message })
  })

  it('caps the default initialBuffers at maxBuffers', () => {
    const pool = createBufferPool({ bufferSize: 64, maxBuffers: 16 })
    expect(pool.stats().capacity).toBe(16)
    pool.close()
  })
})

describe('close()', () => {
  it('is idempotent and makes every later call throw StoqClosedError', () => {
    const pool = createBufferPool({ bufferSize: 64, initialBuffers: 2, debug: true })
    const index = pool.acquire()
    pool.close()
    pool.close()
    const calls = [
      () => pool.acquire(),
      () => pool.tryAcquire(),
      () => pool.release(index),
      () => pool.view(index),
      () => pool.stats(),
      () => pool.share(),
      () => pool.checkPoison(index),
    ]
    for (const call of calls) expect(thrown(call)).toEqual({ code: 'STOQ_ERR_CLOSED', message: 'buffer pool is closed' })
  })
})

describe('share() and attachBufferPool()', () => {
  it('refuses to share a pool created with shared: false', () => {
    const pool = createBufferPool({ shared: false, initialBuffers: 1 })
    expect(thrown(() => pool.share())).toEqual({
      code: 'STOQ_ERR_INVALID_ARG',
      message: 'Invalid shared: share() needs a pool created with shared: true',
    })
    pool.close()
  })

  it('preallocates every slab up to maxBuffers', () => {
    const pool = createBufferPool({ bufferSize: 64, initialBuffers: 4, maxBuffers: 10 })
    const handle = pool.share()
    expect(handle.slabs.map((slab) => slab.byteLength)).toEqual([256, 256, 128])
    expect(pool.stats().capacity).toBe(4)
    pool.close()
  })

  it('attaches a structured clone of the handle to the same memory, counters and growth', () => {
    const pool = createBufferPool({ bufferSize: 64, initialBuffers: 2, maxBuffers: 6 })
    const other = attachBufferPool(structuredClone(pool.share()))
    const index = pool.acquire()
    pool.view(index).fill(42)
    expect(other.view(index).every((byte) => byte === 42)).toBe(true)
    expect(other.stats()).toMatchObject({ inUse: 1, hits: 1 })
    // Growth by one view is visible to the other.
    const taken = acquireMany(other, 5)
    expect(pool.stats()).toMatchObject({ capacity: 6, inUse: 6 })
    expect(pool.tryAcquire()).toBe(-1)
    pool.view(taken[4]!).fill(9)
    expect(other.view(taken[4]!)[63]).toBe(9)
    for (const i of taken) pool.release(i)
    other.release(index)
    expect(other.stats().inUse).toBe(0)
    other.close()
    expect(pool.stats().inUse).toBe(0)
    pool.close()
  })

  it('rejects what share() did not return', () => {
    const pool = createBufferPool({ bufferSize: 64, initialBuffers: 2 })
    const handle = pool.share()
    const message = 'Invalid handle: expected the object returned by SharedBufferPool.share()'
    const broken: unknown[] = [
      null,
      { ...handle, control: new ArrayBuffer(8) },
      { ...handle, slabs: handle.slabs.slice(1) },
      { ...handle, options: { ...handle.options, debug: true } },
    ]
    for (const candidate of broken) {
      expect(thrown(() => attachBufferPool(candidate as SharedBufferPoolHandle))).toEqual({
        code: 'STOQ_ERR_INVALID_ARG',
        message,
      })
    }
    pool.close()
  })
})

describe('worker threads', () => {
  const workerUrl = new URL('./hammer-worker.mjs', import.meta.url)
  const ITERATIONS = 100_000

  it.each([false, true])(
    'two workers hammer one shared pool (debug: %s)',
    async (debug) => {
      if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
        throw new Error('The worker imports the built @stoq/mempool: run `npx tsup` in packages/mempool first')
      }
      // Each worker holds up to 6 buffers: more than the 4 initial ones, so the pool grows while shared.
      const maxBuffers = 16
      const pool = createBufferPool({ bufferSize: 256, initialBuffers: 4, maxBuffers, debug })
      const workerData = {
        handle: pool.share(),
        owners: new SharedArrayBuffer(maxBuffers * 4),
        start: new SharedArrayBuffer(4),
        iterations: ITERATIONS,
        held: 5,
      }
      const workers = [1, 2].map(() => new Worker(workerUrl, { workerData }))
      const ready = workers.map((worker) => new Promise((resolve) => worker.once('message', resolve)))
      const results = workers.map(
        (worker) =>
          new Promise((resolve, reject) => {
            worker.on('message', (message) => message !== 'ready' && resolve(message))
            worker.once('error', reject)
          }),
      )
      await Promise.all(ready)
      const start = new Int32Array(workerData.start)
      Atomics.store(start, 0, 1)
      Atomics.notify(start, 0)

      for (const result of await Promise.all(results)) expect(result).toEqual({ doubleHandouts: 0, clobbered: 0 })
      const stats = pool.stats()
      expect(stats.inUse).toBe(0)
      expect(stats.hits + stats.misses).toBe(2 * ITERATIONS)
      expect(stats.capacity).toBeGreaterThanOrEqual(8)
      expect(stats.highWaterMark).toBeLessThanOrEqual(12)
      // The free list survived: every buffer comes out exactly once, without growing.
      expect(new Set(acquireMany(pool, stats.capacity)).size).toBe(stats.capacity)
      expect(pool.stats()).toMatchObject({ misses: stats.misses, capacity: stats.capacity })
      pool.close()
    },
    60_000,
  )
})
