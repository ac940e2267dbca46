//! The deployment files checked against the code they deploy.
//!
//! - The Helm chart: `tests/deploy/chart.py` lints it (strict) and renders it with Helm's own
//!   engine for every value set in `helm/shoal/ci/`, validates every object against the
//!   Kubernetes 1.30 schemas (strict, offline), and checks that bad values are refused. The
//!   tests here read what it rendered: the addresses each part is given match the rendered
//!   Services and pods, every pod runs restricted, every part takes its credentials from the
//!   credentials Secret (generated once and kept across upgrades, which chart.py checks
//!   through Helm's own `lookup` against a stand-in API server), the NetworkPolicy lets in
//!   Shoal's pods and the nodes, the proxy's push login is on, and every rendered config is
//!   accepted by the real binary's `--check-config`, run with the pod's own arguments and
//!   environment, its Secrets resolved.
//! - `deploy/config/*.toml`: each passes its binary's `--check-config`.
//! - `deploy/Dockerfile` names binaries and stages that exist and needs no shell at run time.
//! - `deploy/systemd/*.service` run the binaries with their example configs, hardened, and
//!   pass `systemd-analyze verify` and `systemd-analyze security`.
//!
//! A part whose binary is not in the workspace yet cannot be run; the tests say so on stderr
//! and check everything else about it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const PARTS: [&str; 4] = ["origin", "tracker", "agent", "proxy"];
const VALUE_SETS: [&str; 7] = [
    "default",
    "auth",
    "ingress",
    "small",
    "restore",
    "no-agent",
    "no-containerd",
];
const BIN_DIR: &str = "/usr/local/bin";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

// ---------------------------------------------------------------------------------------
// What the chart renders.

struct Set {
    name: String,
    namespace: String,
    objects: Vec<Value>,
    notes: String,
    /// The values the set rendered with, the chart's defaults merged in.
    values: Value,
    /// The Secrets rendered again against a cluster holding this render's Secrets.
    upgrade_secrets: Vec<Value>,
    /// The Secrets rendered against a cluster holding none.
    fresh_secrets: Vec<Value>,
}

struct Rendered {
    sets: Vec<Set>,
    refused: BTreeMap<String, String>,
}

/// Runs chart.py once for every test in this file.
fn rendered() -> &'static Rendered {
    static R: OnceLock<Rendered> = OnceLock::new();
    R.get_or_init(|| {
        let script = root().join("tests/deploy/chart.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(root().join("helm/shoal"))
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 {}: {e} (tests/install-deps.sh installs what the chart checks need)", script.display())
            });
        assert!(
            out.status.success(),
            "the chart failed its checks ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("chart.py prints JSON");
        let sets = v["sets"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, s)| Set {
                name: name.clone(),
                namespace: s["namespace"].as_str().unwrap().to_owned(),
                objects: s["objects"].as_array().unwrap().clone(),
                notes: s["notes"].as_str().unwrap_or_default().to_owned(),
                values: s["values"].clone(),
                upgrade_secrets: s["upgrade_secrets"].as_array().unwrap().clone(),
                fresh_secrets: s["fresh_secrets"].as_array().unwrap().clone(),
            })
            .collect();
        let refused = v["refused"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, m)| (k.clone(), m.as_str().unwrap_or_default().to_owned()))
            .collect();
        Rendered { sets, refused }
    })
}

impl Set {
    fn kind(&self, kind: &str) -> std::vec::IntoIter<&Value> {
        let found: Vec<&Value> = self.objects.iter().filter(|o| o["kind"] == kind).collect();
        found.into_iter()
    }

    fn component(&self, kind: &str, part: &str) -> Option<&Value> {
        self.kind(kind)
            .find(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == part)
    }

    /// The workload running `part`: the kind the chart uses for it.
    fn workload(&self, part: &str) -> Option<&Value> {
        let kind = match part {
            "origin" => "StatefulSet",
            "agent" => "DaemonSet",
            _ => "Deployment",
        };
        self.component(kind, part)
    }

    fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.objects.iter().filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "DaemonSet")
            )
        })
    }

    /// `<part>.toml` from the part's ConfigMap, parsed.
    fn config(&self, part: &str) -> toml::Table {
        let cm = self
            .component("ConfigMap", part)
            .unwrap_or_else(|| panic!("[{}] no ConfigMap for {part}", self.name));
        let text = cm["data"][format!("{part}.toml")]
            .as_str()
            .unwrap_or_else(|| panic!("[{}] ConfigMap for {part} has no {part}.toml", self.name));
        text.parse()
            .unwrap_or_else(|e| panic!("[{}] {part}.toml is not TOML: {e}\n{text}", self.name))
    }

    /// The Secret the parts read their credentials from, and whether the chart renders it.
    fn credentials_secret(&self) -> (String, bool) {
        let existing = self.values["credentials"]["existingSecret"]
            .as_str()
            .unwrap_or_default();
        let fullname = self.workload("origin").unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .strip_suffix("-origin")
            .unwrap()
            .to_owned();
        if existing.is_empty() {
            (format!("{fullname}-credentials"), true)
        } else {
            (existing.to_owned(), false)
        }
    }

    /// `key` of Secret `name` as the pod would see it. A Secret named in values (made before
    /// the install) stands in as the default set's generated credentials.
    fn secret_value(&self, name: &str, key: &str) -> String {
        let secret = match self.kind("Secret").find(|o| o["metadata"]["name"] == name) {
            Some(s) => s,
            None => {
                let (own, rendered) = self.credentials_secret();
                assert!(
                    !rendered && own == name,
                    "[{}] Secret {name} is neither rendered nor named in values",
                    self.name
                );
                let default = rendered_set("default");
                let (generated, _) = default.credentials_secret();
                return default.secret_value(&generated, key);
            }
        };
        secret["__decoded"][key]
            .as_str()
            .unwrap_or_else(|| panic!("[{}] Secret {name} has no key {key}", self.name))
            .to_owned()
    }

    fn service_selecting(&self, workload: &Value) -> Vec<&Value> {
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        self.kind("Service")
            .filter(|s| selects(&s["spec"]["selector"], labels))
            .collect()
    }
}

fn rendered_set(name: &str) -> &'static Set {
    rendered()
        .sets
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no value set {name}"))
}

fn selects(selector: &Value, labels: &Value) -> bool {
    match selector.as_object() {
        Some(sel) if !sel.is_empty() => sel.iter().all(|(k, v)| &labels[k] == v),
        _ => false,
    }
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn containers(workload: &Value) -> impl Iterator<Item = &Value> {
    pod_spec(workload)["containers"]
        .as_array()
        .into_iter()
        .flatten()
}

fn init_containers(workload: &Value) -> impl Iterator<Item = &Value> {
    pod_spec(workload)["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
}

fn container_port(c: &Value, name: &str) -> Option<u64> {
    c["ports"].as_array()?.iter().find(|p| p["name"] == name)?["containerPort"].as_u64()
}

fn part_of(c: &Value) -> Option<&'static str> {
    let cmd = c["command"][0].as_str()?;
    PARTS
        .into_iter()
        .find(|p| cmd == format!("{BIN_DIR}/shoal-{p}"))
}

fn str_list(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// The real binaries.

/// The binary targets of the workspace, from cargo itself.
fn workspace() -> &'static (BTreeSet<String>, BTreeSet<String>) {
    static W: OnceLock<(BTreeSet<String>, BTreeSet<String>)> = OnceLock::new();
    W.get_or_init(|| {
        let out = Command::new(cargo())
            .args(["metadata", "--no-deps", "--format-version", "1", "--locked"])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo metadata failed");
        let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut packages = BTreeSet::new();
        let mut bins = BTreeSet::new();
        for p in meta["packages"].as_array().unwrap() {
            packages.insert(p["name"].as_str().unwrap().to_owned());
            for t in p["targets"].as_array().unwrap() {
                if t["kind"].as_array().unwrap().iter().any(|k| k == "bin") {
                    bins.insert(t["name"].as_str().unwrap().to_owned());
                }
            }
        }
        (packages, bins)
    })
}

/// `shoal-<part>` for each part whose binary exists, built once through cargo into the
/// target dir this test runs from. Building with the same targets as `cargo test
/// --workspace` (bins and tests of every member) keeps the features the same, so under the
/// README's test command this finds everything built already.
fn binaries() -> &'static BTreeMap<&'static str, PathBuf> {
    static B: OnceLock<BTreeMap<&'static str, PathBuf>> = OnceLock::new();
    B.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let profile = profile_dir.file_name().unwrap().to_str().unwrap();
        let mut cmd = Command::new(cargo());
        cmd.args(["build", "--workspace", "--bins", "--tests", "--locked"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(root());
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building the binaries failed: {status}");
        let (_, bins) = workspace();
        let mut found = BTreeMap::new();
        for part in PARTS {
            let name = format!("shoal-{part}");
            if bins.contains(&name) {
                let path = profile_dir.join(&name);
                assert!(path.exists(), "{} was not built", path.display());
                found.insert(part, path);
            }
        }
        assert!(
            found.contains_key("tracker"),
            "no shoal-tracker binary: these tests would check nothing"
        );
        found
    })
}

fn say_unchecked(what: &str) {
    let missing: Vec<&str> = PARTS
        .into_iter()
        .filter(|p| !binaries().contains_key(p))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "NOTE: {what}: not run for {} (no binary in the workspace yet)",
            missing
                .iter()
                .map(|p| format!("shoal-{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs a binary with exactly `env` (nothing inherited, so no stray SHOAL_* variable can
/// change the outcome) and waits at most 60 s for it.
fn run(bin: &Path, args: &[String], env: &[(String, String)]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} did not exit within 60s (does it honour --check-config?)",
                bin.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        stdout: fs::read_to_string(out_path).unwrap_or_default(),
        stderr: fs::read_to_string(err_path).unwrap_or_default(),
    }
}

/// The environment Kubernetes would give the container: `$(VAR)` expanded from earlier
/// entries, the downward API filled with stand-ins, Secrets from the rendered Secret (or, for
/// one named in values, the default set's generated credentials).
fn pod_env(s: &Set, c: &Value, pod_name: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_owned();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            assert!(
                !v.contains("$("),
                "{name}={v}: refers to a variable not set before it"
            );
            v
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod_name.to_owned(),
                "status.hostIP" | "status.podIP" => "10.20.30.40".to_owned(),
                other => panic!("{name}: unexpected fieldRef {other}"),
            }
        } else if let Some(secret) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
            s.secret_value(
                secret,
                e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap(),
            )
        } else {
            panic!("{name}: unexpected env source {e}")
        };
        env.push((name, value));
    }
    env
}

// ---------------------------------------------------------------------------------------
// The chart.

#[test]
fn every_value_set_renders_what_it_asks_for_and_bad_values_are_refused() {
    let r = rendered();
    let names: BTreeSet<&str> = r.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        VALUE_SETS.into_iter().collect(),
        "value sets rendered"
    );
    for s in &r.sets {
        let agent = s.name != "no-agent";
        for part in PARTS {
            let expected = part != "agent" || agent;
            assert_eq!(s.workload(part).is_some(), expected, "[{}] {part}", s.name);
            assert_eq!(
                s.component("ConfigMap", part).is_some(),
                expected,
                "[{}] {part} ConfigMap",
                s.name
            );
        }
        let pdbs = s.kind("PodDisruptionBudget").count();
        assert_eq!(pdbs, if s.name == "small" { 0 } else { 3 }, "[{}]", s.name);
        assert_eq!(
            s.kind("Ingress").count(),
            usize::from(s.name == "ingress"),
            "[{}]",
            s.name
        );
        assert_eq!(
            s.kind("ServiceMonitor").count(),
            if s.name == "ingress" { 3 } else { 0 },
            "[{}]",
            s.name
        );
        let pull = if agent {
            "localhost:8081/app:tag"
        } else {
            "docker pull"
        };
        assert!(
            s.notes.contains("docker push") && s.notes.contains(pull),
            "[{}] NOTES.txt must say how to push and pull:\n{}",
            s.name,
            s.notes
        );
    }
    for case in [
        "managed key in origin.config",
        "misspelt top-level key",
        "credentials in tracker.config",
        "insecure in origin.config",
        "insecure in agent.config",
        "node CIDR without a prefix length",
    ] {
        assert!(r.refused.contains_key(case), "{case} was not refused");
    }
}

#[test]
fn every_part_is_given_the_addresses_of_the_rendered_services_and_pods() {
    for s in &rendered().sets {
        let ns = &s.namespace;
        let sts = s.workload("origin").unwrap();
        let sts_name = sts["metadata"]["name"].as_str().unwrap();
        let headless_name = sts["spec"]["serviceName"].as_str().unwrap();
        let headless = s
            .kind("Service")
            .find(|o| o["metadata"]["name"] == headless_name)
            .unwrap_or_else(|| panic!("[{}] no Service {headless_name}", s.name));
        assert_eq!(headless["spec"]["clusterIP"], "None", "[{}]", s.name);
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        assert!(selects(
            &headless["spec"]["selector"],
            &sts["spec"]["template"]["metadata"]["labels"]
        ));
        let origin_c = containers(sts).next().unwrap();
        let http_port = container_port(origin_c, "http").unwrap();
        let svc_http = headless["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap();
        assert_eq!(svc_http["port"].as_u64(), Some(http_port));

        // The member list: every pod of the StatefulSet by its DNS name, in every config.
        let replicas = sts["spec"]["replicas"].as_u64().unwrap();
        let members: Vec<String> = (0..replicas)
            .map(|i| {
                format!("http://{sts_name}-{i}.{headless_name}.{ns}.svc.cluster.local:{http_port}")
            })
            .collect();
        let origin = s.config("origin");
        assert_eq!(
            str_list(origin.get("cluster").and_then(|c| c.get("members"))),
            members,
            "[{}] origin cluster.members",
            s.name
        );
        assert_eq!(port_of(origin["listen"].as_str().unwrap()), http_port);
        for (i, member) in members.iter().enumerate() {
            let env = pod_env(s, origin_c, &format!("{sts_name}-{i}"));
            let advertise = env.iter().find(|(k, _)| k == "SHOAL_ORIGIN_ADVERTISE_URL");
            assert_eq!(
                advertise.map(|(_, v)| v),
                Some(member),
                "[{}] origin {i} advertises itself as in the member list",
                s.name
            );
        }
        let tracker = s.config("tracker");
        let proxy = s.config("proxy");
        assert_eq!(str_list(tracker.get("origins")), members, "[{}]", s.name);
        assert_eq!(str_list(proxy.get("origins")), members, "[{}]", s.name);
        assert_eq!(
            tracker.get("replicas"),
            origin.get("replicas"),
            "[{}] tracker and origins agree on copies per blob",
            s.name
        );

        // The tracker's and the proxy's Services reach their pods' listen ports.
        for part in ["tracker", "proxy"] {
            let w = s.workload(part).unwrap();
            let c = containers(w).next().unwrap();
            let listen = s.config(part)["listen"].as_str().unwrap().to_owned();
            assert_eq!(container_port(c, "http"), Some(port_of(&listen)));
            let svcs = s.service_selecting(w);
            assert_eq!(svcs.len(), 1, "[{}] one Service for {part}", s.name);
            assert_eq!(svcs[0]["spec"]["ports"][0]["targetPort"], "http");
        }

        // The htpasswd file the proxy's config names is where the pod mounts the Secret.
        let proxy_w = s.workload("proxy").unwrap();
        if let Some(file) = lookup(&proxy, "auth.htpasswd").and_then(|v| v.as_str()) {
            let (dir, key) = file.rsplit_once('/').unwrap();
            let c = containers(proxy_w).next().unwrap();
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == dir)
                .unwrap_or_else(|| panic!("[{}] nothing mounted at {dir}", s.name));
            let vol = pod_spec(proxy_w)["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert_eq!(vol["secret"]["items"][0]["path"], key, "[{}]", s.name);
        }
        // The internal token: origins require what the proxy presents.
        let token_secret = |w: &Value, var: &str| {
            containers(w).next().unwrap()["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == var)
                .map(|e| e["valueFrom"]["secretKeyRef"].clone())
        };
        assert_eq!(
            token_secret(sts, "SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN"),
            token_secret(proxy_w, "SHOAL_PROXY_CREDENTIALS__WRITE_TOKEN"),
            "[{}] the proxy presents the origins' token",
            s.name
        );

        // The agent: tracker and origins as rendered, the registry where containerd looks.
        let Some(ds) = s.workload("agent") else {
            continue;
        };
        let agent = s.config("agent");
        assert_eq!(str_list(agent.get("origins")), members, "[{}]", s.name);
        let tracker_url = agent["tracker"].as_str().unwrap();
        let tracker_w = s.workload("tracker").unwrap();
        let tracker_svc = s.service_selecting(tracker_w)[0];
        let expected = format!(
            "http://{}.{ns}.svc.cluster.local:{}",
            tracker_svc["metadata"]["name"].as_str().unwrap(),
            tracker_svc["spec"]["ports"][0]["port"]
        );
        assert_eq!(tracker_url, expected, "[{}] agent's tracker", s.name);
        let pod = pod_spec(ds);
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
        let agent_c = containers(ds).next().unwrap();
        let listen = agent["listen"].as_str().unwrap();
        assert_eq!(listen, "127.0.0.1:8081", "[{}] agent registry", s.name);
        assert_eq!(container_port(agent_c, "registry"), Some(port_of(listen)));
        assert_eq!(
            container_port(agent_c, "peer"),
            Some(port_of(agent["peer"]["listen"].as_str().unwrap()))
        );
        let advertises = pod_env(s, agent_c, "agent")
            .iter()
            .any(|(k, _)| k == "SHOAL_AGENT_PEER__ADVERTISE_IP");
        assert_eq!(
            tracker
                .get("trust_announced_addr")
                .and_then(|v| v.as_bool()),
            advertises.then_some(true),
            "[{}] the tracker trusts announced addresses exactly when agents announce one",
            s.name
        );
        if let Some(init) = init_containers(ds).next() {
            let args: Vec<&str> = init["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            if args[1] == "install" {
                let mirror = args.iter().position(|a| *a == "--mirror").unwrap() + 1;
                assert_eq!(args[mirror], format!("http://{listen}"));
            }
        }
    }
}

#[test]
fn every_selector_matches_what_it_is_meant_to() {
    for s in &rendered().sets {
        let workloads: Vec<&Value> = s.workloads().collect();
        for w in &workloads {
            let sel = &w["spec"]["selector"]["matchLabels"];
            assert!(selects(sel, &w["spec"]["template"]["metadata"]["labels"]));
        }
        for svc in s.kind("Service") {
            let name = &svc["metadata"]["name"];
            let w = workloads
                .iter()
                .find(|w| {
                    selects(
                        &svc["spec"]["selector"],
                        &w["spec"]["template"]["metadata"]["labels"],
                    )
                })
                .unwrap_or_else(|| panic!("[{}] Service {name} selects no pods", s.name));
            for p in svc["spec"]["ports"].as_array().unwrap() {
                let target = p["targetPort"].as_str().unwrap();
                assert!(
                    containers(w).any(|c| container_port(c, target).is_some()),
                    "[{}] Service {name} targets port {target}, which no container has",
                    s.name
                );
            }
        }
        for pdb in s.kind("PodDisruptionBudget") {
            assert!(
                workloads.iter().any(|w| selects(
                    &pdb["spec"]["selector"]["matchLabels"],
                    &w["spec"]["template"]["metadata"]["labels"]
                )),
                "[{}] PodDisruptionBudget {} covers no pods",
                s.name,
                pdb["metadata"]["name"]
            );
        }
        for sm in s.kind("ServiceMonitor") {
            let svc = s
                .kind("Service")
                .find(|svc| {
                    selects(
                        &sm["spec"]["selector"]["matchLabels"],
                        &svc["metadata"]["labels"],
                    )
                })
                .unwrap_or_else(|| panic!("[{}] ServiceMonitor selects no Service", s.name));
            let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap();
            assert!(
                svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == port)
            );
        }
        for ing in s.kind("Ingress") {
            for rule in ing["spec"]["rules"].as_array().unwrap() {
                for path in rule["http"]["paths"].as_array().unwrap() {
                    let backend = &path["backend"]["service"];
                    let svc = s
                        .kind("Service")
                        .find(|svc| svc["metadata"]["name"] == backend["name"])
                        .unwrap_or_else(|| {
                            panic!("[{}] Ingress backend {} missing", s.name, backend["name"])
                        });
                    assert_eq!(
                        svc["metadata"]["labels"]["app.kubernetes.io/component"],
                        "proxy"
                    );
                }
            }
        }
        // Every ConfigMap and Secret a pod mounts is rendered, or named in values.
        for w in &workloads {
            for v in pod_spec(w)["volumes"].as_array().into_iter().flatten() {
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    assert!(s.kind("ConfigMap").any(|o| o["metadata"]["name"] == cm));
                }
                if let Some(secret) = v["secret"]["secretName"].as_str() {
                    let rendered = s.kind("Secret").any(|o| o["metadata"]["name"] == secret);
                    assert!(
                        rendered || secret == "registry-htpasswd",
                        "[{}] Secret {secret} is neither rendered nor given in values",
                        s.name
                    );
                }
            }
        }
    }
}

#[test]
fn every_pod_runs_restricted() {
    for s in &rendered().sets {
        for w in s.workloads() {
            let name = w["metadata"]["name"].as_str().unwrap();
            let at = format!("[{}] {name}", s.name);
            let pod = pod_spec(w);
            assert_eq!(
                pod["enableServiceLinks"], false,
                "{at}: service links would put SHOAL_*_PORT variables in the parts' config"
            );
            assert_eq!(pod["automountServiceAccountToken"], false, "{at}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{at}"
            );
            assert!(
                pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0,
                "{at}"
            );
            assert_eq!(
                pod["hostNetwork"] == true,
                w["kind"] == "DaemonSet",
                "{at}: host network"
            );
            for c in containers(w).chain(init_containers(w)) {
                let at = format!("{at}/{}", c["name"]);
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
                assert_ne!(sc["privileged"], true, "{at}");
                assert!(
                    sc["capabilities"]["drop"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c == "ALL"),
                    "{at}"
                );
                assert!(sc["capabilities"]["add"].is_null(), "{at}");
                assert!(c["resources"]["requests"]["memory"].is_string(), "{at}");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{at}");
                assert!(part_of(c).is_some(), "{at}: runs {}", c["command"]);
            }
            for c in containers(w) {
                let at = format!("{at}/{}", c["name"]);
                assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health", "{at}");
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{at}");
                assert!(
                    sc_runs_as_pod_user(c),
                    "{at}: only the init container may change the user"
                );
            }
            // The one container that runs as root: it writes containerd's certs.d and sees
            // nothing else of the host.
            for c in init_containers(w) {
                assert_eq!(c["name"], "containerd-config", "{at}");
                let mounts = c["volumeMounts"].as_array().unwrap();
                assert_eq!(
                    mounts.len(),
                    1,
                    "{at}: the init container mounts certs.d only"
                );
                let vol = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == mounts[0]["name"])
                    .unwrap();
                assert_eq!(vol["hostPath"]["path"], mounts[0]["mountPath"], "{at}");
            }
            for v in pod["volumes"].as_array().into_iter().flatten() {
                if v["hostPath"].is_object() {
                    let init_uses = init_containers(w).any(|c| {
                        c["volumeMounts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|m| m["name"] == v["name"])
                    });
                    let main_uses = containers(w).any(|c| {
                        c["volumeMounts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|m| m["name"] == v["name"])
                    });
                    assert!(
                        init_uses && !main_uses,
                        "{at}: host path {} outside the init container",
                        v["hostPath"]["path"]
                    );
                }
            }
        }
    }
}

fn sc_runs_as_pod_user(c: &Value) -> bool {
    c["securityContext"]["runAsUser"].is_null() && c["securityContext"]["runAsNonRoot"] != false
}

// ---------------------------------------------------------------------------------------
// The cluster's credentials, the NetworkPolicy and the proxy's login.

/// The keys of the credentials Secret.
const CREDENTIAL_KEYS: [&str; 4] = ["write-token", "read-token", "metainfo-key", "metainfo-keys"];

/// The credentials each part holds, as keys of the credentials Secret.
fn credentials_of(part: &str) -> &'static [&'static str] {
    match part {
        "origin" => &["write-token", "read-token", "metainfo-key"],
        "proxy" => &["write-token"],
        "tracker" => &["read-token"],
        "agent" => &["read-token", "metainfo-keys"],
        other => panic!("no part {other}"),
    }
}

/// `SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN` for ("origin", "write-token").
fn credential_var(part: &str, key: &str) -> String {
    format!(
        "SHOAL_{}_CREDENTIALS__{}",
        part.to_uppercase(),
        key.replace('-', "_").to_uppercase()
    )
}

fn kept(secret: &Value) -> bool {
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
    let openssl = which("openssl");
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
fn basic(user: &str, password: &str) -> String {
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

/// The status of one request with an empty body over loopback.
fn status_of(addr: &str, method: &str, path: &str, authorization: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {text:?}"))
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

    // The real proxy, with the rendered config, env and Secret.
    let Some(bin) = binaries().get("proxy") else {
        say_unchecked("the proxy's login");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cm = s.component("ConfigMap", "proxy").unwrap();
    fs::write(
        tmp.path().join("proxy.toml"),
        cm["data"]["proxy.toml"].as_str().unwrap(),
    )
    .unwrap();
    let htpasswd_path = tmp.path().join(key);
    fs::write(&htpasswd_path, &htpasswd).unwrap();
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
        format!("auth.htpasswd={}", htpasswd_path.display()),
        "--set".to_owned(),
        format!("uploads.spool_dir={}", spool.display()),
    ]);
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
                for (key, text) in cm["data"].as_object().unwrap() {
                    fs::write(dir.path().join(key), text.as_str().unwrap()).unwrap();
                }
                let mut args: Vec<String> = c["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        let a = a.as_str().unwrap();
                        match a.strip_prefix("/etc/shoal/") {
                            Some(file) => dir.path().join(file).display().to_string(),
                            None => a.to_owned(),
                        }
                    })
                    .collect();
                args.push("--check-config".into());
                let out = run(bin, &args, &pod_env(s, c, &pod_name));
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
fn check_containerd_config(agent: &Path, c: &Value, set: &str) {
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
// Example configs, Dockerfile, systemd units.

#[test]
fn every_example_config_passes_the_binarys_check_config() {
    let bins = binaries();
    let dir = root().join("deploy/config");
    let mut examples = BTreeSet::new();
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
            let args = vec![
                "--config".to_owned(),
                path.display().to_string(),
                "--check-config".to_owned(),
            ];
            // The examples leave the tokens and the metainfo keys to the environment, as
            // they advise.
            let env = [
                (
                    "SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN".to_owned(),
                    "0123456789abcdef0123456789abcdef".to_owned(),
                ),
                (
                    "SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY".to_owned(),
                    "-----BEGIN PRIVATE KEY-----\n\
                     MC4CAQAwBQYDK2VwBCIEIDKntVjQaHAIhZle5+UJ7EocExEj6qmu4kjDCzQB+VQU\n\
                     -----END PRIVATE KEY-----\n"
                        .to_owned(),
                ),
                (
                    "SHOAL_TRACKER_CREDENTIALS__READ_TOKEN".to_owned(),
                    "fedcba9876543210fedcba9876543210".to_owned(),
                ),
                (
                    "SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS".to_owned(),
                    "-----BEGIN PUBLIC KEY-----\n\
                     MCowBQYDK2VwAyEAODXC35grld8jyBNVc/6piT4VmERxcpfi/0Epu9+O3FA=\n\
                     -----END PUBLIC KEY-----\n"
                        .to_owned(),
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

/// One Dockerfile instruction: its name in capitals and the rest of the line.
type Instruction = (String, String);

/// A stage: its name, its base, and its instructions.
type Stage = (String, String, Vec<Instruction>);

/// Dockerfile instructions, continuation lines joined and comments dropped.
fn dockerfile() -> Vec<Instruction> {
    let text = fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(rest) => {
                cur.push_str(rest);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (ins, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
                out.push((ins.to_uppercase(), rest.trim().to_owned()));
                cur.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_every_part_and_needs_no_shell_to_run() {
    let ins = dockerfile();
    let (packages, bins) = workspace();
    let cargo: toml::Table = fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let rust_version = cargo["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();

    let arg = |name: &str| {
        ins.iter()
            .find_map(|(i, rest)| (i == "ARG").then(|| rest.strip_prefix(&format!("{name}=")))?)
            .unwrap_or_else(|| panic!("ARG {name} has no default"))
            .to_owned()
    };
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let version = cargo["workspace"]["package"]["version"].as_str().unwrap();
    assert_eq!(arg("VERSION"), version, "the image's version label");
    assert!(
        parse(&arg("RUST_VERSION")) >= parse(rust_version),
        "the builder's Rust is older than the workspace's rust-version {rust_version}"
    );

    // Stages, in order: (name, base, instructions).
    let mut stages: Vec<Stage> = Vec::new();
    for (i, rest) in &ins {
        if i == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => panic!("every stage is named: FROM {rest}"),
            };
            stages.push((name, words[0].to_owned(), Vec::new()));
        } else if let Some(last) = stages.last_mut() {
            last.2.push((i.clone(), rest.clone()));
        }
    }
    let names: Vec<&str> = stages.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "builder", "runtime", "origin", "tracker", "agent", "proxy", "shoal"
        ],
        "stages"
    );
    let stage = |n: &str| stages.iter().find(|s| s.0 == n).unwrap();

    // The builder builds each part's binary, which the workspace has, and copies it out.
    let build = stage("builder")
        .2
        .iter()
        .find(|(i, r)| i == "RUN" && r.contains("cargo build"))
        .unwrap()
        .1
        .clone();
    assert!(
        build.contains("--locked") && build.contains("--release"),
        "{build}"
    );
    for part in PARTS {
        let bin = format!("shoal-{part}");
        assert!(
            build.contains(&format!("--bin {bin}")),
            "{bin} is not built"
        );
        assert!(
            build.contains(&format!("target/release/{bin}")),
            "{bin} is not copied out"
        );
        assert!(
            packages.contains(&bin),
            "the workspace has no package {bin}"
        );
        if !bins.contains(&bin) {
            eprintln!(
                "NOTE: {bin} has no binary target in the workspace yet; the image build needs it"
            );
        }
    }

    // The runtime: binaries where the chart and the units run them, a non-root user, the
    // same one the chart runs as, and nothing that needs a shell.
    let runtime = stage("runtime");
    assert!(
        runtime
            .2
            .iter()
            .any(|(i, r)| i == "COPY" && r == &format!("--from=builder /out/ {BIN_DIR}/"))
    );
    let user = runtime
        .2
        .iter()
        .find(|(i, _)| i == "USER")
        .unwrap()
        .1
        .clone();
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert!(uid > 0);
    let default = rendered()
        .sets
        .iter()
        .find(|s| s.name == "default")
        .unwrap();
    for w in default.workloads() {
        assert_eq!(
            pod_spec(w)["securityContext"]["runAsUser"].as_u64(),
            Some(uid)
        );
    }
    for (name, base, body) in &stages[1..] {
        if name != "runtime" {
            assert_eq!(base, "runtime", "stage {name}");
        }
        for (i, rest) in body {
            assert_ne!(
                i, "RUN",
                "stage {name} runs a command, but its image has no shell"
            );
            if i == "ENTRYPOINT" || i == "CMD" {
                let argv: Vec<String> = serde_json::from_str(rest)
                    .unwrap_or_else(|_| panic!("{i} {rest} must be exec form: there is no shell"));
                if i == "ENTRYPOINT" {
                    assert_eq!(argv, [format!("{BIN_DIR}/shoal-{name}")], "stage {name}");
                }
            }
        }
    }

    // The build context keeps every workspace member and the lock file.
    let ignore = fs::read_to_string(root().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(ignored.contains(&"target/"));
    let members = cargo["workspace"]["members"].as_array().unwrap();
    for m in members
        .iter()
        .map(|m| m.as_str().unwrap())
        .chain(["Cargo.lock", "Cargo.toml"])
    {
        assert!(
            !ignored.iter().any(|p| p.trim_end_matches('/') == m),
            ".dockerignore leaves out {m}, which the build needs"
        );
    }
}

/// A unit file's `Key=value` lines, per key, in order.
fn unit(part: &str) -> BTreeMap<String, Vec<String>> {
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

fn lookup<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut keys = dotted.split('.');
    let mut v = t.get(keys.next()?)?;
    for k in keys {
        v = v.get(k)?;
    }
    Some(v)
}

/// Whole seconds, rounded up, of a duration such as `10s`, `1m 30s` or `500ms`.
fn seconds(d: &str) -> u64 {
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
fn systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let t = which("true");
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
                panic!("cannot run systemd-analyze ({e}); tests/install-deps.sh installs it")
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

fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} on PATH"))
}
