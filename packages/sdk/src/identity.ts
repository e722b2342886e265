import 'reflect-metadata'
import { webcrypto, X509Certificate, createHash, createPrivateKey } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import * as x509 from '@peculiar/x509'
import { StoqCertificatePinError, StoqInvalidArgumentError } from '@stoq/transport-core'
import { checkOptions, optionKeys } from '@stoq/interface'
import { createWebTransportCertificate, MAX_WEBTRANSPORT_CERT_DAYS } from '@stoq/webtransport'

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

/** Lifetime of a generated identity: long enough to be left alone, short enough to rotate. */
export const DEFAULT_IDENTITY_VALIDITY_DAYS = 90
/** A generated identity is replaced when it has fewer days than this left. */
export const DEFAULT_IDENTITY_RENEW_BEFORE_DAYS = 14

export interface AppIdentity {
  /** PEM certificate (self-signed, ECDSA P-256). */
  cert: string
  /** PEM private key (PKCS#8). */
  key: string
  /** SHA-256 of the certificate's DER, lowercase hex: what clients pin. */
  fingerprint: string
  notAfter: Date
  /** Where it is stored. */
  dir: string
  /** True when this call created (or rotated) it. */
  created: boolean
}

export interface IdentityOptions {
  /** Directory for this app's files. Default `$XDG_CONFIG_HOME/stoq/<app>` (or `~/.config/stoq/<app>`). */
  dir: string
  validityDays: number
  renewBeforeDays: number
  /** Extra DNS names in the certificate (localhost is always there). */
  names: string[]
}

const DAY = 86_400_000

const APP_NAME = /^[A-Za-z0-9._-]{1,64}$/

/** An app name is one path component: letters, digits, ".", "_", "-" (not "." or ".."). */
function checkAppName(appName: unknown): string {
  if (typeof appName !== 'string' || !APP_NAME.test(appName) || appName === '.' || appName === '..') {
    throw new StoqInvalidArgumentError('appName', 'expected 1-64 characters of letters, digits, ".", "_" or "-"')
  }
  return appName
}

/** Validates identity options (typed errors), filling in the defaults except `dir`. */
export function resolveIdentityOptions(options: unknown): Omit<IdentityOptions, 'dir'> & { dir: string | undefined } {
  const o = checkOptions(
    options,
    optionKeys<IdentityOptions>({ dir: true, validityDays: true, renewBeforeDays: true, names: true }),
    'identity',
  ) as Partial<IdentityOptions>
  const validityDays = o.validityDays ?? DEFAULT_IDENTITY_VALIDITY_DAYS
  const renewBeforeDays = o.renewBeforeDays ?? DEFAULT_IDENTITY_RENEW_BEFORE_DAYS
  if (typeof validityDays !== 'number' || !Number.isInteger(validityDays) || validityDays < 1 || validityDays > 3650) {
    throw new StoqInvalidArgumentError('validityDays', 'expected an integer from 1 to 3650')
  }
  if (typeof renewBeforeDays !== 'number' || !Number.isInteger(renewBeforeDays) || renewBeforeDays < 0 || renewBeforeDays >= validityDays) {
    throw new StoqInvalidArgumentError('renewBeforeDays', 'expected an integer from 0 to validityDays - 1')
  }
  if (o.dir !== undefined && (typeof o.dir !== 'string' || o.dir.length === 0)) {
    throw new StoqInvalidArgumentError('identity.dir', 'expected a directory path')
  }
  const names = o.names ?? []
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string' && n.length > 0 && n.length <= 253)) {
    throw new StoqInvalidArgumentError('identity.names', 'expected an array of DNS names')
  }
  return { dir: o.dir, validityDays, renewBeforeDays, names: [...names] }
}

/** The per-app config directory (XDG on Linux). */
export function appConfigDir(appName: string): string {
  checkAppName(appName)
  const base = process.env.XDG_CONFIG_HOME && path.isAbsolute(process.env.XDG_CONFIG_HOME) ? process.env.XDG_CONFIG_HOME : path.join(os.homedir(), '.config')
  return path.join(base, 'stoq', appName)
}

function fingerprintOf(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex')
}

/**
 * Load this app's identity, or create it on first use: an ECDSA P-256
 * self-signed certificate for `localhost` and the given names, stored with the
 * key readable by the owner only (0600). An identity close to expiry is rotated.
 */
export async function loadOrCreateIdentity(appName: string, options: Partial<IdentityOptions> = {}): Promise<AppIdentity> {
  checkAppName(appName)
  const { validityDays, renewBeforeDays, names: extraNames, dir: givenDir } = resolveIdentityOptions(options)
  const dir = givenDir ?? appConfigDir(appName)
  const certFile = path.join(dir, 'identity-cert.pem')
  const keyFile = path.join(dir, 'identity-key.pem')
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) {
    const cert = fs.readFileSync(certFile, 'utf8')
    const key = fs.readFileSync(keyFile, 'utf8')
    let notAfter: Date
    try {
      notAfter = new Date(new X509Certificate(cert).validTo)
    } catch (err) {
      throw new StoqInvalidArgumentError('identity', `${certFile} is not a readable certificate: ${(err as Error).message}`)
    }
    if (notAfter.getTime() - Date.now() > renewBeforeDays * DAY) {
      return { cert, key, fingerprint: fingerprintOf(cert), notAfter, dir, created: false }
    }
  }
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair
  const notBefore = new Date(Date.now() - 60_000)
  const notAfter = new Date(Date.now() + validityDays * DAY)
  const names = ['localhost', ...extraNames]
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8)))
      .toString('hex')
      .replace(/^[89a-f]/, '1'),
    name: `CN=${appName}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...names.map((value) => ({ type: 'dns' as const, value })),
        { type: 'ip', value: '127.0.0.1' },
        { type: 'ip', value: '::1' },
      ]),
    ],
  })
  const cert = certificate.toString('pem')
  const key = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY')
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  // Write the key first with owner-only permissions, then the certificate; a
  // rename makes each file appear whole.
  writeAtomic(keyFile, key, 0o600)
  writeAtomic(certFile, cert, 0o644)
  return { cert, key, fingerprint: fingerprintOf(cert), notAfter, dir, created: true }
}

/** Validity of a generated browser certificate, in days (Chromium accepts at most 14 for `serverCertificateHashes`). */
export const DEFAULT_BROWSER_CERT_VALIDITY_DAYS = 13
/** A stored browser certificate with fewer days than this left is replaced (checked whenever it is loaded). */
export const DEFAULT_BROWSER_CERT_RENEW_BEFORE_DAYS = 2

export interface BrowserCertificateOptions {
  /** Directory for the files. Default: the app's config dir, as for the identity. */
  dir: string
  /** Validity of a new certificate in days, 1..14. Default 13. */
  validityDays: number
  /** Rotate when fewer days than this are left, 0..validityDays-1. Default 2. */
  renewBeforeDays: number
  /** DNS names (localhost is always there). */
  names: string[]
  /** IP addresses in the certificate (default 127.0.0.1 and ::1). */
  ips: string[]
}

/**
 * The short-lived certificate browsers accept through WebTransport's
 * `serverCertificateHashes` (self-signed ECDSA P-256, at most 14 days).
 */
export interface BrowserCertificate {
  /** PEM certificate. */
  cert: string
  /** PEM private key (PKCS#8), stored with mode 0600. */
  key: string
  /** SHA-256 of the certificate DER, lowercase hex (also what a native STOQ client `pin`s). */
  sha256Hex: string
  /** The same hash as bytes. */
  sha256: Uint8Array
  /** Ready for `new WebTransport(url, { serverCertificateHashes })` in a browser, or `connectWebTransport`. */
  serverCertificateHashes: Array<{ algorithm: 'sha-256'; value: Uint8Array }>
  notBefore: Date
  notAfter: Date
  /** Where it is stored. */
  dir: string
  /** True when this call created (or rotated) it. */
  created: boolean
}

/** Validates browser certificate options (typed errors), filling in the defaults except `dir`. */
export function resolveBrowserCertificateOptions(options: unknown): Omit<BrowserCertificateOptions, 'dir'> & { dir: string | undefined } {
  const o = checkOptions(
    options,
    optionKeys<BrowserCertificateOptions>({ dir: true, validityDays: true, renewBeforeDays: true, names: true, ips: true }),
    'browserCertificate',
  ) as Partial<BrowserCertificateOptions>
  const validityDays = o.validityDays ?? DEFAULT_BROWSER_CERT_VALIDITY_DAYS
  const renewBeforeDays = o.renewBeforeDays ?? DEFAULT_BROWSER_CERT_RENEW_BEFORE_DAYS
  if (typeof validityDays !== 'number' || !Number.isInteger(validityDays) || validityDays < 1 || validityDays > MAX_WEBTRANSPORT_CERT_DAYS) {
    throw new StoqInvalidArgumentError(
      'browserCertificate.validityDays',
      `expected an integer from 1 to ${MAX_WEBTRANSPORT_CERT_DAYS} (Chromium's limit for serverCertificateHashes), got ${String(validityDays)}`,
    )
  }
  if (typeof renewBeforeDays !== 'number' || !Number.isInteger(renewBeforeDays) || renewBeforeDays < 0 || renewBeforeDays >= validityDays) {
    throw new StoqInvalidArgumentError('browserCertificate.renewBeforeDays', `expected an integer from 0 to validityDays - 1, got ${String(renewBeforeDays)}`)
  }
  if (o.dir !== undefined && (typeof o.dir !== 'string' || o.dir.length === 0)) {
    throw new StoqInvalidArgumentError('browserCertificate.dir', 'expected a directory path')
  }
  const names = o.names ?? []
  const ips = o.ips ?? ['127.0.0.1', '::1']
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string' && n.length > 0)) {
    throw new StoqInvalidArgumentError('browserCertificate.names', 'expected an array of DNS names')
  }
  if (!Array.isArray(ips) || !ips.every((n) => typeof n === 'string' && n.length > 0)) {
    throw new StoqInvalidArgumentError('browserCertificate.ips', 'expected an array of IP addresses')
  }
  return { dir: o.dir, validityDays, renewBeforeDays, names: [...names], ips: [...ips] }
}

/** A stored pair browsers would accept: parsable, EC P-256, at most 14 days, key matching; null otherwise. */
function readBrowserCertificate(cert: string, key: string): { x: X509Certificate; notBefore: Date; notAfter: Date } | null {
  try {
    const x = new X509Certificate(cert)
    const notBefore = new Date(x.validFrom)
    const notAfter = new Date(x.validTo)
    if (x.publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') return null
    if (notAfter.getTime() - notBefore.getTime() > MAX_WEBTRANSPORT_CERT_DAYS * DAY) return null
    if (!x.checkPrivateKey(createPrivateKey(key))) return null
    return { x, notBefore, notAfter }
  } catch {
    return null
  }
}

/**
 * Load this app's browser (WebTransport) certificate, or create it: a
 * self-signed ECDSA P-256 certificate valid for `validityDays` (default 13,
 * at most 14 — Chromium's rule for `serverCertificateHashes`), stored next to
 * the app identity as `webtransport-cert.pem` / `webtransport-key.pem` (key
 * 0600). It is rotated — a new key and certificate, hence a new hash — when
 * fewer than `renewBeforeDays` (default 2) days are left, or when the stored
 * pair is unusable (unreadable, not P-256, longer than 14 days, key not
 * matching). Rotation happens when this is called (so at `listen` time): a
 * process serving longer than `validityDays - renewBeforeDays` must listen
 * again to pick up the new certificate.
 */
export async function loadOrCreateBrowserCertificate(appName: string, options: Partial<BrowserCertificateOptions> = {}): Promise<BrowserCertificate> {
  checkAppName(appName)
  const o = resolveBrowserCertificateOptions(options)
  const dir = o.dir ?? appConfigDir(appName)
  const certFile = path.join(dir, 'webtransport-cert.pem')
  const keyFile = path.join(dir, 'webtransport-key.pem')
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) {
    const cert = fs.readFileSync(certFile, 'utf8')
    const key = fs.readFileSync(keyFile, 'utf8')
    const stored = readBrowserCertificate(cert, key)
    if (stored !== null && stored.notAfter.getTime() - Date.now() > o.renewBeforeDays * DAY) {
      const sha256 = new Uint8Array(createHash('sha256').update(stored.x.raw).digest())
      return {
        cert,
        key,
        sha256Hex: Buffer.from(sha256).toString('hex'),
        sha256,
        serverCertificateHashes: [{ algorithm: 'sha-256', value: sha256 }],
        notBefore: stored.notBefore,
        notAfter: stored.notAfter,
        dir,
        created: false,
      }
    }
  }
  const fresh = await createWebTransportCertificate({
    days: o.validityDays,
    names: ['localhost', ...o.names.filter((n) => n !== 'localhost')],
    ips: o.ips,
    commonName: appName,
  })
  // The dates as the certificate carries them (whole seconds), as a later load reports them.
  const x = new X509Certificate(fresh.cert)
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  // Key first (owner-only), then the certificate; a crash in between leaves a
  // pair whose key does not match, which the next load replaces.
  writeAtomic(keyFile, fresh.key, 0o600)
  writeAtomic(certFile, fresh.cert, 0o644)
  return {
    cert: fresh.cert,
    key: fresh.key,
    sha256Hex: fresh.sha256Hex,
    sha256: fresh.sha256,
    serverCertificateHashes: fresh.serverCertificateHashes,
    notBefore: new Date(x.validFrom),
    notAfter: new Date(x.validTo),
    dir,
    created: true,
  }
}

function writeAtomic(file: string, content: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, content, { mode })
  fs.chmodSync(tmp, mode)
  fs.renameSync(tmp, file)
}

/**
 * Trust on first use: the first certificate seen for `host:port` is recorded
 * in the app's known-hosts file; later connections must present the same one.
 */
export class KnownHosts {
  readonly file: string

  constructor(file: string) {
    if (typeof file !== 'string' || file.length === 0) throw new StoqInvalidArgumentError('file', 'expected the path of the known-hosts file')
    this.file = file
  }

  private read(): Record<string, string> {
    if (!fs.existsSync(this.file)) return {}
    try {
      const data = JSON.parse(fs.readFileSync(this.file, 'utf8')) as unknown
      return typeof data === 'object' && data !== null ? (data as Record<string, string>) : {}
    } catch (err) {
      throw new StoqInvalidArgumentError('knownHosts', `${this.file} is not valid JSON: ${(err as Error).message}`)
    }
  }

  /** The recorded fingerprint for a peer, if any. */
  get(peer: string): string | undefined {
    if (typeof peer !== 'string') throw new StoqInvalidArgumentError('peer', 'expected "host:port"')
    const all = this.read()
    const known = Object.hasOwn(all, peer) ? all[peer] : undefined
    return typeof known === 'string' ? known : undefined
  }

  /** Record a first-seen fingerprint; a different one already recorded fails loudly. */
  remember(peer: string, fingerprint: string): void {
    if (typeof peer !== 'string' || peer.length === 0) throw new StoqInvalidArgumentError('peer', 'expected "host:port"')
    if (typeof fingerprint !== 'string' || !/^[0-9a-f]{64}$/.test(fingerprint)) {
      throw new StoqInvalidArgumentError('fingerprint', 'expected a SHA-256 fingerprint as 64 lowercase hex digits')
    }
    const all = this.read()
    const known = Object.hasOwn(all, peer) ? all[peer] : undefined
    if (known !== undefined && known !== fingerprint) throw new StoqCertificatePinError([known], fingerprint)
    if (known === fingerprint) return
    all[peer] = fingerprint
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 })
    writeAtomic(this.file, `${JSON.stringify(all, null, 2)}\n`, 0o600)
  }
}
