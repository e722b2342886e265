/**
 * RTT histogram bounds in milliseconds, from loopback (~0.05 ms) through LAN (~0.5 ms) to
 * intercontinental paths (~300 ms); anything slower lands in `+Inf`.
 */
export const DEFAULT_RTT_BUCKETS_MS: readonly number[] = Object.freeze([0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000])

/** 3600 points: one hour at one point per second, about 115 KiB of Float64 storage. */
export const DEFAULT_SERIES_CAPACITY = 3600

/** One sample per second: the resolution of "instantaneous" throughput that iperf-like tools report. */
export const DEFAULT_SAMPLE_INTERVAL_MS = 1000

/** Largest series capacity accepted: about 24 hours at one point per second (~2.7 MiB). */
export const MAX_SERIES_CAPACITY = 86_400

/** `/metrics`: the path Prometheus scrapes unless told otherwise. */
export const DEFAULT_METRICS_PATH = '/metrics'

/** The content type of the Prometheus text exposition format 0.0.4, which every Prometheus version accepts. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** No prefix: metric names are used exactly as registered (STOQ's own metrics already start with `stoq_`). */
export const DEFAULT_PREFIX = ''
