import dgram from 'node:dgram'
import { createRequire } from 'node:module'
import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { DgramUdpIo, GsoUdpIo, UringUdpIo, WorkerUdpIo, attachCidSteering, cidSteeringProgram, closeSocketFd, detachCidSteering } from '../src/index.js'
import { Recorder, closedAfterEach, probeByBinding, waitFor } from './helpers.js'

const support = await probeByBinding(new WorkerUdpIo(), () => 'bound')
const opened = closedAfterEach()

const small = { receiveSlots: 16, sendSlots: 16 } as const

async function member(port: number, reusePort = true): Promise<{ io: WorkerUdpIo; rec: Recorder; port: number }> {
  const io = new WorkerUdpIo(small)
  opened.push(io)
  const rec = new Recorder()
  const address = await io.bind({ host: '127.0.0.1', port, ipv6Only: false, reusePort }, rec)
  return { io, rec, port: address.port }
}

async function clients(count: number): Promise<dgram.Socket[]> {
  const out: dgram.Socket[] = []
  for (let i = 0; i < count; i++) {
    const s = dgram.createSocket('udp4')
    opened.push({ close: () => new Promise<void>((resolve) => s.close(() => resolve())) })
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve))
    out.push(s)
  }
  return out
}

/** A QUIC-shaped datagram whose destination connection ID starts with `dcid0` (short or long header). */
function datagram(long: boolean, dcid0: number, client: number, seq: number): Buffer {
  const d = Buffer.alloc(40, 0xaa)
  if (long) {
    d[0] = 0xc0
    d.writeUInt32BE(1, 1) // version
    d[5] = 8 // DCID length
    d[6] = dcid0
  } else {
    d[0] = 0x40
    d[1] = dcid0
  }
  d.writeUInt16BE(client, 20)
  d.writeUInt16BE(seq, 22)
  return d
}

const dcid0 = (d: Uint8Array): number => ((d[0]! & 0x80) !== 0 ? d[6]! : d[1]!)

/**
 * From every client, send one short- and one long-header datagram per first DCID byte in `bytes`;
 * wait until all arrived (between the two sockets), and return what each received.
 */
async function exchange(from: dgram.Socket[], port: number, group: { rec: Recorder }[], bytes: number[]): Promise<number[][]> {
  for (const m of group) m.rec.packets.length = 0
  let seq = 0
  const sends: Promise<void>[] = []
  for (const [c, s] of from.entries()) {
    for (const b of bytes) {
      for (const long of [false, true]) {
        const d = datagram(long, b, c, seq++)
        sends.push(new Promise<void>((resolve, reject) => s.send(d, port, '127.0.0.1', (err) => (err ? reject(err) : resolve()))))
      }
    }
  }
  await Promise.all(sends)
  const total = (): number => group.reduce((n, m) => n + m.rec.datagrams().length, 0)
  await waitFor(
    `${seq} datagrams`,
    () => total() >= seq,
    () => `(got ${total()})`,
  )
  await new Promise((resolve) => setTimeout(resolve, 20))
  expect(total()).toBe(seq)
  return group.map((m) => m.rec.datagrams().map(dcid0))
}

describe.skipIf(!support.ok)(`reuseport steering by connection ID (${support.detail})`, () => {
  it('steers by the first DCID byte, short and long headers, from many client ports; a new table swaps the sockets', async () => {
    const first = await member(0)
    const second = await member(first.port)
    expect(second.port).toBe(first.port)
    expect(first.io.fd).toBeGreaterThan(2)
    expect(second.io.fd).toBeGreaterThan(2)
    expect(first.io.fd).not.toBe(second.io.fd)
    const from = await clients(8)

    // Hashing alone spreads the 8 client ports over both sockets regardless of the DCID.
    attachCidSteering(first.io.fd, [0, 1])
    let [a, b] = await exchange(from, first.port, [first, second], [0, 1])
    expect(a!.length).toBe(16)
    expect(b!.length).toBe(16)
    expect(a!.every((x) => x === 0)).toBe(true)
    expect(b!.every((x) => x === 1)).toBe(true)

    // The byte is taken modulo the table length: 2 and 4 go where 0 goes, 3 where 1 goes.
    ;[a, b] = await exchange(from, first.port, [first, second], [2, 3, 4])
    expect(a!.sort()).toEqual([...Array(16).fill(2), ...Array(16).fill(4)])
    expect(b!.every((x) => x === 3)).toBe(true)

    // Another table replaces the program (attached through the other member of the group).
    attachCidSteering(second.io.fd, [1, 0])
    ;[a, b] = await exchange(from, first.port, [first, second], [0, 1])
    expect(a!.length).toBe(16)
    expect(a!.every((x) => x === 1)).toBe(true)
    expect(b!.every((x) => x === 0)).toBe(true)

    // A dead worker (-1): its datagrams still arrive, wherever the hash puts them; the others stay steered.
    attachCidSteering(first.io.fd, [-1, 1])
    ;[a, b] = await exchange(from, first.port, [first, second], [0, 1])
    expect(a!.length + b!.length).toBe(32)
    expect(b!.filter((x) => x === 1).length).toBe(16)
    expect(a!.every((x) => x === 0)).toBe(true)

    // Detached: back to hashing; detaching twice is ENOENT.
    detachCidSteering(first.io.fd)
    expect(() => detachCidSteering(first.io.fd)).toThrow(
      expect.objectContaining({ code: 'STOQ_ERR_SOCKET', data: expect.objectContaining({ errno: 'ENOENT' }) }),
    )
    ;[a, b] = await exchange(from, first.port, [first, second], [0, 1])
    expect(a!.length + b!.length).toBe(32)
    // Hashing keeps each client port on one socket, so whichever socket gets a client gets both DCIDs.
    expect(a!.includes(1) || b!.includes(0)).toBe(true)

    await first.io.close()
    expect(first.io.fd).toBe(-1)
  })

  it('needs reusePort on every socket of the group: without it the second bind fails with EADDRINUSE', async () => {
    const first = await member(0)
    const io = new WorkerUdpIo(small)
    opened.push(io)
    expect(io.fd).toBe(-1)
    const err = await io.bind({ host: '127.0.0.1', port: first.port, ipv6Only: false }, new Recorder()).catch((e: unknown) => e)
    expect(StoqError.isInstance(err)).toBe(true)
    expect(err).toMatchObject({ code: 'STOQ_ERR_SOCKET', data: { syscall: 'bind', errno: 'EADDRINUSE' } })
    // And a first socket bound without it keeps the port for itself.
    const alone = await member(0, false)
    const err2 = await new WorkerUdpIo(small)
      .bind({ host: '127.0.0.1', port: alone.port, ipv6Only: false, reusePort: true }, new Recorder())
      .catch((e: unknown) => e)
    expect(err2).toMatchObject({ code: 'STOQ_ERR_SOCKET', data: { errno: 'EADDRINUSE' } })
  })

  it('refuses to attach to a socket without a reuseport group, and validates its arguments', async () => {
    const alone = await member(0, false)
    expect(() => attachCidSteering(alone.io.fd, [0])).toThrow(
      expect.objectContaining({ code: 'STOQ_ERR_SOCKET', data: expect.objectContaining({ syscall: 'setsockopt' }) }),
    )
    const bad: [unknown, unknown][] = [
      [-1, [0]],
      [1.5, [0]],
      ['3', [0]],
      [alone.io.fd, []],
      [alone.io.fd, new Array(256).fill(0)],
      [alone.io.fd, [0, 256]],
      [alone.io.fd, [-2]],
      [alone.io.fd, [0.5]],
      [alone.io.fd, 'x'],
    ]
    for (const [fd, table] of bad) {
      expect(() => attachCidSteering(fd as number, table as number[])).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }))
    }
    expect(() => detachCidSteering(-3)).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }))
    expect(() => closeSocketFd(alone.io.fd, 0)).toThrow(expect.objectContaining({ code: 'STOQ_ERR_INVALID_ARG' }))
  })

  it('builds the documented program', () => {
    const p = cidSteeringProgram([1, -1])
    expect(p.length).toBe((6 + 4 + 1) * 8)
    const insn = (i: number) => [p.readUInt16LE(i * 8), p[i * 8 + 2], p[i * 8 + 3], p.readUInt32LE(i * 8 + 4)]
    expect(insn(0)).toEqual([0x30, 0, 0, 0])
    expect(insn(1)).toEqual([0x45, 0, 2, 0x80])
    expect(insn(2)).toEqual([0x30, 0, 0, 6])
    expect(insn(4)).toEqual([0x30, 0, 0, 1])
    expect(insn(5)).toEqual([0x94, 0, 0, 2])
    expect(insn(7)).toEqual([0x06, 0, 0, 1])
    expect(insn(9)).toEqual([0x06, 0, 0, 0xffffffff])
  })

  it('closeSocketFd closes only a UDP socket bound to the expected port', () => {
    // A socket this process owns outright (made through koffi), as a dead worker leaves one.
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi').default
    const lib = koffi.load('libc.so.6')
    const socket = lib.func('int socket(int domain, int type, int protocol)')
    const bind = lib.func('int bind(int fd, void *address, uint32_t length)')
    const getsockname = lib.func('int getsockname(int fd, _Inout_ void *address, _Inout_ uint32_t *length)')
    const fd = socket(2, 2 | 0o2000000, 0) as number
    expect(fd).toBeGreaterThan(2)
    const name = Buffer.alloc(16)
    name.writeUInt16LE(2, 0)
    name.set([127, 0, 0, 1], 4)
    expect(bind(fd, name, 16)).toBe(0)
    const len: [number] = [16]
    expect(getsockname(fd, name, len)).toBe(0)
    const port = name.readUInt16BE(2)
    expect(closeSocketFd(fd, port === 65535 ? 1 : port + 1)).toBe(false)
    expect(getsockname(fd, name, [16])).toBe(0) // still open
    expect(closeSocketFd(fd, port)).toBe(true)
    expect(getsockname(fd, name, [16])).toBe(-1) // closed (EBADF)
    expect(closeSocketFd(fd, port)).toBe(false)
  })
})

const uringSupport = await probeByBinding(new UringUdpIo(), () => 'bound')

describe.skipIf(!uringSupport.ok)(`UringUdpIo with reusePort (${uringSupport.detail})`, () => {
  it('joins a reuseport group, exposes its fd, and is steered like the gro worker', async () => {
    const bindUring = async (port: number): Promise<{ io: UringUdpIo; rec: Recorder; port: number }> => {
      const io = new UringUdpIo(small)
      opened.push(io)
      const rec = new Recorder()
      expect(io.fd).toBe(-1)
      const address = await io.bind({ host: '127.0.0.1', port, ipv6Only: false, reusePort: true }, rec)
      return { io, rec, port: address.port }
    }
    const first = await bindUring(0)
    const second = await bindUring(first.port)
    expect(second.port).toBe(first.port)
    attachCidSteering(first.io.fd, [1, 0])
    const [a, b] = await exchange(await clients(6), first.port, [first, second], [0, 1])
    expect(a!.length).toBe(12)
    expect(a!.every((x) => x === 1)).toBe(true)
    expect(b!.every((x) => x === 0)).toBe(true)
  })
})

describe('the dgram-based backends refuse reusePort', () => {
  for (const [label, make] of [
    ['dgram', () => new DgramUdpIo()],
    ['gso', () => new GsoUdpIo()],
  ] as const) {
    it(`${label}: bind with reusePort rejects with STOQ_ERR_UNSUPPORTED (never silently ignored)`, async () => {
      const io = make()
      opened.push(io)
      const err = await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false, reusePort: true }, new Recorder()).catch((e: unknown) => e)
      expect(err).toMatchObject({ code: 'STOQ_ERR_UNSUPPORTED' })
      expect((err as Error).message).toMatch(/SO_REUSEPORT/)
      // reusePort: false is the default behaviour.
      const ok = make()
      opened.push(ok)
      await expect(ok.bind({ host: '127.0.0.1', port: 0, ipv6Only: false, reusePort: false }, new Recorder())).resolves.toMatchObject({
        port: expect.any(Number),
      })
    })
  }
})
