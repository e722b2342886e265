import dgram from 'node:dgram'
import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync } from 'node:fs'
import { basename } from 'node:path'
import os from 'node:os'
import { type UdpIo, type UdpIoFactory, type UdpReceiver, checkOptions } from '@stoq/interface'
import { type DgramUdpIoOptions, DGRAM_OPTION_KEYS, DgramUdpIo } from './dgram-io.js'
import { DEFAULT_GSO_PROBE_SEGMENT_SIZE, DEFAULT_GSO_PROBE_TIMEOUT_MS, GSO_OPTION_KEYS, GsoUdpIo, type GsoUdpIoOptions } from './gso-io.js'
import { SO_SNDBUFFORCE, SOL_SOCKET, SOL_UDP, UDP_GRO, errnoName, errorMessage, type Koffi, loadKoffi, loadLibc } from './koffi/libc.js'
import { socketFd } from './koffi/socket-fd.js'
import { probeIoUring } from './uring-io.js'
import { WorkerUdpIo } from './worker-io.js'
import { WORKER_OPTION_KEYS, type WorkerUdpIoOptions } from './worker/options.js'
import { literalLookup, probeGso } from './koffi/sockets.js'
import { formatCpuList, getOnlineCpus } from './affinity.js'
import { sysGetAffinity, sysGettid } from './koffi/affinity.js'
import { type EthtoolInterfaceResult, type NicOffloadName, probeEthtool } from './koffi/ethtool.js'

/** One capability: whether this process can use it, and why (or why not). */
export interface Capability {
  available: boolean
  detail: string
}

export interface CapabilityReport {
  platform: NodeJS.Platform
  arch: string
  /** Kernel release from `os.release()`; `available` is true on Linux. */
  kernel: Capability & { release: string }
  /** koffi's native module; `detail` carries the load error when it fails. */
  koffi: Capability & { version: string | null }
  /** A C library loaded through koffi. */
  libc: Capability
  /** UDP_SEGMENT proven by a real two-segment loopback write received as two datagrams. */
  gso: Capability
  /** The kernel accepts setsockopt(UDP_GRO); says too whether a STOQ backend uses it. */
  gro: Capability
  /** The sendmmsg / recvmmsg symbols resolve in libc through koffi. */
  sendmmsg: Capability
  recvmmsg: Capability
  /** io_uring proven by a real io_uring_setup, opcode probe and NOP round trip (raw syscalls through koffi, no liburing). */
  ioUring: Capability
  /** net.core.{r,w}mem_max and whether SO_*BUFFORCE (CAP_NET_ADMIN) lifts them. */
  socketBuffers: Capability & { rmemMax: number | null; wmemMax: number | null; force: boolean }
  /** NUMA nodes under /sys/devices/system/node, and whether libnuma.so.1 loads (and what it says). */
  numa: Capability & { nodes: number; libnuma: LibnumaInfo }
  /** sched_getaffinity on the calling thread: the CPUs it may run on. */
  affinity: Capability & { threadId: number | null; cpus: number[]; onlineCpus: number[] }
  /** Offload features of every interface in /sys/class/net, read with the SIOCETHTOOL ioctl. */
  nicOffloads: Capability & { interfaces: NicInterfaceReport[] }
  /** PCI NICs bound to a userspace (DPDK) driver, and the hugepages DPDK needs. */
  dpdk: Capability & DpdkInfo
}

export interface LibnumaInfo {
  /** libnuma.so.1 loads through koffi. */
  loadable: boolean
  /** numa_available() >= 0 (the kernel has NUMA support); null when libnuma did not load. */
  numaAvailable: boolean | null
  /** numa_max_node(); null when libnuma did not load or NUMA is unavailable. */
  maxNode: number | null
  /** numa_node_of_cpu() for each online CPU, in `affinity.onlineCpus` order; null when unknown. */
  cpuNodes: number[] | null
}

/** One interface in the NIC offloads entry: the ethtool answers plus the kernel driver. */
export interface NicInterfaceReport extends EthtoolInterfaceResult {
  /** Basename of /sys/class/net/<name>/device/driver; null for virtual devices. */
  driver: string | null
  /** One line: each offload on/off, or why it is unknown. */
  detail: string
}

export interface DpdkDevice {
  /** PCI address, e.g. `0000:03:00.0`. */
  pciAddress: string
  /** vfio-pci, uio_pci_generic or igb_uio. */
  driver: string
  /** `0x8086`-style ids from sysfs; null when unreadable. */
  vendor: string | null
  device: string | null
  /** PCI class, e.g. `0x020000`; null when unreadable. */
  pciClass: string | null
  /** PCI class 0x02 (network controller). */
  network: boolean
}

export interface DpdkInfo {
  /** Devices bound to a userspace I/O driver (network or not); `available` counts only network ones. */
  devices: DpdkDevice[]
  /** Which of vfio-pci, uio_pci_generic, igb_uio have a /sys/bus/pci/drivers entry. */
  driversLoaded: string[]
  /** HugePages_Total / HugePages_Free / Hugepagesize of /proc/meminfo; null when unreadable. */
  hugepagesTotal: number | null
  hugepagesFree: number | null
  hugepageSizeKb: number | null
}

export interface DetectOptions {
  /** Segment size of the GSO probe. */
  probeSegmentSize: number
  /** How long the GSO probe waits for its datagrams. */
  probeTimeoutMs: number
}

/**
 * Report what this machine and process can do for UDP I/O, each entry proved
 * where it can be (a real loopback GSO write, a real setsockopt) rather than
 * inferred from a version number. Never rejects for what it cannot prove; an unknown option key
 * rejects with STOQ_ERR_INVALID_ARG.
 */
export async function detectCapabilities(options: Partial<DetectOptions> = {}): Promise<CapabilityReport> {
  checkOptions(options, ['probeSegmentSize', 'probeTimeoutMs'])
  const segmentSize = options.probeSegmentSize ?? DEFAULT_GSO_PROBE_SEGMENT_SIZE
  const timeoutMs = options.probeTimeoutMs ?? DEFAULT_GSO_PROBE_TIMEOUT_MS
  const linux = process.platform === 'linux'
  const release = safe(() => os.release(), 'unknown')
  const report: CapabilityReport = {
    platform: process.platform,
    arch: process.arch,
    kernel: {
      available: linux,
      release,
      detail: linux ? `Linux ${release}` : `${process.platform} ${release}: the accelerated paths are Linux-only`,
    },
    koffi: { available: false, version: null, detail: '' },
    libc: { available: false, detail: '' },
    gso: { available: false, detail: '' },
    gro: { available: false, detail: '' },
    sendmmsg: { available: false, detail: '' },
    recvmmsg: { available: false, detail: '' },
    ioUring: { available: false, detail: '' },
    socketBuffers: { available: false, detail: '', rmemMax: null, wmemMax: null, force: false },
    numa: { available: false, detail: '', nodes: 0, libnuma: { loadable: false, numaAvailable: null, maxNode: null, cpuNodes: null } },
    affinity: { available: false, detail: '', threadId: null, cpus: [], onlineCpus: [] },
    nicOffloads: { available: false, detail: '', interfaces: [] },
    dpdk: { available: false, detail: '', devices: [], driversLoaded: [], hugepagesTotal: null, hugepagesFree: null, hugepageSizeKb: null },
  }

  const k = loadKoffi()
  if (k.ok) {
    report.koffi = { available: true, version: String(k.koffi.version), detail: `koffi ${k.koffi.version} loaded` }
  } else {
    report.koffi = { available: false, version: null, detail: k.reason }
  }

  const libcResult = loadLibc()
  const libc = libcResult.ok ? libcResult.libc : null
  report.libc = libcResult.ok ? { available: true, detail: `${libcResult.libc.name} loaded through koffi` } : { available: false, detail: libcResult.reason }
  const noLibc = libcResult.ok ? '' : `unknown: ${libcResult.reason}`

  for (const [key, proto] of [
    ['sendmmsg', 'int sendmmsg(int sockfd, void *msgvec, unsigned int vlen, int flags)'],
    ['recvmmsg', 'int recvmmsg(int sockfd, void *msgvec, unsigned int vlen, int flags, void *timeout)'],
  ] as const) {
    if (libc === null) {
      report[key] = { available: false, detail: noLibc }
    } else {
      const found = safe(() => libc.hasSymbol(key, proto), false)
      report[key] = {
        available: found,
        detail: found
          ? `${key} resolves in ${libc.name}; the worker UDP backend (gro, the first udpBackend 'auto' tries, and the one engine workers use) batches with it`
          : `${key} does not resolve in ${libc.name}`,
      }
    }
  }

  report.ioUring = detectIoUring()
  const onlineCpus = safe(() => getOnlineCpus(), [])
  report.numa = detectNuma(k.ok ? k.koffi : null, k.ok ? '' : k.reason, onlineCpus)
  report.affinity = detectAffinity(linux, onlineCpus)
  report.nicOffloads = detectNicOffloads(linux)
  report.dpdk = detectDpdk(linux)

  const rmemMax = readNumber('/proc/sys/net/core/rmem_max')
  const wmemMax = readNumber('/proc/sys/net/core/wmem_max')

  if (libc === null || !linux) {
    const why = libc === null ? noLibc : 'Linux-only'
    report.gso = { available: false, detail: why }
    report.gro = { available: false, detail: why }
    report.socketBuffers = {
      available: rmemMax !== null && wmemMax !== null,
      rmemMax,
      wmemMax,
      force: false,
      detail: `${limitsText(rmemMax, wmemMax)}; SO_*BUFFORCE not tested (${why})`,
    }
    return report
  }

  // Real sockets for the GSO, GRO and SO_*BUFFORCE probes.
  let sender: dgram.Socket | null = null
  try {
    sender = dgram.createSocket({ type: 'udp4', lookup: literalLookup as unknown as NonNullable<dgram.SocketOptions['lookup']> })
    const s = sender
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.bind({ address: '127.0.0.1', port: 0, exclusive: true }, () => {
        s.off('error', reject)
        resolve()
      })
    })
    const fd = socketFd(s)
    if (fd < 0) {
      const why = 'the file descriptor of a dgram socket cannot be read on this Node version'
      report.gso = { available: false, detail: why }
      report.gro = { available: false, detail: why }
      report.socketBuffers = { available: rmemMax !== null, rmemMax, wmemMax, force: false, detail: `${limitsText(rmemMax, wmemMax)}; ${why}` }
      return report
    }
    const gso = await probeGso(s, fd, libc, { segmentSize, timeoutMs, receiverHost: '127.0.0.1' })
    report.gso = { available: gso.ok, detail: `${gso.detail} (127.0.0.1, kernel ${release})` }

    const groErr = libc.setIntOption(fd, SOL_UDP, UDP_GRO, 1)
    report.gro =
      groErr === 0
        ? {
            available: true,
            detail:
              'setsockopt(UDP_GRO) accepted; not used by the gso backend, which receives through libuv: its recvmsg drops ' +
              'the cmsg that carries the GRO segment size',
          }
        : { available: false, detail: `setsockopt(UDP_GRO) refused: ${errnoName(groErr)}` }

    // The same value as the default, so nothing observable changes on this throwaway socket.
    const forceErr = libc.setIntOption(fd, SOL_SOCKET, SO_SNDBUFFORCE, 4 * 1024 * 1024)
    const force = forceErr === 0
    report.socketBuffers = {
      available: rmemMax !== null && wmemMax !== null,
      rmemMax,
      wmemMax,
      force,
      detail: `${limitsText(rmemMax, wmemMax)}; ${
        force
          ? 'SO_SNDBUFFORCE/SO_RCVBUFFORCE allowed (CAP_NET_ADMIN): sizes above the limits can be set'
          : `SO_SNDBUFFORCE refused (${errnoName(forceErr)}): sizes are capped at the limits`
      }`,
    }
  } catch (err) {
    const why = `probe socket failed: ${errorMessage(err)}`
    if (report.gso.detail === '') report.gso = { available: false, detail: why }
    if (report.gro.detail === '') report.gro = { available: false, detail: why }
    if (report.socketBuffers.detail === '') {
      report.socketBuffers = {
        available: rmemMax !== null && wmemMax !== null,
        rmemMax,
        wmemMax,
        force: false,
        detail: `${limitsText(rmemMax, wmemMax)}; ${why}`,
      }
    }
  } finally {
    const s = sender
    if (s !== null) await new Promise<void>((resolve) => s.close(() => resolve()))
  }
  return report
}

function detectIoUring(): Capability {
  const probe = probeIoUring()
  const disabled = probe.disabledSysctl
  const sysctl = disabled === null ? 'kernel.io_uring_disabled not present' : `kernel.io_uring_disabled=${disabled}${disabled === 0 ? '' : ' (restricted)'}`
  return probe.ok
    ? {
        available: true,
        detail: `${probe.detail}; ${sysctl}; used by the uring UDP backend (UringUdpIo), which also proves SENDMSG/RECVMSG on loopback at bind; liburing not needed`,
      }
    : { available: false, detail: `${probe.detail}; ${sysctl}` }
}

function detectNuma(koffi: Koffi | null, koffiReason: string, onlineCpus: number[]): CapabilityReport['numa'] {
  let nodes = 0
  let sysfs: string
  try {
    const names = readdirSync('/sys/devices/system/node').filter((n) => /^node\d+$/.test(n))
    names.sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)))
    const parts = names.map((n) => {
      const cpus = safe(() => readFileSync(`/sys/devices/system/node/${n}/cpulist`, 'utf8').trim(), '?')
      return `${n} (cpus ${cpus === '' ? 'none' : cpus})`
    })
    nodes = names.length
    sysfs = names.length > 0 ? `${names.length} node(s): ${parts.join(', ')}` : 'no node entries in /sys/devices/system/node'
  } catch (err) {
    sysfs = `/sys/devices/system/node unreadable: ${errorMessage(err)}`
  }
  const libnuma = probeLibnuma(koffi, koffiReason, onlineCpus)
  return { available: nodes > 0, nodes, libnuma: libnuma.info, detail: `${sysfs}; ${libnuma.detail}` }
}

/** libnuma.so.1 through koffi: numa_available, numa_max_node, numa_node_of_cpu. Never throws. */
function probeLibnuma(koffi: Koffi | null, koffiReason: string, onlineCpus: number[]): { info: LibnumaInfo; detail: string } {
  const info: LibnumaInfo = { loadable: false, numaAvailable: null, maxNode: null, cpuNodes: null }
  if (koffi === null) return { info, detail: `libnuma unknown: ${koffiReason}` }
  if (process.platform !== 'linux') return { info, detail: 'libnuma not tried (Linux-only)' }
  let lib: ReturnType<Koffi['load']>
  try {
    lib = koffi.load('libnuma.so.1')
  } catch (err) {
    return { info, detail: `libnuma.so.1 absent: ${errorMessage(err)} (buffer placement uses the mbind system call instead)` }
  }
  info.loadable = true
  try {
    const numaAvailable = lib.func('int numa_available(void)')
    const numaMaxNode = lib.func('int numa_max_node(void)')
    const numaNodeOfCpu = lib.func('int numa_node_of_cpu(int cpu)')
    const avail = numaAvailable() as number
    info.numaAvailable = avail >= 0
    if (avail < 0) return { info, detail: 'libnuma.so.1 loads through koffi but numa_available() = -1 (no NUMA support in this kernel or process)' }
    info.maxNode = numaMaxNode() as number
    info.cpuNodes = onlineCpus.map((cpu) => numaNodeOfCpu(cpu) as number)
    const byNode = new Map<number, number[]>()
    onlineCpus.forEach((cpu, i) => {
      const node = info.cpuNodes?.[i] ?? -1
      byNode.set(node, [...(byNode.get(node) ?? []), cpu])
    })
    const map = [...byNode.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([node, cpus]) => `${node < 0 ? 'unknown node' : `node${node}`} <- cpus ${formatCpuList(cpus)}`)
      .join(', ')
    return { info, detail: `libnuma.so.1 loads through koffi: numa_available() = ${avail}, numa_max_node() = ${info.maxNode}; ${map}` }
  } catch (err) {
    return { info, detail: `libnuma.so.1 loads but its calls failed: ${errorMessage(err)}` }
  } finally {
    safe(() => lib.unload(), undefined)
  }
}

function detectAffinity(linux: boolean, onlineCpus: number[]): CapabilityReport['affinity'] {
  const base = { threadId: null, cpus: [] as number[], onlineCpus }
  if (!linux) return { ...base, available: false, detail: 'sched_getaffinity is Linux-only' }
  try {
    const r = sysGetAffinity()
    if (!r.ok) return { ...base, available: false, detail: r.reason }
    const tid = sysGettid()
    const threadId = tid.ok ? tid.tid : null
    const all = r.cpus.length === onlineCpus.length && r.cpus.every((cpu, i) => cpu === onlineCpus[i])
    return {
      available: true,
      threadId,
      cpus: r.cpus,
      onlineCpus,
      detail:
        `sched_getaffinity works: ${threadId === null ? 'the calling thread' : `thread ${threadId}`} may run on CPU${r.cpus.length === 1 ? '' : 's'} ` +
        `${formatCpuList(r.cpus)} (${all ? 'all' : `${r.cpus.length} of ${onlineCpus.length}`} online: ${formatCpuList(onlineCpus)}); ` +
        'setCpuAffinity() pins the calling thread',
    }
  } catch (err) {
    return { ...base, available: false, detail: `sched_getaffinity probe failed: ${errorMessage(err)}` }
  }
}

const OFFLOAD_LABELS: ReadonlyArray<readonly [NicOffloadName, string]> = [
  ['tso', 'tso'],
  ['ufo', 'ufo'],
  ['gso', 'gso'],
  ['gro', 'gro'],
  ['sg', 'sg'],
  ['rxChecksum', 'rx-csum'],
  ['txChecksum', 'tx-csum'],
  ['udpSegmentation', 'tx-udp-segmentation'],
]

function detectNicOffloads(linux: boolean): CapabilityReport['nicOffloads'] {
  if (!linux) return { available: false, detail: 'SIOCETHTOOL is Linux-only', interfaces: [] }
  let names: string[]
  try {
    names = netInterfaceNames()
  } catch (err) {
    return { available: false, detail: `/sys/class/net unreadable: ${errorMessage(err)}`, interfaces: [] }
  }
  if (names.length === 0) return { available: false, detail: 'no interface in /sys/class/net', interfaces: [] }
  try {
    const probe = probeEthtool(names)
    if (!probe.ok) return { available: false, detail: `SIOCETHTOOL not tried: ${probe.reason}`, interfaces: [] }
    const interfaces: NicInterfaceReport[] = probe.interfaces.map((r) => {
      const driver = safe(() => basename(readlinkSync(`/sys/class/net/${r.name}/device/driver`)), null)
      return { ...r, driver, detail: interfaceDetail(r, driver) }
    })
    const answered = interfaces.filter((i) => i.answered)
    const udpOn = answered.filter((i) => i.offloads.udpSegmentation === true).map((i) => i.name)
    const udpOff = answered.filter((i) => i.offloads.udpSegmentation === false).map((i) => i.name)
    const ufoErrors = new Set(answered.map((i) => i.errors.ufo ?? 'answered'))
    const notes: string[] = []
    if (udpOn.length + udpOff.length > 0) {
      notes.push(`tx-udp-segmentation on: ${udpOn.join(', ') || 'none'}; off: ${udpOff.join(', ') || 'none'}`)
    }
    if (answered.length > 0 && ufoErrors.size === 1 && ufoErrors.has('EOPNOTSUPP')) {
      notes.push('ETHTOOL_GUFO refused (EOPNOTSUPP) everywhere: this kernel has no UDP fragmentation offload')
    }
    const silent = interfaces.filter((i) => !i.answered).map((i) => `${i.name} (${i.errors.tso ?? i.featuresError ?? 'no answer'})`)
    if (silent.length > 0) notes.push(`no answer from ${silent.join(', ')}`)
    return {
      available: answered.length > 0,
      interfaces,
      detail:
        `${answered.length} of ${interfaces.length} interface(s) answered SIOCETHTOOL on an ${probe.socket}` +
        (notes.length > 0 ? `; ${notes.join('; ')}` : ''),
    }
  } catch (err) {
    return { available: false, detail: `SIOCETHTOOL probe failed: ${errorMessage(err)}`, interfaces: [] }
  }
}

/** Interfaces of /sys/class/net, sorted; files such as bonding_masters (no ifindex) are not interfaces. */
function netInterfaceNames(): string[] {
  return readdirSync('/sys/class/net')
    .filter((n) => existsSync(`/sys/class/net/${n}/ifindex`))
    .sort()
}

function interfaceDetail(r: EthtoolInterfaceResult, driver: string | null): string {
  const head = `${r.name} (${driver ?? 'virtual, no device driver'})`
  if (!r.answered) {
    const errs = [...new Set(Object.values(r.errors))]
    return `${head}: SIOCETHTOOL refused: ${errs.join(', ') || 'no answer'}`
  }
  const parts = OFFLOAD_LABELS.map(([key, label]) => {
    const v = r.offloads[key]
    return v === null ? `${label} n/a (${r.errors[key] ?? 'unknown'})` : `${label} ${v ? 'on' : 'off'}`
  })
  const count = r.activeFeatures === null ? `named features unreadable (${r.featuresError ?? 'unknown'})` : `${r.activeFeatures.length} named features active`
  return `${head}: ${parts.join(', ')}; ${count}`
}

const DPDK_DRIVERS = ['vfio-pci', 'uio_pci_generic', 'igb_uio'] as const
const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i

function detectDpdk(linux: boolean): CapabilityReport['dpdk'] {
  const memInfo = safe(() => readFileSync('/proc/meminfo', 'utf8'), '')
  const meminfo = (key: string): number | null => {
    const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(memInfo)
    return m === null ? null : Number(m[1])
  }
  const hugepagesTotal = meminfo('HugePages_Total')
  const hugepagesFree = meminfo('HugePages_Free')
  const hugepageSizeKb = meminfo('Hugepagesize')
  const base = { devices: [] as DpdkDevice[], driversLoaded: [] as string[], hugepagesTotal, hugepagesFree, hugepageSizeKb }
  if (!linux) return { ...base, available: false, detail: 'DPDK detection is Linux-only' }
  try {
    const devices: DpdkDevice[] = []
    const driversLoaded: string[] = []
    for (const driver of DPDK_DRIVERS) {
      let entries: string[]
      try {
        entries = readdirSync(`/sys/bus/pci/drivers/${driver}`)
      } catch {
        continue
      }
      driversLoaded.push(driver)
      for (const addr of entries.filter((e) => PCI_ADDRESS.test(e)).sort()) {
        const attr = (name: string): string | null => safe(() => readFileSync(`/sys/bus/pci/devices/${addr}/${name}`, 'utf8').trim(), null)
        const pciClass = attr('class')
        devices.push({
          pciAddress: addr,
          driver,
          vendor: attr('vendor'),
          device: attr('device'),
          pciClass,
          network: pciClass !== null && /^0x02/i.test(pciClass),
        })
      }
    }
    const nics = devices.filter((d) => d.network)
    const others = devices.filter((d) => !d.network)
    const hugepages = hugepageText(hugepagesTotal, hugepagesFree, hugepageSizeKb)
    const iommuGroups = safe(() => readdirSync('/sys/kernel/iommu_groups').length, null)
    const iommu =
      iommuGroups === null
        ? 'no /sys/kernel/iommu_groups'
        : iommuGroups === 0
          ? 'no IOMMU groups (vfio-pci would need an IOMMU or its unsafe no-IOMMU mode)'
          : `${iommuGroups} IOMMU group(s)`
    const parts: string[] = []
    if (nics.length > 0) {
      parts.push(`${nics.length} NIC(s) bound to a userspace driver: ${nics.map(deviceText).join(', ')}`)
    } else if (driversLoaded.length === 0) {
      parts.push(`no NIC bound to a DPDK driver: ${DPDK_DRIVERS.join(', ')} not loaded (no /sys/bus/pci/drivers entry)`)
    } else {
      parts.push(`no NIC bound to a DPDK driver (${driversLoaded.join(', ')} loaded, no network device bound)`)
    }
    if (others.length > 0) parts.push(`non-network devices bound: ${others.map(deviceText).join(', ')}`)
    const kernelNics = kernelNicText()
    if (kernelNics !== '') parts.push(`kernel-driven NICs: ${kernelNics}`)
    parts.push(hugepages, iommu)
    return { ...base, devices, driversLoaded, available: nics.length > 0, detail: parts.join('; ') }
  } catch (err) {
    return { ...base, available: false, detail: `DPDK probe failed: ${errorMessage(err)}` }
  }
}

function deviceText(d: DpdkDevice): string {
  const ids = d.vendor !== null && d.device !== null ? ` ${d.vendor.replace(/^0x/, '')}:${d.device.replace(/^0x/, '')}` : ''
  return `${d.pciAddress}${ids} (${d.driver}${d.pciClass === null ? ', class unreadable' : ''})`
}

function hugepageText(total: number | null, free: number | null, sizeKb: number | null): string {
  if (total === null) return 'hugepages unknown (/proc/meminfo has no HugePages_Total)'
  const size = sizeKb === null ? '' : ` of ${sizeKb} kB`
  return total > 0
    ? `${total} hugepage(s)${size} configured, ${free ?? '?'} free`
    : `no hugepages configured (HugePages_Total 0${size ? `, Hugepagesize ${sizeKb} kB` : ''})`
}

/** `eth0 -> virtio_net @ 0000:00:03.0` for each interface with a device, bifurcated drivers flagged. */
function kernelNicText(): string {
  const names = safe(() => netInterfaceNames(), [] as string[])
  const out: string[] = []
  for (const name of names) {
    const driver = safe(() => basename(readlinkSync(`/sys/class/net/${name}/device/driver`)), null)
    if (driver === null) continue
    const path = safe(() => realpathSync(`/sys/class/net/${name}/device`), '')
    const pci = path
      .split('/')
      .filter((p) => PCI_ADDRESS.test(p))
      .pop()
    const bifurcated = /^mlx[45]_core$/.test(driver) ? ', usable by the DPDK mlx PMD without rebinding' : ''
    out.push(`${name} -> ${driver}${pci === undefined ? '' : ` @ ${pci}`}${bifurcated}`)
  }
  return out.join(', ')
}

function readNumber(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim())
    return Number.isFinite(n) ? n : null
  } catch {
    return null
  }
}

function limitsText(rmem: number | null, wmem: number | null): string {
  return `net.core.rmem_max=${rmem ?? 'unreadable'}, net.core.wmem_max=${wmem ?? 'unreadable'}`
}

function safe<T>(fn: () => T, fallback: T): T {
  try {
    return fn()
  } catch {
    return fallback
  }
}

// ---------------------------------------------------------------------------
// Backend choice

export interface UdpIoAutoOptions {
  /** Options of the gro worker backend (`WorkerUdpIo`), when it is chosen. */
  worker: Partial<WorkerUdpIoOptions>
  /** Options of the GSO backend, when it is chosen. */
  gso: Partial<GsoUdpIoOptions>
  /** Options of the dgram backend, when it is chosen. */
  dgram: Partial<DgramUdpIoOptions>
  /** Skip the gro worker (the GSO probe still decides between gso and dgram). */
  disableWorker: boolean
  /** Skip both GSO backends (the gro worker sends with GSO too) and choose dgram. */
  disableGso: boolean
}

/** A UdpIo factory that says which backend it builds and why. */
export type AutoUdpIoFactory = UdpIoFactory & {
  readonly backend: 'gro' | 'gso' | 'dgram'
  readonly reason: string
}

let gsoProbeOnce: Promise<{ ok: boolean; detail: string }> | null = null
let workerProbeOnce: Promise<{ ok: boolean; detail: string }> | null = null

/** The machine-wide GSO probe, run once per process (a loopback write received as two datagrams). */
export function probeGsoSupport(): Promise<{ ok: boolean; detail: string }> {
  gsoProbeOnce ??= detectCapabilities().then((r) => ({ ok: r.gso.available, detail: r.gso.detail }))
  return gsoProbeOnce
}

/** Receives nothing: a probe socket is closed before any datagram could matter. */
const PROBE_RECEIVER: UdpReceiver = {
  onPacket: ignoreProbeEvent,
  onBatchEnd: ignoreProbeEvent,
  onSendComplete: ignoreProbeEvent,
  onDrain: ignoreProbeEvent,
  onError: ignoreProbeEvent,
}

function ignoreProbeEvent(): void {
  // The probe only binds and closes; what its socket reports is of no use.
}

/**
 * Whether the gro worker backend runs here: one real bind on loopback (worker thread, koffi,
 * UDP_GRO and the eventfd), closed again. The same test the endpoint's `udpBackend: 'auto'`
 * makes when it binds. Run once per process, like the GSO probe.
 */
export function probeWorkerSupport(): Promise<{ ok: boolean; detail: string }> {
  workerProbeOnce ??= bindWorkerOnce()
  return workerProbeOnce
}

async function bindWorkerOnce(): Promise<{ ok: boolean; detail: string }> {
  const io = new WorkerUdpIo({ receiveSlots: 2, sendSlots: 2 })
  try {
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, PROBE_RECEIVER)
    return { ok: true, detail: 'worker thread with UDP_GRO bound on loopback' }
  } catch (err) {
    return { ok: false, detail: errorMessage(err) }
  } finally {
    await io.close().catch(ignoreProbeEvent)
  }
}

/**
 * Choose the UDP backend for this machine in the endpoint's `udpBackend: 'auto'` order: the gro
 * worker (GRO receive and GSO send on a worker thread) when one loopback bind of it works, else
 * the GSO backend when the GSO probe succeeds (run once per process), else the portable dgram
 * backend. The choice shows in `factory.backend`, `io.backend` and `io.stats().backend`. The
 * chosen backend still proves itself on each socket at `bind`; a caller that gets
 * `StoqUnsupportedError` there should bind a `DgramUdpIo` instead.
 */
export async function udpIoAuto(options: Partial<UdpIoAutoOptions> = {}): Promise<AutoUdpIoFactory> {
  checkOptions(options, ['worker', 'gso', 'dgram', 'disableWorker', 'disableGso'])
  // The nested options are checked now, not when the chosen backend is built.
  const workerOptions = checkOptions(options.worker ?? {}, WORKER_OPTION_KEYS, 'worker') as Partial<WorkerUdpIoOptions>
  const dgramOptions = checkOptions(options.dgram ?? {}, DGRAM_OPTION_KEYS, 'dgram') as Partial<DgramUdpIoOptions>
  const gsoOptions = checkOptions(options.gso ?? {}, GSO_OPTION_KEYS, 'gso') as Partial<GsoUdpIoOptions>
  if (options.disableGso === true) {
    return Object.assign((): UdpIo => new DgramUdpIo(dgramOptions), { backend: 'dgram' as const, reason: 'GSO disabled by option' })
  }
  const skipped: string[] = []
  if (options.disableWorker === true) skipped.push('gro worker disabled by option')
  else {
    const worker = await probeWorkerSupport()
    if (worker.ok) {
      return Object.assign((): UdpIo => new WorkerUdpIo(workerOptions), { backend: 'gro' as const, reason: `gro worker probe passed: ${worker.detail}` })
    }
    skipped.push(`gro worker unavailable: ${worker.detail}`)
  }
  const probe = await probeGsoSupport()
  if (probe.ok) {
    return Object.assign((): UdpIo => new GsoUdpIo(gsoOptions), {
      backend: 'gso' as const,
      reason: [...skipped, `GSO probe passed: ${probe.detail}`].join('; '),
    })
  }
  return Object.assign((): UdpIo => new DgramUdpIo(dgramOptions), {
    backend: 'dgram' as const,
    reason: [...skipped, `GSO unavailable, dgram fallback: ${probe.detail}`].join('; '),
  })
}
