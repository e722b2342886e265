import { describe, expect, it } from 'vitest'
import { inspect } from 'node:util'
import { FakeQuicEngine, RecordingUdpIo, createFixedPool, boundedOutcome, type MisuseOutcome, wrongValues } from '@stoq/compliance-tests'
import { StoqError, type SocketAddress } from '@stoq/interface'
import * as api from '../src/index.js'
import { batching } from '../src/index.js'

/**
 * API misuse (issue #6): every public entry point given wrong types, out-of-range
 * numbers or closed objects answers with a typed StoqError (thrown or rejected)
 * within a bounded time: never a TypeError, a crash or a hang.
 */

const LIMIT_MS = 2000
const PEER: SocketAddress = { address: '127.0.0.1', port: 9, family: 'IPv4' }

/** Wrong values of every kind. */
const WRONG = wrongValues(
  'null',
  'NaN',
  'Infinity',
  '-1',
  '0',
  '1.5',
  '2^64',
  'a string',
  'an object',
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

const components = () => ({ engine: new FakeQuicEngine(1200), io: new RecordingUdpIo({ maxSegments: 8 }), pool: createFixedPool(8, 2048) })

describe('batching: API misuse', () => {
  it('covers every export of src/index.ts', () => {
    const covered = [
      'batching',
      'DEFAULT_MAX_PACKETS_PER_BATCH',
      'DEFAULT_MAX_SUPER_BUFFER_BYTES',
      'DEFAULT_MAX_BATCHES_PER_FLUSH',
      'DEFAULT_FLUSH_DEADLINE_US',
    ]
    expect(Object.keys(api).sort()).toEqual(covered.sort())
    for (const name of covered.filter((n) => n !== 'batching')) expect(typeof (api as Record<string, unknown>)[name]).toBe('number')
  })

  it('refuses options that are not an object', async () => {
    for (const [label, v] of WRONG.filter(([n]) => n !== 'an object')) {
      await expectTyped(`batching(${label})`, () => batching(v as never), 'STOQ_ERR_INVALID_ARG', 'options')
    }
  })

  it.each([
    ['maxPacketPerBatch', 'maxPacketsPerBatch'],
    ['flushDeadlineMs', 'flushDeadlineUs'],
    ['maxBatchesPerFlsuh', 'maxBatchesPerFlush'],
    ['segments', null],
  ])('refuses the unknown key %s, naming it (closest: %s)', async (key, near) => {
    await expectTyped(`batching({ ${key} })`, () => batching({ [key]: 8 } as never), 'STOQ_ERR_INVALID_ARG', key)
    let err: Error | null = null
    try {
      batching({ [key]: 8 } as never)
    } catch (e) {
      err = e as Error
    }
    expect(err?.message).toContain('accepted: maxPacketsPerBatch, maxSuperBufferBytes, maxBatchesPerFlush, flushDeadlineUs')
    if (near === null) expect(err?.message).not.toContain('did you mean')
    else expect(err?.message).toContain(`did you mean \`${near}\`?`)
  })

  it('refuses every option of the wrong type or out of range', async () => {
    const limits: Record<string, number> = {
      maxPacketsPerBatch: 512,
      maxSuperBufferBytes: 65535,
      maxBatchesPerFlush: 1 << 20,
      flushDeadlineUs: 10_000_000,
    }
    for (const [option, max] of Object.entries(limits)) {
      for (const [label, v] of [...OPT, ['max + 1', max + 1] as [string, unknown]]) {
        await expectTyped(`${option} = ${label}`, () => batching({ [option]: v } as never), 'STOQ_ERR_INVALID_ARG', option)
      }
      // The boundaries are accepted.
      expect(() => batching({ [option]: 1 })).not.toThrow()
      expect(() => batching({ [option]: max })).not.toThrow()
    }
  })

  it('refuses components that are not an engine, a socket and a pool, when the batcher is built', async () => {
    const factory = batching()
    for (const [label, v] of WRONG.filter(([n]) => n !== 'an object')) {
      await expectTyped(`factory(${label})`, () => factory(v as never), 'STOQ_ERR_INVALID_ARG', 'components')
    }
    const cases: Array<[string, (c: Record<string, unknown>) => void, string]> = [
      ['no engine', (c) => delete c.engine, 'components.engine'],
      ['no io', (c) => delete c.io, 'components.io'],
      ['no pool', (c) => delete c.pool, 'components.pool'],
      ['engine = 5', (c) => (c.engine = 5), 'components.engine'],
      ['engine without pollTransmit', (c) => (c.engine = { maxPacketSize: 1200 }), 'components.engine.pollTransmit'],
      ['io without send', (c) => (c.io = { maxSegments: 1 }), 'components.io.send'],
      ['pool without view', (c) => (c.pool = { bufferSize: 2048, tryAcquire: () => 0, release: () => {} }), 'components.pool.view'],
      ['pool = []', (c) => (c.pool = []), 'components.pool'],
    ]
    for (const [label, edit, argument] of cases) {
      const c = components() as unknown as Record<string, unknown>
      edit(c)
      await expectTyped(label, () => factory(c as never), 'STOQ_ERR_INVALID_ARG', argument)
    }
    for (const [label, v] of OPT.concat([['65536', 65536]])) {
      const engine = { maxPacketSize: v, pollTransmit: () => false }
      await expectTyped(
        `maxPacketSize = ${label}`,
        () => factory({ ...components(), engine } as never),
        'STOQ_ERR_INVALID_ARG',
        'components.engine.maxPacketSize',
      )
    }
    for (const [label, v] of OPT.filter(([n]) => n !== 'a function')) {
      const io = { maxSegments: v, send: () => true }
      if (v === 0) continue // 0 segments: the socket cannot segment (valid)
      await expectTyped(`maxSegments = ${label}`, () => factory({ ...components(), io } as never), 'STOQ_ERR_INVALID_ARG', 'components.io.maxSegments')
    }
    for (const [label, v] of OPT) {
      const pool = { ...createFixedPool(4, 2048), bufferSize: v }
      await expectTyped(`bufferSize = ${label}`, () => factory({ ...components(), pool } as never), 'STOQ_ERR_INVALID_ARG', 'components.pool.bufferSize')
    }
    // Buffers too small for one packet.
    await expectTyped('small buffers', () => factory({ ...components(), pool: createFixedPool(4, 1000) }), 'STOQ_ERR_INVALID_ARG', 'pool.bufferSize')
  })

  it('ignores send completions it does not own, and does nothing once closed', async () => {
    const c = components()
    const b = batching()(c)
    await c.io.bind(
      { host: '127.0.0.1', port: 0, ipv6Only: false },
      { onPacket: () => {}, onBatchEnd: () => {}, onSendComplete: (t) => b.onSendComplete(t), onDrain: () => b.onDrain(), onError: () => {} },
    )
    for (const [, v] of WRONG) {
      const r = await outcome(() => b.onSendComplete(v as never))
      expect(r.ok).toBe(true)
    }
    for (const token of [-1, 8, 1e9]) expect(() => b.onSendComplete(token)).not.toThrow()
    c.engine.enqueue(Array.from({ length: 10 }, () => ({ peer: PEER, size: 1200 })))
    b.close!()
    b.flush()
    b.onDrain()
    b.close!() // twice
    expect(c.engine.pollCalls).toBe(0)
    expect(b.stats().packets).toBe(0)
    await c.io.close()
  })
})
