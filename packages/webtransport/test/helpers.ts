import { createHash } from 'node:crypto'
import type { ReadableStream } from 'node:stream/web'
import { serveWebTransport, type WebTransportServer, type WebTransportSession, type WebTransportCertificate } from '../src/index.js'

export function pattern(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size)
  let x = seed >>> 0 || 1
  for (let i = 0; i < size; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

export async function readAll(readable: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  let total = 0
  for await (const chunk of readable) {
    chunks.push(chunk)
    total += chunk.length
  }
  const out = new Uint8Array(total)
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

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

/** Polls `check` until it holds; fails after `limitMs` (a hang guard, not a timing assertion). */
export async function eventually(check: () => boolean, limitMs = 10_000): Promise<void> {
  const deadline = Date.now() + limitMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached')
    await new Promise((r) => setTimeout(r, 20))
  }
}
