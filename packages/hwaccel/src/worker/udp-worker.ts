import type { ControlLayout } from './protocol.js'
import type { MakeSocketKit } from './socket-kit.js'

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
  /** Addresses of native memory send slots may point into (after the slabs in slab numbering). */
  sendRegions?: number[]
  bind: {
    v6: boolean
    /** Address words as the rings carry them (IPv4 as mapped). */
    words: number[]
    scope: number
    port: number
    ipv6Only: boolean
    sendBufferSize: number
    receiveBufferSize: number
    /** Set SO_REUSEPORT before bind (absent: false). */
    reusePort?: boolean
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
      /**
       * The socket's fd number, for the main thread to close should the worker die without
       * closing it, and to attach a reuseport BPF program to (the fd table is per process).
       */
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
      /** Don't Fragment set on the socket (IP_MTU_DISCOVER / IPV6_MTU_DISCOVER = PROBE). */
      dontFragment: boolean
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
 * bundler rewrites a literal `require` call into its own shim. What it shares
 * with the uring worker (koffi, the native memory, the socket setup, the
 * msghdr and ring slot formats, the end of the worker) comes in as
 * `makeSocketKit` (worker/socket-kit.ts, also run from its source text).
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
export function udpWorkerMain(d: UdpWorkerData, load: (id: string) => unknown, makeSocketKit: MakeSocketKit): void {
  const MSG_DONTWAIT = 0x40
  const POLLIN = 0x1
  const POLLOUT = 0x4
  const POLLERR = 0x8
  const POLLNVAL = 0x20
  const EINTR = 4
  const EBADF = 9
  const EAGAIN = 11
  const EFAULT = 14
  const EINVAL = 22
  const ENOTSOCK = 88

  const sock = makeSocketKit(d, load)
  if (sock === null) return
  const { lib, koffi, ctl, stats, fatalError, wake } = sock
  const recvmmsg = lib.func('int recvmmsg(int fd, void *messages, uint32_t count, int flags, void *timeout)')
  const sendmmsg = lib.func('int sendmmsg(int fd, void *messages, uint32_t count, int flags)')
  const poll = lib.func('int poll(void *fds, uint64_t count, int timeout)')

  // Native-side memory: a SharedArrayBuffer of its own (its memory never moves).
  const { i32, base, EVBUF, POLLFDS } = sock.attach(new SharedArrayBuffer(sock.memoryBytes))
  const opened = sock.open({})
  if (opened === null) return
  const fd = opened.fd

  // -------------------------------------------------------------------------
  // The loop.

  const L = d.layout
  const { slot: S, rxSlots: R, txSlots: T, txBase } = L
  const SW = S.words
  const efd = d.eventFd
  let rxHead = Atomics.load(ctl, L.rxHead)
  let txTail = Atomics.load(ctl, L.txTail)
  let txBlocked = false
  let lastRxTail = 0

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
    const messages = sock.armReceive(k)
    for (let i = k + 1; i < k + n; i++) sock.armReceive(i)
    const got = recvmmsg(fd, messages, n, MSG_DONTWAIT, null) as number
    stats[L.stats.receiveSyscalls]!++
    if (got <= 0) {
      if (got === 0) return 0
      const e = koffi.errno()
      if (e === EBADF || e === EFAULT || e === EINVAL || e === ENOTSOCK) throw fatalError('recvmmsg', e)
      return 0 // EAGAIN, EINTR, or an error queued by ICMP: nothing to read now
    }
    // Slot i of the ring reads into receive buffer i.
    for (let i = k; i < k + got; i++) sock.publishReceive(i, i, sock.receivedLength(i))
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
      const refused = sock.prepareSend(k + m)
      if (refused !== 0) {
        if (m === 0) {
          failSend(refused)
          return 1
        }
        break
      }
    }
    const sent = sendmmsg(fd, sock.txHeader(k), m, 0) as number
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

  const pollWords = POLLFDS >> 2
  sock.run(() => {
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
      if ((!txBlocked && Atomics.load(ctl, L.txHead) !== txTail) || (rxFull && Atomics.load(ctl, L.rxTail) !== lastRxTail) || Atomics.load(ctl, L.stop) !== 0) {
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
      if ((socketEvents & POLLERR) !== 0) sock.takeSocketError()
      if (((i32[pollWords + 3]! >>> 16) & POLLIN) !== 0) sock.readFd(efd, base + EVBUF, 8)
    }
    // Stopping: give what is already queued one chance to leave (a CONNECTION_CLOSE, say),
    // without waiting for the socket to drain.
    for (let round = 0; round < T && !txBlocked; round++) if (send() === 0) break
  })
}
