export { bufferPoolTests, type BufferPoolTestFactory, type BufferPoolTestOptions } from './buffer-pool.js'
export { udpIoTests, type UdpIoTestFactory } from './udp-io.js'
export { packetBatcherTests, type PacketBatcherPoolOptions, type PacketBatcherTestFactory } from './packet-batcher.js'
export { testPki, type TestPki, type TestIdentity } from './pki.js'
