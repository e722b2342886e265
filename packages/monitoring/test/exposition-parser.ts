/**
 * An independent, strict reader of the Prometheus text format 0.0.4, written
 * from the format's description (not from our writer), for the tests. prom-client
 * has no parser, so this checks the syntax of every line itself. It throws on
 * anything the format does not allow, and checks histogram invariants.
 */

export interface ParsedSample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface ParsedFamily {
  name: string
  help: string | null
  type: string | null
  samples: ParsedSample[]
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/
const VALUE = /^(?:[+-]?Inf|NaN|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$/
const TIMESTAMP = /^-?\d+$/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

export function parseExposition(text: string): Map<string, ParsedFamily> {
  if (text.includes('\r')) throw new Error('carriage return in exposition')
  if (text !== '' && !text.endsWith('\n')) throw new Error('exposition does not end with a line feed')
  const families = new Map<string, ParsedFamily>()
  const closed = new Set<string>()
  const seenSeries = new Set<string>()
  let open: ParsedFamily | null = null

  const familyFor = (name: string): ParsedFamily => {
    let family = families.get(name)
    if (family === undefined) {
      family = { name, help: null, type: null, samples: [] }
      families.set(name, family)
    }
    if (open !== family) {
      if (closed.has(name)) throw new Error(`family ${name} appears in two separate groups`)
      if (open !== null) closed.add(open.name)
      open = family
    }
    return family
  }

  const lines = text === '' ? [] : text.slice(0, -1).split('\n')
  lines.forEach((line, index) => {
    const where = `line ${index + 1} (${JSON.stringify(line)})`
    if (line === '') throw new Error(`${where}: empty line`)
    if (line.startsWith('#')) {
      const match = /^# (HELP|TYPE) ([^ ]+) ?(.*)$/.exec(line)
      if (match === null) return // any other comment
      const [, keyword, name, rest] = match as unknown as [string, string, string, string]
      if (!NAME.test(name) || NAME.exec(name)![0] !== name) throw new Error(`${where}: bad metric name`)
      const family = familyFor(name)
      if (keyword === 'HELP') {
        if (family.help !== null) throw new Error(`${where}: second HELP for ${name}`)
        family.help = unescapeText(rest, false, where)
      } else {
        if (family.type !== null) throw new Error(`${where}: second TYPE for ${name}`)
        if (family.samples.length > 0) throw new Error(`${where}: TYPE after samples of ${name}`)
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type ${rest}`)
        family.type = rest
      }
      return
    }

    const nameMatch = NAME.exec(line)
    if (nameMatch === null) throw new Error(`${where}: no metric name`)
    const name = nameMatch[0]
    let pos = name.length
    const labels: Record<string, string> = {}
    if (line[pos] === '{') {
      pos++
      while (line[pos] !== '}') {
        const labelMatch = LABEL_NAME.exec(line.slice(pos))
        if (labelMatch === null) throw new Error(`${where}: bad label name at ${pos}`)
        const labelName = labelMatch[0]
        pos += labelName.length
        if (line.slice(pos, pos + 2) !== '="') throw new Error(`${where}: expected =" at ${pos}`)
        pos += 2
        let raw = ''
        for (;;) {
          const c = line[pos]
          if (c === undefined) throw new Error(`${where}: unterminated label value`)
          if (c === '"') break
          if (c === '\\') {
            raw += c + (line[pos + 1] ?? '')
            pos += 2
          } else {
            raw += c
            pos++
          }
        }
        pos++ // closing quote
        if (Object.hasOwn(labels, labelName)) throw new Error(`${where}: duplicate label ${labelName}`)
        labels[labelName] = unescapeText(raw, true, where)
        if (line[pos] === ',') {
          pos++
          if (line[pos] === '}') throw new Error(`${where}: trailing comma`)
        } else if (line[pos] !== '}') throw new Error(`${where}: expected , or } at ${pos}`)
      }
      pos++
    }
    if (line[pos] !== ' ') throw new Error(`${where}: expected one space before the value`)
    const tokens = line.slice(pos + 1).split(' ')
    if (tokens.length > 2 || !VALUE.test(tokens[0]!)) throw new Error(`${where}: bad value`)
    if (tokens.length === 2 && !TIMESTAMP.test(tokens[1]!)) throw new Error(`${where}: bad timestamp`)
    const value = parseValue(tokens[0]!)

    let familyName = name
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const base = name.slice(0, -suffix.length)
      if (name.endsWith(suffix) && families.get(base)?.type === 'histogram') familyName = base
    }
    const family = familyFor(familyName)
    const seriesKey = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seenSeries.has(seriesKey)) throw new Error(`${where}: duplicate series`)
    seenSeries.add(seriesKey)
    family.samples.push({ name, labels, value })
  })

  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family)
  return families
}

function unescapeText(raw: string, labelValue: boolean, where: string): string {
  let out = ''
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!
    if (c !== '\\') {
      out += c
      continue
    }
    const next = raw[++i]
    if (next === '\\') out += '\\'
    else if (next === 'n') out += '\n'
    else if (next === '"' && labelValue) out += '"'
    else throw new Error(`${where}: bad escape \\${next ?? ''}`)
  }
  return out
}

function parseValue(token: string): number {
  if (token === '+Inf' || token === 'Inf') return Infinity
  if (token === '-Inf') return -Infinity
  if (token === 'NaN') return NaN
  return Number(token)
}

/** Per label set: `le` increasing, counts cumulative, `+Inf` bucket equal to `_count`, `_sum` present. */
function checkHistogram(family: ParsedFamily): void {
  const groups = new Map<string, { les: number[]; counts: number[]; sum?: number; count?: number }>()
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    let group = groups.get(key)
    if (group === undefined) {
      group = { les: [], counts: [] }
      groups.set(key, group)
    }
    if (sample.name === `${family.name}_bucket`) {
      if (le === undefined) throw new Error(`${family.name}: bucket without le`)
      group.les.push(parseValue(le))
      group.counts.push(sample.value)
    } else if (sample.name === `${family.name}_sum`) group.sum = sample.value
    else if (sample.name === `${family.name}_count`) group.count = sample.value
    else throw new Error(`${family.name}: unexpected sample ${sample.name}`)
  }
  for (const [key, group] of groups) {
    for (let i = 1; i < group.les.length; i++) {
      if (!(group.les[i]! > group.les[i - 1]!)) throw new Error(`${family.name}${key}: le not increasing`)
      if (group.counts[i]! < group.counts[i - 1]!) throw new Error(`${family.name}${key}: buckets not cumulative`)
    }
    if (group.les.at(-1) !== Infinity) throw new Error(`${family.name}${key}: no +Inf bucket`)
    if (group.count === undefined || group.sum === undefined) throw new Error(`${family.name}${key}: no _count or _sum`)
    if (group.counts.at(-1) !== group.count) throw new Error(`${family.name}${key}: +Inf bucket differs from _count`)
  }
}

/** The value of the one sample named `name` with exactly `labels`. */
export function sampleValue(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort())
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name === name && JSON.stringify(Object.entries(sample.labels).sort()) === want) return sample.value
    }
  }
  return undefined
}
