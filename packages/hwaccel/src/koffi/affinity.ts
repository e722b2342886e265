import { createRequire } from 'node:module'
import os from 'node:os'

/**
 * The C library calls of the affinity and detection code, bound through koffi
 * in this module (not in `libc.ts`): sched_getaffinity / sched_setaffinity /
 * gettid, and the shared loader that `ethtool.ts` uses too. Everything loads
 * lazily on first use, so importing `@stoq/hwaccel` never fails where koffi's
 * native module or the C library cannot be loaded: callers get a reason.
 * Module state is per thread (each worker imports its own copy), which is
 * what thread-scoped calls such as sched_setaffinity(0, ...) want.
 */

export type Koffi = typeof import('koffi').default
export type KoffiLibrary = ReturnType<Koffi['load']>
export type KoffiFunction = ReturnType<KoffiLibrary['func']>

/** Bits in glibc's cpu_set_t (CPU_SETSIZE); the set is 128 bytes. */
export const CPU_SETSIZE = 1024
const CPU_SET_BYTES = CPU_SETSIZE / 8

/** glibc first, then musl (x86_64, aarch64), then the unversioned name. */
const LIBC_NAMES = ['libc.so.6', 'libc.musl-x86_64.so.1', 'libc.musl-aarch64.so.1', 'libc.so']

/** SYS_gettid per architecture, for C libraries without a gettid() wrapper (glibc < 2.30). */
const SYS_GETTID: Partial<Record<string, number>> = { x64: 186, arm64: 178, ia32: 224, arm: 224, riscv64: 178, ppc64: 207, s390x: 236 }

export type SystemLibcResult = { ok: true; koffi: Koffi; lib: KoffiLibrary; name: string } | { ok: false; reason: string }

let koffiCached: { ok: true; koffi: Koffi } | { ok: false; reason: string } | null = null
let libcCached: SystemLibcResult | null = null

/** koffi's native module, loaded once per thread through createRequire. Never throws. */
export function loadKoffiModule(): { ok: true; koffi: Koffi } | { ok: false; reason: string } {
  if (koffiCached !== null) return koffiCached
  try {
    const require = createRequire(import.meta.url)
    koffiCached = { ok: true, koffi: require('koffi') as Koffi }
  } catch (err) {
    koffiCached = { ok: false, reason: `koffi cannot be loaded: ${messageOf(err)}` }
  }
  return koffiCached
}

/** The C library through koffi, loaded once per thread. Linux only. Never throws. */
export function loadSystemLibc(): SystemLibcResult {
  if (libcCached !== null) return libcCached
  if (process.platform !== 'linux') {
    libcCached = { ok: false, reason: `Linux-only (platform is ${process.platform})` }
    return libcCached
  }
  const k = loadKoffiModule()
  if (!k.ok) {
    libcCached = k
    return libcCached
  }
  const failures: string[] = []
  for (const name of LIBC_NAMES) {
    try {
      libcCached = { ok: true, koffi: k.koffi, lib: k.koffi.load(name), name }
      return libcCached
    } catch (err) {
      failures.push(`${name}: ${messageOf(err)}`)
    }
  }
  libcCached = { ok: false, reason: `no C library could be loaded through koffi (${failures.join('; ')})` }
  return libcCached
}

interface AffinityCalls {
  koffi: Koffi
  getaffinity: KoffiFunction
  setaffinity: KoffiFunction
  gettid: () => number
  /** One cpu_set_t, reused: the calls are synchronous. */
  set: Buffer
}

let callsCached: { ok: true; calls: AffinityCalls } | { ok: false; reason: string } | null = null

function affinityCalls(): { ok: true; calls: AffinityCalls } | { ok: false; reason: string } {
  if (callsCached !== null) return callsCached
  const libc = loadSystemLibc()
  if (!libc.ok) {
    callsCached = libc
    return callsCached
  }
  const { koffi, lib, name } = libc
  try {
    const getaffinity = lib.func('int sched_getaffinity(int pid, size_t cpusetsize, _Out_ void *mask)')
    const setaffinity = lib.func('int sched_setaffinity(int pid, size_t cpusetsize, const void *mask)')
    let gettid: () => number
    try {
      const f = lib.func('int gettid(void)')
      gettid = () => f() as number
    } catch {
      const nr = SYS_GETTID[process.arch]
      if (nr === undefined) throw new Error(`${name} has no gettid() and SYS_gettid is unknown for ${process.arch}`)
      const syscall = lib.func('long syscall(long number, ...)')
      gettid = () => Number(syscall(nr))
    }
    callsCached = { ok: true, calls: { koffi, getaffinity, setaffinity, gettid, set: Buffer.alloc(CPU_SET_BYTES) } }
  } catch (err) {
    callsCached = { ok: false, reason: `sched_getaffinity/sched_setaffinity do not resolve in ${name}: ${messageOf(err)}` }
  }
  return callsCached
}

export type AffinityResult = { ok: true; cpus: number[] } | { ok: false; errno: number | null; reason: string }

/** sched_getaffinity(0, ...) for the calling thread. Never throws. */
export function sysGetAffinity(): AffinityResult {
  const c = affinityCalls()
  if (!c.ok) return { ok: false, errno: null, reason: c.reason }
  const { calls } = c
  calls.set.fill(0)
  const rc = calls.getaffinity(0, CPU_SET_BYTES, calls.set) as number
  if (rc !== 0) {
    const errno = calls.koffi.errno() || 0
    return { ok: false, errno, reason: `sched_getaffinity failed: ${errnoName(errno)}` }
  }
  const cpus: number[] = []
  for (let byte = 0; byte < CPU_SET_BYTES; byte++) {
    const bits = calls.set[byte] ?? 0
    if (bits === 0) continue
    for (let bit = 0; bit < 8; bit++) if ((bits >> bit) & 1) cpus.push(byte * 8 + bit)
  }
  return { ok: true, cpus }
}

/**
 * sched_setaffinity(0, ...) for the calling thread, with CPUs already checked
 * to lie in [0, CPU_SETSIZE). Returns 0, the errno, or a reason string when the
 * call cannot be made at all. Never throws.
 */
export function sysSetAffinity(cpus: readonly number[]): { ok: true } | { ok: false; errno: number | null; reason: string } {
  const c = affinityCalls()
  if (!c.ok) return { ok: false, errno: null, reason: c.reason }
  const { calls } = c
  calls.set.fill(0)
  for (const cpu of cpus) {
    const byte = cpu >> 3
    calls.set[byte] = (calls.set[byte] ?? 0) | (1 << (cpu & 7))
  }
  const rc = calls.setaffinity(0, CPU_SET_BYTES, calls.set) as number
  if (rc === 0) return { ok: true }
  const errno = calls.koffi.errno() || 0
  return { ok: false, errno, reason: `sched_setaffinity failed: ${errnoName(errno)}` }
}

/** The kernel thread id (gettid) of the calling thread. Never throws. */
export function sysGettid(): { ok: true; tid: number } | { ok: false; reason: string } {
  const c = affinityCalls()
  if (!c.ok) return c
  try {
    const tid = c.calls.gettid()
    return tid > 0 ? { ok: true, tid } : { ok: false, reason: `gettid failed: ${errnoName(c.calls.koffi.errno())}` }
  } catch (err) {
    return { ok: false, reason: `gettid failed: ${messageOf(err)}` }
  }
}

/** `EINVAL`-style name of an errno number. */
export function errnoName(errno: number): string {
  // Linux aliases: the kernel's own names win (EOPNOTSUPP over ENOTSUP, EAGAIN over EWOULDBLOCK).
  for (const name of ['EOPNOTSUPP', 'EAGAIN']) {
    if ((os.constants.errno as Record<string, number>)[name] === errno) return name
  }
  for (const [name, value] of Object.entries(os.constants.errno)) {
    if (value === errno) return name
  }
  return `errno ${errno}`
}

/** One-line message of anything thrown (module errors carry a multi-line require stack). */
export function messageOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ')
}
