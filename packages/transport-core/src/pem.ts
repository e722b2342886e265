import crypto from 'node:crypto'
import { StoqInvalidArgumentError } from '@stoq/interface'

function pemText(pem: unknown): string {
  if (typeof pem === 'string') return pem
  if (pem instanceof Uint8Array) return Buffer.from(pem.buffer, pem.byteOffset, pem.byteLength).toString('utf8')
  throw new StoqInvalidArgumentError('pem', `expected PEM text or bytes, got ${pem === null ? 'null' : typeof pem}`)
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** Split a PEM bundle into one PEM buffer per certificate (leaf first). */
export function splitPemChain(pem: Uint8Array): Uint8Array[] {
  const text = pemText(pem)
  const blocks = text.match(PEM_BLOCK) ?? []
  return blocks.map((b) => Buffer.from(`${b}\n`, 'utf8'))
}

/** SHA-256 fingerprint of a DER certificate as lowercase hex without separators. */
export function fingerprintDer(der: Uint8Array): string {
  return crypto.createHash('sha256').update(der).digest('hex')
}

/** Normalise a user-given fingerprint: accepts hex with or without colons, any case, optional `sha256/` prefix. */
export function normaliseFingerprint(input: string): string | null {
  if (typeof input !== 'string') return null
  const s = input
    .trim()
    .replace(/^sha256[:/]/i, '')
    .replace(/:/g, '')
    .toLowerCase()
  return /^[0-9a-f]{64}$/.test(s) ? s : null
}

/** SHA-256 fingerprint of the first certificate of a PEM chain. */
export function fingerprintPem(pem: Uint8Array | string): string {
  let cert: crypto.X509Certificate
  try {
    cert = new crypto.X509Certificate(pemText(pem))
  } catch (err) {
    if (err instanceof StoqInvalidArgumentError) throw err
    throw new StoqInvalidArgumentError('pem', `not a PEM certificate: ${(err as Error).message}`)
  }
  return fingerprintDer(cert.raw)
}
