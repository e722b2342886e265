export { DgramUdpIo, dgramUdpIo, type DgramUdpIoOptions } from './dgram-io.js'
export { toSocketAddress, toWireHost, parseHostPort } from './address.js'
export * from './defaults.js'
export {
  GsoUdpIo,
  gsoUdpIo,
  type GsoUdpIoOptions,
  type GsoUdpIoStats,
  GSO_MAX_SEGMENTS,
  GSO_MAX_WRITE_BYTES_IPV4,
  GSO_MAX_WRITE_BYTES_IPV6,
  DEFAULT_GSO_PROBE_SEGMENT_SIZE,
  DEFAULT_GSO_PROBE_TIMEOUT_MS,
} from './gso-io.js'
export {
  detectCapabilities,
  probeGsoSupport,
  udpIoAuto,
  type Capability,
  type CapabilityReport,
  type DetectOptions,
  type UdpIoAutoOptions,
  type AutoUdpIoFactory,
} from './detect.js'
