/**
 * One side of a benchmark run, in its own process. Forked by the harness,
 * configured over IPC (see protocol.ts): the receiver listens, counts and
 * verifies; the sender connects and writes the pattern.
 */
import net from 'node:net'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import tls from 'node:tls'
import type { ComponentLogger, Logger, MultiaddrConnection, Stream, StreamMuxer, Transport, Upgrader } from '@libp2p/interface'
import { createEndpoint, type Endpoint, type QuicConnection } from '@stoq/transport-core'
import { createMetricsRegistry, toPrometheusText, type MetricsRegistry } from '@stoq/monitoring'
import { PatternVerifier, sendPattern } from './pattern.js'
import { cpuFigures, type CaseSpec, type FromPeer, type ReceiverStart, type SenderStart, type ToPeer } from './protocol.js'

/** How often a peer tells the harness how far it got (for stall reports). */
const PROGRESS_INTERVAL_MS = 1000

function send(msg: FromPeer): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) {
      resolve()
      return
    }
    process.send(msg, undefined, {}, () => resolve())
  })
}

async function fail(err: unknown): Promise<never> {
  const e = err as { message?: string; code?: unknown; stack?: string }
  await send({ type: 'error', message: e?.message ?? String(err), ...(typeof e?.code === 'string' ? { code: e.code } : {}) })
  process.exit(1)
}

/**
 * This process's event-loop delay while it moves data (10 ms resolution): speed must not come
 * from starving timers and other work. Started by the first byte received or written.
 */
let loopDelay: IntervalHistogram | null = null
function startLoopDelay(): void {
  if (loopDelay !== null) return
  loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
}
function loopP99Ms(): number {
  if (loopDelay === null) return 0
  loopDelay.disable()
  return loopDelay.percentile(99) / 1e6
}

/** Resolves with the next `finish` from the harness. */
let onFinish: (() => void) | null = null
const finished = new Promise<void>((resolve) => {
  onFinish = resolve
})

// ---------------------------------------------------------------------------
// Receiver

/** Counts and verifies one stream; reports figures from first to last byte. */
class Receipt {
  private readonly verifier: PatternVerifier
  private firstAt = -1
  private lastAt = -1
  private cpuAtFirst: NodeJS.CpuUsage | null = null
  private cpuFirstToLast: NodeJS.CpuUsage | null = null
  private readonly progress: NodeJS.Timeout

  constructor(bytes: number) {
    this.verifier = new PatternVerifier(bytes)
    this.progress = setInterval(() => void send({ type: 'progress', bytes: this.verifier.verified }), PROGRESS_INTERVAL_MS)
    this.progress.unref()
  }

  chunk(data: Uint8Array): void {
    if (this.firstAt < 0) {
      this.firstAt = performance.now()
      this.cpuAtFirst = process.cpuUsage()
      startLoopDelay()
    }
    this.verifier.update(data)
    if (this.verifier.verified === this.verifier.total) {
      this.lastAt = performance.now()
      this.cpuFirstToLast = process.cpuUsage(this.cpuAtFirst!)
    }
  }

  /** The stream ended: verify the length and report. */
  async end(): Promise<void> {
    clearInterval(this.progress)
    this.verifier.finish()
    const wallMs = this.lastAt - this.firstAt
    await send({
      type: 'received',
      bytes: this.verifier.total,
      firstToLastMs: wallMs,
      cpu: cpuFigures(wallMs, this.cpuFirstToLast!),
      loopP99Ms: loopP99Ms(),
    })
  }
}

async function tcpReceiver(o: ReceiverStart): Promise<void> {
  let taken = false
  const onSocket = (socket: net.Socket): void => {
    if (taken) {
      socket.destroy()
      return
    }
    taken = true
    const receipt = new Receipt(o.bytes)
    socket.on('data', (chunk: Buffer) => {
      try {
        receipt.chunk(chunk)
      } catch (err) {
        void fail(err)
      }
    })
    socket.on('end', () => {
      receipt.end().catch(fail)
    })
    socket.on('error', (err) => void fail(err))
  }
  const server =
    o.spec.transport === 'tls'
      ? tls.createServer({ cert: o.cert, key: o.key, minVersion: 'TLSv1.3', ciphers: 'TLS_AES_256_GCM_SHA384' }, onSocket)
      : net.createServer(onSocket)
  server.on('error', (err) => void fail(err))
  await new Promise<void>((resolve) => server.listen({ host: o.host, port: 0 }, resolve))
  await send({ type: 'listening', port: (server.address() as net.AddressInfo).port })
  await finished
  await send({ type: 'report' })
}

/** The UDP backend a case asks for, as the endpoint's own option (so it wires it as in production). */
/** A metrics registry for the endpoint, scraped as Prometheus text every second (the overhead case). */
function metricsComponents(spec: CaseSpec): { components: { metrics?: MetricsRegistry }; stop: () => void } {
  if (!spec.metrics) return { components: {}, stop: noLog }
  const registry = createMetricsRegistry()
  const timer = setInterval(() => void toPrometheusText(registry), 1000)
  return { components: { metrics: registry }, stop: () => clearInterval(timer) }
}

function backendOption(spec: CaseSpec): { udpBackend?: 'dgram' | 'gso' | 'gro' | 'auto'; zeroCopySend?: boolean } {
  return { ...(spec.udp ? { udpBackend: spec.udp } : {}), ...(spec.zeroCopy !== undefined ? { zeroCopySend: spec.zeroCopy } : {}) }
}

async function stoqReceiver(o: ReceiverStart): Promise<void> {
  const metrics = metricsComponents(o.spec)
  const server = await createEndpoint(
    {
      host: o.host,
      port: 0,
      server: { cert: o.cert, key: o.key },
      transport: { maxUdpPayloadSize: o.spec.maxUdpPayloadSize! },
      ...(o.spec.engine ? { engine: o.spec.engine } : {}),
      ...backendOption(o.spec),
      ...(o.socketBufferSize !== null ? { socketBufferSize: o.socketBufferSize } : {}),
    },
    metrics.components,
  )
  server.on('error', (err) => void fail(err))
  let conn: QuicConnection | null = null
  server.on('connection', (c) => {
    if (conn !== null) {
      void c.close(1, 'one connection per run')
      return
    }
    conn = c
    c.on('stream', (stream) => {
      const receipt = new Receipt(o.bytes)
      void (async () => {
        const reader = stream.readable!.getReader()
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          receipt.chunk(value)
        }
        await receipt.end()
      })().catch(fail)
    })
  })
  await send({ type: 'listening', port: server.address.port })
  await finished
  const connection = conn === null ? undefined : (conn as QuicConnection).stats()
  await send({ type: 'report', connection, endpoint: server.stats() })
  metrics.stop()
  await server.close()
}

// ---------------------------------------------------------------------------
// Sender

/** Measures the sender's CPU from its first write until the harness says the run is over. */
class SendClock {
  private startAt = -1
  private cpuAtStart: NodeJS.CpuUsage | null = null

  start(): void {
    this.startAt = performance.now()
    this.cpuAtStart = process.cpuUsage()
    startLoopDelay()
  }

  figures(): ReturnType<typeof cpuFigures> {
    return cpuFigures(performance.now() - this.startAt, process.cpuUsage(this.cpuAtStart!))
  }
}

function progressReporter(): { update: (bytes: number) => void; stop: () => void } {
  let bytes = 0
  const t = setInterval(() => void send({ type: 'progress', bytes }), PROGRESS_INTERVAL_MS)
  t.unref()
  return {
    update: (n) => {
      bytes = n
    },
    stop: () => clearInterval(t),
  }
}

async function tcpSender(o: SenderStart): Promise<void> {
  const socket =
    o.spec.transport === 'tls'
      ? tls.connect({ host: o.host, port: o.port, ca: o.cert, servername: 'localhost', minVersion: 'TLSv1.3', ciphers: 'TLS_AES_256_GCM_SHA384' })
      : net.connect({ host: o.host, port: o.port })
  socket.on('error', (err) => void fail(err))
  await new Promise<void>((resolve) => socket.once(o.spec.transport === 'tls' ? 'secureConnect' : 'connect', resolve))
  const clock = new SendClock()
  const progress = progressReporter()
  clock.start()
  await sendPattern(
    o.bytes,
    (chunk) =>
      new Promise<void>((resolve, reject) => {
        socket.write(chunk, (err) => (err ? reject(err) : resolve()))
      }),
    progress.update,
    o.copyWrites,
  )
  await new Promise<void>((resolve) => socket.end(resolve))
  progress.stop()
  await send({ type: 'sent', bytes: o.bytes })
  await finished
  const cpu = clock.figures()
  socket.destroy()
  await send({ type: 'report', cpu, loopP99Ms: loopP99Ms() })
}

async function stoqSender(o: SenderStart): Promise<void> {
  const transport = { maxUdpPayloadSize: o.spec.maxUdpPayloadSize! }
  const metrics = metricsComponents(o.spec)
  const client: Endpoint = await createEndpoint(
    {
      host: o.host,
      port: 0,
      transport,
      ...(o.spec.engine ? { engine: o.spec.engine } : {}),
      ...backendOption(o.spec),
      ...(o.socketBufferSize !== null ? { socketBufferSize: o.socketBufferSize } : {}),
    },
    metrics.components,
  )
  client.on('error', (err) => void fail(err))
  const conn = await client.connect({ host: o.host, port: o.port, pin: o.pin, serverName: 'localhost' })
  const stream = conn.openStream()
  const writer = stream.writable!.getWriter()
  const clock = new SendClock()
  const progress = progressReporter()
  clock.start()
  await sendPattern(o.bytes, (chunk) => writer.write(chunk), progress.update, o.copyWrites)
  await writer.close()
  progress.stop()
  await send({ type: 'sent', bytes: o.bytes })
  await finished
  const cpu = clock.figures()
  const connection = conn.stats()
  const endpoint = client.stats()
  await send({ type: 'report', cpu, loopP99Ms: loopP99Ms(), connection, endpoint })
  await conn.close(0, 'done')
  metrics.stop()
  await client.close()
}

// ---------------------------------------------------------------------------
// @chainsafe/libp2p-quic, for comparison: its libp2p transport driven directly,
// with no libp2p node around it. QUIC brings its own encryption (TLS with
// libp2p peer certificates) and streams, so the "upgrade" a libp2p node would
// do is only wrapping the connection in the transport's own stream muxer; the
// minimal upgraders below do that and nothing else. There is no protocol
// negotiation (multistream-select): the stream carries the pattern alone.
// The packages are imported when a case asks for them, so other cases never
// load them.

/** Does nothing: the silent logger below, and stop() where there is nothing to stop. */
function noLog(): void {
  // Nothing, on purpose.
}

/** Logger for the transport: silent, as libp2p's default one is unless DEBUG is set. */
const silentLog: Logger = Object.assign(() => noLog(), {
  error: noLog,
  trace: noLog,
  enabled: false,
  newScope: (): Logger => silentLog,
})
const silentLogger: ComponentLogger = { forComponent: () => silentLog }

/** A QUIC transport with its default options (what a libp2p node gets) and a fresh Ed25519 identity. */
async function libp2pQuicTransport(): Promise<Transport> {
  const [{ quic }, { generateKeyPair }] = await Promise.all([import('@chainsafe/libp2p-quic'), import('@libp2p/crypto/keys')])
  return quic()({ logger: silentLogger, privateKey: await generateKeyPair('Ed25519') })
}

/** The connection's streams come from `muxer`; when it closes, stop the muxer (as libp2p's upgrader would). */
function libp2pMuxerFor(maConn: MultiaddrConnection, muxer: StreamMuxer): void {
  const events = maConn as unknown as Partial<EventTarget>
  events.addEventListener?.('close', () => muxer.abort(new Error('connection closed')), { once: true })
}

/**
 * Turns `write(chunk)` calls into the async iterable a libp2p stream's `sink`
 * pulls from. A write resolves when the sink comes back for the next chunk,
 * which it does only once the stream finished sending this one, so the buffer
 * may then be reused; until then it waits here. That is the backpressure:
 * sendPattern keeps at most SEND_DEPTH writes outstanding.
 */
class SinkFeed {
  private readonly queue: { chunk: Uint8Array; taken: () => void }[] = []
  private wake: (() => void) | null = null
  private ended = false

  write(chunk: Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      this.queue.push({ chunk, taken: resolve })
      this.notify()
    })
  }

  /** No more writes: the source ends once the queue is drained. */
  end(): void {
    this.ended = true
    this.notify()
  }

  private notify(): void {
    const wake = this.wake
    this.wake = null
    wake?.()
  }

  async *source(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const next = this.queue.shift()
      if (next === undefined) {
        if (this.ended) return
        await new Promise<void>((resolve) => {
          this.wake = resolve
        })
        continue
      }
      yield next.chunk
      next.taken()
    }
  }
}

async function libp2pQuicReceiver(o: ReceiverStart): Promise<void> {
  const { multiaddr } = await import('@multiformats/multiaddr')
  const transport = await libp2pQuicTransport()
  let taken = false
  const upgrader = {
    async upgradeInbound(maConn, opts) {
      if (taken || !opts?.muxerFactory) {
        await maConn.close()
        return
      }
      taken = true
      let streams = 0
      const muxer = opts.muxerFactory.createStreamMuxer({
        direction: 'inbound',
        onIncomingStream: (stream: Stream) => {
          if (streams++ > 0) {
            stream.abort(new Error('one stream per run'))
            return
          }
          const receipt = new Receipt(o.bytes)
          void (async () => {
            for await (const list of stream.source) {
              for (const chunk of list) receipt.chunk(chunk)
            }
            await receipt.end()
          })().catch(fail)
        },
      })
      libp2pMuxerFor(maConn, muxer)
    },
  } as Partial<Upgrader> as Upgrader
  const listener = transport.createListener({ upgrader })
  await listener.listen(multiaddr(`/${net.isIPv6(o.host) ? 'ip6' : 'ip4'}/${o.host}/udp/0/quic-v1`))
  const addr = listener.getAddrs()[0]
  if (addr === undefined) throw new Error('libp2p-quic listener has no address')
  await send({ type: 'listening', port: addr.toOptions().port, dialInfo: addr.toString() })
  await finished
  await send({ type: 'report' })
  await listener.close()
}

async function libp2pQuicSender(o: SenderStart): Promise<void> {
  if (o.dialInfo === undefined) throw new Error('libp2p-quic sender: no dialInfo (listen multiaddr) from the receiver')
  const { multiaddr } = await import('@multiformats/multiaddr')
  const transport = await libp2pQuicTransport()
  let dialed: { maConn: MultiaddrConnection; muxer: StreamMuxer } | null = null
  const upgrader = {
    async upgradeOutbound(maConn, opts) {
      if (!opts?.muxerFactory) throw new Error('libp2p-quic: the transport offered no stream muxer')
      const muxer = opts.muxerFactory.createStreamMuxer({ direction: 'outbound' })
      libp2pMuxerFor(maConn, muxer)
      dialed = { maConn, muxer }
      // dial() only hands this back; nothing here uses libp2p's Connection.
      return {} as Awaited<ReturnType<Upgrader['upgradeOutbound']>>
    },
  } as Partial<Upgrader> as Upgrader
  await transport.dial(multiaddr(o.dialInfo), { upgrader, signal: AbortSignal.timeout(30_000) })
  const { maConn, muxer } = dialed as unknown as { maConn: MultiaddrConnection; muxer: StreamMuxer }
  const stream = await muxer.newStream()
  const feed = new SinkFeed()
  const clock = new SendClock()
  const progress = progressReporter()
  clock.start()
  const sinking = stream.sink(feed.source())
  // A sink that fails leaves writes pending: report it rather than hang.
  sinking.catch(fail)
  await sendPattern(o.bytes, (chunk) => feed.write(chunk), progress.update, o.copyWrites)
  feed.end()
  // Resolves once the last chunk was sent and the stream's write side finished (FIN).
  await sinking
  progress.stop()
  await send({ type: 'sent', bytes: o.bytes })
  await finished
  const cpu = clock.figures()
  await send({ type: 'report', cpu, loopP99Ms: loopP99Ms() })
  muxer.abort(new Error('run over'))
  await maConn.close()
}

// ---------------------------------------------------------------------------

process.on('disconnect', () => {
  // The harness is gone: never linger.
  process.exit(2)
})
process.on('uncaughtException', (err) => void fail(err))
process.on('unhandledRejection', (err) => void fail(err))

process.on('message', (msg: ToPeer) => {
  if (msg.type === 'finish') {
    onFinish?.()
    return
  }
  const run =
    msg.role === 'receiver'
      ? msg.spec.transport === 'tcp' || msg.spec.transport === 'tls'
        ? tcpReceiver(msg)
        : msg.spec.transport === 'libp2p-quic'
          ? libp2pQuicReceiver(msg)
          : stoqReceiver(msg)
      : msg.spec.transport === 'tcp' || msg.spec.transport === 'tls'
        ? tcpSender(msg)
        : msg.spec.transport === 'libp2p-quic'
          ? libp2pQuicSender(msg)
          : stoqSender(msg)
  run.then(
    () => process.exit(0),
    (err: unknown) => fail(err),
  )
})
