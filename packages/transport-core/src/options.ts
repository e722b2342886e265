import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import {
  StoqInvalidArgumentError,
  type CongestionControl,
  type KeyExchangeGroup,
  type TransportParameters,
  booleanOption,
  checkOptions,
  describeValue,
  integerOption,
  optionKeys,
  signalOption,
} from '@stoq/interface'
import {
  DEFAULT_ALPN,
  DEFAULT_CLOSE_TIMEOUT_MS,
  DEFAULT_POOL_MAX_BUFFERS,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_HOST,
  DEFAULT_SESSION_CACHE_SIZE,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_SOCKET_BUFFER_SIZE,
  DEFAULT_TRANSPORT,
} from './defaults.js'
import { normaliseFingerprint } from './pem.js'
import { resolveLimits, type EndpointLimits } from './limits.js'

/** PEM text, PEM bytes, or `{ file }` to read PEM from a file. */
export type PemSource = string | Uint8Array | { file: string }

export interface ServerOptions {
  /** Certificate chain (PEM), leaf first. */
  cert: PemSource
  /** Private key (PEM). */
  key: PemSource
  /** ALPN protocols accepted, in preference order. Default `['stoq/1']`. */
  alpn?: string[]
  /** Validate client addresses with a Retry before keeping state. Default true. */
  retry?: boolean
  /** Concurrent connections accepted. Default 10 000. */
  maxConnections?: number
  /** Answer packets of unknown connections with a stateless reset. Default true. */
  statelessReset?: boolean
  /**
   * 32-byte key for Retry and stateless-reset tokens. Give a restarted server
   * the same key so that its old clients learn at once that their connections
   * are gone. Default: random per endpoint.
   */
  secret?: Uint8Array
  /**
   * Accept 0-RTT: a client resuming a session may send stream data in its first flight,
   * and the endpoint emits `connection` for it at once, before the handshake completes
   * (`conn.established` false until `conn.handshake` resolves). Such data can be replayed
   * by an attacker (RFC 8446 §8, RFC 9001 §9.2): each session ticket resumes once at a
   * server process, but a copy raced ahead of the client, or sent to another server
   * process of the same name, is not caught. Act on data that arrived before
   * `conn.handshake` resolved only when doing it twice is harmless, or wait for it.
   * Default false: clients resume (no certificate in the handshake) without 0-RTT.
   * The quinn engine only.
   */
  earlyData?: boolean
}

export interface EndpointOptions {
  /** IP literal to bind. Default `::` (dual-stack). */
  host: string
  /** UDP port; 0 picks one. Default 0. */
  port: number
  /** Only IPv6 on an IPv6 socket (no IPv4-mapped peers). Default false. */
  ipv6Only: boolean
  /** Accept connections with this identity. */
  server?: ServerOptions
  /** QUIC transport parameters for every connection of this endpoint. */
  transport: Partial<TransportParameters>
  /** Requested kernel socket buffer sizes in bytes (default 4 MiB, capped by the kernel). */
  socketBufferSize?: number
  /** Time `close()` waits for connections to close gracefully. */
  closeTimeoutMs: number
  /**
   * UDP I/O backend. `gro` runs the socket in a worker thread with GRO receive
   * and GSO send (recvmmsg/sendmmsg through koffi); `gso` keeps the socket on
   * the event loop with GSO sends only; `dgram` is Node's plain socket and never
   * uses koffi; `uring` is the gro design with io_uring in the worker (RECVMSG with GRO,
   * SENDMSG with GSO, one io_uring_enter per round), chosen only explicitly: it costs
   * more worker time per received datagram than `gro` here. `auto` (default) takes the
   * first of gro, gso, dgram that this
   * machine supports (each proves itself at bind time). An explicit choice
   * that cannot work fails with STOQ_ERR_UNSUPPORTED. Ignored when a `udp`
   * component is given.
   */
  udpBackend: UdpBackendChoice
  /** Pin the endpoint's network thread (the `gro` backend's worker) to these CPUs. Default: not pinned. */
  cpuAffinity: number[]
  /**
   * QUIC engine. `quinn` is quinn-proto in a native library called once per packet
   * batch (the fast engine); `quiche` is Cloudflare quiche through its napi binding
   * (portable: it ships prebuilt). `auto` (default, or the STOQ_ENGINE environment
   * variable) takes quinn where its library loads, else quiche; `stats().engineChoice`
   * says which and why. An explicit `quinn` that cannot load fails with
   * STOQ_ERR_UNSUPPORTED. Ignored when an `engine` component is given.
   */
  engine: EngineChoice
  /** Most 64 KiB buffers the endpoint's own packet pool may grow to (default 1024). Ignored when a `pool` component is given. */
  poolMaxBuffers: number
  /**
   * Hand packet buffers to the `gro` worker by position instead of copying them into its
   * send ring: the endpoint shares its packet pool with the worker, whose iovecs point into
   * it (the pool's slabs are reserved up front as address space; pages are committed as they
   * are used). Default true; it only applies to the `gro` backend (and `auto` choosing it).
   * Measured against the copy in the same run: 8–11% fewer CPU seconds per GiB at 1350 and
   * 65000 B (benchmark cases `quinn1350grocopy` / `quinnLargegrocopy` turn it off).
   */
  zeroCopySend: boolean
  /**
   * NUMA node for the endpoint's packet memory: every slab of its own pool is bound to that
   * node (libnuma where it loads, else mbind). Default: no placement. Pin the network
   * thread to that node's CPUs with `cpuAffinity`. `stats().numa` says what was placed.
   */
  numaNode?: number
  /**
   * Engine worker threads (multi-core). 0 (default): connections live on this thread.
   * N >= 1: N workers each run a QUIC engine and their own UDP socket on the
   * same port (SO_REUSEPORT, packets steered to the right worker by the first byte of
   * their connection ID); connections, streams and datagrams look exactly the same to
   * the application, their bytes cross through shared memory. `auto`: one worker per
   * two CPUs from 4 CPUs on, where this machine can run them (Linux, koffi), else 0
   * (`stats().engineChoice` says why): each worker is two busy threads, and on 2 CPUs
   * the single thread measured faster. Needs the `gro` or `uring` backend
   * (`auto` picks `gro`); `cpuAffinity` pins worker i to `cpuAffinity[i % length]`.
   */
  workers?: number | 'auto'
  /**
   * Endpoint-wide budgets (streams, buffered bytes, flow-control credit, queued datagrams,
   * work per turn): see `EndpointLimits`. Defaults derive from the heap limit and memory.
   */
  limits?: Partial<EndpointLimits>
  /**
   * Servers whose TLS session tickets the endpoint keeps for the connections it dials, to
   * resume (and, with `earlyData`, send 0-RTT): a server is its name (SNI) under one TLS
   * setup (ALPN, CA, client identity, verification); the least recently used goes first.
   * 0 turns resumption off for dialled connections. Default 256. With engine workers each
   * worker keeps its own (connections go to the least loaded worker, so a reconnect resumes
   * only when it lands on the worker that holds the ticket).
   */
  sessionCacheSize?: number
  /**
   * TLS key exchange groups in preference order, for the connections this endpoint makes
   * and accepts. Default (quinn engine): X25519MLKEM768 (post-quantum hybrid), X25519, P-256,
   * P-384. `stats().keyExchangeGroup` says what a handshake used. See also `postQuantum`.
   */
  keyExchange?: KeyExchangeGroup[]
  /**
   * Shorthand for `keyExchange`: `prefer` (default) offers X25519MLKEM768 first and falls back
   * to classical groups; `require` accepts only X25519MLKEM768 (a classical-only peer fails
   * the handshake with a TLS error); `off` offers classical groups only. Not with `keyExchange`.
   */
  postQuantum?: PostQuantumChoice
}

export type PostQuantumChoice = 'prefer' | 'require' | 'off'

export type UdpBackendChoice = 'auto' | 'gso' | 'gro' | 'uring' | 'dgram'
export type EngineChoice = 'auto' | 'quinn' | 'quiche'

export interface ConnectOptions {
  /** Host name or IP literal. */
  host: string
  port: number
  /** SNI and the name checked in the server certificate. Default: `host`. */
  serverName?: string
  /** ALPN protocols offered. Default `['stoq/1']`. */
  alpn?: string[]
  /** CA certificates (PEM) that must have issued the server certificate. */
  ca?: PemSource
  /** Accept the server only if its leaf certificate's SHA-256 is one of these (hex, colons optional). */
  pin?: string | string[]
  /** Skip certificate verification entirely (tests only). */
  insecure?: boolean
  /** Client certificate and key for servers that ask for one. */
  cert?: PemSource
  key?: PemSource
  /** Fail `connect` when the handshake takes longer. Default 10 000 ms. */
  handshakeTimeoutMs?: number
  /**
   * 0-RTT: when the endpoint holds a session ticket of this server that allows it,
   * `connect` resolves at once, before the handshake, and what the application writes goes
   * in the client's first flight (otherwise it resolves at handshake completion, as
   * without this option). Should the server reject the early data, the engine sends it
   * again after the handshake: nothing to do but `conn.stats().earlyData` says `rejected`.
   * `conn.handshake` resolves when the handshake completed. Needs a server verified by
   * `ca` (or `insecure`): a `pin` is checked after the handshake, too late for data sent
   * before it. Datagrams wait for the handshake (before it `sendDatagram` throws
   * STOQ_ERR_DATAGRAM_UNSUPPORTED). Default false. The quinn engine only (quiche connects as
   * without it).
   */
  earlyData?: boolean
  /** Send a PING after this much idle time, keeping NAT bindings and idle timers alive. 0 disables. */
  keepAliveMs?: number
  /**
   * Abort the connect: `connect` rejects with STOQ_ERR_ABORTED (the signal's reason as `cause`)
   * and the half-made connection is closed. An already-aborted signal rejects at once.
   */
  signal?: AbortSignal
}

export interface ResolvedServerOptions {
  cert: Uint8Array
  key: Uint8Array
  alpn: string[]
  retry: boolean
  maxConnections: number
  statelessReset: boolean
  secret: Uint8Array | undefined
  earlyData: boolean
}

export interface ResolvedEndpointOptions {
  host: string
  port: number
  ipv6Only: boolean
  server: ResolvedServerOptions | null
  transport: TransportParameters
  socketBufferSize: number
  closeTimeoutMs: number
  udpBackend: UdpBackendChoice
  cpuAffinity: number[]
  engine: EngineChoice
  poolMaxBuffers: number
  zeroCopySend: boolean
  numaNode: number | null
  /** Engine workers: 0 (this thread) or 1 and more; `auto` resolved to -1 (decided at bind). */
  workers: number
  limits: EndpointLimits
  sessionCacheSize: number
  /** TLS key exchange groups, or undefined for the engine's default. */
  keyExchange: KeyExchangeGroup[] | undefined
}

export interface ResolvedConnectOptions {
  host: string
  port: number
  serverName: string
  alpn: string[]
  ca: Uint8Array | undefined
  pins: string[]
  insecure: boolean
  identity: { cert: Uint8Array; key: Uint8Array } | undefined
  handshakeTimeoutMs: number
  keepAliveMs: number
  earlyData: boolean
  signal: AbortSignal | undefined
}

/** Every key `createEndpoint` accepts: any other is refused (a typo must not pass silently). */
export const ENDPOINT_OPTION_KEYS = optionKeys<EndpointOptions>({
  host: true,
  port: true,
  ipv6Only: true,
  server: true,
  transport: true,
  socketBufferSize: true,
  closeTimeoutMs: true,
  udpBackend: true,
  cpuAffinity: true,
  engine: true,
  poolMaxBuffers: true,
  zeroCopySend: true,
  numaNode: true,
  workers: true,
  limits: true,
  sessionCacheSize: true,
  keyExchange: true,
  postQuantum: true,
})

/** Every key of `server`. */
export const SERVER_OPTION_KEYS = optionKeys<ServerOptions>({
  cert: true,
  key: true,
  alpn: true,
  retry: true,
  maxConnections: true,
  statelessReset: true,
  secret: true,
  earlyData: true,
})

/** Every transport parameter (`transport` option). */
export const TRANSPORT_OPTION_KEYS = optionKeys<TransportParameters>({
  maxIdleTimeoutMs: true,
  initialMaxData: true,
  initialMaxStreamData: true,
  maxStreamWindow: true,
  maxConnectionWindow: true,
  initialMaxStreamsBidi: true,
  initialMaxStreamsUni: true,
  maxUdpPayloadSize: true,
  mtuDiscovery: true,
  congestionControl: true,
  datagrams: true,
  datagramQueueLength: true,
  pacing: true,
  hystart: true,
})

/** Every key `endpoint.connect` accepts. */
export const CONNECT_OPTION_KEYS = optionKeys<ConnectOptions>({
  host: true,
  port: true,
  serverName: true,
  alpn: true,
  ca: true,
  pin: true,
  insecure: true,
  cert: true,
  key: true,
  handshakeTimeoutMs: true,
  earlyData: true,
  keepAliveMs: true,
  signal: true,
})

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)
}

export const intOption = integerOption

const boolOption = booleanOption

/** A wrong value, described for an error message (the one shared by every package). */
export const describe = describeValue

const PEM_BLOCK = {
  certificate: { re: /-----BEGIN CERTIFICATE-----/, what: 'a "-----BEGIN CERTIFICATE-----" block' },
  key: { re: /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/, what: 'a "-----BEGIN PRIVATE KEY-----" block' },
  any: { re: /-----BEGIN /, what: 'a "-----BEGIN ...-----" block' },
} as const

/**
 * PEM from text, bytes or a file. `kind` says which block must be there: a certificate
 * where one is expected (the quiche binding aborts the process on a chain without
 * one), a private key where a key is expected.
 */
export function readPem(name: string, source: unknown, kind: keyof typeof PEM_BLOCK = 'any'): Uint8Array {
  let bytes: Uint8Array
  // Buffer.alloc, not Buffer.from: PEM (maybe a private key) never lands in Node's shared
  // 8 KiB pool, which util.inspect with showHidden prints through any other pooled Buffer.
  if (typeof source === 'string') {
    bytes = Buffer.alloc(Buffer.byteLength(source, 'utf8'))
    ;(bytes as Buffer).write(source, 'utf8')
  } else if (source instanceof Uint8Array) bytes = source
  else if (isPlainObject(source) && typeof checkOptions(source, ['file'], name).file === 'string') {
    const file = source.file as string
    try {
      bytes = fs.readFileSync(file)
    } catch (err) {
      throw new StoqInvalidArgumentError(name, `cannot read PEM file ${file}: ${(err as Error).message}`)
    }
  } else {
    throw new StoqInvalidArgumentError(name, `expected PEM text, PEM bytes or { file: path }, got ${describe(source)}`)
  }
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (!view.includes('-----BEGIN ')) {
    throw new StoqInvalidArgumentError(name, 'expected PEM data (a "-----BEGIN ...-----" block)')
  }
  // Test the block type in place (latin1 keeps a byte a character; no copy in Node's pool).
  if (!PEM_BLOCK[kind].re.test(view.toString('latin1'))) {
    throw new StoqInvalidArgumentError(name, `expected ${PEM_BLOCK[kind].what}`)
  }
  return bytes
}

const inspectCustom = Symbol.for('nodejs.util.inspect.custom')

/**
 * A private key as the engines take it (a Buffer of PEM bytes), that never prints:
 * `util.inspect` (so console.log of an endpoint or its options) and `JSON.stringify`
 * show only its size. Its own memory (not Node's shared pool, which `showHidden`
 * would print through any other pooled Buffer), never the caller's object.
 */
export function privateKeyBytes(pem: Uint8Array): Uint8Array {
  const bytes = Buffer.alloc(pem.length)
  bytes.set(pem)
  const text = `[private key, ${pem.length} bytes]`
  Object.defineProperty(bytes, inspectCustom, { value: () => text })
  Object.defineProperty(bytes, 'toJSON', { value: () => text })
  return bytes
}

function alpnOption(value: unknown): string[] {
  if (value === undefined) return [...DEFAULT_ALPN]
  if (!Array.isArray(value) || value.length === 0) {
    throw new StoqInvalidArgumentError('alpn', `expected a non-empty array of protocol names, got ${describe(value)}`)
  }
  for (const p of value) {
    if (typeof p !== 'string' || p.length === 0 || Buffer.byteLength(p) > 255) {
      throw new StoqInvalidArgumentError('alpn', `each protocol name must be a string of 1 to 255 bytes, got ${describe(p)}`)
    }
  }
  return [...(value as string[])]
}

function secretOption(value: unknown): Uint8Array | undefined {
  if (value === undefined) return undefined
  if (!(value instanceof Uint8Array) || value.length !== 32) {
    throw new StoqInvalidArgumentError('server.secret', `expected 32 bytes (a Uint8Array), got ${describe(value)}`)
  }
  return Uint8Array.from(value)
}

function cpuListOption(value: unknown): number[] {
  if (value === undefined) return []
  const cpus = os.availableParallelism()
  if (!Array.isArray(value)) throw new StoqInvalidArgumentError('cpuAffinity', `expected an array of CPU numbers, got ${describe(value)}`)
  return value.map((cpu) => intOption('cpuAffinity', cpu, 0, cpus - 1))
}

const KX_GROUPS: KeyExchangeGroup[] = ['X25519MLKEM768', 'X25519', 'P-256', 'P-384']
const POST_QUANTUM: PostQuantumChoice[] = ['prefer', 'require', 'off']

function keyExchangeOption(groups: unknown, postQuantum: unknown): KeyExchangeGroup[] | undefined {
  if (postQuantum !== undefined && !POST_QUANTUM.includes(postQuantum as PostQuantumChoice)) {
    throw new StoqInvalidArgumentError('postQuantum', `expected one of ${POST_QUANTUM.join(', ')}, got ${describe(postQuantum)}`)
  }
  if (groups !== undefined && postQuantum !== undefined) {
    throw new StoqInvalidArgumentError('postQuantum', 'give `keyExchange` or `postQuantum`, not both')
  }
  if (postQuantum === 'require') return ['X25519MLKEM768']
  if (postQuantum === 'off') return ['X25519', 'P-256', 'P-384']
  if (groups === undefined) return undefined
  if (!Array.isArray(groups) || groups.length === 0) {
    throw new StoqInvalidArgumentError('keyExchange', `expected a non-empty array of ${KX_GROUPS.join(', ')}, got ${describe(groups)}`)
  }
  for (const g of groups) {
    if (!KX_GROUPS.includes(g as KeyExchangeGroup)) {
      throw new StoqInvalidArgumentError('keyExchange', `expected groups among ${KX_GROUPS.join(', ')}, got ${describe(g)}`)
    }
  }
  if (new Set(groups).size !== groups.length) throw new StoqInvalidArgumentError('keyExchange', 'a group is listed twice')
  return [...(groups as KeyExchangeGroup[])]
}

const UDP_BACKENDS: UdpBackendChoice[] = ['auto', 'gso', 'gro', 'uring', 'dgram']
const ENGINES: EngineChoice[] = ['auto', 'quinn', 'quiche']

function workersOption(value: unknown): number {
  if (value === 'auto') return -1
  return intOption('workers', value ?? 0, 0, 64)
}

function engineOption(value: unknown): EngineChoice {
  if (value === undefined) {
    const env = process.env.STOQ_ENGINE
    if (env === undefined || env === '') return 'auto'
    if (!ENGINES.includes(env as EngineChoice)) {
      throw new StoqInvalidArgumentError('STOQ_ENGINE', `expected one of ${ENGINES.join(', ')}, got ${describe(env)}`)
    }
    return env as EngineChoice
  }
  if (!ENGINES.includes(value as EngineChoice)) {
    throw new StoqInvalidArgumentError('engine', `expected one of ${ENGINES.join(', ')}, got ${describe(value)}`)
  }
  return value as EngineChoice
}

function udpBackendOption(value: unknown): UdpBackendChoice {
  if (value === undefined) return 'auto'
  if (!UDP_BACKENDS.includes(value as UdpBackendChoice)) {
    throw new StoqInvalidArgumentError('udpBackend', `expected one of ${UDP_BACKENDS.join(', ')}, got ${describe(value)}`)
  }
  return value as UdpBackendChoice
}

const CONGESTION: CongestionControl[] = ['cubic', 'reno', 'bbr']

export function resolveTransport(input: unknown): TransportParameters {
  if (input === undefined) return { ...DEFAULT_TRANSPORT }
  const t = { ...DEFAULT_TRANSPORT, ...(checkOptions(input, TRANSPORT_OPTION_KEYS, 'transport') as Partial<TransportParameters>) }
  const MiB = 1024 * 1024
  intOption('transport.maxIdleTimeoutMs', t.maxIdleTimeoutMs, 0, 24 * 3600 * 1000)
  intOption('transport.initialMaxData', t.initialMaxData, 0, 256 * MiB)
  intOption('transport.initialMaxStreamData', t.initialMaxStreamData, 0, 256 * MiB)
  intOption('transport.maxStreamWindow', t.maxStreamWindow, 0, 256 * MiB)
  intOption('transport.maxConnectionWindow', t.maxConnectionWindow, 0, 256 * MiB)
  intOption('transport.initialMaxStreamsBidi', t.initialMaxStreamsBidi, 0, 1 << 20)
  intOption('transport.initialMaxStreamsUni', t.initialMaxStreamsUni, 0, 1 << 20)
  intOption('transport.maxUdpPayloadSize', t.maxUdpPayloadSize, 1200, 65527)
  intOption('transport.datagramQueueLength', t.datagramQueueLength, 1, 1 << 16)
  if (!CONGESTION.includes(t.congestionControl)) {
    throw new StoqInvalidArgumentError('transport.congestionControl', `expected one of ${CONGESTION.join(', ')}, got ${describe(t.congestionControl)}`)
  }
  boolOption('transport.datagrams', t.datagrams)
  boolOption('transport.pacing', t.pacing)
  boolOption('transport.hystart', t.hystart)
  boolOption('transport.mtuDiscovery', t.mtuDiscovery)
  // Auto-tuned windows never shrink below the initial ones.
  t.maxStreamWindow = Math.max(t.maxStreamWindow, t.initialMaxStreamData)
  t.maxConnectionWindow = Math.max(t.maxConnectionWindow, t.initialMaxData)
  return t
}

export function resolveEndpointOptions(input: unknown): ResolvedEndpointOptions {
  const o = checkOptions(input === undefined ? {} : input, ENDPOINT_OPTION_KEYS) as Partial<EndpointOptions>
  const host = o.host ?? DEFAULT_HOST
  if (typeof host !== 'string' || net.isIP(host) === 0) {
    throw new StoqInvalidArgumentError('host', `expected an IP literal such as "::" or "127.0.0.1", got ${describe(host)}`)
  }
  const port = intOption('port', o.port ?? 0, 0, 65535)
  const ipv6Only = boolOption('ipv6Only', o.ipv6Only ?? false)
  if (ipv6Only && net.isIPv4(host)) {
    throw new StoqInvalidArgumentError('ipv6Only', 'cannot be true when binding an IPv4 address')
  }
  let server: ResolvedServerOptions | null = null
  if (o.server !== undefined) {
    const s = checkOptions(o.server, SERVER_OPTION_KEYS, 'server') as Partial<ServerOptions>
    server = {
      cert: readPem('server.cert', s.cert, 'certificate'),
      key: privateKeyBytes(readPem('server.key', s.key, 'key')),
      alpn: alpnOption(s.alpn),
      retry: boolOption('server.retry', s.retry ?? true),
      maxConnections: intOption('server.maxConnections', s.maxConnections ?? DEFAULT_MAX_CONNECTIONS, 1, 1 << 24),
      statelessReset: boolOption('server.statelessReset', s.statelessReset ?? true),
      secret: secretOption(s.secret),
      earlyData: boolOption('server.earlyData', s.earlyData ?? false),
    }
  }
  const socketBufferSize = intOption('socketBufferSize', o.socketBufferSize ?? DEFAULT_SOCKET_BUFFER_SIZE, 4096, 1 << 30)
  return {
    host,
    port,
    ipv6Only,
    server,
    transport: resolveTransport(o.transport),
    socketBufferSize,
    closeTimeoutMs: intOption('closeTimeoutMs', o.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS, 0, 600_000),
    udpBackend: udpBackendOption(o.udpBackend),
    cpuAffinity: cpuListOption(o.cpuAffinity),
    engine: engineOption(o.engine),
    poolMaxBuffers: intOption('poolMaxBuffers', o.poolMaxBuffers ?? DEFAULT_POOL_MAX_BUFFERS, 16, 1 << 20),
    zeroCopySend: boolOption('zeroCopySend', o.zeroCopySend ?? true),
    numaNode: o.numaNode === undefined ? null : intOption('numaNode', o.numaNode, 0, 1023),
    workers: workersOption(o.workers),
    limits: resolveLimits(o.limits),
    sessionCacheSize: intOption('sessionCacheSize', o.sessionCacheSize ?? DEFAULT_SESSION_CACHE_SIZE, 0, 1 << 20),
    keyExchange: keyExchangeOption(o.keyExchange, o.postQuantum),
  }
}

/**
 * A name TLS can send as SNI and check against a certificate: an IP literal, or DNS
 * labels of letters, digits, "-" and "_" (1-63 characters each). Anything else (spaces,
 * newlines, PEM text...) is refused here rather than by the engine (quiche's binding
 * aborts the process on some of it).
 */
function isServerName(name: string): boolean {
  if (net.isIP(name) !== 0) return true
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.')
  return labels.every((l) => /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(l))
}

export function resolveConnectOptions(input: unknown): ResolvedConnectOptions {
  const o = checkOptions(input, CONNECT_OPTION_KEYS) as Partial<ConnectOptions>
  const signal = signalOption('signal', o.signal)
  if (typeof o.host !== 'string' || o.host.length === 0 || o.host.length > 253) {
    throw new StoqInvalidArgumentError('host', `expected a host name or IP literal, got ${describe(o.host)}`)
  }
  const host = o.host.startsWith('[') && o.host.endsWith(']') ? o.host.slice(1, -1) : o.host
  const port = intOption('port', o.port, 1, 65535)
  const serverName = o.serverName ?? host
  if (typeof serverName !== 'string' || serverName.length === 0 || serverName.length > 253 || !isServerName(serverName)) {
    throw new StoqInvalidArgumentError('serverName', `expected a DNS name or IP literal, got ${describe(serverName)}`)
  }
  const insecure = boolOption('insecure', o.insecure ?? false)
  let pins: string[] = []
  if (o.pin !== undefined) {
    const list = Array.isArray(o.pin) ? o.pin : [o.pin]
    pins = list.map((p) => {
      const n = typeof p === 'string' ? normaliseFingerprint(p) : null
      if (n === null) throw new StoqInvalidArgumentError('pin', `expected SHA-256 fingerprints as 64 hex digits (colons allowed), got ${describe(p)}`)
      return n
    })
    if (pins.length === 0) throw new StoqInvalidArgumentError('pin', 'expected at least one fingerprint')
  }
  const ca = o.ca === undefined ? undefined : readPem('ca', o.ca, 'certificate')
  if (!insecure && pins.length === 0 && ca === undefined) {
    throw new StoqInvalidArgumentError(
      'ca',
      'a server certificate must be verified: give `ca` (PEM), `pin` (SHA-256 fingerprints), or `insecure: true` for tests',
    )
  }
  if ((o.cert === undefined) !== (o.key === undefined)) {
    throw new StoqInvalidArgumentError('cert', '`cert` and `key` must be given together')
  }
  const earlyData = boolOption('earlyData', o.earlyData ?? false)
  if (earlyData && !insecure && ca === undefined) {
    throw new StoqInvalidArgumentError(
      'earlyData',
      'needs a server verified by `ca` (or `insecure: true` for tests): a `pin` is checked once the handshake completed, after 0-RTT data went out',
    )
  }
  const identity = o.cert !== undefined ? { cert: readPem('cert', o.cert, 'certificate'), key: privateKeyBytes(readPem('key', o.key, 'key')) } : undefined
  return {
    host,
    port,
    serverName,
    alpn: alpnOption(o.alpn),
    ca,
    pins,
    insecure,
    identity,
    handshakeTimeoutMs: intOption('handshakeTimeoutMs', o.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS, 1, 600_000),
    keepAliveMs: intOption('keepAliveMs', o.keepAliveMs ?? 0, 0, 24 * 3600 * 1000),
    earlyData,
    signal,
  }
}
