/** The worker backends start from eval'd CommonJS text: the parent's own flags must not break them. */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'

const run = promisify(execFile)
const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url))

describe('worker backends under node --input-type=module', () => {
  it.each(['WorkerUdpIo', 'UringUdpIo'])('%s binds from `node --input-type=module -e`', async (cls) => {
    const script = `
      const m = await import(${JSON.stringify(dist)})
      const io = new m.${cls}()
      try {
        const a = await io.bind({ host: '127.0.0.1', port: 0, ipv6Only: false },
          { onPacket() {}, onBatchEnd() {}, onSendComplete() {}, onDrain() {}, onError() {} })
        console.log('bound ' + io.backend + ' ' + a.port)
        await io.close()
      } catch (err) {
        console.log('failed ' + err.code + ' ' + err.message)
      }`
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 })
    const line = stdout.trim().split('\n').pop()!
    // Only a machine without the backend may refuse it, and then with a typed STOQ_ERR_UNSUPPORTED.
    if (line.startsWith('failed')) expect(line).toMatch(/^failed STOQ_ERR_UNSUPPORTED /)
    else expect(line).toMatch(/^bound (gro|uring) \d+$/)
    expect(line).not.toContain('require is not defined')
  })
})
