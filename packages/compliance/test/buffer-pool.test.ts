import { bufferPoolTests } from '../src/index.js'
import { createReferencePool } from './reference-pool.js'

bufferPoolTests('reference pool', {
  setup: ({ capacity, bufferSize }) => createReferencePool(capacity, bufferSize),
  teardown: (pool) => pool.close(),
})
