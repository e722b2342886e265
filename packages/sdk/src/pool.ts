import { createHash } from 'node:crypto'
import { StoqClosedError, StoqInvalidArgumentError, type QuicConnection } from '@stoq/transport-core'
import { checkOptions, optionKeys } from '@stoq/interface'
import { ignoreRejection } from './ignore.js'

/** Pooled connections at most: enough for a service talking to many peers. */
export const DEFAULT_POOL_MAX_CONNECTIONS = 50
/** A pooled connection with no open stream for this long is closed. */
export const DEFAULT_POOL_IDLE_TIMEOUT_MS = 30_000

export interface PoolOptions {
  /** Live connections kept for reuse (1 to 100 000). */
  maxConnections: number
  /** Close a pooled connection idle (no open stream) for this long; 0 keeps it until it ends. */
  idleTimeoutMs: number
}

export interface PoolStats {
  size: number
  hits: number
  misses: number
  evictions: number
}

interface Entry {
  conn: QuicConnection | null
  pending: Promise<QuicConnection> | null
  lastUsed: number
}

/** A pool key: the peer plus every option that changes who we would be talking to. */
export function poolKey(host: string, port: number, options: Record<string, unknown>): string {
  if (typeof host !== 'string' || host.length === 0) throw new StoqInvalidArgumentError('host', 'expected a host name or IP literal')
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new StoqInvalidArgumentError('port', 'expected an integer from 0 to 65535')
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new StoqInvalidArgumentError('options', 'expected an object')
  const parts: string[] = [host.toLowerCase(), String(port)]
  for (const name of Object.keys(options).sort()) {
    const value = options[name]
    if (value === undefined) continue
    let json: string | undefined
    if (typeof value !== 'string' && !(value instanceof Uint8Array)) {
      try {
        json = JSON.stringify(value)
      } catch (err) {
        throw new StoqInvalidArgumentError(name, `cannot be compared for pooling: ${(err as Error).message}`)
      }
      if (json === undefined) throw new StoqInvalidArgumentError(name, `cannot be compared for pooling: ${typeof value}`)
    }
    const text = json === undefined ? Buffer.from(value as string | Uint8Array) : Buffer.from(json)
    parts.push(`${name}=${text.length > 64 ? createHash('sha256').update(text).digest('hex') : text.toString('hex')}`)
  }
  return parts.join('|')
}

/**
 * Reuses live connections: a second `connect` with the same key gets the
 * connection already open (or the handshake already under way), after a
 * health check; a dead one is replaced transparently.
 */
export class ConnectionPool {
  private readonly entries = new Map<string, Entry>()
  private readonly options: PoolOptions
  private readonly counters = { hits: 0, misses: 0, evictions: 0 }
  private sweeper: NodeJS.Timeout | null = null
  private closed = false

  constructor(options: Partial<PoolOptions> = {}) {
    checkOptions(options, optionKeys<PoolOptions>({ maxConnections: true, idleTimeoutMs: true }), 'pool')
    const maxConnections = options.maxConnections ?? DEFAULT_POOL_MAX_CONNECTIONS
    const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_POOL_IDLE_TIMEOUT_MS
    if (!Number.isInteger(maxConnections) || maxConnections < 1 || maxConnections > 100_000) {
      throw new StoqInvalidArgumentError('pool.maxConnections', 'expected an integer from 1 to 100000')
    }
    if (!Number.isInteger(idleTimeoutMs) || idleTimeoutMs < 0) {
      throw new StoqInvalidArgumentError('pool.idleTimeoutMs', 'expected a non-negative integer (ms; 0 disables idle eviction)')
    }
    this.options = { maxConnections, idleTimeoutMs }
  }

  private static healthy(conn: QuicConnection): boolean {
    // A connection opened with `earlyData` may still be in its handshake (0-RTT): not closed is
    // enough, as everything pooled came from a connect() that resolved.
    return !conn.isClosed
  }

  async acquire(key: string, open: () => Promise<QuicConnection>): Promise<QuicConnection> {
    if (this.closed) throw new StoqClosedError('pool', 'Connection pool is closed')
    if (typeof key !== 'string') throw new StoqInvalidArgumentError('key', 'expected a string (see poolKey)')
    if (typeof open !== 'function') throw new StoqInvalidArgumentError('open', 'expected a function that opens a connection')
    const entry = this.entries.get(key)
    if (entry?.pending) {
      this.counters.hits++
      return entry.pending
    }
    if (entry?.conn && ConnectionPool.healthy(entry.conn)) {
      this.counters.hits++
      entry.lastUsed = Date.now()
      // Most recently used last: the map's order is the eviction order.
      this.entries.delete(key)
      this.entries.set(key, entry)
      return entry.conn
    }
    if (entry) this.entries.delete(key)
    this.counters.misses++
    if (this.entries.size >= this.options.maxConnections && !this.evictOne()) {
      // Everything pooled is busy: connect without pooling.
      return open()
    }
    const fresh: Entry = { conn: null, pending: null, lastUsed: Date.now() }
    fresh.pending = open().then(
      (conn) => {
        fresh.conn = conn
        fresh.pending = null
        conn.once('close', () => {
          if (this.entries.get(key) === fresh) this.entries.delete(key)
        })
        return conn
      },
      (err: unknown) => {
        if (this.entries.get(key) === fresh) this.entries.delete(key)
        throw err
      },
    )
    this.entries.set(key, fresh)
    this.startSweeper()
    return fresh.pending
  }

  /** Close the least recently used idle connection; false when all are busy. */
  private evictOne(): boolean {
    for (const [key, entry] of this.entries) {
      if (entry.conn && entry.conn.streamsOpen === 0) {
        this.entries.delete(key)
        this.counters.evictions++
        void entry.conn.close(0, 'pool eviction').catch(ignoreRejection) // the entry is gone from the pool; a failed close has no one left to tell
        return true
      }
    }
    return false
  }

  private startSweeper(): void {
    if (this.sweeper || this.options.idleTimeoutMs === 0) return
    this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.floor(this.options.idleTimeoutMs / 2)))
    this.sweeper.unref()
  }

  /** Close pooled connections that have been idle longer than the idle timeout. */
  sweep(now = Date.now()): void {
    if (typeof now !== 'number' || Number.isNaN(now)) throw new StoqInvalidArgumentError('now', 'expected a time in ms (Date.now())')
    for (const [key, entry] of this.entries) {
      const conn = entry.conn
      if (!conn) continue
      if (conn.streamsOpen > 0) entry.lastUsed = now
      else if (now - entry.lastUsed >= this.options.idleTimeoutMs) {
        this.entries.delete(key)
        this.counters.evictions++
        void conn.close(0, 'pool idle timeout').catch(ignoreRejection) // the entry is gone from the pool; a failed close has no one left to tell
      }
    }
  }

  stats(): PoolStats {
    return { size: this.entries.size, ...this.counters }
  }

  close(): void {
    this.closed = true
    if (this.sweeper) clearInterval(this.sweeper)
    this.sweeper = null
    this.entries.clear()
  }
}
