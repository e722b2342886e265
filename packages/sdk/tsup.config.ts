import { defineConfig } from 'tsup'
import base from '../../tsup.config.base.js'

// The library entry plus the `stoq` command.
export default defineConfig({ ...(base as object), entry: ['src/index.ts', 'src/cli.ts'] })
