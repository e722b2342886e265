import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // Real loopback sockets: the suites bound every wait themselves; this only stops a hang.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
