export { Stoq, type StoqOptions, type ListenHandlers, type StoqStats } from './stoq.js'
export { parseTarget, type ConnectTarget } from './target.js'
// The defaults of every layer, so that one import gives the whole stack.
export * from '@stoq/transport-core'
export { createBufferPool, attachBufferPool } from '@stoq/mempool'
export { batching } from '@stoq/batching'
export { DgramUdpIo, dgramUdpIo } from '@stoq/hwaccel'
