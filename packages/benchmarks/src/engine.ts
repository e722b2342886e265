/**
 * The engines' own ceiling, without sockets: a client and a server engine in one process,
 * packets shuttled in memory, one stream, every byte read back and checked. It says what
 * each QuicEngine costs per packet (JS and native included), so the socket benchmarks can
 * be read against it.
 *
 *   node dist/engine.js [--bytes 256MiB] [--runs 3] [--engines quiche,quinn,quinn-slots] [--sizes 1350,16383] [--json FILE]
 *
 * `quinn-slots`: the quinn engine building packets in its own transmit slots
 * (`transmitSlots`, what the gro backend sends from in place) instead of copying them into the
 * caller's buffer; against `quinn` in the same run it shows what that copy costs.
 *
 * "2-process ceiling" = bytes / max(time in the sender's calls, time in the receiver's
 * calls): what two processes could reach at best if I/O were free.
 */
import fs from 'node:fs'
import os from 'node:os'
import { performance } from 'node:perf_hooks'
import { QuicheEngine } from '@stoq/engine-quiche'
import {
  QuinnEngine,
  DEFAULT_TRANSPORT,
  type EngineCloseInfo,
  type EngineEventSink,
  type QuicEngine,
  type SocketAddress,
  type StreamRecvError,
  type StreamRecvResult,
  type TransmitBatch,
} from '@stoq/transport-core'
import { makeIdentity } from './pki.js'

type EngineName = 'quiche' | 'quinn' | 'quinn-slots'

interface Options {
  bytes: number
  runs: number
  engines: EngineName[]
  sizes: number[]
  json: string | null
}

function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/i.exec(s)
  if (!m) throw new Error(`not a size: ${s}`)
  const unit = (m[2] ?? 'B').toLowerCase()
  const mul = unit === 'gib' ? 2 ** 30 : unit === 'mib' ? 2 ** 20 : unit === 'kib' ? 2 ** 10 : 1
  return Math.round(Number(m[1]) * mul)
}

function parseArgs(argv: string[]): Options {
  const o: Options = { bytes: 256 * 2 ** 20, runs: 3, engines: ['quiche', 'quinn'], sizes: [1350, 16383], json: null }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const v = (): string => {
      const x = argv[++i]
      if (x === undefined) throw new Error(`${a} needs a value`)
      return x
    }
    if (a === '--bytes') o.bytes = parseBytes(v())
    else if (a === '--runs') o.runs = Math.max(1, Number(v()))
    else if (a === '--engines') o.engines = v().split(',') as Options['engines']
    else if (a === '--sizes') o.sizes = v().split(',').map(Number)
    else if (a === '--json') o.json = v()
    else if (a === '--help') {
      console.log('node dist/engine.js [--bytes 256MiB] [--runs 3] [--engines quiche,quinn,quinn-slots] [--sizes 1350,16383] [--json FILE]')
      process.exit(0)
    } else throw new Error(`unknown option ${a}`)
  }
  return o
}

const SERVER: SocketAddress = Object.freeze({ address: '127.0.0.1', port: 4433, family: 'IPv4' })
const CLIENT: SocketAddress = Object.freeze({ address: '127.0.0.1', port: 50000, family: 'IPv4' })

class Sink implements EngineEventSink {
  incoming = -1
  established = false
  readable = new Set<number>()
  writable = false
  closed: EngineCloseInfo | null = null
  onIncoming(conn: number): void {
    this.incoming = conn
  }
  onEstablished(): void {
    this.established = true
  }
  onStreamReadable(_conn: number, id: number): void {
    this.readable.add(id)
  }
  onStreamWritable(): void {
    this.writable = true
  }
  onDatagramReadable(): void {
    // The benchmarks send no datagrams.
  }
  onClosed(_conn: number, info: EngineCloseInfo): void {
    this.closed = info
  }
}

interface RunResult {
  engine: string
  size: number
  gbpsOneCore: number
  sendUsPerPacket: number
  recvUsPerPacket: number
  twoProcessCeilingGbps: number
  packets: number
}

function makeEngine(name: EngineName, size: number): QuicEngine {
  const transport = { ...DEFAULT_TRANSPORT, maxUdpPayloadSize: size }
  if (name === 'quiche') return new QuicheEngine({ transport })
  const engine = new QuinnEngine({ transport })
  if (name === 'quinn-slots' && engine.transmitSlots(1, 65536) === null) throw new Error('quinn-slots: the engine gave no transmit slots')
  return engine
}

async function runOnce(name: EngineName, size: number, bytes: number, id: { cert: string; key: string }): Promise<RunResult> {
  const enc = new TextEncoder()
  const server = makeEngine(name, size)
  const client = makeEngine(name, size)
  try {
    server.listen({
      identity: { cert: enc.encode(id.cert), key: enc.encode(id.key) },
      alpn: ['stoq/1'],
      retry: false,
      maxConnections: 10,
      statelessReset: true,
    })
    const cc = client.connect({ peer: SERVER, serverName: 'localhost', alpn: ['stoq/1'], verifyPeer: false }, CLIENT)
    const s = new Sink()
    const c = new Sink()
    const batch: TransmitBatch = { buffer: new Uint8Array(65536), lengths: new Uint32Array(64), count: 0, bytes: 0, peer: null }
    const maxPackets = Math.max(1, Math.min(64, Math.floor(65536 / size)))
    let sendMs = 0
    let recvMs = 0
    let packets = 0
    // Move everything `from` has to send into `to`; time each side's calls.
    const move = (from: QuicEngine, to: QuicEngine, src: SocketAddress, dst: SocketAddress, data: boolean): number => {
      let n = 0
      for (;;) {
        if (name === 'quinn-slots') batch.slot = 0
        const t0 = performance.now()
        const ok = from.pollTransmit(batch, maxPackets)
        const t1 = performance.now()
        if (data) sendMs += t1 - t0
        else recvMs += t1 - t0
        if (!ok) break
        // Feed equal-size runs as one GRO buffer, as the gro backend does.
        let off = 0
        let i = 0
        while (i < batch.count) {
          const seg = batch.lengths[i]!
          let j = i
          while (j < batch.count && batch.lengths[j] === seg) j++
          const t2 = performance.now()
          to.receive(batch.buffer.subarray(off, off + seg * (j - i)), seg, src, dst)
          const t3 = performance.now()
          if (data) recvMs += t3 - t2
          else sendMs += t3 - t2
          off += seg * (j - i)
          i = j
        }
        n += batch.count
      }
      return n
    }
    const runTimers = (): void => {
      for (const e of [client, server]) if (e.nextTimeout() === 0) e.handleTimeout()
    }
    for (let r = 0; r < 100 && !(c.established && s.established); r++) {
      move(client, server, CLIENT, SERVER, true)
      server.drainEvents(s)
      move(server, client, SERVER, CLIENT, false)
      client.drainEvents(c)
    }
    if (!c.established) throw new Error(`${name}: handshake did not complete in memory`)
    const sid = client.openStream(cc, true)
    const chunk = new Uint8Array(65536)
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7) & 0xff
    const out = new Uint8Array(1 << 20)
    const res: StreamRecvResult & StreamRecvError = { bytes: 0, fin: false, resetCode: -1 }
    let sent = 0
    let received = 0
    let fin = false
    const start = performance.now()
    let idle = 0
    while (!fin) {
      let progress = false
      // Sender: queue as much as the engine takes.
      while (sent < bytes) {
        const at = sent % chunk.length
        const want = Math.min(chunk.length - at, bytes - sent)
        const t0 = performance.now()
        const n = client.streamSend(cc, sid, chunk.subarray(at, at + want), sent + want >= bytes)
        sendMs += performance.now() - t0
        if (n <= 0) break
        sent += n
        progress = true
        if (n < want) break
      }
      const a = move(client, server, CLIENT, SERVER, true)
      let t0 = performance.now()
      server.drainEvents(s)
      for (const id of s.readable) {
        while (server.streamRecv(s.incoming, id, out, res)) {
          for (let k = 0; k < res.bytes; k += 4096) {
            if (out[k] !== ((((received + k) % 65536) * 7) & 0xff)) throw new Error(`${name}: byte ${received + k} corrupt`)
          }
          received += res.bytes
          if (res.fin) fin = true
          if (res.bytes === 0 && !res.fin) break
        }
      }
      s.readable.clear()
      recvMs += performance.now() - t0
      const b = move(server, client, SERVER, CLIENT, false)
      t0 = performance.now()
      client.drainEvents(c)
      sendMs += performance.now() - t0
      packets += a
      if (a > 0 || b > 0 || progress) idle = 0
      else {
        // Pacing or ACK-delay timers: run them (both engines expose them the same way).
        runTimers()
        const wait = Math.min(...[client.nextTimeout(), server.nextTimeout()].filter((x) => x >= 0), 5)
        if (wait > 0) await new Promise((r) => setTimeout(r, wait))
        client.handleTimeout()
        server.handleTimeout()
        if (++idle > 2000) throw new Error(`${name}: transfer stalled at ${received} bytes`)
      }
    }
    const wall = performance.now() - start
    if (received !== bytes) throw new Error(`${name}: received ${received} of ${bytes} bytes`)
    const bits = bytes * 8
    return {
      engine: name,
      size,
      gbpsOneCore: bits / (wall / 1000) / 1e9,
      sendUsPerPacket: (sendMs * 1000) / packets,
      recvUsPerPacket: (recvMs * 1000) / packets,
      twoProcessCeilingGbps: bits / (Math.max(sendMs, recvMs) / 1000) / 1e9,
      packets,
    }
  } finally {
    client.destroy()
    server.destroy()
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

const o = parseArgs(process.argv.slice(2))
const id = await makeIdentity()
const results: RunResult[] = []
for (let r = 0; r < o.runs; r++) {
  for (const size of o.sizes) {
    for (const engine of o.engines) {
      const res = await runOnce(engine, size, o.bytes, id)
      results.push(res)
      console.log(
        `${engine} ${size} B run ${r + 1}/${o.runs}: ${res.gbpsOneCore.toFixed(2)} Gbps on one core, send ${res.sendUsPerPacket.toFixed(2)} µs/pkt, receive ${res.recvUsPerPacket.toFixed(2)} µs/pkt`,
      )
    }
  }
}
const rows: string[] = []
rows.push('| engine | max packet | one core Gbps | send µs/pkt | recv µs/pkt | 2-process ceiling Gbps | vs quiche |')
rows.push('|---|---|---|---|---|---|---|')
const summary: Array<Record<string, number | string>> = []
for (const size of o.sizes) {
  const base = results.filter((x) => x.engine === 'quiche' && x.size === size)
  const baseCeiling = base.length ? median(base.map((x) => x.twoProcessCeilingGbps)) : NaN
  for (const engine of o.engines) {
    const xs = results.filter((x) => x.engine === engine && x.size === size)
    const ceiling = median(xs.map((x) => x.twoProcessCeilingGbps))
    const row = {
      engine,
      size,
      gbpsOneCore: median(xs.map((x) => x.gbpsOneCore)),
      sendUsPerPacket: median(xs.map((x) => x.sendUsPerPacket)),
      recvUsPerPacket: median(xs.map((x) => x.recvUsPerPacket)),
      twoProcessCeilingGbps: ceiling,
      vsQuiche: ceiling / baseCeiling,
    }
    summary.push(row)
    rows.push(
      `| ${engine} | ${size} | ${row.gbpsOneCore.toFixed(2)} | ${row.sendUsPerPacket.toFixed(2)} | ${row.recvUsPerPacket.toFixed(2)} | ${ceiling.toFixed(2)} | ${Number.isFinite(row.vsQuiche) ? row.vsQuiche.toFixed(2) + '×' : '—'} |`,
    )
  }
}
console.log(
  `\n${(o.bytes / 2 ** 20).toFixed(0)} MiB on one stream, in memory (no sockets), median of ${o.runs}; ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`,
)
console.log(rows.join('\n'))
if (o.json) fs.writeFileSync(o.json, JSON.stringify({ options: o, results, summary }, null, 2))
