import { detectCapabilities, formatCapabilities, type CapabilityReport } from '@stoq/hwaccel'
import { QUICHE_BINDING_PACKAGE, QuicheEngine } from '@stoq/engine-quiche'
import { createEndpoint, DEFAULT_TRANSPORT, quinnAvailability } from '@stoq/transport-core'

export interface EngineAvailability {
  name: string
  available: boolean
  detail: string
}

export interface DoctorReport {
  capabilities: CapabilityReport
  /** The QUIC engine an endpoint gets here with `engine: 'auto'`, and why. */
  engine: { name: string; available: boolean; detail: string }
  /** Every engine STOQ has, loadable or not (and why not). */
  engines: EngineAvailability[]
  /** The UDP backend an endpoint gets here with `udpBackend: 'auto'`, and why. */
  udp: { backend: string; detail: string }
  /**
   * What `workers: 'auto'` (the default of `stoq.listen()`) gives here: the number of engine
   * worker threads (0: connections stay on the application thread) and why; probed by binding
   * a loopback endpoint that way.
   */
  workers: { count: number; detail: string }
}

/**
 * What this machine offers and which paths STOQ takes on it. Everything is
 * probed for real (a loopback endpoint is bound to see which UDP backend wins).
 */
export async function doctor(): Promise<DoctorReport> {
  const capabilities = await detectCapabilities()
  const engines: EngineAvailability[] = []
  const quinn = quinnAvailability()
  engines.push({
    name: 'quinn',
    available: quinn.available,
    detail: quinn.available
      ? `quinn-proto 0.11 + rustls 0.23 in ${quinn.library}; TLS key exchange X25519MLKEM768 (post-quantum hybrid) first, then X25519, P-256, P-384`
      : `${quinn.detail}. Fix: ${quinn.fix}`,
  })
  try {
    new QuicheEngine({ transport: DEFAULT_TRANSPORT }).destroy()
    engines.push({
      name: 'quiche',
      available: true,
      detail: `quiche through the napi binding of ${QUICHE_BINDING_PACKAGE}; TLS key exchange X25519, P-256, P-384 (no post-quantum group)`,
    })
  } catch (err) {
    engines.push({ name: 'quiche', available: false, detail: (err as Error).message })
  }
  let engine: DoctorReport['engine']
  let udp: DoctorReport['udp']
  try {
    const ep = await createEndpoint({ host: '127.0.0.1', port: 0 })
    const stats = ep.stats()
    udp = { backend: stats.udp.backend, detail: stats.udpChoice }
    engine = { name: stats.engine, available: true, detail: stats.engineChoice }
    await ep.close()
  } catch (err) {
    const why = `cannot start a loopback endpoint: ${(err as Error).message}`
    udp = { backend: 'none', detail: why }
    engine = { name: 'none', available: false, detail: why }
  }
  let workers: DoctorReport['workers']
  try {
    const ep = await createEndpoint({ host: '127.0.0.1', port: 0, workers: 'auto' })
    const stats = ep.stats()
    workers = { count: stats.workers.length, detail: stats.workers.length > 0 ? `${stats.engineChoice}; ${stats.udpChoice}` : stats.engineChoice }
    await ep.close()
  } catch (err) {
    workers = { count: 0, detail: `engine workers cannot start here: ${(err as Error).message}` }
  }
  return { capabilities, engine, engines, udp, workers }
}

/** The doctor report as text for a terminal. */
export function formatDoctor(report: DoctorReport, width = 120): string {
  return [
    formatCapabilities(report.capabilities, { width }),
    '',
    'QUIC engines:',
    ...report.engines.map((e) => `  ${e.name.padEnd(12)}  ${e.available ? 'available' : 'UNAVAILABLE'}: ${e.detail}`),
    '',
    'STOQ will use:',
    `  QUIC engine   ${report.engine.available ? report.engine.name : 'none'}: ${report.engine.detail}`,
    `  UDP backend   ${report.udp.backend}: ${report.udp.detail}`,
    `  servers       ${report.workers.count > 0 ? `${report.workers.count} engine workers` : 'the application thread'}: ${report.workers.detail}`,
  ].join('\n')
}
