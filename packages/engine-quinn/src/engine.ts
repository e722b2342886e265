import {
  StoqDatagramTooLargeError,
  StoqDatagramUnsupportedError,
  StoqEngineError,
  StoqInvalidArgumentError,
  StoqUnsupportedError,
  STREAM_BLOCKED,
  STREAM_STOPPED,
  type ConnectionStatsSnapshot,
  type EarlyDataState,
  type EngineConnectOptions,
  type EngineEventSink,
  type EngineServerOptions,
  type KeyExchangeGroup,
  type QuicEngine,
  type QuicEngineOptions,
  type SocketAddress,
  type StreamRecvError,
  type StreamRecvResult,
  type TransmitBatch,
  type TransportParameters,
} from '@stoq/interface'
import { ABI } from './abi.js'
import { socketAddress, wireAddress, type WireAddress } from './address.js'
import { cidPrefixParam, loadQuinn, type Pointer, type QuinnNative } from './native.js'

/** Largest UDP payload the quinn engine sends (and the largest UDP datagram over IPv4). */
export const QUINN_MAX_PACKET = ABI.MAX_UDP_PAYLOAD
/** quinn-proto refuses a max UDP payload below the QUIC minimum. */
const QUINN_MIN_PACKET = ABI.MIN_UDP_PAYLOAD

const { ERR_BAD_HANDLE, ERR_BAD_ARGUMENT, ERR_PANIC, DGRAM_QUEUED, DGRAM_FULL, DGRAM_TOO_LARGE, DGRAM_UNSUPPORTED } = ABI
const { EV_INCOMING, EV_ESTABLISHED, EV_READABLE, EV_WRITABLE, EV_DATAGRAM, EV_CLOSED, EVENT_STRIDE } = ABI
const { CLOSE_REMOTE, CLOSE_APP, CLOSE_IDLE, CLOSE_VERSION } = ABI
const NO_COMMON_VERSION = new TextEncoder().encode('no common QUIC version')
/** Statistic 13 (EARLY_*) by value. */
const EARLY_STATES: readonly EarlyDataState[] = ['none', 'pending', 'accepted', 'rejected']

/** Events fetched per native call (EVENT_STRIDE doubles each). */
const EVENT_BATCH = 256

/** RFC 9000 §8.1: before its address is validated, a peer gets at most 3x the bytes it sent. */
const AMPLIFICATION_FACTOR = 3
/** Datagrams held back for one unvalidated peer, at most; past this they are dropped (quinn resends). */
const AMPLIFICATION_HOLD_BYTES = 64 * 1024
/** Peers whose received bytes are remembered until the next drainEvents, at most. */
const RECENT_PEERS_MAX = 65536

/**
 * A server connection whose peer address is not validated yet (no Retry). quinn-proto 0.9
 * let a datagram go whenever any budget was left ("always allow a full MTU", quinn #1148),
 * which overshot 3x by up to one datagram; 0.11 checks a full datagram ahead. The engine
 * still counts bytes both ways and holds back what would pass 3x until the peer sends more
 * or proves it receives our packets: the limit does not rest on one library's accounting.
 */
interface Unvalidated {
  conn: number
  peer: SocketAddress
  received: number
  sent: number
  /** Our CID (the SCID of our long-header packets): a packet to it proves the peer got ours. */
  cid: Uint8Array | null
  validated: boolean
  held: Uint8Array[]
  heldBytes: number
}

const wireKeys = new WeakMap<WireAddress, string>()

/** A string key for a (normalised, cached) wire address. */
function wireKey(w: WireAddress): string {
  let k = wireKeys.get(w)
  if (k === undefined) {
    k = `${w.family}|${w.port}|${w.ip.join('.')}`
    wireKeys.set(w, k)
  }
  return k
}

/** Does a datagram of this batch carry `cid` as its Destination CID (long or short header)? */
function carriesCid(data: Uint8Array, segmentSize: number, cid: Uint8Array): boolean {
  const seg = segmentSize > 0 && segmentSize < data.length ? segmentSize : data.length
  for (let off = 0; off < data.length; off += seg) {
    const end = Math.min(off + seg, data.length)
    let at: number
    if ((data[off]! & 0x80) !== 0) {
      if (off + 6 > end || data[off + 5] !== cid.length) continue
      at = off + 6
    } else at = off + 1
    if (at + cid.length > end) continue
    let same = true
    for (let i = 0; i < cid.length; i++) {
      if (data[at + i] !== cid[i]) {
        same = false
        break
      }
    }
    if (same) return true
  }
  return false
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

function alpnList(protocols: string[]): Uint8Array {
  const parts = protocols.map((p) => encoder.encode(p))
  for (const p of parts) {
    if (p.length === 0 || p.length > 255) throw new StoqInvalidArgumentError('alpn', 'each ALPN protocol must be 1 to 255 bytes')
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + 1 + p.length, 0))
  let o = 0
  for (const p of parts) {
    out[o++] = p.length
    out.set(p, o)
    o += p.length
  }
  return out
}

function ccCode(cc: TransportParameters['congestionControl']): number {
  return cc === 'reno' ? ABI.CC_RENO : cc === 'bbr' ? ABI.CC_BBR : ABI.CC_CUBIC
}

/**
 * quinn-proto (through libstoq_quinn.so) as a QuicEngine. Every hot call crosses into
 * native code once: a whole GRO buffer per `receive`, a whole GSO-ready batch per
 * `pollTransmit`, every pending event per `drainEvents`.
 *
 * Differences from the quiche engine, all inherent to quinn-proto 0.11:
 * - `close(conn, app=false, ...)` still sends an application CONNECTION_CLOSE (quinn has no
 *   public transport close); the local close info keeps what was asked.
 * - pacing cannot be turned off; `hystart` is not used (quinn's CUBIC has none).
 * - receive windows do not auto-tune: each is min(initial, max) (`maxStreamWindow`,
 *   `maxConnectionWindow`); `maxConnectionWindow` also sizes the send buffer.
 * - `packetsRetransmitted` reports lost packets (quinn re-sends their frames but does not
 *   count retransmissions); `deliveryRateBps` is 0 (not measured by quinn).
 */
/** IANA codepoints of the TLS groups (stats index 13) and their names. */
const GROUP_NAMES = new Map<number, KeyExchangeGroup>([
  [0x11ec, 'X25519MLKEM768'],
  [29, 'X25519'],
  [23, 'P-256'],
  [24, 'P-384'],
])
const KX_CODES: Record<KeyExchangeGroup, number> = {
  X25519MLKEM768: ABI.KX_X25519MLKEM768,
  X25519: ABI.KX_X25519,
  'P-256': ABI.KX_SECP256R1,
  'P-384': ABI.KX_SECP384R1,
}

/**
 * `QuicEngineOptions.keyExchange` as `EngineConfig.key_exchange`: one KX_* code per byte,
 * lowest first; 0 (absent) for the library's default list.
 */
export function keyExchangeParam(groups: readonly KeyExchangeGroup[] | undefined): number {
  if (groups === undefined) return 0
  if (!Array.isArray(groups) || groups.length === 0 || groups.length > 4 || new Set(groups).size !== groups.length) {
    throw new StoqInvalidArgumentError('keyExchange', 'expected 1 to 4 distinct groups of X25519MLKEM768, X25519, P-256, P-384')
  }
  let code = 0
  groups.forEach((g, i) => {
    const c = KX_CODES[g as KeyExchangeGroup] as number | undefined
    if (c === undefined) throw new StoqInvalidArgumentError('keyExchange', `unknown group ${String(g)}`)
    code += c * 256 ** i
  })
  return code
}

export class QuinnEngine implements QuicEngine {
  readonly specificationVersion = 'v1' as const
  readonly name = 'quinn'
  readonly maxPacketSize: number

  private readonly n: QuinnNative
  private ep: Pointer | null
  private readonly tp: TransportParameters
  private readonly events = new Float64Array(EVENT_BATCH * EVENT_STRIDE)
  private readonly peerBuf = new Uint8Array(ABI.ADDR_LEN)
  private readonly meta = new Uint32Array(ABI.TRANSMIT_META_LEN)
  private readonly recvResult = new Float64Array(ABI.RECV_RESULT_LEN)
  private readonly statsBuf = new Float64Array(ABI.STATS_LEN)
  private readonly textBuf = new Uint8Array(4096)
  private certBuf = new Uint8Array(16384)
  private readonly certLens = new Uint32Array(16)
  /** Listening without Retry: new server connections start unvalidated (see Unvalidated). */
  private guardAmplification = false
  private readonly unvalidated = new Map<string, Unvalidated>()
  /** Bytes received per peer since the last drainEvents (a new connection's first datagrams). */
  private readonly recentReceived = new Map<string, number>()
  /** Views of the transmit slots (`transmitSlots`), by slot; empty when none were given. */
  private slotViews: Uint8Array[] = []
  private slotsGiven = false

  constructor(options: QuicEngineOptions) {
    const loaded = loadQuinn()
    if (!loaded.ok) throw new StoqUnsupportedError('quinn engine', loaded.reason)
    this.n = loaded.native
    this.tp = options.transport
    const t = this.tp
    if (t.maxUdpPayloadSize < QUINN_MIN_PACKET || t.maxUdpPayloadSize > QUINN_MAX_PACKET) {
      throw new StoqInvalidArgumentError('maxUdpPayloadSize', `the quinn engine sends packets of ${QUINN_MIN_PACKET} to ${QUINN_MAX_PACKET} bytes`)
    }
    this.maxPacketSize = t.maxUdpPayloadSize
    const ep = this.n.engineNew(
      {
        abi_version: ABI.ABI_VERSION,
        max_udp_payload: t.maxUdpPayloadSize,
        idle_timeout_ms: t.maxIdleTimeoutMs,
        initial_max_data: t.initialMaxData,
        initial_max_stream_data: t.initialMaxStreamData,
        max_stream_window: t.maxStreamWindow,
        max_connection_window: t.maxConnectionWindow,
        max_streams_bidi: t.initialMaxStreamsBidi,
        max_streams_uni: t.initialMaxStreamsUni,
        datagram_queue_length: t.datagramQueueLength,
        congestion_control: ccCode(t.congestionControl),
        datagrams: t.datagrams ? 1 : 0,
        pacing: t.pacing ? 1 : 0,
        hystart: t.hystart ? 1 : 0,
        cid_prefix: cidPrefixParam(options.cidPrefix),
        mtu_discovery: t.mtuDiscovery ? 1 : 0,
        key_exchange: keyExchangeParam(options.keyExchange),
      },
      this.n.configSize,
    )
    if (ep === null) {
      const len = this.n.lastError(null, this.textBuf, this.textBuf.length)
      const why = decoder.decode(this.textBuf.subarray(0, Math.min(len, this.textBuf.length)))
      throw new StoqInvalidArgumentError('transport', `the quinn engine refused these transport parameters${why ? `: ${why}` : ''}`)
    }
    this.ep = ep
    if (options.sessionCacheSize !== undefined) {
      const n = options.sessionCacheSize
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 1 << 20) {
        this.destroy()
        throw new StoqInvalidArgumentError('sessionCacheSize', `expected an integer from 0 to ${1 << 20}, got ${String(n)}`)
      }
      this.n.setSessionCache(ep, n)
    }
  }

  private readonly cacheBuf = new Float64Array(ABI.SESSION_CACHE_LEN)

  /** The client's session tickets: servers kept, tickets held, most servers kept. */
  sessionCache(): { servers: number; tickets: number; capacity: number } {
    this.n.sessionCache(this.alive(), this.cacheBuf)
    return { servers: this.cacheBuf[0]!, tickets: this.cacheBuf[1]!, capacity: this.cacheBuf[2]! }
  }

  /** Panics caught at the native boundary since the engine started (each closed one connection). */
  get panics(): number {
    return this.ep === null ? 0 : this.n.panicCount(this.ep)
  }

  /** Datagrams not delivered to any connection: malformed, unknown connection, or answered statelessly. */
  get droppedPackets(): number {
    return this.ep === null ? 0 : this.n.droppedPackets(this.ep)
  }

  /** Last error message of the native engine (TLS configuration, connect, panic). */
  get lastError(): string {
    if (this.ep === null) return ''
    const len = this.n.lastError(this.ep, this.textBuf, this.textBuf.length)
    return decoder.decode(this.textBuf.subarray(0, Math.min(len, this.textBuf.length)))
  }

  private alive(): Pointer {
    if (this.ep === null) throw new StoqEngineError(this.name, 'engine destroyed')
    return this.ep
  }

  /** Throw for the ABI's error codes; return `rc` otherwise. */
  private check(rc: number, conn: number, what: string): number {
    if (rc === ERR_BAD_HANDLE) throw new StoqEngineError(this.name, `${what}: unknown connection handle ${conn}`)
    if (rc === ERR_BAD_ARGUMENT) throw new StoqInvalidArgumentError('streamId', 'not a valid stream id')
    if (rc === ERR_PANIC) throw new StoqEngineError(this.name, `${this.lastError} (the connection was closed)`)
    return rc
  }

  // -------------------------------------------------------------------------
  // Server

  listen(options: EngineServerOptions): void {
    const ep = this.alive()
    const alpn = alpnList(options.alpn)
    const secret = options.secret ?? null
    if (secret !== null && secret.length < 16) throw new StoqInvalidArgumentError('secret', 'the secret must be at least 16 bytes')
    const rc = this.n.listen(
      ep,
      options.identity.cert,
      options.identity.cert.length,
      options.identity.key,
      options.identity.key.length,
      alpn,
      alpn.length,
      options.retry ? 1 : 0,
      Math.max(1, Math.min(options.maxConnections, 0xffffffff)),
      options.statelessReset ? 1 : 0,
      secret,
      secret?.length ?? 0,
      options.earlyData === true ? 1 : 0,
    )
    if (rc !== 0) throw new StoqInvalidArgumentError('identity', `quinn could not use the server identity: ${this.lastError}`)
    this.guardAmplification = !options.retry
  }

  stopListening(): void {
    if (this.ep !== null) this.n.stopListening(this.ep)
  }

  setPathMtuDiscovery(allowed: boolean): void {
    const rc = this.n.allowMtuDiscovery(this.alive(), allowed ? 1 : 0)
    if (rc !== ABI.OK) throw new StoqEngineError('quinn', `the quinn engine could not change MTU discovery: ${this.lastError}`)
  }

  // -------------------------------------------------------------------------
  // Packets and timers (hot)

  receive(data: Uint8Array, segmentSize: number, from: SocketAddress, _local: SocketAddress): void {
    const ep = this.alive()
    const w = wireAddress(from)
    if (w === null) return
    if (this.guardAmplification) this.countReceived(data, segmentSize, w)
    this.n.receive(ep, data, data.length, segmentSize, w.ip, w.port, w.family)
  }

  private countReceived(data: Uint8Array, segmentSize: number, w: WireAddress): void {
    const key = wireKey(w)
    const u = this.unvalidated.get(key)
    if (u === undefined) {
      if (this.recentReceived.size < RECENT_PEERS_MAX || this.recentReceived.has(key)) {
        this.recentReceived.set(key, (this.recentReceived.get(key) ?? 0) + data.length)
      }
      return
    }
    u.received += data.length
    if (!u.validated && u.cid !== null && carriesCid(data, segmentSize, u.cid)) u.validated = true
  }

  /** Start counting for a new server connection (EV_INCOMING). */
  private watchUnvalidated(conn: number, peer: SocketAddress): void {
    const w = wireAddress(peer)
    if (w === null) return
    const key = wireKey(w)
    // Its first datagram arrived in this cycle; at least a full client Initial.
    const received = Math.max(this.recentReceived.get(key) ?? 0, QUINN_MIN_PACKET)
    this.unvalidated.set(key, { conn, peer, received, sent: 0, cid: null, validated: false, held: [], heldBytes: 0 })
  }

  private forgetUnvalidated(conn: number, keepHeld: boolean): void {
    for (const [key, u] of this.unvalidated) {
      if (u.conn !== conn) continue
      if (keepHeld && u.held.length > 0) u.validated = true
      else this.unvalidated.delete(key)
    }
  }

  private budget(u: Unvalidated, len: number): boolean {
    return u.validated || u.sent + len <= AMPLIFICATION_FACTOR * u.received
  }

  /** Send what was held back and may go now. */
  private releaseHeld(batch: TransmitBatch, maxPackets: number): boolean {
    for (const [key, u] of this.unvalidated) {
      if (u.held.length === 0) {
        if (u.validated) this.unvalidated.delete(key)
        continue
      }
      let count = 0
      let offset = 0
      while (u.held.length > 0 && count < maxPackets) {
        const d = u.held[0]!
        if (!this.budget(u, d.length) || offset + d.length > batch.buffer.length) break
        batch.buffer.set(d, offset)
        batch.lengths[count++] = d.length
        offset += d.length
        u.sent += d.length
        u.heldBytes -= d.length
        u.held.shift()
      }
      if (count > 0) {
        batch.count = count
        batch.bytes = offset
        batch.peer = u.peer
        return true
      }
    }
    return false
  }

  /** Trim a fresh batch to the peer's budget, holding back the rest; false when nothing may go. */
  private limitBatch(u: Unvalidated, batch: TransmitBatch): boolean {
    const buf = batch.buffer
    if (u.cid === null && (buf[0]! & 0x80) !== 0) {
      const dcidLen = buf[5]!
      const scidLen = buf[6 + dcidLen]!
      if (scidLen > 0 && scidLen <= 20) u.cid = buf.slice(7 + dcidLen, 7 + dcidLen + scidLen)
    }
    let keep = 0
    let kept = 0
    let offset = 0
    for (let i = 0; i < batch.count; i++) {
      const len = batch.lengths[i]!
      if (keep === i && u.held.length === 0 && this.budget(u, len)) {
        keep++
        kept += len
        u.sent += len
      } else if (u.heldBytes + len <= AMPLIFICATION_HOLD_BYTES) {
        u.held.push(buf.slice(offset, offset + len))
        u.heldBytes += len
      }
      offset += len
    }
    batch.count = keep
    batch.bytes = kept
    return keep > 0
  }

  transmitSlots(count: number, size: number): Uint8Array[] | null {
    const ep = this.alive()
    if (!Number.isInteger(count) || count < 1 || count > ABI.MAX_TX_SLOTS) {
      throw new StoqInvalidArgumentError('count', `expected an integer from 1 to ${ABI.MAX_TX_SLOTS}`)
    }
    if (!Number.isInteger(size) || size < this.maxPacketSize || size > ABI.MAX_TX_SLOT_SIZE) {
      throw new StoqInvalidArgumentError('size', `expected an integer from ${this.maxPacketSize} (the largest packet) to ${ABI.MAX_TX_SLOT_SIZE}`)
    }
    if (this.slotsGiven) return null
    this.slotsGiven = true
    const addrs = new BigUint64Array(count)
    const caps = new Uint32Array(count)
    if (this.n.txSlots(ep, count, size, addrs, caps) !== count) return null
    this.slotViews = Array.from(addrs, (address, i) => new Uint8Array(this.n.view(address, caps[i]!)))
    return this.slotViews.slice()
  }

  pollTransmit(batch: TransmitBatch, maxPackets: number): boolean {
    const ep = this.alive()
    const max = Math.min(maxPackets, batch.lengths.length)
    const slot = batch.slot ?? -1
    if (slot >= 0) {
      const view = this.slotViews[slot]
      if (view === undefined) throw new StoqInvalidArgumentError('batch.slot', `no transmit slot ${slot} (${this.slotViews.length} given)`)
      batch.buffer = view
    }
    if (this.unvalidated.size > 0 && this.releaseHeld(batch, max)) return true
    for (;;) {
      const count =
        slot >= 0
          ? this.n.pollTransmitSlot(ep, slot, batch.lengths, max, this.peerBuf, this.meta)
          : this.n.pollTransmit(ep, batch.buffer, batch.buffer.length, batch.lengths, max, this.peerBuf, this.meta)
      if (count === -2) {
        // quinn moved a slot's memory (never expected): the socket may not send from the
        // views any more. The caller goes back to its own buffers.
        this.slotViews = []
        batch.slot = -1
      }
      if (count <= 0) {
        batch.count = 0
        batch.bytes = 0
        return false
      }
      batch.count = count
      batch.bytes = this.meta[1]!
      batch.peer = this.lastPeerFor(this.peerBuf)
      if (this.unvalidated.size === 0) return true
      const w = wireAddress(batch.peer)
      const u = w === null ? undefined : this.unvalidated.get(wireKey(w))
      if (u === undefined || (u.validated && u.held.length === 0)) return true
      if (this.limitBatch(u, batch)) return true
      // Everything was held back: look for another connection's packets.
    }
  }

  private lastPeer: SocketAddress | null = null
  private readonly lastPeerBytes = new Uint8Array(19)

  /** The peer of consecutive batches is almost always the same: skip building its key then. */
  private lastPeerFor(buf: Uint8Array): SocketAddress {
    const last = this.lastPeerBytes
    if (this.lastPeer !== null) {
      let same = true
      for (let i = 0; i < 19; i++) {
        if (buf[i] !== last[i]) {
          same = false
          break
        }
      }
      if (same) return this.lastPeer
    }
    last.set(buf)
    this.lastPeer = socketAddress(buf)
    return this.lastPeer
  }

  nextTimeout(): number {
    if (this.ep === null) return -1
    return this.n.nextTimeout(this.ep)
  }

  handleTimeout(): void {
    if (this.ep !== null) this.n.handleTimeout(this.ep)
  }

  drainEvents(sink: EngineEventSink): void {
    const ep = this.alive()
    const ev = this.events
    for (;;) {
      const n = this.n.drainEvents(ep, ev, ev.length)
      for (let i = 0; i < n; i++) {
        const at = i * EVENT_STRIDE
        const kind = ev[at]!
        const conn = ev[at + 1]!
        const a = ev[at + 2]!
        switch (kind) {
          case EV_INCOMING: {
            const peer = this.peerAddress(conn)
            if (this.guardAmplification) this.watchUnvalidated(conn, peer)
            sink.onIncoming(conn, peer)
            break
          }
          case EV_ESTABLISHED:
            // The handshake completed: the peer's address is validated.
            if (this.unvalidated.size > 0) this.forgetUnvalidated(conn, true)
            sink.onEstablished(conn)
            break
          case EV_READABLE:
            sink.onStreamReadable(conn, a)
            break
          case EV_WRITABLE:
            sink.onStreamWritable(conn, a)
            break
          case EV_DATAGRAM:
            sink.onDatagramReadable(conn)
            break
          case EV_CLOSED: {
            if (this.unvalidated.size > 0) this.forgetUnvalidated(conn, false)
            const flags = ev[at + 3]!
            const len = this.n.takeCloseReason(ep, conn, this.textBuf, this.textBuf.length)
            const reason = len > 0 ? this.textBuf.slice(0, Math.min(len, this.textBuf.length)) : new Uint8Array(0)
            if ((flags & CLOSE_VERSION) !== 0) {
              // The reason is the versions the server offered, 4 bytes each, big-endian.
              const view = new DataView(reason.buffer, reason.byteOffset, reason.byteLength)
              const offeredVersions: number[] = []
              for (let i = 0; i + 4 <= reason.length; i += 4) offeredVersions.push(view.getUint32(i))
              sink.onClosed(conn, { remote: true, app: false, code: 0, reason: NO_COMMON_VERSION.slice(), idleTimeout: false, offeredVersions })
              break
            }
            sink.onClosed(conn, {
              remote: (flags & CLOSE_REMOTE) !== 0,
              app: (flags & CLOSE_APP) !== 0,
              code: a,
              reason,
              idleTimeout: (flags & CLOSE_IDLE) !== 0,
            })
            break
          }
        }
        // A sink may destroy the engine from a callback.
        if (this.ep === null) return
      }
      if (n < EVENT_BATCH) break
    }
    this.recentReceived.clear()
  }

  // -------------------------------------------------------------------------
  // Connections

  connect(options: EngineConnectOptions, _local: SocketAddress): number {
    const ep = this.alive()
    const w = wireAddress(options.peer)
    if (w === null || w.port === 0) throw new StoqInvalidArgumentError('peer', `not an IP address and port: ${options.peer.address}:${options.peer.port}`)
    const name = encoder.encode(options.serverName)
    const alpn = alpnList(options.alpn)
    const ca = options.ca ?? null
    const cert = options.identity?.cert ?? null
    const key = options.identity?.key ?? null
    const rc = this.n.connect(
      ep,
      w.ip,
      w.port,
      w.family,
      name,
      name.length,
      alpn,
      alpn.length,
      ca,
      ca?.length ?? 0,
      options.verifyPeer ? 1 : 0,
      cert,
      cert?.length ?? 0,
      key,
      key?.length ?? 0,
      options.earlyData === true ? 1 : 0,
    )
    if (rc < 0) throw new StoqEngineError(this.name, `quinn could not start a connection: ${this.lastError || `error ${rc}`}`)
    return rc
  }

  close(conn: number, app: boolean, code: number, reason: Uint8Array): void {
    if (this.ep === null) return
    this.n.close(this.ep, conn, app ? 1 : 0, code, reason, reason.length)
  }

  setKeepAlive(conn: number, intervalMs: number): void {
    this.check(this.n.setKeepAlive(this.alive(), conn, intervalMs), conn, 'setKeepAlive')
  }

  setReceiveWindow(conn: number, bytes: number): void {
    this.check(this.n.setReceiveWindow(this.alive(), conn, bytes), conn, 'setReceiveWindow')
  }

  /** quinn keeps state for every stream a limit allows: the host raises limits as the peer uses streams. */
  readonly initialPeerStreamLimit = ABI.INITIAL_STREAM_WINDOW

  setPeerStreamLimit(conn: number, bidirectional: boolean, count: number): void {
    this.check(this.n.setPeerStreamLimit(this.alive(), conn, bidirectional ? 1 : 0, count), conn, 'setPeerStreamLimit')
  }

  // -------------------------------------------------------------------------
  // Streams

  openStream(conn: number, bidirectional: boolean): number {
    const id = this.check(this.n.openStream(this.alive(), conn, bidirectional ? 1 : 0), conn, 'openStream')
    return id < 0 ? -1 : id
  }

  streamSend(conn: number, streamId: number, data: Uint8Array, fin: boolean): number {
    const r = this.n.streamSend(this.alive(), conn, streamId, data, data.length, fin ? 1 : 0)
    if (r === STREAM_BLOCKED || r === STREAM_STOPPED) return r
    if (r === ERR_PANIC) return STREAM_STOPPED
    return this.check(r, conn, 'streamSend')
  }

  streamRecv(conn: number, streamId: number, out: Uint8Array, result: StreamRecvResult & StreamRecvError): boolean {
    const r = this.n.streamRecv(this.alive(), conn, streamId, out, out.length, this.recvResult)
    result.bytes = 0
    result.fin = false
    result.resetCode = -1
    if (r === ERR_PANIC) return false
    if (this.check(r, conn, 'streamRecv') !== 1) return false
    result.bytes = this.recvResult[0]!
    result.fin = this.recvResult[1] === 1
    result.resetCode = this.recvResult[2]!
    return true
  }

  streamCapacity(conn: number, streamId: number): number {
    return this.check(this.n.streamCapacity(this.alive(), conn, streamId), conn, 'streamCapacity')
  }

  streamWantWritable(conn: number, streamId: number): void {
    this.check(this.n.streamWantWritable(this.alive(), conn, streamId), conn, 'streamWantWritable')
  }

  streamComplete(conn: number, streamId: number): boolean {
    if (this.ep === null) return false
    return this.n.streamComplete(this.ep, conn, streamId) === 1
  }

  streamStopCode(conn: number, streamId: number): number {
    return this.n.streamStopCode(this.alive(), conn, streamId)
  }

  streamShutdown(conn: number, streamId: number, direction: 'read' | 'write', code: number): void {
    if (!Number.isInteger(code) || code < 0) throw new StoqInvalidArgumentError('code', 'stream error codes are non-negative integers')
    const rc = this.n.streamShutdown(this.alive(), conn, streamId, direction === 'write' ? 1 : 0, code)
    if (rc === ERR_BAD_HANDLE) this.check(rc, conn, 'streamShutdown')
    // Other failures: the stream is already finished or unknown, nothing to shut.
  }

  streamPriority(conn: number, streamId: number, urgency: number, _incremental: boolean): void {
    if (!Number.isInteger(urgency) || urgency < 0 || urgency > 7) throw new StoqInvalidArgumentError('urgency', 'urgency is an integer from 0 to 7')
    const rc = this.n.streamPriority(this.alive(), conn, streamId, urgency)
    if (rc === ERR_BAD_HANDLE) this.check(rc, conn, 'streamPriority')
    if (rc < 0) throw new StoqInvalidArgumentError('streamId', `cannot set priority of stream ${streamId}`)
  }

  // -------------------------------------------------------------------------
  // Datagrams

  datagramSend(conn: number, data: Uint8Array): boolean {
    const ep = this.alive()
    if (!this.tp.datagrams) throw new StoqDatagramUnsupportedError()
    const rc = this.n.datagramSend(ep, conn, data, data.length)
    if (rc === DGRAM_QUEUED) return true
    if (rc === DGRAM_FULL) return false
    if (rc === DGRAM_TOO_LARGE) throw new StoqDatagramTooLargeError(data.length, this.datagramMaxSize(conn))
    if (rc === DGRAM_UNSUPPORTED) throw new StoqDatagramUnsupportedError()
    this.check(rc, conn, 'datagramSend')
    return false
  }

  datagramRecv(conn: number, out: Uint8Array): number {
    const rc = this.n.datagramRecv(this.alive(), conn, out, out.length)
    if (rc === ERR_BAD_HANDLE || rc === ERR_PANIC) this.check(rc, conn, 'datagramRecv')
    return rc < 0 ? -1 : Math.min(rc, out.length)
  }

  datagramMaxSize(conn: number): number {
    if (!this.tp.datagrams) return -1
    const rc = this.n.datagramMaxSize(this.alive(), conn)
    if (rc === ERR_BAD_HANDLE || rc === ERR_PANIC) this.check(rc, conn, 'datagramMaxSize')
    return rc < 0 ? -1 : rc
  }

  // -------------------------------------------------------------------------
  // Introspection

  isEstablished(conn: number): boolean {
    return this.n.isEstablished(this.alive(), conn) === 1
  }

  alpn(conn: number): string {
    const len = this.check(this.n.alpn(this.alive(), conn, this.textBuf, this.textBuf.length), conn, 'alpn')
    return len <= 0 ? '' : decoder.decode(this.textBuf.subarray(0, Math.min(len, this.textBuf.length)))
  }

  serverName(conn: number): string | null {
    const len = this.check(this.n.serverName(this.alive(), conn, this.textBuf, this.textBuf.length), conn, 'serverName')
    return len < 0 ? null : decoder.decode(this.textBuf.subarray(0, Math.min(len, this.textBuf.length)))
  }

  peerCertificates(conn: number): Uint8Array[] | null {
    const ep = this.alive()
    for (let attempt = 0; attempt < 2; attempt++) {
      const rc = this.check(this.n.peerCertificates(ep, conn, this.certBuf, this.certBuf.length, this.certLens, this.certLens.length), conn, 'peerCertificates')
      if (rc === -1) return null
      if (rc < -1) {
        this.certBuf = new Uint8Array(Math.max(-(rc + 2), this.certBuf.length * 2))
        continue
      }
      const out: Uint8Array[] = []
      let off = 0
      for (let i = 0; i < rc; i++) {
        const len = this.certLens[i]!
        out.push(this.certBuf.slice(off, off + len))
        off += len
      }
      return out
    }
    return null
  }

  stats(conn: number): ConnectionStatsSnapshot {
    this.check(this.n.stats(this.alive(), conn, this.statsBuf), conn, 'stats')
    const s = this.statsBuf
    return {
      packetsSent: s[0]!,
      packetsReceived: s[1]!,
      packetsLost: s[2]!,
      packetsRetransmitted: s[3]!,
      bytesSent: s[4]!,
      bytesReceived: s[5]!,
      bytesLost: s[6]!,
      rttMs: s[7]!,
      cwndBytes: s[8]!,
      deliveryRateBps: s[9]!,
      pathMtu: s[10]!,
      peerMaxDatagramFrameSize: s[11]!,
      pathChanges: s[12]!,
      ...(s[13]! !== 0 ? { keyExchangeGroup: GROUP_NAMES.get(s[13]!) ?? `0x${s[13]!.toString(16)}` } : {}),
      resumed: s[14] === 1,
      earlyData: EARLY_STATES[s[15]!] ?? 'none',
    }
  }

  peerAddress(conn: number): SocketAddress {
    this.check(this.n.peerAddress(this.alive(), conn, this.peerBuf), conn, 'peerAddress')
    return socketAddress(this.peerBuf)
  }

  /**
   * Test hook for the panic boundary: make the library panic while working on `conn`, now
   * (inside this call) or while handling the next datagram routed to it. Either way that
   * connection closes with INTERNAL_ERROR, `panics` counts one, and the engine goes on.
   */
  injectPanic(conn: number, site: 'now' | 'next-datagram'): void {
    const rc = this.n.testPanic(this.alive(), conn, site === 'now' ? ABI.PANIC_NOW : ABI.PANIC_NEXT_DATAGRAM)
    if (rc === ERR_BAD_HANDLE) this.check(rc, conn, 'injectPanic')
  }

  get connectionCount(): number {
    return this.ep === null ? 0 : this.n.connectionCount(this.ep)
  }

  destroy(): void {
    if (this.ep === null) return
    const ep = this.ep
    this.ep = null
    // The slots' memory goes with the engine: no view of it may be used from here on.
    this.slotViews = []
    this.n.engineFree(ep)
    this.unvalidated.clear()
    this.recentReceived.clear()
  }
}

/** Factory for the quinn engine (throws StoqUnsupportedError when the library is unavailable). */
export function quinnEngine(): (options: QuicEngineOptions) => QuicEngine {
  return (options) => new QuinnEngine(options)
}
