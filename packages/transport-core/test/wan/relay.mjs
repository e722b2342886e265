// Userspace WAN link emulator for test/wan.test.ts, for kernels without sch_netem.
//
// Runs inside the middle network namespace (`ip netns exec NS node relay.mjs`), between the
// client's and the server's namespaces. It is a UDP relay: the client sends to the relay's
// address on its own link, the relay forwards to the server from its address on the server's
// link (one upstream socket per client address/port) and relays the answers back. Every
// packet crosses, per direction, what a WAN path would do to it:
//
//   arrival -> blackout? -> MTU check -> random loss -> bottleneck (token bucket at the
//   link rate, bounded FIFO, drop-tail when full) -> propagation delay (+ a few ms extra
//   for the reordered share) -> send
//
// Timing: each packet gets its delivery time when it arrives (the bottleneck is computed in
// virtual time, so no per-packet timer); packets wait in one time-ordered heap per direction
// served by ONE timer per direction, re-armed for the earliest packet. The relay measures how
// late it actually sends each packet against its due time (its own delay error) and reports
// it with the `stats` command.
//
// Control: JSON lines on stdin ({id, cmd, ...}), answers {id, ok, result|error} on stdout.
//   forward {listen, target, targetPort, source}  -> {port}   (listen on `listen`, forward to
//                                                 target:targetPort from address `source`)
//   blackout {on}                                 -> {}       (drop everything, both ways)
//   stats                                         -> {...}    (counters and delay accuracy)
// The relay exits when stdin closes (the test went away).
import dgram from 'node:dgram'
import readline from 'node:readline'
import { readFileSync } from 'node:fs'

const arg = (name, dflt) => {
  const v = process.env[`RELAY_${name}`]
  return v === undefined || v === '' ? dflt : Number(v)
}
const SHAPE = {
  delayMs: arg('DELAY_MS', 25),
  lossPct: arg('LOSS_PCT', 1),
  reorderPct: arg('REORDER_PCT', 1),
  reorderExtraMinMs: arg('REORDER_EXTRA_MIN_MS', 1),
  reorderExtraMaxMs: arg('REORDER_EXTRA_MAX_MS', 4),
  rateMbit: arg('RATE_MBIT', 100),
  burstBytes: arg('BURST_BYTES', 15_000),
  queuePackets: arg('QUEUE_PACKETS', 1000),
  mtu: arg('MTU', 1500),
}
const SOCKET_BUFFER = 8 * 1024 * 1024
const MAX_MAPPINGS = 4096

let blackout = false
const now = () => performance.now()

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** Binary min-heap on (due, seq): the time-ordered queue of one direction. */
class Heap {
  a = []
  get size() {
    return this.a.length
  }
  peek() {
    return this.a[0]
  }
  static less(x, y) {
    return x.due < y.due || (x.due === y.due && x.seq < y.seq)
  }
  push(v) {
    const a = this.a
    a.push(v)
    let i = a.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!Heap.less(a[i], a[p])) break
      ;[a[i], a[p]] = [a[p], a[i]]
      i = p
    }
  }
  pop() {
    const a = this.a
    const top = a[0]
    const last = a.pop()
    if (a.length > 0) {
      a[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < a.length && Heap.less(a[l], a[m])) m = l
        if (r < a.length && Heap.less(a[r], a[m])) m = r
        if (m === i) break
        ;[a[i], a[m]] = [a[m], a[i]]
        i = m
      }
    }
    return top
  }
}

/** Histogram of the relay's lateness (actual send time minus due time), 0.05 ms buckets. */
class Lateness {
  static STEP = 0.05
  static BUCKETS = 4000 // up to 200 ms
  counts = new Uint32Array(Lateness.BUCKETS + 1)
  n = 0
  sum = 0
  sumSq = 0
  max = 0
  add(ms) {
    const v = Math.max(0, ms)
    this.n++
    this.sum += v
    this.sumSq += v * v
    if (v > this.max) this.max = v
    this.counts[Math.min(Lateness.BUCKETS, Math.floor(v / Lateness.STEP))]++
  }
  pct(p) {
    if (this.n === 0) return 0
    const want = Math.ceil((p / 100) * this.n)
    let seen = 0
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]
      if (seen >= want) return (i + 1) * Lateness.STEP
    }
    return this.max
  }
  summary() {
    const mean = this.n ? this.sum / this.n : 0
    const sd = this.n ? Math.sqrt(Math.max(0, this.sumSq / this.n - mean * mean)) : 0
    const r = (x) => Math.round(x * 1000) / 1000
    return { samples: this.n, meanMs: r(mean), sdMs: r(sd), p50Ms: r(this.pct(50)), p99Ms: r(this.pct(99)), p999Ms: r(this.pct(99.9)), maxMs: r(this.max) }
  }
}

/** One direction of the link: loss, MTU, bottleneck, delay, reordering. */
class Direction {
  constructor(name) {
    this.name = name
    this.heap = new Heap()
    this.timer = null
    this.timerDue = Infinity
    this.seq = 0
    // Token bucket in virtual time: tokens(t) = min(burst, rate * (t - this.tb)).
    this.bytesPerMs = (SHAPE.rateMbit * 1e6) / 8 / 1000
    this.tb = -Infinity
    this.lastDeparture = -Infinity
    // Departure times of the packets still in the bottleneck FIFO (bounded).
    this.fifo = []
    this.fifoHead = 0
    this.c = { in: 0, out: 0, bytesOut: 0, lost: 0, mtu: 0, queueFull: 0, blackout: 0, reordered: 0, sendErrors: 0, maxQueue: 0, maxHeap: 0 }
    this.late = new Lateness()
    this.queueDelay = new Lateness() // time spent in the bottleneck, for the report
  }

  /** ipHeader: 28 (IPv4 + UDP) or 48 (IPv6 + UDP). send(buf) puts the packet on the wire. */
  offer(buf, ipHeader, send) {
    const t = now()
    this.c.in++
    if (blackout) {
      this.c.blackout++
      return
    }
    const ipBytes = buf.length + ipHeader
    if (ipBytes > SHAPE.mtu) {
      this.c.mtu++
      return
    }
    if (Math.random() * 100 < SHAPE.lossPct) {
      this.c.lost++
      return
    }
    // Bottleneck FIFO: forget packets that have left it, drop-tail when it is full.
    while (this.fifoHead < this.fifo.length && this.fifo[this.fifoHead] <= t) this.fifoHead++
    if (this.fifoHead > 4096) {
      this.fifo = this.fifo.slice(this.fifoHead)
      this.fifoHead = 0
    }
    const queued = this.fifo.length - this.fifoHead
    if (queued >= SHAPE.queuePackets) {
      this.c.queueFull++
      return
    }
    // Token bucket: the packet leaves when the bucket holds its size, in FIFO order.
    const burstMs = SHAPE.burstBytes / this.bytesPerMs
    const txMs = ipBytes / this.bytesPerMs
    if (this.tb < t - burstMs) this.tb = t - burstMs
    const departure = Math.max(t, this.lastDeparture, this.tb + txMs)
    this.tb += txMs
    this.lastDeparture = departure
    this.fifo.push(departure)
    if (queued + 1 > this.c.maxQueue) this.c.maxQueue = queued + 1
    this.queueDelay.add(departure - t)
    let due = departure + SHAPE.delayMs
    if (Math.random() * 100 < SHAPE.reorderPct) {
      due += SHAPE.reorderExtraMinMs + Math.random() * (SHAPE.reorderExtraMaxMs - SHAPE.reorderExtraMinMs)
      this.c.reordered++
    }
    this.heap.push({ due, seq: this.seq++, buf, send })
    if (this.heap.size > this.c.maxHeap) this.c.maxHeap = this.heap.size
    this.arm()
  }

  /** Keep exactly one timer, for the earliest due packet. */
  arm() {
    const head = this.heap.peek()
    if (!head) return
    if (this.timer && head.due >= this.timerDue) return
    if (this.timer) clearTimeout(this.timer)
    this.timerDue = head.due
    this.timer = setTimeout(() => this.fire(), Math.max(0, head.due - now()))
  }

  fire() {
    this.timer = null
    this.timerDue = Infinity
    const t = now()
    // Send what is due (and what falls due within the next 0.2 ms: the timer cannot be finer).
    while (this.heap.size > 0 && this.heap.peek().due <= t + 0.2) {
      const p = this.heap.pop()
      this.late.add(t - p.due)
      if (blackout) {
        this.c.blackout++
        continue
      }
      this.c.out++
      this.c.bytesOut += p.buf.length
      p.send(p.buf)
    }
    this.arm()
  }

  stats() {
    return { ...this.c, inHeap: this.heap.size, lateness: this.late.summary(), bottleneckQueueing: this.queueDelay.summary() }
  }
}

const up = new Direction('client→server')
const down = new Direction('server→client')
const forwards = []
// Event-loop delay as seen by a 10 ms probe timer: how late any timer of this process runs.
const loopLag = new Lateness()
{
  let expect = now() + 10
  const probe = setInterval(() => {
    const t = now()
    loopLag.add(t - expect)
    expect = t + 10
  }, 10)
  probe.unref()
}

function bindSocket(type, address, port = 0) {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type, recvBufferSize: SOCKET_BUFFER, sendBufferSize: SOCKET_BUFFER })
    s.once('error', reject)
    s.bind({ address, port, exclusive: true }, () => {
      s.off('error', reject)
      try {
        s.setRecvBufferSize(SOCKET_BUFFER)
        s.setSendBufferSize(SOCKET_BUFFER)
      } catch {
        // the kernel caps it (net.core.rmem_max); the default still works
      }
      resolve(s)
    })
  })
}

async function forward({ listen, target, targetPort, source }) {
  const type = listen.includes(':') ? 'udp6' : 'udp4'
  const header = type === 'udp6' ? 48 : 28
  const front = await bindSocket(type, listen)
  const mappings = new Map() // "addr|port" of a client -> upstream socket (bound on `source`)
  const sendErr = (dir) => (err) => {
    if (err) dir.c.sendErrors++
  }
  front.on('error', () => {})
  front.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}|${rinfo.port}`
    let m = mappings.get(key)
    if (!m) {
      if (mappings.size >= MAX_MAPPINGS) return
      m = { sock: null, pending: [] }
      mappings.set(key, m)
      bindSocket(type, source).then(
        (sock) => {
          sock.on('error', () => {})
          sock.on('message', (back) => down.offer(back, header, (b) => front.send(b, rinfo.port, rinfo.address, sendErr(down))))
          m.sock = sock
          for (const b of m.pending) sock.send(b, targetPort, target, sendErr(up))
          m.pending = []
        },
        () => mappings.delete(key),
      )
    }
    up.offer(msg, header, (b) => {
      if (m.sock) m.sock.send(b, targetPort, target, sendErr(up))
      else if (m.pending.length < 64) m.pending.push(b)
    })
  })
  forwards.push({ listen, target, targetPort, mappings })
  return { port: front.address().port }
}

/** UDP counters of this namespace's kernel (receive-buffer drops would be losses we did not choose). */
function kernelUdp() {
  const out = {}
  try {
    const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n')
    for (const proto of ['Udp:', 'Udp6']) {
      if (proto === 'Udp6') {
        for (const l of readFileSync('/proc/net/snmp6', 'utf8').split('\n')) {
          const [k, v] = l.trim().split(/\s+/)
          if (k === 'Udp6RcvbufErrors' || k === 'Udp6SndbufErrors' || k === 'Udp6InErrors') out[k] = Number(v)
        }
        continue
      }
      const rows = lines.filter((l) => l.startsWith(proto))
      if (rows.length < 2) continue
      const keys = rows[0].split(/\s+/).slice(1)
      const vals = rows[1].split(/\s+/).slice(1)
      keys.forEach((k, i) => {
        if (k === 'RcvbufErrors' || k === 'SndbufErrors' || k === 'InErrors') out[`Udp${k}`] = Number(vals[i])
      })
    }
  } catch {
    // not readable: leave it out
  }
  return out
}

const handlers = {
  forward,
  async blackout({ on }) {
    blackout = !!on
    return { blackout }
  },
  async stats() {
    return {
      shape: SHAPE,
      blackout,
      forwards: forwards.map((f) => ({ listen: f.listen, target: `${f.target}:${f.targetPort}`, clients: f.mappings.size })),
      'client→server': up.stats(),
      'server→client': down.stats(),
      eventLoopLag: loopLag.summary(),
      kernelUdp: kernelUdp(),
    }
  },
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (!line.trim()) return
  let msg
  try {
    msg = JSON.parse(line)
  } catch {
    return
  }
  const fn = handlers[msg.cmd]
  if (!fn) {
    emit({ id: msg.id, ok: false, error: { message: `unknown command ${msg.cmd}` } })
    return
  }
  fn(msg).then(
    (result) => emit({ id: msg.id, ok: true, result }),
    (err) => emit({ id: msg.id, ok: false, error: { code: err?.code ?? null, message: String(err?.message ?? err) } }),
  )
})
rl.on('close', () => process.exit(0))
emit({ ev: 'ready', pid: process.pid, shape: SHAPE })
