import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs'
import os from 'node:os'
import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { type Capability, type CapabilityReport, GsoUdpIo, detectCapabilities, formatCapabilities, parseCpuList } from '../src/index.js'
import { probeEthtool } from '../src/koffi/ethtool.js'

const ENTRIES = [
  'kernel',
  'koffi',
  'libc',
  'gso',
  'gro',
  'sendmmsg',
  'recvmmsg',
  'ioUring',
  'socketBuffers',
  'numa',
  'affinity',
  'nicOffloads',
  'dpdk',
] as const
const OFFLOADS = ['tso', 'ufo', 'gso', 'gro', 'sg', 'rxChecksum', 'txChecksum', 'udpSegmentation'] as const

function expectCapability(entry: Capability, name: string): void {
  expect(typeof entry.available, `${name}.available`).toBe('boolean')
  expect(typeof entry.detail, `${name}.detail`).toBe('string')
  expect(entry.detail.length, `${name}.detail`).toBeGreaterThan(0)
}

function expectWellFormed(report: CapabilityReport): void {
  for (const name of ENTRIES) expectCapability(report[name], name)
  expect(report.platform).toBe(process.platform)
  expect(report.arch).toBe(process.arch)
  expect(report.kernel.release).toBe(os.release())
  expect(report.kernel.available).toBe(process.platform === 'linux')
  expect(Number.isInteger(report.numa.nodes) && report.numa.nodes >= 0).toBe(true)
  expect(typeof report.socketBuffers.force).toBe('boolean')
  // The worker backend (gro) batches with recvmmsg/sendmmsg: the report must not say that none does.
  for (const name of ['sendmmsg', 'recvmmsg'] as const) {
    if (report[name].available) expect(report[name].detail).toMatch(/worker UDP backend \(gro/)
  }

  const numa = report.numa.libnuma
  expect(typeof numa.loadable).toBe('boolean')
  if (!numa.loadable) expect([numa.numaAvailable, numa.maxNode, numa.cpuNodes]).toEqual([null, null, null])

  expect(Array.isArray(report.affinity.cpus) && Array.isArray(report.affinity.onlineCpus)).toBe(true)
  expect(report.affinity.threadId === null || Number.isInteger(report.affinity.threadId)).toBe(true)
  if (report.affinity.available) expect(report.affinity.cpus.length).toBeGreaterThan(0)

  expect(Array.isArray(report.nicOffloads.interfaces)).toBe(true)
  expect(report.nicOffloads.available).toBe(report.nicOffloads.interfaces.some((i) => i.answered))
  for (const nic of report.nicOffloads.interfaces) {
    expect(typeof nic.name).toBe('string')
    expect(typeof nic.answered).toBe('boolean')
    expect(nic.driver === null || typeof nic.driver === 'string').toBe(true)
    expect(nic.detail.startsWith(nic.name)).toBe(true)
    for (const key of OFFLOADS) {
      const v = nic.offloads[key]
      expect(v === null || typeof v === 'boolean', `${nic.name}.${key}`).toBe(true)
      // An unknown offload always says why.
      if (v === null) expect(typeof nic.errors[key], `${nic.name}.errors.${key}`).toBe('string')
    }
    expect(nic.activeFeatures === null || Array.isArray(nic.activeFeatures)).toBe(true)
    if (nic.activeFeatures === null) expect(typeof nic.featuresError).toBe('string')
  }

  const dpdk = report.dpdk
  expect(dpdk.available).toBe(dpdk.devices.some((d) => d.network))
  for (const d of dpdk.devices) {
    expect(d.pciAddress).toMatch(/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i)
    expect(['vfio-pci', 'uio_pci_generic', 'igb_uio']).toContain(d.driver)
  }
  for (const v of [dpdk.hugepagesTotal, dpdk.hugepagesFree, dpdk.hugepageSizeKb]) expect(v === null || Number.isInteger(v)).toBe(true)
}

function meminfo(key: string): number | null {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'))
  return m === null ? null : Number(m[1])
}

function procAllowed(): number[] {
  const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(readFileSync('/proc/thread-self/status', 'utf8'))
  return parseCpuList(m?.[1] ?? '')
}

function readNumber(path: string): number | null {
  try {
    return Number(readFileSync(path, 'utf8').trim())
  } catch {
    return null
  }
}

describe('detectCapabilities', () => {
  it('returns a well-formed report that agrees with what the machine shows', async () => {
    const report = await detectCapabilities()
    expectWellFormed(report)

    // Facts checked independently of the detector.
    expect(report.socketBuffers.rmemMax).toBe(readNumber('/proc/sys/net/core/rmem_max'))
    expect(report.socketBuffers.wmemMax).toBe(readNumber('/proc/sys/net/core/wmem_max'))
    let nodes = 0
    try {
      nodes = readdirSync('/sys/devices/system/node').filter((n) => /^node\d+$/.test(n)).length
    } catch {
      nodes = 0
    }
    expect(report.numa.nodes).toBe(nodes)
    expect(report.numa.available).toBe(nodes > 0)

    // Entries that depend on koffi say so when it is missing.
    if (!report.koffi.available) {
      expect(report.koffi.version).toBeNull()
      expect(report.gso.available).toBe(false)
      expect(report.libc.available).toBe(false)
    } else {
      expect(report.koffi.version).toMatch(/^\d+\.\d+\.\d+/)
    }
    // io_uring: a real io_uring_setup + NOP, not whether liburing loads.
    if (report.ioUring.available) expect(report.ioUring.detail).toMatch(/io_uring_setup works.*NOP completed/)
    else expect(report.ioUring.detail).toMatch(/io_uring|koffi|Linux-only|x64/)
    expect(report.ioUring.detail).not.toMatch(/liburing\.so\.2 loads/)
    expect(report.ioUring.detail).toMatch(/kernel\.io_uring_disabled/)
  })

  it('reports gso only as the real probe found it, and GsoUdpIo agrees with it', async () => {
    const report = await detectCapabilities()
    const io = new GsoUdpIo()
    const outcome = await io
      .bind(
        { host: '127.0.0.1', port: 0, ipv6Only: false },
        {
          onPacket() {},
          onBatchEnd() {},
          onSendComplete() {},
          onDrain() {},
          onError() {},
        },
      )
      .then(
        () => 'bound',
        (err: unknown) => (StoqError.isInstance(err) ? err.code : String(err)),
      )
    await io.close()
    if (report.gso.available) {
      expect(report.gso.detail).toMatch(/arrived as 2 datagrams with the right contents/)
      expect(outcome).toBe('bound')
    } else {
      expect(outcome).toBe('STOQ_ERR_UNSUPPORTED')
    }
  })

  it('reports a failed probe as unavailable, with the kernel error, without throwing', async () => {
    // Two 40000-byte segments exceed the largest UDP payload: a real kernel refusal.
    const report = await detectCapabilities({ probeSegmentSize: 40_000 })
    expectWellFormed(report)
    expect(report.gso.available).toBe(false)
    if (report.libc.available && process.platform === 'linux') expect(report.gso.detail).toMatch(/EMSGSIZE/)
  })

  it('stays fast: the whole report in well under a second', async () => {
    await detectCapabilities() // warm: koffi and libc loads are once per process
    const started = performance.now()
    await detectCapabilities()
    expect(performance.now() - started).toBeLessThan(1000)
  })
})

describe.runIf(process.platform === 'linux')('detectCapabilities: the new entries agree with this machine', () => {
  it('nicOffloads covers every interface of /sys/class/net, and its two ethtool paths agree', async () => {
    const report = await detectCapabilities()
    const names = readdirSync('/sys/class/net')
      .filter((n) => existsSync(`/sys/class/net/${n}/ifindex`))
      .sort()
    expect(report.nicOffloads.interfaces.map((i) => i.name)).toEqual(names)
    expect(names).toContain('lo')
    if (!report.koffi.available) {
      expect(report.nicOffloads.available).toBe(false)
      return
    }
    for (const nic of report.nicOffloads.interfaces) {
      let driver: string | null = null
      try {
        driver = readlinkSync(`/sys/class/net/${nic.name}/device/driver`).split('/').pop() ?? null
      } catch {
        driver = null
      }
      expect(nic.driver).toBe(driver)
      // The legacy commands (ETHTOOL_G{TSO,GSO,GRO,SG,RXCSUM,TXCSUM}) and the named features
      // (ETHTOOL_GFEATURES + GSTRINGS) are separate ioctls over the same netdev features.
      const active = nic.activeFeatures
      if (active === null) continue
      const on = (name: string): boolean => active.includes(name)
      if (nic.offloads.gso !== null) expect(nic.offloads.gso, `${nic.name} gso`).toBe(on('tx-generic-segmentation'))
      if (nic.offloads.gro !== null) expect(nic.offloads.gro, `${nic.name} gro`).toBe(on('rx-gro'))
      if (nic.offloads.rxChecksum !== null) expect(nic.offloads.rxChecksum, `${nic.name} rx-csum`).toBe(on('rx-checksum'))
      if (nic.offloads.sg !== null) expect(nic.offloads.sg, `${nic.name} sg`).toBe(on('tx-scatter-gather') || on('tx-scatter-gather-fraglist'))
      if (nic.offloads.txChecksum !== null) expect(nic.offloads.txChecksum, `${nic.name} tx-csum`).toBe(active.some((f) => f.startsWith('tx-checksum-')))
      if (nic.offloads.tso === true)
        expect(
          active.some((f) => /^tx-tcp.*-segmentation$/.test(f)),
          `${nic.name} tso`,
        ).toBe(true)
      if (nic.offloads.tso === false) expect(on('tx-tcp-segmentation') || on('tx-tcp6-segmentation'), `${nic.name} tso`).toBe(false)
      if (nic.offloads.udpSegmentation !== null) expect(nic.offloads.udpSegmentation).toBe(on('tx-udp-segmentation'))
    }
    const lo = report.nicOffloads.interfaces.find((i) => i.name === 'lo')
    // Whatever lo said, the report says the same thing when asked again directly.
    const again = probeEthtool(['lo'])
    expect(again.ok).toBe(true)
    if (again.ok && lo !== undefined) {
      expect(again.interfaces[0]?.answered).toBe(lo.answered)
      expect(again.interfaces[0]?.offloads).toEqual(lo.offloads)
    }
  })

  it('an interface that does not exist gets ENODEV from the kernel, not a guess', () => {
    const probe = probeEthtool(['stoqnope0', 'a-name-far-too-long-for-ifnamsiz'])
    if (!probe.ok) {
      expect(probe.reason).toMatch(/koffi|libc|socket/)
      return
    }
    const [missing, tooLong] = probe.interfaces
    expect(missing?.answered).toBe(false)
    expect(missing?.errors.tso).toBe('ENODEV')
    expect(missing?.offloads.tso).toBeNull()
    expect(tooLong?.answered).toBe(false)
    expect(tooLong?.errors.tso).toMatch(/IFNAMSIZ/)
  })

  it('dpdk lists exactly the PCI devices bound to userspace drivers, and the hugepages of /proc/meminfo', async () => {
    const report = await detectCapabilities()
    const loaded: string[] = []
    const bound: string[] = []
    for (const driver of ['vfio-pci', 'uio_pci_generic', 'igb_uio']) {
      if (!existsSync(`/sys/bus/pci/drivers/${driver}`)) continue
      loaded.push(driver)
      for (const e of readdirSync(`/sys/bus/pci/drivers/${driver}`)) if (/^[0-9a-f]{4}:/i.test(e)) bound.push(`${driver} ${e}`)
    }
    expect(report.dpdk.driversLoaded).toEqual(loaded)
    expect(report.dpdk.devices.map((d) => `${d.driver} ${d.pciAddress}`).sort()).toEqual(bound.sort())
    expect(report.dpdk.hugepagesTotal).toBe(meminfo('HugePages_Total'))
    expect(report.dpdk.hugepageSizeKb).toBe(meminfo('Hugepagesize'))
    if (!report.dpdk.available) {
      expect(report.dpdk.detail).toMatch(/no NIC bound to a DPDK driver/)
      if (loaded.length === 0) expect(report.dpdk.detail).toMatch(/not loaded/)
    } else {
      expect(report.dpdk.detail).toMatch(/NIC\(s\) bound to a userspace driver/)
    }
    expect(report.dpdk.detail).toMatch(/hugepage/)
  })

  it('affinity is the calling thread mask the kernel shows in /proc/thread-self', async () => {
    const report = await detectCapabilities()
    expect(report.affinity.onlineCpus).toEqual(parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8')))
    if (!report.koffi.available) {
      expect(report.affinity.available).toBe(false)
      return
    }
    expect(report.affinity.available).toBe(true)
    expect(report.affinity.cpus).toEqual(procAllowed())
    expect(report.affinity.threadId).toBe(Number(readlinkSync('/proc/thread-self').split('/').pop()))
  })

  it('numa keeps the sysfs topology and says what libnuma says about it', async () => {
    const report = await detectCapabilities()
    const nodeDirs = readdirSync('/sys/devices/system/node').filter((n) => /^node\d+$/.test(n))
    expect(report.numa.detail).toMatch(nodeDirs.length > 0 ? /node\(s\)/ : /no node entries/)
    expect(report.numa.detail).toMatch(/libnuma/)
    const { libnuma } = report.numa
    if (!libnuma.loadable) {
      expect(report.numa.detail).toMatch(/libnuma(\.so\.1 absent| unknown)/)
      return
    }
    expect(report.numa.detail).toMatch(/libnuma\.so\.1 loads/)
    if (libnuma.numaAvailable !== true) return
    // numa_max_node() and numa_node_of_cpu() against the sysfs node directories.
    expect(libnuma.maxNode).toBe(Math.max(...nodeDirs.map((n) => Number(n.slice(4)))))
    const nodeOfCpu = new Map<number, number>()
    for (const n of nodeDirs) {
      for (const cpu of parseCpuList(readFileSync(`/sys/devices/system/node/${n}/cpulist`, 'utf8'))) nodeOfCpu.set(cpu, Number(n.slice(4)))
    }
    expect(libnuma.cpuNodes).toEqual(report.affinity.onlineCpus.map((cpu) => nodeOfCpu.get(cpu)))
  })
})

describe('formatCapabilities', () => {
  it('prints one row per entry with yes/no and the detail, plus one row per interface', async () => {
    const report = await detectCapabilities()
    const text = formatCapabilities(report)
    const lines = text.split('\n')
    expect(lines[0]).toContain(`${report.platform} ${report.arch}`)
    expect(lines[1]).toMatch(/^Entry\s+Available\s+Detail$/)
    for (const name of ENTRIES) {
      const row = lines.find((l) => l.startsWith(`${name} `))
      expect(row, name).toBeDefined()
      expect(row).toMatch(new RegExp(`^${name}\\s+${report[name].available ? 'yes' : 'no'}\\s+\\S`))
    }
    for (const nic of report.nicOffloads.interfaces) {
      expect(
        lines.some((l) => new RegExp(`^  ${nic.name}\\s+${nic.answered ? 'yes' : 'no'}\\s`).test(l)),
        nic.name,
      ).toBe(true)
    }
    // Every word of every detail is in the table (wrapping only moves words to continuation lines).
    const words = new Set(text.split(/\s+/))
    for (const name of ENTRIES) for (const w of report[name].detail.split(/\s+/)) expect(words.has(w), `${name}: ${w}`).toBe(true)
  })

  it('wraps the detail column at the width and keeps continuation lines under it', async () => {
    const report = await detectCapabilities()
    const long = 'word '.repeat(60).trim()
    const text = formatCapabilities({ ...report, kernel: { ...report.kernel, detail: long } }, { width: 70 })
    const lines = text.split('\n').filter((l) => l !== '')
    for (const l of lines.slice(1)) {
      if (!/\S{40,}/.test(l)) expect(l.length, l).toBeLessThanOrEqual(70)
    }
    const start = lines.findIndex((l) => l.startsWith('kernel '))
    const detailColumn = lines[start]?.indexOf('word') ?? -1
    expect(detailColumn).toBeGreaterThan(0)
    expect(lines[start + 1]?.indexOf('word')).toBe(detailColumn)
    expect(lines[start + 1]?.slice(0, detailColumn).trim()).toBe('')
    expect(text.match(/word/g)?.length).toBe(60)
  })
})
