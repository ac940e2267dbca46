//! The network model: control messages after one latency, pieces over the sender's uplink
//! and the receiver's downlink, and the events that carry them.

use std::cmp::Ordering;
use std::time::Duration;

use shoal_core::peer::PeerInfo;

use super::world::Sim;
use crate::engine::{CloseReason, ConnId, Event, Remote};
use crate::wire::Message;

#[derive(Debug)]
pub(super) enum Ev {
    /// A control message sent on (host, conn) reaches the other end.
    Msg {
        from: u32,
        conn: ConnId,
        /// The other end, if the link was complete when the message was sent; else it is
        /// looked up on arrival.
        to: Option<(u32, ConnId)>,
        msg: Message,
    },
    /// A dial reaches its target.
    Dial {
        from: u32,
        to: u32,
    },
    /// The answer to a dial reaches the dialler: the target's conn, or its refusal.
    DialResult {
        from: u32,
        to: u32,
        theirs: Result<ConnId, crate::wire::ErrorCode>,
    },
    /// (host, conn) was closed by the other end.
    Closed {
        host: u32,
        conn: ConnId,
        reason: CloseReason,
    },
    Announced {
        host: u32,
        peers: Vec<PeerInfo>,
    },
    UplinkDone {
        host: u32,
    },
    PieceArrives {
        from: u32,
        conn: ConnId,
        index: u32,
        valid: bool,
    },
    Tick {
        host: u32,
    },
}

pub(super) struct Scheduled {
    pub(super) at: u64,
    pub(super) seq: u64,
    pub(super) ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap pops the largest, the simulator wants the earliest.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

pub(super) struct Upload {
    pub(super) conn: ConnId,
    pub(super) index: u32,
}

impl Sim<'_> {
    pub(super) fn link(&self, h: u32, conn: ConnId) -> Option<(u32, ConnId)> {
        match self.hosts[h as usize].links.get(conn.index()) {
            Some(Some((c, peer, Some(theirs)))) if *c == conn => Some((*peer, *theirs)),
            _ => None,
        }
    }

    pub(super) fn set_link(&mut self, h: u32, conn: ConnId, peer: u32, theirs: Option<ConnId>) {
        let links = &mut self.hosts[h as usize].links;
        if links.len() <= conn.index() {
            links.resize(conn.index() + 1, None);
        }
        links[conn.index()] = Some((conn, peer, theirs));
    }

    pub(super) fn clear_link(&mut self, h: u32, conn: ConnId) {
        if let Some(slot) = self.hosts[h as usize].links.get_mut(conn.index())
            && slot.is_some_and(|(c, _, _)| c == conn)
        {
            *slot = None;
        }
    }

    pub(super) fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Msg {
                from,
                conn,
                to,
                msg,
            } => {
                if let Some((to, theirs)) = to.or_else(|| self.link(from, conn)) {
                    self.handle(to, Event::Message { conn: theirs, msg });
                }
            }
            Ev::Dial { from, to } => {
                let now = self.instant(self.now);
                let info = self.hosts[from as usize].info.clone();
                let d = self.digest;
                let r = self.hosts[to as usize].engine.open(
                    now,
                    &d,
                    Remote::claimed(info.peer_id, info.addr),
                    false,
                );
                let theirs = match r {
                    Ok(c) => {
                        // The dialler's conn id is not known until the answer arrives.
                        self.set_link(to, c, from, None);
                        Ok(c)
                    }
                    Err(refusal) => Err(refusal.code()),
                };
                // The answer goes first: the bitfield the target sends next must find the
                // dialler's half of the link in place.
                self.later(Ev::DialResult { from, to, theirs });
                self.pump(to);
            }
            Ev::DialResult { from, to, theirs } => {
                let d = self.digest;
                // The target may have dropped its half before the answer arrived.
                let theirs = theirs.and_then(|tc| {
                    match self.hosts[to as usize].links.get(tc.index()).copied() {
                        Some(Some((c, _, _))) if c == tc => Ok(tc),
                        _ => Err(crate::wire::ErrorCode::Shutdown),
                    }
                });
                match theirs {
                    Ok(tc) => {
                        let now = self.instant(self.now);
                        let info = self.hosts[to as usize].info.clone();
                        match self.hosts[from as usize].engine.open(
                            now,
                            &d,
                            Remote::claimed(info.peer_id, info.addr),
                            true,
                        ) {
                            Ok(oc) => {
                                self.set_link(from, oc, to, Some(tc));
                                self.set_link(to, tc, from, Some(oc));
                            }
                            Err(r) => {
                                self.clear_link(to, tc);
                                self.later(Ev::Closed {
                                    host: to,
                                    conn: tc,
                                    reason: CloseReason::Remote(r.code()),
                                });
                            }
                        }
                        self.pump(from);
                    }
                    Err(code) => {
                        let peer = self.hosts[to as usize].info.peer_id;
                        self.handle(
                            from,
                            Event::DialFailed {
                                blob: d,
                                peer,
                                code: Some(code),
                            },
                        );
                    }
                }
            }
            Ev::Closed { host, conn, reason } => {
                self.clear_link(host, conn);
                self.handle(host, Event::Closed { conn, reason });
            }
            Ev::Announced { host, peers } => {
                let d = self.digest;
                self.handle(
                    host,
                    Event::Announced {
                        blob: d,
                        peers,
                        interval: Duration::from_secs(30),
                    },
                );
            }
            Ev::UplinkDone { host } => self.uplink_done(host),
            Ev::PieceArrives {
                from,
                conn,
                index,
                valid,
            } => {
                if let Some((to, theirs)) = self.link(from, conn) {
                    self.handle(
                        to,
                        Event::PieceReceived {
                            conn: theirs,
                            index,
                            valid,
                        },
                    );
                }
            }
            Ev::Tick { host } => {
                let now = self.instant(self.now);
                self.hosts[host as usize].engine.handle_timeout(now);
                self.pump(host);
                if let Some(t) = self.hosts[host as usize].engine.poll_timeout() {
                    let at = t.saturating_duration_since(self.base).as_nanos() as u64;
                    self.at(at.max(self.now + 1), Ev::Tick { host });
                }
            }
        }
    }
    pub(super) fn piece_size(&self, index: u32) -> u64 {
        self.layout.piece_size(index).unwrap_or(0) as u64
    }

    pub(super) fn start_upload(&mut self, h: u32) {
        let Some(u) = self.hosts[h as usize].queue.pop_front() else {
            return;
        };
        let size = self.piece_size(u.index) as f64;
        let dur = (size / self.hosts[h as usize].up * 1e9) as u64;
        self.hosts[h as usize].sending = Some((u, self.now));
        self.at(self.now + dur.max(1), Ev::UplinkDone { host: h });
    }

    pub(super) fn uplink_done(&mut self, h: u32) {
        let Some((u, started)) = self.hosts[h as usize].sending.take() else {
            return;
        };
        let size = self.piece_size(u.index);
        self.hosts[h as usize].uploaded += size;
        if self.hosts[h as usize].origin && !self.origin_out[u.index as usize] {
            self.origin_out[u.index as usize] = true;
            self.origin_out_count += 1;
            if self.origin_out_count == self.origin_out.len() {
                self.origin_all_out = Some(self.now);
            }
        }
        if let Some((to, _)) = self.link(h, u.conn) {
            let receiver = &mut self.hosts[to as usize];
            let on_link = (size as f64 / receiver.down * 1e9) as u64;
            let dl_start = (started + self.latency).max(receiver.down_free);
            let arrives = (dl_start + on_link).max(self.now + self.latency);
            receiver.down_free = arrives;
            let valid = !self.hosts[h as usize].faulty;
            self.at(
                arrives,
                Ev::PieceArrives {
                    from: h,
                    conn: u.conn,
                    index: u.index,
                    valid,
                },
            );
        }
        self.handle(
            h,
            Event::Uploaded {
                conn: u.conn,
                index: u.index,
            },
        );
        if self.hosts[h as usize].sending.is_none() {
            self.start_upload(h);
        }
    }
}
