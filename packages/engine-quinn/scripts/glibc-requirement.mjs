#!/usr/bin/env node
/**
 * The glibc a shared library needs: the highest GLIBC_x.y version it references, read from its
 * ELF version-needs section (.gnu.version_r), which is what the dynamic linker checks before it
 * loads the file ("version `GLIBC_2.34' not found"). Every entry counts, weak symbols included:
 * the linker refuses a missing version whatever the binding of the symbols that use it.
 * No binutils needed (same answer as `objdump -T lib.so | grep -o 'GLIBC_[0-9.]*' | sort -V`).
 *
 * CLI: node glibc-requirement.mjs LIBRARY   prints e.g. {"glibc":"2.34","versions":[...]}
 */
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'

const SHT_GNU_VERNEED = 0x6ffffffe

/** Compare dotted version strings numerically ("2.9" < "2.34"). */
export function compareVersions(a, b) {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0)
    if (d !== 0) return d < 0 ? -1 : 1
  }
  return 0
}

/** { glibc: highest version or null, versions: every GLIBC_ version named, sorted } for a 64-bit little-endian ELF file. */
export function glibcRequirement(file) {
  const buf = fs.readFileSync(file)
  if (buf.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`)
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error(`${file}: only 64-bit little-endian ELF is read here`)
  const shoff = Number(buf.readBigUInt64LE(0x28))
  const shentsize = buf.readUInt16LE(0x3a)
  const shnum = buf.readUInt16LE(0x3c)
  const section = (i) => {
    const o = shoff + i * shentsize
    return {
      type: buf.readUInt32LE(o + 4),
      offset: Number(buf.readBigUInt64LE(o + 0x18)),
      size: Number(buf.readBigUInt64LE(o + 0x20)),
      link: buf.readUInt32LE(o + 0x28),
      info: buf.readUInt32LE(o + 0x2c),
    }
  }
  const versions = new Set()
  for (let i = 0; i < shnum; i++) {
    const s = section(i)
    if (s.type !== SHT_GNU_VERNEED) continue
    const strtab = section(s.link)
    const str = (off) => {
      const start = strtab.offset + off
      return buf.toString('latin1', start, buf.indexOf(0, start))
    }
    // Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32.
    // Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32.
    let vn = s.offset
    for (let n = 0; n < s.info; n++) {
      const cnt = buf.readUInt16LE(vn + 2)
      let aux = vn + buf.readUInt32LE(vn + 8)
      for (let k = 0; k < cnt; k++) {
        const name = str(buf.readUInt32LE(aux + 8))
        const m = /^GLIBC_(\d+(?:\.\d+)*)$/.exec(name)
        if (m) versions.add(m[1])
        const next = buf.readUInt32LE(aux + 12)
        if (next === 0) break
        aux += next
      }
      const next = buf.readUInt32LE(vn + 12)
      if (next === 0) break
      vn += next
    }
  }
  const sorted = [...versions].sort(compareVersions)
  return { glibc: sorted.at(-1) ?? null, versions: sorted }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url))) {
  const file = process.argv[2]
  if (!file) {
    console.error('usage: node glibc-requirement.mjs LIBRARY')
    process.exit(2)
  }
  console.log(JSON.stringify(glibcRequirement(file)))
}
