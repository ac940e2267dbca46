//! What `shoal-origin` exits with: 64 (`EX_CONFIG`) whenever the config or a flag is to
//! blame, found by `--check-config` and by a start alike; 1 when something else fails.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

use std::process::Output;
use std::sync::LazyLock;

use shoal_core::config::EX_CONFIG;
use shoal_core::signature::KeyPairPem;
use shoal_core::testing::{assert_config_refused, random_token, run_binary, stderr_text as stderr};

/// The write token and the metainfo key of this run.
static TOKEN: LazyLock<String> = LazyLock::new(random_token);
static KEY: LazyLock<String> = LazyLock::new(|| KeyPairPem::generate().unwrap().private_pem);

/// The binary with no config from the environment but `env`.
fn origin(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_binary(env!("CARGO_BIN_EXE_shoal-origin"), args, env)
}

/// Asserts that the check and a start both exit 64 and name `needle`.
fn refused(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let checked = origin(&[args, &["--check-config"]].concat(), env);
    let started = origin(
        &[
            args,
            &[
                "--listen",
                "127.0.0.1:0",
                "--peer-listen",
                "127.0.0.1:0",
                "--data-dir",
                data,
            ],
        ]
        .concat(),
        env,
    );
    assert_config_refused(args, checked, started, needle);
}

#[test]
fn missing_credentials_exit_64_at_the_check_and_at_the_start() {
    refused(
        &[],
        &[("SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY", KEY.as_str())],
        "credentials.write_token",
    );
    refused(
        &[],
        &[("SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN", TOKEN.as_str())],
        "credentials.metainfo_key is empty",
    );
}

#[test]
fn a_metainfo_key_that_does_not_parse_exits_64() {
    refused(
        &[],
        &[
            ("SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN", TOKEN.as_str()),
            ("SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY", "not a key"),
        ],
        "credentials.metainfo_key cannot sign",
    );
}

#[test]
fn an_origin_without_tls_or_plaintext_exits_64() {
    refused(
        &[],
        &[
            ("SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN", TOKEN.as_str()),
            ("SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY", KEY.as_str()),
        ],
        "tls.cert and tls.key are not set: set them (PEM files), or set tls.plaintext = true",
    );
    // A certificate that names an agent, not an origin: refused at the check and the start.
    let pki = shoal_core::testing::TestPki::new();
    let agent = pki.agent("a0");
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().unwrap().to_str().unwrap().to_owned();
    let (cert, key, ca) = (path(&agent.cert), path(&agent.key), path(&agent.ca));
    refused(
        &[],
        &[
            ("SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN", TOKEN.as_str()),
            ("SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY", KEY.as_str()),
            ("SHOAL_ORIGIN_TLS__CERT", &cert),
            ("SHOAL_ORIGIN_TLS__KEY", &key),
            ("SHOAL_ORIGIN_TLS__CA", &ca),
        ],
        "not an origin",
    );
}

#[test]
fn bad_values_unreadable_files_and_bad_flags_exit_64() {
    refused(
        &["--set", "insecure=true", "--replicas", "0"],
        &[],
        "replicas",
    );
    refused(
        &["--config", "/nonexistent/origin.toml"],
        &[],
        "cannot read /nonexistent/origin.toml",
    );
    for flags in [&["--replicas", "many"][..], &["--no-such-flag"]] {
        let out = origin(flags, &[]);
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
    let out = origin(
        &[
            "--check-config",
            "--set",
            "replicas=2",
            "--replicas",
            "5",
            "--member",
            "http://a:1,http://b:2",
            "--advertise-url",
            "http://b:2",
        ],
        &[
            ("SHOAL_ORIGIN_INSECURE", "true"),
            ("SHOAL_ORIGIN_TLS__PLAINTEXT", "true"),
            ("SHOAL_ORIGIN_REPLICAS", "4"),
            ("SHOAL_ORIGIN_CLUSTER__MEMBERS", "[\"http://c:3\"]"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: shoal_origin::Config =
        toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed.replicas, 5);
    assert_eq!(printed.cluster.members, ["http://a:1", "http://b:2"]);
    assert_eq!(printed.advertise_url, "http://b:2");
}

#[test]
fn a_port_in_use_is_no_config_problem_and_exits_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = origin(
        &[
            "--set",
            "insecure=true",
            "--set",
            "tls.plaintext=true",
            "--listen",
            &addr,
            "--peer-listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
}
