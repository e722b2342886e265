import { spawn, type ChildProcess } from 'node:child_process'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import {
  createEndpoint,
  DEFAULT_STREAM_READ_HIGH_WATER,
  type StoqError,
  type CloseInfo,
  type Endpoint,
  type QuicConnection,
  type QuicStream,
} from '../src/index.js'
import { echoOnce, pattern, readAll, sha256 } from './fixtures/echo.js'
import { failure, sleep, waitFor } from './fixtures/peers.js'

/**
 * Peers that misbehave: one that never reads, one that resets or stops streams
 * in the middle of a transfer, one that vanishes without CONNECTION_CLOSE
 * (endpoint destroyed, process killed). The other side must stay bounded, get
 * typed errors carrying the codes, and keep nothing behind. Runs once per
 * engine (vitest projects).
 */

const KiB = 1024
const MiB = 1024 * 1024
const CHUNK = 64 * KiB

let pki: TestPki

beforeAll(async () => {
  pki = await testPki()
})

function connectTo(client: Endpoint, server: Endpoint): Promise<QuicConnection> {
  return client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
}

/** Wait until `count()` stops moving: `rounds` samples `ms` apart without change. Returns the value. */
async function settled(count: () => number, rounds = 4, ms = 100): Promise<number> {
  let last = -1
  let same = 0
  for (let i = 0; i < 200 && same < rounds; i++) {
    await sleep(ms)
    const now = count()
    same = now === last ? same + 1 : 0
    last = now
  }
  expect(same).toBe(rounds)
  return last
}

// ---------------------------------------------------------------------------

describe('a peer that never reads', () => {
  // The receiver's windows, fixed (no auto-tuning), so the bound is exact.
  const STREAM_WINDOW = 256 * KiB
  const CONN_WINDOW = 1 * MiB
  let server: Endpoint
  let client: Endpoint
  let conn: QuicConnection
  let serverConn: QuicConnection
  const parked: QuicStream[] = []

  beforeAll(async () => {
    server = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      transport: {
        initialMaxStreamData: STREAM_WINDOW,
        maxStreamWindow: STREAM_WINDOW,
        initialMaxData: CONN_WINDOW,
        maxConnectionWindow: CONN_WINDOW,
      },
    })
    const accepted = new Promise<QuicConnection>((resolve) => server.once('connection', resolve))
    // Streams are accepted and kept, never read by the application.
    server.on('connection', (c) => c.on('stream', (s) => parked.push(s)))
    client = await createEndpoint({ host: '127.0.0.1' })
    conn = await connectTo(client, server)
    serverConn = await accepted
  })

  afterAll(async () => {
    await client?.close()
    await server?.close()
  })

  it('stops the writer at the flow-control window: writes stop resolving, bytes accepted stay bounded', async () => {
    const s = conn.openStream({ unidirectional: true })
    const w = s.writable!.getWriter()
    const chunk = pattern(CHUNK, 11)
    let accepted = 0
    let pendingWrite: Promise<void> | null = null
    const writing = (async () => {
      for (let i = 0; i < 1024; i++) {
        pendingWrite = w.write(chunk)
        await pendingWrite
        accepted += chunk.length
      }
    })()
    writing.catch(() => {})
    const stalledAt = await settled(() => accepted)
    const engineAccepted = s.bytesWritten
    // The peer's receive side only ever pulls into its reader queue (1 MiB by default):
    // what the sender got rid of is its stream window plus that queue, at most.
    const bound = STREAM_WINDOW + DEFAULT_STREAM_READ_HIGH_WATER + CHUNK
    console.log(
      `[never-reading peer, one stream] writes resolved: ${accepted} B, engine accepted: ${engineAccepted} B; ` +
        `stream window ${STREAM_WINDOW} B + peer reader queue ${DEFAULT_STREAM_READ_HIGH_WATER} B (bound ${bound} B)`,
    )
    expect(stalledAt).toBeGreaterThanOrEqual(STREAM_WINDOW - CHUNK)
    expect(stalledAt).toBeLessThanOrEqual(bound)
    expect(engineAccepted).toBeLessThanOrEqual(bound)
    // The last write is still waiting for credit.
    let resolved = false
    void pendingWrite!.then(
      () => (resolved = true),
      () => (resolved = true),
    )
    await sleep(200)
    expect(resolved).toBe(false)
    // Reset it: the pending write fails with a typed error and the stream is gone on our side.
    s.reset(5)
    const err = await failure(() => writing)
    expect(err.code).toBe('STOQ_ERR_STREAM_STATE')
    await waitFor(() => conn.streamsOpen === 0, 'the reset stream to leave the map')
  })

  it('pulls a lazy 64 MiB send() source only as fast as flow control admits it', async () => {
    let generated = 0
    async function* source(): AsyncGenerator<Uint8Array> {
      const chunk = pattern(CHUNK, 12)
      for (let i = 0; i < 1024; i++) {
        generated += chunk.length
        yield chunk
      }
    }
    const sending = conn.send(source())
    sending.catch(() => {})
    const stalledAt = await settled(() => generated)
    const bound = STREAM_WINDOW + DEFAULT_STREAM_READ_HIGH_WATER + 2 * CHUNK
    console.log(`[never-reading peer, send() of a lazy source] bytes generated: ${stalledAt} B of ${64 * MiB} B (bound ${bound} B)`)
    expect(stalledAt).toBeLessThanOrEqual(bound)
  })

  it('bounds many streams by the connection window: total accepted stays near it', async () => {
    const before = conn.stats().streamBytesWritten
    const streams = Array.from({ length: 8 }, () => conn.openStream({ unidirectional: true }))
    const chunk = pattern(CHUNK, 13)
    for (const s of streams) {
      const w = s.writable!.getWriter()
      void (async () => {
        for (let i = 0; i < 1024; i++) await w.write(chunk)
      })().catch(() => {})
    }
    const total = (await settled(() => conn.stats().streamBytesWritten)) - before
    // Each peer stream's reader queue pulls what it can (crediting the connection window as it
    // does); beyond that, the connection window caps the sum.
    const perStream = STREAM_WINDOW + DEFAULT_STREAM_READ_HIGH_WATER + CHUNK
    const bound = Math.min(streams.length * perStream, CONN_WINDOW + streams.length * (DEFAULT_STREAM_READ_HIGH_WATER + CHUNK))
    console.log(
      `[never-reading peer, 8 streams] engine accepted: ${total} B in all; connection window ${CONN_WINDOW} B, ` +
        `stream window ${STREAM_WINDOW} B, reader queue ${DEFAULT_STREAM_READ_HIGH_WATER} B each (bound ${bound} B)`,
    )
    expect(total).toBeLessThanOrEqual(bound)
    // Closing gives up on what the peer never took (bounded wait), and nothing stays behind.
    const info = await conn.close(3, 'reader never read', { timeoutMs: 200 })
    expect(info).toMatchObject({ remote: false, app: true, code: 3 })
    expect((await serverConn.closed).code).toBe(3)
    expect(conn.streamsOpen).toBe(0)
    expect(serverConn.streamsOpen).toBe(0)
    // The parked streams end with a typed error: the one the client reset with its code, the rest cut off.
    // (A reset the peer's reader never pulled up to is not seen before the close.)
    // (The peer only learns of a stream once data arrives on it: under CPU load quiche 0.18 has
    // been seen to stop granting connection credit here, so not all 8 may have reached it.)
    const ends = await Promise.all(parked.map((s) => failure(() => readAll(s.readable!))))
    expect(ends.length).toBeGreaterThanOrEqual(2)
    for (const e of ends) expect(['STOQ_ERR_CONNECTION_CLOSED', 'STOQ_ERR_STREAM_RESET']).toContain(e.code)
    await waitFor(() => client.stats().connections === 0 && server.stats().connections === 0, 'both connection counts to reach zero')
    // The engines keep a closed connection a few PTOs longer (draining), then forget it.
    await waitFor(() => client.engine.connectionCount === 0 && server.engine.connectionCount === 0, 'both engines to forget the connection')
  })
})

// ---------------------------------------------------------------------------

describe('a peer that resets or stops streams mid-transfer', () => {
  let server: Endpoint
  let client: Endpoint
  let conn: QuicConnection
  let serverConn: QuicConnection
  let onStream: (s: QuicStream) => void = () => {}

  beforeAll(async () => {
    server = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      // Small stream windows: no writer can hand over its whole upload before the peer reacts.
      transport: { initialMaxStreamData: 64 * KiB, maxStreamWindow: 64 * KiB },
    })
    const accepted = new Promise<QuicConnection>((resolve) => server.once('connection', resolve))
    server.on('connection', (c) => c.on('stream', (s) => onStream(s)))
    client = await createEndpoint({ host: '127.0.0.1' })
    conn = await connectTo(client, server)
    serverConn = await accepted
  })

  afterAll(async () => {
    await client?.close()
    await server?.close()
  })

  it("gives the writer StoqStreamStoppedError and the reader StoqStreamResetError, each with the peer's code", async () => {
    let remoteGot = 0
    const remote = new Promise<QuicStream>((resolve) => {
      onStream = (s) => {
        resolve(s)
        // Read the upload slowly enough that it is still under way when stopped.
        void (async () => {
          const reader = s.readable!.getReader()
          while (remoteGot < MiB) {
            const r = await reader.read()
            if (r.done) break
            remoteGot += r.value.length
          }
          reader.releaseLock()
        })().catch(() => {})
      }
    })
    const s = conn.openStream()
    const chunk = pattern(CHUNK, 22)
    let written = 0
    const writing = (async () => {
      const w = s.writable!.getWriter()
      for (let i = 0; i < 4096; i++) {
        await w.write(chunk)
        written += chunk.length
      }
    })()
    let readBytes = 0
    const reading = (async () => {
      for await (const c of s.readable!) readBytes += c.length
    })()
    reading.catch(() => {})
    const peer = await remote
    await waitFor(() => remoteGot >= MiB, 'the peer to read 1 MiB')
    // STOP_SENDING mid-upload: the writer fails with the peer's code.
    peer.stopSending(0x51)
    const writeErr = await failure(() => writing)
    expect(writeErr.code).toBe('STOQ_ERR_STREAM_STOPPED')
    expect((writeErr as StoqError<{ code: number }>).data.code).toBe(0x51)
    expect(written).toBeLessThan(4096 * CHUNK)
    // RESET_STREAM mid-download: the reader fails with the peer's code, after the bytes before it.
    const w = peer.writable!.getWriter()
    await w.write(pattern(200 * KiB, 21))
    peer.reset(0x52)
    const readErr = await failure(() => reading)
    expect(readErr.code).toBe('STOQ_ERR_STREAM_RESET')
    expect((readErr as StoqError<{ code: number }>).data.code).toBe(0x52)
    expect(readBytes).toBeLessThanOrEqual(200 * KiB)
    await waitFor(() => conn.streamsOpen === 0 && serverConn.streamsOpen === 0, 'both stream maps to empty')
  })

  it('gives the reader of a unidirectional stream reset mid-transfer the code, after the bytes before it', async () => {
    const incoming = new Promise<QuicStream>((resolve) => conn.once('stream', resolve))
    const out = serverConn.openStream({ unidirectional: true })
    const w = out.writable!.getWriter()
    await w.write(pattern(512 * KiB, 23))
    const s = await incoming
    let readBytes = 0
    const reading = (async () => {
      for await (const c of s.readable!) {
        readBytes += c.length
        // Reset once the reader is well into the stream.
        if (readBytes >= 64 * KiB) out.reset(0x53)
      }
    })()
    const err = await failure(() => reading)
    expect(err.code).toBe('STOQ_ERR_STREAM_RESET')
    expect((err as StoqError<{ code: number }>).data.code).toBe(0x53)
    expect(readBytes).toBeLessThanOrEqual(512 * KiB)
    await waitFor(() => conn.streamsOpen === 0 && serverConn.streamsOpen === 0, 'both stream maps to empty')
  })

  it('survives 120 concurrent streams each stopped or reset at a different point, keeping nothing, and still echoes', async () => {
    onStream = (s) => {
      void (async () => {
        const reader = s.readable!.getReader()
        const first = await reader.read()
        const n = first.done ? 0 : first.value[0]!
        if (n % 3 === 0) {
          // Stop the upload, answer nothing and finish our side normally.
          s.stopSending(1000 + n)
          await s.writable!.getWriter().close()
        } else if (n % 3 === 1) {
          s.reset(2000 + n)
          s.stopSending(2000 + n)
        } else {
          // Echo the first chunk, then reset.
          const w = s.writable!.getWriter()
          await w.write(first.value!)
          s.reset(3000 + n)
          s.stopSending(3000 + n)
        }
      })().catch(() => {})
    }
    const codes = await Promise.all(
      // 120: below the 128 streams a peer may have open at first with every engine.
      Array.from({ length: 120 }, async (_, i) => {
        const s = conn.openStream()
        const tag = i
        const chunk = pattern(16 * KiB, i + 1)
        chunk[0] = tag
        const writing = (async () => {
          const w = s.writable!.getWriter()
          for (let k = 0; k < 256; k++) await w.write(chunk)
          await w.close()
        })()
        const reading = (async () => {
          for await (const _ of s.readable!) {
            // drain
          }
        })()
        const [we, re] = await Promise.allSettled([writing, reading])
        const wCode = we.status === 'rejected' ? ((we.reason as StoqError<{ code?: number }>).data?.code ?? -1) : -1
        const wError = we.status === 'rejected' ? String((we.reason as StoqError).code) : 'none'
        const rCode = re.status === 'rejected' ? ((re.reason as StoqError<{ code?: number }>).data?.code ?? -1) : -1
        return { tag, wCode, wError, rCode }
      }),
    )
    for (const { tag, wCode, wError, rCode } of codes) {
      const base = [1000, 2000, 3000][tag % 3]! + tag
      // Every writer was stopped, with the code the peer picked for it (on quiche too: the engine
      // keeps the code of a stream quiche forgets when the reset is read first).
      expect(wError).toBe('STOQ_ERR_STREAM_STOPPED')
      expect(wCode).toBe(base)
      // Readers of reset streams got that code; a stream only stopped ends normally.
      expect(rCode).toBe(tag % 3 === 0 ? -1 : base)
    }
    await waitFor(() => conn.streamsOpen === 0 && serverConn.streamsOpen === 0, 'both stream maps to empty')
    onStream = (s) => void s.readable!.pipeTo(s.writable!).catch(() => {})
    const data = pattern(MiB, 24)
    expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
    await waitFor(() => conn.streamsOpen === 0 && serverConn.streamsOpen === 0, 'both stream maps to empty')
  })
})

// ---------------------------------------------------------------------------

describe('a peer that vanishes without CONNECTION_CLOSE', () => {
  const IDLE_MS = 1000

  /** Start writing `total` bytes on a new stream; returns the write loop and the stream. */
  function upload(conn: QuicConnection, total: number): { stream: QuicStream; writing: Promise<void> } {
    const stream = conn.openStream()
    const chunk = pattern(CHUNK, 31)
    const writing = (async () => {
      const w = stream.writable!.getWriter()
      for (let off = 0; off < total; off += CHUNK) await w.write(chunk)
      await w.close()
    })()
    writing.catch(() => {})
    return { stream, writing }
  }

  async function expectReaped(endpoint: Endpoint, conn: QuicConnection, info: CloseInfo): Promise<void> {
    expect(info).toMatchObject({ idleTimeout: true, remote: false })
    expect(conn.isClosed).toBe(true)
    expect(conn.streamsOpen).toBe(0)
    await waitFor(() => endpoint.stats().connections === 0, 'the connection count to reach zero')
    expect(endpoint.connections.length).toBe(0)
    await waitFor(() => endpoint.engine.connectionCount === 0, 'the engine to forget the connection')
  }

  it('a destroyed server endpoint: the client gets StoqIdleTimeoutError on its pending write and read, and keeps nothing', async () => {
    const server = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      transport: { maxIdleTimeoutMs: 30_000 },
    })
    let serverConn: QuicConnection | null = null
    let serverReceived = 0
    server.on('connection', (c) => {
      serverConn = c
      c.on('stream', (s) => {
        void (async () => {
          for await (const chunk of s.readable!) serverReceived += chunk.length
        })().catch(() => {})
      })
    })
    const client = await createEndpoint({ host: '127.0.0.1', transport: { maxIdleTimeoutMs: IDLE_MS } })
    try {
      const conn = await connectTo(client, server)
      const { stream, writing } = upload(conn, 1024 * MiB)
      const reading = readAll(stream.readable!)
      reading.catch(() => {})
      await waitFor(() => serverReceived >= 2 * MiB, 'the upload to get going')
      await server.destroy()
      // The destroyed side ended its connection locally, leaving nothing.
      expect(serverConn!.isClosed).toBe(true)
      expect(serverConn!.streamsOpen).toBe(0)
      expect(server.connections.length).toBe(0)

      const info = await conn.closed
      const writeErr = await failure(() => writing)
      const readErr = await failure(() => reading)
      expect(writeErr.code).toBe('STOQ_ERR_IDLE_TIMEOUT')
      expect(readErr.code).toBe('STOQ_ERR_IDLE_TIMEOUT')
      expect((writeErr as StoqError<CloseInfo>).data.idleTimeout).toBe(true)
      await expectReaped(client, conn, info)
      expect((await failure(() => conn.openStream())).code).toBe('STOQ_ERR_CLOSED')
    } finally {
      await client.close()
    }
  })

  it('a destroyed client endpoint: the server reaps the connection by idle timeout, with typed errors', async () => {
    const server = await createEndpoint({
      host: '127.0.0.1',
      server: { cert: pki.server.cert, key: pki.server.key },
      transport: { maxIdleTimeoutMs: IDLE_MS },
    })
    const serverSide = new Promise<{ conn: QuicConnection; reading: Promise<Uint8Array> }>((resolve) => {
      server.once('connection', (c) =>
        c.once('stream', (s) => {
          const reading = readAll(s.readable!)
          reading.catch(() => {})
          resolve({ conn: c, reading })
        }),
      )
    })
    const client = await createEndpoint({ host: '127.0.0.1' })
    try {
      const conn = await connectTo(client, server)
      upload(conn, 1024 * MiB)
      const { conn: serverConn, reading } = await serverSide
      await waitFor(() => serverConn.stats().streamBytesRead >= 2 * MiB, 'the upload to get going')
      await client.destroy()
      const info = await serverConn.closed
      const err = await failure(() => reading)
      expect(err.code).toBe('STOQ_ERR_IDLE_TIMEOUT')
      await expectReaped(server, serverConn, info)
    } finally {
      await server.close()
    }
  })

  it('a server process killed mid-transfer (SIGKILL): the client gets StoqIdleTimeoutError and keeps nothing', async () => {
    const script = fileURLToPath(new URL('./fixtures/sink-peer.mjs', import.meta.url))
    const child: ChildProcess = spawn(process.execPath, [script], {
      env: { ...process.env, STOQ_TEST_PEER: JSON.stringify({ cert: pki.server.cert, key: pki.server.key, idleTimeoutMs: 30_000 }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const stderr: string[] = []
    child.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()))
    let received = 0
    const port = await new Promise<number>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`peer exited early (code ${code}): ${stderr.join('')}`)))
      readline.createInterface({ input: child.stdout! }).on('line', (line) => {
        const msg = JSON.parse(line) as { port?: number; received?: number }
        if (msg.port !== undefined) resolve(msg.port)
        if (msg.received !== undefined) received = msg.received
      })
    })
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)))
    const client = await createEndpoint({ host: '127.0.0.1', transport: { maxIdleTimeoutMs: IDLE_MS } })
    const socketErrors: Error[] = []
    client.on('error', (e) => socketErrors.push(e))
    try {
      const conn = await client.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: 'localhost' })
      const { stream, writing } = upload(conn, 1024 * MiB)
      const reading = readAll(stream.readable!)
      reading.catch(() => {})
      await waitFor(() => received >= 2 * MiB, 'the peer process to receive 2 MiB')
      child.kill('SIGKILL')
      expect(await exited).toBe('SIGKILL')
      const info = await conn.closed
      expect((await failure(() => writing)).code).toBe('STOQ_ERR_IDLE_TIMEOUT')
      expect((await failure(() => reading)).code).toBe('STOQ_ERR_IDLE_TIMEOUT')
      await expectReaped(client, conn, info)
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await client.close()
    }
  })
})
