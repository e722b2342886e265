import type { PacketBatcher, PacketBatcherComponents, PacketBatcherStats, TransmitBatch } from '@stoq/interface'

/**
 * The simplest batcher the contract allows, to check that the suite asks no
 * more: one batch per pool buffer, runs of equal-size packets (at most
 * io.maxSegments) per send, a buffer released when its last send completes.
 */
export function referenceBatcher({ engine, io, pool }: PacketBatcherComponents): PacketBatcher {
  const maxPackets = Math.max(1, Math.min(64, Math.floor(Math.min(pool.bufferSize, 65_000) / engine.maxPacketSize)))
  const batch: TransmitBatch = { buffer: new Uint8Array(0), lengths: new Uint32Array(maxPackets), count: 0, bytes: 0, peer: null }
  const pending = new Map<number, number>()
  const counters = { packets: 0, syscalls: 0, flushes: 0 }
  /** Set while io.send() reports a full socket, until onDrain. */
  let blocked = false
  /** Set when the pool was empty: the next release, or flush(), tries again. */
  let starved = false

  const flush = (): void => {
    starved = false
    while (!blocked) {
      const index = pool.tryAcquire()
      if (index < 0) {
        starved = true
        return
      }
      batch.buffer = pool.view(index)
      batch.count = 0
      batch.peer = null
      if (!engine.pollTransmit(batch, maxPackets) || batch.count === 0 || batch.peer === null) {
        pool.release(index)
        return
      }
      counters.flushes++
      counters.packets += batch.count
      pending.set(index, 1) // until every send of the batch is issued
      let offset = 0
      for (let start = 0; start < batch.count; ) {
        const segment = batch.lengths[start]!
        let end = start + 1
        while (end < batch.count && end - start < io.maxSegments && batch.lengths[end] === segment) end++
        if (end < batch.count && end - start < io.maxSegments && batch.lengths[end]! < segment) end++
        let bytes = 0
        for (let i = start; i < end; i++) bytes += batch.lengths[i]!
        pending.set(index, pending.get(index)! + 1)
        counters.syscalls++
        if (!io.send(batch.buffer.subarray(offset, offset + bytes), segment, batch.peer, index)) blocked = true
        offset += bytes
        start = end
      }
      onSendComplete(index)
    }
  }

  const onSendComplete = (token: number): void => {
    const n = pending.get(token)
    if (n === undefined) return
    if (n > 1) {
      pending.set(token, n - 1)
      return
    }
    pending.delete(token)
    pool.release(token)
    if (starved && !blocked) flush()
  }

  return {
    specificationVersion: 'v1',
    flush,
    onSendComplete,
    onDrain() {
      if (!blocked) return
      blocked = false
      flush()
    },
    get blocked() {
      return blocked
    },
    stats(): PacketBatcherStats {
      return { ...counters, syscallsSaved: counters.packets - counters.syscalls }
    },
  }
}
