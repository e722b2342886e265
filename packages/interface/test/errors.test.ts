import { describe, expect, it } from 'vitest'
import {
  isBidirectional,
  isClientInitiated,
  StoqConnectionClosedError,
  StoqDatagramTooLargeError,
  StoqError,
  StoqInvalidArgumentError,
  StoqStreamResetError,
} from '../src/index.js'

describe('StoqError', () => {
  it('carries a stable code, typed data and a cross-copy brand', () => {
    const err = new StoqDatagramTooLargeError(2000, 1200)
    expect(err.code).toBe('STOQ_ERR_DATAGRAM_TOO_LARGE')
    expect(err.data).toEqual({ size: 2000, maxSize: 1200 })
    expect(err.name).toBe('StoqDatagramTooLargeError')
    expect(err).toBeInstanceOf(Error)
    expect(StoqError.isInstance(err)).toBe(true)
    // An error from another copy of the package: same brand, different class.
    const foreign = Object.assign(new Error('x'), { [Symbol.for('@stoq/error')]: true })
    expect(StoqError.isInstance(foreign)).toBe(true)
    expect(StoqError.isInstance(new Error('plain'))).toBe(false)
    expect(StoqError.isInstance(null)).toBe(false)
    expect(StoqError.isInstance('STOQ_ERR_CLOSED')).toBe(false)
  })

  it('says what was wrong in the message', () => {
    expect(new StoqInvalidArgumentError('port', 'expected 0-65535').message).toBe('Invalid port: expected 0-65535')
    expect(new StoqStreamResetError(4, 7).message).toContain('code 7')
    const closed = new StoqConnectionClosedError({ remote: true, app: true, code: 42, reason: 'bye', idleTimeout: false })
    expect(closed.message).toBe('Connection closed by peer with application code 42 (bye)')
  })
})

describe('stream id helpers (RFC 9000 §2.1)', () => {
  it('decode initiator and directionality', () => {
    expect([0, 1, 2, 3].map(isBidirectional)).toEqual([true, true, false, false])
    expect([0, 1, 2, 3].map(isClientInitiated)).toEqual([true, false, true, false])
  })
})
