import {
  StoqClosedError,
  StoqInvalidArgumentError,
  type QuicConnection,
  type QuicStream,
  type SendSource,
} from '@stoq/transport-core'

/** Connections in a group unless told otherwise: enough to spread load over cores and paths. */
export const DEFAULT_MULTIPLEX_CONNECTIONS = 16
/** Times a failed member is re-dialled in a row before the group gives up on that slot. */
export const DEFAULT_MULTIPLEX_REPLACE_ATTEMPTS = 5

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
}

export interface MultiplexStats {
  members: MultiplexMemberStats[]
  alive: number
  bytesSent: number
  messagesSent: number
  replacements: number
}

interface Member {
  conn: QuicConnection | null
  bytesSent: number
  messagesSent: number
  errors: number
  replacements: number
  failures: number
}

/**
 * One sender over N connections to the same peer: each message or stream goes
 * to one member (round-robin, or the one with the fewest open streams), so
 * concurrent messages use every connection's congestion window at once. A
 * member that fails is replaced in the background.
 */
export class Multiplexer {
  private readonly members: Member[]
  private next = 0
  private closed = false

  constructor(
    private readonly dial: () => Promise<QuicConnection>,
    conns: QuicConnection[],
    private readonly strategy: MultiplexStrategy,
    private readonly maxAttempts = DEFAULT_MULTIPLEX_REPLACE_ATTEMPTS,
  ) {
    this.members = conns.map((conn) => ({ conn: null, bytesSent: 0, messagesSent: 0, errors: 0, replacements: 0, failures: 0 }))
    conns.forEach((conn, i) => this.attach(i, conn))
  }

  private attach(index: number, conn: QuicConnection): void {
    const member = this.members[index]!
    member.conn = conn
    conn.once('close', () => {
      if (member.conn !== conn) return
      member.conn = null
      if (!this.closed) void this.replace(index)
    })
  }

  private async replace(index: number): Promise<void> {
    const member = this.members[index]!
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
  }

  /** The member that takes the next message or stream. */
  private pick(): Member {
    if (this.closed) throw new StoqClosedError('multiplexer')
    const alive = this.members.filter((m) => m.conn !== null && m.conn.established)
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

  /** Send one message on one member (see `QuicConnection.send`). */
  async send(data: SendSource, options: { confirm?: boolean; timeoutMs?: number } = {}): Promise<number> {
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

  stats(): MultiplexStats {
    const members = this.members.map((m, index) => ({
      index,
      alive: m.conn !== null && !m.conn.isClosed,
      bytesSent: m.bytesSent,
      messagesSent: m.messagesSent,
      streamsOpen: m.conn?.streamsOpen ?? 0,
      rttMs: m.conn && !m.conn.isClosed ? m.conn.stats().rttMs : 0,
      errors: m.errors,
      replacements: m.replacements,
    }))
    return {
      members,
      alive: members.filter((m) => m.alive).length,
      bytesSent: members.reduce((n, m) => n + m.bytesSent, 0),
      messagesSent: members.reduce((n, m) => n + m.messagesSent, 0),
      replacements: members.reduce((n, m) => n + m.replacements, 0),
    }
  }

  /** Close every member. Idempotent. */
  async close(code = 0, reason = ''): Promise<void> {
    if (this.closed) return
    this.closed = true
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
