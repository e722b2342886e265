/**
 * The runner of the API-misuse tests (issue #6): call an entry point with a wrong
 * argument and report what it did, within a bounded time.
 */

/** What a call did: returned (or resolved) a value, or threw (or rejected). */
export type MisuseOutcome = { ok: true; value: unknown } | { ok: false; error: unknown }

/**
 * Call `fn` (sync or async) and say whether it returned or failed. A call that gives no
 * answer within `limitMs` throws an error starting with "HANG", so the test fails
 * instead of hanging.
 */
export async function boundedOutcome(fn: () => unknown, limitMs: number): Promise<MisuseOutcome> {
  let timer: NodeJS.Timeout | undefined
  try {
    const value = await Promise.race([
      Promise.resolve().then(fn),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`HANG: no answer within ${limitMs} ms`)), limitMs)
      }),
    ])
    return { ok: true, value }
  } catch (error) {
    if (error instanceof Error && error.message.startsWith('HANG')) throw error
    return { ok: false, error }
  } finally {
    clearTimeout(timer)
  }
}
