//! The image's version, and every config (rendered or an example) against the real
//! binary's `--check-config`.

use super::*;

#[test]
fn the_image_follows_the_chart_and_the_workspace_version() {
    let chart: String = fs::read_to_string(root().join("helm/shoal/Chart.yaml")).unwrap();
    let app_version = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_owned();
    let cargo: toml::Table = fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let version = cargo["workspace"]["package"]["version"].as_str().unwrap();
    assert_eq!(
        app_version, version,
        "Chart.yaml appVersion must be the workspace version"
    );
    for s in &rendered().sets {
        let expected = if s.name == "ingress" {
            "registry.example.com/shoal@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_owned()
        } else {
            format!("shoal:{app_version}")
        };
        for w in s.workloads() {
            for c in containers(w).chain(init_containers(w)) {
                assert_eq!(c["image"], expected.as_str(), "[{}]", s.name);
            }
        }
    }
}

#[test]
fn every_rendered_config_passes_the_binarys_check_config() {
    let bins = binaries();
    let mut checked = 0;
    for s in &rendered().sets {
        let issued = super::tls::Issued::new();
        for w in s.workloads() {
            let pod_name = match w["kind"].as_str() {
                Some("StatefulSet") => format!("{}-0", w["metadata"]["name"].as_str().unwrap()),
                _ => format!(
                    "{}-5d8f7c9b4-x2x7q",
                    w["metadata"]["name"].as_str().unwrap()
                ),
            };
            for c in containers(w) {
                let part = part_of(c).unwrap();
                let Some(bin) = bins.get(part) else { continue };
                let dir = tempfile::tempdir().unwrap();
                // The files the pod sees under /etc/shoal: its ConfigMap's keys.
                let mount = c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["mountPath"] == "/etc/shoal")
                    .unwrap();
                let volume = pod_spec(w)["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == mount["name"])
                    .unwrap();
                let cm = s
                    .kind("ConfigMap")
                    .find(|o| o["metadata"]["name"] == volume["configMap"]["name"])
                    .unwrap();
                // And the files of its Secret volumes (the proxy's htpasswd, TLS), each under a
                // directory of its own that stands for the mount path.
                let files = super::tls::PodFiles::write(s, w, c, dir.path(), &issued);
                let in_pod = |text: &str| files.in_pod(text);
                for (key, text) in cm["data"].as_object().unwrap() {
                    fs::write(dir.path().join(key), in_pod(text.as_str().unwrap())).unwrap();
                }
                let mut args: Vec<String> = c["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        let a = a.as_str().unwrap();
                        match a.strip_prefix("/etc/shoal/") {
                            Some(file) => dir.path().join(file).display().to_string(),
                            None => in_pod(a),
                        }
                    })
                    .collect();
                args.push("--check-config".into());
                let env: Vec<(String, String)> = pod_env(s, c, &pod_name)
                    .into_iter()
                    .map(|(k, v)| (k, in_pod(&v)))
                    .collect();
                let out = run(bin, &args, &env);
                assert_eq!(
                    out.code,
                    Some(0),
                    "[{}] shoal-{part} {args:?} refused the rendered config:\n{}{}",
                    s.name,
                    out.stdout,
                    out.stderr
                );
                // The effective config it printed: SIGTERM's drain must end before the kill.
                let effective: toml::Table = out.stdout.parse().unwrap_or_else(|e| {
                    panic!(
                        "shoal-{part} --check-config printed no config: {e}\n{}",
                        out.stdout
                    )
                });
                if let Some(grace) = effective.get("shutdown_grace").and_then(|v| v.as_str()) {
                    let kill = pod_spec(w)["terminationGracePeriodSeconds"]
                        .as_u64()
                        .unwrap();
                    assert!(
                        seconds(grace) < kill,
                        "[{}] shoal-{part}: shutdown_grace {grace} is not shorter than terminationGracePeriodSeconds {kill}",
                        s.name
                    );
                }
                checked += 1;
            }
            for c in init_containers(w) {
                if bins.contains_key("agent") {
                    check_containerd_config(bins["agent"].as_path(), c, &s.name);
                }
            }
        }
    }
    say_unchecked("--check-config of the rendered configs");
    assert!(checked > 0);
}

/// Runs the init container's own command against a stand-in certs.d: install must leave a
/// hosts.toml that names the agent and keep what was there; restore must put it back.
pub fn check_containerd_config(agent: &Path, c: &Value, set: &str) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let certs = args.iter().position(|a| a == "--certs-dir").unwrap() + 1;
    let registries: Vec<&String> = args
        .iter()
        .zip(args.iter().skip(1))
        .filter(|(flag, _)| *flag == "--registry")
        .map(|(_, r)| r)
        .collect();
    let original = "server = \"https://example.invalid\"\n";
    for r in &registries {
        fs::create_dir_all(dir.path().join(r)).unwrap();
        fs::write(dir.path().join(r).join("hosts.toml"), original).unwrap();
    }
    let with_dir = |args: &[String]| -> Vec<String> {
        let mut a = args.to_vec();
        a[certs] = dir.path().display().to_string();
        a
    };
    let mut install = with_dir(&args);
    if args[1] == "restore" {
        // Install first, as the chart did before restore was set.
        install = vec![
            "containerd-config".into(),
            "install".into(),
            "--certs-dir".into(),
        ];
        install.push(dir.path().display().to_string());
        install.extend(["--mirror".into(), "http://127.0.0.1:8081".into()]);
        for r in &registries {
            install.extend(["--registry".into(), (*r).clone()]);
        }
    }
    let out = run(agent, &install, &[]);
    assert_eq!(
        out.code,
        Some(0),
        "[{set}] shoal-agent {install:?}:\n{}",
        out.stderr
    );
    for r in &registries {
        let hosts = fs::read_to_string(dir.path().join(r).join("hosts.toml")).unwrap();
        assert!(
            hosts.contains("127.0.0.1:8081"),
            "[{set}] {r}/hosts.toml:\n{hosts}"
        );
    }
    let mut restore = with_dir(&args);
    if args[1] == "install" {
        restore = vec![
            "containerd-config".into(),
            "restore".into(),
            "--certs-dir".into(),
        ];
        restore.push(dir.path().display().to_string());
        for r in &registries {
            restore.extend(["--registry".into(), (*r).clone()]);
        }
    }
    let out = run(agent, &restore, &[]);
    assert_eq!(
        out.code,
        Some(0),
        "[{set}] shoal-agent {restore:?}:\n{}",
        out.stderr
    );
    for r in &registries {
        let hosts = fs::read_to_string(dir.path().join(r).join("hosts.toml")).unwrap();
        assert_eq!(
            hosts, original,
            "[{set}] restore must put {r}/hosts.toml back"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The example configs.

#[test]
fn every_example_config_passes_the_binarys_check_config() {
    let bins = binaries();
    let dir = root().join("deploy/config");
    let mut examples = BTreeSet::new();
    let keys = shoal_core::signature::KeyPairPem::generate().unwrap();
    let token = || shoal_cluster::credentials::random_hex(32).unwrap();
    let (write_token, read_token) = (token(), token());
    let ca = super::tls::TestCa::new("example CA");
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let part = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert!(
                PARTS.contains(&part.as_str()),
                "{} names no part",
                path.display()
            );
            examples.insert(part.clone());
            let Some(bin) = bins.get(part.as_str()) else {
                continue;
            };
            // The examples read their certificates from /etc/shoal/tls/: a test CA's stand
            // there, each naming what the part's certificate must (an origin's or an
            // agent's peer name).
            let tls = tempfile::tempdir().unwrap();
            let names = vec![format!("example.{part}.shoal"), "localhost".to_owned()];
            let (cert, key) = ca.issue(&names);
            fs::write(tls.path().join("tls.crt"), cert).unwrap();
            fs::write(tls.path().join("tls.key"), key).unwrap();
            fs::write(tls.path().join("ca.crt"), &ca.cert).unwrap();
            let text = fs::read_to_string(&path)
                .unwrap()
                .replace("/etc/shoal/tls/", &format!("{}/", tls.path().display()));
            let config = tls.path().join(format!("{part}.toml"));
            fs::write(&config, text).unwrap();
            let args = vec![
                "--config".to_owned(),
                config.display().to_string(),
                "--check-config".to_owned(),
            ];
            // The examples leave the tokens and the metainfo keys to the environment, as they
            // advise; these are made for this run.
            let env = [
                (
                    "SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN".to_owned(),
                    write_token.clone(),
                ),
                (
                    "SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY".to_owned(),
                    keys.private_pem.clone(),
                ),
                (
                    "SHOAL_TRACKER_CREDENTIALS__READ_TOKEN".to_owned(),
                    read_token.clone(),
                ),
                (
                    "SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS".to_owned(),
                    keys.public_pem.clone(),
                ),
            ];
            let out = run(bin, &args, &env);
            assert_eq!(
                out.code,
                Some(0),
                "shoal-{part} refuses its example config {}:\n{}",
                path.display(),
                out.stderr
            );
        }
    }
    for part in bins.keys() {
        assert!(
            examples.contains(*part),
            "deploy/config/{part}.toml is missing"
        );
    }
    say_unchecked("--check-config of deploy/config/*.toml");
}
