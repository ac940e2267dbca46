//! What `shoal-proxy` exits with: 64 (`EX_CONFIG`) whenever the config or a flag is to
//! blame, found by `--check-config` and by a start alike; 1 when something else fails.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

use std::process::Output;

use shoal_core::config::EX_CONFIG;
use shoal_core::testing::{assert_config_refused, run_binary, stderr_text as stderr};

/// The binary in plaintext with no config from the environment but `env`, its origins on a
/// port nothing answers.
fn proxy(args: &[&str], env: &[(&str, &str)]) -> Output {
    let env = [env, &[("SHOAL_PROXY_TLS__PLAINTEXT", "true")]].concat();
    let args = [&["--origins", "http://127.0.0.1:9"], args].concat();
    run_binary(env!("CARGO_BIN_EXE_shoal-proxy"), &args, &env)
}

#[test]
fn a_proxy_without_tls_or_plaintext_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let spool = format!("uploads.spool_dir={:?}", dir.path().display().to_string());
    let run = |args: &[&str]| {
        let args = [&["--origins", "https://127.0.0.1:9"], args].concat();
        run_binary(env!("CARGO_BIN_EXE_shoal-proxy"), &args, &[])
    };
    let checked = run(&["--check-config"]);
    let started = run(&["--listen", "127.0.0.1:0", "--set", &spool]);
    assert_config_refused(
        &[],
        checked,
        started,
        "tls.ca is not set: set it (a PEM bundle of the cluster's CA), or set tls.plaintext = true",
    );
}

/// Asserts that the check and a start both exit 64 and name `needle`.
fn refused(args: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spool = format!("uploads.spool_dir={:?}", dir.path().display().to_string());
    let checked = proxy(&[args, &["--check-config"]].concat(), &[]);
    let started = proxy(
        &[args, &["--listen", "127.0.0.1:0", "--set", &spool]].concat(),
        &[],
    );
    assert_config_refused(args, checked, started, needle);
}

#[test]
fn an_htpasswd_file_that_cannot_be_read_or_used_exits_64() {
    refused(
        &["--set", "auth.htpasswd=\"/nonexistent/htpasswd\""],
        "auth.htpasswd: cannot read /nonexistent/htpasswd",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, "alice:plaintext\n").unwrap();
    refused(
        &[
            "--set",
            &format!("auth.htpasswd={:?}", file.display().to_string()),
        ],
        "does not have a bcrypt hash",
    );
}

#[test]
fn bad_values_unreadable_configs_and_bad_flags_exit_64() {
    refused(&["--set", "max_page=0"], "max_page");
    refused(
        &["--set", "credentials.write_token=short"],
        "credentials.write_token",
    );
    refused(
        &["--config", "/nonexistent/proxy.toml"],
        "cannot read /nonexistent/proxy.toml",
    );
    for flags in [&["--listen", "nowhere"][..], &["--no-such-flag"]] {
        let out = proxy(flags, &[]);
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
    let out = proxy(
        &[
            "--check-config",
            "--set",
            "listen=\"127.0.0.1:5001\"",
            "--listen",
            "127.0.0.1:5003",
        ],
        &[("SHOAL_PROXY_LISTEN", "127.0.0.1:5002")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: shoal_proxy::Config =
        toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed.listen.to_string(), "127.0.0.1:5003");
    assert_eq!(printed.origins, ["http://127.0.0.1:9"]);
}

#[test]
fn a_port_in_use_is_no_config_problem_and_exits_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = proxy(&["--listen", &addr], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
}
