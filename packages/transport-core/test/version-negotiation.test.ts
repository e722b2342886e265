import { createSocket, type Socket } from 'node:dgram'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEndpoint, StoqError, type Endpoint } from '../src/index.js'

/**
 * Issue #16, defect 6: against a server that speaks no QUIC version we do, `connect()` rejects
 * promptly (not by handshake timeout) with one typed error on both engines,
 * STOQ_ERR_VERSION_NEGOTIATION, naming the versions the server offered. Runs once per engine.
 */

/** Versions no one speaks (reserved-looking, but not the 0x?a?a?a?a greasing pattern either). */
const OFFERED = [0x1a2a3a4b, 0x00000002]

let client: Endpoint
let fake: Socket
let initials = 0

/** A Version Negotiation packet (RFC 9000 §17.2.1) answering a client's long-header packet. */
function versionNegotiation(initial: Buffer): Buffer | null {
  if (initial.length < 7 || (initial[0]! & 0x80) === 0) return null
  const dcil = initial[5]!
  const dcid = initial.subarray(6, 6 + dcil)
  const scil = initial[6 + dcil]!
  const scid = initial.subarray(7 + dcil, 7 + dcil + scil)
  const versions = Buffer.alloc(4 * OFFERED.length)
  for (const [i, v] of OFFERED.entries()) versions.writeUInt32BE(v, 4 * i)
  // Destination: the client's source CID; source: the client's destination CID.
  return Buffer.concat([Buffer.from([0x80 | 0x3f, 0, 0, 0, 0, scid.length]), scid, Buffer.from([dcid.length]), dcid, versions])
}

beforeAll(async () => {
  client = await createEndpoint({ host: '127.0.0.1' })
  fake = createSocket('udp4')
  fake.on('message', (msg, rinfo) => {
    const vn = versionNegotiation(msg)
    if (vn === null) return
    initials++
    fake.send(vn, rinfo.port, rinfo.address)
  })
  await new Promise<void>((r) => fake.bind(0, '127.0.0.1', r))
})

afterAll(async () => {
  await client?.close()
  fake?.close()
})

describe('no common QUIC version', () => {
  it('connect() rejects at once with STOQ_ERR_VERSION_NEGOTIATION and the versions offered', async () => {
    const started = performance.now()
    let err: unknown
    try {
      await client.connect({ host: '127.0.0.1', port: fake.address().port, insecure: true, handshakeTimeoutMs: 5000 })
    } catch (e) {
      err = e
    }
    const ms = performance.now() - started
    expect(initials).toBeGreaterThan(0)
    expect(StoqError.isInstance(err), String(err)).toBe(true)
    const e = err as StoqError<{ offered: number[] }>
    expect(e.code).toBe('STOQ_ERR_VERSION_NEGOTIATION')
    expect(e.name).toBe('StoqVersionNegotiationError')
    expect(e.data.offered).toEqual(OFFERED)
    // One close description on both engines.
    expect(e.data).toMatchObject({ remote: true, app: false, code: 0, reason: 'no common QUIC version', idleTimeout: false })
    expect(e.message).toMatch(/0x1a2a3a4b/)
    // Promptly: well before the 5 s handshake timeout.
    expect(ms).toBeLessThan(2000)
    expect(client.connections.filter((c) => !c.isClosed)).toHaveLength(0)
  })
})
