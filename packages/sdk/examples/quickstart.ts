// The README's quick start, kept as a file that a test runs.
import { Stoq } from '@stoq/sdk'

export async function quickstart(pem: { cert: string; key: string; ca: string }): Promise<string> {
  // Server: echo every stream back.
  const server = await Stoq.create('echo-server')
  const listening = await server.listen(
    { host: '::', port: 0 },
    {
      cert: pem.cert,
      key: pem.key,
      onStream: (stream) => void stream.readable!.pipeTo(stream.writable!),
    },
  )

  // Client: connect (TLS verified against the CA), send, read the echo.
  const client = await Stoq.create('my-app')
  const conn = await client.connect(`[::1]:${listening.address.port}`, { ca: pem.ca, serverName: 'localhost' })
  const stream = conn.openStream()
  const writer = stream.writable!.getWriter()
  await writer.write(new TextEncoder().encode('hello, STOQ'))
  await writer.close()
  let reply = ''
  for await (const chunk of stream.readable!) reply += new TextDecoder().decode(chunk, { stream: true })

  console.log(client.stats())
  await client.close()
  await server.close()
  return reply
}
