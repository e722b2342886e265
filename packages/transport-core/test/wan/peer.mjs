// One STOQ peer for the emulated-WAN test (test/wan.test.ts). It runs inside a network
// namespace (`ip netns exec NS node peer.mjs`), takes JSON-line commands on stdin and
// answers with JSON-line events on stdout. Stderr is free-form (logged by the test).
//
// Application protocol, the same in both directions: every bidirectional stream the peer
// opens carries raw bytes; the other side hashes everything up to FIN and answers on the
// same stream with 32 bytes of SHA-256 followed by the byte count (8 bytes, big endian).
// Datagrams carry: index (u32 BE) | payload | first 16 bytes of SHA-256(index | payload).
import crypto from 'node:crypto'
import readline from 'node:readline'
import { createEndpoint } from '../../dist/index.js'

const endpoints = new Map() // name -> Endpoint
const conns = new Map() // name -> QuicConnection
const dgStats = new Map() // conn name -> { valid, corrupt, duplicate, seen: Set }

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function errInfo(err) {
  return { code: err?.code ?? null, name: err?.name ?? null, message: String(err?.message ?? err) }
}

function watchConnection(name, conn) {
  conns.set(name, conn)
  dgStats.set(name, { valid: 0, corrupt: 0, duplicate: 0, seen: new Set() })
  conn.on('stream', (s) => {
    if (!s.bidirectional) return
    hashAndReply(name, s).catch((err) => emit({ ev: 'streamError', conn: name, error: errInfo(err) }))
  })
  conn.on('datagram', (d) => checkDatagram(name, d))
  conn.closed.then((info) => {
    const err = conn.connectionError?.() ?? null
    emit({
      ev: 'closed',
      conn: name,
      info: { ...info, reason: String(info.reason ?? '') },
      error: err ? errInfo(err) : null,
    })
  })
}

async function hashAndReply(name, stream) {
  const h = crypto.createHash('sha256')
  let bytes = 0
  for await (const chunk of stream.readable) {
    h.update(chunk)
    bytes += chunk.length
  }
  const reply = Buffer.alloc(40)
  h.digest().copy(reply, 0)
  reply.writeBigUInt64BE(BigInt(bytes), 32)
  const w = stream.writable.getWriter()
  await w.write(reply)
  await w.close()
  emit({ ev: 'received', conn: name, bytes })
}

function checkDatagram(name, d) {
  const st = dgStats.get(name)
  const buf = Buffer.from(d)
  if (buf.length < 20) {
    st.corrupt++
    return
  }
  const body = buf.subarray(0, buf.length - 16)
  const tag = buf.subarray(buf.length - 16)
  const want = crypto.createHash('sha256').update(body).digest().subarray(0, 16)
  if (!want.equals(tag)) {
    st.corrupt++
    return
  }
  const index = body.readUInt32BE(0)
  if (st.seen.has(index)) st.duplicate++
  else {
    st.seen.add(index)
    st.valid++
  }
}

function getConn(name) {
  const c = conns.get(name)
  if (!c) throw new Error(`no connection named ${name}`)
  return c
}

/** Open a stream, send `size` random bytes, check the peer's hash. */
async function upload(conn, size, chunk, onProgress) {
  // Waits for stream credit: a quinn server raises its limit (128 at first) as streams are used.
  const s = await conn.createStream({ timeoutMs: 60_000 })
  const h = crypto.createHash('sha256')
  const started = performance.now()
  const readReply = (async () => {
    const parts = []
    for await (const c of s.readable) parts.push(c)
    return Buffer.concat(parts)
  })()
  // Avoid an unhandled rejection if writing fails first; the error surfaces below.
  readReply.catch(() => {})
  const w = s.writable.getWriter()
  let sent = 0
  while (sent < size) {
    const n = Math.min(chunk, size - sent)
    const data = crypto.randomBytes(n)
    h.update(data)
    await w.write(data)
    sent += n
    onProgress?.(sent)
  }
  await w.close()
  const reply = await readReply
  const ms = performance.now() - started
  const sentSha = h.digest('hex')
  if (reply.length !== 40) throw new Error(`bad reply length ${reply.length}`)
  const recvSha = reply.subarray(0, 32).toString('hex')
  const recvBytes = Number(reply.readBigUInt64BE(32))
  return { sentSha, recvSha, sentBytes: size, recvBytes, ms }
}

const handlers = {
  async listen({ name, host, cert, key, transport }) {
    const ep = await createEndpoint({ host, port: 0, server: { cert, key }, transport })
    endpoints.set(name, ep)
    ep.on('connection', (c) => {
      watchConnection(name, c)
      emit({ ev: 'accepted', conn: name, remote: c.remoteAddress })
    })
    return { port: ep.address.port, engine: ep.engine?.name ?? null }
  },

  async connect({ name, host, port, ca, serverName, transport }) {
    const ep = await createEndpoint({ host: host.includes(':') ? '::' : '0.0.0.0', transport })
    endpoints.set(name, ep)
    const conn = await ep.connect({ host, port, ca, serverName })
    watchConnection(name, conn)
    return { alpn: conn.alpn, remote: conn.remoteAddress, maxDatagramSize: conn.maxDatagramSize, engine: ep.engine?.name ?? null }
  },

  async upload({ conn, size, chunk = 256 * 1024, progressAt, tag }) {
    let told = false
    return upload(getConn(conn), size, chunk, (sent) => {
      if (progressAt !== undefined && !told && sent >= progressAt) {
        told = true
        emit({ ev: 'progress', tag, sent })
      }
    })
  },

  async manyStreams({ conn, count, size }) {
    const c = getConn(conn)
    const started = performance.now()
    const results = await Promise.allSettled(Array.from({ length: count }, () => upload(c, size, size)))
    let verified = 0
    const failures = []
    for (const r of results) {
      if (r.status === 'fulfilled' && r.value.sentSha === r.value.recvSha && r.value.recvBytes === size) verified++
      else failures.push(r.status === 'rejected' ? errInfo(r.reason) : r.value)
    }
    return { verified, failed: failures.length, failures: failures.slice(0, 5), ms: performance.now() - started }
  },

  async sendDatagrams({ conn, count, size, burst = 10, gapMs = 10 }) {
    const c = getConn(conn)
    const payload = Math.max(4, Math.min(size, c.maxDatagramSize) - 20)
    let accepted = 0
    for (let i = 0; i < count; i++) {
      const body = Buffer.alloc(4 + payload)
      body.writeUInt32BE(i, 0)
      crypto.randomFillSync(body, 4)
      const tag = crypto.createHash('sha256').update(body).digest().subarray(0, 16)
      if (c.sendDatagram(Buffer.concat([body, tag]))) accepted++
      if ((i + 1) % burst === 0) await new Promise((r) => setTimeout(r, gapMs))
    }
    return { accepted, size: payload + 20 }
  },

  async datagramStats({ conn }) {
    const st = dgStats.get(conn)
    if (!st) throw new Error(`no connection named ${conn}`)
    return { valid: st.valid, corrupt: st.corrupt, duplicate: st.duplicate }
  },

  async status({ conn }) {
    const c = getConn(conn)
    const stats = c.stats()
    return {
      established: c.established,
      rttMs: stats.rttMs,
      packetsLost: stats.packetsLost,
      packetsSent: stats.packetsSent,
      cwndBytes: stats.cwndBytes,
      pathMtu: stats.pathMtu,
      mtuDiscovery: endpoints.get(conn)?.stats().mtuDiscovery ?? null,
    }
  },

  /** Open a stream, send a few bytes, and wait on the read: reports how the stream ended. */
  async hold({ conn, tag }) {
    const c = getConn(conn)
    const s = c.openStream()
    const w = s.writable.getWriter()
    await w.write(Buffer.from('hold'))
    void (async () => {
      try {
        for await (const _ of s.readable) {
          // nothing expected
        }
        emit({ ev: 'holdEnded', tag, conn, error: null })
      } catch (err) {
        emit({ ev: 'holdEnded', tag, conn, error: errInfo(err) })
      }
    })()
    return {}
  },

  async close({ conn }) {
    await getConn(conn).close()
    return {}
  },

  async exit() {
    for (const ep of endpoints.values()) await ep.close().catch(() => {})
    setTimeout(() => process.exit(0), 50)
    return {}
  },
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (!line.trim()) return
  let msg
  try {
    msg = JSON.parse(line)
  } catch {
    emit({ ev: 'error', error: { message: `bad command line: ${line.slice(0, 100)}` } })
    return
  }
  const fn = handlers[msg.cmd]
  if (!fn) {
    emit({ id: msg.id, ok: false, error: { message: `unknown command ${msg.cmd}` } })
    return
  }
  fn(msg).then(
    (result) => emit({ id: msg.id, ok: true, result }),
    (err) => emit({ id: msg.id, ok: false, error: errInfo(err) }),
  )
})
// The test going away (stdin closed) ends the peer.
rl.on('close', () => {
  void handlers.exit()
})
process.on('unhandledRejection', (err) => {
  emit({ ev: 'unhandledRejection', error: errInfo(err) })
})
emit({ ev: 'ready', pid: process.pid, engine: process.env.STOQ_ENGINE ?? null })
