import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { Stoq, StoqError } from '../src/index.js'
import { PATTERN_BLOCK, PatternChecker, newPatternBlock, patternKey, writeBlockHeader } from '../src/cli/bench-pattern.js'
import { BenchHeaderReader, LineSplitter, encodeBenchHeader, parseBenchReply, type BenchDone } from '../src/cli/bench-protocol.js'
import type { BenchReport } from '../src/cli/bench-client.js'
import type { BenchSessionSummary } from '../src/cli/bench-server.js'
import { CLI, CliRunner, type Run } from './cli-runner.js'

const cli = new CliRunner('stoq-cli-bench-')
const { config, children } = cli
const runCli = (args: string[], timeoutMs?: number): Promise<Run> => cli.run(args, { timeoutMs })
afterAll(() => cli.cleanup())

/** A long-running CLI process whose stdout lines can be awaited. */
function startCli(args: string[]): {
  child: ChildProcess
  nextLine: (match: (line: string) => boolean, timeoutMs?: number) => Promise<string>
  exited: Promise<number | null>
} {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, XDG_CONFIG_HOME: config }, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  const lines: string[] = []
  let waiters: (() => void)[] = []
  let partial = ''
  child.stdout!.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n')
    partial = parts.pop()!
    lines.push(...parts)
    for (const w of waiters) w()
    waiters = []
  })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const nextLine = (match: (line: string) => boolean, timeoutMs = 20_000): Promise<string> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no matching line within ${timeoutMs} ms; stdout so far:\n${lines.join('\n')}\nstderr: ${stderr}`)),
        timeoutMs,
      )
      const check = (): void => {
        const i = lines.findIndex(match)
        if (i >= 0) {
          clearTimeout(timer)
          resolve(lines.splice(i, 1)[0]!)
        } else {
          waiters.push(check)
        }
      }
      check()
    })
  return { child, nextLine, exited }
}

function expectWellFormed(report: BenchReport): void {
  const s = report.summary
  expect(s.verified).toBe(true)
  expect(s.errors).toEqual([])
  expect(s.bytes).toBeGreaterThan(0)
  // Receiver-counted total equals what was sent, stream by stream.
  expect(s.bytes).toBe(s.sentBytes)
  for (const st of s.streams) expect(st).toMatchObject({ ok: true, verifiedBytes: st.sentBytes })
  // The intervals add up to the verified total and tile the run without gaps.
  expect(report.intervals.reduce((a, i) => a + i.bytes, 0)).toBe(s.bytes)
  for (let k = 1; k < report.intervals.length; k++) expect(report.intervals[k]!.startSec).toBe(report.intervals[k - 1]!.endSec)
  expect(report.intervals.at(-1)!.endSec).toBeCloseTo(s.durationSec, 2)
  expect(s.averageGbps).toBeGreaterThan(0)
  expect(s.peakGbps).toBeGreaterThan(0)
  expect(['quinn', 'quiche']).toContain(s.client.engine)
  expect(['gro', 'gso', 'dgram']).toContain(s.client.udpBackend)
  expect(s.server).not.toBeNull()
  // A server made by the SDK runs engine workers where it can (`gro×N workers`).
  expect(s.server!.udpBackend).toMatch(/^(gro|gso|dgram)(×\d+ workers)?$/)
}

describe('stoq bench (local: server in a child process)', () => {
  it('--duration 2 --json: receiver-verified bytes, per-second intervals, verified true', async () => {
    const run = await runCli(['bench', '--duration', '2', '--json'])
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const report = JSON.parse(run.stdout) as BenchReport & { mode: string }
    expect(report.mode).toBe('local')
    expect(report).toMatchObject({ connections: 1, streamsPerConnection: 1, packetSize: 1350, limit: { durationSec: 2 } })
    expectWellFormed(report)
    // About two one-second ticks (the server's clock), plus the tail up to the last byte.
    expect(report.intervals.length).toBeGreaterThanOrEqual(2)
    expect(report.intervals[0]!.startSec).toBe(0)
    expect(report.summary.peakFrom).toBe('interval')
  }, 60_000)

  it('--connections 2 --streams 2: four streams, per-connection figures and a total', async () => {
    const run = await runCli(['bench', '--connections', '2', '--streams', '2', '--duration', '2', '--json'])
    expect(run.code).toBe(0)
    const report = JSON.parse(run.stdout) as BenchReport
    expectWellFormed(report)
    expect(report.summary.streams.map((s) => [s.connection, s.stream])).toEqual([
      [1, 1],
      [1, 2],
      [2, 1],
      [2, 2],
    ])
    for (const iv of report.intervals) {
      expect(iv.connections.map((c) => c.connection)).toEqual([1, 2])
      expect(iv.connections[0]!.bytes + iv.connections[1]!.bytes).toBe(iv.bytes)
    }
    // Both connections carried data.
    for (const c of [1, 2]) expect(report.summary.streams.filter((s) => s.connection === c).reduce((a, s) => a + s.sentBytes, 0)).toBeGreaterThan(0)
  }, 60_000)

  it('--bytes: exactly that many bytes, split over the streams, and a text table', async () => {
    const run = await runCli(['bench', '--bytes', '5M', '--streams', '3'])
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('[SUM]')
    expect(run.stdout).toContain(`transferred  5.00 MiB (${5 * 1024 * 1024} bytes)`)
    expect(run.stdout).toMatch(/verified {5}yes/)
    expect(run.stdout).toMatch(/client {7}engine (quinn|quiche), UDP backend (gro|gso|dgram)/)
    expect(run.stdout).toMatch(/server {7}engine (quinn|quiche)(×\d+)?, UDP backend (gro|gso|dgram)(×\d+ workers)?/)
  }, 60_000)

  it('--engine quiche is used on both sides', async () => {
    const run = await runCli(['bench', '--bytes', '4M', '--engine', 'quiche', '--json'])
    expect(run.code).toBe(0)
    const report = JSON.parse(run.stdout) as BenchReport
    expectWellFormed(report)
    expect(report.summary.client.engine).toBe('quiche')
    expect(report.summary.server!.engine).toBe('quiche')
  }, 60_000)
})

describe('stoq bench --server and stoq bench HOST:PORT', () => {
  it('serves remote clients; the server and the client report the same verified total', async () => {
    const srv = startCli(['bench', '--server', '--port', '0', '--host', '127.0.0.1', '--json'])
    const listening = JSON.parse(await srv.nextLine((l) => l.includes('"listening"'))) as {
      port: number
      fingerprint: string
      engine: string
      udpBackend: string
    }
    expect(listening.port).toBeGreaterThan(0)
    expect(listening.fingerprint).toMatch(/^[0-9a-f]{64}$/)

    const run = await runCli(['bench', `127.0.0.1:${listening.port}`, '--insecure', '--duration', '1', '--streams', '2', '--json'])
    expect(run.code).toBe(0)
    const report = JSON.parse(run.stdout) as BenchReport & { mode: string }
    expect(report.mode).toBe('remote')
    expectWellFormed(report)
    expect(report.summary.server).toEqual({ engine: listening.engine, udpBackend: listening.udpBackend })
    const session = JSON.parse(await srv.nextLine((l) => l.includes('"session"'))) as BenchSessionSummary
    expect(session).toMatchObject({ streams: 2, expectedStreams: 2, patternOk: true, bytes: report.summary.bytes, errors: [] })

    // Pinning: the right fingerprint works, a wrong one fails with the typed error.
    const pinned = await runCli(['bench', `127.0.0.1:${listening.port}`, '--pin', listening.fingerprint, '--bytes', '1M', '--json'])
    expect(pinned.code).toBe(0)
    const wrong = await runCli(['bench', `127.0.0.1:${listening.port}`, '--pin', '00'.repeat(32), '--bytes', '1M'])
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toContain('STOQ_ERR_CERT_PIN')

    // Trust on first use: recorded in the CLI's known-hosts file under XDG_CONFIG_HOME.
    const tofu = await runCli(['bench', `127.0.0.1:${listening.port}`, '--bytes', '1M', '--json'])
    expect(tofu.code).toBe(0)
    const known = JSON.parse(fs.readFileSync(path.join(config, 'stoq', 'cli', 'known_hosts.json'), 'utf8')) as Record<string, string>
    expect(known[`127.0.0.1:${listening.port}`]).toBe(listening.fingerprint)

    srv.child.kill('SIGTERM')
    expect(await srv.exited).toBe(0)
  }, 90_000)

  it('the server finds corrupted data and the client is told, with the typed error', async () => {
    const srv = startCli(['bench', '--server', '--port', '0', '--host', '127.0.0.1', '--json'])
    const { port } = JSON.parse(await srv.nextLine((l) => l.includes('"listening"'))) as { port: number }
    // A client of our own that sends one correct block and then a block with a flipped byte.
    const client = await Stoq.create('corrupt-client', { identity: { dir: path.join(config, 'corrupt') } })
    try {
      const conn = await client.connect(`127.0.0.1:${port}`, { insecure: true })
      const stream = conn.openStream()
      const session = 'ab'.repeat(8)
      const key = patternKey(session, 0, 0)
      const writer = stream.writable!.getWriter()
      const replies = (async () => {
        const lines = new LineSplitter('bench')
        const out: BenchDone[] = []
        for await (const chunk of stream.readable!) {
          for (const l of lines.push(chunk)) {
            const m = parseBenchReply(l)
            if (m.type === 'done') out.push(m)
          }
        }
        return out
      })()
      await writer.write(encodeBenchHeader({ v: 1, session, connection: 0, stream: 0, streams: 1 }))
      for (let b = 0; b < 2; b++) {
        const block = newPatternBlock()
        writeBlockHeader(block, b, key)
        if (b === 1) block[1000] = block[1000]! ^ 0x01
        await writer.write(block).catch(() => {})
      }
      await writer.close().catch(() => {})
      const done = await replies
      expect(done).toHaveLength(1)
      expect(done[0]).toMatchObject({ ok: false, code: 'STOQ_ERR_INTEGRITY', bytes: PATTERN_BLOCK + 1000 })
      expect(done[0]!.error).toContain(`stream offset ${PATTERN_BLOCK + 1000}`)
      const summary = JSON.parse(await srv.nextLine((l) => l.includes('"session"'))) as BenchSessionSummary
      expect(summary.patternOk).toBe(false)
    } finally {
      await client.close()
      srv.child.kill('SIGTERM')
      await srv.exited
    }
  }, 60_000)
})

describe('stoq bench client verdict', () => {
  it('says verified: NO and exits 1 when the receiver verified fewer bytes than were sent', async () => {
    // A receiver of our own that drains each stream but reports one byte less than it got.
    const server = await Stoq.create('short-server', { identity: { dir: path.join(config, 'short') } })
    const ep = await server.listen(
      { host: '127.0.0.1', port: 0 },
      {
        onStream: (stream) =>
          void (async () => {
            let n = 0
            const header = new BenchHeaderReader()
            let started = false
            for await (const chunk of stream.readable!) {
              if (started) n += chunk.length
              else {
                const got = header.push(chunk)
                if (got) {
                  started = true
                  n += got.rest.length
                }
              }
            }
            const w = stream.writable!.getWriter()
            const info = { engine: 'test', udpBackend: 'test' }
            const done = { type: 'done', ok: true, bytes: n - 1, firstT: 0, lastT: 50, server: info }
            await w.write(new TextEncoder().encode(`${JSON.stringify(done)}\n`))
            await w.close()
          })().catch(() => {}),
      },
    )
    try {
      const run = await runCli(['bench', `127.0.0.1:${ep.address.port}`, '--insecure', '--bytes', '1M', '--json'])
      expect(run.code).toBe(1)
      const report = JSON.parse(run.stdout) as BenchReport
      expect(report.summary.verified).toBe(false)
      expect(report.summary.streams[0]).toMatchObject({ ok: false, sentBytes: 1024 * 1024, verifiedBytes: 1024 * 1024 - 1 })
      expect(report.summary.errors.join('\n')).toContain('STOQ_ERR_INTEGRITY')
      const text = await runCli(['bench', `127.0.0.1:${ep.address.port}`, '--insecure', '--bytes', '1M'])
      expect(text.code).toBe(1)
      expect(text.stdout).toMatch(/verified {5}NO/)
    } finally {
      await server.close()
    }
  }, 60_000)
})

describe('bench pattern', () => {
  it('accepts the pattern in any chunking and rejects a wrong byte, block number or stream key', () => {
    const key = patternKey('00'.repeat(8), 1, 2)
    const data = Buffer.alloc(3 * PATTERN_BLOCK + 123)
    for (let b = 0; b * PATTERN_BLOCK < data.length; b++) {
      const block = newPatternBlock()
      writeBlockHeader(block, b, key)
      block.copy(data, b * PATTERN_BLOCK, 0, Math.min(PATTERN_BLOCK, data.length - b * PATTERN_BLOCK))
    }
    for (const step of [1, 7, 4096, 65_536, data.length]) {
      const c = new PatternChecker(key)
      for (let at = 0; at < data.length; at += step) c.push(data.subarray(at, at + step))
      expect(c.verified).toBe(data.length)
    }
    const integrity = (mutate: (d: Buffer) => void, k = key): unknown => {
      const copy = Buffer.from(data)
      mutate(copy)
      try {
        new PatternChecker(k).push(copy)
      } catch (err) {
        return err
      }
      return null
    }
    for (const err of [
      integrity((d) => (d[2 * PATTERN_BLOCK + 500] = d[2 * PATTERN_BLOCK + 500]! ^ 0xff)), // corrupted filler
      integrity((d) => (d[PATTERN_BLOCK + 7] = 9)), // wrong block number (a repeated or reordered block)
      integrity(() => {}, patternKey('00'.repeat(8), 1, 3)), // another stream's data
    ]) {
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INTEGRITY')
    }
  })
})
