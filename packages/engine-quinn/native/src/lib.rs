//! STOQ's quinn engine: the quinn-proto QUIC state machine and rustls behind a small C ABI
//! made for batch calls from JavaScript (through koffi).
//!
//! Shape of the ABI:
//! - one opaque `Engine` per endpoint, integer connection handles, stream ids as `f64`
//!   (exact up to 2^53);
//! - one call feeds a whole received batch (a GRO buffer split by segment size), one call
//!   fills a whole transmit batch (packets back to back in the caller's buffer), one call
//!   drains every pending event into the caller's `f64` array;
//! - no callbacks from native code into JavaScript.
//!
//! Safety: `unsafe` appears only where a raw pointer from the caller becomes a slice
//! (`ffi_slice`, `ffi_slice_mut`) or the engine pointer is dereferenced (`with_engine`).
//! Every exported function runs inside `catch_unwind`: quinn-proto 0.9.2 can panic on
//! malformed peer input (RUSTSEC-2026-0037). A panic inside a connection closes that
//! connection with INTERNAL_ERROR; the process survives.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto as qp;
use qp::{
    congestion, ClientConfig, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint,
    EndpointConfig, EndpointEvent, Event, IdleTimeout, ServerConfig, StreamEvent, StreamId,
    TransportConfig, VarInt,
};
use ring::{hkdf, hmac, rand::SecureRandom};

// ---------------------------------------------------------------------------
// Result codes shared with the TypeScript side (keep in sync with src/abi.ts).

const OK: i32 = 0;
const ERR_BAD_HANDLE: i32 = -100;
const ERR_BAD_ARGUMENT: i32 = -101;
const ERR_TLS_CONFIG: i32 = -102;
const ERR_CONNECT: i32 = -103;
const ERR_PANIC: i32 = -104;
const ERR_STREAM: i32 = -105;

const STREAM_STOPPED: f64 = -1.0;
const STREAM_BLOCKED: f64 = -2.0;

const DGRAM_FULL: i32 = 0;
const DGRAM_TOO_LARGE: i32 = -3;
const DGRAM_UNSUPPORTED: i32 = -4;

// Event kinds written by `stoq_drain_events`, 4 f64 per event: [kind, conn, a, b].
const EV_INCOMING: f64 = 1.0;
const EV_ESTABLISHED: f64 = 2.0;
const EV_READABLE: f64 = 3.0; // a = stream id
const EV_WRITABLE: f64 = 4.0; // a = stream id
const EV_DATAGRAM: f64 = 5.0;
const EV_CLOSED: f64 = 6.0; // a = code, b = flags (1 remote, 2 app, 4 idle timeout, 8 stateless reset)

const CLOSE_REMOTE: u32 = 1;
const CLOSE_APP: u32 = 2;
const CLOSE_IDLE: u32 = 4;
const CLOSE_RESET: u32 = 8;

const INTERNAL_ERROR: u64 = 0x1;

/// Stateless packets (Retry, version negotiation, resets) waiting to be sent, at most.
const MAX_STATELESS_QUEUE: usize = 256;

/// Streams the peer may open during the handshake, per direction (capped by the configured
/// limit). quinn-proto 0.9 sets up the state of every stream the peer is allowed to open when
/// the connection is created (`StreamsState::new`), about 0.9 KiB per stream index (bidi send
/// + recv, uni recv): at our default of 4000 each way, 3.4 MiB per connection, half-open ones
/// included. So the transport parameters announce this much, and `open_stream_window` raises
/// the limits to the configured ones (MAX_STREAMS) once the handshake completes.
/// `set_max_concurrent_streams` allocates the whole new window at once too
/// (`ensure_remote_streams`): an established connection still holds the full amount.
const INITIAL_STREAM_WINDOW: u64 = 128;

// ---------------------------------------------------------------------------
// Panic capture: the message goes to the engine's last error, not to stderr.

thread_local! {
    static LAST_PANIC: RefCell<String> = RefCell::new(String::new());
}
static HOOK: Once = Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".to_string()
            };
            let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg}{loc}"));
        }));
    });
}

fn take_panic_message() -> String {
    LAST_PANIC.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

// ---------------------------------------------------------------------------
// State

struct Conn {
    conn: qp::Connection,
    queued: bool,
    /// In `Engine::tx`: may have packets to send.
    tx_queued: bool,
    established: bool,
    close_reported: bool,
    /// What `stoq_close` asked for: (app, code, reason).
    local_close: Option<(bool, u64, Vec<u8>)>,
    keep_alive: Option<Duration>,
    next_ping: Option<Instant>,
    want_writable: HashSet<u64>,
    blocked: HashSet<u64>,
    send_done: HashSet<u64>,
    recv_done: HashSet<u64>,
    stop_codes: HashMap<u64, u64>,
    datagram_pending: bool,
}

impl Conn {
    fn new(conn: qp::Connection) -> Self {
        Conn {
            conn,
            queued: false,
            tx_queued: false,
            established: false,
            close_reported: false,
            local_close: None,
            keep_alive: None,
            next_ping: None,
            want_writable: HashSet::new(),
            blocked: HashSet::new(),
            send_done: HashSet::new(),
            recv_done: HashSet::new(),
            stop_codes: HashMap::new(),
            datagram_pending: false,
        }
    }
}

#[derive(Clone, Copy)]
struct Params {
    idle_ms: u64,
    max_data: u64,
    /// Largest connection window (the receive window grows to it through
    /// stoq_set_receive_window; also our send window).
    max_connection_window: u64,
    max_stream_data: u64,
    bidi: u64,
    uni: u64,
    max_payload: u16,
    cc: u32,
    datagrams: bool,
    datagram_queue: u64,
    /// First byte of every connection ID this endpoint issues (None: all random).
    cid_prefix: Option<u8>,
}

pub struct Engine {
    endpoint: Endpoint,
    params: Params,
    transport: Arc<TransportConfig>,
    conns: Vec<Option<Conn>>,
    live: usize,
    /// Connections with state to turn into events.
    queue: Vec<usize>,
    /// Connections that may have packets to send, in round-robin order: only what was
    /// touched (packets in, API calls, timers) since it last had nothing to send.
    tx: VecDeque<usize>,
    events: VecDeque<[f64; 4]>,
    readable_reported: HashSet<(usize, u64)>,
    close_reasons: HashMap<usize, Vec<u8>>,
    /// Last statistics of connections that were dropped, kept until the next event drain.
    final_stats: HashMap<usize, [f64; 12]>,
    client_crypto: HashMap<Vec<u8>, Arc<rustls::ClientConfig>>,
    listening: bool,
    stateless_reset: bool,
    /// Connection being worked on, so a panic can be pinned on it.
    current: Option<usize>,
    panics: u64,
    /// Datagrams not delivered to any connection (malformed, unknown connection, answered
    /// statelessly).
    dropped: u64,
    stateless: VecDeque<qp::Transmit>,
    /// Mirror of the endpoint's connection slab (free keys, LIFO, and length), so the slot
    /// of a connection that panicked inside `Endpoint::handle` can be freed.
    slab_free: Vec<usize>,
    slab_len: usize,
    leaked_slots_freed: u64,
    last_error: String,
}

fn transport_config(p: &Params) -> Result<TransportConfig, String> {
    let mut t = TransportConfig::default();
    let idle = if p.idle_ms == 0 {
        None
    } else {
        Some(IdleTimeout::try_from(Duration::from_millis(p.idle_ms)).map_err(|_| "idle timeout out of range".to_string())?)
    };
    t.max_idle_timeout(idle);
    let v = |n: u64, what: &str| VarInt::from_u64(n).map_err(|_| format!("{what} out of range"));
    t.stream_receive_window(v(p.max_stream_data, "stream window")?);
    t.receive_window(v(p.max_data, "connection window")?);
    t.send_window(p.max_connection_window);
    v(p.bidi, "bidi streams")?;
    v(p.uni, "uni streams")?;
    // Raised to p.bidi / p.uni once the handshake completes (see INITIAL_STREAM_WINDOW).
    t.max_concurrent_bidi_streams(v(p.bidi.min(INITIAL_STREAM_WINDOW), "bidi streams")?);
    t.max_concurrent_uni_streams(v(p.uni.min(INITIAL_STREAM_WINDOW), "uni streams")?);
    t.initial_max_udp_payload_size(p.max_payload);
    let dgram_bytes = (p.datagram_queue as usize).saturating_mul(p.max_payload as usize).max(65536);
    t.datagram_receive_buffer_size(if p.datagrams { Some(dgram_bytes) } else { None });
    t.datagram_send_buffer_size(dgram_bytes);
    // RFC 9002 §7.2 initial window: min(10 * max_datagram_size, max(14720, 2 * max_datagram_size)).
    // quinn's fixed 14720 would be smaller than one packet above that size and block sending.
    let mds = p.max_payload as u64;
    let iw = (10 * mds).min(14720u64.max(2 * mds));
    match p.cc {
        1 => {
            let mut c = congestion::NewRenoConfig::default();
            c.initial_window(iw).minimum_window(2 * mds);
            t.congestion_controller_factory(Arc::new(c));
        }
        2 => {
            let mut c = congestion::BbrConfig::default();
            c.initial_window(iw).minimum_window(2 * mds);
            t.congestion_controller_factory(Arc::new(c));
        }
        _ => {
            let mut c = congestion::CubicConfig::default();
            c.initial_window(iw).minimum_window(2 * mds);
            t.congestion_controller_factory(Arc::new(c));
        }
    }
    Ok(t)
}

/// After the handshake: let the peer open as many streams as configured (MAX_STREAMS).
/// quinn queues MAX_STREAMS when it next processes a 1-RTT packet from the peer; the PING
/// draws one (its ACK) even from a peer that waits for credit.
fn open_stream_window(c: &mut Conn, p: &Params) {
    let mut raised = false;
    for (dir, limit) in [(Dir::Bi, p.bidi), (Dir::Uni, p.uni)] {
        if limit > INITIAL_STREAM_WINDOW {
            let Ok(count) = VarInt::from_u64(limit) else { continue };
            c.conn.set_max_concurrent_streams(dir, count);
            raised = true;
        }
    }
    if raised {
        c.conn.ping();
    }
}

fn endpoint_config(reset_secret: &[u8], cid_prefix: Option<u8>) -> EndpointConfig {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &derive(reset_secret, b"stoq stateless reset"));
    let mut cfg = EndpointConfig::new(Arc::new(key));
    // Accept packets as large as UDP allows; what we send is capped per connection.
    let _ = cfg.max_udp_payload_size(65527);
    if let Some(prefix) = cid_prefix {
        cfg.cid_generator(move || Box::new(PrefixedCidGenerator::new(prefix)));
    }
    cfg
}

/// Length of the connection IDs a prefixed generator issues: quinn's default (8).
const PREFIXED_CID_LEN: usize = 8;

/// Connection IDs whose first byte is a fixed prefix (the engine worker's index) and whose
/// other 7 bytes are random, so that a reuseport BPF program can steer every packet of a
/// connection to the socket of the worker that owns it. Used for every CID the endpoint
/// issues: the client's first SCID, the server's, Retry, and NEW_CONNECTION_ID.
struct PrefixedCidGenerator {
    prefix: u8,
    rng: ring::rand::SystemRandom,
    /// Only used should the system RNG fail: quinn regenerates until a CID is unused, so
    /// a generator must never get stuck on one value.
    fallback: u64,
}

impl PrefixedCidGenerator {
    fn new(prefix: u8) -> Self {
        PrefixedCidGenerator { prefix, rng: ring::rand::SystemRandom::new(), fallback: 0 }
    }
}

impl qp::ConnectionIdGenerator for PrefixedCidGenerator {
    fn generate_cid(&mut self) -> qp::ConnectionId {
        let mut bytes = [0u8; PREFIXED_CID_LEN];
        if self.rng.fill(&mut bytes[1..]).is_err() {
            self.fallback = self.fallback.wrapping_add(1);
            bytes[1..].copy_from_slice(&self.fallback.to_le_bytes()[..PREFIXED_CID_LEN - 1]);
        }
        bytes[0] = self.prefix;
        qp::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        PREFIXED_CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, label);
    let mut out = [0u8; 32];
    out.copy_from_slice(&tag.as_ref()[..32]);
    out
}

fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    let _ = ring::rand::SystemRandom::new().fill(&mut s);
    s
}

fn varint(n: f64) -> Option<VarInt> {
    if !(n >= 0.0) || n.fract() != 0.0 || n > 4_611_686_018_427_387_903.0 {
        return None;
    }
    VarInt::from_u64(n as u64).ok()
}

fn stream_id(n: f64) -> Option<StreamId> {
    varint(n).map(StreamId::from)
}

fn sid_u64(id: StreamId) -> u64 {
    VarInt::from(id).into_inner()
}

fn flags_close(remote: bool, app: bool, idle: bool, reset: bool) -> f64 {
    let mut f = 0;
    if remote {
        f |= CLOSE_REMOTE;
    }
    if app {
        f |= CLOSE_APP;
    }
    if idle {
        f |= CLOSE_IDLE;
    }
    if reset {
        f |= CLOSE_RESET;
    }
    f as f64
}

impl Engine {
    fn new(params: Params) -> Result<Self, String> {
        let transport = Arc::new(transport_config(&params)?);
        Ok(Engine {
            endpoint: Endpoint::new(Arc::new(endpoint_config(&random_secret(), params.cid_prefix)), None),
            params,
            transport,
            conns: Vec::new(),
            live: 0,
            queue: Vec::new(),
            tx: VecDeque::new(),
            events: VecDeque::new(),
            readable_reported: HashSet::new(),
            close_reasons: HashMap::new(),
            final_stats: HashMap::new(),
            client_crypto: HashMap::new(),
            listening: false,
            stateless_reset: true,
            current: None,
            panics: 0,
            dropped: 0,
            stateless: VecDeque::new(),
            slab_free: Vec::new(),
            slab_len: 0,
            leaked_slots_freed: 0,
            last_error: String::new(),
        })
    }

    fn conn(&mut self, ch: usize) -> Option<&mut Conn> {
        self.conns.get_mut(ch).and_then(|c| c.as_mut())
    }

    /// Something happened on `ch`: look for events and for packets to send.
    fn enqueue(&mut self, ch: usize) {
        if let Some(Some(c)) = self.conns.get_mut(ch) {
            if !c.queued {
                c.queued = true;
                self.queue.push(ch);
            }
            if !c.tx_queued {
                c.tx_queued = true;
                self.tx.push_back(ch);
            }
        }
    }

    fn insert(&mut self, ch: usize, conn: qp::Connection) {
        self.slab_taken(ch);
        if self.conns.len() <= ch {
            self.conns.resize_with(ch + 1, || None);
        }
        if self.conns[ch].is_none() {
            self.live += 1;
        }
        self.conns[ch] = Some(Conn::new(conn));
        self.enqueue(ch);
    }

    /// The endpoint gave out slot `ch`.
    fn slab_taken(&mut self, ch: usize) {
        if let Some(pos) = self.slab_free.iter().rposition(|&k| k == ch) {
            self.slab_free.remove(pos);
        } else if ch >= self.slab_len {
            self.slab_free.extend(self.slab_len..ch);
            self.slab_len = ch + 1;
        }
    }

    /// Slot `ch` went back to the endpoint.
    fn slab_freed(&mut self, ch: usize) {
        if ch < self.slab_len && !self.slab_free.contains(&ch) {
            self.slab_free.push(ch);
        }
    }

    /// A panic inside `Endpoint::handle` may have left a connection slot the endpoint
    /// believes live (it routes the peer's CIDs there and counts it against the connection
    /// limit). The slot it would have used is the next free one: drain it. When no slot was
    /// taken, the slab refuses (panics) without changing anything.
    fn free_leaked_slot(&mut self) {
        let k = self.slab_free.last().copied().unwrap_or(self.slab_len);
        if matches!(self.conns.get(k), Some(Some(_))) {
            return;
        }
        let ok = catch_unwind(AssertUnwindSafe(|| {
            let _ = self.endpoint.handle_event(ConnectionHandle(k), EndpointEvent::drained());
        }))
        .is_ok();
        let _ = take_panic_message();
        if ok {
            self.leaked_slots_freed += 1;
            if k == self.slab_len {
                self.slab_len += 1;
                self.slab_free.push(k);
            }
        }
    }

    fn remove(&mut self, ch: usize) -> Option<Conn> {
        let mut c = self.conns.get_mut(ch).and_then(|c| c.take());
        if let Some(conn) = c.as_mut() {
            self.live -= 1;
            let p = self.params;
            if let Ok(s) = catch_unwind(AssertUnwindSafe(|| conn_stats(conn, &p))) {
                self.final_stats.insert(ch, s);
            }
        }
        self.readable_reported.retain(|(h, _)| *h != ch);
        c
    }

    // -- server ------------------------------------------------------------

    fn listen(
        &mut self,
        cert_pem: &[u8],
        key_pem: &[u8],
        alpn: Vec<Vec<u8>>,
        retry: bool,
        max_conns: u32,
        stateless_reset: bool,
        secret: Option<&[u8]>,
    ) -> Result<(), String> {
        let chain = read_certs(cert_pem)?;
        if chain.is_empty() {
            return Err("no certificate in the PEM data".into());
        }
        let key = read_key(key_pem)?;
        let mut tls = rustls::ServerConfig::builder()
            .with_safe_default_cipher_suites()
            .with_safe_default_kx_groups()
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("certificate/key: {e}"))?;
        tls.alpn_protocols = alpn;
        tls.max_early_data_size = 0;
        let secret: Vec<u8> = match secret {
            Some(s) => s.to_vec(),
            None => random_secret().to_vec(),
        };
        let token_key = hkdf::Salt::new(hkdf::HKDF_SHA256, b"stoq retry token").extract(&secret);
        let mut sc = ServerConfig::new(Arc::new(tls), Arc::new(token_key));
        sc.transport_config(self.transport.clone());
        sc.use_retry(retry);
        sc.concurrent_connections(max_conns.max(1));
        if self.live == 0 {
            // The stateless-reset key lives in the endpoint config: rebuild the endpoint so a
            // restarted server with the same secret can reset its predecessor's connections.
            self.endpoint = Endpoint::new(Arc::new(endpoint_config(&secret, self.params.cid_prefix)), None);
            // A new endpoint starts with an empty connection slab: so does our mirror of it.
            self.slab_free.clear();
            self.slab_len = 0;
        }
        self.endpoint.set_server_config(Some(Arc::new(sc)));
        self.listening = true;
        self.stateless_reset = stateless_reset;
        Ok(())
    }

    // -- receive -------------------------------------------------------------

    fn receive(&mut self, data: &[u8], segment: usize, from: SocketAddr) {
        let now = Instant::now();
        let seg = if segment == 0 || segment > data.len() { data.len() } else { segment };
        if seg == 0 {
            return;
        }
        // One copy of the whole batch; each datagram is then a view of it (no allocation per
        // packet), which quinn decrypts in place.
        let mut rest = BytesMut::from(data);
        while !rest.is_empty() {
            let chunk = rest.split_to(seg.min(rest.len()));
            self.current = None;
            // One datagram at a time under catch_unwind: a panic (quinn-proto 0.9.2 on
            // malformed transport parameters, RUSTSEC-2026-0037) costs that datagram and the
            // connection it hit, never the rest of the batch.
            let handled = catch_unwind(AssertUnwindSafe(|| self.receive_one(now, from, chunk)));
            if handled.is_err() {
                self.dropped += 1;
                let inside_endpoint = self.current.is_none();
                recover_from_panic(self);
                if inside_endpoint {
                    self.free_leaked_slot();
                }
            }
            // Move stateless answers (version negotiation, Retry, refusals, resets) into our
            // own bounded queue: a flood of unauthenticated packets cannot grow it.
            while let Some(t) = self.endpoint.poll_transmit() {
                if self.stateless.len() < MAX_STATELESS_QUEUE {
                    self.stateless.push_back(t);
                }
            }
        }
    }

    fn receive_one(&mut self, now: Instant, from: SocketAddr, chunk: BytesMut) {
        match self.endpoint.handle(now, from, None, None, chunk) {
            Some((ch, DatagramEvent::ConnectionEvent(ev))) => {
                let h = ch.0;
                if matches!(self.conns.get(h), Some(Some(_))) {
                    self.current = Some(h);
                    if let Some(c) = self.conn(h) {
                        c.conn.handle_event(ev);
                    }
                    self.current = None;
                    self.enqueue(h);
                } else {
                    // A connection we no longer hold (a panic dropped it): free its routes.
                    let _ = self.endpoint.handle_event(ch, EndpointEvent::drained());
                    self.slab_freed(h);
                }
            }
            Some((ch, DatagramEvent::NewConnection(conn))) => {
                self.insert(ch.0, conn);
                self.events.push_back([EV_INCOMING, ch.0 as f64, 0.0, 0.0]);
            }
            None => self.dropped += 1,
        }
    }

    // -- events --------------------------------------------------------------

    /// Turn a connection's pending state into events.
    fn process(&mut self, ch: usize) {
        let Engine { conns, endpoint, events, readable_reported, close_reasons, current, params, .. } = self;
        let Some(Some(c)) = conns.get_mut(ch) else { return };
        c.queued = false;
        *current = Some(ch);
        let mut drained = false;
        while let Some(ev) = c.conn.poll_endpoint_events() {
            if ev.is_drained() {
                drained = true;
            }
            if let Some(back) = endpoint.handle_event(ConnectionHandle(ch), ev) {
                c.conn.handle_event(back);
            }
        }
        while let Some(ev) = c.conn.poll() {
            match ev {
                Event::HandshakeDataReady => {}
                Event::Connected => {
                    if !c.close_reported && !c.established {
                        c.established = true;
                        open_stream_window(c, params);
                        events.push_back([EV_ESTABLISHED, ch as f64, 0.0, 0.0]);
                    }
                }
                Event::ConnectionLost { reason } => {
                    if !c.close_reported {
                        c.close_reported = true;
                        let (code, flags, text) = close_info(&reason, c.local_close.as_ref());
                        close_reasons.insert(ch, text);
                        events.push_back([EV_CLOSED, ch as f64, code as f64, flags]);
                    }
                }
                Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(id) = c.conn.streams().accept(dir) {
                        let sid = sid_u64(id);
                        if readable_reported.insert((ch, sid)) {
                            events.push_back([EV_READABLE, ch as f64, sid as f64, 0.0]);
                        }
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    let sid = sid_u64(id);
                    if readable_reported.insert((ch, sid)) {
                        events.push_back([EV_READABLE, ch as f64, sid as f64, 0.0]);
                    }
                }
                Event::Stream(StreamEvent::Writable { id }) => {
                    let sid = sid_u64(id);
                    c.blocked.remove(&sid);
                    if c.want_writable.remove(&sid) {
                        events.push_back([EV_WRITABLE, ch as f64, sid as f64, 0.0]);
                    }
                }
                Event::Stream(StreamEvent::Finished { id }) => {
                    c.send_done.insert(sid_u64(id));
                }
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    let sid = sid_u64(id);
                    c.stop_codes.insert(sid, error_code.into_inner());
                    c.send_done.insert(sid);
                    c.blocked.remove(&sid);
                    if c.want_writable.remove(&sid) {
                        events.push_back([EV_WRITABLE, ch as f64, sid as f64, 0.0]);
                    }
                }
                Event::Stream(StreamEvent::Available { .. }) => {}
                Event::DatagramReceived => {
                    if !c.datagram_pending {
                        c.datagram_pending = true;
                        events.push_back([EV_DATAGRAM, ch as f64, 0.0, 0.0]);
                    }
                }
            }
        }
        *current = None;
        if !drained {
            // Endpoint events (new connection IDs) and reads may have left frames to send.
            if let Some(Some(c)) = self.conns.get_mut(ch) {
                if !c.tx_queued {
                    c.tx_queued = true;
                    self.tx.push_back(ch);
                }
            }
        }
        if drained {
            self.slab_freed(ch);
            if let Some(c) = self.remove(ch) {
                if !c.close_reported {
                    let (app, code, reason) = c.local_close.unwrap_or((false, 0, Vec::new()));
                    self.close_reasons.insert(ch, reason);
                    self.events.push_back([EV_CLOSED, ch as f64, code as f64, flags_close(false, app, false, false)]);
                }
            }
        }
    }

    fn process_queue(&mut self) {
        while let Some(ch) = self.queue.pop() {
            self.process(ch);
        }
    }

    fn drain_events(&mut self, out: &mut [f64]) -> usize {
        // The application has seen the previous batch of events: forget dropped connections.
        self.final_stats.clear();
        self.process_queue();
        let cap = out.len() / 4;
        let mut n = 0;
        while n < cap {
            let Some(ev) = self.events.pop_front() else { break };
            out[n * 4..n * 4 + 4].copy_from_slice(&ev);
            if ev[0] == EV_DATAGRAM {
                if let Some(c) = self.conn(ev[1] as usize) {
                    c.datagram_pending = false;
                }
            }
            n += 1;
        }
        if self.events.is_empty() {
            // Every readable stream was reported: new data after this point reports again.
            self.readable_reported.clear();
        }
        n
    }

    // -- transmit -------------------------------------------------------------

    /// Fill `out` with packets for one peer. Returns the packet count.
    fn poll_transmit(&mut self, out: &mut [u8], lengths: &mut [u32], peer_out: &mut [u8], meta: &mut [u32]) -> usize {
        let max_packets = lengths.len();
        if max_packets == 0 {
            return 0;
        }
        let now = Instant::now();
        // Stateless packets first: version negotiation, Retry, refusals, resets.
        while let Some(t) = self.endpoint.poll_transmit() {
            if self.stateless.len() < MAX_STATELESS_QUEUE {
                self.stateless.push_back(t);
            }
        }
        while let Some(t) = self.stateless.pop_front() {
            let is_reset = t.contents.first().map_or(false, |b| b & 0x80 == 0);
            if (is_reset && !self.stateless_reset) || t.contents.len() > out.len() {
                continue;
            }
            let len = t.contents.len();
            out[..len].copy_from_slice(&t.contents);
            lengths[0] = len as u32;
            write_addr(peer_out, t.destination);
            meta[0] = 1;
            meta[1] = len as u32;
            return 1;
        }
        let mtu = self.params.max_payload as usize;
        for _ in 0..self.tx.len() {
            let Some(ch) = self.tx.pop_front() else { break };
            let Some(Some(c)) = self.conns.get_mut(ch) else { continue };
            c.tx_queued = false;
            self.current = Some(ch);
            let mut count = 0usize;
            let mut bytes = 0usize;
            let mut dest: Option<SocketAddr> = None;
            loop {
                let room = (max_packets - count).min((out.len() - bytes) / mtu);
                if room == 0 {
                    break;
                }
                if let Some(d) = dest {
                    if c.conn.remote_address() != d {
                        break;
                    }
                }
                let Some(t) = c.conn.poll_transmit(now, room) else { break };
                let len = t.contents.len();
                if bytes + len > out.len() {
                    // Cannot happen: quinn never exceeds room * path MTU. Refuse rather than overflow.
                    break;
                }
                out[bytes..bytes + len].copy_from_slice(&t.contents);
                let seg = t.segment_size.unwrap_or(len).max(1);
                let mut off = 0;
                while off < len && count < max_packets {
                    let l = seg.min(len - off);
                    lengths[count] = l as u32;
                    count += 1;
                    off += l;
                }
                bytes += len;
                dest = Some(t.destination);
            }
            self.current = None;
            if count > 0 {
                // It may have more: back of the line, behind the others.
                write_addr(peer_out, dest.unwrap());
                meta[0] = count as u32;
                meta[1] = bytes as u32;
                self.enqueue(ch);
                return count;
            }
        }
        0
    }

    // -- timers --------------------------------------------------------------

    fn next_timeout_ms(&mut self) -> f64 {
        let mut best: Option<Instant> = None;
        for c in self.conns.iter_mut().flatten() {
            if let Some(t) = c.conn.poll_timeout() {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
            if let Some(p) = c.next_ping {
                best = Some(best.map_or(p, |b| b.min(p)));
            }
        }
        match best {
            None => -1.0,
            Some(t) => {
                // Fractional: pacing deadlines are often tens of microseconds away.
                t.saturating_duration_since(Instant::now()).as_secs_f64() * 1000.0
            }
        }
    }

    fn handle_timeout(&mut self) {
        let now = Instant::now();
        for ch in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get_mut(ch) else { continue };
            let mut touched = false;
            self.current = Some(ch);
            if let Some(t) = c.conn.poll_timeout() {
                if t <= now {
                    c.conn.handle_timeout(now);
                    touched = true;
                }
            }
            if let (Some(p), Some(ka)) = (c.next_ping, c.keep_alive) {
                if p <= now {
                    c.conn.ping();
                    c.next_ping = Some(now + ka);
                    touched = true;
                }
            }
            self.current = None;
            if touched {
                self.enqueue(ch);
            }
        }
    }

    // -- client --------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn connect(
        &mut self,
        peer: SocketAddr,
        server_name: &str,
        alpn: Vec<Vec<u8>>,
        ca: &[u8],
        verify: bool,
        cert: &[u8],
        key: &[u8],
    ) -> Result<usize, String> {
        let mut cache_key = Vec::new();
        cache_key.push(verify as u8);
        for a in &alpn {
            cache_key.extend_from_slice(&(a.len() as u32).to_le_bytes());
            cache_key.extend_from_slice(a);
        }
        let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec();
        cache_key.extend(digest(ca));
        cache_key.extend(digest(cert));
        let crypto = match self.client_crypto.get(&cache_key) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(client_tls(alpn, ca, verify, cert, key)?);
                if self.client_crypto.len() > 64 {
                    self.client_crypto.clear();
                }
                self.client_crypto.insert(cache_key, c.clone());
                c
            }
        };
        let mut cfg = ClientConfig::new(crypto);
        cfg.transport_config(self.transport.clone());
        let (ch, conn) = self.endpoint.connect(cfg, peer, server_name).map_err(|e| e.to_string())?;
        self.insert(ch.0, conn);
        Ok(ch.0)
    }
}

fn conn_stats(c: &mut Conn, p: &Params) -> [f64; 12] {
    let s = c.conn.stats();
    let dgram = if c.established { c.conn.datagrams().max_size().map_or(0.0, |m| m as f64) } else { 0.0 };
    [
        s.udp_tx.datagrams as f64,
        s.udp_rx.datagrams as f64,
        s.path.lost_packets as f64,
        s.path.lost_packets as f64,
        s.udp_tx.bytes as f64,
        s.udp_rx.bytes as f64,
        s.path.lost_bytes as f64,
        s.path.rtt.as_secs_f64() * 1000.0,
        s.path.cwnd as f64,
        0.0,
        p.max_payload as f64,
        dgram,
    ]
}

fn close_info(reason: &ConnectionError, local: Option<&(bool, u64, Vec<u8>)>) -> (u64, f64, Vec<u8>) {
    match reason {
        ConnectionError::TimedOut => (0, flags_close(false, false, true, false), Vec::new()),
        ConnectionError::ApplicationClosed(c) => {
            (c.error_code.into_inner(), flags_close(true, true, false, false), c.reason.to_vec())
        }
        ConnectionError::ConnectionClosed(c) => {
            (u64::from(c.error_code), flags_close(true, false, false, false), c.reason.to_vec())
        }
        ConnectionError::TransportError(e) => {
            (u64::from(e.code), flags_close(false, false, false, false), e.reason.clone().into_bytes())
        }
        ConnectionError::Reset => (0, flags_close(true, false, false, true), b"stateless reset".to_vec()),
        ConnectionError::VersionMismatch => {
            (0, flags_close(true, false, false, false), b"no common QUIC version".to_vec())
        }
        ConnectionError::LocallyClosed => match local {
            Some((app, code, r)) => (*code, flags_close(false, *app, false, false), r.clone()),
            None => (0, flags_close(false, true, false, false), Vec::new()),
        },
    }
}

fn read_certs(pem: &[u8]) -> Result<Vec<rustls::Certificate>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..]).map_err(|e| format!("certificate PEM: {e}"))?;
    Ok(certs.into_iter().map(rustls::Certificate).collect())
}

fn read_key(pem: &[u8]) -> Result<rustls::PrivateKey, String> {
    let items = rustls_pemfile::read_all(&mut &pem[..]).map_err(|e| format!("key PEM: {e}"))?;
    for item in items {
        match item {
            rustls_pemfile::Item::PKCS8Key(k) | rustls_pemfile::Item::ECKey(k) | rustls_pemfile::Item::RSAKey(k) => {
                return Ok(rustls::PrivateKey(k))
            }
            _ => {}
        }
    }
    Err("no private key in the PEM data".into())
}

/// Completes the handshake whatever the certificate: the caller checks it (e.g. against a
/// pinned fingerprint) from the peer certificates. rustls still verifies the handshake
/// signature against the presented key.
struct CallerVerifies;

impl rustls::client::ServerCertVerifier for CallerVerifies {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::Certificate,
        _intermediates: &[rustls::Certificate],
        _server_name: &rustls::ServerName,
        _scts: &mut dyn Iterator<Item = &[u8]>,
        _ocsp: &[u8],
        _now: std::time::SystemTime,
    ) -> Result<rustls::client::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::ServerCertVerified::assertion())
    }
}

fn client_tls(alpn: Vec<Vec<u8>>, ca: &[u8], verify: bool, cert: &[u8], key: &[u8]) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder()
        .with_safe_default_cipher_suites()
        .with_safe_default_kx_groups()
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    macro_rules! finish {
        ($b:expr) => {
            if cert.is_empty() {
                $b.with_no_client_auth()
            } else {
                $b.with_single_cert(read_certs(cert)?, read_key(key)?)
                    .map_err(|e| format!("client certificate/key: {e}"))?
            }
        };
    }
    let mut cfg = if verify {
        let mut roots = rustls::RootCertStore::empty();
        let bundle;
        let pem: &[u8] = if ca.is_empty() {
            bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
            &bundle
        } else {
            ca
        };
        for c in read_certs(pem)? {
            // Skip certificates webpki cannot parse rather than refusing the whole bundle.
            let _ = roots.add(&c);
        }
        if roots.is_empty() {
            return Err("no usable CA certificate to verify the server against".into());
        }
        finish!(builder.with_root_certificates(roots))
    } else {
        finish!(builder.with_custom_certificate_verifier(Arc::new(CallerVerifies)))
    };
    cfg.alpn_protocols = alpn;
    cfg.enable_early_data = false;
    Ok(cfg)
}

fn parse_alpn(buf: &[u8]) -> Vec<Vec<u8>> {
    // Length-prefixed list (one byte each), as in TLS.
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        let l = buf[i] as usize;
        i += 1;
        if l == 0 || i + l > buf.len() {
            break;
        }
        out.push(buf[i..i + l].to_vec());
        i += l;
    }
    out
}

fn read_addr(ip: &[u8], port: u32, family: u32) -> Option<SocketAddr> {
    if port > 65535 {
        return None;
    }
    let addr = match family {
        4 if ip.len() >= 4 => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        6 if ip.len() >= 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&ip[..16]);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(addr, port as u16))
}

/// `out`: 16 address bytes, 2 port bytes (big endian), 1 family byte (4 or 6).
fn write_addr(out: &mut [u8], addr: SocketAddr) {
    if out.len() < 19 {
        return;
    }
    let (ip, fam) = match addr.ip() {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, 4u8)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                (b, 4u8)
            }
            None => (v6.octets(), 6u8),
        },
    };
    out[..16].copy_from_slice(&ip);
    out[16..18].copy_from_slice(&addr.port().to_be_bytes());
    out[18] = fam;
}

// ---------------------------------------------------------------------------
// FFI boundary

/// # Safety
/// `p` must be null or valid for `len` bytes for the duration of the call.
unsafe fn ffi_slice<'a, T>(p: *const T, len: usize) -> &'a [T] {
    if p.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller (koffi) passes a live buffer of `len` elements.
        unsafe { std::slice::from_raw_parts(p, len) }
    }
}

/// # Safety
/// `p` must be null or valid and exclusively ours for `len` elements during the call.
unsafe fn ffi_slice_mut<'a, T>(p: *mut T, len: usize) -> &'a mut [T] {
    if p.is_null() || len == 0 {
        &mut []
    } else {
        // SAFETY: as above; koffi hands us the memory of a caller-owned typed array.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }
}

/// Run `f` on the engine behind `ep`, turning a panic into `on_panic` and closing the
/// connection that was being worked on.
fn with_engine<R>(ep: *mut Engine, on_panic: R, f: impl FnOnce(&mut Engine) -> R) -> R {
    if ep.is_null() {
        return on_panic;
    }
    // SAFETY: `ep` comes from `stoq_engine_new` and is freed only by `stoq_engine_free`;
    // the JavaScript side calls one function at a time on one thread.
    let engine = unsafe { &mut *ep };
    match catch_unwind(AssertUnwindSafe(|| f(engine))) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: same pointer; the closure's borrow ended with the unwind.
            let engine = unsafe { &mut *ep };
            recover_from_panic(engine);
            on_panic
        }
    }
}

fn recover_from_panic(engine: &mut Engine) {
    engine.panics += 1;
    let msg = take_panic_message();
    engine.last_error = format!("quinn engine panic: {msg}");
    let victim = engine.current.take();
    if let Some(ch) = victim {
        if let Some(c) = engine.remove(ch) {
            let drained = catch_unwind(AssertUnwindSafe(|| {
                engine.endpoint.handle_event(ConnectionHandle(ch), EndpointEvent::drained())
            }));
            if drained.is_ok() {
                engine.slab_freed(ch);
            }
            if !c.close_reported {
                let reason = format!("engine panic: {msg}").into_bytes();
                engine.close_reasons.insert(ch, reason);
                engine.events.push_back([EV_CLOSED, ch as f64, INTERNAL_ERROR as f64, flags_close(false, false, false, false)]);
            }
        }
    }
    engine.queue.retain(|&h| engine.conns.get(h).map_or(false, |c| c.is_some()));
}

fn set_error(e: &mut Engine, msg: String) {
    e.last_error = msg;
}

/// Create an engine. `params` (13 numbers): idle ms, initial max data, initial max stream
/// data, max stream window, max connection window, bidi streams, uni streams, max UDP
/// payload, congestion control (0 cubic, 1 reno, 2 bbr), datagrams (0/1), datagram queue
/// length, pacing (0/1, quinn always paces), hystart (0/1, unused by quinn); optionally
/// a 14th: the connection-ID prefix (0 to 255: every CID issued starts with that byte;
/// -1 or absent: random CIDs). Returns null on invalid parameters.
#[no_mangle]
pub extern "C" fn stoq_engine_new(params: *const f64, n: usize) -> *mut Engine {
    install_panic_hook();
    let r = catch_unwind(|| {
        // SAFETY: `params` is valid for `n` doubles (caller contract).
        let p = unsafe { ffi_slice(params, n) };
        if p.len() < 13 {
            return std::ptr::null_mut();
        }
        let int = |x: f64| if x.is_finite() && x >= 0.0 { x as u64 } else { u64::MAX };
        let max_payload = int(p[7]);
        if !(1200..=65527).contains(&max_payload) {
            return std::ptr::null_mut();
        }
        // p[13] (optional, ABI 2): connection-ID prefix 0..=255, or -1 (absent) for none.
        let cid_prefix = match p.get(13).copied() {
            None => None,
            Some(x) if x == -1.0 => None,
            Some(x) if x.is_finite() && x.fract() == 0.0 && (0.0..=255.0).contains(&x) => Some(x as u8),
            Some(_) => return std::ptr::null_mut(),
        };
        let params = Params {
            cid_prefix,
            idle_ms: int(p[0]),
            max_data: int(p[1]),
            max_connection_window: int(p[4]).max(int(p[1])),
            max_stream_data: int(p[2]),
            bidi: int(p[5]),
            uni: int(p[6]),
            max_payload: max_payload as u16,
            cc: int(p[8]) as u32,
            datagrams: p[9] != 0.0,
            datagram_queue: int(p[10]).min(1 << 20),
        };
        match Engine::new(params) {
            Ok(e) => Box::into_raw(Box::new(e)),
            Err(_) => std::ptr::null_mut(),
        }
    });
    r.unwrap_or(std::ptr::null_mut())
}

#[no_mangle]
pub extern "C" fn stoq_engine_free(ep: *mut Engine) {
    if ep.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ep` came from `Box::into_raw` in `stoq_engine_new` and is freed once.
        drop(unsafe { Box::from_raw(ep) });
    }));
}

/// Copy the last error message into `buf`; returns its full length.
#[no_mangle]
pub extern "C" fn stoq_last_error(ep: *mut Engine, buf: *mut u8, cap: usize) -> usize {
    with_engine(ep, 0, |e| {
        // SAFETY: `buf` is valid for `cap` bytes.
        let out = unsafe { ffi_slice_mut(buf, cap) };
        let msg = e.last_error.as_bytes();
        let n = msg.len().min(out.len());
        out[..n].copy_from_slice(&msg[..n]);
        msg.len()
    })
}

#[no_mangle]
pub extern "C" fn stoq_panic_count(ep: *mut Engine) -> f64 {
    with_engine(ep, 0.0, |e| e.panics as f64)
}

#[no_mangle]
pub extern "C" fn stoq_dropped_packets(ep: *mut Engine) -> f64 {
    with_engine(ep, 0.0, |e| e.dropped as f64)
}

#[no_mangle]
pub extern "C" fn stoq_connection_count(ep: *mut Engine) -> u32 {
    with_engine(ep, 0, |e| e.live as u32)
}

/// Start accepting connections. `alpn` is a TLS-style list (length byte, bytes)*.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn stoq_listen(
    ep: *mut Engine,
    cert: *const u8,
    cert_len: usize,
    key: *const u8,
    key_len: usize,
    alpn: *const u8,
    alpn_len: usize,
    retry: u32,
    max_conns: u32,
    stateless_reset: u32,
    secret: *const u8,
    secret_len: usize,
) -> i32 {
    with_engine(ep, ERR_PANIC, |e| {
        // SAFETY: each pointer is valid for its length (caller contract).
        let (cert, key, alpn, secret) = unsafe {
            (ffi_slice(cert, cert_len), ffi_slice(key, key_len), ffi_slice(alpn, alpn_len), ffi_slice(secret, secret_len))
        };
        let secret = if secret.is_empty() { None } else { Some(secret) };
        match e.listen(cert, key, parse_alpn(alpn), retry != 0, max_conns, stateless_reset != 0, secret) {
            Ok(()) => OK,
            Err(m) => {
                set_error(e, m);
                ERR_TLS_CONFIG
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn stoq_stop_listening(ep: *mut Engine) {
    with_engine(ep, (), |e| {
        if e.listening {
            e.endpoint.reject_new_connections();
        }
    })
}

/// Feed received datagrams: `len` bytes holding datagrams of `segment` bytes (GRO).
#[no_mangle]
pub extern "C" fn stoq_receive(
    ep: *mut Engine,
    data: *const u8,
    len: usize,
    segment: usize,
    ip: *const u8,
    port: u32,
    family: u32,
) -> i32 {
    with_engine(ep, ERR_PANIC, |e| {
        // SAFETY: valid for the given lengths (caller contract).
        let (data, ip) = unsafe { (ffi_slice(data, len), ffi_slice(ip, 16)) };
        let Some(from) = read_addr(ip, port, family) else { return ERR_BAD_ARGUMENT };
        e.receive(data, segment, from);
        OK
    })
}

/// Fill `out` with packets for one peer; `lengths[i]` gets packet i's size, `peer` the
/// destination (19 bytes), `meta` [count, bytes]. Returns the packet count.
#[no_mangle]
pub extern "C" fn stoq_poll_transmit(
    ep: *mut Engine,
    out: *mut u8,
    cap: usize,
    lengths: *mut u32,
    max_packets: usize,
    peer: *mut u8,
    meta: *mut u32,
) -> i32 {
    with_engine(ep, 0, |e| {
        // SAFETY: valid for the given lengths (caller contract).
        let (out, lengths, peer, meta) =
            unsafe { (ffi_slice_mut(out, cap), ffi_slice_mut(lengths, max_packets), ffi_slice_mut(peer, 19), ffi_slice_mut(meta, 2)) };
        if meta.len() < 2 {
            return 0;
        }
        e.poll_transmit(out, lengths, peer, meta) as i32
    })
}

#[no_mangle]
pub extern "C" fn stoq_next_timeout(ep: *mut Engine) -> f64 {
    with_engine(ep, -1.0, |e| e.next_timeout_ms())
}

#[no_mangle]
pub extern "C" fn stoq_handle_timeout(ep: *mut Engine) {
    with_engine(ep, (), |e| e.handle_timeout())
}

/// Write pending events into `out` (4 doubles each, `cap` doubles); returns the event count.
/// When it equals `cap / 4`, call again.
#[no_mangle]
pub extern "C" fn stoq_drain_events(ep: *mut Engine, out: *mut f64, cap: usize) -> i32 {
    with_engine(ep, 0, |e| {
        // SAFETY: valid for `cap` doubles.
        let out = unsafe { ffi_slice_mut(out, cap) };
        e.drain_events(out) as i32
    })
}

/// Close reason of a connection reported closed; returns its length (-1 when none).
#[no_mangle]
pub extern "C" fn stoq_take_close_reason(ep: *mut Engine, conn: u32, buf: *mut u8, cap: usize) -> i32 {
    with_engine(ep, -1, |e| {
        // SAFETY: valid for `cap` bytes.
        let out = unsafe { ffi_slice_mut(buf, cap) };
        match e.close_reasons.remove(&(conn as usize)) {
            Some(r) => {
                let n = r.len().min(out.len());
                out[..n].copy_from_slice(&r[..n]);
                n as i32
            }
            None => -1,
        }
    })
}

/// Start a client connection. Returns the handle, or a negative error (message in
/// `stoq_last_error`).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn stoq_connect(
    ep: *mut Engine,
    ip: *const u8,
    port: u32,
    family: u32,
    server_name: *const u8,
    server_name_len: usize,
    alpn: *const u8,
    alpn_len: usize,
    ca: *const u8,
    ca_len: usize,
    verify: u32,
    cert: *const u8,
    cert_len: usize,
    key: *const u8,
    key_len: usize,
) -> i32 {
    with_engine(ep, ERR_PANIC, |e| {
        // SAFETY: valid for the given lengths (caller contract).
        let (ip, name, alpn, ca, cert, key) = unsafe {
            (
                ffi_slice(ip, 16),
                ffi_slice(server_name, server_name_len),
                ffi_slice(alpn, alpn_len),
                ffi_slice(ca, ca_len),
                ffi_slice(cert, cert_len),
                ffi_slice(key, key_len),
            )
        };
        let Some(peer) = read_addr(ip, port, family) else { return ERR_BAD_ARGUMENT };
        let Ok(name) = std::str::from_utf8(name) else { return ERR_BAD_ARGUMENT };
        match e.connect(peer, name, parse_alpn(alpn), ca, verify != 0, cert, key) {
            Ok(h) => h as i32,
            Err(m) => {
                set_error(e, m);
                ERR_CONNECT
            }
        }
    })
}

/// What a per-connection call may touch besides its connection.
struct Ctx<'a> {
    events: &'a mut VecDeque<[f64; 4]>,
    close_reasons: &'a mut HashMap<usize, Vec<u8>>,
    params: Params,
}

/// Run `f` on one live connection; `bad` when the handle is unknown or already reported
/// closed. The connection stays in place, so a panic in `f` is pinned on it.
fn with_conn<R: Copy>(ep: *mut Engine, conn: u32, bad: R, on_panic: R, f: impl FnOnce(&mut Conn, &mut Ctx) -> R) -> R {
    with_engine(ep, on_panic, |e| {
        let ch = conn as usize;
        let r = {
            let Engine { conns, events, params, current, close_reasons, .. } = &mut *e;
            let Some(Some(c)) = conns.get_mut(ch) else { return bad };
            *current = Some(ch);
            let mut ctx = Ctx { events, close_reasons, params: *params };
            let r = f(c, &mut ctx);
            *current = None;
            r
        };
        e.enqueue(ch);
        r
    })
}

#[no_mangle]
pub extern "C" fn stoq_close(ep: *mut Engine, conn: u32, app: u32, code: f64, reason: *const u8, reason_len: usize) -> i32 {
    // SAFETY: valid for `reason_len` bytes.
    let reason = unsafe { ffi_slice(reason, reason_len) };
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, ctx| {
        if c.close_reported || c.local_close.is_some() {
            return OK;
        }
        let code_v = varint(code).unwrap_or(VarInt::from_u32(0));
        c.local_close = Some((app != 0, code_v.into_inner(), reason.to_vec()));
        c.conn.close(Instant::now(), code_v, Bytes::copy_from_slice(reason));
        // Report the close now: the handle is over for the application, while quinn keeps
        // the connection a few PTOs longer to answer the peer (draining), then drops it.
        c.close_reported = true;
        ctx.close_reasons.insert(conn as usize, reason.to_vec());
        ctx.events.push_back([EV_CLOSED, conn as f64, code_v.into_inner() as f64, flags_close(false, app != 0, false, false)]);
        OK
    })
}

#[no_mangle]
pub extern "C" fn stoq_set_keep_alive(ep: *mut Engine, conn: u32, interval_ms: f64) -> i32 {
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        if interval_ms > 0.0 && interval_ms.is_finite() {
            let d = Duration::from_micros((interval_ms * 1000.0) as u64);
            c.keep_alive = Some(d);
            c.next_ping = Some(Instant::now() + d);
        } else {
            c.keep_alive = None;
            c.next_ping = None;
        }
        OK
    })
}

/// Set the connection-level receive window (flow-control credit the peer may use beyond
/// what the application read). A larger window is granted at once (MAX_DATA); a smaller one
/// takes effect as the application reads.
#[no_mangle]
pub extern "C" fn stoq_set_receive_window(ep: *mut Engine, conn: u32, bytes: f64) -> i32 {
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        if !(bytes.is_finite() && bytes >= 0.0) {
            return ERR_BAD_ARGUMENT;
        }
        match VarInt::from_u64(bytes as u64) {
            Ok(v) => {
                c.conn.set_receive_window(v);
                OK
            }
            Err(_) => ERR_BAD_ARGUMENT,
        }
    })
}

/// Open a local stream; returns its id or -1 when the peer's limit is reached.
#[no_mangle]
pub extern "C" fn stoq_open_stream(ep: *mut Engine, conn: u32, bidi: u32) -> f64 {
    with_conn(ep, conn, ERR_BAD_HANDLE as f64, ERR_PANIC as f64, |c, _| {
        match c.conn.streams().open(if bidi != 0 { Dir::Bi } else { Dir::Uni }) {
            Some(id) => sid_u64(id) as f64,
            None => -1.0,
        }
    })
}

/// Queue stream data. Returns bytes accepted, -2 blocked, -1 stopped or closed.
#[no_mangle]
pub extern "C" fn stoq_stream_send(ep: *mut Engine, conn: u32, sid: f64, data: *const u8, len: usize, fin: u32) -> f64 {
    // SAFETY: valid for `len` bytes.
    let data = unsafe { ffi_slice(data, len) };
    with_conn(ep, conn, ERR_BAD_HANDLE as f64, ERR_PANIC as f64, |c, _| {
        let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT as f64 };
        let key = sid_u64(id);
        let mut n = 0usize;
        if !data.is_empty() {
            match c.conn.send_stream(id).write(data) {
                Ok(w) => n = w,
                Err(qp::WriteError::Blocked) => {
                    c.blocked.insert(key);
                    return STREAM_BLOCKED;
                }
                Err(qp::WriteError::Stopped(code)) => {
                    c.stop_codes.insert(key, code.into_inner());
                    return STREAM_STOPPED;
                }
                Err(qp::WriteError::UnknownStream) => return STREAM_STOPPED,
            }
        }
        if fin != 0 && n == data.len() {
            match c.conn.send_stream(id).finish() {
                Ok(()) => {}
                Err(qp::FinishError::Stopped(code)) => {
                    c.stop_codes.insert(key, code.into_inner());
                    if n == 0 {
                        return STREAM_STOPPED;
                    }
                }
                Err(qp::FinishError::UnknownStream) => {
                    if n == 0 {
                        return STREAM_STOPPED;
                    }
                }
            }
        }
        n as f64
    })
}

/// Read stream data into `out`. Returns 1 when something (bytes, FIN or a reset) was read,
/// 0 when nothing is readable. `result` = [bytes, fin (0/1), reset code or -1].
#[no_mangle]
pub extern "C" fn stoq_stream_recv(ep: *mut Engine, conn: u32, sid: f64, out: *mut u8, cap: usize, result: *mut f64) -> i32 {
    // SAFETY: valid for `cap` bytes and 3 doubles.
    let (out, result) = unsafe { (ffi_slice_mut(out, cap), ffi_slice_mut(result, 3)) };
    if result.len() < 3 {
        return ERR_BAD_ARGUMENT;
    }
    result[0] = 0.0;
    result[1] = 0.0;
    result[2] = -1.0;
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT };
        let key = sid_u64(id);
        let mut rs = c.conn.recv_stream(id);
        let mut chunks = match rs.read(true) {
            Ok(ch) => ch,
            Err(_) => return 0,
        };
        let mut got = 0usize;
        let mut fin = false;
        let mut reset: Option<u64> = None;
        while got < out.len() {
            match chunks.next(out.len() - got) {
                Ok(Some(chunk)) => {
                    let b = &chunk.bytes;
                    out[got..got + b.len()].copy_from_slice(b);
                    got += b.len();
                }
                Ok(None) => {
                    fin = true;
                    break;
                }
                Err(qp::ReadError::Blocked) => break,
                Err(qp::ReadError::Reset(code)) => {
                    reset = Some(code.into_inner());
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        if fin || reset.is_some() {
            c.recv_done.insert(key);
        }
        if got == 0 && !fin && reset.is_none() {
            return 0;
        }
        result[0] = got as f64;
        result[1] = if fin { 1.0 } else { 0.0 };
        result[2] = reset.map_or(-1.0, |r| r as f64);
        1
    })
}

/// Bytes the stream can take now as far as this engine knows: -1 stopped, 0 blocked,
/// otherwise the connection window (quinn does not expose per-stream credit).
#[no_mangle]
pub extern "C" fn stoq_stream_capacity(ep: *mut Engine, conn: u32, sid: f64) -> f64 {
    with_conn(ep, conn, ERR_BAD_HANDLE as f64, ERR_PANIC as f64, |c, ctx| {
        let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT as f64 };
        let key = sid_u64(id);
        if c.stop_codes.contains_key(&key) {
            return -1.0;
        }
        match c.conn.send_stream(id).stopped() {
            Ok(Some(code)) => {
                c.stop_codes.insert(key, code.into_inner());
                -1.0
            }
            Ok(None) => {
                if c.blocked.contains(&key) {
                    0.0
                } else {
                    ctx.params.max_stream_data as f64
                }
            }
            Err(_) => -1.0,
        }
    })
}

#[no_mangle]
pub extern "C" fn stoq_stream_want_writable(ep: *mut Engine, conn: u32, sid: f64) -> i32 {
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, ctx| {
        let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT };
        let key = sid_u64(id);
        if c.blocked.contains(&key) && !c.stop_codes.contains_key(&key) {
            c.want_writable.insert(key);
        } else {
            // Not blocked in quinn's sense: quinn would never announce it, so say it now.
            ctx.events.push_back([EV_WRITABLE, conn as f64, key as f64, 0.0]);
        }
        OK
    })
}

/// 1 when the stream is over: what we send was all acknowledged (or reset/stopped) and what
/// we receive was read to the end (or reset), for the directions the stream has.
#[no_mangle]
pub extern "C" fn stoq_stream_complete(ep: *mut Engine, conn: u32, sid: f64) -> i32 {
    with_engine(ep, ERR_PANIC, |e| {
        let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT };
        let key = sid_u64(id);
        let Some(c) = e.conn(conn as usize) else { return ERR_BAD_HANDLE };
        let side_client = c.conn.side().is_client();
        let local = id.initiator().is_client() == side_client;
        let bidi = id.dir() == Dir::Bi;
        let sends = bidi || local;
        let recvs = bidi || !local;
        let send_ok = !sends || c.send_done.contains(&key);
        let recv_ok = !recvs || c.recv_done.contains(&key);
        if send_ok && recv_ok {
            1
        } else {
            0
        }
    })
}

#[no_mangle]
pub extern "C" fn stoq_stream_stop_code(ep: *mut Engine, conn: u32, sid: f64) -> f64 {
    with_conn(ep, conn, -1.0, ERR_PANIC as f64, |c, _| {
        let Some(id) = stream_id(sid) else { return -1.0 };
        let key = sid_u64(id);
        if let Some(code) = c.stop_codes.get(&key) {
            return *code as f64;
        }
        match c.conn.send_stream(id).stopped() {
            Ok(Some(code)) => {
                c.stop_codes.insert(key, code.into_inner());
                code.into_inner() as f64
            }
            _ => -1.0,
        }
    })
}

/// `write` = 1: RESET_STREAM our sending side; 0: STOP_SENDING the peer's.
#[no_mangle]
pub extern "C" fn stoq_stream_shutdown(ep: *mut Engine, conn: u32, sid: f64, write: u32, code: f64) -> i32 {
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        let (Some(id), Some(code)) = (stream_id(sid), varint(code)) else { return ERR_BAD_ARGUMENT };
        let key = sid_u64(id);
        let r = if write != 0 {
            let r = c.conn.send_stream(id).reset(code);
            c.send_done.insert(key);
            r
        } else {
            let r = c.conn.recv_stream(id).stop(code);
            c.recv_done.insert(key);
            r
        };
        if r.is_ok() {
            OK
        } else {
            ERR_STREAM
        }
    })
}

#[no_mangle]
pub extern "C" fn stoq_stream_priority(ep: *mut Engine, conn: u32, sid: f64, urgency: u32) -> i32 {
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT };
        // HTTP urgency 0 (most urgent) .. 7; quinn sends higher priorities first.
        match c.conn.send_stream(id).set_priority(7 - urgency.min(7) as i32) {
            Ok(()) => OK,
            Err(_) => ERR_STREAM,
        }
    })
}

/// Queue a datagram: 1 queued, 0 queue full, -3 too large, -4 not negotiated.
#[no_mangle]
pub extern "C" fn stoq_datagram_send(ep: *mut Engine, conn: u32, data: *const u8, len: usize) -> i32 {
    // SAFETY: valid for `len` bytes.
    let data = unsafe { ffi_slice(data, len) };
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        // quinn-proto 0.9 panics computing the datagram size before 1-RTT keys exist.
        if !c.established {
            return DGRAM_UNSUPPORTED;
        }
        let mut d = c.conn.datagrams();
        match d.max_size() {
            None => return DGRAM_UNSUPPORTED,
            Some(m) if data.len() > m => return DGRAM_TOO_LARGE,
            _ => {}
        }
        if d.send_buffer_space() < data.len() {
            return DGRAM_FULL;
        }
        match d.send(Bytes::copy_from_slice(data)) {
            Ok(()) => 1,
            Err(qp::SendDatagramError::TooLarge) => DGRAM_TOO_LARGE,
            Err(_) => DGRAM_UNSUPPORTED,
        }
    })
}

/// Read one datagram into `out`; returns its length (which may exceed `cap`: then it was
/// truncated), or -1 when none is queued.
#[no_mangle]
pub extern "C" fn stoq_datagram_recv(ep: *mut Engine, conn: u32, out: *mut u8, cap: usize) -> i32 {
    // SAFETY: valid for `cap` bytes.
    let out = unsafe { ffi_slice_mut(out, cap) };
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| match c.conn.datagrams().recv() {
        Some(d) => {
            let n = d.len().min(out.len());
            out[..n].copy_from_slice(&d[..n]);
            d.len() as i32
        }
        None => -1,
    })
}

#[no_mangle]
pub extern "C" fn stoq_datagram_max_size(ep: *mut Engine, conn: u32) -> i32 {
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        if !c.established {
            return -1;
        }
        match c.conn.datagrams().max_size() {
            Some(m) => m as i32,
            None => -1,
        }
    })
}

#[no_mangle]
pub extern "C" fn stoq_is_established(ep: *mut Engine, conn: u32) -> i32 {
    with_conn(ep, conn, 0, 0, |c, _| (c.established && !c.close_reported) as i32)
}

fn handshake_data(c: &Conn) -> Option<Box<qp::crypto::rustls::HandshakeData>> {
    let any: Box<dyn Any> = c.conn.crypto_session().handshake_data()?;
    any.downcast::<qp::crypto::rustls::HandshakeData>().ok()
}

/// Negotiated ALPN into `buf`; returns its length (0 before the handshake).
#[no_mangle]
pub extern "C" fn stoq_alpn(ep: *mut Engine, conn: u32, buf: *mut u8, cap: usize) -> i32 {
    // SAFETY: valid for `cap` bytes.
    let out = unsafe { ffi_slice_mut(buf, cap) };
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        let p = handshake_data(c).and_then(|h| h.protocol).unwrap_or_default();
        let n = p.len().min(out.len());
        out[..n].copy_from_slice(&p[..n]);
        p.len() as i32
    })
}

/// SNI the client sent (server side); returns its length, or -1 when none.
#[no_mangle]
pub extern "C" fn stoq_server_name(ep: *mut Engine, conn: u32, buf: *mut u8, cap: usize) -> i32 {
    // SAFETY: valid for `cap` bytes.
    let out = unsafe { ffi_slice_mut(buf, cap) };
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| match handshake_data(c).and_then(|h| h.server_name) {
        Some(s) => {
            let b = s.as_bytes();
            let n = b.len().min(out.len());
            out[..n].copy_from_slice(&b[..n]);
            b.len() as i32
        }
        None => -1,
    })
}

/// Peer certificates (DER, leaf first) back to back into `buf`, sizes into `lengths`.
/// Returns the count (-1 none); when `buf` is too small, returns -(bytes needed) - 2.
#[no_mangle]
pub extern "C" fn stoq_peer_certificates(ep: *mut Engine, conn: u32, buf: *mut u8, cap: usize, lengths: *mut u32, max: usize) -> i32 {
    // SAFETY: valid for the given lengths.
    let (out, lengths) = unsafe { (ffi_slice_mut(buf, cap), ffi_slice_mut(lengths, max)) };
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        let Some(any) = c.conn.crypto_session().peer_identity() else { return -1 };
        let Ok(certs) = any.downcast::<Vec<rustls::Certificate>>() else { return -1 };
        let total: usize = certs.iter().map(|c| c.0.len()).sum();
        if total > out.len() || certs.len() > lengths.len() {
            return -(total as i32) - 2;
        }
        let mut off = 0;
        for (i, cert) in certs.iter().enumerate() {
            out[off..off + cert.0.len()].copy_from_slice(&cert.0);
            lengths[i] = cert.0.len() as u32;
            off += cert.0.len();
        }
        certs.len() as i32
    })
}

/// 12 numbers: packets sent, received, lost, retransmitted (quinn: lost), bytes sent,
/// received, lost, RTT ms, cwnd, delivery rate (0: unknown), path MTU, peer max datagram.
#[no_mangle]
pub extern "C" fn stoq_stats(ep: *mut Engine, conn: u32, out: *mut f64) -> i32 {
    // SAFETY: valid for 12 doubles.
    let out = unsafe { ffi_slice_mut(out, 12) };
    if out.len() < 12 {
        return ERR_BAD_ARGUMENT;
    }
    let found = with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, ctx| {
        out.copy_from_slice(&conn_stats(c, &ctx.params));
        OK
    });
    if found != ERR_BAD_HANDLE {
        return found;
    }
    // A connection reported closed and already drained: its last figures.
    with_engine(ep, ERR_PANIC, |e| match e.final_stats.get(&(conn as usize)) {
        Some(s) => {
            out.copy_from_slice(s);
            OK
        }
        None => ERR_BAD_HANDLE,
    })
}

/// Peer address (19 bytes: 16 address, 2 port big endian, 1 family).
#[no_mangle]
pub extern "C" fn stoq_peer_address(ep: *mut Engine, conn: u32, out: *mut u8) -> i32 {
    // SAFETY: valid for 19 bytes.
    let out = unsafe { ffi_slice_mut(out, 19) };
    with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
        write_addr(out, c.conn.remote_address());
        OK
    })
}

/// Library ABI version, checked by the loader.
#[no_mangle]
pub extern "C" fn stoq_abi_version() -> u32 {
    // 2: stoq_engine_new takes an optional 14th parameter (the connection-ID prefix).
    // 3: stoq_set_receive_window.
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_list() {
        assert_eq!(parse_alpn(b"\x02h3\x06stoq/1"), vec![b"h3".to_vec(), b"stoq/1".to_vec()]);
        assert!(parse_alpn(b"\x05ab").is_empty());
    }

    #[test]
    fn addresses_round_trip() {
        let mut out = [0u8; 19];
        let a: SocketAddr = "[::1]:4433".parse().unwrap();
        write_addr(&mut out, a);
        assert_eq!(read_addr(&out[..16], 4433, 6), Some(a));
        let b: SocketAddr = "127.0.0.1:9".parse().unwrap();
        write_addr(&mut out, b);
        assert_eq!(out[18], 4);
        assert_eq!(read_addr(&out[..16], 9, 4), Some(b));
    }
}
