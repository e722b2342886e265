/**
 * Emulated WAN for tests: two network namespaces joined by a veth pair, shaped with
 * `tc netem` on both ends. Needs root and iproute2 (installed with apt when missing).
 *
 * Names carry a per-run prefix `stoqwan-<pid36>-<rand>` so concurrent runs (the quinn
 * and quiche projects may run this file at the same time) never touch each other, and
 * leftovers of crashed runs (their pid is gone) are removed before a new run starts.
 *
 * If the kernel refuses a namespace, a veth or netem, setup throws with the command's
 * stderr: the suite fails, it never skips.
 *
 * Development escape hatch, off by default: STOQ_WAN_ALLOW_NO_NETEM=1 replaces netem by
 * tbf (rate, MTU) plus nftables (random loss, blackouts) when the kernel has no netem.
 * There is then NO delay and NO reordering, and the summary says so.
 */
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'

export const NS_PREFIX = 'stoqwan-'

export interface LinkShape {
  /** One-way delay per direction, ms (RTT is twice this). */
  delayMs: number
  /** Random loss per direction, percent. */
  lossPct: number
  /** Percent of packets sent without the delay (so they overtake others), and correlation. */
  reorderPct: number
  reorderCorrPct: number
  /** Rate limit per direction, Mbit/s. */
  rateMbit: number
  mtu: number
  /** Packets the netem queue holds. */
  limit: number
}

export const DEFAULT_SHAPE: LinkShape = {
  delayMs: 25,
  lossPct: 1,
  reorderPct: 1,
  reorderCorrPct: 50,
  rateMbit: 100,
  mtu: 1500,
  limit: 1000,
}

export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly status: number | null,
    readonly stderr: string,
  ) {
    super(`\`${argv.join(' ')}\` failed (exit ${status}): ${stderr.trim() || '(no stderr)'}`)
  }
}

/** Run a command; throw CommandError carrying its stderr when it fails. */
export function run(argv: string[], input?: string): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input, timeout: 30_000 })
  if (r.error) throw new CommandError(argv, null, String(r.error.message))
  if (r.status !== 0) throw new CommandError(argv, r.status, r.stderr ?? '')
  return r.stdout
}

function tryRun(argv: string[]): boolean {
  try {
    run(argv)
    return true
  } catch {
    return false
  }
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0
}

/** Install a Debian package when a command is missing (apt-get update retried once). */
export function ensureCommand(cmd: string, pkg: string): void {
  if (have(cmd)) return
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  let lastErr = ''
  for (let attempt = 0; attempt < 2; attempt++) {
    const upd = spawnSync('apt-get', ['update'], { encoding: 'utf8', env, timeout: 180_000 })
    if (upd.status !== 0) {
      lastErr = upd.stderr
      continue
    }
    const inst = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], { encoding: 'utf8', env, timeout: 300_000 })
    if (inst.status === 0 && have(cmd)) return
    lastErr = inst.stderr
  }
  throw new Error(`${cmd} is missing and installing ${pkg} with apt failed: ${lastErr.trim()}`)
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function listNamespaces(): string[] {
  return run(['ip', 'netns', 'list'])
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean)
}

/** Remove namespaces (and stray root-namespace veths) left by runs whose process is gone. */
export function cleanupLeftovers(): string[] {
  const removed: string[] = []
  for (const ns of listNamespaces()) {
    if (!ns.startsWith(NS_PREFIX)) continue
    const pid = parseInt(ns.slice(NS_PREFIX.length).split('-')[0] ?? '', 36)
    if (Number.isFinite(pid) && pid > 0 && pidAlive(pid)) continue
    // Peers of the crashed run may still live in it; they belong to that run's harness.
    for (const p of spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout?.split(/\s+/) ?? []) {
      const n = Number(p)
      if (n > 0) {
        try {
          process.kill(n, 'SIGKILL')
        } catch {
          // gone
        }
      }
    }
    if (tryRun(['ip', 'netns', 'del', ns])) removed.push(ns)
  }
  // Veths are created straight inside the namespaces; these only exist after a crash
  // between `ip link add` and the move (older iproute2 paths).
  const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout ?? ''
  for (const m of links.matchAll(/^\d+:\s+(sw-[0-9a-z]+-[0-9a-z]+[ab])[@:]/gm)) {
    const name = m[1]!
    const pid = parseInt(name.split('-')[1] ?? '', 36)
    if (Number.isFinite(pid) && pid > 0 && pidAlive(pid)) continue
    if (tryRun(['ip', 'link', 'del', name])) removed.push(name)
  }
  return removed
}

export interface Wan {
  nsA: string
  nsB: string
  devA: string
  devB: string
  v4: { a: string; b: string }
  v6: { a: string; b: string }
  shape: LinkShape
  /** 'netem', or 'tbf+nft' in the development fallback (no delay, no reordering). */
  shaper: 'netem' | 'tbf+nft'
  /** `tc qdisc show` of both ends, for the log. */
  describe(): string
  /** Drop everything in both directions (true) or restore the shape (false). */
  blackout(on: boolean): void
  destroy(): void
}

function netemArgs(s: LinkShape, lossPct: number): string[] {
  return [
    'netem',
    'limit', String(s.limit),
    'delay', `${s.delayMs}ms`,
    'reorder', `${s.reorderPct}%`, `${s.reorderCorrPct}%`,
    'loss', `${lossPct}%`,
    'rate', `${s.rateMbit}mbit`,
  ]
}

/**
 * Create the two namespaces, the veth pair and the shaping. On any failure the partial
 * setup is removed and the error (with the failing command's stderr) is thrown.
 */
export function createWan(shape: LinkShape = DEFAULT_SHAPE): Wan {
  ensureCommand('ip', 'iproute2')
  ensureCommand('tc', 'iproute2')
  cleanupLeftovers()

  const tag = `${process.pid.toString(36)}-${crypto.randomBytes(2).toString('hex')}`
  const nsA = `${NS_PREFIX}${tag}-a`
  const nsB = `${NS_PREFIX}${tag}-b`
  const devA = `sw-${tag}a`
  const devB = `sw-${tag}b`
  // 10.x and fd00::/8 (ULA) addresses on the namespaces' own link only.
  const octet = 1 + crypto.randomInt(250)
  const v4 = { a: `10.${octet}.0.1`, b: `10.${octet}.0.2` }
  const v6 = { a: `fd00:5354:4f51:${octet.toString(16)}::1`, b: `fd00:5354:4f51:${octet.toString(16)}::2` }
  const inA = (...argv: string[]): string[] => ['ip', 'netns', 'exec', nsA, ...argv]
  const inB = (...argv: string[]): string[] => ['ip', 'netns', 'exec', nsB, ...argv]
  let shaper: Wan['shaper'] = 'netem'
  let created = false

  const destroy = (): void => {
    for (const ns of [nsA, nsB]) {
      for (const p of spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout?.split(/\s+/) ?? []) {
        const n = Number(p)
        if (n > 0) {
          try {
            process.kill(n, 'SIGKILL')
          } catch {
            // gone
          }
        }
      }
      tryRun(['ip', 'netns', 'del', ns])
    }
    tryRun(['ip', 'link', 'del', devA])
  }

  try {
    run(['ip', 'netns', 'add', nsA])
    created = true
    run(['ip', 'netns', 'add', nsB])
    run(['ip', 'link', 'add', devA, 'netns', nsA, 'mtu', String(shape.mtu), 'type', 'veth', 'peer', 'name', devB, 'netns', nsB, 'mtu', String(shape.mtu)])
    for (const [ns, dev, a4, a6] of [
      [nsA, devA, v4.a, v6.a],
      [nsB, devB, v4.b, v6.b],
    ] as const) {
      run(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
      run(['ip', '-n', ns, 'addr', 'add', `${a4}/24`, 'dev', dev])
      run(['ip', '-n', ns, '-6', 'addr', 'add', `${a6}/64`, 'dev', dev, 'nodad'])
      run(['ip', '-n', ns, 'link', 'set', dev, 'up'])
    }
    const shapeArgs = (lossPct: number): string[] => netemArgs(shape, lossPct)
    try {
      run(inA('tc', 'qdisc', 'add', 'dev', devA, 'root', ...shapeArgs(shape.lossPct)))
      run(inB('tc', 'qdisc', 'add', 'dev', devB, 'root', ...shapeArgs(shape.lossPct)))
    } catch (err) {
      if (process.env.STOQ_WAN_ALLOW_NO_NETEM !== '1') throw err
      shaper = 'tbf+nft'
      ensureCommand('nft', 'nftables')
      for (const [ns, dev] of [
        [nsA, devA],
        [nsB, devB],
      ] as const) {
        tryRun(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', dev, 'root'])
        run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${shape.rateMbit}mbit`, 'burst', '64kb', 'latency', '50ms'])
        // Loss on the way in, per direction, like netem's loss on the way out of the peer.
        run(['ip', 'netns', 'exec', ns, 'nft', '-f', '-'], `table inet stoqwan {
  chain input { type filter hook input priority 0; policy accept; meta l4proto udp numgen random mod 10000 < ${Math.round(shape.lossPct * 100)} drop; }
}
`)
      }
    }
    // The link must carry traffic before anyone relies on it.
    run(inA('ip', 'link', 'show', devA))
  } catch (err) {
    if (created) destroy()
    throw err
  }

  return {
    nsA,
    nsB,
    devA,
    devB,
    v4,
    v6,
    shape,
    shaper,
    describe() {
      return [inA('tc', 'qdisc', 'show', 'dev', devA), inB('tc', 'qdisc', 'show', 'dev', devB)]
        .map((argv) => spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' }).stdout.trim())
        .join(' | ')
    },
    blackout(on: boolean) {
      if (shaper === 'netem') {
        run(inA('tc', 'qdisc', 'change', 'dev', devA, 'root', ...netemArgs(shape, on ? 100 : shape.lossPct)))
        run(inB('tc', 'qdisc', 'change', 'dev', devB, 'root', ...netemArgs(shape, on ? 100 : shape.lossPct)))
        return
      }
      for (const ns of [nsA, nsB]) {
        if (on) run(['ip', 'netns', 'exec', ns, 'nft', '-f', '-'], 'table inet stoqwanblackout {\n  chain input { type filter hook input priority -10; policy drop; }\n}\n')
        else run(['ip', 'netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', 'stoqwanblackout'])
      }
    },
    destroy,
  }
}

