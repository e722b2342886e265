import dgram from 'node:dgram'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, quinnEngine, type Endpoint, type QuicEngineFactory, type QuicConnection } from '../src/index.js'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'
import { quicheEngine } from '@stoq/engine-quiche'

/**
 * `QuicEngineOptions.cidPrefix`: every connection ID an engine issues starts with the
 * prefix byte. Runs under both vitest projects (STOQ_ENGINE quinn and quiche).
 */
const engineName = process.env.STOQ_ENGINE === 'quiche' ? 'quiche' : 'quinn'
const base: QuicEngineFactory = engineName === 'quiche' ? quicheEngine() : quinnEngine()
const withPrefix =
  (cidPrefix: unknown): QuicEngineFactory =>
  (o) =>
    base({ ...o, cidPrefix: cidPrefix as number })

const SERVER_PREFIX = 7
const CLIENT_PREFIX = 9

/** Read a QUIC variable-length integer at `at`: [value, bytes]. */
function varint(d: Uint8Array, at: number): [number, number] {
  const len = 1 << (d[at]! >> 6)
  let v = d[at]! & 0x3f
  for (let i = 1; i < len; i++) v = v * 256 + d[at + i]!
  return [v, len]
}

interface Seen {
  long: boolean
  type: number
  dcid: Uint8Array
}

/** The packets coalesced in one datagram: header form, long-header type, DCID (short: our CID length is not known, so 1 byte). */
function packets(d: Uint8Array): Seen[] {
  const out: Seen[] = []
  let at = 0
  while (at < d.length) {
    const first = d[at]!
    if ((first & 0x80) === 0) {
      // Zeros that pad the datagram after its last packet (quiche pads datagrams carrying an
      // Initial to 1200 bytes this way): no packet, whose bytes are encrypted, is all zeros.
      // (The fixed bit tells nothing: quinn greases it, RFC 9287.)
      if (at > 0 && d.subarray(at).every((b) => b === 0)) break
      out.push({ long: false, type: -1, dcid: d.subarray(at + 1, at + 2) })
      break // a short-header packet runs to the end of the datagram
    }
    const version = ((d[at + 1]! << 24) | (d[at + 2]! << 16) | (d[at + 3]! << 8) | d[at + 4]!) >>> 0
    const dcidLen = d[at + 5]!
    const dcid = d.subarray(at + 6, at + 6 + dcidLen)
    const type = (first >> 4) & 3
    out.push({ long: true, type: version === 0 ? -2 : type, dcid })
    if (version === 0 || type === 3) break // version negotiation, Retry: no length field
    let p = at + 6 + dcidLen
    p += 1 + d[p]! // SCID
    if (type === 0) {
      const [tokenLength, n] = varint(d, p)
      p += n + tokenLength
    }
    const [length, n] = varint(d, p)
    at = p + n + length
  }
  return out
}

/** A UDP relay between one client and the server that records every datagram each way. */
async function relay(serverPort: number): Promise<{ port: number; toServer: Uint8Array[]; toClient: Uint8Array[]; close(): Promise<void> }> {
  const socket = dgram.createSocket('udp4')
  const toServer: Uint8Array[] = []
  const toClient: Uint8Array[] = []
  let clientPort = 0
  socket.on('message', (msg, rinfo) => {
    if (rinfo.port === serverPort) {
      toClient.push(Uint8Array.from(msg))
      if (clientPort !== 0) socket.send(msg, clientPort, '127.0.0.1')
    } else {
      clientPort = rinfo.port
      toServer.push(Uint8Array.from(msg))
      socket.send(msg, serverPort, '127.0.0.1')
    }
  })
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve))
  return {
    port: socket.address().port,
    toServer,
    toClient,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  }
}

for (const retry of [true, false])
  describe(`connection-ID prefix (engine ${engineName}, ${retry ? 'with' : 'without'} Retry)`, () => {
    let pki: TestPki
    let server: Endpoint
    let client: Endpoint
    let wire: Awaited<ReturnType<typeof relay>>
    let conn: QuicConnection

    beforeAll(async () => {
      pki = await testPki()
      server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key, retry } }, { engine: withPrefix(SERVER_PREFIX) })
      server.on('connection', serveEcho)
      client = await createEndpoint({ host: '127.0.0.1' }, { engine: withPrefix(CLIENT_PREFIX) })
      wire = await relay(server.address.port)
      conn = await client.connect({ host: '127.0.0.1', port: wire.port, ca: pki.ca, serverName: 'localhost' })
    })

    afterAll(async () => {
      await client?.close()
      await server?.close()
      await wire?.close()
    })

    it('echoes 1 MiB through the relay', async () => {
      expect(conn.established).toBe(true)
      const data = pattern(1024 * 1024, 3)
      const back = await echoOnce(conn.openStream(), data)
      expect(sha256(back)).toBe(sha256(data))
    })

    it('starts every DCID with the receiver’s prefix: 9 towards the client, 7 towards the server', () => {
      // Towards the client: every packet, long or short, carries a CID the client issued.
      const toClient = wire.toClient.flatMap(packets)
      expect(toClient.filter((p) => !p.long).length).toBeGreaterThan(10)
      expect(toClient.filter((p) => p.long).length).toBeGreaterThan(0)
      // The Retry (type 3) too: the server addresses it to the client's SCID.
      expect(toClient.some((p) => p.long && p.type === 3)).toBe(retry)
      const badClient = toClient.filter((p) => p.dcid[0] !== CLIENT_PREFIX)
      expect(badClient).toEqual([])

      // Towards the server: all but the client's first Initials, whose DCID the client picked at random
      // (RFC 9000 §7.2) before it learnt one of the server's.
      const toServer = wire.toServer.flatMap(packets)
      const first = toServer[0]!
      expect(first).toMatchObject({ long: true, type: 0 })
      const randomDcid = Buffer.from(first.dcid).toString('hex')
      const rest = toServer.filter((p) => !(p.long && p.type === 0 && Buffer.from(p.dcid).toString('hex') === randomDcid))
      expect(rest.filter((p) => !p.long).length).toBeGreaterThan(10)
      expect(rest.filter((p) => p.long).length).toBeGreaterThan(0)
      const badServer = rest.filter((p) => p.dcid[0] !== SERVER_PREFIX)
      expect(badServer).toEqual([])
    })
  })

describe(`connection-ID prefix (engine ${engineName}): validation`, () => {
  it('refuses a prefix that is not an integer from 0 to 255 (STOQ_ERR_INVALID_ARG)', async () => {
    for (const bad of [256, -2, -1, 1.5, '7', Number.NaN]) {
      await expect(createEndpoint({ host: '127.0.0.1' }, { engine: withPrefix(bad) })).rejects.toMatchObject({
        code: 'STOQ_ERR_INVALID_ARG',
        data: { argument: 'cidPrefix' },
      })
    }
    // 0 and 255 are fine.
    for (const ok of [0, 255]) {
      const ep = await createEndpoint({ host: '127.0.0.1' }, { engine: withPrefix(ok) })
      await ep.close()
    }
  })
})
