import { describe, expect, it } from 'vitest'
import { socketAddress, wireAddress } from '../src/address.js'

function roundTrip(address: string, port: number): string {
  const w = wireAddress({ address, port, family: address.includes(':') ? 'IPv6' : 'IPv4' })
  if (w === null) throw new Error(`not parsed: ${address}`)
  const buf = new Uint8Array(19)
  buf.set(w.ip)
  buf[16] = port >> 8
  buf[17] = port & 0xff
  buf[18] = w.family
  return socketAddress(buf).address
}

describe('addresses on the C ABI', () => {
  it('round-trips IPv4 and IPv6 literals in RFC 5952 form', () => {
    expect(roundTrip('127.0.0.1', 443)).toBe('127.0.0.1')
    expect(roundTrip('::1', 443)).toBe('::1')
    expect(roundTrip('::', 1)).toBe('::')
    expect(roundTrip('2001:db8:0:0:1:0:0:1', 9)).toBe('2001:db8::1:0:0:1')
    expect(roundTrip('fe80::1%lo', 9)).toBe('fe80::1')
    expect(roundTrip('2001:db8:1:2:3:4:5:6', 9)).toBe('2001:db8:1:2:3:4:5:6')
  })

  it('presents IPv4-mapped IPv6 addresses as IPv4', () => {
    const w = wireAddress({ address: '::ffff:10.1.2.3', port: 80, family: 'IPv6' })
    expect(w?.family).toBe(4)
    expect(Array.from(w!.ip.subarray(0, 4))).toEqual([10, 1, 2, 3])
  })

  it('refuses what is not an IP literal or a port', () => {
    expect(wireAddress({ address: 'localhost', port: 80, family: 'IPv4' })).toBeNull()
    expect(wireAddress({ address: '1.2.3.4', port: 70000, family: 'IPv4' })).toBeNull()
    expect(wireAddress({ address: '1.2.3.4', port: 1.5, family: 'IPv4' })).toBeNull()
  })

  it('shares one frozen object per address', () => {
    const buf = new Uint8Array(19)
    buf.set([192, 168, 0, 1])
    buf[17] = 80
    buf[18] = 4
    const a = socketAddress(buf)
    expect(socketAddress(buf)).toBe(a)
    expect(Object.isFrozen(a)).toBe(true)
    expect(a).toEqual({ address: '192.168.0.1', port: 80, family: 'IPv4' })
  })
})
