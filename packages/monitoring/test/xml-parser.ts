/**
 * A strict little XML parser for tests: enough of XML 1.0 to check that a
 * generated SVG is well formed (one root, balanced tags, quoted and unique
 * attributes, only the five predefined entities and character references, no
 * stray `<` or `&`) and to walk its elements. Throws on anything else.
 */

export interface XmlElement {
  name: string
  attrs: Record<string, string>
  children: XmlElement[]
  /** Text directly inside this element, entities decoded. */
  text: string
}

const NAME = '[A-Za-z_][\\w.:-]*'
const OPEN_TAG = new RegExp(`<(${NAME})((?:\\s+${NAME}\\s*=\\s*(?:"[^"<]*"|'[^'<]*'))*)\\s*(/?)>`, 'y')
const CLOSE_TAG = new RegExp(`</(${NAME})\\s*>`, 'y')
const ATTR = new RegExp(`(${NAME})\\s*=\\s*(?:"([^"<]*)"|'([^'<]*)')`, 'g')
const ENTITY = /&(?:(amp|lt|gt|quot|apos)|#(\d+)|#x([0-9a-fA-F]+));/y
const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }

function decode(raw: string, where: number): string {
  let out = ''
  for (let i = 0; i < raw.length; ) {
    if (raw[i] !== '&') {
      out += raw[i]
      i++
      continue
    }
    ENTITY.lastIndex = i
    const m = ENTITY.exec(raw)
    if (!m) throw new Error(`bad entity or bare & at ${where + i}: ${JSON.stringify(raw.slice(i, i + 12))}`)
    out += m[1] !== undefined ? NAMED[m[1]]! : String.fromCodePoint(m[2] !== undefined ? Number(m[2]) : parseInt(m[3]!, 16))
    i += m[0].length
  }
  return out
}

/** Control characters other than tab, LF and CR are not allowed anywhere in an XML 1.0 document. */
function checkChars(doc: string): void {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: these control characters are exactly what XML 1.0 forbids
  const bad = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/.exec(doc)
  if (bad) throw new Error(`character U+${bad[0].charCodeAt(0).toString(16).padStart(4, '0')} not allowed in XML at ${bad.index}`)
}

export function parseXml(doc: string): XmlElement {
  checkChars(doc)
  let i = 0
  const skipMisc = (): void => {
    for (;;) {
      const ws = /\s*/y
      ws.lastIndex = i
      i += ws.exec(doc)![0].length
      if (doc.startsWith('<!--', i)) {
        const end = doc.indexOf('-->', i + 4)
        if (end < 0) throw new Error('unterminated comment')
        i = end + 3
      } else {
        return
      }
    }
  }
  if (doc.startsWith('<?xml')) {
    const end = doc.indexOf('?>')
    if (end < 0) throw new Error('unterminated XML declaration')
    i = end + 2
  }
  skipMisc()
  const stack: XmlElement[] = []
  let root: XmlElement | null = null
  while (i < doc.length) {
    if (stack.length === 0 && root !== null) {
      skipMisc()
      if (i < doc.length) throw new Error(`content after the root element at ${i}`)
      break
    }
    if (doc.startsWith('<!--', i)) {
      const end = doc.indexOf('-->', i + 4)
      if (end < 0) throw new Error('unterminated comment')
      i = end + 3
      continue
    }
    if (doc.startsWith('</', i)) {
      CLOSE_TAG.lastIndex = i
      const m = CLOSE_TAG.exec(doc)
      if (!m) throw new Error(`bad closing tag at ${i}`)
      const open = stack.pop()
      if (open === undefined || open.name !== m[1]) throw new Error(`</${m[1]}> at ${i} does not close <${open?.name ?? '(nothing)'}>`)
      i += m[0].length
      continue
    }
    if (doc[i] === '<') {
      OPEN_TAG.lastIndex = i
      const m = OPEN_TAG.exec(doc)
      if (!m) throw new Error(`bad tag at ${i}: ${JSON.stringify(doc.slice(i, i + 40))}`)
      const attrs: Record<string, string> = {}
      for (const a of m[2]!.matchAll(ATTR)) {
        if (Object.hasOwn(attrs, a[1]!)) throw new Error(`duplicate attribute ${a[1]} at ${i}`)
        attrs[a[1]!] = decode(a[2] ?? a[3]!, i)
      }
      const el: XmlElement = { name: m[1]!, attrs, children: [], text: '' }
      if (stack.length > 0) stack.at(-1)!.children.push(el)
      else if (root === null) root = el
      else throw new Error(`second root element at ${i}`)
      if (m[3] !== '/') stack.push(el)
      i += m[0].length
      continue
    }
    if (stack.length === 0) throw new Error(`text outside the root element at ${i}`)
    const end = doc.indexOf('<', i)
    const raw = doc.slice(i, end < 0 ? doc.length : end)
    if (raw.includes(']]>')) throw new Error(`"]]>" in text at ${i}`)
    stack.at(-1)!.text += decode(raw, i)
    i += raw.length
  }
  if (root === null) throw new Error('no root element')
  if (stack.length > 0) throw new Error(`<${stack.at(-1)!.name}> is never closed`)
  return root
}

/** Every element under `el` (itself included), depth first, in document order. */
export function allElements(el: XmlElement): XmlElement[] {
  return [el, ...el.children.flatMap(allElements)]
}

/** Elements named `name` whose class list has every class in `classes`. */
export function select(root: XmlElement, name: string, ...classes: string[]): XmlElement[] {
  return allElements(root).filter((e) => {
    if (e.name !== name) return false
    const list = (e.attrs.class ?? '').split(/\s+/)
    return classes.every((c) => list.includes(c))
  })
}

/** `"1,2 3.5,4"` → `[[1, 2], [3.5, 4]]`. */
export function polylinePoints(el: XmlElement): Array<[number, number]> {
  const raw = (el.attrs.points ?? '').trim()
  if (raw === '') return []
  return raw.split(/\s+/).map((pair) => {
    const [x, y] = pair.split(',').map(Number)
    if (!Number.isFinite(x) || !Number.isFinite(y)) throw new Error(`bad point ${JSON.stringify(pair)}`)
    return [x!, y!]
  })
}
