import type { UringKit } from './uring-kit.js'
import type { UdpWorkerData, UdpWorkerMessage } from './udp-worker.js'

type Koffi = typeof import('koffi').default
type Library = ReturnType<Koffi['load']>

/** What the uring worker needs on top of the gro worker's data. */
export interface UringWorkerData extends UdpWorkerData {
  uring: {
    /** RECVMSG requests kept in flight, each into its own receive buffer. */
    receiveDepth: number
    /** io_uring_setup flag sets, tried in order until the kernel accepts one. */
    setupFlags: number[]
    /** How long each bind-time probe (NOP, loopback send/receive) may wait for its completion. */
    probeWaitMs: number
    /**
     * The worker's native-side memory (msghdrs, sockaddrs, cmsgs, at least
     * `uringMemoryBytes(rxSlots, txSlots)`), allocated by the main thread so
     * that it outlives a worker killed while the kernel still holds requests
     * pointing into it.
     */
    memory: SharedArrayBuffer
  }
}

/** Bytes of the uring worker's native-side memory for the given ring sizes (see the layout in `uringWorkerMain`). */
export function uringMemoryBytes(rxSlots: number, txSlots: number): number {
  return 128 + rxSlots * (64 + 16 + 32 + 64) + txSlots * (64 + 16 + 32 + 32)
}

/**
 * The body of the uring worker thread: the same job and the same shared rings
 * as the gro worker (worker/udp-worker.ts, worker/protocol.ts), but the socket
 * is driven through an io_uring instead of recvmmsg / sendmmsg / poll. Run from
 * its source text, so self-contained like `udpWorkerMain`; the io_uring helpers
 * come in as `makeKit` (worker/uring-kit.ts, also run from its source text).
 *
 * At start it proves io_uring works before it opens the socket: a ring is set
 * up, IORING_REGISTER_PROBE must list the opcodes used, a NOP must complete,
 * and a two-segment GSO message must go through SENDMSG and come back through
 * RECVMSG on a loopback socket of its own. Any failure is reported as
 * 'unsupported', so that bind() rejects with StoqUnsupportedError.
 *
 * The loop, one io_uring_enter per round:
 * - receive: up to `receiveDepth` IORING_OP_RECVMSG requests are in flight,
 *   each into a free receive buffer, with UDP_GRO on so that one completion
 *   carries up to 64 KiB of datagrams of one sender (segment size in the
 *   cmsg). Completions are published to the receive ring in completion order
 *   (the order in which the kernel dequeued the datagrams), each ring slot
 *   naming the buffer it used; buffers come back when the main thread frees
 *   their slots.
 * - send: queued send slots go out as a batch of up to `sendBatch`
 *   IORING_OP_SENDMSG requests (each with a UDP_SEGMENT cmsg when it holds
 *   several segments), in ring order, with MSG_DONTWAIT: the kernel issues them
 *   during the submit, in SQE order, and one that finds the socket buffer full
 *   completes with -EAGAIN instead of waiting for space in the background
 *   (where waiters are not woken in order). Order across a refusal: UDP refuses
 *   a send only while the bytes it holds (sk_wmem_alloc) reach SO_SNDBUF, so
 *   before a batch the worker reads them (ioctl SIOCOUTQ) and sends unlinked
 *   only the prefix whose worst-case memory charge stays below the buffer; the
 *   rest goes as an IOSQE_IO_LINK chain, in which a refusal cancels the sends
 *   after it. Unlinked is the fast path (each link step costs the kernel a
 *   task-work round trip, measured about 30% more worker time per datagram);
 *   when the buffer is close to full (a bottleneck link), the chain keeps the
 *   order. Refused and cancelled slots are sent again, oldest first, once a
 *   POLL_ADD(POLLOUT) on the socket has completed. A failed send (EMSGSIZE,
 *   EACCES...) completes with its errno, like the gro backend.
 * - wake-ups: an IORING_OP_POLL_ADD on the eventfd the main thread writes
 *   when it queued sends (or freed receive slots while no receive was in
 *   flight) while the worker slept.
 * While there is work it submits and reaps without waiting; when a round
 * found nothing, it records that it sleeps (W_SLEEP) and waits in
 * io_uring_enter for one completion, at most `pollTimeoutMs` where the kernel
 * supports a timed wait, so that a stop request is seen even without a
 * wake-up.
 *
 * On stop, queued sends get one short chance to leave, every request still in
 * flight is cancelled (IORING_OP_ASYNC_CANCEL) and reaped, so that the kernel
 * no longer touches the buffers, then the socket and the ring are closed.
 */
export function uringWorkerMain(d: UringWorkerData, load: (id: string) => unknown, makeKit: (koffi: Koffi, lib: Library) => UringKit): void {
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
  const SO_SNDBUFFORCE = 32
  const SO_RCVBUFFORCE = 33
  const IPPROTO_IPV6 = 41
  const IPV6_V6ONLY = 26
  const SOL_UDP = 17
  const UDP_SEGMENT = 103
  const UDP_GRO = 104
  const MSG_TRUNC = 0x20
  const POLLIN = 0x1
  const POLLOUT = 0x4
  const EINTR = 4
  const EBADF = 9
  const EAGAIN = 11
  const EFAULT = 14
  const EBUSY = 16
  const EINVAL = 22
  const ETIME = 62
  const ENOTSOCK = 88
  const EMSGSIZE = 90
  const EAFNOSUPPORT = 97
  const ECANCELED = 125
  const MAPPED_WORD = 0xffff0000 | 0
  // io_uring opcodes and SQE flags (include/uapi/linux/io_uring.h).
  const OP_NOP = 0
  const OP_POLL_ADD = 6
  const OP_SENDMSG = 9
  const OP_RECVMSG = 10
  const OP_ASYNC_CANCEL = 14
  const MSG_DONTWAIT = 0x40
  const IOSQE_IO_LINK = 1 << 2
  /** ioctl SIOCOUTQ (= TIOCOUTQ): bytes a UDP socket holds in its send buffer (sk_wmem_alloc). */
  const SIOCOUTQ = 0x5411
  /** Worst-case send-buffer charge of a message (skb truesize): twice its bytes plus 4 KiB. */
  const chargeOf = (bytes: number): number => 2 * bytes + 4096
  // user_data: kind << 24 | index.
  const K_RECV = 1
  const K_SEND = 2
  const K_WAKE = 3
  const K_WRITABLE = 4
  const K_CANCEL = 5
  /** sizeof(struct msghdr) on LP64 is 56; 64 keeps every header on its own 64-byte boundary. */
  const MMSG = 64
  const IOV = 16
  const NAME = 32
  const RX_CTL = 64
  const TX_CTL = 32
  const TX_CMSG_SPACE = 24
  const TX_CMSG_LEN = 18
  /** Send slot states from txTail on: queued (0: not handed over, or refused and to be sent again), done (sent or failed for good), in flight. */
  const TX_DONE = 1
  const TX_FLIGHT = 2

  const L = d.layout
  const S = L.slot
  const R = L.rxSlots
  const T = L.txSlots
  const ctl = new Int32Array(d.control)
  const stats = new Float64Array(d.control, L.statsByteOffset, 16)

  let koffi: Koffi
  let lib: Library
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
  const readFd = lib.func('int64_t read(int fd, void *buffer, uint64_t count)')
  const ioctl = lib.func('int ioctl(int fd, unsigned long request, ...)')
  const closeFd = lib.func('int close(int fd)')
  const gettid = lib.func('int gettid()')
  const schedSetaffinity = lib.func('int sched_setaffinity(int pid, uint64_t size, void *mask)')

  let affinityDetail = 'not pinned (no cpus option)'
  if (d.cpus.length > 0) {
    const mask = new Uint8Array(128)
    for (const cpu of d.cpus) mask[cpu >> 3] = mask[cpu >> 3]! | (1 << (cpu & 7))
    affinityDetail =
      (schedSetaffinity(0, 128, mask) as number) === 0
        ? `pinned to CPU ${d.cpus.join(',')}`
        : `sched_setaffinity failed (errno ${koffi.errno()}): not pinned`
  }

  // -------------------------------------------------------------------------
  // The ring, and the proof that it works.

  const kit = makeKit(koffi, lib)
  const depth = d.uring.receiveDepth
  let entries = 8
  while (entries < depth + d.sendBatch + 4) entries <<= 1
  const made = kit.setup(entries, d.uring.setupFlags)
  if (!made.ok) {
    const hint =
      made.errno === 38
        ? ': the kernel has no io_uring, or a seccomp filter (a container default profile, say) blocks it'
        : made.errno === 1
          ? ': refused by kernel.io_uring_disabled / io_uring_group, seccomp or an LSM'
          : ''
    post({ type: 'bind-error', kind: 'unsupported', syscall: made.syscall, errno: made.errno, message: `io_uring unavailable: ${made.message}${hint}` })
    return
  }
  const ring = made.ring
  const checks = [
    () => kit.probeOpcodes(ring, [OP_NOP, OP_POLL_ADD, OP_SENDMSG, OP_RECVMSG, OP_ASYNC_CANCEL]),
    () => kit.nop(ring, d.uring.probeWaitMs),
    () => kit.loopback(ring, d.uring.probeWaitMs),
  ]
  const proofs: string[] = []
  for (const check of checks) {
    let r: { ok: boolean; errno: number; syscall: string; detail: string }
    try {
      r = check()
    } catch (err) {
      r = { ok: false, errno: 0, syscall: 'koffi', detail: String(err) }
    }
    if (!r.ok) {
      ring.close()
      post({ type: 'bind-error', kind: 'unsupported', syscall: r.syscall, errno: r.errno, message: `io_uring probe failed: ${r.detail}` })
      return
    }
    proofs.push(r.detail)
  }
  const ringDetail =
    `io_uring ${made.tried}, ${ring.sqEntries} SQ / ${ring.cqEntries} CQ entries, features 0x${(ring.features >>> 0).toString(16)}` +
    `${ring.timedWait ? '' : ' (no timed wait: stop relies on the eventfd)'}; ${proofs.join('; ')}`

  // Native-side memory, one SharedArrayBuffer of the main thread's (it never moves, and outlives this thread):
  //   scratch | rx msghdr[R] | rx iovec[R] | rx names[R] | rx control[R] | tx msghdr[T] | tx iovec[T] | tx names[T] | tx control[T]
  // Receive headers are per buffer, send headers per send slot. uringMemoryBytes() computes SIZE likewise.
  const SCRATCH = 0
  const OPT = 32
  const OPTLEN = 40
  const EVBUF = 48
  const OUTQ = 56
  const RX_MSG = 128
  const RX_IOV = RX_MSG + R * MMSG
  const RX_NAME = RX_IOV + R * IOV
  const RX_CTLS = RX_NAME + R * NAME
  const TX_MSG = RX_CTLS + R * RX_CTL
  const TX_IOV = TX_MSG + T * MMSG
  const TX_NAME = TX_IOV + T * IOV
  const TX_CTLS = TX_NAME + T * NAME
  const SIZE = TX_CTLS + T * TX_CTL
  const mem = d.uring.memory
  if (mem.byteLength < SIZE) {
    ring.close()
    post({ type: 'bind-error', kind: 'socket', syscall: 'worker', errno: 0, message: `native memory of ${mem.byteLength} bytes, ${SIZE} needed` })
    return
  }
  new Uint8Array(mem).fill(0)
  const u8 = new Uint8Array(mem)
  const i32 = new Int32Array(mem)
  const dv = new DataView(mem)
  const base = Number(koffi.address(u8))
  const setPointer = (at: number, address: number): void => dv.setBigUint64(at, BigInt(address), true)

  for (let b = 0; b < R; b++) {
    const msg = RX_MSG + b * MMSG
    setPointer(msg, base + RX_NAME + b * NAME)
    setPointer(msg + 16, base + RX_IOV + b * IOV)
    setPointer(msg + 24, 1)
    setPointer(msg + 32, base + RX_CTLS + b * RX_CTL)
    const view = d.rxViews[b]!
    setPointer(RX_IOV + b * IOV, Number(koffi.address(view)))
    setPointer(RX_IOV + b * IOV + 8, Math.min(view.length, 65536))
  }
  for (let k = 0; k < T; k++) {
    const msg = TX_MSG + k * MMSG
    setPointer(msg, base + TX_NAME + k * NAME)
    setPointer(msg + 16, base + TX_IOV + k * IOV)
    setPointer(msg + 24, 1)
    setPointer(msg + 32, base + TX_CTLS + k * TX_CTL)
    setPointer(TX_IOV + k * IOV, Number(koffi.address(d.txViews[k]!)))
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
  // Socket setup (as the gro worker): every failure is reported to bind() and ends the worker.

  const b0 = d.bind
  const efd = d.eventFd
  let fd = -1
  const bindFailed = (kind: 'socket' | 'unsupported', syscall: string, errno: number, message: string): void => {
    if (fd >= 0) closeFd(fd)
    ring.close()
    post({ type: 'bind-error', kind, syscall, errno, message })
  }
  fd = socket(b0.v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number
  if (fd < 0) return bindFailed('socket', 'socket', koffi.errno(), 'socket() failed')
  let err: number
  if (b0.v6 && (err = setInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, b0.ipv6Only ? 1 : 0)) !== 0) {
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
  buffer('SO_SNDBUF', SO_SNDBUFFORCE, SO_SNDBUF, b0.sendBufferSize)
  buffer('SO_RCVBUF', SO_RCVBUFFORCE, SO_RCVBUF, b0.receiveBufferSize)
  if ((err = setInt(fd, SOL_UDP, UDP_GRO, 1)) !== 0) {
    return bindFailed('unsupported', 'setsockopt', err, 'setsockopt(SOL_UDP, UDP_GRO, 1) refused: this kernel has no UDP GRO (Linux 5.0+)')
  }
  if ((err = setInt(fd, SOL_UDP, UDP_SEGMENT, 0)) !== 0) {
    return bindFailed('unsupported', 'setsockopt', err, 'setsockopt(SOL_UDP, UDP_SEGMENT) refused: this kernel has no UDP GSO (Linux 4.18+)')
  }
  u8.fill(0, SCRATCH, SCRATCH + NAME)
  const port = b0.port
  let nameLength: number
  if (b0.v6) {
    i32[0] = AF_INET6 | ((port >>> 8) << 16) | ((port & 0xff) << 24)
    i32[2] = b0.words[0]!
    i32[3] = b0.words[1]!
    i32[4] = b0.words[2]!
    i32[5] = b0.words[3]!
    i32[6] = b0.scope
    nameLength = 28
  } else {
    i32[0] = AF_INET | ((port >>> 8) << 16) | ((port & 0xff) << 24)
    i32[1] = b0.words[3]!
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
  if (b0.v6) {
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
    ringFd: ring.fd,
    ringMaps: ring.mappings(),
    engineDetail: ringDetail,
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

  const v6 = b0.v6
  const rxBase = L.rxBase
  const txBase = L.txBase
  const SW = S.words
  const sendBatch = d.sendBatch
  let rxHead = Atomics.load(ctl, L.rxHead)
  let lastRxTail = Atomics.load(ctl, L.rxTail)
  let txTail = Atomics.load(ctl, L.txTail)
  /** The send ring head seen by the last postSends. */
  let txSeen = txTail
  /** Free receive buffers (a stack), and which buffer each receive ring slot carries. */
  const freeBuffers = new Int32Array(R)
  let freeCount = 0
  for (let b = R - 1; b >= 0; b--) freeBuffers[freeCount++] = b
  const slotBuffer = new Int32Array(R)
  /** Whether a RECVMSG into buffer b is in flight (for the cancellation at the end). */
  const receiving = new Uint8Array(R)
  const txState = new Uint8Array(T)
  let recvInFlight = 0
  let sendsInFlight = 0
  /** A send came back EAGAIN: nothing more goes out until the POLL_ADD(POLLOUT) below completes. */
  let txBlocked = false
  let writableArmed = false
  /** Send slots of the batch being prepared. */
  const batch = new Int32Array(sendBatch)
  /** In the batch being reaped: a send was refused with EAGAIN (a later success is out of order). */
  let refusedInBatch = false
  let wakeArmed = false
  let published = false

  interface Fatal {
    fatalSyscall: string
    errno: number
  }
  const fatalError = (syscall: string, errno: number): Fatal => ({ fatalSyscall: syscall, errno })
  const tagOf = (kind: number, index: number): number => (kind << 24) | index

  /** Put a received buffer into the next receive ring slot (published by the caller). */
  const publishReceive = (b: number, res: number): void => {
    const k = rxHead & (R - 1)
    const slot = rxBase + k * SW
    const w = (RX_MSG + b * MMSG) >> 2
    let length = res
    if ((i32[w + 12]! & MSG_TRUNC) !== 0) {
      stats[L.stats.rxTruncated]!++
      length = -1
    }
    let segment = length
    const controlLength = i32[w + 10]! // written back by the kernel at completion
    const c = RX_CTLS + b * RX_CTL
    for (let p = 0; p + 16 <= controlLength; ) {
      const cl = i32[(c + p) >> 2]!
      if (i32[(c + p + 8) >> 2] === SOL_UDP && i32[(c + p + 12) >> 2] === UDP_GRO) {
        segment = i32[(c + p + 16) >> 2]!
        break
      }
      if (cl < 16) break
      p += (cl + 7) & ~7
    }
    const name = RX_NAME + b * NAME
    ctl[slot + S.rxIndex] = d.rxIndexes[b]!
    ctl[slot + S.rxBuffer] = b
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
    slotBuffer[k] = b
    rxHead = (rxHead + 1) | 0
  }

  /** Complete a send slot with an errno, without (or after) the kernel. */
  const failSlot = (k: number, errno: number): void => {
    ctl[txBase + k * SW + S.txErrno] = errno
    stats[L.stats.sendErrors]!++
    Atomics.store(ctl, L.lastSendErrno, errno)
    txState[k] = TX_DONE
  }

  /** Report the slots at the tail that are done, in ring order. */
  const advanceSends = (): void => {
    const start = txTail
    while (txTail !== txSeen && txState[txTail & (T - 1)] === TX_DONE) {
      txState[txTail & (T - 1)] = 0
      txTail = (txTail + 1) | 0
    }
    if (txTail !== start) {
      Atomics.store(ctl, L.txTail, txTail)
      published = true
    }
  }

  /** Handle every ready completion. Returns how many there were. */
  const reap = (): number => {
    const n = ring.ready()
    if (n === 0) return 0
    const headBefore = rxHead
    let sendsEnded = false
    refusedInBatch = false
    for (let i = 0; i < n; i++) {
      const tag = ring.tag(i)
      const res = ring.res(i)
      const kind = tag >>> 24
      const index = tag & 0xffffff
      if (kind === K_RECV) {
        recvInFlight--
        receiving[index] = 0
        if (res >= 0) {
          publishReceive(index, res)
          continue
        }
        freeBuffers[freeCount++] = index
        const e = -res
        if (e === EBADF || e === EFAULT || e === EINVAL || e === ENOTSOCK) throw fatalError('recvmsg', e)
        stats[L.stats.receiveRetries]!++ // EAGAIN, EINTR, ECANCELED, an ICMP error: nothing read, post again
      } else if (kind === K_SEND) {
        sendsInFlight--
        sendsEnded = true
        if (res >= 0) {
          txState[index] = TX_DONE
          if (refusedInBatch) stats[L.stats.sendReordered]!++
          continue
        }
        const e = -res
        if (e === EAGAIN || e === EINTR || e === ECANCELED) {
          // Not sent (refused, or cancelled behind a refusal in its chain): queued again, sent once the socket is writable.
          txState[index] = 0
          stats[L.stats.sendRetries]!++
          if (e === EAGAIN) {
            if (!txBlocked) stats[L.stats.sendWaits]!++
            txBlocked = true
            refusedInBatch = true
          }
        } else if (e === EBADF || e === EFAULT || e === ENOTSOCK) {
          throw fatalError('sendmsg', e)
        } else {
          // This message cannot go (EMSGSIZE, EINVAL for a segment size over the MTU,
          // ENETUNREACH, EPERM from a firewall...): a lost datagram, QUIC recovers.
          failSlot(index, e)
        }
      } else if (kind === K_WRITABLE) {
        writableArmed = false
        txBlocked = false // writable, or the poll failed: either way, try the sends again
      } else if (kind === K_WAKE) {
        wakeArmed = false
        readFd(efd, base + EVBUF, 8) // reset the eventfd counter (non-blocking)
      }
      // K_CANCEL: nothing to do, the cancelled request reports itself.
    }
    ring.consume(n)
    if (rxHead !== headBefore) {
      Atomics.store(ctl, L.rxHead, rxHead)
      published = true
    }
    if (sendsEnded) advanceSends()
    return n
  }

  /** Take back the buffers the main thread freed and keep `depth` receives in flight. */
  const postReceives = (): number => {
    const tail = Atomics.load(ctl, L.rxTail)
    while (lastRxTail !== tail) {
      freeBuffers[freeCount++] = slotBuffer[lastRxTail & (R - 1)]!
      lastRxTail = (lastRxTail + 1) | 0
    }
    let posted = 0
    while (recvInFlight < depth && freeCount > 0 && ring.space() > 2) {
      const b = freeBuffers[--freeCount]!
      const w = (RX_MSG + b * MMSG) >> 2
      i32[w + 2] = 28 // msg_namelen
      i32[w + 10] = RX_CTL // msg_controllen (low word; the high word stays 0)
      i32[w + 12] = 0 // msg_flags
      ring.prep(OP_RECVMSG, 0, fd, base + RX_MSG + b * MMSG, 1, 0, 0, tagOf(K_RECV, b))
      receiving[b] = 1
      recvInFlight++
      posted++
    }
    if (posted > 0) stats[L.stats.receiveSyscalls]! += posted
    return posted
  }

  /** Fill the msghdr of send slot k. False when the slot cannot be sent at all. */
  const prepareSlot = (k: number): boolean => {
    const slot = txBase + k * SW
    const length = ctl[slot + S.txLength]!
    const a0 = ctl[slot + S.txAddr]!
    const a1 = ctl[slot + S.txAddr + 1]!
    const a2 = ctl[slot + S.txAddr + 2]!
    const a3 = ctl[slot + S.txAddr + 3]!
    if (length === S.txTooLarge) {
      failSlot(k, EMSGSIZE)
      return false
    }
    if (!v6 && !(a0 === 0 && a1 === 0 && a2 === MAPPED_WORD)) {
      failSlot(k, EAFNOSUPPORT)
      return false
    }
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
    i32[((TX_IOV + k * IOV) >> 2) + 2] = length // iov_len (low word)
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
    return true
  }

  /**
   * Hand queued send slots to the kernel, oldest first, when no batch is out
   * and the socket is not known to be full. Returns requests prepared.
   */
  const postSends = (): number => {
    if (sendsInFlight !== 0) return 0
    if (txBlocked) {
      if (!writableArmed && ring.space() > 0) {
        ring.prep(OP_POLL_ADD, 0, fd, 0, 0, 0, POLLOUT, tagOf(K_WRITABLE, 0))
        writableArmed = true
        return 1
      }
      return 0
    }
    const head = Atomics.load(ctl, L.txHead)
    txSeen = head
    let room = ring.space() - 2
    if (room > sendBatch) room = sendBatch
    // From the tail: slots refused earlier go again first, in ring order; done ones are skipped.
    let count = 0
    for (let s = txTail; s !== head && count < room; s = (s + 1) | 0) {
      const k = s & (T - 1)
      if (txState[k] !== 0) continue
      if (prepareSlot(k)) batch[count++] = k
    }
    advanceSends() // slots that failed without a syscall
    if (count === 0) return 0
    // The prefix that cannot meet a full send buffer goes unlinked, the rest as one linked chain.
    let unlinked = count
    if (count > 1) {
      unlinked = 0
      const rc = ioctl(fd, SIOCOUTQ, 'void *', base + OUTQ) as number
      let budget = rc === 0 ? sendBufferSize - i32[OUTQ >> 2]! : 0
      while (unlinked < count) {
        const charge = chargeOf(ctl[txBase + batch[unlinked]! * SW + S.txLength]!)
        if (charge >= budget) break
        budget -= charge
        unlinked++
      }
      if (unlinked < count) stats[L.stats.sendsLinked]! += count - unlinked
    }
    for (let j = 0; j < count; j++) {
      const k = batch[j]!
      ring.prep(OP_SENDMSG, j >= unlinked && j < count - 1 ? IOSQE_IO_LINK : 0, fd, base + TX_MSG + k * MMSG, 1, 0, MSG_DONTWAIT, tagOf(K_SEND, k))
      txState[k] = TX_FLIGHT
    }
    sendsInFlight += count
    stats[L.stats.sendSyscalls]! += count
    return count
  }

  const armWake = (): void => {
    if (wakeArmed || ring.space() <= 0) return
    ring.prep(OP_POLL_ADD, 0, efd, 0, 0, 0, POLLIN, tagOf(K_WAKE, 0))
    wakeArmed = true
  }

  const wake = (): void => {
    Atomics.add(ctl, L.signal, 1)
    Atomics.notify(ctl, L.signal)
  }

  const enter = (minComplete: number, timeoutMs: number): void => {
    const rc = ring.enter(minComplete, timeoutMs)
    stats[L.stats.ringEnters]!++
    if (rc >= 0 || rc === -ETIME || rc === -EINTR || rc === -EAGAIN || rc === -EBUSY) return
    throw fatalError('io_uring_enter', -rc)
  }

  /** Cancel what is in flight and reap it, so that the kernel is done with every buffer. Never throws. */
  const quiesce = (): void => {
    try {
      const cancel = (tag: number): void => {
        if (ring.space() <= 0) ring.enter(0, 0)
        ring.prep(OP_ASYNC_CANCEL, 0, -1, tag, 0, 0, 0, tagOf(K_CANCEL, 0))
      }
      for (let b = 0; b < R; b++) if (receiving[b] !== 0) cancel(tagOf(K_RECV, b))
      if (wakeArmed) cancel(tagOf(K_WAKE, 0))
      if (writableArmed) cancel(tagOf(K_WRITABLE, 0))
      if (sendsInFlight > 0) for (let k = 0; k < T; k++) if (txState[k] === TX_FLIGHT) cancel(tagOf(K_SEND, k))
      const deadline = Date.now() + 1000
      for (;;) {
        const n = ring.ready()
        for (let i = 0; i < n; i++) {
          const kind = ring.tag(i) >>> 24
          if (kind === K_RECV) {
            recvInFlight--
            receiving[ring.tag(i) & 0xffffff] = 0
          } else if (kind === K_SEND) {
            sendsInFlight--
            txState[ring.tag(i) & 0xffffff] = 0
          } else if (kind === K_WRITABLE) writableArmed = false
          else if (kind === K_WAKE) wakeArmed = false
        }
        if (n > 0) ring.consume(n)
        const left = deadline - Date.now()
        if ((recvInFlight <= 0 && sendsInFlight <= 0 && !wakeArmed && !writableArmed) || left <= 0) break
        const rc = ring.enter(1, Math.min(left, 50))
        if (rc < 0 && rc !== -ETIME && rc !== -EINTR && rc !== -EAGAIN && rc !== -EBUSY) break
      }
    } catch {
      // Closing the ring below cancels whatever is left.
    }
  }

  let fatal: Fatal | null = null
  try {
    for (;;) {
      if (Atomics.load(ctl, L.stop) !== 0) break
      published = false
      const reaped = reap()
      postReceives()
      const sends = postSends()
      armWake()
      if (published) wake()
      if (reaped > 0 || sends > 0) {
        // Busy: submit and collect completions without waiting, and without telling the main thread we sleep.
        enter(0, 0)
        continue
      }
      // Nothing happened: say that this thread sleeps, check once more, then wait for one completion.
      const noReceive = recvInFlight === 0
      if (noReceive) stats[L.stats.rxRingFull]!++
      Atomics.store(ctl, L.sleep, noReceive ? L.sleepStates.rxFull : L.sleepStates.polling)
      if (
        (!txBlocked && sendsInFlight === 0 && Atomics.load(ctl, L.txHead) !== txSeen) ||
        (noReceive && Atomics.load(ctl, L.rxTail) !== lastRxTail) ||
        Atomics.load(ctl, L.stop) !== 0
      ) {
        Atomics.store(ctl, L.sleep, L.sleepStates.awake)
        continue
      }
      stats[L.stats.polls]!++
      try {
        enter(1, d.pollTimeoutMs)
      } finally {
        Atomics.store(ctl, L.sleep, L.sleepStates.awake)
      }
    }
    // Stopping: give what is already queued one short chance to leave (a CONNECTION_CLOSE, say),
    // without waiting for the socket to drain.
    const deadline = Date.now() + 100
    while (Date.now() < deadline) {
      published = false
      reap()
      if (sendsInFlight === 0 && txTail === Atomics.load(ctl, L.txHead)) break
      postSends()
      if (published) wake()
      enter(1, 10)
    }
    if (published) wake()
  } catch (e) {
    fatal = typeof e === 'object' && e !== null && 'fatalSyscall' in e ? (e as Fatal) : fatalError(`internal error ${String(e)}`, 0)
  } finally {
    quiesce()
    Atomics.store(ctl, L.socketClosing, 1)
    ring.close()
    closeFd(fd)
    wake()
  }
  if (fatal !== null) post({ type: 'fatal', syscall: fatal.fatalSyscall, errno: fatal.errno, message: `${fatal.fatalSyscall} failed` })
}
