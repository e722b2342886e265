import { defineConfig } from 'tsup'
import base from '../../tsup.config.base.js'

/** The library, plus the entry point of its engine worker threads (src/workers/engine-worker.ts). */
export default defineConfig({
  ...(base as object),
  entry: { index: 'src/index.ts', 'workers/engine-worker': 'src/workers/engine-worker.ts' },
})
