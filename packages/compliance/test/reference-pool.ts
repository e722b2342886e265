import { StoqClosedError, StoqPoolExhaustedError, type BufferPool, type BufferPoolStats } from '@stoq/interface'

/** The simplest pool the contract allows (one ArrayBuffer, fixed capacity), to check that the suite asks no more. */
export function createReferencePool(capacity: number, bufferSize: number): BufferPool {
  const memory = new ArrayBuffer(capacity * bufferSize)
  const views = Array.from({ length: capacity }, (_, index) => new Uint8Array(memory, index * bufferSize, bufferSize))
  const free = Array.from({ length: capacity }, (_, index) => capacity - 1 - index)
  const counters = { hits: 0, misses: 0, highWaterMark: 0 }
  let closed = false

  const checkOpen = (): void => {
    if (closed) throw new StoqClosedError('reference pool')
  }
  const tryAcquire = (): number => {
    checkOpen()
    const index = free.pop()
    if (index === undefined) {
      counters.misses++
      return -1
    }
    counters.hits++
    counters.highWaterMark = Math.max(counters.highWaterMark, capacity - free.length)
    return index
  }

  return {
    specificationVersion: 'v1',
    bufferSize,
    acquire() {
      const index = tryAcquire()
      if (index < 0) throw new StoqPoolExhaustedError(capacity)
      return index
    },
    tryAcquire,
    release(index) {
      checkOpen()
      free.push(index)
    },
    view(index) {
      checkOpen()
      return views[index]!
    },
    stats(): BufferPoolStats {
      checkOpen()
      return { ...counters, inUse: capacity - free.length, capacity, bufferSize }
    },
    close() {
      closed = true
    },
  }
}
