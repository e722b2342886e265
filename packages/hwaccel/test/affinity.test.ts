import { existsSync, readFileSync, readlinkSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { StoqError } from '@stoq/interface'
import { afterAll, describe, expect, it } from 'vitest'
import { StoqAffinityError, currentThreadId, formatCpuList, getCpuAffinity, getOnlineCpus, parseCpuList, setCpuAffinity } from '../src/index.js'

const linux = process.platform === 'linux'

/** Cpus_allowed_list of a thread's /proc status: the kernel's view, read without sched_getaffinity. */
function procAllowed(statusPath: string): number[] {
  const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(readFileSync(statusPath, 'utf8'))
  if (m === null || m[1] === undefined) throw new Error(`no Cpus_allowed_list in ${statusPath}`)
  return parseCpuList(m[1])
}

/** The tid of the calling thread from the /proc/thread-self link (`<pid>/task/<tid>`). */
function procThreadId(): number {
  return Number(readlinkSync('/proc/thread-self').split('/').pop())
}

function codeOf(fn: () => unknown): string {
  try {
    fn()
    return 'no error'
  } catch (err) {
    return StoqError.isInstance(err) ? err.code : `not a StoqError: ${String(err)}`
  }
}

const mainBefore = linux ? procAllowed('/proc/thread-self/status') : []

describe.runIf(linux)('CPU affinity of the calling thread', () => {
  afterAll(() => {
    // Nothing in this file may change the main thread's mask.
    expect(procAllowed('/proc/thread-self/status')).toEqual(mainBefore)
  })

  it('parses and formats kernel CPU lists', () => {
    expect(parseCpuList('0-3,6,8-9\n')).toEqual([0, 1, 2, 3, 6, 8, 9])
    expect(parseCpuList('5')).toEqual([5])
    expect(parseCpuList('')).toEqual([])
    expect(formatCpuList([9, 0, 1, 2, 3, 6, 8, 2])).toBe('0-3,6,8-9')
    expect(formatCpuList([])).toBe('')
  })

  it('reads the same mask and thread id as /proc/thread-self', () => {
    expect(getCpuAffinity()).toEqual(procAllowed('/proc/thread-self/status'))
    expect(currentThreadId()).toBe(procThreadId())
    const online = getOnlineCpus()
    expect(online).toEqual(parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8')))
    for (const cpu of getCpuAffinity()) expect(online).toContain(cpu)
  })

  it('rejects bad CPU sets with StoqInvalidArgumentError before any syscall', () => {
    const online = getOnlineCpus()
    const beyond = Math.max(...online) + 1
    for (const bad of [[], [1.5], [-1], [beyond], [1024], [Number.NaN], ['0'], [0, 'x'], null, '0', 0] as unknown[]) {
      expect(
        codeOf(() => setCpuAffinity(bad as number[])),
        JSON.stringify(bad),
      ).toBe('STOQ_ERR_INVALID_ARG')
    }
    expect(procAllowed('/proc/thread-self/status')).toEqual(mainBefore)
  })

  it('pins a worker thread to one CPU, reads it back, and leaves the main thread alone', async () => {
    const distUrl = new URL('../dist/index.js', import.meta.url)
    if (!existsSync(distUrl)) throw new Error('dist/index.js is missing: run `npx tsup` before this test (the worker loads the built package)')
    const allowed = getCpuAffinity()
    // CPU 0 where this process may use it (on a one-CPU machine this pins to that CPU).
    const target = allowed.includes(0) ? 0 : (allowed[0] as number)

    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads')
      const { readFileSync } = require('node:fs')
      const allowedNow = () => readFileSync('/proc/thread-self/status', 'utf8').match(/^Cpus_allowed_list:\\s*(.+)$/m)[1]
      import(workerData.url).then((m) => {
        const tid = m.currentThreadId()
        const before = m.getCpuAffinity()
        m.setCpuAffinity([workerData.target])
        parentPort.postMessage({ step: 'pinned', tid, before, after: m.getCpuAffinity(), proc: allowedNow() })
        parentPort.once('message', () => {
          m.setCpuAffinity(before)
          parentPort.postMessage({ step: 'restored', restored: m.getCpuAffinity(), proc: allowedNow() })
        })
      }).catch((err) => parentPort.postMessage({ step: 'error', error: String(err && err.stack || err) }))
      `,
      { eval: true, workerData: { url: distUrl.href, target } },
    )
    const messages: Array<Record<string, unknown>> = []
    const next = (): Promise<Record<string, unknown>> =>
      new Promise((resolve, reject) => {
        const onMessage = (msg: Record<string, unknown>): void => {
          worker.off('error', reject)
          messages.push(msg)
          resolve(msg)
        }
        worker.once('message', onMessage)
        worker.once('error', reject)
      })
    try {
      const pinned = await next()
      expect(pinned.error).toBeUndefined()
      expect(pinned.step).toBe('pinned')
      expect(pinned.before).toEqual(allowed) // a new thread inherits its creator's mask
      expect(pinned.after).toEqual([target])
      expect(pinned.proc).toBe(String(target))
      const tid = pinned.tid as number
      expect(tid).not.toBe(currentThreadId())

      // Seen from the main thread while the worker is pinned: the kernel has the worker on one CPU, the main thread as before.
      expect(procAllowed(`/proc/self/task/${tid}/status`)).toEqual([target])
      expect(getCpuAffinity()).toEqual(allowed)
      expect(procAllowed('/proc/thread-self/status')).toEqual(mainBefore)

      worker.postMessage('restore')
      const restored = await next()
      expect(restored.step).toBe('restored')
      expect(restored.restored).toEqual(allowed)
      expect(parseCpuList(String(restored.proc))).toEqual(allowed)
    } finally {
      await worker.terminate()
    }
  })

  const online = linux ? getOnlineCpus() : []
  const forbidden = linux ? online.filter((cpu) => !getCpuAffinity().includes(cpu)) : []
  it.skipIf(forbidden.length === 0)(
    'maps the kernel EINVAL for an online CPU outside the cpuset to StoqAffinityError (needs a cpuset narrower than the online CPUs)',
    async () => {
      const distUrl = new URL('../dist/index.js', import.meta.url)
      const worker = new Worker(
        `
        const { parentPort, workerData } = require('node:worker_threads')
        import(workerData.url).then((m) => {
          try { m.setCpuAffinity([workerData.cpu]); parentPort.postMessage({ code: 'no error' }) }
          catch (err) { parentPort.postMessage({ code: err.code, errno: err.errno, syscall: err.syscall, name: err.name, message: err.message }) }
        })
        `,
        { eval: true, workerData: { url: distUrl.href, cpu: forbidden[0] } },
      )
      try {
        const msg = await new Promise<Record<string, unknown>>((resolve, reject) => {
          worker.once('message', resolve)
          worker.once('error', reject)
        })
        expect(msg).toMatchObject({ code: 'STOQ_ERR_UNSUPPORTED', errno: 'EINVAL', syscall: 'sched_setaffinity', name: 'StoqAffinityError' })
      } finally {
        await worker.terminate()
      }
    },
  )

  it('StoqAffinityError is a STOQ_ERR_UNSUPPORTED StoqError carrying the syscall and errno', () => {
    const err = new StoqAffinityError('sched_setaffinity', 'EINVAL', 'refused')
    expect(StoqError.isInstance(err)).toBe(true)
    expect(err.code).toBe('STOQ_ERR_UNSUPPORTED')
    expect(err.data).toEqual({ feature: 'cpu-affinity' })
    expect([err.syscall, err.errno]).toEqual(['sched_setaffinity', 'EINVAL'])
  })
})
