//! TLS in the chart: on by default and plaintext when the values say so; every file a
//! part's `[tls]` names is in its pod; the generated certificates name what the parts dial
//! and come from CAs that an upgrade keeps; cert-manager is asked for the same. And the
//! files a pod sees, for the tests that run the real binaries: certificates cert-manager
//! would issue are made by a test CA (openssl), with the names the Certificates ask for.

use std::cell::RefCell;

use super::*;

pub const TLS_DIR: &str = "/etc/shoal-tls";

fn openssl(args: &[&str], cwd: &Path) -> String {
    let bin = which("openssl", "openssl");
    let out = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A throwaway CA made with openssl, as an Issuer in a cluster would be.
pub struct TestCa {
    dir: tempfile::TempDir,
    pub cert: String,
    pub key: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ca.key",
            ],
            d,
        );
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                &format!("/CN={name}"),
                "-days",
                "2",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "ca.crt",
            ],
            d,
        );
        TestCa {
            cert: fs::read_to_string(d.join("ca.crt")).unwrap(),
            key: fs::read_to_string(d.join("ca.key")).unwrap(),
            dir,
        }
    }

    /// A certificate for `names` (the first is also its common name), for serving and for
    /// dialling: its PEM and its key's.
    pub fn issue(&self, names: &[String]) -> (String, String) {
        let d = self.dir.path();
        let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        fs::write(
            d.join("leaf.ext"),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={}\n",
                sans.join(",")
            ),
        )
        .unwrap();
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "leaf.key",
            ],
            d,
        );
        openssl(
            &[
                "req",
                "-new",
                "-key",
                "leaf.key",
                "-subj",
                &format!("/CN={}", names[0]),
                "-out",
                "leaf.csr",
            ],
            d,
        );
        let serial = format!("0x{}", shoal_cluster::credentials::random_hex(16).unwrap());
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.crt",
            ],
            d,
        );
        (
            fs::read_to_string(d.join("leaf.crt")).unwrap(),
            fs::read_to_string(d.join("leaf.key")).unwrap(),
        )
    }
}

/// What cert-manager would put in the Secrets of a set's Certificates: leaves from a test
/// cluster CA, the agents CA a test CA of its own. Each Secret made once.
pub struct Issued {
    cluster: TestCa,
    agents: TestCa,
    made: RefCell<BTreeMap<String, BTreeMap<String, String>>>,
}

impl Issued {
    pub fn new() -> Issued {
        Issued {
            cluster: TestCa::new("test cluster CA"),
            agents: TestCa::new("test agents CA"),
            made: RefCell::new(BTreeMap::new()),
        }
    }

    /// `key` of the Secret a Certificate of `s` writes, if one does.
    pub fn value(&self, s: &Set, secret: &str, key: &str) -> Option<String> {
        let cert = s
            .kind("Certificate")
            .find(|c| c["spec"]["secretName"] == secret)?;
        let mut made = self.made.borrow_mut();
        let data = made.entry(secret.to_owned()).or_insert_with(|| {
            let (crt, key, ca) = if cert["spec"]["isCA"] == true {
                (
                    self.agents.cert.clone(),
                    self.agents.key.clone(),
                    self.agents.cert.clone(),
                )
            } else {
                let names: Vec<String> = cert["spec"]["dnsNames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_owned())
                    .collect();
                let (crt, key) = self.cluster.issue(&names);
                (crt, key, self.cluster.cert.clone())
            };
            BTreeMap::from([
                ("tls.crt".to_owned(), crt),
                ("tls.key".to_owned(), key),
                ("ca.crt".to_owned(), ca),
            ])
        });
        Some(
            data.get(key)
                .unwrap_or_else(|| panic!("[{}] Secret {secret} has no key {key}", s.name))
                .clone(),
        )
    }
}

/// The Secrets a volume projects, each with its (key, path) items.
pub fn secret_sources(volume: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let mut secrets: Vec<&Value> = Vec::new();
    if volume["secret"].is_object() {
        secrets.push(&volume["secret"]);
    }
    for source in volume["projected"]["sources"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert!(
            source["secret"].is_object(),
            "a projected source other than a Secret: {source}"
        );
        secrets.push(&source["secret"]);
    }
    secrets
        .into_iter()
        .map(|sec| {
            let name = sec["secretName"]
                .as_str()
                .or(sec["name"].as_str())
                .unwrap()
                .to_owned();
            let items = sec["items"]
                .as_array()
                .unwrap_or_else(|| panic!("Secret {name} is mounted without items"))
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap().to_owned(),
                        i["path"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (name, items)
        })
        .collect()
}

/// The files of a container's Secret volumes, each mount under a directory of its own in
/// `dir`; `in_pod` rewrites a pod's paths to them.
pub struct PodFiles {
    mounts: Vec<(String, PathBuf)>,
}

impl PodFiles {
    pub fn write(s: &Set, w: &Value, c: &Value, dir: &Path, issued: &Issued) -> PodFiles {
        let part = part_of(c).unwrap();
        let mut mounts = Vec::new();
        for m in c["volumeMounts"].as_array().unwrap() {
            // A mount with no volume here is a claim template's (the origins' data).
            let Some(volume) = pod_spec(w)["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == m["name"])
            else {
                continue;
            };
            let sources = secret_sources(volume);
            if sources.is_empty() {
                continue;
            }
            let at = dir.join(format!("mount-{}", mounts.len()));
            fs::create_dir(&at).unwrap();
            for (secret, items) in sources {
                let rendered = s.kind("Secret").any(|o| o["metadata"]["name"] == secret);
                for (key, path) in items {
                    let value = if rendered {
                        s.secret_value(&secret, &key)
                    } else if let Some(v) = issued.value(s, &secret, &key) {
                        v
                    } else {
                        // A Secret made beforehand and named in values: an htpasswd line
                        // of this run's own stands in for it.
                        assert_eq!(
                            part, "proxy",
                            "[{}] Secret {secret} is neither rendered nor a Certificate's",
                            s.name
                        );
                        let password = shoal_cluster::credentials::random_hex(16).unwrap();
                        format!("shoal:{}\n", bcrypt::hash(password, 4).unwrap())
                    };
                    fs::write(at.join(&path), value).unwrap();
                }
            }
            mounts.push((m["mountPath"].as_str().unwrap().to_owned(), at));
        }
        PodFiles { mounts }
    }

    pub fn in_pod(&self, text: &str) -> String {
        self.mounts.iter().fold(text.to_owned(), |t, (path, at)| {
            t.replace(&format!("{path}/"), &format!("{}/", at.display()))
        })
    }
}

/// The release's full name, which every object's name starts with.
fn fullname(s: &Set) -> String {
    s.workload("origin").unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .strip_suffix("-origin")
        .unwrap()
        .to_owned()
}

/// The `[tls]` table of a part's config.
fn tls_table(s: &Set, part: &str) -> toml::Table {
    s.config(part)
        .get("tls")
        .and_then(|t| t.as_table())
        .cloned()
        .unwrap_or_else(|| panic!("[{}] {part}.toml has no [tls]", s.name))
}

/// Every URL between parts in a set: the members, each part's origins, the agent's tracker.
fn urls(s: &Set) -> Vec<String> {
    let mut all = str_list(lookup(&s.config("origin"), "cluster.members"));
    for part in ["tracker", "proxy", "agent"] {
        if s.component("ConfigMap", part).is_some() {
            all.extend(str_list(s.config(part).get("origins")));
        }
    }
    if s.component("ConfigMap", "agent").is_some() {
        all.push(s.config("agent")["tracker"].as_str().unwrap().to_owned());
    }
    let origin_c = containers(s.workload("origin").unwrap()).next().unwrap();
    all.extend(
        pod_env(s, origin_c, "origin-0")
            .into_iter()
            .filter(|(k, _)| k == "SHOAL_ORIGIN_ADVERTISE_URL")
            .map(|(_, v)| v),
    );
    all
}

#[test]
fn tls_is_on_by_default_and_plaintext_says_so_in_every_config() {
    let mut modes = BTreeSet::new();
    for s in &rendered().sets {
        modes.insert(s.tls());
        assert_eq!(s.tls(), s.name != "tls-off", "[{}] TLS by default", s.name);
        for u in urls(s) {
            assert!(
                u.starts_with(&format!("{}://", s.scheme())),
                "[{}] {u}",
                s.name
            );
        }
        for w in s.workloads() {
            for c in containers(w) {
                let part = part_of(c).unwrap();
                let table = tls_table(s, part);
                let mounted = c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == TLS_DIR);
                assert_eq!(mounted, s.tls(), "[{}] {part}: {TLS_DIR}", s.name);
                if !s.tls() {
                    assert_eq!(
                        table,
                        toml::toml! { plaintext = true },
                        "[{}] {part}",
                        s.name
                    );
                    continue;
                }
                assert!(!table.contains_key("plaintext"), "[{}] {part}", s.name);
                // The ports other parts and the kubelet reach serve HTTPS; the agent's
                // registry on the node's loopback stays plain HTTP.
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    let scheme = &c[probe]["httpGet"]["scheme"];
                    if part == "agent" {
                        assert!(scheme.is_null(), "[{}] agent {probe}", s.name);
                    } else {
                        assert_eq!(scheme, "HTTPS", "[{}] {part} {probe}", s.name);
                    }
                }
            }
        }
        for sm in s.kind("ServiceMonitor") {
            let ep = &sm["spec"]["endpoints"][0];
            assert_eq!(
                ep["scheme"],
                if s.tls() { "https".into() } else { Value::Null }
            );
            if s.tls() {
                let name = ep["tlsConfig"]["ca"]["secret"]["name"].as_str().unwrap();
                assert!(
                    s.kind("Secret").any(|o| o["metadata"]["name"] == name)
                        || s.kind("Certificate")
                            .any(|o| o["spec"]["secretName"] == name),
                    "[{}] the scrape's CA from Secret {name}",
                    s.name
                );
            }
        }
        assert!(s.notes.contains("TLS:"), "[{}] NOTES.txt on TLS", s.name);
    }
    assert_eq!(modes.len(), 2, "the value sets render TLS on and off");
}

#[test]
fn every_tls_file_a_part_names_is_in_its_pod_and_only_agents_hold_the_agents_ca_key() {
    for s in rendered().sets.iter().filter(|s| s.tls()) {
        let agents_ca = format!("{}-agents-ca", fullname(s));
        for w in s.workloads() {
            let pod_name = match w["kind"].as_str() {
                // The last origin: not only the first has its certificate mounted.
                Some("StatefulSet") => format!(
                    "{}-{}",
                    w["metadata"]["name"].as_str().unwrap(),
                    w["spec"]["replicas"].as_u64().unwrap() - 1
                ),
                _ => "pod".to_owned(),
            };
            for c in containers(w) {
                let part = part_of(c).unwrap();
                let at = format!("[{}] {part}", s.name);
                let mount = c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["mountPath"] == TLS_DIR)
                    .unwrap();
                let volume = pod_spec(w)["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == mount["name"])
                    .unwrap();
                let sources = secret_sources(volume);
                let files: BTreeMap<String, (String, String)> = sources
                    .iter()
                    .flat_map(|(secret, items)| {
                        items
                            .iter()
                            .map(|(k, p)| (format!("{TLS_DIR}/{p}"), (secret.clone(), k.clone())))
                    })
                    .collect();
                let env = pod_env(s, c, &pod_name);
                let mut named: BTreeMap<String, String> = tls_table(s, part)
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
                    .collect();
                let prefix = format!("SHOAL_{}_TLS__", part.to_uppercase());
                for (k, v) in &env {
                    if let Some(key) = k.strip_prefix(&prefix) {
                        named.insert(key.to_lowercase(), v.clone());
                    }
                }
                let wanted: &[&str] = match part {
                    "agent" => &["ca", "agent_ca", "issuer_cert", "issuer_key", "name"],
                    _ => &["ca", "agent_ca", "cert", "key"],
                };
                assert_eq!(
                    named.keys().map(String::as_str).collect::<BTreeSet<_>>(),
                    wanted.iter().copied().collect(),
                    "{at}: [tls]"
                );
                for (key, path) in &named {
                    if key == "name" {
                        continue;
                    }
                    assert!(
                        files.contains_key(path),
                        "{at}: tls.{key} = {path} is not mounted"
                    );
                }
                if part == "agent" {
                    assert_eq!(named["name"], "node-1", "{at}: named after its node");
                    assert_eq!(
                        files[&named["issuer_key"]],
                        (agents_ca.clone(), "tls.key".into())
                    );
                } else {
                    assert!(
                        !files
                            .values()
                            .any(|(sec, k)| *sec == agents_ca && k == "tls.key"),
                        "{at}: holds the agents CA's key"
                    );
                    assert_eq!(
                        files[&named["agent_ca"]],
                        (agents_ca.clone(), "tls.crt".into())
                    );
                }
                if part == "origin" {
                    // Each origin its own certificate, by its pod's name.
                    assert_eq!(named["cert"], format!("{TLS_DIR}/{pod_name}.crt"), "{at}");
                }
                // No pod sees the cluster CA's key.
                for (secret, _) in &sources {
                    assert!(!secret.ends_with("-tls-ca"), "{at}: mounts {secret}");
                }
            }
        }
    }
}

fn x509(cert: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("c.pem"), cert).unwrap();
    let mut a = vec!["x509", "-in", "c.pem", "-noout"];
    a.extend(args);
    openssl(&a, dir.path())
}

fn dns_names(cert: &str) -> Vec<String> {
    let text = x509(cert, &["-ext", "subjectAltName"]);
    text.lines()
        .skip(1)
        .flat_map(|l| l.split(','))
        .filter_map(|n| n.trim().strip_prefix("DNS:").map(str::to_owned))
        .collect()
}

/// Whether `cert` was signed by `ca` and its key is `key`'s.
fn issued_by(cert: &str, key: &str, ca: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("ca.pem"), ca).unwrap();
    fs::write(d.join("c.pem"), cert).unwrap();
    fs::write(d.join("k.pem"), key).unwrap();
    let verified = Command::new(which("openssl", "openssl"))
        .args([
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            "ca.pem",
            "c.pem",
        ])
        .current_dir(d)
        .output()
        .unwrap()
        .status
        .success();
    let a = openssl(&["x509", "-in", "c.pem", "-noout", "-pubkey"], d);
    let b = openssl(&["pkey", "-in", "k.pem", "-pubout"], d);
    verified && a == b
}

/// The names each certificate must carry: the peer name of each origin and the host the
/// others dial it at (its member URL), the tracker's host in the agent's URL, the proxy's
/// Service. Keyed by the Secret the pods read it from.
fn needed_names(s: &Set) -> BTreeMap<String, Vec<String>> {
    let host = |url: &str| {
        url.split("://")
            .nth(1)
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .0
            .to_owned()
    };
    let sts = s.workload("origin").unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = str_list(lookup(&s.config("origin"), "cluster.members"));
    let mut needed = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        needed.insert(
            format!("{sts}-{i}-tls"),
            vec![format!("{sts}-{i}.origin.shoal"), host(m)],
        );
    }
    let fullname = sts.strip_suffix("-origin").unwrap();
    needed.insert(
        format!("{fullname}-tracker-tls"),
        vec![format!(
            "{fullname}-tracker.{}.svc.cluster.local",
            s.namespace
        )],
    );
    needed.insert(
        format!("{fullname}-proxy-tls"),
        vec![format!("{fullname}-proxy.{}.svc", s.namespace)],
    );
    needed
}

#[test]
fn the_generated_certificates_name_what_the_parts_dial_and_an_upgrade_keeps_their_cas() {
    shoal_tests::process::require("openssl", "openssl");
    let mut checked = 0;
    for s in rendered()
        .sets
        .iter()
        .filter(|s| s.tls() && s.kind("Certificate").count() == 0)
    {
        let fullname = fullname(s);
        let ca_name = format!("{fullname}-tls-ca");
        let agents_name = format!("{fullname}-agents-ca");
        let ca = s.secret_value(&ca_name, "tls.crt");
        for name in [&ca_name, &agents_name] {
            let secret = s
                .kind("Secret")
                .find(|o| o["metadata"]["name"] == name.as_str())
                .unwrap();
            assert!(
                super::credentials::kept(secret),
                "[{}] {name} survives an uninstall",
                s.name
            );
            assert!(x509(&s.secret_value(name, "tls.crt"), &["-text"]).contains("CA:TRUE"));
        }
        // The agents read the agents CA's key as PKCS#8.
        assert!(
            s.secret_value(&agents_name, "tls.key")
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        for (secret, names) in needed_names(s) {
            let cert = s.secret_value(&secret, "tls.crt");
            let key = s.secret_value(&secret, "tls.key");
            assert_eq!(
                s.secret_value(&secret, "ca.crt"),
                ca,
                "[{}] {secret}",
                s.name
            );
            assert!(
                issued_by(&cert, &key, &ca),
                "[{}] {secret} is not the CA's, or not its key's",
                s.name
            );
            let has = dns_names(&cert);
            for n in &names {
                assert!(has.contains(n), "[{}] {secret} lacks {n}: {has:?}", s.name);
            }
            let peers: Vec<&String> = has.iter().filter(|n| n.ends_with(".shoal")).collect();
            let is_origin = secret.contains("-origin-");
            assert_eq!(
                peers.len(),
                usize::from(is_origin),
                "[{}] {secret}: peer names {peers:?}",
                s.name
            );
            let usage = x509(&cert, &["-ext", "extendedKeyUsage"]);
            assert!(
                usage.contains("TLS Web Server Authentication")
                    && usage.contains("TLS Web Client Authentication"),
                "[{}] {secret}: {usage}",
                s.name
            );
            checked += 1;
        }
        // An upgrade keeps both CAs and issues leaves from the same one; a new install
        // makes new CAs.
        let again = |list: &[Value], name: &str, key: &str| -> String {
            list.iter().find(|o| o["metadata"]["name"] == name).unwrap()["__decoded"][key]
                .as_str()
                .unwrap()
                .to_owned()
        };
        for name in [&ca_name, &agents_name] {
            for key in ["tls.crt", "tls.key"] {
                assert_eq!(
                    again(&s.upgrade_secrets, name, key),
                    s.secret_value(name, key)
                );
                assert_ne!(
                    again(&s.fresh_secrets, name, key),
                    s.secret_value(name, key)
                );
            }
        }
        for secret in needed_names(s).keys() {
            let cert = again(&s.upgrade_secrets, secret, "tls.crt");
            let key = again(&s.upgrade_secrets, secret, "tls.key");
            assert!(
                issued_by(&cert, &key, &ca),
                "[{}] upgraded {secret}",
                s.name
            );
        }
    }
    assert!(checked > 0);
}

#[test]
fn cert_manager_is_asked_for_the_same_certificates() {
    let s = rendered_set("cert-manager");
    let issuer = &s.values["tls"]["certManager"]["issuerRef"];
    assert_eq!(
        s.kind("Secret")
            .filter(|o| o["type"] == "kubernetes.io/tls")
            .count(),
        0,
        "cert-manager makes every certificate"
    );
    let needed = needed_names(s);
    for (secret, names) in &needed {
        let cert = s
            .kind("Certificate")
            .find(|c| c["spec"]["secretName"] == secret.as_str())
            .unwrap_or_else(|| panic!("no Certificate writes {secret}"));
        let spec = &cert["spec"];
        let has: Vec<&str> = spec["dnsNames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for n in names {
            assert!(has.contains(&n.as_str()), "{secret} lacks {n}: {has:?}");
        }
        assert_eq!(spec["issuerRef"]["name"], issuer["name"]);
        assert_eq!(spec["issuerRef"]["kind"], issuer["kind"]);
        let usages = spec["usages"].as_array().unwrap();
        assert!(usages.contains(&"server auth".into()) && usages.contains(&"client auth".into()));
        assert_eq!(spec["privateKey"]["rotationPolicy"], "Always");
    }
    assert_eq!(s.kind("Certificate").count(), needed.len() + 1);
    let ca = s
        .kind("Certificate")
        .find(|c| c["spec"]["isCA"] == true)
        .unwrap();
    let spec = &ca["spec"];
    assert!(spec["secretName"].as_str().unwrap().ends_with("-agents-ca"));
    assert_eq!(
        spec["privateKey"]["encoding"], "PKCS8",
        "what the agents read"
    );
    assert_eq!(
        spec["privateKey"]["rotationPolicy"], "Never",
        "peers that loaded the agents CA keep trusting agents across a renewal"
    );
    let own = s
        .kind("Issuer")
        .find(|i| i["metadata"]["name"] == spec["issuerRef"]["name"])
        .unwrap();
    assert_eq!(own["spec"], serde_json::json!({"selfSigned": {}}));
}
