/**
 * Compliance suite for the QuicEngine contract: two engines (a server and a
 * client) talk through packets shuttled in memory, so the suite checks the
 * engine alone, without sockets. Every engine (quiche today, quinn later) must
 * pass it.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { EngineEventRecorder } from '../kit/engine-events.js'
import {
  StoqError,
  type QuicEngine,
  type QuicEngineOptions,
  type SocketAddress,
  type StreamRecvError,
  type StreamRecvResult,
  type TransmitBatch,
  type TransportParameters,
} from '@stoq/interface'

export interface QuicEngineTestFactory {
  /** A fresh engine. */
  create(options: QuicEngineOptions): QuicEngine
  /** Transport parameters to start from (the implementation's defaults). */
  transport: TransportParameters
  /** A server identity (PEM) whose certificate is issued by `ca` for `localhost`. */
  identity: { cert: string; key: string; ca: string }
}

const SERVER: SocketAddress = Object.freeze({ address: '127.0.0.1', port: 4433, family: 'IPv4' })
const CLIENT: SocketAddress = Object.freeze({ address: '127.0.0.1', port: 50000, family: 'IPv4' })

interface Pair {
  server: QuicEngine
  client: QuicEngine
  s: EngineEventRecorder
  c: EngineEventRecorder
  /** Client's handle of the connection. */
  cc: number
  /** Server's handle, once known. */
  sc: () => number
  /** Move packets both ways until nothing is left (or `rounds` is reached). */
  pump(rounds?: number): void
}

const encoder = new TextEncoder()

/** Timers this close are pacing or ACK-delay timers, not loss or idle timers: the pump runs them. */
const PACING_WAIT_MS = 3
const sleeper = new Int32Array(new SharedArrayBuffer(4))

/** Wait for the engines' timers due within PACING_WAIT_MS and run them; false when none is. */
function waitForShortTimers(...engines: QuicEngine[]): boolean {
  const due = engines.map((e) => e.nextTimeout()).filter((t) => t >= 0 && t <= PACING_WAIT_MS)
  if (due.length === 0) return false
  Atomics.wait(sleeper, 0, 0, Math.max(...due) + 0.5)
  for (const e of engines) e.handleTimeout()
  return true
}

export function quicEngineTests(name: string, factory: QuicEngineTestFactory): void {
  describe(`QuicEngine compliance: ${name}`, () => {
    const engines: QuicEngine[] = []

    afterEach(() => {
      for (const e of engines.splice(0)) e.destroy()
    })

    function engine(overrides: Partial<TransportParameters> = {}): QuicEngine {
      const e = factory.create({ transport: { ...factory.transport, ...overrides } })
      engines.push(e)
      return e
    }

    /** Copy out every packet one engine wants to send now. */
    function drain(from: QuicEngine): Array<{ data: Uint8Array; to: SocketAddress }> {
      const out: Array<{ data: Uint8Array; to: SocketAddress }> = []
      const batch: TransmitBatch = { buffer: new Uint8Array(65536), lengths: new Uint32Array(64), count: 0, bytes: 0, peer: null }
      for (let guard = 0; guard < 10_000; guard++) {
        batch.count = 0
        batch.bytes = 0
        batch.peer = null
        if (!from.pollTransmit(batch, 32)) break
        let off = 0
        for (let i = 0; i < batch.count; i++) {
          const len = batch.lengths[i]!
          out.push({ data: batch.buffer.slice(off, off + len), to: batch.peer! })
          off += len
        }
      }
      return out
    }

    function pair(options: { retry?: boolean; server?: Partial<TransportParameters>; client?: Partial<TransportParameters> } = {}): Pair {
      const server = engine(options.server)
      const client = engine(options.client)
      server.listen({
        identity: { cert: encoder.encode(factory.identity.cert), key: encoder.encode(factory.identity.key) },
        alpn: ['stoq/1'],
        retry: options.retry ?? true,
        maxConnections: 100,
        statelessReset: true,
      })
      const cc = client.connect({ peer: SERVER, serverName: 'localhost', alpn: ['stoq/1'], ca: encoder.encode(factory.identity.ca), verifyPeer: true }, CLIENT)
      const s = new EngineEventRecorder()
      const c = new EngineEventRecorder()
      const p: Pair = {
        server,
        client,
        s,
        c,
        cc,
        sc: () => s.incoming[0] ?? -1,
        pump(rounds = 50) {
          for (let r = 0; r < rounds; r++) {
            const a = drain(client)
            for (const pkt of a) server.receive(pkt.data, pkt.data.length, CLIENT, SERVER)
            server.drainEvents(s)
            const b = drain(server)
            for (const pkt of b) client.receive(pkt.data, pkt.data.length, SERVER, CLIENT)
            client.drainEvents(c)
            if (a.length === 0 && b.length === 0) {
              // Quiet. An engine that paces (quinn) holds packets back for a moment: run
              // timers due within PACING_WAIT_MS, as a real driver would, then go on.
              if (!waitForShortTimers(client, server)) break
            }
          }
        },
      }
      p.pump()
      return p
    }

    function readAll(e: QuicEngine, conn: number, id: number): { data: Uint8Array; fin: boolean; reset: number } {
      const out = new Uint8Array(1 << 20)
      const r: StreamRecvResult & StreamRecvError = { bytes: 0, fin: false, resetCode: -1 }
      const parts: Uint8Array[] = []
      let fin = false
      while (e.streamRecv(conn, id, out, r)) {
        if (r.resetCode >= 0) return { data: new Uint8Array(0), fin: false, reset: r.resetCode }
        parts.push(out.slice(0, r.bytes))
        if (r.fin) {
          fin = true
          break
        }
      }
      const total = parts.reduce((n, p) => n + p.length, 0)
      const data = new Uint8Array(total)
      let off = 0
      for (const p of parts) {
        data.set(p, off)
        off += p.length
      }
      return { data, fin, reset: -1 }
    }

    it('completes a handshake with Retry and reports it on both sides', () => {
      const p = pair()
      expect(p.s.incoming.length).toBe(1)
      expect(p.c.established).toEqual([p.cc])
      expect(p.s.established).toEqual([p.sc()])
      expect(p.client.isEstablished(p.cc)).toBe(true)
      expect(p.client.alpn(p.cc)).toBe('stoq/1')
      expect(p.server.serverName(p.sc())).toBe('localhost')
      expect(p.client.peerCertificates(p.cc)?.length).toBeGreaterThan(0)
      expect(p.server.peerAddress(p.sc())).toEqual(CLIENT)
      expect(p.server.connectionCount).toBe(1)
    })

    it('completes a handshake without Retry', () => {
      const p = pair({ retry: false })
      expect(p.client.isEstablished(p.cc)).toBe(true)
    })

    it('carries stream data and FIN both ways, and reports new peer streams as readable', () => {
      const p = pair()
      const id = p.client.openStream(p.cc, true)
      expect(id).toBeGreaterThanOrEqual(0)
      const msg = encoder.encode('x'.repeat(50_000))
      let sent = 0
      for (let guard = 0; guard < 100 && sent < msg.length; guard++) {
        const n = p.client.streamSend(p.cc, id, msg.subarray(sent), false)
        if (n > 0) sent += n
        p.pump(1)
      }
      expect(p.client.streamSend(p.cc, id, new Uint8Array(0), true)).toBeGreaterThanOrEqual(0)
      p.pump()
      expect(p.s.readable.some(([conn, sid]) => conn === p.sc() && sid === id)).toBe(true)
      const got = readAll(p.server, p.sc(), id)
      expect(got.fin).toBe(true)
      expect(got.data.length).toBe(msg.length)
      // Echo back on the same stream with FIN.
      expect(p.server.streamSend(p.sc(), id, encoder.encode('pong'), true)).toBe(4)
      p.pump()
      const back = readAll(p.client, p.cc, id)
      expect(new TextDecoder().decode(back.data)).toBe('pong')
      expect(back.fin).toBe(true)
    })

    it('reports a reset with its code to the reader and a stop-sending code to the writer', () => {
      const p = pair()
      const a = p.client.openStream(p.cc, true)
      p.client.streamSend(p.cc, a, encoder.encode('abc'), false)
      p.pump()
      p.client.streamShutdown(p.cc, a, 'write', 77)
      p.pump()
      expect(readAll(p.server, p.sc(), a).reset).toBe(77)

      const b = p.client.openStream(p.cc, true)
      p.client.streamSend(p.cc, b, encoder.encode('abc'), false)
      p.pump()
      readAll(p.server, p.sc(), b)
      p.server.streamShutdown(p.sc(), b, 'read', 88)
      p.pump()
      expect(p.client.streamSend(p.cc, b, encoder.encode('more'), false)).toBe(-1)
      expect(p.client.streamStopCode(p.cc, b)).toBe(88)
    })

    it('asks for writability and reports it once capacity returns', () => {
      const p = pair({ server: { initialMaxStreamData: 4096, maxStreamWindow: 4096 } })
      const id = p.client.openStream(p.cc, true)
      let accepted = 0
      for (let i = 0; i < 10; i++) {
        const n = p.client.streamSend(p.cc, id, new Uint8Array(4096), false)
        if (n > 0) accepted += n
      }
      expect(accepted).toBeLessThanOrEqual(4096)
      p.client.streamWantWritable(p.cc, id)
      p.pump()
      readAll(p.server, p.sc(), id) // frees window: MAX_STREAM_DATA goes back
      p.pump()
      p.client.drainEvents(p.c)
      expect(p.c.writable.some(([conn, sid]) => conn === p.cc && sid === id)).toBe(true)
    })

    it('refuses to open streams beyond the peer limit', () => {
      const p = pair({ server: { initialMaxStreamsBidi: 3 } })
      const ids = [0, 1, 2].map(() => {
        const id = p.client.openStream(p.cc, true)
        p.client.streamSend(p.cc, id, new Uint8Array(0), false)
        return id
      })
      expect(new Set(ids).size).toBe(3)
      expect(p.client.openStream(p.cc, true)).toBe(-1)
    })

    it('carries datagrams and refuses oversized ones with a typed error', () => {
      const p = pair()
      const max = p.client.datagramMaxSize(p.cc)
      expect(max).toBeGreaterThan(1000)
      expect(p.client.datagramSend(p.cc, encoder.encode('hello datagram'))).toBe(true)
      p.pump()
      expect(p.s.datagrams).toContain(p.sc())
      const out = new Uint8Array(65536)
      const n = p.server.datagramRecv(p.sc(), out)
      expect(new TextDecoder().decode(out.subarray(0, n))).toBe('hello datagram')
      expect(p.server.datagramRecv(p.sc(), out)).toBe(-1)
      let err: unknown
      try {
        p.client.datagramSend(p.cc, new Uint8Array(max + 1))
      } catch (e) {
        err = e
      }
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_DATAGRAM_TOO_LARGE')
    })

    it('delivers an application close code and reason to the peer', () => {
      const p = pair()
      p.client.close(p.cc, true, 4242, encoder.encode('bye'))
      p.pump()
      const [, info] = p.s.closed.find(([conn]) => conn === p.sc()) ?? []
      expect(info).toMatchObject({ remote: true, app: true, code: 4242, idleTimeout: false })
      expect(new TextDecoder().decode(info!.reason)).toBe('bye')
      const [, local] = p.c.closed.find(([conn]) => conn === p.cc) ?? []
      expect(local).toMatchObject({ remote: false, app: true, code: 4242 })
    })

    it('splits a GRO buffer of equal-size packets by segment size', () => {
      const p = pair()
      const id = p.client.openStream(p.cc, true)
      // The engine may take less than offered (send capacity follows the congestion window).
      const accepted = p.client.streamSend(p.cc, id, new Uint8Array(20_000).fill(7), false)
      expect(accepted).toBeGreaterThan(0)
      const packets = drain(p.client)
      expect(packets.length).toBeGreaterThan(2)
      // Coalesce the run of equal-size packets as GRO would, and feed it in one call.
      const seg = packets[0]!.data.length
      let run = 0
      while (run < packets.length && packets[run]!.data.length === seg) run++
      const gro = new Uint8Array(seg * run)
      for (let i = 0; i < run; i++) gro.set(packets[i]!.data, i * seg)
      p.server.receive(gro, seg, CLIENT, SERVER)
      for (const pkt of packets.slice(run)) p.server.receive(pkt.data, pkt.data.length, CLIENT, SERVER)
      p.server.drainEvents(p.s)
      // The rest of the stream follows once the client hears the ACKs.
      const first = readAll(p.server, p.sc(), id)
      expect(first.data.length).toBeGreaterThan(0)
      let total = first.data.length
      let sent = accepted
      let fin = false
      let finQueued = false
      for (let i = 0; i < 100 && !fin; i++) {
        if (sent < 20_000) {
          const n = p.client.streamSend(p.cc, id, new Uint8Array(20_000 - sent).fill(7), true)
          if (n > 0) sent += n
          finQueued = sent === 20_000
        } else if (!finQueued) {
          // The engine took everything at once (quinn buffers beyond the congestion window): FIN alone.
          finQueued = p.client.streamSend(p.cc, id, new Uint8Array(0), true) >= 0
        }
        p.pump(2)
        const more = readAll(p.server, p.sc(), id)
        total += more.data.length
        fin = more.fin
      }
      const got = { data: { length: total }, fin }
      expect(got.data.length).toBe(20_000)
      expect(got.fin).toBe(true)
    })

    it('answers an unknown version with version negotiation and survives garbage', () => {
      const p = pair()
      const pkt = new Uint8Array(1200)
      pkt[0] = 0xc0
      pkt.set([0x1a, 0x2a, 0x3a, 0x4a], 1)
      pkt[5] = 8
      pkt[14] = 8
      p.server.receive(pkt, pkt.length, { address: '10.0.0.9', port: 9, family: 'IPv4' }, SERVER)
      const out = drain(p.server)
      const vn = out.find((o) => o.to.address === '10.0.0.9')
      expect(vn).toBeDefined()
      expect(vn!.data[1]! | vn!.data[2]! | vn!.data[3]! | vn!.data[4]!).toBe(0)
      for (let i = 0; i < 500; i++) {
        const junk = new Uint8Array(1 + ((i * 37) % 1400)).map((_, j) => (i * 31 + j * 17) & 0xff)
        p.server.receive(junk, junk.length, { address: '10.0.0.8', port: 8, family: 'IPv4' }, SERVER)
      }
      p.server.drainEvents(p.s)
      expect(p.server.connectionCount).toBe(1)
      expect(p.client.isEstablished(p.cc)).toBe(true)
    })

    it('arms a timer and ends an idle connection by timeout', async () => {
      const p = pair({ server: { maxIdleTimeoutMs: 150 }, client: { maxIdleTimeoutMs: 150 } })
      expect(p.client.nextTimeout()).toBeGreaterThanOrEqual(0)
      const deadline = Date.now() + 5000
      while (p.c.closed.length === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, Math.max(1, Math.min(50, p.client.nextTimeout()))))
        p.client.handleTimeout()
        p.client.drainEvents(p.c)
      }
      expect(p.c.closed[0]?.[1]).toMatchObject({ idleTimeout: true })
    })
  })
}
