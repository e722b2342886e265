import { createRequire } from 'node:module'
import os from 'node:os'

/**
 * The only place that touches koffi. Everything is loaded lazily on first use,
 * so that importing `@stoq/hwaccel` never fails on a machine where koffi's
 * native module or libc cannot be loaded: callers get a reason instead.
 */

export type Koffi = typeof import('koffi').default
type KoffiFunction = ReturnType<ReturnType<Koffi['load']>['func']>

// Linux socket option numbers (include/uapi/asm-generic/socket.h, include/uapi/linux/udp.h).
export const SOL_SOCKET = 1
export const SO_SNDBUF = 7
export const SO_RCVBUF = 8
/** Like SO_SNDBUF but ignores net.core.wmem_max; needs CAP_NET_ADMIN. */
export const SO_SNDBUFFORCE = 32
/** Like SO_RCVBUF but ignores net.core.rmem_max; needs CAP_NET_ADMIN. */
export const SO_RCVBUFFORCE = 33
export const SOL_UDP = 17
/** Per-socket (or per-message, as a cmsg) GSO segment size for UDP sends (Linux 4.18+). */
export const UDP_SEGMENT = 103
/** Coalesce received datagrams into one buffer, segment size reported as a cmsg (Linux 5.0+). */
export const UDP_GRO = 104

/** C libraries tried in order: glibc, then musl (x86_64 and aarch64), then the unversioned name. */
const LIBC_NAMES = ['libc.so.6', 'libc.musl-x86_64.so.1', 'libc.musl-aarch64.so.1', 'libc.so']

export interface Libc {
  readonly koffi: Koffi
  /** Which file was loaded, e.g. `libc.so.6`. */
  readonly name: string
  /** setsockopt with an int value. Returns 0, or the errno on failure. */
  setIntOption(fd: number, level: number, option: number, value: number): number
  /** getsockopt of an int value. Returns the value, or `-errno` on failure. */
  getIntOption(fd: number, level: number, option: number): number
  /** True when libc exports `name` (resolved through koffi, never called). */
  hasSymbol(name: string, prototype: string): boolean
}

export type LibcResult = { ok: true; libc: Libc } | { ok: false; reason: string }

let cached: LibcResult | null = null
let koffiCached: { ok: true; koffi: Koffi } | { ok: false; reason: string } | null = null

/** Load koffi's native module once. Never throws. */
export function loadKoffi(): { ok: true; koffi: Koffi } | { ok: false; reason: string } {
  if (koffiCached !== null) return koffiCached
  try {
    const require = createRequire(import.meta.url)
    const koffi = require('koffi') as Koffi
    koffiCached = { ok: true, koffi }
  } catch (err) {
    koffiCached = { ok: false, reason: `koffi cannot be loaded: ${errorMessage(err)}` }
  }
  return koffiCached
}

/** Load libc through koffi once and bind the few calls STOQ uses. Never throws. */
export function loadLibc(): LibcResult {
  if (cached !== null) return cached
  if (process.platform !== 'linux') {
    cached = { ok: false, reason: `the koffi socket calls are Linux-only (platform is ${process.platform})` }
    return cached
  }
  const k = loadKoffi()
  if (!k.ok) {
    cached = k
    return cached
  }
  const koffi = k.koffi
  const failures: string[] = []
  for (const name of LIBC_NAMES) {
    try {
      const lib = koffi.load(name)
      cached = { ok: true, libc: bind(koffi, lib, name) }
      return cached
    } catch (err) {
      failures.push(`${name}: ${errorMessage(err)}`)
    }
  }
  cached = { ok: false, reason: `no C library could be loaded through koffi (${failures.join('; ')})` }
  return cached
}

function bind(koffi: Koffi, lib: ReturnType<Koffi['load']>, name: string): Libc {
  const setsockopt: KoffiFunction = lib.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)')
  const getsockopt: KoffiFunction = lib.func('int getsockopt(int fd, int level, int optname, _Inout_ void *optval, _Inout_ uint32_t *optlen)')
  // Buffers handed to koffi are module-owned and live as long as the bindings:
  // the calls are synchronous, so one pair serves every call.
  const value = Buffer.alloc(4)
  const length: [number] = [4]
  return {
    koffi,
    name,
    setIntOption(fd, level, option, v) {
      value.writeInt32LE(v | 0, 0)
      const rc = setsockopt(fd, level, option, value, 4) as number
      return rc === 0 ? 0 : koffi.errno() || -1
    },
    getIntOption(fd, level, option) {
      value.writeInt32LE(0, 0)
      length[0] = 4
      const rc = getsockopt(fd, level, option, value, length) as number
      if (rc !== 0) return -(koffi.errno() || 1)
      return value.readInt32LE(0)
    },
    hasSymbol(_symbol, prototype) {
      try {
        lib.func(prototype)
        return true
      } catch {
        return false
      }
    },
  }
}

/** `EPERM`-style name for an errno number. */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(os.constants.errno)) {
    if (value === errno) return name
  }
  return `errno ${errno}`
}

export function errorMessage(err: unknown): string {
  // One line: module-resolution errors carry a multi-line require stack.
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ')
}

/** The eventfd calls the UDP worker backend makes on the main thread, which owns the eventfd. */
export interface EventFdCalls {
  /** eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC): the new fd, or `-errno`. */
  open(): number
  /**
   * Add 1 to the counter, which wakes a thread polling the fd. Returns 0, or
   * the errno (EAGAIN: the counter is saturated, so the poller is due to wake anyway).
   */
  signal(fd: number): number
  /** close(2) of a descriptor this process owns (the eventfd, or a socket a dead worker left open). */
  close(fd: number): void
  /** munmap(2) of memory a dead worker left mapped (the uring worker's rings). */
  unmap(address: number, length: number): void
}

/** Bind eventfd / write / close through koffi (Linux). Throws when a symbol is missing. */
export function bindEventFdCalls(libc: Libc): EventFdCalls {
  const koffi = libc.koffi
  const lib = koffi.load(libc.name)
  const eventfd: KoffiFunction = lib.func('int eventfd(uint32_t value, int flags)')
  const write: KoffiFunction = lib.func('int64_t write(int fd, const void *buffer, uint64_t count)')
  const close: KoffiFunction = lib.func('int close(int fd)')
  const munmap: KoffiFunction = lib.func('int munmap(void *address, size_t length)')
  const EFD_NONBLOCK = 0o4000
  const EFD_CLOEXEC = 0o2000000
  // Memory that never moves, written once: the uint64 1 (little-endian, as on every Linux target koffi ships for here).
  const one = new Uint8Array(new SharedArrayBuffer(8))
  one[0] = 1
  return {
    open() {
      const fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) as number
      return fd >= 0 ? fd : -(koffi.errno() || 1)
    },
    signal(fd) {
      return Number(write(fd, one, 8)) === 8 ? 0 : koffi.errno() || -1
    },
    close(fd) {
      close(fd)
    },
    unmap(address, length) {
      munmap(address, length)
    },
  }
}
