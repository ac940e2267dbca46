//! Origins, a tracker and agents on real sockets in one process: what a host pulling an
//! image through its agent sees.

// Helpers here are test code too; clippy's test exemption covers only `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use shoal_agent::testing::{TestAgent, agent_config, tracker_for};
use shoal_core::Digest;
use shoal_core::testing::{registry_sum, wait_until};
use shoal_origin::testing::TestCluster;
use shoal_tests::data::noise;
use support::http;

const MIB: usize = 1 << 20;

/// An image pushed to the origins: a config, one layer, a manifest tagged `name:tag`.
struct Image {
    config: Vec<u8>,
    config_digest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
    manifest: Vec<u8>,
    manifest_digest: Digest,
}

async fn push_image(origins: &TestCluster, name: &str, tag: &str, layer_len: usize) -> Image {
    let layer = noise(layer_len as u64, layer_len);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(&layer).to_string()]},
    }))
    .unwrap();
    let config_digest = origins.push(&config).await;
    let layer_digest = origins.push(&layer).await;
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest.to_string(),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let manifest_digest = origins.push(&manifest).await;
    origins.tag(name, tag, &manifest_digest).await;
    origins.settle().await;
    Image {
        config,
        config_digest,
        layer,
        layer_digest,
        manifest,
        manifest_digest,
    }
}

/// Pulls `name:tag` through an agent as a client would and checks every byte and header.
async fn pull(agent_url: String, name: &str, tag: &str, image: &Image) {
    let http = http();
    let res = http
        .get(format!(
            "{agent_url}/v2/{name}/manifests/{tag}?ns=docker.io"
        ))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        res.headers()["docker-content-digest"],
        image.manifest_digest.to_string().as_str()
    );
    assert_eq!(
        res.headers()["content-length"],
        image.manifest.len().to_string().as_str()
    );
    assert!(res.bytes().await.unwrap() == image.manifest);

    let res = http
        .get(format!(
            "{agent_url}/v2/{name}/blobs/{}",
            image.config_digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap() == image.config);

    let res = http
        .get(format!(
            "{agent_url}/v2/{name}/blobs/{}",
            image.layer_digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"],
        image.layer.len().to_string().as_str()
    );
    let got = res.bytes().await.unwrap();
    assert_eq!(got.len(), image.layer.len());
    assert!(got == image.layer, "the layer differs from what was pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_agents_pull_one_image_at_once_and_the_origins_send_it_about_once() {
    let origins = TestCluster::builder(3).replicas(3).start().await;
    let tracker = tracker_for(&origins, 3).await;
    let image = push_image(&origins, "team/app", "v1", 64 * MIB).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut agents = Vec::new();
    for d in &dirs {
        agents.push(TestAgent::start(agent_config(d.path(), &origins, Some(&tracker))).await);
    }
    let before = origins.sent_bytes();

    let started = std::time::Instant::now();
    let pulls: Vec<_> = agents
        .iter()
        .map(|a| tokio::spawn(pull_owned(a.url.clone(), image_ref(&image))))
        .collect();
    for p in pulls {
        p.await.unwrap();
    }
    println!(
        "three agents pulled the image in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let sent = origins.sent_bytes() - before;
    for i in 0..origins.len() {
        let r = origins.registry(i);
        println!(
            "origin {i} sent since it started (replica copies included): http {:.1} MiB, peer {:.1} MiB",
            registry_sum(r, "shoal_origin_sent_bytes_total", &["proto=\"http\""]) / MIB as f64,
            registry_sum(r, "shoal_origin_sent_bytes_total", &["proto=\"peer\""]) / MIB as f64
        );
    }
    let layer = image.layer.len() as f64;
    println!(
        "origins sent {:.1} MiB for three pulls of a {:.0} MiB layer ({:.2}x)",
        sent / MIB as f64,
        layer / MIB as f64,
        sent / layer
    );
    assert!(
        sent < 2.0 * layer,
        "origins sent {sent} bytes for a {layer}-byte layer pulled by three agents"
    );
    let mut from_peers = 0.0;
    for a in &agents {
        from_peers += a.metric(
            "shoal_agent_peer_bytes_received_total",
            &["source=\"peer\""],
        );
        assert_eq!(
            a.metric("shoal_agent_downloads_total", &["result=\"ok\""]),
            1.0,
            "one swarm download per agent"
        );
        assert!(a.metric("shoal_agent_client_bytes_sent_total", &[]) >= layer);
        assert_eq!(a.metric("shoal_agent_download_seconds_count", &[]), 1.0);
    }
    println!(
        "agents got {:.1} MiB from each other",
        from_peers / MIB as f64
    );
    assert!(from_peers > 0.0, "the agents never fed each other");

    for a in agents {
        a.stop().await;
    }
    tracker.stop().await;
    origins.shutdown().await;
}

/// What `pull` needs, owned, for a spawned task.
struct ImageRef {
    name: &'static str,
    tag: &'static str,
    image: Image,
}

fn image_ref(i: &Image) -> ImageRef {
    ImageRef {
        name: "team/app",
        tag: "v1",
        image: Image {
            config: i.config.clone(),
            config_digest: i.config_digest,
            layer: i.layer.clone(),
            layer_digest: i.layer_digest,
            manifest: i.manifest.clone(),
            manifest_digest: i.manifest_digest,
        },
    }
}

async fn pull_owned(url: String, r: ImageRef) {
    pull(url, r.name, r.tag, &r.image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn head_answers_from_what_is_known_and_starts_no_download() {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let tracker = tracker_for(&origins, 1).await;
    let layer = noise(11, 4 * MIB);
    let digest = origins.push(&layer).await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestAgent::start(agent_config(dir.path(), &origins, Some(&tracker))).await;
    let before = origins.sent_bytes();

    let res = http()
        .head(format!("{}/v2/some/repo/blobs/{digest}", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "4194304");
    assert_eq!(
        res.headers()["docker-content-digest"],
        digest.to_string().as_str()
    );

    assert!(a.agent.progress(&digest).await.is_none());
    assert!(a.agent.node().stats(digest).await.is_none());
    assert_eq!(a.metric("shoal_agent_downloads_in_flight", &[]), 0.0);
    assert_eq!(a.metric("shoal_agent_downloads_total", &[]), 0.0);
    assert_eq!(a.metric("shoal_agent_peer_bytes_received_total", &[]), 0.0);
    assert!(!a.agent.cache().contains(&digest));
    assert_eq!(origins.sent_bytes(), before);

    // An unknown blob is a 404 for HEAD too, without a body.
    let unknown = Digest::sha256_of(b"never pushed");
    let res = http()
        .head(format!("{}/v2/some/repo/blobs/{unknown}", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    a.stop().await;
    tracker.stop().await;
    origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_bytes_leave_before_the_last_piece_arrives_and_askers_share_a_download() {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let tracker = tracker_for(&origins, 1).await;
    let layer = noise(12, 16 * MIB);
    let digest = origins.push(&layer).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = agent_config(dir.path(), &origins, Some(&tracker));
    // Slow enough that the client reads while pieces are still on their way.
    config.peer.ingress = "8MiB/s".parse().unwrap();
    let a = TestAgent::start(config).await;
    let url = format!("{}/v2/some/repo/blobs/{digest}", a.url);

    let res = http().get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let progress = a
        .agent
        .progress(&digest)
        .await
        .expect("a download is running");
    let (have, pieces) = {
        let p = progress.borrow();
        (p.have.count(), p.have.len())
    };
    assert!(
        have < pieces,
        "the first bytes came only after all {pieces} pieces had arrived"
    );
    println!("first body bytes reached the client with {have} of {pieces} pieces verified");

    // A second asker, for a range in the middle, joins the same download.
    let start = 5 * MIB + 17;
    let end = 9 * MIB;
    let ranged = http()
        .get(&url)
        .header("range", format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes {start}-{}/{}", end - 1, layer.len()).as_str()
    );
    let mut got = first.to_vec();
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == layer);
    let part = ranged.bytes().await.unwrap();
    assert!(part == layer[start..end]);
    assert_eq!(
        a.metric("shoal_agent_downloads_total", &["result=\"ok\""]),
        1.0
    );
    assert!(a.metric("shoal_agent_peer_bytes_received_total", &[]) < 1.5 * layer.len() as f64);

    a.stop().await;
    tracker.stop().await;
    origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_serves_its_cache_without_refetching_and_seeds_again() {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let tracker = tracker_for(&origins, 1).await;
    let image = push_image(&origins, "team/app", "v1", 8 * MIB).await;
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), &origins, Some(&tracker));
    let a = TestAgent::start(config.clone()).await;
    pull(a.url.clone(), "team/app", "v1", &image).await;
    wait_until("the layer is in the cache", Duration::from_secs(10), || {
        let ok = a.agent.cache().contains(&image.layer_digest);
        async move { ok }
    })
    .await;
    a.stop().await;

    let before = origins.sent_bytes();
    let a = TestAgent::start(config).await;
    assert!(a.agent.cache().contains(&image.layer_digest));
    let http = http();
    for d in [
        image.manifest_digest,
        image.config_digest,
        image.layer_digest,
    ] {
        let kind = if d == image.manifest_digest {
            "manifests"
        } else {
            "blobs"
        };
        let res = http
            .get(format!("{}/v2/team/app/{kind}/{d}", a.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let got = res.bytes().await.unwrap();
        assert_eq!(Digest::sha256_of(&got), d);
    }
    // A range of a cached blob.
    let res = http
        .get(format!(
            "{}/v2/team/app/blobs/{}",
            a.url, image.layer_digest
        ))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert!(res.bytes().await.unwrap() == image.layer[image.layer.len() - 10..]);

    assert_eq!(origins.sent_bytes(), before, "the origins were asked again");
    assert_eq!(a.metric("shoal_agent_peer_bytes_received_total", &[]), 0.0);
    assert_eq!(a.metric("shoal_agent_cache_hits_total", &[]), 4.0);
    assert_eq!(a.metric("shoal_agent_cache_misses_total", &[]), 0.0);
    // Pulled again, the layer is seeded again.
    let node = a.agent.node().clone();
    let d = image.layer_digest;
    wait_until(
        "the cached layer is seeded",
        Duration::from_secs(10),
        || {
            let node = node.clone();
            async move { node.stats(d).await.is_some_and(|s| s.complete) }
        },
    )
    .await;

    a.stop().await;
    tracker.stop().await;
    origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_tracker_the_origins_are_the_peers() {
    let origins = TestCluster::builder(2).replicas(1).start().await;
    let image = push_image(&origins, "solo", "latest", 3 * MIB).await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestAgent::start(agent_config(dir.path(), &origins, None)).await;
    pull(a.url.clone(), "solo", "latest", &image).await;
    assert!(
        a.metric(
            "shoal_agent_peer_bytes_received_total",
            &["source=\"origin\""]
        ) >= image.layer.len() as f64
    );
    a.stop().await;
    origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_stays_within_its_size_by_evicting_what_the_swarm_let_go() {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let tracker = tracker_for(&origins, 1).await;
    let a_bytes = noise(51, 6 * MIB);
    let b_bytes = noise(52, 6 * MIB);
    let a_d = origins.push(&a_bytes).await;
    let b_d = origins.push(&b_bytes).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = agent_config(dir.path(), &origins, Some(&tracker));
    config.cache.max_size = shoal_core::units::ByteSize(10 * MIB as u64);
    config.swarm.seed_idle = Duration::from_millis(300);
    let a = TestAgent::start(config).await;
    let get = |d: Digest| {
        let url = format!("{}/v2/x/blobs/{d}", a.url);
        async move {
            let res = http().get(url).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap()
        }
    };
    assert!(get(a_d).await == a_bytes);
    let node = a.agent.node().clone();
    wait_until(
        "the swarm lets the first blob go",
        Duration::from_secs(10),
        || {
            let node = node.clone();
            async move { node.stats(a_d).await.is_none() }
        },
    )
    .await;
    assert!(a.agent.cache().contains(&a_d));

    // The second blob needs the first one's room.
    assert!(get(b_d).await == b_bytes);
    let cache = a.agent.cache().clone();
    wait_until("the second blob is cached", Duration::from_secs(10), || {
        let ok = cache.contains(&b_d);
        async move { ok }
    })
    .await;
    assert!(!cache.contains(&a_d));
    assert!(!cache.store().contains(&a_d).await.unwrap());
    assert!(cache.size() <= 10 * MIB as u64);
    assert_eq!(a.metric("shoal_agent_cache_evictions_total", &[]), 1.0);
    assert_eq!(a.metric("shoal_agent_cache_bytes", &[]), 6.0 * MIB as f64);

    a.stop().await;
    tracker.stop().await;
    origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_the_host_already_pulled_survives_an_origin_outage() {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let tracker = tracker_for(&origins, 1).await;
    let image = push_image(&origins, "team/app", "v1", 2 * MIB).await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestAgent::start(agent_config(dir.path(), &origins, Some(&tracker))).await;
    pull(a.url.clone(), "team/app", "v1", &image).await;
    let cache = a.agent.cache().clone();
    wait_until("the layer is cached", Duration::from_secs(10), || {
        let ok = cache.contains(&image.layer_digest);
        async move { ok }
    })
    .await;

    tracker.stop().await;
    origins.shutdown().await;
    pull(a.url.clone(), "team/app", "v1", &image).await;
    // A tag this host never resolved cannot be answered.
    let res = http()
        .get(format!("{}/v2/team/app/manifests/v2", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    a.stop().await;
}
