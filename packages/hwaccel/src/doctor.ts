import type { Capability, CapabilityReport } from './detect.js'
import { checkOptions } from '@stoq/interface'

/**
 * Human-readable form of a capability report: one row per entry (available
 * yes/no and the detail), with sub-rows for each network interface of
 * `nicOffloads` and each device of `dpdk`. Pure: no I/O, never throws on a
 * well-formed report. `stoq doctor` prints it.
 */

export interface FormatCapabilitiesOptions {
  /** Total line width the detail column wraps at (default 120; at least 60). */
  width: number
}

/** Report entries in display order; entries not listed here follow, in key order. */
const ORDER = ['kernel', 'koffi', 'libc', 'gso', 'gro', 'sendmmsg', 'recvmmsg', 'ioUring', 'socketBuffers', 'numa', 'affinity', 'nicOffloads', 'dpdk'] as const

interface Row {
  entry: string
  available: string
  detail: string
}

export function formatCapabilities(report: CapabilityReport, options: Partial<FormatCapabilitiesOptions> = {}): string {
  checkOptions(options, ['width'])
  const width = Math.max(60, Math.floor(options.width ?? 120))
  const record = report as unknown as Record<string, unknown>
  const keys: string[] = [...ORDER.filter((k) => isCapability(record[k]))]
  for (const key of Object.keys(record)) {
    if (!keys.includes(key) && isCapability(record[key])) keys.push(key)
  }

  const rows: Row[] = []
  for (const key of keys) {
    const cap = record[key] as Capability
    rows.push({ entry: key, available: cap.available ? 'yes' : 'no', detail: cap.detail })
    if (key === 'nicOffloads') {
      for (const nic of report.nicOffloads.interfaces ?? []) {
        rows.push({ entry: `  ${nic.name}`, available: nic.answered ? 'yes' : 'no', detail: nic.detail })
      }
    } else if (key === 'dpdk') {
      for (const d of report.dpdk.devices ?? []) {
        const ids = d.vendor !== null && d.device !== null ? `${d.vendor}:${d.device}` : 'ids unreadable'
        rows.push({
          entry: `  ${d.pciAddress}`,
          available: d.network ? 'yes' : 'no',
          detail: `${d.driver}, ${ids}, class ${d.pciClass ?? 'unreadable'}${d.network ? '' : ' (not a network device)'}`,
        })
      }
    }
  }

  const entryWidth = Math.max('Entry'.length, ...rows.map((r) => r.entry.length))
  const availWidth = 'Available'.length
  const indent = entryWidth + 2 + availWidth + 2
  const detailWidth = Math.max(20, width - indent)
  const lines: string[] = [
    `STOQ capabilities: ${report.platform} ${report.arch}, kernel ${report.kernel.release}`,
    `${'Entry'.padEnd(entryWidth)}  ${'Available'.padEnd(availWidth)}  Detail`,
    `${'-'.repeat(entryWidth)}  ${'-'.repeat(availWidth)}  ${'-'.repeat(Math.min(detailWidth, 40))}`,
  ]
  for (const row of rows) {
    const wrapped = wrap(row.detail === '' ? '-' : row.detail, detailWidth)
    lines.push(`${row.entry.padEnd(entryWidth)}  ${row.available.padEnd(availWidth)}  ${wrapped[0] ?? ''}`.trimEnd())
    for (const more of wrapped.slice(1)) lines.push(`${' '.repeat(indent)}${more}`)
  }
  return `${lines.join('\n')}\n`
}

function isCapability(value: unknown): value is Capability {
  return typeof value === 'object' && value !== null && typeof (value as Capability).available === 'boolean' && typeof (value as Capability).detail === 'string'
}

/** Greedy word wrap; a word longer than the width gets a line of its own. */
function wrap(text: string, width: number): string[] {
  const out: string[] = []
  let line = ''
  for (const word of text.replace(/\s+/g, ' ').trim().split(' ')) {
    if (line === '') line = word
    else if (line.length + 1 + word.length <= width) line += ` ${word}`
    else {
      out.push(line)
      line = word
    }
  }
  if (line !== '' || out.length === 0) out.push(line)
  return out
}
