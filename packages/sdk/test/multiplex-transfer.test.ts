import { createHash, randomBytes } from 'node:crypto'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki, waitFor } from '@stoq/compliance-tests'
import {
  Stoq,
  createTransferReceiver,
  type IncomingTransfer,
  type QuicConnection,
  type StoqError,
  type TransferReceiver,
  type TransferReceiverOptions,
} from '../src/index.js'
import { CHUNK_STATUS, CHUNK_HEADER_BYTES, chunkHeaderFor, decodeChunkHeader, sendChunk } from '../src/multiplex-transfer.js'

const MiB = 1024 * 1024
let pki: TestPki

beforeAll(async () => {
  pki = await testPki()
})

/** Deterministic, non-repeating-looking bytes. */
function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i + 4 <= n; i += 4) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    b.writeUInt32LE(x, i)
  }
  for (let i = n - (n % 4); i < n; i++) b[i] = i & 0xff
  return b
}

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex')

interface Rig {
  port: number
  client: Stoq
  receiver: TransferReceiver
  errors: StoqError[]
  serverConns: QuicConnection[]
  nextTransfer(): Promise<IncomingTransfer>
}

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

async function rig(options: Partial<TransferReceiverOptions> = {}): Promise<Rig> {
  const errors: StoqError[] = []
  const serverConns: QuicConnection[] = []
  const arrived: IncomingTransfer[] = []
  const waiting: ((t: IncomingTransfer) => void)[] = []
  const receiver = createTransferReceiver({
    onTransfer: (t) => {
      const w = waiting.shift()
      if (w) w(t)
      else arrived.push(t)
    },
    onError: (err) => errors.push(err),
    ...options,
  })
  const server = await Stoq.create('mux-xfer-server')
  const ep = await server.listen(
    { host: '127.0.0.1', port: 0 },
    {
      cert: pki.server.cert,
      key: pki.server.key,
      onConnection: (c) => serverConns.push(c),
      onStream: (s, c) => void receiver.handle(s, c),
    },
  )
  const client = await Stoq.create('mux-xfer-client')
  cleanups.push(async () => {
    receiver.close()
    await client.close()
    await server.close()
  })
  return {
    port: ep.address.port,
    client,
    receiver,
    errors,
    serverConns,
    nextTransfer: () => {
      const t = arrived.shift()
      return t ? Promise.resolve(t) : new Promise((resolve) => waiting.push(resolve))
    },
  }
}

/** The kit's `waitFor` (polls every 10 ms), with this file's time limit as a second argument. */
const until = (condition: () => boolean, ms = 10_000): Promise<void> => waitFor(condition, { limitMs: ms, everyMs: 10 })

describe('multiplexed transfer', () => {
  it('aggregates one 32 MiB transfer over 4 members, byte-identical at the receiver', async () => {
    const r = await rig()
    const mux = await r.client.multiplex(`127.0.0.1:${r.port}`, { connections: 4, pin: pki.server.fingerprint })
    const data = pattern(32 * MiB)
    const [result, received] = await Promise.all([mux.transfer(data), r.nextTransfer().then((t) => t.bytes())])
    expect(received.length).toBe(data.length)
    expect(sha(received)).toBe(sha(data))
    expect(result.bytes).toBe(data.length)
    expect(result.chunks).toBe(32)
    expect(result.retries).toBe(0)
    expect(result.members).toHaveLength(4)
    for (const m of result.members) expect(m.chunks).toBeGreaterThan(0)
    expect(result.members.reduce((n, m) => n + m.bytes, 0)).toBe(data.length)
    expect(result.senderGbps).toBeGreaterThan(0)
    const stats = mux.stats()
    expect(stats.bytesSent).toBe(data.length)
    expect(stats.messagesSent).toBe(32)
    expect(stats.members.every((m) => m.chunksInFlight === 0)).toBe(true)
    expect(stats.members.every((m) => m.averageGbps > 0)).toBe(true)
    expect(stats.averageGbps).toBeGreaterThan(0)
    // The per-second sample that covers the transfer reports a rate.
    await until(() => mux.stats().throughputGbps > 0, 5000)
    expect(mux.stats().throughputGbps).toBeGreaterThan(0)
    expect(r.receiver.stats()).toMatchObject({ active: 0, completed: 1, chunks: 32, duplicates: 0, bytes: data.length })
    expect(r.errors).toEqual([])
    await mux.close()
  })

  it('completes intact when one member is killed by the server mid-transfer', async () => {
    let stored = 0
    let victim: QuicConnection | null = null
    const size = 24 * MiB + 777
    const r = await rig({
      onChunk: ({ conn }) => {
        // A quarter in, close the server connection that delivered this chunk.
        if (++stored >= 6 && victim === null) {
          victim = conn
          conn.closeNow(99, 'killed mid-transfer') // a kill: no graceful wait
        }
      },
    })
    const mux = await r.client.multiplex(`127.0.0.1:${r.port}`, { connections: 4, strategy: 'least-loaded', pin: pki.server.fingerprint })
    const data = pattern(size, 7)
    // An async source in uneven pieces, so the chunker reassembles.
    async function* pieces(): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < data.length; at += 100_000) yield data.subarray(at, at + 100_000)
    }
    const incoming = r.nextTransfer()
    const [result, received] = await Promise.all([mux.transfer(pieces()), incoming.then((t) => t.bytes())])
    expect(victim).not.toBeNull()
    expect(sha(received)).toBe(sha(data))
    expect(result.bytes).toBe(size)
    expect(result.chunks).toBe(25)
    expect(result.retries).toBeGreaterThanOrEqual(1)
    expect(result.members.some((m) => m.retries > 0)).toBe(true)
    // The chunk stored on the victim was never confirmed, so it came again and was dropped.
    const receipt = await (await incoming).result
    expect(receipt.bytes).toBe(size)
    expect(receipt.duplicates).toBeGreaterThanOrEqual(1)
    await until(() => mux.stats().replacements >= 1 && mux.stats().alive === 4)
    expect(mux.stats().replacements).toBeGreaterThanOrEqual(1)
    expect(mux.stats().alive).toBe(4)
    expect(mux.stats().retries).toBe(result.retries)
    await mux.close()
  })

  it('drops a chunk that arrives twice, in or out of order', async () => {
    const r = await rig()
    const conn = await r.client.connect(`127.0.0.1:${r.port}`, { pin: pki.server.fingerprint, reuse: false })
    const id = randomBytes(16).toString('hex')
    const a = pattern(64 * 1024, 3)
    const b = pattern(1000, 4)
    const h0 = chunkHeaderFor(id, 0, 0, a, false)
    const h1 = chunkHeaderFor(id, 1, a.length, b, true)
    const incoming = r.nextTransfer()
    // The final chunk first (held out of order), twice.
    expect(await sendChunk(conn, h1, b)).toBe(CHUNK_STATUS.stored)
    expect(await sendChunk(conn, h1, b)).toBe(CHUNK_STATUS.duplicate)
    const t = await incoming
    expect(t.totalBytes).toBe(a.length + b.length)
    expect(t.receivedBytes).toBe(b.length)
    expect(await sendChunk(conn, h0, a)).toBe(CHUNK_STATUS.stored)
    // After completion: still recognised as a duplicate, no new transfer.
    expect(await sendChunk(conn, h0, a)).toBe(CHUNK_STATUS.duplicate)
    const received = await t.bytes()
    expect(sha(received)).toBe(sha(Buffer.concat([a, b])))
    const receipt = await t.result
    expect(receipt).toMatchObject({ bytes: a.length + b.length, chunks: 2, duplicates: 1 })
    expect(r.receiver.stats()).toMatchObject({ active: 0, completed: 1, duplicates: 2, chunks: 2 })
    expect(r.errors).toEqual([])
    await conn.close()
  })

  it('refuses a corrupted chunk with a typed error and does not deliver it', async () => {
    const r = await rig()
    const conn = await r.client.connect(`127.0.0.1:${r.port}`, { pin: pki.server.fingerprint, reuse: false })
    const id = randomBytes(16).toString('hex')
    const good = pattern(100_000, 5)
    const bad = Buffer.from(good)
    bad[12_345]! ^= 0xff
    const h = chunkHeaderFor(id, 0, 0, good, true)
    const incoming = r.nextTransfer()
    expect(await sendChunk(conn, h, bad)).toBe(CHUNK_STATUS.integrity)
    expect(r.errors).toHaveLength(1)
    expect(r.errors[0]).toMatchObject({ code: 'STOQ_ERR_INTEGRITY' })
    const t = await incoming
    expect(t.receivedBytes).toBe(0)
    expect(t.totalBytes).toBeNull()
    expect(t.bufferedBytes).toBe(0)
    // The intact copy is then accepted, and only it is delivered.
    expect(await sendChunk(conn, h, good)).toBe(CHUNK_STATUS.stored)
    expect(sha(await t.bytes())).toBe(sha(good))
    expect(await t.result).toMatchObject({ bytes: good.length, corrupted: 1 })

    // Malformed headers: answered with a protocol status (bidirectional) or dropped (unidirectional), typed errors, no crash.
    const junk = conn.openStream()
    const w = junk.writable!.getWriter()
    await w.write(Buffer.alloc(CHUNK_HEADER_BYTES, 0x41))
    await w.close()
    const reply: number[] = []
    for await (const piece of junk.readable!) reply.push(...piece)
    expect(reply).toEqual([CHUNK_STATUS.protocol])
    await conn.send('not a chunk', { confirm: true })
    await until(() => r.errors.length >= 3)
    expect(r.errors.slice(1).map((e) => e.code)).toEqual(['STOQ_ERR_PROTOCOL', 'STOQ_ERR_PROTOCOL'])
    // A header whose body is cut short.
    const h2 = chunkHeaderFor(randomBytes(16).toString('hex'), 0, 0, good, true)
    expect(await sendChunk(conn, h2, good.subarray(0, 10))).toBe(CHUNK_STATUS.protocol)
    expect(r.errors.at(-1)).toMatchObject({ code: 'STOQ_ERR_PROTOCOL' })
    await conn.close()
  })

  it('keeps each transfer within the receiver window while a slow reader catches up', async () => {
    const window = 256 * 1024
    let highest = 0
    let current: IncomingTransfer | null = null
    const r = await rig({
      windowBytes: window,
      onTransfer: (t) => {
        current = t
      },
      onChunk: () => {
        highest = Math.max(highest, current?.bufferedBytes ?? 0)
      },
    })
    const mux = await r.client.multiplex(`127.0.0.1:${r.port}`, { connections: 2, pin: pki.server.fingerprint })
    const data = pattern(4 * MiB + 5, 9)
    // The sender keeps its default (larger) window: the receiver's backpressure bounds memory anyway.
    const sending = mux.transfer(data, { chunkSize: 64 * 1024 })
    await until(() => current !== null)
    const parts: Uint8Array[] = []
    for await (const part of current!) {
      parts.push(part)
      if (parts.length % 8 === 0) await new Promise((resolve) => setTimeout(resolve, 2))
    }
    const result = await sending
    expect(sha(Buffer.concat(parts))).toBe(sha(data))
    expect(result.bytes).toBe(data.length)
    expect(highest).toBeGreaterThan(0)
    expect(highest).toBeLessThanOrEqual(window)
    await mux.close()
  })

  it('fails with a typed error instead of hanging when the receiver never answers', async () => {
    const server = await Stoq.create('mux-xfer-silent')
    const ep = await server.listen(
      { host: '127.0.0.1', port: 0 },
      // Accepts streams but never reads or answers them.
      { cert: pki.server.cert, key: pki.server.key, onStream: () => {} },
    )
    const client = await Stoq.create('mux-xfer-client')
    cleanups.push(async () => {
      await client.close()
      await server.close()
    })
    const mux = await client.multiplex(`127.0.0.1:${ep.address.port}`, { connections: 2, pin: pki.server.fingerprint })
    await expect(mux.transfer(pattern(4 * MiB), { stallTimeoutMs: 300 })).rejects.toMatchObject({ code: 'STOQ_ERR_PROTOCOL' })
    expect(mux.stats().members.every((m) => m.chunksInFlight === 0)).toBe(true)
    expect(mux.stats().bytesSent).toBe(0)
    await mux.close()
  })

  it('fails the sender with a typed error when the receiving application fails the transfer', async () => {
    const r = await rig({
      onTransfer: async () => {
        throw new Error('the application could not take it')
      },
    })
    const mux = await r.client.multiplex(`127.0.0.1:${r.port}`, { connections: 2, pin: pki.server.fingerprint })
    const err = await mux.transfer(pattern(8 * MiB)).then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'STOQ_ERR_PROTOCOL' })
    expect(r.errors[0]).toMatchObject({ code: 'STOQ_ERR_PROTOCOL', message: expect.stringContaining('could not take it') })
    expect(r.receiver.stats()).toMatchObject({ active: 0, failed: 1 })
    await mux.close()
  })

  it('validates its options and its input', async () => {
    const r = await rig()
    const mux = await r.client.multiplex(`127.0.0.1:${r.port}`, { connections: 2, pin: pki.server.fingerprint })
    const data = pattern(1000)
    const invalid = { code: 'STOQ_ERR_INVALID_ARG' }
    await expect(mux.transfer(data, { chunkSize: 1000 })).rejects.toMatchObject(invalid)
    await expect(mux.transfer(data, { chunkSize: 64 * MiB })).rejects.toMatchObject(invalid)
    await expect(mux.transfer(data, { chunkSize: 1.5 as number })).rejects.toMatchObject(invalid)
    await expect(mux.transfer(data, { depth: 0 })).rejects.toMatchObject(invalid)
    await expect(mux.transfer(data, { id: 'not-an-id' })).rejects.toMatchObject(invalid)
    await expect(mux.transfer(data, { chunkSize: MiB, windowBytes: 512 * 1024 })).rejects.toMatchObject(invalid)
    await expect(mux.transfer(data, { stallTimeoutMs: 0 })).rejects.toMatchObject(invalid)
    await expect(mux.transfer(data, null as never)).rejects.toMatchObject(invalid)
    await expect(mux.transfer(42 as never)).rejects.toMatchObject(invalid)
    await expect(mux.transfer('text' as never)).rejects.toMatchObject(invalid)
    // A source yielding something else than bytes fails the transfer with a typed error.
    async function* strings(): AsyncGenerator<unknown> {
      yield 'not bytes'
    }
    await expect(mux.transfer(strings() as never)).rejects.toMatchObject(invalid)
    // An empty transfer is one empty final chunk.
    const empty = r.nextTransfer()
    const result = await mux.transfer(new Uint8Array(0))
    expect(result).toMatchObject({ bytes: 0, chunks: 1 })
    expect((await (await empty).bytes()).length).toBe(0)

    expect(() => createTransferReceiver({} as never)).toThrow(expect.objectContaining(invalid))
    expect(() => createTransferReceiver(null as never)).toThrow(expect.objectContaining(invalid))
    expect(() => createTransferReceiver({ onTransfer: () => {}, windowBytes: 10 })).toThrow(expect.objectContaining(invalid))
    expect(() => createTransferReceiver({ onTransfer: () => {}, windowBytes: MiB, maxChunkBytes: 2 * MiB })).toThrow(expect.objectContaining(invalid))
    expect(() => createTransferReceiver({ onTransfer: () => {}, onError: 'x' as never })).toThrow(expect.objectContaining(invalid))
    expect(() => decodeChunkHeader(new Uint8Array(CHUNK_HEADER_BYTES))).toThrow(expect.objectContaining({ code: 'STOQ_ERR_PROTOCOL' }))

    await mux.close()
    await expect(mux.transfer(data)).rejects.toMatchObject({ code: 'STOQ_ERR_CLOSED' })
    expect(r.errors).toEqual([])
  })
})
