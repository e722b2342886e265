import net from 'node:net'
import { normaliseFingerprint } from '@stoq/transport-core'
import { parseTarget } from '../target.js'
import { StoqUsageError } from './errors.js'

/** How one option takes its value. */
export type OptionKind =
  | { type: 'flag' }
  | { type: 'string' }
  | { type: 'int'; min: number; max: number }
  /** Seconds, decimals allowed. */
  | { type: 'seconds'; min: number; max: number }
  /** Bytes with an optional unit: K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000. */
  | { type: 'size'; min: number; max: number }
  | { type: 'choice'; choices: readonly string[] }
  /** An IP literal to bind. */
  | { type: 'ip' }
  /** A SHA-256 fingerprint: 64 hex digits, colons allowed. */
  | { type: 'fingerprint' }

export type OptionValue = string | number | boolean

export interface ParsedArgs {
  values: Record<string, OptionValue>
  positionals: string[]
  help: boolean
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  ki: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mi: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gi: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  ti: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
}

/** `"3M"` → 3145728, `"1.5GB"` → 1500000000; null when the text is not a size. */
export function parseSize(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  if (!m) return null
  const unit = SIZE_UNITS[m[2]!.toLowerCase()]
  if (unit === undefined) return null
  const n = Math.floor(Number(m[1]) * unit)
  return Number.isSafeInteger(n) ? n : null
}

function convert(command: string, option: string, kind: OptionKind, raw: string): OptionValue {
  const flag = `--${option}`
  switch (kind.type) {
    case 'flag':
      return true
    case 'string':
      if (raw.length === 0) throw new StoqUsageError(command, flag, `${flag} needs a non-empty value`)
      return raw
    case 'int': {
      const n = Number(raw)
      if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < kind.min || n > kind.max) {
        throw new StoqUsageError(command, flag, `${flag} expects an integer from ${kind.min} to ${kind.max}, got ${JSON.stringify(raw)}`)
      }
      return n
    }
    case 'seconds': {
      const n = Number(raw)
      if (!/^\d+(\.\d+)?$/.test(raw) || !(n >= kind.min && n <= kind.max)) {
        throw new StoqUsageError(command, flag, `${flag} expects seconds from ${kind.min} to ${kind.max}, got ${JSON.stringify(raw)}`)
      }
      return n
    }
    case 'size': {
      const n = parseSize(raw)
      if (n === null || n < kind.min || n > kind.max) {
        throw new StoqUsageError(
          command,
          flag,
          `${flag} expects a size from ${kind.min} to ${kind.max} bytes (units: K, M, G, T as powers of 1024; KB, MB, GB, TB as powers of 1000), got ${JSON.stringify(raw)}`,
        )
      }
      return n
    }
    case 'choice':
      if (!kind.choices.includes(raw)) {
        throw new StoqUsageError(command, flag, `${flag} expects one of ${kind.choices.join(', ')}, got ${JSON.stringify(raw)}`)
      }
      return raw
    case 'ip':
      if (net.isIP(raw) === 0)
        throw new StoqUsageError(command, flag, `${flag} expects an IP address such as 0.0.0.0, :: or 127.0.0.1, got ${JSON.stringify(raw)}`)
      return raw
    case 'fingerprint': {
      const hex = normaliseFingerprint(raw)
      if (hex === null) {
        throw new StoqUsageError(command, flag, `${flag} expects a SHA-256 fingerprint (64 hex digits, colons allowed), got ${JSON.stringify(raw)}`)
      }
      return hex
    }
  }
}

/**
 * Parse `argv` for `command`: `--name value`, `--name=value`, flags, `--help`/`-h`,
 * `--` to end options, and `-` as a positional (stdin/stdout). Throws StoqUsageError
 * for an unknown option, a missing or bad value, or a value given to a flag.
 */
export function parseArgs(command: string, argv: readonly string[], specs: Readonly<Record<string, OptionKind>>): ParsedArgs {
  const values: Record<string, OptionValue> = {}
  const positionals: string[] = []
  let help = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1))
      break
    }
    if (arg === '--help' || arg === '-h') {
      help = true
      continue
    }
    if (arg === '-' || !arg.startsWith('-')) {
      positionals.push(arg)
      continue
    }
    if (!arg.startsWith('--')) throw new StoqUsageError(command, arg, `unknown option ${arg}`)
    const eq = arg.indexOf('=')
    const name = arg.slice(2, eq < 0 ? undefined : eq)
    const kind = Object.hasOwn(specs, name) ? specs[name] : undefined
    if (kind === undefined) throw new StoqUsageError(command, `--${name}`, `unknown option --${name}`)
    if (kind.type === 'flag') {
      if (eq >= 0) throw new StoqUsageError(command, `--${name}`, `--${name} takes no value`)
      values[name] = true
      continue
    }
    let raw: string
    if (eq >= 0) {
      raw = arg.slice(eq + 1)
    } else {
      const next = argv[i + 1]
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        throw new StoqUsageError(command, `--${name}`, `option --${name} needs a value`)
      }
      raw = next
      i++
    }
    values[name] = convert(command, name, kind, raw)
  }
  return { values, positionals, help }
}

/** A HOST:PORT argument, with the CLI's error (exit 2) when it is not one. */
export function parseTargetArg(command: string, text: string): { host: string; port: number } {
  try {
    return parseTarget(text)
  } catch (err) {
    throw new StoqUsageError(command, 'HOST:PORT', `bad HOST:PORT ${JSON.stringify(text)}: ${(err as Error).message.replace(/^Invalid target: /, '')}`)
  }
}

/** `host:port`, with brackets around IPv6 literals. */
export function formatHostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`
}
