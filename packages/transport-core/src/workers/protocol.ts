/**
 * The wire between the application thread and an engine worker.
 *
 * Each direction is a RecordRing (`@stoq/mempool`): fixed-width records in a
 * SharedArrayBuffer, written by one thread and drained by the other, in order. A
 * record is `[op, id, sid, a, b, c, d]`. The few structured values some records
 * point to (peer addresses, TLS options, close reasons, certificates) travel as a
 * `{ seq, x }` message, announced in the ring by an X_EXTRAS record (mempool's
 * RecordWriter and RecordReader). Stream and datagram bytes never ride in either: they sit in the
 * worker's SharedArrayBuffer pool and a record names the buffer by index (`slot`).
 * Each side publishes the records of one event-loop turn at once; a message
 * (`null`) goes only to a reader that found its ring empty and went idle, so
 * under load the two threads exchange records without messages.
 *
 * `id` is the connection id both sides use: even ids are dialled by the
 * application thread, odd ids are accepted by worker `w` as
 * `(k * workers + w) * 2 + 1`.
 */

/** Records each direction's ring holds before the writer spills (in order) into a local queue. */
export const RING_CAPACITY = 8192

/** The channel's extras marker (RecordChannelOptions.extrasOp): no command or event starts with it. */
export const X_EXTRAS = 200
export const CHANNEL = { extrasOp: X_EXTRAS } as const

export const RECORD_WIDTH = 7

// Application thread → worker
export const C_LISTEN = 1 // a = x index of EngineServerOptions
export const C_STOP_LISTENING = 2
export const C_CONNECT = 3 // id, a = x index of EngineConnectOptions
export const C_CLOSE = 4 // id, a = app (0/1), b = code, c = x index of the reason bytes
export const C_KEEPALIVE = 5 // id, a = interval ms
/**
 * id, sid, a = slot (-1: none), b = offset, c = length, d = fin (0/1). Small writes of one turn
 * share a buffer (one record each, a C_SEND or C_DGRAM): the worker holds a buffer from the first
 * record naming it until C_PACKED says no more will, and gives it back when that has come and
 * every record naming it was consumed.
 */
export const C_SEND = 6
export const C_RECV_CREDIT = 7 // id, sid, a = bytes the application consumed
export const C_SHUTDOWN = 8 // id, sid, a = 1 write / 0 read, b = code
export const C_PRIORITY = 9 // id, sid, a = urgency, b = incremental (0/1)
export const C_DGRAM = 10 // id, a = slot, b = offset, c = length (a shared buffer, as C_SEND)
export const C_DGRAM_CREDIT = 11 // id, a = datagrams the application consumed
export const C_TAKEN = 12 // id, sid: the application opened this reserved stream
export const C_RECV_WINDOW = 13 // id, a = the connection's receive window (bytes)
export const C_PEER_STREAMS = 14 // id, a = 1 bidi / 0 uni, b = streams the peer may have open
export const C_PACKED = 15 // a = slot: the last record naming this shared send buffer was written

// Worker → application thread
export const E_INCOMING = 101 // id, a = x index of the peer SocketAddress
export const E_ESTABLISHED = 102 // id, a = x index of EstablishedInfo
export const E_CLOSED = 103 // id, a = x index of ClosedInfo
export const E_DATA = 104 // id, sid, a = slot (-1: none), b = length, c = fin (0/1)
export const E_RESET = 105 // id, sid, a = code (peer reset the stream; after every E_DATA before it)
export const E_STOPPED = 106 // id, sid, a = code (peer asked us to stop sending)
export const E_CREDIT = 107 // id, sid, a = bytes the engine took from the worker's queue
export const E_COMPLETE = 108 // id, sid: the engine is done with the stream
export const E_RESERVE = 109 // id, sid: a stream id opened ahead for the application
export const E_DGRAM = 110 // id, a = slot, b = length
export const E_DGRAM_CREDIT = 111 // id, a = datagrams the worker handed to the engine
export const E_MAX_DGRAM = 112 // id, a = largest datagram now (-1: none)

export interface EstablishedInfo {
  alpn: string
  serverName: string | null
  certificates: Uint8Array[] | null
  maxDatagram: number
}

export interface ClosedInfo {
  remote: boolean
  app: boolean
  code: number
  reason: Uint8Array
  idleTimeout: boolean
  /** See EngineCloseInfo.offeredVersions. */
  offeredVersions?: number[]
  stats: import('@stoq/interface').ConnectionStatsSnapshot | null
}

/** What one worker reports about itself (once per `statsIntervalMs`). */
export interface WorkerLoad {
  index: number
  alive: boolean
  /** Kernel thread id of the engine thread (0 when unknown). */
  threadId: number
  /** CPUs the engine thread and its network thread are pinned to (empty: not pinned). */
  cpus: number[]
  connections: number
  /** Share of the last interval the worker's event loop was busy (0-1). */
  eventLoopUtilization: number
  /** CPU time of the engine thread over the last interval, % of one core (-1 when unknown). */
  cpuPercent: number
  packetsReceived: number
  packetsSent: number
  bytesReceived: number
  bytesSent: number
  /** Packets the worker's engine dropped (malformed, unknown connection, refused). */
  packetsDropped: number
  /** V8 heap in use by the worker's isolate, bytes (after its last collection). */
  heapUsedBytes: number
  /** Shared send buffers the worker still holds references to (0 when idle). */
  sendBuffersHeld: number
  /** Buffers of the worker's shared pool in use now, by either thread (read live, not reported). */
  poolBuffersInUse: number
  /** Why the worker is gone (empty while alive). */
  exit: string
  /**
   * The worker's event loop has not answered for longer than the stall threshold (a
   * blocked or spinning thread): its connections are not being served. Clears when it
   * answers again.
   */
  stalled: boolean
  /** Milliseconds since the application thread last heard from the worker. */
  silentMs: number
}

export interface WorkerInit {
  index: number
  workers: number
  engine: 'auto' | 'quinn' | 'quiche'
  transport: import('@stoq/interface').TransportParameters
  keyExchange?: import('@stoq/interface').KeyExchangeGroup[] | undefined
  bind: import('@stoq/interface').UdpBindOptions
  udpBackend: 'gro' | 'uring'
  cpus: number[]
  pool: import('@stoq/mempool').SharedBufferPoolHandle
  /** Records from the application thread to the worker, and back. */
  toWorker: import('@stoq/mempool').RecordRingHandle
  toMain: import('@stoq/mempool').RecordRingHandle
  statsIntervalMs: number
  sessionCacheSize?: number
}

/** Messages that are not record batches. */
export type WorkerControl =
  | {
      type: 'ready'
      address: import('@stoq/interface').SocketAddress
      fd: number
      engine: string
      engineChoice: string
      udp: string
      udpStats: import('@stoq/interface').UdpIoStats
    }
  | { type: 'bind-error'; code: string; message: string; feature?: string }
  | {
      type: 'stats'
      load: WorkerLoad
      udp: import('@stoq/interface').UdpIoStats
      conns: [number, import('@stoq/interface').ConnectionStatsSnapshot, number, import('@stoq/interface').SocketAddress?][]
    }
  | { type: 'closed' }

export type MainControl = { type: 'close' } | { type: 'crash'; message: string } | { type: 'block'; ms: number }
