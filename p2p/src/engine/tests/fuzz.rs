//! Arbitrary event sequences, including ones no honest driver or peer would produce:
//! the engine never panics and its books stay balanced.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Open {
        peer: u8,
        origin: bool,
        outbound: bool,
    },
    Msg {
        conn: u8,
        kind: u8,
        index: u32,
    },
    Piece {
        conn: u8,
        index: u32,
        valid: bool,
    },
    Written {
        index: u32,
        ok: bool,
    },
    Uploaded {
        conn: u8,
        index: u32,
    },
    Closed {
        conn: u8,
        protocol: bool,
    },
    DialFailed {
        peer: u8,
        busy: bool,
    },
    Announced {
        peers: Vec<u8>,
    },
    Committed {
        ok: bool,
    },
    Advance {
        ms: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let idx = 0u32..(PIECES + 3);
    prop_oneof![
        (0u8..12, any::<bool>(), any::<bool>()).prop_map(|(peer, origin, outbound)| Op::Open {
            peer,
            origin,
            outbound
        }),
        (0u8..16, 0u8..8, idx.clone()).prop_map(|(conn, kind, index)| Op::Msg {
            conn,
            kind,
            index
        }),
        (0u8..16, idx.clone(), any::<bool>()).prop_map(|(conn, index, valid)| Op::Piece {
            conn,
            index,
            valid
        }),
        (idx.clone(), any::<bool>()).prop_map(|(index, ok)| Op::Written { index, ok }),
        (0u8..16, idx).prop_map(|(conn, index)| Op::Uploaded { conn, index }),
        (0u8..16, any::<bool>()).prop_map(|(conn, protocol)| Op::Closed { conn, protocol }),
        (0u8..12, any::<bool>()).prop_map(|(peer, busy)| Op::DialFailed { peer, busy }),
        proptest::collection::vec(0u8..12, 0..6).prop_map(|peers| Op::Announced { peers }),
        any::<bool>().prop_map(|ok| Op::Committed { ok }),
        (0u16..40_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn info(peer: u8, origin: bool) -> PeerInfo {
    PeerInfo {
        peer_id: PeerId([peer + 10; 20]),
        addr: SocketAddr::from(([10, 0, 0, peer], 7000)),
        complete: origin,
        origin,
    }
}

fn message(kind: u8, index: u32) -> Message {
    match kind {
        0 => Message::Bitfield(Bitfield::full(PIECES as usize)),
        1 => {
            let mut b = Bitfield::new(PIECES as usize);
            for i in (0..PIECES as usize).step_by(3) {
                b.set(i);
            }
            Message::Bitfield(b)
        }
        2 => Message::Have(index),
        3 => Message::Request(index),
        4 => Message::Cancel(index),
        5 => Message::Reject(index),
        6 => Message::KeepAlive,
        _ => Message::Error {
            code: ErrorCode::Busy,
            message: String::new(),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_survives_anything(ops in proptest::collection::vec(op(), 1..250), seeding in any::<bool>(), super_seed in any::<bool>()) {
        let cfg = Config {
            super_seed_offers: if super_seed { 4 } else { 0 },
            max_conns_per_blob: 6,
            max_outbound_per_blob: 3,
            ..cfg()
        };
        let mut e = Engine::new(cfg, PeerId([1; 20]), 9);
        let mut now = Instant::now();
        if seeding {
            e.seed(now, blob(), layout(), true).unwrap();
        } else {
            e.download(now, blob(), layout()).unwrap();
        }
        let mut conns: Vec<ConnId> = Vec::new();
        let pick = |conns: &Vec<ConnId>, k: u8| conns.get(k as usize % conns.len().max(1)).copied();
        for o in ops {
            match o {
                Op::Open { peer, origin, outbound } => {
                    let i = info(peer, origin);
                    if origin {
                        // Only discovery makes a peer an origin.
                        e.handle(now, Event::Announced { blob: blob(), peers: vec![i.clone()], interval: Duration::from_secs(30) });
                    }
                    if let Ok(c) = e.open(now, &blob(), Remote::claimed(i.peer_id, i.addr), outbound) {
                        conns.push(c);
                    }
                }
                Op::Msg { conn, kind, index } => if let Some(c) = pick(&conns, conn) {
                    e.handle(now, Event::Message { conn: c, msg: message(kind, index % PIECES) });
                },
                Op::Piece { conn, index, valid } => if let Some(c) = pick(&conns, conn) {
                    e.handle(now, Event::PieceReceived { conn: c, index: index % PIECES, valid });
                },
                Op::Written { index, ok } => e.handle(now, Event::PieceWritten { blob: blob(), index: index % PIECES, ok }),
                Op::Uploaded { conn, index } => if let Some(c) = pick(&conns, conn) {
                    e.handle(now, Event::Uploaded { conn: c, index });
                },
                Op::Closed { conn, protocol } => if let Some(c) = pick(&conns, conn) {
                    let reason = if protocol { CloseReason::Protocol } else { CloseReason::Disconnected };
                    e.handle(now, Event::Closed { conn: c, reason });
                },
                Op::DialFailed { peer, busy } => e.handle(now, Event::DialFailed {
                    blob: blob(),
                    peer: info(peer, false).peer_id,
                    code: busy.then_some(ErrorCode::Busy),
                }),
                Op::Announced { peers } => e.handle(now, Event::Announced {
                    blob: blob(),
                    peers: peers.iter().map(|&p| info(p, p % 4 == 0)).collect(),
                    interval: Duration::from_secs(3),
                }),
                Op::Committed { ok } => e.handle(now, Event::Committed { blob: blob(), ok }),
                Op::Advance { ms } => {
                    now += Duration::from_millis(ms as u64);
                    e.handle_timeout(now);
                }
            }
            while let Some(a) = e.poll_action() {
                if let Action::Close { conn, .. } = a {
                    conns.retain(|&c| c != conn);
                }
            }
            e.check();
        }
    }
}
