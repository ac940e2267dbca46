//! Real clients against a running proxy and its origins: skopeo, oras (Python) and podman,
//! pushing and pulling images the tests build as OCI layouts. A missing client program
//! fails its test with a message that names it.
#![allow(clippy::unwrap_used)] // helpers of tests: a failure is a failed test

use shoal_proxy::testing::TestProxy;
use shoal_tests::oci::{Entry, Layout, OCI_INDEX, OCI_MANIFEST, tar};
use shoal_tests::process::require;

/// Runs a program to the end and returns its stdout, failing the test with its output if
/// it does not succeed.
async fn run(program: &str, args: &[&str]) -> String {
    shoal_tests::process::run_async(program, args, &[]).await
}

fn skopeo_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--insecure-policy"];
    v.extend_from_slice(extra);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_an_image_and_a_two_platform_index_byte_exact() {
    require("skopeo", "skopeo");
    let c = TestProxy::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut src = Layout::new(&tmp.path().join("src"));
    let base = tar(&[Entry::file("etc/hello", b"hello from the base layer\n")]);
    let big: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let single = src.image(
        "amd64",
        &["/hello"],
        &[base.clone(), tar(&[Entry::file("data/big", &big)])],
    );
    src.tag("single", OCI_MANIFEST, &single);
    let amd = src.image(
        "amd64",
        &["/hello"],
        &[base.clone(), tar(&[Entry::file("arch", b"amd64")])],
    );
    let arm = src.image(
        "arm64",
        &["/hello"],
        &[base.clone(), tar(&[Entry::file("arch", b"arm64")])],
    );
    let index = src.index(&[("amd64", &amd), ("arm64", &arm)]);
    src.tag("multi", OCI_INDEX, &index);
    let src_dir = src.dir.display().to_string();
    let remote = |repo: &str| format!("docker://{}/{repo}", c.addr);

    for (tag, repo) in [("single", "lib/single:v1"), ("multi", "lib/multi:v1")] {
        run(
            "skopeo",
            &skopeo_args(&[
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                &format!("oci:{src_dir}:{tag}"),
                &remote(repo),
            ]),
        )
        .await;
    }

    // The manifests read back are the bytes that were pushed.
    for (repo, expected) in [("lib/single:v1", &single), ("lib/multi:v1", &index)] {
        let raw = run(
            "skopeo",
            &skopeo_args(&["inspect", "--raw", "--tls-verify=false", &remote(repo)]),
        )
        .await;
        assert_eq!(raw.trim_end().as_bytes(), expected.as_slice(), "{repo}");
    }
    let amd_digest = shoal_core::Digest::sha256_of(&amd);
    let raw = run(
        "skopeo",
        &skopeo_args(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &remote(&format!("lib/multi@{amd_digest}")),
        ]),
    )
    .await;
    assert_eq!(raw.trim_end().as_bytes(), amd.as_slice());

    // Copied back into a fresh layout, every blob is byte for byte the original.
    let out = Layout::new(&tmp.path().join("out"));
    let out_dir = out.dir.display().to_string();
    for (tag, repo) in [("single", "lib/single:v1"), ("multi", "lib/multi:v1")] {
        run(
            "skopeo",
            &skopeo_args(&[
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                &remote(repo),
                &format!("oci:{out_dir}:{tag}"),
            ]),
        )
        .await;
    }
    assert_eq!(out.blobs(), src.blobs());
    assert!(c.metric("shoal_proxy_blobs_stored_total", &[]) >= 10.0);
}

const ORAS_PUSH: &str = r#"
import sys
import oras.oci
import oras.provider

host, path, target, outdir, chunk, sbom, sbom_target = sys.argv[1:8]
reg = oras.provider.Registry(hostname=host, insecure=True)
res = reg.push(target=target, files=[path], do_chunked=True, chunk_size=int(chunk),
               disable_path_validation=True, quiet=True)
if res.status_code != 201:
    sys.exit(f"push answered {res.status_code}: {res.text}")
for f in reg.pull(target=target, outdir=outdir):
    print(f)
# An SBOM that refers to the artifact, for the referrers API.
subject = oras.oci.Subject.from_manifest(reg.get_manifest(target))
res = reg.push(target=sbom_target, files=[sbom], subject=subject,
               manifest_config=f"{sbom}:application/vnd.example.sbom",
               disable_path_validation=True, quiet=True)
if res.status_code != 201:
    sys.exit(f"referrer push answered {res.status_code}: {res.text}")
print("subject", subject.digest)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pushes_an_artifact_in_chunks_with_content_range_and_a_referrer() {
    require("python3", "python3");
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import oras.provider"])
        .output()
        .await
        .unwrap();
    assert!(
        probe.status.success(),
        "the Python package oras is not installed, and this test needs it \
         (tests/install-deps.sh installs it): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let c = TestProxy::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let artifact: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let path = tmp.path().join("model.bin");
    std::fs::write(&path, &artifact).unwrap();
    let outdir = tmp.path().join("pulled");
    let sbom = tmp.path().join("sbom.json");
    std::fs::write(&sbom, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let chunk = 64 * 1024;
    let patches_before = c.metric(
        "shoal_proxy_requests_total",
        &["method=\"PATCH\"", "route=\"upload\"", "status=\"2xx\""],
    );
    let printed = run(
        "python3",
        &[
            "-c",
            ORAS_PUSH,
            &c.addr,
            &path.display().to_string(),
            &format!("{}/ml/model:v1", c.addr),
            &outdir.display().to_string(),
            &chunk.to_string(),
            &sbom.display().to_string(),
            &format!("{}/ml/model:v1-sbom", c.addr),
        ],
    )
    .await;
    let patches = c.metric(
        "shoal_proxy_requests_total",
        &["method=\"PATCH\"", "route=\"upload\"", "status=\"2xx\""],
    ) - patches_before;
    assert!(
        patches >= (artifact.len() / chunk) as f64,
        "expected one PATCH per chunk, saw {patches}"
    );
    assert!(printed.contains("model.bin"), "{printed}");
    assert_eq!(std::fs::read(outdir.join("model.bin")).unwrap(), artifact);
    assert!(c.stored(&shoal_core::Digest::sha256_of(&artifact)).await);
    assert_eq!(c.spool_files(), 0);

    // The SBOM is listed as a referrer of the artifact's manifest, by its artifact type.
    let manifest = shoal_core::tls::client()
        .get(c.url("/v2/ml/model/manifests/v1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let subject = shoal_core::Digest::sha256_of(&manifest);
    assert!(printed.contains(&format!("subject {subject}")), "{printed}");
    let sbom_manifest = shoal_core::tls::client()
        .get(c.url("/v2/ml/model/manifests/v1-sbom"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    for query in ["", "?artifactType=application/vnd.example.sbom"] {
        let index: serde_json::Value = shoal_core::tls::client()
            .get(c.url(&format!("/v2/ml/model/referrers/{subject}{query}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let listed = index["manifests"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{index}");
        assert_eq!(
            listed[0]["digest"],
            shoal_core::Digest::sha256_of(&sbom_manifest).to_string()
        );
        assert_eq!(listed[0]["artifactType"], "application/vnd.example.sbom");
    }
    let none: serde_json::Value = shoal_core::tls::client()
        .get(c.url(&format!(
            "/v2/ml/model/referrers/{subject}?artifactType=application/vnd.example.sig"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["manifests"], serde_json::json!([]));
}

/// podman with its own storage in a temporary directory, on vfs.
struct Podman {
    root: String,
    runroot: String,
}

impl Podman {
    fn new(dir: &std::path::Path) -> Self {
        Podman {
            root: dir.join("root").display().to_string(),
            runroot: dir.join("runroot").display().to_string(),
        }
    }

    async fn run(&self, args: &[&str]) -> String {
        let mut all = vec![
            "--root",
            &self.root,
            "--runroot",
            &self.runroot,
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ];
        all.extend_from_slice(args);
        run("podman", &all).await
    }

    /// Pulls from an OCI layout and returns the image id.
    async fn load(&self, layout: &str, tag: &str) -> String {
        let out = self
            .run(&["pull", "--quiet", &format!("oci:{layout}:{tag}")])
            .await;
        out.lines().last().unwrap_or("").trim().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pushes_an_image_that_shares_layers_with_one_already_pushed() {
    require("podman", "podman");
    let c = TestProxy::start().await;
    // podman names an image from an OCI layout after its path, which must then be a valid
    // (lowercase) repository name.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tmp = tempfile::Builder::new()
        .prefix(&format!("shoal-podman-{}-{nonce:x}", std::process::id()))
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    let podman = Podman::new(tmp.path());
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let shared: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let shared = tar(&[Entry::file("usr/lib/shared.so", &shared)]);
    let base = layout.image("amd64", &["/hello"], std::slice::from_ref(&shared));
    layout.tag("base", OCI_MANIFEST, &base);
    let app = layout.image(
        "amd64",
        &["/hello"],
        &[
            shared.clone(),
            tar(&[Entry::file("app/main", b"the application\n")]),
        ],
    );
    layout.tag("app", OCI_MANIFEST, &app);
    let dir = layout.dir.display().to_string();

    let base_id = podman.load(&dir, "base").await;
    podman
        .run(&[
            "push",
            "--tls-verify=false",
            &base_id,
            &format!("docker://{}/team/base:1", c.addr),
        ])
        .await;
    let layer_bytes_before = c.metric("shoal_proxy_blob_bytes_stored_total", &[]);
    let blobs_before = c.metric("shoal_proxy_blobs_stored_total", &[]);

    let app_id = podman.load(&dir, "app").await;
    podman
        .run(&[
            "push",
            "--tls-verify=false",
            &app_id,
            &format!("docker://{}/team/app:1", c.addr),
        ])
        .await;
    // Only the new layer, the config and the manifest were stored: the shared layer was
    // found in the registry (by HEAD or by mount) and not sent again.
    let new_blobs = c.metric("shoal_proxy_blobs_stored_total", &[]) - blobs_before;
    let new_bytes = c.metric("shoal_proxy_blob_bytes_stored_total", &[]) - layer_bytes_before;
    assert_eq!(
        new_blobs, 3.0,
        "stored {new_blobs} blobs for the second image"
    );
    assert!(
        new_bytes < 100_000.0,
        "the shared layer was uploaded again ({new_bytes} bytes stored)"
    );

    // And podman pulls it back from the proxy.
    podman.run(&["rmi", "--force", &app_id, &base_id]).await;
    podman
        .run(&[
            "pull",
            "--tls-verify=false",
            &format!("{}/team/app:1", c.addr),
        ])
        .await;
    let images = podman
        .run(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .await;
    assert!(images.contains("team/app:1"), "{images}");
}
