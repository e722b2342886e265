/**
 * The quick check: one loopback STOQ run at 1350-byte packets and the TCP
 * baseline of the same size (256 MiB by default), receiver-counted and
 * verified, with the ratio. Takes well under a minute; exits non-zero if
 * anything fails to verify.
 *
 *   node dist/quick.js [--bytes 256MiB] [--host 127.0.0.1|::1] [--json FILE]
 */
import { fmtGbps, formatTable, main } from './harness.js'

await main(
  'quick',
  { bytes: 256 * 1024 * 1024, runs: 1, cases: ['tcp', 'stoq1350', 'stoq1350gro'], host: '127.0.0.1', timeoutMs: 60_000 },
  (result) => {
    console.log(formatTable(result))
    const tcp = result.cases.find((c) => c.case === 'tcp')
    const stoq = result.cases.filter((c) => c.case !== 'tcp')
    if (tcp?.medianGbps == null) return
    for (const c of stoq) {
      if (c.medianGbps === null || c.ratioVsTcp === null) continue
      console.log(
        `\n${c.label}: ${fmtGbps(c.medianGbps)} Gbps, TCP: ${fmtGbps(tcp.medianGbps)} Gbps, ratio ${c.ratioVsTcp.toFixed(3)} (STOQ / TCP, same run)`,
      )
    }
  },
)
