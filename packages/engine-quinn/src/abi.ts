/**
 * The numbers of the native library's C ABI, mirrored from native/src/abi.rs (where each is
 * defined once). test/abi.test.ts compares this table, and the layout of the config struct,
 * with what the loaded library reports through `stoq_abi_info`.
 */
export const ABI = Object.freeze({
  ABI_VERSION: 9,

  OK: 0,
  ERR_BAD_HANDLE: -100,
  ERR_BAD_ARGUMENT: -101,
  ERR_TLS_CONFIG: -102,
  ERR_CONNECT: -103,
  ERR_PANIC: -104,
  ERR_STREAM: -105,

  STREAM_STOPPED: -1,
  STREAM_BLOCKED: -2,

  DGRAM_QUEUED: 1,
  DGRAM_FULL: 0,
  DGRAM_TOO_LARGE: -3,
  DGRAM_UNSUPPORTED: -4,

  EVENT_STRIDE: 4,
  EV_INCOMING: 1,
  EV_ESTABLISHED: 2,
  EV_READABLE: 3,
  EV_WRITABLE: 4,
  EV_DATAGRAM: 5,
  EV_CLOSED: 6,

  CLOSE_REMOTE: 1,
  CLOSE_APP: 2,
  CLOSE_IDLE: 4,
  CLOSE_RESET: 8,
  CLOSE_VERSION: 16,

  STATS_LEN: 16,
  ADDR_LEN: 19,
  RECV_RESULT_LEN: 3,
  TRANSMIT_META_LEN: 2,
  MAX_TX_SLOTS: 1024,
  MAX_TX_SLOT_SIZE: 1048576,

  CC_CUBIC: 0,
  CC_RENO: 1,
  CC_BBR: 2,
  CID_PREFIX_NONE: -1,
  MIN_UDP_PAYLOAD: 1200,
  MAX_UDP_PAYLOAD: 65527,
  INITIAL_STREAM_WINDOW: 128,

  EARLY_NONE: 0,
  EARLY_PENDING: 1,
  EARLY_ACCEPTED: 2,
  EARLY_REJECTED: 3,
  DEFAULT_SESSION_CACHE: 256,
  SESSION_CACHE_LEN: 3,
  KX_X25519MLKEM768: 1,
  KX_X25519: 2,
  KX_SECP256R1: 3,
  KX_SECP384R1: 4,

  PANIC_NOW: 0,
  PANIC_NEXT_DATAGRAM: 1,
})

/** `EngineConfig` (native/src/abi.rs), field by field in order, with koffi's C types. */
export const CONFIG_FIELDS = [
  ['abi_version', 'uint32_t'],
  ['max_udp_payload', 'uint32_t'],
  ['idle_timeout_ms', 'double'],
  ['initial_max_data', 'double'],
  ['initial_max_stream_data', 'double'],
  ['max_stream_window', 'double'],
  ['max_connection_window', 'double'],
  ['max_streams_bidi', 'double'],
  ['max_streams_uni', 'double'],
  ['datagram_queue_length', 'double'],
  ['congestion_control', 'uint32_t'],
  ['datagrams', 'uint32_t'],
  ['pacing', 'uint32_t'],
  ['hystart', 'uint32_t'],
  ['cid_prefix', 'int32_t'],
  ['mtu_discovery', 'uint32_t'],
  ['key_exchange', 'uint32_t'],
] as const

export type EngineConfig = { [K in (typeof CONFIG_FIELDS)[number][0]]: number }
