import diagnostics from 'node:diagnostics_channel'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { createEndpoint, DIAGNOSTICS_CHANNELS, type Endpoint, type QuicConnection } from '../src/index.js'
import { echoOnce, pattern, serveEcho, sha256 } from './fixtures/echo.js'

let pki: TestPki
const endpoints: Endpoint[] = []
beforeAll(async () => {
  pki = await testPki()
})
afterAll(async () => {
  for (const e of endpoints) await e.close()
})

describe('diagnostics_channel events', () => {
  it('publishes connection and stream lifecycle events in order', async () => {
    const seen: Array<{ channel: string; side: string; local?: boolean; code?: number }> = []
    const subs = Object.values(DIAGNOSTICS_CHANNELS).map((name) => {
      const fn = (message: unknown): void => {
        const m = message as { connection: QuicConnection; local?: boolean; info?: { code: number } }
        seen.push({ channel: name, side: m.connection.side, ...(m.local !== undefined ? { local: m.local } : {}), ...(m.info ? { code: m.info.code } : {}) })
      }
      diagnostics.subscribe(name, fn)
      return () => diagnostics.unsubscribe(name, fn)
    })
    try {
      const server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } })
      endpoints.push(server)
      server.on('connection', serveEcho)
      const client = await createEndpoint({ host: '127.0.0.1' })
      endpoints.push(client)
      const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
      const data = pattern(100_000, 3)
      expect(sha256(await echoOnce(conn.openStream(), data))).toBe(sha256(data))
      await conn.close(7, 'bye')
      const clientEvents = seen.filter((e) => e.side === 'client').map((e) => e.channel)
      expect(clientEvents[0]).toBe('stoq:connection:create')
      expect(clientEvents[1]).toBe('stoq:connection:established')
      expect(clientEvents).toContain('stoq:stream:open')
      expect(clientEvents.at(-1)).toBe('stoq:connection:closed')
      expect(seen.find((e) => e.side === 'client' && e.channel === 'stoq:stream:open')?.local).toBe(true)
      expect(seen.find((e) => e.side === 'client' && e.channel === 'stoq:connection:closed')?.code).toBe(7)
      // The server saw the peer's stream open, and its own connection events.
      const serverEvents = seen.filter((e) => e.side === 'server')
      expect(serverEvents.some((e) => e.channel === 'stoq:stream:open' && e.local === false)).toBe(true)
      expect(serverEvents.map((e) => e.channel)).toContain('stoq:connection:established')
    } finally {
      for (const off of subs) off()
    }
  }, 30_000)
})
