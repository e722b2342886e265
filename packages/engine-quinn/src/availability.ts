import { loadQuinn, mallocTuning, quinnLibraryPath } from './native.js'

export interface QuinnAvailability {
  /** The native library loads and speaks this package's ABI. */
  available: boolean
  /** Path of the library (found or expected). */
  library: string
  /** Why it is unavailable (build status, load error), or how it was found. */
  detail: string
}

/** Whether the quinn engine can run here, and why not: for `stoq doctor` and engine selection. */
export function quinnAvailability(): QuinnAvailability {
  const r = loadQuinn()
  if (r.ok) return { available: true, library: r.library, detail: `libstoq_quinn loaded from ${r.library}; ${mallocTuning}` }
  return { available: false, library: r.library ?? quinnLibraryPath(), detail: r.reason }
}
