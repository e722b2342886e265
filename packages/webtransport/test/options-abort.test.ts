import dgram from 'node:dgram'
import { getEventListeners } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEndpoint, type Endpoint } from '@stoq/transport-core'
import {
  WebTransportClient,
  connectWebTransport,
  createWebTransportCertificate,
  serveWebTransport,
  type WebTransportCertificate,
  type WebTransportServer,
} from '../src/index.js'
import { stoqErrorOf, waitFor } from '@stoq/compliance-tests'
import { startEchoServer, urlFor } from './helpers.js'

/**
 * One option policy (unknown keys refused, naming the key) and `signal` on the calls that
 * wait: connectWebTransport / WebTransportClient.connect and openSession.
 */

const listeners = (signal: AbortSignal): number => getEventListeners(signal, 'abort').length

const failure = stoqErrorOf

let cert: WebTransportCertificate
let server: WebTransportServer
const cleanup: Array<() => Promise<unknown>> = []

beforeAll(async () => {
  cert = await createWebTransportCertificate()
  server = await startEchoServer(cert, '127.0.0.1', 'quinn')
})

afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {})
  await server?.close()
})

describe('unknown option keys', () => {
  it.each([
    ['connectWebTransport', 'timeout', 'timeoutMs', () => connectWebTransport(urlFor(server, '127.0.0.1'), { timeout: 5 } as never)],
    ['WebTransportClient.connect', 'singal', 'signal', () => WebTransportClient.connect(urlFor(server, '127.0.0.1'), { singal: null } as never)],
    [
      'connectWebTransport limits',
      'limits.maxSession',
      'limits.maxSessions',
      () => connectWebTransport(urlFor(server, '127.0.0.1'), { limits: { maxSession: 1 } } as never),
    ],
    ['serveWebTransport', 'onsession', 'onSession', () => serveWebTransport(server.endpoint, { onsession: () => {} } as never)],
    [
      'serveWebTransport limits',
      'limits.settingsTimeout',
      'limits.settingsTimeoutMs',
      () => serveWebTransport(server.endpoint, { limits: { settingsTimeout: 5 } } as never),
    ],
    ['server.drain', 'timeout', 'timeoutMs', () => server.drain({ timeout: 5 } as never)],
  ])('%s refuses %s (did you mean %s)', async (_api, argument, near, call) => {
    const err = await failure(call)
    expect(err.code).toBe('STOQ_ERR_INVALID_ARG')
    expect(err.data).toEqual({ argument })
    expect(err.message).toContain(`did you mean \`${near}\`?`)
  })

  it('openSession, session.openStream and session.close refuse unknown keys too', async () => {
    const client = await WebTransportClient.connect(urlFor(server, '127.0.0.1'), { serverCertificateHashes: cert.serverCertificateHashes, engine: 'quinn' })
    cleanup.push(() => client.close())
    expect((await failure(() => client.openSession('/echo', { origni: 'x' } as never))).data).toEqual({ argument: 'origni' })
    const session = await client.openSession('/echo')
    expect((await failure(() => session.openStream({ unidirectonal: true } as never))).data).toEqual({ argument: 'unidirectonal' })
    expect((await failure(() => session.close({ cod: 1 } as never))).data).toEqual({ argument: 'cod' })
    expect(session.isClosed).toBe(false)
    await session.close()
  })
})

describe('signal', () => {
  it('connectWebTransport: an already-aborted signal rejects at once', async () => {
    const ac = new AbortController()
    ac.abort('not now')
    const err = await failure(() =>
      connectWebTransport(urlFor(server, '127.0.0.1'), { serverCertificateHashes: cert.serverCertificateHashes, signal: ac.signal }),
    )
    expect(err).toMatchObject({ code: 'STOQ_ERR_ABORTED', cause: 'not now' })
    expect(listeners(ac.signal)).toBe(0)
  })

  it('connectWebTransport: an abort during the QUIC handshake rejects and closes the half-made connection', async () => {
    // A port that swallows every packet: the handshake never completes.
    const hole = dgram.createSocket('udp4')
    await new Promise<void>((resolve) => hole.bind(0, '127.0.0.1', resolve))
    cleanup.push(async () => hole.close())
    const endpoint: Endpoint = await createEndpoint({ host: '127.0.0.1', engine: 'quinn' })
    cleanup.push(() => endpoint.close())
    const ac = new AbortController()
    const connecting = connectWebTransport(`https://127.0.0.1:${hole.address().port}/`, { insecure: true, endpoint, signal: ac.signal })
    await waitFor(() => endpoint.connections.length === 1)
    ac.abort()
    expect((await failure(() => connecting)).code).toBe('STOQ_ERR_ABORTED')
    await waitFor(() => endpoint.connections.length === 0)
    expect(listeners(ac.signal)).toBe(0)
  })

  it('openSession: an abort while waiting for the server SETTINGS rejects; no listener is left', async () => {
    // A QUIC server that speaks ALPN h3 but never sends HTTP/3 SETTINGS.
    const mute = await createEndpoint({ host: '127.0.0.1', engine: 'quinn', server: { cert: cert.cert, key: cert.key, alpn: ['h3'] } })
    cleanup.push(() => mute.close())
    const client = await WebTransportClient.connect(`https://127.0.0.1:${mute.address.port}/`, {
      serverCertificateHashes: cert.serverCertificateHashes,
      engine: 'quinn',
    })
    cleanup.push(() => client.close())
    const before = new AbortController()
    before.abort('early')
    await expect(client.openSession('/', { signal: before.signal })).rejects.toMatchObject({
      code: 'STOQ_ERR_ABORTED',
      data: { operation: 'openSession' },
      cause: 'early',
    })
    const during = new AbortController()
    const opening = client.openSession('/', { signal: during.signal })
    await waitFor(() => listeners(during.signal) === 1)
    during.abort('late')
    await expect(opening).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', cause: 'late' })
    expect(listeners(during.signal)).toBe(0)
  })

  it('a signal that never aborts leaves no listener after connect and openSession', async () => {
    const ac = new AbortController()
    const session = await connectWebTransport(urlFor(server, '127.0.0.1'), {
      serverCertificateHashes: cert.serverCertificateHashes,
      engine: 'quinn',
      signal: ac.signal,
    })
    expect(listeners(ac.signal)).toBe(0)
    await session.close()
    const client = await WebTransportClient.connect(urlFor(server, '127.0.0.1'), {
      serverCertificateHashes: cert.serverCertificateHashes,
      engine: 'quinn',
      signal: ac.signal,
    })
    cleanup.push(() => client.close())
    const second = await client.openSession('/echo', { signal: ac.signal })
    expect(listeners(ac.signal)).toBe(0)
    await second.close()
  })

  it('session.close: a signal ends the wait for the peer; the close is done either way; no listener is left', async () => {
    const client = await WebTransportClient.connect(urlFor(server, '127.0.0.1'), { serverCertificateHashes: cert.serverCertificateHashes, engine: 'quinn' })
    cleanup.push(() => client.close())
    const first = await client.openSession('/echo')
    // Already aborted: no wait for the peer's end of the CONNECT stream, but the session is closed.
    const info = await first.close({ code: 4, reason: 'no wait', timeoutMs: 60_000, signal: AbortSignal.abort() })
    expect(info).toEqual({ code: 4, reason: 'no wait', remote: false })
    expect(first.isClosed).toBe(true)
    const second = await client.openSession('/echo')
    const ac = new AbortController()
    expect(await second.close({ code: 5, signal: ac.signal })).toMatchObject({ code: 5, remote: false })
    expect(listeners(ac.signal)).toBe(0)
    const third = await client.openSession('/echo')
    expect((await failure(() => third.close({ signal: 'no' as never }))).data).toEqual({ argument: 'signal' })
    await third.close()
  })
})
