import { createSocket, type Socket } from 'node:dgram'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, type CloseInfo, type Endpoint, type QuicConnection, type QuicStream } from '../src/index.js'
import { pattern } from './fixtures/echo.js'
import { sleep, waitFor } from './fixtures/peers.js'

/**
 * Issue #16, defect 1: a close made while stream data is still queued (unsent, or sent and not
 * acknowledged, with the congestion window full) must still put CONNECTION_CLOSE on the wire,
 * so the peer gets the exact code and reason, not its idle timeout or a stateless reset.
 * Runs once per engine (vitest projects).
 */

let pki: TestPki
let server: Endpoint
let client: Endpoint
const peers: { conn: QuicConnection; closed: Promise<CloseInfo> }[] = []

/** How long the peer may wait for the close: far less than its idle timeout. */
const CLOSE_WAIT_MS = 3000

beforeAll(async () => {
  pki = await testPki()
  server = await createEndpoint({
    host: '127.0.0.1',
    server: { cert: pki.server.cert, key: pki.server.key },
    // A lost close shows as an idle timeout well after CLOSE_WAIT_MS.
    transport: { maxIdleTimeoutMs: 10_000 },
  })
  server.on('connection', (conn) => {
    conn.on('stream', (s: QuicStream) => {
      // Read and drop, so the upload runs at the congestion window's pace.
      void s.readable?.pipeTo(new WritableStream()).catch(() => {})
    })
    peers.push({ conn, closed: conn.closed })
  })
  client = await createEndpoint({ host: '127.0.0.1', transport: { maxIdleTimeoutMs: 10_000 } })
})

afterAll(async () => {
  await client?.close()
  await server?.close()
  relay?.front.close()
  relay?.back.close()
})

/**
 * A UDP relay between client and server that can drop what the server sends (its ACKs): the
 * client's congestion window then fills with unacknowledged data, as on a congested path.
 */
interface Relay {
  front: Socket
  back: Socket
  dropToClient: boolean
}
let relay: Relay | undefined

async function startRelay(): Promise<Relay> {
  const front = createSocket('udp4')
  const back = createSocket('udp4')
  await Promise.all([new Promise<void>((r) => front.bind(0, '127.0.0.1', r)), new Promise<void>((r) => back.bind(0, '127.0.0.1', r))])
  const r: Relay = { front, back, dropToClient: false }
  let clientAddr: { port: number; address: string } | null = null
  front.on('message', (msg, rinfo) => {
    clientAddr = { port: rinfo.port, address: rinfo.address }
    back.send(msg, server.address.port, '127.0.0.1')
  })
  back.on('message', (msg) => {
    if (!r.dropToClient && clientAddr) front.send(msg, clientAddr.port, clientAddr.address)
  })
  return r
}

/** Dial the server, directly or through the relay (`port`). */
async function dial(port = server.address.port): Promise<{ conn: QuicConnection; peer: (typeof peers)[number] }> {
  const before = peers.length
  const conn = await client.connect({ host: '127.0.0.1', port, ca: pki.ca, serverName: 'localhost' })
  await waitFor(() => peers.length > before, 'server side of the connection')
  return { conn, peer: peers[peers.length - 1]! }
}

/** 'ok' when the peer's close carries our application `code` and `reason`, else what it got instead within CLOSE_WAIT_MS. */
async function closeOutcome(peer: (typeof peers)[number], code: number, reason: string, round: number): Promise<string> {
  const timeout = sleep(CLOSE_WAIT_MS).then(() => `no close within ${CLOSE_WAIT_MS} ms`)
  const got: CloseInfo | string = await Promise.race([peer.closed, timeout])
  const ok = typeof got !== 'string' && got.remote && got.app && got.code === code && got.reason === reason
  return ok ? 'ok' : `round ${round}: ${JSON.stringify(got)}`
}

const upload = pattern(8 * 1024 * 1024, 16)

describe('a close with stream data queued reaches the peer', () => {
  it('closeNow() and close(timeoutMs 0) 50 ms into an 8 MiB upload: 24 of 24 codes delivered', async () => {
    const results: string[] = []
    for (let round = 0; round < 24; round++) {
      const { conn, peer } = await dial()
      const s = conn.openStream({ unidirectional: true })
      const w = s.writable!.getWriter()
      w.write(upload).catch(() => {})
      await sleep(50)
      const code = 4000 + round
      const reason = `round ${round} bye`
      if (round % 2 === 0) conn.closeNow(code, reason)
      else void conn.close(code, reason, { timeoutMs: 0 })
      results.push(await closeOutcome(peer, code, reason, round))
      await conn.closed
    }
    const delivered = results.filter((r) => r === 'ok').length
    expect(
      results.filter((r) => r !== 'ok'),
      `${delivered} of 24 closes delivered`,
    ).toEqual([])
  }, 120_000)

  it("closeNow() with a full congestion window (the peer's ACKs held back): the close still goes out", async () => {
    relay ??= await startRelay()
    const results: string[] = []
    for (let round = 0; round < 6; round++) {
      relay.dropToClient = false
      const { conn, peer } = await dial(relay.front.address().port)
      const s = conn.openStream({ unidirectional: true })
      s.writable!.getWriter()
        .write(upload)
        .catch(() => {})
      await sleep(30)
      // No more ACKs: whatever the window allows goes out, then the sender is blocked.
      relay.dropToClient = true
      await sleep(40)
      const code = 900 + round
      const reason = `congested ${round}`
      conn.closeNow(code, reason)
      await sleep(20)
      relay.dropToClient = false
      results.push(await closeOutcome(peer, code, reason, round))
      await conn.closed
    }
    expect(results.filter((r) => r !== 'ok')).toEqual([])
  }, 60_000)

  it('128 unfinished uni streams and a close in the same turn: the code arrives, never a stateless reset', async () => {
    const results: string[] = []
    for (let round = 0; round < 6; round++) {
      const { conn, peer } = await dial()
      const chunk = pattern(64 * 1024, round)
      for (let i = 0; i < 128; i++) {
        let s: QuicStream
        try {
          s = conn.openStream({ unidirectional: true })
        } catch {
          break // the peer's stream limit
        }
        s.writable!.getWriter()
          .write(chunk)
          .catch(() => {})
      }
      const code = 77 + round
      const reason = `streams ${round}`
      conn.closeNow(code, reason)
      results.push(await closeOutcome(peer, code, reason, round))
      await conn.closed
    }
    expect(results.filter((r) => r !== 'ok')).toEqual([])
  }, 60_000)
})
