//! STOQ's quinn engine: the quinn-proto 0.11 QUIC state machine and rustls 0.23 (ring) behind a
//! small C ABI made for batch calls from JavaScript (through koffi). This file holds the
//! exported functions on engines and connections; the rest is by concern:
//! - `abi`: every constant and the `EngineConfig` struct the TypeScript side mirrors;
//! - `config`: quinn transport/endpoint configuration, connection-ID prefix;
//! - `tls`: rustls configurations, PEM parsing, certificate verification;
//! - `engine`: endpoint, connections, receive/transmit/events/timers;
//! - `early`: client 0-RTT made transparent (replay after a rejection), resumption state;
//! - `stream_exports`: the exported functions on streams and datagrams;
//! - `panic`: the panic boundary; `ffi`, `addr`: pointers, addresses.
//!
//! Shape of the ABI:
//! - one opaque `Engine` per endpoint, integer connection handles, stream ids as `f64`
//!   (exact up to 2^53);
//! - one call feeds a whole received batch (a GRO buffer split by segment size), one call fills
//!   a whole transmit batch (packets back to back in the caller's buffer), one call drains every
//!   pending event into the caller's `f64` array;
//! - no callbacks from native code into JavaScript.
//!
//! Safety: the exported functions taking pointers are `unsafe extern "C"`: the caller (koffi)
//! passes each buffer with its length, live for the call, and calls one function at a time per
//! engine. Every body runs inside `catch_unwind` (module `panic`).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod addr;
pub mod config;
pub mod done;
pub mod early;
pub mod engine;
pub mod ffi;
pub mod kx;
pub mod panic;
mod stream_exports;
pub mod tls;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{Dir, StreamId, VarInt};

use abi::{
    EngineConfig, ABI_VERSION, ADDR_LEN, ERR_BAD_ARGUMENT, ERR_BAD_HANDLE, ERR_CONNECT, ERR_PANIC, ERR_STREAM, ERR_TLS_CONFIG, EV_CLOSED,
    EV_WRITABLE, MAX_TX_SLOTS, OK, PANIC_NEXT_DATAGRAM, PANIC_NOW, RECV_RESULT_LEN, SESSION_CACHE_LEN, STATS_LEN, STREAM_BLOCKED,
    STREAM_STOPPED, TRANSMIT_META_LEN,
};
use addr::{parse_alpn, read_addr, write_addr};
use config::Params;
use engine::{conn_stats, Conn, Engine};
use ffi::{copy_out, slice, slice_mut};
use panic::{close_flags, guard, install_hook, with_engine};

thread_local! {
    /// Why the last `stoq_engine_new` on this thread returned null.
    static NEW_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn varint(n: f64) -> Option<VarInt> {
    if !n.is_finite() || n < 0.0 || n.fract() != 0.0 || n > 4_611_686_018_427_387_903.0 {
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

/// Library ABI version (abi::ABI_VERSION), checked by the loader.
#[no_mangle]
pub extern "C" fn stoq_abi_version() -> u32 {
    ABI_VERSION
}

/// Every ABI constant and the `EngineConfig` layout as a JSON object of numbers, into `buf`.
/// Returns the full length (call again with a larger buffer when it exceeds `cap`).
///
/// # Safety
/// `buf` is null or valid for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_abi_info(buf: *mut u8, cap: usize) -> usize {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(buf, cap) };
    guard(0, || copy_out(abi::info_json().as_bytes(), out))
}

/// Create an engine from `config` (`size` = the caller's sizeof, which must match). Returns
/// null when the configuration is refused: `stoq_last_error(NULL, ...)` says why.
///
/// # Safety
/// `config` is null or points to `size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_engine_new(config: *const EngineConfig, size: usize) -> *mut Engine {
    install_hook();
    let result = guard(Err("engine creation panicked".to_string()), || {
        if config.is_null() || size != std::mem::size_of::<EngineConfig>() {
            return Err(format!("config struct of {size} bytes, the library's has {}", std::mem::size_of::<EngineConfig>()));
        }
        // SAFETY: non-null, and the caller's struct has our size (caller contract).
        let c = unsafe { std::ptr::read_unaligned(config) };
        let params = Params::from_config(&c)?;
        Engine::new(params)
    });
    match result {
        Ok(e) => Box::into_raw(Box::new(e)),
        Err(msg) => {
            NEW_ERROR.with(|m| *m.borrow_mut() = msg);
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// `ep` is null or came from `stoq_engine_new` and is not used after this call.
#[no_mangle]
pub unsafe extern "C" fn stoq_engine_free(ep: *mut Engine) {
    if ep.is_null() {
        return;
    }
    // SAFETY: `ep` came from `Box::into_raw` in `stoq_engine_new` and is freed once.
    guard((), || drop(unsafe { Box::from_raw(ep) }));
}

/// Copy the last error message into `buf`; returns its full length. With a null engine: why
/// the last `stoq_engine_new` on this thread failed.
///
/// # Safety
/// `ep` as for every call (null allowed); `buf` valid for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_last_error(ep: *mut Engine, buf: *mut u8, cap: usize) -> usize {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(buf, cap) };
    if ep.is_null() {
        return NEW_ERROR.with(|m| copy_out(m.borrow().as_bytes(), out));
    }
    // SAFETY: caller contract.
    unsafe { with_engine(ep, 0, |e| copy_out(e.last_error.as_bytes(), out)) }
}

/// Panics caught since the engine started.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_panic_count(ep: *mut Engine) -> f64 {
    // SAFETY: caller contract.
    unsafe { with_engine(ep, 0.0, |e| e.panics as f64) }
}

/// Datagrams not delivered to any connection.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_dropped_packets(ep: *mut Engine) -> f64 {
    // SAFETY: caller contract.
    unsafe { with_engine(ep, 0.0, |e| e.dropped as f64) }
}

/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_connection_count(ep: *mut Engine) -> u32 {
    // SAFETY: caller contract.
    unsafe { with_engine(ep, 0, |e| e.live as u32) }
}

/// Start accepting connections. `alpn` is a TLS-style list (length byte, bytes)*. `early_data`
/// 1: accept 0-RTT from resuming clients.
///
/// # Safety
/// `ep` is null or a live engine; each pointer is null or valid for its length.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn stoq_listen(
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
    early_data: u32,
) -> i32 {
    // SAFETY: caller contract.
    let (cert, key, alpn, secret) =
        unsafe { (slice(cert, cert_len), slice(key, key_len), slice(alpn, alpn_len), slice(secret, secret_len)) };
    let secret = if secret.is_empty() { None } else { Some(secret) };
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, ERR_PANIC, |e| {
            match e.listen(cert, key, parse_alpn(alpn), retry != 0, max_conns, stateless_reset != 0, secret, early_data != 0) {
                Ok(()) => OK,
                Err(m) => {
                    e.last_error = m;
                    ERR_TLS_CONFIG
                }
            }
        })
    }
}

/// Refuse new connection attempts from now on (CONNECTION_REFUSED).
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_stop_listening(ep: *mut Engine) {
    // SAFETY: caller contract.
    unsafe { with_engine(ep, (), |e| e.stop_listening()) }
}

/// Whether the host's socket keeps datagrams whole (Don't Fragment set, so a probe larger
/// than the path is lost rather than fragmented): path MTU discovery, when the config asks for
/// it, runs on connections made after this call. OK, or ERR_BAD_ARGUMENT if the configuration
/// cannot be rebuilt (cannot happen: the same parameters built the engine).
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_allow_mtu_discovery(ep: *mut Engine, allowed: u32) -> i32 {
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, ERR_PANIC, |e| match e.allow_mtu_discovery(allowed != 0) {
            Ok(()) => OK,
            Err(_) => ERR_BAD_ARGUMENT,
        })
    }
}

/// Feed received datagrams: `len` bytes holding datagrams of `segment` bytes (GRO).
///
/// # Safety
/// `ep` is null or a live engine; `data` valid for `len` bytes; `ip` for 16 bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_receive(
    ep: *mut Engine,
    data: *const u8,
    len: usize,
    segment: usize,
    ip: *const u8,
    port: u32,
    family: u32,
) -> i32 {
    // SAFETY: caller contract.
    let (data, ip) = unsafe { (slice(data, len), slice(ip, 16)) };
    let Some(from) = read_addr(ip, port, family) else { return ERR_BAD_ARGUMENT };
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, ERR_PANIC, |e| {
            e.receive(data, segment, from);
            OK
        })
    }
}

/// Fill `out` with packets for one peer; `lengths[i]` gets packet i's size, `peer` the
/// destination (ADDR_LEN bytes), `meta` [count, bytes]. Returns the packet count.
///
/// # Safety
/// `ep` is null or a live engine; `out` valid for `cap` bytes, `lengths` for `max_packets`
/// u32, `peer` for ADDR_LEN bytes, `meta` for TRANSMIT_META_LEN u32.
#[no_mangle]
pub unsafe extern "C" fn stoq_poll_transmit(
    ep: *mut Engine,
    out: *mut u8,
    cap: usize,
    lengths: *mut u32,
    max_packets: usize,
    peer: *mut u8,
    meta: *mut u32,
) -> i32 {
    // SAFETY: caller contract.
    let (out, lengths, peer, meta) =
        unsafe { (slice_mut(out, cap), slice_mut(lengths, max_packets), slice_mut(peer, ADDR_LEN), slice_mut(meta, TRANSMIT_META_LEN)) };
    if meta.len() < TRANSMIT_META_LEN || peer.len() < ADDR_LEN {
        return 0;
    }
    // SAFETY: caller contract.
    unsafe { with_engine(ep, 0, |e| e.poll_transmit(out, lengths, peer, meta) as i32) }
}

/// Give the engine `count` transmit slots of at least `size` bytes (once): `addrs[i]` gets
/// slot i's address, `caps[i]` its capacity. They live as long as the engine. Returns `count`,
/// or -1 (already given, or out of range: 1..=MAX_TX_SLOTS slots, max payload..=MAX_TX_SLOT_SIZE).
///
/// # Safety
/// `ep` is null or a live engine; `addrs` valid for `count` u64, `caps` for `count` u32.
#[no_mangle]
pub unsafe extern "C" fn stoq_tx_slots(ep: *mut Engine, count: usize, size: usize, addrs: *mut u64, caps: *mut u32) -> i32 {
    if count == 0 || count > MAX_TX_SLOTS as usize {
        return -1;
    }
    // SAFETY: caller contract.
    let (addrs, caps) = unsafe { (slice_mut(addrs, count), slice_mut(caps, count)) };
    // SAFETY: caller contract.
    unsafe { with_engine(ep, -1, |e| e.create_tx_slots(count, size, addrs, caps)) }
}

/// `stoq_poll_transmit` into transmit slot `slot` (see `stoq_tx_slots`): returns the packet
/// count, 0 when nothing is due, -1 for no such slot, -2 when the slot's memory moved (slots
/// are off from then on; the packets written are lost to the network, which QUIC recovers).
///
/// # Safety
/// `ep` is null or a live engine; `lengths` valid for `max_packets` u32, `peer` for ADDR_LEN
/// bytes, `meta` for TRANSMIT_META_LEN u32.
#[no_mangle]
pub unsafe extern "C" fn stoq_poll_transmit_slot(
    ep: *mut Engine,
    slot: usize,
    lengths: *mut u32,
    max_packets: usize,
    peer: *mut u8,
    meta: *mut u32,
) -> i32 {
    // SAFETY: caller contract.
    let (lengths, peer, meta) = unsafe { (slice_mut(lengths, max_packets), slice_mut(peer, ADDR_LEN), slice_mut(meta, TRANSMIT_META_LEN)) };
    if meta.len() < TRANSMIT_META_LEN || peer.len() < ADDR_LEN {
        return 0;
    }
    // SAFETY: caller contract.
    unsafe { with_engine(ep, -1, |e| e.poll_transmit_slot(slot, lengths, peer, meta)) }
}

/// Milliseconds (fractional) until `stoq_handle_timeout` is due; -1 when nothing is pending.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_next_timeout(ep: *mut Engine) -> f64 {
    // SAFETY: caller contract.
    unsafe { with_engine(ep, -1.0, |e| e.next_timeout_ms()) }
}

/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_handle_timeout(ep: *mut Engine) {
    // SAFETY: caller contract.
    unsafe { with_engine(ep, (), |e| e.handle_timeout()) }
}

/// Write pending events into `out` (EVENT_STRIDE doubles each, `cap` doubles); returns the
/// event count. When it equals `cap / EVENT_STRIDE`, call again.
///
/// # Safety
/// `ep` is null or a live engine; `out` valid for `cap` doubles.
#[no_mangle]
pub unsafe extern "C" fn stoq_drain_events(ep: *mut Engine, out: *mut f64, cap: usize) -> i32 {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(out, cap) };
    // SAFETY: caller contract.
    unsafe { with_engine(ep, 0, |e| e.drain_events(out) as i32) }
}

/// Close reason of a connection reported closed; returns its length (-1 when none).
///
/// # Safety
/// `ep` is null or a live engine; `buf` valid for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_take_close_reason(ep: *mut Engine, conn: u32, buf: *mut u8, cap: usize) -> i32 {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(buf, cap) };
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, -1, |e| match e.close_reasons.remove(&(conn as usize)) {
            Some(r) => copy_out(&r, out).min(out.len()) as i32,
            None => -1,
        })
    }
}

/// Start a client connection. Returns the handle, or a negative error (message in
/// `stoq_last_error`). `early_data` 1: send 0-RTT when a ticket allows (statistic 13 says
/// EARLY_PENDING from the start then).
///
/// # Safety
/// `ep` is null or a live engine; `ip` valid for 16 bytes, every other pointer null or valid
/// for its length.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn stoq_connect(
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
    early_data: u32,
) -> i32 {
    // SAFETY: caller contract.
    let (ip, name, alpn, ca, cert, key) = unsafe {
        (
            slice(ip, 16),
            slice(server_name, server_name_len),
            slice(alpn, alpn_len),
            slice(ca, ca_len),
            slice(cert, cert_len),
            slice(key, key_len),
        )
    };
    let Some(peer) = read_addr(ip, port, family) else { return ERR_BAD_ARGUMENT };
    let Ok(name) = std::str::from_utf8(name) else { return ERR_BAD_ARGUMENT };
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, ERR_PANIC, |e| match e.connect(peer, name, parse_alpn(alpn), ca, verify != 0, cert, key, early_data != 0) {
            Ok(h) => h as i32,
            Err(m) => {
                e.last_error = m;
                ERR_CONNECT
            }
        })
    }
}

/// What a per-connection call may touch besides its connection.
struct Ctx<'a> {
    events: &'a mut VecDeque<[f64; 4]>,
    close_reasons: &'a mut HashMap<usize, Vec<u8>>,
    params: Params,
    ch: usize,
}

/// Run `f` on one live connection; `bad` when the handle is unknown. The connection stays in
/// place, so a panic in `f` is pinned on it (and closes it).
///
/// # Safety
/// `ep` is null or a live engine.
unsafe fn with_conn<R>(ep: *mut Engine, conn: u32, bad: R, on_panic: R, f: impl FnOnce(&mut Conn, &mut Ctx) -> R) -> R {
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, on_panic, |e| {
            let ch = conn as usize;
            let r = {
                let Engine { conns, events, params, current, close_reasons, .. } = &mut *e;
                let Some(Some(c)) = conns.get_mut(ch) else { return bad };
                *current = Some(ch);
                let mut ctx = Ctx { events, close_reasons, params: *params, ch };
                let r = f(c, &mut ctx);
                *current = None;
                r
            };
            e.enqueue(ch);
            r
        })
    }
}

/// Close a connection: `app` 1 for an application close. Reported closed at once (EV_CLOSED);
/// quinn keeps it a few PTOs longer to answer the peer, then drops it.
///
/// # Safety
/// `ep` is null or a live engine; `reason` valid for `reason_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_close(ep: *mut Engine, conn: u32, app: u32, code: f64, reason: *const u8, reason_len: usize) -> i32 {
    // SAFETY: caller contract.
    let reason = unsafe { slice(reason, reason_len) };
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, ctx| {
            if c.close_reported || c.local_close.is_some() {
                return OK;
            }
            let code = varint(code).unwrap_or(VarInt::from_u32(0));
            c.local_close = Some((app != 0, code.into_inner(), reason.to_vec()));
            // quinn has no public transport close: both kinds send an application CONNECTION_CLOSE.
            c.close(Instant::now(), code, Bytes::copy_from_slice(reason));
            c.close_reported = true;
            ctx.close_reasons.insert(ctx.ch, reason.to_vec());
            ctx.events.push_back([EV_CLOSED as f64, ctx.ch as f64, code.into_inner() as f64, close_flags(false, app != 0, false, false)]);
            OK
        })
    }
}

/// PING every `interval_ms` (0: stop).
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_set_keep_alive(ep: *mut Engine, conn: u32, interval_ms: f64) -> i32 {
    // SAFETY: caller contract.
    unsafe {
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
}

/// Set the connection-level receive window (flow-control credit the peer may use beyond what
/// the application read). A larger window is granted at once (MAX_DATA); a smaller one takes
/// effect as the application reads.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_set_receive_window(ep: *mut Engine, conn: u32, bytes: f64) -> i32 {
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| match varint(bytes) {
            Some(v) => {
                c.conn.set_receive_window(v);
                OK
            }
            None => ERR_BAD_ARGUMENT,
        })
    }
}

/// Let the peer have `count` streams of one direction open at once (MAX_STREAMS as streams
/// close). From the first call on, the host manages these limits: the engine no longer widens
/// them to the configured ones after the handshake. quinn keeps state for every stream the limit
/// allows, so hosts raise it as the peer uses streams (lean connections).
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_set_peer_stream_limit(ep: *mut Engine, conn: u32, bidi: u32, count: f64) -> i32 {
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| match varint(count) {
            Some(v) => {
                c.host_stream_limits = true;
                c.conn.set_max_concurrent_streams(if bidi != 0 { Dir::Bi } else { Dir::Uni }, v);
                OK
            }
            None => ERR_BAD_ARGUMENT,
        })
    }
}

/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_is_established(ep: *mut Engine, conn: u32) -> i32 {
    // SAFETY: caller contract.
    unsafe { with_conn(ep, conn, 0, 0, |c, _| (c.established && !c.close_reported) as i32) }
}

/// Negotiated ALPN into `buf`; returns its length (0 before the handshake).
///
/// # Safety
/// `ep` is null or a live engine; `buf` valid for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_alpn(ep: *mut Engine, conn: u32, buf: *mut u8, cap: usize) -> i32 {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(buf, cap) };
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
            let p = c.handshake_data().and_then(|h| h.protocol).unwrap_or_default();
            copy_out(&p, out) as i32
        })
    }
}

/// SNI the client sent (server side); returns its length, or -1 when none.
///
/// # Safety
/// `ep` is null or a live engine; `buf` valid for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_server_name(ep: *mut Engine, conn: u32, buf: *mut u8, cap: usize) -> i32 {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(buf, cap) };
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| match c.handshake_data().and_then(|h| h.server_name) {
            Some(s) => copy_out(s.as_bytes(), out) as i32,
            None => -1,
        })
    }
}

/// Peer certificates (DER, leaf first) back to back into `buf`, sizes into `lengths`. Returns
/// the count (-1 none); when `buf` or `lengths` is too small, -(bytes needed) - 2.
///
/// # Safety
/// `ep` is null or a live engine; `buf` valid for `cap` bytes, `lengths` for `max` u32.
#[no_mangle]
pub unsafe extern "C" fn stoq_peer_certificates(
    ep: *mut Engine,
    conn: u32,
    buf: *mut u8,
    cap: usize,
    lengths: *mut u32,
    max: usize,
) -> i32 {
    // SAFETY: caller contract.
    let (out, lengths) = unsafe { (slice_mut(buf, cap), slice_mut(lengths, max)) };
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
            let Some(certs) = c.peer_certificates() else { return -1 };
            let total: usize = certs.iter().map(|c| c.len()).sum();
            if total > out.len() || certs.len() > lengths.len() {
                return -(total as i32) - 2;
            }
            let mut off = 0;
            for (i, cert) in certs.iter().enumerate() {
                out[off..off + cert.len()].copy_from_slice(cert);
                lengths[i] = cert.len() as u32;
                off += cert.len();
            }
            certs.len() as i32
        })
    }
}

/// STATS_LEN numbers (see `engine::conn_stats`); also for a connection reported closed and
/// already dropped, until the next event drain.
///
/// # Safety
/// `ep` is null or a live engine; `out` valid for STATS_LEN doubles.
#[no_mangle]
pub unsafe extern "C" fn stoq_stats(ep: *mut Engine, conn: u32, out: *mut f64) -> i32 {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(out, STATS_LEN) };
    if out.len() < STATS_LEN {
        return ERR_BAD_ARGUMENT;
    }
    // SAFETY: caller contract.
    let found = unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
            out.copy_from_slice(&conn_stats(c));
            OK
        })
    };
    if found != ERR_BAD_HANDLE {
        return found;
    }
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, ERR_PANIC, |e| match e.final_stats(conn as usize) {
            Some(s) => {
                out.copy_from_slice(s);
                OK
            }
            None => ERR_BAD_HANDLE,
        })
    }
}

/// Peer address (ADDR_LEN bytes).
///
/// # Safety
/// `ep` is null or a live engine; `out` valid for ADDR_LEN bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_peer_address(ep: *mut Engine, conn: u32, out: *mut u8) -> i32 {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(out, ADDR_LEN) };
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
            write_addr(out, c.conn.remote_address());
            OK
        })
    }
}

/// Test hook: prove the panic boundary. `site` PANIC_NOW panics inside this call, pinned on
/// `conn` (which closes with INTERNAL_ERROR); PANIC_NEXT_DATAGRAM arms a panic for the next
/// datagram routed to `conn`. Returns OK, ERR_PANIC (PANIC_NOW), or an error code.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_test_panic(ep: *mut Engine, conn: u32, site: u32) -> i32 {
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| match site {
            PANIC_NOW => panic!("injected test panic (stoq_test_panic)"),
            PANIC_NEXT_DATAGRAM => {
                c.panic_on_datagram = true;
                OK
            }
            _ => ERR_BAD_ARGUMENT,
        })
    }
}

/// Keep the session tickets of at most `servers` servers (by client TLS setup and name; 0: no
/// client resumption); the least recently used go first.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_set_session_cache(ep: *mut Engine, servers: f64) -> i32 {
    if !servers.is_finite() || servers < 0.0 || servers.fract() != 0.0 || servers > 1e9 {
        return ERR_BAD_ARGUMENT;
    }
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, ERR_PANIC, |e| {
            e.sessions.set_cap(servers as usize);
            OK
        })
    }
}

/// The client's session cache: [servers, tickets, cap] into `out` (SESSION_CACHE_LEN doubles).
///
/// # Safety
/// `ep` is null or a live engine; `out` valid for SESSION_CACHE_LEN doubles.
#[no_mangle]
pub unsafe extern "C" fn stoq_session_cache(ep: *mut Engine, out: *mut f64) -> i32 {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(out, SESSION_CACHE_LEN) };
    if out.len() < SESSION_CACHE_LEN {
        return ERR_BAD_ARGUMENT;
    }
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, ERR_PANIC, |e| {
            let (servers, tickets, cap) = e.sessions.counts();
            out.copy_from_slice(&[servers as f64, tickets as f64, cap as f64]);
            OK
        })
    }
}
