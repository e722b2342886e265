/** How `waitFor` polls. */
export interface WaitForOptions {
  /** What is waited for, for the error message. */
  what?: string
  /** Give up after this long: a hang guard, not a timing assertion. Default 10 s. */
  limitMs?: number
  /** Poll interval. Default 10 ms. */
  everyMs?: number
  /** More to say when it gives up (the state seen last). */
  detail?: () => string
}

/**
 * Polls `condition` (sync or async) until it holds. Throws "<what>: not reached within N ms"
 * (plus `detail()`) after `limitMs`, so a test that would hang fails and says what it waited for.
 */
export async function waitFor(condition: () => boolean | Promise<boolean>, options: WaitForOptions = {}): Promise<void> {
  const { what = 'condition', limitMs = 10_000, everyMs = 10, detail } = options
  const deadline = performance.now() + limitMs
  while (!(await condition())) {
    if (performance.now() > deadline) {
      const more = detail?.()
      throw new Error(`${what}: not reached within ${limitMs} ms${more ? `; ${more}` : ''}`)
    }
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
