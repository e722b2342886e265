/**
 * Throughput over time as a standalone SVG document: instantaneous and
 * running-average lines, the peak marked, both axes with tick labels and
 * titles, a legend and a title. No dependencies; the output is plain XML that
 * any browser or SVG viewer opens.
 */

import { StoqInvalidArgumentError, checkOptions, optionKeys } from '@stoq/interface'
import { show } from './args.js'
import type { ThroughputPoint, ThroughputSeries, ThroughputSeriesJSON } from './throughput.js'

/** One point of the chart: the rates of the interval that ends at `t`. */
export interface ThroughputChartSample {
  /** Seconds from the start of the run. */
  t: number
  /** Instantaneous rate over the interval ending at `t` (Gbit/s). */
  gbps: number
  /** Rate from the start to `t` (Gbit/s). */
  averageGbps: number
}

/** Options of `renderThroughputChart`. */
export interface ThroughputChartOptions {
  /** Title drawn above the plot (and the SVG `<title>`). Default "Throughput". Any text: it is escaped. */
  title: string
  /** A second, smaller line under the title (run parameters, for instance). Escaped. */
  subtitle: string
  /** Width of the document in pixels, an integer from 400 to 10 000. Default 800. */
  width: number
  /** Height of the document in pixels, an integer from 240 to 10 000. Default 420. */
  height: number
  /**
   * The point to mark as the peak. Default: the sample with the highest
   * instantaneous rate (the first of equals). Useful when the peak is defined
   * more narrowly than "highest sample", e.g. ignoring a short final interval.
   */
  peak: { t: number; gbps: number }
}

export const CHART_DEFAULT_TITLE = 'Throughput'
export const CHART_DEFAULT_WIDTH = 800
export const CHART_DEFAULT_HEIGHT = 420
export const CHART_X_AXIS_TITLE = 'time (s)'
export const CHART_Y_AXIS_TITLE = 'throughput (Gbit/s)'
export const CHART_NO_DATA_TEXT = 'no data'

const OPTION_NAMES = optionKeys<ThroughputChartOptions>({ title: true, subtitle: true, width: true, height: true, peak: true })
const MIN_WIDTH = 400
const MIN_HEIGHT = 240
const MAX_SIZE = 10_000
const MAX_TICKS = 10_000

const COLOR_INSTANT = '#1f6fb4'
const COLOR_AVERAGE = '#e0701b'
const COLOR_PEAK = '#c62828'
const COLOR_AXIS = '#333333'
const COLOR_GRID = '#e3e3e3'
const FONT_SIZE = 12
/** Rough width of one character of the tick labels, to size the left margin. */
const CHAR_WIDTH = 7

/**
 * Chart input from a `ThroughputSeries`, its `toJSON()` or its `points()`:
 * `tSec` → `t`, `instantGbps` → `gbps`, `averageGbps` as is.
 */
export function throughputChartSamples(source: ThroughputSeries | ThroughputSeriesJSON | readonly ThroughputPoint[]): ThroughputChartSample[] {
  const expected = 'expected a ThroughputSeries, its toJSON() or an array of its points'
  if (typeof source !== 'object' || source === null) throw new StoqInvalidArgumentError('source', `${expected}, got ${show(source)}`)
  const points: readonly ThroughputPoint[] = Array.isArray(source)
    ? source
    : typeof (source as ThroughputSeries).points === 'function'
      ? (source as ThroughputSeries).points()
      : (source as ThroughputSeriesJSON).points
  if (!Array.isArray(points)) {
    throw new StoqInvalidArgumentError('source', expected)
  }
  return points.map((p, i) => {
    if (typeof p !== 'object' || p === null) {
      throw new StoqInvalidArgumentError(`source points[${i}]`, `expected { tSec, instantGbps, averageGbps }, got ${show(p)}`)
    }
    return { t: p.tSec, gbps: p.instantGbps, averageGbps: p.averageGbps }
  })
}

/**
 * `2.35`, `0.0123`, `1250.0`, `7.9e9`: a rate in Gbit/s as the chart's peak
 * label shows it (at least three significant digits; exponent notation from
 * 10^6 and below 10^-3).
 */
export function formatChartGbps(gbps: number): string {
  checkNumber('gbps', gbps)
  const a = Math.abs(gbps)
  if (a === 0) return '0'
  if (a >= 1e6)
    return gbps
      .toPrecision(4)
      .replace(/\.?0+e/, 'e')
      .replace('e+', 'e')
  if (a >= 100) return gbps.toFixed(1)
  if (a >= 0.1) return gbps.toFixed(2)
  if (a >= 0.001) return gbps.toFixed(4)
  return gbps.toPrecision(3).replace('e+', 'e')
}

/** The text of the peak label for a peak of `gbps`. */
export function chartPeakLabel(gbps: number): string {
  return `peak ${formatChartGbps(gbps)} Gbit/s`
}

/**
 * A tick step of 1, 2 or 5 × 10^k such that `span` holds at most about
 * `maxTicks` steps. `span` must be > 0 and finite, `maxTicks` an integer from 1 to
 * 10 000 (`StoqInvalidArgumentError` otherwise).
 */
export function niceTickStep(span: number, maxTicks: number): number {
  if (typeof span !== 'number' || !(span > 0 && span < Infinity)) {
    throw new StoqInvalidArgumentError('span', `expected a finite number > 0, got ${show(span)}`)
  }
  if (typeof maxTicks !== 'number' || !Number.isInteger(maxTicks) || maxTicks < 1 || maxTicks > MAX_TICKS) {
    throw new StoqInvalidArgumentError('maxTicks', `expected an integer from 1 to ${MAX_TICKS}, got ${show(maxTicks)}`)
  }
  return tickStep(span, maxTicks)
}

/** `niceTickStep` without the checks, for the axes (whose arguments are computed here). */
function tickStep(span: number, maxTicks: number): number {
  const raw = span / Math.max(1, maxTicks)
  // Floored at 10^-323 (the smallest power of ten a double holds), so that a subnormal span
  // still gets a step > 0.
  const exp = Math.max(-323, Math.floor(Math.log10(raw)))
  const mag = 10 ** exp
  const norm = raw / mag
  // A tolerance for rounding in raw / mag (5.000000000000001 is still 5).
  const m = norm <= 1 + 1e-9 ? 1 : norm <= 2 + 1e-9 ? 2 : norm <= 5 + 1e-9 ? 5 : 10
  return m * mag
}

/** Escape text for XML content and attribute values, dropping characters XML 1.0 does not allow. */
export function escapeXml(text: string): string {
  if (typeof text !== 'string') throw new StoqInvalidArgumentError('text', `expected a string, got ${show(text)}`)
  let out = ''
  for (const ch of text) {
    const c = ch.codePointAt(0)!
    if (ch === '&') out += '&amp;'
    else if (ch === '<') out += '&lt;'
    else if (ch === '>') out += '&gt;'
    else if (ch === '"') out += '&quot;'
    else if (ch === "'") out += '&apos;'
    else if (c === 0x9 || c === 0xa || c === 0xd || (c >= 0x20 && c <= 0xd7ff) || (c >= 0xe000 && c <= 0xfffd) || c >= 0x10000) out += ch
    // Other control characters, lone surrogates, U+FFFE and U+FFFF cannot appear in XML: dropped.
  }
  return out
}

interface Axis {
  min: number
  max: number
  step: number
  ticks: number[]
}

/**
 * An axis over [lo, hi] widened to multiples of a nice step (`fallbackSpan`
 * when the range is empty). Survives ranges near the largest double.
 */
function axis(lo: number, hi: number, maxTicks: number, fallbackSpan: number): Axis {
  if (!(hi > lo)) hi = lo + fallbackSpan
  const span = Number.isFinite(hi - lo) ? hi - lo : Number.MAX_VALUE
  const step = tickStep(span, maxTicks)
  let first = Math.floor(lo / step + 1e-9)
  let last = Math.ceil(hi / step - 1e-9)
  let min = first * step
  let max = last * step
  if (!Number.isFinite(min)) {
    min = lo
    first = Math.ceil(lo / step)
  }
  if (!Number.isFinite(max)) {
    max = hi
    last = Math.floor(hi / step)
  }
  const ticks: number[] = []
  for (let k = first; k <= last && ticks.length <= 1000; k++) ticks.push(k * step)
  return { min, max, step, ticks }
}

/** A tick label: just the digits the step needs; exponent form for very large or very small steps. */
function tickLabel(v: number, step: number): string {
  if (v === 0) return '0'
  const stepExp = Math.floor(Math.log10(step) + 1e-9)
  if (step >= 1e6 || step < 1e-3) {
    const vExp = Math.floor(Math.log10(Math.abs(v)) + 1e-9)
    const digits = Math.min(20, Math.max(0, vExp - stepExp))
    return v
      .toExponential(digits)
      .replace(/\.?0+e/, 'e')
      .replace('e+', 'e')
  }
  return v.toFixed(Math.max(0, -stepExp))
}

/** A coordinate with at most two decimals. */
function n(v: number): string {
  return String(Math.round(v * 100) / 100)
}

function checkNumber(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new StoqInvalidArgumentError(name, `expected a finite number, got ${show(v)}`)
  }
  return v
}

function checkSize(name: string, v: unknown, min: number, fallback: number): number {
  if (v === undefined) return fallback
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > MAX_SIZE) {
    throw new StoqInvalidArgumentError(name, `expected an integer from ${min} to ${MAX_SIZE}, got ${show(v)}`)
  }
  return v
}

function checkText(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'string') throw new StoqInvalidArgumentError(name, `expected a string, got ${show(v)}`)
  return v
}

/**
 * Render throughput over time as a standalone SVG document (a string starting
 * with the XML declaration). `samples` are per-interval points: `t` in seconds
 * from the start, the interval's instantaneous rate and the running average,
 * both in Gbit/s (see `throughputChartSamples` for a `ThroughputSeries`).
 * They are drawn in order of `t`.
 *
 * The document has an x axis in seconds and a y axis in Gbit/s, both starting
 * at 0, with ticks every 1, 2 or 5 × 10^k; a solid polyline
 * (`class="series instantaneous"`) and a dashed one (`class="series average"`)
 * with a legend; the peak as a circle (`class="peak-marker"`) and a label
 * (`class="peak-label"`, text `chartPeakLabel(peak)`); and the title. With no
 * samples, the axes and a "no data" text (`class="no-data"`) only.
 *
 * Throws `StoqInvalidArgumentError` for a non-finite number or a bad option.
 */
export function renderThroughputChart(samples: readonly ThroughputChartSample[], options: Partial<ThroughputChartOptions> = {}): string {
  if (!Array.isArray(samples)) throw new StoqInvalidArgumentError('samples', 'expected an array of { t, gbps, averageGbps }')
  checkOptions(options, OPTION_NAMES)
  const width = checkSize('width', options.width, MIN_WIDTH, CHART_DEFAULT_WIDTH)
  const height = checkSize('height', options.height, MIN_HEIGHT, CHART_DEFAULT_HEIGHT)
  const title = checkText('title', options.title) ?? CHART_DEFAULT_TITLE
  const subtitle = checkText('subtitle', options.subtitle)
  const data = samples.map((s, i) => {
    if (typeof s !== 'object' || s === null) throw new StoqInvalidArgumentError(`samples[${i}]`, 'expected { t, gbps, averageGbps }')
    return {
      t: checkNumber(`samples[${i}].t`, s.t),
      gbps: checkNumber(`samples[${i}].gbps`, s.gbps),
      averageGbps: checkNumber(`samples[${i}].averageGbps`, s.averageGbps),
    }
  })
  // Stable: equal times keep their order.
  data.sort((a, b) => a.t - b.t)
  let peak: { t: number; gbps: number } | null = null
  if (options.peak !== undefined) {
    const p = options.peak as unknown
    if (typeof p !== 'object' || p === null) throw new StoqInvalidArgumentError('peak', 'expected { t, gbps }')
    peak = { t: checkNumber('peak.t', (p as { t: unknown }).t), gbps: checkNumber('peak.gbps', (p as { gbps: unknown }).gbps) }
  } else {
    for (const s of data) if (peak === null || s.gbps > peak.gbps) peak = { t: s.t, gbps: s.gbps }
  }

  // Ranges: both axes from 0 (or below, for odd negative input) to the data's maximum.
  let tMin = 0
  let tMax = 0
  let vMin = 0
  let vMax = 0
  for (const s of data) {
    tMin = Math.min(tMin, s.t)
    tMax = Math.max(tMax, s.t)
    vMin = Math.min(vMin, s.gbps, s.averageGbps)
    vMax = Math.max(vMax, s.gbps, s.averageGbps)
  }
  if (peak !== null) {
    tMin = Math.min(tMin, peak.t)
    tMax = Math.max(tMax, peak.t)
    vMin = Math.min(vMin, peak.gbps)
    vMax = Math.max(vMax, peak.gbps)
  }

  // Layout. The left margin fits the longest y tick label.
  const top = subtitle !== undefined ? 84 : 66
  const bottom = 52
  const right = 24
  // 4% headroom so that the highest point does not sit on the top edge.
  const yProbe = axis(vMin, Math.min(Number.MAX_VALUE, vMax + (vMax - vMin) * 0.04), Math.max(2, Math.floor((height - top - bottom) / 45)), 1)
  const longest = Math.max(...yProbe.ticks.map((v) => tickLabel(v, yProbe.step).length))
  const left = Math.max(56, 36 + longest * CHAR_WIDTH)
  const plotW = width - left - right
  const plotH = height - top - bottom
  const yAxis = yProbe
  const xAxis = axis(tMin, tMax, Math.max(2, Math.floor(plotW / 70)), data.length === 0 ? 10 : 1)
  const x = (t: number): number => left + ((t - xAxis.min) / (xAxis.max - xAxis.min)) * plotW
  const y = (v: number): number => top + plotH - ((v - yAxis.min) / (yAxis.max - yAxis.min)) * plotH
  const x0 = left
  const x1 = left + plotW
  const y0 = top + plotH
  const y1 = top

  const out: string[] = []
  out.push('<?xml version="1.0" encoding="UTF-8"?>')
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="${FONT_SIZE}" role="img">`,
  )
  out.push(`<title>${escapeXml(subtitle !== undefined ? `${title} (${subtitle})` : title)}</title>`)
  out.push(`<rect class="background" x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`)
  out.push(
    `<text class="title" x="${n(width / 2)}" y="24" text-anchor="middle" font-size="16" font-weight="bold" fill="${COLOR_AXIS}">${escapeXml(title)}</text>`,
  )
  if (subtitle !== undefined) {
    out.push(`<text class="subtitle" x="${n(width / 2)}" y="44" text-anchor="middle" fill="#555555">${escapeXml(subtitle)}</text>`)
  }

  // Grid, then axes with ticks and labels.
  out.push(`<g class="grid" stroke="${COLOR_GRID}" stroke-width="1">`)
  for (const v of yAxis.ticks) if (v !== yAxis.min) out.push(`<line x1="${n(x0)}" y1="${n(y(v))}" x2="${n(x1)}" y2="${n(y(v))}"/>`)
  for (const t of xAxis.ticks) if (t !== xAxis.min) out.push(`<line x1="${n(x(t))}" y1="${n(y0)}" x2="${n(x(t))}" y2="${n(y1)}"/>`)
  out.push('</g>')

  out.push(`<g class="axis x-axis" stroke="${COLOR_AXIS}" fill="${COLOR_AXIS}">`)
  out.push(`<line class="axis-line" x1="${n(x0)}" y1="${n(y0)}" x2="${n(x1)}" y2="${n(y0)}" stroke-width="1"/>`)
  for (const t of xAxis.ticks) {
    out.push(`<line class="tick" x1="${n(x(t))}" y1="${n(y0)}" x2="${n(x(t))}" y2="${n(y0 + 5)}"/>`)
    out.push(`<text class="tick-label" x="${n(x(t))}" y="${n(y0 + 18)}" text-anchor="middle" stroke="none">${escapeXml(tickLabel(t, xAxis.step))}</text>`)
  }
  out.push(`<text class="axis-title" x="${n((x0 + x1) / 2)}" y="${n(height - 12)}" text-anchor="middle" stroke="none">${escapeXml(CHART_X_AXIS_TITLE)}</text>`)
  out.push('</g>')

  out.push(`<g class="axis y-axis" stroke="${COLOR_AXIS}" fill="${COLOR_AXIS}">`)
  out.push(`<line class="axis-line" x1="${n(x0)}" y1="${n(y0)}" x2="${n(x0)}" y2="${n(y1)}" stroke-width="1"/>`)
  for (const v of yAxis.ticks) {
    out.push(`<line class="tick" x1="${n(x0 - 5)}" y1="${n(y(v))}" x2="${n(x0)}" y2="${n(y(v))}"/>`)
    out.push(`<text class="tick-label" x="${n(x0 - 8)}" y="${n(y(v) + 4)}" text-anchor="end" stroke="none">${escapeXml(tickLabel(v, yAxis.step))}</text>`)
  }
  const yTitleX = 16
  const yTitleY = (y0 + y1) / 2
  out.push(
    `<text class="axis-title" x="${n(yTitleX)}" y="${n(yTitleY)}" transform="rotate(-90 ${n(yTitleX)} ${n(yTitleY)})" text-anchor="middle" stroke="none">${escapeXml(CHART_Y_AXIS_TITLE)}</text>`,
  )
  out.push('</g>')

  if (data.length === 0) {
    out.push(
      `<text class="no-data" x="${n((x0 + x1) / 2)}" y="${n((y0 + y1) / 2)}" text-anchor="middle" font-size="16" fill="#777777">${escapeXml(CHART_NO_DATA_TEXT)}</text>`,
    )
    out.push('</svg>')
    return `${out.join('\n')}\n`
  }

  const pts = (value: (s: ThroughputChartSample) => number): string => data.map((s) => `${n(x(s.t))},${n(y(value(s)))}`).join(' ')
  out.push(
    `<polyline class="series instantaneous" fill="none" stroke="${COLOR_INSTANT}" stroke-width="2" stroke-linejoin="round" points="${pts((s) => s.gbps)}"/>`,
  )
  out.push(
    `<polyline class="series average" fill="none" stroke="${COLOR_AVERAGE}" stroke-width="2" stroke-dasharray="6 4" stroke-linejoin="round" points="${pts((s) => s.averageGbps)}"/>`,
  )
  if (data.length === 1) {
    // A one-point line draws nothing: show the points themselves.
    const s = data[0]!
    out.push(`<circle class="point instantaneous" cx="${n(x(s.t))}" cy="${n(y(s.gbps))}" r="3" fill="${COLOR_INSTANT}"/>`)
    out.push(`<circle class="point average" cx="${n(x(s.t))}" cy="${n(y(s.averageGbps))}" r="3" fill="${COLOR_AVERAGE}"/>`)
  }

  if (peak !== null) {
    const px = x(peak.t)
    const py = y(peak.gbps)
    // Keep the label inside the plot: to the left of the marker in the right half, below it near the top.
    const onRight = px > (x0 + x1) / 2
    const lx = onRight ? px - 8 : px + 8
    const ly = py - 8 < y1 + 14 ? py + 18 : py - 8
    out.push(`<circle class="peak-marker" cx="${n(px)}" cy="${n(py)}" r="5" fill="none" stroke="${COLOR_PEAK}" stroke-width="2"/>`)
    out.push(
      `<text class="peak-label" x="${n(lx)}" y="${n(ly)}" text-anchor="${onRight ? 'end' : 'start'}" fill="${COLOR_PEAK}" font-weight="bold">${escapeXml(chartPeakLabel(peak.gbps))}</text>`,
    )
  }

  // Legend: one row above the plot, right-aligned, clear of the lines and the peak label.
  const entries: Array<{ mark: string; label: string; width: number }> = [
    { mark: `<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="${COLOR_INSTANT}" stroke-width="2"/>`, label: 'instantaneous', width: 130 },
    { mark: `<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="${COLOR_AVERAGE}" stroke-width="2" stroke-dasharray="6 4"/>`, label: 'average', width: 92 },
    { mark: `<circle cx="{xm}" cy="{y}" r="5" fill="none" stroke="${COLOR_PEAK}" stroke-width="2"/>`, label: 'peak', width: 64 },
  ]
  let lx = x1 - entries.reduce((a, e) => a + e.width, 0)
  const ly = top - 14
  out.push(`<g class="legend" fill="${COLOR_AXIS}">`)
  for (const e of entries) {
    out.push(
      e.mark
        .replaceAll('{x}', n(lx))
        .replaceAll('{x2}', n(lx + 26))
        .replaceAll('{xm}', n(lx + 13))
        .replaceAll('{y}', n(ly)),
    )
    out.push(`<text x="${n(lx + 32)}" y="${n(ly + 4)}">${escapeXml(e.label)}</text>`)
    lx += e.width
  }
  out.push('</g>')
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
