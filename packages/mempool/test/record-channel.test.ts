import { existsSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import { RecordReader, RecordRing, RecordWriter, isRecordChannelMessage, type RecordChannelMessage } from '../src/index.js'

describe('RecordWriter / RecordReader', () => {
  it('holds records at an extras marker until that message arrives, and keeps one order', () => {
    const ring = RecordRing.create({ width: 2, capacity: 16 })
    const posted: RecordChannelMessage[] = []
    const writer = new RecordWriter(ring, { postMessage: (m) => posted.push(m as RecordChannelMessage) }, { extrasOp: -1 })
    const seen: string[] = []
    const reader = new RecordReader(
      ring,
      (r, at, x) => seen.push(r[at + 1]! >= 0 ? `${r[at]}:${String(x[r[at + 1]!])}` : String(r[at])),
      () => undefined,
      { extrasOp: -1 },
    )
    writer.rec(1, -1)
    writer.rec(2, writer.extra('two'))
    writer.rec(3, writer.extra('three'))
    expect(writer.pending).toBe(true)
    writer.flush()
    // The extras message, then a wake-up (the reader had never drained: parked).
    expect(posted.map((m) => (m === null ? 'wake' : 'extras'))).toEqual(['extras', 'wake'])
    // The wake-up alone: record 1 goes through, then the reader waits at the marker.
    reader.message(null)
    expect(seen).toEqual(['1'])
    reader.message(posted[0]!)
    expect(seen).toEqual(['1', '2:two', '3:three'])
    expect(posted.every(isRecordChannelMessage)).toBe(true)
    expect(isRecordChannelMessage({ type: 'stats' })).toBe(false)
    expect(() => new RecordWriter(RecordRing.create({ width: 1, capacity: 4 }), { postMessage: () => undefined }, { extrasOp: -1 })).toThrow(
      /at least 2 numbers/,
    )
    expect(
      () =>
        new RecordReader(
          ring,
          () => undefined,
          () => undefined,
          { extrasOp: 1.5 },
        ),
    ).toThrow(/extrasOp/)
  })

  it('carries 200 000 records and their extras from a worker through a small ring, in order', async () => {
    if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
      throw new Error('The worker imports the built @stoq/mempool: run `npx tsup` in packages/mempool first')
    }
    const count = 200_000
    const ring = RecordRing.create({ width: 2, capacity: 64 })
    const worker = new Worker(new URL('./channel-worker.mjs', import.meta.url), { workerData: { handle: ring.handle, count } })
    let expected = 0
    let bad = ''
    let done = false
    await new Promise<void>((resolve, reject) => {
      worker.on('error', reject)
      const reader = new RecordReader(
        ring,
        (r, at, x) => {
          const seq = r[at]!
          const want = seq % 13 === 0 ? seq : -1
          const got = r[at + 1]! >= 0 ? (x[r[at + 1]!] as { n: number }).n : -1
          if (bad === '' && (seq !== expected || got !== want)) bad = `record ${expected}: seq ${seq}, extra ${got}`
          expected++
        },
        () => {
          if (done && expected === count) resolve()
        },
        { extrasOp: -1 },
      )
      worker.on('message', (msg: unknown) => {
        if (isRecordChannelMessage(msg)) reader.message(msg)
        else {
          done = true
          reader.pump()
          if (expected === count) resolve()
        }
      })
    })
    await worker.terminate()
    expect(bad).toBe('')
    expect(expected).toBe(count)
  })
})
