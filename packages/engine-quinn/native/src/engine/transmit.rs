//! The engine's transmit path: stateless packets first, then each connection's GSO runs.

use super::*;

impl Engine {
    // -- transmit -------------------------------------------------------------

    /// Fill `out` with packets for one peer: `lengths[i]` gets packet i's size, `peer_out` the
    /// destination, `meta` [packets, bytes]. Returns the packet count.
    pub fn poll_transmit(&mut self, out: &mut [u8], lengths: &mut [u32], peer_out: &mut [u8], meta: &mut [u32]) -> usize {
        let max_packets = lengths.len();
        if max_packets == 0 {
            return 0;
        }
        let Engine { stateless, held, stateless_reset, .. } = self;
        let room = out.len();
        let place = |d: &[u8]| out[..d.len()].copy_from_slice(d);
        if let Some((count, ch)) = take_queued(stateless, held, *stateless_reset, room, place, lengths, peer_out, meta) {
            if let Some(ch) = ch {
                self.enqueue(ch);
            }
            return count;
        }
        let now = Instant::now();
        let mtu = self.params.max_payload as usize;
        for _ in 0..self.tx.len() {
            let Some(ch) = self.tx.pop_front() else { break };
            let Engine { conns, tx_buf, current, held, .. } = self;
            let Some(Some(c)) = conns.get_mut(ch) else { continue };
            begin_transmit(c);
            *current = Some(ch);
            let mut count = 0usize;
            let mut bytes = 0usize;
            let mut dest: Option<SocketAddr> = None;
            loop {
                // Whole packets only: quinn never writes more than `room` packets of the path
                // MTU, which is at most max_payload (MTU probes included).
                let room = (max_packets - count).min((out.len() - bytes) / mtu);
                if room == 0 {
                    break;
                }
                // quinn writes into a Vec it may grow, which foreign memory cannot be: it
                // writes into our reused buffer, and one copy puts the run in the caller's.
                tx_buf.clear();
                let Some(t) = c.conn.poll_transmit(now, room, tx_buf) else { break };
                let len = t.size.min(tx_buf.len());
                let seg = t.segment_size.unwrap_or(len).max(1);
                if dest.is_some_and(|d| d != t.destination) {
                    // Not for this run's destination: it goes next, alone.
                    *held = Some(HeldTransmit { ch, data: tx_buf[..len].to_vec(), segment: seg, to: t.destination });
                    break;
                }
                if bytes + len > out.len() {
                    // Cannot happen (see `room`). Refuse rather than overflow.
                    break;
                }
                out[bytes..bytes + len].copy_from_slice(&tx_buf[..len]);
                count += split_segments(len, seg, &mut lengths[count..]);
                bytes += len;
                dest = Some(t.destination);
            }
            *current = None;
            if let (true, Some(d)) = (count > 0, dest) {
                // It may have more: back of the line, behind the others.
                report_run(peer_out, meta, d, count, bytes);
                self.enqueue(ch);
                return count;
            }
        }
        0
    }

    /// Allocate `count` transmit slots of at least `size` bytes (once per engine); `addrs[i]`
    /// gets slot i's address and `caps[i]` its capacity. Returns `count`, or -1 when refused.
    pub fn create_tx_slots(&mut self, count: usize, size: usize, addrs: &mut [u64], caps: &mut [u32]) -> i32 {
        let mtu = self.params.max_payload as usize;
        if !self.tx_slots.is_empty() || count == 0 || count > MAX_TX_SLOTS as usize || size < mtu || size > MAX_TX_SLOT_SIZE as usize {
            return -1;
        }
        if addrs.len() < count || caps.len() < count {
            return -1;
        }
        for i in 0..count {
            let v: Vec<u8> = Vec::with_capacity(size);
            addrs[i] = v.as_ptr() as u64;
            caps[i] = v.capacity().min(u32::MAX as usize) as u32;
            self.tx_slots.push(v);
        }
        count as i32
    }

    /// `poll_transmit` into transmit slot `slot` instead of a caller's buffer: one transmit of
    /// quinn's (a GSO run for one peer), or one stateless packet. Returns the packet count, 0
    /// when nothing is due, -1 for a slot that does not exist, -2 when quinn moved the slot's
    /// memory (never expected: it is given at most what fits); slots are refused from then on
    /// and the caller goes back to its own buffers.
    pub fn poll_transmit_slot(&mut self, slot: usize, lengths: &mut [u32], peer_out: &mut [u8], meta: &mut [u32]) -> i32 {
        if self.tx_slots_moved || slot >= self.tx_slots.len() {
            return -1;
        }
        let max_packets = lengths.len();
        if max_packets == 0 {
            return 0;
        }
        let Engine { tx_slots, stateless, held, stateless_reset, .. } = self;
        let buf = &mut tx_slots[slot];
        // Within the slot's capacity, so it never grows.
        let room = buf.capacity();
        let place = |d: &[u8]| {
            buf.clear();
            buf.extend_from_slice(d);
        };
        if let Some((count, ch)) = take_queued(stateless, held, *stateless_reset, room, place, lengths, peer_out, meta) {
            if let Some(ch) = ch {
                self.enqueue(ch);
            }
            return count as i32;
        }
        let now = Instant::now();
        let mtu = self.params.max_payload as usize;
        for _ in 0..self.tx.len() {
            let Some(ch) = self.tx.pop_front() else { break };
            let Engine { conns, tx_slots, current, tx_slots_moved, .. } = self;
            let Some(Some(c)) = conns.get_mut(ch) else { continue };
            begin_transmit(c);
            let buf = &mut tx_slots[slot];
            let (at, cap) = (buf.as_ptr(), buf.capacity());
            // Whole packets only, at most max_payload each (MTU probes included): quinn
            // reserves no more than it is allowed to write, so the slot never grows.
            let room = max_packets.min(cap / mtu);
            if room == 0 {
                return 0;
            }
            *current = Some(ch);
            buf.clear();
            let t = c.conn.poll_transmit(now, room, buf);
            *current = None;
            if buf.as_ptr() != at {
                *tx_slots_moved = true;
                return -2;
            }
            let Some(t) = t else { continue };
            let len = t.size.min(buf.len());
            let count = split_segments(len, t.segment_size.unwrap_or(len).max(1), lengths);
            report_run(peer_out, meta, t.destination, count, len);
            // It may have more: back of the line, behind the others.
            self.enqueue(ch);
            return count as i32;
        }
        0
    }
}

/// A connection is about to be asked for packets.
fn begin_transmit(c: &mut Conn) {
    c.tx_queued = false;
    if c.conn.is_closed() && !c.close_flag.is_set() {
        // From now on only CONNECTION_CLOSE packets: past a full congestion window.
        c.cwnd_at_close = Some(c.conn.congestion_state().window());
        c.close_flag.set();
    }
}

/// The packets queued outside the connections go first: stateless answers (version
/// negotiation, Retry, refusals, resets), then a run held back for its own destination. The
/// first that fits in `room` bytes is put in the caller's memory by `place`; ones that do not
/// fit (or resets when they are off) are dropped. Returns its packet count and, for a held
/// run, its connection (to queue again); None when nothing is queued.
#[allow(clippy::too_many_arguments)]
fn take_queued(
    stateless: &mut VecDeque<Stateless>,
    held: &mut Option<HeldTransmit>,
    resets: bool,
    room: usize,
    mut place: impl FnMut(&[u8]),
    lengths: &mut [u32],
    peer_out: &mut [u8],
    meta: &mut [u32],
) -> Option<(usize, Option<usize>)> {
    while let Some(t) = stateless.pop_front() {
        if (t.reset && !resets) || t.data.len() > room {
            continue;
        }
        place(&t.data);
        lengths[0] = t.data.len() as u32;
        report_run(peer_out, meta, t.to, 1, t.data.len());
        return Some((1, None));
    }
    let h = held.take()?;
    if h.data.len() > room {
        return None;
    }
    place(&h.data);
    let count = split_segments(h.data.len(), h.segment, lengths);
    report_run(peer_out, meta, h.to, count, h.data.len());
    Some((count, Some(h.ch)))
}

/// The destination and [packets, bytes] of a run, for the caller.
fn report_run(peer_out: &mut [u8], meta: &mut [u32], to: SocketAddr, count: usize, bytes: usize) {
    write_addr(peer_out, to);
    meta[0] = count as u32;
    meta[1] = bytes as u32;
}

/// Lengths of the packets of a GSO run of `len` bytes in segments of `seg` (the last may be
/// shorter), at most `lengths.len()` of them. Returns how many.
fn split_segments(len: usize, seg: usize, lengths: &mut [u32]) -> usize {
    let mut count = 0;
    let mut off = 0;
    while off < len && count < lengths.len() {
        let l = seg.min(len - off);
        lengths[count] = l as u32;
        count += 1;
        off += l;
    }
    count
}
