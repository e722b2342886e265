/**
 * Handshakes per second: STOQ (quinn engine, TLS 1.3 inside QUIC) against Node's `tls` (TLS 1.3
 * over loopback TCP), with the same ECDSA P-256 certificate, in the same run.
 *
 *   node dist/handshakes.js [--count 400] [--parallel 32] [--engine quinn]
 *
 * Each case: server and client in this process, `count` handshakes one after another, then
 * `count` with `parallel` in flight; a handshake counts once the client may send (QUIC:
 * `connect()` resolved; TLS: 'secureConnect'), and the connection is then closed. Reports the
 * median of 3 runs of each and the STOQ/tls ratio.
 */
import type net from 'node:net'
import tls from 'node:tls'
import { createEndpoint } from '@stoq/transport-core'
import { makeIdentity } from './pki.js'

const args = process.argv.slice(2)
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt
}
const COUNT = Number(arg('count', '400'))
const PARALLEL = Number(arg('parallel', '32'))
const ENGINE = arg('engine', 'quinn') as 'quinn' | 'quiche'

async function timed(count: number, parallel: number, one: () => Promise<void>): Promise<number> {
  let next = 0
  const start = performance.now()
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        next++
        await one()
      }
    }),
  )
  return count / ((performance.now() - start) / 1000)
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

async function main(): Promise<void> {
  const id = await makeIdentity()
  // Node tls, TLS 1.3 only.
  const tlsServer = tls.createServer({ cert: id.cert, key: id.key, minVersion: 'TLSv1.3' }, (s) => s.end())
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r))
  const tlsPort = (tlsServer.address() as net.AddressInfo).port
  const tlsOne = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: tlsPort, ca: id.cert, servername: 'localhost', minVersion: 'TLSv1.3' }, () => {
        s.destroy()
        resolve()
      })
      s.on('error', reject)
    })
  // STOQ: default limits and transport (lean connections).
  const server = await createEndpoint({ host: '127.0.0.1', engine: ENGINE, server: { cert: id.cert, key: id.key } })
  const client = await createEndpoint({ host: '127.0.0.1', engine: ENGINE })
  const port = server.address.port
  const quicOne = async (): Promise<void> => {
    const c = await client.connect({ host: '127.0.0.1', port, pin: id.pin, serverName: 'localhost' })
    c.closeNow(0, '')
  }
  await timed(50, 8, tlsOne)
  await timed(50, 8, quicOne)
  const rows: string[] = []
  for (const [label, parallel] of [
    ['sequential', 1],
    [`${PARALLEL} in parallel`, PARALLEL],
  ] as const) {
    const t: number[] = []
    const q: number[] = []
    for (let run = 0; run < 3; run++) {
      t.push(await timed(COUNT, parallel, tlsOne))
      q.push(await timed(COUNT, parallel, quicOne))
    }
    rows.push(`${label}: STOQ ${ENGINE} ${median(q).toFixed(0)}/s, Node tls ${median(t).toFixed(0)}/s, ratio ${(median(q) / median(t)).toFixed(2)}x`)
  }
  console.log(`[handshakes] ${COUNT} handshakes per run, median of 3, same ECDSA P-256 certificate, loopback\n  ${rows.join('\n  ')}`)
  await client.close()
  await server.close()
  tlsServer.close()
}

await main()
