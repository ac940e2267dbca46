//! A whole Shoal over TLS in one process: origins and a tracker serving HTTPS, agents that
//! verify them against the cluster's CA, and the peer protocol over mutual TLS with peer
//! ids taken from the certificates. A blob pulled by one agent reaches the next one from
//! its peer, not only from the origins.
#![allow(clippy::unwrap_used)]

mod support;

use shoal_agent::testing::{TestAgent, agent_tls_config, tls_tracker_for};
use shoal_core::Digest;
use shoal_core::testing::TestPki;
use shoal_core::tls::PeerIdentity;
use shoal_origin::testing::TestCluster;
use shoal_tests::data::noise;
use support::http;

const MIB: usize = 1 << 20;

async fn pull(agent: &TestAgent, digest: &Digest) -> bytes::Bytes {
    let res = http()
        .get(format!("{}/v2/team/app/blobs/{digest}", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_pull_from_origins_a_tracker_and_each_other_over_tls() {
    let pki = TestPki::new();
    let origins = TestCluster::builder(2).replicas(2).tls(&pki).start().await;
    let tracker = tls_tracker_for(&origins, 2, &pki).await;
    assert!(tracker.url.starts_with("https://"));
    for i in 0..2 {
        assert_eq!(
            origins.origin(i).peer_id(),
            PeerIdentity::id_of(&format!("origin-{i}.origin.shoal")),
            "an origin's peer id is its certificate's"
        );
    }
    let blob = noise(21, 16 * MIB);
    let digest = origins.push(&blob).await;
    origins.settle().await;

    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = TestAgent::start(agent_tls_config(
        dirs[0].path(),
        &origins,
        Some(&tracker),
        &pki,
        "node-a",
    ))
    .await;
    assert_eq!(
        first.agent.node().peer_id(),
        PeerIdentity::id_of("node-a.agent.shoal"),
        "an agent's peer id is its certificate's"
    );
    assert!(
        pull(&first, &digest).await == blob,
        "the first pull differs"
    );
    assert!(
        first.metric(
            "shoal_agent_peer_bytes_received_total",
            &["source=\"origin\""]
        ) > 0.0,
        "the first agent got no pieces from the origins over the peer protocol"
    );

    let second = TestAgent::start(agent_tls_config(
        dirs[1].path(),
        &origins,
        Some(&tracker),
        &pki,
        "node-b",
    ))
    .await;
    assert!(
        pull(&second, &digest).await == blob,
        "the second pull differs"
    );
    let from_peer = second.metric(
        "shoal_agent_peer_bytes_received_total",
        &["source=\"peer\""],
    );
    println!(
        "the second agent got {:.1} MiB of {} MiB from the first",
        from_peer / MIB as f64,
        blob.len() / MIB
    );
    assert!(
        from_peer > 0.0,
        "the second agent got nothing from its peer"
    );

    second.stop().await;
    first.stop().await;
    tracker.stop().await;
    origins.shutdown().await;
}
