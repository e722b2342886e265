import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import {
  STREAM_BLOCKED,
  STREAM_STOPPED,
  type EngineCloseInfo,
  type EngineEventSink,
  type SocketAddress,
  type StreamRecvError,
  type StreamRecvResult,
  type TransmitBatch,
  type TransportParameters,
} from '@stoq/interface'
import { QuicheEngine } from '../src/index.js'
import { TEST_TRANSPORT as DEFAULT_TRANSPORT } from '@stoq/compliance-tests'

/**
 * quiche engine, stream edge cases, engine level: two QuicheEngines joined by an
 * in-memory packet pump, so every step (which packet arrives, what the application
 * reads first) is under the test's control.
 */

const SERVER: SocketAddress = Object.freeze({ address: '127.0.0.1', port: 4433, family: 'IPv4' })
const CLIENT: SocketAddress = Object.freeze({ address: '127.0.0.1', port: 50000, family: 'IPv4' })
const encoder = new TextEncoder()
const KiB = 1024

let pki: TestPki

beforeAll(async () => {
  pki = await testPki()
})

/** An event sink whose reactions the test sets. */
class Sink implements EngineEventSink {
  incoming: number[] = []
  closed: EngineCloseInfo[] = []
  readable: (conn: number, id: number) => void = () => {}
  writable: (conn: number, id: number) => void = () => {}
  onIncoming(conn: number): void {
    this.incoming.push(conn)
  }
  onEstablished(): void {}
  onStreamReadable(conn: number, id: number): void {
    this.readable(conn, id)
  }
  onStreamWritable(conn: number, id: number): void {
    this.writable(conn, id)
  }
  onDatagramReadable(): void {}
  onClosed(_conn: number, info: EngineCloseInfo): void {
    this.closed.push(info)
  }
}

const engines: QuicheEngine[] = []

afterEach(() => {
  for (const e of engines.splice(0)) e.destroy()
})

function engine(overrides: Partial<TransportParameters> = {}): QuicheEngine {
  const e = new QuicheEngine({ transport: { ...DEFAULT_TRANSPORT, ...overrides } })
  engines.push(e)
  return e
}

/** Every packet `from` wants to send now. */
function packets(from: QuicheEngine): Uint8Array[] {
  const out: Uint8Array[] = []
  const batch: TransmitBatch = { buffer: new Uint8Array(65536), lengths: new Uint32Array(32), count: 0, bytes: 0, peer: null }
  for (let guard = 0; guard < 10_000; guard++) {
    batch.count = 0
    batch.bytes = 0
    batch.peer = null
    if (!from.pollTransmit(batch, 32)) break
    let off = 0
    for (let i = 0; i < batch.count; i++) {
      out.push(batch.buffer.slice(off, off + batch.lengths[i]!))
      off += batch.lengths[i]!
    }
  }
  return out
}

interface Pair {
  server: QuicheEngine
  client: QuicheEngine
  s: Sink
  c: Sink
  cc: number
  sc: number
  /** Client to server: packets, then the server's events. */
  toServer(): number
  /** Server to client: packets, then the client's events. */
  toClient(): number
  /** Both ways until quiet. */
  pump(rounds?: number): void
}

function pair(server: Partial<TransportParameters> = {}, client: Partial<TransportParameters> = {}): Pair {
  const se = engine(server)
  const ce = engine(client)
  se.listen({
    identity: { cert: encoder.encode(pki.server.cert), key: encoder.encode(pki.server.key) },
    alpn: ['stoq/1'],
    retry: false,
    maxConnections: 10,
    statelessReset: false,
  })
  const cc = ce.connect({ peer: SERVER, serverName: 'localhost', alpn: ['stoq/1'], ca: encoder.encode(pki.ca), verifyPeer: true }, CLIENT)
  const s = new Sink()
  const c = new Sink()
  const p: Pair = {
    server: se,
    client: ce,
    s,
    c,
    cc,
    get sc() {
      return s.incoming[0] ?? -1
    },
    toServer() {
      const a = packets(ce)
      for (const pkt of a) se.receive(pkt, pkt.length, CLIENT, SERVER)
      se.drainEvents(s)
      return a.length
    },
    toClient() {
      const b = packets(se)
      for (const pkt of b) ce.receive(pkt, pkt.length, SERVER, CLIENT)
      ce.drainEvents(c)
      return b.length
    },
    pump(rounds = 50) {
      for (let r = 0; r < rounds; r++) if (p.toServer() + p.toClient() === 0) break
    },
  }
  p.pump()
  expect(ce.isEstablished(cc)).toBe(true)
  expect(p.sc).toBeGreaterThan(0)
  return p
}

function recvAll(e: QuicheEngine, conn: number, id: number): { bytes: number; fin: boolean; reset: number } {
  const out = new Uint8Array(64 * KiB)
  const r: StreamRecvResult & StreamRecvError = { bytes: 0, fin: false, resetCode: -1 }
  let bytes = 0
  while (e.streamRecv(conn, id, out, r)) {
    if (r.resetCode >= 0) return { bytes, fin: false, reset: r.resetCode }
    bytes += r.bytes
    if (r.fin) return { bytes, fin: true, reset: -1 }
  }
  return { bytes, fin: false, reset: -1 }
}

describe('quiche engine: a bidirectional stream the peer stops and resets at once', () => {
  /** A client stream with 1000 bytes the server read, then STOP_SENDING 0x51 and RESET_STREAM 0x52 from the server in one flight. */
  function stoppedAndReset(): { p: Pair; id: number } {
    const p = pair()
    const id = p.client.openStream(p.cc, true)
    expect(p.client.streamSend(p.cc, id, new Uint8Array(1000), false)).toBe(1000)
    p.pump()
    expect(recvAll(p.server, p.sc, id).bytes).toBe(1000)
    p.server.streamShutdown(p.sc, id, 'read', 0x51)
    p.server.streamShutdown(p.sc, id, 'write', 0x52)
    return { p, id }
  }

  it('gives the writer STREAM_STOPPED and the STOP_SENDING code when the reader consumes the reset first (in drainEvents)', () => {
    const { p, id } = stoppedAndReset()
    let reset = -1
    // The reader reacts to the readable event at once, before any write: quiche then forgets the stream.
    p.c.readable = (conn, sid) => {
      if (sid === id) reset = recvAll(p.client, conn, sid).reset
    }
    p.toClient()
    expect(reset).toBe(0x52)
    expect(p.client.streamComplete(p.cc, id)).toBe(true)
    // Without the fix: STREAM_BLOCKED (-2), the writer waits for ever; and the code is lost.
    expect(p.client.streamSend(p.cc, id, new Uint8Array(10), false)).toBe(STREAM_STOPPED)
    expect(p.client.streamStopCode(p.cc, id)).toBe(0x51)
    // A FIN alone too.
    expect(p.client.streamSend(p.cc, id, new Uint8Array(0), true)).toBe(STREAM_STOPPED)
  })

  it('keeps the code when the reader pulls the reset before the next drainEvents', () => {
    const { p, id } = stoppedAndReset()
    // Packets in, but no drainEvents yet: a reader pulling now reads the reset first.
    const pkts = packets(p.server)
    for (const pkt of pkts) p.client.receive(pkt, pkt.length, SERVER, CLIENT)
    expect(recvAll(p.client, p.cc, id).reset).toBe(0x52)
    expect(p.client.streamSend(p.cc, id, new Uint8Array(10), false)).toBe(STREAM_STOPPED)
    expect(p.client.streamStopCode(p.cc, id)).toBe(0x51)
  })

  it('a blocked writer waiting for credit hears of the stop, with the code', () => {
    const p = pair({ initialMaxStreamData: 4 * KiB, maxStreamWindow: 4 * KiB })
    const id = p.client.openStream(p.cc, true)
    expect(p.client.streamSend(p.cc, id, new Uint8Array(8 * KiB), false)).toBe(4 * KiB)
    expect(p.client.streamSend(p.cc, id, new Uint8Array(KiB), false)).toBe(STREAM_BLOCKED)
    p.client.streamWantWritable(p.cc, id)
    p.pump()
    p.server.streamShutdown(p.sc, id, 'read', 0x61)
    p.server.streamShutdown(p.sc, id, 'write', 0x62)
    const order: string[] = []
    p.c.readable = (conn, sid) => {
      if (sid === id) order.push(`reset ${recvAll(p.client, conn, sid).reset}`)
    }
    p.c.writable = (conn, sid) => {
      if (sid === id) order.push(`send ${p.client.streamSend(conn, sid, new Uint8Array(KiB), false)} code ${p.client.streamStopCode(conn, sid)}`)
    }
    p.toClient()
    expect(order).toEqual([`reset ${0x62}`, `send ${STREAM_STOPPED} code ${0x61}`])
  })

  it('still answers STREAM_BLOCKED for a live stream without credit', () => {
    const p = pair({ initialMaxStreamData: 4 * KiB, maxStreamWindow: 4 * KiB })
    const id = p.client.openStream(p.cc, true)
    expect(p.client.streamSend(p.cc, id, new Uint8Array(8 * KiB), false)).toBe(4 * KiB)
    expect(p.client.streamSend(p.cc, id, new Uint8Array(KiB), false)).toBe(STREAM_BLOCKED)
  })
})

/** Send `bytes` on `id`, pumping as quiche takes them; returns what was accepted before it stopped taking more. */
function sendAll(p: Pair, id: number, bytes: number): number {
  let sent = 0
  let idle = 0
  while (sent < bytes && idle < 5) {
    const n = p.client.streamSend(p.cc, id, new Uint8Array(Math.min(64 * KiB, bytes - sent)), false)
    if (n > 0) {
      sent += n
      idle = 0
    } else idle++
    p.pump()
  }
  return sent
}

/** Whether quiche itself has anything to send on the server's connection now (bypassing the engine's bookkeeping). */
function quicheWantsToSend(p: Pair): boolean {
  const conn = (p.server as unknown as { conns: Map<number, { conn: { send(out: Uint8Array): unknown } }> }).conns.get(p.sc)!.conn
  try {
    return conn.send(new Uint8Array(65536)) !== null
  } catch {
    return false
  }
}

/**
 * Characterisation of quiche 0.18's connection-level credit (the "stall under load" of
 * peer-misbehaviour.test.ts). Not bugs of the engine: these pin down quiche's behaviour so that a
 * quiche upgrade that changes it shows up here.
 */
describe('quiche 0.18 connection credit (MAX_DATA), documented behaviour', () => {
  const WINDOWS = { initialMaxData: 1024 * KiB, maxConnectionWindow: 1024 * KiB, initialMaxStreamData: 256 * KiB, maxStreamWindow: 256 * KiB }

  it('sends no MAX_DATA once the bytes received but not read reach half its update window, even with the sender at 0 credit; reading them resumes it', () => {
    const p = pair(WINDOWS)
    // 2 x 100 KiB on streams the application does not read (yet).
    const parked = [p.client.openStream(p.cc, false), p.client.openStream(p.cc, false)]
    for (const id of parked) expect(sendAll(p, id, 100 * KiB)).toBe(100 * KiB)
    // Another stream, read as fast as it arrives.
    const b = p.client.openStream(p.cc, false)
    p.s.readable = (conn, sid) => {
      if (sid === b) recvAll(p.server, conn, sid)
    }
    const got = sendAll(p, b, 4096 * KiB)
    // Stuck at initialMaxData: quiche's update window (far below maxConnectionWindow here) is at
    // most twice the 200 KiB unread, so max_data - consumed never drops below half of it.
    expect(got).toBe(1024 * KiB - 200 * KiB)
    expect(p.client.streamCapacity(p.cc, b)).toBe(0)
    // Nothing pending in quiche itself: no engine scheduling can make MAX_DATA go out.
    expect(quicheWantsToSend(p)).toBe(false)
    // The application reads the parked streams: consumed catches up and credit flows again.
    for (const id of parked) expect(recvAll(p.server, p.sc, id).bytes).toBe(100 * KiB)
    p.pump()
    expect(sendAll(p, b, 512 * KiB)).toBe(512 * KiB)
  })

  it('never gives back the credit of bytes a RESET_STREAM discarded, read or not', () => {
    const p = pair({ ...WINDOWS, initialMaxStreamData: 512 * KiB, maxStreamWindow: 512 * KiB })
    const a = p.client.openStream(p.cc, false)
    expect(sendAll(p, a, 400 * KiB)).toBe(400 * KiB)
    p.client.streamShutdown(p.cc, a, 'write', 9)
    p.pump()
    expect(recvAll(p.server, p.sc, a).reset).toBe(9)
    p.server.streamShutdown(p.sc, a, 'read', 1)
    p.pump()
    const b = p.client.openStream(p.cc, false)
    p.s.readable = (conn, sid) => {
      if (sid === b) recvAll(p.server, conn, sid)
    }
    // The 400 KiB are lost to the connection window for good.
    expect(sendAll(p, b, 4096 * KiB)).toBe(1024 * KiB - 400 * KiB)
    expect(quicheWantsToSend(p)).toBe(false)
  })
})
