import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { chartPeakLabel } from '@stoq/monitoring'
import type { BenchReport } from '../src/cli/bench-client.js'
import { CliRunner, type Run } from './cli-runner.js'

const cli = new CliRunner('stoq-cli-chart-')
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-cli-chart-out-'))
const runCli = (args: string[], timeoutMs?: number): Promise<Run> => cli.run(args, { timeoutMs })
afterAll(() => {
  cli.cleanup()
  fs.rmSync(out, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------
// A strict, minimal XML reader: well-formedness (one root, balanced tags, quoted
// unique attributes, known entities only, no bare < or &) and the element tree.

interface El {
  name: string
  attrs: Record<string, string>
  children: El[]
  text: string
}

const NAME = '[A-Za-z_][\\w.:-]*'
const OPEN = new RegExp(`<(${NAME})((?:\\s+${NAME}\\s*=\\s*"[^"<]*")*)\\s*(/?)>`, 'y')
const CLOSE = new RegExp(`</(${NAME})\\s*>`, 'y')
const ATTR = new RegExp(`(${NAME})\\s*=\\s*"([^"<]*)"`, 'g')
const ENTITIES: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&apos;': "'" }

function decode(raw: string): string {
  const bare = /&(?!amp;|lt;|gt;|quot;|apos;|#\d+;|#x[0-9a-fA-F]+;)/.exec(raw)
  if (bare) throw new Error(`bare & in ${JSON.stringify(raw)}`)
  return raw.replace(/&(?:amp|lt|gt|quot|apos);|&#(\d+);|&#x([0-9a-fA-F]+);/g, (m, d?: string, h?: string) =>
    d !== undefined ? String.fromCodePoint(Number(d)) : h !== undefined ? String.fromCodePoint(parseInt(h, 16)) : ENTITIES[m]!,
  )
}

function parseXml(doc: string): El {
  let i = doc.startsWith('<?xml') ? doc.indexOf('?>') + 2 : 0
  const stack: El[] = []
  let root: El | null = null
  while (i < doc.length) {
    if (root !== null && stack.length === 0) {
      if (doc.slice(i).trim() !== '') throw new Error(`content after the root element at ${i}`)
      break
    }
    if (doc.startsWith('</', i)) {
      CLOSE.lastIndex = i
      const m = CLOSE.exec(doc)
      const open = stack.pop()
      if (!m || open?.name !== m[1]) throw new Error(`mismatched closing tag at ${i}`)
      i += m[0].length
    } else if (doc[i] === '<') {
      OPEN.lastIndex = i
      const m = OPEN.exec(doc)
      if (!m) throw new Error(`bad tag at ${i}: ${JSON.stringify(doc.slice(i, i + 40))}`)
      const el: El = { name: m[1]!, attrs: {}, children: [], text: '' }
      for (const a of m[2]!.matchAll(ATTR)) {
        if (Object.hasOwn(el.attrs, a[1]!)) throw new Error(`duplicate attribute ${a[1]}`)
        el.attrs[a[1]!] = decode(a[2]!)
      }
      if (stack.length > 0) stack.at(-1)!.children.push(el)
      else if (root === null) root = el
      else throw new Error('two root elements')
      if (m[3] !== '/') stack.push(el)
      i += m[0].length
    } else {
      const end = doc.indexOf('<', i)
      const raw = doc.slice(i, end < 0 ? doc.length : end)
      if (stack.length === 0) {
        if (raw.trim() !== '') throw new Error(`text outside the root at ${i}`)
      } else {
        stack.at(-1)!.text += decode(raw)
      }
      i += raw.length
    }
  }
  if (root === null || stack.length > 0) throw new Error('unbalanced document')
  return root
}

const all = (el: El): El[] => [el, ...el.children.flatMap(all)]
const byClass = (root: El, name: string, cls: string): El[] => all(root).filter((e) => e.name === name && (e.attrs.class ?? '').split(/\s+/).includes(cls))
const points = (el: El): string[] => (el.attrs.points ?? '').trim().split(/\s+/).filter(Boolean)

/** Checks the chart of a bench run and returns its parsed tree. */
function expectChart(file: string): El {
  const svg = fs.readFileSync(file, 'utf8')
  expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>')).toBe(true)
  const root = parseXml(svg)
  expect(root.name).toBe('svg')
  expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg')
  expect(root.attrs.viewBox).toBe(`0 0 ${root.attrs.width} ${root.attrs.height}`)
  const polylines = all(root).filter((e) => e.name === 'polyline')
  expect(polylines).toHaveLength(2)
  for (const cls of ['instantaneous', 'average']) {
    const [line] = byClass(root, 'polyline', cls)
    expect(line).toBeDefined()
    expect(points(line!).length).toBeGreaterThanOrEqual(2)
    for (const p of points(line!)) expect(p).toMatch(/^-?\d+(\.\d+)?,-?\d+(\.\d+)?$/)
  }
  expect(byClass(root, 'text', 'axis-title').map((t) => t.text)).toEqual(['time (s)', 'throughput (Gbit/s)'])
  expect(byClass(root, 'circle', 'peak-marker')).toHaveLength(1)
  const labels = byClass(root, 'text', 'peak-label').map((t) => t.text)
  expect(labels).toHaveLength(1)
  expect(labels[0]).toMatch(/^peak \d+(\.\d+)? Gbit\/s$/)
  return root
}

describe('stoq bench --chart', () => {
  it('--duration 2 --chart FILE: writes an SVG of the run and names it in the summary', async () => {
    const file = path.join(out, 'run.svg')
    const run = await runCli(['bench', '--duration', '2', '--chart', file])
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    expect(run.stdout).toContain(`  chart        ${file}\n`)
    const root = expectChart(file)
    expect(byClass(root, 'text', 'title')[0]!.text).toMatch(/^stoq bench \(local\) 127\.0\.0\.1:\d+$/)
    const subtitle = byClass(root, 'text', 'subtitle')[0]!.text
    expect(subtitle).toContain('1 connection × 1 stream, packet size 1350 B')
    expect(subtitle).toMatch(/engine (quinn|quiche)\/(gro|gso|dgram)/)
    // The peak is the summary's (the best interval of at least 0.5 s).
    const peak = /peak {9}(\S+) Gbps \(best interval/.exec(run.stdout)
    expect(peak).not.toBeNull()
    expect(byClass(root, 'text', 'peak-label')[0]!.text).toBe(`peak ${peak![1]} Gbit/s`)
    // No temporary file left behind.
    expect(fs.readdirSync(out).filter((f) => f.includes('.tmp'))).toEqual([])
  }, 60_000)

  it('--json: the summary gives the chart path; one point per [SUM] interval; the peak matches', async () => {
    const rel = path.relative(process.cwd(), path.join(out, 'sub', 'json run.svg'))
    fs.mkdirSync(path.join(out, 'sub'))
    const run = await runCli(['bench', '--duration', '2', '--connections', '2', '--streams', '2', '--json', `--chart=${rel}`])
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const report = JSON.parse(run.stdout) as BenchReport & { summary: { chart?: string } }
    expect(report.summary.chart).toBe(path.resolve(rel))
    const root = expectChart(report.summary.chart!)
    const instant = byClass(root, 'polyline', 'instantaneous')[0]!
    expect(points(instant)).toHaveLength(report.intervals.length)
    expect(points(byClass(root, 'polyline', 'average')[0]!)).toHaveLength(report.intervals.length)
    expect(report.summary.peakFrom).toBe('interval')
    expect(byClass(root, 'text', 'peak-label')[0]!.text).toBe(chartPeakLabel(report.summary.peakGbps))
    expect(byClass(root, 'text', 'subtitle')[0]!.text).toContain('2 connections × 2 streams')
  }, 60_000)

  it('is in the help text', async () => {
    const run = await runCli(['bench', '--help'])
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('--chart FILE.svg')
  })

  it.each([
    [['bench', '--chart'], 'option --chart needs a value'],
    [['bench', '--chart', '--json'], 'option --chart needs a value'],
    [['bench', '--chart='], '--chart needs a non-empty value'],
    [['bench', '--chart', '-'], '--chart needs a file path'],
    [['bench', '--chart', '/no/such/dir/run.svg'], 'cannot write --chart file "/no/such/dir/run.svg"'],
    [['bench', '--chart', os.tmpdir()], 'is a directory'],
    [['bench', '--server', '--chart', 'x.svg'], '--chart is a client option'],
  ])('stoq %j exits 2: %s', async (args, message) => {
    const run = await runCli(args, 20_000)
    expect(run.code).toBe(2)
    expect(run.stdout).toBe('')
    expect(run.stderr).toContain(message)
    expect(run.stderr).toContain('Run "stoq bench --help" for usage.')
  })
})
