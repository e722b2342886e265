export { Stoq, type StoqOptions, type StoqConnectOptions, type ListenHandlers, type StoqStats, type TierState } from './stoq.js'
export {
  loadOrCreateIdentity,
  appConfigDir,
  KnownHosts,
  DEFAULT_IDENTITY_VALIDITY_DAYS,
  DEFAULT_IDENTITY_RENEW_BEFORE_DAYS,
  type AppIdentity,
  type IdentityOptions,
} from './identity.js'
export { parseTarget, type ConnectTarget } from './target.js'
export {
  ConnectionPool,
  poolKey,
  DEFAULT_POOL_MAX_CONNECTIONS,
  DEFAULT_POOL_IDLE_TIMEOUT_MS,
  type PoolOptions,
  type PoolStats,
} from './pool.js'
export { doctor, formatDoctor, type DoctorReport } from './doctor.js'
// The defaults of every layer, so that one import gives the whole stack.
export * from '@stoq/transport-core'
export { createBufferPool, attachBufferPool } from '@stoq/mempool'
export { batching } from '@stoq/batching'
export { DgramUdpIo, dgramUdpIo, GsoUdpIo, gsoUdpIo, WorkerUdpIo, workerUdpIo, detectCapabilities, formatCapabilities, setCpuAffinity } from '@stoq/hwaccel'
export {
  Multiplexer,
  DEFAULT_MULTIPLEX_CONNECTIONS,
  DEFAULT_MULTIPLEX_REPLACE_ATTEMPTS,
  type MultiplexStrategy,
  type MultiplexStats,
  type MultiplexMemberStats,
} from './multiplex.js'
export { classifyTier, tierProfile, NETWORK_TIERS, TIER_THRESHOLDS_GBPS, type NetworkTier, type TierProfile } from './tiers.js'
export { MULTIPLEX_SAMPLE_INTERVAL_MS } from './multiplex.js'
export {
  createTransferReceiver,
  IncomingTransfer,
  DEFAULT_TRANSFER_CHUNK_BYTES,
  MIN_TRANSFER_CHUNK_BYTES,
  MAX_TRANSFER_CHUNK_BYTES,
  DEFAULT_TRANSFER_DEPTH,
  MAX_TRANSFER_DEPTH,
  DEFAULT_TRANSFER_WINDOW_BYTES,
  MAX_TRANSFER_WINDOW_BYTES,
  DEFAULT_TRANSFER_STALL_MS,
  DEFAULT_TRANSFER_MAX_RETRIES,
  DEFAULT_RECEIVER_MAX_TRANSFERS,
  type TransferSource,
  type TransferOptions,
  type TransferResult,
  type TransferMemberResult,
  type TransferReceiver,
  type TransferReceiverOptions,
  type TransferReceiverStats,
  type IncomingTransferResult,
  type ChunkInfo,
} from './multiplex-transfer.js'
export { StoqIntegrityError, StoqProtocolError } from './errors.js'
// Browser reach: WebTransport over HTTP/3 (`listen({ webtransport })`, `browserCertificate()`).
export type { ListenWebTransportOptions } from './stoq.js'
export {
  loadOrCreateBrowserCertificate,
  DEFAULT_BROWSER_CERT_VALIDITY_DAYS,
  DEFAULT_BROWSER_CERT_RENEW_BEFORE_DAYS,
  type BrowserCertificate,
  type BrowserCertificateOptions,
} from './identity.js'
export {
  connectWebTransport,
  WebTransportClient,
  serveWebTransport,
  WebTransportServer,
  WebTransportSession,
  WebTransportStream,
  createWebTransportCertificate,
  StoqWebTransportError,
  MAX_WEBTRANSPORT_CERT_DAYS,
  H3_ALPN,
  type ConnectWebTransportOptions,
  type WebTransportHash,
  type WebTransportServerOptions,
  type WebTransportServerStats,
  type WebTransportCloseInfo,
  type WebTransportCertificate,
  type WebTransportCertificateOptions,
  type WebTransportLimits,
  type WebTransportFailure,
} from '@stoq/webtransport'
