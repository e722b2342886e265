export { bufferPoolTests, type BufferPoolTestFactory, type BufferPoolTestOptions } from './buffer-pool.js'
export { udpIoTests, type UdpIoTestFactory } from './udp-io.js'
export { packetBatcherTests, type PacketBatcherPoolOptions, type PacketBatcherTestFactory } from './packet-batcher.js'
export { FakeQuicEngine, RecordingUdpIo, createFixedPool, type ScriptedPacket } from './packet-batcher-fakes.js'
export { testPki, type TestPki, type TestIdentity } from './pki.js'
export { quicEngineTests, type QuicEngineTestFactory } from './quic-engine.js'
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
} from './hostile-initial.js'
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
} from './chromium.js'
export { boundedOutcome, type MisuseOutcome } from './misuse.js'
export { buildQuicGoPeer, quicGoPeerBinary, runQuicGoClient, startQuicGoPeer } from './quic-go.js'
export * from './kit/index.js'
