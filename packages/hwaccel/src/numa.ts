import fs from 'node:fs'
import { StoqInvalidArgumentError } from '@stoq/interface'
import { errnoName, loadSystemLibc, messageOf, type KoffiFunction } from './koffi/affinity.js'

/**
 * NUMA placement of buffer memory: bind the pages of a buffer to one node, and read back
 * which node a page lives on. Through libnuma (`numa_tonode_memory`) where libnuma.so.1
 * loads, else through the `mbind` system call; the node a page is on comes from
 * `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`. Linux only; never blocks.
 *
 * Only whole pages inside the buffer are bound (a SharedArrayBuffer rarely starts on a
 * page boundary); pages are moved if already touched (MPOL_MF_MOVE).
 */

export interface NumaPlacement {
  /** The pages were bound to `node`. */
  ok: boolean
  node: number
  /** Bytes of whole pages bound (the buffer minus its partial first and last pages). */
  bytes: number
  /** `libnuma` or `mbind`, or why nothing was done. */
  via: 'libnuma' | 'mbind' | 'none'
  detail: string
}

const SYS_MBIND: Partial<Record<string, number>> = { x64: 237, arm64: 235 }
const SYS_GET_MEMPOLICY: Partial<Record<string, number>> = { x64: 239, arm64: 236 }
const MPOL_BIND = 2
const MPOL_MF_MOVE = 1 << 1
const MPOL_F_NODE = 1 << 0
const MPOL_F_ADDR = 1 << 1
const PAGE = 4096

interface NumaCalls {
  address: (view: Uint8Array) => number
  syscall: KoffiFunction
  errno: () => number
  libnuma: { tonode: KoffiFunction } | null
}

let calls: { ok: true; calls: NumaCalls } | { ok: false; reason: string } | null = null

function load(): { ok: true; calls: NumaCalls } | { ok: false; reason: string } {
  if (calls !== null) return calls
  const libc = loadSystemLibc()
  if (!libc.ok) return (calls = { ok: false, reason: libc.reason })
  if (SYS_MBIND[process.arch] === undefined) return (calls = { ok: false, reason: `no mbind syscall number for ${process.arch}` })
  try {
    const k = libc.koffi
    const syscall = libc.lib.func('long syscall(long number, ...)')
    let libnuma: NumaCalls['libnuma'] = null
    try {
      const lib = k.load('libnuma.so.1')
      const available = lib.func('int numa_available()')
      if ((available() as number) >= 0) libnuma = { tonode: lib.func('void numa_tonode_memory(uintptr_t start, size_t size, int node)') }
    } catch {
      libnuma = null
    }
    calls = {
      ok: true,
      calls: { address: (v) => Number(k.address(v)), syscall, errno: () => k.errno(), libnuma },
    }
  } catch (err) {
    calls = { ok: false, reason: messageOf(err) }
  }
  return calls
}

/** NUMA nodes of this machine (from sysfs), e.g. [0] on a single-node machine; [] when unknown. */
export function numaNodes(): number[] {
  try {
    const online = fs.readFileSync('/sys/devices/system/node/online', 'utf8').trim()
    const nodes: number[] = []
    for (const part of online.split(',')) {
      const [a, b] = part.split('-').map(Number)
      if (a === undefined || !Number.isInteger(a)) continue
      for (let n = a; n <= (b ?? a); n++) nodes.push(n)
    }
    return nodes
  } catch {
    return []
  }
}

/** Whole pages of `memory`: [address, bytes], or null when it holds no whole page. */
function pages(c: NumaCalls, memory: Uint8Array): [number, number] | null {
  if (memory.byteLength === 0) return null
  const start = c.address(memory)
  const first = Math.ceil(start / PAGE) * PAGE
  const end = Math.floor((start + memory.byteLength) / PAGE) * PAGE
  return end > first ? [first, end - first] : null
}

/**
 * Bind the whole pages of `memory` to NUMA node `node`. Throws StoqInvalidArgumentError for
 * a node this machine does not have; otherwise reports what happened (never throws for
 * a missing facility: `ok` is false and `detail` says why).
 */
export function bindToNumaNode(memory: Uint8Array, node: number): NumaPlacement {
  if (!(memory instanceof Uint8Array)) throw new StoqInvalidArgumentError('memory', 'expected a Uint8Array')
  const nodes = numaNodes()
  if (!Number.isInteger(node) || node < 0 || node > 1023 || (nodes.length > 0 && !nodes.includes(node))) {
    throw new StoqInvalidArgumentError('numaNode', `NUMA node ${String(node)} does not exist here (nodes: ${nodes.length > 0 ? nodes.join(', ') : 'unknown'})`)
  }
  const l = load()
  if (!l.ok) return { ok: false, node, bytes: 0, via: 'none', detail: `NUMA placement unavailable: ${l.reason}` }
  const c = l.calls
  const range = pages(c, memory)
  if (range === null) return { ok: false, node, bytes: 0, via: 'none', detail: 'the buffer holds no whole page' }
  const [address, bytes] = range
  if (c.libnuma !== null) {
    c.libnuma.tonode(address, bytes, node)
    return { ok: true, node, bytes, via: 'libnuma', detail: `numa_tonode_memory: ${bytes} bytes on node ${node}` }
  }
  const mask = new BigUint64Array(16) // 1024 nodes
  mask[node >> 6] = 1n << BigInt(node & 63)
  const rc = Number(
    c.syscall(SYS_MBIND[process.arch]!, 'uint64_t', address, 'uint64_t', bytes, 'int', MPOL_BIND, 'void *', mask, 'uint64_t', 1024, 'uint32_t', MPOL_MF_MOVE),
  )
  if (rc !== 0) {
    const e = c.errno()
    return { ok: false, node, bytes: 0, via: 'mbind', detail: `mbind failed: ${errnoName(e)} (libnuma.so.1 absent)` }
  }
  return { ok: true, node, bytes, via: 'mbind', detail: `mbind(MPOL_BIND): ${bytes} bytes on node ${node} (libnuma.so.1 absent)` }
}

/** The NUMA node of the page holding `memory[offset]` (touching it first), or -1 when unknown. */
export function numaNodeOf(memory: Uint8Array, offset = 0): number {
  if (!(memory instanceof Uint8Array) || offset < 0 || offset >= memory.byteLength) return -1
  const l = load()
  if (!l.ok || SYS_GET_MEMPOLICY[process.arch] === undefined) return -1
  const c = l.calls
  // A page has no node before it is touched: read-modify-write one byte.
  memory[offset] = memory[offset]!
  const out = new Int32Array(1)
  const rc = Number(
    c.syscall(
      SYS_GET_MEMPOLICY[process.arch]!,
      'void *',
      out,
      'void *',
      null,
      'uint64_t',
      0,
      'uint64_t',
      c.address(memory) + offset,
      'uint64_t',
      MPOL_F_NODE | MPOL_F_ADDR,
    ),
  )
  return rc === 0 ? out[0]! : -1
}
