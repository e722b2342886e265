import type { MakeSocketKit } from './socket-kit.js'
import type { UringKit } from './uring-kit.js'
import type { UdpWorkerData } from './udp-worker.js'

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
     * `nativeMemoryBytes(rxSlots, txSlots)` of socket-kit.ts), allocated by the main thread so
     * that it outlives a worker killed while the kernel still holds requests
     * pointing into it.
     */
    memory: SharedArrayBuffer
  }
}

/**
 * The body of the uring worker thread: the same job and the same shared rings
 * as the gro worker (worker/udp-worker.ts, worker/protocol.ts), but the socket
 * is driven through an io_uring instead of recvmmsg / sendmmsg / poll. Run from
 * its source text, so self-contained like `udpWorkerMain`; what it shares with
 * the gro worker comes in as `makeSocketKit` (worker/socket-kit.ts) and the
 * io_uring helpers as `makeKit` (worker/uring-kit.ts), both also run from their
 * source text.
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
export function uringWorkerMain(
  d: UringWorkerData,
  load: (id: string) => unknown,
  makeSocketKit: MakeSocketKit,
  makeKit: (koffi: Koffi, lib: Library) => UringKit,
): void {
  // Linux (x86_64 and aarch64 share these).
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
  const ECANCELED = 125
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
  /** Send slot states from txTail on: queued (0: not handed over, or refused and to be sent again), done (sent or failed for good), in flight. */
  const TX_DONE = 1
  const TX_FLIGHT = 2

  const L = d.layout
  const { slot: S, rxSlots: R, txSlots: T, txBase } = L
  const SW = S.words

  const sock = makeSocketKit(d, load)
  if (sock === null) return
  const { koffi, lib, post, ctl, stats, fatalError, wake } = sock
  const ioctl = lib.func('int ioctl(int fd, unsigned long request, ...)')

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

  // Native-side memory, one SharedArrayBuffer of the main thread's (it never moves, and outlives this thread),
  // laid out by the socket kit. nativeMemoryBytes() computes its size likewise.
  const mem = d.uring.memory
  if (mem.byteLength < sock.memoryBytes) {
    ring.close()
    post({ type: 'bind-error', kind: 'socket', syscall: 'worker', errno: 0, message: `native memory of ${mem.byteLength} bytes, ${sock.memoryBytes} needed` })
    return
  }
  const { i32, base, EVBUF, OUTQ } = sock.attach(mem)

  // -------------------------------------------------------------------------
  // Socket setup (as the gro worker): every failure is reported to bind() and ends the worker.

  const opened = sock.open({ ringFd: ring.fd, ringMaps: ring.mappings(), engineDetail: ringDetail }, () => ring.close())
  if (opened === null) return
  const { fd, sendBufferSize } = opened
  const efd = d.eventFd

  // -------------------------------------------------------------------------
  // The loop.

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

  const tagOf = (kind: number, index: number): number => (kind << 24) | index

  /** Put a received buffer into the next receive ring slot (published by the caller). */
  const publishReceive = (b: number, res: number): void => {
    const k = rxHead & (R - 1)
    sock.publishReceive(k, b, res)
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
        sock.readFd(efd, base + EVBUF, 8) // reset the eventfd counter (non-blocking)
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
      ring.prep(OP_RECVMSG, 0, fd, sock.armReceive(b), 1, 0, 0, tagOf(K_RECV, b))
      receiving[b] = 1
      recvInFlight++
      posted++
    }
    if (posted > 0) stats[L.stats.receiveSyscalls]! += posted
    return posted
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
      // Fill its msghdr, or fail it at once when it cannot be sent at all.
      const refused = sock.prepareSend(k)
      if (refused === 0) batch[count++] = k
      else failSlot(k, refused)
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
      ring.prep(OP_SENDMSG, j >= unlinked && j < count - 1 ? IOSQE_IO_LINK : 0, fd, sock.txHeader(k), 1, 0, MSG_DONTWAIT, tagOf(K_SEND, k))
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

  sock.run(
    () => {
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
    },
    { settle: quiesce, release: () => ring.close() },
  )
}
