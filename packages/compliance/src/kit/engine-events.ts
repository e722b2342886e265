import type { EngineCloseInfo, EngineEventSink } from '@stoq/interface'

/** Records every event an engine reports (an EngineEventSink for engines driven by hand in tests). */
export class EngineEventRecorder implements EngineEventSink {
  incoming: number[] = []
  established: number[] = []
  readable: Array<[number, number]> = []
  writable: Array<[number, number]> = []
  datagrams: number[] = []
  closed: Array<[number, EngineCloseInfo]> = []
  onIncoming(conn: number): void {
    this.incoming.push(conn)
  }
  onEstablished(conn: number): void {
    this.established.push(conn)
  }
  onStreamReadable(conn: number, id: number): void {
    this.readable.push([conn, id])
  }
  onStreamWritable(conn: number, id: number): void {
    this.writable.push([conn, id])
  }
  onDatagramReadable(conn: number): void {
    this.datagrams.push(conn)
  }
  onClosed(conn: number, info: EngineCloseInfo): void {
    this.closed.push([conn, info])
  }
}
