//! The example config documents every key with its default, and loads with the real loader;
//! the binary's flags and exit codes.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

use std::path::PathBuf;
use std::process::Command;
use std::sync::LazyLock;

use shoal_core::config::{EX_CONFIG, Sources};
use shoal_core::tls::TlsConfig;
use shoal_origin::config::{Config, ENV_PREFIX};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/origin.toml")
}

/// Dotted paths of every leaf key.
fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = format!("{prefix}{k}");
        match v {
            toml::Value::Table(t) => keys(t, &format!("{path}."), out),
            _ => out.push(path),
        }
    }
}

/// The write token and the metainfo key of this run.
static TOKEN: LazyLock<String> = LazyLock::new(shoal_core::testing::random_token);
static KEY: LazyLock<String> = LazyLock::new(|| {
    shoal_core::signature::KeyPairPem::generate()
        .unwrap()
        .private_pem
});

/// A certificate for an origin from a throwaway CA, and the environment that points the
/// `[tls]` table at its files in place of the example's `/etc/shoal/tls/…`.
fn tls_env(pki: &shoal_core::testing::TestPki) -> (TlsConfig, Vec<(String, String)>) {
    let tls = pki.origin("origin-0");
    let path = |p: &Option<PathBuf>| p.as_ref().unwrap().to_str().unwrap().to_owned();
    let env = vec![
        ("SHOAL_ORIGIN_TLS__CERT".into(), path(&tls.cert)),
        ("SHOAL_ORIGIN_TLS__KEY".into(), path(&tls.key)),
        ("SHOAL_ORIGIN_TLS__CA".into(), path(&tls.ca)),
    ];
    (tls, env)
}

#[test]
fn the_example_config_loads_and_shows_every_key_at_its_default() {
    // The example leaves the write token and the metainfo key to the environment, as it
    // advises; its certificate files are where a deployment mounts them, so the test points
    // at files of its own there and nowhere else.
    let text = std::fs::read_to_string(example()).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let tls_in_file: TlsConfig = table["tls"].clone().try_into().unwrap();
    assert_eq!(
        tls_in_file,
        TlsConfig::files(
            "/etc/shoal/tls/tls.crt",
            "/etc/shoal/tls/tls.key",
            "/etc/shoal/tls/ca.crt"
        )
    );
    let pki = shoal_core::testing::TestPki::new();
    let (tls, mut env) = tls_env(&pki);
    env.extend([
        (
            "SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN".into(),
            TOKEN.as_str().into(),
        ),
        (
            "SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY".into(),
            KEY.as_str().into(),
        ),
    ]);
    let loaded: Config = Sources::new(Some(example()), ENV_PREFIX)
        .load_with_env(env)
        .unwrap();
    let mut want = Config::default();
    want.credentials.write_token = shoal_origin::config::Secret::new(TOKEN.as_str());
    want.credentials.metainfo_key = shoal_origin::config::Secret::new(KEY.as_str());
    want.tls = tls;
    assert_eq!(loaded, want);

    let mut in_file = Vec::new();
    keys(&table, "", &mut in_file);
    // Every key at its default, and the certificate files, which have none.
    let mut all = Vec::new();
    keys(&toml::Table::try_from(want).unwrap(), "", &mut all);
    in_file.sort();
    all.sort();
    assert_eq!(
        in_file, all,
        "deploy/config/origin.toml must list every key"
    );
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shoal-origin"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn help_names_the_flags() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--set",
        "--listen",
        "--peer-listen",
        "--data-dir",
        "--member",
        "--dns",
        "--advertise-url",
        "--replicas",
        "SHOAL_ORIGIN_",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn a_bad_config_exits_with_ex_config_and_names_every_problem() {
    let out = bin()
        .args([
            "--replicas",
            "0",
            "--set",
            "bogus=1",
            "--member",
            "not a url",
        ])
        .env("SHOAL_ORIGIN_CLUSTER__DOWN_AFTER", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = String::from_utf8(out.stderr).unwrap();
    for needle in ["replicas", "bogus", "not a url", "down_after"] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
}

#[test]
fn check_config_prints_the_merged_config() {
    let pki = shoal_core::testing::TestPki::new();
    let (_, env) = tls_env(&pki);
    let out = bin()
        .args(["--config"])
        .arg(example())
        .args([
            "--check-config",
            "--listen",
            "127.0.0.1:1234",
            "--member",
            "https://a:1",
            "--member",
            "b:2",
        ])
        .envs(env)
        .env("SHOAL_ORIGIN_REPAIR__INTERVAL", "30m")
        .env("SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN", TOKEN.as_str())
        .env("SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY", KEY.as_str())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains(TOKEN.as_str()),
        "the token was printed:\n{text}"
    );
    let printed: Config = toml::from_str(&text).unwrap();
    assert_eq!(printed.listen.to_string(), "127.0.0.1:1234");
    assert_eq!(printed.cluster.members, ["https://a:1", "b:2"]);
    assert_eq!(printed.static_members(), ["https://a:1", "https://b:2"]);
    assert_eq!(
        printed.repair.interval,
        std::time::Duration::from_secs(1800)
    );
}

#[test]
fn an_origin_without_a_write_token_refuses_to_start_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN")
        .env_remove("SHOAL_ORIGIN_INSECURE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("credentials.write_token") && err.contains("insecure"),
        "{err}"
    );
    let out = bin()
        .args([
            "--check-config",
            "--set",
            "insecure=true",
            "--set",
            "tls.plaintext=true",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
