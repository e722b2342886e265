/**
 * Emulated WAN for tests. Needs root and iproute2 (installed with apt when missing).
 *
 * Two ways to shape the link, chosen automatically:
 *  - netem (the kernel has sch_netem): two network namespaces joined by a veth pair, shaped
 *    with `tc netem` on both ends (delay, loss, reordering, rate; MTU on the veths).
 *  - userspace relay (the kernel refuses netem, e.g. "Specified qdisc kind is unknown"):
 *    three namespaces, client ⟷ veth ⟷ relay ⟷ veth ⟷ server, with addresses only on these
 *    two links and no IP forwarding. test/wan/relay.mjs runs in the middle namespace: the
 *    client dials the relay's address on its own link (`route()`), the relay forwards UDP to
 *    the server and back and applies, per direction, delay, random loss, reordering, a
 *    token-bucket rate limit with a bounded drop-tail queue, the MTU, and blackouts.
 * STOQ_WAN_SHAPER=relay forces the relay even where netem exists (to compare the two).
 *
 * Names carry a per-run prefix `stoqwan-<pid36>-<rand>` so concurrent runs (the quinn
 * and quiche projects may run this file at the same time) never touch each other, and
 * leftovers of crashed runs (their pid is gone) are removed before a new run starts.
 *
 * If the kernel refuses a namespace or a veth, or the relay does not start, setup throws
 * with the command's stderr: the suite fails, it never skips.
 */
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { PeerProcess } from './peer-process.js'

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
  /** Packets the netem queue holds; for the relay, packets its bottleneck queue holds. */
  limit: number
  /** Relay only: extra delay (min, max ms) of the reordered share, so later packets overtake it. */
  reorderExtraMs: [number, number]
  /** Relay only: token bucket depth, bytes. */
  burstBytes: number
}

export const DEFAULT_SHAPE: LinkShape = {
  delayMs: 25,
  lossPct: 1,
  reorderPct: 1,
  reorderCorrPct: 50,
  rateMbit: 100,
  mtu: 1500,
  limit: 1000,
  reorderExtraMs: [1, 4],
  burstBytes: 15_000,
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
  for (const m of links.matchAll(/^\d+:\s+(sw-[0-9a-z]+-[0-9a-z]+[abpq])[@:]/gm)) {
    const name = m[1]!
    const pid = parseInt(name.split('-')[1] ?? '', 36)
    if (Number.isFinite(pid) && pid > 0 && pidAlive(pid)) continue
    if (tryRun(['ip', 'link', 'del', name])) removed.push(name)
  }
  return removed
}

export interface Wan {
  /** Server namespace, client namespace, and (relay only) the relay's namespace. */
  nsA: string
  nsB: string
  nsR: string | null
  /** a: the server's addresses; b: the client's. Dial through `route()`. */
  v4: { a: string; b: string }
  v6: { a: string; b: string }
  shape: LinkShape
  shaper: 'netem' | 'relay'
  /** One line for the log: the qdiscs, or the relay's shape. */
  describe(): string
  /** Where the client dials to reach the server's host:port (the relay's side for the relay). */
  route(host: string, port: number): Promise<{ host: string; port: number }>
  /** Drop everything in both directions (true) or restore the shape (false). */
  blackout(on: boolean): Promise<void>
  /** The relay's counters and its measured delay accuracy (null with netem). */
  relayStats(): Promise<RelayStats | null>
  destroy(): void
}

export interface LatenessSummary {
  samples: number
  meanMs: number
  sdMs: number
  p50Ms: number
  p99Ms: number
  p999Ms: number
  maxMs: number
}

export interface RelayDirectionStats {
  in: number
  out: number
  bytesOut: number
  lost: number
  mtu: number
  queueFull: number
  blackout: number
  reordered: number
  sendErrors: number
  maxQueue: number
  maxHeap: number
  inHeap: number
  /** Actual send time minus due time: the relay's own delay error. */
  lateness: LatenessSummary
  bottleneckQueueing: LatenessSummary
}

export interface RelayStats {
  'client→server': RelayDirectionStats
  'server→client': RelayDirectionStats
  eventLoopLag: LatenessSummary
  [k: string]: unknown
}

export const RELAY_SCRIPT = fileURLToPath(new URL('./relay.mjs', import.meta.url))

function netemArgs(s: LinkShape, lossPct: number): string[] {
  return [
    'netem',
    'limit',
    String(s.limit),
    'delay',
    `${s.delayMs}ms`,
    'reorder',
    `${s.reorderPct}%`,
    `${s.reorderCorrPct}%`,
    'loss',
    `${lossPct}%`,
    'rate',
    `${s.rateMbit}mbit`,
  ]
}

function killNamespacePids(ns: string): void {
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
}

/** Does this kernel take a netem qdisc? Tried on the loopback of a namespace of ours. */
function netemWorks(ns: string): { ok: boolean; why: string } {
  try {
    run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'])
    tryRun(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', 'lo', 'root'])
    return { ok: true, why: '' }
  } catch (err) {
    return { ok: false, why: err instanceof CommandError ? err.stderr.trim() : String(err) }
  }
}

/**
 * Create the namespaces, links and shaping. On any failure the partial setup is removed
 * and the error (with the failing command's stderr) is thrown.
 */
export async function createWan(shape: LinkShape = DEFAULT_SHAPE): Promise<Wan> {
  ensureCommand('ip', 'iproute2')
  ensureCommand('tc', 'iproute2')
  cleanupLeftovers()

  const tag = `${process.pid.toString(36)}-${crypto.randomBytes(2).toString('hex')}`
  const nsA = `${NS_PREFIX}${tag}-a`
  const nsB = `${NS_PREFIX}${tag}-b`
  const nsR = `${NS_PREFIX}${tag}-r`
  const devA = `sw-${tag}a` // server's end
  const devB = `sw-${tag}b` // client's end
  const devRA = `sw-${tag}p` // relay's end towards the server
  const devRB = `sw-${tag}q` // relay's end towards the client
  // 10.x and fd00::/8 (ULA) addresses on the namespaces' own links only.
  const octet = 1 + crypto.randomInt(250)
  const hex = octet.toString(16)
  const inNs = (ns: string, ...argv: string[]): string[] => ['ip', 'netns', 'exec', ns, ...argv]
  const made: string[] = []
  let relay: PeerProcess | null = null

  const destroy = (): void => {
    if (relay && !relay.child.killed) relay.child.kill('SIGKILL')
    for (const ns of made) {
      killNamespacePids(ns)
      tryRun(['ip', 'netns', 'del', ns])
    }
    for (const dev of [devA, devB]) tryRun(['ip', 'link', 'del', dev])
  }
  const addNs = (ns: string): void => {
    run(['ip', 'netns', 'add', ns])
    made.push(ns)
    run(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
  }
  const addr = (ns: string, dev: string, a4: string, a6: string): void => {
    run(['ip', '-n', ns, 'addr', 'add', `${a4}/24`, 'dev', dev])
    run(['ip', '-n', ns, '-6', 'addr', 'add', `${a6}/64`, 'dev', dev, 'nodad'])
    run(['ip', '-n', ns, 'link', 'set', dev, 'up'])
  }
  const veth = (ns1: string, d1: string, ns2: string, d2: string): void => {
    const mtu = String(shape.mtu)
    run(['ip', 'link', 'add', d1, 'netns', ns1, 'mtu', mtu, 'type', 'veth', 'peer', 'name', d2, 'netns', ns2, 'mtu', mtu])
  }

  try {
    addNs(nsA)
    addNs(nsB)
    const netem = netemWorks(nsA)
    const forced = process.env.STOQ_WAN_SHAPER
    if (forced && forced !== 'relay' && forced !== 'netem') throw new Error(`STOQ_WAN_SHAPER must be relay or netem, not ${forced}`)
    const useRelay = forced === 'relay' || (forced !== 'netem' && !netem.ok)

    if (!useRelay) {
      const v4 = { a: `10.${octet}.0.1`, b: `10.${octet}.0.2` }
      const v6 = { a: `fd00:5354:4f51:${hex}::1`, b: `fd00:5354:4f51:${hex}::2` }
      veth(nsA, devA, nsB, devB)
      addr(nsA, devA, v4.a, v6.a)
      addr(nsB, devB, v4.b, v6.b)
      const setNetem = (op: 'add' | 'change', lossPct: number): void => {
        run(inNs(nsA, 'tc', 'qdisc', op, 'dev', devA, 'root', ...netemArgs(shape, lossPct)))
        run(inNs(nsB, 'tc', 'qdisc', op, 'dev', devB, 'root', ...netemArgs(shape, lossPct)))
      }
      setNetem('add', shape.lossPct)
      return {
        nsA,
        nsB,
        nsR: null,
        v4,
        v6,
        shape,
        shaper: 'netem',
        describe() {
          return [inNs(nsA, 'tc', 'qdisc', 'show', 'dev', devA), inNs(nsB, 'tc', 'qdisc', 'show', 'dev', devB)]
            .map((argv) => spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' }).stdout.trim())
            .join(' | ')
        },
        async route(host, port) {
          return { host, port }
        },
        async blackout(on) {
          setNetem('change', on ? 100 : shape.lossPct)
        },
        async relayStats() {
          return null
        },
        destroy,
      }
    }

    // Userspace relay: client ⟷ relay ⟷ server, no IP forwarding anywhere.
    addNs(nsR)
    const linkA = { v4: { srv: `10.${octet}.1.1`, rel: `10.${octet}.1.2` }, v6: { srv: `fd00:5354:4f51:${hex}01::1`, rel: `fd00:5354:4f51:${hex}01::2` } }
    const linkB = { v4: { rel: `10.${octet}.2.1`, cli: `10.${octet}.2.2` }, v6: { rel: `fd00:5354:4f51:${hex}02::1`, cli: `fd00:5354:4f51:${hex}02::2` } }
    veth(nsA, devA, nsR, devRA)
    veth(nsB, devB, nsR, devRB)
    addr(nsA, devA, linkA.v4.srv, linkA.v6.srv)
    addr(nsR, devRA, linkA.v4.rel, linkA.v6.rel)
    addr(nsR, devRB, linkB.v4.rel, linkB.v6.rel)
    addr(nsB, devB, linkB.v4.cli, linkB.v6.cli)
    run(['ip', 'netns', 'exec', nsR, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0', 'net.ipv6.conf.all.forwarding=0'])

    relay = new PeerProcess('relay', nsR, RELAY_SCRIPT, {
      RELAY_DELAY_MS: String(shape.delayMs),
      RELAY_LOSS_PCT: String(shape.lossPct),
      RELAY_REORDER_PCT: String(shape.reorderPct),
      RELAY_REORDER_EXTRA_MIN_MS: String(shape.reorderExtraMs[0]),
      RELAY_REORDER_EXTRA_MAX_MS: String(shape.reorderExtraMs[1]),
      RELAY_RATE_MBIT: String(shape.rateMbit),
      RELAY_BURST_BYTES: String(shape.burstBytes),
      RELAY_QUEUE_PACKETS: String(shape.limit),
      RELAY_MTU: String(shape.mtu),
    })
    await relay.waitFor((e) => e.ev === 'ready', 20_000, 'relay ready')
    const r = relay
    const routes = new Map<string, Promise<{ host: string; port: number }>>()
    const why = forced === 'relay' ? 'STOQ_WAN_SHAPER=relay' : `no sch_netem: ${netem.why}`
    return {
      nsA,
      nsB,
      nsR,
      v4: { a: linkA.v4.srv, b: linkB.v4.cli },
      v6: { a: linkA.v6.srv, b: linkB.v6.cli },
      shape,
      shaper: 'relay',
      describe() {
        const [lo, hi] = shape.reorderExtraMs
        return (
          `userspace relay in ${nsR} (${why}): per direction ${shape.delayMs} ms delay, ${shape.lossPct}% loss, ` +
          `${shape.reorderPct}% reordered (+${lo}-${hi} ms), ${shape.rateMbit} Mbit/s token bucket (${shape.burstBytes} B burst, ` +
          `${shape.limit}-packet drop-tail queue), MTU ${shape.mtu}`
        )
      },
      route(host, port) {
        const key = `${host}|${port}`
        let p = routes.get(key)
        if (!p) {
          const six = host.includes(':')
          if (host !== (six ? linkA.v6.srv : linkA.v4.srv)) throw new Error(`the relay only reaches the server's addresses, not ${host}`)
          p = r
            .cmd<{ port: number }>('forward', {
              listen: six ? linkB.v6.rel : linkB.v4.rel,
              source: six ? linkA.v6.rel : linkA.v4.rel,
              target: host,
              targetPort: port,
            })
            .then((res) => ({ host: six ? linkB.v6.rel : linkB.v4.rel, port: res.port }))
          routes.set(key, p)
        }
        return p
      },
      async blackout(on) {
        await r.cmd('blackout', { on }, 5000)
      },
      async relayStats() {
        return r.cmd<RelayStats>('stats', {}, 5000)
      },
      destroy,
    }
  } catch (err) {
    destroy()
    throw err
  }
}
