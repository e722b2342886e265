import type { QuicEngine } from '@stoq/interface'
import type { QuicStream } from './stream.js'

/**
 * Finished streams whose acknowledgement is still unknown: the set is pruned (streams the
 * engine reports complete are dropped) whenever it reaches this size or twice its size after
 * the last pruning, so it stays proportional to the streams really in flight.
 */
const FINISHED_PRUNE_MIN = 256

/** What the graceful close uses of its connection (a QuicConnection). */
interface ClosingConnection {
  readonly engine: QuicEngine
  readonly handle: number
}

/**
 * Streams whose FIN the engine accepted, by id, until the engine reports them complete (the
 * peer acknowledged every byte and the FIN): what a graceful close waits for. The stream
 * objects themselves leave the connection's map as soon as both directions are done locally.
 */
export class FinishedStreams {
  private readonly ids = new Set<number>()
  private pruneAt = FINISHED_PRUNE_MIN

  constructor(private readonly conn: ClosingConnection) {}

  /** A stream's FIN was accepted by the engine. */
  add(id: number): void {
    this.ids.add(id)
    if (this.ids.size >= this.pruneAt) {
      for (const id of this.ids) if (this.conn.engine.streamComplete(this.conn.handle, id)) this.ids.delete(id)
      this.pruneAt = Math.max(FINISHED_PRUNE_MIN, 2 * this.ids.size)
    }
  }

  clear(): void {
    this.ids.clear()
  }

  /**
   * The graceful phase of `close()`: wait until every finished stream is
   * acknowledged and no write is left in a stream, or the deadline passes, or
   * the connection ends (`stopped()`). Polls the engine (it reports no event when
   * the peer acknowledges), every half RTT between 1 and 50 ms.
   */
  async drain(streams: ReadonlyMap<number, QuicStream>, stopped: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs
    // Writes and writer.close() the application issued in this turn reach the streams first.
    await new Promise<void>((resolve) => setImmediate(resolve))
    for (;;) {
      if (stopped()) return
      let pending = false
      for (const stream of streams.values()) {
        // From now on an idle stream refuses writes; a busy one (a write waiting for credit)
        // goes on with what its writer queued, and its held last byte goes out now.
        if (stream.prepareForClose()) pending = true
      }
      if (!pending) pending = !this.acknowledged(streams)
      if (!pending || performance.now() >= deadline) return
      const rttMs = this.conn.engine.stats(this.conn.handle).rttMs
      const waitMs = Math.max(1, Math.min(50, rttMs / 2, deadline - performance.now()))
      await new Promise<void>((resolve) => setTimeout(resolve, waitMs))
    }
  }

  /**
   * True when every finished stream a graceful close waits for is complete in
   * the engine (all bytes and the FIN acknowledged). Bidirectional streams whose
   * readable side is still open are skipped: the engine reports a stream
   * complete only once both directions are. quiche 0.18 never retransmits a
   * lost FIN-only STREAM frame, so such a stream would never complete: the
   * stream keeps its last byte back to carry the FIN (see QuicStream.write),
   * which leaves only empty streams exposed; the timeout bounds those.
   */
  private acknowledged(streams: ReadonlyMap<number, QuicStream>): boolean {
    for (const id of this.ids) {
      const stream = streams.get(id)
      if (stream !== undefined && !stream.readEnded) continue
      if (!this.conn.engine.streamComplete(this.conn.handle, id)) return false
      this.ids.delete(id)
    }
    return true
  }
}
