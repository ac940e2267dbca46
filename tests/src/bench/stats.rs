//! Percentiles of measured times, and the physical bound they are set against.

/// The `p`-th percentile (0–100) of `values` by the nearest-rank method: the smallest value
/// with at least `p`% of them at or below it. `NaN` for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The least time in which every one of `n` downloaders can hold a blob of `size` bytes
/// that the origins hold from the start: each downloader must take in all of it (`size /
/// down`), someone must take each byte from the origins (`size / up_origins`), and the `n`
/// copies must be uploaded by the origins and downloaders together (`n·size / (up_origins +
/// n·up)`). With every host at one cap `r` and at least one origin, that is `size / r`.
pub fn bound_s(n: usize, size: u64, up_origins: f64, up: f64, down: f64) -> f64 {
    let (n, f) = (n as f64, size as f64);
    (f / up_origins)
        .max(f / down)
        .max(n * f / (up_origins + n * up))
}

/// The time of the first sample `(seconds, bytes so far)` at which `share` (0–1) of `total`
/// bytes had arrived; `None` if none had.
pub fn time_to_share(timeline: &[(f64, f64)], total: f64, share: f64) -> Option<f64> {
    timeline
        .iter()
        .find(|(_, b)| *b >= share * total)
        .map(|(t, _)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sample_past_a_share() {
        let t = [(0.5, 10.0), (1.0, 50.0), (1.5, 100.0)];
        assert_eq!(time_to_share(&t, 100.0, 0.1), Some(0.5));
        assert_eq!(time_to_share(&t, 100.0, 0.5), Some(1.0));
        assert_eq!(time_to_share(&t, 100.0, 1.0), Some(1.5));
        assert_eq!(time_to_share(&t, 200.0, 1.0), None);
    }

    #[test]
    fn the_bound_at_one_cap_is_size_over_rate() {
        let mib = 1u64 << 20;
        let r = 16.0 * mib as f64;
        assert_eq!(bound_s(16, 128 * mib, 3.0 * r, r, r), 8.0);
        // Slow origins: the first copy cannot leave them sooner.
        assert_eq!(bound_s(16, 128 * mib, r / 2.0, r, r), 16.0);
        // Downloaders that upload nothing: the origins carry every copy.
        assert_eq!(bound_s(4, 128 * mib, r, 0.0, r), 32.0);
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=16).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 8.0);
        assert_eq!(percentile(&v, 90.0), 15.0);
        assert_eq!(percentile(&v, 100.0), 16.0);
        assert_eq!(percentile(&[3.0], 50.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
