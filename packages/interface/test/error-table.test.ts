import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

// docs/ERRORS.md must list exactly the codes of StoqErrorCode, and name on each code's row the
// classes of src/errors.ts that carry it.
const here = path.dirname(fileURLToPath(import.meta.url))
const source = fs.readFileSync(path.join(here, '..', 'src', 'errors.ts'), 'utf8')
const table = fs.readFileSync(path.join(here, '..', '..', '..', 'docs', 'ERRORS.md'), 'utf8')

/** The string literals of `export type StoqErrorCode = | '...' | ...`. */
function unionCodes(text: string): string[] {
  const decl = /export type StoqErrorCode =([\s\S]*?)\n\n/.exec(text)
  if (decl === null) throw new Error('no StoqErrorCode union in src/errors.ts')
  return [...decl[1]!.matchAll(/'([^']+)'/g)].map((m) => m[1]!)
}

/** Code → the rest of its row, for each table row whose first cell is a `STOQ_ERR_*` code. */
function tableRows(text: string): Map<string, string> {
  const rows = new Map<string, string>()
  for (const line of text.split('\n')) {
    const m = /^\|\s*`(STOQ_ERR_[A-Z0-9_]+)`\s*\|(.*)\|\s*$/.exec(line)
    if (m === null) continue
    if (rows.has(m[1]!)) throw new Error(`${m[1]} has two rows`)
    rows.set(m[1]!, m[2]!)
  }
  return rows
}

/** Class name → code, for the classes of src/errors.ts that call super('STOQ_ERR_...'). */
function classCodes(text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const m of text.matchAll(/export class (\w+) extends StoqError[\s\S]*?super\(\s*'(STOQ_ERR_[A-Z0-9_]+)'/g)) out.set(m[1]!, m[2]!)
  return out
}

describe('docs/ERRORS.md', () => {
  it('lists every code of StoqErrorCode, and no other', () => {
    const codes = unionCodes(source)
    const rows = tableRows(table)
    expect(codes.length).toBeGreaterThan(20)
    expect(
      codes.filter((c) => !rows.has(c)),
      'codes missing from docs/ERRORS.md',
    ).toEqual([])
    expect(
      [...rows.keys()].filter((c) => !codes.includes(c)),
      'rows for codes that src/errors.ts does not have',
    ).toEqual([])
    expect(new Set(codes).size).toBe(codes.length)
  })

  it("names each class of src/errors.ts on its code's row", () => {
    const classes = classCodes(source)
    expect(classes.get('StoqTlsError')).toBe('STOQ_ERR_TLS')
    expect(classes.size).toBeGreaterThan(20)
    const rows = tableRows(table)
    const misplaced = [...classes].filter(([name, code]) => !(rows.get(code) ?? '').includes(`\`${name}\``))
    expect(misplaced, 'classes not named on their code’s row').toEqual([])
  })

  it('has a when and a what-to-do for each code', () => {
    for (const [code, rest] of tableRows(table)) {
      const cells = rest.split(' | ').map((c) => c.trim())
      expect(cells.length, code).toBe(3)
      for (const cell of cells) expect(cell.length, code).toBeGreaterThan(10)
    }
  })

  it('the parsers see a code missing from either side', () => {
    const fewer = table.replace(/^\| `STOQ_ERR_TLS`.*\n/m, '')
    expect(tableRows(fewer).has('STOQ_ERR_TLS')).toBe(false)
    expect(unionCodes("export type StoqErrorCode =\n  | 'STOQ_ERR_A'\n  | 'STOQ_ERR_B'\n\nx")).toEqual(['STOQ_ERR_A', 'STOQ_ERR_B'])
  })
})
