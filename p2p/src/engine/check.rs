//! The engine's invariants, checked by tests after every step: the counters against the
//! connections they count.

use super::Engine;
use super::swarm::Phase;

impl Engine {
    /// Checks that the books balance; panics naming the first that does not.
    pub(crate) fn check(&self) {
        let mut seen = 0;
        let mut inbound = 0;
        for sw in self.swarms.iter() {
            let mut in_flight = 0;
            let mut to_peers = 0;
            let mut uploads = 0;
            let mut offers = 0;
            let mut requested = vec![0u8; sw.layout.pieces as usize];
            for &id in &sw.conns {
                let c = self.conns.get(id).expect("swarm lists a closed connection");
                assert_eq!(self.swarms.get(c.swarm).map(|s| s.digest), Some(sw.digest));
                in_flight += c.requests.len();
                if !c.origin {
                    to_peers += c.requests.len();
                }
                uploads += c.uploads.len();
                offers += c.offered.len();
                inbound += usize::from(!c.outbound);
                for r in &c.requests {
                    requested[r.piece as usize] += 1;
                }
                assert_eq!(sw.slots.get(c.slot), Some(id));
                let Phase::Downloading(dl) = &sw.phase else {
                    continue;
                };
                if let Some(has) = &c.has {
                    let lacking = has.ones().filter(|&p| !sw.have.get(p)).count();
                    assert_eq!(
                        dl.holders.interesting(c.slot) as usize,
                        lacking,
                        "interesting count of {id}"
                    );
                }
                for p in 0..sw.layout.pieces as usize {
                    let held = c.has.as_ref().is_some_and(|h| h.get(p));
                    assert_eq!(held, dl.holders.holds(p, c.slot), "holders of piece {p}");
                }
            }
            seen += sw.conns.len();
            assert_eq!(sw.slots.len(), sw.conns.len());
            assert_eq!(sw.uploads, uploads);
            match &sw.phase {
                Phase::Downloading(dl) => {
                    assert_eq!(dl.in_flight, in_flight);
                    assert_eq!(dl.in_flight_to_peers, to_peers);
                    dl.picker.check();
                    for (p, &r) in requested.iter().enumerate() {
                        assert_eq!(dl.picker.requested(p as u32), r, "requests for piece {p}");
                    }
                }
                _ => assert_eq!(in_flight, 0, "requests out while not downloading"),
            }
            match &sw.phase {
                Phase::Seeding(Some(ss)) => assert_eq!(ss.offers_out(), offers),
                _ => assert_eq!(offers, 0, "offers out while not super-seeding"),
            }
        }
        assert_eq!(seen, self.conns.len());
        assert_eq!(inbound, self.inbound, "connections made to this node");
    }
}
