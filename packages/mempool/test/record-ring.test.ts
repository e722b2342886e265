import { existsSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { DEFAULT_RECORD_RING_CAPACITY, RecordRing } from '../src/index.js'

function thrownCode(call: () => unknown): string {
  try {
    call()
  } catch (err) {
    if (StoqError.isInstance(err)) return `${err.code}: ${err.message}`
    throw err
  }
  throw new Error('expected a StoqError, nothing was thrown')
}

/** Every published record, as arrays. */
function drainAll(ring: RecordRing): number[][] {
  const got: number[][] = []
  ring.drain((d, at) => {
    got.push(Array.from(d.subarray(at, at + ring.width)))
    return true
  })
  return got
}

describe('RecordRing', () => {
  it('refuses a bad shape or handle with a typed error', () => {
    for (const width of [0, 9, 1.5, Number.NaN, '3']) {
      expect(thrownCode(() => RecordRing.create({ width: width as number }))).toMatch(/^STOQ_ERR_INVALID_ARG: Invalid width/)
    }
    for (const capacity of [0, 1, 3, 1000, 2 ** 21, -4]) {
      expect(thrownCode(() => RecordRing.create({ width: 2, capacity }))).toMatch(/^STOQ_ERR_INVALID_ARG: Invalid capacity/)
    }
    expect(thrownCode(() => RecordRing.create(null as never))).toMatch(/Invalid options/)
    expect(thrownCode(() => RecordRing.attach({ buffer: new ArrayBuffer(8) as never, width: 2, capacity: 4 }))).toMatch(/Invalid handle/)
    const ring = RecordRing.create({ width: 2, capacity: 4 })
    expect(thrownCode(() => RecordRing.attach({ ...ring.handle, capacity: 8 }))).toMatch(/Invalid handle: buffer is \d+ bytes/)
    expect(RecordRing.create({ width: 1 }).capacity).toBe(DEFAULT_RECORD_RING_CAPACITY)
  })

  it('shows records in order, only once published, and wakes a parked consumer once', () => {
    const producer = RecordRing.create({ width: 3, capacity: 8 })
    const consumer = RecordRing.attach(producer.handle)
    producer.append(1, 2, 3)
    producer.append(4) // missing numbers are 0
    expect(producer.unpublished).toBe(2)
    expect(consumer.available).toBe(0)
    expect(drainAll(consumer)).toEqual([])
    // A new ring's consumer has not started: it counts as parked, so the first publish wakes it.
    expect(producer.publish()).toBe(true)
    expect(producer.unpublished).toBe(0)
    expect(consumer.available).toBe(2)
    expect(drainAll(consumer)).toEqual([
      [1, 2, 3],
      [4, 0, 0],
    ])
    // Not parked (it drained and did not park): no wake-up needed.
    producer.append(5, 6, 7)
    expect(producer.publish()).toBe(false)
    // Nothing new: publish is a no-op.
    expect(producer.publish()).toBe(false)
    // Parking with records waiting fails: drain them instead of waiting.
    expect(consumer.park()).toBe(false)
    expect(drainAll(consumer)).toEqual([[5, 6, 7]])
    expect(consumer.park()).toBe(true)
    producer.append(8, 9, 10)
    expect(producer.publish()).toBe(true)
    producer.append(11)
    expect(producer.publish()).toBe(false) // the wake-up is owed once
    consumer.unpark()
    expect(drainAll(consumer).map((r) => r[0])).toEqual([8, 11])
  })

  it('spills in order when full and moves the spill in as the consumer makes room', () => {
    const ring = RecordRing.create({ width: 2, capacity: 4 })
    for (let i = 0; i < 11; i++) ring.append(i, i * 10)
    expect(ring.spilled).toBe(7)
    ring.publish()
    expect(ring.available).toBe(4)
    const seen: number[] = []
    const take = (n: number) => {
      let k = 0
      ring.drain((d, at) => {
        if (k === n) return false
        expect(d[at + 1]).toBe(d[at]! * 10)
        seen.push(d[at]!)
        k++
        return true
      })
    }
    take(3)
    expect(ring.available).toBe(1)
    // New records go behind the spill, never ahead of it.
    ring.append(11, 110)
    ring.publish()
    expect(ring.spilled).toBe(5)
    take(100)
    ring.publish()
    take(100)
    ring.publish()
    take(100)
    expect(ring.spilled).toBe(0)
    expect(ring.unpublished).toBe(0)
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
  })

  it('a handler returning false keeps its record; one that throws consumes it and the rest stay', () => {
    const ring = RecordRing.create({ width: 1, capacity: 8 })
    for (let i = 0; i < 5; i++) ring.append(i)
    ring.publish()
    expect(ring.drain((d, at) => d[at]! < 2)).toBe(2)
    expect(() =>
      ring.drain((d, at) => {
        if (d[at] === 3) throw new Error('handler failed')
        return true
      }),
    ).toThrow('handler failed')
    expect(drainAll(ring)).toEqual([[4]])
  })

  it('keeps order across the 32-bit wrap of its positions', () => {
    const ring = RecordRing.create({ width: 1, capacity: 4 })
    // Start both positions just below the wrap (header words 0 and 16 are head and tail).
    const header = new Int32Array(ring.handle.buffer, 0, 48)
    header[0] = 2 ** 31 - 3
    header[16] = 2 ** 31 - 3
    const at = RecordRing.attach(ring.handle)
    const seen: number[] = []
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 3; i++) at.append(round * 3 + i)
      at.publish()
      at.drain((d, k) => {
        seen.push(d[k]!)
        return true
      })
    }
    expect(seen).toEqual(Array.from({ length: 15 }, (_, i) => i))
    expect(header[0]).toBeLessThan(0) // the positions did wrap
  })

  it('moves 300 000 records from a worker in order, parking when idle, without losing a wake-up', async () => {
    if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
      throw new Error('The worker imports the built @stoq/mempool: run `npx tsup` in packages/mempool first')
    }
    const count = 300_000
    const ring = RecordRing.create({ width: 3, capacity: 256 })
    const worker = new Worker(new URL('./ring-worker.mjs', import.meta.url), { workerData: { handle: ring.handle, count } })
    let expected = 0
    let bad = ''
    let polling = false
    let done: { wakes: number } | null = null
    const finished = new Promise<void>((resolve, reject) => {
      worker.on('error', reject)
      const pump = (): void => {
        polling = false
        ring.unpark()
        for (;;) {
          const n = ring.drain((d, at) => {
            const seq = d[at]!
            if (bad === '' && (seq !== expected || d[at + 1] !== seq * 7 + 3 || d[at + 2] !== -seq))
              bad = `record ${expected}: got ${Array.from(d.subarray(at, at + 3))}`
            expected++
            return true
          })
          if (n > 0) {
            if (!polling) {
              polling = true
              setImmediate(pump)
            }
            break
          }
          if (ring.park()) break
        }
        if (done !== null && expected === count) resolve()
      }
      worker.on('message', (msg: 'wake' | { done: true; wakes: number }) => {
        if (msg !== 'wake') done = msg
        pump()
      })
    })
    await finished
    await worker.terminate()
    expect(bad).toBe('')
    expect(expected).toBe(count)
    expect(ring.available).toBe(0)
    // Wake-ups only when the consumer had gone idle: fewer than one per burst.
    expect(done!.wakes).toBeGreaterThan(0)
  })
})
