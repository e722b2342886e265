import crypto from 'node:crypto'
import {
  StoqDatagramTooLargeError,
  StoqDatagramUnsupportedError,
  StoqEngineError,
  StoqInvalidArgumentError,
  StoqUnsupportedError,
  STREAM_BLOCKED,
  STREAM_STOPPED,
  type ConnectionStatsSnapshot,
  type EngineCloseInfo,
  type EngineConnectOptions,
  type EngineEventSink,
  type EngineServerOptions,
  type QuicEngine,
  type QuicEngineOptions,
  type SocketAddress,
  type StreamRecvError,
  type StreamRecvResult,
  type TransmitBatch,
  type TransportParameters,
} from '@stoq/interface'
import { loadQuiche, parseQuicheError, type HostPort, type PathEvent, type QuicheBinding, type QuicheConfig, type QuicheConnection } from './binding.js'
import { CidCodec, CID_LEN } from './cid.js'
import { amplificationAllows, countReceived, FrontDoor, isVersionNegotiation, NO_COMMON_VERSION, sameAddress, versionList } from './front-door.js'
import { pemChainList } from './pem.js'
import { connRecord, destination, hex, hostPort, peerKey, toBigIntToken, type ConnRecord } from './record.js'

/** quiche refuses to produce packets larger than this. */
export const QUICHE_MAX_PACKET = 16383
/** QUIC transport error CONNECTION_REFUSED. */
const CONNECTION_REFUSED = 0x2
const REFUSED_REASON = new TextEncoder().encode('connection limit reached')
const STATELESS_RESET_REASON = new TextEncoder().encode('stateless reset')

/** quiche as a QuicEngine: one endpoint's connections, driven from JS. */
export class QuicheEngine implements QuicEngine {
  readonly specificationVersion = 'v1' as const
  readonly name = 'quiche'
  readonly maxPacketSize: number

  private readonly q: QuicheBinding
  private readonly tp: TransportParameters
  private readonly conns = new Map<number, ConnRecord>()
  private readonly initialRoutes = new Map<string, ConnRecord>()
  /** Latest connection per peer address, to route stateless resets. */
  private readonly byPeer = new Map<string, ConnRecord>()
  private readonly sendQueue: ConnRecord[] = []
  private readonly eventQueue: ConnRecord[] = []
  /** Stream id whose readable event is being handled; -1 once the handler read it. */
  private probe = -1
  private readonly cids: CidCodec
  private readonly door: FrontDoor
  private nextHandle = 1
  private readonly clientConfigs = new Map<string, QuicheConfig>()
  private destroyed = false
  /** Packets quiche refused (undecryptable, malformed, unknown connection). */
  droppedPackets = 0

  constructor(options: QuicEngineOptions) {
    // quiche 0.18 (BoringSSL) offers X25519, P-256 and P-384, no ML-KEM, and its binding
    // cannot change the list: a list without X25519 (e.g. post-quantum only) cannot be met.
    if (options.keyExchange !== undefined && !options.keyExchange.includes('X25519')) {
      throw new StoqUnsupportedError(
        'keyExchange',
        `the quiche engine negotiates X25519, P-256 or P-384 (no X25519MLKEM768) and cannot restrict them to ${options.keyExchange.join(', ')}`,
      )
    }
    this.cids = new CidCodec(options.cidPrefix)
    this.q = loadQuiche()
    this.tp = options.transport
    this.maxPacketSize = Math.min(this.tp.maxUdpPayloadSize, QUICHE_MAX_PACKET)
    this.door = new FrontDoor(this.q, this.cids, () => {
      this.droppedPackets++
    })
  }

  get connectionCount(): number {
    return this.conns.size
  }

  // -------------------------------------------------------------------------
  // Configuration

  private applyTransport(cfg: QuicheConfig, alpn: string[]): QuicheConfig {
    const tp = this.tp
    cfg.setApplicationProtos(alpn)
    // GREASE would spend transport-parameter bytes that quiche 0.18 does not have (see CID_LEN).
    cfg.grease(false)
    cfg.setMaxIdleTimeout(tp.maxIdleTimeoutMs)
    cfg.setMaxRecvUdpPayloadSize(QUICHE_MAX_PACKET)
    cfg.setMaxSendUdpPayloadSize(this.maxPacketSize)
    // quiche tunes its connection window itself (no setReceiveWindow), so the endpoint's receive
    // budget counts maxConnectionWindow for each quiche connection anyway; starting below it only
    // exposes quiche 0.18's MAX_DATA stall (see test/quiche-streams.test.ts): a 2 MiB start
    // stalled a 10 MiB echo against quic-go until the idle timeout.
    cfg.setInitialMaxData(Math.max(tp.initialMaxData, tp.maxConnectionWindow))
    cfg.setInitialMaxStreamDataBidiLocal(tp.initialMaxStreamData)
    cfg.setInitialMaxStreamDataBidiRemote(tp.initialMaxStreamData)
    cfg.setInitialMaxStreamDataUni(tp.initialMaxStreamData)
    cfg.setInitialMaxStreamsBidi(tp.initialMaxStreamsBidi)
    cfg.setInitialMaxStreamsUni(tp.initialMaxStreamsUni)
    cfg.setMaxStreamWindow(tp.maxStreamWindow)
    cfg.setMaxConnectionWindow(tp.maxConnectionWindow)
    cfg.setDisableActiveMigration(true)
    cfg.setCcAlgorithmName(tp.congestionControl)
    cfg.enableHystart(tp.hystart)
    cfg.enablePacing(tp.pacing)
    if (tp.datagrams) cfg.enableDgram(true, tp.datagramQueueLength, tp.datagramQueueLength)
    return cfg
  }

  private buildConfig(
    verifyPeer: boolean,
    ca: Uint8Array | undefined,
    identity: { cert: Uint8Array; key: Uint8Array } | undefined,
    alpn: string[],
  ): QuicheConfig {
    try {
      const cfg = this.q.Config.withBoringSslCtx(
        verifyPeer,
        false,
        ca ?? null,
        identity ? [identity.key] : null,
        // One element per key: the whole chain, leaf first (@matrixai/quic pairs key[i]
        // with cert[i], a PEM chain; a list of single certificates would send the leaf alone).
        identity ? pemChainList(identity.cert) : null,
        null,
      )
      return this.applyTransport(cfg, alpn)
    } catch (err) {
      throw new StoqInvalidArgumentError('tls', `quiche refused the TLS configuration (certificate, key or CA PEM): ${(err as Error).message}`)
    }
  }

  listen(options: EngineServerOptions): void {
    this.assertAlive()
    this.door.open(options, this.buildConfig(false, undefined, options.identity, options.alpn))
  }

  stopListening(): void {
    this.door.server = null
  }

  // -------------------------------------------------------------------------
  // Connection IDs and records

  private allocHandle(): number {
    for (;;) {
      const h = this.nextHandle
      this.nextHandle = this.nextHandle >= 0x7fffffff ? 1 : this.nextHandle + 1
      if (!this.conns.has(h)) return h
    }
  }

  /** Find the connection whose CID starts at `offset` in `pkt` (no allocation). */
  private lookupCid(pkt: Uint8Array, offset: number): ConnRecord | undefined {
    const rec = this.conns.get(this.cids.handle(pkt, offset))
    if (rec === undefined) return undefined
    const scid = rec.scid
    // Every byte: the prefix, the handle (equal by construction) and the random part.
    for (let i = 0; i < CID_LEN; i++) if (scid[i] !== pkt[offset + i]) return undefined
    return rec
  }

  private newRecord(handle: number, conn: QuicheConnection, scid: Uint8Array, peer: SocketAddress, local: SocketAddress, server: boolean): ConnRecord {
    const rec = connRecord(handle, conn, scid, peer, local, server)
    this.conns.set(handle, rec)
    this.byPeer.set(peerKey(peer), rec)
    this.markSend(rec)
    this.markEvent(rec)
    return rec
  }

  private markSend(rec: ConnRecord): void {
    if (!rec.sendDirty) {
      rec.sendDirty = true
      this.sendQueue.push(rec)
    }
    rec.timerDirty = true
  }

  private markEvent(rec: ConnRecord): void {
    if (!rec.eventDirty) {
      rec.eventDirty = true
      this.eventQueue.push(rec)
    }
  }

  private get(conn: number): ConnRecord {
    const rec = this.conns.get(conn)
    if (rec === undefined) throw new StoqEngineError(this.name, `Unknown connection handle ${conn}`)
    return rec
  }

  // -------------------------------------------------------------------------
  // Receive

  receive(data: Uint8Array, segmentSize: number, from: SocketAddress, local: SocketAddress): void {
    if (this.destroyed) return
    if (segmentSize >= data.length) {
      this.receiveOne(data, from, local)
      return
    }
    for (let off = 0; off < data.length; off += segmentSize) {
      this.receiveOne(data.subarray(off, Math.min(off + segmentSize, data.length)), from, local)
    }
  }

  private receiveOne(pkt: Uint8Array, from: SocketAddress, local: SocketAddress): void {
    const len = pkt.length
    if (len < 2) {
      this.droppedPackets++
      return
    }
    let rec: ConnRecord | undefined
    if ((pkt[0]! & 0x80) === 0) {
      // Short header: our CID follows the first byte.
      if (len >= 1 + CID_LEN) rec = this.lookupCid(pkt, 1)
      if (rec === undefined) {
        // A stateless reset carries no CID of ours: let the connection with
        // this peer check the token (quiche does, RFC 9000 §10.3.1).
        const byPeer = len >= 21 ? this.byPeer.get(peerKey(from)) : undefined
        if (byPeer !== undefined) this.deliver(byPeer, pkt, from)
        else this.door.maybeStatelessReset(pkt, from)
        return
      }
    } else {
      if (len < 7) {
        this.droppedPackets++
        return
      }
      const dcidLen = pkt[5]!
      if (dcidLen > 20 || 6 + dcidLen > len) {
        this.droppedPackets++
        return
      }
      if (dcidLen === CID_LEN) rec = this.lookupCid(pkt, 6)
      if (rec === undefined && this.initialRoutes.size > 0) {
        rec = this.initialRoutes.get(Buffer.from(pkt.buffer, pkt.byteOffset + 6, dcidLen).toString('hex'))
      }
      if (rec === undefined) {
        this.acceptNew(pkt, from, local)
        return
      }
    }
    this.deliver(rec, pkt, from)
  }

  private deliver(rec: ConnRecord, pkt: Uint8Array, from: SocketAddress): void {
    if (!rec.server && isVersionNegotiation(pkt) && !rec.conn.isEstablished()) rec.offeredVersions = versionList(pkt)
    if (from.port !== rec.recvInfo.from.port || from.address !== rec.recvInfo.from.host) {
      // Active migration is disabled; quiche still needs the real source to
      // validate a NAT rebinding, so hand it the address this packet came from.
      rec.recvInfo = { from: hostPort(from), to: rec.recvInfo.to }
    }
    countReceived(rec, pkt, from)
    try {
      rec.conn.recv(pkt, rec.recvInfo)
    } catch {
      // Undecryptable or malformed for this connection: quiche drops it.
      this.droppedPackets++
    }
    if (!sameAddress(from, rec.peer)) this.followPeer(rec)
    rec.lastActivity = performance.now()
    this.markSend(rec)
    this.markEvent(rec)
  }

  /**
   * Path events after a packet from another address than the peer's: once quiche has validated
   * the new path and moved the connection to it (NAT rebinding), packets go there.
   */
  private followPeer(rec: ConnRecord): void {
    for (let i = 0; i < 64; i++) {
      let ev: PathEvent | null | undefined
      try {
        ev = rec.conn.pathEventNext()
      } catch {
        return // Done: no more events.
      }
      if (ev === null || ev === undefined) return
      if (ev.type !== 'PeerMigrated') continue
      const next = destination(ev.new, rec.peer)
      const key = peerKey(rec.peer)
      if (this.byPeer.get(key) === rec) this.byPeer.delete(key)
      rec.peer = next
      this.byPeer.set(peerKey(next), rec)
      rec.pathChanges++
    }
  }

  private acceptNew(pkt: Uint8Array, from: SocketAddress, local: SocketAddress): void {
    const admitted = this.door.admit(pkt, from, this.conns, () => this.allocHandle())
    if (admitted === null) return
    const { handle, scid, odcid, dcid, refused, server, config: cfg } = admitted
    if (server.statelessReset) cfg.setStatelessResetToken(toBigIntToken(this.door.resetToken(scid)))
    let conn: QuicheConnection
    try {
      conn = this.q.Connection.accept(scid, odcid, hostPort(local), hostPort(from), cfg)
    } catch {
      // e.g. quiche cannot encode the transport parameters: refuse quietly.
      this.droppedPackets++
      return
    }
    const rec = this.newRecord(handle, conn, scid, from, local, true)
    if (!server.retry) {
      // No Retry token: the address is unvalidated (deliver() counts this first Initial).
      rec.ampLimited = true
      // Until the client learns our CID, its packets carry its own random DCID.
      rec.initialKey = hex(dcid)
      this.initialRoutes.set(rec.initialKey, rec)
    }
    if (refused) {
      // Refused after our first flight: a CONNECTION_CLOSE sent before it would
      // travel at a level the client cannot decrypt yet (quiche 0.18 sends it
      // in Handshake packets only).
      rec.refused = true
      rec.incomingReported = true // never shown to the application
    }
    this.deliver(rec, pkt, from)
  }

  // -------------------------------------------------------------------------
  // Transmit

  pollTransmit(batch: TransmitBatch, maxPackets: number): boolean {
    if (this.destroyed) return false
    const buffer = batch.buffer
    if (this.door.control.length > 0) {
      const c = this.door.control.shift()!
      buffer.set(c.data, 0)
      batch.lengths[0] = c.data.length
      batch.count = 1
      batch.bytes = c.data.length
      batch.peer = c.peer
      return true
    }
    const queue = this.sendQueue
    while (queue.length > 0) {
      const rec = queue[0]!
      if (!this.conns.has(rec.handle)) {
        queue.shift()
        continue
      }
      if (rec.held !== null) {
        const h = rec.held
        rec.held = null
        buffer.set(h.data, 0)
        batch.lengths[0] = h.data.length
        batch.count = 1
        batch.bytes = h.data.length
        batch.peer = h.peer
        return true
      }
      let offset = 0
      let count = 0
      let runPeer = rec.peer
      const conn = rec.conn
      if (rec.ampLimited && conn.isEstablished()) rec.ampLimited = false
      while (count < maxPackets) {
        const room = buffer.length - offset
        if (room < this.maxPacketSize) break
        let written: [number, unknown] | null
        try {
          written = conn.send(buffer.subarray(offset, offset + this.maxPacketSize))
        } catch (err) {
          // quiche reports a fatal state: the connection will show as closed.
          written = null
          if (parseQuicheError(err).kind !== 'Done') this.markEvent(rec)
        }
        if (written === null) break
        const n = written[0]
        // Each packet says where it goes: during a migration quiche probes the new path while
        // data may still go on the old one. A batch has one destination.
        const to = destination((written[1] as { to: HostPort }).to, rec.peer)
        if (count === 0) runPeer = to
        else if (!sameAddress(to, runPeer)) {
          rec.held = { data: buffer.slice(offset, offset + n), peer: to }
          break
        }
        if (!amplificationAllows(rec, n)) {
          // Over the budget: drop it (quiche counts it in flight, declares it lost and
          // sends again later) and send nothing more until the peer sends or proves its address.
          break
        }
        batch.lengths[count++] = n
        offset += n
      }
      rec.timerDirty = true
      if (rec.refused && count > 0 && !rec.conn.isDraining()) {
        try {
          conn.close(false, CONNECTION_REFUSED, REFUSED_REASON)
        } catch {
          // Already closing.
        }
      }
      if (count > 0) {
        batch.count = count
        batch.bytes = offset
        batch.peer = runPeer
        rec.lastActivity = performance.now()
        // Leave it queued if the batch filled: there may be more.
        if (count < maxPackets && buffer.length - offset >= this.maxPacketSize && !rec.refused) {
          queue.shift()
          rec.sendDirty = false
        }
        this.markEvent(rec)
        return true
      }
      queue.shift()
      rec.sendDirty = false
      if (conn.isClosed()) this.markEvent(rec)
    }
    return false
  }

  // -------------------------------------------------------------------------
  // Timers

  nextTimeout(): number {
    const now = performance.now()
    let min = -1
    for (const rec of this.conns.values()) {
      if (rec.timerDirty) {
        rec.timerDirty = false
        const t = rec.conn.timeout()
        rec.deadline = t === null ? -1 : now + t
      }
      let d = rec.deadline
      if (rec.keepAliveMs > 0) {
        const k = rec.lastActivity + rec.keepAliveMs
        if (d < 0 || k < d) d = k
      }
      if (d >= 0 && (min < 0 || d < min)) min = d
    }
    return min < 0 ? -1 : Math.max(0, min - now)
  }

  handleTimeout(): void {
    const now = performance.now()
    for (const rec of this.conns.values()) {
      if (rec.deadline >= 0 && rec.deadline <= now + 0.5) {
        rec.conn.onTimeout()
        rec.deadline = -1
        this.markSend(rec)
        this.markEvent(rec)
      }
      if (rec.keepAliveMs > 0 && now - rec.lastActivity >= rec.keepAliveMs) {
        if (rec.conn.isEstablished() && !rec.conn.isDraining()) rec.conn.sendAckEliciting()
        rec.lastActivity = now
        this.markSend(rec)
      }
    }
  }

  setKeepAlive(conn: number, intervalMs: number): void {
    const rec = this.get(conn)
    rec.keepAliveMs = intervalMs
    rec.timerDirty = true
  }

  // -------------------------------------------------------------------------
  // Events

  drainEvents(sink: EngineEventSink): void {
    const queue = this.eventQueue
    // Events may mark more records; process until quiet, bounded by one pass each.
    let n = queue.length
    while (n-- > 0) {
      const rec = queue.shift()!
      rec.eventDirty = false
      if (!this.conns.has(rec.handle)) continue
      const conn = rec.conn
      if (rec.closeReported) {
        if (conn.isClosed()) this.remove(rec)
        continue
      }
      const ending = conn.isClosed() || conn.isDraining()
      if (!rec.incomingReported) {
        rec.incomingReported = true
        sink.onIncoming(rec.handle, rec.peer)
      }
      // A client connection that is already ending is never announced as
      // established (a server that refuses us right after its first flight);
      // a server connection is, so the application sees its close too.
      if (!rec.establishedReported && (rec.server || !ending) && conn.isEstablished()) {
        rec.establishedReported = true
        if (rec.initialKey !== null) {
          this.initialRoutes.delete(rec.initialKey)
          rec.initialKey = null
        }
        if (!rec.refused) sink.onEstablished(rec.handle)
      }
      if (!rec.refused && !ending) {
        // quiche 0.18 forgets ("collects") a bidirectional stream as soon as the application
        // reads the RESET_STREAM (or FIN) that completes it, when its sending side is already
        // over, which a STOP_SENDING makes it: the peer's STOP_SENDING code goes with it (a later
        // stream_send only answers Done). Ask for the code of every readable bidirectional
        // stream before any of them is read, while quiche still knows it.
        let ids: number[] | null = null
        const quiet = rec.quiet
        for (const id of conn.readable()) {
          if (quiet?.has(id)) continue
          ;(ids ??= []).push(id)
          if ((id & 0x2) === 0) this.noteStopped(rec, id)
        }
        if (ids !== null) {
          for (const id of ids) {
            this.probe = id
            sink.onStreamReadable(rec.handle, id)
            // Not read during the event: leave it out of later events until it is read.
            if (this.probe === id) (rec.quiet ??= new Set()).add(id)
          }
          this.probe = -1
        }
        if (rec.wantWritable.size > 0) {
          // A snapshot: a writer that is still blocked asks again from inside
          // onStreamWritable, and a live Set iteration would revisit it forever.
          for (const id of [...rec.wantWritable]) {
            let cap: number
            try {
              cap = conn.streamCapacity(id)
            } catch (err) {
              const e = parseQuicheError(err)
              if (e.kind === 'StreamStopped') (rec.stopped ??= new Map()).set(id, e.code)
              cap = 1 // report it: the writer will see the stop or the closed state
            }
            if (cap > 0) {
              rec.wantWritable.delete(id)
              sink.onStreamWritable(rec.handle, id)
            }
          }
        }
        if (this.tp.datagrams && conn.dgramRecvQueueLen() > 0) sink.onDatagramReadable(rec.handle)
      }
      // Report the end as soon as the connection drains (CONNECTION_CLOSE sent
      // or received); quiche keeps the state a few PTOs longer to absorb late
      // packets, invisible to the application.
      const closed = conn.isClosed()
      if (!rec.closeReported && (closed || conn.isDraining())) {
        rec.closeReported = true
        sink.onClosed(rec.handle, this.closeInfo(rec))
      }
      if (closed) this.remove(rec)
    }
  }

  private closeInfo(rec: ConnRecord): EngineCloseInfo {
    const conn = rec.conn
    if (rec.offeredVersions !== null && !conn.isEstablished() && conn.peerError() === null) {
      // quiche closes locally (transport code 10 here) when no version it speaks is offered;
      // reported like the quinn engine does.
      return { remote: true, app: false, code: 0, reason: NO_COMMON_VERSION.slice(), idleTimeout: false, offeredVersions: rec.offeredVersions }
    }
    const peer = conn.peerError()
    if (peer) return { remote: true, app: peer.isApp, code: peer.errorCode, reason: peer.reason, idleTimeout: false }
    const local = conn.localError()
    if (local) return { remote: false, app: local.isApp, code: local.errorCode, reason: local.reason, idleTimeout: false }
    if (conn.isTimedOut()) return { remote: false, app: false, code: 0, reason: new Uint8Array(0), idleTimeout: true }
    // quiche closes without any error only when a stateless reset from the peer matched.
    return { remote: true, app: false, code: 0, reason: STATELESS_RESET_REASON, idleTimeout: false }
  }

  private remove(rec: ConnRecord): void {
    this.conns.delete(rec.handle)
    const key = peerKey(rec.peer)
    if (this.byPeer.get(key) === rec) this.byPeer.delete(key)
    if (rec.initialKey !== null) this.initialRoutes.delete(rec.initialKey)
  }

  // -------------------------------------------------------------------------
  // Client connections

  connect(options: EngineConnectOptions, local: SocketAddress): number {
    this.assertAlive()
    const key = `${options.verifyPeer}|${options.alpn.join(',')}|${options.ca ? hex(crypto.createHash('sha256').update(options.ca).digest()) : ''}|${options.identity ? hex(crypto.createHash('sha256').update(options.identity.cert).digest()) : ''}`
    let cfg = this.clientConfigs.get(key)
    if (cfg === undefined) {
      cfg = this.buildConfig(options.verifyPeer, options.ca, options.identity, options.alpn)
      if (this.clientConfigs.size > 64) this.clientConfigs.clear()
      this.clientConfigs.set(key, cfg)
    }
    const handle = this.allocHandle()
    const scid = this.cids.make(handle)
    let conn: QuicheConnection
    try {
      conn = this.q.Connection.connect(options.serverName, scid, hostPort(local), hostPort(options.peer), cfg)
    } catch (err) {
      throw new StoqEngineError(this.name, `quiche could not start a connection: ${(err as Error).message}`, { cause: err })
    }
    this.newRecord(handle, conn, scid, options.peer, local, false)
    return handle
  }

  close(conn: number, app: boolean, code: number, reason: Uint8Array): void {
    const rec = this.conns.get(conn)
    if (rec === undefined) return
    try {
      rec.conn.close(app, code, reason)
    } catch {
      // Already closed or draining.
    }
    this.markSend(rec)
    this.markEvent(rec)
  }

  // -------------------------------------------------------------------------
  // Streams

  openStream(conn: number, bidirectional: boolean): number {
    const rec = this.get(conn)
    const left = bidirectional ? rec.conn.peerStreamsLeftBidi() : rec.conn.peerStreamsLeftUni()
    if (left <= 0) return -1
    const id = bidirectional ? rec.nextBidi : rec.nextUni
    if (bidirectional) rec.nextBidi += 4
    else rec.nextUni += 4
    return id
  }

  streamSend(conn: number, streamId: number, data: Uint8Array, fin: boolean): number {
    const rec = this.get(conn)
    let n: number | null
    try {
      n = rec.conn.streamSend(streamId, data, fin)
    } catch (err) {
      const e = parseQuicheError(err)
      if (e.kind === 'StreamStopped') (rec.stopped ??= new Map()).set(streamId, e.code)
      if (e.kind === 'Done') return this.blockedOrGone(rec, streamId)
      return STREAM_STOPPED
    }
    // quiche answers Done (null) when it took nothing, FIN included.
    if (n === null) return this.blockedOrGone(rec, streamId)
    this.markSend(rec)
    return n
  }

  /**
   * quiche answered Done to stream_send: the stream has no credit now (blocked), or quiche
   * already forgot it (collected: complete both ways, which for a stream still written to
   * means the peer stopped it; its STOP_SENDING code is in `rec.stopped` when we saw it).
   */
  private blockedOrGone(rec: ConnRecord, streamId: number): number {
    try {
      rec.conn.streamCapacity(streamId)
      return STREAM_BLOCKED
    } catch (err) {
      const e = parseQuicheError(err)
      if (e.kind === 'StreamStopped') {
        ;(rec.stopped ??= new Map()).set(streamId, e.code)
        return STREAM_STOPPED
      }
      return e.kind === 'InvalidStreamState' ? STREAM_STOPPED : STREAM_BLOCKED
    }
  }

  /** Remember the peer's STOP_SENDING code for `streamId`, if quiche has one. */
  private noteStopped(rec: ConnRecord, streamId: number): void {
    if (rec.stopped?.has(streamId)) return
    try {
      rec.conn.streamCapacity(streamId)
    } catch (err) {
      const e = parseQuicheError(err)
      if (e.kind === 'StreamStopped') (rec.stopped ??= new Map()).set(streamId, e.code)
    }
  }

  streamRecv(conn: number, streamId: number, out: Uint8Array, result: StreamRecvResult & StreamRecvError): boolean {
    const rec = this.get(conn)
    result.bytes = 0
    result.fin = false
    result.resetCode = -1
    if (this.probe === streamId) this.probe = -1
    const wasQuiet = rec.quiet?.delete(streamId) === true
    // Packets arrived since the last drainEvents (a reader pulling between the two), or the
    // stream was left out of events: a STOP_SENDING among them would be lost once this read
    // consumes a RESET_STREAM.
    if ((rec.eventDirty || wasQuiet) && (streamId & 0x2) === 0) this.noteStopped(rec, streamId)
    let r: [number, boolean] | null
    try {
      r = rec.conn.streamRecv(streamId, out)
    } catch (err) {
      const e = parseQuicheError(err)
      if (e.kind === 'StreamReset') {
        result.resetCode = e.code
        return true
      }
      return false
    }
    if (r === null) return false
    result.bytes = r[0]
    result.fin = r[1]
    // Reading frees flow-control credit: MAX_STREAM_DATA may be due.
    this.markSend(rec)
    return true
  }

  streamCapacity(conn: number, streamId: number): number {
    const rec = this.get(conn)
    try {
      return rec.conn.streamCapacity(streamId)
    } catch (err) {
      const e = parseQuicheError(err)
      if (e.kind === 'StreamStopped') (rec.stopped ??= new Map()).set(streamId, e.code)
      return -1
    }
  }

  streamWantWritable(conn: number, streamId: number): void {
    const rec = this.get(conn)
    rec.wantWritable.add(streamId)
    this.markEvent(rec)
  }

  streamComplete(conn: number, streamId: number): boolean {
    const rec = this.conns.get(conn)
    if (rec === undefined) return false
    try {
      rec.conn.streamCapacity(streamId)
      return false
    } catch (err) {
      // quiche forgets ("collects") a stream once it is complete both ways.
      return parseQuicheError(err).kind === 'InvalidStreamState'
    }
  }

  streamStopCode(conn: number, streamId: number): number {
    const rec = this.get(conn)
    return rec.stopped?.get(streamId) ?? -1
  }

  streamShutdown(conn: number, streamId: number, direction: 'read' | 'write', code: number): void {
    const rec = this.get(conn)
    try {
      rec.conn.streamShutdown(streamId, direction === 'read' ? this.q.Shutdown.Read : this.q.Shutdown.Write, code)
    } catch {
      // Stream already finished or unknown: nothing to shut.
    }
    rec.wantWritable.delete(streamId)
    rec.stopped?.delete(streamId)
    this.markSend(rec)
  }

  /** Forget per-stream bookkeeping once the application is done with a stream. */
  streamForget(conn: number, streamId: number): void {
    const rec = this.conns.get(conn)
    if (!rec) return
    rec.wantWritable.delete(streamId)
    rec.stopped?.delete(streamId)
  }

  streamPriority(conn: number, streamId: number, urgency: number, incremental: boolean): void {
    const rec = this.get(conn)
    try {
      rec.conn.streamPriority(streamId, urgency, incremental)
    } catch (err) {
      throw new StoqInvalidArgumentError('streamId', `cannot set priority: ${(err as Error).message}`)
    }
  }

  // -------------------------------------------------------------------------
  // Datagrams

  datagramSend(conn: number, data: Uint8Array): boolean {
    const rec = this.get(conn)
    const max = this.datagramMaxSize(conn)
    if (max < 0) throw new StoqDatagramUnsupportedError()
    if (data.length > max) throw new StoqDatagramTooLargeError(data.length, max)
    if (rec.conn.isDgramSendQueueFull()) return false
    try {
      rec.conn.dgramSend(data)
    } catch (err) {
      const e = parseQuicheError(err)
      if (e.kind === 'BufferTooShort') throw new StoqDatagramTooLargeError(data.length, max)
      if (e.kind === 'InvalidState') throw new StoqDatagramUnsupportedError()
      return false
    }
    this.markSend(rec)
    return true
  }

  datagramRecv(conn: number, out: Uint8Array): number {
    const rec = this.get(conn)
    try {
      const n = rec.conn.dgramRecv(out)
      return n ?? -1
    } catch {
      return -1
    }
  }

  datagramMaxSize(conn: number): number {
    const rec = this.get(conn)
    if (!this.tp.datagrams) return -1
    const n = rec.conn.dgramMaxWritableLen()
    return n ?? -1
  }

  // -------------------------------------------------------------------------
  // Introspection

  isEstablished(conn: number): boolean {
    return this.get(conn).conn.isEstablished()
  }

  alpn(conn: number): string {
    return Buffer.from(this.get(conn).conn.applicationProto()).toString('utf8')
  }

  serverName(conn: number): string | null {
    return this.get(conn).conn.serverName()
  }

  peerCertificates(conn: number): Uint8Array[] | null {
    return this.get(conn).conn.peerCertChain()
  }

  peerAddress(conn: number): SocketAddress {
    return this.get(conn).peer
  }

  stats(conn: number): ConnectionStatsSnapshot {
    const c = this.get(conn).conn
    const s = c.stats()
    const paths = c.pathStats()
    const p = paths.find((x) => x.active) ?? paths[0]
    return {
      packetsSent: s.sent,
      packetsReceived: s.recv,
      packetsLost: s.lost,
      packetsRetransmitted: s.retrans,
      bytesSent: s.sentBytes,
      bytesReceived: s.recvBytes,
      bytesLost: s.lostBytes,
      rttMs: p ? p.rtt : 0,
      cwndBytes: p ? p.cwnd : 0,
      deliveryRateBps: p ? p.deliveryRate * 8 : 0,
      pathMtu: p ? p.pmtu : 0,
      peerMaxDatagramFrameSize: s.peerMaxDatagramFrameSize ?? 0,
      pathChanges: this.get(conn).pathChanges,
      // The binding does not say which group BoringSSL used (X25519 between quiche peers).
      keyExchangeGroup: 'unknown',
      resumed: c.isResumed(),
      // No 0-RTT through this engine (see sessionCache).
      earlyData: 'none',
    }
  }

  private assertAlive(): void {
    if (this.destroyed) throw new StoqEngineError(this.name, 'engine destroyed')
  }

  destroy(): void {
    this.destroyed = true
    this.conns.clear()
    this.initialRoutes.clear()
    this.byPeer.clear()
    this.sendQueue.length = 0
    this.eventQueue.length = 0
    this.door.close()
    this.clientConfigs.clear()
  }
}

/** Factory for the quiche engine. */
export function quicheEngine(): (options: QuicEngineOptions) => QuicEngine {
  return (options) => new QuicheEngine(options)
}
