/**
 * HTTP/3 SETTINGS (RFC 9114 §7.2.4) and the extension settings WebTransport
 * relies on.
 *
 * A SETTINGS payload is a sequence of (identifier varint, value varint) pairs.
 * Decoded settings are a `Map<VarInt, VarInt>` in canonical varint form (see
 * `varint.ts`), so `settings.get(SETTINGS_H3_DATAGRAM)` works with the number
 * constants below. Unknown identifiers (including reserved "grease" ones) are
 * preserved; a peer must ignore those it does not understand.
 */

import { boolOption, bytesArg, intArg, iterableArg, optionsArg, show } from './args.js'
import { StoqInvalidArgumentError } from '@stoq/interface'
import { ByteWriter } from './bytes.js'
import { H3_FRAME_ERROR, H3_SETTINGS_ERROR, StoqH3Error } from './errors.js'
import { readVarint, isVarInt, toVarInt, type VarInt } from './varint.js'

/** RFC 9204 §5: dynamic table capacity the decoder allows (default 0). */
export const SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0x01
/** RFC 9114 §7.2.4.1: largest field section the peer accepts (default unlimited). */
export const SETTINGS_MAX_FIELD_SECTION_SIZE = 0x06
/** RFC 9204 §5: streams that may be blocked on the dynamic table (default 0). */
export const SETTINGS_QPACK_BLOCKED_STREAMS = 0x07
/** RFC 9220 §3: the server accepts extended CONNECT (`:protocol`). Values 0 or 1. */
export const SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x08
/** RFC 9297 §2.1.1: HTTP/3 Datagrams are supported. Values 0 or 1. */
export const SETTINGS_H3_DATAGRAM = 0x33
/**
 * draft-ietf-masque-h3-datagram-04's H3_DATAGRAM. Chromium still sends it next
 * to 0x33 (quiche `HttpDatagramSupport::kRfcAndDraft04`). Values 0 or 1.
 */
export const SETTINGS_H3_DATAGRAM_DRAFT04 = 0xffd277
/**
 * draft-ietf-webtrans-http3-02 SETTINGS_ENABLE_WEBTRANSPORT (quiche
 * `SETTINGS_WEBTRANS_DRAFT00`). Values 0 or 1. This is the setting Chromium
 * keys WebTransport draft-02 on; without it Chromium refuses the session.
 */
export const SETTINGS_ENABLE_WEBTRANSPORT = 0x2b603742
/**
 * draft-ietf-webtrans-http3-07 SETTINGS_WEBTRANSPORT_MAX_SESSIONS (quiche
 * `SETTINGS_WEBTRANS_MAX_SESSIONS_DRAFT07`). A value > 0 offers draft-07; do
 * not send it unless draft-07 semantics are implemented.
 */
export const SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT07 = 0xc671706a
/** SETTINGS_WT_MAX_SESSIONS of later drafts (-09 … -14). Not used by Chromium. */
export const SETTINGS_WT_MAX_SESSIONS = 0x14e9cd29
/** SETTINGS_WT_ENABLED of draft-15. Not used by Chromium. */
export const SETTINGS_WT_ENABLED = 0x2c7cf000

/** HTTP/2 setting identifiers with no HTTP/3 counterpart: receiving one is H3_SETTINGS_ERROR. */
export const RESERVED_HTTP2_SETTINGS: readonly number[] = [0x02, 0x03, 0x04, 0x05]

/** Settings whose only legal values are 0 and 1. */
const BOOLEAN_SETTINGS: ReadonlySet<number> = new Set([
  SETTINGS_ENABLE_CONNECT_PROTOCOL,
  SETTINGS_H3_DATAGRAM,
  SETTINGS_H3_DATAGRAM_DRAFT04,
  SETTINGS_ENABLE_WEBTRANSPORT,
])

/** Decoded settings: identifier → value, canonical varints. */
export type Settings = Map<VarInt, VarInt>

/** Anything `encodeSettings` accepts. */
export type SettingsInput = Iterable<readonly [VarInt, VarInt]>

/** Names of the settings this package knows, for logs. */
export const SETTINGS_NAMES: ReadonlyMap<number, string> = new Map([
  [SETTINGS_QPACK_MAX_TABLE_CAPACITY, 'SETTINGS_QPACK_MAX_TABLE_CAPACITY'],
  [SETTINGS_MAX_FIELD_SECTION_SIZE, 'SETTINGS_MAX_FIELD_SECTION_SIZE'],
  [SETTINGS_QPACK_BLOCKED_STREAMS, 'SETTINGS_QPACK_BLOCKED_STREAMS'],
  [SETTINGS_ENABLE_CONNECT_PROTOCOL, 'SETTINGS_ENABLE_CONNECT_PROTOCOL'],
  [SETTINGS_H3_DATAGRAM, 'SETTINGS_H3_DATAGRAM'],
  [SETTINGS_H3_DATAGRAM_DRAFT04, 'SETTINGS_H3_DATAGRAM_DRAFT04'],
  [SETTINGS_ENABLE_WEBTRANSPORT, 'SETTINGS_ENABLE_WEBTRANSPORT'],
  [SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT07, 'SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT07'],
  [SETTINGS_WT_MAX_SESSIONS, 'SETTINGS_WT_MAX_SESSIONS'],
  [SETTINGS_WT_ENABLED, 'SETTINGS_WT_ENABLED'],
])

function isReservedHttp2Setting(id: VarInt): boolean {
  return typeof id === 'number' && id >= 0x02 && id <= 0x05
}

/**
 * Encodes a SETTINGS frame *payload* (no frame header; see
 * `encodeSettingsFrame` in frames.ts). Order is preserved. Duplicate or
 * HTTP/2-reserved identifiers are refused, as are non-0/1 values for the
 * boolean settings.
 */
export function encodeSettings(settings: SettingsInput): Uint8Array {
  iterableArg('settings', settings)
  const w = new ByteWriter(32)
  const seen = new Set<VarInt>()
  for (const entry of settings) {
    iterableArg('settings', entry)
    const [rawId, rawValue] = entry
    if (!isVarInt(rawId) || !isVarInt(rawValue)) {
      throw new StoqInvalidArgumentError('settings', `identifier and value must be varints (got ${show(rawId)}=${show(rawValue)})`)
    }
    const id = toVarInt(rawId)
    const value = toVarInt(rawValue)
    if (seen.has(id)) throw new StoqInvalidArgumentError('settings', `duplicate setting 0x${id.toString(16)}`)
    if (isReservedHttp2Setting(id)) {
      throw new StoqInvalidArgumentError('settings', `setting 0x${id.toString(16)} is reserved (HTTP/2) and must not be sent`)
    }
    if (typeof id === 'number' && BOOLEAN_SETTINGS.has(id) && value !== 0 && value !== 1) {
      throw new StoqInvalidArgumentError('settings', `${SETTINGS_NAMES.get(id)} must be 0 or 1 (got ${String(value)})`)
    }
    seen.add(id)
    w.varint(id).varint(value)
  }
  return w.finish()
}

/** Options of `decodeSettings`. */
export interface DecodeSettingsOptions {
  /**
   * Refuse (H3_SETTINGS_ERROR) values other than 0/1 for the boolean settings
   * (ENABLE_CONNECT_PROTOCOL, H3_DATAGRAM, H3_DATAGRAM_DRAFT04,
   * ENABLE_WEBTRANSPORT). Default true.
   */
  checkValues?: boolean
}

/**
 * Decodes a complete SETTINGS frame payload. Throws `StoqH3Error`:
 * H3_FRAME_ERROR when the payload ends inside a pair, H3_SETTINGS_ERROR on a
 * duplicate identifier, an HTTP/2-reserved identifier (0x02-0x05) or a bad
 * boolean value. Unknown identifiers are kept.
 */
export function decodeSettings(payload: Uint8Array, options: DecodeSettingsOptions = {}): Settings {
  bytesArg('payload', payload)
  optionsArg('options', options, ['checkValues'])
  const checkValues = options.checkValues === undefined ? true : boolOption('checkValues', options.checkValues)
  const settings: Settings = new Map()
  let at = 0
  while (at < payload.length) {
    const id = readVarint(payload, at)
    if (id === null) throw new StoqH3Error(H3_FRAME_ERROR, 'SETTINGS payload ends inside a setting identifier')
    at += id.length
    const value = readVarint(payload, at)
    if (value === null) {
      throw new StoqH3Error(H3_FRAME_ERROR, `SETTINGS payload ends inside the value of setting 0x${id.value.toString(16)}`)
    }
    at += value.length
    if (isReservedHttp2Setting(id.value)) {
      throw new StoqH3Error(H3_SETTINGS_ERROR, `received HTTP/2-reserved setting 0x${id.value.toString(16)}`)
    }
    if (settings.has(id.value)) {
      throw new StoqH3Error(H3_SETTINGS_ERROR, `duplicate setting 0x${id.value.toString(16)}`)
    }
    if (checkValues && typeof id.value === 'number' && BOOLEAN_SETTINGS.has(id.value) && value.value !== 0 && value.value !== 1) {
      throw new StoqH3Error(H3_SETTINGS_ERROR, `${SETTINGS_NAMES.get(id.value)} must be 0 or 1, got ${value.value.toString()}`)
    }
    settings.set(id.value, value.value)
  }
  return settings
}

/** The known settings of a decoded SETTINGS map, with RFC defaults filled in. */
export interface KnownSettings {
  qpackMaxTableCapacity: VarInt
  /** `null` when absent (unlimited). */
  maxFieldSectionSize: VarInt | null
  qpackBlockedStreams: VarInt
  enableConnectProtocol: boolean
  h3Datagram: boolean
  h3DatagramDraft04: boolean
  enableWebTransport: boolean
  /** SETTINGS_WEBTRANSPORT_MAX_SESSIONS (draft-07 codepoint), `null` when absent. */
  webTransportMaxSessionsDraft07: VarInt | null
}

/** Reads the known settings, applying RFC defaults for absent ones. */
export function readKnownSettings(settings: Settings): KnownSettings {
  if (typeof settings !== 'object' || settings === null || typeof (settings as { get?: unknown }).get !== 'function') {
    throw new StoqInvalidArgumentError('settings', `expected the Map of decodeSettings(), got ${show(settings)}`)
  }
  const flag = (id: number): boolean => settings.get(id) === 1
  return {
    qpackMaxTableCapacity: settings.get(SETTINGS_QPACK_MAX_TABLE_CAPACITY) ?? 0,
    maxFieldSectionSize: settings.get(SETTINGS_MAX_FIELD_SECTION_SIZE) ?? null,
    qpackBlockedStreams: settings.get(SETTINGS_QPACK_BLOCKED_STREAMS) ?? 0,
    enableConnectProtocol: flag(SETTINGS_ENABLE_CONNECT_PROTOCOL),
    h3Datagram: flag(SETTINGS_H3_DATAGRAM),
    h3DatagramDraft04: flag(SETTINGS_H3_DATAGRAM_DRAFT04),
    enableWebTransport: flag(SETTINGS_ENABLE_WEBTRANSPORT),
    webTransportMaxSessionsDraft07: settings.get(SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT07) ?? null,
  }
}

/** What the peer's SETTINGS say about WebTransport. */
export interface PeerWebTransportSupport {
  /** SETTINGS_ENABLE_WEBTRANSPORT = 1: the peer speaks draft-02. */
  draft02: boolean
  /** SETTINGS_WEBTRANSPORT_MAX_SESSIONS (draft-07 codepoint) > 0. */
  draft07: boolean
  /** Which HTTP/3 datagram flavour the peer offers: RFC 9297 wins over draft-04. */
  datagrams: 'rfc9297' | 'draft04' | null
  /** SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 9220). */
  extendedConnect: boolean
}

/** Summarises the WebTransport-related settings a peer sent. */
export function peerWebTransportSupport(settings: Settings): PeerWebTransportSupport {
  const known = readKnownSettings(settings)
  const maxSessions = known.webTransportMaxSessionsDraft07
  return {
    draft02: known.enableWebTransport,
    draft07: maxSessions !== null && maxSessions !== 0,
    datagrams: known.h3Datagram ? 'rfc9297' : known.h3DatagramDraft04 ? 'draft04' : null,
    extendedConnect: known.enableConnectProtocol,
  }
}

/**
 * The SETTINGS a server sends to serve WebTransport draft-02 to Chromium with
 * QPACK limited to the static table:
 *
 * - QPACK_MAX_TABLE_CAPACITY 0 and QPACK_BLOCKED_STREAMS 0: no dynamic table,
 *   so the peer's encoder must use the static table and literals only;
 * - ENABLE_CONNECT_PROTOCOL 1 (RFC 9220);
 * - H3_DATAGRAM 1 (RFC 9297) and H3_DATAGRAM_DRAFT04 1 (what Chromium also
 *   offers; quiche prefers the RFC one when both are present);
 * - ENABLE_WEBTRANSPORT 1 (draft-02; Chromium requires it).
 *
 * It does not offer draft-07 (SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT07):
 * a Chromium with draft-07 enabled would pick it over draft-02.
 * `maxFieldSectionSize` adds SETTINGS_MAX_FIELD_SECTION_SIZE when given.
 */
export function webTransportServerSettings(options: { maxFieldSectionSize?: number } = {}): Array<[number, number]> {
  optionsArg('options', options, ['maxFieldSectionSize'])
  if (options.maxFieldSectionSize !== undefined) intArg('maxFieldSectionSize', options.maxFieldSectionSize, 0, Number.MAX_SAFE_INTEGER)
  const settings: Array<[number, number]> = [
    [SETTINGS_QPACK_MAX_TABLE_CAPACITY, 0],
    [SETTINGS_QPACK_BLOCKED_STREAMS, 0],
    [SETTINGS_ENABLE_CONNECT_PROTOCOL, 1],
    [SETTINGS_H3_DATAGRAM, 1],
    [SETTINGS_H3_DATAGRAM_DRAFT04, 1],
    [SETTINGS_ENABLE_WEBTRANSPORT, 1],
  ]
  if (options.maxFieldSectionSize !== undefined) {
    settings.push([SETTINGS_MAX_FIELD_SECTION_SIZE, options.maxFieldSectionSize])
  }
  return settings
}
