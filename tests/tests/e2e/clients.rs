//! skopeo, podman and containerd against the proxy and the agents.

use std::path::Path;
use std::time::Duration;

use shoal_cluster::spec::local::{PROXY, agent};
use shoal_core::Digest;
use shoal_tests::data::noise;
use shoal_tests::oci::{Entry, Layout, OCI_INDEX, OCI_MANIFEST, tar};
use shoal_tests::process::{Daemon, cmd, require};

use super::Local;

pub fn skopeo(args: &[&str]) -> shoal_tests::process::Cmd {
    cmd("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .timeout(Duration::from_secs(180))
}

pub fn skopeo_two_platform_index(cluster: &Local) {
    require("skopeo", "skopeo");
    let work = tempfile::tempdir().unwrap();
    let mut src = Layout::new(&work.path().join("src"));
    let shared = noise(2, 3 << 20);
    let base = tar(&[Entry::file("base/shared", &shared)]);
    let amd_layer = tar(&[Entry::file("arch", &noise(3, 6 << 20))]);
    let arm_layer = tar(&[Entry::file("arch", &noise(4, 6 << 20))]);
    let amd = src.image("amd64", &["/bin/true"], &[base.clone(), amd_layer.clone()]);
    let arm = src.image("arm64", &["/bin/true"], &[base, arm_layer.clone()]);
    let index = src.index(&[("amd64", &amd), ("arm64", &arm)]);
    src.tag("multi", OCI_INDEX, &index);

    let src_ref = format!("oci:{}:multi", src.dir.display());
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &cluster.proxy_creds(),
    ])
    .arg(&src_ref)
    .arg(format!("docker://{PROXY}/e2e/multi:v1"))
    .ok();

    let via = agent(cluster.agents().min(2));
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{via}/e2e/multi:v1"))
        .ok();
    assert_eq!(
        raw.trim_end().as_bytes(),
        index.as_slice(),
        "the index read back"
    );
    // Each platform resolves to its own image: its own layer and architecture.
    for (arch, layer) in [("amd64", &amd_layer), ("arm64", &arm_layer)] {
        let shown = skopeo(&["--override-arch", arch, "inspect", "--tls-verify=false"])
            .arg(format!("docker://{via}/e2e/multi:v1"))
            .ok();
        let digest = Digest::sha256_of(layer).to_string();
        assert!(
            shown.contains(&digest) && shown.contains(&format!("\"Architecture\": \"{arch}\"")),
            "{arch} does not resolve to its image (layer {digest}):\n{shown}"
        );
    }

    let out = Layout::new(&work.path().join("out"));
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
    ])
    .arg(format!("docker://{via}/e2e/multi:v1"))
    .arg(format!("oci:{}:multi", out.dir.display()))
    .ok();
    let got = out.blobs();
    for (name, content) in &got {
        assert_eq!(
            *name,
            content.to_string(),
            "a blob's content is not its digest"
        );
    }
    assert_eq!(got, src.blobs(), "the blobs of both platforms, read back");
}

// ---------------------------------------------------------------------------------------
// podman

/// Writes an image of one 8 MiB layer of `seed`'s noise under `work` and pushes it through
/// the proxy as `e2e/<name>:v1` with skopeo; returns its manifest.
fn push_one_layer(cluster: &Local, work: &Path, name: &str, seed: u64) -> Vec<u8> {
    require("skopeo", "skopeo");
    let mut src = Layout::new(&work.join("src"));
    let manifest = src.image(
        "amd64",
        &["/bin/true"],
        &[tar(&[Entry::file(
            &format!("{name}/data"),
            &noise(seed, 8 << 20),
        )])],
    );
    src.tag("v1", OCI_MANIFEST, &manifest);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &cluster.proxy_creds(),
    ])
    .arg(format!("oci:{}:v1", src.dir.display()))
    .arg(format!("docker://{PROXY}/e2e/{name}:v1"))
    .ok();
    manifest
}

pub fn podman(cluster: &Local) {
    require("podman", "podman");
    let work = tempfile::tempdir().unwrap();
    let manifest = push_one_layer(cluster, work.path(), "podman", 5);

    let via = agent(cluster.agents().min(3));
    let root = work.path().join("root");
    let runroot = work.path().join("runroot");
    let podman = |args: &[&str]| {
        cmd("podman")
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .timeout(Duration::from_secs(180))
    };
    let image = format!("{via}/e2e/podman:v1");
    podman(&["pull", "--tls-verify=false", &image]).ok();
    let digest = podman(&["image", "inspect", "--format", "{{.Digest}}", &image]).ok();
    assert_eq!(digest.trim(), Digest::sha256_of(&manifest).to_string());
    // Storage on vfs is plain directories; remove it through podman so nothing is left.
    podman(&["rmi", "--all", "--force"]).run();
}

// ---------------------------------------------------------------------------------------
// containerd

/// A containerd of the test's own, on a socket in a temporary directory.
struct Containerd {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        require("containerd", "containerd");
        require("ctr", "containerd");
        let dir = tempfile::Builder::new()
            .prefix("shoal-containerd.")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display().to_string();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let daemon = Daemon::spawn(
            "containerd",
            "containerd",
            &["--config".into(), config_path.into_os_string()],
            &dir.path().join("containerd.log"),
        );
        let mut c = Containerd { daemon, dir };
        let probe = c.ctr(&["version"]).timeout(Duration::from_secs(10));
        c.daemon
            .wait_until("answering on its socket", Duration::from_secs(30), || {
                probe.run().success()
            });
        c
    }

    fn ctr(&self, args: &[&str]) -> shoal_tests::process::Cmd {
        cmd("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", "shoal-e2e"])
            .args(args)
            .timeout(Duration::from_secs(180))
    }
}

pub fn containerd_mirror(cluster: &Local) {
    let work = tempfile::tempdir().unwrap();
    let manifest = push_one_layer(cluster, work.path(), "containerd", 6);

    let containerd = Containerd::start();
    // A registry name that resolves nowhere: the pull can only succeed through the mirror.
    let registry = "registry.shoal.invalid";
    let via = agent(1);
    let hosts = work.path().join("hosts");
    std::fs::create_dir_all(hosts.join(registry)).unwrap();
    std::fs::write(
        hosts.join(registry).join("hosts.toml"),
        format!(
            "server = \"https://{registry}\"\n\n[host.\"http://{via}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    let image = format!("{registry}/e2e/containerd:v1");
    let out = containerd
        .ctr(&["images", "pull", "--snapshotter", "native", "--http-dump"])
        .arg("--hosts-dir")
        .arg(&hosts)
        .arg(&image)
        .run();
    let printed = format!("{}\n{}", out.stdout, out.stderr);
    assert!(out.success(), "ctr images pull failed:\n{printed}");
    assert!(
        printed.contains(&format!("?ns={registry}")),
        "containerd did not ask the agent with ns={registry}:\n{printed}"
    );
    let listed = containerd.ctr(&["images", "ls"]).ok();
    let digest = Digest::sha256_of(&manifest).to_string();
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&image) && l.contains(&digest)),
        "{image} is not listed with {digest}:\n{listed}"
    );
    drop(containerd);
}
