export {
  createMetricsRegistry,
  type CounterFamilySnapshot,
  type CounterHandle,
  type GaugeFamilySnapshot,
  type GaugeHandle,
  type HistogramFamilySnapshot,
  type HistogramHandle,
  type HistogramSeriesSnapshot,
  type Labels,
  type MetricFamilySnapshot,
  type MetricsRegistry,
  type MetricsRegistryOptions,
  type MetricsSnapshot,
  type MetricsSource,
  type MetricType,
  type ScalarSeriesSnapshot,
} from './registry.js'
export { createMetricsHandler, toPrometheusText, type MetricsHandlerOptions } from './prometheus.js'
export { parsePrometheusText, type ParsedPrometheusFamily, type ParsedPrometheusSample } from './parse.js'
export {
  ThroughputSeries,
  type ThroughputPoint,
  type ThroughputSeriesJSON,
  type ThroughputSeriesOptions,
} from './throughput.js'
export {
  CHART_DEFAULT_HEIGHT,
  CHART_DEFAULT_TITLE,
  CHART_DEFAULT_WIDTH,
  CHART_NO_DATA_TEXT,
  CHART_X_AXIS_TITLE,
  CHART_Y_AXIS_TITLE,
  chartPeakLabel,
  escapeXml,
  formatChartGbps,
  niceTickStep,
  renderThroughputChart,
  throughputChartSamples,
  type ThroughputChartOptions,
  type ThroughputChartSample,
} from './chart.js'
export {
  DEFAULT_METRICS_PATH,
  DEFAULT_PREFIX,
  DEFAULT_RTT_BUCKETS_MS,
  DEFAULT_SAMPLE_INTERVAL_MS,
  DEFAULT_SERIES_CAPACITY,
  MAX_SERIES_CAPACITY,
  PROMETHEUS_CONTENT_TYPE,
} from './defaults.js'
