import 'reflect-metadata'
import { isIP } from 'node:net'
import { isOptions, show } from './args.js'
import { createHash, webcrypto } from 'node:crypto'
import * as x509 from '@peculiar/x509'
import { StoqInvalidArgumentError } from '@stoq/interface'

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

const DAY = 86_400_000
/** Chromium refuses `serverCertificateHashes` certificates valid for longer than 14 days. */
export const MAX_WEBTRANSPORT_CERT_DAYS = 14

export interface WebTransportCertificateOptions {
  /** Validity in days, 1..14 (default 13: Chromium's limit is 14). */
  days?: number
  /** DNS names (default `['localhost']`). */
  names?: string[]
  /** IP addresses in the subjectAltName (default `['127.0.0.1', '::1']`). */
  ips?: string[]
  /** Subject common name (default `stoq-webtransport`). */
  commonName?: string
}

export interface WebTransportCertificate {
  /** PEM certificate (self-signed ECDSA P-256). */
  cert: string
  /** PEM private key (PKCS#8). */
  key: string
  /** SHA-256 of the certificate DER: what `serverCertificateHashes` carries. */
  sha256: Uint8Array
  /** The same hash as lowercase hex (also usable as a STOQ `pin`). */
  sha256Hex: string
  notBefore: Date
  notAfter: Date
  /** Ready for `new WebTransport(url, { serverCertificateHashes })` and `connectWebTransport`. */
  serverCertificateHashes: Array<{ algorithm: 'sha-256'; value: Uint8Array }>
}

/**
 * A short-lived self-signed ECDSA P-256 certificate that Chromium accepts
 * through `serverCertificateHashes` (no CA, at most 14 days, not RSA).
 */
export async function createWebTransportCertificate(options: WebTransportCertificateOptions = {}): Promise<WebTransportCertificate> {
  if (!isOptions(options)) throw new StoqInvalidArgumentError('options', 'expected an object')
  const days = options.days ?? 13
  if (typeof days !== 'number' || !Number.isInteger(days) || days < 1 || days > MAX_WEBTRANSPORT_CERT_DAYS) {
    throw new StoqInvalidArgumentError('days', `expected an integer from 1 to ${MAX_WEBTRANSPORT_CERT_DAYS} (Chromium's limit), got ${show(days)}`)
  }
  const names = options.names ?? ['localhost']
  const ips = options.ips ?? ['127.0.0.1', '::1']
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string' && /^[A-Za-z0-9*_.-]{1,253}$/.test(n))) {
    throw new StoqInvalidArgumentError('names', 'expected an array of DNS names')
  }
  if (!Array.isArray(ips) || !ips.every((n) => typeof n === 'string' && isIP(n) !== 0)) {
    throw new StoqInvalidArgumentError('ips', 'expected an array of IP addresses')
  }
  const commonName = options.commonName ?? 'stoq-webtransport'
  if (typeof commonName !== 'string' || !/^[\w .-]{1,64}$/.test(commonName)) {
    throw new StoqInvalidArgumentError('commonName', 'expected 1 to 64 letters, digits, spaces, dots, dashes or underscores')
  }
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair
  // Backdated a minute for clock skew; the whole span stays within `days`.
  const now = Date.now()
  const notBefore = new Date(now - 60_000)
  const notAfter = new Date(now - 60_000 + days * DAY)
  const serial = Buffer.from(webcrypto.getRandomValues(new Uint8Array(8)))
    .toString('hex')
    .replace(/^[89a-f]/, '1')
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial,
    name: `CN=${commonName}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...names.map((value) => ({ type: 'dns' as const, value })),
        ...ips.map((value) => ({ type: 'ip' as const, value })),
      ]),
    ],
  })
  const cert = certificate.toString('pem')
  const key = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY')
  const digest = createHash('sha256').update(new Uint8Array(certificate.rawData)).digest()
  const sha256 = new Uint8Array(digest)
  return {
    cert,
    key,
    sha256,
    sha256Hex: digest.toString('hex'),
    notBefore,
    notAfter,
    serverCertificateHashes: [{ algorithm: 'sha-256', value: sha256 }],
  }
}
