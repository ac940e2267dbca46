//! The cluster launcher as the benchmarks and tests use it, with nothing but the parts'
//! binaries: a cluster on free ports comes up over TLS, carries a blob from the proxy to
//! every agent (the figures saying where its pieces came from, read from the origins over
//! HTTPS), and is stopped by pid; one left running in plain on purpose is stopped later
//! from its directory alone, as `down` does.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use shoal_cluster::figures::{agent_piece_bytes, origins_peer_sent};
use shoal_cluster::process::pid_running;
use shoal_cluster::registry::{Registry, client};
use shoal_cluster::{Cluster, ClusterDir, Role, Spec};
use shoal_core::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_free_ports_carries_a_blob_to_every_agent_and_stops_by_pid() {
    let dir = tempfile::tempdir().unwrap();
    let bins = shoal_tests::bins();
    let mut spec = Spec::on_free_ports(2, 2);
    spec.tls = true;
    let mut cluster =
        tokio::task::block_in_place(|| Cluster::start(&bins, dir.path(), spec)).unwrap();
    let pids: Vec<u32> = cluster.processes().map(|(_, pid)| pid).collect();
    assert_eq!(pids.len(), 2 + 1 + 1 + 2);
    let dirs = cluster.dir().clone();
    assert_eq!(dirs.running_names().len(), pids.len());

    let blob = shoal_tests::data::noise(7, 3 << 20);
    let digest = Digest::sha256_of(&blob);
    let file = dir.path().join("blob");
    std::fs::write(&file, &blob).unwrap();
    let proxy = cluster.proxy().unwrap().url();
    Registry::new(client().unwrap(), &proxy, None)
        .push_blob("launch/test", &file, &digest, blob.len() as u64)
        .await
        .unwrap();
    for a in cluster.of(Role::Agent) {
        let got = Registry::new(client().unwrap(), &a.url(), None)
            .pull_blob("launch/test", &digest)
            .await
            .unwrap();
        assert_eq!(got, blob.len() as u64, "{} served the whole blob", a.name);
    }
    let addrs: Vec<String> = cluster.agents().iter().map(|a| a.addr.clone()).collect();
    let origins: Vec<_> = cluster
        .origins()
        .iter()
        .map(|o| cluster.target(o))
        .collect();
    assert!(origins.iter().all(|o| o.is_https()));
    let (peers, from_origins) = tokio::task::block_in_place(|| {
        addrs
            .iter()
            .map(|a| agent_piece_bytes(a))
            .fold((0.0, 0.0), |s, (p, o)| (s.0 + p, s.1 + o))
    });
    assert!(
        peers + from_origins >= 2.0 * blob.len() as f64,
        "the agents took {peers} bytes from peers and {from_origins} from origins"
    );
    let sent = tokio::task::block_in_place(|| origins_peer_sent(&origins));
    assert!(
        sent >= from_origins,
        "the origins sent {sent} over the peer protocol"
    );

    let killed = tokio::task::block_in_place(|| cluster.stop());
    assert!(killed.is_empty(), "{killed:?} had to be killed");
    assert!(pids.iter().all(|p| !pid_running(*p)));
    assert!(dirs.recorded_names().is_empty(), "the pid files are gone");
}

#[test]
fn a_detached_cluster_is_stopped_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::on_free_ports(1, 0);
    spec.proxy = false;
    let cluster = Cluster::start(&shoal_tests::bins(), dir.path(), spec).unwrap();
    let pids: Vec<u32> = cluster.processes().map(|(_, pid)| pid).collect();
    cluster.detach();
    let dirs = ClusterDir::new(dir.path());
    let names = dirs.running_names();
    assert_eq!(names, ["origin-0", "tracker"]);
    assert!(dirs.stop(&names, Duration::from_secs(10)).is_empty());
    // Nothing reaps them in this process: they linger as zombies, which is stopped.
    assert!(pids.iter().all(|p| !pid_running(*p)));
    assert!(dirs.running_names().is_empty());
}
