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
  probeWorkerSupport,
  udpIoAuto,
  type Capability,
  type CapabilityReport,
  type DetectOptions,
  type UdpIoAutoOptions,
  type AutoUdpIoFactory,
} from './detect.js'
export type {
  LibnumaInfo,
  NicInterfaceReport,
  DpdkDevice,
  DpdkInfo,
} from './detect.js'
export type { NicOffloads, NicOffloadName, EthtoolInterfaceResult } from './koffi/ethtool.js'
export {
  getCpuAffinity,
  setCpuAffinity,
  currentThreadId,
  getOnlineCpus,
  parseCpuList,
  formatCpuList,
  StoqAffinityError,
} from './affinity.js'
export { formatCapabilities, type FormatCapabilitiesOptions } from './doctor.js'
export {
  WorkerUdpIo,
  workerUdpIo,
  type WorkerUdpIoOptions,
  type WorkerUdpIoStats,
  DEFAULT_WORKER_RECEIVE_SLOTS,
  DEFAULT_WORKER_SEND_SLOTS,
  DEFAULT_WORKER_SEND_HIGH_WATER,
  DEFAULT_WORKER_SEND_LOW_WATER,
  DEFAULT_WORKER_POLL_TIMEOUT_MS,
  DEFAULT_WORKER_SYSCALL_BATCH,
  WORKER_BUFFER_SIZE,
} from './worker-io.js'
export {
  UringUdpIo,
  createUringUdpIo,
  uringUdpIo,
  probeIoUring,
  type UringUdpIoOptions,
  type UringUdpIoStats,
  type IoUringProbeResult,
  type IoUringProbeOptions,
  DEFAULT_URING_RECEIVE_DEPTH,
  DEFAULT_URING_SEND_BATCH,
  URING_SETUP_FLAGS,
} from './uring-io.js'
export { bindToNumaNode, numaNodeOf, numaNodes, type NumaPlacement } from './numa.js'
export { attachCidSteering, detachCidSteering, closeSocketFd, cidSteeringProgram } from './reuseport.js'
export { releaseFreeMemory } from './trim.js'
