import { describe, expect, it } from 'vitest'
import { FakeQuicEngine, RecordingUdpIo, createFixedPool } from '@stoq/compliance-tests'
import type { SocketAddress } from '@stoq/interface'
import { batching } from '../src/index.js'

const PEER: SocketAddress = { address: '127.0.0.1', port: 9, family: 'IPv4' }

/** Burn `ms` of CPU: an engine that is slow to produce each batch. */
function busy(ms: number): void {
  const t = performance.now()
  while (performance.now() - t < ms) {
    // spin
  }
}

describe('flush deadline', () => {
  it('stops a long flush at its deadline and sends the rest on later turns', async () => {
    const engine = new FakeQuicEngine(1200)
    engine.enqueue(Array.from({ length: 200 }, () => ({ peer: PEER, size: 1200 })))
    engine.onPoll = () => busy(1)
    const io = new RecordingUdpIo({ maxSegments: 1 })
    const b = batching({ flushDeadlineUs: 3000, maxPacketsPerBatch: 1 })({ engine, io, pool: createFixedPool(16, 2048) })
    await io.bind(
      { host: '127.0.0.1', port: 0, ipv6Only: false },
      { onPacket: () => {}, onBatchEnd: () => {}, onSendComplete: (t) => b.onSendComplete(t), onDrain: () => b.onDrain(), onError: () => {} },
    )
    b.flush()
    // Each batch costs at least 1 ms, so a 3 ms deadline stops the first flush after a
    // few of them, far from the 256 batches it may otherwise send.
    const first = b.stats()
    expect(first.flushes).toBeGreaterThan(0)
    expect(first.flushes).toBeLessThanOrEqual(5)
    expect(first.deadlineDeferrals).toBe(1)
    engine.onPoll = () => undefined
    for (let i = 0; i < 1000 && engine.produced < 200; i++) await new Promise((r) => setImmediate(r))
    expect(engine.produced).toBe(200)
    expect(b.stats().packets).toBe(200)
    expect(engine.violations).toEqual([])
  })

  it('refuses a deadline that is not a positive integer of microseconds', () => {
    expect(() => batching({ flushDeadlineUs: 0 })).toThrow(/flushDeadlineUs/)
    expect(() => batching({ flushDeadlineUs: 1.5 })).toThrow(/flushDeadlineUs/)
  })

  it('runs no deferred flush after close(), so a closed pool or socket is never touched', async () => {
    const engine = new FakeQuicEngine(1200)
    engine.enqueue(Array.from({ length: 50 }, () => ({ peer: PEER, size: 1200 })))
    const io = new RecordingUdpIo({ maxSegments: 1 })
    const b = batching({ maxBatchesPerFlush: 1, maxPacketsPerBatch: 1 })({ engine, io, pool: createFixedPool(64, 2048) })
    await io.bind(
      { host: '127.0.0.1', port: 0, ipv6Only: false },
      { onPacket: () => {}, onBatchEnd: () => {}, onSendComplete: (t) => b.onSendComplete(t), onDrain: () => b.onDrain(), onError: () => {} },
    )
    b.flush() // one batch now, the rest deferred to the next turn
    expect(engine.produced).toBe(1)
    b.close!()
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r))
    expect(engine.produced).toBe(1)
    b.flush()
    expect(engine.produced).toBe(1)
  })
})
