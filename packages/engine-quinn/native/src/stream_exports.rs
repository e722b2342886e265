//! Exported functions on streams and datagrams of one connection (see `lib.rs` for the ABI's
//! shape and safety contract): open, send, receive, capacity, shutdown, priority, datagrams.

use super::*;

/// Open a local stream; returns its id or -1 when the peer's limit is reached.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_open_stream(ep: *mut Engine, conn: u32, bidi: u32) -> f64 {
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE as f64, ERR_PANIC as f64, |c, _| {
            match c.conn.streams().open(if bidi != 0 { Dir::Bi } else { Dir::Uni }) {
                Some(id) => {
                    c.zero_rtt.opened(sid_u64(id));
                    sid_u64(id) as f64
                }
                None => -1.0,
            }
        })
    }
}

/// Queue stream data. Returns bytes accepted, STREAM_BLOCKED, or STREAM_STOPPED (stopped or
/// closed).
///
/// # Safety
/// `ep` is null or a live engine; `data` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_stream_send(ep: *mut Engine, conn: u32, sid: f64, data: *const u8, len: usize, fin: u32) -> f64 {
    // SAFETY: caller contract.
    let data = unsafe { slice(data, len) };
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE as f64, ERR_PANIC as f64, |c, _| {
            let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT as f64 };
            let key = sid_u64(id);
            // What a rejected 0-RTT left to send again goes first.
            if !c.zero_rtt.flush(&mut c.conn, key) {
                c.blocked.insert(key);
                return STREAM_BLOCKED;
            }
            let whole = data.len();
            // Before the 0-RTT verdict every write is recorded (early.rs), within its limit.
            let data = if c.zero_rtt.recording() {
                let room = c.zero_rtt.room();
                if room == 0 && !data.is_empty() {
                    c.blocked.insert(key);
                    c.zero_rtt.capped.insert(key);
                    return STREAM_BLOCKED;
                }
                &data[..whole.min(room)]
            } else {
                data
            };
            let mut n = 0usize;
            let mut finished = false;
            if !data.is_empty() {
                match c.conn.send_stream(id).write(data) {
                    Ok(w) => n = w,
                    Err(quinn_proto::WriteError::Blocked) => {
                        c.blocked.insert(key);
                        return STREAM_BLOCKED;
                    }
                    Err(quinn_proto::WriteError::Stopped(code)) => {
                        c.stop_codes.insert(key, code.into_inner());
                        return STREAM_STOPPED;
                    }
                    Err(quinn_proto::WriteError::ClosedStream) => return STREAM_STOPPED,
                }
            }
            if fin != 0 && n == whole {
                match c.conn.send_stream(id).finish() {
                    Ok(()) => finished = true,
                    Err(quinn_proto::FinishError::Stopped(code)) => {
                        c.stop_codes.insert(key, code.into_inner());
                        if n == 0 {
                            return STREAM_STOPPED;
                        }
                    }
                    Err(quinn_proto::FinishError::ClosedStream) => {
                        if n == 0 {
                            return STREAM_STOPPED;
                        }
                    }
                }
            }
            c.zero_rtt.wrote(key, &data[..n], finished);
            n as f64
        })
    }
}

/// Read stream data into `out`. Returns 1 when something (bytes, FIN or a reset) was read, 0
/// when nothing is readable. `result` = [bytes, fin (0/1), reset code or -1].
///
/// # Safety
/// `ep` is null or a live engine; `out` valid for `cap` bytes, `result` for RECV_RESULT_LEN
/// doubles.
#[no_mangle]
pub unsafe extern "C" fn stoq_stream_recv(ep: *mut Engine, conn: u32, sid: f64, out: *mut u8, cap: usize, result: *mut f64) -> i32 {
    // SAFETY: caller contract.
    let (out, result) = unsafe { (slice_mut(out, cap), slice_mut(result, RECV_RESULT_LEN)) };
    if result.len() < RECV_RESULT_LEN {
        return ERR_BAD_ARGUMENT;
    }
    result.copy_from_slice(&[0.0, 0.0, -1.0]);
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
            let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT };
            let mut rs = c.conn.recv_stream(id);
            let Ok(mut chunks) = rs.read(true) else { return 0 };
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
                    Err(quinn_proto::ReadError::Blocked) => break,
                    Err(quinn_proto::ReadError::Reset(code)) => {
                        reset = Some(code.into_inner());
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
            if fin || reset.is_some() {
                c.done.recv_done(id);
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
}

/// Bytes the stream can take now as far as this engine knows: -1 stopped, 0 blocked,
/// otherwise the stream window (quinn does not expose per-stream credit).
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_stream_capacity(ep: *mut Engine, conn: u32, sid: f64) -> f64 {
    // SAFETY: caller contract.
    unsafe {
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
                Ok(None) if c.blocked.contains(&key) => 0.0,
                Ok(None) => ctx.params.max_stream_data as f64,
                Err(_) => -1.0,
            }
        })
    }
}

/// Ask for EV_WRITABLE when the stream can take data again (at once when it is not blocked).
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_stream_want_writable(ep: *mut Engine, conn: u32, sid: f64) -> i32 {
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, ctx| {
            let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT };
            let key = sid_u64(id);
            if c.blocked.contains(&key) && !c.stop_codes.contains_key(&key) {
                c.want_writable.insert(key);
            } else {
                // Not blocked in quinn's sense: quinn would never announce it, so say it now.
                ctx.events.push_back([EV_WRITABLE as f64, ctx.ch as f64, key as f64, 0.0]);
            }
            OK
        })
    }
}

/// 1 when the stream is over: what we send was all acknowledged (or reset/stopped) and what we
/// receive was read to the end (or reset), for the directions the stream has.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_stream_complete(ep: *mut Engine, conn: u32, sid: f64) -> i32 {
    // SAFETY: caller contract.
    unsafe {
        with_engine(ep, ERR_PANIC, |e| {
            let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT };
            let Some(c) = e.conn(conn as usize) else { return ERR_BAD_HANDLE };
            c.done.complete(id) as i32
        })
    }
}

/// STOP_SENDING code the peer sent for the stream, or -1.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_stream_stop_code(ep: *mut Engine, conn: u32, sid: f64) -> f64 {
    // SAFETY: caller contract.
    unsafe {
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
}

/// `write` = 1: RESET_STREAM our sending side; 0: STOP_SENDING the peer's.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_stream_shutdown(ep: *mut Engine, conn: u32, sid: f64, write: u32, code: f64) -> i32 {
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
            let (Some(id), Some(code)) = (stream_id(sid), varint(code)) else { return ERR_BAD_ARGUMENT };
            let key = sid_u64(id);
            c.zero_rtt.shutdown(key, write != 0, code);
            let r = if write != 0 {
                let r = c.conn.send_stream(id).reset(code);
                c.done.send_done(id);
                r
            } else {
                let r = c.conn.recv_stream(id).stop(code);
                c.done.recv_done(id);
                r
            };
            if r.is_ok() {
                OK
            } else {
                ERR_STREAM
            }
        })
    }
}

/// HTTP urgency 0 (most urgent) .. 7; quinn sends higher priorities first.
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_stream_priority(ep: *mut Engine, conn: u32, sid: f64, urgency: u32) -> i32 {
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| {
            let Some(id) = stream_id(sid) else { return ERR_BAD_ARGUMENT };
            let priority = 7 - urgency.min(7) as i32;
            c.zero_rtt.priority(sid_u64(id), priority);
            match c.conn.send_stream(id).set_priority(priority) {
                Ok(()) => OK,
                Err(_) => ERR_STREAM,
            }
        })
    }
}

/// Queue a datagram: DGRAM_QUEUED, DGRAM_FULL, DGRAM_TOO_LARGE, DGRAM_UNSUPPORTED.
///
/// # Safety
/// `ep` is null or a live engine; `data` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_datagram_send(ep: *mut Engine, conn: u32, data: *const u8, len: usize) -> i32 {
    // SAFETY: caller contract.
    let data = unsafe { slice(data, len) };
    // SAFETY: caller contract.
    unsafe { with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| Engine::datagram_send(c, data)) }
}

/// Read one datagram into `out`; returns its length (which may exceed `cap`: then it was
/// truncated), or -1 when none is queued.
///
/// # Safety
/// `ep` is null or a live engine; `out` valid for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn stoq_datagram_recv(ep: *mut Engine, conn: u32, out: *mut u8, cap: usize) -> i32 {
    // SAFETY: caller contract.
    let out = unsafe { slice_mut(out, cap) };
    // SAFETY: caller contract.
    unsafe {
        with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| match c.conn.datagrams().recv() {
            Some(d) => copy_out(&d, out) as i32,
            None => -1,
        })
    }
}

/// Largest datagram the peer accepts, -1 when none (or before the handshake).
///
/// # Safety
/// `ep` is null or a live engine.
#[no_mangle]
pub unsafe extern "C" fn stoq_datagram_max_size(ep: *mut Engine, conn: u32) -> i32 {
    // SAFETY: caller contract.
    unsafe { with_conn(ep, conn, ERR_BAD_HANDLE, ERR_PANIC, |c, _| c.max_datagram().map_or(-1, |m| m as i32)) }
}
