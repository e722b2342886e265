import type { BufferPool, MetricHandle, MetricsSink, PacketBatcher, UdpIo } from '@stoq/interface'
import type { QuicConnection, ConnectionStats } from './connection.js'
import type { LimitsUsage } from './limits.js'
import type { WorkerLoad } from './workers/protocol.js'

/** Handshake duration buckets in seconds: loopback (~1 ms) to slow intercontinental paths (~5 s). */
const HANDSHAKE_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** Per-connection figures of connections that have closed, kept so that the summed counters never go back. */
export interface ClosedTotals {
  packetsSent: number
  packetsReceived: number
  packetsLost: number
  packetsRetransmitted: number
  bytesSent: number
  bytesReceived: number
  bytesLost: number
  streamBytesRead: number
  streamBytesWritten: number
  datagramsSent: number
  datagramsReceived: number
  datagramsDropped: number
  connections: number
}

export interface EndpointStats {
  connections: number
  /** Packets dropped by the engine (malformed, unknown connection, refused). */
  packetsDropped: number
  udp: ReturnType<UdpIo['stats']>
  /** Why the UDP backend in `udp.backend` was chosen. */
  udpChoice: string
  /** QUIC engine in use (`quinn`, `quiche`, or a caller's). */
  engine: string
  /** Why that engine was chosen (and why the faster one was not, when it could not load). */
  engineChoice: string
  /** Whether connections probe the path MTU (`transport.mtuDiscovery`), and why not when they do not. */
  mtuDiscovery: string
  /**
   * Buffers of the engine's own that packets are built in and the socket thread sends from in
   * place (`zeroCopySend` with an engine that offers them, on the gro backend); 0 when batches
   * are built in pool buffers.
   */
  transmitSlots: number
  /** NUMA placement of the packet pool (`numaNode` option): slabs and bytes bound, last result. */
  numa: { node: number | null; slabs: number; bytes: number; detail: string }
  batching: ReturnType<PacketBatcher['stats']>
  pool: ReturnType<BufferPool['stats']>
  /** Engine workers (`workers` option), as each last reported (once a second); empty on a single-thread endpoint. */
  workers: WorkerLoad[]
  /** The endpoint's budgets (`limits` option) and what is in use of each. */
  limits: LimitsUsage
  /**
   * Session tickets kept for dialled connections (`sessionCacheSize`): servers with an entry,
   * tickets held, most servers kept. Null when the engine keeps none (quiche, engine workers).
   */
  sessionCache: { servers: number; tickets: number; capacity: number } | null
}

/** Closed totals of an endpoint without a closed connection. */
export function newClosedTotals(): ClosedTotals {
  return {
    packetsSent: 0,
    packetsReceived: 0,
    packetsLost: 0,
    packetsRetransmitted: 0,
    bytesSent: 0,
    bytesReceived: 0,
    bytesLost: 0,
    streamBytesRead: 0,
    streamBytesWritten: 0,
    datagramsSent: 0,
    datagramsReceived: 0,
    datagramsDropped: 0,
    connections: 0,
  }
}

/** Add the last figures of a connection that ended (counters must never go back). */
export function addClosedTotals(t: ClosedTotals, s: ConnectionStats): void {
  t.packetsSent += s.packetsSent
  t.packetsReceived += s.packetsReceived
  t.packetsLost += s.packetsLost
  t.packetsRetransmitted += s.packetsRetransmitted
  t.bytesSent += s.bytesSent
  t.bytesReceived += s.bytesReceived
  t.bytesLost += s.bytesLost
  t.streamBytesRead += s.streamBytesRead
  t.streamBytesWritten += s.streamBytesWritten
  t.datagramsSent += s.datagramsSent
  t.datagramsReceived += s.datagramsReceived
  t.datagramsDropped += s.datagramsDropped
  t.connections++
}

/** What `reportMetrics` reads of its endpoint. */
export interface MetricsSource {
  /** Labels of every series: the local port and the UDP backend. */
  readonly labels: { port: string; backend: string }
  readonly engineName: string
  /** The UDP backend's stats at registration: which backend-specific counters it reports. */
  readonly udp: ReturnType<UdpIo['stats']>
  isClosed(): boolean
  stats(): EndpointStats
  readonly closedTotals: ClosedTotals
  readonly conns: ReadonlyMap<number, QuicConnection>
}

/**
 * Mirror the endpoint's counters into a MetricsSink, labelled by local port and UDP backend.
 * Per-connection figures are summed over live connections plus those that closed;
 * RTT is averaged and the congestion window summed over live connections.
 */
export function reportMetrics(sink: MetricsSink, ep: MetricsSource): { handshakeHistogram: { observe(value: number): void }; stop: () => void } {
  const labels = ep.labels
  const c = (name: string, help: string): MetricHandle => sink.counter(name, help, labels)
  const g = (name: string, help: string): MetricHandle => sink.gauge(name, help, labels)
  sink.gauge('stoq_endpoint_info', "the endpoint's UDP backend and QUIC engine (always 1)", { ...labels, engine: ep.engineName }).set(1)
  const handshakeHistogram = sink.histogram(
    'stoq_handshake_duration_seconds',
    'QUIC handshake duration, observed once per established connection',
    HANDSHAKE_BUCKETS_S,
    labels,
  )
  const h = {
    datagramsSent: c('stoq_udp_datagrams_sent_total', 'UDP datagrams sent'),
    datagramsReceived: c('stoq_udp_datagrams_received_total', 'UDP datagrams received'),
    bytesSent: c('stoq_udp_bytes_sent_total', 'UDP payload bytes sent'),
    bytesReceived: c('stoq_udp_bytes_received_total', 'UDP payload bytes received'),
    sendCalls: c('stoq_udp_send_calls_total', 'socket send calls made'),
    receiveCalls: c('stoq_udp_receive_calls_total', 'socket receive callbacks (buffers handed up by the backend)'),
    sendErrors: c('stoq_udp_send_errors_total', 'socket sends that failed'),
    dropped: c('stoq_packets_dropped_total', 'packets the engine dropped (malformed, unknown connection, refused)'),
    batched: c('stoq_batch_packets_total', 'packets moved by the batcher'),
    batchSyscalls: c('stoq_batch_syscalls_total', 'socket send calls the batcher made'),
    batchFlushes: c('stoq_batch_flushes_total', 'batches the batcher flushed'),
    saved: c('stoq_batch_syscalls_saved_total', 'send calls saved by batching (packets - sends)'),
    perSyscall: g('stoq_batch_packets_per_syscall', 'packets per socket send call of the batcher, since start'),
    connections: g('stoq_connections', 'live connections'),
    connectionsClosed: c('stoq_connections_closed_total', 'connections that have ended'),
    poolInUse: g('stoq_pool_buffers_in_use', 'transmit pool buffers in use'),
    poolHighWater: g('stoq_pool_buffers_in_use_high_water', 'highest number of transmit pool buffers in use at once'),
    poolCapacity: g('stoq_pool_buffers', 'transmit pool buffers owned (all slabs)'),
    poolHits: c('stoq_pool_hits_total', 'transmit pool acquisitions served from the free list'),
    poolMisses: c('stoq_pool_misses_total', 'transmit pool acquisitions that found the free list empty'),
    quicPacketsSent: c('stoq_quic_packets_sent_total', 'QUIC packets sent, over all connections'),
    quicPacketsReceived: c('stoq_quic_packets_received_total', 'QUIC packets received, over all connections'),
    quicPacketsLost: c('stoq_quic_packets_lost_total', 'QUIC packets declared lost, over all connections'),
    quicPacketsRetransmitted: c('stoq_quic_packets_retransmitted_total', 'QUIC packets retransmitted, over all connections'),
    quicBytesSent: c('stoq_quic_bytes_sent_total', 'QUIC bytes sent, over all connections'),
    quicBytesReceived: c('stoq_quic_bytes_received_total', 'QUIC bytes received, over all connections'),
    quicBytesLost: c('stoq_quic_bytes_lost_total', 'QUIC bytes declared lost, over all connections'),
    streamBytesWritten: c('stoq_stream_bytes_written_total', 'stream payload bytes the application wrote (accepted by the engine)'),
    streamBytesRead: c('stoq_stream_bytes_read_total', 'stream payload bytes delivered to the application'),
    quicDatagramsSent: c('stoq_quic_datagrams_sent_total', 'QUIC DATAGRAM frames the application sent'),
    quicDatagramsReceived: c('stoq_quic_datagrams_received_total', 'QUIC DATAGRAM frames delivered to the application'),
    quicDatagramsDropped: c('stoq_quic_datagrams_dropped_total', 'QUIC DATAGRAM frames refused because the send queue was full'),
    streamsOpen: g('stoq_streams_open', 'open streams over all live connections'),
    rtt: g('stoq_rtt_seconds', 'smoothed RTT, mean over live connections (0 without one)'),
    rttMax: g('stoq_rtt_max_seconds', 'smoothed RTT, highest over live connections (0 without one)'),
    cwnd: g('stoq_congestion_window_bytes', 'congestion window, summed over live connections'),
    throughput: g('stoq_payload_throughput_gbps', 'stream payload Gbit/s (both ways) over the latest sample interval, summed over live connections'),
    throughputPeak: g('stoq_payload_throughput_peak_gbps', 'highest per-connection payload Gbit/s of a sample interval, over live connections'),
    limitStreams: g('stoq_limit_streams', 'open streams counted against limits.maxStreams'),
    limitStreamsMax: g('stoq_limit_streams_max', 'limits.maxStreams'),
    limitStreamsWaiting: g('stoq_limit_streams_waiting', 'peer streams waiting for the stream budget'),
    limitReadBuffer: g('stoq_limit_read_buffer_bytes', 'stream bytes queued for readers, not yet read'),
    limitReadBufferMax: g('stoq_limit_read_buffer_bytes_max', 'limits.maxReadBufferBytes'),
    limitWindow: g('stoq_limit_receive_window_bytes', 'flow-control credit committed to connections'),
    limitWindowMax: g('stoq_limit_receive_window_bytes_max', 'limits.maxReceiveWindowBytes'),
    limitDatagrams: g('stoq_limit_queued_datagrams', 'received datagrams waiting for listeners'),
    limitDatagramsMax: g('stoq_limit_queued_datagrams_max', 'limits.maxQueuedDatagrams'),
    limitRefused: c('stoq_limit_connections_refused_total', 'connections refused because a budget was full'),
    limitDatagramsDropped: c('stoq_limit_datagrams_dropped_total', 'received datagrams dropped over the queue limits'),
    limitReadsDeferred: c('stoq_limit_reads_deferred_total', 'times a reader stopped because a read budget was full'),
  }
  // Backend-specific counters, registered only when this backend reports them.
  const udp0 = ep.udp as unknown as Record<string, unknown>
  const optional = (key: string, name: string, help: string): { key: string; h: MetricHandle } | null =>
    typeof udp0[key] === 'number' ? { key, h: c(name, help) } : null
  const backendCounters = [
    optional('gsoWrites', 'stoq_udp_gso_writes_total', 'socket writes that carried several segments (GSO)'),
    optional('groBuffers', 'stoq_udp_gro_buffers_total', 'received buffers that held several datagrams (GRO)'),
    optional('sendSyscalls', 'stoq_udp_send_syscalls_total', 'send system calls (sendmmsg / io_uring SENDMSG) of the backend'),
    optional('receiveSyscalls', 'stoq_udp_receive_syscalls_total', 'receive system calls (recvmmsg / io_uring RECVMSG) of the backend'),
    optional('zeroCopySends', 'stoq_zero_copy_sends_total', 'sends handed to the socket thread in place, without a copy'),
    optional('receiveRingFull', 'stoq_udp_receive_ring_full_total', 'times the receive ring was full (datagrams left in the kernel)'),
    optional('overflowSends', 'stoq_udp_overflow_sends_total', 'sends that waited in the overflow queue because the send ring was full'),
  ].filter((x): x is { key: string; h: MetricHandle } => x !== null)
  const update = (): void => {
    if (ep.isClosed()) return
    const s = ep.stats()
    h.datagramsSent.set(s.udp.packetsSent)
    h.datagramsReceived.set(s.udp.packetsReceived)
    h.bytesSent.set(s.udp.bytesSent)
    h.bytesReceived.set(s.udp.bytesReceived)
    h.sendCalls.set(s.udp.sendCalls)
    h.receiveCalls.set(s.udp.receiveCalls)
    h.sendErrors.set(s.udp.sendErrors)
    h.dropped.set(s.packetsDropped)
    h.batched.set(s.batching.packets)
    h.batchSyscalls.set(s.batching.syscalls)
    h.batchFlushes.set(s.batching.flushes)
    h.saved.set(Math.max(0, s.batching.syscallsSaved))
    h.perSyscall.set(s.batching.syscalls > 0 ? s.batching.packets / s.batching.syscalls : 0)
    h.connections.set(s.connections)
    const l = s.limits
    h.limitStreams.set(l.streams)
    h.limitStreamsMax.set(l.limits.maxStreams)
    h.limitStreamsWaiting.set(l.streamsWaiting)
    h.limitReadBuffer.set(l.readBufferBytes)
    h.limitReadBufferMax.set(l.limits.maxReadBufferBytes)
    h.limitWindow.set(l.receiveWindowBytes)
    h.limitWindowMax.set(l.limits.maxReceiveWindowBytes)
    h.limitDatagrams.set(l.queuedDatagrams)
    h.limitDatagramsMax.set(l.limits.maxQueuedDatagrams)
    h.limitRefused.set(l.connectionsRefused)
    h.limitDatagramsDropped.set(l.datagramsDropped)
    h.limitReadsDeferred.set(l.readsDeferred)
    h.poolInUse.set(s.pool.inUse)
    h.poolHighWater.set(s.pool.highWaterMark)
    h.poolCapacity.set(s.pool.capacity)
    h.poolHits.set(s.pool.hits)
    h.poolMisses.set(s.pool.misses)
    const udp = s.udp as unknown as Record<string, number>
    for (const b of backendCounters) b.h.set(udp[b.key] ?? 0)
    // Per-connection figures: closed connections' totals plus the live ones.
    const t = ep.closedTotals
    let packetsSent = t.packetsSent
    let packetsReceived = t.packetsReceived
    let packetsLost = t.packetsLost
    let packetsRetransmitted = t.packetsRetransmitted
    let bytesSent = t.bytesSent
    let bytesReceived = t.bytesReceived
    let bytesLost = t.bytesLost
    let streamBytesRead = t.streamBytesRead
    let streamBytesWritten = t.streamBytesWritten
    let dgSent = t.datagramsSent
    let dgReceived = t.datagramsReceived
    let dgDropped = t.datagramsDropped
    let streamsOpen = 0
    let rttSum = 0
    let rttMax = 0
    let cwnd = 0
    let gbps = 0
    let peakGbps = 0
    for (const conn of ep.conns.values()) {
      const tp = conn.throughput
      gbps += tp.instantGbps
      if (tp.peakGbps > peakGbps) peakGbps = tp.peakGbps
      const cs = conn.stats()
      packetsSent += cs.packetsSent
      packetsReceived += cs.packetsReceived
      packetsLost += cs.packetsLost
      packetsRetransmitted += cs.packetsRetransmitted
      bytesSent += cs.bytesSent
      bytesReceived += cs.bytesReceived
      bytesLost += cs.bytesLost
      streamBytesRead += cs.streamBytesRead
      streamBytesWritten += cs.streamBytesWritten
      dgSent += cs.datagramsSent
      dgReceived += cs.datagramsReceived
      dgDropped += cs.datagramsDropped
      streamsOpen += cs.streamsOpen
      rttSum += cs.rttMs
      if (cs.rttMs > rttMax) rttMax = cs.rttMs
      cwnd += cs.cwndBytes
    }
    h.connectionsClosed.set(t.connections)
    h.quicPacketsSent.set(packetsSent)
    h.quicPacketsReceived.set(packetsReceived)
    h.quicPacketsLost.set(packetsLost)
    h.quicPacketsRetransmitted.set(packetsRetransmitted)
    h.quicBytesSent.set(bytesSent)
    h.quicBytesReceived.set(bytesReceived)
    h.quicBytesLost.set(bytesLost)
    h.streamBytesRead.set(streamBytesRead)
    h.streamBytesWritten.set(streamBytesWritten)
    h.quicDatagramsSent.set(dgSent)
    h.quicDatagramsReceived.set(dgReceived)
    h.quicDatagramsDropped.set(dgDropped)
    h.streamsOpen.set(streamsOpen)
    h.rtt.set(ep.conns.size > 0 ? rttSum / ep.conns.size / 1000 : 0)
    h.rttMax.set(rttMax / 1000)
    h.cwnd.set(cwnd)
    h.throughput.set(gbps)
    h.throughputPeak.set(peakGbps)
  }
  const pull = (sink as { collect?: (fn: () => void) => (() => void) | undefined }).collect
  let stop = (): void => {
    // Replaced below by what stops the updates: the sink's unsubscribe or the timer's clear.
  }
  if (typeof pull === 'function') {
    const off = pull.call(sink, update)
    if (typeof off === 'function') stop = off
  } else {
    const timer = setInterval(update, 1000)
    timer.unref()
    stop = (): void => clearInterval(timer)
  }
  return { handshakeHistogram, stop }
}
