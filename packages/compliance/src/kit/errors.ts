import { StoqError } from '@stoq/interface'

/**
 * The StoqError that `call` throws or rejects with. Anything else it throws is rethrown, and a
 * call that succeeds fails the test: its caller then asserts on `code`, `data` and `cause`.
 */
export async function stoqErrorOf(call: () => unknown): Promise<StoqError> {
  try {
    await call()
  } catch (err) {
    if (StoqError.isInstance(err)) return err
    throw err
  }
  throw new Error('expected a StoqError, and the call succeeded')
}
