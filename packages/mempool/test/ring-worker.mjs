// Producer for the cross-thread RecordRing test: appends `count` records (sequence number,
// a value derived from it) in bursts of varying size, publishes after each burst, and posts
// a wake-up only when publish() says the consumer parked. Imports the built package.
import { workerData, parentPort } from 'node:worker_threads'
import { RecordRing } from '@stoq/mempool'

const { handle, count } = workerData
const ring = RecordRing.attach(handle)
let sent = 0
let wakes = 0
let burst = 1
const step = () => {
  const end = Math.min(count, sent + burst)
  while (sent < end) {
    ring.append(sent, sent * 7 + 3, -sent)
    sent++
  }
  burst = (burst * 5 + 3) % 97 // 1..96 records per turn, in no regular order
  if (ring.publish()) {
    wakes++
    parentPort.postMessage('wake')
  }
  if (sent < count || ring.spilled > 0) setImmediate(step)
  else parentPort.postMessage({ done: true, wakes })
}
step()
