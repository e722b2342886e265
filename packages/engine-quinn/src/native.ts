import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { StoqInvalidArgumentError } from '@stoq/interface'
import { ABI, CONFIG_FIELDS, type EngineConfig } from './abi.js'

/**
 * Loads libstoq_quinn.so through koffi and declares its C ABI. This module is the only
 * place that knows the native signatures (native/src/lib.rs); the numbers are in abi.ts.
 */

export type Pointer = unknown

/** The C functions of the library, typed for the engine. */
export interface QuinnNative {
  abiVersion(): number
  abiInfo(buf: Uint8Array | null, cap: number): number
  engineNew(config: EngineConfig, size: number): Pointer | null
  engineFree(ep: Pointer): void
  /** With a null engine: why the last engineNew failed. */
  lastError(ep: Pointer | null, buf: Uint8Array, cap: number): number
  panicCount(ep: Pointer): number
  droppedPackets(ep: Pointer): number
  connectionCount(ep: Pointer): number
  listen(
    ep: Pointer,
    cert: Uint8Array,
    certLen: number,
    key: Uint8Array,
    keyLen: number,
    alpn: Uint8Array,
    alpnLen: number,
    retry: number,
    maxConns: number,
    statelessReset: number,
    secret: Uint8Array | null,
    secretLen: number,
    earlyData: number,
  ): number
  stopListening(ep: Pointer): void
  allowMtuDiscovery(ep: Pointer, allowed: number): number
  receive(ep: Pointer, data: Uint8Array, len: number, segment: number, ip: Uint8Array, port: number, family: number): number
  pollTransmit(ep: Pointer, out: Uint8Array, cap: number, lengths: Uint32Array, maxPackets: number, peer: Uint8Array, meta: Uint32Array): number
  txSlots(ep: Pointer, count: number, size: number, addrs: BigUint64Array, caps: Uint32Array): number
  pollTransmitSlot(ep: Pointer, slot: number, lengths: Uint32Array, maxPackets: number, peer: Uint8Array, meta: Uint32Array): number
  /** An ArrayBuffer over `length` bytes of native memory at `address` (koffi.view). */
  view(address: bigint, length: number): ArrayBuffer
  nextTimeout(ep: Pointer): number
  handleTimeout(ep: Pointer): void
  drainEvents(ep: Pointer, out: Float64Array, cap: number): number
  takeCloseReason(ep: Pointer, conn: number, buf: Uint8Array, cap: number): number
  connect(
    ep: Pointer,
    ip: Uint8Array,
    port: number,
    family: number,
    name: Uint8Array,
    nameLen: number,
    alpn: Uint8Array,
    alpnLen: number,
    ca: Uint8Array | null,
    caLen: number,
    verify: number,
    cert: Uint8Array | null,
    certLen: number,
    key: Uint8Array | null,
    keyLen: number,
    earlyData: number,
  ): number
  close(ep: Pointer, conn: number, app: number, code: number, reason: Uint8Array, reasonLen: number): number
  setKeepAlive(ep: Pointer, conn: number, ms: number): number
  setReceiveWindow(ep: Pointer, conn: number, bytes: number): number
  setPeerStreamLimit(ep: Pointer, conn: number, bidi: number, count: number): number
  openStream(ep: Pointer, conn: number, bidi: number): number
  streamSend(ep: Pointer, conn: number, sid: number, data: Uint8Array, len: number, fin: number): number
  streamRecv(ep: Pointer, conn: number, sid: number, out: Uint8Array, cap: number, result: Float64Array): number
  streamCapacity(ep: Pointer, conn: number, sid: number): number
  streamWantWritable(ep: Pointer, conn: number, sid: number): number
  streamComplete(ep: Pointer, conn: number, sid: number): number
  streamStopCode(ep: Pointer, conn: number, sid: number): number
  streamShutdown(ep: Pointer, conn: number, sid: number, write: number, code: number): number
  streamPriority(ep: Pointer, conn: number, sid: number, urgency: number): number
  datagramSend(ep: Pointer, conn: number, data: Uint8Array, len: number): number
  datagramRecv(ep: Pointer, conn: number, out: Uint8Array, cap: number): number
  datagramMaxSize(ep: Pointer, conn: number): number
  isEstablished(ep: Pointer, conn: number): number
  alpn(ep: Pointer, conn: number, buf: Uint8Array, cap: number): number
  serverName(ep: Pointer, conn: number, buf: Uint8Array, cap: number): number
  peerCertificates(ep: Pointer, conn: number, buf: Uint8Array, cap: number, lengths: Uint32Array, max: number): number
  stats(ep: Pointer, conn: number, out: Float64Array): number
  peerAddress(ep: Pointer, conn: number, out: Uint8Array): number
  /** Test hook: a panic inside the library, pinned on `conn` (see QuinnEngine.injectPanic). */
  testPanic(ep: Pointer, conn: number, site: number): number
  setSessionCache(ep: Pointer, servers: number): number
  /** [servers, tickets, cap] of the client's session tickets into `out`. */
  sessionCache(ep: Pointer, out: Float64Array): number
  /** sizeof(EngineConfig) as koffi lays it out. */
  configSize: number
  /** offsetof(EngineConfig, field) as koffi lays it out. */
  configOffsets: Record<string, number>
}

/**
 * ABI version this module speaks (stoq_abi_version). 4: quinn-proto 0.11, stoq_engine_new takes
 * an EngineConfig struct, stoq_abi_info (3 was the 0.9 library with stoq_set_receive_window).
 * 6: resumption and 0-RTT (see native/src/abi.rs).
 */
export const ABI_VERSION = ABI.ABI_VERSION

/**
 * `QuicEngineOptions.cidPrefix` as `EngineConfig.cid_prefix`: the byte, or CID_PREFIX_NONE
 * when absent. Anything but an integer from 0 to 255 is STOQ_ERR_INVALID_ARG.
 */
export function cidPrefixParam(value: unknown): number {
  if (value === undefined) return ABI.CID_PREFIX_NONE
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 255) {
    throw new StoqInvalidArgumentError('cidPrefix', `expected an integer from 0 to 255, got ${typeof value === 'string' ? `'${value}'` : String(value)}`)
  }
  return value
}

export type QuinnLoadResult =
  | { ok: true; native: QuinnNative; library: string /** Where it came from: STOQ_QUINN_LIBRARY, the platform package, the local build. */; source: string }
  | { ok: false; reason: string; library: string | null /** What to run to get the quinn engine here. */; fix: string }

const here = path.dirname(fileURLToPath(import.meta.url))
/** Package root: `dist/` and `src/` are both one level below it. */
const packageRoot = path.resolve(here, '..')
const LIBRARY_FILE = 'libstoq_quinn.so'

/**
 * The platforms that have a prebuilt library, each in its own package
 * (`@stoq/engine-quinn-<platform>`, an optional dependency of this one that npm and pnpm
 * install only where its os/cpu/libc fields match). Elsewhere the library is built from source.
 */
export const PREBUILT_PLATFORMS: readonly string[] = ['linux-x64-gnu']

let glibcCache: { version: string | null } | null = null

/** The running glibc's version (e.g. "2.36"), or null when the C library is not glibc (musl) or not Linux. */
export function runtimeGlibc(): string | null {
  if (glibcCache === null) {
    let version: string | null = null
    if (process.platform === 'linux') {
      // Without network details: a report resolves the names of open sockets' peers otherwise,
      // which can block on a machine whose DNS does not answer.
      const report = process.report as (NodeJS.ProcessReport & { excludeNetwork?: boolean }) | undefined
      const exclude = report?.excludeNetwork
      try {
        if (report) report.excludeNetwork = true
        const r = report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
        version = r?.header?.glibcVersionRuntime ?? null
      } catch {
        version = null
      } finally {
        if (report) report.excludeNetwork = exclude
      }
    }
    glibcCache = { version }
  }
  return glibcCache.version
}

/** This machine's platform, as the prebuilt packages are named: linux-x64-gnu, linux-arm64-musl, darwin-arm64, ... */
export function quinnPlatform(): string {
  const libc = process.platform === 'linux' ? (runtimeGlibc() !== null ? '-gnu' : '-musl') : ''
  return `${process.platform}-${process.arch}${libc}`
}

/** The name of the prebuilt package for this machine (whether or not one is published). */
export function platformPackageName(): string {
  return `@stoq/engine-quinn-${quinnPlatform()}`
}

/** Compare dotted versions numerically: "2.9" < "2.34". */
export function compareVersions(a: string, b: string): number {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0)
    if (d !== 0) return d < 0 ? -1 : 1
  }
  return 0
}

/** What the build put next to a prebuilt library (library.json of a platform package). */
export interface PrebuiltInfo {
  file: string
  /** Lowest glibc that loads the library (the highest GLIBC_x.y it references). */
  glibc: string | null
  builtOn?: string
  rustc?: string
  sha256?: string
}

/** The local build of this package (scripts/build-native.mjs puts it here). */
export function localLibraryPath(): string {
  return path.join(packageRoot, 'native', LIBRARY_FILE)
}

/** The command that builds the library from source for this installed package. */
export function buildFromSourceCommand(): string {
  const script = path.join(packageRoot, 'scripts', 'build-native.mjs')
  // Quoted for a POSIX shell when the path has anything but the usual characters.
  const arg = /^[\w@%+=:,./-]+$/.test(script) ? script : `'${script.replace(/'/g, `'\\''`)}'`
  return `node ${arg} --strict`
}

/** Where the library is looked for first: STOQ_QUINN_LIBRARY when set, else the platform package's, else the local build. */
export function quinnLibraryPath(): string {
  const fromEnv = process.env.STOQ_QUINN_LIBRARY
  if (fromEnv) return path.resolve(fromEnv)
  const prebuilt = findPrebuilt()
  return prebuilt.ok ? prebuilt.library : localLibraryPath()
}

/** Why the last build did not produce the library, from native/build-status.json. */
function buildStatusReason(): string | null {
  try {
    const status = JSON.parse(fs.readFileSync(path.join(packageRoot, 'native', 'build-status.json'), 'utf8')) as {
      ok?: boolean
      reason?: string
    }
    return status.ok ? null : (status.reason ?? null)
  } catch {
    return null
  }
}

/**
 * The version of the platform package this package asks for (its optionalDependencies entry:
 * an exact version once packed), for the install command; null in the workspace.
 */
function platformPackageVersion(): string | null {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { optionalDependencies?: Record<string, string> }
    const spec = pkg.optionalDependencies?.[platformPackageName()] ?? null
    return spec !== null && /^\d+\.\d+\.\d+/.test(spec) ? spec : null
  } catch {
    return null
  }
}

/**
 * Why a prebuilt library cannot load on a system with glibc `running` (null: not glibc, or not
 * known), or null when it can: the dynamic linker would refuse it ("version `GLIBC_2.34' not
 * found"), so the loader says so first, in words.
 */
export function glibcTooOld(info: Pick<PrebuiltInfo, 'glibc' | 'builtOn'>, running: string | null): string | null {
  if (!info.glibc || running === null || compareVersions(running, info.glibc) >= 0) return null
  return `needs glibc >= ${info.glibc} (built on ${info.builtOn ?? 'an unknown system'}); this system has glibc ${running}`
}

type Prebuilt =
  | { ok: true; library: string; info: PrebuiltInfo }
  | { ok: false; reason: string /** The platform has a prebuilt package, but it is not installed. */; notInstalled: boolean }

/** The prebuilt library of this platform's package, checked against the running glibc (not loaded). */
function findPrebuilt(): Prebuilt {
  const platform = quinnPlatform()
  const name = platformPackageName()
  if (!PREBUILT_PLATFORMS.includes(platform)) {
    return { ok: false, notInstalled: false, reason: `no prebuilt library for ${platform} (prebuilt: ${PREBUILT_PLATFORMS.join(', ')})` }
  }
  let dir: string
  try {
    dir = path.dirname(createRequire(import.meta.url).resolve(`${name}/package.json`))
  } catch {
    return { ok: false, notInstalled: true, reason: `${name} is not installed (an optional dependency: installs that omit optional dependencies leave it out)` }
  }
  let info: PrebuiltInfo
  try {
    info = JSON.parse(fs.readFileSync(path.join(dir, 'library.json'), 'utf8')) as PrebuiltInfo
  } catch (err) {
    return {
      ok: false,
      notInstalled: false,
      reason: `${name} has no library.json in ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}: not built)`,
    }
  }
  const library = path.join(dir, info.file || LIBRARY_FILE)
  if (!fs.existsSync(library)) return { ok: false, notInstalled: false, reason: `${name}: ${library} missing` }
  const tooOld = glibcTooOld(info, runtimeGlibc())
  if (tooOld !== null) return { ok: false, notInstalled: false, reason: `${name} ${tooOld}` }
  return { ok: true, library, info }
}

/** What to run so that the quinn engine loads here, given what went wrong. */
function fixFor(fromEnv: boolean, prebuilt: Prebuilt | null): string {
  const build = `build it from source (needs Rust's cargo; about a minute): ${buildFromSourceCommand()}`
  if (fromEnv) return `unset STOQ_QUINN_LIBRARY, or point it at a built ${LIBRARY_FILE}`
  // build-native.mjs refuses other platforms: it builds and loads a Linux .so.
  if (process.platform !== 'linux') return `none on ${process.platform} yet: the quinn engine is built for Linux only`
  if (prebuilt !== null && !prebuilt.ok && prebuilt.notInstalled) {
    const version = platformPackageVersion()
    return `npm install ${platformPackageName()}${version ? `@${version}` : ''} (the prebuilt library), or ${build}`
  }
  return build
}

let cached: QuinnLoadResult | null = null

/** glibc's M_TRIM_THRESHOLD (malloc.h) and the value the engine sets it to. */
const M_TRIM_THRESHOLD = -1
const TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024

/** What `tuneMalloc` did, for `quinnAvailability().detail` and `stoq doctor`. */
export let mallocTuning = 'not tried'

/**
 * The engine reuses its transmit and receive buffers, but a received batch whose stream data
 * quinn still holds (unread) needs a new one, and quinn allocates per connection and per
 * stream as it goes. With glibc's default trim threshold (128 KiB) the heap top is given back
 * to the kernel and faulted in again over and over (quinn-proto 0.9, which allocated per
 * batch: 65000-byte packets cost ~50 µs to send instead of ~30 µs). Raise the threshold to
 * 64 MiB (freed memory above that still goes back). Process-wide, so it can be turned off with
 * STOQ_MALLOC_TRIM=default.
 */
function tuneMalloc(koffi: typeof import('koffi').default): void {
  if (process.env.STOQ_MALLOC_TRIM === 'default') {
    mallocTuning = 'left at the C library default (STOQ_MALLOC_TRIM=default)'
    return
  }
  try {
    const libc = koffi.load('libc.so.6')
    const mallopt = libc.func('int mallopt(int param, int value)')
    mallocTuning =
      (mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) as number) === 1
        ? `glibc malloc trim threshold raised to ${TRIM_THRESHOLD_BYTES >> 20} MiB`
        : 'glibc refused mallopt(M_TRIM_THRESHOLD): default kept'
  } catch {
    mallocTuning = 'not glibc (no mallopt): default kept'
  }
}

/** What the library reports through stoq_abi_info: its constants and EngineConfig layout. */
export function abiInfo(native: QuinnNative): Record<string, number> {
  const len = native.abiInfo(null, 0)
  const buf = new Uint8Array(len)
  native.abiInfo(buf, len)
  return JSON.parse(new TextDecoder().decode(buf)) as Record<string, number>
}

let koffiTypes: { configType: unknown } | null = null

/** The named koffi types, declared once per process (koffi refuses a second declaration of a name). */
function declareTypes(koffi: typeof import('koffi').default): { configType: unknown } {
  if (koffiTypes === null) {
    koffi.opaque('StoqQuinnEngine')
    koffiTypes = { configType: koffi.struct('StoqEngineConfig', Object.fromEntries(CONFIG_FIELDS)) }
  }
  return koffiTypes
}

/** Open one library file and bind its functions, checking its ABI. Never throws. */
function openLibrary(koffi: typeof import('koffi').default, library: string): { ok: true; native: QuinnNative } | { ok: false; reason: string } {
  try {
    const configType = declareTypes(koffi).configType as Parameters<typeof koffi.sizeof>[0]
    const lib = koffi.load(library)
    const E = 'StoqQuinnEngine *'
    const f = (decl: string) => lib.func(decl)
    const native: QuinnNative = {
      abiVersion: f('uint32_t stoq_abi_version()'),
      abiInfo: f('size_t stoq_abi_info(void *buf, size_t cap)'),
      engineNew: f(`${E} stoq_engine_new(const StoqEngineConfig *config, size_t size)`),
      engineFree: f(`void stoq_engine_free(${E} ep)`),
      lastError: f(`size_t stoq_last_error(${E} ep, void *buf, size_t cap)`),
      panicCount: f(`double stoq_panic_count(${E} ep)`),
      droppedPackets: f(`double stoq_dropped_packets(${E} ep)`),
      connectionCount: f(`uint32_t stoq_connection_count(${E} ep)`),
      listen: f(
        `int32_t stoq_listen(${E} ep, const void *cert, size_t certLen, const void *key, size_t keyLen, const void *alpn, size_t alpnLen, uint32_t retry, uint32_t maxConns, uint32_t statelessReset, const void *secret, size_t secretLen, uint32_t earlyData)`,
      ),
      stopListening: f(`void stoq_stop_listening(${E} ep)`),
      allowMtuDiscovery: f(`int32_t stoq_allow_mtu_discovery(${E} ep, uint32_t allowed)`),
      receive: f(`int32_t stoq_receive(${E} ep, const void *data, size_t len, size_t segment, const void *ip, uint32_t port, uint32_t family)`),
      pollTransmit: f(`int32_t stoq_poll_transmit(${E} ep, void *out, size_t cap, void *lengths, size_t maxPackets, void *peer, void *meta)`),
      txSlots: f(`int32_t stoq_tx_slots(${E} ep, size_t count, size_t size, void *addrs, void *caps)`),
      pollTransmitSlot: f(`int32_t stoq_poll_transmit_slot(${E} ep, size_t slot, void *lengths, size_t maxPackets, void *peer, void *meta)`),
      view: (address: bigint, length: number) => koffi.view(address as never, length),
      nextTimeout: f(`double stoq_next_timeout(${E} ep)`),
      handleTimeout: f(`void stoq_handle_timeout(${E} ep)`),
      drainEvents: f(`int32_t stoq_drain_events(${E} ep, void *out, size_t cap)`),
      takeCloseReason: f(`int32_t stoq_take_close_reason(${E} ep, uint32_t conn, void *buf, size_t cap)`),
      connect: f(
        `int32_t stoq_connect(${E} ep, const void *ip, uint32_t port, uint32_t family, const void *name, size_t nameLen, const void *alpn, size_t alpnLen, const void *ca, size_t caLen, uint32_t verify, const void *cert, size_t certLen, const void *key, size_t keyLen, uint32_t earlyData)`,
      ),
      close: f(`int32_t stoq_close(${E} ep, uint32_t conn, uint32_t app, double code, const void *reason, size_t reasonLen)`),
      setKeepAlive: f(`int32_t stoq_set_keep_alive(${E} ep, uint32_t conn, double ms)`),
      setReceiveWindow: f(`int32_t stoq_set_receive_window(${E} ep, uint32_t conn, double bytes)`),
      setPeerStreamLimit: f(`int32_t stoq_set_peer_stream_limit(${E} ep, uint32_t conn, uint32_t bidi, double count)`),
      openStream: f(`double stoq_open_stream(${E} ep, uint32_t conn, uint32_t bidi)`),
      streamSend: f(`double stoq_stream_send(${E} ep, uint32_t conn, double sid, const void *data, size_t len, uint32_t fin)`),
      streamRecv: f(`int32_t stoq_stream_recv(${E} ep, uint32_t conn, double sid, void *out, size_t cap, void *result)`),
      streamCapacity: f(`double stoq_stream_capacity(${E} ep, uint32_t conn, double sid)`),
      streamWantWritable: f(`int32_t stoq_stream_want_writable(${E} ep, uint32_t conn, double sid)`),
      streamComplete: f(`int32_t stoq_stream_complete(${E} ep, uint32_t conn, double sid)`),
      streamStopCode: f(`double stoq_stream_stop_code(${E} ep, uint32_t conn, double sid)`),
      streamShutdown: f(`int32_t stoq_stream_shutdown(${E} ep, uint32_t conn, double sid, uint32_t write, double code)`),
      streamPriority: f(`int32_t stoq_stream_priority(${E} ep, uint32_t conn, double sid, uint32_t urgency)`),
      datagramSend: f(`int32_t stoq_datagram_send(${E} ep, uint32_t conn, const void *data, size_t len)`),
      datagramRecv: f(`int32_t stoq_datagram_recv(${E} ep, uint32_t conn, void *out, size_t cap)`),
      datagramMaxSize: f(`int32_t stoq_datagram_max_size(${E} ep, uint32_t conn)`),
      isEstablished: f(`int32_t stoq_is_established(${E} ep, uint32_t conn)`),
      alpn: f(`int32_t stoq_alpn(${E} ep, uint32_t conn, void *buf, size_t cap)`),
      serverName: f(`int32_t stoq_server_name(${E} ep, uint32_t conn, void *buf, size_t cap)`),
      peerCertificates: f(`int32_t stoq_peer_certificates(${E} ep, uint32_t conn, void *buf, size_t cap, void *lengths, size_t max)`),
      stats: f(`int32_t stoq_stats(${E} ep, uint32_t conn, void *out)`),
      peerAddress: f(`int32_t stoq_peer_address(${E} ep, uint32_t conn, void *out)`),
      testPanic: f(`int32_t stoq_test_panic(${E} ep, uint32_t conn, uint32_t site)`),
      setSessionCache: f(`int32_t stoq_set_session_cache(${E} ep, double servers)`),
      sessionCache: f(`int32_t stoq_session_cache(${E} ep, void *out)`),
      configSize: koffi.sizeof(configType),
      configOffsets: Object.fromEntries(CONFIG_FIELDS.map(([name]) => [name, koffi.offsetof(configType, name)])),
    } as unknown as QuinnNative
    const v = native.abiVersion()
    if (v !== ABI_VERSION) return { ok: false, reason: `${library} has ABI ${v}, this package speaks ${ABI_VERSION} (a library of another version)` }
    const info = abiInfo(native)
    if (info.CONFIG_SIZE !== native.configSize) {
      return {
        ok: false,
        reason: `${library}'s EngineConfig has ${info.CONFIG_SIZE} bytes, this package's ${native.configSize} (a library of another version)`,
      }
    }
    return { ok: true, native }
  } catch (err) {
    return { ok: false, reason: `cannot load ${library}: ${(err as Error).message}` }
  }
}

/**
 * Load the native library once. Never throws: a failure carries its reason and the fix.
 *
 * Where it is looked for: STOQ_QUINN_LIBRARY when set (and nowhere else then: an explicit path
 * is not silently replaced); else the prebuilt package of this platform
 * (`@stoq/engine-quinn-linux-x64-gnu`), if installed and this system's glibc is recent enough;
 * else the local build of this package (native/libstoq_quinn.so, from scripts/build-native.mjs).
 */
export function loadQuinn(): QuinnLoadResult {
  if (cached !== null) return cached
  let koffi: typeof import('koffi').default
  try {
    koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi').default
  } catch (err) {
    cached = {
      ok: false,
      library: null,
      reason: `koffi cannot be loaded: ${(err as Error).message}`,
      fix: 'reinstall @stoq/engine-quinn (its dependency koffi is missing or broken)',
    }
    return cached
  }
  const fromEnv = process.env.STOQ_QUINN_LIBRARY
  if (fromEnv) {
    const library = path.resolve(fromEnv)
    const r = fs.existsSync(library) ? openLibrary(koffi, library) : { ok: false as const, reason: `${library} missing` }
    cached = r.ok
      ? { ok: true, native: r.native, library, source: 'STOQ_QUINN_LIBRARY' }
      : { ok: false, library, reason: `STOQ_QUINN_LIBRARY: ${r.reason}`, fix: fixFor(true, null) }
    if (cached.ok) tuneMalloc(koffi)
    return cached
  }
  const failures: string[] = []
  const prebuilt = findPrebuilt()
  if (prebuilt.ok) {
    const r = openLibrary(koffi, prebuilt.library)
    if (r.ok) {
      tuneMalloc(koffi)
      cached = {
        ok: true,
        native: r.native,
        library: prebuilt.library,
        source: `${platformPackageName()} (built on ${prebuilt.info.builtOn ?? 'unknown'}, needs glibc >= ${prebuilt.info.glibc ?? '?'})`,
      }
      return cached
    }
    failures.push(`prebuilt: ${r.reason}`)
  } else {
    failures.push(`prebuilt: ${prebuilt.reason}`)
  }
  const local = localLibraryPath()
  if (fs.existsSync(local)) {
    const r = openLibrary(koffi, local)
    if (r.ok) {
      tuneMalloc(koffi)
      cached = { ok: true, native: r.native, library: local, source: 'local build' }
      return cached
    }
    failures.push(`local build: ${r.reason}`)
  } else {
    const why = buildStatusReason()
    failures.push(`local build: ${local} missing${why ? ` (last build: ${why})` : ' (not built from source)'}`)
  }
  cached = { ok: false, library: prebuilt.ok ? prebuilt.library : null, reason: failures.join('; '), fix: fixFor(false, prebuilt) }
  return cached
}
