import crypto from 'node:crypto'
import type { SocketAddress } from '@stoq/interface'

/** How long a Retry token stays valid: one round trip is enough, 10 s allows slow links. */
export const RETRY_TOKEN_LIFETIME_MS = 10_000
const VERSION = 1
const MAC_LEN = 16

/**
 * Address-validation tokens for Retry (RFC 9000 §8.1.2). A token binds the
 * client's original DCID, the CID we chose in the Retry, the client's address
 * and the time, authenticated by an HMAC under a per-endpoint secret, so the
 * server keeps no state between Retry and the next Initial.
 *
 * Layout: version(1) | issued ms (6, big endian) | odcid length (1) | odcid | mac(16)
 */
export class RetryTokens {
  constructor(private readonly secret: Uint8Array) {}

  private mac(issued: Buffer, odcid: Uint8Array, retryScid: Uint8Array, peer: SocketAddress): Buffer {
    return crypto
      .createHmac('sha256', this.secret)
      .update('retry')
      .update(issued)
      .update(odcid)
      .update(retryScid)
      .update(`${peer.address}|${peer.port}`)
      .digest()
      .subarray(0, MAC_LEN)
  }

  mint(odcid: Uint8Array, retryScid: Uint8Array, peer: SocketAddress, now = Date.now()): Uint8Array {
    const issued = Buffer.alloc(6)
    issued.writeUIntBE(now, 0, 6)
    return Buffer.concat([Buffer.from([VERSION]), issued, Buffer.from([odcid.length]), odcid, this.mac(issued, odcid, retryScid, peer)])
  }

  /** Returns the original DCID when the token is authentic, fresh and for this peer; else null. */
  validate(token: Uint8Array, retryScid: Uint8Array, peer: SocketAddress, now = Date.now()): Uint8Array | null {
    if (token.length < 1 + 6 + 1 + MAC_LEN || token[0] !== VERSION) return null
    const buf = Buffer.from(token.buffer, token.byteOffset, token.byteLength)
    const odcidLen = buf[7]!
    if (odcidLen > 20 || token.length !== 8 + odcidLen + MAC_LEN) return null
    const issued = buf.subarray(1, 7)
    const age = now - issued.readUIntBE(0, 6)
    if (age < 0 || age > RETRY_TOKEN_LIFETIME_MS) return null
    const odcid = buf.subarray(8, 8 + odcidLen)
    const expected = this.mac(issued, odcid, retryScid, peer)
    if (!crypto.timingSafeEqual(expected, buf.subarray(8 + odcidLen))) return null
    return Uint8Array.from(odcid)
  }
}
