import os from 'node:os'
import { StoqUnsupportedError } from '@stoq/interface'
import { quinnAvailability } from '@stoq/engine-quinn'
import { WorkerEngine } from './workers/cluster.js'
import { AUTO_WORKERS_MIN_CPUS } from './choice.js'
import type { ResolvedEndpointOptions } from './options.js'
import type { EndpointComponents } from './components.js'

/**
 * What `Endpoint.create` starts: engine workers (`auto`: the `workers: 'auto'` option chose
 * them, so a failure to start them falls back to this thread), or none, with the reason
 * (`note`, empty when workers were not asked for) the endpoint's stats show.
 */
export type WorkerDecision = { workers: WorkerEngine; auto: boolean } | { workers: null; note: string }

/**
 * Decide whether an endpoint runs its connections in engine workers. Throws
 * StoqUnsupportedError when workers were asked for by number and cannot run here.
 */
export function decideWorkers(resolved: ResolvedEndpointOptions, components: Partial<EndpointComponents>): WorkerDecision {
  if (resolved.workers === 0 || components.engine || components.udp) return { workers: null, note: '' }
  const auto = resolved.workers < 0
  const backend = resolved.udpBackend
  if (backend === 'gso' || backend === 'dgram') {
    const why = `engine workers need the gro or uring backend (SO_REUSEPORT is set through koffi before bind; Node 20's dgram cannot), udpBackend is ${backend}`
    if (auto) return { workers: null, note: `workers auto: ${why}` }
    throw new StoqUnsupportedError('engine workers', why)
  }
  // quiche's napi binding corrupts the heap when engines run in several threads of one
  // process (glibc aborts, "corrupted size vs. prev_size", in 3 of 8 runs of 64 connections
  // over 2 workers): engine workers run quinn only.
  const quinn = quinnAvailability()
  if (resolved.engine === 'quiche' || !quinn.available) {
    const why =
      resolved.engine === 'quiche'
        ? "engine workers run the quinn engine only: quiche's napi binding corrupts memory when several threads of one process use it"
        : `engine workers need the quinn engine, which cannot load here (${quinn.detail})`
    if (auto) return { workers: null, note: `workers auto: ${why}` }
    throw new StoqUnsupportedError('engine workers', why)
  }
  // `auto`: each engine worker is two busy threads (its engine and its UDP socket thread), as
  // is this thread with its socket thread. On 2 CPUs, 2 workers measured 0.63x, 0.96x and
  // 1.08x of this thread's throughput with 1, 2 and 4 connections (bench:workers, record ring,
  // session 7; 0.59-0.75x, 0.62-0.74x, 0.96-1.00x with the old postMessage protocol), so
  // workers start at 4 CPUs, one per 2 CPUs. (Where the crossover lies above 2 CPUs was not
  // measured: no such machine here.)
  const cpus = os.availableParallelism()
  if (auto && cpus < AUTO_WORKERS_MIN_CPUS) {
    return {
      workers: null,
      note: `workers auto: ${cpus} CPU${cpus === 1 ? '' : 's'}, connections stay on this thread (engine workers pay off from ${AUTO_WORKERS_MIN_CPUS} CPUs)`,
    }
  }
  const n = auto ? Math.floor(cpus / 2) : resolved.workers
  const workers = new WorkerEngine({
    workers: n,
    engine: 'quinn',
    udpBackend: backend === 'uring' ? 'uring' : 'gro',
    cpus: resolved.cpuAffinity,
    transport: resolved.transport,
    keyExchange: resolved.keyExchange,
    poolMaxBuffers: resolved.poolMaxBuffers,
    stallMs: resolved.limits.workerStallMs,
    sessionCacheSize: resolved.sessionCacheSize,
  })
  return { workers, auto }
}
