import { readFileSync, readdirSync } from 'node:fs'
import os from 'node:os'
import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { type Capability, type CapabilityReport, GsoUdpIo, detectCapabilities } from '../src/index.js'

const ENTRIES = ['kernel', 'koffi', 'libc', 'gso', 'gro', 'sendmmsg', 'recvmmsg', 'ioUring', 'socketBuffers', 'numa'] as const

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
    if (report.ioUring.available) expect(report.ioUring.detail).toMatch(/liburing\.so\.2 loads/)
    else expect(report.ioUring.detail).toMatch(/liburing|koffi/)
  })

  it('reports gso only as the real probe found it, and GsoUdpIo agrees with it', async () => {
    const report = await detectCapabilities()
    const io = new GsoUdpIo()
    const outcome = await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, {
      onPacket() {},
      onBatchEnd() {},
      onSendComplete() {},
      onDrain() {},
      onError() {},
    }).then(
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
})
