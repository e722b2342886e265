import type { QuicEngine } from '@stoq/interface'
import type { Governor } from './limits.js'
import type { ConnectionCounters } from './connection-stats.js'

const EMPTY = new Uint8Array(0)

/** What the inbox uses of its connection (a QuicConnection). */
interface DatagramConnection {
  readonly engine: QuicEngine
  readonly handle: number
  readonly readScratch: Uint8Array
  readonly payload: ConnectionCounters
  readonly isClosed: boolean
  emit(event: 'datagram', datagram: Uint8Array): boolean
}

/**
 * A connection's received datagrams not yet delivered: taken out of the engine at once
 * (bounded per connection and per endpoint: beyond, they are dropped and counted), delivered
 * a turn's share at a time, so a flood from one peer cannot hold the event loop.
 */
export class DatagramInbox {
  /** The queue (a ring: `head` is the next one). */
  private queue: Uint8Array[] = []
  private head = 0
  /** Datagrams delivered in the governor's turn `turn`. */
  private turn = -1
  private thisTurn = 0

  /** `deferred`: tells the endpoint that datagrams are left for a later turn. */
  constructor(
    private readonly conn: DatagramConnection,
    private readonly gov: Governor,
    private readonly deferred: () => void,
  ) {}

  /** Datagrams are queued, not delivered yet. */
  get pending(): boolean {
    return this.head < this.queue.length
  }

  /** Take every datagram out of the engine into the queue, then deliver this turn's share. */
  takeFromEngine(): void {
    const conn = this.conn
    const scratch = conn.readScratch
    const l = this.gov.limits
    for (;;) {
      const n = conn.engine.datagramRecv(conn.handle, scratch)
      if (n < 0) break
      const queued = this.queue.length - this.head
      if (queued >= l.maxQueuedDatagramsPerConnection || this.gov.queuedDatagrams >= l.maxQueuedDatagrams) {
        conn.payload.datagramsDroppedReceived++
        this.gov.datagramsDropped++
        continue
      }
      this.queue.push(scratch.slice(0, n))
      this.gov.queuedDatagrams++
    }
    this.deliver()
  }

  /** Emit this turn's share of the queue; the endpoint is told when some is left. */
  deliver(): void {
    if (this.head >= this.queue.length) return
    const gov = this.gov
    if (this.turn !== gov.turn) {
      this.turn = gov.turn
      this.thisTurn = 0
    }
    const conn = this.conn
    const share = gov.limits.datagramsPerTurn
    const timeShare = gov.handlerShareMs
    while (this.head < this.queue.length && this.thisTurn < share && !conn.isClosed) {
      // Past the turn's handler time, one datagram per connection and turn still goes out.
      if (gov.handlerMs >= timeShare && this.thisTurn > 0) break
      const d = this.queue[this.head]!
      this.queue[this.head++] = EMPTY
      gov.queuedDatagrams--
      this.thisTurn++
      conn.payload.datagramsReceived++
      const t = performance.now()
      conn.emit('datagram', d)
      gov.handlerEndAt = performance.now()
      gov.handlerMs += gov.handlerEndAt - t
    }
    if (this.head >= this.queue.length) {
      this.queue = []
      this.head = 0
    } else {
      if (this.head > 1024) {
        this.queue = this.queue.slice(this.head)
        this.head = 0
      }
      this.deferred()
    }
  }

  /** Drop the queue and give its share of the endpoint's budget back (the connection ended). */
  release(): void {
    this.gov.queuedDatagrams -= this.queue.length - this.head
    this.queue = []
    this.head = 0
  }
}
