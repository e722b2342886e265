/**
 * One direction of a record channel between two threads: records in a RecordRing, the few
 * structured values some records point to ("extras") in a message, and a message to wake
 * the reader only when it went idle. STOQ's engine workers talk to the application thread
 * through one channel each way.
 *
 * Extras travel as `{ seq, x }` messages on the port. The first extra of a flush puts a
 * marker record (`[extrasOp, seq]`) in the ring ahead of the records that use it; the reader
 * stops at the marker until message `seq` has arrived, so records and their extras keep one
 * order although they travel separately. A wake-up is the message `null`.
 */
import { StoqInvalidArgumentError, integerOption } from '@stoq/interface'
import type { RecordRing } from './record-ring.js'

/** Where the writer posts extras and wake-ups (a MessagePort, a Worker, parentPort). */
export interface RecordChannelPort {
  postMessage(value: unknown): void
}

/** The extras of one flush, indexed by the records that follow its marker. */
export interface ExtrasMessage {
  seq: number
  x: unknown[]
}

/** What a channel posts: a wake-up (`null`) or extras. */
export type RecordChannelMessage = null | ExtrasMessage

export interface RecordChannelOptions {
  /** First number of the marker record that announces extras (a value no record of yours starts with). */
  extrasOp: number
}

function checkChannel(ring: RecordRing, options: RecordChannelOptions): number {
  if (ring === null || typeof ring !== 'object' || typeof (ring as Partial<RecordRing>).publish !== 'function') {
    throw new StoqInvalidArgumentError('ring', 'expected a RecordRing')
  }
  if (ring.width < 2)
    throw new StoqInvalidArgumentError(
      'ring',
      `a channel needs records of at least 2 numbers (the extras marker carries a sequence number), got width ${ring.width}`,
    )
  return integerOption('extrasOp', options?.extrasOp, -(2 ** 31), 2 ** 31 - 1)
}

/** Is `msg` one of the channel's own messages (and not the application's)? */
export function isRecordChannelMessage(msg: unknown): msg is RecordChannelMessage {
  return msg === null || (typeof msg === 'object' && 'seq' in msg && 'x' in msg && Object.keys(msg).length === 2)
}

/** The writing side: `rec()` and `extra()` during a turn, `flush()` at its end. */
export class RecordWriter {
  private x: unknown[] = []
  private seq = 0
  private retry: NodeJS.Timeout | null = null
  private closed = false
  private readonly extrasOp: number
  /** Messages sent to wake the reader. */
  wakes = 0

  constructor(
    private readonly ring: RecordRing,
    private readonly port: RecordChannelPort,
    options: RecordChannelOptions,
  ) {
    this.extrasOp = checkChannel(ring, options)
  }

  /** Append one record (the ring's width of numbers; missing ones are 0). */
  rec(r0: number, r1 = 0, r2 = 0, r3 = 0, r4 = 0, r5 = 0, r6 = 0, r7 = 0): void {
    this.ring.append(r0, r1, r2, r3, r4, r5, r6, r7)
  }

  /** Index of `v` among this flush's extras, for a record appended after this call. */
  extra(v: unknown): number {
    if (this.x.length === 0) this.ring.append(this.extrasOp, this.seq)
    this.x.push(v)
    return this.x.length - 1
  }

  /** Records or extras written since the last flush. */
  get pending(): boolean {
    return this.ring.unpublished > 0 || this.x.length > 0
  }

  /** Make this turn's records visible to the reader, waking it if it went idle. */
  flush(): void {
    if (this.closed) return
    if (this.x.length > 0) {
      this.port.postMessage({ seq: this.seq, x: this.x } satisfies ExtrasMessage)
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
 * The reading side. `pump()` runs on a wake-up, on an extras message, and once per
 * event-loop turn while records keep coming; a turn that finds none parks the ring, so an
 * idle reader costs nothing and a busy one needs no messages.
 */
export class RecordReader {
  private readonly pending = new Map<number, unknown[]>()
  private x: unknown[] = []
  private polling = false
  private waiting = false
  private closed = false
  private readonly extrasOp: number

  constructor(
    private readonly ring: RecordRing,
    /** One record: `r[at] .. r[at + width - 1]`; `x` holds the extras its indices name. */
    private readonly onRecord: (r: Float64Array, at: number, x: unknown[]) => void,
    /** After a drain that consumed records. */
    private readonly onDrained: () => void,
    options: RecordChannelOptions,
  ) {
    this.extrasOp = checkChannel(ring, options)
  }

  /** A channel message arrived on the port (see `isRecordChannelMessage`). */
  message(msg: RecordChannelMessage): void {
    if (msg !== null) this.pending.set(msg.seq, msg.x)
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
    if (r[at] === this.extrasOp) {
      const seq = r[at + 1]!
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
