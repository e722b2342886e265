/**
 * Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/) and a Node
 * `http` request listener that serves it.
 */

import type { IncomingMessage, ServerResponse } from 'node:http'
import { StoqInvalidArgumentError, checkOptions } from '@stoq/interface'
import { show } from './args.js'
import { DEFAULT_METRICS_PATH, PROMETHEUS_CONTENT_TYPE } from './defaults.js'
import type { MetricFamilySnapshot, MetricsSource } from './registry.js'

/**
 * Every metric of `source` (a registry) in the Prometheus text format 0.0.4:
 * `# HELP` and `# TYPE` lines per family, then one sample line per series;
 * histograms as cumulative `_bucket{le="..."}` lines ending with `le="+Inf"`,
 * then `_sum` and `_count`. Names are written as registered: give counters a
 * `_total` suffix (`stoq_bytes_sent_total`) as Prometheus recommends.
 * Runs the registry's collectors first.
 */
export function toPrometheusText(source: MetricsSource): string {
  checkSource(source)
  // Errors of the collectors (run by snapshot()) propagate as they are.
  const snapshot: unknown = source.snapshot()
  const metrics = typeof snapshot === 'object' && snapshot !== null ? (snapshot as { metrics?: unknown }).metrics : undefined
  if (!Array.isArray(metrics)) {
    throw new StoqInvalidArgumentError('source', `snapshot() must return { metrics: [...] }, got ${show(snapshot)}`)
  }
  let out = ''
  for (let i = 0; i < metrics.length; i++) {
    try {
      out += formatFamily(metrics[i] as MetricFamilySnapshot)
    } catch (err) {
      // A source other than a registry returned a malformed family: report it, not a TypeError.
      if (err instanceof TypeError || err instanceof RangeError) {
        throw new StoqInvalidArgumentError('source', `snapshot().metrics[${i}] is not a metric family snapshot (${err.message})`)
      }
      throw err
    }
  }
  return out
}

function checkSource(source: unknown): asserts source is MetricsSource {
  if (typeof source !== 'object' || source === null || typeof (source as MetricsSource).snapshot !== 'function') {
    throw new StoqInvalidArgumentError('source', `expected a metrics registry (an object with snapshot()), got ${show(source)}`)
  }
}

function formatFamily(family: MetricFamilySnapshot): string {
  const { name } = family
  let out = `# HELP ${name} ${escapeHelp(family.help)}\n# TYPE ${name} ${family.type}\n`
  if (family.type === 'histogram') {
    const les = family.buckets.map((bound) => `le="${formatNumber(bound)}"`)
    les.push('le="+Inf"')
    for (const series of family.series) {
      const labels = formatLabelPairs(series.labels)
      const prefix = labels === '' ? '' : `${labels},`
      for (let i = 0; i < les.length; i++) {
        const count = i < series.counts.length ? series.counts[i]! : series.count
        out += `${name}_bucket{${prefix}${les[i]!}} ${formatNumber(count)}\n`
      }
      const braced = labels === '' ? '' : `{${labels}}`
      out += `${name}_sum${braced} ${formatNumber(series.sum)}\n`
      out += `${name}_count${braced} ${formatNumber(series.count)}\n`
    }
  } else {
    for (const series of family.series) {
      const labels = formatLabelPairs(series.labels)
      out += `${name}${labels === '' ? '' : `{${labels}}`} ${formatNumber(series.value)}\n`
    }
  }
  return out
}

function formatLabelPairs(labels: Record<string, string>): string {
  let out = ''
  for (const [labelName, value] of Object.entries(labels)) {
    if (out !== '') out += ','
    out += `${labelName}="${escapeLabelValue(value)}"`
  }
  return out
}

/** Label values escape backslash, double quote and line feed. */
function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))
}

/** Help text escapes backslash and line feed (quotes stay as they are). */
function escapeHelp(help: string): string {
  return help.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'))
}

/** A sample value as Go's `ParseFloat` (which Prometheus uses) reads it. */
function formatNumber(value: number): string {
  if (value === Infinity) return '+Inf'
  if (value === -Infinity) return '-Inf'
  if (Number.isNaN(value)) return 'NaN'
  return String(value)
}

/** Options of `createMetricsHandler`. */
export interface MetricsHandlerOptions {
  /** Path that serves the metrics (an exact match; a query string is ignored). */
  path: string
}

/**
 * A Node `http` request listener that serves `toPrometheusText(source)` at
 * `GET /metrics` (and `HEAD`) with content type
 * `text/plain; version=0.0.4; charset=utf-8`. Other paths get 404, other
 * methods on the metrics path get 405 with an `Allow` header, and a collector
 * that throws gets 500 with its message.
 *
 * `http.createServer(createMetricsHandler(registry)).listen(9464)`
 */
export function createMetricsHandler(source: MetricsSource, options: Partial<MetricsHandlerOptions> = {}): (req: IncomingMessage, res: ServerResponse) => void {
  checkSource(source)
  checkOptions(options, ['path'])
  const path = options.path ?? DEFAULT_METRICS_PATH
  if (typeof path !== 'string' || !path.startsWith('/') || /[?#\s]/.test(path)) {
    throw new StoqInvalidArgumentError('path', `expected a URL path starting with "/" (no query, fragment or spaces), got ${show(path)}`)
  }

  return (req, res) => {
    const url = req.url ?? '/'
    const query = url.indexOf('?')
    const pathname = query === -1 ? url : url.slice(0, query)
    if (pathname !== path) {
      reply(res, 404, 'Not Found\n')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD')
      reply(res, 405, 'Method Not Allowed\n')
      return
    }
    let body: string
    try {
      body = toPrometheusText(source)
    } catch (err) {
      reply(res, 500, `Collecting metrics failed: ${err instanceof Error ? err.message : show(err)}\n`)
      return
    }
    res.writeHead(200, { 'Content-Type': PROMETHEUS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) })
    res.end(body)
  }
}

function reply(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) })
  res.end(body)
}
