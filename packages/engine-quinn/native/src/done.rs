//! Which halves of a connection's streams are over, for `stoq_stream_complete`: a send half once
//! all it sent is acknowledged (or it was reset or stopped), a receive half once read to the end
//! (or reset or stopped).
//!
//! Held per connection for its whole life, and a stream the host has seen complete must keep
//! reading as complete (graceful close and `send({ confirm })` ask again). A set of every
//! finished stream ID grows by one entry a stream: about 47 bytes a stream over both ends of a
//! connection, millions of streams on a long-lived connection. Stream IDs of one kind
//! (initiator and direction) are opened in order, so each half of each kind keeps a high-water
//! mark instead: every index below `high` is done except the ones in `pending`. `pending` holds
//! only streams at or below the highest finished one that are still going, so its size is
//! bounded by the streams open at once (which the stream limits bound), not by the streams a
//! connection has had.

use std::collections::HashSet;

use quinn_proto::{Dir, Side, StreamId};

/// One half (send or receive) of one kind of stream.
#[derive(Default)]
struct Half {
    /// Every index below it was marked done, except those in `pending`.
    high: u64,
    /// Indices below `high` not done yet.
    pending: HashSet<u64>,
}

impl Half {
    fn mark(&mut self, index: u64) {
        if index < self.high {
            self.remove_pending(index);
            return;
        }
        // QUIC opens the streams of one kind in order (a frame for stream n opens every lower
        // one): the indices skipped here are streams that exist and are still going.
        self.pending.extend(self.high..index);
        self.high = index + 1;
    }

    fn remove_pending(&mut self, index: u64) {
        self.pending.remove(&index);
        // A burst of streams open at once leaves a large table behind: give it back once the
        // burst is over.
        if self.pending.capacity() > 64 && self.pending.len() * 4 < self.pending.capacity() {
            self.pending.shrink_to(self.pending.len() * 2);
        }
    }

    fn contains(&self, index: u64) -> bool {
        index < self.high && !self.pending.contains(&index)
    }
}

/// Send and receive halves of a connection's streams, by kind.
pub struct StreamsDone {
    side: Side,
    /// [send, receive] x [client-initiated, server-initiated] x [bidirectional, unidirectional].
    halves: [Half; 8],
}

/// Largest number of stream indices one mark may add to `pending`: the streams between the
/// highest finished one and a newly finished one are open at once, which the stream limits
/// bound (STOQ takes at most 2^20, `transport.initialMaxStreams*`). A stream ID far beyond
/// (made up by the host) is not recorded.
const MAX_GAP: u64 = 1 << 20;

impl StreamsDone {
    pub fn new(side: Side) -> Self {
        StreamsDone { side, halves: Default::default() }
    }

    fn slot(id: StreamId, send: bool) -> usize {
        let initiator = if id.initiator() == Side::Client { 0 } else { 1 };
        let dir = if id.dir() == Dir::Bi { 0 } else { 1 };
        (if send { 0 } else { 4 }) + initiator * 2 + dir
    }

    /// Whether the stream has a send half (`send`) or a receive half here.
    fn has(&self, id: StreamId, send: bool) -> bool {
        let local = id.initiator() == self.side;
        id.dir() == Dir::Bi || local == send
    }

    fn mark(&mut self, id: StreamId, send: bool) {
        if !self.has(id, send) {
            return;
        }
        let half = &mut self.halves[Self::slot(id, send)];
        if id.index().saturating_sub(half.high) > MAX_GAP {
            return;
        }
        half.mark(id.index());
    }

    /// The send half is over (acknowledged, reset or stopped).
    pub fn send_done(&mut self, id: StreamId) {
        self.mark(id, true);
    }

    /// The receive half is over (read to the end, reset or stopped).
    pub fn recv_done(&mut self, id: StreamId) {
        self.mark(id, false);
    }

    /// Both halves the stream has are over.
    pub fn complete(&self, id: StreamId) -> bool {
        [true, false].iter().all(|&send| !self.has(id, send) || self.halves[Self::slot(id, send)].contains(id.index()))
    }

    /// Stream indices held (streams not done below a high-water mark), over every half.
    pub fn held(&self) -> usize {
        self.halves.iter().map(|h| h.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::VarInt;

    fn sid(initiator: Side, dir: Dir, index: u64) -> StreamId {
        StreamId::new(initiator, dir, index)
    }

    #[test]
    fn complete_needs_every_half_the_stream_has() {
        let mut d = StreamsDone::new(Side::Client);
        let bi = sid(Side::Client, Dir::Bi, 0);
        assert!(!d.complete(bi));
        d.send_done(bi);
        assert!(!d.complete(bi));
        d.recv_done(bi);
        assert!(d.complete(bi));
        // A local unidirectional stream only sends; a remote one only receives.
        let uni_out = sid(Side::Client, Dir::Uni, 0);
        d.recv_done(uni_out);
        assert!(!d.complete(uni_out));
        d.send_done(uni_out);
        assert!(d.complete(uni_out));
        let uni_in = sid(Side::Server, Dir::Uni, 3);
        d.send_done(uni_in);
        assert!(!d.complete(uni_in));
        d.recv_done(uni_in);
        assert!(d.complete(uni_in));
        // The lower server streams it implied are still going, and never-opened ones are not done.
        assert!(!d.complete(sid(Side::Server, Dir::Uni, 0)));
        assert!(!d.complete(sid(Side::Server, Dir::Uni, 4)));
        assert!(!d.complete(sid(Side::Client, Dir::Bi, 1)));
        // Kinds do not mix.
        assert!(!d.complete(sid(Side::Server, Dir::Bi, 0)));
        assert_eq!(StreamId::from(VarInt::from_u32(0)), bi);
    }

    #[test]
    fn marks_are_idempotent_and_order_free() {
        let mut d = StreamsDone::new(Side::Server);
        let ids: Vec<StreamId> = [5u64, 2, 9, 0, 1, 3, 4, 8, 6, 7, 2, 9].iter().map(|&i| sid(Side::Client, Dir::Bi, i)).collect();
        for (n, &id) in ids.iter().enumerate() {
            d.send_done(id);
            d.recv_done(id);
            for &other in &ids[..=n] {
                assert!(d.complete(other), "{other} after {n} marks");
            }
        }
        for i in 0..10 {
            assert!(d.complete(sid(Side::Client, Dir::Bi, i)));
        }
        assert!(!d.complete(sid(Side::Client, Dir::Bi, 10)));
        assert_eq!(d.held(), 0);
    }

    /// A long-lived connection: a million streams, 50 at a time, finishing out of order, and one
    /// stream that stays open all along. What is held stays at the streams open at once.
    #[test]
    fn memory_is_bounded_by_open_streams_not_by_streams_seen() {
        let mut d = StreamsDone::new(Side::Client);
        let long_lived = sid(Side::Client, Dir::Bi, 0);
        let mut open: Vec<u64> = Vec::new();
        let mut next = 1u64;
        let mut max_held = 0;
        let mut x = 12345u64;
        while next < 1_000_000 {
            while open.len() < 50 {
                open.push(next);
                next += 1;
            }
            // Finish a pseudo-random open stream: send half first, receive half later.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = open.swap_remove((x % open.len() as u64) as usize);
            let id = sid(Side::Client, Dir::Bi, i);
            d.send_done(id);
            d.recv_done(id);
            assert!(d.complete(id));
            max_held = max_held.max(d.held());
        }
        assert!(!d.complete(long_lived));
        // Both halves: the long-lived stream and at most the 50 open ones, in each.
        assert!(max_held <= 2 * 51, "held up to {max_held} stream indices");
        for i in open {
            let id = sid(Side::Client, Dir::Bi, i);
            d.send_done(id);
            d.recv_done(id);
        }
        d.send_done(long_lived);
        d.recv_done(long_lived);
        assert_eq!(d.held(), 0);
        assert!(d.complete(sid(Side::Client, Dir::Bi, 999_999)));
        assert!(d.complete(long_lived));
    }

    #[test]
    fn a_made_up_far_stream_is_not_recorded() {
        let mut d = StreamsDone::new(Side::Client);
        let far = sid(Side::Client, Dir::Bi, MAX_GAP + 10);
        d.send_done(far);
        d.recv_done(far);
        assert!(!d.complete(far));
        assert_eq!(d.held(), 0);
    }
}
