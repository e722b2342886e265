import { defineConfig } from 'tsup'

/**
 * The build every library package shares, for Node 20: ESM (`.js`, `.d.ts`) and CommonJS
 * (`.cjs`, `.d.cts`) side by side, with sourcemaps. `shims` gives the CommonJS files a working
 * `import.meta.url` (from `__filename`), which is how packages find their worker scripts, the
 * native library and the koffi module next to them.
 */
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  shims: true,
  target: 'node20',
})
