import { defineConfig } from 'tsup'
import base from '../../tsup.config.base.js'

// The library entry plus the `stoq` command (src/cli/, built to dist/cli.js: package.json `bin`).
export default defineConfig({ ...(base as object), entry: { index: 'src/index.ts', cli: 'src/cli/main.ts' } })
