import { STREAM_BLOCKED, STREAM_STOPPED } from '@stoq/interface'
import { describe, expect, it } from 'vitest'
import { ABI, CONFIG_FIELDS } from '../src/abi.js'
import { abiInfo, loadQuinn } from '../src/native.js'

/**
 * The constants of the C ABI are defined once, in native/src/abi.rs, and mirrored in
 * src/abi.ts: the library reports its own (stoq_abi_info) and both sides must agree, name by
 * name, as must the layout of the EngineConfig struct koffi builds.
 */
describe('C ABI: TypeScript and Rust agree', () => {
  const loaded = loadQuinn()

  it('loads the library', () => {
    expect(loaded.ok, loaded.ok ? '' : loaded.reason).toBe(true)
  })

  it.runIf(loaded.ok)('has the same constants on both sides, none missing on either', () => {
    if (!loaded.ok) return
    const info = abiInfo(loaded.native)
    const native = Object.fromEntries(Object.entries(info).filter(([k]) => !k.startsWith('CONFIG_')))
    expect(native).toEqual({ ...ABI })
    expect(loaded.native.abiVersion()).toBe(ABI.ABI_VERSION)
  })

  it.runIf(loaded.ok)('lays EngineConfig out the same way (size and every field offset)', () => {
    if (!loaded.ok) return
    const info = abiInfo(loaded.native)
    expect(info.CONFIG_SIZE).toBe(loaded.native.configSize)
    const offsets = Object.fromEntries(
      Object.entries(info)
        .filter(([k]) => k.startsWith('CONFIG_OFFSET.'))
        .map(([k, v]) => [k.slice('CONFIG_OFFSET.'.length), v]),
    )
    expect(Object.keys(offsets)).toEqual(CONFIG_FIELDS.map(([name]) => name))
    expect(offsets).toEqual(loaded.native.configOffsets)
  })

  it('uses the stream result codes of @stoq/interface', () => {
    expect(ABI.STREAM_BLOCKED).toBe(STREAM_BLOCKED)
    expect(ABI.STREAM_STOPPED).toBe(STREAM_STOPPED)
  })

  it.runIf(loaded.ok)('refuses a config of another size or ABI version, and says why', () => {
    if (!loaded.ok) return
    const n = loaded.native
    const config = Object.fromEntries(CONFIG_FIELDS.map(([name]) => [name, 0])) as Record<string, number>
    Object.assign(config, { abi_version: ABI.ABI_VERSION, max_udp_payload: 1350, cid_prefix: ABI.CID_PREFIX_NONE })
    const reason = (): string => {
      const buf = new Uint8Array(512)
      const len = n.lastError(null, buf, buf.length)
      return new TextDecoder().decode(buf.subarray(0, Math.min(len, buf.length)))
    }
    expect(n.engineNew(config as never, n.configSize - 8)).toBeNull()
    expect(reason()).toMatch(/config struct of/)
    expect(n.engineNew({ ...config, abi_version: 2 } as never, n.configSize)).toBeNull()
    expect(reason()).toMatch(/ABI 2/)
    expect(n.engineNew({ ...config, max_udp_payload: 1000 } as never, n.configSize)).toBeNull()
    expect(reason()).toMatch(/max UDP payload 1000/)
    const ep = n.engineNew(config as never, n.configSize)
    expect(ep).not.toBeNull()
    n.engineFree(ep)
  })
})
