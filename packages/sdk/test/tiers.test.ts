import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPki, type TestPki } from '@stoq/compliance-tests'
import { StoqError } from '@stoq/transport-core'
import { Stoq, classifyTier, tierProfile, NETWORK_TIERS } from '../src/index.js'

let pki: TestPki
const open: Stoq[] = []

beforeAll(async () => {
  pki = await testPki()
})

afterAll(async () => {
  for (const s of open) await s.close()
})

async function stoq(name: string, options: Parameters<typeof Stoq.create>[1] = {}): Promise<Stoq> {
  const s = await Stoq.create(name, options)
  open.push(s)
  return s
}

function typedError(fn: () => unknown): string | false {
  try {
    fn()
  } catch (e) {
    return StoqError.isInstance(e) && e.code
  }
  return false
}

describe('network tiers', () => {
  it('classifies measured throughput at the documented thresholds', () => {
    expect(classifyTier(0)).toBe('constrained')
    expect(classifyTier(0.0999)).toBe('constrained')
    expect(classifyTier(0.1)).toBe('home')
    expect(classifyTier(0.95)).toBe('home')
    expect(classifyTier(1)).toBe('standard')
    expect(classifyTier(9.99)).toBe('standard')
    expect(classifyTier(10)).toBe('performance')
    expect(classifyTier(24.9)).toBe('performance')
    expect(classifyTier(25)).toBe('enterprise')
    expect(classifyTier(400)).toBe('enterprise')
    expect(typedError(() => classifyTier(-1))).toBe('STOQ_ERR_INVALID_ARG')
    expect(typedError(() => classifyTier(Number.NaN))).toBe('STOQ_ERR_INVALID_ARG')
  })

  it('gives larger windows, batches, pools and socket buffers to faster tiers', () => {
    const profiles = NETWORK_TIERS.map((t) => tierProfile(t))
    for (let i = 1; i < profiles.length; i++) {
      const a = profiles[i - 1]!
      const b = profiles[i]!
      expect(b.transport.maxConnectionWindow).toBeGreaterThanOrEqual(a.transport.maxConnectionWindow)
      expect(b.maxPacketsPerBatch).toBeGreaterThanOrEqual(a.maxPacketsPerBatch)
      expect(b.poolMaxBuffers).toBeGreaterThan(a.poolMaxBuffers)
      expect(b.socketBufferSize).toBeGreaterThan(a.socketBufferSize)
    }
    // Standard at 50 ms: 2 x BDP of 10 Gbit/s = 125 MB, the largest window; connections start at
    // the default window (what they commit of the endpoint's receive budget) and grow to it.
    expect(tierProfile('standard').transport.maxConnectionWindow).toBe(125_000_000)
    expect(tierProfile('standard').transport.initialMaxData).toBe(2 * 1024 * 1024)
    // The window follows the RTT it is sized for.
    expect(tierProfile('standard', 5).transport.maxConnectionWindow).toBe(12_500_000)
    expect(typedError(() => tierProfile('ludicrous' as never))).toBe('STOQ_ERR_INVALID_ARG')
    expect(typedError(() => tierProfile('home', 0))).toBe('STOQ_ERR_INVALID_ARG')
  })

  it('applies a configured tier to the endpoints it creates, and reports it', async () => {
    const home = await stoq('tier-home', { tier: 'home' })
    const fast = await stoq('tier-perf', { tier: 'performance' })
    const a = await home.listen({ host: '127.0.0.1', port: 0 }, { cert: pki.server.cert, key: pki.server.key })
    const b = await fast.listen({ host: '127.0.0.1', port: 0 }, { cert: pki.server.cert, key: pki.server.key })
    expect(home.stats().tier).toMatchObject({ tier: 'home', source: 'configured', profile: tierProfile('home') })
    // 1 MiB versus 16 MiB asked of the kernel.
    expect(a.stats().udp.sendBufferSize).toBeLessThan(b.stats().udp.sendBufferSize)
    await expect(Stoq.create('x', { tier: 'warp' as never })).rejects.toMatchObject({ code: 'STOQ_ERR_INVALID_ARG' })
  })

  it('classifies the path by an explicit probe in auto mode and tunes later endpoints', async () => {
    const server = await stoq('tier-server')
    const ep = await server.listen(
      { host: '127.0.0.1', port: 0 },
      {
        cert: pki.server.cert,
        key: pki.server.key,
        // Read and drop (a probe's bytes are only counted): a server that cancelled at once stopped
        // the probe's stream with STOP_SENDING once its 4 MiB no longer fitted the first window.
        onStream: (s) => void s.readable?.pipeTo(new WritableStream()).catch(() => {}),
      },
    )
    const client = await stoq('tier-client')
    expect(client.stats().tier).toMatchObject({ tier: null, source: null, profile: null })
    const result = await client.probe(`127.0.0.1:${ep.address.port}`, { pin: pki.server.fingerprint, bytes: 4 * 1024 * 1024 })
    expect(result.gbps).toBeGreaterThan(0)
    expect(result.tier).toBe(classifyTier(result.gbps))
    const t = client.stats().tier
    expect(t).toMatchObject({ tier: result.tier, source: 'probe', profile: tierProfile(result.tier) })
    expect(t.gbps).toBe(result.gbps)
  }, 30_000)

  it('classifies the path from live throughput in auto mode', async () => {
    const server = await stoq('live-server')
    const ep = await server.listen(
      { host: '127.0.0.1', port: 0 },
      {
        cert: pki.server.cert,
        key: pki.server.key,
        onStream: (s) => void s.readable?.pipeTo(new WritableStream()).catch(() => {}),
      },
    )
    const client = await stoq('live-client')
    const conn = await client.connect(`127.0.0.1:${ep.address.port}`, { pin: pki.server.fingerprint })
    // Keep data flowing across two one-second samples of the throughput series.
    const until = Date.now() + 2300
    while (Date.now() < until) await conn.send(new Uint8Array(1024 * 1024))
    const t = client.stats().tier
    expect(t.source).toBe('measured')
    expect(t.gbps).toBeGreaterThan(0)
    expect(t.tier).toBe(classifyTier(t.gbps!))
    expect(t.profile).toEqual(tierProfile(t.tier!))
  }, 30_000)
})
