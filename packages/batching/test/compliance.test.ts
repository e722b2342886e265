import { packetBatcherTests } from '@stoq/compliance-tests'
import { createBufferPool } from '@stoq/mempool'
import { batching } from '../src/index.js'

/** A real pool that never grows and reports double releases (debug mode). */
const createPool = ({ bufferSize, capacity }: { bufferSize: number; capacity: number }) =>
  createBufferPool({ bufferSize, initialBuffers: capacity, maxBuffers: capacity, exhaustion: 'error', debug: true })

packetBatcherTests('default', { create: batching(), createPool })

// One batch per flush() call: everything else is deferred to later event-loop turns.
packetBatcherTests('maxBatchesPerFlush = 1', { create: batching({ maxBatchesPerFlush: 1 }), createPool })
