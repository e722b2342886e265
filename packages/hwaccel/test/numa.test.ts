import { describe, expect, it } from 'vitest'
import { StoqError } from '@stoq/interface'
import { bindToNumaNode, numaNodeOf, numaNodes } from '../src/index.js'

describe('NUMA placement', () => {
  const nodes = numaNodes()

  it('lists the online NUMA nodes', () => {
    expect(nodes.length).toBeGreaterThan(0)
    expect(nodes).toContain(0)
  })

  it('binds the whole pages of a shared buffer to a node and reads the node back', () => {
    const node = nodes[nodes.length - 1]!
    const memory = new Uint8Array(new SharedArrayBuffer(1 << 20))
    const placed = bindToNumaNode(memory, node)
    expect(placed.ok, placed.detail).toBe(true)
    expect(['libnuma', 'mbind']).toContain(placed.via)
    // Everything but the partial first and last pages.
    expect(placed.bytes).toBeGreaterThanOrEqual((1 << 20) - 8192)
    expect(placed.bytes % 4096).toBe(0)
    // A page in the middle is on that node once touched.
    expect(numaNodeOf(memory, 1 << 19)).toBe(node)
  })

  it('refuses a node this machine does not have with a typed error', () => {
    const missing = Math.max(...nodes) + 1
    let err: unknown
    try {
      bindToNumaNode(new Uint8Array(8192), missing)
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
    expect((err as Error).message).toContain(`NUMA node ${missing} does not exist here`)
  })

  it('reports a buffer without a whole page instead of pretending', () => {
    const placed = bindToNumaNode(new Uint8Array(100), 0)
    expect(placed).toMatchObject({ ok: false, bytes: 0, via: 'none', detail: 'the buffer holds no whole page' })
  })
})
