/**
 * Server memory across a load: does RSS come back once connections are gone?
 *
 *   node dist/memory.js [--workers 0,2] [--connections 1000] [--cycles 3] [--engine quinn]
 *
 * For each worker count, a STOQ server runs in its own process (the same script with
 * --server). After a warm-up (20 connections), its RSS is the baseline. The client then opens
 * `connections` connections (50 at a time), echoes 1 KiB on one stream of each, keeps them all
 * open, closes them, and waits 3 s: the server's RSS at the peak and after, per cycle, in MiB,
 * and the ratio after/baseline. The figures come from /proc of the server process (all threads).
 */
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createEndpoint, type QuicConnection } from '@stoq/transport-core'
import { makeIdentity } from './pki.js'

/** An echo stream that fails (the client closed mid-echo) ends; the memory probe does not care. */
function echoEnded(): void {
  // Nothing to do: see above.
}

const MiB = 1024 * 1024
const args = process.argv.slice(2)
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt
}

async function server(): Promise<void> {
  const cfg = JSON.parse(process.env.STOQ_MEMORY_SERVER!) as { cert: string; key: string; workers: number; engine: 'quinn' | 'quiche' }
  const ep = await createEndpoint({ host: '127.0.0.1', engine: cfg.engine, workers: cfg.workers, server: { cert: cfg.cert, key: cfg.key } })
  ep.on('connection', (conn) => {
    conn.on('stream', (s) => void (s.readable && s.writable && s.readable.pipeTo(s.writable).catch(echoEnded)))
  })
  process.stdout.write(`${JSON.stringify({ port: ep.address.port })}\n`)
  process.stdin.on('data', () => {
    const m = process.memoryUsage()
    process.stdout.write(
      `${JSON.stringify({ rss: m.rss, heap: m.heapTotal, external: m.external, connections: ep.stats().connections, engineConnections: (ep as unknown as { engine: { connectionCount?: number } }).engine.connectionCount ?? -1 })}\n`,
    )
  })
}

async function main(): Promise<void> {
  const id = await makeIdentity()
  const engine = arg('engine', 'quinn') as 'quinn' | 'quiche'
  const total = Number(arg('connections', '1000'))
  const cycles = Number(arg('cycles', '3'))
  for (const workers of arg('workers', '0,2').split(',').map(Number)) {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--server'], {
      env: { ...process.env, STOQ_MEMORY_SERVER: JSON.stringify({ cert: id.cert, key: id.key, workers, engine }) },
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
    const next = async (): Promise<Record<string, number>> => JSON.parse((await lines.next()).value as string) as Record<string, number>
    const port = (await next()).port!
    let detail = ''
    const rss = async (): Promise<number> => {
      child.stdin!.write('?\n')
      const r = await next()
      detail = `heap ${(r.heap! / MiB).toFixed(0)} MiB, external ${(r.external! / MiB).toFixed(0)} MiB, ${r.connections} connections (engine ${r.engineConnections})`
      return r.rss! / MiB
    }
    const client = await createEndpoint({ host: '127.0.0.1', engine })
    const load = async (n: number): Promise<QuicConnection[]> => {
      const conns: QuicConnection[] = []
      for (let i = 0; i < n; i += 50) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(50, n - i) }, async () => {
            const c = await client.connect({ host: '127.0.0.1', port, pin: id.pin, serverName: 'localhost' })
            const s = c.openStream()
            const w = s.writable!.getWriter()
            await w.write(new Uint8Array(1024))
            await w.close()
            for await (const _ of s.readable!) {
              // drain the echo
            }
            return c
          }),
        )
        conns.push(...batch)
      }
      return conns
    }
    const closeAll = async (conns: QuicConnection[]): Promise<void> => {
      await Promise.all(conns.map((c) => c.close(0, 'done')))
      await new Promise((r) => setTimeout(r, Number(arg('settle', '5000'))))
    }
    await closeAll(await load(20))
    const base = await rss()
    const rows: string[] = []
    for (let c = 1; c <= cycles; c++) {
      const conns = await load(total)
      const peak = await rss()
      await closeAll(conns)
      const after = await rss()
      rows.push(`cycle ${c}: peak ${peak.toFixed(0)} MiB, after ${after.toFixed(0)} MiB (${(after / base).toFixed(2)}x baseline; ${detail})`)
    }
    console.log(`[memory] ${engine}, workers ${workers}, ${total} connections: baseline ${base.toFixed(0)} MiB; ${rows.join('; ')}`)
    await client.close()
    child.kill()
  }
}

if (process.argv.includes('--server')) await server()
else await main()
