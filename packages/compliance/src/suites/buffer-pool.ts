import { StoqError, type BufferPool } from '@stoq/interface'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'

/** What the suite asks `setup` for. */
export interface BufferPoolTestOptions {
  /** Buffers the pool must own, all free, when `setup` returns. */
  capacity: number
  /** Bytes per buffer (a multiple of 64); the pool may round up. */
  bufferSize: number
}

/** How the suite creates and disposes of the pool under test (a fresh one per test). */
export interface BufferPoolTestFactory {
  /** A new pool owning `capacity` free buffers, its counters at zero. */
  setup(options: BufferPoolTestOptions): Promise<BufferPool> | BufferPool
  /** Dispose of the pool; it may already be closed. */
  teardown?(pool: BufferPool): Promise<void> | void
}

/** Small enough that every buffer can hold its own byte value in the overlap test. */
const CAPACITY = 64
const BUFFER_SIZE = 1024
const CYCLES = 100_000

/** Register a vitest `describe` block that checks `BufferPool` contract compliance of what `factory` creates. */
export function bufferPoolTests(name: string, factory: BufferPoolTestFactory): void {
  describe(`${name}: BufferPool compliance`, () => {
    let pool: BufferPool

    beforeEach(async () => {
      pool = await factory.setup({ capacity: CAPACITY, bufferSize: BUFFER_SIZE })
    })

    afterEach(async () => {
      await factory.teardown?.(pool)
    })

    const acquireMany = (count: number): number[] => Array.from({ length: count }, () => pool.acquire())

    it('declares specification v1 and starts empty', () => {
      expect(pool.specificationVersion).toBe('v1')
      expect(pool.bufferSize).toBeGreaterThanOrEqual(BUFFER_SIZE)
      const stats = pool.stats()
      expect(stats).toMatchObject({ hits: 0, misses: 0, inUse: 0, highWaterMark: 0, bufferSize: pool.bufferSize })
      expect(stats.capacity).toBeGreaterThanOrEqual(CAPACITY)
    })

    it('round-trips a buffer through acquire and release', () => {
      const index = pool.acquire()
      expect(Number.isInteger(index)).toBe(true)
      expect(index).toBeGreaterThanOrEqual(0)
      expect(index).toBeLessThan(pool.stats().capacity)
      expect(pool.stats().inUse).toBe(1)
      pool.release(index)
      expect(pool.stats().inUse).toBe(0)
      const again = pool.tryAcquire()
      expect(again).toBeGreaterThanOrEqual(0)
      pool.release(again)
      expect(pool.stats().inUse).toBe(0)
    })

    it('hands out distinct indexes', () => {
      expect(new Set(acquireMany(CAPACITY)).size).toBe(CAPACITY)
    })

    it('gives every buffer a bufferSize view that overlaps no other', () => {
      const indexes = acquireMany(CAPACITY)
      indexes.forEach((index, order) => {
        const view = pool.view(index)
        expect(view.byteLength).toBe(pool.bufferSize)
        view.fill(order + 1)
      })
      indexes.forEach((index, order) => {
        const clobbered = pool.view(index).findIndex((byte) => byte !== order + 1)
        expect(clobbered, `buffer ${index} overwritten at byte ${clobbered}`).toBe(-1)
      })
    })

    it('returns inUse to 0 once every buffer is released', () => {
      const indexes = acquireMany(CAPACITY)
      expect(pool.stats().inUse).toBe(CAPACITY)
      for (const index of indexes) pool.release(index)
      expect(pool.stats()).toMatchObject({ inUse: 0, highWaterMark: CAPACITY })
    })

    it('counts hits, misses, inUse and highWaterMark exactly', () => {
      const [a, b, c] = acquireMany(3) as [number, number, number]
      expect(pool.stats()).toMatchObject({ hits: 3, misses: 0, inUse: 3, highWaterMark: 3 })
      pool.release(a)
      pool.release(b)
      expect(pool.stats()).toMatchObject({ hits: 3, misses: 0, inUse: 1, highWaterMark: 3 })
      const d = pool.acquire()
      expect(pool.stats()).toMatchObject({ hits: 4, misses: 0, inUse: 2, highWaterMark: 3 })
      pool.release(c)
      pool.release(d)

      // Empty the free list: the next acquisition is a miss, whether the pool then grows or refuses.
      const capacity = pool.stats().capacity
      const all = acquireMany(capacity)
      expect(pool.stats()).toMatchObject({ hits: 4 + capacity, misses: 0, inUse: capacity, highWaterMark: capacity })
      const extra = pool.tryAcquire()
      const grown = extra >= 0 ? 1 : 0
      expect(pool.stats()).toMatchObject({
        hits: 4 + capacity,
        misses: 1,
        inUse: capacity + grown,
        highWaterMark: capacity + grown,
      })
      for (const index of all) pool.release(index)
      if (extra >= 0) pool.release(extra)
      expect(pool.stats().inUse).toBe(0)
    })

    it(`keeps inUse at 0 over ${CYCLES} acquire/release cycles`, () => {
      for (let i = 0; i < CYCLES; i++) {
        const index = pool.acquire()
        pool.view(index)[0] = i
        pool.release(index)
      }
      expect(pool.stats()).toMatchObject({ hits: CYCLES, misses: 0, inUse: 0, highWaterMark: 1 })
    })

    it('returns the same view object for an index on every call', () => {
      const indexes = acquireMany(CAPACITY)
      const views = new Map(indexes.map((index) => [index, pool.view(index)]))
      for (const index of indexes) expect(pool.view(index)).toBe(views.get(index))
      for (const index of indexes) pool.release(index)
      for (const index of acquireMany(CAPACITY)) {
        if (views.has(index)) expect(pool.view(index)).toBe(views.get(index))
      }
    })

    it('throws StoqClosedError after close(), which is idempotent', () => {
      const index = pool.acquire()
      pool.close()
      pool.close()
      const calls = [() => pool.acquire(), () => pool.tryAcquire(), () => pool.release(index), () => pool.view(index), () => pool.stats()]
      for (const call of calls) expect(errorCode(call)).toBe('STOQ_ERR_CLOSED')
    })
  })
}

/** The `code` of the STOQ error that `call` throws ('none' when it returns). */
function errorCode(call: () => unknown): string {
  try {
    call()
    return 'none'
  } catch (err) {
    return StoqError.isInstance(err) ? err.code : `not a StoqError: ${String(err)}`
  }
}
