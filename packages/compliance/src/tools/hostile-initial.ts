import crypto from 'node:crypto'
import * as x509 from '@peculiar/x509'
// Sets the x509 crypto provider (and loads reflect-metadata) before any certificate is made.
import './pki.js'

/**
 * Hand-built QUIC version 1 client Initial packets (RFC 9000 §17.2.2, RFC 9001
 * §5), for feeding servers input that a well-behaved client stack would never
 * produce: arbitrary `quic_transport_parameters` bytes, odd tokens, unusual
 * connection IDs, packet numbers or sizes.
 *
 * Everything else is valid: a TLS 1.3 ClientHello with a real X25519 key share,
 * AES-128-GCM payload protection and AES-128-ECB header protection under the
 * Initial keys derived from the Destination Connection ID. Only node:crypto is
 * used.
 */

/** QUIC version 1 (RFC 9000). */
export const QUIC_V1 = 0x00000001

/** Salt for the version 1 Initial secrets (RFC 9001 §5.2). */
export const QUIC_V1_INITIAL_SALT: Uint8Array = Uint8Array.from(Buffer.from('38762cf7f55934b34d179ae6a4c80cadccbb7f0a', 'hex'))

/** TLS extension carrying the QUIC transport parameters (RFC 9001 §8.2). */
export const QUIC_TRANSPORT_PARAMETERS_EXTENSION = 0x39

/** Smallest UDP payload for a datagram carrying a client Initial (RFC 9000 §14.1). */
export const MIN_INITIAL_DATAGRAM_SIZE = 1200

/** Transport parameter identifiers (RFC 9000 §18.2, RFC 9221 §3). */
export const TransportParameterId = {
  originalDestinationConnectionId: 0x00,
  maxIdleTimeout: 0x01,
  statelessResetToken: 0x02,
  maxUdpPayloadSize: 0x03,
  initialMaxData: 0x04,
  initialMaxStreamDataBidiLocal: 0x05,
  initialMaxStreamDataBidiRemote: 0x06,
  initialMaxStreamDataUni: 0x07,
  initialMaxStreamsBidi: 0x08,
  initialMaxStreamsUni: 0x09,
  ackDelayExponent: 0x0a,
  maxAckDelay: 0x0b,
  disableActiveMigration: 0x0c,
  preferredAddress: 0x0d,
  activeConnectionIdLimit: 0x0e,
  initialSourceConnectionId: 0x0f,
  retrySourceConnectionId: 0x10,
  maxDatagramFrameSize: 0x20,
} as const

const MAX_VARINT = (1n << 62n) - 1n

// ---------------------------------------------------------------------------
// Encoding helpers

/**
 * QUIC variable-length integer (RFC 9000 §16). Uses the shortest form unless
 * `size` asks for a longer one (1, 2, 4 or 8 bytes): a non-minimal encoding is
 * legal and a useful probe for parsers.
 */
export function encodeVarint(n: number | bigint, size?: 1 | 2 | 4 | 8): Uint8Array {
  if (typeof n === 'number' && !Number.isSafeInteger(n)) {
    throw new RangeError(`varint: expected a safe integer or a bigint, got ${n}`)
  }
  const v = BigInt(n)
  if (v < 0n || v > MAX_VARINT) throw new RangeError(`varint: ${v} is outside 0..2^62-1`)
  const minimal = v < 0x40n ? 1 : v < 0x4000n ? 2 : v < 0x40000000n ? 4 : 8
  const len = size ?? minimal
  if (len !== 1 && len !== 2 && len !== 4 && len !== 8) throw new RangeError(`varint: invalid size ${len}`)
  if (len < minimal) throw new RangeError(`varint: ${v} does not fit in ${len} bytes`)
  const out = new Uint8Array(len)
  let x = v
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn)
    x >>= 8n
  }
  out[0]! |= (len === 1 ? 0 : len === 2 ? 1 : len === 4 ? 2 : 3) << 6
  return out
}

/**
 * Decode a varint at `offset`. Returns the value (a number when it is a safe
 * integer, otherwise a bigint) and the bytes it took, or null when truncated.
 */
export function decodeVarint(buf: Uint8Array, offset = 0): { value: number | bigint; length: number } | null {
  if (offset >= buf.length) return null
  const length = 1 << (buf[offset]! >> 6)
  if (offset + length > buf.length) return null
  let v = BigInt(buf[offset]! & 0x3f)
  for (let i = 1; i < length; i++) v = (v << 8n) | BigInt(buf[offset + i]!)
  return { value: v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v, length }
}

/** One transport parameter: varint id, varint length, value (RFC 9000 §18). */
export function encodeTransportParameter(id: number | bigint, value: Uint8Array): Uint8Array {
  return concat([encodeVarint(id), encodeVarint(value.length), value])
}

/** A transport parameter whose value is a varint (most of them). */
export function encodeIntegerTransportParameter(id: number | bigint, value: number | bigint): Uint8Array {
  return encodeTransportParameter(id, encodeVarint(value))
}

/**
 * A minimal valid set of client transport parameters: the ones a server
 * needs to make progress (stream and data windows, idle timeout) plus the
 * mandatory initial_source_connection_id, which must equal the packet's SCID.
 */
export function defaultTransportParameters(scid: Uint8Array): Uint8Array {
  const T = TransportParameterId
  return concat([
    encodeIntegerTransportParameter(T.maxIdleTimeout, 30_000),
    encodeIntegerTransportParameter(T.maxUdpPayloadSize, 1472),
    encodeIntegerTransportParameter(T.initialMaxData, 1 << 20),
    encodeIntegerTransportParameter(T.initialMaxStreamDataBidiLocal, 256 * 1024),
    encodeIntegerTransportParameter(T.initialMaxStreamDataBidiRemote, 256 * 1024),
    encodeIntegerTransportParameter(T.initialMaxStreamDataUni, 256 * 1024),
    encodeIntegerTransportParameter(T.initialMaxStreamsBidi, 100),
    encodeIntegerTransportParameter(T.initialMaxStreamsUni, 100),
    encodeIntegerTransportParameter(T.activeConnectionIdLimit, 2),
    encodeTransportParameter(T.initialSourceConnectionId, scid),
  ])
}

function concat(parts: Uint8Array[]): Uint8Array {
  let size = 0
  for (const p of parts) size += p.length
  const out = new Uint8Array(size)
  let off = 0
  for (const p of parts) {
    out.set(p, off)
    off += p.length
  }
  return out
}

function u8(n: number): Uint8Array {
  if (n < 0 || n > 0xff) throw new RangeError(`length ${n} does not fit in one byte`)
  return Uint8Array.of(n)
}

function u16(n: number): Uint8Array {
  if (n < 0 || n > 0xffff) throw new RangeError(`length ${n} does not fit in two bytes`)
  return Uint8Array.of(n >> 8, n & 0xff)
}

function u24(n: number): Uint8Array {
  if (n < 0 || n > 0xffffff) throw new RangeError(`length ${n} does not fit in three bytes`)
  return Uint8Array.of(n >> 16, (n >> 8) & 0xff, n & 0xff)
}

/** A TLS vector: `prefix`-byte length, then the data. */
function vec(prefix: 1 | 2 | 3, data: Uint8Array): Uint8Array {
  return concat([prefix === 1 ? u8(data.length) : prefix === 2 ? u16(data.length) : u24(data.length), data])
}

// ---------------------------------------------------------------------------
// Initial keys (RFC 9001 §5.1, §5.2)

function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Buffer {
  return crypto.createHmac('sha256', salt).update(ikm).digest()
}

function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Buffer {
  const blocks: Buffer[] = []
  let prev: Buffer = Buffer.alloc(0)
  for (let i = 1, got = 0; got < length; i++) {
    prev = crypto.createHmac('sha256', prk).update(prev).update(info).update(Uint8Array.of(i)).digest()
    blocks.push(prev)
    got += prev.length
  }
  return Buffer.concat(blocks).subarray(0, length)
}

/** TLS 1.3 HKDF-Expand-Label (RFC 8446 §7.1) with an empty context. */
function expandLabel(secret: Uint8Array, label: string, length: number): Buffer {
  const info = concat([u16(length), vec(1, Buffer.from(`tls13 ${label}`, 'latin1')), vec(1, new Uint8Array(0))])
  return hkdfExpand(secret, info, length)
}

export interface InitialKeys {
  /** client_initial_secret or server_initial_secret. */
  secret: Uint8Array
  /** AES-128-GCM key. */
  key: Uint8Array
  /** 12-byte IV, XORed with the packet number to make the nonce. */
  iv: Uint8Array
  /** AES-128 header-protection key. */
  hp: Uint8Array
}

/** Initial packet protection keys for one side, from the client's first Destination Connection ID. */
export function deriveInitialKeys(dcid: Uint8Array, side: 'client' | 'server' = 'client'): InitialKeys {
  const initial = hkdfExtract(QUIC_V1_INITIAL_SALT, dcid)
  const secret = expandLabel(initial, side === 'client' ? 'client in' : 'server in', 32)
  return {
    secret: new Uint8Array(secret),
    key: new Uint8Array(expandLabel(secret, 'quic key', 16)),
    iv: new Uint8Array(expandLabel(secret, 'quic iv', 12)),
    hp: new Uint8Array(expandLabel(secret, 'quic hp', 16)),
  }
}

/** The 5-byte header-protection mask for a 16-byte ciphertext sample (RFC 9001 §5.4.3). */
export function headerProtectionMask(hp: Uint8Array, sample: Uint8Array): Uint8Array {
  const c = crypto.createCipheriv('aes-128-ecb', hp, null)
  c.setAutoPadding(false)
  return new Uint8Array(c.update(sample.subarray(0, 16))).subarray(0, 5)
}

function nonce(iv: Uint8Array, packetNumber: number | bigint): Uint8Array {
  const n = Uint8Array.from(iv)
  let pn = BigInt(packetNumber)
  for (let i = n.length - 1; i >= n.length - 8; i--) {
    n[i]! ^= Number(pn & 0xffn)
    pn >>= 8n
  }
  return n
}

// ---------------------------------------------------------------------------
// ClientHello (RFC 8446 §4.1.2)

/** TLS ExtensionType values used in the ClientHello. */
export const TlsExtension = {
  serverName: 0,
  supportedGroups: 10,
  signatureAlgorithms: 13,
  alpn: 16,
  supportedVersions: 43,
  pskKeyExchangeModes: 45,
  keyShare: 51,
  quicTransportParameters: QUIC_TRANSPORT_PARAMETERS_EXTENSION,
} as const

export interface TlsExtensionBytes {
  type: number
  /** extension_data, without the type and length prefix. */
  data: Uint8Array
}

function extension(type: number, data: Uint8Array): Uint8Array {
  return concat([u16(type), vec(2, data)])
}

/**
 * An X25519 key share: every 32-byte string is a valid X25519 public key (RFC 7748 §5), and
 * no handshake made from these Initials is ever completed by us, so random bytes serve. Not
 * generateKeyPairSync + export({ format: 'jwk' }) per packet: on Node 20 that deadlocked the
 * process once in a CI run (ExportJWKEdKey holds a key's mutex while allocating; the GC it
 * triggered destroyed a KeyGenJob that takes the same mutex: the main thread waits forever).
 */
function x25519PublicKey(): Uint8Array {
  return new Uint8Array(crypto.randomBytes(32))
}

interface ClientHelloOptions {
  serverName: string | null
  alpn: string[]
  transportParameters: Uint8Array | null
  sessionId: Uint8Array
  extraExtensions: TlsExtensionBytes[]
}

function clientHello(o: ClientHelloOptions): Uint8Array {
  const exts: Uint8Array[] = []
  if (o.serverName !== null) {
    const name = Buffer.from(o.serverName, 'utf8')
    exts.push(extension(TlsExtension.serverName, vec(2, concat([u8(0), vec(2, name)]))))
  }
  // x25519, secp256r1
  exts.push(extension(TlsExtension.supportedGroups, vec(2, Uint8Array.of(0x00, 0x1d, 0x00, 0x17))))
  // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, ed25519, ecdsa_secp384r1_sha384,
  // rsa_pss_rsae_sha384, rsa_pss_rsae_sha512, rsa_pkcs1_sha256, rsa_pkcs1_sha384
  const sigs = [0x0403, 0x0804, 0x0807, 0x0503, 0x0805, 0x0806, 0x0401, 0x0501]
  exts.push(extension(TlsExtension.signatureAlgorithms, vec(2, concat(sigs.map(u16)))))
  exts.push(extension(TlsExtension.supportedVersions, vec(1, u16(0x0304))))
  exts.push(extension(TlsExtension.keyShare, vec(2, concat([u16(0x001d), vec(2, x25519PublicKey())]))))
  if (o.alpn.length > 0) {
    exts.push(extension(TlsExtension.alpn, vec(2, concat(o.alpn.map((p) => vec(1, Buffer.from(p, 'utf8')))))))
  }
  exts.push(extension(TlsExtension.pskKeyExchangeModes, vec(1, u8(0x01)))) // psk_dhe_ke
  for (const e of o.extraExtensions) exts.push(extension(e.type, e.data))
  if (o.transportParameters !== null) exts.push(extension(TlsExtension.quicTransportParameters, o.transportParameters))
  const body = concat([
    u16(0x0303), // legacy_version
    crypto.randomBytes(32), // random
    vec(1, o.sessionId), // legacy_session_id
    vec(2, concat([u16(0x1301), u16(0x1302), u16(0x1303)])), // AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305
    vec(1, u8(0)), // legacy_compression_methods: null
    vec(2, concat(exts)),
  ])
  return concat([u8(0x01), vec(3, body)]) // HandshakeType client_hello
}

// ---------------------------------------------------------------------------
// The packet

export interface CraftInitialOptions {
  /** Destination Connection ID, 0..20 bytes (a server may drop < 8). Default: 8 random bytes. */
  dcid?: Uint8Array
  /** Source Connection ID, 0..20 bytes. Default: 8 random bytes. */
  scid?: Uint8Array
  /** Token field (e.g. from a Retry). Default empty. */
  token?: Uint8Array
  /** SNI host name; null omits the server_name extension. Default 'localhost'. */
  serverName?: string | null
  /** ALPN protocols offered; an empty array omits the extension. Default ['stoq/1'], STOQ's ALPN. */
  alpn?: string[]
  /**
   * Raw body of the quic_transport_parameters extension (0x39), sent as is;
   * null omits the extension. Default: {@link defaultTransportParameters}(scid).
   */
  transportParameters?: Uint8Array | null
  /** Further ClientHello extensions, placed before quic_transport_parameters. */
  extraExtensions?: TlsExtensionBytes[]
  /** legacy_session_id: 0 or 32 bytes for TLS 1.3. Default empty. */
  sessionId?: Uint8Array
  /** Full packet number, used for the nonce; its low bytes are sent. Default 0. */
  packetNumber?: number
  /** Bytes of packet number in the header, 1..4. Default 4. */
  packetNumberLength?: 1 | 2 | 3 | 4
  /** PADDING is added until the datagram is at least this long. Default 1200; 0 disables padding. */
  minDatagramSize?: number
  /** QUIC version field. Default 1; the keys are always the version 1 Initial keys. */
  version?: number
}

export interface CraftedInitial {
  /** The protected packet: one whole UDP datagram. */
  packet: Uint8Array
  dcid: Uint8Array
  scid: Uint8Array
  /** The ClientHello handshake message carried in the CRYPTO frame. */
  clientHello: Uint8Array
  /** The transport parameters sent (null when omitted). */
  transportParameters: Uint8Array | null
}

/**
 * Build a protected QUIC v1 client Initial: long header, token, Length, a
 * CRYPTO frame at offset 0 holding a TLS 1.3 ClientHello, then PADDING up to
 * `minDatagramSize`. The ClientHello carries `transportParameters` verbatim,
 * valid or not.
 */
export function craftClientInitial(opts: CraftInitialOptions = {}): CraftedInitial {
  const dcid = opts.dcid ? Uint8Array.from(opts.dcid) : new Uint8Array(crypto.randomBytes(8))
  const scid = opts.scid ? Uint8Array.from(opts.scid) : new Uint8Array(crypto.randomBytes(8))
  if (dcid.length > 20 || scid.length > 20) throw new RangeError('connection IDs are at most 20 bytes in QUIC v1')
  const token = opts.token ?? new Uint8Array(0)
  const pnLen = opts.packetNumberLength ?? 4
  if (![1, 2, 3, 4].includes(pnLen)) throw new RangeError(`packetNumberLength must be 1..4, got ${pnLen}`)
  const pn = opts.packetNumber ?? 0
  if (!Number.isSafeInteger(pn) || pn < 0) throw new RangeError(`packetNumber must be a non-negative integer, got ${pn}`)
  const minSize = opts.minDatagramSize ?? MIN_INITIAL_DATAGRAM_SIZE
  const transportParameters = opts.transportParameters === undefined ? defaultTransportParameters(scid) : opts.transportParameters

  const hello = clientHello({
    serverName: opts.serverName === undefined ? 'localhost' : opts.serverName,
    alpn: opts.alpn ?? ['stoq/1'],
    transportParameters,
    sessionId: opts.sessionId ?? new Uint8Array(0),
    extraExtensions: opts.extraExtensions ?? [],
  })
  // CRYPTO frame (type 0x06): offset 0, length, data.
  const frame = concat([Uint8Array.of(0x06), encodeVarint(0), encodeVarint(hello.length), hello])

  const version = opts.version ?? QUIC_V1
  const first = 0xc0 | (0 << 4) | (pnLen - 1) // long header, fixed bit, type Initial, reserved 0
  const fixed = concat([
    Uint8Array.of(first, (version >>> 24) & 0xff, (version >>> 16) & 0xff, (version >>> 8) & 0xff, version & 0xff),
    vec(1, dcid),
    vec(1, scid),
    encodeVarint(token.length),
    token,
  ])
  const TAG = 16
  // Header protection samples 16 bytes starting 4 bytes after the start of
  // the packet number: the ciphertext must reach that far (RFC 9001 §5.4.2).
  const minPayload = Math.max(frame.length, 4 - pnLen)
  const lengthField = (payloadLen: number): Uint8Array => {
    const len = pnLen + payloadLen + TAG
    return encodeVarint(len, len < 0x4000 ? 2 : undefined)
  }
  let payloadLen = minPayload
  const total = (): number => fixed.length + lengthField(payloadLen).length + pnLen + payloadLen + TAG
  // Grows 1:1 with the payload (more if the Length varint widens): one step reaches minSize.
  if (total() < minSize) payloadLen += minSize - total()
  const payload = new Uint8Array(payloadLen) // zero bytes are PADDING frames
  payload.set(frame, 0)

  const pnBytes = new Uint8Array(pnLen)
  for (let i = 0, x = pn; i < pnLen; i++) {
    pnBytes[pnLen - 1 - i] = x % 256
    x = Math.floor(x / 256)
  }
  const header = concat([fixed, lengthField(payloadLen), pnBytes])
  const keys = deriveInitialKeys(dcid, 'client')
  const cipher = crypto.createCipheriv('aes-128-gcm', keys.key, nonce(keys.iv, pn))
  cipher.setAAD(header)
  const sealed = concat([cipher.update(payload), cipher.final(), cipher.getAuthTag()])

  const packet = concat([header, sealed])
  const pnOffset = header.length - pnLen
  const mask = headerProtectionMask(keys.hp, packet.subarray(pnOffset + 4, pnOffset + 20))
  packet[0]! ^= mask[0]! & 0x0f
  for (let i = 0; i < pnLen; i++) packet[pnOffset + i]! ^= mask[1 + i]!
  return { packet, dcid, scid, clientHello: hello, transportParameters }
}

// ---------------------------------------------------------------------------
// Reading server answers

export type LongPacketType = 'initial' | '0rtt' | 'handshake' | 'retry' | 'version-negotiation'

export interface LongHeader {
  type: LongPacketType
  version: number
  dcid: Uint8Array
  scid: Uint8Array
  /** Initial: the token field. Retry: the retry token (without the 16-byte integrity tag). */
  token?: Uint8Array
  /** Offset of the packet number (Initial, 0-RTT, Handshake); it is still header-protected. */
  pnOffset?: number
  /** Value of the Length field (Initial, 0-RTT, Handshake). */
  length?: number
  /** Bytes this packet spans in the datagram, so coalesced packets can be walked. */
  size: number
}

/**
 * Parse the unprotected part of a long-header packet at `offset` of a
 * datagram (RFC 9000 §17.2). Returns null for short headers and malformed or
 * truncated input.
 */
export function parseLongHeader(datagram: Uint8Array, offset = 0): LongHeader | null {
  const b = datagram
  if (offset + 7 > b.length || (b[offset]! & 0x80) === 0) return null
  const version = ((b[offset + 1]! << 24) | (b[offset + 2]! << 16) | (b[offset + 3]! << 8) | b[offset + 4]!) >>> 0
  let p = offset + 5
  const dcidLen = b[p++]!
  if (p + dcidLen + 1 > b.length) return null
  const dcid = b.slice(p, p + dcidLen)
  p += dcidLen
  const scidLen = b[p++]!
  if (p + scidLen > b.length) return null
  const scid = b.slice(p, p + scidLen)
  p += scidLen
  if (version === 0) return { type: 'version-negotiation', version, dcid, scid, size: b.length - offset }
  const type = (['initial', '0rtt', 'handshake', 'retry'] as const)[(b[offset]! >> 4) & 0x03]!
  if (type === 'retry') {
    if (p + 16 > b.length) return null
    return { type, version, dcid, scid, token: b.slice(p, b.length - 16), size: b.length - offset }
  }
  let token: Uint8Array | undefined
  if (type === 'initial') {
    const t = decodeVarint(b, p)
    if (t === null || typeof t.value !== 'number') return null
    p += t.length
    if (p + t.value > b.length) return null
    token = b.slice(p, p + t.value)
    p += t.value
  }
  const l = decodeVarint(b, p)
  if (l === null || typeof l.value !== 'number') return null
  p += l.length
  if (p + l.value > b.length) return null
  const h: LongHeader = { type, version, dcid, scid, pnOffset: p, length: l.value, size: p + l.value - offset }
  if (token !== undefined) h.token = token
  return h
}

// ---------------------------------------------------------------------------
// Answering a Retry

export interface RetryFollowUp {
  /** The second client Initial: the Retry's token, sent to the server's new CID. */
  initial: CraftedInitial
  /** The Retry token as received (bound by the server to our address and its new CID). */
  token: Uint8Array
  /** The server's new CID, which the follow-up Initial is sent to. */
  retryScid: Uint8Array
}

/**
 * What a real client does with a Retry (RFC 9000 §17.2.5.2): send its Initial
 * again, with the token and to the CID the server chose. `first` is the Initial
 * the Retry answered; `opts` may override the follow-up (e.g. a forged token).
 * Returns null when `retry` is not a Retry packet addressed to `first`'s SCID.
 * The Retry integrity tag is not checked.
 */
export function answerRetry(retry: Uint8Array, first: CraftedInitial, opts: CraftInitialOptions = {}): RetryFollowUp | null {
  const h = parseLongHeader(retry)
  if (h === null || h.type !== 'retry' || h.token === undefined || h.token.length === 0) return null
  if (Buffer.compare(Buffer.from(h.dcid), Buffer.from(first.scid)) !== 0) return null
  const initial = craftClientInitial({ scid: first.scid, dcid: h.scid, token: h.token, packetNumber: 1, ...opts })
  return { initial, token: h.token, retryScid: h.scid }
}

// ---------------------------------------------------------------------------
// A server identity with a large certificate chain

const chainAlg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
/** A private-use OID (never interpreted) for the padding extension. */
const PADDING_EXTENSION_OID = '1.3.6.1.4.1.55555.7.1'

export interface LargeChainOptions {
  /** Intermediate CAs between the root and the leaf. Default 3. */
  intermediates?: number
  /** Bytes of non-critical padding extension in every certificate sent. Default 1500. */
  padding?: number
}

export interface LargeChainIdentity {
  /** The root CA (PEM), to trust on the client; not part of `cert`. */
  ca: string
  /** Leaf first, then the intermediates from the leaf's issuer up (PEM): what the server sends. */
  cert: string
  /** The leaf's private key (PKCS#8 PEM). */
  key: string
  /** Certificates in `cert`. */
  certificates: number
  /** Sum of the DER sizes of the certificates in `cert`: a lower bound for the TLS Certificate message. */
  chainBytes: number
}

/**
 * A server identity for localhost / 127.0.0.1 / ::1 whose chain is large
 * (leaf plus `intermediates` CAs, each carrying `padding` bytes in a
 * non-critical private extension that verifiers ignore): with the defaults
 * the chain is about 8 KB, so a server's first flight exceeds three times a
 * 1200-byte client Initial. Useful to check the anti-amplification limit
 * (RFC 9000 §8.1), which a small chain never reaches.
 */
export async function largeCertificateChain(opts: LargeChainOptions = {}): Promise<LargeChainIdentity> {
  const intermediates = opts.intermediates ?? 3
  const padding = opts.padding ?? 1500
  if (!Number.isInteger(intermediates) || intermediates < 0 || intermediates > 10) throw new RangeError('intermediates must be 0..10')
  if (!Number.isInteger(padding) || padding < 0 || padding > 60_000) throw new RangeError('padding must be 0..60000 bytes')
  const subtle = crypto.webcrypto.subtle
  const pad = (): x509.Extension[] => (padding > 0 ? [new x509.Extension(PADDING_EXTENSION_OID, false, crypto.randomBytes(padding))] : [])
  const validity = { notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 7 * 86400_000) }
  const newKeys = async (): Promise<crypto.webcrypto.CryptoKeyPair> =>
    (await subtle.generateKey(chainAlg, true, ['sign', 'verify'])) as crypto.webcrypto.CryptoKeyPair
  const caExtensions = (): x509.Extension[] => [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ]

  const rootKeys = await newKeys()
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=STOQ Large Chain Root',
    ...validity,
    keys: rootKeys,
    signingAlgorithm: chainAlg,
    extensions: caExtensions(),
  })
  let issuer = { cert: root, keys: rootKeys }
  const sent: x509.X509Certificate[] = []
  for (let i = 0; i < intermediates; i++) {
    const keys = await newKeys()
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: `1${i}`,
      subject: `CN=STOQ Large Chain Intermediate ${i + 1}`,
      issuer: issuer.cert.subject,
      ...validity,
      signingAlgorithm: chainAlg,
      publicKey: keys.publicKey,
      signingKey: issuer.keys.privateKey,
      extensions: [...caExtensions(), ...pad()],
    })
    sent.unshift(cert)
    issuer = { cert, keys }
  }
  const leafKeys = await newKeys()
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: '20',
    subject: 'CN=localhost',
    issuer: issuer.cert.subject,
    ...validity,
    signingAlgorithm: chainAlg,
    publicKey: leafKeys.publicKey,
    signingKey: issuer.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: 'localhost' },
        { type: 'ip', value: '127.0.0.1' },
        { type: 'ip', value: '::1' },
      ]),
      ...pad(),
    ],
  })
  sent.unshift(leaf)
  const keyDer = await subtle.exportKey('pkcs8', leafKeys.privateKey)
  return {
    ca: root.toString('pem'),
    cert: sent.map((c) => c.toString('pem')).join('\n'),
    key: x509.PemConverter.encode(keyDer, 'PRIVATE KEY'),
    certificates: sent.length,
    chainBytes: sent.reduce((n, c) => n + c.rawData.byteLength, 0),
  }
}
