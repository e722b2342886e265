import { createEndpoint } from '../packages/transport-core/dist/index.js'
import { testPki } from '../packages/compliance/dist/index.js'
const pki = await testPki()
const N = 200
for (const mode of ['prefer', 'off']) {
  const server = await createEndpoint({
    host: '127.0.0.1',
    engine: 'quinn',
    postQuantum: mode,
    server: { cert: pki.server.cert, key: pki.server.key, retry: false },
  })
  server.on('connection', () => {
    // Only the handshake is measured: the connection is left idle.
  })
  const client = await createEndpoint({ host: '127.0.0.1', engine: 'quinn', postQuantum: mode })
  let ms = 0,
    sent = 0,
    recv = 0,
    pk = 0,
    group = ''
  for (let i = 0; i < N; i++) {
    const t = performance.now()
    const c = await client.connect({ host: '127.0.0.1', port: server.address.port, ca: pki.ca, serverName: 'localhost' })
    ms += performance.now() - t
    const s = c.stats()
    sent += s.bytesSent
    recv += s.bytesReceived
    pk += s.packetsSent
    group = s.keyExchangeGroup
    await c.close()
  }
  console.log(
    `${mode} (${group}): ${(ms / N).toFixed(2)} ms/handshake, client bytes sent ${(sent / N).toFixed(0)}, received ${(recv / N).toFixed(0)}, packets sent ${(pk / N).toFixed(1)}`,
  )
  await client.close()
  await server.close()
}
