/**
 * Anti-amplification before address validation (RFC 9000 §8.1): until a client's address
 * is validated, a server sends it at most three times the bytes it received from it.
 *
 * A raw UDP client sends one real client Initial (padded to 1200 bytes) to a server that
 * does not ask for a Retry, then never answers. Every byte the server sends to that
 * address is counted until the server gives up on the half-open connection (idle timeout).
 * The server's certificate chain is about 8 KB, so its first flight cannot fit in 3 x 1200
 * bytes: a server that ignored the limit would send more than three times what it got.
 *
 * Runs once per engine project (STOQ_ENGINE is set by vitest.config.ts).
 */
import dgram from 'node:dgram'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { craftClientInitial, largeCertificateChain, parseLongHeader, type LargeChainIdentity } from '@stoq/compliance-tests'
import { createEndpoint, type Endpoint } from '../src/index.js'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'

const ENGINE = process.env.STOQ_ENGINE
/** RFC 9000 §8.1: "an endpoint MUST limit the amount of data it sends to the unvalidated address to three times the amount of data received from that address". */
const AMPLIFICATION_FACTOR = 3
/** Short, so that the server gives up on the silent client quickly. */
const IDLE_TIMEOUT_MS = 3000

let chain: LargeChainIdentity
let server: Endpoint

beforeAll(async () => {
  chain = await largeCertificateChain({ intermediates: 3, padding: 1500 })
  server = await createEndpoint({
    host: '127.0.0.1',
    // No Retry: the address stays unvalidated, which is the case the limit is for.
    server: { cert: chain.cert, key: chain.key, retry: false },
    transport: { maxIdleTimeoutMs: IDLE_TIMEOUT_MS },
  })
  server.on('connection', serveEcho)
})

afterAll(async () => {
  await server?.close()
})

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('anti-amplification limit before address validation (RFC 9000 §8.1)', () => {
  it('a server with a large chain sends a silent client at most 3x the bytes it received, until it gives up', async () => {
    if (ENGINE) expect(server.engine.name).toBe(ENGINE)
    const sock = dgram.createSocket('udp4')
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
    const replies: Buffer[] = []
    sock.on('message', (msg, rinfo) => {
      if (rinfo.port === server.address.port) replies.push(msg)
    })
    try {
      const initial = craftClientInitial({ minDatagramSize: 1200 })
      expect(initial.packet.length).toBe(1200)
      const before = server.stats().udp
      await new Promise<void>((resolve, reject) => sock.send(initial.packet, server.address.port, '127.0.0.1', (err) => (err ? reject(err) : resolve())))

      // Wait for the server to take the connection, then to give it up; bounded.
      const deadline = Date.now() + IDLE_TIMEOUT_MS + 15_000
      let sawConnection = false
      while (Date.now() < deadline) {
        const live = server.engine.connectionCount
        if (live > 0 || server.stats().connections > 0) sawConnection = true
        else if (sawConnection) break
        await sleep(20)
      }
      expect(sawConnection).toBe(true)
      expect(server.engine.connectionCount).toBe(0)
      expect(server.stats().connections).toBe(0)
      // Anything still in flight on loopback arrives in far less than this.
      await sleep(300)

      const after = server.stats().udp
      const received = after.bytesReceived - before.bytesReceived
      const serverSent = after.bytesSent - before.bytesSent
      const got = replies.reduce((n, m) => n + m.length, 0)
      const ratio = got / received
      console.log(
        `[amplification] engine ${server.engine.name}: client sent 1 datagram, ${received} B; ` +
          `server sent ${replies.length} datagrams, ${got} B (server counted ${serverSent} B); ` +
          `ratio ${ratio.toFixed(3)} (limit ${AMPLIFICATION_FACTOR}); certificate chain ${chain.certificates} certs, ${chain.chainBytes} B DER`,
      )

      // The limit binds: the chain alone does not fit in 3x what the client sent.
      expect(chain.chainBytes).toBeGreaterThan(AMPLIFICATION_FACTOR * initial.packet.length)
      expect(received).toBe(initial.packet.length)
      // The server did engage (no Retry, no silence): it answered with its Initial.
      expect(replies.length).toBeGreaterThan(0)
      const first = parseLongHeader(replies[0]!)
      expect(first?.type).toBe('initial')
      expect(Buffer.from(first!.dcid).equals(Buffer.from(initial.scid))).toBe(true)
      // We counted every byte the server sent (loopback lost nothing).
      expect(got).toBe(serverSent)
      expect(got).toBeLessThanOrEqual(AMPLIFICATION_FACTOR * received)
    } finally {
      sock.close()
    }
  }, 30_000)

  it('control: a real client gets the whole large chain and is served', async () => {
    const client = await createEndpoint({ host: '127.0.0.1' })
    try {
      const before = server.stats().udp.bytesSent
      const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: chain.ca, serverName: 'localhost' })
      const handshakeBytes = server.stats().udp.bytesSent - before
      console.log(`[amplification] engine ${server.engine.name}: a validated handshake made the server send ${handshakeBytes} B`)
      expect(conn.peerCertificates.length).toBe(chain.certificates)
      // Once the client answers, the server can send its whole flight: more than 3 x 1200.
      expect(handshakeBytes).toBeGreaterThan(AMPLIFICATION_FACTOR * 1200)
      const data = pattern(100_000, 4)
      expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
    } finally {
      await client.close()
    }
  }, 30_000)
})
