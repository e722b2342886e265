import { Stoq, createWebTransportCertificate } from '@stoq/sdk'

// A self-signed certificate for localhost, 127.0.0.1 and ::1 (13 days). With your own PKI, give
// listen() your PEM `cert` and `key`, and connect() the issuing CA's PEM as `ca` instead of `pin`.
const { cert, key, sha256Hex } = await createWebTransportCertificate()

// Server: echo every stream back.
const server = await Stoq.create('echo-server')
const listening = await server.listen({ host: '::', port: 0 }, { cert, key, onStream: (stream) => void stream.readable.pipeTo(stream.writable) })

// Client: connect (the server's certificate pinned by its SHA-256), send, read the echo.
const client = await Stoq.create('my-app')
const conn = await client.connect(`[::1]:${listening.address.port}`, { pin: sha256Hex, serverName: 'localhost' })
const stream = conn.openStream()
const writer = stream.writable.getWriter()
await writer.write(new TextEncoder().encode('hello, STOQ'))
await writer.close()
for await (const chunk of stream.readable) console.log(new TextDecoder().decode(chunk))
console.log(client.stats())

await client.close()
await server.close()
