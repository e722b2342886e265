// Writer for the cross-thread RecordWriter/RecordReader test: `count` records, every 13th
// pointing at an extra ({ n: its sequence number }), in bursts, flushed once per turn.
import { workerData, parentPort } from 'node:worker_threads'
import { RecordRing, RecordWriter } from '@stoq/mempool'

const { handle, count } = workerData
const writer = new RecordWriter(RecordRing.attach(handle), parentPort, { extrasOp: -1 })
let sent = 0
let burst = 1
const step = () => {
  const end = Math.min(count, sent + burst)
  while (sent < end) {
    const x = sent % 13 === 0 ? writer.extra({ n: sent }) : -1
    writer.rec(sent, x)
    sent++
  }
  burst = (burst * 7 + 5) % 101
  writer.flush()
  if (sent < count || writer.pending) setImmediate(step)
  else parentPort.postMessage('done')
}
step()
