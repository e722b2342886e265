import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // Real loopback sockets: every wait in the suites is bounded; these only stop a hang.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 1,
  },
})
