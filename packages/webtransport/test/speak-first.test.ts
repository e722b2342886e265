import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  connectWebTransport,
  createWebTransportCertificate,
  serveWebTransport,
  type WebTransportCertificate,
  type WebTransportServer,
  type WebTransportStream,
} from '../src/index.js'
import { readAll } from '@stoq/compliance-tests'
import { urlFor } from './helpers.js'

/**
 * A server that speaks first (issue #16, item 2): streams it opens as the session starts reach
 * the Node client however the application takes them, the 'stream' event attached after
 * `connectWebTransport()` resolved, or `incomingStreams`, and none is lost.
 */

const text = (b: Uint8Array): string => new TextDecoder().decode(b)
let cert: WebTransportCertificate

beforeAll(async () => {
  cert = await createWebTransportCertificate()
})

for (const engine of ['quinn', 'quiche'] as const) {
  describe(`a WebTransport server that opens streams at session start (${engine})`, () => {
    let server: WebTransportServer

    beforeAll(async () => {
      server = await serveWebTransport(
        { host: '127.0.0.1', engine, server: { cert: cert.cert, key: cert.key } },
        {
          path: '/first',
          onSession: (session) => {
            void (async () => {
              const uni = session.openStream({ unidirectional: true }).writable!.getWriter()
              await uni.write(new TextEncoder().encode('uni first'))
              await uni.close()
              const bidi = session.openStream().writable!.getWriter()
              await bidi.write(new TextEncoder().encode('bidi first'))
              await bidi.close()
            })().catch(() => {})
          },
        },
      )
    })
    afterAll(async () => {
      await server?.close()
    })

    const connect = () => connectWebTransport(urlFor(server, '127.0.0.1', '/first'), { serverCertificateHashes: cert.serverCertificateHashes, engine })

    it("delivers both through the 'stream' event attached after connect() resolved", async () => {
      const session = await connect()
      await new Promise((r) => setTimeout(r, 300))
      const got: WebTransportStream[] = []
      session.on('stream', (s) => got.push(s))
      await new Promise((r) => setTimeout(r, 0))
      expect(got).toHaveLength(2)
      expect((await Promise.all(got.map((s) => readAll(s.readable!).then(text)))).sort()).toEqual(['bidi first', 'uni first'])
      await session.close()
    })

    it('delivers both through incomingStreams', async () => {
      const session = await connect()
      await new Promise((r) => setTimeout(r, 300))
      const reader = session.incomingStreams.getReader()
      const a = await reader.read()
      const b = await reader.read()
      expect([text(await readAll(a.value!.readable!)), text(await readAll(b.value!.readable!))].sort()).toEqual(['bidi first', 'uni first'])
      reader.releaseLock()
      await session.close()
    })
  })
}
