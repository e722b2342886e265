/**
 * HTTP/3 message validation (RFC 9114 §4.2, §4.3) for decoded field
 * sections, with extended CONNECT (RFC 9220) and the WebTransport draft-02
 * request Chromium sends:
 *
 *   :method CONNECT, :protocol webtransport, :scheme https, :authority, :path,
 *   sec-webtransport-http3-draft02: 1, origin: …
 *
 * A malformed message is a stream error of type H3_MESSAGE_ERROR
 * (RFC 9114 §4.1.2): these helpers throw `StoqH3Error` with that code.
 */

import { StoqInvalidArgumentError } from '@stoq/interface'
import { intArg, iterableArg, optionsArg, show, stringArg } from './args.js'
import { H3_MESSAGE_ERROR, StoqH3Error } from './errors.js'
import type { FieldLine } from './qpack/field-section.js'

/** Request header `sec-webtransport-http3-draft02` (draft-02 §3.2), value "1". */
export const WEBTRANSPORT_DRAFT02_REQUEST_HEADER = 'sec-webtransport-http3-draft02'
/** Response header naming the draft the server picked, value "draft02". */
export const WEBTRANSPORT_DRAFT_RESPONSE_HEADER = 'sec-webtransport-http3-draft'
/** The `:protocol` of a WebTransport extended CONNECT. */
export const WEBTRANSPORT_PROTOCOL = 'webtransport'

const REQUEST_PSEUDO = new Set([':method', ':scheme', ':authority', ':path', ':protocol'])
/** Connection-specific fields, forbidden in HTTP/3 (RFC 9114 §4.2). */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'])

function malformed(message: string): StoqH3Error {
  return new StoqH3Error(H3_MESSAGE_ERROR, `malformed message: ${message}`)
}

// tchar (RFC 9110 §5.6.2) without uppercase letters.
const NAME_CHAR = (() => {
  const ok = new Uint8Array(128)
  for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") ok[c.charCodeAt(0)] = 1
  return ok
})()

function checkName(name: string): void {
  if (name.length === 0) throw malformed('empty field name')
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c >= 0x41 && c <= 0x5a) throw malformed(`uppercase character in field name ${JSON.stringify(name)}`)
    if (c >= 128 || NAME_CHAR[c] !== 1) throw malformed(`invalid character in field name ${JSON.stringify(name)}`)
  }
}

function checkValue(name: string, value: string): void {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c === 0x00 || c === 0x0a || c === 0x0d) {
      throw malformed(`NUL, CR or LF in the value of ${JSON.stringify(name)}`)
    }
  }
}

/** Splits pseudo-header fields (which must all come first) from regular fields. */
function splitFields(fields: Iterable<readonly [string, string]>, allowed: ReadonlySet<string>): { pseudo: Map<string, string>; regular: FieldLine[] } {
  iterableArg('fields', fields)
  const pseudo = new Map<string, string>()
  const regular: FieldLine[] = []
  for (const field of fields) {
    iterableArg('fields', field)
    const [name, value] = field
    if (typeof name !== 'string' || typeof value !== 'string') throw malformed('field name and value must be strings')
    if (name.startsWith(':')) {
      if (regular.length > 0) throw malformed(`pseudo-header ${name} after a regular field`)
      if (!allowed.has(name)) throw malformed(`pseudo-header ${name} is not allowed here`)
      if (pseudo.has(name)) throw malformed(`duplicate pseudo-header ${name}`)
      checkValue(name, value)
      pseudo.set(name, value)
      continue
    }
    checkName(name)
    checkValue(name, value)
    if (CONNECTION_SPECIFIC.has(name)) throw malformed(`connection-specific field ${name}`)
    if (name === 'te' && value !== 'trailers') throw malformed('te other than "trailers"')
    regular.push([name, value])
  }
  return { pseudo, regular }
}

/** A validated request's control data and fields. */
export interface RequestHead {
  method: string
  scheme: string | undefined
  authority: string | undefined
  path: string | undefined
  /** `:protocol` of an extended CONNECT (RFC 9220). */
  protocol: string | undefined
  /** Regular (non-pseudo) fields, in order. */
  fields: FieldLine[]
}

export interface ValidateRequestOptions {
  /** Accept `:protocol` (extended CONNECT, RFC 9220). Default true; set false unless you sent SETTINGS_ENABLE_CONNECT_PROTOCOL = 1. */
  allowExtendedConnect?: boolean
}

/**
 * Validates a decoded request field section (RFC 9114 §4.2, §4.3.1, §4.4;
 * RFC 9220 §3): lowercase token names, pseudo-headers first, known and not
 * repeated; no connection-specific fields; no NUL/CR/LF in values; the
 * pseudo-headers each method needs:
 *
 * - CONNECT: `:authority`, and neither `:scheme` nor `:path`;
 * - extended CONNECT (`:protocol` present): `:method CONNECT`, `:scheme`,
 *   `:authority` and `:path`;
 * - any other method: `:scheme` and a non-empty `:path`, plus `:authority` or
 *   `host` for http/https.
 *
 * Throws `StoqH3Error` H3_MESSAGE_ERROR when the request is malformed.
 */
export function validateRequestHeaders(fields: Iterable<readonly [string, string]>, options: ValidateRequestOptions = {}): RequestHead {
  optionsArg('options', options, ['allowExtendedConnect'])
  if (options.allowExtendedConnect !== undefined && typeof options.allowExtendedConnect !== 'boolean') {
    throw new StoqInvalidArgumentError('allowExtendedConnect', `expected a boolean, got ${show(options.allowExtendedConnect)}`)
  }
  const { pseudo, regular } = splitFields(fields, REQUEST_PSEUDO)
  const method = pseudo.get(':method')
  const scheme = pseudo.get(':scheme')
  const authority = pseudo.get(':authority')
  const path = pseudo.get(':path')
  const protocol = pseudo.get(':protocol')
  if (method === undefined || method === '') throw malformed('missing :method')
  if (authority?.includes('@')) throw malformed(':authority must not contain userinfo')

  if (protocol !== undefined) {
    if (!(options.allowExtendedConnect ?? true)) throw malformed(':protocol without extended CONNECT support')
    if (method !== 'CONNECT') throw malformed(`:protocol with :method ${method} (only CONNECT)`)
    if (protocol === '') throw malformed('empty :protocol')
    if (scheme === undefined || scheme === '') throw malformed('extended CONNECT without :scheme')
    if (path === undefined || path === '') throw malformed('extended CONNECT without :path')
    if (authority === undefined || authority === '') throw malformed('extended CONNECT without :authority')
  } else if (method === 'CONNECT') {
    if (scheme !== undefined || path !== undefined) throw malformed('CONNECT with :scheme or :path')
    if (authority === undefined || authority === '') throw malformed('CONNECT without :authority')
  } else {
    if (scheme === undefined || scheme === '') throw malformed('missing :scheme')
    if (path === undefined || path === '') throw malformed('missing or empty :path')
    if ((scheme === 'http' || scheme === 'https') && (authority === undefined || authority === '')) {
      if (!regular.some(([name, value]) => name === 'host' && value !== '')) {
        throw malformed(`${scheme} request without :authority or host`)
      }
    }
  }
  return { method, scheme, authority, path, protocol, fields: regular }
}

/** A validated WebTransport draft-02 session request. */
export interface WebTransportConnectRequest extends RequestHead {
  method: 'CONNECT'
  protocol: 'webtransport'
  scheme: 'https'
  authority: string
  path: string
  /** The `origin` field, when present (browsers always send it). */
  origin: string | undefined
  /** True when `sec-webtransport-http3-draft02: 1` is present (Chromium sends it). */
  draft02: boolean
}

/** True when a validated request is a WebTransport extended CONNECT. */
export function isWebTransportConnect(head: RequestHead): boolean {
  optionsArg('head', head)
  return head.method === 'CONNECT' && head.protocol === WEBTRANSPORT_PROTOCOL
}

/**
 * Validates the extended CONNECT that opens a WebTransport session:
 * `validateRequestHeaders` plus `:protocol webtransport` and `:scheme https`.
 * Throws `StoqH3Error` H3_MESSAGE_ERROR otherwise. (A server may prefer to
 * answer a well-formed request for another protocol with a 4xx/501 instead:
 * use `validateRequestHeaders` + `isWebTransportConnect` for that.)
 */
export function validateWebTransportConnect(fields: Iterable<readonly [string, string]>): WebTransportConnectRequest {
  const head = validateRequestHeaders(fields, { allowExtendedConnect: true })
  if (head.method !== 'CONNECT' || head.protocol === undefined) throw malformed('not an extended CONNECT')
  if (head.protocol !== WEBTRANSPORT_PROTOCOL) throw malformed(`:protocol is ${JSON.stringify(head.protocol)}, not webtransport`)
  if (head.scheme !== 'https') throw malformed(`WebTransport requires :scheme https (got ${JSON.stringify(head.scheme)})`)
  let origin: string | undefined
  let draft02 = false
  for (const [name, value] of head.fields) {
    if (name === 'origin' && origin === undefined) origin = value
    else if (name === WEBTRANSPORT_DRAFT02_REQUEST_HEADER && value === '1') draft02 = true
  }
  return {
    ...head,
    method: 'CONNECT',
    protocol: 'webtransport',
    scheme: 'https',
    authority: head.authority!,
    path: head.path!,
    origin,
    draft02,
  }
}

/** A validated response's status and fields. */
export interface ResponseHead {
  status: number
  fields: FieldLine[]
}

/**
 * Validates a decoded response field section: exactly one `:status` with three
 * digits, no other pseudo-header, the same field rules as requests. Throws
 * `StoqH3Error` H3_MESSAGE_ERROR when malformed.
 */
export function validateResponseHeaders(fields: Iterable<readonly [string, string]>): ResponseHead {
  const { pseudo, regular } = splitFields(fields, new Set([':status']))
  const status = pseudo.get(':status')
  if (status === undefined) throw malformed('missing :status')
  if (!/^[1-9][0-9]{2}$/.test(status)) throw malformed(`:status ${JSON.stringify(status)} is not a 3-digit code`)
  return { status: Number(status), fields: regular }
}

/**
 * Response fields accepting a WebTransport draft-02 session: `:status`
 * (default 200) and `sec-webtransport-http3-draft: draft02`, then `extra`.
 */
export function webTransportResponseFields(status = 200, extra: Iterable<readonly [string, string]> = []): FieldLine[] {
  intArg('status', status, 100, 999)
  iterableArg('extra', extra)
  const fields: FieldLine[] = [
    [':status', String(status)],
    [WEBTRANSPORT_DRAFT_RESPONSE_HEADER, 'draft02'],
  ]
  for (const field of extra) {
    iterableArg('extra', field)
    const [name, value] = field
    stringArg('name', name)
    stringArg('value', value)
    fields.push([name, value])
  }
  return fields
}
