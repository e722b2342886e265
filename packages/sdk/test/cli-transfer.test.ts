import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { Stoq, StoqError } from '../src/index.js'
import {
  FRAME_DATA,
  FRAME_END,
  FRAME_HEADER,
  IncomingTransfer,
  OutgoingTransfer,
  TRANSFER_MAGIC,
  checkTrailer,
  encodeFrame,
  parseTransferReply,
  validateTransferName,
  type TransferReply,
} from '../src/cli/transfer-protocol.js'
import { LineSplitter } from '../src/cli/bench-protocol.js'
import { CLI, CliRunner, type Run } from './cli-runner.js'

const cli = new CliRunner('stoq-cli-transfer-config-')
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-cli-transfer-'))
const { config, children } = cli
afterAll(() => {
  cli.cleanup()
  fs.rmSync(root, { recursive: true, force: true })
})

function spawnCli(args: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, XDG_CONFIG_HOME: config }, stdio: ['pipe', 'pipe', 'pipe'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  return child
}

/** Run the built CLI to completion, feeding `input` on stdin (an empty stdin when null). */
function runCli(args: string[], input: Buffer | null = null, timeoutMs = 30_000): Promise<Run> {
  return cli.run(args, { timeoutMs, input: input ?? '' })
}

interface Server {
  child: ChildProcess
  port: number
  fingerprint: string
  out: () => string
  err: () => string
  exited: Promise<number | null>
}

/** `stoq serve ...` on a free loopback port; resolves once it listens. */
async function startServe(target: string, extra: string[] = []): Promise<Server> {
  const child = spawnCli(['serve', target, '--port', '0', '--host', '127.0.0.1', ...extra])
  child.stdin!.end()
  let out = Buffer.alloc(0)
  let err = ''
  child.stdout!.on('data', (d: Buffer) => (out = Buffer.concat([out, d])))
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const log = (): string => (target === '-' ? err : out.toString())
  const deadline = Date.now() + 20_000
  for (;;) {
    const m = /listening on 127\.0\.0\.1:(\d+)[\s\S]*fingerprint ([0-9a-f]{64})/.exec(log())
    if (m) return { child, port: Number(m[1]), fingerprint: m[2]!, out: () => out.toString('latin1'), err: () => err, exited }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`stoq serve did not start:\n${out.toString()}\n${err}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function stop(s: Server): Promise<number | null> {
  if (s.child.exitCode === null) s.child.kill('SIGTERM')
  return s.exited
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

function tempDir(name: string): string {
  const d = path.join(root, name)
  fs.mkdirSync(d, { recursive: true })
  return d
}

/** Send raw protocol bytes on one stream with a client of our own, and read the receiver's verdict. */
async function rawSend(port: number, parts: Buffer[]): Promise<TransferReply> {
  const client = await Stoq.create('raw-client', { identity: { dir: path.join(root, 'raw-client') } })
  try {
    const conn = await client.connect(`127.0.0.1:${port}`, { insecure: true })
    const stream = conn.openStream()
    const verdict = (async () => {
      const lines = new LineSplitter('test')
      for await (const chunk of stream.readable!) {
        const got = lines.push(chunk)
        if (got.length > 0) return parseTransferReply(got[0]!)
      }
      throw new Error('no verdict')
    })()
    const w = stream.writable!.getWriter()
    try {
      for (const p of parts) await w.write(p)
      await w.close()
    } catch {
      // The receiver may stop reading early; its verdict says why.
    }
    const reply = await verdict
    await conn.close()
    return reply
  } finally {
    await client.close()
  }
}

describe('stoq serve / stoq send', () => {
  it('sends a random 3 MiB file; the stored copy has the same SHA-256; overwrites are refused', async () => {
    const dir = tempDir('store1')
    const src = path.join(root, 'random.bin')
    const data = randomBytes(3 * 1024 * 1024)
    fs.writeFileSync(src, data)
    const srv = await startServe(dir)
    try {
      // Default trust: TOFU, recorded in the CLI's known-hosts file.
      const run = await runCli(['send', src, `127.0.0.1:${srv.port}`])
      expect(run.stderr).toBe('') // stderr is not a terminal: no progress bar
      expect(run.code).toBe(0)
      expect(run.stdout).toContain(`SHA-256 ${sha256(data)}`)
      expect(run.stdout).toContain('verified by the receiver')
      expect(sha256(fs.readFileSync(path.join(dir, 'random.bin')))).toBe(sha256(data))
      const known = JSON.parse(fs.readFileSync(path.join(config, 'stoq', 'cli', 'known_hosts.json'), 'utf8')) as Record<string, string>
      expect(known[`127.0.0.1:${srv.port}`]).toBe(srv.fingerprint)

      // Pinned to the fingerprint serve printed, under another name.
      const pinned = await runCli(['send', src, `127.0.0.1:${srv.port}`, '--pin', srv.fingerprint, '--name', 'copy.bin'])
      expect(pinned.code).toBe(0)
      expect(sha256(fs.readFileSync(path.join(dir, 'copy.bin')))).toBe(sha256(data))

      // Same name again: refused on the receiver, nothing replaced, both sides say so.
      fs.writeFileSync(src, randomBytes(1000))
      const again = await runCli(['send', src, `127.0.0.1:${srv.port}`, '--insecure'])
      expect(again.code).toBe(1)
      expect(again.stderr).toContain('already exists')
      expect(sha256(fs.readFileSync(path.join(dir, 'random.bin')))).toBe(sha256(data))
      await new Promise((r) => setTimeout(r, 200))
      expect(srv.err()).toContain('already exists')
      // No partial files left behind.
      expect(fs.readdirSync(dir).sort()).toEqual(['copy.bin', 'random.bin'])
    } finally {
      // A transfer failed (the refused overwrite): serve exits 1.
      expect(await stop(srv)).toBe(1)
    }
  }, 60_000)

  it('--force replaces an existing file', async () => {
    const dir = tempDir('store-force')
    fs.writeFileSync(path.join(dir, 'f.bin'), 'old')
    const src = path.join(root, 'f.bin')
    const data = randomBytes(100_000)
    fs.writeFileSync(src, data)
    const srv = await startServe(dir, ['--force'])
    try {
      const run = await runCli(['send', src, `127.0.0.1:${srv.port}`, '--insecure'])
      expect(run.code).toBe(0)
      expect(sha256(fs.readFileSync(path.join(dir, 'f.bin')))).toBe(sha256(data))
    } finally {
      expect(await stop(srv)).toBe(0)
    }
  }, 60_000)

  it('sends stdin; serve - writes it to stdout and exits after that one transfer', async () => {
    const data = randomBytes(2 * 1024 * 1024 + 17)
    const srv = await startServe('-')
    const run = await runCli(['send', '-', `127.0.0.1:${srv.port}`, '--pin', srv.fingerprint], data)
    expect(run.code).toBe(0)
    expect(run.stdout).toContain("written to the receiver's stdout")
    expect(await srv.exited).toBe(0)
    expect(sha256(Buffer.from(srv.out(), 'latin1'))).toBe(sha256(data))
    expect(srv.err()).toContain('verified; written to stdout')
  }, 60_000)

  it('stores stdin under --name, or a name the receiver picks', async () => {
    const dir = tempDir('store-stdin')
    const srv = await startServe(dir)
    try {
      const data = randomBytes(300_000)
      const named = await runCli(['send', '-', `127.0.0.1:${srv.port}`, '--insecure', '--name', 'piped.bin'], data)
      expect(named.code).toBe(0)
      expect(sha256(fs.readFileSync(path.join(dir, 'piped.bin')))).toBe(sha256(data))
      const unnamed = await runCli(['send', '-', `127.0.0.1:${srv.port}`, '--insecure'], Buffer.from('hello\n'))
      expect(unnamed.code).toBe(0)
      const picked = /stored as (stdin-[0-9-]+-[0-9a-f]{4})/.exec(unnamed.stdout)![1]!
      expect(fs.readFileSync(path.join(dir, picked), 'utf8')).toBe('hello\n')
      // An empty stdin is a valid (empty) file.
      const empty = await runCli(['send', '-', `127.0.0.1:${srv.port}`, '--insecure', '--name', 'empty'], Buffer.alloc(0))
      expect(empty.code).toBe(0)
      expect(fs.statSync(path.join(dir, 'empty')).size).toBe(0)
    } finally {
      expect(await stop(srv)).toBe(0)
    }
  }, 60_000)

  it('refuses path traversal: the sender checks --name, and the receiver refuses such names whoever sends them', async () => {
    const dir = tempDir('store-trav')
    const src = path.join(root, 'x.bin')
    fs.writeFileSync(src, 'x')
    const cli = await runCli(['send', src, '127.0.0.1:9', '--insecure', '--name', '../evil'])
    expect(cli.code).toBe(2)
    expect(cli.stderr).toContain('path separator')
    const srv = await startServe(dir)
    try {
      for (const name of ['../evil', '..', 'a/b', 'a\\b', '/etc/passwd', '.']) {
        const out = new OutgoingTransfer()
        const reply = await rawSend(srv.port, [out.start({ name, size: 1 }), ...out.data(Buffer.from('x')), out.end().frame])
        expect(reply).toMatchObject({ ok: false, code: 'STOQ_ERR_INVALID_ARG' })
      }
      expect(fs.readdirSync(dir)).toEqual([])
      expect(fs.existsSync(path.join(root, 'evil'))).toBe(false)
    } finally {
      await stop(srv)
    }
  }, 60_000)

  it('a SHA-256 that does not match the data fails loudly on the receiver and nothing is stored', async () => {
    const dir = tempDir('store-mismatch')
    const srv = await startServe(dir, ['--once'])
    // A sender that announces the hash of other content than it sends.
    const data = randomBytes(200_000)
    const wrong = { bytes: data.length, sha256: sha256(randomBytes(200_000)) }
    const header = Buffer.concat([TRANSFER_MAGIC, encodeFrame(FRAME_HEADER, Buffer.from(JSON.stringify({ v: 1, name: 'bad.bin', size: data.length })))])
    const reply = await rawSend(srv.port, [header, encodeFrame(FRAME_DATA, data), encodeFrame(FRAME_END, Buffer.from(JSON.stringify(wrong)))])
    expect(reply).toMatchObject({ ok: false, code: 'STOQ_ERR_INTEGRITY' })
    expect((reply as { error: string }).error).toContain('SHA-256 mismatch')
    expect(await srv.exited).toBe(1)
    expect(srv.err()).toContain('STOQ_ERR_INTEGRITY')
    expect(fs.readdirSync(dir)).toEqual([])
  }, 60_000)
})

describe('transfer protocol', () => {
  const frames = (content: Buffer, trailer?: { bytes: number; sha256: string }): Buffer => {
    const out = new OutgoingTransfer()
    const end = out.end.bind(out)
    const parts = [out.start({ name: 'f', size: null }), ...out.data(content)]
    const e = end()
    return Buffer.concat([...parts, trailer ? encodeFrame(FRAME_END, Buffer.from(JSON.stringify(trailer))) : e.frame])
  }
  const errorOf = (f: () => void): unknown => {
    try {
      f()
    } catch (err) {
      return err
    }
    return null
  }

  it('checkTrailer accepts equal figures and rejects a wrong hash or length with STOQ_ERR_INTEGRITY', () => {
    const good = { bytes: 3, sha256: sha256(Buffer.from('abc')) }
    expect(() => checkTrailer(good, { ...good })).not.toThrow()
    for (const bad of [
      { ...good, sha256: sha256(Buffer.from('abd')) },
      { ...good, bytes: 4 },
    ]) {
      const err = errorOf(() => checkTrailer(good, bad))
      expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INTEGRITY')
    }
  })

  it('parses a transfer in any chunking and yields the content and its verified trailer', () => {
    const content = randomBytes(3 * 1024 * 1024 + 5)
    const wire = frames(content)
    for (const step of [1, 3, 5, 4096, wire.length]) {
      if (step === 1) continue // covered on a small transfer below (1-byte steps over 3 MiB are slow)
      const inc = new IncomingTransfer()
      const got: Buffer[] = []
      for (let at = 0; at < wire.length; at += step) {
        for (const ev of inc.push(wire.subarray(at, at + step))) if (ev.kind === 'data') got.push(Buffer.from(ev.data))
      }
      expect(inc.finish()).toEqual({ bytes: content.length, sha256: sha256(content) })
      expect(sha256(Buffer.concat(got))).toBe(sha256(content))
    }
    const small = frames(Buffer.from('hello'))
    const inc = new IncomingTransfer()
    for (const b of small) inc.push(Uint8Array.of(b))
    expect(inc.finish().sha256).toBe(sha256(Buffer.from('hello')))
  })

  it('rejects a wrong trailer, a truncated stream and malformed frames with typed errors', () => {
    const content = Buffer.from('some content')
    const wrongHash = errorOf(() => new IncomingTransfer().push(frames(content, { bytes: content.length, sha256: sha256(Buffer.from('other')) })))
    expect(StoqError.isInstance(wrongHash) && wrongHash.code).toBe('STOQ_ERR_INTEGRITY')
    const wrongLength = errorOf(() => new IncomingTransfer().push(frames(content, { bytes: 99, sha256: sha256(content) })))
    expect(StoqError.isInstance(wrongLength) && wrongLength.code).toBe('STOQ_ERR_INTEGRITY')

    const wire = frames(content)
    const truncated = new IncomingTransfer()
    truncated.push(wire.subarray(0, wire.length - 10))
    const err = errorOf(() => truncated.finish())
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_PROTOCOL')

    const header = encodeFrame(FRAME_HEADER, Buffer.from('{"v":1,"name":"f","size":null}'))
    for (const bad of [
      Buffer.from('HTTP/1.1 200'), // not the magic
      Buffer.concat([TRANSFER_MAGIC, encodeFrame(FRAME_DATA, Buffer.from('x'))]), // data before header
      Buffer.concat([TRANSFER_MAGIC, header, encodeFrame(9, Buffer.from('x'))]), // unknown frame type
      Buffer.concat([TRANSFER_MAGIC, header, Buffer.from([FRAME_DATA, 0xff, 0xff, 0xff, 0xff])]), // oversized frame
      Buffer.concat([TRANSFER_MAGIC, encodeFrame(FRAME_HEADER, Buffer.from('not json'))]),
      Buffer.concat([wire, Buffer.from('x')]), // data after END
    ]) {
      const e = errorOf(() => new IncomingTransfer().push(bad))
      expect(StoqError.isInstance(e) && e.code).toBe('STOQ_ERR_PROTOCOL')
    }
  })

  it('accepts plain names only', () => {
    for (const ok of ['a.bin', 'report 2024.pdf', '..hidden', 'x'.repeat(255)]) expect(validateTransferName(ok)).toBe(ok)
    for (const bad of ['', '.', '..', '../x', 'a/b', 'a\\b', 'x'.repeat(256), 'a\nb', 'a\u0000b']) {
      const e = errorOf(() => validateTransferName(bad))
      expect(StoqError.isInstance(e) && e.code).toBe('STOQ_ERR_INVALID_ARG')
    }
  })
})
