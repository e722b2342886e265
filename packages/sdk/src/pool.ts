import { createHash } from 'node:crypto'
import { StoqInvalidArgumentError, type QuicConnection } from '@stoq/transport-core'

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
  const parts: string[] = [host.toLowerCase(), String(port)]
  for (const name of Object.keys(options).sort()) {
    const value = options[name]
    if (value === undefined) continue
    const text = typeof value === 'string' || value instanceof Uint8Array ? Buffer.from(value as string | Uint8Array) : Buffer.from(JSON.stringify(value))
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

  constructor(options: Partial<PoolOptions> = {}) {
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
    return conn.established && !conn.isClosed
  }

  async acquire(key: string, open: () => Promise<QuicConnection>): Promise<QuicConnection> {
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
        void entry.conn.close(0, 'pool eviction').catch(() => {})
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
    for (const [key, entry] of this.entries) {
      const conn = entry.conn
      if (!conn) continue
      if (conn.streamsOpen > 0) entry.lastUsed = now
      else if (now - entry.lastUsed >= this.options.idleTimeoutMs) {
        this.entries.delete(key)
        this.counters.evictions++
        void conn.close(0, 'pool idle timeout').catch(() => {})
      }
    }
  }

  stats(): PoolStats {
    return { size: this.entries.size, ...this.counters }
  }

  close(): void {
    if (this.sweeper) clearInterval(this.sweeper)
    this.sweeper = null
    this.entries.clear()
  }
}
