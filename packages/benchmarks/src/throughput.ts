/**
 * Loopback throughput, one connection, one stream: Node `net` TCP and Node `tls`
 * (TLS 1.3 over TCP, the fair bar for an encrypted transport) against STOQ at 1350- and 16383-byte packets, in the same invocation, with
 * @chainsafe/libp2p-quic (another QUIC stack for Node) for comparison.
 *
 *   node dist/throughput.js [--bytes 1GiB] [--runs 3] [--cases tcp,stoq1350,stoq16383]
 *                           [--host 127.0.0.1|::1] [--timeout-ms 120000] [--json FILE] [--cpu-prof DIR]
 */
import { formatTable, main } from './harness.js'

await main(
  'throughput',
  {
    bytes: 1073741824,
    runs: 3,
    cases: [
      'tcp',
      'tls',
      'libp2pquic',
      'stoq1350',
      'stoq16383',
      'stoq1350gso',
      'stoq16383gso',
      'stoq1350gro',
      'stoq16383gro',
      'quinn1350',
      'quinn1350gro',
      'quinn16383gro',
      'quinnLargegro',
    ],
    host: '127.0.0.1',
    timeoutMs: 120_000,
  },
  (result) => console.log(formatTable(result)),
)
