import { detectCapabilities, formatCapabilities, type CapabilityReport } from '@stoq/hwaccel'
import { createEndpoint, QUICHE_BINDING_PACKAGE, QuicheEngine, DEFAULT_TRANSPORT } from '@stoq/transport-core'

export interface DoctorReport {
  capabilities: CapabilityReport
  /** The QUIC engine STOQ uses, or why it cannot load. */
  engine: { name: string; available: boolean; detail: string }
  /** The UDP backend an endpoint gets here with `udpBackend: 'auto'`, and why. */
  udp: { backend: string; detail: string }
}

/**
 * What this machine offers and which paths STOQ takes on it. Everything is
 * probed for real (a loopback endpoint is bound to see which UDP backend wins).
 */
export async function doctor(): Promise<DoctorReport> {
  const capabilities = await detectCapabilities()
  let engine: DoctorReport['engine']
  try {
    new QuicheEngine({ transport: DEFAULT_TRANSPORT }).destroy()
    engine = { name: 'quiche', available: true, detail: `quiche through the napi binding of ${QUICHE_BINDING_PACKAGE}` }
  } catch (err) {
    engine = { name: 'quiche', available: false, detail: (err as Error).message }
  }
  let udp: DoctorReport['udp']
  try {
    const ep = await createEndpoint({ host: '127.0.0.1', port: 0 })
    const stats = ep.stats()
    udp = { backend: stats.udp.backend, detail: stats.udpChoice }
    await ep.close()
  } catch (err) {
    udp = { backend: 'none', detail: `cannot bind a loopback endpoint: ${(err as Error).message}` }
  }
  return { capabilities, engine, udp }
}

/** The doctor report as text for a terminal. */
export function formatDoctor(report: DoctorReport, width = 120): string {
  return [
    formatCapabilities(report.capabilities, { width }),
    '',
    'STOQ will use:',
    `  QUIC engine   ${report.engine.available ? report.engine.name : 'none'}: ${report.engine.detail}`,
    `  UDP backend   ${report.udp.backend}: ${report.udp.detail}`,
  ].join('\n')
}
