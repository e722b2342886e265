/**
 * Summarise V8 .cpuprofile files (from `--cpu-prof`): top functions by self
 * time, by total (inclusive) time, and self time per script.
 *
 *   node dist/profile-top.js FILE.cpuprofile [...] [--top 25]
 */
import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number }
  hitCount?: number
  children?: number[]
}

interface Profile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

function frameKey(n: ProfileNode): string {
  const f = n.callFrame
  const name = f.functionName || '(anonymous)'
  if (!f.url) return name
  return `${name}  ${shortUrl(f.url)}:${f.lineNumber + 1}`
}

function shortUrl(url: string): string {
  const u = url.replace(/^file:\/\//, '')
  const pkg = u.match(/packages\/([^/]+)\/(.*)$/)
  if (pkg) return `${pkg[1]}/${pkg[2]}`
  const nm = u.lastIndexOf('node_modules/')
  if (nm >= 0) return u.slice(nm + 'node_modules/'.length)
  return u.startsWith('node:') ? u : path.basename(u)
}

function scriptKey(n: ProfileNode): string {
  const f = n.callFrame
  if (!f.url) return f.functionName.startsWith('(') ? f.functionName : '(native / no script)'
  return shortUrl(f.url)
}

function summarise(file: string, top: number): string {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const n of p.nodes) {
    byId.set(n.id, n)
    for (const c of n.children ?? []) parent.set(c, n.id)
  }
  const self = new Map<string, number>()
  const total = new Map<string, number>()
  const scripts = new Map<string, number>()
  let sum = 0
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0
    const node = byId.get(p.samples[i]!)
    if (!node) continue
    sum += dt
    self.set(frameKey(node), (self.get(frameKey(node)) ?? 0) + dt)
    scripts.set(scriptKey(node), (scripts.get(scriptKey(node)) ?? 0) + dt)
    const seen = new Set<string>()
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const k = frameKey(byId.get(id)!)
      if (seen.has(k)) continue
      seen.add(k)
      total.set(k, (total.get(k) ?? 0) + dt)
    }
  }
  const fmt = (m: Map<string, number>, title: string, n: number): string[] => {
    const rows = [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)
    return [title, ...rows.map(([k, v]) => `  ${((v / sum) * 100).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(7)} ms  ${k}`)]
  }
  return [
    `${path.basename(file)}: ${(sum / 1e6).toFixed(2)} s sampled`,
    ...fmt(self, 'self time, by function:', top),
    ...fmt(scripts, 'self time, by script:', Math.min(top, 15)),
    ...fmt(total, 'total (inclusive) time, by function:', top),
  ].join('\n')
}

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: { top: { type: 'string', default: '25' } },
  allowPositionals: true,
})
if (positionals.length === 0) {
  console.error('usage: node dist/profile-top.js FILE.cpuprofile [...] [--top N]')
  process.exit(2)
}
const top = Number(values.top) || 25
console.log(positionals.map((f) => summarise(f, top)).join('\n\n'))
