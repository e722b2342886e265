/**
 * Where the library is loaded from (STOQ_QUINN_LIBRARY, this platform's prebuilt package, the
 * local build) and the glibc the prebuilt needs: measured from the file, recorded in its
 * library.json and README, checked before loading.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import {
  buildFromSourceCommand,
  compareVersions,
  glibcTooOld,
  loadQuinn,
  platformPackageName,
  quinnPlatform,
  runtimeGlibc,
  type PrebuiltInfo,
} from '../src/native.js'
// @ts-expect-error: a plain .mjs script without types
import { glibcRequirement } from '../scripts/glibc-requirement.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const onLinuxX64Glibc = process.platform === 'linux' && process.arch === 'x64' && runtimeGlibc() !== null

function hasTool(name: string): boolean {
  return spawnSync(name, ['--version'], { stdio: 'ignore' }).status === 0
}

describe('glibc versions', () => {
  it('compares dotted versions numerically', () => {
    expect(compareVersions('2.9', '2.34')).toBe(-1)
    expect(compareVersions('2.34', '2.34')).toBe(0)
    expect(compareVersions('2.36', '2.34')).toBe(1)
    expect(compareVersions('2.3.4', '2.3')).toBe(1)
  })

  it('refuses a prebuilt on an older glibc, in words, and accepts a newer or unknown one', () => {
    const info: PrebuiltInfo = { file: 'libstoq_quinn.so', glibc: '2.34', builtOn: 'Debian GNU/Linux 12 (bookworm), glibc 2.36' }
    expect(glibcTooOld(info, '2.31')).toBe('needs glibc >= 2.34 (built on Debian GNU/Linux 12 (bookworm), glibc 2.36); this system has glibc 2.31')
    expect(glibcTooOld(info, '2.34')).toBeNull()
    expect(glibcTooOld(info, '2.41')).toBeNull()
    expect(glibcTooOld(info, null)).toBeNull()
  })
})

describe.runIf(onLinuxX64Glibc)('the prebuilt package of this machine (linux-x64-gnu)', () => {
  const name = platformPackageName()
  const dir = path.dirname(createRequire(import.meta.url).resolve(`${name}/package.json`))
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'library.json'), 'utf8')) as PrebuiltInfo & { glibcVersions: string[] }
  const library = path.join(dir, info.file)

  it('is named for the platform', () => {
    expect(quinnPlatform()).toBe('linux-x64-gnu')
    expect(name).toBe('@stoq/engine-quinn-linux-x64-gnu')
  })

  it('is what the loader takes', () => {
    const r = loadQuinn()
    expect(r.ok, r.ok ? '' : r.reason).toBe(true)
    if (!r.ok) return
    expect(fs.realpathSync(r.library)).toBe(fs.realpathSync(library))
    expect(r.source).toContain(name)
  })

  it('records the glibc its library needs, as measured from the file', () => {
    const measured = glibcRequirement(library) as { glibc: string; versions: string[] }
    expect(info.glibc).toBe(measured.glibc)
    expect(info.glibcVersions).toEqual(measured.versions)
    expect(glibcTooOld(info, runtimeGlibc())).toBeNull()
  })

  it.runIf(hasTool('objdump'))('measures the same glibc as objdump -T', () => {
    const out = execFileSync('objdump', ['-T', library], { encoding: 'utf8', maxBuffer: 64 << 20 })
    const versions = [...new Set(out.match(/GLIBC_[0-9.]+/g) ?? [])].map((v) => v.slice('GLIBC_'.length)).sort(compareVersions)
    expect((glibcRequirement(library) as { versions: string[] }).versions).toEqual(versions)
  })

  it('says in its README which glibc it needs (the measured one)', () => {
    const readme = fs.readFileSync(path.join(dir, 'README.md'), 'utf8')
    expect(readme).toContain(`glibc ${info.glibc} or newer`)
  })

  it('gives the same library path to require() and import', async () => {
    const cjs = createRequire(import.meta.url)(name) as { library: string; glibc: string }
    const esm = (await import(name)) as { default: { library: string }; library: string }
    expect(cjs.library).toBe(library)
    expect(esm.default.library).toBe(library)
    expect(esm.library).toBe(library)
    expect(cjs.glibc).toBe(info.glibc)
  })
})

describe('building from source', () => {
  it("is one command naming this package's build script", () => {
    const command = buildFromSourceCommand()
    expect(command).toBe(`node ${path.join(root, 'scripts', 'build-native.mjs')} --strict`)
    expect(fs.existsSync(path.join(root, 'scripts', 'build-native.mjs'))).toBe(true)
  })

  it('commits no cargo configuration that would replace crates.io', () => {
    for (const dir of [path.join(root, 'native'), root, path.join(root, '..', '..')]) {
      for (const file of ['.cargo/config.toml', '.cargo/config']) expect(fs.existsSync(path.join(dir, file)), path.join(dir, file)).toBe(false)
    }
    // Every locked crate has an exact version and a crates.io checksum.
    const lock = fs.readFileSync(path.join(root, 'native', 'Cargo.lock'), 'utf8')
    const packages = lock.split('[[package]]').slice(1)
    for (const p of packages) {
      if (p.includes('name = "stoq-quinn"')) continue
      expect(p).toMatch(/^version = "\d+\.\d+\.\d+"$/m)
      expect(p).toMatch(/^source = "registry\+https:\/\/github\.com\/rust-lang\/crates\.io-index"$/m)
      expect(p).toMatch(/^checksum = "[0-9a-f]{64}"$/m)
    }
  })
})
