/**
 * Transmit slots (`components.slots`): batches are built in the engine's own buffers, which
 * the socket sends from in place; a slot is reused only after its last send completed.
 */
import { describe, expect, it } from 'vitest'
import { FakeQuicEngine, RecordingUdpIo, createFixedPool } from '@stoq/compliance-tests'
import type { BufferPool, SocketAddress, TransmitBatch } from '@stoq/interface'
import { batching } from '../src/index.js'

const PEER: SocketAddress = { address: '127.0.0.1', port: 9, family: 'IPv4' }
const OTHER: SocketAddress = { address: '127.0.0.1', port: 10, family: 'IPv4' }

/** The fake engine with transmit slots: it writes into the slot the batcher names. */
class SlotEngine extends FakeQuicEngine {
  readonly slots: Uint8Array[]
  /** Slot of each poll that produced a batch, in order. */
  readonly filled: number[] = []
  /** After this many batches the slots "stop working" (batch.slot = -1), as a moved slot would. */
  failAfter = Infinity
  constructor(count: number, size: number) {
    super(1200)
    this.slots = Array.from({ length: count }, () => new Uint8Array(size))
  }
  override pollTransmit(batch: TransmitBatch, maxPackets: number): boolean {
    const slot = batch.slot ?? -1
    if (slot >= 0) {
      if (this.filled.length >= this.failAfter) {
        batch.slot = -1
        return false
      }
      batch.buffer = this.slots[slot]!
    }
    const ok = super.pollTransmit(batch, maxPackets)
    if (ok && slot >= 0) this.filled.push(slot)
    return ok
  }
}

/** A pool that counts what is taken from it. */
function countingPool(n: number, size: number): BufferPool & { taken: number } {
  const pool = createFixedPool(n, size)
  const counted = Object.assign(Object.create(pool) as BufferPool, { taken: 0 })
  counted.tryAcquire = () => {
    const i = pool.tryAcquire()
    if (i >= 0) counted.taken++
    return i
  }
  return counted as BufferPool & { taken: number }
}

async function bound(io: RecordingUdpIo, b: { onSendComplete(t: number): void; onDrain(): void }): Promise<void> {
  await io.bind(
    { host: '127.0.0.1', port: 0, ipv6Only: false },
    { onPacket: () => {}, onBatchEnd: () => {}, onSendComplete: (t) => b.onSendComplete(t), onDrain: () => b.onDrain(), onError: () => {} },
  )
}

const settle = async (cond: () => boolean): Promise<void> => {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setImmediate(r))
}

describe('transmit slots', () => {
  it('builds every batch in a slot, sends it from there, and reuses a slot only after its sends completed', async () => {
    const engine = new SlotEngine(3, 65536)
    // Two peers interleaved: batches end at each change of destination.
    engine.enqueue(Array.from({ length: 400 }, (_, i) => ({ peer: i % 7 < 4 ? PEER : OTHER, size: 1000 + (i % 3) * 100 })))
    const io = new RecordingUdpIo({ maxSegments: 16, order: 'shuffled' })
    const pool = countingPool(8, 65536)
    const b = batching({ maxPacketsPerBatch: 16 })({ engine, io, pool, slots: engine.slots })
    await bound(io, b)
    b.flush()
    await settle(() => engine.produced === 400 && io.pendingSends === 0)
    expect(engine.produced).toBe(400)
    expect(b.stats().packets).toBe(400)
    // Every send's bytes lay in one of the slots, none in the pool.
    expect(io.sends.length).toBeGreaterThan(0)
    expect(pool.taken).toBe(0)
    // The recording socket checks that no slot changed while a send from it was pending.
    expect(io.violations).toEqual([])
    expect(engine.violations).toEqual([])
    // Only three slots, so they were reused, and all of them.
    expect(new Set(engine.filled)).toEqual(new Set([0, 1, 2]))
    expect(engine.filled.length).toBeGreaterThan(3)
    // Every packet arrived once, in order per destination.
    const ids = io.sends.flatMap((s) => {
      const out: number[] = []
      for (let off = 0; off < s.data.length; off += s.segmentSize) out.push(new DataView(s.data.buffer, s.data.byteOffset + off).getUint32(0))
      return out
    })
    expect(new Set(ids).size).toBe(400)
  })

  it('waits for a slot when all are in flight, then goes on', async () => {
    const engine = new SlotEngine(2, 65536)
    engine.enqueue(Array.from({ length: 64 }, () => ({ peer: PEER, size: 1200 })))
    const io = new RecordingUdpIo({ maxSegments: 4, completion: 'manual' })
    const b = batching({ maxPacketsPerBatch: 4 })({ engine, io, pool: createFixedPool(4, 65536), slots: engine.slots })
    await bound(io, b)
    b.flush()
    expect(engine.produced).toBe(8) // two slots of four packets, then nothing free
    io.complete(1)
    await settle(() => engine.produced > 8)
    expect(engine.produced).toBe(12)
    for (let i = 0; i < 100 && engine.produced < 64; i++) {
      io.complete()
      await new Promise((r) => setImmediate(r))
    }
    expect(engine.produced).toBe(64)
    expect(io.violations).toEqual([])
  })

  it('goes back to pool buffers when the engine says its slots stopped working', async () => {
    const engine = new SlotEngine(2, 65536)
    engine.failAfter = 5
    engine.enqueue(Array.from({ length: 100 }, () => ({ peer: PEER, size: 1200 })))
    const io = new RecordingUdpIo({ maxSegments: 4 })
    const pool = countingPool(8, 65536)
    const b = batching({ maxPacketsPerBatch: 4 })({ engine, io, pool, slots: engine.slots })
    await bound(io, b)
    b.flush()
    await settle(() => engine.produced === 100 && io.pendingSends === 0)
    expect(engine.produced).toBe(100)
    expect(engine.filled.length).toBe(5)
    // 80 packets in batches of 4 from the pool, plus the last poll that found nothing.
    expect(pool.taken).toBeGreaterThanOrEqual(20)
    expect(pool.taken).toBeLessThanOrEqual(21)
    expect(io.violations).toEqual([])
  })

  it('refuses slots that cannot hold a batch', () => {
    const engine = new SlotEngine(1, 65536)
    const make = (slots: unknown) => () => batching()({ engine, io: new RecordingUdpIo(), pool: createFixedPool(2, 65536), slots: slots as Uint8Array[] })
    for (const bad of [[], [new Uint8Array(100)], 'slots', [new Uint8Array(65536), {}]]) {
      expect(make(bad)).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }))
    }
  })
})
