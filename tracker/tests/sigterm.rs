//! The tracker's binary serves and stops cleanly on SIGTERM. Sending the signal takes
//! kill(1), so this is a system test (feature `system-tests`, which `./test.sh` turns on);
//! without kill it fails, naming the package that has it.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use shoal_core::testing::wait_until;
use shoal_tests::process::require;
use support::{TOKEN, authed};

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    require("kill", "procps");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/tracker.toml");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal-tracker"))
        .args([
            "--config",
            example,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--origins", "http://127.0.0.1:9", "--log", "error"])
        .env("SHOAL_TRACKER_ORIGIN_REFRESH", "1s")
        .env("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN", TOKEN)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = authed();
    let url = format!("http://127.0.0.1:{port}");
    wait_until("the binary answers /health", Duration::from_secs(10), || async {
        matches!(http.get(format!("{url}/health")).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
