import { readFileSync } from 'node:fs'
import os from 'node:os'
import { StoqInvalidArgumentError, StoqUnsupportedError } from '@stoq/interface'
import { CPU_SETSIZE, errnoName, sysGetAffinity, sysGettid, sysSetAffinity } from './koffi/affinity.js'

/**
 * CPU affinity of the calling thread, for network worker threads that want to
 * stay on one core. Linux only, through sched_getaffinity / sched_setaffinity
 * bound with koffi. Both calls act on the CALLING thread (pid 0 means "this
 * thread" to the kernel), so a worker can pin itself without touching the
 * main thread or its siblings; a thread created afterwards inherits the mask.
 */

/** A failed sched_{get,set}affinity call: STOQ_ERR_UNSUPPORTED with the syscall and errno name. */
export class StoqAffinityError extends StoqUnsupportedError {
  readonly syscall: string
  readonly errno: string
  constructor(syscall: string, errno: string, message: string) {
    super('cpu-affinity', message)
    this.syscall = syscall
    this.errno = errno
  }
}

/**
 * The CPUs the calling thread may run on, ascending.
 * @throws StoqUnsupportedError when not on Linux, or koffi / the C library cannot be loaded.
 * @throws StoqAffinityError when sched_getaffinity fails.
 */
export function getCpuAffinity(): number[] {
  const r = sysGetAffinity()
  if (r.ok) return r.cpus
  if (r.errno === null) throw new StoqUnsupportedError('cpu-affinity', `CPU affinity is unavailable: ${r.reason}`)
  throw new StoqAffinityError('sched_getaffinity', errnoName(r.errno), r.reason)
}

/**
 * Restrict the calling thread to `cpus` (online CPU numbers, at least one).
 * @throws StoqInvalidArgumentError when `cpus` is not a non-empty array of online CPU numbers.
 * @throws StoqUnsupportedError when not on Linux, or koffi / the C library cannot be loaded.
 * @throws StoqAffinityError (code STOQ_ERR_UNSUPPORTED, `errno` e.g. 'EINVAL') when the kernel
 *   refuses the set, e.g. none of the CPUs is allowed by the thread's cpuset.
 */
export function setCpuAffinity(cpus: number[]): void {
  if (!Array.isArray(cpus)) throw new StoqInvalidArgumentError('cpus', 'must be an array of CPU numbers')
  if (cpus.length === 0) throw new StoqInvalidArgumentError('cpus', 'must name at least one CPU')
  const online = getOnlineCpus()
  const onlineSet = new Set(online)
  for (const cpu of cpus) {
    if (typeof cpu !== 'number' || !Number.isInteger(cpu)) {
      throw new StoqInvalidArgumentError('cpus', `${String(cpu)} is not an integer CPU number`)
    }
    if (cpu < 0 || cpu >= CPU_SETSIZE || !onlineSet.has(cpu)) {
      throw new StoqInvalidArgumentError('cpus', `CPU ${cpu} is not online (online CPUs: ${formatCpuList(online)})`)
    }
  }
  const unique = [...new Set(cpus)].sort((a, b) => a - b)
  const r = sysSetAffinity(unique)
  if (r.ok) return
  if (r.errno === null) throw new StoqUnsupportedError('cpu-affinity', `CPU affinity is unavailable: ${r.reason}`)
  const name = errnoName(r.errno)
  const why = name === 'EINVAL' ? ': none of these CPUs is allowed to this thread (cpuset or isolation)' : ''
  throw new StoqAffinityError('sched_setaffinity', name, `sched_setaffinity(${formatCpuList(unique)}) failed with ${name}${why}`)
}

/**
 * The kernel thread id (gettid) of the calling thread, e.g. to find it under
 * /proc/self/task or in `top -H`.
 * @throws StoqUnsupportedError when not on Linux, or koffi / the C library cannot be loaded.
 */
export function currentThreadId(): number {
  const r = sysGettid()
  if (r.ok) return r.tid
  throw new StoqUnsupportedError('cpu-affinity', `gettid is unavailable: ${r.reason}`)
}

/** The online CPUs (/sys/devices/system/cpu/online), else 0..os.cpus().length-1. Never throws. */
export function getOnlineCpus(): number[] {
  try {
    const list = parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8'))
    if (list.length > 0) return list
  } catch {
    // not Linux, or no sysfs: fall through
  }
  const n = Math.max(1, safeCpuCount())
  return Array.from({ length: n }, (_, i) => i)
}

/** Parse a kernel CPU list such as `0-3,6,8-9` into ascending numbers; unparsable parts are skipped. */
export function parseCpuList(text: string): number[] {
  const out = new Set<number>()
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim())
    if (m === null) continue
    const from = Number(m[1])
    const to = m[2] === undefined ? from : Number(m[2])
    for (let cpu = from; cpu <= to && cpu < CPU_SETSIZE; cpu++) out.add(cpu)
  }
  return [...out].sort((a, b) => a - b)
}

/** Format ascending CPU numbers the way the kernel does: `0-3,6`. */
export function formatCpuList(cpus: readonly number[]): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b)
  const parts: string[] = []
  for (let i = 0; i < sorted.length; ) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] as number) + 1) j++
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`)
    i = j + 1
  }
  return parts.join(',')
}

function safeCpuCount(): number {
  try {
    return os.cpus().length
  } catch {
    return 1
  }
}
