/**
 * Multi-core endpoints (`createEndpoint({ workers: N })`).
 *
 * N engine workers (worker_threads) each own a QUIC engine and a UDP socket
 * bound to the same port with SO_REUSEPORT. Every connection ID an engine
 * issues starts with its worker's index, and a classic BPF program attached to
 * the reuseport group sends each datagram to the socket of the worker named by
 * the first byte of its destination connection ID (a client's first Initials,
 * whose DCID it chose at random, go to `byte % N`, where the connection then
 * stays). So every packet of a connection reaches the same worker, for
 * accepted and dialled connections alike.
 *
 * On the application thread, `WorkerEngine` implements the QuicEngine contract
 * by mirroring what the workers report, so the ordinary Endpoint,
 * QuicConnection and QuicStream run on top of it unchanged: the public API is
 * the same. Bytes cross through one SharedArrayBuffer pool per worker, named by
 * buffer index in the records of ./protocol.ts; credits bound every queue:
 * per stream `SEND_WINDOW` bytes in flight to the worker and `RECV_WINDOW`
 * (worker side) read ahead of the application, per connection 128 datagrams
 * each way, and the pools' limits.
 */
import { ABI } from '@stoq/engine-quinn'
import {
  STREAM_BLOCKED,
  STREAM_STOPPED,
  StoqDatagramTooLargeError,
  StoqDatagramUnsupportedError,
  StoqEngineError,
  type ConnectionStatsSnapshot,
  type EngineConnectOptions,
  type EngineEventSink,
  type EngineServerOptions,
  type QuicEngine,
  type SocketAddress,
  type StreamRecvError,
  type StreamRecvResult,
  type TransmitBatch,
} from '@stoq/interface'
import * as P from './protocol.js'
import { emptyStats } from '../connection.js'
import { WorkerSupervisor, EMPTY, type WorkerSlot } from './supervisor.js'

export { droppedWorkerFlags, SEND_WINDOW, type WorkerClusterOptions } from './supervisor.js'

/**
 * The engine of a multi-core endpoint: a mirror of the connections that live
 * in the workers. Also the endpoint's UdpIo (`io`), whose `bind` starts them.
 */
export class WorkerEngine extends WorkerSupervisor implements QuicEngine {
  // QuicEngine --------------------------------------------------------------------------------

  listen(options: EngineServerOptions): void {
    for (const s of this.slots) if (s.alive) this.rec(s.index, P.C_LISTEN, 0, 0, this.extra(s.index, options))
  }

  stopListening(): void {
    for (const s of this.slots) if (s.alive) this.rec(s.index, P.C_STOP_LISTENING, 0)
  }

  receive(): void {
    throw new StoqEngineError('workers', 'a multi-core endpoint receives in its workers')
  }

  pollTransmit(_batch: TransmitBatch, _max: number): boolean {
    if (this.flushQueued) this.flush()
    return false
  }

  nextTimeout(): number {
    return -1
  }

  handleTimeout(): void {
    // The workers run their engines' timers: nextTimeout() is -1, so this is never due.
  }

  drainEvents(sink: EngineEventSink): void {
    this.sink = sink
    const n = this.events.length
    if (n === 0) return
    const batch = this.events.splice(0, n)
    for (const fn of batch) fn()
  }

  connect(options: EngineConnectOptions, _local: SocketAddress): number {
    let best: WorkerSlot | null = null
    for (const s of this.slots) if (s.alive && !s.stalled && (best === null || s.load.connections < best.load.connections)) best = s
    if (best === null) throw new StoqEngineError('workers', 'no engine worker is alive')
    best.load.connections++
    this.nextOutgoing += 2
    const id = this.nextOutgoing
    this.newConn(id, best.index, options.peer)
    this.rec(best.index, P.C_CONNECT, id, 0, this.extra(best.index, options))
    return id
  }

  close(conn: number, app: boolean, code: number, reason: Uint8Array): void {
    const c = this.conns.get(conn)
    if (!c || c.closed) return
    this.rec(c.w, P.C_CLOSE, conn, 0, app ? 1 : 0, code, this.extra(c.w, new Uint8Array(reason)))
  }

  setKeepAlive(conn: number, intervalMs: number): void {
    const c = this.conns.get(conn)
    if (c) this.rec(c.w, P.C_KEEPALIVE, conn, 0, intervalMs)
  }

  /** The workers run quinn: the application thread raises peer stream limits as they are used. */
  readonly initialPeerStreamLimit = ABI.INITIAL_STREAM_WINDOW

  setPeerStreamLimit(conn: number, bidirectional: boolean, count: number): void {
    const c = this.conns.get(conn)
    if (c && !c.closed) this.rec(c.w, P.C_PEER_STREAMS, conn, 0, bidirectional ? 1 : 0, count)
  }

  /** The workers run quinn, which grows windows only when told to (see QuicEngine.setReceiveWindow). */
  setReceiveWindow(conn: number, bytes: number): void {
    const c = this.conns.get(conn)
    if (c && !c.closed) this.rec(c.w, P.C_RECV_WINDOW, conn, 0, bytes)
  }

  openStream(conn: number, bidirectional: boolean): number {
    const c = this.conns.get(conn)
    if (!c || c.closed) return -1
    const sid = c.reserved[bidirectional ? 0 : 1].shift()
    if (sid === undefined) return -1
    this.stream(c, sid)
    this.rec(c.w, P.C_TAKEN, conn, sid)
    return sid
  }

  streamSend(conn: number, streamId: number, data: Uint8Array, fin: boolean): number {
    const c = this.conns.get(conn)
    if (!c || c.closed) return STREAM_STOPPED
    const s = this.stream(c, streamId)
    if (s.stop >= 0 || s.finSent) return STREAM_STOPPED
    if (data.length === 0) {
      if (fin) {
        s.finSent = true
        this.rec(c.w, P.C_SEND, conn, streamId, -1, 0, 0, 1)
      }
      return 0
    }
    const w = this.slots[c.w]!
    const pool = w.pool
    const size = pool.bufferSize
    const max = Math.min(data.length, s.credit)
    let n = 0
    while (n < max) {
      if (w.pack < 0 || w.packLen === size) {
        this.endPack(w)
        // Leave a quarter of the pool to reading, so writers can never starve the reads
        // that would let the peer take their data.
        const slot = pool.stats().inUse < this.sendPoolLimit ? pool.tryAcquire() : -1
        if (slot < 0) {
          this.poolBlocked.add(s)
          break
        }
        w.pack = slot
        w.packLen = 0
      }
      const k = Math.min(max - n, size - w.packLen)
      pool.view(w.pack).set(n === 0 && k === data.length ? data : data.subarray(n, n + k), w.packLen)
      n += k
      const last = fin && n === data.length
      this.rec(c.w, P.C_SEND, conn, streamId, w.pack, w.packLen, k, last ? 1 : 0)
      w.packLen += k
    }
    if (n === 0) return STREAM_BLOCKED
    s.credit -= n
    if (fin && n === data.length) s.finSent = true
    return n
  }

  streamRecv(conn: number, streamId: number, out: Uint8Array, result: StreamRecvResult & StreamRecvError): boolean {
    result.bytes = 0
    result.fin = false
    result.resetCode = -1
    const c = this.conns.get(conn)
    const s = c?.streams.get(streamId)
    if (!c || !s) return false
    const pool = this.slots[c.w]!.pool
    let n = 0
    while (s.inQ.length > 0 && n < out.length) {
      const e = s.inQ[0]!
      const k = Math.min(e.len - e.off, out.length - n)
      if (k > 0) {
        out.set(pool.view(e.slot).subarray(e.off, e.off + k), n)
        n += k
        e.off += k
      }
      if (e.off < e.len) break
      if (e.slot >= 0) pool.release(e.slot)
      s.inQ.shift()
      if (e.fin) {
        result.fin = true
        break
      }
    }
    if (n > 0) {
      this.rec(c.w, P.C_RECV_CREDIT, conn, streamId, n)
      this.buffersBack(c.w)
    }
    if (n > 0 || result.fin) {
      result.bytes = n
      if (s.complete && s.inQ.length === 0) c.streams.delete(streamId)
      return true
    }
    if (s.reset >= 0 && s.inQ.length === 0) {
      result.resetCode = s.reset
      s.reset = -1
      return true
    }
    return false
  }

  streamRecvChunk(conn: number, streamId: number, max: number, result: StreamRecvResult & StreamRecvError): Uint8Array | null {
    result.bytes = 0
    result.fin = false
    result.resetCode = -1
    const c = this.conns.get(conn)
    const s = c?.streams.get(streamId)
    if (!c || !s) return null
    const e = s.inQ[0]
    if (e === undefined) {
      if (s.reset < 0) return null
      result.resetCode = s.reset
      s.reset = -1
      return EMPTY
    }
    const pool = this.slots[c.w]!.pool
    const k = Math.min(e.len - e.off, max)
    // The one copy on this thread: out of the shared buffer into memory the reader owns.
    const chunk = k > 0 ? pool.view(e.slot).slice(e.off, e.off + k) : EMPTY
    e.off += k
    if (e.off >= e.len) {
      if (e.slot >= 0) pool.release(e.slot)
      s.inQ.shift()
      if (e.fin) result.fin = true
    }
    result.bytes = k
    if (k > 0) {
      this.rec(c.w, P.C_RECV_CREDIT, conn, streamId, k)
      this.buffersBack(c.w)
    }
    if (s.complete && s.inQ.length === 0) c.streams.delete(streamId)
    return chunk
  }

  streamCapacity(conn: number, streamId: number): number {
    const c = this.conns.get(conn)
    if (!c || c.closed) return -1
    const s = this.stream(c, streamId)
    return s.stop >= 0 ? -1 : s.credit
  }

  streamWantWritable(conn: number, streamId: number): void {
    const c = this.conns.get(conn)
    if (!c || c.closed) return
    const s = this.stream(c, streamId)
    s.want = true
    if ((s.credit > 0 && !this.poolBlocked.has(s)) || s.stop >= 0) this.writable(c, s)
  }

  streamComplete(conn: number, streamId: number): boolean {
    const c = this.conns.get(conn)
    if (!c) return false
    const s = c.streams.get(streamId)
    return s === undefined || s.complete
  }

  streamStopCode(conn: number, streamId: number): number {
    return this.conns.get(conn)?.streams.get(streamId)?.stop ?? -1
  }

  streamShutdown(conn: number, streamId: number, direction: 'read' | 'write', code: number): void {
    const c = this.conns.get(conn)
    if (!c || c.closed) return
    const s = this.stream(c, streamId)
    const pool = this.slots[c.w]!.pool
    if (direction === 'write') {
      s.finSent = true
    } else {
      for (const e of s.inQ) if (e.slot >= 0) pool.release(e.slot)
      s.inQ.length = 0
      s.readStopped = true
    }
    this.rec(c.w, P.C_SHUTDOWN, conn, streamId, direction === 'write' ? 1 : 0, code)
  }

  streamPriority(conn: number, streamId: number, urgency: number, incremental: boolean): void {
    const c = this.conns.get(conn)
    if (c && !c.closed) this.rec(c.w, P.C_PRIORITY, conn, streamId, urgency, incremental ? 1 : 0)
  }

  datagramSend(conn: number, data: Uint8Array): boolean {
    const c = this.conns.get(conn)
    if (!c || c.closed) return false
    if (c.maxDgram < 0) throw new StoqDatagramUnsupportedError()
    if (data.length > c.maxDgram) throw new StoqDatagramTooLargeError(data.length, c.maxDgram)
    if (c.dgramCredit <= 0) return false
    const w = this.slots[c.w]!
    const pool = w.pool
    if (w.pack < 0 || w.packLen + data.length > pool.bufferSize) {
      this.endPack(w)
      const slot = pool.stats().inUse < this.sendPoolLimit ? pool.tryAcquire() : -1
      if (slot < 0) return false
      w.pack = slot
      w.packLen = 0
    }
    pool.view(w.pack).set(data, w.packLen)
    c.dgramCredit--
    this.rec(c.w, P.C_DGRAM, conn, 0, w.pack, w.packLen, data.length)
    w.packLen += data.length
    return true
  }

  datagramRecv(conn: number, out: Uint8Array): number {
    const c = this.conns.get(conn)
    const d = c?.dgramIn.shift()
    if (!c || !d) return -1
    const pool = this.slots[c.w]!.pool
    const n = Math.min(d.len, out.length)
    out.set(pool.view(d.slot).subarray(0, n))
    pool.release(d.slot)
    this.buffersBack(c.w)
    c.dgramReadBack++
    this.dgramRead.add(c)
    this.queueFlush()
    return n
  }

  datagramMaxSize(conn: number): number {
    return this.conns.get(conn)?.maxDgram ?? -1
  }

  isEstablished(conn: number): boolean {
    return this.conns.get(conn)?.established ?? false
  }

  alpn(conn: number): string {
    return this.conns.get(conn)?.alpn ?? ''
  }

  serverName(conn: number): string | null {
    return this.conns.get(conn)?.serverName ?? null
  }

  peerCertificates(conn: number): Uint8Array[] | null {
    return this.conns.get(conn)?.certificates ?? null
  }

  stats(conn: number): ConnectionStatsSnapshot {
    const st = this.conns.get(conn)?.stats
    return st ? { ...st } : emptyStats()
  }

  peerAddress(conn: number): SocketAddress {
    const c = this.conns.get(conn)
    if (!c) throw new StoqEngineError('workers', `unknown connection ${conn}`)
    return c.peer
  }

  get connectionCount(): number {
    return this.conns.size
  }

  destroy(): void {
    if (this.stallTimer) clearInterval(this.stallTimer)
    this.stallTimer = null
    this.destroyed = true
    this.events.length = 0
  }
}
