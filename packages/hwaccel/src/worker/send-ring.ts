import { WORKER_BUFFER_SIZE } from '../defaults.js'
import { SLOT_WORDS, TX_ADDR, TX_LENGTH, TX_SEGMENT, TX_TOO_LARGE, TX_ZC_OFFSET, TX_ZC_SLAB } from './protocol.js'

/** The counters of its `WorkerUdpIo` the send ring adds to. */
interface SendRingCounters {
  overflowSends: number
  zeroCopySends: number
}

/**
 * The main thread's side of a worker's send ring: it writes the send slots of the shared
 * control block, and queues the sends that find the ring full (a ring of parallel arrays,
 * grown on demand) until slots free up. Hot: no allocation per send.
 */
export class SendRing {
  /** Ring positions this thread owns: the next slot to fill, the next one to report complete. */
  head = 0
  done = 0
  /** Caller token of each send slot (-1 for all but the last slot of a split super-buffer). */
  tokens = new Float64Array(0)
  /** Encoded destination of the send in progress: 4 address words, port, scope. */
  readonly dest = new Int32Array(6)
  /** Sends waiting for a free slot. */
  ovCount = 0

  private ctl: Int32Array<ArrayBufferLike> = new Int32Array(0)
  private txBase = 0
  private slots = 1
  private views: Uint8Array[] = []

  // Sends waiting for a free slot (a ring of parallel arrays, grown on demand).
  private ovData: (Uint8Array | null)[] = new Array<Uint8Array | null>(64).fill(null)
  private ovOffset = new Int32Array(64)
  private ovLength = new Int32Array(64)
  private ovSegment = new Int32Array(64)
  private ovToken = new Float64Array(64)
  private ovDest = new Int32Array(64 * 6)
  private ovHead = 0

  /** `slabIds`: the send slabs the worker maps, by their memory → their index for the worker. */
  constructor(
    private readonly slabIds: ReadonlyMap<ArrayBufferLike, number>,
    private readonly counters: SendRingCounters,
  ) {}

  /** A new control block: `slots` send slots from `txBase` in `ctl`, their buffers `views`. */
  reset(ctl: Int32Array<ArrayBufferLike>, txBase: number, slots: number, views: Uint8Array[]): void {
    this.ctl = ctl
    this.txBase = txBase
    this.slots = slots
    this.views = views
    this.tokens = new Float64Array(slots)
    this.head = 0
    this.done = 0
  }

  /** Put one message into the next send slot, or into the overflow queue when the ring is full. */
  enqueue(data: Uint8Array, offset: number, length: number, segment: number, token: number): void {
    if (this.ovCount === 0 && ((this.head - this.done) | 0) < this.slots) {
      this.fill(data, offset, length, segment, token, this.dest, 0)
      return
    }
    if (this.ovCount === this.ovData.length) this.growOverflow()
    const i = (this.ovHead + this.ovCount) & (this.ovData.length - 1)
    this.ovData[i] = data
    this.ovOffset[i] = offset
    this.ovLength[i] = length
    this.ovSegment[i] = segment
    this.ovToken[i] = token
    this.ovDest.set(this.dest, i * 6)
    this.ovCount++
    this.counters.overflowSends++
  }

  /** Write a send slot (not yet published: `publish()` stores the head once per batch). */
  private fill(data: Uint8Array, offset: number, length: number, segment: number, token: number, dest: Int32Array, at: number): void {
    const k = this.head & (this.slots - 1)
    const slot = this.txBase + k * SLOT_WORDS
    const ctl = this.ctl
    const zc = this.slabIds.size > 0 ? this.slabIds.get(data.buffer) : undefined
    if (zc !== undefined && length <= WORKER_BUFFER_SIZE) {
      // The data already lives in shared memory the worker maps: hand over its position.
      ctl[slot + TX_ZC_SLAB] = zc
      ctl[slot + TX_ZC_OFFSET] = data.byteOffset + offset
      ctl[slot + TX_LENGTH] = length
      this.counters.zeroCopySends++
    } else if (length <= WORKER_BUFFER_SIZE) {
      const view = this.views[k]!
      view.set(offset === 0 && length === data.length ? data : data.subarray(offset, offset + length))
      ctl[slot + TX_ZC_SLAB] = -1
      ctl[slot + TX_LENGTH] = length
    } else {
      ctl[slot + TX_ZC_SLAB] = -1
      ctl[slot + TX_LENGTH] = TX_TOO_LARGE
    }
    ctl[slot + TX_SEGMENT] = segment
    ctl[slot + TX_ADDR] = dest[at]!
    ctl[slot + TX_ADDR + 1] = dest[at + 1]!
    ctl[slot + TX_ADDR + 2] = dest[at + 2]!
    ctl[slot + TX_ADDR + 3] = dest[at + 3]!
    ctl[slot + TX_ADDR + 4] = dest[at + 4]!
    ctl[slot + TX_ADDR + 5] = dest[at + 5]!
    this.tokens[k] = token
    this.head = (this.head + 1) | 0
  }

  private growOverflow(): void {
    const cap = this.ovData.length
    const size = cap * 2
    const data = new Array<Uint8Array | null>(size).fill(null)
    const offset = new Int32Array(size)
    const length = new Int32Array(size)
    const segment = new Int32Array(size)
    const token = new Float64Array(size)
    const dest = new Int32Array(size * 6)
    for (let n = 0; n < this.ovCount; n++) {
      const j = (this.ovHead + n) & (cap - 1)
      data[n] = this.ovData[j]!
      offset[n] = this.ovOffset[j]!
      length[n] = this.ovLength[j]!
      segment[n] = this.ovSegment[j]!
      token[n] = this.ovToken[j]!
      dest.set(this.ovDest.subarray(j * 6, j * 6 + 6), n * 6)
    }
    this.ovData = data
    this.ovOffset = offset
    this.ovLength = length
    this.ovSegment = segment
    this.ovToken = token
    this.ovDest = dest
    this.ovHead = 0
  }

  /** Move overflowed sends into free slots, oldest first. */
  refill(): void {
    const cap = this.ovData.length
    while (this.ovCount > 0 && ((this.head - this.done) | 0) < this.slots) {
      const i = this.ovHead
      this.fill(this.ovData[i]!, this.ovOffset[i]!, this.ovLength[i]!, this.ovSegment[i]!, this.ovToken[i]!, this.ovDest, i * 6)
      this.ovData[i] = null
      this.ovHead = (i + 1) & (cap - 1)
      this.ovCount--
    }
  }

  /** Drop the oldest overflowed send (the socket is gone): its token. Only while `ovCount > 0`. */
  dropOverflowed(): number {
    const i = this.ovHead
    const token = this.ovToken[i]!
    this.ovData[i] = null
    this.ovHead = (i + 1) & (this.ovData.length - 1)
    this.ovCount--
    return token
  }
}
