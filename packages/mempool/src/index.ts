export {
  createBufferPool,
  type BufferPoolHooks,
  attachBufferPool,
  type BufferPoolOptions,
  type SharedBufferPool,
  type SharedBufferPoolHandle,
} from './pool.js'
export {
  DEFAULT_ALIGNMENT,
  DEFAULT_BUFFER_SIZE,
  DEFAULT_DEBUG,
  DEFAULT_EXHAUSTION,
  DEFAULT_INITIAL_BUFFERS,
  DEFAULT_MAX_BUFFERS,
  DEFAULT_SHARED,
} from './defaults.js'
export { RecordRing, DEFAULT_RECORD_RING_CAPACITY, type RecordRingHandle, type RecordRingOptions } from './record-ring.js'
export {
  RecordReader,
  RecordWriter,
  isRecordChannelMessage,
  type ExtrasMessage,
  type RecordChannelMessage,
  type RecordChannelOptions,
  type RecordChannelPort,
} from './record-channel.js'
