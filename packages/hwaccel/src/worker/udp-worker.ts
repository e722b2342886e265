import type { ControlLayout } from './protocol.js'

type Koffi = typeof import('koffi').default

/** What the main thread hands the worker (structured-cloned; the SharedArrayBuffers are shared, not copied). */
export interface UdpWorkerData {
  /** Absolute path of koffi's CommonJS entry, resolved by the main thread. */
  koffiPath: string
  /** The C library the main thread loaded, e.g. `libc.so.6`. */
  libcName: string
  control: SharedArrayBuffer
  layout: ControlLayout
  /** Buffer of each receive slot (views into the shared pool) and its pool index. */
  rxViews: Uint8Array[]
  rxIndexes: number[]
  /** Buffer of each send slot. */
  txViews: Uint8Array[]
  /**
   * Shared slabs that send slots may point into instead of carrying a copy (zero-copy
   * sends: a packet pool shared with this worker). Their memory never moves.
   */
  sendSlabs?: SharedArrayBuffer[]
  bind: {
    v6: boolean
    /** Address words as the rings carry them (IPv4 as mapped). */
    words: number[]
    scope: number
    port: number
    ipv6Only: boolean
    sendBufferSize: number
    receiveBufferSize: number
  }
  /** The eventfd the main thread writes to wake the worker (the main thread owns and closes it). */
  eventFd: number
  /** poll() timeout: the longest the worker takes to notice a stop without a wake-up. */
  pollTimeoutMs: number
  /** Messages per recvmmsg / sendmmsg call. */
  receiveBatch: number
  sendBatch: number
  /** CPUs to pin the worker thread to (sched_setaffinity); empty: leave it where the kernel puts it. */
  cpus: number[]
}

export type UdpWorkerMessage =
  | {
      type: 'bound'
      /** The socket, for the main thread to close should the worker die without closing it. */
      socketFd: number
      /** Another descriptor the worker owns (the uring worker's ring), closed likewise. */
      ringFd?: number
      /** Memory the worker mapped from that descriptor (it keeps the ring alive): unmapped likewise. */
      ringMaps?: { address: number; length: number }[]
      /** What the worker says about its engine (the uring worker: ring setup and probes). */
      engineDetail?: string
      words: number[]
      port: number
      scope: number
      sendBufferSize: number
      receiveBufferSize: number
      buffersDetail: string
      /** The worker thread's kernel thread id, and what came of the CPU pinning. */
      threadId: number
      affinityDetail: string
    }
  | { type: 'bind-error'; kind: 'socket' | 'unsupported'; syscall: string; errno: number; message: string }
  | { type: 'fatal'; syscall: string; errno: number; message: string }

/**
 * The body of the UDP worker thread. It is run from its source text
 * (`Function.prototype.toString`), so it must stay self-contained: no
 * imports, no references to anything outside this function, no syntax for
 * which a bundler injects a helper (classes with fields, say), and modules are
 * loaded with the `load` parameter (the worker's CommonJS `require`): a
 * bundler rewrites a literal `require` call into its own shim.
 *
 * The worker owns one socket, opened and used only through koffi. It reads
 * with recvmmsg straight into the receive slots' pool buffers, with UDP_GRO on,
 * so that one message can carry many datagrams of one sender; it writes the
 * send slots with sendmmsg, each message with its own UDP_SEGMENT cmsg when it
 * holds several segments. Between bursts it blocks in poll() on the socket and
 * on an eventfd that the main thread writes when it has queued sends (or freed
 * receive slots after the ring was full), with a timeout so that it notices a
 * stop request even without a wake-up.
 */
export function udpWorkerMain(d: UdpWorkerData, load: (id: string) => unknown): void {
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
  const SO_SNDBUFFORCE = 32
  const SO_RCVBUFFORCE = 33
  const IPPROTO_IPV6 = 41
  const IPV6_V6ONLY = 26
  const SOL_UDP = 17
  const UDP_SEGMENT = 103
  const UDP_GRO = 104
  const MSG_DONTWAIT = 0x40
  const MSG_TRUNC = 0x20
  const POLLIN = 0x1
  const POLLOUT = 0x4
  const POLLERR = 0x8
  const POLLNVAL = 0x20
  const EINTR = 4
  const EBADF = 9
  const EAGAIN = 11
  const EFAULT = 14
  const EINVAL = 22
  const EMSGSIZE = 90
  const ENOTSOCK = 88
  const EAFNOSUPPORT = 97
  const MAPPED_WORD = 0xffff0000 | 0
  /** sizeof(struct mmsghdr) on LP64: msghdr (56) + msg_len (4) + padding. */
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
  const S = L.slot
  const R = L.rxSlots
  const T = L.txSlots
  const ctl = new Int32Array(d.control)
  const stats = new Float64Array(d.control, L.statsByteOffset, 8)

  let koffi: Koffi
  let lib: ReturnType<Koffi['load']>
  try {
    koffi = load(d.koffiPath) as Koffi
    lib = koffi.load(d.libcName)
  } catch (err) {
    post({ type: 'bind-error', kind: 'unsupported', syscall: 'dlopen', errno: 0, message: `koffi or ${d.libcName} cannot be loaded in the worker: ${String(err)}` })
    return
  }
  const socket = lib.func('int socket(int domain, int type, int protocol)')
  const setsockopt = lib.func('int setsockopt(int fd, int level, int name, void *value, uint32_t length)')
  const getsockopt = lib.func('int getsockopt(int fd, int level, int name, void *value, void *length)')
  const bindSocket = lib.func('int bind(int fd, void *address, uint32_t length)')
  const getsockname = lib.func('int getsockname(int fd, void *address, void *length)')
  const recvmmsg = lib.func('int recvmmsg(int fd, void *messages, uint32_t count, int flags, void *timeout)')
  const sendmmsg = lib.func('int sendmmsg(int fd, void *messages, uint32_t count, int flags)')
  const poll = lib.func('int poll(void *fds, uint64_t count, int timeout)')
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
      (schedSetaffinity(0, 128, mask) as number) === 0
        ? `pinned to CPU ${d.cpus.join(',')}`
        : `sched_setaffinity failed (errno ${koffi.errno()}): not pinned`
  }

  // Native-side memory: one SharedArrayBuffer (its memory never moves), laid out as
  //   scratch | rx mmsghdr[R] | rx iovec[R] | rx names[R] | rx control[R] | tx mmsghdr[T] | ...
  const SCRATCH = 0 // bind sockaddr (32), int option (4 at 32), socklen (4 at 40), eventfd value (8 at 48), pollfd[2] (16 at 64)
  const OPT = 32
  const OPTLEN = 40
  const EVBUF = 48
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
  const mem = new SharedArrayBuffer(SIZE)
  const u8 = new Uint8Array(mem)
  const i32 = new Int32Array(mem)
  const dv = new DataView(mem)
  const base = Number(koffi.address(u8))
  const setPointer = (at: number, address: number): void => dv.setBigUint64(at, BigInt(address), true)

  for (let k = 0; k < R; k++) {
    const msg = RX_MSG + k * MMSG
    setPointer(msg, base + RX_NAME + k * NAME)
    setPointer(msg + 16, base + RX_IOV + k * IOV)
    setPointer(msg + 24, 1)
    setPointer(msg + 32, base + RX_CTLS + k * RX_CTL)
    const view = d.rxViews[k]!
    setPointer(RX_IOV + k * IOV, Number(koffi.address(view)))
    setPointer(RX_IOV + k * IOV + 8, Math.min(view.length, 65536))
  }
  // Zero-copy sends: base address of each shared slab (the views keep them referenced).
  const slabViews = (d.sendSlabs ?? []).map((sab) => new Uint8Array(sab))
  const slabAddress = slabViews.map((v) => Number(koffi.address(v)))
  const txBufferAddress = new Array<number>(T).fill(0)
  for (let k = 0; k < T; k++) {
    const msg = TX_MSG + k * MMSG
    setPointer(msg, base + TX_NAME + k * NAME)
    setPointer(msg + 16, base + TX_IOV + k * IOV)
    setPointer(msg + 24, 1)
    setPointer(msg + 32, base + TX_CTLS + k * TX_CTL)
    txBufferAddress[k] = Number(koffi.address(d.txViews[k]!))
    setPointer(TX_IOV + k * IOV, txBufferAddress[k]!)
    // The UDP_SEGMENT cmsg header never changes; only its value does.
    const c = TX_CTLS + k * TX_CTL
    setPointer(c, TX_CMSG_LEN)
    i32[(c + 8) >> 2] = SOL_UDP
    i32[(c + 12) >> 2] = UDP_SEGMENT
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
  const efd = d.eventFd
  let fd = -1
  const bindFailed = (kind: 'socket' | 'unsupported', syscall: string, errno: number, message: string): void => {
    if (fd >= 0) closeFd(fd)
    post({ type: 'bind-error', kind, syscall, errno, message })
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
    words: boundWords,
    port: boundPort,
    scope: boundScope,
    sendBufferSize,
    receiveBufferSize,
    buffersDetail: notes.join('; '),
    threadId: gettid() as number,
    affinityDetail,
  })

  // -------------------------------------------------------------------------
  // The loop.

  const v6 = b.v6
  const rxBase = L.rxBase
  const txBase = L.txBase
  const SW = S.words
  let rxHead = Atomics.load(ctl, L.rxHead)
  let txTail = Atomics.load(ctl, L.txTail)
  let txBlocked = false
  let lastRxTail = 0

  /** What the loop throws when the socket is unusable (a plain object: no class in here). */
  interface Fatal {
    fatalSyscall: string
    errno: number
  }
  const fatalError = (syscall: string, errno: number): Fatal => ({ fatalSyscall: syscall, errno })

  /** Read into free receive slots. Returns slots published, 0 when the socket had nothing, -1 when the ring is full. */
  const receive = (): number => {
    const tail = Atomics.load(ctl, L.rxTail)
    lastRxTail = tail
    const free = R - ((rxHead - tail) | 0)
    if (free <= 0) return -1
    const k = rxHead & (R - 1)
    let n = R - k
    if (free < n) n = free
    if (d.receiveBatch < n) n = d.receiveBatch
    for (let i = k; i < k + n; i++) {
      const w = (RX_MSG + i * MMSG) >> 2
      i32[w + 2] = 28 // msg_namelen
      i32[w + 10] = RX_CTL // msg_controllen (low word; the high word stays 0)
      i32[w + 12] = 0 // msg_flags
    }
    const got = recvmmsg(fd, base + RX_MSG + k * MMSG, n, MSG_DONTWAIT, null) as number
    stats[L.stats.receiveSyscalls]!++
    if (got <= 0) {
      if (got === 0) return 0
      const e = koffi.errno()
      if (e === EBADF || e === EFAULT || e === EINVAL || e === ENOTSOCK) throw fatalError('recvmmsg', e)
      return 0 // EAGAIN, EINTR, or an error queued by ICMP: nothing to read now
    }
    for (let i = k; i < k + got; i++) {
      const w = (RX_MSG + i * MMSG) >> 2
      const slot = rxBase + i * SW
      let length = i32[w + 14]! // msg_len
      if ((i32[w + 12]! & MSG_TRUNC) !== 0) {
        stats[L.stats.rxTruncated]!++
        length = -1 // the main thread skips the slot
      }
      // The UDP_GRO cmsg (an int) when the kernel coalesced; absent means one datagram.
      let segment = length
      const controlLength = i32[w + 10]!
      const c = RX_CTLS + i * RX_CTL
      for (let p = 0; p + 16 <= controlLength; ) {
        const cl = i32[(c + p) >> 2]!
        if (i32[(c + p + 8) >> 2] === SOL_UDP && i32[(c + p + 12) >> 2] === UDP_GRO) {
          segment = i32[(c + p + 16) >> 2]!
          break
        }
        if (cl < 16) break
        p += (cl + 7) & ~7
      }
      const name = RX_NAME + i * NAME
      ctl[slot + S.rxIndex] = d.rxIndexes[i]!
      ctl[slot + S.rxBuffer] = i
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
    rxHead = (rxHead + got) | 0
    Atomics.store(ctl, L.rxHead, rxHead)
    return got
  }

  /** Fail the oldest send slot without a syscall (or after the kernel refused it) and complete it. */
  const failSend = (errno: number): void => {
    const slot = txBase + (txTail & (T - 1)) * SW
    ctl[slot + S.txErrno] = errno
    stats[L.stats.sendErrors]!++
    Atomics.store(ctl, L.lastSendErrno, errno)
    txTail = (txTail + 1) | 0
    Atomics.store(ctl, L.txTail, txTail)
  }

  /** Write queued send slots. Returns slots completed (sent or failed). */
  const send = (): number => {
    const head = Atomics.load(ctl, L.txHead)
    const pending = (head - txTail) | 0
    if (pending <= 0) return 0
    const k = txTail & (T - 1)
    let n = T - k
    if (pending < n) n = pending
    if (d.sendBatch < n) n = d.sendBatch
    // Prepare messages up to the first one that cannot be sent at all.
    let m = 0
    for (; m < n; m++) {
      const i = k + m
      const slot = txBase + i * SW
      const length = ctl[slot + S.txLength]!
      const a0 = ctl[slot + S.txAddr]!
      const a1 = ctl[slot + S.txAddr + 1]!
      const a2 = ctl[slot + S.txAddr + 2]!
      const a3 = ctl[slot + S.txAddr + 3]!
      const mapped = a0 === 0 && a1 === 0 && a2 === MAPPED_WORD
      if (length === S.txTooLarge || (!v6 && !mapped)) {
        if (m === 0) {
          failSend(length === S.txTooLarge ? EMSGSIZE : EAFNOSUPPORT)
          return 1
        }
        break
      }
      ctl[slot + S.txErrno] = 0
      const p = ctl[slot + S.txPort]!
      const nw = (TX_NAME + i * NAME) >> 2
      const w = (TX_MSG + i * MMSG) >> 2
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
      const address = zc >= 0 && zc < slabAddress.length ? slabAddress[zc]! + ctl[slot + S.txZcOffset]! : txBufferAddress[i]!
      const iw = (TX_IOV + i * IOV) >> 2
      i32[iw] = address % 4294967296
      i32[iw + 1] = Math.floor(address / 4294967296)
      i32[iw + 2] = length // iov_len (low word)
      const segment = ctl[slot + S.txSegment]!
      if (segment > 0) {
        const c = TX_CTLS + i * TX_CTL
        u8[c + 16] = segment & 0xff
        u8[c + 17] = segment >>> 8
        i32[w + 10] = TX_CMSG_SPACE
      } else {
        i32[w + 10] = 0
      }
      i32[w + 12] = 0
    }
    const sent = sendmmsg(fd, base + TX_MSG + k * MMSG, m, 0) as number
    stats[L.stats.sendSyscalls]!++
    if (sent > 0) {
      txTail = (txTail + sent) | 0
      Atomics.store(ctl, L.txTail, txTail)
      return sent
    }
    const e = koffi.errno()
    if (e === EAGAIN) {
      txBlocked = true
      stats[L.stats.sendWaits]!++
      return 0
    }
    if (e === EINTR) return 0
    if (e === EBADF || e === EFAULT || e === ENOTSOCK) throw fatalError('sendmmsg', e)
    // This message cannot go (EMSGSIZE, EINVAL for a segment size over the MTU,
    // ENETUNREACH, EPERM from a firewall...): a lost datagram, QUIC recovers.
    failSend(e)
    return 1
  }

  const wake = (): void => {
    Atomics.add(ctl, L.signal, 1)
    Atomics.notify(ctl, L.signal)
  }

  const pollWords = POLLFDS >> 2
  let fatal: Fatal | null = null
  try {
    for (;;) {
      if (Atomics.load(ctl, L.stop) !== 0) break
      let progress = 0
      if (!txBlocked) progress += send()
      const got = receive()
      if (got > 0) progress += got
      if (progress > 0) {
        wake()
        continue
      }
      // Nothing to do: sleep in poll() until the socket or the eventfd is ready.
      const rxFull = got < 0
      if (rxFull) stats[L.stats.rxRingFull]!++
      Atomics.store(ctl, L.sleep, rxFull ? L.sleepStates.rxFull : L.sleepStates.polling)
      if (
        (!txBlocked && Atomics.load(ctl, L.txHead) !== txTail) ||
        (rxFull && Atomics.load(ctl, L.rxTail) !== lastRxTail) ||
        Atomics.load(ctl, L.stop) !== 0
      ) {
        Atomics.store(ctl, L.sleep, L.sleepStates.awake)
        continue
      }
      i32[pollWords] = fd
      i32[pollWords + 1] = (rxFull ? 0 : POLLIN) | (txBlocked ? POLLOUT : 0) // events (short) | revents (short) = 0
      i32[pollWords + 2] = efd
      i32[pollWords + 3] = POLLIN
      const ready = poll(base + POLLFDS, 2, d.pollTimeoutMs) as number
      stats[L.stats.polls]!++
      Atomics.store(ctl, L.sleep, L.sleepStates.awake)
      if (ready < 0) {
        const e = koffi.errno()
        if (e !== EINTR) throw fatalError('poll', e)
        continue
      }
      if (ready === 0) continue
      const socketEvents = i32[pollWords + 1]! >>> 16
      if ((socketEvents & POLLNVAL) !== 0) throw fatalError('poll', EBADF)
      if ((socketEvents & POLLOUT) !== 0) txBlocked = false
      // A pending socket error (ICMP): read it to clear the condition; the datagram it concerns is lost.
      if ((socketEvents & POLLERR) !== 0) getInt(fd, SOL_SOCKET, SO_ERROR)
      if (((i32[pollWords + 3]! >>> 16) & POLLIN) !== 0) readFd(efd, base + EVBUF, 8)
    }
    // Stopping: give what is already queued one chance to leave (a CONNECTION_CLOSE, say),
    // without waiting for the socket to drain.
    for (let round = 0; round < T && !txBlocked; round++) if (send() === 0) break
  } catch (e) {
    fatal = typeof e === 'object' && e !== null && 'fatalSyscall' in e ? (e as Fatal) : fatalError(`internal error ${String(e)}`, 0)
  } finally {
    Atomics.store(ctl, L.socketClosing, 1)
    closeFd(fd)
    wake()
  }
  if (fatal !== null) post({ type: 'fatal', syscall: fatal.fatalSyscall, errno: fatal.errno, message: `${fatal.fatalSyscall} failed` })
}
