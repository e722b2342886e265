import { defineConfig } from 'tsup'
import base from '../../tsup.config.base.js'

// ESM only: the suites import vitest, which refuses to be loaded through require().
export default defineConfig({ ...(base as object), format: ['esm'] })
