/**
 * One direction of the record channel between the application thread and an engine
 * worker: records in a shared RecordRing, the few structured values they point to
 * (`extras`) in a message, and a message to wake the other side only when it went idle.
 *
 * Extras travel as `{ seq, x }` messages. The first extra of a flush puts an X_EXTRAS
 * record (a = seq) in the ring ahead of the records that use it; the reader stops at that
 * record until message `seq` has arrived, so records and their extras stay in order even
 * though the two travel separately.
 */
import type { RecordRing } from '@stoq/mempool'
import * as P from './protocol.js'

export interface ChannelPort {
  postMessage(value: unknown): void
}

/** Producer side. */
export class RecordOut {
  private x: unknown[] = []
  private seq = 0
  private retry: NodeJS.Timeout | null = null
  private closed = false
  /** Messages sent to wake the reader (diagnostics). */
  wakes = 0

  constructor(
    private readonly ring: RecordRing,
    private readonly port: ChannelPort,
  ) {}

  rec(op: number, id: number, sid = 0, a = 0, b = 0, c = 0, d = 0): void {
    this.ring.append(op, id, sid, a, b, c, d)
  }

  /** Records (or extras) written since the last flush. */
  get pending(): boolean {
    return this.ring.unpublished > 0 || this.x.length > 0
  }

  /** Index of `v` among this flush's extras (for a record appended after this call). */
  extra(v: unknown): number {
    if (this.x.length === 0) this.ring.append(P.X_EXTRAS, 0, 0, this.seq)
    this.x.push(v)
    return this.x.length - 1
  }

  /** Make this turn's records visible to the reader, waking it if it went idle. */
  flush(): void {
    if (this.closed) return
    if (this.x.length > 0) {
      this.port.postMessage({ seq: this.seq, x: this.x } satisfies P.ExtrasMessage)
      this.seq++
      this.x = []
    }
    if (this.ring.publish()) {
      this.wakes++
      this.port.postMessage(null)
    }
    // A full ring keeps the rest in order behind it: try again once the reader made room.
    if (this.ring.spilled > 0 && this.retry === null) {
      this.retry = setTimeout(() => {
        this.retry = null
        this.flush()
      }, 1)
    }
  }

  /** The reader is gone: stop retrying. */
  close(): void {
    this.closed = true
    if (this.retry !== null) clearTimeout(this.retry)
    this.retry = null
  }
}

/**
 * Consumer side. `pump()` runs on a wake-up message, on an extras message, and once per
 * event-loop turn while records keep coming; a turn that finds none parks the ring, so an
 * idle reader costs nothing and a busy one needs no messages.
 */
export class RecordIn {
  private readonly pending = new Map<number, unknown[]>()
  private x: unknown[] = []
  private polling = false
  private waiting = false
  private closed = false

  constructor(
    private readonly ring: RecordRing,
    /** One record: `r[at] .. r[at + RECORD_WIDTH - 1]`; `x` holds the extras its indices name. */
    private readonly onRecord: (r: Float64Array, at: number, x: unknown[]) => void,
    /** After a drain that consumed records. */
    private readonly onDrained: () => void,
  ) {}

  /** A `{ seq, x }` message arrived. */
  extras(msg: P.ExtrasMessage): void {
    this.pending.set(msg.seq, msg.x)
    this.pump()
  }

  close(): void {
    this.closed = true
  }

  readonly pump = (): void => {
    this.polling = false
    if (this.closed) return
    this.ring.unpark()
    for (;;) {
      this.waiting = false
      let n: number
      try {
        n = this.ring.drain(this.each)
      } catch (err) {
        // The record that threw is consumed; the ones behind it get the next turn.
        setImmediate(this.pump)
        throw err
      }
      if (n > 0) {
        if (!this.polling && !this.waiting) {
          this.polling = true
          setImmediate(this.pump)
        }
        this.onDrained()
        return
      }
      // Stopped at extras still on their way: their message pumps again.
      if (this.waiting) return
      if (this.ring.park()) return
    }
  }

  private readonly each = (r: Float64Array, at: number): boolean => {
    if (r[at] === P.X_EXTRAS) {
      const seq = r[at + 3]!
      const x = this.pending.get(seq)
      if (x === undefined) {
        this.waiting = true
        return false
      }
      this.pending.delete(seq)
      this.x = x
      return true
    }
    this.onRecord(r, at, this.x)
    return true
  }
}
