/**
 * The engine workers' record channel on its own: what one record and one batch cost to move
 * between the application thread and a worker thread, with the old transport (one
 * postMessage per turn carrying a transferred Float64Array of the turn's records) against
 * the record ring (`@stoq/mempool` RecordWriter/RecordReader over a RecordRing in a
 * SharedArrayBuffer, a message only to wake a reader that went idle: the code the engine
 * workers run), in the same run. The `message` transport is the old protocol written out
 * here (it is gone from transport-core).
 *
 *   node dist/worker-protocol.js [--records 2000000] [--batches 1,16,256] [--window 4096] [--runs 3] [--json FILE]
 *
 * The main thread sends `--records` records, at most `--batches` per event-loop turn and at
 * most `--window` unanswered; the worker answers every record with one record (as
 * E_DATA is answered by C_RECV_CREDIT). Both sides check every record (its sequence number
 * and a value derived from it), so a lost, duplicated or reordered record fails the run.
 * Figures: wall ns per record (both directions), CPU µs per record (both threads,
 * process.cpuUsage), and wake-up messages per direction.
 */
import fs from 'node:fs'
import os from 'node:os'
import { performance } from 'node:perf_hooks'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { RecordReader, RecordRing, RecordWriter, type RecordRingHandle } from '@stoq/mempool'

const WIDTH = 7
const OP_SEND = 6
const OP_CREDIT = 107
/** The engine workers' extras marker (no record here starts with it). */
const CHANNEL = { extrasOp: 200 }

type Variant = 'message' | 'ring'

interface Options {
  records: number
  batches: number[]
  window: number
  runs: number
  json: string | null
}

/** One direction's sending half. */
interface Sender {
  rec(op: number, id: number, sid: number, a: number, b: number, c: number, d: number): void
  flush(): void
  messages: number
}

/** Handler of one received record: r[at..at+6]. */
type OnRecord = (r: Float64Array, at: number) => void

/** The old protocol: the turn's records in a JS array, sent as one transferred Float64Array. */
class MessageSender implements Sender {
  private out: number[] = []
  messages = 0
  constructor(private readonly port: MessagePortLike) {}
  rec(op: number, id: number, sid: number, a: number, b: number, c: number, d: number): void {
    this.out.push(op, id, sid, a, b, c, d)
  }
  flush(): void {
    if (this.out.length === 0) return
    const r = Float64Array.from(this.out)
    this.out.length = 0
    this.messages++
    this.port.postMessage({ r, x: [] }, [r.buffer])
  }
}

function messageReceiver(onRecord: OnRecord): (msg: { r: Float64Array }) => void {
  return (msg) => {
    const r = msg.r
    for (let i = 0; i < r.length; i += WIDTH) onRecord(r, i)
  }
}

/** The ring: the engine workers' own channel (mempool's RecordWriter), a message only when the reader parked. */
class RingSender implements Sender {
  private readonly writer: RecordWriter
  constructor(ring: RecordRing, port: MessagePortLike) {
    this.writer = new RecordWriter(ring, port, CHANNEL)
  }
  get messages(): number {
    return this.writer.wakes
  }
  rec(op: number, id: number, sid: number, a: number, b: number, c: number, d: number): void {
    this.writer.rec(op, id, sid, a, b, c, d)
  }
  flush(): void {
    this.writer.flush()
  }
}

function ringReceiver(ring: RecordRing, onRecord: OnRecord): RecordReader {
  return new RecordReader(
    ring,
    (r, at) => onRecord(r, at),
    () => undefined,
    CHANNEL,
  )
}

interface MessagePortLike {
  postMessage(value: unknown, transfer?: readonly ArrayBuffer[]): void
}

interface WorkerSetup {
  variant: Variant
  toWorker?: RecordRingHandle
  toMain?: RecordRingHandle
}

// ---------------------------------------------------------------------------------------
// Worker: answer every record with a credit record, in the next flush.

function workerMain(): void {
  const setup = workerData as WorkerSetup
  const port = parentPort!
  let expect = 0
  let flushQueued = false
  let sender: Sender
  const flush = (): void => {
    flushQueued = false
    sender.flush()
  }
  const onRecord: OnRecord = (r, at) => {
    const id = r[at + 1]!
    if (r[at] !== OP_SEND || id !== expect || r[at + 3] !== id * 3 + 1) {
      throw new Error(`worker: record ${expect} wrong: op ${r[at]} id ${id} a ${r[at + 3]}`)
    }
    expect++
    sender.rec(OP_CREDIT, id, 0, id * 5 + 2, 0, 0, 0)
    if (!flushQueued) {
      flushQueued = true
      setImmediate(flush)
    }
  }
  if (setup.variant === 'message') {
    sender = new MessageSender(port)
    const receive = messageReceiver(onRecord)
    port.on('message', (msg: { r: Float64Array } | 'stop') => {
      if (msg === 'stop') port.close()
      else receive(msg)
    })
  } else {
    sender = new RingSender(RecordRing.attach(setup.toMain!), port)
    const receiver = ringReceiver(RecordRing.attach(setup.toWorker!), onRecord)
    port.on('message', (msg: null | 'stop') => {
      if (msg === 'stop') port.close()
      else receiver.message(msg)
    })
  }
  port.postMessage('ready')
}

// ---------------------------------------------------------------------------------------
// Main thread: send, count the answers.

interface Result {
  variant: Variant
  batch: number
  nsPerRecord: number
  cpuUsPerRecord: number
  messagesToWorker: number
  messagesToMain: number
}

async function runOnce(variant: Variant, batch: number, o: Options): Promise<Result> {
  const setup: WorkerSetup = { variant }
  let toWorker: RecordRing | null = null
  let toMain: RecordRing | null = null
  if (variant === 'ring') {
    toWorker = RecordRing.create({ width: WIDTH })
    toMain = RecordRing.create({ width: WIDTH })
    setup.toWorker = toWorker.handle
    setup.toMain = toMain.handle
  }
  const worker = new Worker(new URL(import.meta.url), { workerData: setup })
  await new Promise<void>((resolve, reject) => {
    worker.once('error', reject)
    worker.once('message', () => resolve())
  })
  const total = o.records
  let sent = 0
  let acked = 0
  let turnQueued = false
  let received = 0
  let sender: Sender
  let finish!: () => void
  let fail!: (err: Error) => void
  const done = new Promise<void>((resolve, reject) => {
    finish = resolve
    fail = reject
  })
  worker.on('error', (err) => fail(err))
  const turn = (): void => {
    turnQueued = false
    let n = 0
    while (n < batch && sent < total && sent - acked < o.window) {
      sender.rec(OP_SEND, sent, 0, sent * 3 + 1, 0, 0, 0)
      sent++
      n++
    }
    sender.flush()
    if (sent < total && sent - acked < o.window) queueTurn()
  }
  const queueTurn = (): void => {
    if (turnQueued) return
    turnQueued = true
    setImmediate(turn)
  }
  const onRecord: OnRecord = (r, at) => {
    const id = r[at + 1]!
    if (r[at] !== OP_CREDIT || id !== acked || r[at + 3] !== id * 5 + 2) {
      fail(new Error(`main: answer ${acked} wrong: op ${r[at]} id ${id} a ${r[at + 3]}`))
      return
    }
    acked++
    if (acked === total) finish()
    else if (sent < total) queueTurn()
  }
  if (variant === 'message') {
    sender = new MessageSender(worker)
    const receive = messageReceiver(onRecord)
    worker.on('message', (msg: { r: Float64Array }) => {
      received++
      receive(msg)
    })
  } else {
    sender = new RingSender(toWorker!, worker)
    const receiver = ringReceiver(toMain!, onRecord)
    worker.on('message', () => {
      received++
      receiver.message(null)
    })
  }
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  queueTurn()
  await done
  const wall = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  const messagesToWorker = sender.messages
  worker.postMessage('stop')
  await worker.terminate()
  return {
    variant,
    batch,
    nsPerRecord: (wall * 1e6) / total,
    cpuUsPerRecord: (cpu.user + cpu.system) / total,
    messagesToWorker,
    messagesToMain: received,
  }
}

function parseArgs(argv: string[]): Options {
  const o: Options = { records: 2_000_000, batches: [1, 16, 256], window: 4096, runs: 3, json: null }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    const v = argv[i + 1]
    if (v === undefined) throw new Error(`${k} needs a value`)
    if (k === '--records') o.records = Number(v)
    else if (k === '--batches') o.batches = v.split(',').map(Number)
    else if (k === '--window') o.window = Number(v)
    else if (k === '--runs') o.runs = Number(v)
    else if (k === '--json') o.json = v
    else throw new Error(`unknown option ${k}`)
    i++
  }
  for (const [name, n] of [['--records', o.records], ['--window', o.window], ['--runs', o.runs], ...o.batches.map((b) => ['--batches', b] as const)] as const) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer (got ${n})`)
  }
  return o
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  const all: Result[] = []
  // Interleaved: message, ring, message, ring ... so drift falls on both alike.
  for (let run = 0; run < o.runs; run++) {
    for (const batch of o.batches) {
      for (const variant of ['message', 'ring'] as const) {
        const r = await runOnce(variant, batch, o)
        all.push(r)
        console.log(
          `${variant.padEnd(7)} batch ${String(batch).padStart(4)} run ${run + 1}/${o.runs}: ${r.nsPerRecord.toFixed(0)} ns/record, ${(r.cpuUsPerRecord * 1000).toFixed(0)} CPU ns/record, ${r.messagesToWorker} messages to the worker, ${r.messagesToMain} back`,
        )
      }
    }
  }
  console.log(`\n${o.records} records each way per run, window ${o.window}, median of ${o.runs}; ${os.cpus().length} CPUs, Node ${process.version}`)
  console.log(
    '| records per turn | message ns/record | ring ns/record | ring/message | message CPU ns/record | ring CPU ns/record | messages to worker (message / ring) | messages back (message / ring) |',
  )
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|')
  for (const batch of o.batches) {
    const m = all.filter((r) => r.variant === 'message' && r.batch === batch)
    const g = all.filter((r) => r.variant === 'ring' && r.batch === batch)
    const mn = median(m.map((r) => r.nsPerRecord))
    const gn = median(g.map((r) => r.nsPerRecord))
    console.log(
      `| ${batch} | ${mn.toFixed(0)} | ${gn.toFixed(0)} | ${(gn / mn).toFixed(2)} | ${(median(m.map((r) => r.cpuUsPerRecord)) * 1000).toFixed(0)} | ${(median(g.map((r) => r.cpuUsPerRecord)) * 1000).toFixed(0)} | ${median(m.map((r) => r.messagesToWorker))} / ${median(g.map((r) => r.messagesToWorker))} | ${median(m.map((r) => r.messagesToMain))} / ${median(g.map((r) => r.messagesToMain))} |`,
    )
  }
  if (o.json !== null) fs.writeFileSync(o.json, JSON.stringify({ options: o, results: all }, null, 2))
}

if (isMainThread) {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
} else {
  workerMain()
}
