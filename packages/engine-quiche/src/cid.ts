import crypto from 'node:crypto'
import { StoqInvalidArgumentError } from '@stoq/interface'

/**
 * Length of the connection IDs we issue: 4 bytes of (masked) handle + 8 random
 * bytes; with `cidPrefix`, the prefix byte, the 4 handle bytes and 7 random bytes. Not longer: quiche 0.18 encodes its transport parameters into a fixed
 * 128-byte buffer, and a server answering a 20-byte client DCID after a Retry
 * carries three CIDs in them (measured: 16-byte CIDs overflow it).
 */
export const CID_LEN = 12

/**
 * The connection IDs one engine issues: the connection's handle, masked by a per-engine random
 * value, after the optional `cidPrefix` byte, then random bytes. A packet's DCID gives the
 * handle back without a table lookup.
 */
export class CidCodec {
  /** `QuicEngineOptions.cidPrefix`, or -1: then byte 0 of every CID we issue. */
  readonly prefix: number
  /** Where the masked handle starts in our CIDs: 1 after a prefix byte, else 0. */
  private readonly handleAt: number
  private readonly handleMask: number

  constructor(cidPrefix: unknown) {
    this.prefix = checkCidPrefix(cidPrefix)
    this.handleAt = this.prefix >= 0 ? 1 : 0
    this.handleMask = crypto.randomBytes(4).readUInt32BE(0)
  }

  /** A new CID for `handle`. */
  make(handle: number): Uint8Array {
    const cid = new Uint8Array(CID_LEN)
    crypto.getRandomValues(cid)
    const masked = (handle ^ this.handleMask) >>> 0
    const at = this.handleAt
    if (this.prefix >= 0) cid[0] = this.prefix
    cid[at] = masked >>> 24
    cid[at + 1] = (masked >>> 16) & 0xff
    cid[at + 2] = (masked >>> 8) & 0xff
    cid[at + 3] = masked & 0xff
    return cid
  }

  /** The handle encoded in a CID of ours starting at `offset` of `bytes`. */
  handle(bytes: Uint8Array, offset: number): number {
    const at = offset + this.handleAt
    const masked = ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0
    return (masked ^ this.handleMask) >>> 0
  }
}

/** Whether the (first) packet of a datagram is addressed to `cid` (long or short header). */
export function carriesCid(pkt: Uint8Array, cid: Uint8Array): boolean {
  let at = 1
  if ((pkt[0]! & 0x80) !== 0) {
    if (pkt.length < 6 || pkt[5] !== cid.length) return false
    at = 6
  }
  if (pkt.length < at + cid.length) return false
  for (let i = 0; i < cid.length; i++) if (pkt[at + i] !== cid[i]) return false
  return true
}

/**
 * `QuicEngineOptions.cidPrefix`: the byte, or -1 when absent. Anything but an integer
 * from 0 to 255 is STOQ_ERR_INVALID_ARG.
 */
export function checkCidPrefix(value: unknown): number {
  if (value === undefined) return -1
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 255) {
    throw new StoqInvalidArgumentError('cidPrefix', `expected an integer from 0 to 255, got ${typeof value === 'string' ? `'${value}'` : String(value)}`)
  }
  return value
}
