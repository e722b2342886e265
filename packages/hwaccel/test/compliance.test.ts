import { udpIoTests } from '@stoq/compliance-tests'
import { StoqError } from '@stoq/interface'
import { DgramUdpIo, UringUdpIo } from '../src/index.js'

udpIoTests('dgram', { create: () => new DgramUdpIo() })

/** The uring backend runs where one real bind proves io_uring works (see uring-io.test.ts for the refusal path). */
async function uringWorks(): Promise<boolean> {
  const io = new UringUdpIo()
  try {
    await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false }, { onPacket() {}, onBatchEnd() {}, onSendComplete() {}, onDrain() {}, onError() {} })
    return true
  } catch (err) {
    if (StoqError.isInstance(err) && err.code === 'STOQ_ERR_UNSUPPORTED') return false
    throw err
  } finally {
    await io.close()
  }
}

if (await uringWorks()) udpIoTests('uring', { create: () => new UringUdpIo() })
