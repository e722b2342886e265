//! The engine's events: what connections and streams report, drained into the caller's array.

use super::*;

impl Engine {
    // -- events --------------------------------------------------------------

    /// After the handshake, unless the host manages the limits (`host_stream_limits`): let the
    /// peer open as many streams as configured (MAX_STREAMS).
    /// quinn queues MAX_STREAMS when it next sends; the PING draws an ACK even from a peer
    /// that waits for credit.
    fn open_stream_window(c: &mut Conn, p: &Params) {
        if c.host_stream_limits {
            return;
        }
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
        let chf = ch as f64;
        // A ClientHello spread over several datagrams (a post-quantum key share) gives a server
        // its 0-RTT keys only with a later datagram than the one that created the connection.
        if c.zero_rtt.state() == EARLY_NONE && c.conn.side().is_server() && c.conn.is_handshaking() && c.conn.has_0rtt() {
            c.zero_rtt.accepted();
        }
        while let Some(ev) = c.conn.poll() {
            match ev {
                Event::HandshakeDataReady | Event::DatagramsUnblocked => {}
                Event::Connected => {
                    if c.flush_deferred_close(Instant::now(), true) {
                        c.established = true;
                    } else if !c.close_reported && !c.established {
                        c.established = true;
                        Self::open_stream_window(c, params);
                        events.push_back([EV_ESTABLISHED as f64, chf, 0.0, 0.0]);
                    }
                }
                // A connection the application closed (its close held back) reports nothing more.
                _ if c.close_reported && !matches!(ev, Event::ConnectionLost { .. }) => {}
                Event::ConnectionLost { reason } => {
                    if !c.close_reported {
                        c.close_reported = true;
                        let (code, flags, text) = close_info(&reason, c.local_close.as_ref(), c.offered_versions.as_deref());
                        close_reasons.insert(ch, text);
                        events.push_back([EV_CLOSED as f64, chf, code as f64, flags]);
                    }
                }
                Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(id) = c.conn.streams().accept(dir) {
                        let sid = sid_u64(id);
                        if readable_reported.insert((ch, sid)) {
                            events.push_back([EV_READABLE as f64, chf, sid as f64, 0.0]);
                        }
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    let sid = sid_u64(id);
                    if readable_reported.insert((ch, sid)) {
                        events.push_back([EV_READABLE as f64, chf, sid as f64, 0.0]);
                    }
                }
                Event::Stream(StreamEvent::Writable { id }) => {
                    let sid = sid_u64(id);
                    // Data a rejected 0-RTT left to send again goes first.
                    if !c.zero_rtt.flush(&mut c.conn, sid) {
                        continue;
                    }
                    c.blocked.remove(&sid);
                    if c.want_writable.remove(&sid) {
                        events.push_back([EV_WRITABLE as f64, chf, sid as f64, 0.0]);
                    }
                }
                Event::Stream(StreamEvent::Finished { id }) => {
                    c.done.send_done(id);
                }
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    let sid = sid_u64(id);
                    c.stop_codes.insert(sid, error_code.into_inner());
                    // RFC 9000 §3.5: answer STOP_SENDING with RESET_STREAM (same code, as quiche
                    // does). quinn-proto leaves it to the application; without it the peer never
                    // learns the stream's final size, keeps its receiving half, and never gives
                    // the stream's credit back (MAX_STREAMS). Fails only for a stream already
                    // reset or finished and acknowledged: nothing left to do then.
                    let _ = c.conn.send_stream(id).reset(error_code);
                    c.done.send_done(id);
                    c.blocked.remove(&sid);
                    if c.want_writable.remove(&sid) {
                        events.push_back([EV_WRITABLE as f64, chf, sid as f64, 0.0]);
                    }
                }
                Event::Stream(StreamEvent::Available { .. }) => {}
                Event::DatagramReceived => {
                    if !c.datagram_pending {
                        c.datagram_pending = true;
                        events.push_back([EV_DATAGRAM as f64, chf, 0.0, 0.0]);
                    }
                }
            }
        }
        *current = None;
        let now_path = c.conn.remote_address();
        if now_path != c.path {
            c.path = now_path;
            c.path_changes += 1;
        }
        if !drained {
            // Endpoint events (new connection IDs) and reads may have left frames to send.
            if !c.tx_queued {
                c.tx_queued = true;
                self.tx.push_back(ch);
            }
            return;
        }
        self.slab_freed(ch);
        if let Some(c) = self.remove(ch) {
            if !c.close_reported {
                let (app, code, reason) = c.local_close.unwrap_or((false, 0, Vec::new()));
                self.close_reasons.insert(ch, reason);
                self.events.push_back([EV_CLOSED as f64, chf, code as f64, close_flags(false, app, false, false)]);
            }
        }
    }

    fn process_queue(&mut self) {
        while let Some(ch) = self.queue.pop() {
            self.process(ch);
        }
    }

    pub fn drain_events(&mut self, out: &mut [f64]) -> usize {
        // The application has seen the previous batch of events: forget connections dropped
        // before it (those dropped since, e.g. by a panic, are reported in this one).
        let drains = self.drains;
        self.final_stats.retain(|_, (at, _)| *at >= drains);
        self.drains += 1;
        self.process_queue();
        let cap = out.len() / 4;
        let mut n = 0;
        while n < cap {
            let Some(ev) = self.events.pop_front() else { break };
            out[n * 4..n * 4 + 4].copy_from_slice(&ev);
            if ev[0] == EV_DATAGRAM as f64 {
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
}
