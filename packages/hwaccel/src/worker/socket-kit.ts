import type { UdpWorkerData, UdpWorkerMessage } from './udp-worker.js'

type Koffi = typeof import('koffi').default
type Library = ReturnType<Koffi['load']>
type NativeFunction = ReturnType<Library['func']>
type BoundMessage = Extract<UdpWorkerMessage, { type: 'bound' }>

/** What a worker loop throws when the socket is unusable (a plain object: no class in the worker). */
export interface WorkerFatal {
  fatalSyscall: string
  errno: number
}

/** The worker's native-side memory, as `SocketKit.attach` laid it out. */
export interface NativeMemory {
  u8: Uint8Array
  i32: Int32Array
  /** Address of byte 0 (below 2^53). */
  base: number
  /** Scratch byte offsets: the eventfd value read (8 bytes), an ioctl int result (4), pollfd[2] (16). */
  EVBUF: number
  OUTQ: number
  POLLFDS: number
}

/** The socket `SocketKit.open` bound (and reported to the main thread). */
export interface OpenSocket {
  fd: number
  /** The buffer sizes the kernel reports (SO_SNDBUF / SO_RCVBUF after the requests). */
  sendBufferSize: number
  receiveBufferSize: number
}

/** What both UDP workers (the gro worker and the uring worker) share: see `socketKit`. */
export interface SocketKit {
  koffi: Koffi
  /** The C library (`d.libcName`), for the calls only one worker makes. */
  lib: Library
  post(message: UdpWorkerMessage): void
  /** The control block (protocol.ts) and the statistics in it. */
  ctl: Int32Array
  stats: Float64Array
  readFd: NativeFunction
  closeFd: NativeFunction
  /** Bytes of native memory `attach` needs: `nativeMemoryBytes(rxSlots, txSlots)`. */
  memoryBytes: number
  /**
   * Lay out the native memory (at least `memoryBytes`, zeroed here) and point
   * every receive and send msghdr at its name, iovec, buffer and control space.
   * Its memory must never move (a SharedArrayBuffer's does not).
   */
  attach(memory: SharedArrayBuffer): NativeMemory
  /**
   * Open, configure and bind the socket (`d.bind`), then post 'bound' with
   * `extra`. On failure: close what was opened, call `onFail`, post
   * 'bind-error' and return null (the worker then ends).
   */
  open(extra: Partial<Pick<BoundMessage, 'ringFd' | 'ringMaps' | 'engineDetail'>>, onFail?: () => void): OpenSocket | null
  /** Reset the msghdr of receive buffer `b` for a new read; returns its address. */
  armReceive(b: number): number
  /** msg_len recvmmsg wrote for receive buffer `b`. */
  receivedLength(b: number): number
  /** Fill receive ring slot `k` from receive buffer `b` holding `length` bytes (its GRO segment size, sender, truncation). */
  publishReceive(k: number, b: number, length: number): void
  /**
   * Fill the msghdr of send slot `k` (destination, iovec, UDP_SEGMENT cmsg).
   * Returns 0, or the errno with which the slot fails without a syscall
   * (EMSGSIZE: too large for a buffer; EAFNOSUPPORT: IPv6 peer on an IPv4 socket), leaving it untouched.
   */
  prepareSend(k: number): number
  /** Address of the msghdr of send slot `k`. */
  txHeader(k: number): number
  /** Read (and so clear) the socket's pending error (SO_ERROR). */
  takeSocketError(): void
  fatalError(syscall: string, errno: number): WorkerFatal
  /** Tell the main thread there are receives or completions. */
  wake(): void
  /**
   * Run the worker loop; whatever way it ends: `settle`, mark the socket
   * closing, `release`, close the socket, wake the main thread; then post
   * 'fatal' if the loop threw.
   */
  run(loop: () => void, cleanup?: { settle?: () => void; release?: () => void }): void
}

/** The type of `socketKit`, as the workers take it (a parameter: they cannot import it). */
export type MakeSocketKit = (d: UdpWorkerData, load: (id: string) => unknown) => SocketKit | null

/** Bytes of a worker's native memory for the given ring sizes (the layout in `socketKit`). */
export function nativeMemoryBytes(rxSlots: number, txSlots: number): number {
  return 128 + rxSlots * (64 + 16 + 32 + 64) + txSlots * (64 + 16 + 32 + 32)
}

/**
 * What the gro worker (udp-worker.ts) and the uring worker (uring-worker.ts)
 * share: loading koffi and the C library, CPU pinning, the native memory with
 * its msghdrs, the socket setup and its report to bind(), the translation
 * between msghdrs and ring slots, and the end of the worker. Returns null
 * (after posting 'bind-error') when koffi or the C library cannot be loaded.
 *
 * Both workers run from their source text with this function passed in as a
 * parameter (`(main)(workerData, require, socketKit...)`), so it must stay
 * self-contained like them: no imports, no references to anything outside
 * this function, no syntax for which a bundler injects a helper, and modules
 * loaded with `load` (the worker's CommonJS `require`).
 */
export function socketKit(d: UdpWorkerData, load: (id: string) => unknown): SocketKit | null {
  const { parentPort } = load('node:worker_threads') as typeof import('node:worker_threads')
  const post = (message: UdpWorkerMessage): void => parentPort!.postMessage(message)

  // Linux (x86_64 and aarch64 share these).
  const AF_INET = 2
  const AF_INET6 = 10
  const SOCK_DGRAM = 2
  const SOCK_NONBLOCK = 0o4000
  const SOCK_CLOEXEC = 0o2000000
  const SOL_SOCKET = 1
  const SO_SNDBUF = 7
  const SO_RCVBUF = 8
  const SO_ERROR = 4
  const SO_REUSEPORT = 15
  const SO_SNDBUFFORCE = 32
  const SO_RCVBUFFORCE = 33
  const IPPROTO_IPV6 = 41
  const IPV6_V6ONLY = 26
  const SOL_UDP = 17
  const UDP_SEGMENT = 103
  const UDP_GRO = 104
  const MSG_TRUNC = 0x20
  const EMSGSIZE = 90
  const EAFNOSUPPORT = 97
  const MAPPED_WORD = 0xffff0000 | 0
  /** sizeof(struct mmsghdr) on LP64: msghdr (56) + msg_len (4) + padding; keeps every header on its own 64-byte boundary. */
  const MMSG = 64
  const IOV = 16
  /** Room for a sockaddr_in6 (28 bytes). */
  const NAME = 32
  /** Receive control buffer: one UDP_GRO cmsg needs CMSG_SPACE(4) = 24 bytes. */
  const RX_CTL = 64
  /** Send control buffer: one UDP_SEGMENT cmsg, CMSG_SPACE(2) = 24 bytes. */
  const TX_CTL = 32
  const TX_CMSG_SPACE = 24
  const TX_CMSG_LEN = 18

  const L = d.layout
  const { slot: S, rxSlots: R, txSlots: T } = L
  const SW = S.words
  const ctl = new Int32Array(d.control)
  const stats = new Float64Array(d.control, L.statsByteOffset, 16)

  let koffi: Koffi
  let lib: Library
  try {
    koffi = load(d.koffiPath) as Koffi
    lib = koffi.load(d.libcName)
  } catch (err) {
    post({
      type: 'bind-error',
      kind: 'unsupported',
      syscall: 'dlopen',
      errno: 0,
      message: `koffi or ${d.libcName} cannot be loaded in the worker: ${String(err)}`,
    })
    return null
  }
  const socket = lib.func('int socket(int domain, int type, int protocol)')
  const setsockopt = lib.func('int setsockopt(int fd, int level, int name, void *value, uint32_t length)')
  const getsockopt = lib.func('int getsockopt(int fd, int level, int name, void *value, void *length)')
  const bindSocket = lib.func('int bind(int fd, void *address, uint32_t length)')
  const getsockname = lib.func('int getsockname(int fd, void *address, void *length)')
  const readFd = lib.func('int64_t read(int fd, void *buffer, uint64_t count)')
  const closeFd = lib.func('int close(int fd)')
  const gettid = lib.func('int gettid()')
  const schedSetaffinity = lib.func('int sched_setaffinity(int pid, uint64_t size, void *mask)')

  // Pin this thread (pid 0 = the calling thread) before it touches any memory it will use.
  let affinityDetail = 'not pinned (no cpus option)'
  if (d.cpus.length > 0) {
    const mask = new Uint8Array(128) // cpu_set_t: 1024 bits
    for (const cpu of d.cpus) mask[cpu >> 3] = mask[cpu >> 3]! | (1 << (cpu & 7))
    affinityDetail =
      (schedSetaffinity(0, 128, mask) as number) === 0 ? `pinned to CPU ${d.cpus.join(',')}` : `sched_setaffinity failed (errno ${koffi.errno()}): not pinned`
  }

  // Native-side memory, laid out as
  //   scratch | rx msghdr[R] | rx iovec[R] | rx names[R] | rx control[R] | tx msghdr[T] | tx iovec[T] | tx names[T] | tx control[T]
  // Receive headers are per receive buffer, send headers per send slot. nativeMemoryBytes() computes SIZE likewise.
  // Scratch: bind sockaddr (32), int option (4 at 32), socklen (4 at 40), eventfd value (8 at 48), ioctl result (4 at 56), pollfd[2] (16 at 64).
  const SCRATCH = 0
  const OPT = 32
  const OPTLEN = 40
  const EVBUF = 48
  const OUTQ = 56
  const POLLFDS = 64
  const RX_MSG = 128
  const RX_IOV = RX_MSG + R * MMSG
  const RX_NAME = RX_IOV + R * IOV
  const RX_CTLS = RX_NAME + R * NAME
  const TX_MSG = RX_CTLS + R * RX_CTL
  const TX_IOV = TX_MSG + T * MMSG
  const TX_NAME = TX_IOV + T * IOV
  const TX_CTLS = TX_NAME + T * NAME
  const SIZE = TX_CTLS + T * TX_CTL

  let u8: Uint8Array = new Uint8Array(0)
  let i32: Int32Array = new Int32Array(0)
  let base = 0
  // Zero-copy sends: base address of each shared slab (the views keep them referenced).
  const slabViews = (d.sendSlabs ?? []).map((sab) => new Uint8Array(sab))
  let slabAddress: number[] = []
  const txBufferAddress = new Array<number>(T).fill(0)

  const attach = (memory: SharedArrayBuffer): NativeMemory => {
    u8 = new Uint8Array(memory)
    u8.fill(0)
    i32 = new Int32Array(memory)
    const dv = new DataView(memory)
    base = Number(koffi.address(u8))
    const setPointer = (at: number, address: number): void => dv.setBigUint64(at, BigInt(address), true)
    /** msghdr at `msg`: msg_name, msg_iov (one iovec), msg_control at these offsets. */
    const pointHeader = (msg: number, name: number, iov: number, control: number): void => {
      setPointer(msg, base + name)
      setPointer(msg + 16, base + iov)
      setPointer(msg + 24, 1)
      setPointer(msg + 32, base + control)
    }
    for (let b = 0; b < R; b++) {
      pointHeader(RX_MSG + b * MMSG, RX_NAME + b * NAME, RX_IOV + b * IOV, RX_CTLS + b * RX_CTL)
      const view = d.rxViews[b]!
      setPointer(RX_IOV + b * IOV, Number(koffi.address(view)))
      setPointer(RX_IOV + b * IOV + 8, Math.min(view.length, 65536))
    }
    slabAddress = [...slabViews.map((v) => Number(koffi.address(v))), ...(d.sendRegions ?? [])]
    for (let k = 0; k < T; k++) {
      pointHeader(TX_MSG + k * MMSG, TX_NAME + k * NAME, TX_IOV + k * IOV, TX_CTLS + k * TX_CTL)
      txBufferAddress[k] = Number(koffi.address(d.txViews[k]!))
      setPointer(TX_IOV + k * IOV, txBufferAddress[k]!)
      // The UDP_SEGMENT cmsg header never changes; only its value does.
      const c = TX_CTLS + k * TX_CTL
      setPointer(c, TX_CMSG_LEN)
      i32[(c + 8) >> 2] = SOL_UDP
      i32[(c + 12) >> 2] = UDP_SEGMENT
    }
    return { u8, i32, base, EVBUF, OUTQ, POLLFDS }
  }

  const setInt = (fd: number, level: number, name: number, value: number): number => {
    i32[OPT >> 2] = value
    return (setsockopt(fd, level, name, base + OPT, 4) as number) === 0 ? 0 : koffi.errno() || -1
  }
  const getInt = (fd: number, level: number, name: number): number => {
    i32[OPT >> 2] = 0
    i32[OPTLEN >> 2] = 4
    return (getsockopt(fd, level, name, base + OPT, base + OPTLEN) as number) === 0 ? i32[OPT >> 2]! : -(koffi.errno() || 1)
  }

  // -------------------------------------------------------------------------
  // Socket setup: every failure is reported to bind() and ends the worker.

  const b = d.bind
  let fd = -1
  const open = (extra: Partial<Pick<BoundMessage, 'ringFd' | 'ringMaps' | 'engineDetail'>>, onFail?: () => void): OpenSocket | null => {
    const bindFailed = (kind: 'socket' | 'unsupported', syscall: string, errno: number, message: string): null => {
      if (fd >= 0) closeFd(fd)
      onFail?.()
      post({ type: 'bind-error', kind, syscall, errno, message })
      return null
    }
    fd = socket(b.v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number
    if (fd < 0) return bindFailed('socket', 'socket', koffi.errno(), 'socket() failed')
    let err: number
    if (b.v6 && (err = setInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, b.ipv6Only ? 1 : 0)) !== 0) {
      return bindFailed('socket', 'setsockopt', err, 'setsockopt(IPV6_V6ONLY) failed')
    }
    const notes: string[] = []
    const buffer = (what: string, force: number, plain: number, bytes: number): void => {
      const forced = setInt(fd, SOL_SOCKET, force, bytes)
      if (forced === 0) {
        notes.push(`${what}FORCE ${bytes} accepted`)
        return
      }
      const plainErr = setInt(fd, SOL_SOCKET, plain, bytes)
      notes.push(
        plainErr === 0
          ? `${what}FORCE refused (errno ${forced}), ${what} ${bytes} used (capped by the sysctl limit)`
          : `${what}FORCE refused (errno ${forced}) and ${what} refused (errno ${plainErr})`,
      )
    }
    buffer('SO_SNDBUF', SO_SNDBUFFORCE, SO_SNDBUF, b.sendBufferSize)
    buffer('SO_RCVBUF', SO_RCVBUFFORCE, SO_RCVBUF, b.receiveBufferSize)
    if ((err = setInt(fd, SOL_UDP, UDP_GRO, 1)) !== 0) {
      return bindFailed('unsupported', 'setsockopt', err, 'setsockopt(SOL_UDP, UDP_GRO, 1) refused: this kernel has no UDP GRO (Linux 5.0+)')
    }
    // Setting the per-socket segment size to 0 changes nothing but proves the kernel knows UDP_SEGMENT.
    if ((err = setInt(fd, SOL_UDP, UDP_SEGMENT, 0)) !== 0) {
      return bindFailed('unsupported', 'setsockopt', err, 'setsockopt(SOL_UDP, UDP_SEGMENT) refused: this kernel has no UDP GSO (Linux 4.18+)')
    }
    // Don't Fragment (IP_MTU_DISCOVER / IPV6_MTU_DISCOVER = PROBE, Linux numbers; the same as
    // koffi/dont-fragment.ts, repeated because this file runs from its source text): a
    // datagram too large for the path is dropped, never fragmented. Path MTU discovery needs
    // it; without it the socket still works, the endpoint just does not probe.
    let dontFragment = true
    if (b.v6 && (err = setInt(fd, IPPROTO_IPV6, 23, 3)) !== 0) {
      dontFragment = false
      notes.push(`IPV6_MTU_DISCOVER refused (errno ${err}): no Don't Fragment`)
    }
    if (dontFragment && !(b.v6 && b.ipv6Only) && (err = setInt(fd, 0, 10, 3)) !== 0) {
      dontFragment = false
      notes.push(`IP_MTU_DISCOVER refused (errno ${err}): no Don't Fragment`)
    }
    if (dontFragment) notes.push("Don't Fragment set")
    if (b.reusePort === true && (err = setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1)) !== 0) {
      return bindFailed('socket', 'setsockopt', err, 'setsockopt(SOL_SOCKET, SO_REUSEPORT, 1) failed')
    }
    u8.fill(0, SCRATCH, SCRATCH + NAME)
    const port = b.port
    let nameLength: number
    if (b.v6) {
      i32[0] = AF_INET6 | ((port >>> 8) << 16) | ((port & 0xff) << 24)
      i32[2] = b.words[0]!
      i32[3] = b.words[1]!
      i32[4] = b.words[2]!
      i32[5] = b.words[3]!
      i32[6] = b.scope
      nameLength = 28
    } else {
      i32[0] = AF_INET | ((port >>> 8) << 16) | ((port & 0xff) << 24)
      i32[1] = b.words[3]!
      nameLength = 16
    }
    if ((bindSocket(fd, base + SCRATCH, nameLength) as number) !== 0) {
      return bindFailed('socket', 'bind', koffi.errno(), 'bind() failed')
    }
    i32[OPTLEN >> 2] = NAME
    if ((getsockname(fd, base + SCRATCH, base + OPTLEN) as number) !== 0) {
      return bindFailed('socket', 'getsockname', koffi.errno(), 'getsockname() failed')
    }
    const boundWords = [0, 0, 0, 0]
    let boundScope = 0
    const boundPort = (u8[2]! << 8) | u8[3]!
    if (b.v6) {
      for (let j = 0; j < 4; j++) boundWords[j] = i32[2 + j]!
      boundScope = i32[6]!
    } else {
      boundWords[2] = MAPPED_WORD
      boundWords[3] = i32[1]!
    }
    const sendBufferSize = Math.max(0, getInt(fd, SOL_SOCKET, SO_SNDBUF))
    const receiveBufferSize = Math.max(0, getInt(fd, SOL_SOCKET, SO_RCVBUF))
    notes.push(`kernel reports send ${sendBufferSize} B, receive ${receiveBufferSize} B`)
    post({
      type: 'bound',
      socketFd: fd,
      ...extra,
      words: boundWords,
      port: boundPort,
      scope: boundScope,
      sendBufferSize,
      receiveBufferSize,
      buffersDetail: notes.join('; '),
      dontFragment,
      threadId: gettid() as number,
      affinityDetail,
    })
    return { fd, sendBufferSize, receiveBufferSize }
  }

  // -------------------------------------------------------------------------
  // Between msghdrs and ring slots.

  const armReceive = (rb: number): number => {
    const w = (RX_MSG + rb * MMSG) >> 2
    i32[w + 2] = 28 // msg_namelen
    i32[w + 10] = RX_CTL // msg_controllen (low word; the high word stays 0)
    i32[w + 12] = 0 // msg_flags
    return base + RX_MSG + rb * MMSG
  }

  const receivedLength = (rb: number): number => i32[((RX_MSG + rb * MMSG) >> 2) + 14]! // msg_len

  const publishReceive = (k: number, rb: number, received: number): void => {
    const slot = L.rxBase + k * SW
    const w = (RX_MSG + rb * MMSG) >> 2
    let length = received
    if ((i32[w + 12]! & MSG_TRUNC) !== 0) {
      stats[L.stats.rxTruncated]!++
      length = -1 // the main thread skips the slot
    }
    // The UDP_GRO cmsg (an int) when the kernel coalesced; absent means one datagram.
    let segment = length
    const controlLength = i32[w + 10]! // written back by the kernel
    const c = RX_CTLS + rb * RX_CTL
    for (let p = 0; p + 16 <= controlLength; ) {
      const cl = i32[(c + p) >> 2]!
      if (i32[(c + p + 8) >> 2] === SOL_UDP && i32[(c + p + 12) >> 2] === UDP_GRO) {
        segment = i32[(c + p + 16) >> 2]!
        break
      }
      if (cl < 16) break
      p += (cl + 7) & ~7
    }
    const name = RX_NAME + rb * NAME
    ctl[slot + S.rxIndex] = d.rxIndexes[rb]!
    ctl[slot + S.rxBuffer] = rb
    ctl[slot + S.rxLength] = length
    ctl[slot + S.rxSegment] = segment
    ctl[slot + S.rxPort] = (u8[name + 2]! << 8) | u8[name + 3]!
    if ((u8[name]! | (u8[name + 1]! << 8)) === AF_INET6) {
      const nw = name >> 2
      ctl[slot + S.rxAddr] = i32[nw + 2]!
      ctl[slot + S.rxAddr + 1] = i32[nw + 3]!
      ctl[slot + S.rxAddr + 2] = i32[nw + 4]!
      ctl[slot + S.rxAddr + 3] = i32[nw + 5]!
      ctl[slot + S.rxScope] = i32[nw + 6]!
    } else {
      ctl[slot + S.rxAddr] = 0
      ctl[slot + S.rxAddr + 1] = 0
      ctl[slot + S.rxAddr + 2] = MAPPED_WORD
      ctl[slot + S.rxAddr + 3] = i32[(name >> 2) + 1]!
      ctl[slot + S.rxScope] = 0
    }
  }

  const v6 = b.v6
  const prepareSend = (k: number): number => {
    const slot = L.txBase + k * SW
    const length = ctl[slot + S.txLength]!
    const a0 = ctl[slot + S.txAddr]!
    const a1 = ctl[slot + S.txAddr + 1]!
    const a2 = ctl[slot + S.txAddr + 2]!
    const a3 = ctl[slot + S.txAddr + 3]!
    if (length === S.txTooLarge) return EMSGSIZE
    if (!v6 && !(a0 === 0 && a1 === 0 && a2 === MAPPED_WORD)) return EAFNOSUPPORT
    ctl[slot + S.txErrno] = 0
    const p = ctl[slot + S.txPort]!
    const nw = (TX_NAME + k * NAME) >> 2
    const w = (TX_MSG + k * MMSG) >> 2
    if (v6) {
      i32[nw] = AF_INET6 | ((p >>> 8) << 16) | ((p & 0xff) << 24)
      i32[nw + 1] = 0
      i32[nw + 2] = a0
      i32[nw + 3] = a1
      i32[nw + 4] = a2
      i32[nw + 5] = a3
      i32[nw + 6] = ctl[slot + S.txScope]!
      i32[w + 2] = 28
    } else {
      i32[nw] = AF_INET | ((p >>> 8) << 16) | ((p & 0xff) << 24)
      i32[nw + 1] = a3
      i32[nw + 2] = 0
      i32[nw + 3] = 0
      i32[w + 2] = 16
    }
    // iov_base: the slot's own buffer, or the shared slab the data already lives in.
    const zc = ctl[slot + S.txZcSlab]!
    const address = zc >= 0 && zc < slabAddress.length ? slabAddress[zc]! + ctl[slot + S.txZcOffset]! : txBufferAddress[k]!
    const iw = (TX_IOV + k * IOV) >> 2
    i32[iw] = address % 4294967296
    i32[iw + 1] = Math.floor(address / 4294967296)
    i32[iw + 2] = length // iov_len (low word)
    const segment = ctl[slot + S.txSegment]!
    if (segment > 0) {
      const c = TX_CTLS + k * TX_CTL
      u8[c + 16] = segment & 0xff
      u8[c + 17] = segment >>> 8
      i32[w + 10] = TX_CMSG_SPACE
    } else {
      i32[w + 10] = 0
    }
    i32[w + 12] = 0
    return 0
  }

  // -------------------------------------------------------------------------
  // The end of the worker.

  const fatalError = (syscall: string, errno: number): WorkerFatal => ({ fatalSyscall: syscall, errno })
  const wake = (): void => {
    Atomics.add(ctl, L.signal, 1)
    Atomics.notify(ctl, L.signal)
  }
  const run = (loop: () => void, cleanup: { settle?: () => void; release?: () => void } = {}): void => {
    let fatal: WorkerFatal | null = null
    try {
      loop()
    } catch (e) {
      fatal = typeof e === 'object' && e !== null && 'fatalSyscall' in e ? (e as WorkerFatal) : fatalError(`internal error ${String(e)}`, 0)
    } finally {
      cleanup.settle?.()
      Atomics.store(ctl, L.socketClosing, 1)
      cleanup.release?.()
      closeFd(fd)
      wake()
    }
    if (fatal !== null) post({ type: 'fatal', syscall: fatal.fatalSyscall, errno: fatal.errno, message: `${fatal.fatalSyscall} failed` })
  }

  return {
    koffi,
    lib,
    post,
    ctl,
    stats,
    readFd,
    closeFd,
    memoryBytes: SIZE,
    attach,
    open,
    armReceive,
    receivedLength,
    publishReceive,
    prepareSend,
    txHeader: (k) => base + TX_MSG + k * MMSG,
    takeSocketError: () => void getInt(fd, SOL_SOCKET, SO_ERROR),
    fatalError,
    wake,
    run,
  }
}
