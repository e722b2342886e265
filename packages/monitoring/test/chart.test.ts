import { StoqError } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import {
  CHART_NO_DATA_TEXT,
  CHART_X_AXIS_TITLE,
  CHART_Y_AXIS_TITLE,
  ThroughputSeries,
  chartPeakLabel,
  escapeXml,
  formatChartGbps,
  niceTickStep,
  renderThroughputChart,
  throughputChartSamples,
  type ThroughputChartSample,
} from '../src/index.js'
import { allElements, parseXml, polylinePoints, select, type XmlElement } from './xml-parser.js'

/** Twelve per-second samples with a clear peak at t = 7. */
function sampleRun(): ThroughputChartSample[] {
  const rates = [4.2, 4.4, 3.1, 1.9, 1.6, 2.6, 5.99, 4.5, 3.6, 2.2, 1.5, 2.2]
  let sum = 0
  return rates.map((gbps, i) => {
    sum += gbps
    return { t: i + 1, gbps, averageGbps: sum / (i + 1) }
  })
}

function thrownCode(call: () => unknown): { code: string; argument: string } {
  try {
    call()
  } catch (err) {
    if (StoqError.isInstance(err)) return { code: err.code, argument: (err.data as { argument: string }).argument }
    throw err
  }
  throw new Error('expected a StoqError, nothing was thrown')
}

function texts(root: XmlElement, ...classes: string[]): string[] {
  return select(root, 'text', ...classes).map((t) => t.text)
}

/** The plot rectangle, from the two axis lines. */
function plotBox(root: XmlElement): { x0: number; x1: number; y0: number; y1: number } {
  const [xLine] = select(root, 'line', 'axis-line').filter((l) => l.attrs.y1 === l.attrs.y2)
  const [yLine] = select(root, 'line', 'axis-line').filter((l) => l.attrs.x1 === l.attrs.x2)
  return { x0: Number(xLine!.attrs.x1), x1: Number(xLine!.attrs.x2), y0: Number(yLine!.attrs.y1), y1: Number(yLine!.attrs.y2) }
}

/** Tick labels of one axis, as numbers. */
function tickValues(root: XmlElement, axisClass: 'x-axis' | 'y-axis'): number[] {
  const [g] = select(root, 'g', 'axis', axisClass)
  return select(g!, 'text', 'tick-label').map((t) => Number(t.text))
}

/** Ticks start at 0 and go up by a constant 1, 2 or 5 × 10^k. */
function expectNiceTicks(values: number[]): number {
  expect(values.length).toBeGreaterThanOrEqual(2)
  for (const v of values) expect(Number.isFinite(v)).toBe(true)
  expect(values[0]).toBe(0)
  const step = values[1]! - values[0]!
  for (let k = 1; k < values.length; k++) expect((values[k]! - values[k - 1]!) / step).toBeCloseTo(1, 6)
  const mantissa = step / 10 ** Math.floor(Math.log10(step) + 1e-9)
  expect([1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-6)).toBe(true)
  return step
}

describe('renderThroughputChart: structure', () => {
  const samples = sampleRun()
  const svg = renderThroughputChart(samples, { title: 'Run 42', subtitle: '1 connection', width: 900, height: 450 })
  const root = parseXml(svg)

  it('is a standalone SVG document with size and viewBox', () => {
    expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg ')).toBe(true)
    expect(root.name).toBe('svg')
    expect(root.attrs).toMatchObject({ xmlns: 'http://www.w3.org/2000/svg', width: '900', height: '450', viewBox: '0 0 900 450' })
    // No scripts, no external references: nothing but the drawing.
    expect(allElements(root).some((e) => e.name === 'script' || e.name === 'image' || e.name === 'foreignObject')).toBe(false)
    expect(svg).not.toMatch(/href=/)
  })

  it('has a title, a subtitle and the <title> element', () => {
    expect(texts(root, 'title')).toEqual(['Run 42'])
    expect(texts(root, 'subtitle')).toEqual(['1 connection'])
    expect(root.children.find((c) => c.name === 'title')?.text).toBe('Run 42 (1 connection)')
  })

  it('draws two polylines with one point per sample, in different stroke styles', () => {
    const polylines = allElements(root).filter((e) => e.name === 'polyline')
    expect(polylines).toHaveLength(2)
    const [instant] = select(root, 'polyline', 'series', 'instantaneous')
    const [average] = select(root, 'polyline', 'series', 'average')
    expect(polylinePoints(instant!)).toHaveLength(samples.length)
    expect(polylinePoints(average!)).toHaveLength(samples.length)
    expect(instant!.attrs.fill).toBe('none')
    expect(average!.attrs.fill).toBe('none')
    expect(instant!.attrs.stroke).not.toBe(average!.attrs.stroke)
    expect(instant!.attrs['stroke-dasharray']).toBeUndefined()
    expect(average!.attrs['stroke-dasharray']).toBeDefined()
  })

  it('places the points inside the plot, left to right, higher rates higher up', () => {
    const box = plotBox(root)
    const instant = polylinePoints(select(root, 'polyline', 'instantaneous')[0]!)
    const average = polylinePoints(select(root, 'polyline', 'average')[0]!)
    for (const [px, py] of [...instant, ...average]) {
      expect(px).toBeGreaterThanOrEqual(box.x0)
      expect(px).toBeLessThanOrEqual(box.x1)
      expect(py).toBeLessThanOrEqual(box.y0)
      expect(py).toBeGreaterThanOrEqual(box.y1)
    }
    for (let k = 1; k < instant.length; k++) expect(instant[k]![0]).toBeGreaterThan(instant[k - 1]![0])
    // SVG y grows downwards: the order of the y coordinates is the reverse of the rates'.
    for (let k = 1; k < instant.length; k++) {
      expect(Math.sign(instant[k - 1]![1] - instant[k]![1])).toBe(Math.sign(samples[k]!.gbps - samples[k - 1]!.gbps))
    }
    // The coordinates follow the axes: each point maps back to its sample through the tick labels.
    const xs = tickValues(root, 'x-axis')
    const ys = tickValues(root, 'y-axis')
    const tOf = (px: number): number => xs[0]! + ((px - box.x0) / (box.x1 - box.x0)) * (xs.at(-1)! - xs[0]!)
    const vOf = (py: number): number => ys[0]! + ((box.y0 - py) / (box.y0 - box.y1)) * (ys.at(-1)! - ys[0]!)
    instant.forEach(([px, py], k) => {
      expect(tOf(px)).toBeCloseTo(samples[k]!.t, 1)
      expect(vOf(py)).toBeCloseTo(samples[k]!.gbps, 1)
    })
  })

  it('labels both axes, with ticks covering the data', () => {
    const axisTitles = texts(root, 'axis-title')
    expect(axisTitles).toEqual([CHART_X_AXIS_TITLE, CHART_Y_AXIS_TITLE])
    expect(axisTitles).toEqual(['time (s)', 'throughput (Gbit/s)'])
    const xs = tickValues(root, 'x-axis')
    const ys = tickValues(root, 'y-axis')
    expectNiceTicks(xs)
    expectNiceTicks(ys)
    expect(xs.at(-1)).toBeGreaterThanOrEqual(12)
    expect(ys.at(-1)).toBeGreaterThanOrEqual(5.99)
    expect(ys.at(-1)).toBeLessThan(10)
  })

  it('marks the peak with a circle on the instantaneous line and a label with its value', () => {
    const [marker] = select(root, 'circle', 'peak-marker')
    const instant = polylinePoints(select(root, 'polyline', 'instantaneous')[0]!)
    const peakIndex = samples.findIndex((s) => s.gbps === Math.max(...samples.map((x) => x.gbps)))
    expect(peakIndex).toBe(6)
    expect([Number(marker!.attrs.cx), Number(marker!.attrs.cy)]).toEqual(instant[peakIndex])
    expect(texts(root, 'peak-label')).toEqual([chartPeakLabel(5.99)])
    expect(texts(root, 'peak-label')).toEqual(['peak 5.99 Gbit/s'])
  })

  it('has a legend naming both lines and the peak', () => {
    const [legend] = select(root, 'g', 'legend')
    expect(select(legend!, 'text').map((t) => t.text)).toEqual(['instantaneous', 'average', 'peak'])
    // The legend's samples use the lines' styles.
    const lines = select(legend!, 'line')
    expect(lines[0]!.attrs['stroke-dasharray']).toBeUndefined()
    expect(lines[1]!.attrs['stroke-dasharray']).toBe(select(root, 'polyline', 'average')[0]!.attrs['stroke-dasharray'])
  })

  it('defaults: 800 x 420 and the title "Throughput"', () => {
    const r = parseXml(renderThroughputChart(samples))
    expect(r.attrs).toMatchObject({ width: '800', height: '420', viewBox: '0 0 800 420' })
    expect(texts(r, 'title')).toEqual(['Throughput'])
    expect(select(r, 'text', 'subtitle')).toEqual([])
  })

  it('draws samples in order of time whatever their order in the array', () => {
    const shuffled = [samples[5]!, samples[0]!, samples[11]!, ...samples.slice(1, 5), ...samples.slice(6, 11)]
    expect(renderThroughputChart(shuffled)).toBe(renderThroughputChart(samples))
  })
})

describe('renderThroughputChart: escaping', () => {
  it('escapes markup in the title and subtitle; the document stays well formed', () => {
    const title = `a <b>bold</b> & "quoted" 'single' </svg><script>alert(1)</script> &amp;`
    const svg = renderThroughputChart(sampleRun(), { title, subtitle: '<&>"' })
    expect(svg).not.toContain('<b>')
    expect(svg).not.toContain('<script>')
    const root = parseXml(svg)
    expect(allElements(root).some((e) => e.name === 'script' || e.name === 'b')).toBe(false)
    expect(texts(root, 'title')).toEqual([title])
    expect(texts(root, 'subtitle')).toEqual(['<&>"'])
    expect(root.children.find((c) => c.name === 'title')?.text).toBe(`${title} (<&>")`)
  })

  it('drops characters XML cannot carry, keeps the rest of Unicode', () => {
    const svg = renderThroughputChart([], { title: 'bad\u0000\u0001\u001b[31m\ud800 ok × 😀\tend' })
    const root = parseXml(svg)
    expect(texts(root, 'title')).toEqual(['bad[31m ok × 😀\tend'])
    expect(escapeXml('<&>"\'')).toBe('&lt;&amp;&gt;&quot;&apos;')
  })
})

describe('renderThroughputChart: edge cases', () => {
  it('no samples: axes with their titles and a "no data" text, no lines and no peak', () => {
    const root = parseXml(renderThroughputChart([]))
    expect(root.name).toBe('svg')
    expect(texts(root, 'no-data')).toEqual([CHART_NO_DATA_TEXT])
    expect(texts(root, 'axis-title')).toEqual(['time (s)', 'throughput (Gbit/s)'])
    expect(allElements(root).filter((e) => e.name === 'polyline')).toEqual([])
    expect(select(root, 'circle', 'peak-marker')).toEqual([])
    expect(select(root, 'text', 'peak-label')).toEqual([])
    expectNiceTicks(tickValues(root, 'x-axis'))
    expectNiceTicks(tickValues(root, 'y-axis'))
  })

  it('one sample: one point per line (drawn as dots) and the peak on it', () => {
    const root = parseXml(renderThroughputChart([{ t: 1, gbps: 2.5, averageGbps: 2.5 }]))
    const instant = polylinePoints(select(root, 'polyline', 'instantaneous')[0]!)
    expect(instant).toHaveLength(1)
    expect(polylinePoints(select(root, 'polyline', 'average')[0]!)).toHaveLength(1)
    expect(select(root, 'circle', 'point')).toHaveLength(2)
    const [marker] = select(root, 'circle', 'peak-marker')
    expect([Number(marker!.attrs.cx), Number(marker!.attrs.cy)]).toEqual(instant[0])
    expect(texts(root, 'peak-label')).toEqual(['peak 2.50 Gbit/s'])
    expect(tickValues(root, 'y-axis').at(-1)).toBeGreaterThanOrEqual(2.5)
    // Also at t = 0: the x axis still has a span.
    const zero = parseXml(renderThroughputChart([{ t: 0, gbps: 1, averageGbps: 1 }]))
    expect(tickValues(zero, 'x-axis').at(-1)).toBeGreaterThan(0)
  })

  it('all-zero values: a y axis from 0 with a span, every point on the baseline, peak 0', () => {
    const zeros = [1, 2, 3].map((t) => ({ t, gbps: 0, averageGbps: 0 }))
    const root = parseXml(renderThroughputChart(zeros))
    const ys = tickValues(root, 'y-axis')
    expectNiceTicks(ys)
    expect(ys.at(-1)).toBeGreaterThan(0)
    const box = plotBox(root)
    for (const cls of ['instantaneous', 'average']) {
      const pts = polylinePoints(select(root, 'polyline', cls)[0]!)
      expect(pts).toHaveLength(3)
      for (const [, py] of pts) expect(py).toBe(box.y0)
    }
    expect(texts(root, 'peak-label')).toEqual(['peak 0 Gbit/s'])
  })

  it('very large values: 1/2/5 × 10^k ticks in exponent form, peak in exponent form', () => {
    const big = [
      { t: 1, gbps: 3.2e12, averageGbps: 3.2e12 },
      { t: 2, gbps: 7.9e12, averageGbps: 5.55e12 },
      { t: 3, gbps: 1e12, averageGbps: 4.03e12 },
    ]
    const svg = renderThroughputChart(big)
    const root = parseXml(svg)
    const [g] = select(root, 'g', 'y-axis')
    const labels = select(g!, 'text', 'tick-label').map((t) => t.text)
    for (const l of labels) expect(l).toMatch(/^(0|\d(\.\d+)?e\d+)$/)
    const ys = labels.map(Number)
    const step = expectNiceTicks(ys)
    expect([1e12, 2e12]).toContain(step)
    expect(ys.at(-1)).toBeGreaterThanOrEqual(7.9e12)
    expect(texts(root, 'peak-label')).toEqual(['peak 7.9e12 Gbit/s'])
    expect(svg).not.toMatch(/NaN|Infinity/)
  })

  it('ticks stay nice and finite across magnitudes, up to the largest doubles', () => {
    for (const max of [1e-6, 0.0042, 0.3, 1, 7.3, 42, 999, 123_456, 3e9, 1e15, 1e300, Number.MAX_VALUE]) {
      const svg = renderThroughputChart([
        { t: 1, gbps: max / 3, averageGbps: max / 3 },
        { t: 2, gbps: max, averageGbps: max / 1.5 },
      ])
      expect(svg).not.toMatch(/NaN|Infinity/)
      const root = parseXml(svg)
      const ys = tickValues(root, 'y-axis')
      if (max !== Number.MAX_VALUE) {
        expectNiceTicks(ys)
        expect(ys.at(-1)).toBeGreaterThanOrEqual(max * (1 - 1e-9))
      }
      expect(ys.length).toBeLessThanOrEqual(12)
      expect(texts(root, 'peak-label')).toEqual([chartPeakLabel(max)])
      const box = plotBox(root)
      for (const [, py] of polylinePoints(select(root, 'polyline', 'instantaneous')[0]!)) {
        expect(py).toBeGreaterThanOrEqual(box.y1)
        expect(py).toBeLessThanOrEqual(box.y0)
      }
    }
  })

  it('the peak can be given (a narrower definition than the highest sample)', () => {
    const samples = [...sampleRun(), { t: 12.2, gbps: 9.5, averageGbps: 3.4 }]
    const root = parseXml(renderThroughputChart(samples, { peak: { t: 7, gbps: 5.99 } }))
    expect(texts(root, 'peak-label')).toEqual(['peak 5.99 Gbit/s'])
    const instant = polylinePoints(select(root, 'polyline', 'instantaneous')[0]!)
    const [marker] = select(root, 'circle', 'peak-marker')
    expect([Number(marker!.attrs.cx), Number(marker!.attrs.cy)]).toEqual(instant[6])
    expect(texts(parseXml(renderThroughputChart(samples)), 'peak-label')).toEqual(['peak 9.50 Gbit/s'])
  })

  it('rejects bad input with StoqInvalidArgumentError', () => {
    expect(thrownCode(() => renderThroughputChart([{ t: 1, gbps: NaN, averageGbps: 1 }]))).toEqual({
      code: 'STOQ_ERR_INVALID_ARG',
      argument: 'samples[0].gbps',
    })
    expect(thrownCode(() => renderThroughputChart([{ t: Infinity, gbps: 1, averageGbps: 1 }])).argument).toBe('samples[0].t')
    expect(thrownCode(() => renderThroughputChart([null as unknown as ThroughputChartSample])).argument).toBe('samples[0]')
    expect(thrownCode(() => renderThroughputChart('x' as unknown as ThroughputChartSample[])).argument).toBe('samples')
    expect(thrownCode(() => renderThroughputChart([], { width: 100 })).argument).toBe('width')
    expect(thrownCode(() => renderThroughputChart([], { height: 1.5 })).argument).toBe('height')
    expect(thrownCode(() => renderThroughputChart([], { title: 5 as unknown as string })).argument).toBe('title')
    expect(thrownCode(() => renderThroughputChart([], { colour: 'red' } as object)).argument).toBe('colour')
    expect(thrownCode(() => renderThroughputChart([], { titel: 'x' } as object)).argument).toBe('titel')
    expect(thrownCode(() => renderThroughputChart([], { peak: { t: 1, gbps: NaN } })).argument).toBe('peak.gbps')
  })
})

describe('chart helpers', () => {
  it('niceTickStep picks 1, 2 or 5 × 10^k', () => {
    expect(niceTickStep(10, 5)).toBe(2)
    expect(niceTickStep(10, 10)).toBe(1)
    expect(niceTickStep(1, 5)).toBeCloseTo(0.2, 12)
    expect(niceTickStep(3, 10)).toBeCloseTo(0.5, 12)
    expect(niceTickStep(7.9e9, 4)).toBe(2e9)
    expect(niceTickStep(0.0042, 6)).toBeCloseTo(0.001, 15)
    expect(niceTickStep(600, 6)).toBe(100)
  })

  it('formatChartGbps: readable digits at every scale', () => {
    expect(formatChartGbps(0)).toBe('0')
    expect(formatChartGbps(5.99)).toBe('5.99')
    expect(formatChartGbps(0.1234)).toBe('0.12')
    expect(formatChartGbps(0.01234)).toBe('0.0123')
    expect(formatChartGbps(1234.56)).toBe('1234.6')
    expect(formatChartGbps(7.9e12)).toBe('7.9e12')
    expect(formatChartGbps(1.2345e-7)).toBe('1.23e-7')
    expect(chartPeakLabel(2.5)).toBe('peak 2.50 Gbit/s')
  })

  it('throughputChartSamples turns a ThroughputSeries (or its JSON or points) into chart input', () => {
    const series = new ThroughputSeries({ capacity: 10 })
    series.sample(0, 0)
    series.sample(125_000_000, 1000) // 1 Gbit in 1 s
    series.sample(375_000_000, 2000) // 2 Gbit in 1 s
    const expected = [
      { t: 1, gbps: 1, averageGbps: 1 },
      { t: 2, gbps: 2, averageGbps: 1.5 },
    ]
    expect(throughputChartSamples(series)).toEqual(expected)
    expect(throughputChartSamples(series.toJSON())).toEqual(expected)
    expect(throughputChartSamples(series.points())).toEqual(expected)
    const root = parseXml(renderThroughputChart(throughputChartSamples(series)))
    expect(polylinePoints(select(root, 'polyline', 'instantaneous')[0]!)).toHaveLength(2)
    expect(texts(root, 'peak-label')).toEqual(['peak 2.00 Gbit/s'])
    expect(throughputChartSamples(new ThroughputSeries())).toEqual([])
  })
})
