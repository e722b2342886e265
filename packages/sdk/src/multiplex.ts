import { StoqClosedError, StoqInvalidArgumentError, type QuicConnection, type QuicStream, type SendSource } from '@stoq/transport-core'
import { ThroughputSeries } from '@stoq/monitoring'
import { StoqProtocolError } from './errors.js'
import { ignoreRejection } from './ignore.js'
import {
  CHUNK_STATUS,
  chunkStatusError,
  sendChunk,
  sourceChunks,
  validateTransferOptions,
  type OutgoingChunk,
  type TransferOptions,
  type TransferResult,
  type TransferSource,
} from './multiplex-transfer.js'

/** Connections in a group unless told otherwise: enough to spread load over cores and paths. */
export const DEFAULT_MULTIPLEX_CONNECTIONS = 16
/** Times a failed member is re-dialled in a row before the group gives up on that slot. */
export const DEFAULT_MULTIPLEX_REPLACE_ATTEMPTS = 5
/** Interval of the per-member throughput samples. */
export const MULTIPLEX_SAMPLE_INTERVAL_MS = 1000
/** Samples kept per member (only the latest is reported; keeps memory small with many members). */
const SERIES_POINTS = 60

export type MultiplexStrategy = 'round-robin' | 'least-loaded'

export interface MultiplexMemberStats {
  index: number
  alive: boolean
  bytesSent: number
  messagesSent: number
  streamsOpen: number
  rttMs: number
  errors: number
  replacements: number
  /** Transfer chunks sent on this member that had to be re-sent on another. */
  retries: number
  /** Transfer chunks in flight on this member now. */
  chunksInFlight: number
  /**
   * Rate of `bytesSent` over the last sampled second (0 before the first
   * second), and its average since the multiplexer was created (Gbit/s). For
   * transfer chunks, `bytesSent` counts only bytes the receiver verified and
   * confirmed.
   */
  throughputGbps: number
  averageGbps: number
}

export interface MultiplexStats {
  members: MultiplexMemberStats[]
  alive: number
  /** Payload sent (`send`: handed over or confirmed; `transfer`: confirmed by the receiver after verification). */
  bytesSent: number
  /** Messages, each transfer chunk counting as one. */
  messagesSent: number
  replacements: number
  retries: number
  /** Sum over members, last sampled second and since creation (Gbit/s). */
  throughputGbps: number
  averageGbps: number
}

interface Member {
  conn: QuicConnection | null
  bytesSent: number
  messagesSent: number
  errors: number
  replacements: number
  failures: number
  /** A replacement is being dialled. */
  replacing: boolean
  inflight: number
  retries: number
  series: ThroughputSeries
}

/**
 * One sender over N connections to the same peer: each message or stream goes
 * to one member (round-robin, or the one with the fewest open streams), so
 * concurrent messages use every connection's congestion window at once. A
 * member that fails is replaced in the background. `transfer()` spreads one
 * large payload over every member in verified chunks and survives members
 * dying mid-way; `stats()` reports each member's RTT, errors, replacements and
 * throughput.
 */
export class Multiplexer {
  private readonly members: Member[]
  private next = 0
  private closed = false
  private readonly total = new ThroughputSeries({ capacity: SERIES_POINTS })
  private readonly createdAt = performance.now()
  private readonly sampler: NodeJS.Timeout
  /** Transfers waiting for a member slot or a replacement. */
  private readonly listeners = new Set<() => void>()

  constructor(
    private readonly dial: () => Promise<QuicConnection>,
    conns: QuicConnection[],
    private readonly strategy: MultiplexStrategy,
    private readonly maxAttempts = DEFAULT_MULTIPLEX_REPLACE_ATTEMPTS,
  ) {
    this.members = conns.map(() => ({
      conn: null,
      bytesSent: 0,
      messagesSent: 0,
      errors: 0,
      replacements: 0,
      failures: 0,
      replacing: false,
      inflight: 0,
      retries: 0,
      series: new ThroughputSeries({ capacity: SERIES_POINTS }),
    }))
    for (const [i, conn] of conns.entries()) this.attach(i, conn)
    this.sample()
    this.sampler = setInterval(() => this.sample(), MULTIPLEX_SAMPLE_INTERVAL_MS)
    this.sampler.unref()
  }

  private sample(): void {
    const now = performance.now()
    let bytes = 0
    for (const m of this.members) {
      m.series.sample(m.bytesSent, now)
      bytes += m.bytesSent
    }
    this.total.sample(bytes, now)
  }

  /** Wake every transfer waiting for a slot. */
  private notify(): void {
    const listeners = [...this.listeners]
    this.listeners.clear()
    for (const listener of listeners) listener()
  }

  /** Resolves at the next `notify()`, or after `ms`. */
  private changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.listeners.delete(done)
        resolve()
      }
      const timer = setTimeout(done, Math.max(1, Math.ceil(ms)))
      this.listeners.add(done)
    })
  }

  private attach(index: number, conn: QuicConnection): void {
    const member = this.members[index]!
    member.conn = conn
    conn.once('close', () => {
      if (member.conn !== conn) return
      member.conn = null
      if (!this.closed) void this.replace(index)
      this.notify()
    })
  }

  private async replace(index: number): Promise<void> {
    const member = this.members[index]!
    member.replacing = true
    try {
      while (!this.closed && member.failures < this.maxAttempts) {
        try {
          const conn = await this.dial()
          if (this.closed) {
            void conn.close(0, 'multiplex closed')
            return
          }
          member.replacements++
          member.failures = 0
          this.attach(index, conn)
          return
        } catch {
          member.failures++
          member.errors++
          await new Promise((resolve) => setTimeout(resolve, 100 * member.failures))
        }
      }
    } finally {
      member.replacing = false
      this.notify()
    }
  }

  private static alive(m: Member): boolean {
    return m.conn?.established === true
  }

  /** A live member with fewer than `depth` transfer chunks in flight, by strategy; null when none. */
  private freeMember(depth: number): number | null {
    const n = this.members.length
    if (this.strategy === 'least-loaded') {
      let best = -1
      for (let i = 0; i < n; i++) {
        const m = this.members[i]!
        if (!Multiplexer.alive(m) || m.inflight >= depth) continue
        if (best < 0 || m.conn!.streamsOpen < this.members[best]!.conn!.streamsOpen) best = i
      }
      return best < 0 ? null : best
    }
    for (let k = 0; k < n; k++) {
      const i = (this.next + k) % n
      const m = this.members[i]!
      if (Multiplexer.alive(m) && m.inflight < depth) {
        this.next = i + 1
        return i
      }
    }
    return null
  }

  /** No member is alive and none is being replaced: nothing will come back. */
  private gone(): boolean {
    return this.members.every((m) => m.conn === null && !m.replacing)
  }

  /** The member that takes the next message or stream. */
  private pick(): Member {
    if (this.closed) throw new StoqClosedError('multiplexer')
    const alive = this.members.filter((m) => m.conn?.established)
    if (alive.length === 0) throw new StoqClosedError('multiplexer', 'No member connection is alive')
    if (this.strategy === 'least-loaded') {
      let best = alive[0]!
      for (const m of alive) if (m.conn!.streamsOpen < best.conn!.streamsOpen) best = m
      return best
    }
    const member = alive[this.next % alive.length]!
    this.next++
    return member
  }

  /** Send one message on one member (see `QuicConnection.send`; `signal` aborts it with STOQ_ERR_ABORTED). */
  async send(data: SendSource, options: { confirm?: boolean; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<number> {
    const member = this.pick()
    try {
      const sent = await member.conn!.send(data, options)
      member.messagesSent++
      member.bytesSent += sent
      return sent
    } catch (err) {
      member.errors++
      throw err
    }
  }

  /** Open a stream on one member. */
  openStream(options: { unidirectional?: boolean } = {}): QuicStream {
    return this.pick().conn!.openStream(options)
  }

  /**
   * Send one transfer over every member: `source` is cut into chunks of
   * `chunkSize`, each sent on its own stream of a member picked by the
   * strategy (at most `depth` in flight per member) with its offset and
   * SHA-256. The receiver (`createTransferReceiver`) verifies each chunk and
   * confirms it; a chunk whose member fails before that is re-sent on another
   * member while the failed one is replaced. Resolves once the receiver
   * confirmed every chunk; rejects with a typed error when the receiver
   * refused a chunk, a chunk failed more than `maxRetries` times, no member is
   * left, or nothing was confirmed for `stallTimeoutMs`. A Uint8Array source
   * is not copied: do not change it until the promise settled.
   */
  async transfer(source: TransferSource, options: TransferOptions = {}): Promise<TransferResult> {
    if (this.closed) throw new StoqClosedError('multiplexer')
    const opts = validateTransferOptions(options)
    const chunks = sourceChunks(source, opts.chunkSize, opts.id)
    const started = performance.now()
    const per = this.members.map((_, index) => ({ index, bytes: 0, chunks: 0, retries: 0 }))
    /** Chunks sent and not confirmed yet (in flight or waiting to be re-sent), in offset order. */
    const unconfirmed = new Map<number, OutgoingChunk>()
    const retry: OutgoingChunk[] = []
    const inflight = new Set<Promise<void>>()
    const live = new Set<QuicStream>()
    let failure: Error | null = null
    let sourceDone = false
    let pulled = 0
    let lastProgress = performance.now()
    let bytes = 0
    let count = 0
    let retries = 0

    /** Chunks to (re)send, lowest offset first: the receiver's window moves only once it has that one. */
    const queue = (chunk: OutgoingChunk): void => {
      const at = retry.findIndex((c) => c.offset > chunk.offset)
      retry.splice(at < 0 ? retry.length : at, 0, chunk)
    }

    const launch = (index: number, chunk: OutgoingChunk): void => {
      const member = this.members[index]!
      const conn = member.conn!
      member.inflight++
      const requeue = (err: Error): void => {
        chunk.attempts++
        if (failure !== null) return
        if (chunk.attempts > opts.maxRetries) {
          failure = err
          return
        }
        retries++
        per[index]!.retries++
        member.retries++
        queue(chunk)
      }
      const p = sendChunk(conn, chunk.header, chunk.payload, live)
        .then(
          (status) => {
            if (status === CHUNK_STATUS.stored || status === CHUNK_STATUS.duplicate) {
              lastProgress = performance.now()
              unconfirmed.delete(chunk.offset)
              bytes += chunk.payload.length
              count++
              per[index]!.bytes += chunk.payload.length
              per[index]!.chunks++
              member.bytesSent += chunk.payload.length
              member.messagesSent++
            } else if (status === CHUNK_STATUS.integrity) {
              // Corrupted on the way (or the source changed): send it again, a bounded number of times.
              requeue(chunkStatusError(status, chunk))
            } else {
              failure ??= chunkStatusError(status, chunk)
            }
          },
          (err: Error) => {
            member.errors++
            requeue(err)
          },
        )
        .finally(() => {
          member.inflight--
          inflight.delete(p)
          this.notify()
        })
      inflight.add(p)
    }

    /** Wait for a change, failing the transfer once nothing was confirmed for `stallTimeoutMs`. */
    const idle = async (): Promise<void> => {
      const left = opts.stallTimeoutMs - (performance.now() - lastProgress)
      if (left > 0) await this.changed(left)
      if (failure === null && performance.now() - lastProgress >= opts.stallTimeoutMs) {
        failure = new StoqProtocolError('multiplex transfer', `no chunk was confirmed for ${opts.stallTimeoutMs} ms`)
      }
    }

    try {
      while (failure === null) {
        if (this.closed) {
          failure = new StoqClosedError('multiplexer')
          break
        }
        if (retry.length === 0) {
          if (sourceDone) {
            if (inflight.size === 0) break
            await idle()
            continue
          }
          // New chunks only within the window from the lowest unconfirmed offset.
          const lowest = unconfirmed.size > 0 ? unconfirmed.keys().next().value! : pulled
          if (pulled + opts.chunkSize > lowest + opts.windowBytes) {
            await idle()
            continue
          }
        }
        let index = this.freeMember(opts.depth)
        if (index === null && retry.length > 0 && retry[0]!.offset === unconfirmed.keys().next().value) {
          // The lowest unconfirmed chunk may go beyond `depth`: when the receiver's window is
          // smaller than ours, every slot can be held by chunks waiting for it to move.
          index = this.freeMember(Number.POSITIVE_INFINITY)
        }
        if (index === null) {
          if (this.gone()) {
            failure = new StoqClosedError('multiplexer', 'No member connection is alive and none could be replaced')
            break
          }
          await idle()
          continue
        }
        let chunk = retry.shift()
        if (chunk === undefined) {
          let timer: NodeJS.Timeout | undefined
          const stalled = new Promise<'stalled'>((resolve) => {
            timer = setTimeout(() => resolve('stalled'), Math.max(1, opts.stallTimeoutMs - (performance.now() - lastProgress)))
          })
          const next = chunks.next()
          next.catch(ignoreRejection) // marks it handled: the race below rethrows it, unless the stall wins and the source is abandoned
          const got = await Promise.race([next, stalled]).finally(() => clearTimeout(timer))
          if (got === 'stalled') {
            failure = new StoqProtocolError('multiplex transfer', `the source gave no data for ${opts.stallTimeoutMs} ms`)
            break
          }
          if (got.done) {
            sourceDone = true
            continue
          }
          chunk = got.value
          unconfirmed.set(chunk.offset, chunk)
          pulled = chunk.offset + chunk.payload.length
          // The member may have gone while the source was read.
          index = this.freeMember(opts.depth)
          if (index === null) {
            queue(chunk)
            continue
          }
        }
        launch(index, chunk)
      }
    } catch (err) {
      // The source threw (wrong piece type, or its own error).
      failure ??= err as Error
    } finally {
      if (failure !== null) {
        for (const stream of live) {
          stream.reset(1)
          stream.stopSending(1)
        }
        if (!sourceDone) void chunks.return(undefined).catch(ignoreRejection) // the transfer has failed with its own error; a source that fails to stop adds nothing
      }
      await Promise.allSettled([...inflight])
    }
    if (failure !== null) throw failure
    const durationMs = performance.now() - started
    return {
      id: opts.id,
      bytes,
      chunks: count,
      durationMs,
      senderGbps: durationMs > 0 ? (bytes * 8) / (durationMs * 1e6) : 0,
      retries,
      members: per,
    }
  }

  stats(): MultiplexStats {
    const elapsedMs = performance.now() - this.createdAt
    const average = (bytes: number): number => (elapsedMs > 0 ? (bytes * 8) / (elapsedMs * 1e6) : 0)
    const members = this.members.map((m, index) => ({
      index,
      alive: m.conn !== null && !m.conn.isClosed,
      bytesSent: m.bytesSent,
      messagesSent: m.messagesSent,
      streamsOpen: m.conn?.streamsOpen ?? 0,
      rttMs: m.conn && !m.conn.isClosed ? m.conn.stats().rttMs : 0,
      errors: m.errors,
      replacements: m.replacements,
      retries: m.retries,
      chunksInFlight: m.inflight,
      throughputGbps: m.series.current()?.instantGbps ?? 0,
      averageGbps: average(m.bytesSent),
    }))
    return {
      members,
      alive: members.filter((m) => m.alive).length,
      bytesSent: members.reduce((n, m) => n + m.bytesSent, 0),
      messagesSent: members.reduce((n, m) => n + m.messagesSent, 0),
      replacements: members.reduce((n, m) => n + m.replacements, 0),
      retries: members.reduce((n, m) => n + m.retries, 0),
      throughputGbps: this.total.current()?.instantGbps ?? 0,
      averageGbps: average(members.reduce((n, m) => n + m.bytesSent, 0)),
    }
  }

  /** Close every member. Idempotent. */
  async close(code = 0, reason = ''): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.sampler)
    this.notify()
    await Promise.all(this.members.map((m) => m.conn?.close(code, reason).catch(() => undefined)))
  }
}

export function validateMultiplexOptions(connections: unknown, strategy: unknown): { connections: number; strategy: MultiplexStrategy } {
  const n = connections ?? DEFAULT_MULTIPLEX_CONNECTIONS
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1024) {
    throw new StoqInvalidArgumentError('connections', 'expected an integer from 1 to 1024')
  }
  const s = strategy ?? 'round-robin'
  if (s !== 'round-robin' && s !== 'least-loaded') {
    throw new StoqInvalidArgumentError('strategy', "expected 'round-robin' or 'least-loaded'")
  }
  return { connections: n, strategy: s }
}
