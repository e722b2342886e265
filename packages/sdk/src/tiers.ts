import { DEFAULT_INITIAL_MAX_DATA, StoqInvalidArgumentError, type TransportParameters } from '@stoq/transport-core'

/**
 * Network tiers: a measured path speed maps to a tier, and a tier to a tuning profile
 * (flow-control windows, batch sizes, buffer pool size, socket buffers).
 *
 * Thresholds (measured throughput): home >= 100 Mbit/s, standard >= 1 Gbit/s,
 * performance >= 10 Gbit/s, enterprise >= 25 Gbit/s. Below 100 Mbit/s the path is
 * `constrained`.
 */
export type NetworkTier = 'constrained' | 'home' | 'standard' | 'performance' | 'enterprise'

export const NETWORK_TIERS: readonly NetworkTier[] = ['constrained', 'home', 'standard', 'performance', 'enterprise']

/** Lowest throughput (Gbit/s) of each tier. */
export const TIER_THRESHOLDS_GBPS: Readonly<Record<NetworkTier, number>> = Object.freeze({
  constrained: 0,
  home: 0.1,
  standard: 1,
  performance: 10,
  enterprise: 25,
})

/** What a tier changes. Applied to endpoints created after the tier is set. */
export interface TierProfile {
  tier: NetworkTier
  /** Rate the profile is sized for (Gbit/s) and the round-trip time assumed (ms). */
  sizedForGbps: number
  assumedRttMs: number
  transport: Pick<TransportParameters, 'initialMaxData' | 'initialMaxStreamData' | 'maxStreamWindow' | 'maxConnectionWindow'>
  /** Packets per engine batch (and per GSO send at most). */
  maxPacketsPerBatch: number
  /** Buffer pool ceiling (buffers of 64 KiB). */
  poolMaxBuffers: number
  /** Requested kernel socket buffers. */
  socketBufferSize: number
}

/** The tier of a measured throughput in Gbit/s. */
export function classifyTier(gbps: number): NetworkTier {
  if (typeof gbps !== 'number' || !Number.isFinite(gbps) || gbps < 0) {
    throw new StoqInvalidArgumentError('gbps', `expected a finite throughput >= 0 in Gbit/s, got ${String(gbps)}`)
  }
  let tier: NetworkTier = 'constrained'
  for (const t of NETWORK_TIERS) if (gbps >= TIER_THRESHOLDS_GBPS[t]) tier = t
  return tier
}

const MIB = 1024 * 1024

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, n))
}

/**
 * The tuning profile of a tier. The largest windows hold twice the bandwidth-delay product of the
 * tier's top rate (the next tier's threshold, or 40 Gbit/s for enterprise) at
 * `rttMs` (default 50 ms, a continental path), within 1 MiB .. 256 MiB (the largest window the
 * transport accepts); pools and batches
 * grow with the rate.
 */
export function tierProfile(tier: NetworkTier, rttMs = 50): TierProfile {
  if (!NETWORK_TIERS.includes(tier)) throw new StoqInvalidArgumentError('tier', `expected one of ${NETWORK_TIERS.join(', ')}, got ${String(tier)}`)
  if (typeof rttMs !== 'number' || !Number.isFinite(rttMs) || rttMs <= 0 || rttMs > 10_000) {
    throw new StoqInvalidArgumentError('rttMs', `expected a round-trip time in ms from 0 to 10000, got ${String(rttMs)}`)
  }
  const i = NETWORK_TIERS.indexOf(tier)
  const top = i + 1 < NETWORK_TIERS.length ? TIER_THRESHOLDS_GBPS[NETWORK_TIERS[i + 1]!] : 40
  const bdp = (top * 1e9 * (rttMs / 1000)) / 8
  const conn = Math.round(clamp(2 * bdp, 1 * MIB, 256 * MIB))
  const stream = Math.round(clamp(conn / 4, 256 * 1024, 256 * MIB))
  return {
    tier,
    sizedForGbps: top,
    assumedRttMs: rttMs,
    // The tier sizes the largest connection window; connections start at the default window and
    // grow to it while the application reads fast (what each one commits of the endpoint's
    // receive budget up front is its starting window).
    transport: { initialMaxData: Math.min(conn, DEFAULT_INITIAL_MAX_DATA), maxConnectionWindow: conn, initialMaxStreamData: stream, maxStreamWindow: stream },
    maxPacketsPerBatch: [8, 16, 32, 64, 64][i]!,
    poolMaxBuffers: [64, 256, 1024, 4096, 8192][i]!,
    socketBufferSize: [256 * 1024, 1 * MIB, 4 * MIB, 16 * MIB, 32 * MIB][i]!,
  }
}
