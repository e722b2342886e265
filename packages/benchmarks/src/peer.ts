/**
 * One side of a benchmark run, in its own process. Forked by the harness,
 * configured over IPC (see protocol.ts): the receiver listens, counts and
 * verifies; the sender connects and writes the pattern.
 */
import net from 'node:net'
import { createEndpoint, type Endpoint, type EndpointComponents, type QuicConnection } from '@stoq/transport-core'
import { dgramUdpIo, gsoUdpIo, workerUdpIo } from '@stoq/hwaccel'
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
    })
  }
}

async function tcpReceiver(o: ReceiverStart): Promise<void> {
  let taken = false
  const server = net.createServer((socket) => {
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
  })
  server.on('error', (err) => void fail(err))
  await new Promise<void>((resolve) => server.listen({ host: o.host, port: 0 }, resolve))
  await send({ type: 'listening', port: (server.address() as net.AddressInfo).port })
  await finished
  await send({ type: 'report' })
}

/** The UDP backend a case asks for (the transport's default otherwise). */
function components(spec: CaseSpec): Partial<EndpointComponents> {
  if (spec.udp === 'gso') return { udp: gsoUdpIo() }
  if (spec.udp === 'gro') return { udp: workerUdpIo() }
  if (spec.udp === 'dgram') return { udp: dgramUdpIo() }
  return {}
}

async function stoqReceiver(o: ReceiverStart): Promise<void> {
  const server = await createEndpoint({
    host: o.host,
    port: 0,
    server: { cert: o.cert, key: o.key },
    transport: { maxUdpPayloadSize: o.spec.maxUdpPayloadSize! },
    ...(o.spec.engine ? { engine: o.spec.engine } : {}),
    ...(o.socketBufferSize !== null ? { socketBufferSize: o.socketBufferSize } : {}),
  }, components(o.spec))
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
  const socket = net.connect({ host: o.host, port: o.port })
  socket.on('error', (err) => void fail(err))
  await new Promise<void>((resolve) => socket.once('connect', resolve))
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
  await send({ type: 'report', cpu })
}

async function stoqSender(o: SenderStart): Promise<void> {
  const transport = { maxUdpPayloadSize: o.spec.maxUdpPayloadSize! }
  const client: Endpoint = await createEndpoint({
    host: o.host,
    port: 0,
    transport,
    ...(o.spec.engine ? { engine: o.spec.engine } : {}),
    ...(o.socketBufferSize !== null ? { socketBufferSize: o.socketBufferSize } : {}),
  }, components(o.spec))
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
  await send({ type: 'report', cpu, connection, endpoint })
  await conn.close(0, 'done')
  await client.close()
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
      ? msg.spec.transport === 'tcp'
        ? tcpReceiver(msg)
        : stoqReceiver(msg)
      : msg.spec.transport === 'tcp'
        ? tcpSender(msg)
        : stoqSender(msg)
  run.then(
    () => process.exit(0),
    (err: unknown) => fail(err),
  )
})
