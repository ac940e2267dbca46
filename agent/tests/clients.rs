//! Real clients against an agent, as users run them: skopeo and podman pull an image that
//! was pushed to the origins, its layer through the swarm. A missing client program fails
//! its test with a message that names it.

// Helpers here are test code too; clippy's test exemption covers only `#[test]` functions.
#![allow(clippy::unwrap_used)]

use shoal_agent::testing::{TestAgent, agent_config, tracker_for};
use shoal_core::Digest;
use shoal_origin::testing::TestCluster;
use shoal_tests::data::noise;
use shoal_tests::oci::{Entry, tar};
use shoal_tests::process::require;

async fn run(program: &str, args: &[&str]) -> String {
    shoal_tests::process::run_async(program, args, &[]).await
}

struct Pushed {
    layer: Vec<u8>,
    layer_d: Digest,
    manifest: Vec<u8>,
    manifest_d: Digest,
}

/// A one-layer image (an uncompressed tar with a 3 MiB file) tagged `name:tag`.
async fn push(origins: &TestCluster, name: &str, tag: &str) -> Pushed {
    let layer = tar(&[
        Entry::file("etc/hello", b"hello from the swarm\n"),
        Entry::file("data/big", &noise(61, 3 << 20)),
    ]);
    let layer_d = origins.push(&layer).await;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_d.to_string()]},
        "history": [{"created_by": "a test"}],
    }))
    .unwrap();
    let config_d = origins.push(&config).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_d.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_d.to_string(),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let manifest_d = origins.push(&manifest).await;
    origins.tag(name, tag, &manifest_d).await;
    Pushed {
        layer,
        layer_d,
        manifest,
        manifest_d,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_inspects_and_copies_through_the_agent() {
    require("skopeo", "skopeo");
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let tracker = tracker_for(&origins, 1).await;
    let image = push(&origins, "tools/skopeo-test", "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestAgent::start(agent_config(dir.path(), &origins, Some(&tracker))).await;
    let remote = format!(
        "docker://{}/tools/skopeo-test:1.0",
        a.url.trim_start_matches("http://")
    );

    let out = run("skopeo", &["inspect", "--tls-verify=false", &remote]).await;
    let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspected["Digest"], image.manifest_d.to_string());
    assert_eq!(inspected["Os"], "linux");

    let target = tempfile::tempdir().unwrap();
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            &remote,
            &format!("dir:{}", target.path().display()),
        ],
    )
    .await;
    let copied = std::fs::read(target.path().join(image.layer_d.hex())).unwrap();
    assert!(copied == image.layer, "skopeo got another layer");
    let copied = std::fs::read(target.path().join("manifest.json")).unwrap();
    assert!(copied == image.manifest);
    assert_eq!(
        a.metric("shoal_agent_downloads_total", &["result=\"ok\""]),
        1.0,
        "the layer came through the swarm"
    );

    a.stop().await;
    tracker.stop().await;
    origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_and_unpacks_an_image_through_the_agent() {
    require("podman", "podman");
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let tracker = tracker_for(&origins, 1).await;
    let image = push(&origins, "team/app", "1").await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestAgent::start(agent_config(dir.path(), &origins, Some(&tracker))).await;
    let storage = tempfile::tempdir().unwrap();
    let root = storage.path().join("root").display().to_string();
    let runroot = storage.path().join("runroot").display().to_string();
    let podman = |args: &[&str]| {
        let mut all: Vec<String> = [
            "--root",
            &root,
            "--runroot",
            &runroot,
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(args.iter().map(|s| s.to_string()));
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run("podman", &refs).await
        }
    };
    let reference = format!("{}/team/app:1", a.url.trim_start_matches("http://"));
    podman(&["pull", "--tls-verify=false", &reference]).await;
    let images = podman(&[
        "images",
        "--digests",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.Digest}}",
    ])
    .await;
    assert!(
        images.contains(&format!("team/app:1 {}", image.manifest_d)),
        "{images}"
    );
    assert!(a.agent.cache().contains(&image.layer_d));

    a.stop().await;
    tracker.stop().await;
    origins.shutdown().await;
}
