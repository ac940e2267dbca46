//! What `shoal-tracker` exits with: 64 (`EX_CONFIG`) whenever the config or a flag is to
//! blame, found by `--check-config` and by a start alike; 1 when something else fails.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

use std::process::Output;
use std::sync::LazyLock;
use std::time::Duration;

use shoal_core::config::EX_CONFIG;
use shoal_core::testing::{assert_config_refused, random_token, run_binary, stderr_text as stderr};

/// The read token of this run.
static TOKEN: LazyLock<String> = LazyLock::new(random_token);

/// The binary with no config from the environment but `env`.
fn tracker(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_binary(env!("CARGO_BIN_EXE_shoal-tracker"), args, env)
}

/// Asserts that the check and a start both exit 64 and name `needle`.
fn refused(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let checked = tracker(&[args, &["--check-config"]].concat(), env);
    let started = tracker(&[args, &["--listen", "127.0.0.1:0"]].concat(), env);
    assert_config_refused(args, checked, started, needle);
}

#[test]
fn a_missing_read_token_exits_64_at_the_check_and_at_the_start() {
    refused(
        &["--origins", "http://127.0.0.1:9"],
        &[],
        "credentials.read_token",
    );
}

#[test]
fn a_tracker_without_tls_or_plaintext_exits_64() {
    refused(
        &["--origins", "https://127.0.0.1:9"],
        &[("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN", TOKEN.as_str())],
        "tls.cert and tls.key are not set: set them (PEM files), or set tls.plaintext = true",
    );
    refused(
        &["--origins", "http://127.0.0.1:9"],
        &[
            ("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN", TOKEN.as_str()),
            ("SHOAL_TRACKER_TLS__CERT", "/nonexistent/tls.crt"),
            ("SHOAL_TRACKER_TLS__KEY", "/nonexistent/tls.key"),
            ("SHOAL_TRACKER_TLS__CA", "/nonexistent/ca.crt"),
        ],
        "is http:// but TLS is on",
    );
}

#[test]
fn bad_values_unreadable_files_and_bad_flags_exit_64() {
    let token = [("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN", TOKEN.as_str())];
    refused(
        &["--origins", "http://127.0.0.1:9", "--handout-size", "0"],
        &token,
        "handout_size",
    );
    refused(
        &["--config", "/nonexistent/tracker.toml"],
        &token,
        "cannot read /nonexistent/tracker.toml",
    );
    for flags in [
        &["--announce-interval", "soon"][..],
        &["--replicas", "-1"],
        &["--no-such-flag"],
    ] {
        let out = tracker(flags, &token);
        assert_eq!(
            out.status.code(),
            Some(EX_CONFIG),
            "{flags:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn typed_flags_win_over_the_environment_and_set() {
    let out = tracker(
        &[
            "--check-config",
            "--origins",
            "http://a:1,http://b:2",
            "--set",
            "announce_interval=\"5s\"",
            "--announce-interval",
            "7s",
            "--trust-announced-addr",
        ],
        &[
            ("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN", TOKEN.as_str()),
            ("SHOAL_TRACKER_ORIGINS", "[\"http://c:3\"]"),
            ("SHOAL_TRACKER_ANNOUNCE_INTERVAL", "4s"),
            ("SHOAL_TRACKER_TLS__PLAINTEXT", "true"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: shoal_tracker::Config =
        toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed.origins, ["http://a:1", "http://b:2"]);
    assert_eq!(printed.announce_interval, Duration::from_secs(7));
    assert!(printed.trust_announced_addr);
}

#[test]
fn a_port_in_use_is_no_config_problem_and_exits_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = tracker(
        &["--origins", "http://127.0.0.1:9", "--listen", &addr],
        &[
            ("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN", TOKEN.as_str()),
            ("SHOAL_TRACKER_TLS__PLAINTEXT", "true"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
}
