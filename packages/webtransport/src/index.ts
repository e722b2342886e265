/**
 * @stoq/webtransport: WebTransport over HTTP/3 (draft-02, as Chromium speaks
 * it) on STOQ QUIC connections — a server, a Node client, and the short-lived
 * certificates browsers accept through `serverCertificateHashes`.
 */
export { StoqWebTransportError, type StoqWebTransportErrorData, type WebTransportFailure, type WebTransportMissingSetting } from './errors.js'
export {
  createWebTransportCertificate,
  MAX_WEBTRANSPORT_CERT_DAYS,
  type WebTransportCertificate,
  type WebTransportCertificateOptions,
} from './certificate.js'
export { WebTransportStream } from './stream.js'
export { WebTransportSession, type SessionEvents, type WebTransportCloseInfo } from './session.js'
export {
  WebTransportConnection,
  DEFAULT_WEBTRANSPORT_LIMITS,
  DEFAULT_DRAIN_TIMEOUT_MS,
  type DrainOptions,
  type RequestRouter,
  type WebTransportConnectionStats,
  type WebTransportLimits,
} from './connection.js'
export { WebTransportServer, serveWebTransport, H3_ALPN, type WebTransportServerOptions, type WebTransportServerStats } from './server.js'
export { WebTransportClient, connectWebTransport, type ConnectWebTransportOptions, type OpenSessionOptions, type WebTransportHash } from './client.js'
