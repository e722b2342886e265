/**
 * A reader of the Prometheus text exposition format 0.0.4, for tools that
 * scrape a `/metrics` endpoint (`stoq stats`). Strict: a line the format does
 * not allow throws `StoqInvalidArgumentError` naming the line, so that an
 * answer that is not an exposition (an HTML page, JSON) is told apart.
 */

import { StoqInvalidArgumentError } from '@stoq/interface'

/** One sample line. */
export interface ParsedPrometheusSample {
  /** The sample's own name (`x_bucket`, `x_sum`... for the series of a histogram `x`). */
  name: string
  labels: Record<string, string>
  value: number
  /** Milliseconds since the epoch, when the line had a timestamp. */
  timestampMs?: number
}

/** A metric family: the samples under one `# TYPE` (or of one name when untyped). */
export interface ParsedPrometheusFamily {
  name: string
  help: string
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'
  samples: ParsedPrometheusSample[]
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/
const FLOAT = /^[+-]?(?:Inf|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$/i
const INTEGER = /^-?\d+$/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])
const SUFFIXES: Record<string, readonly string[]> = {
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['_sum', '_count'],
}

/** Parse an exposition into families, in the order they first appear. */
export function parsePrometheusText(text: string): ParsedPrometheusFamily[] {
  if (typeof text !== 'string') throw new StoqInvalidArgumentError('text', 'expected the exposition as a string')
  const families = new Map<string, ParsedPrometheusFamily>()
  const family = (name: string): ParsedPrometheusFamily => {
    let f = families.get(name)
    if (f === undefined) {
      f = { name, help: '', type: 'untyped', samples: [] }
      families.set(name, f)
    }
    return f
  }
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.endsWith('\r') ? lines[i]!.slice(0, -1) : lines[i]!
    const fail = (why: string): never => {
      throw new StoqInvalidArgumentError('text', `line ${i + 1} is not Prometheus text format (${why}): ${JSON.stringify(line.slice(0, 120))}`)
    }
    if (line.trim() === '') continue
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line)
      if (m === null) continue // an ordinary comment
      const [, keyword, name, rest = ''] = m
      if (!NAME.test(name!) || NAME.exec(name!)![0] !== name) fail('bad metric name')
      if (keyword === 'HELP') {
        family(name!).help = rest.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
      } else {
        const type = rest.trim()
        if (!TYPES.has(type)) fail(`unknown type ${JSON.stringify(type)}`)
        const f = family(name!)
        if (f.samples.length > 0) fail('TYPE after the samples of its metric')
        f.type = type as ParsedPrometheusFamily['type']
      }
      continue
    }
    const nameMatch = NAME.exec(line)
    if (nameMatch === null) fail('no metric name')
    const name = nameMatch![0]
    let pos = name.length
    const labels: Record<string, string> = {}
    if (line[pos] === '{') {
      pos++
      for (;;) {
        while (line[pos] === ' ' || line[pos] === '\t') pos++
        if (line[pos] === '}') {
          pos++
          break
        }
        const ln = LABEL_NAME.exec(line.slice(pos))
        if (ln === null) fail('bad label name')
        pos += ln![0].length
        while (line[pos] === ' ' || line[pos] === '\t') pos++
        if (line[pos] !== '=' || line[pos + 1] !== '"') fail('label without ="value"')
        pos += 2
        let value = ''
        for (;;) {
          const c = line[pos]
          if (c === undefined) fail('unterminated label value')
          pos++
          if (c === '"') break
          if (c === '\\') {
            const e = line[pos++]
            if (e === 'n') value += '\n'
            else if (e === '\\' || e === '"') value += e
            else fail('bad escape in label value')
          } else value += c
        }
        if (Object.hasOwn(labels, ln![0])) fail(`label ${ln![0]} repeated`)
        labels[ln![0]] = value
        while (line[pos] === ' ' || line[pos] === '\t') pos++
        if (line[pos] === ',') pos++
        else if (line[pos] !== '}') fail('expected , or } after a label')
      }
    }
    const fields = line
      .slice(pos)
      .trim()
      .split(/[ \t]+/)
    if (pos < line.length && line[pos] !== ' ' && line[pos] !== '\t') fail('no space before the value')
    if (fields.length < 1 || fields.length > 2 || fields[0] === '') fail('expected a value and an optional timestamp')
    if (!FLOAT.test(fields[0]!)) fail(`bad value ${JSON.stringify(fields[0])}`)
    const value = parseValue(fields[0]!)
    const sample: ParsedPrometheusSample = { name, labels, value }
    if (fields.length === 2) {
      if (!INTEGER.test(fields[1]!)) fail(`bad timestamp ${JSON.stringify(fields[1])}`)
      sample.timestampMs = Number(fields[1])
    }
    familyOf(families, name, family).samples.push(sample)
  }
  return [...families.values()]
}

/** The family a sample belongs to: its own name, or the histogram/summary its suffix points to. */
function familyOf(families: Map<string, ParsedPrometheusFamily>, name: string, family: (name: string) => ParsedPrometheusFamily): ParsedPrometheusFamily {
  for (const type of ['histogram', 'summary']) {
    for (const suffix of SUFFIXES[type]!) {
      if (!name.endsWith(suffix)) continue
      const base = families.get(name.slice(0, -suffix.length))
      if (base !== undefined && base.type === type) return base
    }
  }
  return family(name)
}

function parseValue(text: string): number {
  const lower = text.toLowerCase()
  if (lower === 'nan' || lower === '+nan' || lower === '-nan') return NaN
  if (lower === 'inf' || lower === '+inf') return Infinity
  if (lower === '-inf') return -Infinity
  return Number(text)
}
