import net from 'node:net'
import { isOptions, show, timeoutArg } from './args.js'
import type { FieldLine } from '@stoq/h3'
import { StoqInvalidArgumentError, checkOptions, optionKeys, signalOption, throwIfAborted } from '@stoq/interface'
import {
  createEndpoint,
  type ConnectOptions,
  type Endpoint,
  type EndpointOptions,
  type EngineChoice,
  type PemSource,
  type QuicConnection,
} from '@stoq/transport-core'
import type { TransportParameters } from '@stoq/interface'
import { WebTransportConnection, resolveLimits, type WebTransportLimits } from './connection.js'
import { H3_ALPN } from './server.js'
import type { WebTransportSession } from './session.js'
import { ignoreRejection } from './ignore.js'

/** A certificate hash as browsers take it in `serverCertificateHashes`. */
export interface WebTransportHash {
  algorithm: 'sha-256'
  /** The 32-byte SHA-256 of the certificate DER (or its hex). */
  value: Uint8Array | ArrayBuffer | ArrayBufferView | string
}

export interface ConnectWebTransportOptions {
  /** Accept the server when its leaf certificate hashes to one of these (like the browser option; no CA check). */
  serverCertificateHashes?: WebTransportHash[]
  /** CA certificates (PEM) that must have issued the server certificate. */
  ca?: PemSource
  /** SHA-256 pins (hex), as in STOQ `connect`. */
  pin?: string | string[]
  /** Skip certificate verification (tests only). */
  insecure?: boolean
  /** SNI / certificate name. Default: the URL host. */
  serverName?: string
  /** `origin` field sent with the CONNECT. */
  origin?: string
  /** Extra request fields (lowercase names). */
  headers?: FieldLine[]
  /** Use this endpoint instead of creating one (it is not closed with the client). */
  endpoint?: Endpoint
  /** Engine of the endpoint created for the client. */
  engine?: EngineChoice
  /** Transport parameters of the endpoint created for the client. */
  transport?: Partial<TransportParameters>
  /** QUIC handshake timeout. Default 10 s. */
  handshakeTimeoutMs?: number
  /** Time to wait for the server's answer to the CONNECT. Default 10 s. */
  timeoutMs?: number
  limits?: Partial<WebTransportLimits>
  /**
   * Abort the connect (and, for `connectWebTransport`, the session's CONNECT): rejects with
   * STOQ_ERR_ABORTED, the half-made connection and the client's own endpoint are closed.
   * Not kept for later `openSession` calls (give them their own).
   */
  signal?: AbortSignal
}

/** Every key `connectWebTransport` and `WebTransportClient.connect` accept. */
const CONNECT_OPTION_KEYS = optionKeys<ConnectWebTransportOptions>({
  serverCertificateHashes: true,
  ca: true,
  pin: true,
  insecure: true,
  serverName: true,
  origin: true,
  headers: true,
  endpoint: true,
  engine: true,
  transport: true,
  handshakeTimeoutMs: true,
  timeoutMs: true,
  limits: true,
  signal: true,
})

/** Options of `WebTransportClient.openSession`. */
export interface OpenSessionOptions {
  /** `origin` field sent with the CONNECT. Default: the client's. */
  origin?: string
  /** Extra request fields (lowercase names). Default: the client's. */
  headers?: FieldLine[]
  /** Time to wait for the server's answer. Default: the client's `timeoutMs`, else 10 s. */
  timeoutMs?: number
  /** Abort the wait: rejects with STOQ_ERR_ABORTED and cancels the CONNECT stream. */
  signal?: AbortSignal
}

const OPEN_SESSION_KEYS = optionKeys<OpenSessionOptions>({ origin: true, headers: true, timeoutMs: true, signal: true })

interface ParsedUrl {
  host: string
  port: number
  authority: string
  path: string
}

function parseUrl(url: string | URL): ParsedUrl {
  let u: URL
  try {
    u = typeof url === 'string' ? new URL(url) : url
  } catch {
    throw new StoqInvalidArgumentError('url', `expected an https:// URL, got ${show(url)}`)
  }
  if (!(u instanceof URL) || u.protocol !== 'https:') {
    throw new StoqInvalidArgumentError('url', `WebTransport needs an https:// URL, got ${u instanceof URL ? show(u.href) : show(url)}`)
  }
  if (u.username !== '' || u.password !== '') throw new StoqInvalidArgumentError('url', 'must not carry credentials')
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
  return { host, port: u.port === '' ? 443 : Number(u.port), authority: u.host, path: `${u.pathname || '/'}${u.search}` }
}

function hashToHex(h: unknown, i: number): string {
  const where = `serverCertificateHashes[${i}]`
  if (typeof h !== 'object' || h === null) throw new StoqInvalidArgumentError(where, 'expected { algorithm: "sha-256", value }')
  const { algorithm, value } = h as WebTransportHash
  if (algorithm !== 'sha-256') throw new StoqInvalidArgumentError(`${where}.algorithm`, `only "sha-256" is supported, got ${show(algorithm)}`)
  let bytes: Uint8Array
  if (typeof value === 'string') {
    const hex = value.replace(/:/g, '').toLowerCase()
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new StoqInvalidArgumentError(`${where}.value`, 'expected 64 hex digits')
    return hex
  } else if (value instanceof ArrayBuffer) bytes = new Uint8Array(value)
  else if (ArrayBuffer.isView(value)) bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
  else throw new StoqInvalidArgumentError(`${where}.value`, 'expected bytes or hex')
  if (bytes.length !== 32) throw new StoqInvalidArgumentError(`${where}.value`, `a SHA-256 is 32 bytes, got ${bytes.length}`)
  return Buffer.from(bytes).toString('hex')
}

/**
 * An HTTP/3 client connection for WebTransport: one QUIC connection that can
 * carry several sessions (`openSession`).
 */
/** The session options shared by `connect` and `openSession`: `origin`, `headers`, `timeoutMs`. */
function checkSessionOptions(options: { origin?: unknown; headers?: unknown; timeoutMs?: unknown; signal?: unknown }): void {
  signalOption('signal', options.signal)
  if (options.origin !== undefined && typeof options.origin !== 'string') {
    throw new StoqInvalidArgumentError('origin', `expected a string, got ${show(options.origin)}`)
  }
  if (options.headers !== undefined) {
    if (!Array.isArray(options.headers)) throw new StoqInvalidArgumentError('headers', `expected [name, value] string pairs, got ${show(options.headers)}`)
    for (const f of options.headers) {
      if (!Array.isArray(f) || typeof f[0] !== 'string' || typeof f[1] !== 'string')
        throw new StoqInvalidArgumentError('headers', 'expected [name, value] string pairs')
    }
  }
  if (options.timeoutMs !== undefined) timeoutArg('timeoutMs', options.timeoutMs)
}

export class WebTransportClient {
  readonly connection: WebTransportConnection
  readonly endpoint: Endpoint
  readonly #owned: boolean
  readonly #url: ParsedUrl
  readonly #options: ConnectWebTransportOptions
  #closing: Promise<void> | null = null

  private constructor(connection: WebTransportConnection, endpoint: Endpoint, owned: boolean, url: ParsedUrl, options: ConnectWebTransportOptions) {
    this.connection = connection
    this.endpoint = endpoint
    this.#owned = owned
    this.#url = url
    this.#options = options
  }

  /** Connect to the server of `url` (https://host:port/…), without opening a session yet. */
  static async connect(url: string | URL, options: ConnectWebTransportOptions = {}): Promise<WebTransportClient> {
    checkOptions(options, CONNECT_OPTION_KEYS)
    const target = parseUrl(url)
    // Checked before anything is bound or sent.
    checkSessionOptions(options)
    if (
      options.endpoint !== undefined &&
      (!isOptions(options.endpoint as unknown) ||
        typeof (options.endpoint as Partial<Endpoint>).connect !== 'function' ||
        typeof (options.endpoint as Partial<Endpoint>).close !== 'function')
    ) {
      throw new StoqInvalidArgumentError('endpoint', `expected a STOQ Endpoint, got ${show(options.endpoint)}`)
    }
    if (options.pin !== undefined && typeof options.pin !== 'string' && !Array.isArray(options.pin)) {
      throw new StoqInvalidArgumentError('pin', `expected a SHA-256 fingerprint or an array of them, got ${show(options.pin)}`)
    }
    const limits = resolveLimits(options.limits)
    const pins: string[] = []
    if (options.serverCertificateHashes !== undefined) {
      if (!Array.isArray(options.serverCertificateHashes) || options.serverCertificateHashes.length === 0) {
        throw new StoqInvalidArgumentError('serverCertificateHashes', 'expected a non-empty array')
      }
      options.serverCertificateHashes.forEach((h, i) => {
        pins.push(hashToHex(h, i))
      })
    }
    if (options.pin !== undefined) pins.push(...(Array.isArray(options.pin) ? options.pin : [options.pin]))
    const connectOptions: ConnectOptions = {
      host: target.host,
      port: target.port,
      alpn: [H3_ALPN],
      ...(options.serverName !== undefined ? { serverName: options.serverName } : {}),
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
      ...(pins.length > 0 ? { pin: pins } : {}),
      ...(options.insecure !== undefined ? { insecure: options.insecure } : {}),
      ...(options.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: options.handshakeTimeoutMs } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    }
    throwIfAborted(options.signal, 'connect')
    let endpoint = options.endpoint
    const owned = endpoint === undefined
    if (endpoint === undefined) {
      const local: Partial<EndpointOptions> = { host: net.isIPv4(target.host) ? '0.0.0.0' : '::' }
      if (options.engine !== undefined) local.engine = options.engine
      if (options.transport !== undefined) local.transport = options.transport
      endpoint = await createEndpoint(local)
    }
    let quic: QuicConnection
    try {
      quic = await endpoint.connect(connectOptions)
    } catch (err) {
      if (owned) await endpoint.close().catch(ignoreRejection) // the connect error is what the caller gets; failing to close our own endpoint adds nothing
      throw err
    }
    const connection = new WebTransportConnection(quic, 'client', limits)
    const client = new WebTransportClient(connection, endpoint, owned, target, options)
    if (owned) quic.closed.then(() => client.close()).catch(ignoreRejection) // the connection has closed: a failed close has no one left to tell
    return client
  }

  /**
   * Open a session on this connection: `path` (default: the URL's) with an
   * extended CONNECT. Rejects with `StoqWebTransportError` when refused.
   */
  openSession(path: string = this.#url.path, options: OpenSessionOptions = {}): Promise<WebTransportSession> {
    if (typeof path !== 'string' || !path.startsWith('/')) throw new StoqInvalidArgumentError('path', 'expected a path starting with "/"')
    checkOptions(options, OPEN_SESSION_KEYS)
    checkSessionOptions(options)
    const extra: FieldLine[] = []
    const origin = options.origin ?? this.#options.origin
    if (origin !== undefined) extra.push(['origin', origin])
    for (const f of options.headers ?? this.#options.headers ?? []) {
      if (!Array.isArray(f) || typeof f[0] !== 'string' || typeof f[1] !== 'string')
        throw new StoqInvalidArgumentError('headers', 'expected [name, value] string pairs')
      extra.push([f[0], f[1]])
    }
    const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs ?? 10_000
    return this.connection.openSession(this.#url.authority, path, extra, timeoutMs, options.signal)
  }

  /** Close the connection (its sessions end), and the endpoint when the client created it. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.connection.close(0x100, '')
      if (this.#owned) await this.endpoint.close().catch(ignoreRejection) // the connection is closed; failing to close our own endpoint leaves nothing to recover
    })()
    return this.#closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/**
 * Open a WebTransport session to `url` on a connection of its own; the
 * connection (and its endpoint) close once the session has ended.
 */
export async function connectWebTransport(url: string | URL, options: ConnectWebTransportOptions = {}): Promise<WebTransportSession> {
  const client = await WebTransportClient.connect(url, options)
  let session: WebTransportSession
  try {
    session = await client.openSession(undefined, options.signal !== undefined ? { signal: options.signal } : {})
  } catch (err) {
    await client.close()
    throw err
  }
  session.closed
    .then(() => session.waitConnectEnd(2000))
    .then(() => client.close())
    .catch(ignoreRejection) // the session has ended: a failed close has no one left to tell
  return session
}
