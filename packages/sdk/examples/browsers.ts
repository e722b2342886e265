// The README's "browsers" example, kept as a file that a test runs: one port serves native STOQ
// clients and WebTransport sessions (browsers, or the Node WebTransport client used here).
import { Stoq, connectWebTransport } from '@stoq/sdk'

export async function browsers(options: { identityDir: string }): Promise<string> {
  const server = await Stoq.create('my-app', { identity: { dir: options.identityDir } })
  const listening = await server.listen(0, {
    onStream: (stream) => void stream.readable!.pipeTo(stream.writable!), // native STOQ clients
    webtransport: {
      path: '/echo',
      // Browsers: echo every bidirectional stream.
      onSession: (session) => session.on('stream', (s) => void (s.writable && s.readable!.pipeTo(s.writable))),
    },
  })
  // What a page passes to `new WebTransport(url, { serverCertificateHashes })`.
  const { serverCertificateHashes } = await server.browserCertificate()

  const session = await connectWebTransport(`https://localhost:${listening.address.port}/echo`, { serverCertificateHashes })
  const stream = session.openStream()
  const writer = stream.writable!.getWriter()
  await writer.write(new TextEncoder().encode('hello, browser'))
  await writer.close()
  let reply = ''
  for await (const chunk of stream.readable!) reply += new TextDecoder().decode(chunk, { stream: true })

  await session.close({ code: 0, reason: 'done' })
  await server.close()
  return reply
}
