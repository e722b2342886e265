import type { ConnectionStatsSnapshot, EarlyDataState } from '@stoq/interface'

export interface ConnectionStats extends ConnectionStatsSnapshot {
  /** The handshake resumed a TLS session (no certificate exchanged): known once it completed. */
  resumed: boolean
  /**
   * 0-RTT of this connection: `none`, `pending` (client: sent before the handshake, the
   * server's verdict not known yet), `accepted`, or `rejected` (the engine sent the data again
   * after the handshake; nothing was lost).
   */
  earlyData: EarlyDataState
  /** Milliseconds since the connection was created. */
  durationMs: number
  /** Handshake duration in ms (-1 until established). */
  handshakeMs: number
  streamsOpen: number
  /** Stream payload bytes delivered to readers (what the application received). */
  streamBytesRead: number
  /** Stream payload bytes the engine accepted from writers (what the application sent). */
  streamBytesWritten: number
  datagramsSent: number
  datagramsReceived: number
  datagramsDropped: number
  /** Received datagrams dropped because the connection's or the endpoint's datagram queue was full. */
  datagramsDroppedReceived: number
  /** Peer streams waiting for the endpoint's stream budget (not announced yet). */
  streamsWaiting: number
  /** Stream bytes queued for this connection's readers, not yet read. */
  readBufferBytes: number
  /** Connection receive window now (0 when the engine tunes its own). */
  receiveWindow: number
}

/** `conn.counters`: payload of one connection, counted as the application sees it. */
export interface ConnectionCounters {
  /** Stream payload bytes delivered to readers. */
  streamBytesRead: number
  /** Stream payload bytes the engine accepted from writers. */
  streamBytesWritten: number
  datagramsSent: number
  datagramsReceived: number
  /** Datagrams refused because the send queue was full. */
  datagramsDropped: number
  /** Received datagrams dropped because a datagram queue was full. */
  datagramsDroppedReceived: number
}

/** Payload rate in one direction, in Gbit/s (10^9 bits per second). */
export interface ThroughputRate {
  /** Payload bytes counted since the first sample. */
  bytes: number
  /** Rate over the latest sample interval (0 before the second sample). */
  instantGbps: number
  /** Rate from the first sample to the latest. */
  averageGbps: number
  /** Highest `instantGbps` of any interval so far. */
  peakGbps: number
}

/**
 * `conn.throughput`: payload throughput of one connection (stream bytes the
 * application wrote and read), sampled by its endpoint's shared timer while
 * the connection lives. The top-level rates count both directions together.
 */
export interface ConnectionThroughput extends ThroughputRate {
  /** Samples taken; the first sets the origin, every later one closes an interval. */
  samples: number
  /** Seconds from the first sample to the latest. */
  durationSec: number
  sent: ThroughputRate
  received: ThroughputRate
}

/** The throughput figures of one connection (`conn.throughput`), from the samples its endpoint takes. */
export class ThroughputSampler {
  /** Throughput samples: origin, latest sample and peaks (plain numbers, updated once per sample). */
  private readonly tp = {
    samples: 0,
    originMs: 0,
    originRead: 0,
    originWritten: 0,
    lastMs: 0,
    lastRead: 0,
    lastWritten: 0,
    instantRead: 0,
    instantWritten: 0,
    peakRead: 0,
    peakWritten: 0,
    peakTotal: 0,
  }

  /**
   * Record one throughput sample at `nowMs` (a `performance.now()` time). The
   * endpoint calls this for every live connection from one shared timer; the
   * first sample sets the origin, a sample that does not move the clock
   * forward is ignored. No allocation.
   */
  sample(nowMs: number, read: number, written: number): void {
    const t = this.tp
    if (t.samples === 0) {
      t.originMs = t.lastMs = nowMs
      t.originRead = t.lastRead = read
      t.originWritten = t.lastWritten = written
      t.samples = 1
      return
    }
    if (!(nowMs > t.lastMs)) return
    const bitsPerNs = 8 / ((nowMs - t.lastMs) * 1e6) // Gbit/s = bits per ns
    t.instantRead = (read - t.lastRead) * bitsPerNs
    t.instantWritten = (written - t.lastWritten) * bitsPerNs
    if (t.instantRead > t.peakRead) t.peakRead = t.instantRead
    if (t.instantWritten > t.peakWritten) t.peakWritten = t.instantWritten
    if (t.instantRead + t.instantWritten > t.peakTotal) t.peakTotal = t.instantRead + t.instantWritten
    t.lastMs = nowMs
    t.lastRead = read
    t.lastWritten = written
    t.samples++
  }

  /** Payload throughput from the endpoint's samples (zeros before the second sample). */
  get value(): ConnectionThroughput {
    const t = this.tp
    const spanMs = t.samples > 1 ? t.lastMs - t.originMs : 0
    const avg = (bytes: number): number => (spanMs > 0 ? (bytes * 8) / (spanMs * 1e6) : 0)
    const readBytes = t.lastRead - t.originRead
    const writtenBytes = t.lastWritten - t.originWritten
    return {
      samples: t.samples,
      durationSec: spanMs / 1000,
      bytes: readBytes + writtenBytes,
      instantGbps: t.instantRead + t.instantWritten,
      averageGbps: avg(readBytes + writtenBytes),
      peakGbps: t.peakTotal,
      sent: { bytes: writtenBytes, instantGbps: t.instantWritten, averageGbps: avg(writtenBytes), peakGbps: t.peakWritten },
      received: { bytes: readBytes, instantGbps: t.instantRead, averageGbps: avg(readBytes), peakGbps: t.peakRead },
    }
  }
}

/** A connection's statistics before the engine reported any. */
export function emptyStats(): ConnectionStatsSnapshot {
  return {
    packetsSent: 0,
    packetsReceived: 0,
    packetsLost: 0,
    packetsRetransmitted: 0,
    bytesSent: 0,
    bytesReceived: 0,
    bytesLost: 0,
    rttMs: 0,
    cwndBytes: 0,
    deliveryRateBps: 0,
    pathMtu: 0,
    peerMaxDatagramFrameSize: 0,
    pathChanges: 0,
    resumed: false,
    earlyData: 'none',
  }
}
