import { defineConfig } from 'tsup'

// Each script is its own entry: run as `node dist/<name>.js`.
export default defineConfig({
  entry: {
    throughput: 'src/throughput.ts',
    quick: 'src/quick.ts',
    peer: 'src/peer.ts',
    'profile-top': 'src/profile-top.ts',
    pool: 'src/pool.ts',
    engine: 'src/engine.ts',
    workers: 'src/workers.ts',
    memory: 'src/memory.ts',
    handshakes: 'src/handshakes.ts',
    'worker-protocol': 'src/worker-protocol.ts',
  },
  format: ['esm'],
  dts: false,
  sourcemap: true,
  clean: true,
  target: 'node20',
})
