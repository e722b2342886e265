export { bufferPoolTests, type BufferPoolTestFactory, type BufferPoolTestOptions } from './buffer-pool.js'
