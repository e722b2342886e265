/**
 * Multi-core scaling: aggregated throughput of 1, 2 and 4 connections into a
 * server on one thread (`workers: 0`) versus one with N engine workers, in the
 * same run, interleaved. The server (this process) counts and verifies every
 * byte; a forked sender (a single-thread endpoint) sends the pattern, one
 * stream per connection. CPU% is process CPU (all threads) over the transfer.
 *
 *   node dist/workers.js [--bytes 512MiB] [--runs 3] [--workers 2] [--json FILE]
 */
import { fork } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createEndpoint, type Endpoint } from '@stoq/transport-core'
import { makeIdentity, type BenchIdentity } from './pki.js'
import { PatternVerifier, sendPattern } from './pattern.js'

interface SendJob {
  port: number
  connections: number
  bytesPerConnection: number
  identity: BenchIdentity
}

type FromSender = { type: 'done'; cpuMs: number; wallMs: number } | { type: 'error'; message: string }

// ---------------------------------------------------------------------------
// Sender (child process)

async function sender(): Promise<void> {
  process.on('message', async (job: SendJob) => {
    let ep: Endpoint | null = null
    try {
      ep = await createEndpoint({ host: '127.0.0.1' })
      const conns = await Promise.all(
        Array.from({ length: job.connections }, () => ep!.connect({ host: '127.0.0.1', port: job.port, serverName: 'localhost', pin: job.identity.pin })),
      )
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      await Promise.all(
        conns.map(async (conn) => {
          const writer = conn.openStream({ unidirectional: true }).writable!.getWriter()
          await sendPattern(job.bytesPerConnection, (chunk) => writer.write(chunk))
          await writer.close()
        }),
      )
      const cpu = process.cpuUsage(cpu0)
      // Keep the connections until the receiver has everything (it closes them).
      await Promise.all(conns.map((c) => c.closed))
      process.send!({ type: 'done', cpuMs: (cpu.user + cpu.system) / 1000, wallMs: performance.now() - t0 } satisfies FromSender)
    } catch (err) {
      process.send!({ type: 'error', message: (err as Error).message } satisfies FromSender)
    } finally {
      await ep?.close().catch(() => {
        // The result (or the error) is already sent to the parent; a failed close changes nothing.
      })
    }
  })
}

// ---------------------------------------------------------------------------
// Receiver (this process)

interface Result {
  workers: number
  connections: number
  run: number
  gbps: number
  bytes: number
  seconds: number
  serverCpuPercent: number
  senderCpuPercent: number
  workerElu: number[]
}

async function measure(server: Endpoint, workers: number, connections: number, totalBytes: number, identity: BenchIdentity, run: number): Promise<Result> {
  const per = Math.floor(totalBytes / connections)
  let received = 0
  let first = 0
  let last = 0
  let finished = 0
  let failure: Error | null = null
  let cpu0 = process.cpuUsage()
  const allDone = new Promise<void>((resolve, reject) => {
    const onConnection = (conn: import('@stoq/transport-core').QuicConnection): void => {
      conn.on('stream', (stream) => {
        const verifier = new PatternVerifier(per)
        void (async () => {
          try {
            for await (const chunk of stream.readable!) {
              if (first === 0) {
                first = performance.now()
                cpu0 = process.cpuUsage()
              }
              verifier.update(chunk)
              received += chunk.length
            }
            if (verifier.verified !== per) throw new Error(`stream ended after ${verifier.verified} of ${per} bytes`)
            last = performance.now()
            if (++finished === connections) {
              server.off('connection', onConnection)
              resolve()
            }
            void conn.close()
          } catch (err) {
            failure = err as Error
            reject(err)
          }
        })()
      })
    }
    server.on('connection', onConnection)
  })
  const child = fork(fileURLToPath(import.meta.url), ['sender'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const senderDone = new Promise<FromSender>((resolve) => child.once('message', (m: FromSender) => resolve(m)))
  child.send({ port: server.address.port, connections, bytesPerConnection: per, identity } satisfies SendJob)
  const deadline = setTimeout(() => child.kill('SIGKILL'), 120_000)
  try {
    const senderFailed = senderDone.then((m) => {
      if (m.type === 'error') throw new Error(`sender: ${m.message}`)
      return allDone
    })
    const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`sender exited with code ${code}`))))
    exited.catch(() => {
      // Marks it handled: the race below is where an early exit is seen.
    })
    await Promise.race([allDone, senderFailed, exited])
    const cpu = process.cpuUsage(cpu0)
    const s = await Promise.race([senderDone, exited])
    if (s.type === 'error') throw new Error(`sender: ${s.message}`)
    if (failure) throw failure
    const seconds = (last - first) / 1000
    const bytes = per * connections
    return {
      workers,
      connections,
      run,
      gbps: (received * 8) / seconds / 1e9,
      bytes,
      seconds,
      serverCpuPercent: ((cpu.user + cpu.system) / 1000 / (last - first)) * 100,
      senderCpuPercent: (s.cpuMs / s.wallMs) * 100,
      workerElu: server.stats().workers.map((w) => Math.round(w.eventLoopUtilization * 100) / 100),
    }
  } finally {
    clearTimeout(deadline)
    child.kill()
  }
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b)
  return v[Math.floor(v.length / 2)]!
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      bytes: { type: 'string', default: '512' },
      runs: { type: 'string', default: '3' },
      workers: { type: 'string', default: String(Math.max(2, os.availableParallelism())) },
      json: { type: 'string' },
    },
  })
  const totalBytes = Number.parseInt(values.bytes!, 10) * 1024 * 1024
  const runs = Number.parseInt(values.runs!, 10)
  const n = Number.parseInt(values.workers!, 10)
  if (!(totalBytes > 0) || !(runs > 0) || !(n >= 2)) throw new Error('usage: --bytes MiB (>0) --runs N (>0) --workers N (>=2)')
  const identity = await makeIdentity()
  const serverOptions = { host: '127.0.0.1', server: { cert: identity.cert, key: identity.key }, transport: {} }
  const single = await createEndpoint({ ...serverOptions, workers: 0 })
  const one = await createEndpoint({ ...serverOptions, workers: 1 })
  const multi = await createEndpoint({ ...serverOptions, workers: n })
  console.log(`# STOQ multi-core scaling: ${values.bytes} MiB per case over loopback, ${runs} runs, ${os.availableParallelism()} CPUs`)
  console.log(`# single-thread server: ${single.stats().engineChoice}`)
  console.log(`# 1-worker server: ${one.stats().engineChoice}`)
  console.log(`# multi-core server: ${multi.stats().engineChoice}`)
  const results: Result[] = []
  for (let run = 1; run <= runs; run++) {
    for (const connections of [1, 2, 4]) {
      for (const [workers, ep] of [
        [0, single],
        [1, one],
        [n, multi],
      ] as const) {
        const r = await measure(ep, workers, connections, totalBytes, identity, run)
        results.push(r)
        console.log(
          `run ${run} conns ${connections} ${workers === 0 ? 'main thread' : `${workers} worker${workers > 1 ? 's' : ''}`}: ${r.gbps.toFixed(2)} Gbit/s, server CPU ${r.serverCpuPercent.toFixed(0)}%, sender CPU ${r.senderCpuPercent.toFixed(0)}%${r.workerElu.length ? `, worker ELU ${r.workerElu.join('/')}` : ''}`,
        )
      }
    }
  }
  await single.close()
  await one.close()
  await multi.close()
  console.log(
    `\n| connections | main thread Gbit/s (server CPU) | 1 worker Gbit/s (server CPU) | ${n} workers Gbit/s (server CPU) | ${n} workers / 1 worker | ${n} workers / main thread |`,
  )
  console.log('|---|---|---|---|---|---|')
  for (const connections of [1, 2, 4]) {
    const cell = (w: number): { g: number; text: string } => {
      const rs = results.filter((r) => r.connections === connections && r.workers === w)
      const g = median(rs.map((r) => r.gbps))
      return { g, text: `${g.toFixed(2)} (${median(rs.map((r) => r.serverCpuPercent)).toFixed(0)}%)` }
    }
    const a = cell(0)
    const b = cell(1)
    const c = cell(n)
    console.log(`| ${connections} | ${a.text} | ${b.text} | ${c.text} | ${(c.g / b.g).toFixed(2)} | ${(c.g / a.g).toFixed(2)} |`)
  }
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(results, null, 2))
}

if (process.argv[2] === 'sender') void sender()
else
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
