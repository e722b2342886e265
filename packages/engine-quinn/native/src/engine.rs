//! The engine: one quinn-proto `Endpoint`, its connections, and the batch operations the ABI
//! exposes (feed a received batch, fill a transmit batch, drain events, timers).

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use qp::{
    ClientConfig, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointEvent, Event, Incoming, ServerConfig,
    StreamEvent, StreamId, TransportConfig, VarInt,
};
use quinn_proto as qp;
use ring::hkdf;

use crate::abi::{
    DEFAULT_SESSION_CACHE, DGRAM_FULL, DGRAM_QUEUED, DGRAM_TOO_LARGE, DGRAM_UNSUPPORTED, EARLY_ACCEPTED, EARLY_NONE, EV_CLOSED,
    EV_DATAGRAM, EV_ESTABLISHED, EV_INCOMING, EV_READABLE, EV_WRITABLE, INITIAL_STREAM_WINDOW, MAX_TX_SLOTS, MAX_TX_SLOT_SIZE, STATS_LEN,
};
use crate::addr::write_addr;
use crate::config::{connection_transport_config, endpoint_config, random_secret, transport_config, CidFormat, CloseFlag, Params};
use crate::done::StreamsDone;
use crate::early::ZeroRtt;
use crate::panic::{close_flags, recover, take_message, version_close_flags};
use crate::tls;

mod events;
mod transmit;

/// Stateless packets (Retry, version negotiation, refusals, resets) waiting to be sent, at most.
const MAX_STATELESS_QUEUE: usize = 256;
/// Client TLS configurations kept (by ALPN, CA, identity, verify), at most.
const MAX_CLIENT_CONFIGS: usize = 64;

pub type Stats = [f64; STATS_LEN];

pub struct Conn {
    pub conn: qp::Connection,
    /// In `Engine::queue`: has state to turn into events.
    queued: bool,
    /// In `Engine::tx`: may have packets to send.
    tx_queued: bool,
    pub established: bool,
    pub close_reported: bool,
    /// What `stoq_close` asked for: (app, code, reason).
    pub local_close: Option<(bool, u64, Vec<u8>)>,
    pub keep_alive: Option<Duration>,
    pub next_ping: Option<Instant>,
    pub want_writable: HashSet<u64>,
    pub blocked: HashSet<u64>,
    /// Stream halves that are over (see done.rs): bounded by the streams open at once.
    pub done: StreamsDone,
    pub stop_codes: HashMap<u64, u64>,
    datagram_pending: bool,
    /// `stoq_test_panic(PANIC_NEXT_DATAGRAM)`: panic while handling the next datagram.
    pub panic_on_datagram: bool,
    /// A server-side close asked for during the handshake, held until the handshake completes
    /// (or the deadline): see `Conn::close`.
    deferred_close: Option<(Instant, VarInt, Bytes)>,
    /// The host raises the peer's stream limits itself (`stoq_set_peer_stream_limit`): no
    /// widening to the configured limits after the handshake.
    pub host_stream_limits: bool,
    /// Set when the connection is closed: its congestion controller then lets the
    /// CONNECTION_CLOSE through a full window (see `CloseFlag`).
    close_flag: CloseFlag,
    /// The congestion window when `close_flag` was set (what the statistics report after).
    cwnd_at_close: Option<u64>,
    /// Versions listed by the last Version Negotiation packet the server sent (quinn reads it
    /// but keeps only "no common version").
    offered_versions: Option<Vec<u32>>,
    /// Resumption and 0-RTT (see early.rs).
    pub zero_rtt: ZeroRtt,
    /// The peer's address as last seen, and how often it changed (a server following a
    /// migrating or NAT-rebound client; quinn validates the new path itself).
    path: SocketAddr,
    pub path_changes: u64,
    /// IANA codepoint of the key exchange group the handshake used (0 until known).
    pub kx_group: u16,
}

impl Conn {
    fn new(conn: qp::Connection, close_flag: CloseFlag) -> Self {
        Conn {
            path: conn.remote_address(),
            path_changes: 0,
            done: StreamsDone::new(conn.side()),
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
            stop_codes: HashMap::new(),
            datagram_pending: false,
            panic_on_datagram: false,
            deferred_close: None,
            host_stream_limits: false,
            close_flag,
            cwnd_at_close: None,
            offered_versions: None,
            zero_rtt: ZeroRtt::default(),
            kx_group: 0,
        }
    }

    /// Feed quinn a datagram of this connection, noting a full handshake's certificate step.
    fn handle_event(&mut self, ev: qp::ConnectionEvent) {
        tls::start_handshake_probe();
        self.conn.handle_event(ev);
        self.zero_rtt.full_handshake |= tls::full_handshake_seen();
    }

    /// The handshake completed after 0-RTT: take the verdict (replaying rejected data), then
    /// report streams the record limit held back as writable.
    fn settle_early(&mut self, chf: f64, events: &mut VecDeque<[f64; 4]>) {
        if !self.zero_rtt.recording() || self.conn.is_handshaking() {
            return;
        }
        for id in self.zero_rtt.settle(&mut self.conn) {
            // Could not be opened again: report it stopped (code 0) rather than lose it silently.
            self.stop_codes.insert(id, 0);
            let sid = StreamId::from(VarInt::from_u64(id).unwrap_or(VarInt::from_u32(0)));
            self.done.send_done(sid);
            self.done.recv_done(sid);
            self.zero_rtt.capped.insert(id);
        }
        for id in std::mem::take(&mut self.zero_rtt.capped) {
            if self.zero_rtt.has_backlog(id) {
                continue;
            }
            self.blocked.remove(&id);
            if self.want_writable.remove(&id) {
                events.push_back([EV_WRITABLE as f64, chf, id as f64, 0.0]);
            }
        }
    }

    /// Resumed: no certificate in the handshake (known once it completed; on a server that
    /// accepted 0-RTT, at once).
    pub fn resumed(&self) -> bool {
        !self.zero_rtt.full_handshake && (self.established || self.zero_rtt.state() == EARLY_ACCEPTED)
    }

    /// Close the connection (an application CONNECTION_CLOSE: quinn has no public transport
    /// close). Before the handshake completes, quinn 0.11 sends the close in every packet space
    /// it has keys for, and RFC 9000 §10.2.3 turns it into a bare APPLICATION_ERROR without
    /// reason in Initial and Handshake packets, which the client reads first: a server refusing
    /// a client ("server busy") would lose its code and reason. So a server holds such a close
    /// until its side of the handshake completes (then only 1-RTT keys remain and the close
    /// goes out whole), at most max(3 RTT, 100 ms) and 1 s; past that it closes anyway.
    pub fn close(&mut self, now: Instant, code: VarInt, reason: Bytes) {
        if self.conn.side().is_server() && self.conn.is_handshaking() && !self.conn.is_closed() {
            let wait = (self.conn.rtt() * 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
            self.deferred_close = Some((now + wait, code, reason));
            return;
        }
        self.conn.close(now, code, reason);
    }

    /// Send a held close when its time has come (handshake done, or `now` past the deadline).
    fn flush_deferred_close(&mut self, now: Instant, handshake_done: bool) -> bool {
        match &self.deferred_close {
            Some((deadline, _, _)) if handshake_done || *deadline <= now => {
                let (_, code, reason) = self.deferred_close.take().expect("checked");
                self.conn.close(now, code, reason);
                true
            }
            _ => false,
        }
    }

    /// The negotiated ALPN and the client's SNI, once the handshake has them.
    pub fn handshake_data(&self) -> Option<Box<qp::crypto::rustls::HandshakeData>> {
        let any: Box<dyn Any> = self.conn.crypto_session().handshake_data()?;
        any.downcast::<qp::crypto::rustls::HandshakeData>().ok()
    }

    /// The peer's certificate chain (DER, leaf first).
    pub fn peer_certificates(&self) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
        let any = self.conn.crypto_session().peer_identity()?;
        any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok().map(|b| *b)
    }

    /// Largest datagram the peer takes (0: none, or before the handshake).
    pub fn max_datagram(&mut self) -> Option<usize> {
        if !self.established {
            return None;
        }
        self.conn.datagrams().max_size()
    }
}

/// A stateless packet to send: destination, bytes, whether it is a stateless reset.
struct HeldTransmit {
    ch: usize,
    data: Vec<u8>,
    segment: usize,
    to: SocketAddr,
}

struct Stateless {
    to: SocketAddr,
    data: Vec<u8>,
    reset: bool,
}

pub struct Engine {
    endpoint: Endpoint,
    /// The endpoint's connection-ID format, to check the DCID of Initials with a Retry token.
    cids: CidFormat,
    /// Destination CID of the datagram being handled, when it is a long-header packet.
    dcid: [u8; 20],
    dcid_len: usize,
    pub params: Params,
    transport: Arc<TransportConfig>,
    /// The host's socket sets Don't Fragment (`stoq_allow_mtu_discovery`): connections made
    /// from now on probe the path MTU when `params.mtu_discovery` asks for it.
    mtud_allowed: bool,
    pub conns: Vec<Option<Conn>>,
    pub live: usize,
    /// Connections with state to turn into events.
    queue: Vec<usize>,
    /// Connections that may have packets to send, in round-robin order: only what was touched
    /// (packets in, API calls, timers) since it last had nothing to send.
    tx: VecDeque<usize>,
    pub events: VecDeque<[f64; 4]>,
    readable_reported: HashSet<(usize, u64)>,
    pub close_reasons: HashMap<usize, Vec<u8>>,
    /// Last statistics of connections that were dropped, with the drain count at the time:
    /// kept until the event drain after the one that reported the close.
    final_stats: HashMap<usize, (u64, Stats)>,
    drains: u64,
    /// Client TLS configurations by (verify, ALPN, CA, identity), least recently used first out.
    client_crypto: HashMap<Vec<u8>, CachedClient>,
    /// The client's session tickets, shared by its TLS configurations (each under its scope).
    pub sessions: Arc<tls::SessionCache>,
    /// Last scope given to a client configuration, and the use clock of the cache above.
    scopes: u64,
    server: Option<Arc<ServerConfig>>,
    accepting: bool,
    retry: bool,
    max_conns: usize,
    stateless_reset: bool,
    /// Connection being worked on, so a panic can be pinned on it.
    pub current: Option<usize>,
    pub panics: u64,
    /// Datagrams not delivered to any connection (malformed, unknown connection, answered
    /// statelessly, refused).
    pub dropped: u64,
    stateless: VecDeque<Stateless>,
    /// Scratch buffers, kept with their capacity: what quinn writes for one transmit, and for
    /// one stateless answer. No allocation per batch once warm.
    tx_buf: Vec<u8>,
    resp_buf: Vec<u8>,
    /// Transmit slots (`stoq_tx_slots`): buffers the host's socket thread sends from in place.
    /// Each keeps its allocation for the engine's life (quinn is given at most as many packets
    /// as fit), so the addresses handed out stay valid; `tx_slots_moved` records the one way
    /// that could fail (quinn growing a slot), after which slots are refused.
    pub tx_slots: Vec<Vec<u8>>,
    pub tx_slots_moved: bool,
    /// A transmit quinn wrote for another destination than the run it was polled into (a
    /// PATH_CHALLENGE on the old path during a migration): the next run, on its own.
    held: Option<HeldTransmit>,
    /// Received batches are copied here; each datagram is a view of it, which quinn decrypts in
    /// place. The allocation is reused once quinn has let go of every view of the last batch.
    rx_buf: BytesMut,
    /// Mirror of the endpoint's connection slab (free keys, LIFO, and length): the slot a
    /// connection would take, so one that a panic interrupted inside the endpoint can be freed.
    slab_free: Vec<usize>,
    slab_len: usize,
    pub leaked_slots_freed: u64,
    pub last_error: String,
}

/// One client TLS setup: its configs, its scope in the session cache, when it was last used.
struct CachedClient {
    tls: tls::ClientTls,
    scope: u64,
    used: u64,
}

fn sid_u64(id: StreamId) -> u64 {
    VarInt::from(id).into_inner()
}

fn new_endpoint(secret: &[u8], prefix: Option<u8>) -> (Endpoint, CidFormat) {
    // allow_mtud: each connection's transport configuration decides (`Engine::mtud`).
    (Endpoint::new(Arc::new(endpoint_config(secret, prefix)), None, true, None), CidFormat::new(secret, prefix))
}

impl Engine {
    pub fn new(params: Params) -> Result<Self, String> {
        let transport = Arc::new(transport_config(&params, false)?);
        let (endpoint, cids) = new_endpoint(&random_secret(), params.cid_prefix);
        Ok(Engine {
            endpoint,
            cids,
            dcid: [0; 20],
            dcid_len: 0,
            params,
            transport,
            mtud_allowed: false,
            conns: Vec::new(),
            live: 0,
            queue: Vec::new(),
            tx: VecDeque::new(),
            events: VecDeque::new(),
            readable_reported: HashSet::new(),
            close_reasons: HashMap::new(),
            final_stats: HashMap::new(),
            drains: 0,
            client_crypto: HashMap::new(),
            sessions: Arc::new(tls::SessionCache::new(DEFAULT_SESSION_CACHE as usize)),
            scopes: 0,
            server: None,
            accepting: false,
            retry: false,
            max_conns: 0,
            stateless_reset: true,
            current: None,
            panics: 0,
            dropped: 0,
            stateless: VecDeque::new(),
            tx_buf: Vec::new(),
            resp_buf: Vec::new(),
            tx_slots: Vec::new(),
            tx_slots_moved: false,
            held: None,
            rx_buf: BytesMut::new(),
            slab_free: Vec::new(),
            slab_len: 0,
            leaked_slots_freed: 0,
            last_error: String::new(),
        })
    }

    /// Whether new connections probe the path MTU.
    fn mtud(&self) -> bool {
        self.params.mtu_discovery && self.mtud_allowed
    }

    /// The host says whether its socket keeps datagrams whole (Don't Fragment). Applies to
    /// connections made after the call, and to the shared server configuration.
    pub fn allow_mtu_discovery(&mut self, allowed: bool) -> Result<(), String> {
        self.mtud_allowed = allowed;
        self.transport = Arc::new(transport_config(&self.params, self.mtud())?);
        Ok(())
    }

    pub fn conn(&mut self, ch: usize) -> Option<&mut Conn> {
        self.conns.get_mut(ch).and_then(|c| c.as_mut())
    }

    /// Something happened on `ch`: look for events and for packets to send.
    pub fn enqueue(&mut self, ch: usize) {
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

    fn insert(&mut self, ch: usize, conn: qp::Connection, close_flag: CloseFlag) {
        self.slab_taken(ch);
        if self.conns.len() <= ch {
            self.conns.resize_with(ch + 1, || None);
        }
        if self.conns[ch].is_none() {
            self.live += 1;
        }
        self.conns[ch] = Some(Conn::new(conn, close_flag));
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
    pub fn slab_freed(&mut self, ch: usize) {
        if ch < self.slab_len && !self.slab_free.contains(&ch) {
            self.slab_free.push(ch);
        }
    }

    /// The slot the endpoint gives the next connection.
    fn next_slot(&self) -> usize {
        self.slab_free.last().copied().unwrap_or(self.slab_len)
    }

    /// Tell the endpoint that connection `ch` is gone (frees its slot and connection IDs).
    pub fn endpoint_drained(&mut self, ch: usize) {
        let _ = self.endpoint.handle_event(ConnectionHandle(ch), EndpointEvent::drained());
    }

    /// A panic inside `Endpoint::accept` or `connect` may have left a connection slot the
    /// endpoint believes live (it routes the peer's CIDs there and counts it against the
    /// connection limit): the one it was about to use, `slot`. Drain it unless we hold it.
    fn free_leaked_slot(&mut self, slot: usize) {
        if matches!(self.conns.get(slot), Some(Some(_))) {
            return;
        }
        // quinn ignores (logs) a drain of a slot it does not hold.
        let ok = catch_unwind(AssertUnwindSafe(|| self.endpoint_drained(slot))).is_ok();
        let _ = take_message();
        if ok {
            self.leaked_slots_freed += 1;
            if slot == self.slab_len {
                self.slab_len += 1;
                self.slab_free.push(slot);
            }
        }
    }

    pub fn remove(&mut self, ch: usize) -> Option<Conn> {
        let mut c = self.conns.get_mut(ch).and_then(|c| c.take());
        if let Some(conn) = c.as_mut() {
            self.live -= 1;
            if let Ok(s) = catch_unwind(AssertUnwindSafe(|| conn_stats(conn))) {
                self.final_stats.insert(ch, (self.drains, s));
            }
            let _ = take_message();
        }
        self.readable_reported.retain(|(h, _)| *h != ch);
        c
    }

    /// Forget queued connections that no longer exist (after a panic).
    pub fn retain_live_queue(&mut self) {
        let conns = &self.conns;
        self.queue.retain(|&h| conns.get(h).is_some_and(|c| c.is_some()));
    }

    pub fn final_stats(&self, ch: usize) -> Option<&Stats> {
        self.final_stats.get(&ch).map(|(_, s)| s)
    }

    // -- server ------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub fn listen(
        &mut self,
        cert_pem: &[u8],
        key_pem: &[u8],
        alpn: Vec<Vec<u8>>,
        retry: bool,
        max_conns: u32,
        stateless_reset: bool,
        secret: Option<&[u8]>,
        early_data: bool,
    ) -> Result<(), String> {
        let crypto = tls::server_config(cert_pem, key_pem, alpn, early_data, self.params.key_exchange)?;
        let secret: Vec<u8> = match secret {
            Some(s) => s.to_vec(),
            None => random_secret().to_vec(),
        };
        let token_key = hkdf::Salt::new(hkdf::HKDF_SHA256, b"stoq retry token").extract(&secret);
        let mut sc = ServerConfig::new(Arc::new(crypto), Arc::new(token_key));
        sc.transport_config(self.transport.clone());
        if self.live == 0 {
            // The stateless-reset key lives in the endpoint config: rebuild the endpoint so a
            // restarted server with the same secret can reset its predecessor's connections.
            (self.endpoint, self.cids) = new_endpoint(&secret, self.params.cid_prefix);
            // A new endpoint starts with an empty connection slab: so does our mirror of it.
            self.slab_free.clear();
            self.slab_len = 0;
        }
        let sc = Arc::new(sc);
        self.endpoint.set_server_config(Some(sc.clone()));
        self.server = Some(sc);
        self.accepting = true;
        self.retry = retry;
        self.max_conns = max_conns.max(1) as usize;
        self.stateless_reset = stateless_reset;
        Ok(())
    }

    /// New connection attempts are refused (CONNECTION_REFUSED) from now on.
    pub fn stop_listening(&mut self) {
        self.accepting = false;
    }

    // -- receive -------------------------------------------------------------

    pub fn receive(&mut self, data: &[u8], segment: usize, from: SocketAddr) {
        let now = Instant::now();
        let seg = if segment == 0 || segment > data.len() { data.len() } else { segment };
        if seg == 0 {
            return;
        }
        // One copy of the whole batch into a reused buffer (reserve reclaims the previous
        // allocation when quinn holds no view of it any more).
        self.rx_buf.clear();
        self.rx_buf.reserve(data.len());
        self.rx_buf.extend_from_slice(data);
        let mut rest = self.rx_buf.split();
        while !rest.is_empty() {
            let chunk = rest.split_to(seg.min(rest.len()));
            self.current = None;
            let slot = self.next_slot();
            // One datagram at a time under catch_unwind: a panic costs that datagram and the
            // connection it hit, never the rest of the batch.
            let handled = catch_unwind(AssertUnwindSafe(|| self.receive_one(now, from, chunk)));
            if handled.is_err() {
                self.dropped += 1;
                let inside_endpoint = self.current.is_none();
                recover(self);
                if inside_endpoint {
                    self.free_leaked_slot(slot);
                }
            }
        }
    }

    fn receive_one(&mut self, now: Instant, from: SocketAddr, chunk: BytesMut) {
        // Long header: version (4), DCID length (1), DCID.
        self.dcid_len = 0;
        if chunk.len() > 6 && chunk[0] & 0x80 != 0 {
            let n = chunk[5] as usize;
            if n <= self.dcid.len() && chunk.len() >= 6 + n {
                self.dcid[..n].copy_from_slice(&chunk[6..6 + n]);
                self.dcid_len = n;
            }
        }
        // A Version Negotiation packet (version 0): keep the versions it lists.
        let version_negotiation = chunk.len() > 6 && chunk[0] & 0x80 != 0 && chunk[1..5] == [0, 0, 0, 0];
        let mut offered = if version_negotiation { version_list(&chunk) } else { None };
        self.resp_buf.clear();
        match self.endpoint.handle(now, from, None, None, chunk, &mut self.resp_buf) {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                let h = ch.0;
                if let Some(Some(c)) = self.conns.get_mut(h) {
                    self.current = Some(h);
                    if c.panic_on_datagram {
                        c.panic_on_datagram = false;
                        panic!("injected test panic (stoq_test_panic)");
                    }
                    if let Some(v) = offered.take() {
                        if c.conn.side().is_client() && !c.established {
                            c.offered_versions = Some(v);
                        }
                    }
                    crate::kx::take_negotiated();
                    c.handle_event(ev);
                    // The key exchange completed in this call, if it did (kx.rs).
                    match crate::kx::take_negotiated() {
                        0 => {}
                        g => c.kx_group = g,
                    }
                    // Settled here, before the host can touch a stream: after a rejection
                    // quinn forgot the client's streams until they are opened again.
                    c.settle_early(h as f64, &mut self.events);
                    self.current = None;
                    self.enqueue(h);
                } else {
                    // A connection we no longer hold (a panic dropped it): free its routes.
                    self.endpoint_drained(h);
                    self.slab_freed(h);
                    self.dropped += 1;
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.incoming(now, incoming),
            Some(DatagramEvent::Response(t)) => {
                self.dropped += 1;
                self.queue_stateless(t.destination, t.size);
            }
            None => self.dropped += 1,
        }
    }

    /// Keep what quinn wrote into `resp_buf` for `poll_transmit`, in a bounded queue: a flood of
    /// unauthenticated packets cannot grow it.
    fn queue_stateless(&mut self, to: SocketAddr, size: usize) {
        let data = &self.resp_buf[..size.min(self.resp_buf.len())];
        // A short-header packet from the endpoint is a stateless reset.
        let reset = data.first().is_some_and(|b| b & 0x80 == 0);
        if (reset && !self.stateless_reset) || self.stateless.len() >= MAX_STATELESS_QUEUE {
            return;
        }
        self.stateless.push_back(Stateless { to, data: data.to_vec(), reset });
    }

    /// A client's first Initial: Retry, refuse, or accept it.
    fn incoming(&mut self, now: Instant, incoming: Incoming) {
        self.resp_buf.clear();
        if !self.accepting || self.server.is_none() {
            self.dropped += 1;
            let t = self.endpoint.refuse(incoming, &mut self.resp_buf);
            self.queue_stateless(t.destination, t.size);
            return;
        }
        if self.retry && !incoming.remote_address_validated() {
            self.dropped += 1;
            match self.endpoint.retry(incoming, &mut self.resp_buf) {
                Ok(t) => self.queue_stateless(t.destination, t.size),
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            }
            return;
        }
        if !incoming.may_retry() && !self.cids.is_ours(&self.dcid[..self.dcid_len]) {
            // A genuine Retry token, but sent to a CID this endpoint never issued (quinn 0.11 does
            // not bind the token to the Retry's CID; 0.9 did): not the client we sent the Retry
            // to, which would have used that CID. No connection, no answer.
            self.dropped += 1;
            self.endpoint.ignore(incoming);
            return;
        }
        if self.endpoint.open_connections() >= self.max_conns {
            self.dropped += 1;
            let t = self.endpoint.refuse(incoming, &mut self.resp_buf);
            self.queue_stateless(t.destination, t.size);
            return;
        }
        // Each connection gets its own transport configuration, for its close flag.
        let close_flag = CloseFlag::default();
        let config = match (self.server.as_ref(), connection_transport_config(&self.params, self.mtud(), &close_flag)) {
            (Some(server), Ok(t)) => {
                let mut sc = (**server).clone();
                sc.transport_config(Arc::new(t));
                Some(Arc::new(sc))
            }
            // Cannot happen (the same parameters built the engine's): the shared configuration.
            _ => None,
        };
        tls::start_handshake_probe();
        crate::kx::take_negotiated();
        let accepted = self.endpoint.accept(incoming, now, &mut self.resp_buf, config);
        let full = tls::full_handshake_seen();
        let kx_group = crate::kx::take_negotiated();
        match accepted {
            Ok((ch, conn)) => {
                // quinn gives a server 0-RTT keys only when TLS accepted the client's early data.
                let early = conn.has_0rtt();
                self.insert(ch.0, conn, close_flag);
                if let Some(Some(c)) = self.conns.get_mut(ch.0) {
                    c.kx_group = kx_group;
                    c.zero_rtt.full_handshake = full;
                    if early {
                        c.zero_rtt.accepted();
                    }
                }
                self.events.push_back([EV_INCOMING as f64, ch.0 as f64, 0.0, 0.0]);
            }
            Err(e) => {
                // A handshake that failed on its first packet: malformed transport parameters
                // (a TRANSPORT_PARAMETER_ERROR close goes back), bad crypto, a stale Initial.
                self.dropped += 1;
                if let Some(t) = e.response {
                    self.queue_stateless(t.destination, t.size);
                }
            }
        }
    }

    // -- timers --------------------------------------------------------------

    /// Milliseconds (fractional) to the earliest deadline, -1 when none.
    pub fn next_timeout_ms(&mut self) -> f64 {
        let mut best: Option<Instant> = None;
        for c in self.conns.iter_mut().flatten() {
            let held = c.deferred_close.as_ref().map(|d| d.0);
            for t in [c.conn.poll_timeout(), c.next_ping, held].into_iter().flatten() {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
        match best {
            None => -1.0,
            // Fractional: pacing deadlines are often tens of microseconds away.
            Some(t) => t.saturating_duration_since(Instant::now()).as_secs_f64() * 1000.0,
        }
    }

    pub fn handle_timeout(&mut self) {
        let now = Instant::now();
        for ch in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get_mut(ch) else { continue };
            let mut touched = false;
            self.current = Some(ch);
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
                touched = true;
            }
            if c.flush_deferred_close(now, false) {
                touched = true;
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

    /// Start a client connection. `early_data`: use 0-RTT when a ticket for this server allows
    /// it (the connection then records its early stream operations, see early.rs).
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        &mut self,
        peer: SocketAddr,
        server_name: &str,
        alpn: Vec<Vec<u8>>,
        ca: &[u8],
        verify: bool,
        cert: &[u8],
        key: &[u8],
        early_data: bool,
    ) -> Result<usize, String> {
        let mut cache_key = vec![verify as u8];
        cache_key.extend_from_slice(&self.params.key_exchange.to_le_bytes());
        for a in &alpn {
            cache_key.extend_from_slice(&(a.len() as u32).to_le_bytes());
            cache_key.extend_from_slice(a);
        }
        let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec();
        cache_key.extend(digest(ca));
        cache_key.extend(digest(cert));
        cache_key.extend(digest(key));
        self.scopes += 1;
        let clock = self.scopes;
        if !self.client_crypto.contains_key(&cache_key) {
            let store = Arc::new(tls::ScopedStore { cache: self.sessions.clone(), scope: clock });
            let tls = tls::client_config(alpn, ca, verify, cert, key, store, self.params.key_exchange)?;
            if self.client_crypto.len() >= MAX_CLIENT_CONFIGS {
                // The least recently used setup goes, and its tickets with it.
                if let Some(old) = self.client_crypto.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| k.clone()) {
                    if let Some(c) = self.client_crypto.remove(&old) {
                        self.sessions.forget_scope(c.scope);
                    }
                }
            }
            self.client_crypto.insert(cache_key.clone(), CachedClient { tls, scope: clock, used: clock });
        }
        let cached = self.client_crypto.get_mut(&cache_key).expect("inserted above");
        cached.used = clock;
        let crypto = if early_data { cached.tls.early.clone() } else { cached.tls.plain.clone() };
        let mut cfg = ClientConfig::new(crypto);
        let close_flag = CloseFlag::default();
        cfg.transport_config(Arc::new(connection_transport_config(&self.params, self.mtud(), &close_flag)?));
        let slot = self.next_slot();
        let r = catch_unwind(AssertUnwindSafe(|| self.endpoint.connect(Instant::now(), cfg, peer, server_name)));
        match r {
            Ok(Ok((ch, conn))) => {
                // quinn has 0-RTT keys when rustls offers a ticket that allows early data.
                let early = early_data && conn.has_0rtt();
                self.insert(ch.0, conn, close_flag);
                if early {
                    if let Some(c) = self.conn(ch.0) {
                        c.zero_rtt.start_pending();
                    }
                }
                Ok(ch.0)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                let msg = take_message();
                self.panics += 1;
                self.free_leaked_slot(slot);
                Err(format!("quinn engine panic: {msg}"))
            }
        }
    }

    // -- per-connection operations ------------------------------------------

    pub fn datagram_send(c: &mut Conn, data: &[u8]) -> i32 {
        // Before the handshake quinn cannot know the peer's limit.
        let Some(max) = c.max_datagram() else { return DGRAM_UNSUPPORTED };
        if data.len() > max {
            return DGRAM_TOO_LARGE;
        }
        match c.conn.datagrams().send(Bytes::copy_from_slice(data), false) {
            Ok(()) => DGRAM_QUEUED,
            Err(qp::SendDatagramError::Blocked(_)) => DGRAM_FULL,
            Err(qp::SendDatagramError::TooLarge) => DGRAM_TOO_LARGE,
            Err(_) => DGRAM_UNSUPPORTED,
        }
    }
}

/// STATS_LEN numbers: packets sent, received, lost, retransmitted (quinn: lost), bytes sent,
/// received, lost, RTT ms, cwnd, delivery rate (0: unknown), path MTU, peer max datagram,
/// path changes, key exchange group (IANA codepoint, 0: not known yet), resumed (0/1), 0-RTT
/// (EARLY_*).
pub fn conn_stats(c: &mut Conn) -> Stats {
    let s = c.conn.stats();
    let dgram = c.max_datagram().map_or(0.0, |m| m as f64);
    [
        s.udp_tx.datagrams as f64,
        s.udp_rx.datagrams as f64,
        s.path.lost_packets as f64,
        s.path.lost_packets as f64,
        s.udp_tx.bytes as f64,
        s.udp_rx.bytes as f64,
        s.path.lost_bytes as f64,
        s.path.rtt.as_secs_f64() * 1000.0,
        c.cwnd_at_close.unwrap_or(s.path.cwnd) as f64,
        0.0,
        s.path.current_mtu as f64,
        dgram,
        c.path_changes as f64,
        c.kx_group as f64,
        c.resumed() as u8 as f64,
        c.zero_rtt.state() as f64,
    ]
}

/// The versions a Version Negotiation packet lists (RFC 9000 §17.2.1), None when malformed.
fn version_list(p: &[u8]) -> Option<Vec<u32>> {
    let dcil = *p.get(5)? as usize;
    let scil = *p.get(6 + dcil)? as usize;
    let list = p.get(7 + dcil + scil..)?;
    Some(list.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// (code, CLOSE_* flags, reason) of a lost connection.
fn close_info(reason: &ConnectionError, local: Option<&(bool, u64, Vec<u8>)>, offered: Option<&[u32]>) -> (u64, f64, Vec<u8>) {
    match reason {
        ConnectionError::TimedOut => (0, close_flags(false, false, true, false), Vec::new()),
        ConnectionError::ApplicationClosed(c) => (c.error_code.into_inner(), close_flags(true, true, false, false), c.reason.to_vec()),
        ConnectionError::ConnectionClosed(c) => (u64::from(c.error_code), close_flags(true, false, false, false), c.reason.to_vec()),
        ConnectionError::TransportError(e) => (u64::from(e.code), close_flags(false, false, false, false), e.reason.clone().into_bytes()),
        ConnectionError::Reset => (0, close_flags(true, false, false, true), b"stateless reset".to_vec()),
        // The reason carries the versions the server offered (CLOSE_VERSION).
        ConnectionError::VersionMismatch => {
            (0, version_close_flags(), offered.unwrap_or_default().iter().flat_map(|v| v.to_be_bytes()).collect())
        }
        ConnectionError::CidsExhausted => (0, close_flags(false, false, false, false), b"connection IDs exhausted".to_vec()),
        ConnectionError::LocallyClosed => match local {
            Some((app, code, r)) => (*code, close_flags(false, *app, false, false), r.clone()),
            None => (0, close_flags(false, true, false, false), Vec::new()),
        },
    }
}
