/**
 * The quick check: loopback runs of 256 MiB (by default), receiver-counted and
 * verified, in the same invocation: the Node TCP and Node TLS 1.3 baselines; STOQ's default path
 * (quinn engine, worker GRO+GSO) at 1350-byte and 65000-byte packets; the quiche
 * engine on the same socket path at 1350 bytes; and the plain dgram path. Each
 * with its ratio to TCP. Takes about a minute; exits non-zero if anything fails
 * to verify.
 *
 *   node dist/quick.js [--bytes 256MiB] [--host 127.0.0.1|::1] [--json FILE]
 */
import { fmtGbps, formatTable, main } from './harness.js'

await main(
  'quick',
  {
    bytes: 256 * 1024 * 1024,
    runs: 1,
    cases: ['tcp', 'tls', 'quinn1350gro', 'quinnLargegro', 'stoq1350gro', 'stoq1350'],
    host: '127.0.0.1',
    timeoutMs: 60_000,
  },
  (result) => {
    console.log(formatTable(result))
    const tcp = result.cases.find((c) => c.case === 'tcp')
    const tls = result.cases.find((c) => c.case === 'tls')
    const stoq = result.cases.filter((c) => c.case !== 'tcp' && c.case !== 'tls')
    if (tcp?.medianGbps == null) return
    for (const c of stoq) {
      if (c.medianGbps === null || c.ratioVsTcp === null) continue
      console.log(
        `\n${c.label}: ${fmtGbps(c.medianGbps)} Gbps, TCP: ${fmtGbps(tcp.medianGbps)} Gbps, ratio ${c.ratioVsTcp.toFixed(3)} (STOQ / TCP, same run)` +
          (c.ratioVsTls !== null && tls?.medianGbps != null ? `; TLS: ${fmtGbps(tls.medianGbps)} Gbps, ratio ${c.ratioVsTls.toFixed(3)} (STOQ / TLS)` : ''),
      )
    }
  },
)
