/**
 * `stoq serve --webtransport`: a WebTransport echo server for browsers, with
 * the app's browser certificate, plus the example page and its settings
 * (`/webtransport.json`) over plain HTTP on localhost.
 */
import fs from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { StoqSocketError, StoqUnsupportedError, type Endpoint } from '@stoq/transport-core'
import type { WebTransportSession, WebTransportStream } from '@stoq/webtransport'
import { Stoq, type StoqOptions } from '../stoq.js'
import { formatHostPort } from './args.js'
import { describeError } from './errors.js'
import type { CommandIo } from './bench.js'

export const WEBTRANSPORT_DEFAULT_HTTP_PORT = 8080
export const WEBTRANSPORT_DEFAULT_PATH = '/echo'

/** The example page, next to the package's dist/ and src/ (both one level below the package). */
export const WEBTRANSPORT_PAGE = fileURLToPath(new URL('../examples/webtransport.html', import.meta.url))

export interface ServeWebTransportOptions {
  host: string
  /** UDP port (0: any free one). */
  port: number
  /** TCP port of the page (0: any free one). */
  httpPort: number
  /** WebTransport path, starting with "/". */
  path: string
  endpoint: StoqOptions['endpoint']
}

/** What `/webtransport.json` holds: everything `new WebTransport(url, options)` needs. */
export interface WebTransportPageConfig {
  url: string
  serverCertificateHashes: Array<{ algorithm: 'sha-256'; value: number[] }>
}

function peerOf(session: WebTransportSession): string {
  const a = session.connection.remoteAddress
  const host = a.address.startsWith('::ffff:') ? a.address.slice(7) : a.address
  return formatHostPort(host, a.port)
}

/**
 * Echo everything on `session`: a bidirectional stream is piped back to
 * itself, a unidirectional one into a unidirectional stream of our own (no
 * buffering either way), datagrams are sent back. Returns counters for the log.
 */
function echoSession(session: WebTransportSession): { streams: number; datagrams: number } {
  const counts = { streams: 0, datagrams: 0 }
  session.on('stream', (stream: WebTransportStream) => {
    counts.streams++
    let back: WebTransportStream | null = null
    const pipe = async (): Promise<void> => {
      if (stream.bidirectional) return stream.readable!.pipeTo(stream.writable!)
      back = session.openStream({ unidirectional: true })
      return stream.readable!.pipeTo(back.writable!)
    }
    pipe().catch(() => {
      // The peer reset the stream or the session ended under it: nothing to echo.
      try {
        back?.reset(0)
      } catch {
        // Already finished.
      }
    })
  })
  session.on('datagram', (d) => {
    counts.datagrams++
    try {
      session.sendDatagram(d)
    } catch {
      // Closed meanwhile.
    }
  })
  return counts
}

/** The WebTransport URL a page loaded from `hostHeader` should use: same host name, the QUIC port. */
export function webTransportUrlFor(hostHeader: string | undefined, port: number, path: string): string {
  let host = 'localhost'
  if (hostHeader !== undefined) {
    try {
      const h = new URL(`http://${hostHeader}/`).hostname
      if (h !== '') host = h
    } catch {
      // A malformed Host header: fall back to localhost.
    }
  }
  return `https://${host}:${port}${path}`
}

function listenHttp(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new StoqSocketError(
          `cannot serve the page on TCP ${formatHostPort(host, port)}: ${err.message}`,
          {
            ...(err.syscall !== undefined ? { syscall: err.syscall } : {}),
            ...(err.code !== undefined ? { errno: err.code } : {}),
          },
          { cause: err },
        ),
      )
    }
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve((server.address() as AddressInfo).port)
    })
  })
}

function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', on)
      process.off('SIGTERM', on)
      resolve(signal)
    }
    process.on('SIGINT', on)
    process.on('SIGTERM', on)
  })
}

/** Runs until SIGINT/SIGTERM; returns the exit status. */
export async function serveWebTransportCommand(appName: string, o: ServeWebTransportOptions, io: CommandIo): Promise<number> {
  let page: string
  try {
    page = fs.readFileSync(WEBTRANSPORT_PAGE, 'utf8')
  } catch (err) {
    throw new StoqUnsupportedError(
      'webtransport example page',
      `the example page ${WEBTRANSPORT_PAGE} is missing from this installation: ${(err as Error).message}`,
    )
  }
  const stoq = await Stoq.create(appName, { endpoint: o.endpoint })
  const httpServer = http.createServer()
  try {
    let nextSession = 1
    const ep: Endpoint = await stoq.listen(
      { host: o.host, port: o.port },
      {
        webtransport: {
          path: o.path,
          onSession: (session) => {
            const n = nextSession++
            const peer = peerOf(session)
            io.out(`session ${n} from ${peer}: origin ${session.origin ?? '(none)'}, path ${session.path}\n`)
            const counts = echoSession(session)
            void session.closed.then((info) => {
              io.out(
                `session ${n} closed by ${info.remote ? 'the peer' : 'the server'}: code ${info.code}` +
                  `${info.reason ? ` ${JSON.stringify(info.reason)}` : ''}, ${counts.streams} streams and ${counts.datagrams} datagrams echoed\n`,
              )
            })
          },
        },
      },
    )
    ep.on('error', (err) => io.err(`stoq serve: ${describeError(err)}\n`))
    // The certificate this listener serves (rotation only happens at listen time).
    const cert = await stoq.browserCertificate()
    const port = ep.address.port
    const hashes: WebTransportPageConfig['serverCertificateHashes'] = cert.serverCertificateHashes.map((h) => ({
      algorithm: h.algorithm,
      value: Array.from(h.value),
    }))

    httpServer.on('request', (req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost')
      const send = (status: number, type: string, body: string): void => {
        res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) })
        res.end(req.method === 'HEAD' ? undefined : body)
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD')
        send(405, 'text/plain; charset=utf-8', 'method not allowed\n')
      } else if (url.pathname === '/' || url.pathname === '/index.html' || url.pathname === '/webtransport.html') {
        send(200, 'text/html; charset=utf-8', page)
      } else if (url.pathname === '/webtransport.json') {
        const config: WebTransportPageConfig = { url: webTransportUrlFor(req.headers.host, port, o.path), serverCertificateHashes: hashes }
        send(200, 'application/json', `${JSON.stringify(config)}\n`)
      } else {
        send(404, 'text/plain; charset=utf-8', 'not found\n')
      }
    })
    const httpPort = await listenHttp(httpServer, o.host, o.httpPort)

    const stats = ep.stats()
    io.out(`stoq serve listening for WebTransport on UDP ${formatHostPort(o.host, port)} (engine ${stats.engine}, UDP backend ${stats.udp.backend})\n`)
    io.out(`webtransport https://localhost:${port}${o.path}\n`)
    io.out(`certificate sha256 ${cert.sha256Hex} (ECDSA P-256, valid until ${cert.notAfter.toISOString()})\n`)
    io.out(`page http://localhost:${httpPort}/ (settings at /webtransport.json)\n`)
    io.out(`ports udp=${port} http=${httpPort}\n`)

    const signal = await waitForSignal()
    io.out(`stoq serve: ${signal}, closing\n`)
    return 0
  } finally {
    httpServer.closeAllConnections()
    await new Promise<void>((resolve) => (httpServer.listening ? httpServer.close(() => resolve()) : resolve()))
    await stoq.close()
  }
}
