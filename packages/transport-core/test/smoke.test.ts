import { describe, expect, it } from 'vitest'
import { createEndpoint } from '../src/index.js'
import { testPki } from './fixtures/certs.js'

describe('smoke', () => {
  it('handshakes and echoes', async () => {
    const pki = await testPki()
    const server = await createEndpoint({ host: '127.0.0.1', server: { cert: pki.server.cert, key: pki.server.key } })
    server.on('connection', (conn) => {
      conn.on('stream', async (s) => {
        await s.readable!.pipeTo(s.writable!)
      })
    })
    const client = await createEndpoint({ host: '127.0.0.1' })
    const conn = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    const s = conn.openStream()
    const w = s.writable!.getWriter()
    await w.write(new TextEncoder().encode('hello'))
    await w.close()
    const chunks: Uint8Array[] = []
    for await (const c of s.readable!) chunks.push(c)
    expect(Buffer.concat(chunks).toString()).toBe('hello')
    await conn.close(0, 'bye')
    await client.close()
    await server.close()
  })
})
