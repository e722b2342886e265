export {
  Endpoint,
  createEndpoint,
  selectEngine,
  QUINN_UNAVAILABLE_WARNING,
  type EndpointComponents,
  type EndpointEvents,
  type EndpointStats,
} from './endpoint.js'
export {
  QuicConnection,
  type ConnectionCounters,
  type ConnectionStats,
  type ConnectionEvents,
  type SendSource,
  type ConnectionThroughput,
  type ThroughputRate,
} from './connection.js'
export { QuicStream } from './stream.js'
export { QUICHE_ENGINE_PACKAGE } from './engine/quiche.js'
export { fingerprintDer, fingerprintPem, normaliseFingerprint, splitPemChain } from './pem.js'
export * from './defaults.js'
export { QuinnEngine, quinnEngine, quinnAvailability, QUINN_MAX_PACKET, type QuinnAvailability } from '@stoq/engine-quinn'
export type {
  ConnectOptions,
  EndpointOptions,
  ServerOptions,
  PemSource,
  ResolvedConnectOptions,
  ResolvedEndpointOptions,
  UdpBackendChoice,
  EngineChoice,
} from './options.js'
export { resolveConnectOptions, resolveEndpointOptions, resolveTransport } from './options.js'
export { CONNECT_OPTION_KEYS, ENDPOINT_OPTION_KEYS, TRANSPORT_OPTION_KEYS } from './options.js'
export * from '@stoq/interface'
export { DIAGNOSTICS_CHANNELS } from './diagnostics.js'
export { defaultLimits, resolveLimits, memoryLimit, type EndpointLimits, type LimitsUsage } from './limits.js'
