import type { TransportParameters } from '@stoq/interface'

/**
 * The transport parameters of `@stoq/transport-core`'s DEFAULT_TRANSPORT, written out for the
 * engines' own tests: the engine packages do not depend on transport-core (it loads them).
 */
export const TEST_TRANSPORT: TransportParameters = {
  maxIdleTimeoutMs: 30_000,
  initialMaxData: 2 * 1024 * 1024,
  initialMaxStreamData: 16 * 1024 * 1024,
  maxStreamWindow: 16 * 1024 * 1024,
  maxConnectionWindow: 64 * 1024 * 1024,
  initialMaxStreamsBidi: 4000,
  initialMaxStreamsUni: 4000,
  maxUdpPayloadSize: 1350,
  congestionControl: 'cubic',
  datagrams: true,
  datagramQueueLength: 1024,
  pacing: true,
  hystart: true,
  mtuDiscovery: true,
}
