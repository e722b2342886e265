import { StoqInvalidArgumentError } from '@stoq/interface'

// The same split as @stoq/transport-core's splitPemChain: this package does not depend on
// transport-core (transport-core loads it), so the few lines live here too.

function pemText(pem: unknown): string {
  if (typeof pem === 'string') return pem
  if (pem instanceof Uint8Array) return Buffer.from(pem.buffer, pem.byteOffset, pem.byteLength).toString('utf8')
  throw new StoqInvalidArgumentError('pem', `expected PEM text or bytes, got ${pem === null ? 'null' : typeof pem}`)
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** A PEM chain as @matrixai/quic's `cert` list: one element, every certificate (leaf first); none if there are none. */
export function pemChainList(pem: Uint8Array): Uint8Array[] {
  const blocks = (pemText(pem).match(PEM_BLOCK) ?? []).map((b) => Buffer.from(`${b}\n`, 'utf8'))
  return blocks.length === 0 ? [] : [Buffer.concat(blocks)]
}
