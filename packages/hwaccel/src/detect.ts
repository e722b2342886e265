import dgram from 'node:dgram'
import { readFileSync, readdirSync } from 'node:fs'
import os from 'node:os'
import type { UdpIo, UdpIoFactory } from '@stoq/interface'
import { type DgramUdpIoOptions, DgramUdpIo } from './dgram-io.js'
import { DEFAULT_GSO_PROBE_SEGMENT_SIZE, DEFAULT_GSO_PROBE_TIMEOUT_MS, GsoUdpIo, type GsoUdpIoOptions } from './gso-io.js'
import {
  SO_SNDBUFFORCE,
  SOL_SOCKET,
  SOL_UDP,
  UDP_GRO,
  errnoName,
  errorMessage,
  type Koffi,
  loadKoffi,
  loadLibc,
} from './koffi/libc.js'
import { socketFd } from './koffi/socket-fd.js'
import { literalLookup, probeGso } from './koffi/sockets.js'

/** One capability: whether this process can use it, and why (or why not). */
export interface Capability {
  available: boolean
  detail: string
}

export interface CapabilityReport {
  platform: NodeJS.Platform
  arch: string
  /** Kernel release from `os.release()`; `available` is true on Linux. */
  kernel: Capability & { release: string }
  /** koffi's native module; `detail` carries the load error when it fails. */
  koffi: Capability & { version: string | null }
  /** A C library loaded through koffi. */
  libc: Capability
  /** UDP_SEGMENT proven by a real two-segment loopback write received as two datagrams. */
  gso: Capability
  /** The kernel accepts setsockopt(UDP_GRO); says too whether a STOQ backend uses it. */
  gro: Capability
  /** The sendmmsg / recvmmsg symbols resolve in libc through koffi. */
  sendmmsg: Capability
  recvmmsg: Capability
  /** liburing.so.2 loadable through koffi. */
  ioUring: Capability
  /** net.core.{r,w}mem_max and whether SO_*BUFFORCE (CAP_NET_ADMIN) lifts them. */
  socketBuffers: Capability & { rmemMax: number | null; wmemMax: number | null; force: boolean }
  /** NUMA nodes under /sys/devices/system/node. */
  numa: Capability & { nodes: number }
}

export interface DetectOptions {
  /** Segment size of the GSO probe. */
  probeSegmentSize: number
  /** How long the GSO probe waits for its datagrams. */
  probeTimeoutMs: number
}

/**
 * Report what this machine and process can do for UDP I/O, each entry proved
 * where it can be (a real loopback GSO write, a real setsockopt) rather than
 * inferred from a version number. Never throws or rejects.
 */
export async function detectCapabilities(options: Partial<DetectOptions> = {}): Promise<CapabilityReport> {
  const segmentSize = options.probeSegmentSize ?? DEFAULT_GSO_PROBE_SEGMENT_SIZE
  const timeoutMs = options.probeTimeoutMs ?? DEFAULT_GSO_PROBE_TIMEOUT_MS
  const linux = process.platform === 'linux'
  const release = safe(() => os.release(), 'unknown')
  const report: CapabilityReport = {
    platform: process.platform,
    arch: process.arch,
    kernel: {
      available: linux,
      release,
      detail: linux ? `Linux ${release}` : `${process.platform} ${release}: the accelerated paths are Linux-only`,
    },
    koffi: { available: false, version: null, detail: '' },
    libc: { available: false, detail: '' },
    gso: { available: false, detail: '' },
    gro: { available: false, detail: '' },
    sendmmsg: { available: false, detail: '' },
    recvmmsg: { available: false, detail: '' },
    ioUring: { available: false, detail: '' },
    socketBuffers: { available: false, detail: '', rmemMax: null, wmemMax: null, force: false },
    numa: { available: false, detail: '', nodes: 0 },
  }

  const k = loadKoffi()
  if (k.ok) {
    report.koffi = { available: true, version: String(k.koffi.version), detail: `koffi ${k.koffi.version} loaded` }
  } else {
    report.koffi = { available: false, version: null, detail: k.reason }
  }

  const libcResult = loadLibc()
  const libc = libcResult.ok ? libcResult.libc : null
  report.libc = libcResult.ok
    ? { available: true, detail: `${libcResult.libc.name} loaded through koffi` }
    : { available: false, detail: libcResult.reason }
  const noLibc = libcResult.ok ? '' : `unknown: ${libcResult.reason}`

  for (const [key, proto] of [
    ['sendmmsg', 'int sendmmsg(int sockfd, void *msgvec, unsigned int vlen, int flags)'],
    ['recvmmsg', 'int recvmmsg(int sockfd, void *msgvec, unsigned int vlen, int flags, void *timeout)'],
  ] as const) {
    if (libc === null) {
      report[key] = { available: false, detail: noLibc }
    } else {
      const found = safe(() => libc.hasSymbol(key, proto), false)
      report[key] = {
        available: found,
        detail: found
          ? `${key} resolves in ${libc.name} (no STOQ backend batches with it yet)`
          : `${key} does not resolve in ${libc.name}`,
      }
    }
  }

  report.ioUring = detectIoUring(k.ok ? k.koffi : null, k.ok ? '' : k.reason)
  report.numa = detectNuma()

  const rmemMax = readNumber('/proc/sys/net/core/rmem_max')
  const wmemMax = readNumber('/proc/sys/net/core/wmem_max')

  if (libc === null || !linux) {
    const why = libc === null ? noLibc : 'Linux-only'
    report.gso = { available: false, detail: why }
    report.gro = { available: false, detail: why }
    report.socketBuffers = {
      available: rmemMax !== null && wmemMax !== null,
      rmemMax,
      wmemMax,
      force: false,
      detail: `${limitsText(rmemMax, wmemMax)}; SO_*BUFFORCE not tested (${why})`,
    }
    return report
  }

  // Real sockets for the GSO, GRO and SO_*BUFFORCE probes.
  let sender: dgram.Socket | null = null
  try {
    sender = dgram.createSocket({ type: 'udp4', lookup: literalLookup as unknown as NonNullable<dgram.SocketOptions['lookup']> })
    const s = sender
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.bind({ address: '127.0.0.1', port: 0, exclusive: true }, () => {
        s.off('error', reject)
        resolve()
      })
    })
    const fd = socketFd(s)
    if (fd < 0) {
      const why = 'the file descriptor of a dgram socket cannot be read on this Node version'
      report.gso = { available: false, detail: why }
      report.gro = { available: false, detail: why }
      report.socketBuffers = { available: rmemMax !== null, rmemMax, wmemMax, force: false, detail: `${limitsText(rmemMax, wmemMax)}; ${why}` }
      return report
    }
    const gso = await probeGso(s, fd, libc, { segmentSize, timeoutMs, receiverHost: '127.0.0.1' })
    report.gso = { available: gso.ok, detail: `${gso.detail} (127.0.0.1, kernel ${release})` }

    const groErr = libc.setIntOption(fd, SOL_UDP, UDP_GRO, 1)
    report.gro =
      groErr === 0
        ? {
            available: true,
            detail:
              'setsockopt(UDP_GRO) accepted; not used by the gso backend, which receives through libuv: its recvmsg drops ' +
              'the cmsg that carries the GRO segment size',
          }
        : { available: false, detail: `setsockopt(UDP_GRO) refused: ${errnoName(groErr)}` }

    // The same value as the default, so nothing observable changes on this throwaway socket.
    const forceErr = libc.setIntOption(fd, SOL_SOCKET, SO_SNDBUFFORCE, 4 * 1024 * 1024)
    const force = forceErr === 0
    report.socketBuffers = {
      available: rmemMax !== null && wmemMax !== null,
      rmemMax,
      wmemMax,
      force,
      detail: `${limitsText(rmemMax, wmemMax)}; ${
        force ? 'SO_SNDBUFFORCE/SO_RCVBUFFORCE allowed (CAP_NET_ADMIN): sizes above the limits can be set' : `SO_SNDBUFFORCE refused (${errnoName(forceErr)}): sizes are capped at the limits`
      }`,
    }
  } catch (err) {
    const why = `probe socket failed: ${errorMessage(err)}`
    if (report.gso.detail === '') report.gso = { available: false, detail: why }
    if (report.gro.detail === '') report.gro = { available: false, detail: why }
    if (report.socketBuffers.detail === '') {
      report.socketBuffers = { available: rmemMax !== null && wmemMax !== null, rmemMax, wmemMax, force: false, detail: `${limitsText(rmemMax, wmemMax)}; ${why}` }
    }
  } finally {
    const s = sender
    if (s !== null) await new Promise<void>((resolve) => s.close(() => resolve()))
  }
  return report
}

function detectIoUring(koffi: Koffi | null, koffiReason: string): Capability {
  const disabled = readNumber('/proc/sys/kernel/io_uring_disabled')
  const sysctl =
    disabled === null ? 'kernel.io_uring_disabled not present' : `kernel.io_uring_disabled=${disabled}${disabled === 0 ? '' : ' (restricted)'}`
  if (koffi === null) return { available: false, detail: `unknown: ${koffiReason}; ${sysctl}` }
  try {
    const lib = koffi.load('liburing.so.2')
    lib.unload()
    return { available: disabled !== 2, detail: `liburing.so.2 loads through koffi; ${sysctl}; no STOQ backend uses it yet` }
  } catch (err) {
    return { available: false, detail: `liburing.so.2 absent: ${errorMessage(err)}; ${sysctl}` }
  }
}

function detectNuma(): Capability & { nodes: number } {
  try {
    const names = readdirSync('/sys/devices/system/node').filter((n) => /^node\d+$/.test(n))
    names.sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)))
    const parts = names.map((n) => {
      const cpus = safe(() => readFileSync(`/sys/devices/system/node/${n}/cpulist`, 'utf8').trim(), '?')
      return `${n} (cpus ${cpus})`
    })
    return {
      available: names.length > 0,
      nodes: names.length,
      detail: names.length > 0 ? `${names.length} node(s): ${parts.join(', ')}` : 'no node entries in /sys/devices/system/node',
    }
  } catch (err) {
    return { available: false, nodes: 0, detail: `/sys/devices/system/node unreadable: ${errorMessage(err)}` }
  }
}

function readNumber(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim())
    return Number.isFinite(n) ? n : null
  } catch {
    return null
  }
}

function limitsText(rmem: number | null, wmem: number | null): string {
  return `net.core.rmem_max=${rmem ?? 'unreadable'}, net.core.wmem_max=${wmem ?? 'unreadable'}`
}

function safe<T>(fn: () => T, fallback: T): T {
  try {
    return fn()
  } catch {
    return fallback
  }
}

// ---------------------------------------------------------------------------
// Backend choice

export interface UdpIoAutoOptions {
  /** Options of the GSO backend, when it is chosen. */
  gso: Partial<GsoUdpIoOptions>
  /** Options of the dgram backend, when it is chosen. */
  dgram: Partial<DgramUdpIoOptions>
  /** Skip the probe and choose dgram. */
  disableGso: boolean
}

/** A UdpIo factory that says which backend it builds and why. */
export type AutoUdpIoFactory = UdpIoFactory & {
  readonly backend: 'gso' | 'dgram'
  readonly reason: string
}

let gsoProbeOnce: Promise<{ ok: boolean; detail: string }> | null = null

/** The machine-wide GSO probe, run once per process (a loopback write received as two datagrams). */
export function probeGsoSupport(): Promise<{ ok: boolean; detail: string }> {
  gsoProbeOnce ??= detectCapabilities().then((r) => ({ ok: r.gso.available, detail: r.gso.detail }))
  return gsoProbeOnce
}

/**
 * Choose the UDP backend for this machine: the GSO backend when a real GSO
 * probe succeeds (run once per process), else the portable dgram backend.
 * The choice shows in `factory.backend`, `io.backend` and `io.stats().backend`.
 * The GSO backend still proves GSO on each socket at `bind`; a caller that
 * gets `StoqUnsupportedError` there should bind a `DgramUdpIo` instead.
 */
export async function udpIoAuto(options: Partial<UdpIoAutoOptions> = {}): Promise<AutoUdpIoFactory> {
  const dgramOptions = options.dgram ?? {}
  const gsoOptions = options.gso ?? {}
  let backend: 'gso' | 'dgram' = 'dgram'
  let reason: string
  if (options.disableGso === true) {
    reason = 'GSO disabled by option'
  } else {
    const probe = await probeGsoSupport()
    if (probe.ok) backend = 'gso'
    reason = probe.ok ? `GSO probe passed: ${probe.detail}` : `GSO unavailable, dgram fallback: ${probe.detail}`
  }
  const make = backend === 'gso' ? (): UdpIo => new GsoUdpIo(gsoOptions) : (): UdpIo => new DgramUdpIo(dgramOptions)
  return Object.assign(make, { backend, reason }) as AutoUdpIoFactory
}
