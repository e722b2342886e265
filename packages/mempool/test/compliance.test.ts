import { bufferPoolTests } from '@stoq/compliance-tests'
import { createBufferPool, type BufferPoolOptions } from '../src/index.js'

const variants: [string, Partial<BufferPoolOptions>][] = [
  ['shared', { shared: true }],
  ['not shared', { shared: false }],
  ['shared, debug', { shared: true, debug: true }],
  ['shared, exhaustion error', { shared: true, exhaustion: 'error' }],
]

for (const [name, options] of variants) {
  bufferPoolTests(`createBufferPool (${name})`, {
    setup: ({ capacity, bufferSize }) => createBufferPool({ ...options, bufferSize, initialBuffers: capacity, maxBuffers: capacity * 4 }),
    teardown: (pool) => pool.close(),
  })
}
