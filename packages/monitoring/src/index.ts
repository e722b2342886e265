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
export {
  ThroughputSeries,
  type ThroughputPoint,
  type ThroughputSeriesJSON,
  type ThroughputSeriesOptions,
} from './throughput.js'
export {
  DEFAULT_METRICS_PATH,
  DEFAULT_PREFIX,
  DEFAULT_RTT_BUCKETS_MS,
  DEFAULT_SAMPLE_INTERVAL_MS,
  DEFAULT_SERIES_CAPACITY,
  MAX_SERIES_CAPACITY,
  PROMETHEUS_CONTENT_TYPE,
} from './defaults.js'
