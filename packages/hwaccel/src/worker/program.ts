import { socketKit } from './socket-kit.js'
import { udpWorkerMain } from './udp-worker.js'

let workerSource: string | null = null
/**
 * The worker's program: `udpWorkerMain` with `socketKit`, both from their source text (see udp-worker.ts), run
 * with the workerData. The kit goes in as an argument (a function expression), so nothing depends on the name a
 * bundler gives it.
 */
export function source(): string {
  workerSource ??= `(${udpWorkerMain.toString()})(require('node:worker_threads').workerData, require, ${socketKit.toString()})`
  return workerSource
}
