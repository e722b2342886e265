//! Every number the TypeScript side must agree on, defined once. `stoq_abi_info` hands them
//! (and the layout of [`EngineConfig`]) to JavaScript as JSON; `src/abi.ts` mirrors them and a
//! test compares both sides, so a change here without the same change there fails CI.

use std::fmt::Write as _;
use std::mem::{offset_of, size_of};

macro_rules! abi_constants {
    ($($(#[$doc:meta])* $name:ident : $ty:ty = $val:expr;)*) => {
        $($(#[$doc])* pub const $name: $ty = $val;)*

        /// `(name, value)` of every constant above.
        pub fn constants() -> Vec<(&'static str, f64)> {
            vec![$((stringify!($name), $val as f64)),*]
        }
    };
}

abi_constants! {
    /// Bumped on every incompatible change; the loader refuses another version.
    /// 4: quinn-proto 0.11, `stoq_engine_new` takes an `EngineConfig` struct, `stoq_abi_info`
    /// (3 was the quinn-proto 0.9 library with `stoq_set_receive_window`, which 4 keeps).
    /// 5: `stoq_set_peer_stream_limit` (the host raises the peer's stream limits).
    /// 6: resumption and 0-RTT: `stoq_connect` and `stoq_listen` take `early_data`, two more
    /// statistics (resumed, EARLY_*), `stoq_set_session_cache`, `stoq_session_cache`.
    /// 6: `EngineConfig::mtu_discovery`, `stoq_allow_mtu_discovery`, path changes in the stats.
    /// 7: `EngineConfig::key_exchange`, the negotiated key exchange group in the stats.
    /// 8: both of the above (6 and 7 were developed side by side); resumed and EARLY_* are
    /// statistics 14 and 15.
    ABI_VERSION: u32 = 9;

    OK: i32 = 0;
    ERR_BAD_HANDLE: i32 = -100;
    ERR_BAD_ARGUMENT: i32 = -101;
    ERR_TLS_CONFIG: i32 = -102;
    ERR_CONNECT: i32 = -103;
    ERR_PANIC: i32 = -104;
    ERR_STREAM: i32 = -105;

    /// `stoq_stream_send`: the stream was stopped or is closed.
    STREAM_STOPPED: f64 = -1.0;
    /// `stoq_stream_send`: no credit (flow control or send buffer).
    STREAM_BLOCKED: f64 = -2.0;

    DGRAM_QUEUED: i32 = 1;
    DGRAM_FULL: i32 = 0;
    DGRAM_TOO_LARGE: i32 = -3;
    DGRAM_UNSUPPORTED: i32 = -4;

    /// Doubles per event written by `stoq_drain_events`: [kind, conn, a, b].
    EVENT_STRIDE: usize = 4;
    EV_INCOMING: u32 = 1;
    EV_ESTABLISHED: u32 = 2;
    /// a = stream id
    EV_READABLE: u32 = 3;
    /// a = stream id
    EV_WRITABLE: u32 = 4;
    EV_DATAGRAM: u32 = 5;
    /// a = code, b = CLOSE_* flags
    EV_CLOSED: u32 = 6;

    CLOSE_REMOTE: u32 = 1;
    CLOSE_APP: u32 = 2;
    CLOSE_IDLE: u32 = 4;
    CLOSE_RESET: u32 = 8;
    /// The server answered with Version Negotiation and no common version: the close reason is
    /// the versions it offered, 4 bytes each, big-endian.
    CLOSE_VERSION: u32 = 16;

    /// Doubles written by `stoq_stats`.
    STATS_LEN: usize = 16;
    /// Bytes of an address: 16 address bytes, 2 port bytes (big endian), 1 family (4 or 6).
    ADDR_LEN: usize = 19;
    /// Doubles written by `stoq_stream_recv`: [bytes, fin, reset code or -1].
    RECV_RESULT_LEN: usize = 3;
    /// u32 written by `stoq_poll_transmit`: [packets, bytes].
    TRANSMIT_META_LEN: usize = 2;
    /// Most transmit slots an engine gives out (`stoq_tx_slots`), and their largest size.
    MAX_TX_SLOTS: u32 = 1024;
    MAX_TX_SLOT_SIZE: u32 = 1048576;

    CC_CUBIC: u32 = 0;
    CC_RENO: u32 = 1;
    CC_BBR: u32 = 2;
    /// `EngineConfig::cid_prefix` for random connection IDs.
    CID_PREFIX_NONE: i32 = -1;
    MIN_UDP_PAYLOAD: u32 = 1200;
    MAX_UDP_PAYLOAD: u32 = 65527;
    /// Streams per direction a peer starts with (see config.rs); the host raises the limit as
    /// the peer uses streams (`stoq_set_peer_stream_limit`).
    INITIAL_STREAM_WINDOW: u64 = 128;

    /// Statistic 15, a connection's 0-RTT: none attempted (or not possible)...
    EARLY_NONE: u32 = 0;
    /// ...sent (client), the server's verdict not known yet...
    EARLY_PENDING: u32 = 1;
    /// ...accepted by the server (on a server: it accepted the client's)...
    EARLY_ACCEPTED: u32 = 2;
    /// ...rejected: the engine sent it again after the handshake.
    EARLY_REJECTED: u32 = 3;
    /// Servers (by TLS setup and name) whose tickets a client engine keeps, unless told otherwise.
    DEFAULT_SESSION_CACHE: u32 = 256;
    /// Doubles written by `stoq_session_cache`: [servers, tickets, cap].
    SESSION_CACHE_LEN: usize = 3;
    /// Key exchange groups, one per byte of `EngineConfig::key_exchange` (see kx.rs).
    KX_X25519MLKEM768: u32 = 1;
    KX_X25519: u32 = 2;
    KX_SECP256R1: u32 = 3;
    KX_SECP384R1: u32 = 4;

    /// `stoq_test_panic` sites: panic now, inside the call, on that connection...
    PANIC_NOW: u32 = 0;
    /// ...or while handling the next datagram routed to that connection.
    PANIC_NEXT_DATAGRAM: u32 = 1;
}

/// Engine parameters, passed by pointer to `stoq_engine_new` (a koffi struct on the
/// JavaScript side). Counts and byte sizes are doubles: exact up to 2^53, and checked here.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Must be ABI_VERSION.
    pub abi_version: u32,
    /// Largest UDP payload this endpoint sends (MIN_UDP_PAYLOAD..=MAX_UDP_PAYLOAD).
    pub max_udp_payload: u32,
    /// Idle timeout in ms, 0 for none.
    pub idle_timeout_ms: f64,
    pub initial_max_data: f64,
    pub initial_max_stream_data: f64,
    /// Ceilings of the receive windows: quinn does not auto-tune, so a stream's window is
    /// min(initial, max); the connection's starts at min(initial, max) and moves only through
    /// `stoq_set_receive_window`. The connection ceiling also sizes the send buffer.
    pub max_stream_window: f64,
    pub max_connection_window: f64,
    pub max_streams_bidi: f64,
    pub max_streams_uni: f64,
    /// Datagrams queued each way, per connection.
    pub datagram_queue_length: f64,
    /// CC_CUBIC, CC_RENO or CC_BBR.
    pub congestion_control: u32,
    /// 1: negotiate RFC 9221 datagrams.
    pub datagrams: u32,
    /// Asked for; quinn always paces (see config.rs).
    pub pacing: u32,
    /// Asked for; quinn's CUBIC has no HyStart (see config.rs).
    pub hystart: u32,
    /// First byte of every connection ID issued (0..=255), or CID_PREFIX_NONE.
    pub cid_prefix: i32,
    /// 1: path MTU discovery, from 1200 bytes up to `max_udp_payload`, once the host says its
    /// socket keeps datagrams whole (`stoq_allow_mtu_discovery`); 0: every packet is
    /// `max_udp_payload` from the start.
    pub mtu_discovery: u32,
    /// TLS key exchange groups in preference order, one KX_* code per byte from the lowest,
    /// ended by a zero byte; 0: the default (X25519MLKEM768, X25519, P-256, P-384).
    pub key_exchange: u32,
}

/// The constants and the layout of [`EngineConfig`] as one JSON object of numbers.
pub fn info_json() -> String {
    let mut pairs: Vec<(String, f64)> = constants().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    pairs.push(("CONFIG_SIZE".into(), size_of::<EngineConfig>() as f64));
    macro_rules! offsets {
        ($($field:ident),*) => {
            $(pairs.push((concat!("CONFIG_OFFSET.", stringify!($field)).into(), offset_of!(EngineConfig, $field) as f64));)*
        };
    }
    offsets!(
        abi_version,
        max_udp_payload,
        idle_timeout_ms,
        initial_max_data,
        initial_max_stream_data,
        max_stream_window,
        max_connection_window,
        max_streams_bidi,
        max_streams_uni,
        datagram_queue_length,
        congestion_control,
        datagrams,
        pacing,
        hystart,
        cid_prefix,
        mtu_discovery,
        key_exchange
    );
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{k}\":{v}");
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_flat_json_of_numbers() {
        let j = info_json();
        assert!(j.starts_with("{\"ABI_VERSION\":9,"));
        assert!(j.contains("\"ERR_PANIC\":-104,"));
        assert!(j.contains("\"STREAM_BLOCKED\":-2,"));
        assert!(j.contains(&format!("\"CONFIG_SIZE\":{}", size_of::<EngineConfig>())));
        assert!(j.ends_with('}'));
    }
}
