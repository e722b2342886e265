import dgram from 'node:dgram'
import net from 'node:net'
import { type Libc, SO_RCVBUF, SO_RCVBUFFORCE, SO_SNDBUF, SO_SNDBUFFORCE, SOL_SOCKET, SOL_UDP, UDP_SEGMENT, errnoName, errorMessage } from './libc.js'

/**
 * `dgram` lookup for IP literals that answers synchronously. With the default
 * (`dns.lookup`) even a literal costs a `process.nextTick` before the socket
 * write; answering at once makes `socket.send()` reach libuv before it returns,
 * which the GSO backend needs: it changes the socket's UDP_SEGMENT between
 * writes, and a write must not be delayed past such a change.
 */
export function literalLookup(
  address: string,
  familyOrOptions: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const family = net.isIP(address)
  if (family === 0) {
    const err: NodeJS.ErrnoException = new Error(`${address} is not an IP literal`)
    err.code = 'ENOTFOUND'
    callback(err, address, typeof familyOrOptions === 'number' ? familyOrOptions : 0)
    return
  }
  callback(null, address, family)
}

export interface SocketBufferResult {
  /** Effective sizes read back from the kernel (Linux reports twice the requested value). */
  sendBufferSize: number
  receiveBufferSize: number
  /** True when SO_*BUFFORCE was accepted (CAP_NET_ADMIN), so net.core.*mem_max did not cap the size. */
  sendForced: boolean
  receiveForced: boolean
  /** What was tried and why it fell back, for stats and logs. */
  detail: string
}

/**
 * Ask for socket buffers of the given sizes: first with SO_*BUFFORCE, which
 * ignores the sysctl limits when the process has CAP_NET_ADMIN, then with
 * SO_*BUF, which the kernel caps at net.core.{w,r}mem_max.
 */
export function applySocketBuffers(libc: Libc, fd: number, sendBytes: number, receiveBytes: number): SocketBufferResult {
  const notes: string[] = []
  const one = (what: string, force: number, plain: number, bytes: number): boolean => {
    const forced = libc.setIntOption(fd, SOL_SOCKET, force, bytes)
    if (forced === 0) return true
    const plainErr = libc.setIntOption(fd, SOL_SOCKET, plain, bytes)
    notes.push(
      plainErr === 0
        ? `${what}: ${what}FORCE refused (${errnoName(forced)}), plain ${what} used (capped by the sysctl limit)`
        : `${what}: ${what}FORCE refused (${errnoName(forced)}) and ${what} refused (${errnoName(plainErr)})`,
    )
    return false
  }
  const sendForced = one('SO_SNDBUF', SO_SNDBUFFORCE, SO_SNDBUF, sendBytes)
  const receiveForced = one('SO_RCVBUF', SO_RCVBUFFORCE, SO_RCVBUF, receiveBytes)
  const sendBufferSize = Math.max(0, libc.getIntOption(fd, SOL_SOCKET, SO_SNDBUF))
  const receiveBufferSize = Math.max(0, libc.getIntOption(fd, SOL_SOCKET, SO_RCVBUF))
  if (sendForced && receiveForced) notes.push('SO_SNDBUFFORCE and SO_RCVBUFFORCE accepted')
  notes.push(`requested send ${sendBytes} B, receive ${receiveBytes} B; kernel reports send ${sendBufferSize} B, receive ${receiveBufferSize} B`)
  return { sendBufferSize, receiveBufferSize, sendForced, receiveForced, detail: notes.join('; ') }
}

export interface GsoProbeOptions {
  /** Segment size of the two-segment probe write. */
  segmentSize: number
  /** How long to wait for both datagrams. */
  timeoutMs: number
  /** Address the probe receiver binds (an IP literal of the sender's family, or IPv4 for a dual-stack sender). */
  receiverHost: string
}

export interface GsoProbeResult {
  ok: boolean
  detail: string
}

/**
 * Prove that `socket` (bound, fd `fd`) can send a GSO super-buffer: set
 * UDP_SEGMENT, send two segments with `socket.send()` to a temporary loopback
 * receiver, and require exactly two datagrams with the right contents, in
 * order. UDP_SEGMENT is reset to 0 afterwards. Never throws.
 */
export async function probeGso(socket: dgram.Socket, fd: number, libc: Libc, options: GsoProbeOptions): Promise<GsoProbeResult> {
  const { segmentSize, timeoutMs, receiverHost } = options
  const receiverFamily = net.isIP(receiverHost)
  if (receiverFamily === 0) return { ok: false, detail: `probe receiver host ${receiverHost} is not an IP literal` }
  const payload = Buffer.allocUnsafe(segmentSize * 2)
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >= segmentSize ? 101 : 13)) & 0xff

  const receiver = dgram.createSocket(receiverFamily === 6 ? 'udp6' : 'udp4')
  try {
    await new Promise<void>((resolve, reject) => {
      receiver.once('error', reject)
      receiver.bind({ address: receiverHost, port: 0, exclusive: true }, () => {
        receiver.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    receiver.close()
    return { ok: false, detail: `cannot bind the probe receiver on ${receiverHost}: ${errorMessage(err)}` }
  }

  const setErr = libc.setIntOption(fd, SOL_UDP, UDP_SEGMENT, segmentSize)
  if (setErr !== 0) {
    receiver.close()
    return { ok: false, detail: `setsockopt(SOL_UDP, UDP_SEGMENT, ${segmentSize}) failed: ${errnoName(setErr)}` }
  }

  const senderPort = socket.address().port
  const senderIsV6 = socket.address().family === 'IPv6'
  const wireHost = senderIsV6 && receiverFamily === 4 ? `::ffff:${receiverHost}` : receiverHost
  const receiverPort = receiver.address().port
  try {
    return await new Promise<GsoProbeResult>((resolve) => {
      const got: Buffer[] = []
      let done = false
      const finish = (result: GsoProbeResult): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        resolve(result)
      }
      const check = (): void => {
        if (got.length < 2) return
        const a = got[0]!
        const b = got[1]!
        if (got.length > 2) {
          finish({ ok: false, detail: `the probe arrived as ${got.length} datagrams, expected 2` })
        } else if (a.equals(payload.subarray(0, segmentSize)) && b.equals(payload.subarray(segmentSize))) {
          finish({ ok: true, detail: `a ${payload.length}-byte write with UDP_SEGMENT=${segmentSize} arrived as 2 datagrams with the right contents` })
        } else {
          finish({ ok: false, detail: 'the probe datagrams arrived with wrong contents or out of order' })
        }
      }
      receiver.on('message', (msg, rinfo) => {
        if (rinfo.port !== senderPort) return
        if (msg.length === payload.length) {
          finish({ ok: false, detail: `the ${payload.length}-byte probe arrived as one datagram: UDP_SEGMENT was accepted but not applied` })
          return
        }
        got.push(msg)
        // Give a third datagram a moment to show up before declaring success.
        if (got.length === 2) setTimeout(check, 5)
      })
      const timer = setTimeout(() => {
        finish({ ok: false, detail: `the probe was not received within ${timeoutMs} ms (${got.length} of 2 datagrams)` })
      }, timeoutMs)
      socket.send(payload, receiverPort, wireHost, (err) => {
        if (err) {
          const code = (err as NodeJS.ErrnoException).code ?? err.message
          finish({ ok: false, detail: `the kernel refused a ${payload.length}-byte write with UDP_SEGMENT=${segmentSize}: ${code}` })
        }
      })
    })
  } finally {
    libc.setIntOption(fd, SOL_UDP, UDP_SEGMENT, 0)
    await new Promise<void>((resolve) => receiver.close(() => resolve()))
  }
}
