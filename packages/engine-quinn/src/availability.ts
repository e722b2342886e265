import { loadQuinn, mallocTuning, quinnLibraryPath } from './native.js'

export interface QuinnAvailability {
  /** The native library loads and speaks this package's ABI. */
  available: boolean
  /** Path of the library (found or expected). */
  library: string
  /** Why it is unavailable (each place looked at, and what was wrong there), or where it was found. */
  detail: string
  /** When unavailable: what to run so that it loads (install the prebuilt package, or the build-from-source command). */
  fix: string | null
}

/** Whether the quinn engine can run here, and why not: for `stoq doctor` and engine selection. */
export function quinnAvailability(): QuinnAvailability {
  const r = loadQuinn()
  if (r.ok) return { available: true, library: r.library, detail: `libstoq_quinn loaded from ${r.library} (${r.source}); ${mallocTuning}`, fix: null }
  return { available: false, library: r.library ?? quinnLibraryPath(), detail: r.reason, fix: r.fix }
}
