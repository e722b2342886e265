import { createRequire } from 'node:module'
import { StoqUnsupportedError, type QuicEngineFactory } from '@stoq/interface'

/**
 * The quiche engine lives in its own package, `@stoq/engine-quiche` (it brings quiche's napi
 * binding, `@matrixai/quic`): an optional peer dependency of transport-core, which `@stoq/sdk`
 * depends on. Installing transport-core alone runs on quinn, its dependency; quiche is loaded
 * here, by name, when an endpoint asks for it or falls back to it.
 */
export const QUICHE_ENGINE_PACKAGE = '@stoq/engine-quiche'

/** What this module needs of `@stoq/engine-quiche`. */
interface QuicheModule {
  quicheEngine(): QuicEngineFactory
}

/** The loaded package; null when it could not be loaded (`missing` says why); undefined until tried. */
let loaded: QuicheModule | null | undefined
let missing = ''

function settle(load: () => QuicheModule): void {
  try {
    loaded = load()
  } catch (err) {
    loaded = null
    missing = notInstalled(err) ? `${QUICHE_ENGINE_PACKAGE} is not installed` : `${QUICHE_ENGINE_PACKAGE} cannot be loaded: ${(err as Error).message}`
  }
}

function notInstalled(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && String((err as Error).message).includes(QUICHE_ENGINE_PACKAGE)
}

/**
 * Load `@stoq/engine-quiche` once, with `import()` (so an ES module program gets the package's
 * ES build, and a CommonJS one its CommonJS build). `Endpoint.create` awaits it before choosing
 * an engine; a failure is remembered, not thrown.
 */
export async function preloadQuicheEngine(): Promise<void> {
  if (loaded !== undefined) return
  let mod: QuicheModule | null = null
  let error: unknown = null
  try {
    mod = (await import('@stoq/engine-quiche')) as QuicheModule
  } catch (err) {
    error = err
  }
  if (loaded !== undefined) return
  settle(() => {
    if (mod === null) throw error
    return mod
  })
}

/** The package, loaded with require() when `preloadQuicheEngine` was not awaited first (e.g. `selectEngine` called directly). */
function quicheModule(): QuicheModule | null {
  if (loaded === undefined) settle(() => createRequire(import.meta.url)(QUICHE_ENGINE_PACKAGE) as QuicheModule)
  return loaded ?? null
}

/**
 * The quiche engine's factory. Without `@stoq/engine-quiche`: STOQ_ERR_UNSUPPORTED, saying why
 * quiche was wanted (`why`) and which package to install.
 */
export function quicheEngineFactory(why: string): QuicEngineFactory {
  const mod = quicheModule()
  if (mod === null) throw new StoqUnsupportedError('quiche engine', quicheMissingMessage(why, missing))
  return mod.quicheEngine()
}

/** The message of the error above: why quiche was wanted, why it is not there, and what to install. */
export function quicheMissingMessage(why: string, reason: string): string {
  return `${why}, but ${reason}. To fix: npm install ${QUICHE_ENGINE_PACKAGE} (or install @stoq/sdk, which brings both engines)`
}
