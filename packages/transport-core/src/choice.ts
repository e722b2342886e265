import { StoqInvalidArgumentError, StoqUnsupportedError, type QuicEngineFactory, type UdpIo } from '@stoq/interface'
import { DgramUdpIo, GsoUdpIo, UringUdpIo, WorkerUdpIo } from '@stoq/hwaccel'
import { quinnAvailability, quinnEngine } from '@stoq/engine-quinn'
import { quicheEngineFactory } from './engine/quiche.js'
import type { EngineChoice } from './options.js'

/**
 * What `udpBackend: 'auto'` tries, fastest first: the worker thread with GRO
 * receive and GSO send, then GSO send on the event loop, then plain dgram.
 */
export const AUTO_ORDER = ['gro', 'gso', 'dgram'] as const

export function newUdpIo(backend: 'gro' | 'uring' | 'gso' | 'dgram', cpus: number[], sendSlabs: SharedArrayBuffer[], sendRegions: Uint8Array[] = []): UdpIo {
  if (backend === 'gro') return new WorkerUdpIo({ ...(cpus.length > 0 ? { cpus } : {}), sendSlabs, sendRegions })
  if (backend === 'uring') return new UringUdpIo(cpus.length > 0 ? { cpus } : {})
  if (backend === 'gso') return new GsoUdpIo()
  return new DgramUdpIo()
}

/** Fewest CPUs at which `workers: 'auto'` starts engine workers (see `Endpoint.create`). */
export const AUTO_WORKERS_MIN_CPUS = 4

/** The engine factory for an `engine` option, with the reason for the choice. */
export function selectEngine(choice: EngineChoice): { factory: QuicEngineFactory; choice: string } {
  if (choice !== 'auto' && choice !== 'quinn' && choice !== 'quiche') {
    throw new StoqInvalidArgumentError(
      'engine',
      `expected 'auto', 'quinn' or 'quiche', got ${typeof choice === 'string' ? JSON.stringify(choice) : typeof choice}`,
    )
  }
  if (choice === 'quiche') return { factory: quicheEngineFactory('engine quiche was asked for'), choice: 'engine quiche (asked for)' }
  const quinn = quinnAvailability()
  if (choice === 'quinn') {
    if (!quinn.available) throw new StoqUnsupportedError('quinn engine', `engine quinn cannot run here: ${quinn.detail}`)
    return { factory: quinnEngine(), choice: 'engine quinn (asked for)' }
  }
  if (quinn.available) return { factory: quinnEngine(), choice: 'engine auto: quinn, the faster engine, loads here' }
  const factory = quicheEngineFactory(`engine auto: quinn is unavailable (${quinn.detail}; to fix: ${quinn.fix ?? 'see `stoq doctor`'})`)
  warnQuinnUnavailable(quinn.detail, quinn.fix)
  return { factory, choice: `engine auto: quiche, because quinn is unavailable (${quinn.detail})` }
}

/** The code of the process warning `engine: 'auto'` emits when it falls back to quiche. */
export const QUINN_UNAVAILABLE_WARNING = 'STOQ_QUINN_UNAVAILABLE'
let warnedQuinnUnavailable = false

/**
 * Once per process, on stderr (process.emitWarning, so `--no-warnings` and a 'warning' listener
 * work as usual): an `auto` endpoint runs on quiche because quinn cannot load, at about half the
 * throughput and without engine workers. Not emitted when quiche was asked for.
 */
function warnQuinnUnavailable(detail: string, fix: string | null): void {
  if (warnedQuinnUnavailable) return
  warnedQuinnUnavailable = true
  process.emitWarning(
    `STOQ is using the quiche engine because the quinn engine cannot load (${detail}). quiche has about half of ` +
      `quinn's throughput and no engine workers. To fix: ${fix ?? 'see `stoq doctor`'}. ` +
      "To use quiche on purpose and silence this warning: engine: 'quiche' or STOQ_ENGINE=quiche.",
    { code: QUINN_UNAVAILABLE_WARNING },
  )
}
