/** What runs on each side of a benchmark run, and the messages between the harness and its two peers. */

/**
 * `libp2p-quic`: @chainsafe/libp2p-quic (quinn through napi-rs), its transport driven directly.
 * `tls`: node:tls over TCP, TLS 1.3 with AES-256-GCM and the same ECDSA P-256 certificate as
 * STOQ's cases: the fair bar for an encrypted transport.
 */
export type Transport = 'tcp' | 'tls' | 'stoq' | 'libp2p-quic'

export interface CaseSpec {
  /** Name used on the command line and in JSON. */
  name: string
  /** Human label for the table. */
  label: string
  transport: Transport
  /** STOQ only: `transport.maxUdpPayloadSize` on both endpoints. */
  maxUdpPayloadSize?: number
  /** STOQ only: UDP backend of both endpoints (`udpBackend`; absent: the endpoint's default, `auto`). */
  udp?: 'dgram' | 'gso' | 'gro' | 'auto'
  /** STOQ only: QUIC engine of both endpoints (absent: the endpoint's default, `auto`). */
  engine?: 'quiche' | 'quinn'
  /** STOQ only: `zeroCopySend` on both endpoints (default: the endpoint's, on for the gro worker). */
  zeroCopy?: boolean
  /** STOQ only: both endpoints report to a metrics registry, scraped as Prometheus text every second. */
  metrics?: boolean
}

/** Largest packet the quinn cases use: loopback's 65536-byte MTU minus IPv6 and UDP headers, rounded down. */
export const QUINN_LARGE_PACKET = 65000

export const CASES: Readonly<Record<string, CaseSpec>> = {
  tcp: { name: 'tcp', label: 'Node net TCP', transport: 'tcp' },
  tls: { name: 'tls', label: 'Node tls (TLS 1.3, AES-256-GCM) over TCP', transport: 'tls' },
  stoq1350: { name: 'stoq1350', label: 'STOQ quiche 1350 B, plain dgram', transport: 'stoq', engine: 'quiche', maxUdpPayloadSize: 1350, udp: 'dgram' },
  stoq16383: { name: 'stoq16383', label: 'STOQ quiche 16383 B, plain dgram', transport: 'stoq', engine: 'quiche', maxUdpPayloadSize: 16383, udp: 'dgram' },
  stoq1350gso: { name: 'stoq1350gso', label: 'STOQ quiche 1350 B, GSO send', transport: 'stoq', engine: 'quiche', maxUdpPayloadSize: 1350, udp: 'gso' },
  stoq16383gso: { name: 'stoq16383gso', label: 'STOQ quiche 16383 B, GSO send', transport: 'stoq', engine: 'quiche', maxUdpPayloadSize: 16383, udp: 'gso' },
  stoq1350gro: { name: 'stoq1350gro', label: 'STOQ quiche 1350 B, worker GRO+GSO', transport: 'stoq', engine: 'quiche', maxUdpPayloadSize: 1350, udp: 'gro' },
  stoq16383gro: {
    name: 'stoq16383gro',
    label: 'STOQ quiche 16383 B, worker GRO+GSO',
    transport: 'stoq',
    engine: 'quiche',
    maxUdpPayloadSize: 16383,
    udp: 'gro',
  },
  quinn1350: { name: 'quinn1350', label: 'STOQ quinn 1350 B, plain dgram', transport: 'stoq', engine: 'quinn', maxUdpPayloadSize: 1350, udp: 'dgram' },
  quinn1350gro: { name: 'quinn1350gro', label: 'STOQ quinn 1350 B, worker GRO+GSO', transport: 'stoq', engine: 'quinn', maxUdpPayloadSize: 1350, udp: 'gro' },
  quinn16383gro: {
    name: 'quinn16383gro',
    label: 'STOQ quinn 16383 B, worker GRO+GSO',
    transport: 'stoq',
    engine: 'quinn',
    maxUdpPayloadSize: 16383,
    udp: 'gro',
  },
  quinn1350grometrics: {
    name: 'quinn1350grometrics',
    label: 'STOQ quinn 1350 B, worker GRO+GSO, metrics scraped every 1 s',
    transport: 'stoq',
    engine: 'quinn',
    maxUdpPayloadSize: 1350,
    udp: 'gro',
    metrics: true,
  },
  quinn1350grocopy: {
    name: 'quinn1350grocopy',
    label: 'STOQ quinn 1350 B, worker GRO+GSO, copy into the send ring',
    transport: 'stoq',
    engine: 'quinn',
    maxUdpPayloadSize: 1350,
    udp: 'gro',
    zeroCopy: false,
  },
  quinnLargegrocopy: {
    name: 'quinnLargegrocopy',
    label: `STOQ quinn ${QUINN_LARGE_PACKET} B, worker GRO+GSO, copy into the send ring`,
    transport: 'stoq',
    engine: 'quinn',
    maxUdpPayloadSize: QUINN_LARGE_PACKET,
    udp: 'gro',
    zeroCopy: false,
  },
  quinnLargegro: {
    name: 'quinnLargegro',
    label: `STOQ quinn ${QUINN_LARGE_PACKET} B, worker GRO+GSO`,
    transport: 'stoq',
    engine: 'quinn',
    maxUdpPayloadSize: QUINN_LARGE_PACKET,
    udp: 'gro',
  },
  /** Comparison: another QUIC stack for Node, with its own defaults (packet size, windows, socket buffers). */
  libp2pquic: { name: 'libp2pquic', label: '@chainsafe/libp2p-quic (quinn via napi)', transport: 'libp2p-quic' },
}

export interface ReceiverStart {
  type: 'start'
  role: 'receiver'
  spec: CaseSpec
  host: string
  bytes: number
  /** STOQ: `socketBufferSize` for the endpoint, or null for the transport's default. */
  socketBufferSize: number | null
  cert: string
  key: string
}

export interface SenderStart {
  type: 'start'
  role: 'sender'
  spec: CaseSpec
  host: string
  port: number
  /** What the receiver's `listening` said the sender needs besides host and port, if anything. */
  dialInfo?: string
  bytes: number
  socketBufferSize: number | null
  /** Give every write its own buffer instead of reusing the ring (diagnostic). */
  copyWrites: boolean
  pin: string
  /** The receiver's certificate (PEM), for the tls case's verification. */
  cert: string
}

/** Harness → peer. `finish`: the run is over, report final figures and exit. */
export type ToPeer = ReceiverStart | SenderStart | { type: 'finish' }

/** CPU time a process used over a wall-clock interval. */
export interface CpuFigures {
  wallMs: number
  userMs: number
  systemMs: number
  /** (user + system) / wall, in percent of one core (can exceed 100 with helper threads). */
  cpuPct: number
}

/** Peer → harness. */
export type FromPeer =
  /** `dialInfo`: anything else the sender needs to connect (libp2p-quic: the listen multiaddr). */
  | { type: 'listening'; port: number; dialInfo?: string }
  /** Receiver: bytes verified so far. Sender: bytes handed to the transport so far. */
  | { type: 'progress'; bytes: number }
  /** Sender: every byte was handed to the transport and the stream was closed. */
  | { type: 'sent'; bytes: number }
  /** Receiver: the whole stream arrived and verified; figures from first to last byte. */
  | { type: 'received'; bytes: number; firstToLastMs: number; cpu: CpuFigures; loopP99Ms: number }
  /**
   * Final report after `finish`. Sender CPU is measured from its first write to `finish`;
   * `loopP99Ms`: the sender's event-loop delay p99 over the same time.
   */
  | { type: 'report'; cpu?: CpuFigures; loopP99Ms?: number; connection?: unknown; endpoint?: unknown }
  | { type: 'error'; message: string; code?: string }

export function cpuFigures(wallMs: number, usage: NodeJS.CpuUsage): CpuFigures {
  const userMs = usage.user / 1000
  const systemMs = usage.system / 1000
  return { wallMs, userMs, systemMs, cpuPct: wallMs > 0 ? ((userMs + systemMs) / wallMs) * 100 : 0 }
}
