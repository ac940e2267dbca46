//! What the chart renders (`tests/deploy/chart.py`, run once for every test), and
//! reading it: workloads, containers, configs, Secrets, and the environment a pod gets.

use super::*;

pub struct Set {
    pub name: String,
    pub namespace: String,
    pub objects: Vec<Value>,
    pub notes: String,
    /// The values the set rendered with, the chart's defaults merged in.
    pub values: Value,
    /// The Secrets rendered again against a cluster holding this render's Secrets.
    pub upgrade_secrets: Vec<Value>,
    /// The Secrets rendered against a cluster holding none.
    pub fresh_secrets: Vec<Value>,
}

pub struct Rendered {
    pub sets: Vec<Set>,
    pub refused: BTreeMap<String, String>,
}

/// Runs chart.py once for every test in this file.
pub fn rendered() -> &'static Rendered {
    static R: OnceLock<Rendered> = OnceLock::new();
    R.get_or_init(|| {
        let script = root().join("tests/deploy/chart.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(root().join("helm/shoal"))
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 {}: {e} (install the Debian package python3; tests/install-deps.sh installs it and the Python packages the chart checks need)", script.display())
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
    pub fn kind(&self, kind: &str) -> std::vec::IntoIter<&Value> {
        let found: Vec<&Value> = self.objects.iter().filter(|o| o["kind"] == kind).collect();
        found.into_iter()
    }

    pub fn component(&self, kind: &str, part: &str) -> Option<&Value> {
        self.kind(kind)
            .find(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == part)
    }

    /// The workload running `part`: the kind the chart uses for it.
    pub fn workload(&self, part: &str) -> Option<&Value> {
        let kind = match part {
            "origin" => "StatefulSet",
            "agent" => "DaemonSet",
            _ => "Deployment",
        };
        self.component(kind, part)
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.objects.iter().filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "DaemonSet")
            )
        })
    }

    /// `<part>.toml` from the part's ConfigMap, parsed.
    pub fn config(&self, part: &str) -> toml::Table {
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
    pub fn credentials_secret(&self) -> (String, bool) {
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
    pub fn secret_value(&self, name: &str, key: &str) -> String {
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

    /// Whether the parts speak TLS to each other.
    pub fn tls(&self) -> bool {
        self.values["tls"]["enabled"] != false
    }

    /// The scheme of the URLs between parts.
    pub fn scheme(&self) -> &'static str {
        if self.tls() { "https" } else { "http" }
    }

    pub fn service_selecting(&self, workload: &Value) -> Vec<&Value> {
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        self.kind("Service")
            .filter(|s| selects(&s["spec"]["selector"], labels))
            .collect()
    }
}

pub fn rendered_set(name: &str) -> &'static Set {
    rendered()
        .sets
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no value set {name}"))
}

pub fn selects(selector: &Value, labels: &Value) -> bool {
    match selector.as_object() {
        Some(sel) if !sel.is_empty() => sel.iter().all(|(k, v)| &labels[k] == v),
        _ => false,
    }
}

pub fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

pub fn containers(workload: &Value) -> impl Iterator<Item = &Value> {
    pod_spec(workload)["containers"]
        .as_array()
        .into_iter()
        .flatten()
}

pub fn init_containers(workload: &Value) -> impl Iterator<Item = &Value> {
    pod_spec(workload)["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
}

pub fn container_port(c: &Value, name: &str) -> Option<u64> {
    c["ports"].as_array()?.iter().find(|p| p["name"] == name)?["containerPort"].as_u64()
}

pub fn part_of(c: &Value) -> Option<&'static str> {
    let cmd = c["command"][0].as_str()?;
    PARTS
        .into_iter()
        .find(|p| cmd == format!("{BIN_DIR}/shoal-{p}"))
}

pub fn str_list(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The environment Kubernetes would give the container: `$(VAR)` expanded from earlier
/// entries, the downward API filled with stand-ins, Secrets from the rendered Secret (or, for
/// one named in values, the default set's generated credentials).
pub fn pod_env(s: &Set, c: &Value, pod_name: &str) -> Vec<(String, String)> {
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
                "spec.nodeName" => "node-1".to_owned(),
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
