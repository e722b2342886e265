type Koffi = typeof import('koffi').default
type Library = ReturnType<Koffi['load']>

/**
 * One io_uring instance driven through raw system calls (no liburing): the
 * submission queue (SQ) ring, the completion queue (CQ) ring and the SQE array
 * are mmapped and read or written through `koffi.view` ArrayBuffers over that
 * memory. Only one thread may use a ring.
 *
 * Memory ordering, as io_uring(7) and the kernel's io_uring.c describe it:
 * the kernel publishes `cq.tail` with smp_store_release and reads `sq.tail`
 * with smp_load_acquire, and userspace must pair them. Here every head/tail
 * access is an `Atomics` operation, which V8 compiles to a sequentially
 * consistent access (an `xchg` store and a plain load on x86-64, `stlr` /
 * `ldar` on arm64), i.e. at least release for stores and acquire for loads,
 * and which the JIT does not reorder with the plain typed-array accesses
 * around it. So: SQEs are written with plain stores, then `sq.tail` with
 * `Atomics.store` (release); `cq.tail` is read with `Atomics.load` (acquire)
 * before the CQEs it covers, and `cq.head` is stored with `Atomics.store`
 * (release) after they were read. On x86-64 (TSO) plain stores after the
 * writes would already do; the Atomics make the same code correct on arm64.
 * The views are `koffi.view` ArrayBuffers over the mmapped rings; Atomics
 * work on non-shared integer arrays too.
 */
export interface UringRing {
  readonly fd: number
  readonly sqEntries: number
  readonly cqEntries: number
  /** The setup flags the kernel accepted. */
  readonly flags: number
  /** IORING_FEAT_* bits the kernel reported. */
  readonly features: number
  /** Whether `enter(min, timeoutMs)` can bound its wait (IORING_FEAT_EXT_ARG). */
  readonly timedWait: boolean
  /** SQEs that can still be prepared before the next `enter`. */
  space(): number
  /** SQEs prepared and not yet consumed by the kernel. */
  unsubmitted(): number
  /**
   * Write the next SQE. `addr` and `off` are numbers below 2^53 (user-space
   * addresses are); `tag` becomes the low 32 bits of user_data. False when the
   * SQ is full.
   */
  prep(opcode: number, sqeFlags: number, fd: number, addr: number, len: number, off: number, opFlags: number, tag: number): boolean
  /**
   * io_uring_enter: submit every prepared SQE, run pending completion work,
   * and wait until `minComplete` CQEs are ready, at most `timeoutMs` when the
   * kernel supports a timeout (0: no limit). Returns the SQEs consumed, or
   * `-errno` (ETIME when the timeout expired, EINTR...).
   */
  enter(minComplete: number, timeoutMs: number): number
  /** io_uring_enter calls made. */
  enters(): number
  /** CQEs ready to be read. */
  ready(): number
  /** The `i`-th ready CQE (0 = oldest): low 32 bits of its user_data, res, flags. */
  tag(i: number): number
  res(i: number): number
  cqeFlags(i: number): number
  /** Give the first `n` ready CQEs back to the kernel. */
  consume(n: number): void
  /** Unmap the rings and close the ring fd (cancels whatever is in flight). Idempotent. */
  close(): void
  /**
   * The ring memory this thread mapped (addresses below 2^53). A mapping keeps
   * the ring alive after its fd is closed, so whoever cleans up after a dead
   * thread must unmap these too.
   */
  mappings(): { address: number; length: number }[]
}

export type UringSetupResult = { ok: true; ring: UringRing; tried: string } | { ok: false; errno: number; syscall: string; message: string }

/** What the probes found (one line each, for reports). */
export interface UringProbeResult {
  ok: boolean
  /** errno of the failing call, 0 when it was not a system call that failed. */
  errno: number
  syscall: string
  detail: string
}

export interface UringKit {
  /** io_uring_setup with the first flag set of `flagSets` the kernel accepts (EINVAL: try the next), then mmap the rings. */
  setup(entries: number, flagSets: number[]): UringSetupResult
  /** IORING_REGISTER_PROBE: ok when every opcode of `opcodes` is supported. */
  probeOpcodes(ring: UringRing, opcodes: number[]): UringProbeResult
  /** A NOP through the ring and its completion, waiting at most `waitMs` (0: only what completes at once). */
  nop(ring: UringRing, waitMs: number): UringProbeResult
  /**
   * Send two 100-byte segments as one UDP_SEGMENT (GSO) message to a loopback
   * socket of its own with IORING_OP_SENDMSG, read them back with
   * IORING_OP_RECVMSG (UDP_GRO on) and compare the bytes. `ok` with a `skipped`
   * detail when no loopback socket can be bound here.
   */
  loopback(ring: UringRing, waitMs: number): UringProbeResult & { skipped: boolean }
  /** Name of an opcode used here, for messages. */
  opName(op: number): string
}

/**
 * io_uring helpers over koffi. Self-contained (no imports, no outside
 * references, no classes): the UDP worker runs it from its source text, and
 * the main thread calls it directly for the capability probe.
 *
 * Linux UAPI values (include/uapi/linux/io_uring.h); the syscall numbers
 * 425-427 are the same on x86-64 and arm64; struct layouts assume LP64
 * little-endian, which the callers check.
 */
export function uringKit(koffi: Koffi, lib: Library): UringKit {
  const SYS_IO_URING_SETUP = 425
  const SYS_IO_URING_ENTER = 426
  const SYS_IO_URING_REGISTER = 427
  const IORING_OFF_SQ_RING = 0
  const IORING_OFF_CQ_RING = 0x8000000
  const IORING_OFF_SQES = 0x10000000
  const IORING_FEAT_SINGLE_MMAP = 1 << 0
  const IORING_FEAT_EXT_ARG = 1 << 8
  const IORING_ENTER_GETEVENTS = 1 << 0
  const IORING_ENTER_EXT_ARG = 1 << 3
  const IORING_REGISTER_PROBE = 8
  const IO_URING_OP_SUPPORTED = 1
  const OP_NOP = 0
  const OP_SENDMSG = 9
  const OP_RECVMSG = 10
  const PROT_READ = 1
  const PROT_WRITE = 2
  const MAP_SHARED = 1
  const MAP_POPULATE = 0x8000
  const EINVAL = 22
  const ETIME = 62
  const EINTR = 4
  const AF_INET = 2
  const SOCK_DGRAM = 2
  const SOCK_NONBLOCK = 0o4000
  const SOCK_CLOEXEC = 0o2000000
  const SOL_UDP = 17
  const UDP_SEGMENT = 103
  const UDP_GRO = 104
  const LOOPBACK = 0x0100007f // 127.0.0.1 as the little-endian word of sin_addr
  const OP_NAMES: Record<number, string> = {
    0: 'NOP',
    6: 'POLL_ADD',
    9: 'SENDMSG',
    10: 'RECVMSG',
    14: 'ASYNC_CANCEL',
  }

  const syscall = lib.func('long syscall(long number, ...)')
  const mmap = lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)')
  const munmap = lib.func('int munmap(void *addr, size_t length)')
  const closeFd = lib.func('int close(int fd)')
  const socket = lib.func('int socket(int domain, int type, int protocol)')
  const setsockopt = lib.func('int setsockopt(int fd, int level, int name, void *value, uint32_t length)')
  const bindSocket = lib.func('int bind(int fd, void *address, uint32_t length)')
  const getsockname = lib.func('int getsockname(int fd, void *address, void *length)')
  const MAP_FAILED = 0xffffffffffffffffn

  /** Every piece of memory whose address the kernel may still use, kept for the life of the kit. */
  const keep: unknown[] = []
  const errno = (): number => koffi.errno() || EINVAL
  const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`
  const opName = (op: number): string => OP_NAMES[op] ?? `opcode ${op}`

  const setup = (entries: number, flagSets: number[]): UringSetupResult => {
    // struct io_uring_params: 120 bytes, zeroed but for the flags; the kernel fills in the rest.
    const params = new Int32Array(new SharedArrayBuffer(120))
    let fd = -1
    let e = 0
    const tried: string[] = []
    let flags = 0
    for (const f of flagSets) {
      params.fill(0)
      params[2] = f
      flags = f
      fd = Number(syscall(SYS_IO_URING_SETUP, 'uint32_t', entries, 'void *', params))
      if (fd >= 0) break
      e = errno()
      tried.push(`${hex(f)}: errno ${e}`)
      if (e !== EINVAL) break
    }
    if (fd < 0) {
      return { ok: false, errno: e, syscall: 'io_uring_setup', message: `io_uring_setup(${entries}) failed (flags tried ${tried.join(', ')})` }
    }
    const sqEntries = params[0]!
    const cqEntries = params[1]!
    const features = params[5]!
    // struct io_sqring_offsets at byte 40, struct io_cqring_offsets at byte 80 (word offsets below).
    const sqHeadOff = params[10]!
    const sqTailOff = params[11]!
    const sqMaskOff = params[12]!
    const sqArrayOff = params[16]!
    const cqHeadOff = params[20]!
    const cqTailOff = params[21]!
    const cqMaskOff = params[22]!
    const cqesOff = params[25]!
    let sqSize = sqArrayOff + sqEntries * 4
    let cqSize = cqesOff + cqEntries * 16
    const single = (features & IORING_FEAT_SINGLE_MMAP) !== 0
    if (single) sqSize = cqSize = Math.max(sqSize, cqSize)
    const maps: { address: bigint; length: number }[] = []
    const unmapAll = (): void => {
      for (const m of maps.splice(0)) munmap(m.address, m.length)
    }
    const map = (length: number, offset: number): ArrayBuffer | null => {
      const address = mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset) as bigint | null
      if (address === null || address === MAP_FAILED || address === 0n) return null
      maps.push({ address, length })
      return koffi.view(address, length)
    }
    const sqMem = map(sqSize, IORING_OFF_SQ_RING)
    const cqMem = sqMem === null ? null : single ? sqMem : map(cqSize, IORING_OFF_CQ_RING)
    const sqeMem = cqMem === null ? null : map(sqEntries * 64, IORING_OFF_SQES)
    if (sqMem === null || cqMem === null || sqeMem === null) {
      const mapErrno = errno()
      unmapAll()
      closeFd(fd)
      return { ok: false, errno: mapErrno, syscall: 'mmap', message: 'mmap of the io_uring rings failed' }
    }
    const sq = new Int32Array(sqMem)
    const cq = new Int32Array(cqMem)
    const sqes = new Int32Array(sqeMem)
    const sqHeadW = sqHeadOff >> 2
    const sqTailW = sqTailOff >> 2
    const cqHeadW = cqHeadOff >> 2
    const cqTailW = cqTailOff >> 2
    const cqesW = cqesOff >> 2
    const sqMask = sq[sqMaskOff >> 2]!
    const cqMask = cq[cqMaskOff >> 2]!
    // The kernel reads SQE indexes from sq.array: SQE i always sits at index i.
    for (let i = 0; i < sqEntries; i++) sq[(sqArrayOff >> 2) + i] = i
    let sqTail = Atomics.load(sq, sqTailW)
    let sqHead = Atomics.load(sq, sqHeadW)
    let cqHead = Atomics.load(cq, cqHeadW)
    const timedWait = (features & IORING_FEAT_EXT_ARG) !== 0
    // struct io_uring_getevents_arg (24 bytes) then the kernel timespec (16 bytes: tv_sec, tv_nsec) it points to.
    const waitMem = new SharedArrayBuffer(64)
    const waitArg = new Int32Array(waitMem)
    const waitBase = Number(koffi.address(new Uint8Array(waitMem)))
    waitArg[4] = ((waitBase + 32) % 0x100000000) | 0 // ts pointer (low, high)
    waitArg[5] = Math.floor((waitBase + 32) / 0x100000000)
    keep.push(params, waitMem, sqMem, cqMem, sqeMem)
    let enterCount = 0
    let closed = false

    const ring: UringRing = {
      fd,
      sqEntries,
      cqEntries,
      flags,
      features,
      timedWait,
      space() {
        let free = sqEntries - ((sqTail - sqHead) | 0)
        if (free <= 0) {
          sqHead = Atomics.load(sq, sqHeadW)
          free = sqEntries - ((sqTail - sqHead) | 0)
        }
        return free
      },
      unsubmitted() {
        sqHead = Atomics.load(sq, sqHeadW)
        return (sqTail - sqHead) | 0
      },
      prep(opcode, sqeFlags, sqeFd, addr, len, off, opFlags, tag) {
        if (ring.space() <= 0) return false
        const w = (sqTail & sqMask) << 4
        sqes[w] = (opcode & 0xff) | ((sqeFlags & 0xff) << 8) // opcode, flags, ioprio 0
        sqes[w + 1] = sqeFd
        sqes[w + 2] = (off % 0x100000000) | 0 // off / addr2
        sqes[w + 3] = Math.floor(off / 0x100000000)
        sqes[w + 4] = (addr % 0x100000000) | 0 // addr
        sqes[w + 5] = Math.floor(addr / 0x100000000)
        sqes[w + 6] = len
        sqes[w + 7] = opFlags // msg_flags / poll32_events / cancel_flags
        sqes[w + 8] = tag // user_data (low)
        sqes[w + 9] = 0
        sqes[w + 10] = 0 // buf_index, personality
        sqes[w + 11] = 0 // splice_fd_in / file_index
        sqes[w + 12] = 0 // addr3
        sqes[w + 13] = 0
        sqes[w + 14] = 0
        sqes[w + 15] = 0
        sqTail = (sqTail + 1) | 0
        return true
      },
      enter(minComplete, timeoutMs) {
        if (closed) return -9
        // Release: the SQEs written above become visible before the new tail.
        Atomics.store(sq, sqTailW, sqTail)
        const toSubmit = (sqTail - Atomics.load(sq, sqHeadW)) | 0
        let flagsIn = IORING_ENTER_GETEVENTS
        let rc: number
        enterCount++
        if (minComplete > 0 && timeoutMs > 0 && timedWait) {
          flagsIn |= IORING_ENTER_EXT_ARG
          waitArg[8] = Math.floor(timeoutMs / 1000) // tv_sec (low; high stays 0)
          waitArg[9] = 0
          waitArg[10] = (timeoutMs % 1000) * 1000000 // tv_nsec
          waitArg[11] = 0
          rc = Number(
            syscall(SYS_IO_URING_ENTER, 'int', fd, 'uint32_t', toSubmit, 'uint32_t', minComplete, 'uint32_t', flagsIn, 'void *', waitBase, 'size_t', 24),
          )
        } else {
          rc = Number(syscall(SYS_IO_URING_ENTER, 'int', fd, 'uint32_t', toSubmit, 'uint32_t', minComplete, 'uint32_t', flagsIn, 'void *', null, 'size_t', 8))
        }
        sqHead = Atomics.load(sq, sqHeadW)
        return rc >= 0 ? rc : -errno()
      },
      enters() {
        return enterCount
      },
      ready() {
        // Acquire: the CQEs up to the tail are complete once the tail is seen.
        return (Atomics.load(cq, cqTailW) - cqHead) | 0
      },
      tag(i) {
        return cq[cqesW + (((cqHead + i) & cqMask) << 2)]!
      },
      res(i) {
        return cq[cqesW + (((cqHead + i) & cqMask) << 2) + 2]!
      },
      cqeFlags(i) {
        return cq[cqesW + (((cqHead + i) & cqMask) << 2) + 3]!
      },
      consume(n) {
        cqHead = (cqHead + n) | 0
        // Release: the CQEs were read before the kernel may reuse them.
        Atomics.store(cq, cqHeadW, cqHead)
      },
      close() {
        if (closed) return
        closed = true
        unmapAll()
        closeFd(fd)
      },
      mappings() {
        return maps.map((m) => ({ address: Number(m.address), length: m.length }))
      },
    }
    return { ok: true, ring, tried: tried.length === 0 ? `flags ${hex(flags)}` : `flags ${hex(flags)} (refused: ${tried.join(', ')})` }
  }

  const probeOpcodes = (ring: UringRing, opcodes: number[]): UringProbeResult => {
    // struct io_uring_probe: 16-byte header, then 256 struct io_uring_probe_op of 8 bytes.
    const probe = new Uint8Array(new SharedArrayBuffer(16 + 256 * 8))
    keep.push(probe)
    const rc = Number(syscall(SYS_IO_URING_REGISTER, 'int', ring.fd, 'uint32_t', IORING_REGISTER_PROBE, 'void *', probe, 'uint32_t', 256))
    if (rc < 0) {
      const e = errno()
      return { ok: false, errno: e, syscall: 'io_uring_register', detail: `IORING_REGISTER_PROBE failed (errno ${e})` }
    }
    const lastOp = probe[0]!
    const missing = opcodes.filter((op) => op > lastOp || (probe[16 + op * 8 + 2]! & IO_URING_OP_SUPPORTED) === 0)
    if (missing.length > 0) {
      return { ok: false, errno: 0, syscall: 'io_uring_register', detail: `the kernel lacks io_uring ${missing.map(opName).join(', ')}` }
    }
    return { ok: true, errno: 0, syscall: '', detail: `${opcodes.map(opName).join(', ')} supported (last opcode ${lastOp})` }
  }

  /** Wait for the CQE tagged `tag`, dropping any other (there is none during the probes). */
  const await1 = (ring: UringRing, tag: number, waitMs: number): { res: number } | { errno: number; timedOut: boolean } => {
    const deadline = Date.now() + waitMs
    for (;;) {
      const n = ring.ready()
      for (let i = 0; i < n; i++) {
        if (ring.tag(i) === tag) {
          const res = ring.res(i)
          ring.consume(i + 1)
          return { res }
        }
      }
      if (n > 0) ring.consume(n)
      const left = deadline - Date.now()
      if (left <= 0 && ring.unsubmitted() === 0) {
        // One last non-waiting pass, for what completes at once.
        const rc = ring.enter(0, 0)
        if (rc < 0 && rc !== -EINTR) return { errno: -rc, timedOut: false }
        if (ring.ready() === 0) return { errno: ETIME, timedOut: true }
        continue
      }
      const rc = left > 0 ? ring.enter(1, left) : ring.enter(0, 0)
      if (rc < 0 && rc !== -ETIME && rc !== -EINTR) return { errno: -rc, timedOut: false }
    }
  }

  const nop = (ring: UringRing, waitMs: number): UringProbeResult => {
    const tag = 0x7e00_0001
    if (!ring.prep(OP_NOP, 0, -1, 0, 0, 0, 0, tag)) return { ok: false, errno: 0, syscall: 'io_uring_enter', detail: 'the SQ ring is full' }
    const got = await1(ring, tag, waitMs)
    if ('res' in got) {
      return got.res === 0
        ? { ok: true, errno: 0, syscall: '', detail: 'a NOP completed through the ring' }
        : { ok: false, errno: -got.res, syscall: 'io_uring_enter', detail: `the NOP completed with res ${got.res}` }
    }
    return {
      ok: false,
      errno: got.errno,
      syscall: 'io_uring_enter',
      detail: got.timedOut ? `the NOP did not complete within ${waitMs} ms` : `io_uring_enter failed (errno ${got.errno})`,
    }
  }

  const loopback = (ring: UringRing, waitMs: number): UringProbeResult & { skipped: boolean } => {
    // Memory: [0..32) sockaddr, 32 socklen, 40 int option, [64..120) send msghdr, [128..184) recv msghdr,
    // [192..208) send iovec, [208..224) recv iovec, [224..256) recv name, [256..280) send cmsg,
    // [288..352) recv control, [384..584) payload, [640..1152) receive buffer.
    const mem = new SharedArrayBuffer(1152)
    keep.push(mem)
    const u8 = new Uint8Array(mem)
    const i32 = new Int32Array(mem)
    const dv = new DataView(mem)
    const base = Number(koffi.address(u8))
    const ptr = (at: number, value: number): void => dv.setBigUint64(at, BigInt(value), true)
    const fail = (errno: number, syscall: string, detail: string): UringProbeResult & { skipped: boolean } => ({
      ok: false,
      errno,
      syscall,
      detail,
      skipped: false,
    })
    const fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number
    if (fd < 0) return { ok: true, errno: errno(), syscall: 'socket', detail: 'loopback check skipped: no UDP socket', skipped: true }
    try {
      i32[0] = AF_INET // port 0
      i32[1] = LOOPBACK
      if ((bindSocket(fd, base, 16) as number) !== 0) {
        return { ok: true, errno: errno(), syscall: 'bind', detail: 'loopback check skipped: 127.0.0.1 cannot be bound', skipped: true }
      }
      i32[8] = 16
      if ((getsockname(fd, base, base + 32) as number) !== 0) return fail(errno(), 'getsockname', 'getsockname() failed')
      i32[10] = 1
      const gro = (setsockopt(fd, SOL_UDP, UDP_GRO, base + 40, 4) as number) === 0
      for (let i = 0; i < 200; i++) u8[384 + i] = (i * 37 + 11) & 0xff
      // send: name = the socket itself, one iovec of 200 bytes, a UDP_SEGMENT cmsg of 100.
      ptr(64, base)
      i32[(64 + 8) >> 2] = 16
      ptr(64 + 16, base + 192)
      ptr(64 + 24, 1)
      ptr(64 + 32, base + 256)
      ptr(64 + 40, 24)
      ptr(192, base + 384)
      ptr(200, 200)
      ptr(256, 18) // cmsg_len = CMSG_LEN(sizeof(uint16_t))
      i32[(256 + 8) >> 2] = SOL_UDP
      i32[(256 + 12) >> 2] = UDP_SEGMENT
      u8[256 + 16] = 100
      // receive: name, one iovec of 512 bytes, 64 bytes of control.
      ptr(128, base + 224)
      i32[(128 + 8) >> 2] = 32
      ptr(128 + 16, base + 208)
      ptr(128 + 24, 1)
      ptr(128 + 32, base + 288)
      ptr(128 + 40, 64)
      ptr(208, base + 640)
      ptr(216, 512)
      const sendTag = 0x7e00_0002
      const recvTag = 0x7e00_0003
      if (!ring.prep(OP_SENDMSG, 0, fd, base + 64, 1, 0, 0, sendTag)) return fail(0, 'io_uring_enter', 'the SQ ring is full')
      const sent = await1(ring, sendTag, waitMs)
      if (!('res' in sent))
        return fail(
          sent.errno,
          'io_uring_enter',
          sent.timedOut ? `SENDMSG did not complete within ${waitMs} ms` : `io_uring_enter failed (errno ${sent.errno})`,
        )
      if (sent.res !== 200) return fail(sent.res < 0 ? -sent.res : 0, 'sendmsg', `SENDMSG of a 2 x 100 byte GSO message completed with res ${sent.res}`)
      if (!ring.prep(OP_RECVMSG, 0, fd, base + 128, 1, 0, 0, recvTag)) return fail(0, 'io_uring_enter', 'the SQ ring is full')
      const got = await1(ring, recvTag, waitMs)
      if (!('res' in got))
        return fail(got.errno, 'io_uring_enter', got.timedOut ? `RECVMSG did not complete within ${waitMs} ms` : `io_uring_enter failed (errno ${got.errno})`)
      if (got.res !== 200 && got.res !== 100)
        return fail(got.res < 0 ? -got.res : 0, 'recvmsg', `RECVMSG completed with res ${got.res}, expected 200 or 100 bytes`)
      for (let i = 0; i < got.res; i++) if (u8[640 + i] !== u8[384 + i]) return fail(0, 'recvmsg', `RECVMSG returned different bytes (offset ${i})`)
      // The kernel writes msg_controllen back: look for the UDP_GRO cmsg.
      const controlLength = i32[(128 + 40) >> 2]!
      let segment = 0
      for (let p = 0; p + 16 <= controlLength; ) {
        const cl = i32[(288 + p) >> 2]!
        if (i32[(288 + p + 8) >> 2] === SOL_UDP && i32[(288 + p + 12) >> 2] === UDP_GRO) segment = i32[(288 + p + 16) >> 2]!
        if (cl < 16) break
        p += (cl + 7) & ~7
      }
      const how =
        got.res === 200 && segment === 100
          ? 'received back coalesced with a UDP_GRO cmsg of 100'
          : got.res === 200
            ? 'received back as 200 bytes without a GRO cmsg'
            : `received back as separate datagrams${gro ? '' : ' (UDP_GRO refused)'}`
      return { ok: true, errno: 0, syscall: '', detail: `loopback SENDMSG (UDP_SEGMENT 2 x 100 B) and RECVMSG through the ring: ${how}`, skipped: false }
    } finally {
      // The requests completed (or the ring is closed next), so the socket may go.
      closeFd(fd)
    }
  }

  return { setup, probeOpcodes, nop, loopback, opName }
}
