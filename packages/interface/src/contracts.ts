/**
 * The layer contracts of STOQ. Implementations depend on these types, never on
 * each other's code, so that any layer can be replaced by a user's own.
 *
 * Hot-path rule for implementers: the methods marked "hot" are called per packet
 * or per batch; they must not allocate per packet, create promises or timers.
 */

/** Version tag that every implementation declares, so a plugin states what it implements. */
export type SpecificationVersion = 'v1'

// ---------------------------------------------------------------------------
// Addresses

export interface SocketAddress {
  /** IP literal. IPv4-mapped IPv6 addresses are presented unmapped (`127.0.0.1`). */
  readonly address: string
  readonly port: number
  readonly family: 'IPv4' | 'IPv6'
}

// ---------------------------------------------------------------------------
// BufferPool (@stoq/mempool)

export type PoolExhaustionPolicy = 'grow' | 'error'

export interface BufferPoolStats {
  /** Buffers handed out from the free list. */
  hits: number
  /** Acquisitions that found the free list empty (then grew, or failed). */
  misses: number
  /** Buffers currently acquired. */
  inUse: number
  /** Highest `inUse` ever observed. */
  highWaterMark: number
  /** Total buffers currently owned by the pool (all slabs). */
  capacity: number
  /** Bytes of each buffer. */
  bufferSize: number
}

/**
 * Fixed-size buffers carved from SharedArrayBuffer slabs, addressed by integer
 * index so that they can be handed between threads without copies.
 */
export interface BufferPool {
  readonly specificationVersion: SpecificationVersion
  /** Bytes per buffer. */
  readonly bufferSize: number
  /** Take a buffer (hot). Throws `StoqPoolExhaustedError` if empty and the policy is `error`. */
  acquire(): number
  /** Take a buffer, or -1 when none is free and the pool may not grow (hot). */
  tryAcquire(): number
  /** Give a buffer back (hot). Debug mode throws `StoqPoolMisuseError` on double release. */
  release(index: number): void
  /** A stable, preallocated full-size view of buffer `index` (hot, no allocation). */
  view(index: number): Uint8Array
  stats(): BufferPoolStats
  /** Release the slabs; later calls throw `StoqClosedError`. */
  close(): void
}

// ---------------------------------------------------------------------------
// UdpIo (@stoq/hwaccel)

export interface UdpBindOptions {
  /** Address to bind. Default `::` (dual-stack). */
  host: string
  /** Port, 0 for an ephemeral port. */
  port: number
  /** Refuse IPv4 (IPV6_V6ONLY) on an IPv6 socket. */
  ipv6Only: boolean
  /** Requested SO_SNDBUF / SO_RCVBUF in bytes (the kernel may cap them). */
  sendBufferSize?: number
  receiveBufferSize?: number
  /**
   * Set SO_REUSEPORT before bind, so that several sockets (one per engine
   * worker) can bind the same address and port and the kernel spreads the
   * datagrams over them (by hash, or by a reuseport BPF program such as
   * `attachCidSteering` of `@stoq/hwaccel`). Every socket of the group must
   * ask for it. Backends that cannot set it before bind (the Node `dgram`
   * based ones) reject bind with `StoqUnsupportedError` rather than ignore it.
   * Default false.
   */
  reusePort?: boolean
}

/** Receives what the socket reads. */
export interface UdpReceiver {
  /**
   * One received buffer (hot). When `segmentSize < data.length` the buffer holds
   * several datagrams of `segmentSize` bytes (the last may be shorter), as GRO
   * delivers them. `data` is only valid during the call unless the receiver
   * keeps it (the dgram backend hands over a fresh buffer each time).
   */
  onPacket(data: Uint8Array, segmentSize: number, from: SocketAddress): void
  /** End of a batch of reads: the right time to produce replies (hot). */
  onBatchEnd(): void
  /** A send that `send()` reported as queued has completed; `token` is the caller's (hot). */
  onSendComplete(token: number): void
  /** The send queue fell below its low-water mark after `send()` returned false. */
  onDrain(): void
  /** A socket error that is not tied to one send. */
  onError(err: Error): void
}

export interface UdpIoStats {
  backend: string
  sendCalls: number
  packetsSent: number
  bytesSent: number
  receiveCalls: number
  packetsReceived: number
  bytesReceived: number
  sendErrors: number
  /** Effective kernel socket buffer sizes, as read back. */
  sendBufferSize: number
  receiveBufferSize: number
}

/** A bound UDP socket. */
export interface UdpIo {
  readonly specificationVersion: SpecificationVersion
  /** Name of the backend (`dgram`, `gso`, `mmsg`, `uring`...). */
  readonly backend: string
  /**
   * Largest number of segments one `send` should carry (1 when the backend has
   * no GSO). Backends still accept larger super-buffers and split them, but a
   * batcher sends at most this many per call.
   */
  readonly maxSegments: number
  /**
   * Once bound: every datagram leaves with the Don't Fragment bit (IP_MTU_DISCOVER /
   * IPV6_MTU_DISCOVER set to PROBE), so one too large for the path is dropped, never split
   * into IP fragments. Path MTU discovery needs it. Absent or false: the kernel may fragment.
   */
  readonly dontFragment?: boolean
  bind(options: UdpBindOptions, receiver: UdpReceiver): Promise<SocketAddress>
  /**
   * Send `data` to `to` (hot). With `segmentSize < data.length` the data holds
   * equal-size datagrams (the last may be shorter) sent as one GSO write.
   * The backend may keep a reference to `data` until `onSendComplete(token)`;
   * `token` is a non-negative integer of the caller's.
   * Returns false when the send queue is above its high-water mark: the caller
   * should stop sending until `onDrain`.
   */
  send(data: Uint8Array, segmentSize: number, to: SocketAddress, token: number): boolean
  /** Number of sends not yet completed. */
  readonly pendingSends: number
  readonly localAddress: SocketAddress | null
  stats(): UdpIoStats
  close(): Promise<void>
}

export type UdpIoFactory = () => UdpIo

// ---------------------------------------------------------------------------
// QuicEngine (@stoq/transport-core holds the quiche adapter)

export type CongestionControl = 'cubic' | 'reno' | 'bbr'

/** QUIC transport parameters and local limits that an engine applies. */
export interface TransportParameters {
  /** Idle timeout in ms (0 disables). */
  maxIdleTimeoutMs: number
  /** Connection-level flow-control window (initial_max_data). */
  initialMaxData: number
  /** Per-stream flow-control window (initial_max_stream_data_*). */
  initialMaxStreamData: number
  /** Upper bound the window may auto-tune to, per stream and per connection. */
  maxStreamWindow: number
  maxConnectionWindow: number
  /** Concurrent streams the peer may open. */
  initialMaxStreamsBidi: number
  initialMaxStreamsUni: number
  /**
   * Largest UDP payload we send (the engine may cap it). With `mtuDiscovery` the ceiling of
   * the search; without, the size of every packet.
   */
  maxUdpPayloadSize: number
  /**
   * Path MTU discovery (RFC 8899 style probing, RFC 9000 §14.3): packets start at 1200 bytes and
   * grow towards `maxUdpPayloadSize` as probes get through. Runs only on engines that have it
   * and once the socket keeps datagrams whole (`UdpIo.dontFragment`); see `setPathMtuDiscovery`.
   */
  mtuDiscovery: boolean
  congestionControl: CongestionControl
  /** Accept and send RFC 9221 datagrams. */
  datagrams: boolean
  /** Datagram queue lengths (packets). */
  datagramQueueLength: number
  /** Pacing hints from the engine. */
  pacing: boolean
  hystart: boolean
}

export interface TlsIdentity {
  /** PEM certificate chain (leaf first). */
  cert: Uint8Array
  /** PEM private key. */
  key: Uint8Array
}

export interface EngineServerOptions {
  identity: TlsIdentity
  /** ALPN protocols accepted, in preference order. */
  alpn: string[]
  /** Address validation with Retry tokens before any state is created. */
  retry: boolean
  /** Concurrent connections accepted; beyond it new connections are refused. */
  maxConnections: number
  /** Send stateless resets for packets of unknown connections. */
  statelessReset: boolean
  /**
   * 32-byte key for Retry tokens and stateless-reset tokens. A restarted server
   * given the same key can reset the connections its predecessor lost.
   * Random per engine when absent.
   */
  secret?: Uint8Array
  /**
   * Accept 0-RTT data from clients resuming a session. Such data can be replayed by an
   * attacker (RFC 8446 §8, RFC 9001 §9.2). Default false: resumption only.
   */
  earlyData?: boolean
}

export interface EngineConnectOptions {
  peer: SocketAddress
  /** SNI and the name the certificate is checked against. */
  serverName: string
  alpn: string[]
  /** PEM CA bundle to verify the server against. */
  ca?: Uint8Array
  /**
   * When false the engine completes the handshake whatever the certificate and
   * the caller verifies it (e.g. by pinned fingerprint) from `peerCertificates`.
   */
  verifyPeer: boolean
  /** Client certificate, when the server asks for one. */
  identity?: TlsIdentity
  /**
   * Send 0-RTT when a session ticket of this server allows it: the connection can carry
   * stream data at once (`stats(conn).earlyData` is `pending` from the start), and the engine
   * sends it again, transparently, should the server reject it. Default false.
   */
  earlyData?: boolean
}

export interface EngineCloseInfo {
  remote: boolean
  app: boolean
  code: number
  reason: Uint8Array
  idleTimeout: boolean
  /**
   * Set when a client's connection ended because the server answered with Version
   * Negotiation listing no version we speak: the versions it offered (empty when the engine
   * could not read them). Engines report such a close as remote, transport code 0, reason
   * "no common QUIC version".
   */
  offeredVersions?: number[]
}

/**
 * A connection's 0-RTT: `none` (not attempted, or no ticket allowed it), `pending` (client: sent,
 * the server's verdict not known yet), `accepted`, `rejected` (client: sent again after the
 * handshake, transparently).
 */
export type EarlyDataState = 'none' | 'pending' | 'accepted' | 'rejected'

export interface ConnectionStatsSnapshot {
  packetsSent: number
  packetsReceived: number
  packetsLost: number
  packetsRetransmitted: number
  bytesSent: number
  bytesReceived: number
  bytesLost: number
  rttMs: number
  cwndBytes: number
  deliveryRateBps: number
  /** Largest UDP payload the connection sends now: path MTU discovery's finding, or the fixed size. */
  pathMtu: number
  peerMaxDatagramFrameSize: number
  /** Times the peer's address changed (a migrating or NAT-rebound client; 0 where the engine cannot follow one). */
  pathChanges: number
  /**
   * TLS key exchange group the handshake used (`X25519MLKEM768`, `X25519`, `P-256`, `P-384`),
   * `unknown` where the engine cannot tell (quiche), absent before the handshake settles it.
   */
  keyExchangeGroup?: string
  /** The handshake resumed a TLS session (no certificate). Engines without resumption omit it (false). */
  resumed?: boolean
  /** See EarlyDataState. Engines without 0-RTT omit it (`none`). */
  earlyData?: EarlyDataState
}

/** `streamSend` result: the peer stopped the stream or it is closed. */
export const STREAM_STOPPED = -1
/** `streamSend` result: no send capacity now; retry after `onStreamWritable`. */
export const STREAM_BLOCKED = -2

/** Stream id facts, RFC 9000 §2.1. */
export function isBidirectional(streamId: number): boolean {
  return (streamId & 0x2) === 0
}
export function isClientInitiated(streamId: number): boolean {
  return (streamId & 0x1) === 0
}

/**
 * What an engine reports when `drainEvents` runs. Handles are integers: the
 * engine never calls into the application on its own (no callbacks on the hot
 * path), it only reports through this sink when asked.
 */
export interface EngineEventSink {
  /** A server connection was created for a new peer (handshake under way). */
  onIncoming(conn: number, peer: SocketAddress): void
  /** The handshake completed. */
  onEstablished(conn: number): void
  /** Stream data (or FIN, or a reset) can be read; also announces new peer streams. */
  onStreamReadable(conn: number, streamId: number): void
  /** A stream asked for with `streamWantWritable` has send capacity again (or was stopped by the peer). */
  onStreamWritable(conn: number, streamId: number): void
  /** One or more datagrams can be read. */
  onDatagramReadable(conn: number): void
  /** The connection is gone; the handle is invalid after this call returns. */
  onClosed(conn: number, info: EngineCloseInfo): void
}

/** Filled by `pollTransmit`: packets laid out back to back in `buffer`. */
export interface TransmitBatch {
  /**
   * Caller-owned output buffer; or, when `slot` is given, set by the engine to that transmit
   * slot's memory (see `QuicEngine.transmitSlots`).
   */
  buffer: Uint8Array
  /** Caller-owned; `lengths[i]` is the size of packet i. */
  lengths: Uint32Array
  /** Number of packets written. */
  count: number
  /** Total bytes written. */
  bytes: number
  /** Destination of every packet in the batch. */
  peer: SocketAddress | null
  /**
   * Fill transmit slot `slot` (from `transmitSlots`) instead of `buffer`. An engine whose
   * slots stopped working sets it to -1 and returns false: use your own buffers from then on.
   */
  slot?: number
}

/** Result holder for `streamRecv` (reused, so no allocation per call). */
export interface StreamRecvResult {
  bytes: number
  fin: boolean
}

export interface StreamRecvError {
  /** RESET_STREAM error code when the peer reset the stream, else -1. */
  resetCode: number
}

/**
 * A sans-I/O QUIC endpoint state machine. It owns connections, demultiplexes
 * received packets by connection ID, and produces packets in batches; the
 * caller owns sockets, buffers and time. One call consumes or produces a whole
 * batch, so that native engines cross into native code once per batch.
 */
export interface QuicEngine {
  readonly specificationVersion: SpecificationVersion
  readonly name: string
  /** Largest packet this engine can produce. */
  readonly maxPacketSize: number

  /** Act as a server from now on (accept Initials). */
  listen(options: EngineServerOptions): void
  /** Stop accepting new connections (existing ones continue). */
  stopListening(): void
  /**
   * The endpoint's socket keeps datagrams whole (`UdpIo.dontFragment`): connections made
   * after the call may probe the path MTU, if `TransportParameters.mtuDiscovery` asks for it.
   * Until called, an engine must not probe. Engines without MTU discovery omit it.
   */
  setPathMtuDiscovery?(allowed: boolean): void

  /** Feed received datagrams (hot): `segmentSize` splits a GRO buffer. The engine may decrypt in place. */
  receive(data: Uint8Array, segmentSize: number, from: SocketAddress, local: SocketAddress): void
  /**
   * Fill `batch` with packets for one peer (hot). Returns false when nothing is
   * left to send now. `maxPackets` bounds the batch; packets are written back
   * to back from offset 0.
   */
  pollTransmit(batch: TransmitBatch, maxPackets: number): boolean
  /**
   * Optional: `count` buffers of at least `size` bytes that the engine builds packets in
   * (`batch.slot`) and the socket sends from in place, saving the copy into the caller's
   * buffer. Given once per engine (null the second time, or when the engine cannot); the
   * views are native memory that stays valid until `destroy()`, so nothing may send from
   * them after that. A slot's bytes must not be touched while a send from it is in flight.
   */
  transmitSlots?(count: number, size: number): Uint8Array[] | null
  /** Milliseconds until the earliest timer, or -1 when no timer is armed. */
  nextTimeout(): number
  /** Run expired timers (loss detection, idle timeout, keep-alive). */
  handleTimeout(): void
  /** Report what happened since the last call. */
  drainEvents(sink: EngineEventSink): void

  /** Start a client connection; returns its handle. */
  connect(options: EngineConnectOptions, local: SocketAddress): number
  /** Close a connection (CONNECTION_CLOSE with `app` code and reason). */
  close(conn: number, app: boolean, code: number, reason: Uint8Array): void
  /** Keep-alive interval in ms for this connection (0 disables). */
  setKeepAlive(conn: number, intervalMs: number): void

  /** Open a locally-initiated stream; returns its id, or -1 when the peer's limit is reached. */
  openStream(conn: number, bidirectional: boolean): number
  /**
   * Queue stream data (hot). Returns bytes accepted (may be fewer than
   * `data.length`); `STREAM_BLOCKED` (-2) when nothing, not even a FIN on empty
   * data, could be accepted now (wait for `onStreamWritable`); `STREAM_STOPPED`
   * (-1) when the stream is stopped or closed. A FIN counts only when every byte
   * was accepted.
   */
  streamSend(conn: number, streamId: number, data: Uint8Array, fin: boolean): number
  /** Read stream data into `out` (hot). Returns false when nothing is readable; `result.resetCode` >= 0 when the peer reset it. */
  streamRecv(conn: number, streamId: number, out: Uint8Array, result: StreamRecvResult & StreamRecvError): boolean
  /**
   * Optional: like `streamRecv`, but the engine allocates the bytes (at most `max`) and hands
   * them over, for an engine whose data already sits in memory of its own (the multi-core
   * engine's shared pool): one copy instead of two. Null when nothing is readable; otherwise
   * `result` says fin/reset as for `streamRecv` (a reset returns an empty array).
   */
  streamRecvChunk?(conn: number, streamId: number, max: number, result: StreamRecvResult & StreamRecvError): Uint8Array | null
  /** Bytes the stream can accept now; -1 when the stream is stopped by the peer (then `stopCode` returns its code). */
  streamCapacity(conn: number, streamId: number): number
  /** Ask for one `onStreamWritable` once the stream can accept data again (or was stopped). */
  streamWantWritable(conn: number, streamId: number): void
  /**
   * True once the stream is over in the engine: for a stream we only send on,
   * every byte and the FIN were acknowledged by the peer; for a bidirectional
   * stream, both directions finished.
   */
  streamComplete(conn: number, streamId: number): boolean
  /** STOP_SENDING code received for the stream, or -1. */
  streamStopCode(conn: number, streamId: number): number
  /** Reset our sending side (RESET_STREAM) or ask the peer to stop (STOP_SENDING). */
  streamShutdown(conn: number, streamId: number, direction: 'read' | 'write', code: number): void
  streamPriority(conn: number, streamId: number, urgency: number, incremental: boolean): void
  /**
   * Optional: set the connection's receive window (the flow-control credit the peer may use
   * ahead of what the application read), within the endpoint's budget. An engine with this
   * grows windows only when told to, so the endpoint can bound the credit granted across
   * connections exactly; one without it tunes windows itself up to `maxConnectionWindow`.
   */
  setReceiveWindow?(conn: number, bytes: number): void
  /**
   * Optional: let the peer have `count` streams of one direction open at once. An engine with
   * this keeps its peers at `initialPeerStreamLimit` (or the configured limit, when lower) until
   * told otherwise, so the endpoint raises limits as the peer uses streams, within its budgets
   * ("lean connections": engines such as quinn keep state for every stream a limit allows).
   */
  setPeerStreamLimit?(conn: number, bidirectional: boolean, count: number): void
  /** With `setPeerStreamLimit`: the limit each direction starts at. */
  readonly initialPeerStreamLimit?: number

  /** Queue a datagram; returns false when the send queue is full. Throws when too large or unsupported. */
  datagramSend(conn: number, data: Uint8Array): boolean
  /** Read one datagram into `out`; returns its length or -1 when none is queued. */
  datagramRecv(conn: number, out: Uint8Array): number
  /** Largest datagram payload accepted now, or -1 when datagrams are not negotiated. */
  datagramMaxSize(conn: number): number

  isEstablished(conn: number): boolean
  /** Negotiated ALPN (empty string before the handshake). */
  alpn(conn: number): string
  serverName(conn: number): string | null
  /** Peer certificate chain as DER, leaf first (null when none). */
  peerCertificates(conn: number): Uint8Array[] | null
  stats(conn: number): ConnectionStatsSnapshot
  peerAddress(conn: number): SocketAddress
  /** Number of live connections. */
  readonly connectionCount: number
  /**
   * Optional: the client's session tickets: servers (by TLS setup and name) with an entry,
   * tickets held, and the most servers kept (`QuicEngineOptions.sessionCacheSize`).
   */
  sessionCache?(): { servers: number; tickets: number; capacity: number }
  /** Free all state. */
  destroy(): void
}

export interface QuicEngineOptions {
  transport: TransportParameters
  /**
   * An integer from 0 to 255: every connection ID this engine issues (to its
   * own connections, in Retry, and in NEW_CONNECTION_ID frames) starts with
   * this byte, so that a reuseport BPF program (`attachCidSteering` of
   * `@stoq/hwaccel`) can steer each packet to the socket of the engine worker
   * that owns the connection. Privacy cost: an on-path observer can tell
   * which worker a connection belongs to (the byte is constant for all its
   * connection IDs), though not link connections through it. Default: no
   * prefix (connection IDs entirely engine-chosen).
   */
  cidPrefix?: number
  /**
   * Servers whose TLS session tickets a client keeps, for resumption and 0-RTT (the least
   * recently used go first); 0 turns resumption off on the client side. Default: the
   * engine's (256 for quinn).
   */
  sessionCacheSize?: number
  /**
   * TLS key exchange groups, in preference order (the client offers them in this order and
   * sends a key share for the first, plus its X25519 half for X25519MLKEM768; the server
   * picks from them). Default: the engine's own list (quinn: X25519MLKEM768, X25519, P-256,
   * P-384). An engine that lacks a listed group it would need fails with STOQ_ERR_UNSUPPORTED.
   */
  keyExchange?: KeyExchangeGroup[]
}

/** TLS 1.3 key exchange groups. X25519MLKEM768 is the post-quantum hybrid (draft-ietf-tls-ecdhe-mlkem). */
export type KeyExchangeGroup = 'X25519MLKEM768' | 'X25519' | 'P-256' | 'P-384'

export type QuicEngineFactory = (options: QuicEngineOptions) => QuicEngine

// ---------------------------------------------------------------------------
// PacketBatcher (@stoq/batching)

export interface PacketBatcherStats {
  /** Packets handed to the socket. */
  packets: number
  /** Socket send calls made. */
  syscalls: number
  /** Syscalls saved compared with one per packet. */
  syscallsSaved: number
  /** Batches flushed. */
  flushes: number
  /** Flushes that stopped at their deadline and went on next turn (batchers with a deadline). */
  deadlineDeferrals?: number
}

export interface PacketBatcherComponents {
  engine: QuicEngine
  io: UdpIo
  pool: BufferPool
  /**
   * The engine's transmit slots (`QuicEngine.transmitSlots`) when `io` sends from them in
   * place: batches are built there instead of in `pool` buffers.
   */
  slots?: Uint8Array[]
}

/**
 * Moves packets from the engine to the socket in as few calls as possible:
 * runs of equal-size packets to one peer become GSO super-buffers when the
 * socket supports them.
 */
export interface PacketBatcher {
  readonly specificationVersion: SpecificationVersion
  /** Drain everything the engine has to send now (hot). */
  flush(): void
  /** Tell the batcher a send completed (called from the UdpReceiver). */
  onSendComplete(token: number): void
  /** The socket drained: resume a flush that stopped on backpressure. */
  onDrain(): void
  /** True while sends are held back because the socket queue is full. */
  readonly blocked: boolean
  stats(): PacketBatcherStats
  /**
   * Stop for good: no flush runs after this, not even one deferred to a later turn. The
   * endpoint calls it before it closes the socket and the pool.
   */
  close?(): void
}

export interface PacketBatcherOptions {
  /** Most packets in one flush batch. */
  maxPacketsPerBatch: number
  /** Largest GSO super-buffer in bytes. */
  maxSuperBufferBytes: number
}

export type PacketBatcherFactory = (components: PacketBatcherComponents) => PacketBatcher

// ---------------------------------------------------------------------------
// MetricsSink (@stoq/monitoring)

/** A counter/gauge handle: updating it is a plain number update. */
export interface MetricHandle {
  add(value: number): void
  set(value: number): void
}

export interface MetricsSink {
  readonly specificationVersion: SpecificationVersion
  counter(name: string, help: string, labels?: Record<string, string>): MetricHandle
  gauge(name: string, help: string, labels?: Record<string, string>): MetricHandle
  /** Observe a value into a histogram. */
  histogram(name: string, help: string, buckets: number[], labels?: Record<string, string>): { observe(value: number): void }
}
