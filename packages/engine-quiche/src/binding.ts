import { createRequire } from 'node:module'
import { StoqUnsupportedError } from '@stoq/interface'

/**
 * The only module that touches quiche. We load the prebuilt napi binding that
 * `@matrixai/quic` ships as a per-platform npm package, without importing its
 * high-level classes.
 */

export interface HostPort {
  host: string
  port: number
}

export interface QuicheConfig {
  setApplicationProtos(protos: string[]): void
  setMaxIdleTimeout(ms: number): void
  setMaxRecvUdpPayloadSize(n: number): void
  setMaxSendUdpPayloadSize(n: number): void
  setInitialMaxData(n: number): void
  setInitialMaxStreamDataBidiLocal(n: number): void
  setInitialMaxStreamDataBidiRemote(n: number): void
  setInitialMaxStreamDataUni(n: number): void
  setInitialMaxStreamsBidi(n: number): void
  setInitialMaxStreamsUni(n: number): void
  setDisableActiveMigration(v: boolean): void
  setCcAlgorithmName(name: string): void
  enableHystart(v: boolean): void
  enablePacing(v: boolean): void
  enableDgram(enabled: boolean, recvQueueLen: number, sendQueueLen: number): void
  setMaxStreamWindow(n: number): void
  setMaxConnectionWindow(n: number): void
  setStatelessResetToken(token?: bigint | null): void
  grease(v: boolean): void
}

export interface QuicheConnectionError {
  isApp: boolean
  errorCode: number
  reason: Uint8Array
}

export interface QuicheStats {
  recv: number
  sent: number
  lost: number
  retrans: number
  sentBytes: number
  recvBytes: number
  lostBytes: number
  peerMaxDatagramFrameSize?: number
}

/** What quiche says about the connection's network paths (only PeerMigrated is used). */
export type PathEvent = { type: 'PeerMigrated'; old: HostPort; new: HostPort } | { type: 'New' | 'Validated' | 'Closed' | 'ReusedSourceConnectionId' }

export interface QuichePathStats {
  /** The path quiche sends on now. */
  active: boolean
  rtt: number
  cwnd: number
  pmtu: number
  deliveryRate: number
}

export interface QuicheConnection {
  recv(data: Uint8Array, info: { from: HostPort; to: HostPort }): number
  send(out: Uint8Array): [number, { from: HostPort; to: HostPort }] | null
  streamRecv(id: number, out: Uint8Array): [number, boolean] | null
  streamSend(id: number, data: Uint8Array, fin: boolean): number | null
  streamPriority(id: number, urgency: number, incremental: boolean): void
  /** The next path event; throws (Done) or returns null when there is none. */
  pathEventNext(): PathEvent | null
  streamShutdown(id: number, direction: number, code: number): undefined | null
  streamCapacity(id: number): number
  streamFinished(id: number): boolean
  peerStreamsLeftBidi(): number
  peerStreamsLeftUni(): number
  readable(): Iterable<number>
  dgramRecv(out: Uint8Array): number | null
  dgramRecvQueueLen(): number
  dgramSend(data: Uint8Array): undefined | null
  isDgramSendQueueFull(): boolean
  dgramMaxWritableLen(): number | null
  timeout(): number | null
  onTimeout(): void
  close(app: boolean, code: number, reason: Uint8Array): undefined | null
  applicationProto(): Uint8Array
  serverName(): string | null
  peerCertChain(): Uint8Array[] | null
  isEstablished(): boolean
  isDraining(): boolean
  isClosed(): boolean
  isTimedOut(): boolean
  peerError(): QuicheConnectionError | null
  localError(): QuicheConnectionError | null
  stats(): QuicheStats
  pathStats(): QuichePathStats[]
  sendAckEliciting(): void
  /** The handshake resumed a TLS session. */
  isResumed(): boolean
  /** The TLS session (with its ticket, once the server sent one), to resume later; null when none. */
  session(): Uint8Array | null
  /** Offer a session from `session()` before the handshake starts. */
  setSession(session: Uint8Array): void
}

export interface QuicheHeader {
  ty: number
  version: number
  dcid: Uint8Array
  scid: Uint8Array
  token?: Uint8Array
}

export interface QuicheBinding {
  MAX_CONN_ID_LEN: number
  MIN_CLIENT_INITIAL_LEN: number
  MAX_UDP_PACKET_SIZE: number
  PROTOCOL_VERSION: number
  Type: { Initial: number; Retry: number; Handshake: number; ZeroRTT: number; VersionNegotiation: number; Short: number }
  Shutdown: { Read: number; Write: number }
  negotiateVersion(scid: Uint8Array, dcid: Uint8Array, out: Uint8Array): number
  retry(scid: Uint8Array, dcid: Uint8Array, newScid: Uint8Array, token: Uint8Array, version: number, out: Uint8Array): number
  versionIsSupported(version: number): boolean
  Config: {
    new (): QuicheConfig
    withBoringSslCtx(
      verifyPeer: boolean,
      verifyAllowFail: boolean,
      ca: Uint8Array | null,
      key: Uint8Array[] | null,
      cert: Uint8Array[] | null,
      sigalgs: string | null,
    ): QuicheConfig
  }
  Connection: {
    connect(serverName: string | null, scid: Uint8Array, local: HostPort, remote: HostPort, config: QuicheConfig): QuicheConnection
    accept(scid: Uint8Array, odcid: Uint8Array | null, local: HostPort, remote: HostPort, config: QuicheConfig): QuicheConnection
  }
  Header: { fromSlice(data: Uint8Array, dcidLen: number): QuicheHeader }
}

/** Version of `@matrixai/quic` whose binding this adapter was written and tested against. */
export const QUICHE_BINDING_PACKAGE = '@matrixai/quic@2.0.9'

let cached: QuicheBinding | null = null

export function loadQuiche(): QuicheBinding {
  if (cached) return cached
  const target = `@matrixai/quic-${process.platform}-${process.arch}`
  try {
    // The platform package is a dependency of @matrixai/quic, so resolve it from there.
    const local = createRequire(import.meta.url)
    const fromQuic = createRequire(local.resolve('@matrixai/quic/package.json'))
    cached = fromQuic(target) as QuicheBinding
    return cached
  } catch (err) {
    throw new StoqUnsupportedError(
      'quiche',
      `Cannot load the quiche binding ${target} (from ${QUICHE_BINDING_PACKAGE}) for ${process.platform}-${process.arch}: ${(err as Error).message}`,
    )
  }
}

/** quiche errors surface as `Error('StreamStopped(42)')`; extract name and code. */
export function parseQuicheError(err: unknown): { kind: string; code: number } {
  const message = err instanceof Error ? err.message : String(err)
  const m = /^(\w+)(?:\((\d+)\))?/.exec(message)
  return { kind: m?.[1] ?? message, code: m?.[2] !== undefined ? Number(m[2]) : -1 }
}
