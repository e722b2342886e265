import crypto from 'node:crypto'
import { StoqInvalidArgumentError, type EngineServerOptions, type SocketAddress } from '@stoq/interface'
import type { QuicheBinding, QuicheConfig, QuicheHeader } from './binding.js'
import { carriesCid, CID_LEN, type CidCodec } from './cid.js'
import { RetryTokens } from './retry-token.js'

/**
 * The server's front door: what the quiche engine answers before a packet belongs to a
 * connection (version negotiation, Retry, the refusal backlog, stateless resets), and the
 * amplification cap on a connection whose peer address is not validated yet.
 */

/** Largest number of control packets (Retry, version negotiation, stateless reset) waiting to be sent. */
const MAX_CONTROL_QUEUE = 256
/** Stateless resets sent per second at most (they answer unauthenticated packets). */
const STATELESS_RESETS_PER_SECOND = 100
/** Connections beyond the limit that we accept only to refuse them politely; past this we drop. */
const REFUSE_BACKLOG = 64
/** RFC 9000 §8.1: before its address is validated, a peer gets at most 3x the bytes it sent. */
const AMPLIFICATION_FACTOR = 3

export const NO_COMMON_VERSION = new TextEncoder().encode('no common QUIC version')

export interface ControlPacket {
  data: Uint8Array
  peer: SocketAddress
}

/** A Version Negotiation packet: long header, version 0 (RFC 9000 §17.2.1). */
export function isVersionNegotiation(pkt: Uint8Array): boolean {
  return pkt.length >= 7 && (pkt[0]! & 0x80) !== 0 && pkt[1] === 0 && pkt[2] === 0 && pkt[3] === 0 && pkt[4] === 0
}

/** The versions a Version Negotiation packet lists (empty when malformed). */
export function versionList(pkt: Uint8Array): number[] {
  const dcil = pkt[5]!
  const scil = pkt[6 + dcil]
  if (scil === undefined) return []
  const out: number[] = []
  const view = new DataView(pkt.buffer, pkt.byteOffset, pkt.byteLength)
  for (let at = 7 + dcil + scil; at + 4 <= pkt.length; at += 4) out.push(view.getUint32(at))
  return out
}

export function sameAddress(a: SocketAddress, b: SocketAddress): boolean {
  return a === b || (a.port === b.port && a.address === b.address)
}

/** A connection's side of the amplification cap. */
export interface AmplificationState {
  peer: SocketAddress
  scid: Uint8Array
  /**
   * Server without Retry, peer address not validated yet: what we send is held to
   * AMPLIFICATION_FACTOR x `ampRecv` (quiche 0.18's PTO probes pass that limit).
   */
  ampLimited: boolean
  /** Bytes received from the peer's address while `ampLimited`. */
  ampRecv: number
  /** Bytes sent to it while `ampLimited`. */
  ampSent: number
}

/** Count a received packet towards the peer's budget; a packet to our CID lifts the cap. */
export function countReceived(rec: AmplificationState, pkt: Uint8Array, from: SocketAddress): void {
  if (rec.ampLimited && sameAddress(from, rec.peer)) {
    // Only bytes from the address we answer count towards its budget.
    rec.ampRecv += pkt.length
    // A packet to our CID proves the peer receives what we send (RFC 9000 §8.1).
    if (carriesCid(pkt, rec.scid)) rec.ampLimited = false
  }
}

/** Whether `n` more bytes may go to the peer; counts them when they may. */
export function amplificationAllows(rec: AmplificationState, n: number): boolean {
  if (rec.ampLimited) {
    if (rec.ampSent + n > AMPLIFICATION_FACTOR * rec.ampRecv) return false
    rec.ampSent += n
  }
  return true
}

/** A new connection the front door lets in. */
export interface Admission {
  handle: number
  scid: Uint8Array
  /** The original DCID from a validated Retry token, or null without Retry. */
  odcid: Uint8Array | null
  /** The client's DCID of this Initial. */
  dcid: Uint8Array
  /** Over the connection limit: accepted only to be refused after our first flight. */
  refused: boolean
  server: EngineServerOptions
  config: QuicheConfig
}

export class FrontDoor {
  server: EngineServerOptions | null = null
  config: QuicheConfig | null = null
  readonly control: ControlPacket[] = []
  private secret: Uint8Array = crypto.randomBytes(32)
  private tokens: RetryTokens
  private resetBudget = STATELESS_RESETS_PER_SECOND
  private resetBudgetAt = 0

  constructor(
    private readonly q: QuicheBinding,
    private readonly cids: CidCodec,
    /** Counts a packet dropped (the engine's `droppedPackets`). */
    private readonly drop: () => void,
  ) {
    this.tokens = new RetryTokens(this.secret)
  }

  open(options: EngineServerOptions, config: QuicheConfig): void {
    this.config = config
    if (options.secret !== undefined) {
      if (options.secret.length !== 32) throw new StoqInvalidArgumentError('secret', `expected 32 bytes, got ${options.secret.length}`)
      this.secret = Uint8Array.from(options.secret)
      this.tokens = new RetryTokens(this.secret)
    }
    this.server = options
  }

  queueControl(data: Uint8Array, peer: SocketAddress): void {
    if (this.control.length >= MAX_CONTROL_QUEUE) {
      this.drop()
      return
    }
    this.control.push({ data, peer })
  }

  /**
   * A long-header packet for no connection of ours: answered (version negotiation, Retry),
   * dropped, or admitted as a new connection. `conns` are the engine's connections by handle;
   * `allocHandle` reserves a handle.
   */
  admit(pkt: Uint8Array, from: SocketAddress, conns: { readonly size: number; has(handle: number): boolean }, allocHandle: () => number): Admission | null {
    const server = this.server
    const cfg = this.config
    if (server === null || cfg === null) {
      this.drop()
      return null
    }
    let hdr: QuicheHeader
    try {
      hdr = this.q.Header.fromSlice(pkt, CID_LEN)
    } catch {
      this.drop()
      return null
    }
    // RFC 9000 §14.1: answer only full-size client datagrams, to limit amplification.
    if (pkt.length < this.q.MIN_CLIENT_INITIAL_LEN) {
      this.drop()
      return null
    }
    if (!this.q.versionIsSupported(hdr.version)) {
      const out = new Uint8Array(256)
      try {
        const n = this.q.negotiateVersion(hdr.scid, hdr.dcid, out)
        this.queueControl(out.subarray(0, n), from)
      } catch {
        this.drop()
      }
      return null
    }
    if (hdr.ty !== this.q.Type.Initial) {
      this.drop()
      return null
    }
    const over = conns.size >= server.maxConnections
    if (over && conns.size >= server.maxConnections + REFUSE_BACKLOG) {
      this.drop()
      return null
    }
    let scid: Uint8Array
    let odcid: Uint8Array | null = null
    let handle: number
    if (server.retry) {
      const token = hdr.token ?? new Uint8Array(0)
      if (token.length === 0) {
        // The handle is only reserved by being encoded in the CID (allocHandle
        // moved the counter past it): Retry stays stateless.
        handle = allocHandle()
        const newScid = this.cids.make(handle)
        const minted = this.tokens.mint(hdr.dcid, newScid, from)
        const out = new Uint8Array(512)
        try {
          const n = this.q.retry(hdr.scid, hdr.dcid, newScid, minted, hdr.version, out)
          this.queueControl(out.subarray(0, n), from)
        } catch {
          this.drop()
        }
        return null
      }
      const original = this.tokens.validate(token, hdr.dcid, from)
      if (original === null || hdr.dcid.length !== CID_LEN) {
        this.drop()
        return null
      }
      odcid = original
      scid = Uint8Array.from(hdr.dcid)
      handle = this.cids.handle(scid, 0)
      if (conns.has(handle) || handle === 0 || (this.cids.prefix >= 0 && scid[0] !== this.cids.prefix)) {
        // A replayed token for a live connection.
        this.drop()
        return null
      }
    } else {
      handle = allocHandle()
      scid = this.cids.make(handle)
    }
    return { handle, scid, odcid, dcid: hdr.dcid, refused: over, server, config: cfg }
  }

  resetToken(cid: Uint8Array): Uint8Array {
    return crypto.createHmac('sha256', this.secret).update('reset').update(cid).digest().subarray(0, 16)
  }

  maybeStatelessReset(pkt: Uint8Array, from: SocketAddress): void {
    this.drop()
    const server = this.server
    if (server === null || !server.statelessReset) return
    // RFC 9000 §10.3: a reset must be smaller than the packet that triggered
    // it (no reset loops) and at least 21 bytes; we also rate-limit them.
    if (pkt.length < 1 + CID_LEN + 22) return
    const now = performance.now()
    if (now - this.resetBudgetAt >= 1000) {
      this.resetBudgetAt = now
      this.resetBudget = STATELESS_RESETS_PER_SECOND
    }
    if (this.resetBudget <= 0) return
    this.resetBudget--
    const size = Math.min(pkt.length - 1, 43)
    const out = crypto.randomBytes(size)
    out[0] = 0x40 | (out[0]! & 0x3f)
    out.set(this.resetToken(pkt.subarray(1, 1 + CID_LEN)), size - 16)
    this.queueControl(out, from)
  }

  close(): void {
    this.control.length = 0
    this.config = null
    this.server = null
  }
}
