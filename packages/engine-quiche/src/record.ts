import type { SocketAddress } from '@stoq/interface'
import { toSocketAddress } from '@stoq/hwaccel'
import type { HostPort, QuicheConnection } from './binding.js'
import type { AmplificationState, ControlPacket } from './front-door.js'

/** What the quiche engine keeps per connection, and small address helpers. */

export interface ConnRecord extends AmplificationState {
  handle: number
  conn: QuicheConnection
  recvInfo: { from: HostPort; to: HostPort }
  server: boolean
  /** Key in the Initial route table (client's original DCID), server side only. */
  initialKey: string | null
  incomingReported: boolean
  establishedReported: boolean
  /** Has something to send (or might). */
  sendDirty: boolean
  /** Events to look at in the next drain. */
  eventDirty: boolean
  /** Timer deadline (performance.now() ms) or -1. */
  deadline: number
  timerDirty: boolean
  keepAliveMs: number
  lastActivity: number
  nextBidi: number
  nextUni: number
  wantWritable: Set<number>
  /** Stream ids seen as stopped by the peer, with their codes. */
  stopped: Map<number, number> | null
  /**
   * Readable streams the application left unread when last told (a stream waiting for the
   * endpoint's stream budget, a reader whose queue is full): not reported again until the
   * application reads them, since quiche lists every stream with unread data on each packet.
   */
  quiet: Set<number> | null
  refused: boolean
  /** onClosed was reported; the record lingers until quiche finishes draining. */
  closeReported: boolean
  /** Client: versions listed by a Version Negotiation packet from the server (null: none came). */
  offeredVersions: number[] | null
  /** A packet quiche wrote for another address than its batch's (a PATH_CHALLENGE to a new path): sent next, alone. */
  held: ControlPacket | null
  /** Times quiche moved the connection to a new peer address (PeerMigrated). */
  pathChanges: number
}

export function hostPort(addr: SocketAddress): HostPort {
  return { host: addr.address, port: addr.port }
}

export function toBigIntToken(bytes: Uint8Array): bigint {
  let v = 0n
  for (let i = 0; i < 16; i++) v = (v << 8n) | BigInt(bytes[i]!)
  return v
}

/** `to` as a SocketAddress, `known` itself when they are the same address. */
export function destination(to: HostPort, known: SocketAddress): SocketAddress {
  return to.host === known.address && to.port === known.port ? known : toSocketAddress(to.host, to.port)
}

export function peerKey(addr: SocketAddress): string {
  return `${addr.address}|${addr.port}`
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

/** A fresh record: nothing reported, nothing sent, the stream ids of its side (client or server). */
export function connRecord(handle: number, conn: QuicheConnection, scid: Uint8Array, peer: SocketAddress, local: SocketAddress, server: boolean): ConnRecord {
  return {
    handle,
    conn,
    scid,
    peer,
    recvInfo: { from: hostPort(peer), to: hostPort(local) },
    server,
    initialKey: null,
    incomingReported: !server,
    establishedReported: false,
    sendDirty: false,
    eventDirty: false,
    deadline: -1,
    timerDirty: true,
    keepAliveMs: 0,
    lastActivity: performance.now(),
    // RFC 9000 §2.1: client-initiated ids end in 0b00/0b10, server-initiated in 0b01/0b11.
    nextBidi: server ? 1 : 0,
    nextUni: server ? 3 : 2,
    wantWritable: new Set(),
    stopped: null,
    quiet: null,
    refused: false,
    closeReported: false,
    ampLimited: false,
    ampRecv: 0,
    ampSent: 0,
    offeredVersions: null,
    held: null,
    pathChanges: 0,
  }
}
