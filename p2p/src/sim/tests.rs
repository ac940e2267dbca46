use super::*;

fn small() -> SimConfig {
    let mut c = SimConfig::new(30, 200 << 20, 1 << 30);
    c.seed = 7;
    c
}

#[test]
fn everyone_finishes_near_the_bound() {
    let r = run(&small());
    assert_eq!(r.completed, 30);
    assert!(r.max_s >= r.bound_s);
    assert!(r.max_s < 2.0 * r.bound_s, "{r:?}");
    assert!(r.max_s < r.central_s / 5.0, "{r:?}");
}

#[test]
fn runs_are_deterministic_per_seed() {
    let a = run(&small());
    let b = run(&small());
    assert_eq!((a.max_s, a.p50_s, a.events), (b.max_s, b.p50_s, b.events));
    let mut other = small();
    other.seed = 8;
    let c = run(&other);
    assert_ne!((a.max_s, a.events), (c.max_s, c.events));
}

#[test]
fn faulty_hosts_are_shunned_and_the_rest_finish() {
    let mut c = small();
    c.faulty_fraction = 0.2;
    let r = run(&c);
    assert_eq!(r.faulty_hosts, 6);
    // Faulty hosts fetch good pieces from others, so they finish too; every bad piece
    // was caught.
    assert_eq!(r.completed, 30);
    assert!(r.bad_pieces > 0);
}

#[test]
fn readers_get_their_first_piece_early_and_everyone_still_finishes() {
    let plain = run(&small());
    let mut c = small();
    c.streaming = true;
    let streaming = run(&c);
    assert_eq!(streaming.completed, 30);
    // The first bytes come after a few pieces' time, not near the end of the download.
    assert!(
        streaming.first_piece_p99_s < 0.1 * plain.max_s,
        "{streaming:?}\n{plain:?}"
    );
    assert!(
        streaming.max_s < 1.5 * plain.max_s,
        "{streaming:?}\n{plain:?}"
    );
    // Readers all wait at the same place; the origin must still send about one copy,
    // not one per reader.
    assert!(streaming.origin_copies < 1.5, "{streaming:?}");
}

#[test]
fn bound_formula() {
    let mut c = SimConfig::new(1000, 5_000_000_000, 5_000_000_000);
    assert!((c.bound().as_secs_f64() - 1.0).abs() < 1e-9);
    assert!((c.central().as_secs_f64() - 1000.0).abs() < 1e-9);
    c.slow_fraction = 0.1;
    c.slow_factor = 10.0;
    assert!((c.bound().as_secs_f64() - 10.0).abs() < 1e-9);
}
