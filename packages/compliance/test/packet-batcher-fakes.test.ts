import type { SocketAddress, TransmitBatch, UdpReceiver } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { bufferPoolTests } from '../src/index.js'
import { FakeQuicEngine, RecordingUdpIo, createFixedPool, decodePacket, writePacket } from '../src/fakes/packet-batcher.js'
import { thrownCode } from '../src/tools/util.js'

const A: SocketAddress = { address: '10.0.0.1', port: 1, family: 'IPv4' }
const B: SocketAddress = { address: '2001:db8::1', port: 2, family: 'IPv6' }

const batchOf = (bytes: number, slots: number): TransmitBatch => ({
  buffer: new Uint8Array(bytes),
  lengths: new Uint32Array(slots),
  count: 0,
  bytes: 0,
  peer: null,
})

/** A receiver that logs what the recording socket reports. */
function logReceiver(log: string[]): UdpReceiver {
  return {
    onPacket() {},
    onBatchEnd() {},
    onSendComplete: (token) => log.push(`complete ${token}`),
    onDrain: () => log.push('drain'),
    onError() {},
  }
}

bufferPoolTests('suite fixed pool', {
  setup: ({ capacity, bufferSize }) => createFixedPool(capacity, bufferSize),
  teardown: (pool) => pool.close(),
})

describe('suite fakes', () => {
  it('the fake engine produces one peer per batch, within maxPackets and the buffer', () => {
    const engine = new FakeQuicEngine(1000)
    engine.enqueue([
      { peer: A, size: 1000 },
      { peer: A, size: 1000 },
      { peer: A, size: 600 },
      { peer: A, size: 500 },
      { peer: B, size: 100 },
    ])
    const batch = batchOf(2500, 4)
    expect(engine.pollTransmit(batch, 4)).toBe(true)
    // The third packet (600 bytes) does not fit in the 500 bytes left: the batch ends at the buffer.
    expect([batch.count, batch.bytes, batch.peer]).toEqual([2, 2000, A])
    expect(engine.pollTransmit(batch, 1)).toBe(true)
    expect([batch.count, [...batch.lengths.subarray(0, 1)]]).toEqual([1, [600]])
    expect(engine.pollTransmit(batch, 4)).toBe(true)
    expect([batch.count, batch.peer]).toEqual([1, A])
    expect(engine.pollTransmit(batch, 4)).toBe(true)
    expect([batch.count, batch.peer]).toEqual([1, B])
    expect(decodePacket(batch.buffer.subarray(0, 100), B)).toEqual({ id: 4, size: 100, peer: '[2001:db8::1]:2', intact: true })
    expect(engine.pollTransmit(batch, 4)).toBe(false)
    expect(engine.violations).toEqual([])
    expect(engine.pollCalls).toBe(5)
  })

  it('the fake engine reports a misused pollTransmit and throws from everything else', () => {
    const engine = new FakeQuicEngine(1000)
    engine.enqueue([{ peer: A, size: 100 }])
    expect(engine.pollTransmit(batchOf(2000, 2), 3)).toBe(false)
    expect(engine.pollTransmit(batchOf(999, 2), 1)).toBe(false)
    expect(engine.violations).toHaveLength(2)
    expect(() => engine.receive()).toThrow(/only needs maxPacketSize and pollTransmit/)
    expect(() => engine.connectionCount).toThrow()
  })

  it('decodePacket notices a changed byte or a truncated packet', () => {
    const buffer = new Uint8Array(300)
    writePacket(buffer, 0, 42, 300)
    expect(decodePacket(buffer, A).intact).toBe(true)
    expect(decodePacket(buffer.subarray(0, 299), A).intact).toBe(false)
    buffer[150] = buffer[150]! ^ 1
    expect(decodePacket(buffer, A)).toMatchObject({ id: 42, intact: false })
  })

  it('the recording socket notices data changed before its send completed', async () => {
    const io = new RecordingUdpIo({ completion: 'manual' })
    const log: string[] = []
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, logReceiver(log))
    const data = new Uint8Array([1, 2, 3, 4])
    io.send(data, 4, A, 7)
    data[0] = 9
    io.send(new Uint8Array([5]), 1, A, 8)
    expect(io.complete()).toBe(2)
    expect(log).toEqual(['complete 7', 'complete 8'])
    expect(io.violations).toEqual(['send 0 (token 7): its data changed before the send completed'])
    expect(io.sends.map((s) => [...s.data])).toEqual([[1, 2, 3, 4], [5]])
  })

  it('the recording socket reports backpressure at highWater and drains at lowWater', async () => {
    const io = new RecordingUdpIo({ completion: 'manual', highWater: 3, lowWater: 1 })
    const log: string[] = []
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, logReceiver(log))
    const sent = [1, 2, 3, 4].map((token) => io.send(new Uint8Array(10), 10, A, token))
    expect(sent).toEqual([true, true, false, false])
    expect(io.full).toBe(true)
    expect(io.complete(2)).toBe(2)
    expect(io.full).toBe(true)
    expect(io.complete(1)).toBe(1)
    expect(io.full).toBe(false)
    expect(log).toEqual(['complete 1', 'complete 2', 'complete 3', 'drain'])
  })

  it('the recording socket completes sends on its own, and reports pending ones on close', async () => {
    const io = new RecordingUdpIo()
    const log: string[] = []
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, logReceiver(log))
    io.send(new Uint8Array(10), 10, A, 1)
    expect(io.pendingSends).toBe(1)
    await new Promise((resolve) => setImmediate(resolve))
    expect(log).toEqual(['complete 1'])
    io.send(new Uint8Array(10), 10, A, 2)
    await io.close()
    expect(log).toEqual(['complete 1', 'complete 2'])
    expect(thrownCode(() => io.send(new Uint8Array(1), 1, A, 3))).toBe('STOQ_ERR_CLOSED')
  })
})
