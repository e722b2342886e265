//! From `EngineConfig` (what crossed the ABI) to quinn's transport and endpoint configuration.
//!
//! What quinn-proto 0.11 cannot do, and what happens instead:
//! - pacing cannot be turned off: `pacing: 0` is accepted and quinn paces anyway;
//! - quinn's CUBIC has no HyStart: `hystart` is accepted and unused;
//! - receive windows do not auto-tune: a stream's window is min(initial, max) for its whole
//!   life; the connection's starts at min(initial, max) and changes only when the endpoint
//!   sets it (`stoq_set_receive_window`, within its budget). `max_connection_window` also
//!   sizes the send buffer (`send_window`), so a peer that grants more credit can use it;
//! - there is no minimum congestion window setting (quinn uses 2 packets).

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qp::congestion::{Controller, ControllerFactory, ControllerMetrics};
use qp::{congestion, EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use quinn_proto as qp;
use ring::hmac;
use ring::rand::SecureRandom;

use crate::abi::{EngineConfig, ABI_VERSION, CC_BBR, CC_RENO, CID_PREFIX_NONE, INITIAL_STREAM_WINDOW, MAX_UDP_PAYLOAD, MIN_UDP_PAYLOAD};

/// The checked parameters an engine runs with.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub idle_ms: u64,
    pub max_data: u64,
    pub max_stream_data: u64,
    pub max_stream_window: u64,
    pub max_connection_window: u64,
    pub bidi: u64,
    pub uni: u64,
    pub max_payload: u16,
    pub cc: u32,
    pub datagrams: bool,
    pub datagram_queue: u64,
    pub pacing: bool,
    pub hystart: bool,
    /// First byte of every connection ID this endpoint issues (None: all random).
    pub cid_prefix: Option<u8>,
    /// Path MTU discovery asked for (it runs only once the host allowed it: see `Engine`).
    pub mtu_discovery: bool,
    /// TLS key exchange groups (`EngineConfig::key_exchange`, checked).
    pub key_exchange: u32,
}

const MAX_VARINT: f64 = 4_611_686_018_427_387_903.0;

fn whole(x: f64, what: &str, max: f64) -> Result<u64, String> {
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= max {
        Ok(x as u64)
    } else {
        Err(format!("{what}: expected an integer from 0 to {max}, got {x}"))
    }
}

impl Params {
    pub fn from_config(c: &EngineConfig) -> Result<Params, String> {
        if c.abi_version != ABI_VERSION {
            return Err(format!("config of ABI {}, the library speaks {ABI_VERSION}", c.abi_version));
        }
        if !(MIN_UDP_PAYLOAD..=MAX_UDP_PAYLOAD).contains(&c.max_udp_payload) {
            return Err(format!("max UDP payload {} outside {MIN_UDP_PAYLOAD}..={MAX_UDP_PAYLOAD}", c.max_udp_payload));
        }
        if c.congestion_control > CC_BBR {
            return Err(format!("unknown congestion control {}", c.congestion_control));
        }
        let cid_prefix = match c.cid_prefix {
            CID_PREFIX_NONE => None,
            p @ 0..=255 => Some(p as u8),
            p => return Err(format!("cid prefix {p} outside 0..=255")),
        };
        // Stream counts: RFC 9000 §4.6 caps them at 2^60.
        let max_streams = (1u64 << 60) as f64;
        Ok(Params {
            idle_ms: whole(c.idle_timeout_ms, "idle timeout", MAX_VARINT)?,
            max_data: whole(c.initial_max_data, "initial max data", MAX_VARINT)?,
            max_stream_data: whole(c.initial_max_stream_data, "initial max stream data", MAX_VARINT)?,
            max_stream_window: whole(c.max_stream_window, "max stream window", MAX_VARINT)?,
            max_connection_window: whole(c.max_connection_window, "max connection window", MAX_VARINT)?,
            bidi: whole(c.max_streams_bidi, "bidi streams", max_streams)?,
            uni: whole(c.max_streams_uni, "uni streams", max_streams)?,
            max_payload: c.max_udp_payload as u16,
            cc: c.congestion_control,
            datagrams: c.datagrams != 0,
            datagram_queue: whole(c.datagram_queue_length, "datagram queue length", MAX_VARINT)?.min(1 << 20),
            pacing: c.pacing != 0,
            hystart: c.hystart != 0,
            cid_prefix,
            mtu_discovery: c.mtu_discovery != 0,
            key_exchange: crate::kx::groups(c.key_exchange).map(|_| c.key_exchange)?,
        })
    }

    /// Receive window per stream: quinn keeps it fixed, so the smaller of initial and ceiling.
    pub fn stream_window(&self) -> u64 {
        self.max_stream_data.min(self.max_stream_window.max(1))
    }

    /// Receive window per connection (same rule).
    pub fn connection_window(&self) -> u64 {
        self.max_data.min(self.max_connection_window.max(1))
    }
}

fn varint(n: u64, what: &str) -> Result<VarInt, String> {
    VarInt::from_u64(n).map_err(|_| format!("{what} out of range"))
}

/// Set once a connection is closed: its congestion controller then lets everything through.
///
/// quinn-proto 0.11 holds a CONNECTION_CLOSE back like any ack-eliciting packet while stream
/// data is queued and the congestion window is full, and a closed connection processes no
/// more ACKs, so the window never opens again: the close never left, the connection was
/// forgotten 3 PTO later and the peer got a stateless reset or its idle timeout instead of the
/// code and reason (issue #16). A closed connection sends only CONNECTION_CLOSE packets (one
/// per packet received), which RFC 9002 §3 exempts from congestion control anyway.
#[derive(Clone, Default)]
pub struct CloseFlag(Arc<AtomicBool>);

impl CloseFlag {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A congestion controller that gives way once its connection is closed (see `CloseFlag`).
struct CloseAware {
    inner: Box<dyn Controller>,
    closed: CloseFlag,
}

impl Controller for CloseAware {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number)
    }

    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool, rtt: &qp::RttEstimator) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt)
    }

    fn on_end_acks(&mut self, now: Instant, in_flight: u64, app_limited: bool, largest_packet_num_acked: Option<u64>) {
        self.inner.on_end_acks(now, in_flight, app_limited, largest_packet_num_acked)
    }

    fn on_congestion_event(&mut self, now: Instant, sent: Instant, is_persistent_congestion: bool, lost_bytes: u64) {
        self.inner.on_congestion_event(now, sent, is_persistent_congestion, lost_bytes)
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu)
    }

    fn window(&self) -> u64 {
        // Above u32::MAX quinn also stops pacing.
        if self.closed.is_set() {
            u64::MAX
        } else {
            self.inner.window()
        }
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(CloseAware { inner: self.inner.clone_box(), closed: self.closed.clone() })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self.inner.into_any()
    }
}

/// Builds `CloseAware` controllers around the configured algorithm, all of one connection
/// (a migration builds a new one) sharing its flag.
struct CloseAwareFactory {
    inner: Arc<dyn ControllerFactory + Send + Sync>,
    closed: CloseFlag,
}

impl ControllerFactory for CloseAwareFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(CloseAware { inner: self.inner.clone().build(now, current_mtu), closed: self.closed.clone() })
    }
}

/// The transport configuration of one connection: the engine's, with a congestion controller
/// that `closed` turns off.
pub fn connection_transport_config(p: &Params, mtud: bool, closed: &CloseFlag) -> Result<TransportConfig, String> {
    let mut t = transport_config(p, mtud)?;
    t.congestion_controller_factory(Arc::new(CloseAwareFactory { inner: congestion_factory(p), closed: closed.clone() }));
    Ok(t)
}

/// The configured congestion-control algorithm, with the RFC 9002 initial window.
fn congestion_factory(p: &Params) -> Arc<dyn ControllerFactory + Send + Sync> {
    // RFC 9002 §7.2 initial window: min(10 * max_datagram_size, max(14720, 2 * max_datagram_size)).
    // quinn's fixed default (14720) would be smaller than one packet above 7360 bytes.
    let mds = p.max_payload as u64;
    let iw = (10 * mds).min(14720u64.max(2 * mds));
    match p.cc {
        CC_RENO => {
            let mut c = congestion::NewRenoConfig::default();
            c.initial_window(iw);
            Arc::new(c)
        }
        CC_BBR => {
            let mut c = congestion::BbrConfig::default();
            c.initial_window(iw);
            Arc::new(c)
        }
        _ => {
            // CC_CUBIC (Params::from_config refused anything else).
            let mut c = congestion::CubicConfig::default();
            c.initial_window(iw);
            Arc::new(c)
        }
    }
}

/// The transport configuration of the engine's connections (each gets its own copy, with its
/// `CloseFlag`: `connection_transport_config`). `mtud`: probe the path MTU (the host's socket
/// sets Don't Fragment, so a probe too large for the path is lost, not fragmented).
pub fn transport_config(p: &Params, mtud: bool) -> Result<TransportConfig, String> {
    let mut t = TransportConfig::default();
    let idle = if p.idle_ms == 0 {
        None
    } else {
        Some(IdleTimeout::try_from(Duration::from_millis(p.idle_ms)).map_err(|_| "idle timeout out of range".to_string())?)
    };
    t.max_idle_timeout(idle);
    t.stream_receive_window(varint(p.stream_window(), "stream window")?);
    t.receive_window(varint(p.connection_window(), "connection window")?);
    t.send_window(p.max_data.max(p.max_connection_window));
    // quinn-proto (0.9 and 0.11 alike, upstream issue #2600) sets up the state of every stream
    // the peer may open as soon as it is allowed: about 0.9 KiB per stream index and direction,
    // 3.4 MiB per connection at the default 4000 each way, half-open connections included. So
    // the transport parameters announce at most INITIAL_STREAM_WINDOW. The host raises the limits
    // as the peer uses streams (`stoq_set_peer_stream_limit`); a host that never calls it gets
    // them raised to the configured ones once the handshake completed (`open_stream_window`).
    t.max_concurrent_bidi_streams(varint(p.bidi.min(INITIAL_STREAM_WINDOW), "bidi streams")?);
    t.max_concurrent_uni_streams(varint(p.uni.min(INITIAL_STREAM_WINDOW), "uni streams")?);
    if mtud {
        // Packets start at 1200 bytes (what every QUIC path carries) and quinn searches up to
        // max_payload (and the peer's max_udp_payload_size) right after the handshake, then
        // every 10 minutes; black-hole detection falls back to 1200 when a size stops getting
        // through. A probe is a PING padded to the size tried, so the data never waits on it.
        t.initial_mtu(INITIAL_MTU.min(p.max_payload));
        let mut m = MtuDiscoveryConfig::default();
        m.upper_bound(p.max_payload);
        t.mtu_discovery_config(Some(m));
    } else {
        // Packets of max_payload from the start: the caller chose the size. Initials stay
        // padded to 1200.
        t.initial_mtu(p.max_payload);
        t.mtu_discovery_config(None);
    }
    let dgram_bytes = (p.datagram_queue as usize).saturating_mul(p.max_payload as usize).max(65536);
    t.datagram_receive_buffer_size(if p.datagrams { Some(dgram_bytes) } else { None });
    t.datagram_send_buffer_size(dgram_bytes);
    t.congestion_controller_factory(congestion_factory(p));
    Ok(t)
}

/// Endpoint configuration: the stateless-reset key and the connection-ID tag key (both derived
/// from `secret`, so a restarted server with the same secret recognises its predecessor's CIDs
/// and resets their connections), packet size limit, connection-ID generator.
pub fn endpoint_config(secret: &[u8], cid_prefix: Option<u8>) -> EndpointConfig {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &derive(secret, b"stoq stateless reset"));
    let mut cfg = EndpointConfig::new(Arc::new(key));
    // Accept packets as large as UDP allows; what we send is capped per connection.
    let _ = cfg.max_udp_payload_size(MAX_UDP_PAYLOAD as u16);
    let cids = CidFormat::new(secret, cid_prefix);
    cfg.cid_generator(move || Box::new(CidGenerator { format: cids.clone(), fallback: 0 }));
    cfg
}

/// The UDP payload every QUIC path must carry (RFC 9000 §14), where MTU discovery starts.
const INITIAL_MTU: u16 = 1200;

/// Length of the connection IDs the engine issues: quinn's default (8).
pub const CID_LEN: usize = 8;
/// Bytes of a CID that carry its tag.
const CID_TAG_LEN: usize = 4;

/// The connection IDs an endpoint issues: [prefix or random] + 3 random bytes + a 4-byte tag,
/// HMAC-SHA256 (key derived from the endpoint secret) over the first 4. With a prefix (the
/// engine worker's index) a reuseport BPF program steers every packet of a connection to the
/// socket of the worker that owns it; that covers every CID the endpoint issues: the client's
/// first SCID, the server's, Retry, and NEW_CONNECTION_ID. The tag lets the engine tell its own
/// CIDs from others (quinn 0.11's default generator does the same with a random key, which a
/// restarted server would not share).
#[derive(Clone)]
pub struct CidFormat {
    prefix: Option<u8>,
    key: hmac::Key,
}

impl CidFormat {
    pub fn new(secret: &[u8], prefix: Option<u8>) -> Self {
        CidFormat { prefix, key: hmac::Key::new(hmac::HMAC_SHA256, &derive(secret, b"stoq connection id")) }
    }

    fn tag(&self, body: &[u8]) -> [u8; CID_TAG_LEN] {
        let t = hmac::sign(&self.key, body);
        let mut out = [0u8; CID_TAG_LEN];
        out.copy_from_slice(&t.as_ref()[..CID_TAG_LEN]);
        out
    }

    /// Whether `cid` is one this format issues (its prefix and tag).
    pub fn is_ours(&self, cid: &[u8]) -> bool {
        if cid.len() != CID_LEN || self.prefix.is_some_and(|p| cid[0] != p) {
            return false;
        }
        let (body, tag) = cid.split_at(CID_LEN - CID_TAG_LEN);
        // Compared without an early exit.
        self.tag(body).iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

struct CidGenerator {
    format: CidFormat,
    /// Only used should the system RNG fail: quinn regenerates until a CID is unused, so a
    /// generator must never get stuck on one value.
    fallback: u32,
}

impl qp::ConnectionIdGenerator for CidGenerator {
    fn generate_cid(&mut self) -> qp::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        let body = CID_LEN - CID_TAG_LEN;
        if ring::rand::SystemRandom::new().fill(&mut bytes[..body]).is_err() {
            self.fallback = self.fallback.wrapping_add(1);
            bytes[..body].copy_from_slice(&self.fallback.to_le_bytes());
        }
        if let Some(p) = self.format.prefix {
            bytes[0] = p;
        }
        let tag = self.format.tag(&bytes[..body]);
        bytes[body..].copy_from_slice(&tag);
        qp::ConnectionId::new(&bytes)
    }

    /// A short-header packet to an unknown CID that is not ours (another worker's, after
    /// steering raced a socket change, or junk) is dropped instead of being answered with a
    /// stateless reset.
    fn validate(&self, cid: &qp::ConnectionId) -> Result<(), qp::InvalidCid> {
        if self.format.is_ours(cid) {
            Ok(())
        } else {
            Err(qp::InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// HMAC-SHA256(secret, label).
pub fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, label);
    let mut out = [0u8; 32];
    out.copy_from_slice(&tag.as_ref()[..32]);
    out
}

pub fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    let _ = ring::rand::SystemRandom::new().fill(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::CC_CUBIC;
    use qp::ConnectionIdGenerator;

    fn config() -> EngineConfig {
        EngineConfig {
            abi_version: ABI_VERSION,
            max_udp_payload: 1350,
            idle_timeout_ms: 30_000.0,
            initial_max_data: 1e7,
            initial_max_stream_data: 1e6,
            max_stream_window: 1e6,
            max_connection_window: 1e7,
            max_streams_bidi: 4000.0,
            max_streams_uni: 4000.0,
            datagram_queue_length: 128.0,
            congestion_control: CC_CUBIC,
            datagrams: 1,
            pacing: 1,
            hystart: 1,
            cid_prefix: CID_PREFIX_NONE,
            mtu_discovery: 1,
            key_exchange: 0,
        }
    }

    #[test]
    fn checks_the_config() {
        let p = Params::from_config(&config()).unwrap();
        assert_eq!(p.max_stream_data, 1_000_000);
        assert_eq!(p.cid_prefix, None);
        let mut c = config();
        c.max_udp_payload = 1199;
        assert!(Params::from_config(&c).is_err());
        let mut c = config();
        c.cid_prefix = 256;
        assert!(Params::from_config(&c).is_err());
        let mut c = config();
        c.initial_max_data = f64::NAN;
        assert!(Params::from_config(&c).is_err());
        let mut c = config();
        c.abi_version = 2;
        assert!(Params::from_config(&c).is_err());
        let mut c = config();
        c.max_stream_window = 4096.0;
        assert_eq!(Params::from_config(&c).unwrap().stream_window(), 4096);
        assert!(transport_config(&Params::from_config(&config()).unwrap(), false).is_ok());
        assert!(transport_config(&Params::from_config(&config()).unwrap(), true).is_ok());
    }

    #[test]
    fn cids_carry_prefix_and_tag() {
        let mut g = CidGenerator { format: CidFormat::new(b"secret one", Some(7)), fallback: 0 };
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_eq!(a[0], 7);
        assert_ne!(a, b);
        assert!(g.validate(&a).is_ok());
        // Same secret and prefix (a restarted server): its CIDs are recognised.
        assert!(CidFormat::new(b"secret one", Some(7)).is_ours(&a));
        // Another secret, another prefix, a changed byte: not ours.
        assert!(!CidFormat::new(b"secret two", Some(7)).is_ours(&a));
        assert!(!CidFormat::new(b"secret one", Some(8)).is_ours(&a));
        let mut c = a.to_vec();
        c[CID_LEN - 1] ^= 0x55;
        assert!(g.validate(&qp::ConnectionId::new(&c)).is_err());
        let mut r = CidGenerator { format: CidFormat::new(b"secret one", None), fallback: 0 };
        let d = r.generate_cid();
        assert!(r.validate(&d).is_ok());
        assert!(!g.format.is_ours(&d) || d[0] == 7);
    }
}
