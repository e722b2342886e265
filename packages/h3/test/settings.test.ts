import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import {
  H3_FRAME_ERROR,
  H3_SETTINGS_ERROR,
  SETTINGS_ENABLE_CONNECT_PROTOCOL,
  SETTINGS_ENABLE_WEBTRANSPORT,
  SETTINGS_H3_DATAGRAM,
  SETTINGS_H3_DATAGRAM_DRAFT04,
  SETTINGS_MAX_FIELD_SECTION_SIZE,
  SETTINGS_QPACK_BLOCKED_STREAMS,
  SETTINGS_QPACK_MAX_TABLE_CAPACITY,
  SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT07,
  SETTINGS_WT_ENABLED,
  SETTINGS_WT_MAX_SESSIONS,
  decodeSettings,
  encodeSettings,
  encodeVarint,
  peerWebTransportSupport,
  readKnownSettings,
  reservedCodepoint,
  webTransportServerSettings,
} from '../src/index.js'
import { concat, expectH3Error, hex } from './helpers.js'

describe('SETTINGS', () => {
  it('has the codepoints of RFC 9114/9204/9220/9297 and the WebTransport drafts', () => {
    expect(SETTINGS_QPACK_MAX_TABLE_CAPACITY).toBe(0x01)
    expect(SETTINGS_MAX_FIELD_SECTION_SIZE).toBe(0x06)
    expect(SETTINGS_QPACK_BLOCKED_STREAMS).toBe(0x07)
    expect(SETTINGS_ENABLE_CONNECT_PROTOCOL).toBe(0x08)
    expect(SETTINGS_H3_DATAGRAM).toBe(0x33)
    expect(SETTINGS_H3_DATAGRAM_DRAFT04).toBe(0xffd277)
    expect(SETTINGS_ENABLE_WEBTRANSPORT).toBe(0x2b603742)
    expect(SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT07).toBe(0xc671706a)
    expect(SETTINGS_WT_MAX_SESSIONS).toBe(0x14e9cd29)
    expect(SETTINGS_WT_ENABLED).toBe(0x2c7cf000)
  })

  it('round-trips, keeping order and unknown / grease / 62-bit identifiers', () => {
    const entries: Array<[number | bigint, number | bigint]> = [
      [SETTINGS_QPACK_MAX_TABLE_CAPACITY, 0],
      [reservedCodepoint(12345), 7],
      [SETTINGS_ENABLE_WEBTRANSPORT, 1],
      [0x00, 42], // 0x00 is not an HTTP/2 setting: kept
      [2n ** 62n - 1n, 2n ** 62n - 1n],
      [0x4d44, 2n ** 53n],
    ]
    const decoded = decodeSettings(encodeSettings(entries))
    expect([...decoded]).toEqual(entries)
    expect(decoded.get(SETTINGS_ENABLE_WEBTRANSPORT)).toBe(1)
    expect(decodeSettings(new Uint8Array(0)).size).toBe(0)
  })

  it('decodes what Chromium sends (nghttp3 issue #424 capture)', () => {
    const payload = encodeSettings([
      [0x06, 16384],
      [0x07, 100],
      [0x33, 1],
      [0xffd277, 1],
      [0x2b603742, 1],
    ])
    const s = decodeSettings(payload)
    expect(readKnownSettings(s)).toEqual({
      qpackMaxTableCapacity: 0,
      maxFieldSectionSize: 16384,
      qpackBlockedStreams: 100,
      enableConnectProtocol: false,
      h3Datagram: true,
      h3DatagramDraft04: true,
      enableWebTransport: true,
      webTransportMaxSessionsDraft07: null,
    })
    expect(peerWebTransportSupport(s)).toEqual({ draft02: true, draft07: false, datagrams: 'rfc9297', extendedConnect: false })
    expect(
      peerWebTransportSupport(
        decodeSettings(
          encodeSettings([
            [0xffd277, 1],
            [0xc671706a, 16],
          ]),
        ),
      ),
    ).toEqual({
      draft02: false,
      draft07: true,
      datagrams: 'draft04',
      extendedConnect: false,
    })
  })

  it('builds the draft-02 server SETTINGS for Chromium', () => {
    const s = decodeSettings(encodeSettings(webTransportServerSettings({ maxFieldSectionSize: 16384 })))
    expect(peerWebTransportSupport(s)).toEqual({ draft02: true, draft07: false, datagrams: 'rfc9297', extendedConnect: true })
    expect(readKnownSettings(s).qpackMaxTableCapacity).toBe(0)
    expect(s.get(SETTINGS_H3_DATAGRAM_DRAFT04)).toBe(1)
    expect(s.get(SETTINGS_MAX_FIELD_SECTION_SIZE)).toBe(16384)
    expect(s.has(SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT07)).toBe(false)
  })

  it('refuses duplicate identifiers with H3_SETTINGS_ERROR', () => {
    expectH3Error(() => decodeSettings(hex('3301 0801 3301')), H3_SETTINGS_ERROR)
    // Same identifier, different encodings.
    expectH3Error(() => decodeSettings(concat(hex('0800'), encodeVarint(8, 8), hex('01'))), H3_SETTINGS_ERROR)
    // Duplicate unknown identifier.
    expectH3Error(() => decodeSettings(hex('2100 2100')), H3_SETTINGS_ERROR)
  })

  it('refuses HTTP/2 setting identifiers 0x02-0x05 with H3_SETTINGS_ERROR', () => {
    for (const id of [0x02, 0x03, 0x04, 0x05]) {
      expectH3Error(() => decodeSettings(concat(hex('3301'), encodeVarint(id), hex('00'))), H3_SETTINGS_ERROR)
      expectH3Error(() => decodeSettings(concat(encodeVarint(id, 4), hex('01'))), H3_SETTINGS_ERROR)
    }
  })

  it('refuses non-boolean values of boolean settings unless told not to check', () => {
    for (const id of [0x08, 0x33, 0xffd277, 0x2b603742]) {
      const bytes = concat(encodeVarint(id), encodeVarint(2))
      expectH3Error(() => decodeSettings(bytes), H3_SETTINGS_ERROR)
      expect(decodeSettings(bytes, { checkValues: false }).get(id)).toBe(2)
    }
  })

  it('refuses truncated payloads with H3_FRAME_ERROR', () => {
    expectH3Error(() => decodeSettings(hex('33')), H3_FRAME_ERROR)
    expectH3Error(() => decodeSettings(hex('3301 40')), H3_FRAME_ERROR)
    expectH3Error(() => decodeSettings(hex('3301 80ffd2')), H3_FRAME_ERROR)
    expectH3Error(() => decodeSettings(hex('3301 80ffd277 40')), H3_FRAME_ERROR)
  })

  it('refuses to encode what it would refuse to decode', () => {
    for (const bad of [
      [
        [0x33, 1],
        [0x33, 1],
      ],
      [[0x04, 1]],
      [[0x33, 2]],
      [[-1, 0]],
    ] as Array<Array<[number, number]>>) {
      try {
        encodeSettings(bad)
        expect.unreachable()
      } catch (err) {
        expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
      }
    }
  })
})
