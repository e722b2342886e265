import { readAll } from '@stoq/compliance-tests'
import { serveWebTransport, type WebTransportServer, type WebTransportSession, type WebTransportCertificate } from '../src/index.js'

/** Echo handler: bidi streams echo, uni streams are answered on a new uni stream, datagrams bounce. */
export function echoSession(session: WebTransportSession): void {
  session.on('stream', (stream) => {
    void (async () => {
      try {
        if (stream.bidirectional) {
          await stream.readable!.pipeTo(stream.writable!)
        } else {
          const data = await readAll(stream.readable!)
          const back = session.openStream({ unidirectional: true })
          const w = back.writable!.getWriter()
          await w.write(data)
          await w.close()
        }
      } catch {
        // The session ended under the stream.
      }
    })()
  })
  session.on('datagram', (d) => {
    try {
      session.sendDatagram(d)
    } catch {
      // Closed.
    }
  })
}

export async function startEchoServer(
  cert: WebTransportCertificate,
  host: string,
  engine: 'quinn' | 'quiche',
  sessions: WebTransportSession[] = [],
): Promise<WebTransportServer> {
  return serveWebTransport(
    { host, engine, server: { cert: cert.cert, key: cert.key } },
    {
      path: '/echo',
      onSession: (s) => {
        sessions.push(s)
        echoSession(s)
      },
    },
  )
}

export function urlFor(server: WebTransportServer, host: string, path = '/echo'): string {
  const h = host.includes(':') ? `[${host}]` : host
  return `https://${h}:${server.address.port}${path}`
}
