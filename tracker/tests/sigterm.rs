//! The tracker's binary serves (HTTPS, as the example config says) and stops cleanly on
//! SIGTERM. Sending the signal takes
//! kill(1), so this is a system test (feature `system-tests`, which `./test.sh` turns on);
//! without kill it fails, naming the package that has it.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use shoal_core::testing::wait_until;
use shoal_tests::process::require;
use support::TOKEN;

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    require("kill", "procps");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/tracker.toml");
    // The example's certificate files are where a deployment mounts them; these stand in.
    let pki = shoal_core::testing::TestPki::new();
    let tls = pki.server("tracker");
    let path = |p: &Option<std::path::PathBuf>| p.clone().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal-tracker"))
        .args([
            "--config",
            example,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--origins", "https://127.0.0.1:9", "--log", "error"])
        .env("SHOAL_TRACKER_TLS__CERT", path(&tls.cert))
        .env("SHOAL_TRACKER_TLS__KEY", path(&tls.key))
        .env("SHOAL_TRACKER_TLS__CA", path(&tls.ca))
        .env("SHOAL_TRACKER_ORIGIN_REFRESH", "1s")
        .env("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN", TOKEN)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let trust = shoal_core::tls::Tls::from_config(&pki.client()).unwrap();
    let http = shoal_core::tls::client_builder(trust.as_ref())
        .unwrap()
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
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
