import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Real sockets: keep files in separate processes, but do not overload 2 cores.
    pool: 'forks',
    maxWorkers: 2,
  },
})
