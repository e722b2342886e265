import dgram from 'node:dgram'
import { waitFor as kitWaitFor } from '@stoq/compliance-tests'
import { StoqError, type SocketAddress, type UdpIo, type UdpReceiver } from '@stoq/interface'
import { afterEach, expect } from 'vitest'

/** What the worker backends' tests share (test/worker-io.test.ts, test/uring-io.test.ts). */

/** Records every event of a UdpIo. */
export class Recorder implements UdpReceiver {
  readonly packets: { data: Uint8Array; segmentSize: number; from: SocketAddress }[] = []
  readonly completions: number[] = []
  readonly errors: Error[] = []
  drains = 0
  onPacketHook: ((data: Uint8Array) => void) | null = null

  onPacket(data: Uint8Array, segmentSize: number, from: SocketAddress): void {
    this.onPacketHook?.(data)
    this.packets.push({ data: new Uint8Array(data), segmentSize, from })
  }
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
  /** The datagrams received, GRO buffers split at their segment size. */
  datagrams(): Uint8Array[] {
    const out: Uint8Array[] = []
    for (const { data, segmentSize } of this.packets) {
      for (let off = 0; off < data.length; off += segmentSize) out.push(data.subarray(off, Math.min(off + segmentSize, data.length)))
      if (data.length === 0) out.push(data)
    }
    return out
  }
}

export function payload(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) bytes[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff
  return bytes
}

/** `count` segments of `segmentSize` bytes, each with its own content, and all of them in one buffer. */
export function superBuffer(count: number, segmentSize: number): { data: Uint8Array; segments: Uint8Array[] } {
  const segments = Array.from({ length: count }, (_, i) => payload(segmentSize, 1000 + i))
  const data = new Uint8Array(count * segmentSize)
  for (const [i, s] of segments.entries()) data.set(s, i * segmentSize)
  return { data, segments }
}

/** The kit's `waitFor` in this file's argument order (polls every 2 ms, as the copy that was here did). */
export const waitFor = (what: string, condition: () => boolean, detail: () => string = () => '', limitMs = 10_000): Promise<void> =>
  kitWaitFor(condition, { what, detail, limitMs, everyMs: 2 })

/**
 * Whether this machine runs `io`'s backend: decided by one real bind (closed
 * again). STOQ_ERR_UNSUPPORTED says no, with its message; any other error is thrown.
 */
export async function probeByBinding(io: UdpIo, detail: () => string): Promise<{ ok: boolean; detail: string }> {
  try {
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, new Recorder())
    return { ok: true, detail: detail() }
  } catch (err) {
    if (StoqError.isInstance(err) && err.code === 'STOQ_ERR_UNSUPPORTED') return { ok: false, detail: err.message }
    throw err
  } finally {
    await io.close()
  }
}

export interface Closable {
  close(): Promise<void>
}

/** A list whose entries are closed after each test (call at the top level of a test file). */
export function closedAfterEach(): Closable[] {
  const opened: Closable[] = []
  afterEach(async () => {
    for (const io of opened.splice(0)) await io.close()
  })
  return opened
}

/** Bind `io` to an ephemeral port of `host` with a Recorder; `io` is closed after the test. */
export async function bindRecorded<T extends UdpIo>(io: T, opened: Closable[], host = '127.0.0.1'): Promise<{ io: T; rec: Recorder; address: SocketAddress }> {
  opened.push(io)
  const rec = new Recorder()
  const address = await io.bind({ host, port: 0, ipv6Only: false }, rec)
  return { io, rec, address }
}

/** A plain `node:dgram` IPv4 socket on 127.0.0.1, closed after the test. */
export async function plainSender(opened: Closable[]): Promise<dgram.Socket> {
  const sender = dgram.createSocket('udp4')
  opened.push({ close: () => new Promise<void>((resolve) => sender.close(() => resolve())) })
  await new Promise<void>((resolve) => sender.bind(0, '127.0.0.1', resolve))
  return sender
}

/** Whether a plain socket can bind 127.0.0.1:port exclusively right now (it is closed again). */
export async function portBindable(port: number): Promise<boolean> {
  const s = dgram.createSocket('udp4')
  const ok = await new Promise<boolean>((resolve) => {
    s.once('error', () => resolve(false))
    s.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(true))
  })
  await new Promise<void>((resolve) => {
    try {
      s.close(() => resolve())
    } catch {
      resolve() // never bound
    }
  })
  return ok
}

/**
 * Check that functions run from their source text in an eval worker
 * (`fn.toString()`) are self-contained: no require call or bundler helper a build could rewrite.
 */
export function expectSelfContained(...fns: ((...args: never[]) => unknown)[]): void {
  for (const fn of fns) {
    const text = fn.toString()
    expect(text).not.toMatch(/\brequire\s*\(/)
    expect(text).not.toMatch(/\b__\w+/)
    expect(text).not.toMatch(/\bimport\s*\(/)
  }
}
