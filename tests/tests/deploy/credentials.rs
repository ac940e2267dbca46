//! The cluster's credentials, the NetworkPolicy and the proxy's login.

use super::*;

/// The keys of the credentials Secret.
pub const CREDENTIAL_KEYS: [&str; 4] =
    ["write-token", "read-token", "metainfo-key", "metainfo-keys"];

/// The credentials each part holds, as keys of the credentials Secret.
pub fn credentials_of(part: &str) -> &'static [&'static str] {
    match part {
        "origin" => &["write-token", "read-token", "metainfo-key"],
        "proxy" => &["write-token"],
        "tracker" => &["read-token"],
        "agent" => &["read-token", "metainfo-keys"],
        other => panic!("no part {other}"),
    }
}

/// `SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN` for ("origin", "write-token").
pub fn credential_var(part: &str, key: &str) -> String {
    format!(
        "SHOAL_{}_CREDENTIALS__{}",
        part.to_uppercase(),
        key.replace('-', "_").to_uppercase()
    )
}

pub fn kept(secret: &Value) -> bool {
    secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
}

#[test]
fn every_value_set_has_the_credentials_secret_and_every_part_takes_its_own_from_it() {
    for s in &rendered().sets {
        let (name, generated) = s.credentials_secret();
        let secret = s
            .kind("Secret")
            .find(|o| o["metadata"]["name"] == name.as_str());
        assert_eq!(
            secret.is_some(),
            generated,
            "[{}] the credentials Secret {name} is rendered exactly when values name none",
            s.name
        );
        if let Some(secret) = secret {
            assert!(
                kept(secret),
                "[{}] {name} must survive an uninstall",
                s.name
            );
            let keys: BTreeSet<&str> = secret["data"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, CREDENTIAL_KEYS.into_iter().collect(), "[{}]", s.name);
            let write = s.secret_value(&name, "write-token");
            let read = s.secret_value(&name, "read-token");
            for t in [&write, &read] {
                assert!(
                    t.len() >= shoal_core::auth::MIN_TOKEN_LEN
                        && t.chars().all(|c| c.is_ascii_alphanumeric()),
                    "[{}] a generated token is {} characters of [A-Za-z0-9]",
                    s.name,
                    t.len()
                );
            }
            assert_ne!(
                write, read,
                "[{}] the read token must not open writes",
                s.name
            );
            let key = s.secret_value(&name, "metainfo-key");
            assert!(
                key.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "[{}] metainfo-key is a PKCS#8 PEM:\n{key}",
                s.name
            );
            let keys = s.secret_value(&name, "metainfo-keys");
            assert!(
                keys.starts_with("-----BEGIN CERTIFICATE-----\n"),
                "[{}] metainfo-keys is a certificate PEM:\n{keys}",
                s.name
            );
            // No ConfigMap holds any of them.
            let secrets = [write.as_str(), read.as_str(), key.lines().nth(1).unwrap()];
            for cm in s.kind("ConfigMap") {
                let text = cm["data"].to_string();
                for v in secrets {
                    assert!(
                        !text.contains(v),
                        "[{}] ConfigMap {} holds a credential",
                        s.name,
                        cm["metadata"]["name"]
                    );
                }
            }
        }
        for w in s.workloads() {
            for c in containers(w) {
                let part = part_of(c).unwrap();
                let at = format!("[{}] {}", s.name, w["metadata"]["name"]);
                let mut given = BTreeMap::new();
                for e in c["env"].as_array().into_iter().flatten() {
                    let var = e["name"].as_str().unwrap();
                    if !var.contains("_CREDENTIALS__") {
                        continue;
                    }
                    let r = &e["valueFrom"]["secretKeyRef"];
                    assert!(
                        r.is_object() && e["value"].is_null(),
                        "{at}: {var} must come from a Secret"
                    );
                    assert_ne!(r["optional"], true, "{at}: {var} must not be optional");
                    given.insert(
                        var.to_owned(),
                        (
                            r["name"].as_str().unwrap().to_owned(),
                            r["key"].as_str().unwrap().to_owned(),
                        ),
                    );
                }
                let expected: BTreeMap<String, (String, String)> = credentials_of(part)
                    .iter()
                    .map(|k| (credential_var(part, k), (name.clone(), (*k).to_owned())))
                    .collect();
                assert_eq!(given, expected, "{at}: the credentials of shoal-{part}");
            }
        }
        // Nothing in a config says `insecure` or carries credentials of its own.
        for part in PARTS {
            if s.component("ConfigMap", part).is_none() {
                continue;
            }
            let config = s.config(part);
            assert!(
                !config.contains_key("insecure") && !config.contains_key("credentials"),
                "[{}] {part}.toml must leave insecure and credentials out",
                s.name
            );
        }
    }
}

#[test]
fn the_generated_secrets_survive_an_upgrade_and_a_new_install_gets_new_ones() {
    let mut generated = 0;
    for s in &rendered().sets {
        let by_name = |list: &'static [Value], name: &Value| -> &'static Value {
            list.iter()
                .find(|o| &o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("[{}] Secret {name} not rendered again", s.name))
        };
        for first in s.kind("Secret") {
            let name = &first["metadata"]["name"];
            let upgrade = by_name(&s.upgrade_secrets, name);
            let fresh = by_name(&s.fresh_secrets, name);
            if first["type"] == "kubernetes.io/tls" && !kept(first) {
                // A certificate issued again at every render, from the kept CA (the tls
                // tests check that).
                assert_eq!(
                    upgrade["__decoded"]["ca.crt"], first["__decoded"]["ca.crt"],
                    "[{}] an upgrade changed the CA of {name}",
                    s.name
                );
                continue;
            }
            assert_eq!(
                upgrade["data"], first["data"],
                "[{}] an upgrade changed Secret {name}",
                s.name
            );
            if !kept(first) {
                // Content from values: the same whatever the cluster holds.
                assert_eq!(fresh["data"], first["data"], "[{}] {name}", s.name);
                continue;
            }
            generated += 1;
            for (k, v) in first["__decoded"].as_object().unwrap() {
                if k == "username" {
                    continue;
                }
                assert_ne!(
                    &fresh["__decoded"][k], v,
                    "[{}] a new install reused {k} of {name}: it must come from the cluster, not the chart",
                    s.name
                );
            }
        }
    }
    assert!(generated >= 2, "no generated Secret was checked");
}

#[test]
fn the_metainfo_certificate_carries_the_public_key_of_the_origins_signing_key() {
    shoal_tests::process::require("openssl", "openssl");
    let openssl = which("openssl", "openssl");
    let mut checked = 0;
    for s in &rendered().sets {
        let (name, generated) = s.credentials_secret();
        if !generated {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("metainfo-key.pem");
        let cert = dir.path().join("metainfo-keys.pem");
        fs::write(&key, s.secret_value(&name, "metainfo-key")).unwrap();
        fs::write(&cert, s.secret_value(&name, "metainfo-keys")).unwrap();
        let openssl_out = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            let out = run(&openssl, &args, &[]);
            assert_eq!(out.code, Some(0), "openssl {args:?}:\n{}", out.stderr);
            out.stdout
        };
        let (key, cert) = (key.display().to_string(), cert.display().to_string());
        let text = openssl_out(&["pkey", "-in", &key, "-noout", "-text"]);
        assert!(
            text.starts_with("ED25519 Private-Key"),
            "[{}] {text}",
            s.name
        );
        let public = openssl_out(&["pkey", "-in", &key, "-pubout"]);
        let in_cert = openssl_out(&["x509", "-in", &cert, "-noout", "-pubkey"]);
        assert_eq!(
            public, in_cert,
            "[{}] agents would verify with another key than the origins sign with",
            s.name
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn the_network_policy_lets_only_shoals_pods_and_the_nodes_reach_the_origins_and_trackers() {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let mut open_sets = BTreeSet::new();
    for s in &rendered().sets {
        let agents = s.workload("agent").is_some();
        let cidrs = strings(&s.values["networkPolicy"]["nodeCIDRs"]);
        let allow_from = s.values["networkPolicy"]["allowFrom"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let open = agents && cidrs.is_empty();
        if open {
            open_sets.insert(s.name.as_str());
        }
        let stranger = serde_json::json!({
            "app.kubernetes.io/name": "web",
            "app.kubernetes.io/instance": "web",
            "app.kubernetes.io/component": "proxy",
        });
        for (part, ports) in [("origin", vec!["http", "peer"]), ("tracker", vec!["http"])] {
            let w = s.workload(part).unwrap();
            let at = format!("[{}] {part}", s.name);
            let labels = &w["spec"]["template"]["metadata"]["labels"];
            let policies: Vec<&Value> = s
                .kind("NetworkPolicy")
                .filter(|p| selects(&p["spec"]["podSelector"]["matchLabels"], labels))
                .collect();
            assert_eq!(policies.len(), 1, "{at}: one NetworkPolicy");
            let spec = &policies[0]["spec"];
            assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]), "{at}");
            let rules = spec["ingress"].as_array().unwrap();
            assert_eq!(rules.len(), 1, "{at}");
            let rule = &rules[0];
            let named: Vec<String> = rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(named, ports, "{at}: the ports let in");
            let c = containers(w).next().unwrap();
            for p in &named {
                assert!(
                    container_port(c, p).is_some(),
                    "{at}: no container port {p}"
                );
            }
            if open {
                assert!(rule["from"].is_null(), "{at}: agents must get in");
                continue;
            }
            let from = rule["from"].as_array().unwrap();
            let pod_peers: Vec<&Value> = from
                .iter()
                .filter(|p| p["podSelector"].is_object())
                .collect();
            for peer in &pod_peers {
                assert!(
                    peer["namespaceSelector"].is_null()
                        && !peer["podSelector"]["matchLabels"]
                            .as_object()
                            .is_none_or(|m| m.is_empty()),
                    "{at}: a pod selector that lets in more than this release's pods: {peer}"
                );
                assert!(
                    !selects(&peer["podSelector"]["matchLabels"], &stranger),
                    "{at}: another application's pod gets in"
                );
            }
            for other in ["origin", "tracker", "proxy"] {
                let other_labels =
                    &s.workload(other).unwrap()["spec"]["template"]["metadata"]["labels"];
                assert!(
                    pod_peers
                        .iter()
                        .any(|p| selects(&p["podSelector"]["matchLabels"], other_labels)),
                    "{at}: the {other} pods are not let in"
                );
            }
            let blocks: Vec<String> = from
                .iter()
                .filter_map(|p| p["ipBlock"]["cidr"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(
                blocks,
                if agents { cidrs.clone() } else { Vec::new() },
                "{at}: the nodes' addresses, for the agents"
            );
            for extra in &allow_from {
                assert!(from.contains(extra), "{at}: allowFrom {extra} missing");
            }
            assert_eq!(
                from.len(),
                pod_peers.len() + blocks.len() + allow_from.len(),
                "{at}: nothing else gets in: {from:?}"
            );
        }
        assert_eq!(
            s.notes.contains("networkPolicy.nodeCIDRs"),
            open,
            "[{}] NOTES.txt must say what to set exactly when the ports are open:\n{}",
            s.name,
            s.notes
        );
    }
    assert!(
        open_sets.contains("default") && !open_sets.contains("small"),
        "the value sets must render both an open and a closed policy: open in {open_sets:?}"
    );
}

/// `Basic` credentials for a header.
pub fn basic(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// The status of one request with an empty body over HTTPS to `addr`, as `host`, trusting
/// the CA in `ca`.
pub fn https_status(
    addr: &str,
    host: &str,
    ca: &Path,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> u16 {
    let tls = shoal_core::tls::Tls::from_config(&shoal_core::tls::TlsConfig {
        ca: Some(ca.to_owned()),
        ..Default::default()
    })
    .unwrap()
    .unwrap();
    let port = port_of(addr);
    let url = format!("https://{host}:{port}{path}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = shoal_core::tls::client_builder(Some(&tls))
                .unwrap()
                .resolve(host, addr.parse().unwrap())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut req = client.request(method.parse().unwrap(), &url);
            if let Some(a) = authorization {
                req = req.header("authorization", a);
            }
            req.send().await
        })
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"))
        .status()
        .as_u16()
}

#[test]
fn the_proxy_refuses_a_push_without_the_generated_login_and_takes_it() {
    for s in &rendered().sets {
        assert!(
            lookup(&s.config("proxy"), "auth.htpasswd").is_some(),
            "[{}] push authentication must be on",
            s.name
        );
    }
    let s = rendered_set("default");
    let w = s.workload("proxy").unwrap();
    let c = containers(w).next().unwrap();
    let config = s.config("proxy");
    let file = lookup(&config, "auth.htpasswd").unwrap().as_str().unwrap();
    let (dir, key) = file.rsplit_once('/').unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap();
    let volume = pod_spec(w)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let secret_name = volume["secret"]["secretName"].as_str().unwrap();
    let user = s.secret_value(secret_name, "username");
    let password = s.secret_value(secret_name, "password");
    let htpasswd = s.secret_value(secret_name, key);
    assert_eq!(user, "shoal");
    assert!(
        password.len() >= 16,
        "a generated password of {} characters",
        password.len()
    );
    assert!(
        htpasswd.starts_with(&format!("{user}:$2")),
        "a bcrypt entry for {user}: {htpasswd}"
    );
    assert!(
        s.notes.contains("docker login")
            && s.notes.contains(&format!("get secret {secret_name}"))
            && s.notes.contains("{.data.password}"),
        "NOTES.txt must say how to read the password and log in:\n{}",
        s.notes
    );

    // The real proxy, with the rendered config, env and Secrets: over HTTPS, trusting the
    // generated CA and dialling the name the proxy's Service has.
    let Some(bin) = binaries().get("proxy") else {
        say_unchecked("the proxy's login");
        return;
    };
    assert!(s.tls());
    let tmp = tempfile::tempdir().unwrap();
    let files = super::tls::PodFiles::write(s, w, c, tmp.path(), &super::tls::Issued::new());
    let cm = s.component("ConfigMap", "proxy").unwrap();
    fs::write(
        tmp.path().join("proxy.toml"),
        files.in_pod(cm["data"]["proxy.toml"].as_str().unwrap()),
    )
    .unwrap();
    let spool = tmp.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let mut args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a.strip_prefix("/etc/shoal/") {
                Some(f) => tmp.path().join(f).display().to_string(),
                None => a.to_owned(),
            }
        })
        .collect();
    args.extend([
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--set".to_owned(),
        format!("uploads.spool_dir={}", spool.display()),
    ]);
    let ca = files.in_pod(
        lookup(&s.config("proxy"), "tls.ca")
            .and_then(|v| v.as_str())
            .unwrap(),
    );
    let mut cmd = Command::new(bin);
    cmd.args(&args)
        .env_clear()
        .envs(pod_env(s, c, "proxy-5d8f7c9b4-x2x7q"));
    let log = tmp.path().join("proxy.log");
    let mut proxy = shoal_tests::process::Daemon::start("shoal-proxy", cmd, &log);
    let mut addr = String::new();
    proxy.wait_until("serving", Duration::from_secs(30), || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "proxy serving");
        if let Some(l) = found {
            addr = l["addr"].as_str().unwrap().to_owned();
        }
        !addr.is_empty()
    });
    let host = format!(
        "{}.{}.svc",
        w["metadata"]["name"].as_str().unwrap(),
        s.namespace
    );
    let status_of = |addr: &str, method: &str, path: &str, auth: Option<&str>| {
        https_status(addr, &host, Path::new(&ca), method, path, auth)
    };
    let push = "/v2/app/blobs/uploads/";
    assert_eq!(
        status_of(&addr, "POST", push, None),
        401,
        "a push without a login"
    );
    assert_eq!(
        status_of(&addr, "POST", push, Some(&basic(&user, "not-the-password"))),
        401,
        "a push with a wrong password"
    );
    assert_eq!(
        status_of(&addr, "POST", push, Some(&basic(&user, &password))),
        202,
        "a push with the generated login"
    );
    proxy.stop(Duration::from_secs(10));
}
