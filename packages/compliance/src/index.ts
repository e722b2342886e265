export { bufferPoolTests, type BufferPoolTestFactory, type BufferPoolTestOptions } from './suites/buffer-pool.js'
export { udpIoTests, type UdpIoTestFactory } from './suites/udp-io.js'
export { packetBatcherTests, type PacketBatcherPoolOptions, type PacketBatcherTestFactory } from './suites/packet-batcher.js'
export { FakeQuicEngine, RecordingUdpIo, createFixedPool, type ScriptedPacket } from './fakes/packet-batcher.js'
export { testPki, type TestPki, type TestIdentity } from './tools/pki.js'
export { quicEngineTests, type QuicEngineTestFactory } from './suites/quic-engine.js'
export {
  answerRetry,
  craftClientInitial,
  largeCertificateChain,
  decodeVarint,
  defaultTransportParameters,
  deriveInitialKeys,
  encodeIntegerTransportParameter,
  encodeTransportParameter,
  encodeVarint,
  headerProtectionMask,
  parseLongHeader,
  MIN_INITIAL_DATAGRAM_SIZE,
  QUIC_TRANSPORT_PARAMETERS_EXTENSION,
  QUIC_V1,
  QUIC_V1_INITIAL_SALT,
  TlsExtension,
  TransportParameterId,
  type CraftedInitial,
  type LargeChainIdentity,
  type LargeChainOptions,
  type RetryFollowUp,
  type CraftInitialOptions,
  type InitialKeys,
  type LongHeader,
  type LongPacketType,
  type TlsExtensionBytes,
} from './tools/hostile-initial.js'
export {
  CdpPage,
  HeadlessChromium,
  ensureChromium,
  findChromium,
  getJson,
  launchChromium,
  type CdpEvaluateOptions,
  type CdpWaitForOptions,
  type LaunchChromiumOptions,
} from './tools/chromium.js'
export { boundedOutcome, type MisuseOutcome } from './tools/misuse.js'
export { buildQuicGoPeer, quicGoPeerBinary, runQuicGoClient, startQuicGoPeer } from './tools/quic-go.js'
export * from './kit/index.js'
