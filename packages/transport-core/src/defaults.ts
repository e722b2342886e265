import type { TransportParameters } from '@stoq/interface'

/** ALPN spoken by STOQ peers; a stable name lets other stacks interoperate. */
export const DEFAULT_ALPN = ['stoq/1']

/** Bind address: `::` with IPV6_V6ONLY off is dual-stack, so IPv4 peers work too. */
export const DEFAULT_HOST = '::'

/** Idle timeout: long enough for WAN pauses, short enough to reap dead peers. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000

/** Time a `connect` may take before it fails with STOQ_ERR_HANDSHAKE_TIMEOUT. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000

/**
 * Connection flow-control window a connection starts with. It grows (doubling) towards
 * DEFAULT_MAX_CONNECTION_WINDOW while the application reads fast and the endpoint's receive
 * budget has room, so an idle or non-reading peer can pin only this much.
 */
export const DEFAULT_INITIAL_MAX_DATA = 2 * 1024 * 1024

/** Largest connection window: 64 MiB in flight keeps a 10 Gbps x 50 ms path full. */
export const DEFAULT_MAX_CONNECTION_WINDOW = 64 * 1024 * 1024

/** Per-stream window: 16 MiB lets one stream run at full speed without one stream hogging the connection window. */
export const DEFAULT_INITIAL_MAX_STREAM_DATA = 16 * 1024 * 1024

/** Concurrent streams a peer may open, each direction: enough for fan-out workloads. */
export const DEFAULT_MAX_STREAMS = 4000

/** Datagram size we send: 1350 bytes fits common Internet paths (1500 MTU minus IPv6/UDP headers and tunnels). */
export const DEFAULT_MAX_UDP_PAYLOAD = 1350

/** Datagrams held per connection in each direction before new ones are refused. */
export const DEFAULT_DATAGRAM_QUEUE_LENGTH = 1024

/** Concurrent server connections; beyond it new peers get CONNECTION_REFUSED. */
export const DEFAULT_MAX_CONNECTIONS = 10_000

/** Largest chunk read from a stream at once (one allocation per chunk handed to the reader). */
export const DEFAULT_STREAM_READ_CHUNK = 64 * 1024

/** Bytes a stream's readable side buffers for a slow reader before it stops taking data (flow control then stops the sender). */
export const DEFAULT_STREAM_READ_HIGH_WATER = 1024 * 1024

/** Kernel socket buffers asked for: 4 MiB absorbs the bursts of a large congestion window (the default ~208 KiB drops packets on loopback). The kernel caps it at net.core.[rw]mem_max. */
export const DEFAULT_SOCKET_BUFFER_SIZE = 4 * 1024 * 1024

/**
 * Buffers (64 KiB each) an endpoint's packet pool may grow to: 64 MiB of packets waiting for
 * the socket, far above what the send ring holds. The pool is shared with a worker UDP
 * backend, which reserves that much address space up front (committed only when used).
 */
export const DEFAULT_POOL_MAX_BUFFERS = 1024

/** Servers whose session tickets an endpoint keeps for resumption (client side). */
export const DEFAULT_SESSION_CACHE_SIZE = 256

/** Time `endpoint.close()` waits for connections to finish closing before it closes the socket anyway. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 2_000

export const DEFAULT_TRANSPORT: TransportParameters = {
  maxIdleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
  initialMaxData: DEFAULT_INITIAL_MAX_DATA,
  initialMaxStreamData: DEFAULT_INITIAL_MAX_STREAM_DATA,
  maxStreamWindow: DEFAULT_INITIAL_MAX_STREAM_DATA,
  maxConnectionWindow: DEFAULT_MAX_CONNECTION_WINDOW,
  initialMaxStreamsBidi: DEFAULT_MAX_STREAMS,
  initialMaxStreamsUni: DEFAULT_MAX_STREAMS,
  maxUdpPayloadSize: DEFAULT_MAX_UDP_PAYLOAD,
  congestionControl: 'cubic',
  datagrams: true,
  datagramQueueLength: DEFAULT_DATAGRAM_QUEUE_LENGTH,
  pacing: true,
  hystart: true,
  mtuDiscovery: true,
}
