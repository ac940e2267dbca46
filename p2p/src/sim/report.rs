//! What a run measured, and a progress line for studying one as it goes.

use std::time::Duration;

use super::SimReport;
use super::world::{Host, MARKS, Sim, host_of};

impl Sim<'_> {
    /// One line of swarm state, for studying the dynamics of a run.
    pub(super) fn print_trace(&self) {
        let leechers = &self.hosts[self.cfg.origins..];
        let pieces = self.layout.pieces.max(1) as f64;
        let haves: Vec<usize> = leechers
            .iter()
            .map(|h| {
                h.engine
                    .have(&self.digest)
                    .map_or(self.layout.pieces as usize, |b| b.count())
            })
            .collect();
        let mean = haves.iter().sum::<usize>() as f64 / haves.len().max(1) as f64 / pieces;
        let min = haves.iter().copied().min().unwrap_or(0) as f64 / pieces;
        let busy = leechers.iter().filter(|h| h.sending.is_some()).count();
        let queued: usize = leechers.iter().map(|h| h.queue.len()).sum();
        let in_flight: usize = leechers
            .iter()
            .filter_map(|h| h.engine.stats(&self.digest).map(|s| s.in_flight))
            .sum();
        if let Some((worst, _)) = haves
            .iter()
            .enumerate()
            .filter(|(i, _)| !leechers[*i].slow)
            .min_by_key(|(_, h)| **h)
        {
            let h = &leechers[worst];
            let peers = h.engine.peers(&self.digest);
            let to_origin = peers
                .iter()
                .filter(|p| (host_of(p) as usize) < self.cfg.origins)
                .count();
            eprintln!(
                "  slowest fast host {}: peers {} (origins {}, slow {}) tracker-rank {:?} {:?}",
                worst + self.cfg.origins,
                peers.len(),
                to_origin,
                peers
                    .iter()
                    .filter(|p| self.hosts[host_of(p) as usize].slow)
                    .count(),
                self.tracker.rank(&h.info.peer_id),
                h.engine.stats(&self.digest)
            );
        }
        eprintln!(
            "t={:.3}s origin-out {:.3} origin-copies {:.3} mean-have {:.3} min-have {:.3} uplinks-busy {:.2} queued/host {:.1} in-flight/host {:.1} done {}",
            self.now as f64 / 1e9,
            self.origin_out_count as f64 / pieces,
            self.hosts[..self.cfg.origins]
                .iter()
                .map(|h| h.uploaded)
                .sum::<u64>() as f64
                / self.cfg.size.max(1) as f64,
            mean,
            min,
            busy as f64 / leechers.len().max(1) as f64,
            queued as f64 / leechers.len().max(1) as f64,
            in_flight as f64 / leechers.len().max(1) as f64,
            self.cfg.hosts - self.remaining,
        );
    }

    pub(super) fn report(&self, wall: Duration) -> SimReport {
        let secs = |t: u64| t as f64 / 1e9;
        let mut all: Vec<f64> = Vec::new();
        let mut fast: Vec<f64> = Vec::new();
        let mut stats = (0u64, 0u64, 0u64, 0u64);
        let first: Vec<f64> = self.hosts[self.cfg.origins..]
            .iter()
            .map(|h| h.first_at.map_or(f64::INFINITY, secs))
            .collect();
        for host in &self.hosts[self.cfg.origins..] {
            let t = host.done_at.map_or(f64::INFINITY, secs);
            all.push(t);
            if !host.slow {
                fast.push(t);
            }
            if let Some(s) = host.engine.stats(&self.digest) {
                stats.0 += s.duplicate_pieces;
                stats.1 += s.bad_pieces;
                stats.2 += s.timeouts;
                stats.3 += s.rejects_received;
            }
        }
        let marks_p50 = |f: &dyn Fn(&Host) -> [Option<u64>; 4]| {
            let mut out = [f64::NAN; 4];
            for (i, o) in out.iter_mut().enumerate() {
                let v: Vec<f64> = self.hosts[self.cfg.origins..]
                    .iter()
                    .map(|h| f(h)[i].map_or(f64::INFINITY, secs))
                    .collect();
                *o = percentile(&v, 0.5);
            }
            out
        };
        let origin_bytes: u64 = self.hosts[..self.cfg.origins]
            .iter()
            .map(|h| h.uploaded)
            .sum();
        let bound = self.cfg.bound().as_secs_f64();
        let p = |v: &[f64], q: f64| percentile(v, q);
        let p99 = p(&all, 0.99);
        let max = p(&all, 1.0);
        let finite: Vec<f64> = all.iter().copied().filter(|t| t.is_finite()).collect();
        SimReport {
            hosts: self.cfg.hosts,
            size_bytes: self.cfg.size,
            piece_bytes: self.cfg.piece_length,
            rate_bytes_per_s: self.cfg.rate,
            seed: self.cfg.seed,
            completed: finite.len(),
            bound_s: bound,
            central_s: self.cfg.central().as_secs_f64(),
            p50_s: p(&all, 0.5),
            p99_s: p99,
            max_s: max,
            mean_s: finite.iter().sum::<f64>() / finite.len().max(1) as f64,
            fast_p99_s: p(&fast, 0.99),
            fast_max_s: p(&fast, 1.0),
            max_over_bound: max / bound,
            p99_over_bound: p99 / bound,
            origin_copies: origin_bytes as f64 / self.cfg.size.max(1) as f64,
            origin_all_out_s: self.origin_all_out.map_or(f64::INFINITY, secs),
            first_piece_p50_s: p(&first, 0.5),
            first_piece_p99_s: p(&first, 0.99),
            progress_marks: MARKS,
            held_p50_s: marks_p50(&|h| h.held_at),
            in_order_p50_s: marks_p50(&|h| h.in_order_at),
            streaming: self.cfg.streaming,
            ranked_offers: self.cfg.ranked_offers,
            duplicate_pieces: stats.0,
            bad_pieces: stats.1,
            timeouts: stats.2,
            rejects: stats.3,
            slow_hosts: self.hosts.iter().filter(|h| h.slow).count(),
            faulty_hosts: self.hosts.iter().filter(|h| h.faulty).count(),
            events: self.events,
            wall_s: wall.as_secs_f64(),
        }
    }
}

/// The `q` quantile (nearest rank) of `v`; infinite entries are hosts that never finished.
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}
