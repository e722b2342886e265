import type { BufferPool, PacketBatcher, PacketBatcherComponents, SocketAddress } from '@stoq/interface'
import { afterEach, describe, expect, it } from 'vitest'
import {
  FakeQuicEngine,
  PACKET_HEADER_BYTES,
  RecordingUdpIo,
  createFixedPool,
  decodePacket,
  type RecordedSend,
  type RecordingUdpIoOptions,
  type ScriptedPacket,
} from '../fakes/packet-batcher.js'
import { WAIT_LIMIT_MS, addressKey, nextTurn, prng, settle, splitSegments, waitUntil } from '../tools/util.js'

/** What the suite asks `createPool` for. */
export interface PacketBatcherPoolOptions {
  /** Bytes per buffer (the pool may round up). */
  bufferSize: number
  /** Buffers the pool owns; it must not grow beyond them (`tryAcquire` returns -1 when all are in use). */
  capacity: number
}

/** How the suite creates the batcher under test (a fresh one per test, around fresh fakes). */
export interface PacketBatcherTestFactory {
  /** A new batcher over `components` (a scripted engine, a recording socket and a pool). */
  create(components: PacketBatcherComponents): PacketBatcher
  /** A new pool for the batcher; default: a simple fixed-size pool that throws on misuse. */
  createPool?(options: PacketBatcherPoolOptions): BufferPool
}

/** Largest packet the fake engine produces. */
const MAX_PACKET = 1350
/** A pool buffer holds one full GSO super-buffer. */
const POOL_BUFFER = 65_536
const POOL_CAPACITY = 64
const TEST_MS = 30_000

const PEER_A: SocketAddress = { address: '10.0.0.1', port: 4433, family: 'IPv4' }
const PEER_B: SocketAddress = { address: '10.0.0.2', port: 443, family: 'IPv4' }
const PEER_C: SocketAddress = { address: '2001:db8::7', port: 4433, family: 'IPv6' }

const run = (peer: SocketAddress, size: number, count: number): ScriptedPacket[] => Array.from({ length: count }, () => ({ peer, size }))

/** A receiver callback for an event the recording socket never produces. */
function ignoreEvent(): void {
  // See the bind() that uses it.
}

/**
 * A deterministic script like a busy endpoint's: runs of 1 to 60 packets per
 * peer, mostly full-size, some 1200-byte stretches, and odd sizes in between.
 */
function randomScript(count: number, seed: number): ScriptedPacket[] {
  const random = prng(seed)
  const peers = [PEER_A, PEER_B, PEER_C]
  const out: ScriptedPacket[] = []
  while (out.length < count) {
    const peer = peers[Math.floor(random() * peers.length)]!
    const length = 1 + Math.floor(random() * 60)
    for (let i = 0; i < length && out.length < count; i++) {
      const r = random()
      const size = r < 0.65 ? MAX_PACKET : r < 0.85 ? 1200 : PACKET_HEADER_BYTES + Math.floor(random() * (MAX_PACKET - PACKET_HEADER_BYTES))
      out.push({ peer, size })
    }
  }
  return out
}

/** Sizes of consecutive packets, run-length encoded: `1200x10 700`. */
function sizesText(sizes: readonly number[]): string {
  const parts: string[] = []
  for (let i = 0; i < sizes.length; ) {
    let j = i
    while (j < sizes.length && sizes[j] === sizes[i]) j++
    parts.push(j - i > 1 ? `${sizes[i]}x${j - i}` : `${sizes[i]}`)
    i = j
  }
  return parts.join(' ')
}

/** One send as text: destination, segment size and the sizes of its datagrams. */
function sendText(send: RecordedSend): string {
  const sizes = splitSegments(send.data, send.segmentSize).map((d) => d.length)
  return `${addressKey(send.to)} seg ${send.segmentSize}: ${sizesText(sizes)}`
}

/** Expected sends as text, from groups of [peer, sizes]. */
function groupsText(groups: readonly [SocketAddress, number[]][]): string[] {
  return groups.map(([peer, sizes]) => `${addressKey(peer)} seg ${sizes[0]}: ${sizesText(sizes)}`)
}

/** Cut a script into the sends a maximal grouping makes: equal sizes, one peer, at most `maxSegments` each. */
function greedyGroups(script: readonly ScriptedPacket[], maxSegments: number): [SocketAddress, number[]][] {
  const groups: [SocketAddress, number[]][] = []
  for (const packet of script) {
    const last = groups.at(-1)
    if (last && addressKey(last[0]) === addressKey(packet.peer) && last[1][0] === packet.size && last[1].length < maxSegments) {
      last[1].push(packet.size)
    } else {
      groups.push([packet.peer, [packet.size]])
    }
  }
  return groups
}

interface Harness {
  engine: FakeQuicEngine
  io: RecordingUdpIo
  pool: BufferPool
  batcher: PacketBatcher
}

/** Register a vitest `describe` block that checks `PacketBatcher` contract compliance of what `factory` creates. */
export function packetBatcherTests(name: string, factory: PacketBatcherTestFactory): void {
  describe(`${name}: PacketBatcher compliance`, () => {
    const harnesses: Harness[] = []

    afterEach(async () => {
      // Let deferred work finish against an engine with nothing more to say.
      for (const h of harnesses) h.engine.halt()
      await settle()
      harnesses.length = 0
    })

    const setup = async (io: Partial<RecordingUdpIoOptions>, capacity = POOL_CAPACITY): Promise<Harness> => {
      const engine = new FakeQuicEngine(MAX_PACKET)
      const socket = new RecordingUdpIo(io)
      const pool = factory.createPool?.({ bufferSize: POOL_BUFFER, capacity }) ?? createFixedPool(capacity, POOL_BUFFER)
      let batcher: PacketBatcher | null = null
      await socket.bind(
        { host: '127.0.0.1', port: 4433, ipv6Only: false },
        {
          // The recording socket only sends: it reports completions and drains, never packets or errors.
          onPacket: ignoreEvent,
          onBatchEnd: ignoreEvent,
          onSendComplete: (token) => batcher?.onSendComplete(token),
          onDrain: () => batcher?.onDrain(),
          onError: ignoreEvent,
        },
      )
      batcher = factory.create({ engine, io: socket, pool })
      engine.onPoll = () => {
        if (socket.full) {
          engine.violations.push(`pollTransmit after send ${socket.sends.findLastIndex((s) => !s.accepted)} returned false, before the socket drained`)
        }
      }
      const h = { engine, io: socket, pool, batcher }
      harnesses.push(h)
      return h
    }

    const progress = (h: Harness): string =>
      `produced ${h.engine.produced} of ${h.engine.script.length}, sends ${h.io.sends.length}, ` +
      `pending ${h.io.pendingSends}, blocked ${h.batcher.blocked}, pool inUse ${h.pool.stats().inUse}`

    const done = (h: Harness): boolean => h.engine.remaining === 0 && h.io.pendingSends === 0

    /** Wait until the batcher sent everything and every send completed (the socket completes them by itself). */
    const runToEnd = async (h: Harness, limitMs = WAIT_LIMIT_MS): Promise<void> => {
      await waitUntil(
        'every scripted packet to be sent and completed',
        () => done(h),
        () => progress(h),
        limitMs,
      )
      await settle()
    }

    /** Complete the pending sends turn after turn until everything is sent. */
    const driveManually = async (h: Harness): Promise<void> => {
      const deadline = Date.now() + WAIT_LIMIT_MS
      while (!done(h)) {
        if (Date.now() > deadline) throw new Error(`Gave up driving the batcher after ${WAIT_LIMIT_MS} ms (${progress(h)})`)
        h.io.complete()
        await nextTurn()
      }
      await settle()
    }

    /** Every scripted packet reached the socket exactly once, in order, intact, to its peer; nothing else did. */
    const expectDelivered = (h: Harness): void => {
      const got = h.io.sends.flatMap((send) =>
        splitSegments(send.data, send.segmentSize).map((datagram) => {
          const p = decodePacket(datagram, send.to)
          return `#${p.id} ${p.size} B to ${p.peer}${p.intact ? '' : ' (corrupt)'}`
        }),
      )
      const expected = h.engine.script.map((p, id) => `#${id} ${p.size} B to ${addressKey(p.peer)}`)
      let difference = ''
      for (let i = 0; i < Math.max(got.length, expected.length) && difference === ''; i++) {
        if (got[i] !== expected[i]) difference = `datagram ${i}: got ${got[i] ?? 'nothing'}, expected ${expected[i] ?? 'nothing'}`
      }
      expect(difference, 'first difference between what reached the socket and what the engine produced').toBe('')
      expect(got.length).toBe(expected.length)
    }

    const expectClean = (h: Harness): void => {
      expect(h.engine.violations, 'engine contract breaches').toEqual([])
      expect(h.io.violations, 'socket contract breaches').toEqual([])
      expect(h.pool.stats().inUse, 'pool buffers still in use').toBe(0)
      expect(h.batcher.blocked).toBe(false)
    }

    for (const maxSegments of [1, 64]) {
      describe(`with io.maxSegments = ${maxSegments}`, () => {
        it('declares specification v1 and starts idle', async () => {
          const h = await setup({ maxSegments })
          expect(h.batcher.specificationVersion).toBe('v1')
          expect(h.batcher.blocked).toBe(false)
          expect(h.batcher.stats()).toMatchObject({ packets: 0, syscalls: 0, syscallsSaved: 0, flushes: 0 })
        })

        it('sends nothing when the engine has nothing to send', async () => {
          const h = await setup({ maxSegments })
          h.batcher.flush()
          await settle()
          expect(h.io.sends).toEqual([])
          expect(h.batcher.stats()).toMatchObject({ packets: 0, syscalls: 0, syscallsSaved: 0 })
          expectClean(h)
        })

        it(
          'hands every packet to the socket exactly once, in order, intact, to its peer',
          async () => {
            const h = await setup({ maxSegments })
            h.engine.enqueue(randomScript(3000, 1))
            h.batcher.flush()
            await runToEnd(h)
            expectDelivered(h)
            expectClean(h)
          },
          TEST_MS,
        )

        it(
          'tolerates send completions in any order',
          async () => {
            const h = await setup({ maxSegments, order: 'shuffled' })
            h.engine.enqueue(randomScript(3000, 2))
            h.batcher.flush()
            await runToEnd(h)
            expectDelivered(h)
            expectClean(h)
          },
          TEST_MS,
        )

        it(
          'never puts more than io.maxSegments datagrams in one send',
          async () => {
            const h = await setup({ maxSegments })
            h.engine.enqueue(randomScript(3000, 3))
            h.batcher.flush()
            await runToEnd(h)
            const oversized = h.io.sends
              .map((send, i) => ({ i, segments: splitSegments(send.data, send.segmentSize).length, send }))
              .filter((s) => s.segments > maxSegments)
            expect(
              oversized.slice(0, 3).map((s) => `send ${s.i}: ${s.segments} datagrams (${sendText(s.send)})`),
              `${oversized.length} of ${h.io.sends.length} sends carry more than ${maxSegments} datagram(s)`,
            ).toEqual([])
            for (const send of h.io.sends) expect(send.data.length).toBeLessThanOrEqual(65_507 * maxSegments)
          },
          TEST_MS,
        )

        if (maxSegments > 1) {
          it(
            'groups each run of equal-size packets to one peer into one send; a longer packet starts a new one',
            async () => {
              const h = await setup({ maxSegments })
              const script = [
                ...run(PEER_A, 1200, 10),
                ...run(PEER_A, 1300, 3), // longer: a new send
                ...run(PEER_A, 1350, 2), // longer again
                ...run(PEER_B, 1200, 4), // another peer
                ...run(PEER_A, 1200, 2), // back to the first peer
              ]
              h.engine.enqueue(script)
              h.batcher.flush()
              await runToEnd(h)
              expect(h.io.sends.map(sendText)).toEqual(groupsText(greedyGroups(script, maxSegments)))
              expectDelivered(h)
              expectClean(h)
            },
            TEST_MS,
          )

          it(
            'lets a shorter packet end a run; the next packet starts a new send',
            async () => {
              const h = await setup({ maxSegments })
              h.engine.enqueue([...run(PEER_A, 1200, 6), ...run(PEER_A, 700, 1), ...run(PEER_A, 1200, 3), ...run(PEER_B, 1200, 1)])
              h.batcher.flush()
              await runToEnd(h)
              const shorterEnds = groupsText([
                [PEER_A, [...Array(6).fill(1200), 700]],
                [PEER_A, [1200, 1200, 1200]],
                [PEER_B, [1200]],
              ])
              const shorterAlone = groupsText([
                [PEER_A, Array(6).fill(1200)],
                [PEER_A, [700]],
                [PEER_A, [1200, 1200, 1200]],
                [PEER_B, [1200]],
              ])
              expect([shorterEnds, shorterAlone]).toContainEqual(h.io.sends.map(sendText))
              expectDelivered(h)
              expectClean(h)
            },
            TEST_MS,
          )
        } else {
          it(
            'sends one packet per send',
            async () => {
              const h = await setup({ maxSegments })
              const script = [...run(PEER_A, 1200, 10), ...run(PEER_A, 700, 1), ...run(PEER_B, 1300, 3)]
              h.engine.enqueue(script)
              h.batcher.flush()
              await runToEnd(h)
              expect(h.io.sends.map(sendText)).toEqual(groupsText(script.map((p) => [p.peer, [p.size]])))
              expectDelivered(h)
              expectClean(h)
            },
            TEST_MS,
          )
        }

        it(
          'leaves the memory of a send alone until it completes, then releases every pool buffer',
          async () => {
            const h = await setup({ maxSegments, completion: 'manual' })
            h.engine.enqueue(randomScript(2000, 4))
            h.batcher.flush()
            await settle()
            expect(h.io.sends.length).toBeGreaterThan(0)
            await driveManually(h)
            expectDelivered(h)
            expectClean(h)
          },
          TEST_MS,
        )

        it(
          'stops polling the engine while send() reports a full socket, resumes on onDrain, and loses nothing',
          async () => {
            const h = await setup({ maxSegments, completion: 'manual', highWater: 3, lowWater: 1 })
            h.engine.enqueue(randomScript(400, 5))
            h.batcher.flush()
            expect(h.io.full, 'the socket reported backpressure').toBe(true)
            expect(h.batcher.blocked).toBe(true)
            const polls = h.engine.pollCalls
            const sends = h.io.sends.length
            h.batcher.flush() // held back while blocked
            await settle()
            expect(h.engine.pollCalls).toBe(polls)
            expect(h.io.sends.length).toBe(sends)
            expect(h.engine.remaining).toBeGreaterThan(0)
            await driveManually(h)
            expect(h.io.drains).toBeGreaterThan(0)
            expectDelivered(h)
            expectClean(h)
          },
          TEST_MS,
        )

        it(
          'keeps going when the socket completes sends asynchronously and reports backpressure often',
          async () => {
            const h = await setup({ maxSegments, highWater: 2, lowWater: 0 })
            h.engine.enqueue(randomScript(5000, 6))
            h.batcher.flush()
            await runToEnd(h)
            expect(h.io.sends.some((s) => !s.accepted)).toBe(true)
            expectDelivered(h)
            expectClean(h)
          },
          TEST_MS,
        )

        it(
          'waits for pool buffers held by its own sends and loses nothing',
          async () => {
            const h = await setup({ maxSegments, completion: 'manual' }, 2)
            h.engine.enqueue(randomScript(400, 7))
            h.batcher.flush()
            await settle()
            expect(h.engine.remaining).toBeGreaterThan(0)
            expect(h.engine.violations).toEqual([])
            await driveManually(h)
            expectDelivered(h)
            expectClean(h)
          },
          TEST_MS,
        )

        it(
          'sends on the next flush() once pool buffers held elsewhere are released',
          async () => {
            const h = await setup({ maxSegments }, 2)
            const held = [h.pool.acquire(), h.pool.acquire()]
            h.engine.enqueue(randomScript(200, 8))
            h.batcher.flush()
            await settle()
            expect(h.io.sends).toEqual([])
            for (const index of held) h.pool.release(index)
            h.batcher.flush()
            await runToEnd(h, 3_000)
            expectDelivered(h)
            expectClean(h)
          },
          TEST_MS,
        )

        it(
          'counts packets, syscalls (sends) and syscallsSaved in stats()',
          async () => {
            const h = await setup({ maxSegments })
            h.engine.enqueue(randomScript(3000, 9))
            h.batcher.flush()
            await runToEnd(h)
            const stats = h.batcher.stats()
            expect(stats.packets).toBe(h.engine.script.length)
            expect(stats.syscalls).toBe(h.io.sends.length)
            expect(stats.syscallsSaved).toBe(stats.packets - stats.syscalls)
            expect(stats.flushes).toBeGreaterThanOrEqual(1)
            expect(stats.flushes).toBeLessThanOrEqual(h.io.sends.length)
            if (maxSegments > 1) expect(stats.syscallsSaved).toBeGreaterThan(0)
            expectClean(h)
          },
          TEST_MS,
        )
      })
    }
  })
}
