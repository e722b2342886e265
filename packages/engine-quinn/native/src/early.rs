//! Client 0-RTT made transparent, and what a connection knows about its resumption.
//!
//! A client resuming a session can send stream data in 0-RTT packets before the handshake
//! completes. When the server rejects that data (it lost the session, or does not take 0-RTT),
//! quinn-proto forgets every stream the client opened (stream ids restart at 0) and the data
//! with them. So while the verdict is pending the engine records what the application did on
//! its streams (bounded by [`EARLY_RECORD_MAX`]); on rejection it opens the same streams again,
//! in the same order (so they get the same ids), and replays writes, FIN, resets, STOP_SENDING
//! and priorities. The application sees no difference but `earlyData: rejected` in the stats.

use std::collections::{BTreeMap, HashMap, HashSet};

use quinn_proto::{self as qp, Dir, StreamId, VarInt};

use crate::abi::{EARLY_ACCEPTED, EARLY_NONE, EARLY_PENDING, EARLY_REJECTED};

/// Stream bytes recorded per connection before the verdict, at most: beyond it writes block
/// until the handshake completes. (What fits in 0-RTT packets is bounded by the congestion
/// window anyway; the rest would wait in quinn's send buffer.)
pub const EARLY_RECORD_MAX: usize = 256 * 1024;

/// What the application did on one stream before the verdict.
#[derive(Default)]
struct EarlyStream {
    data: Vec<u8>,
    fin: bool,
    reset: Option<VarInt>,
    stop: Option<VarInt>,
    priority: Option<i32>,
}

/// Data to write again on a stream after a rejection, beyond what flow control took so far.
struct Backlog {
    data: Vec<u8>,
    off: usize,
    fin: bool,
}

/// A connection's resumption and 0-RTT state.
pub struct ZeroRtt {
    /// A full handshake's certificate step ran (see `tls::start_handshake_probe`).
    pub full_handshake: bool,
    /// EARLY_NONE, EARLY_PENDING, EARLY_ACCEPTED or EARLY_REJECTED.
    state: u32,
    /// While pending: the streams opened, by id (ids of one direction in opening order).
    streams: BTreeMap<u64, EarlyStream>,
    bytes: usize,
    /// Streams whose writes the record limit blocked: writable again at the verdict.
    pub capped: HashSet<u64>,
    /// After a rejection: what flow control did not take yet, per stream.
    backlog: HashMap<u64, Backlog>,
}

impl Default for ZeroRtt {
    fn default() -> Self {
        ZeroRtt {
            full_handshake: false,
            state: EARLY_NONE,
            streams: BTreeMap::new(),
            bytes: 0,
            capped: HashSet::new(),
            backlog: HashMap::new(),
        }
    }
}

impl ZeroRtt {
    /// A client connection that may send 0-RTT (it asked for it and holds a ticket allowing it).
    pub fn start_pending(&mut self) {
        self.state = EARLY_PENDING;
    }

    /// A server connection that accepted the client's 0-RTT.
    pub fn accepted(&mut self) {
        self.state = EARLY_ACCEPTED;
    }

    pub fn state(&self) -> u32 {
        self.state
    }

    pub fn recording(&self) -> bool {
        self.state == EARLY_PENDING
    }

    pub fn opened(&mut self, id: u64) {
        if self.recording() {
            self.streams.entry(id).or_default();
        }
    }

    /// Bytes a write may still put in the record.
    pub fn room(&self) -> usize {
        EARLY_RECORD_MAX - self.bytes
    }

    pub fn wrote(&mut self, id: u64, data: &[u8], fin: bool) {
        if !self.recording() {
            return;
        }
        let s = self.streams.entry(id).or_default();
        s.data.extend_from_slice(data);
        s.fin |= fin;
        self.bytes += data.len();
    }

    pub fn shutdown(&mut self, id: u64, write: bool, code: VarInt) {
        if write {
            // A reset stream sends nothing more, replayed data included.
            self.backlog.remove(&id);
        }
        if self.recording() {
            let s = self.streams.entry(id).or_default();
            if write {
                s.reset = Some(code);
            } else {
                s.stop = Some(code);
            }
        }
    }

    pub fn priority(&mut self, id: u64, priority: i32) {
        if self.recording() {
            self.streams.entry(id).or_default().priority = Some(priority);
        }
    }

    pub fn has_backlog(&self, id: u64) -> bool {
        self.backlog.contains_key(&id)
    }

    /// Once the handshake has completed: take the server's verdict, replaying what it rejected.
    /// Returns the streams quinn could not open again (the server now allows fewer streams than
    /// its ticket promised): they are lost, and the caller reports them stopped.
    pub fn settle(&mut self, conn: &mut qp::Connection) -> Vec<u64> {
        if !self.recording() || conn.is_handshaking() {
            return Vec::new();
        }
        let streams = std::mem::take(&mut self.streams);
        self.bytes = 0;
        if conn.is_closed() {
            // No verdict (the connection failed, its streams with it): it stays pending.
            return Vec::new();
        }
        if conn.accepted_0rtt() {
            self.state = EARLY_ACCEPTED;
            return Vec::new();
        }
        self.state = EARLY_REJECTED;
        let mut lost = Vec::new();
        for (id, s) in streams {
            let sid = StreamId::from(VarInt::from_u64(id).unwrap_or(VarInt::from_u32(0)));
            if conn.streams().open(sid.dir()) != Some(sid) {
                lost.push(id);
                continue;
            }
            if let Some(p) = s.priority {
                let _ = conn.send_stream(sid).set_priority(p);
            }
            if let Some(code) = s.stop {
                if sid.dir() == Dir::Bi {
                    let _ = conn.recv_stream(sid).stop(code);
                }
            }
            if let Some(code) = s.reset {
                let _ = conn.send_stream(sid).reset(code);
                continue;
            }
            if s.data.is_empty() && !s.fin {
                continue;
            }
            let mut b = Backlog { data: s.data, off: 0, fin: s.fin };
            if !push(conn, sid, &mut b) {
                self.backlog.insert(id, b);
            }
        }
        lost
    }

    /// Write more of a stream's backlog; true when none is left (or the stream is gone).
    pub fn flush(&mut self, conn: &mut qp::Connection, id: u64) -> bool {
        let Some(b) = self.backlog.get_mut(&id) else { return true };
        let sid = StreamId::from(VarInt::from_u64(id).unwrap_or(VarInt::from_u32(0)));
        let done = push(conn, sid, b);
        if done {
            self.backlog.remove(&id);
        }
        done
    }
}

/// Write what is left of `b` until flow control blocks (quinn then reports the stream
/// writable again); FIN once all went. True when done.
fn push(conn: &mut qp::Connection, id: StreamId, b: &mut Backlog) -> bool {
    while b.off < b.data.len() {
        match conn.send_stream(id).write(&b.data[b.off..]) {
            Ok(n) => b.off += n,
            Err(qp::WriteError::Blocked) => return false,
            // Stopped by the peer or gone: nothing more to send (the caller's next write says so).
            Err(_) => return true,
        }
    }
    if b.fin {
        let _ = conn.send_stream(id).finish();
    }
    true
}
