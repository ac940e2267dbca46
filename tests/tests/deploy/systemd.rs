//! `deploy/systemd/*.service` run the binaries with their example configs, hardened.

use super::*;

/// A unit file's `Key=value` lines, per key, in order.
pub fn unit(part: &str) -> BTreeMap<String, Vec<String>> {
    let path = root().join(format!("deploy/systemd/shoal-{part}.service"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap();
        keys.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    keys
}

pub fn lookup<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut keys = dotted.split('.');
    let mut v = t.get(keys.next()?)?;
    for k in keys {
        v = v.get(k)?;
    }
    Some(v)
}

/// Whole seconds, rounded up, of a duration such as `10s`, `1m 30s` or `500ms`.
pub fn seconds(d: &str) -> u64 {
    let mut millis = 0;
    for word in d.split_whitespace() {
        let (n, unit) = word.split_at(
            word.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(word.len()),
        );
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
        millis += n * match unit {
            "ms" => 1,
            "s" | "" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            other => panic!("duration {d:?}: unit {other}"),
        };
    }
    millis.div_ceil(1000)
}

#[test]
fn the_systemd_units_run_each_part_hardened_with_its_example_config() {
    for part in PARTS {
        let u = unit(part);
        let one = |k: &str| -> &str {
            let v = u
                .get(k)
                .unwrap_or_else(|| panic!("shoal-{part}.service: no {k}="));
            v.last().unwrap()
        };
        assert_eq!(
            one("ExecStart"),
            format!("{BIN_DIR}/shoal-{part} --config /etc/shoal/{part}.toml"),
            "shoal-{part}.service"
        );
        for (k, v) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("DynamicUser", "yes"),
            ("CapabilityBoundingSet", ""),
            ("ConfigurationDirectory", "shoal"),
            ("Restart", "on-failure"),
        ] {
            assert_eq!(one(k), v, "shoal-{part}.service {k}");
        }
        assert_eq!(
            one("RestartPreventExitStatus"),
            shoal_core::config::EX_CONFIG.to_string(),
            "a bad config must not restart in a loop"
        );
        // State where the example config keeps it.
        let example = root().join(format!("deploy/config/{part}.toml"));
        let config: Option<toml::Table> = fs::read_to_string(&example)
            .ok()
            .map(|t| t.parse().unwrap());
        let state_dir = match part {
            "origin" => Some(("data_dir", "/var/lib/shoal/origin")),
            "agent" => Some(("cache.dir", "/var/lib/shoal/agent")),
            _ => None,
        };
        match state_dir {
            Some((key, dir)) => {
                assert_eq!(
                    format!("/var/lib/{}", one("StateDirectory")),
                    dir,
                    "shoal-{part}.service"
                );
                if let Some(c) = &config {
                    let v = lookup(c, key);
                    assert_eq!(
                        v.and_then(|v| v.as_str()),
                        Some(dir),
                        "{} {key}",
                        example.display()
                    );
                }
            }
            None => assert!(
                !u.contains_key("StateDirectory"),
                "shoal-{part} keeps no state"
            ),
        }
        if let Some(c) = &config {
            let grace = c
                .get("shutdown_grace")
                .and_then(|v| v.as_str())
                .unwrap_or("10s");
            assert!(
                seconds(one("TimeoutStopSec")) > seconds(grace),
                "shoal-{part}.service stops before shutdown_grace {grace} is over"
            );
        }
    }
    // The agent points containerd at the registry its example config listens on.
    let agent = unit("agent");
    let listen: toml::Table = fs::read_to_string(root().join("deploy/config/agent.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mirror = format!("--mirror http://{}", listen["listen"].as_str().unwrap());
    let pre = &agent["ExecStartPre"][0];
    assert!(
        pre.starts_with(&format!("+{BIN_DIR}/shoal-agent containerd-config install"))
            && pre.contains(&mirror),
        "{pre}"
    );
    let post = &agent["ExecStopPost"][0];
    assert!(
        post.starts_with(&format!("+{BIN_DIR}/shoal-agent containerd-config restore")),
        "{post}"
    );

    systemd_analyze();
}

/// systemd's own checks: no unknown or malformed directive, and an exposure score of at
/// most 2.0 ("OK") from `systemd-analyze security`.
pub fn systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let t = which("true", "coreutils");
    for part in PARTS {
        // verify wants the commands to exist; any executable will do for the unit's syntax.
        std::os::unix::fs::symlink(&t, bin.join(format!("shoal-{part}"))).unwrap();
        let text = fs::read_to_string(root().join(format!("deploy/systemd/shoal-{part}.service")))
            .unwrap()
            .replace(BIN_DIR, &bin.display().to_string());
        let path = dir.path().join(format!("shoal-{part}.service"));
        fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run systemd-analyze ({e}): install the Debian package systemd (tests/install-deps.sh does)")
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify shoal-{part}.service:\n{stderr}"
        );
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shoal-{part}.service is exposed more than 2.0:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// Where `name` is on the PATH; fails the test naming the Debian package that has it.
pub fn which(name: &str, package: &str) -> PathBuf {
    shoal_tests::process::require(name, package);
    shoal_tests::process::which(name).unwrap_or_else(|| panic!("no {name} on PATH"))
}
