import { describe, expect, it } from 'vitest'
import { stoqErrorOf } from '@stoq/compliance-tests'
import {
  DgramUdpIo,
  GsoUdpIo,
  UringUdpIo,
  WorkerUdpIo,
  detectCapabilities,
  formatCapabilities,
  probeIoUring,
  udpIoAuto,
  type CapabilityReport,
} from '../src/index.js'

/** Every hwaccel entry point refuses an unknown option key, naming it (one policy, @stoq/interface). */

const refusal = stoqErrorOf

describe('unknown option keys', () => {
  const cases: Array<[string, string, string | null, () => unknown]> = [
    ['DgramUdpIo', 'sendQueueHighwater', 'sendQueueHighWater', () => new DgramUdpIo({ sendQueueHighwater: 8 } as never)],
    ['GsoUdpIo', 'probeTimeout', 'probeTimeoutMs', () => new GsoUdpIo({ probeTimeout: 8 } as never)],
    ['WorkerUdpIo', 'cpu', 'cpus', () => new WorkerUdpIo({ cpu: [0] } as never)],
    // receiveDepth belongs to the uring backend only.
    ['WorkerUdpIo', 'receiveDepth', null, () => new WorkerUdpIo({ receiveDepth: 4 } as never)],
    ['UringUdpIo', 'recieveDepth', 'receiveDepth', () => new UringUdpIo({ recieveDepth: 4 } as never)],
    ['detectCapabilities', 'probeSegmentSise', 'probeSegmentSize', () => detectCapabilities({ probeSegmentSise: 1200 } as never)],
    ['udpIoAuto', 'disableGSO', 'disableGso', () => udpIoAuto({ disableGSO: true } as never)],
    ['udpIoAuto gso', 'gso.socketBuffer', null, () => udpIoAuto({ disableGso: true, gso: { socketBuffer: 1 } } as never)],
    ['udpIoAuto dgram', 'dgram.sendQueueLowWatre', 'dgram.sendQueueLowWater', () => udpIoAuto({ disableGso: true, dgram: { sendQueueLowWatre: 1 } } as never)],
    ['probeIoUring', 'setupFlag', 'setupFlags', () => probeIoUring({ setupFlag: [0] } as never)],
    ['formatCapabilities', 'widht', 'width', () => formatCapabilities({} as CapabilityReport, { widht: 80 } as never)],
  ]
  it.each(cases.map(([api, argument, near, call]) => ({ api, argument, near, call })))('$api refuses $argument', async ({ argument, near, call }) => {
    const err = await refusal(call)
    expect(err.code).toBe('STOQ_ERR_INVALID_ARG')
    expect(err.data).toEqual({ argument })
    expect(err.message).toContain(`Invalid ${argument}: unknown option`)
    if (near === null) expect(err.message).not.toContain('did you mean')
    else expect(err.message).toContain(`did you mean \`${near}\`?`)
  })

  it('accepts every documented key', async () => {
    expect(() => new DgramUdpIo({ sendQueueHighWater: 8, sendQueueLowWater: 2 })).not.toThrow()
    expect(() => new WorkerUdpIo({ receiveSlots: 8, sendSlots: 8, cpus: [] })).not.toThrow()
    expect(() => new UringUdpIo({ receiveSlots: 8, receiveDepth: 4 })).not.toThrow()
    const auto = await udpIoAuto({ disableGso: true, dgram: { sendQueueHighWater: 8 }, gso: { probeTimeoutMs: 100 } })
    expect(auto.backend).toBe('dgram')
  })
})
