/**
 * Interop with a foreign HTTP/3 server that speaks first: quic-go's own http3.Server
 * (Debian's quic-go 0.29, through `stoq-interop-peer h3server` in interop/quic-go). As soon
 * as it accepts a connection it opens its control stream and sends SETTINGS, so that stream
 * reaches STOQ before the application has taken any incoming stream. STOQ must hold it until
 * the application takes it (`conn.accept()`), or a WebTransport client would wait for SETTINGS
 * that were lost. The peer is built (its Debian packages installed with apt) by
 * interop/quic-go/build.sh; when that fails the tests fail with its message, never skipped.
 */
import type { ChildProcess } from 'node:child_process'
import diagnostics from 'node:diagnostics_channel'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildQuicGoPeer, startQuicGoPeer, testPki, type TestPki } from '@stoq/compliance-tests'
import {
  FrameParser,
  SETTINGS_ENABLE_CONNECT_PROTOCOL,
  SETTINGS_ENABLE_WEBTRANSPORT,
  SETTINGS_H3_DATAGRAM_DRAFT04,
  SETTINGS_QPACK_BLOCKED_STREAMS,
  SETTINGS_QPACK_MAX_TABLE_CAPACITY,
  STREAM_TYPE_CONTROL,
  decodeFieldSection,
  decodeUniStreamPreface,
  encodeDataFrame,
  encodeFieldSection,
  encodeHeadersFrame,
  encodeSettingsFrame,
  encodeVarint,
  validateResponseHeaders,
  type FieldLine,
  type Settings,
} from '@stoq/h3'
import { DIAGNOSTICS_CHANNELS, createEndpoint, type Endpoint, type QuicConnection, type QuicStream } from '@stoq/transport-core'
import { StoqWebTransportError, connectWebTransport } from '../src/index.js'
import { pattern, sha256Hex } from '@stoq/compliance-tests'

/** The exact body quic-go's h3server answers GET /hello with (interop/quic-go/h3server.go). */
const HELLO_BODY = 'hello from quic-go http3\n'
/** An extra setting the test asks the server to advertise, to check the SETTINGS decode exactly. */
const EXTRA_SETTING_ID = 0x5354
const EXTRA_SETTING_VALUE = 12345

const hasIpv6Loopback = Object.values(os.networkInterfaces())
  .flat()
  .some((a) => a?.address === '::1')

let pki: TestPki
let dir: string
const children: ChildProcess[] = []

beforeAll(async () => {
  await buildQuicGoPeer()
  pki = await testPki()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-h3-interop-'))
  fs.writeFileSync(path.join(dir, 'cert.pem'), pki.server.cert)
  fs.writeFileSync(path.join(dir, 'key.pem'), pki.server.key)
}, 600_000)

afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

function startH3Server(listen: string): Promise<number> {
  const args = [
    '--listen',
    listen,
    '--cert',
    path.join(dir, 'cert.pem'),
    '--key',
    path.join(dir, 'key.pem'),
    '--h3-datagrams',
    '--setting',
    `${EXTRA_SETTING_ID}=${EXTRA_SETTING_VALUE}`,
  ]
  return startQuicGoPeer('h3server', args, children)
}

/** Peer streams STOQ accepted, per connection, as the diagnostics channel reports them. */
const peerStreams = new Map<QuicConnection, QuicStream[]>()
const streamWatchers = new Set<() => void>()
function onStreamOpen(message: unknown): void {
  const { connection, stream, local } = message as { connection: QuicConnection; stream: QuicStream; local: boolean }
  if (local) return
  const list = peerStreams.get(connection) ?? []
  list.push(stream)
  peerStreams.set(connection, list)
  for (const w of streamWatchers) w()
}

/** Resolves once STOQ has accepted `n` streams the peer opened on `conn`. */
function peerOpened(conn: QuicConnection, n: number): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if ((peerStreams.get(conn)?.length ?? 0) < n) return
      streamWatchers.delete(check)
      resolve()
    }
    streamWatchers.add(check)
    check()
  })
}

beforeAll(() => diagnostics.subscribe(DIAGNOSTICS_CHANNELS.streamOpen, onStreamOpen))
afterAll(() => diagnostics.unsubscribe(DIAGNOSTICS_CHANNELS.streamOpen, onStreamOpen))

/** Reads the server's control stream up to its first frame, which must be SETTINGS. */
async function readControlSettings(stream: QuicStream): Promise<{ streamType: string; settings: Settings }> {
  const reader = stream.readable!.getReader()
  let buf = new Uint8Array(0)
  let preface: ReturnType<typeof decodeUniStreamPreface> = null
  const parser = new FrameParser({ streamKind: 'control', receiver: 'client' })
  for (;;) {
    const { value, done } = await reader.read()
    if (done) throw new Error('the control stream ended before SETTINGS')
    if (preface === null) {
      const joined = new Uint8Array(buf.length + value.length)
      joined.set(buf)
      joined.set(value, buf.length)
      buf = joined
      preface = decodeUniStreamPreface(buf)
      if (preface === null) continue
      const events = parser.push(buf.subarray(preface.length))
      const settings = events.find((e) => e.kind === 'settings')
      if (settings?.kind === 'settings') {
        reader.releaseLock()
        return { streamType: preface.preface.kind, settings: settings.settings }
      }
      continue
    }
    const settings = parser.push(value).find((e) => e.kind === 'settings')
    if (settings?.kind === 'settings') {
      reader.releaseLock()
      return { streamType: preface.preface.kind, settings: settings.settings }
    }
  }
}

interface Response {
  status: number
  fields: FieldLine[]
  body: Uint8Array
}

/** One HTTP/3 request on a new bidirectional stream: HEADERS (QPACK, static table), DATA, FIN. */
async function request(conn: QuicConnection, authority: string, method: string, pathname: string, body?: Uint8Array): Promise<Response> {
  const stream = conn.openStream()
  const fields: FieldLine[] = [
    [':method', method],
    [':scheme', 'https'],
    [':authority', authority],
    [':path', pathname],
  ]
  if (body !== undefined) fields.push(['content-length', String(body.length)])
  const sending = (async () => {
    const writer = stream.writable!.getWriter()
    await writer.write(encodeHeadersFrame(encodeFieldSection(fields)))
    if (body !== undefined) {
      for (let at = 0; at < body.length; at += 16 * 1024) await writer.write(encodeDataFrame(body.subarray(at, at + 16 * 1024)))
    }
    await writer.close()
  })()

  const parser = new FrameParser({ streamKind: 'request', receiver: 'client' })
  let head: { status: number; fields: FieldLine[] } | null = null
  const chunks: Uint8Array[] = []
  for await (const chunk of stream.readable!) {
    for (const ev of parser.push(chunk)) {
      if (ev.kind === 'headers' && head === null) head = validateResponseHeaders(decodeFieldSection(ev.fieldSection))
      else if (ev.kind === 'data') chunks.push(ev.payload)
    }
  }
  parser.end()
  await sending
  if (head === null) throw new Error(`no response HEADERS for ${method} ${pathname}`)
  return { ...head, body: Buffer.concat(chunks) }
}

for (const engine of ['quinn', 'quiche'] as const) {
  for (const family of ['127.0.0.1', '::1'] as const) {
    const v6Skip = family === '::1' && !hasIpv6Loopback
    // Skipped only when this machine has no IPv6 loopback address (::1) to bind.
    describe.skipIf(v6Skip)(`STOQ (${engine}) against quic-go's HTTP/3 server over ${family}${v6Skip ? ' (skipped: no ::1 on this machine)' : ''}`, () => {
      let port: number
      let client: Endpoint
      const url = (): string => `https://${family === '::1' ? '[::1]' : '127.0.0.1'}:${port}/`

      beforeAll(async () => {
        port = await startH3Server(family === '::1' ? '[::1]:0' : '127.0.0.1:0')
        client = await createEndpoint({ host: family, engine })
      })
      afterAll(async () => {
        await client?.close()
      })

      it('keeps the control stream the server sent first, reads its SETTINGS, then serves GET and POST', async () => {
        const conn = await client.connect({ host: family, port, alpn: ['h3'], ca: pki.ca, serverName: 'localhost' })
        expect(conn.alpn).toBe('h3')
        // Nobody takes incoming streams yet: wait until STOQ has accepted the server's control
        // stream, then a little longer, so it arrived and sat with nobody listening.
        await peerOpened(conn, 1)
        await new Promise((r) => setTimeout(r, 200))
        expect(conn.listenerCount('stream')).toBe(0)

        const control = await conn.accept({ timeoutMs: 5000 })
        expect(control.bidirectional).toBe(false)
        expect(control).toBe(peerStreams.get(conn)![0])
        const { streamType, settings } = await readControlSettings(control)
        expect(streamType).toBe('control')
        expect(new Map(settings)).toEqual(
          new Map([
            [SETTINGS_H3_DATAGRAM_DRAFT04, 1],
            [EXTRA_SETTING_ID, EXTRA_SETTING_VALUE],
          ]),
        )
        // quic-go 0.29 offers neither extended CONNECT nor WebTransport.
        expect(settings.has(SETTINGS_ENABLE_CONNECT_PROTOCOL)).toBe(false)
        expect(settings.has(SETTINGS_ENABLE_WEBTRANSPORT)).toBe(false)

        // Our control stream, with SETTINGS: no dynamic QPACK table, HTTP/3 datagrams (the draft
        // codepoint quic-go knows; it checks them against the QUIC transport parameter).
        const ours = conn.openStream({ unidirectional: true }).writable!.getWriter()
        await ours.write(
          Buffer.concat([
            encodeVarint(STREAM_TYPE_CONTROL),
            encodeSettingsFrame([
              [SETTINGS_QPACK_MAX_TABLE_CAPACITY, 0],
              [SETTINGS_QPACK_BLOCKED_STREAMS, 0],
              [SETTINGS_H3_DATAGRAM_DRAFT04, 1],
            ]),
          ]),
        )

        const authority = `localhost:${port}`
        const hello = await request(conn, authority, 'GET', '/hello')
        expect(hello.status).toBe(200)
        expect(Buffer.from(hello.body).toString()).toBe(HELLO_BODY)
        expect(hello.fields).toContainEqual(['content-length', String(HELLO_BODY.length)])

        const payload = pattern(384 * 1024, 7)
        const echo = await request(conn, authority, 'POST', '/echo', payload)
        expect(echo.status).toBe(200)
        expect(echo.body.length).toBe(payload.length)
        expect(sha256Hex(echo.body)).toBe(sha256Hex(payload))

        const missing = await request(conn, authority, 'GET', '/nothing-here')
        expect(missing.status).toBe(404)

        // The server opened no other stream, and the connection is still healthy.
        expect(peerStreams.get(conn)).toHaveLength(1)
        expect(conn.isClosed).toBe(false)
        await conn.close(0, 'done')
      })

      it('connectWebTransport() fails with a typed error saying the server lacks WebTransport and extended CONNECT', async () => {
        let failure: unknown
        try {
          await connectWebTransport(url(), { ca: pki.ca, serverName: 'localhost', engine, timeoutMs: 10_000 })
        } catch (err) {
          failure = err
        }
        expect(failure).toBeInstanceOf(StoqWebTransportError)
        const err = failure as StoqWebTransportError
        expect(err.kind).toBe('unsupported')
        expect(err.code).toBe('STOQ_ERR_PROTOCOL')
        expect(err.message).toMatch(/WebTransport/)
        expect(err.message).toMatch(/extended CONNECT/)
        // It read the server's SETTINGS: not the error of SETTINGS that never came.
        expect(err.message).not.toMatch(/no HTTP\/3 SETTINGS|before HTTP\/3 SETTINGS/)
        expect(err.data).toEqual({ kind: 'unsupported', missingSettings: ['SETTINGS_ENABLE_CONNECT_PROTOCOL', 'SETTINGS_ENABLE_WEBTRANSPORT'] })
      })
    })
  }
}
