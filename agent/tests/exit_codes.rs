//! What `shoal-agent` exits with: 64 (`EX_CONFIG`) whenever the config or a flag is to
//! blame, found by `--check-config` and by a start alike; 1 when something else fails.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

use std::process::Output;
use std::sync::LazyLock;

use shoal_core::config::EX_CONFIG;
use shoal_core::signature::KeyPairPem;
use shoal_core::testing::{assert_config_refused, run_binary, stderr_text as stderr};
use shoal_core::units::{ByteRate, ByteSize};

/// The origins' metainfo public key of this run.
static PUBLIC: LazyLock<String> = LazyLock::new(|| KeyPairPem::generate().unwrap().public_pem);

/// The binary in plaintext with no config from the environment but `env`, its tracker and
/// origins on a port nothing answers.
fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    agent_in(true, args, env)
}

/// [`agent`], in plaintext or with TLS left to `env` (`https://` origins).
fn agent_in(plaintext: bool, args: &[&str], env: &[(&str, &str)]) -> Output {
    let (origins, tls) = match plaintext {
        true => (
            "http://127.0.0.1:9",
            &[("SHOAL_AGENT_TLS__PLAINTEXT", "true")][..],
        ),
        false => ("https://127.0.0.1:9", &[][..]),
    };
    let args = [&["--tracker", "", "--origins", origins], args].concat();
    run_binary(
        env!("CARGO_BIN_EXE_shoal-agent"),
        &args,
        &[env, tls].concat(),
    )
}

/// Asserts that the check and a start both exit 64 and name `needle`.
fn refused(args: &[&str], env: &[(&str, &str)], needle: &str) {
    refused_in(true, args, env, needle);
}

fn refused_in(plaintext: bool, args: &[&str], env: &[(&str, &str)], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap();
    let agent = |args: &[&str], env: &[(&str, &str)]| agent_in(plaintext, args, env);
    let checked = agent(&[args, &["--check-config"]].concat(), env);
    let started = agent(
        &[
            args,
            &[
                "--listen",
                "127.0.0.1:0",
                "--peer-listen",
                "127.0.0.1:0",
                "--cache-dir",
                cache,
            ],
        ]
        .concat(),
        env,
    );
    assert_config_refused(args, checked, started, needle);
}

#[test]
fn missing_or_unparsable_metainfo_keys_exit_64_at_the_check_and_at_the_start() {
    refused(&[], &[], "credentials.metainfo_keys");
    refused(
        &[],
        &[("SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS", "not a key")],
        "credentials.metainfo_keys",
    );
}

#[test]
fn an_agent_without_tls_or_plaintext_or_with_an_origin_certificate_exits_64() {
    let keys = ("SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS", PUBLIC.as_str());
    refused_in(
        false,
        &[],
        &[keys],
        "tls.cert and tls.key are not set: set them (PEM files), or set tls.plaintext = true",
    );
    let pki = shoal_core::testing::TestPki::new();
    let origin = pki.origin("o0");
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().unwrap().to_str().unwrap().to_owned();
    let (cert, key, ca) = (path(&origin.cert), path(&origin.key), path(&origin.ca));
    let files = [
        keys,
        ("SHOAL_AGENT_TLS__CERT", cert.as_str()),
        ("SHOAL_AGENT_TLS__KEY", key.as_str()),
        ("SHOAL_AGENT_TLS__CA", ca.as_str()),
    ];
    refused_in(false, &[], &files, "tls.cert names the origin");
    // A certificate of its own, but the origins spelled http:// while TLS is on.
    let agent = pki.agent("a0");
    let (cert, key) = (path(&agent.cert), path(&agent.key));
    let files = [
        keys,
        ("SHOAL_AGENT_TLS__CERT", cert.as_str()),
        ("SHOAL_AGENT_TLS__KEY", key.as_str()),
        ("SHOAL_AGENT_TLS__CA", ca.as_str()),
    ];
    refused_in(
        false,
        &["--origins", "http://127.0.0.1:9"],
        &files,
        "is http:// but TLS is on",
    );
}

#[test]
fn bad_values_unreadable_files_and_bad_flags_exit_64() {
    let keys = [("SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS", PUBLIC.as_str())];
    refused(&["--set", "cache.max_size=0"], &keys, "cache.max_size");
    refused(
        &["--set", "credentials.read_token=short"],
        &keys,
        "credentials.read_token",
    );
    refused(
        &["--config", "/nonexistent/agent.toml"],
        &keys,
        "cannot read /nonexistent/agent.toml",
    );
    for flags in [
        &["--cache-size", "huge"][..],
        &["--egress", "fast"],
        &["--listen", "nowhere"],
        &["--no-such-flag"],
    ] {
        let out = agent(flags, &keys);
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
    let out = agent(
        &[
            "--check-config",
            "--set",
            "cache.max_size=\"2GiB\"",
            "--cache-size",
            "3GiB",
            "--egress",
            "10MiB/s",
        ],
        &[
            ("SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS", PUBLIC.as_str()),
            ("SHOAL_AGENT_CACHE__MAX_SIZE", "1GiB"),
            ("SHOAL_AGENT_PEER__EGRESS", "1MiB/s"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: shoal_agent::Config =
        toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed.cache.max_size, ByteSize::gib(3));
    assert_eq!(printed.peer.egress, ByteRate(10 << 20));
    assert_eq!(printed.origins, ["http://127.0.0.1:9"]);
    assert_eq!(printed.tracker, "");
}

#[test]
fn a_port_in_use_is_no_config_problem_and_exits_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = agent(
        &[
            "--listen",
            &addr,
            "--peer-listen",
            "127.0.0.1:0",
            "--cache-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS", PUBLIC.as_str())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
}
