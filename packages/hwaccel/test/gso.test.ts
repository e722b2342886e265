import { spawn } from 'node:child_process'
import dgram from 'node:dgram'
import { fileURLToPath } from 'node:url'
import { udpIoTests, waitFor as kitWaitFor } from '@stoq/compliance-tests'
import { StoqError, type SocketAddress, type UdpReceiver } from '@stoq/interface'
import { afterEach, describe, expect, it } from 'vitest'
import {
  DgramUdpIo,
  GSO_MAX_SEGMENTS,
  GSO_MAX_WRITE_BYTES_IPV4,
  GsoUdpIo,
  type GsoUdpIoOptions,
  probeGsoSupport,
  probeWorkerSupport,
  udpIoAuto,
} from '../src/index.js'

/** The machine-wide probe decides what this file can expect; nothing below assumes GSO without it. */
const support = await probeGsoSupport()

function payload(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) bytes[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff
  return bytes
}

/** `count` segments of `segmentSize` bytes, the last `lastSize` bytes, each with its own content. */
function superBuffer(count: number, segmentSize: number, lastSize = segmentSize): { data: Uint8Array; segments: Uint8Array[] } {
  const segments = Array.from({ length: count }, (_, i) => payload(i === count - 1 ? lastSize : segmentSize, count * 1000 + i))
  const data = new Uint8Array(segments.reduce((n, s) => n + s.length, 0))
  let off = 0
  for (const s of segments) {
    data.set(s, off)
    off += s.length
  }
  return { data, segments }
}

class Events implements UdpReceiver {
  readonly completions: number[] = []
  readonly errors: Error[] = []
  drains = 0
  onPacket(): void {}
  onBatchEnd(): void {}
  onSendComplete(token: number): void {
    this.completions.push(token)
  }
  onDrain(): void {
    this.drains++
  }
  onError(err: Error): void {
    this.errors.push(err)
  }
}

/** The kit's `waitFor` in this file's argument order (polls every 1 ms, as the copy that was here did). */
const waitFor = (what: string, condition: () => boolean, limitMs = 10_000): Promise<void> => kitWaitFor(condition, { what, limitMs, everyMs: 1 })

const opened: { close(): Promise<void> | void }[] = []
afterEach(async () => {
  for (const x of opened.splice(0)) await x.close()
})

/** A plain `node:dgram` receiver, independent of the backend under test. */
async function plainReceiver(): Promise<{ address: SocketAddress; got: Buffer[] }> {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 })
  const got: Buffer[] = []
  socket.on('message', (msg) => got.push(msg))
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve))
  opened.push({ close: () => new Promise<void>((resolve) => socket.close(() => resolve())) })
  return { address: { address: '127.0.0.1', port: socket.address().port, family: 'IPv4' }, got }
}

async function gso(options: Partial<GsoUdpIoOptions> = {}): Promise<{ io: GsoUdpIo; events: Events }> {
  const io = new GsoUdpIo(options)
  opened.push(io)
  const events = new Events()
  await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, events)
  return { io, events }
}

if (support.ok) {
  udpIoTests('gso', { create: () => new GsoUdpIo() })
}

describe.skipIf(!support.ok)('GsoUdpIo on this machine (GSO probe passed)', () => {
  it('declares backend gso and 64 segments', () => {
    const io = new GsoUdpIo()
    expect(io.backend).toBe('gso')
    expect(io.maxSegments).toBe(GSO_MAX_SEGMENTS)
    expect(io.maxSegments).toBe(64)
    expect(io.stats().backend).toBe('gso')
  })

  it('delivers a super-buffer of k segments as k datagrams, exact and in order, to a plain dgram socket', async () => {
    const rx = await plainReceiver()
    const { io, events } = await gso()
    const cases: [number, number, number][] = [
      // [segments, segmentSize, last segment size]
      [2, 1200, 1200],
      [3, 1200, 17],
      [17, 1350, 1350],
      [54, 1200, 1200], // 64800 bytes: one write
      [64, 1000, 999], // 63999 bytes: one write of the maximum segment count
    ]
    const expected: Uint8Array[] = []
    // One case at a time: at most 64 datagrams queued at the receiver fit
    // Linux's default 208 KiB receive buffer, so none can be dropped there.
    for (const [token, [k, size, last]] of cases.entries()) {
      const sb = superBuffer(k, size, last)
      expected.push(...sb.segments)
      io.send(sb.data, size, rx.address, token)
      await waitFor(`${expected.length} datagrams`, () => rx.got.length >= expected.length)
    }
    await waitFor('every completion', () => events.completions.length === cases.length)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(rx.got.length).toBe(expected.length)
    for (const [i, d] of rx.got.entries()) expect(new Uint8Array(d), `datagram ${i}`).toEqual(expected[i])
    expect(events.completions).toEqual([0, 1, 2, 3, 4])
    const stats = io.stats()
    expect(stats).toMatchObject({
      backend: 'gso',
      sendCalls: cases.length,
      gsoWrites: cases.length,
      packetsSent: expected.length,
      bytesSent: expected.reduce((n, d) => n + d.length, 0),
      sendErrors: 0,
      deferredWrites: 0,
    })
    expect(events.errors).toEqual([])
  })

  it('splits a super-buffer larger than one UDP payload (64 x 1200) into writes the kernel accepts', async () => {
    const rx = await plainReceiver()
    const { io, events } = await gso()
    const sb = superBuffer(64, 1200)
    expect(sb.data.length).toBeGreaterThan(GSO_MAX_WRITE_BYTES_IPV4)
    expect(io.send(sb.data, 1200, rx.address, 42)).toBe(true)
    await waitFor('64 datagrams', () => rx.got.length >= 64)
    await waitFor('the completion', () => events.completions.length === 1)
    for (const [i, d] of rx.got.entries()) expect(new Uint8Array(d), `datagram ${i}`).toEqual(sb.segments[i])
    expect(events.completions).toEqual([42])
    // 54 segments (64800 bytes) + 10.
    expect(io.stats()).toMatchObject({ sendCalls: 2, gsoWrites: 2, packetsSent: 64, bytesSent: 76800, sendErrors: 0 })
    expect(io.pendingSends).toBe(0)
  })

  it('keeps UDP_SEGMENT right when segment sizes and single datagrams interleave', async () => {
    const rx = await plainReceiver()
    const { io, events } = await gso()
    const plan: [Uint8Array, number][] = []
    const expected: Uint8Array[] = []
    const add = (k: number, size: number, last = size): void => {
      const sb = superBuffer(k, size, last)
      plan.push([sb.data, size])
      expected.push(...sb.segments)
    }
    const single = (length: number, segmentSize: number): void => {
      const d = payload(length, length)
      plan.push([d, segmentSize])
      expected.push(d)
    }
    add(4, 1000)
    single(1400, 1400) // longer than the current UDP_SEGMENT: the option must be cleared first
    add(3, 700, 5)
    single(600, 1500) // fits under UDP_SEGMENT 700: sent as is
    add(5, 1000)
    single(9000, 65_000)
    add(2, 1200)
    for (const [token, [data, size]] of plan.entries()) io.send(data, size, rx.address, token)
    await waitFor(`${expected.length} datagrams`, () => rx.got.length >= expected.length)
    await waitFor('every completion', () => events.completions.length === plan.length)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(rx.got.map((d) => d.length)).toEqual(expected.map((d) => d.length))
    for (const [i, d] of rx.got.entries()) expect(new Uint8Array(d), `datagram ${i}`).toEqual(expected[i])
    expect(events.completions).toEqual(plan.map((_, i) => i))
    const stats = io.stats()
    // 1000, 0, 700, (600 fits), 1000, 0, 1200: six changes.
    expect(stats.segmentSizeChanges).toBe(6)
    expect(stats.sendErrors).toBe(0)
  })

  it('reports tokens in send order, once each, and pendingSends returns to 0', async () => {
    const rx = await plainReceiver()
    const { io, events } = await gso()
    const tokens = [5, 0, 2 ** 31 - 1, 17, 65_536, 3, 3.5e9]
    tokens.forEach((token, i) => {
      if (i % 3 === 0)
        io.send(superBuffer(64, 1200).data, 1200, rx.address, token) // two writes, one token
      else if (i % 3 === 1) io.send(superBuffer(3, 500).data, 500, rx.address, token)
      else io.send(payload(800, i), 800, rx.address, token)
    })
    expect(io.pendingSends).toBeGreaterThan(0)
    await waitFor('every completion', () => io.pendingSends === 0)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(events.completions).toEqual(tokens)
  })

  it('returns false at the high-water mark and calls onDrain once below the low-water mark', async () => {
    const rx = await plainReceiver()
    const { io, events } = await gso({ sendQueueHighWater: 4, sendQueueLowWater: 1 })
    const results: boolean[] = []
    for (let i = 0; i < 6; i++) results.push(io.send(superBuffer(4, 1000).data, 1000, rx.address, i))
    expect(results).toEqual([true, true, true, false, false, false])
    await waitFor('onDrain', () => events.drains === 1)
    await waitFor('every completion', () => io.pendingSends === 0)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(events.drains).toBe(1)
    expect(events.completions).toEqual([0, 1, 2, 3, 4, 5])
  })

  it('reports receive offload honestly, the probe, and effective socket buffers in stats()', async () => {
    const { io } = await gso()
    const stats = io.stats()
    expect(stats.receiveOffload).toBe('none')
    expect(stats.receiveOffloadDetail).toMatch(/no GRO/)
    expect(stats.gsoProbe).toMatch(/arrived as 2 datagrams/)
    expect(stats.sendBufferSize).toBeGreaterThan(0)
    expect(stats.receiveBufferSize).toBeGreaterThan(0)
    expect(stats.socketBuffers).toMatch(/kernel reports send \d+ B, receive \d+ B/)
  })

  it('rejects a segmentSize that is not a positive integer', async () => {
    const rx = await plainReceiver()
    const { io } = await gso()
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      let code = 'none'
      try {
        io.send(payload(100, 1), bad, rx.address, 1)
      } catch (err) {
        code = StoqError.isInstance(err) ? err.code : String(err)
      }
      expect(code, `segmentSize ${bad}`).toBe('STOQ_ERR_INVALID_ARG')
    }
    expect(io.pendingSends).toBe(0)
  })

  it('holds writes that need another UDP_SEGMENT while libuv has queued writes (node --test-udp-no-try-send)', async () => {
    // With this Node test flag every dgram write goes through libuv's queue,
    // which on loopback otherwise happens only when the kernel says EAGAIN.
    const result = await runChild(DEFERRAL_SCENARIO)
    expect(result.errors).toEqual([])
    expect(result.lengths).toEqual(result.expectedLengths)
    expect(result.contentOk).toBe(true)
    expect(result.completions).toEqual([0, 1, 2, 3, 4])
    expect(result.deferredWrites).toBeGreaterThanOrEqual(4)
    expect(result.sendErrors).toBe(0)
  }, 30_000)
})

describe('fallback', () => {
  it('refuses to bind with STOQ_ERR_UNSUPPORTED when the bind-time probe fails in the kernel, and frees the port', async () => {
    // Two 40000-byte segments exceed the largest UDP payload: the kernel
    // rejects the probe write (EMSGSIZE), on any machine.
    const io = new GsoUdpIo({ probeSegmentSize: 40_000 })
    opened.push(io)
    let error: unknown = null
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Events()).catch((err: unknown) => {
      error = err
    })
    expect(StoqError.isInstance(error)).toBe(true)
    expect((error as StoqError).code).toBe('STOQ_ERR_UNSUPPORTED')
    expect((error as StoqError<{ feature: string }>).data.feature).toBe('gso')
    expect((error as Error).message).toMatch(support.ok ? /EMSGSIZE/ : /./)
    expect(io.localAddress).toBeNull()
    // The caller's fallback: the portable backend binds and works.
    const fallback = new DgramUdpIo()
    opened.push(fallback)
    await fallback.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Events())
    expect(fallback.backend).toBe('dgram')
  })

  it('udpIoAuto walks the endpoint order: the gro worker where it binds, then GSO from the probe, dgram when GSO is disabled', async () => {
    const worker = await probeWorkerSupport()
    const auto = await udpIoAuto()
    expect(auto.backend).toBe(worker.ok ? 'gro' : support.ok ? 'gso' : 'dgram')
    expect(auto.reason.length).toBeGreaterThan(0)
    const io = auto()
    opened.push(io)
    expect(io.backend).toBe(auto.backend)
    expect(io.stats().backend).toBe(auto.backend)
    expect(io.maxSegments).toBe(worker.ok || support.ok ? 64 : 1)

    const noWorker = await udpIoAuto({ disableWorker: true })
    expect(noWorker.backend).toBe(support.ok ? 'gso' : 'dgram')
    expect(noWorker.reason).toMatch(/gro worker disabled/)
    const io1 = noWorker()
    opened.push(io1)
    expect(io1.backend).toBe(noWorker.backend)

    const off = await udpIoAuto({ disableGso: true })
    expect(off.backend).toBe('dgram')
    expect(off.reason).toMatch(/disabled/)
    const io2 = off()
    opened.push(io2)
    expect(io2.backend).toBe('dgram')
  })

  it.skipIf(support.ok)('GsoUdpIo refuses to bind where the machine probe failed', async () => {
    const io = new GsoUdpIo()
    opened.push(io)
    const code = await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Events()).then(
      () => 'none',
      (err: unknown) => (StoqError.isInstance(err) ? err.code : String(err)),
    )
    expect(code).toBe('STOQ_ERR_UNSUPPORTED')
  })
})

// ---------------------------------------------------------------------------
// A child Node process with --test-udp-no-try-send, running the TypeScript
// sources through a small loader that transpiles them with `typescript`.

const PACKAGE_JSON = fileURLToPath(new URL('../package.json', import.meta.url))
const GSO_IO_URL = new URL('../src/gso-io.ts', import.meta.url).href

const HOOKS = `
import { createRequire } from 'node:module'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
const ts = createRequire(${JSON.stringify(PACKAGE_JSON)})('typescript')
export async function resolve(specifier, context, next) {
  if ((specifier.startsWith('./') || specifier.startsWith('../')) && specifier.endsWith('.js') && context.parentURL?.startsWith('file:')) {
    const url = new URL(specifier.slice(0, -3) + '.ts', context.parentURL)
    if (existsSync(fileURLToPath(url))) return { url: url.href, format: 'module', shortCircuit: true }
  }
  return next(specifier, context)
}
export async function load(url, context, next) {
  if (!url.endsWith('.ts')) return next(url, context)
  const file = fileURLToPath(url)
  const out = ts.transpileModule(readFileSync(file, 'utf8'), {
    fileName: file,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
  })
  return { format: 'module', source: out.outputText, shortCircuit: true }
}
`
const REGISTER = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOKS)}`)});`

const DEFERRAL_SCENARIO = `
import dgram from 'node:dgram'
const { GsoUdpIo } = await import(${JSON.stringify(GSO_IO_URL)})
const pattern = (n, seed) => { const b = new Uint8Array(n); for (let i = 0; i < n; i++) b[i] = (seed * 131 + i * 7) & 0xff; return b }
const rx = dgram.createSocket('udp4')
const got = []
rx.on('message', (m) => got.push(m))
await new Promise((r) => rx.bind(0, '127.0.0.1', r))
const to = { address: '127.0.0.1', port: rx.address().port, family: 'IPv4' }
const completions = []
const errors = []
const io = new GsoUdpIo()
await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, {
  onPacket() {}, onBatchEnd() {}, onDrain() {},
  onSendComplete(t) { completions.push(t) },
  onError(e) { errors.push(String(e)) },
})
const expected = []
const sends = []
const gsoSend = (k, size, last) => {
  const segs = Array.from({ length: k }, (_, i) => pattern(i === k - 1 ? last : size, sends.length * 100 + i))
  const data = new Uint8Array(segs.reduce((n, s) => n + s.length, 0))
  let off = 0; for (const s of segs) { data.set(s, off); off += s.length }
  expected.push(...segs); sends.push([data, size])
}
const single = (n) => { const d = pattern(n, sends.length * 100); expected.push(d); sends.push([d, n]) }
gsoSend(5, 1000, 1000)
single(1400)
gsoSend(3, 700, 9)
single(300)
gsoSend(5, 1000, 123)
sends.forEach(([data, size], token) => io.send(data, size, to, token))
const deadline = Date.now() + 10000
while ((got.length < expected.length || io.pendingSends > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2))
await new Promise((r) => setTimeout(r, 20))
const stats = io.stats()
const contentOk = got.length === expected.length && got.every((d, i) => Buffer.compare(d, Buffer.from(expected[i])) === 0)
await io.close()
rx.close()
process.stdout.write(JSON.stringify({
  lengths: got.map((d) => d.length), expectedLengths: expected.map((d) => d.length), contentOk, completions, errors,
  deferredWrites: stats.deferredWrites, sendErrors: stats.sendErrors,
}))
`

interface ChildResult {
  lengths: number[]
  expectedLengths: number[]
  contentOk: boolean
  completions: number[]
  errors: string[]
  deferredWrites: number
  sendErrors: number
}

function runChild(script: string): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--test-udp-no-try-send', '--no-warnings', '--import', `data:text/javascript,${encodeURIComponent(REGISTER)}`, '--input-type=module', '-e', script],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      if (code !== 0) return reject(new Error(`child exited with ${code}: ${err}`))
      try {
        resolve(JSON.parse(out) as ChildResult)
      } catch {
        reject(new Error(`child printed no result: ${out} ${err}`))
      }
    })
  })
}
