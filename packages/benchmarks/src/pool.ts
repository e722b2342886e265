/**
 * Connection reuse: latency of `stoq.connect()` with a cold QUIC handshake
 * (`reuse: false`) against a pooled reuse of the live connection, measured in
 * the same run, over loopback. Prints medians and p99 in microseconds, and the
 * ratio.
 *
 *   node dist/pool.js [--count 200] [--json FILE]
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { Stoq } from '@stoq/sdk'

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))]!
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { count: { type: 'string' }, json: { type: 'string' } } })
  const count = Number(values.count ?? 200)
  if (!Number.isInteger(count) || count < 1) throw new Error('--count must be a positive integer')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-pool-bench-'))
  const server = await Stoq.create('pool-bench-server', { identity: { dir } })
  const client = await Stoq.create('pool-bench-client', { identity: { dir: path.join(dir, 'client') } })
  try {
    const ep = await server.listen({ host: '127.0.0.1', port: 0 }, {})
    const pin = (await server.identity()).fingerprint
    const target = `127.0.0.1:${ep.address.port}`
    const cold: number[] = []
    for (let i = 0; i < count; i++) {
      const t0 = process.hrtime.bigint()
      const conn = await client.connect(target, { pin, reuse: false })
      cold.push(Number(process.hrtime.bigint() - t0) / 1000)
      await conn.close()
    }
    await client.connect(target, { pin }) // fills the pool
    const pooled: number[] = []
    for (let i = 0; i < count; i++) {
      const t0 = process.hrtime.bigint()
      const conn = await client.connect(target, { pin })
      pooled.push(Number(process.hrtime.bigint() - t0) / 1000)
      if (!conn.established) throw new Error('pooled connection is not established')
    }
    cold.sort((a, b) => a - b)
    pooled.sort((a, b) => a - b)
    const result = {
      benchmark: 'pool',
      count,
      coldHandshakeUs: { median: percentile(cold, 0.5), p99: percentile(cold, 0.99) },
      pooledReuseUs: { median: percentile(pooled, 0.5), p99: percentile(pooled, 0.99) },
      pool: client.stats().pool,
    }
    const ratio = result.coldHandshakeUs.median / result.pooledReuseUs.median
    console.log(`connect to ${target}, ${count} times each, same run (loopback, one process):`)
    console.log(`  cold handshake  median ${result.coldHandshakeUs.median.toFixed(0)} µs, p99 ${result.coldHandshakeUs.p99.toFixed(0)} µs`)
    console.log(`  pooled reuse    median ${result.pooledReuseUs.median.toFixed(1)} µs, p99 ${result.pooledReuseUs.p99.toFixed(1)} µs`)
    console.log(`  reuse is ${ratio.toFixed(0)}x faster; pool ${JSON.stringify(result.pool)}`)
    if (values.json) fs.writeFileSync(values.json, `${JSON.stringify({ ...result, ratio }, null, 2)}\n`)
  } finally {
    await client.close()
    await server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err)
  process.exitCode = 1
})
