//! Uploading: the upload queue, super-seeding offers, the end of seeding.

use super::*;

#[test]
fn an_origin_with_an_offer_start_offers_in_order_from_it_and_wraps() {
    let mut e = Engine::new(Config::origin(), PeerId([1; 20]), 0);
    let now = Instant::now();
    e.seed(now, blob(), layout(), false).unwrap();
    // Owner 2 of 3 starts two thirds of the way in; a bit further, to see the wrap.
    e.set_offer_start(&blob(), PIECES - 3);
    let addr = SocketAddr::from(([1, 1, 1, 1], 1));
    let mut offered = Vec::new();
    for k in 0..4u8 {
        let c = e
            .open(
                now,
                &blob(),
                Remote::claimed(PeerId([10 + k; 20]), addr),
                false,
            )
            .unwrap();
        e.handle(
            now,
            Event::Message {
                conn: c,
                msg: Message::Bitfield(Bitfield::new(PIECES as usize)),
            },
        );
        offered.extend(
            std::iter::from_fn(|| e.poll_action()).filter_map(|a| match a {
                Action::Send {
                    msg: Message::Have(i),
                    ..
                } => Some(i),
                _ => None,
            }),
        );
    }
    // Two offers per downloader, in index order from the start, each piece once.
    assert_eq!(
        offered,
        [PIECES - 3, PIECES - 2, PIECES - 1, 0, 1, 2, 3, 4],
        "{offered:?}"
    );
}

#[test]
fn uploads_beyond_the_queue_are_rejected() {
    let mut e = Engine::new(
        Config {
            max_upload_queue: 2,
            ..cfg()
        },
        PeerId([1; 20]),
        0,
    );
    let now = Instant::now();
    e.seed(now, blob(), layout(), false).unwrap();
    let c = e
        .open(
            now,
            &blob(),
            Remote::claimed(PeerId([2; 20]), SocketAddr::from(([1, 1, 1, 1], 1))),
            false,
        )
        .unwrap();
    for i in 0..3 {
        e.handle(
            now,
            Event::Message {
                conn: c,
                msg: Message::Request(i),
            },
        );
    }
    let actions: Vec<Action> = std::iter::from_fn(|| e.poll_action()).collect();
    let uploads = actions
        .iter()
        .filter(|a| matches!(a, Action::Upload { .. }))
        .count();
    assert_eq!(uploads, 2);
    assert!(actions.contains(&Action::Send {
        conn: c,
        msg: Message::Reject(2)
    }));
    // A cancel frees a slot.
    e.handle(
        now,
        Event::Message {
            conn: c,
            msg: Message::Cancel(0),
        },
    );
    e.handle(
        now,
        Event::Message {
            conn: c,
            msg: Message::Request(2),
        },
    );
    let actions: Vec<Action> = std::iter::from_fn(|| e.poll_action()).collect();
    assert_eq!(
        actions,
        vec![
            Action::CancelUpload { conn: c, index: 0 },
            Action::Upload { conn: c, index: 2 }
        ]
    );
}

#[test]
fn seeding_ends_after_idle_time_not_before() {
    let mut net = Net::new();
    net.seeder(cfg(), false, Fault::None);
    let idle = Duration::from_secs(10);
    let l = net.leecher(Config {
        seed_idle: Some(idle),
        ..cfg()
    });
    net.settle();
    assert!(net.completed(l));
    // A later leecher keeps it busy for a while.
    net.advance(Duration::from_secs(8));
    let l2 = net.leecher(cfg());
    net.tracker.push(net.nodes[l].info.clone());
    net.settle();
    net.advance(Duration::from_millis(100));
    assert!(net.completed(l2));
    net.advance(Duration::from_secs(8));
    assert!(net.nodes[l].engine.contains(&blob()));
    net.advance(Duration::from_secs(3));
    assert!(!net.nodes[l].engine.contains(&blob()));
    assert!(
        net.nodes[l]
            .log
            .iter()
            .any(|a| matches!(a, Action::Retired { .. }))
    );
}
