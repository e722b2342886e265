import dgram from 'node:dgram'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { getEventListeners } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { stoqErrorOf, testPki, type TestPki } from '@stoq/compliance-tests'
import { Stoq, type Endpoint } from '../src/index.js'

/**
 * `signal` on the SDK's waiting calls: connect (pooled or not), probe, multiplex and
 * Multiplexer.send. An abort rejects with STOQ_ERR_ABORTED; a settled call leaves no listener.
 */

const listeners = (signal: AbortSignal): number => getEventListeners(signal, 'abort').length

const failure = stoqErrorOf

async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached')
    await new Promise((r) => setTimeout(r, 10))
  }
}

let pki: TestPki
let root: string
let server: Stoq
let ep: Endpoint
let client: Stoq
let hole: dgram.Socket
const target = (): string => `127.0.0.1:${ep.address.port}`

beforeAll(async () => {
  pki = await testPki()
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-sdk-abort-'))
  server = await Stoq.create('abort-server', { identity: { dir: path.join(root, 'server') } })
  ep = await server.listen({ host: '127.0.0.1', port: 0 }, { cert: pki.server.cert, key: pki.server.key })
  client = await Stoq.create('abort-client', { identity: { dir: path.join(root, 'client') }, endpoint: { host: '127.0.0.1' } })
  // A port that swallows every packet: a handshake to it never completes.
  hole = dgram.createSocket('udp4')
  await new Promise<void>((resolve) => hole.bind(0, '127.0.0.1', resolve))
})

afterAll(async () => {
  await client?.close()
  await server?.close()
  hole?.close()
  fs.rmSync(root, { recursive: true, force: true })
})

describe('Stoq.connect signal', () => {
  it('an already-aborted signal rejects at once, pooled or not', async () => {
    const ac = new AbortController()
    ac.abort('not now')
    for (const reuse of [true, false]) {
      const err = await failure(() => client.connect(target(), { pin: pki.server.fingerprint, reuse, signal: ac.signal }))
      expect(err).toMatchObject({ code: 'STOQ_ERR_ABORTED', data: { operation: 'connect' }, cause: 'not now' })
    }
    expect(listeners(ac.signal)).toBe(0)
  })

  it('reuse: false — an abort during the handshake rejects and closes the half-made connection', async () => {
    const ac = new AbortController()
    const before = client.stats().connections
    const connecting = client.connect(`127.0.0.1:${hole.address().port}`, { insecure: true, reuse: false, signal: ac.signal })
    await until(() => listeners(ac.signal) === 1)
    await until(() => client.stats().connections === before + 1)
    ac.abort()
    expect((await failure(() => connecting)).code).toBe('STOQ_ERR_ABORTED')
    await until(() => client.stats().connections === before)
    expect(listeners(ac.signal)).toBe(0)
  })

  it('pooled — an abort stops the wait', async () => {
    const ac = new AbortController()
    const connecting = client.connect(`127.0.0.1:${hole.address().port}`, { insecure: true, handshakeTimeoutMs: 2000, signal: ac.signal })
    await until(() => listeners(ac.signal) === 1)
    ac.abort('late')
    expect(await failure(() => connecting)).toMatchObject({ code: 'STOQ_ERR_ABORTED', cause: 'late' })
    expect(listeners(ac.signal)).toBe(0)
  })

  it('a signal that never aborts leaves no listener (connect, pooled reuse, probe, multiplex, send)', async () => {
    const ac = new AbortController()
    const signal = ac.signal
    const a = await client.connect(target(), { pin: pki.server.fingerprint, signal })
    const b = await client.connect(target(), { pin: pki.server.fingerprint, signal })
    expect(b).toBe(a)
    await client.connect(target(), { pin: pki.server.fingerprint, reuse: false, signal })
    await client.probe(target(), { pin: pki.server.fingerprint, bytes: 65536, signal })
    const mux = await client.multiplex(target(), { pin: pki.server.fingerprint, connections: 2, signal })
    expect(await mux.send('hello', { signal })).toBe(5)
    expect(listeners(signal)).toBe(0)
    await mux.close()
  })

  it('Multiplexer.send with an aborted signal rejects at once', async () => {
    const mux = await client.multiplex(target(), { pin: pki.server.fingerprint, connections: 1 })
    const ac = new AbortController()
    ac.abort('stop')
    expect(await failure(() => mux.send('x', { signal: ac.signal }))).toMatchObject({ code: 'STOQ_ERR_ABORTED', data: { operation: 'send' }, cause: 'stop' })
    await mux.close()
  })
})
