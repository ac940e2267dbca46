//! A full disk, for real: a tmpfs of a few MiB under the origin's data directory. Mounting
//! it takes root and `mount`, so this is a system test (feature `system-tests`, which
//! `./test.sh` turns on); without them it fails, naming what is missing.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use reqwest::StatusCode;
use shoal_core::Digest;
use shoal_origin::testing::{TestCluster, TestOrigin, test_config};
use shoal_tests::process::require;

/// A tmpfs mounted for one test and unmounted however the test ends.
struct TinyDisk(PathBuf);

impl TinyDisk {
    /// Fails the test unless the tmpfs is mounted: that takes root and `mount`.
    fn mount(dir: &Path, size: &str) -> TinyDisk {
        require("mount", "mount");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyDisk(dir.to_owned())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system under `dir` until a write fails, then frees `leave` bytes.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_the_origin_keeps_serving() {
    let mount = tempfile::tempdir().unwrap();
    let _disk = TinyDisk::mount(mount.path(), "8m");
    let data_dir = mount.path().join("origin");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = test_config(data_dir.clone());
    let auth = TestCluster::http_with_token(config.credentials.write_token.get().unwrap());
    let origin = TestOrigin::start(config, listener).await.unwrap();

    let kept = random_bytes(20_000);
    let kept_digest = Digest::sha256_of(&kept);
    assert_eq!(
        put_blob(&auth, &base, &kept_digest, kept.clone())
            .await
            .status(),
        StatusCode::CREATED
    );

    let filler = fill(mount.path(), 128 << 10);
    let big = random_bytes(512 << 10);
    let big_digest = Digest::sha256_of(&big);
    let res = put_blob(&auth, &base, &big_digest, big.clone()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("full"),
        "{body}"
    );
    assert_eq!(temp_files(&data_dir), 0);
    assert_eq!(
        auth.clone()
            .head(format!("{base}/v1/blobs/{big_digest}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Everything else still works, and once there is room again, so do uploads.
    let (status, bytes) = get_blob(&auth, &base, &kept_digest).await;
    assert_eq!((status, bytes.as_ref()), (StatusCode::OK, &kept[..]));
    assert_eq!(
        auth.clone()
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    std::fs::remove_file(filler).unwrap();
    assert_eq!(
        put_blob(&auth, &base, &big_digest, big).await.status(),
        StatusCode::CREATED
    );
    origin.stop().await;
}
