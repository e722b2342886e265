import { StoqInvalidArgumentError, StoqSocketError, StoqUnsupportedError } from '@stoq/interface'
import { SOL_SOCKET, errnoName, errorMessage, loadLibc } from './koffi/libc.js'

/**
 * Connection-ID steering for a SO_REUSEPORT group (multi-core engines).
 *
 * N engine workers each own one UDP socket bound to the same address and port
 * with `reusePort`. Every connection ID an engine issues starts with that
 * worker's index (`QuicEngineOptions.cidPrefix`), so the first byte of a
 * packet's destination connection ID names the worker that owns the
 * connection. A classic BPF program attached to the group reads that byte and
 * returns the index of the socket to deliver to.
 */

// Linux (include/uapi/asm-generic/socket.h, include/uapi/linux/filter.h).
const SO_TYPE = 3
const SO_PROTOCOL = 38
const SO_ATTACH_REUSEPORT_CBPF = 51
const SO_DETACH_REUSEPORT_BPF = 68
const SOCK_DGRAM = 2
const IPPROTO_UDP = 17
const AF_INET = 2
const AF_INET6 = 10

// Classic BPF opcodes.
const BPF_LD_B_ABS = 0x30 // A = byte at [k]
const BPF_JMP_JA = 0x05 // pc += k
const BPF_JMP_JEQ_K = 0x15 // pc += (A == k) ? jt : jf
const BPF_JMP_JSET_K = 0x45 // pc += (A & k) ? jt : jf
const BPF_ALU_MOD_K = 0x94 // A %= k
const BPF_RET_K = 0x06 // return k

/** Returned for a dead worker: any value at or above the group size makes the kernel fall back to its hash. */
const FALL_BACK = 0xffffffff

/** sizeof(struct sock_filter) */
const INSN = 8

interface ReuseportCalls {
  /** setsockopt(fd, SOL_SOCKET, name, value, length): 0 or the errno. */
  setOption(fd: number, name: number, value: Buffer | null, length: number): number
  /** getsockopt of an int: the value, or -errno. */
  getInt(fd: number, name: number): number
  /** getsockname: family and port, or the errno. */
  localName(fd: number): { family: number; port: number } | { errno: number }
  /** close(2): 0 or the errno. */
  close(fd: number): number
  /** Address of a buffer's memory. */
  address(buffer: Buffer): bigint
}

let calls: ReuseportCalls | null = null

function loadCalls(feature: string): ReuseportCalls {
  if (calls !== null) return calls
  const loaded = loadLibc()
  if (!loaded.ok) throw new StoqUnsupportedError(feature, `${feature} unavailable: ${loaded.reason}`)
  const { koffi, name } = loaded.libc
  try {
    const lib = koffi.load(name)
    const setsockopt = lib.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)')
    const getsockopt = lib.func('int getsockopt(int fd, int level, int optname, _Inout_ void *optval, _Inout_ uint32_t *optlen)')
    const getsockname = lib.func('int getsockname(int fd, _Inout_ void *address, _Inout_ uint32_t *length)')
    const close = lib.func('int close(int fd)')
    const value = Buffer.alloc(4)
    const length: [number] = [4]
    const name32 = Buffer.alloc(32)
    calls = {
      setOption(fd, option, buffer, len) {
        const rc = setsockopt(fd, SOL_SOCKET, option, buffer, len) as number
        return rc === 0 ? 0 : koffi.errno() || -1
      },
      getInt(fd, option) {
        value.writeInt32LE(0, 0)
        length[0] = 4
        const rc = getsockopt(fd, SOL_SOCKET, option, value, length) as number
        return rc === 0 ? value.readInt32LE(0) : -(koffi.errno() || 1)
      },
      localName(fd) {
        name32.fill(0)
        length[0] = 32
        const rc = getsockname(fd, name32, length) as number
        if (rc !== 0) return { errno: koffi.errno() || 1 }
        return { family: name32.readUInt16LE(0), port: name32.readUInt16BE(2) }
      },
      close(fd) {
        return (close(fd) as number) === 0 ? 0 : koffi.errno() || -1
      },
      address(buffer) {
        return BigInt(koffi.address(buffer) as unknown as bigint | number)
      },
    }
    return calls
  } catch (err) {
    throw new StoqUnsupportedError(feature, `${feature} unavailable: ${errorMessage(err)}`)
  }
}

function checkFd(fd: unknown): number {
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
    throw new StoqInvalidArgumentError('fd', `expected a file descriptor (a non-negative integer), got ${String(fd)}`)
  }
  return fd
}

/**
 * The classic BPF program `attachCidSteering` attaches, as `struct sock_filter`
 * bytes (exported for tests). The program sees the datagram at its UDP payload:
 *
 *     A = byte 0                     first byte of the QUIC packet
 *     if (A & 0x80) A = byte 6       long header: first byte of the DCID (after version and DCID length)
 *     else A = byte 1                short header: the DCID follows the first byte
 *     A = A % table.length
 *     if (A == 0) return table[0]
 *     ...
 *     if (A == n-1) return table[n-1]
 *
 * A table entry of -1 returns 0xffffffff (no such socket: the kernel falls back to its
 * hash). A datagram too short for a load makes the program return 0 (socket 0).
 */
export function cidSteeringProgram(table: readonly number[]): Buffer {
  const n = table.length
  const program = Buffer.alloc((6 + 2 * n + 1) * INSN)
  let at = 0
  const insn = (code: number, jt: number, jf: number, k: number): void => {
    program.writeUInt16LE(code, at)
    program.writeUInt8(jt, at + 2)
    program.writeUInt8(jf, at + 3)
    program.writeUInt32LE(k >>> 0, at + 4)
    at += INSN
  }
  insn(BPF_LD_B_ABS, 0, 0, 0)
  insn(BPF_JMP_JSET_K, 0, 2, 0x80)
  insn(BPF_LD_B_ABS, 0, 0, 6)
  insn(BPF_JMP_JA, 0, 0, 1)
  insn(BPF_LD_B_ABS, 0, 0, 1)
  insn(BPF_ALU_MOD_K, 0, 0, n)
  for (let p = 0; p < n; p++) {
    const target = table[p]!
    insn(BPF_JMP_JEQ_K, 0, 1, p)
    insn(BPF_RET_K, 0, 0, target < 0 ? FALL_BACK : target)
  }
  insn(BPF_RET_K, 0, 0, FALL_BACK)
  return program
}

function checkTable(table: unknown): readonly number[] {
  if (!Array.isArray(table)) throw new StoqInvalidArgumentError('table', 'expected an array of socket indexes')
  if (table.length < 1 || table.length > 255) {
    throw new StoqInvalidArgumentError('table', `expected 1 to 255 entries, got ${table.length}`)
  }
  table.forEach((v: unknown, i) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < -1 || v > 255) {
      throw new StoqInvalidArgumentError('table', `entry ${i} must be -1 (dead worker) or a socket index from 0 to 255, got ${String(v)}`)
    }
  })
  return table as readonly number[]
}

/**
 * Steer the datagrams of the SO_REUSEPORT group that `fd` belongs to by
 * connection ID: a datagram whose destination connection ID starts with byte
 * `b` goes to socket `table[b % table.length]` of the group (sockets are
 * numbered in the order they joined the group, i.e. bound; when one leaves, the
 * last one takes its number). An entry of -1 (a dead worker) lets the kernel
 * pick a socket by hash. Replaces any program already attached to the group.
 *
 * `fd` is a bound socket of the group, e.g. `WorkerUdpIo.fd` of a socket bound
 * with `reusePort: true`. Throws STOQ_ERR_INVALID_ARG for a bad argument,
 * STOQ_ERR_UNSUPPORTED where koffi or libc cannot be loaded, STOQ_ERR_SOCKET
 * (with the errno) when the kernel refuses the program.
 */
export function attachCidSteering(fd: number, table: readonly number[]): void {
  checkFd(fd)
  const entries = checkTable(table)
  const c = loadCalls('reuseport steering')
  const program = cidSteeringProgram(entries)
  // struct sock_fprog { unsigned short len; struct sock_filter *filter; }: 16 bytes on LP64.
  const fprog = Buffer.alloc(16)
  fprog.writeUInt16LE(program.length / INSN, 0)
  fprog.writeBigUInt64LE(c.address(program), 8)
  const err = c.setOption(fd, SO_ATTACH_REUSEPORT_CBPF, fprog, 16)
  // Keep the program referenced until the kernel has copied it.
  program.readUInt8(0)
  if (err !== 0) {
    const name = errnoName(err)
    throw new StoqSocketError(
      `setsockopt(SO_ATTACH_REUSEPORT_CBPF) on fd ${fd} failed: ${name}` + (name === 'EINVAL' ? ' (is the socket bound with reusePort?)' : ''),
      { syscall: 'setsockopt', errno: name },
    )
  }
}

/**
 * Remove the steering program of the reuseport group of `fd` (the kernel goes
 * back to hashing). Throws STOQ_ERR_SOCKET with the errno on failure (ENOENT:
 * no program was attached).
 */
export function detachCidSteering(fd: number): void {
  checkFd(fd)
  const c = loadCalls('reuseport steering')
  // The kernel ignores the value, but wants a readable int.
  const err = c.setOption(fd, SO_DETACH_REUSEPORT_BPF, Buffer.alloc(4), 4)
  if (err !== 0) {
    const name = errnoName(err)
    throw new StoqSocketError(`setsockopt(SO_DETACH_REUSEPORT_BPF) on fd ${fd} failed: ${name}`, { syscall: 'setsockopt', errno: name })
  }
}

/**
 * Close `fd` only if it is a UDP socket bound to port `expectPort` (as
 * getsockname, SO_TYPE and SO_PROTOCOL show): the socket a crashed worker left
 * open, closed by the main thread without risking a descriptor number that was
 * reused meanwhile. Returns true when it closed it; otherwise false, and does
 * nothing.
 */
export function closeSocketFd(fd: number, expectPort: number): boolean {
  checkFd(fd)
  if (typeof expectPort !== 'number' || !Number.isInteger(expectPort) || expectPort < 1 || expectPort > 65535) {
    throw new StoqInvalidArgumentError('expectPort', `expected a port from 1 to 65535, got ${String(expectPort)}`)
  }
  const c = loadCalls('closeSocketFd')
  const local = c.localName(fd)
  if ('errno' in local) return false
  if (local.family !== AF_INET && local.family !== AF_INET6) return false
  if (local.port !== expectPort) return false
  if (c.getInt(fd, SO_TYPE) !== SOCK_DGRAM || c.getInt(fd, SO_PROTOCOL) !== IPPROTO_UDP) return false
  return c.close(fd) === 0
}
