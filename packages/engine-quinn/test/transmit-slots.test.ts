/**
 * Transmit slots: the engine builds packets in buffers of its own (`transmitSlots`), which a
 * socket thread sends from in place. Two engines in memory, packets carried from one's slots
 * to the other; every byte of a stream checked.
 */
import { describe, expect, it } from 'vitest'
import { EngineEventRecorder, TEST_TRANSPORT as DEFAULT_TRANSPORT, testPki } from '@stoq/compliance-tests'
import { StoqError, type SocketAddress, type StreamRecvError, type StreamRecvResult, type TransmitBatch } from '@stoq/interface'
import { QuinnEngine, quinnAvailability } from '../src/index.js'

const SERVER: SocketAddress = { address: '127.0.0.1', port: 4433, family: 'IPv4' }
const CLIENT: SocketAddress = { address: '127.0.0.1', port: 50000, family: 'IPv4' }

function code(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (StoqError.isInstance(err)) return err.code
    throw err
  }
  return 'no error'
}

const available = quinnAvailability().available

describe.skipIf(!available)('transmit slots', () => {
  it('are given once, sized as asked, and refuse bad arguments with a typed error', () => {
    const engine = new QuinnEngine({ transport: DEFAULT_TRANSPORT })
    try {
      expect(code(() => engine.transmitSlots(0, 65536))).toBe('STOQ_ERR_INVALID_ARG')
      expect(code(() => engine.transmitSlots(4, 100))).toBe('STOQ_ERR_INVALID_ARG') // below one packet
      expect(code(() => engine.transmitSlots(1.5, 65536))).toBe('STOQ_ERR_INVALID_ARG')
      expect(code(() => engine.transmitSlots(4, 2 ** 21))).toBe('STOQ_ERR_INVALID_ARG')
      const slots = engine.transmitSlots(4, 65536)!
      expect(slots).toHaveLength(4)
      for (const s of slots) expect(s.length).toBeGreaterThanOrEqual(65536)
      // Given once: the views stay the engine's for its life.
      expect(engine.transmitSlots(4, 65536)).toBeNull()
      const batch: TransmitBatch = { buffer: new Uint8Array(0), lengths: new Uint32Array(64), count: 0, bytes: 0, peer: null, slot: 4 }
      expect(code(() => engine.pollTransmit(batch, 64))).toBe('STOQ_ERR_INVALID_ARG')
      batch.slot = 0
      expect(engine.pollTransmit(batch, 64)).toBe(false) // nothing to send yet
      expect(batch.buffer).toBe(slots[0])
    } finally {
      engine.destroy()
    }
  })

  it('carries a handshake and 4 MiB of stream data, every packet built in a slot', async () => {
    const pki = await testPki()
    const enc = new TextEncoder()
    const transport = { ...DEFAULT_TRANSPORT, maxUdpPayloadSize: 1350 }
    const server = new QuinnEngine({ transport })
    const client = new QuinnEngine({ transport })
    try {
      const slots = [client.transmitSlots(2, 65536)!, server.transmitSlots(2, 65536)!]
      server.listen({
        identity: { cert: enc.encode(pki.server.cert), key: enc.encode(pki.server.key) },
        alpn: ['stoq/1'],
        retry: false,
        maxConnections: 4,
        statelessReset: true,
      })
      const cc = client.connect({ peer: SERVER, serverName: 'localhost', alpn: ['stoq/1'], verifyPeer: false }, CLIENT)
      const s = new EngineEventRecorder()
      const c = new EngineEventRecorder()
      const batch: TransmitBatch = { buffer: new Uint8Array(0), lengths: new Uint32Array(64), count: 0, bytes: 0, peer: null }
      let turn = 0
      let packets = 0
      const move = (from: QuinnEngine, to: QuinnEngine, src: SocketAddress, dst: SocketAddress, own: Uint8Array[]): void => {
        for (;;) {
          // Alternate the slots, as a socket thread still sending from one would make us.
          batch.slot = turn++ % 2
          if (!from.pollTransmit(batch, 48)) break
          expect(batch.buffer).toBe(own[batch.slot])
          let off = 0
          for (let i = 0; i < batch.count; i++) {
            to.receive(batch.buffer.subarray(off, off + batch.lengths[i]!), batch.lengths[i]!, src, dst)
            off += batch.lengths[i]!
          }
          expect(off).toBe(batch.bytes)
          packets += batch.count
        }
      }
      const established = () => c.established.length > 0 && s.established.length > 0
      for (let r = 0; r < 50 && !established(); r++) {
        move(client, server, CLIENT, SERVER, slots[0]!)
        server.drainEvents(s)
        move(server, client, SERVER, CLIENT, slots[1]!)
        client.drainEvents(c)
      }
      expect(established()).toBe(true)
      const total = 4 * 1024 * 1024
      const data = new Uint8Array(total)
      for (let i = 0; i < total; i++) data[i] = (i * 31 + (i >>> 12)) & 0xff
      const sid = client.openStream(cc, true)
      const got = new Uint8Array(total)
      const out = new Uint8Array(65536)
      const res: StreamRecvResult & StreamRecvError = { bytes: 0, fin: false, resetCode: -1 }
      let sent = 0
      let received = 0
      let fin = false
      for (let r = 0; r < 100_000 && !fin; r++) {
        while (sent < total) {
          const n = client.streamSend(cc, sid, data.subarray(sent, Math.min(total, sent + 65536)), sent + 65536 >= total)
          if (n <= 0) break
          sent += n
        }
        move(client, server, CLIENT, SERVER, slots[0]!)
        server.drainEvents(s)
        for (const [conn, id] of s.readable.splice(0)) {
          while (server.streamRecv(conn, id, out, res)) {
            got.set(out.subarray(0, res.bytes), received)
            received += res.bytes
            if (res.fin) fin = true
          }
        }
        move(server, client, SERVER, CLIENT, slots[1]!)
        client.drainEvents(c)
        for (const e of [client, server]) if (e.nextTimeout() === 0) e.handleTimeout()
      }
      expect(fin).toBe(true)
      expect(received).toBe(total)
      expect(Buffer.compare(got, data)).toBe(0)
      expect(packets).toBeGreaterThan(total / 1350)
    } finally {
      client.destroy()
      server.destroy()
    }
  })
})
