import { getEventListeners } from 'node:events'
import { describe, expect, it } from 'vitest'
import {
  StoqAbortedError,
  StoqError,
  StoqInvalidArgumentError,
  booleanOption,
  checkOptions,
  closestKey,
  enumOption,
  integerOption,
  raceAbort,
  signalOption,
  throwIfAborted,
  whenAborted,
} from '../src/index.js'

const ACCEPTED = ['host', 'port', 'udpBackend', 'transport', 'maxStreams'] as const

function refusal(fn: () => unknown): StoqInvalidArgumentError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(StoqInvalidArgumentError)
    return err as StoqInvalidArgumentError
  }
  throw new Error('expected a StoqInvalidArgumentError')
}

describe('checkOptions', () => {
  it('returns an object whose keys are all accepted', () => {
    const o = { host: '::', port: 1, udpBackend: undefined }
    expect(checkOptions(o, ACCEPTED)).toBe(o)
    expect(checkOptions({}, ACCEPTED)).toEqual({})
  })

  it.each([
    ['udpBackned', undefined, 'udpBackned', '`udpBackend`'],
    ['UDPBACKEND', undefined, 'UDPBACKEND', '`udpBackend`'],
    ['prot', undefined, 'prot', '`port`'],
    ['maxStreamz', 'transport', 'transport.maxStreamz', '`transport.maxStreams`'],
  ])('refuses %s (path %s) naming %s and suggesting %s', (key, path, argument, suggestion) => {
    const err = refusal(() => checkOptions({ host: '::', [key]: 1 }, ACCEPTED, path))
    expect(err.code).toBe('STOQ_ERR_INVALID_ARG')
    expect(err.data.argument).toBe(argument)
    expect(err.message).toContain(`Invalid ${argument}: unknown option`)
    expect(err.message).toContain(`did you mean ${suggestion}?`)
    expect(err.message).toContain('accepted: host, port, udpBackend, transport, maxStreams')
  })

  it('suggests nothing when no accepted key is close', () => {
    const err = refusal(() => checkOptions({ wholly: 1 }, ACCEPTED))
    expect(err.data.argument).toBe('wholly')
    expect(err.message).not.toContain('did you mean')
  })

  it('refuses a key given as undefined (a typo whatever its value)', () => {
    expect(refusal(() => checkOptions({ udpBackned: undefined }, ACCEPTED)).data.argument).toBe('udpBackned')
  })

  it.each([null, 7, 'x', [], new Uint8Array(1), () => {}])('refuses %s as an options object', (value) => {
    expect(refusal(() => checkOptions(value, ACCEPTED, 'server')).data.argument).toBe('server')
    expect(refusal(() => checkOptions(value, ACCEPTED)).data.argument).toBe('options')
  })
})

describe('closestKey', () => {
  it('finds a transposition, a case change and a small edit, not a distant word', () => {
    expect(closestKey('udpBackned', ACCEPTED)).toBe('udpBackend')
    expect(closestKey('maxstreams', ACCEPTED)).toBe('maxStreams')
    expect(closestKey('hots', ACCEPTED)).toBe('host')
    expect(closestKey('pr', ACCEPTED)).toBeNull()
    expect(closestKey('engine', ACCEPTED)).toBeNull()
  })
})

describe('value checks', () => {
  it('integerOption', () => {
    expect(integerOption('n', 3, 0, 5)).toBe(3)
    for (const bad of [-1, 6, 1.5, '3', NaN, undefined]) {
      const err = refusal(() => integerOption('n', bad, 0, 5))
      expect(err.message).toContain('expected an integer from 0 to 5')
    }
  })

  it('booleanOption', () => {
    expect(booleanOption('b', false)).toBe(false)
    expect(refusal(() => booleanOption('b', 'true')).message).toBe('Invalid b: expected true or false, got "true"')
  })

  it('enumOption', () => {
    expect(enumOption('e', 'gro', ['gro', 'gso'])).toBe('gro')
    expect(refusal(() => enumOption('e', 'grr', ['gro', 'gso'])).message).toBe('Invalid e: expected one of gro, gso, got "grr"')
  })

  it('signalOption', () => {
    const signal = new AbortController().signal
    expect(signalOption('signal', signal)).toBe(signal)
    expect(signalOption('signal', undefined)).toBeUndefined()
    expect(refusal(() => signalOption('signal', {})).data.argument).toBe('signal')
    expect(refusal(() => signalOption('signal', true)).data.argument).toBe('signal')
  })
})

describe('abort helpers', () => {
  it('StoqAbortedError carries the operation and the reason as cause', () => {
    const reason = new Error('user left')
    const err = new StoqAbortedError('connect', reason)
    expect(err.code).toBe('STOQ_ERR_ABORTED')
    expect(err.data).toEqual({ operation: 'connect' })
    expect(err.cause).toBe(reason)
    expect(StoqError.isInstance(err)).toBe(true)
  })

  it('throwIfAborted throws only for an aborted signal', () => {
    const ac = new AbortController()
    throwIfAborted(undefined, 'x')
    throwIfAborted(ac.signal, 'x')
    ac.abort('why')
    expect(() => throwIfAborted(ac.signal, 'x')).toThrow(StoqAbortedError)
  })

  it('whenAborted calls back once and its dispose removes the listener', () => {
    const ac = new AbortController()
    const seen: StoqAbortedError[] = []
    const dispose = whenAborted(ac.signal, 'op', (e) => seen.push(e))
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1)
    dispose()
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0)
    whenAborted(ac.signal, 'op', (e) => seen.push(e))
    ac.abort('r')
    expect(seen).toHaveLength(1)
    expect(seen[0]!.cause).toBe('r')
    whenAborted(ac.signal, 'op', (e) => seen.push(e))
    expect(seen).toHaveLength(2)
  })

  it('raceAbort: aborted before, aborted during, settled first (no listener left)', async () => {
    const before = new AbortController()
    before.abort('early')
    let released = 0
    await expect(raceAbort(new Promise(() => {}), before.signal, 'op', () => released++)).rejects.toMatchObject({ code: 'STOQ_ERR_ABORTED', cause: 'early' })
    expect(released).toBe(1)

    const during = new AbortController()
    const pending = raceAbort(new Promise(() => {}), during.signal, 'op', () => released++)
    during.abort('late')
    await expect(pending).rejects.toBeInstanceOf(StoqAbortedError)
    expect(released).toBe(2)
    expect(getEventListeners(during.signal, 'abort')).toHaveLength(0)

    const never = new AbortController()
    await expect(raceAbort(Promise.resolve(5), never.signal, 'op')).resolves.toBe(5)
    await expect(raceAbort(Promise.reject(new Error('no')), never.signal, 'op')).rejects.toThrow('no')
    expect(getEventListeners(never.signal, 'abort')).toHaveLength(0)
  })
})
