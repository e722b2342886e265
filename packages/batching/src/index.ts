export { batching, type BatcherOptions } from './batcher.js'
export * from './defaults.js'
