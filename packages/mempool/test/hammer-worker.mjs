// Worker for the multi-thread test: attaches to a shared pool through the built
// package and cycles buffers, checking that no buffer is handed to two holders.
import { threadId, workerData, parentPort } from 'node:worker_threads'
import { attachBufferPool } from '@stoq/mempool'

const { handle, owners, start, iterations, held } = workerData
const pool = attachBufferPool(handle)
/** owner[index]: thread id of the holder of buffer `index`, 0 when free. */
const owner = new Int32Array(owners)
const words = new Map()
const wordsOf = (index) => {
  let array = words.get(index)
  if (array === undefined) {
    const view = pool.view(index)
    array = new Int32Array(view.buffer, view.byteOffset, view.byteLength / 4)
    words.set(index, array)
  }
  return array
}

let doubleHandouts = 0
let clobbered = 0
const holding = []
const giveBack = (index) => {
  if (wordsOf(index).some((word) => word !== threadId)) clobbered++
  if (Atomics.compareExchange(owner, index, threadId, 0) !== threadId) doubleHandouts++
  pool.release(index)
}

parentPort.postMessage('ready')
Atomics.wait(new Int32Array(start), 0, 0)
for (let i = 0; i < iterations; i++) {
  const index = pool.acquire()
  if (Atomics.compareExchange(owner, index, 0, threadId) !== 0) doubleHandouts++
  wordsOf(index).fill(threadId)
  holding.push(index)
  if (holding.length > held) giveBack(holding.shift())
}
for (const index of holding) giveBack(index)
pool.close()
parentPort.postMessage({ doubleHandouts, clobbered })
