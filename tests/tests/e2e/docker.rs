//! docker: a dockerd of the test's own pushes an image through the proxy and pulls and runs
//! it through every agent.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use shoal_cluster::PROXY_USER;
use shoal_cluster::spec::local::{PROXY, agent};
use shoal_tests::data::{fnv1a64, noise};
use shoal_tests::oci::{Entry, tar};
use shoal_tests::process::{Daemon, Signal, cmd, require, signal};

use super::{Local, MIB, swarm_bytes};

/// A dockerd of the test's own: nothing it does touches the machine's docker, if any.
struct Docker {
    daemon: Daemon,
    dir: tempfile::TempDir,
    sock: String,
}

impl Docker {
    fn start() -> Docker {
        require("dockerd", "docker.io");
        require("docker", "docker.io");
        // Unix socket paths are short: keep the sandbox near the root of /tmp.
        let dir = tempfile::Builder::new()
            .prefix("shoal-dockerd.")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        std::fs::create_dir_all(d.join("client")).unwrap();
        let sock = format!("unix://{}", d.join("docker.sock").display());
        let arg = |s: &str| OsString::from(s);
        let path = |p: &str| d.join(p).into_os_string();
        let args = vec![
            arg("--storage-driver=vfs"),
            arg("--iptables=false"),
            arg("--ip6tables=false"),
            arg("--bridge=none"),
            arg("--config-file"),
            path("daemon.json"),
            arg("--data-root"),
            path("data"),
            arg("--exec-root"),
            path("exec"),
            arg("--pidfile"),
            path("docker.pid"),
            arg("-H"),
            arg(&sock),
        ];
        let daemon = Daemon::spawn("dockerd", "dockerd", &args, &d.join("dockerd.log"));
        let mut docker = Docker { daemon, dir, sock };
        let probe = docker
            .cli(&["version", "--format", "{{.Server.Version}}"])
            .timeout(Duration::from_secs(10));
        docker
            .daemon
            .wait_until("answering on its socket", Duration::from_secs(60), || {
                probe.run().success()
            });
        docker
    }

    fn cli(&self, args: &[&str]) -> shoal_tests::process::Cmd {
        cmd("docker")
            .args(args)
            .env("DOCKER_HOST", &self.sock)
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .timeout(Duration::from_secs(300))
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.daemon.stop(Duration::from_secs(30));
        // dockerd stops the containerd it started; should it have been killed instead, that
        // containerd is ended here by the pid it recorded.
        let pidfile = self.dir.path().join("exec/containerd/containerd.pid");
        let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c).contains(&*self.dir.path().to_string_lossy())
        });
        if ours {
            signal(pid, Signal::KILL);
        }
    }
}

/// A program that prints the size and checksum of /data/payload: `docker run` shows that
/// the image's content arrived whole.
const PROGRAM: &str = r#"
#include <stdio.h>
int main(void) {
    FILE *f = fopen("/data/payload", "rb");
    if (!f) { perror("/data/payload"); return 1; }
    unsigned long long h = 0xcbf29ce484222325ULL, n = 0;
    static unsigned char buf[65536];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < r; i++) { h ^= buf[i]; h *= 0x100000001b3ULL; }
        n += r;
    }
    printf("shoal e2e: %llu bytes, fnv1a64 %016llx\n", n, h);
    return 0;
}
"#;

fn static_program(dir: &Path) -> Vec<u8> {
    require("gcc", "gcc");
    let src = dir.join("payload-check.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let bin = dir.join("payload-check");
    let o = cmd("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .run();
    assert!(
        o.success(),
        "gcc -static could not build the image's program (the static C library is in the \
         Debian package libc6-dev, which tests/install-deps.sh installs):\n{}",
        o.stderr
    );
    std::fs::read(&bin).unwrap()
}

pub fn docker(cluster: &Local) {
    let docker = Docker::start();
    let work = tempfile::tempdir().unwrap();
    let program = static_program(work.path());
    let payload = noise(1, 40 << 20);
    let payload_len = payload.len();
    let expected = format!(
        "shoal e2e: {} bytes, fnv1a64 {:016x}",
        payload.len(),
        fnv1a64(&payload)
    );
    let rootfs = tar(&[
        Entry::executable("payload-check", &program),
        Entry::Dir("data"),
        Entry::file("data/payload", &payload),
    ]);
    drop(payload);
    let tarball = work.path().join("rootfs.tar");
    std::fs::write(&tarball, &rootfs).unwrap();
    drop(rootfs);

    let pushed = format!("{PROXY}/e2e/docker:v1");
    docker
        .cli(&["import", "--change", r#"CMD ["/payload-check"]"#])
        .arg(&tarball)
        .arg(&pushed)
        .ok();
    // Without logging in, the proxy refuses the push.
    let refused = docker.cli(&["push", &pushed]).run();
    assert!(
        !refused.success(),
        "a push without logging in went through:\n{}",
        refused.stdout
    );
    let said = format!("{}{}", refused.stdout, refused.stderr).to_lowercase();
    assert!(
        said.contains("unauthorized")
            || said.contains("authentication required")
            || said.contains("no basic auth credentials"),
        "the refused push does not say it needs a login:\n{said}"
    );
    docker
        .cli(&["login", PROXY, "-u", PROXY_USER, "--password-stdin"])
        .stdin_file(&cluster.secret_path("proxy-password"))
        .ok();
    let out = docker.cli(&["push", &pushed]).ok();
    let digest = out
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("docker push printed no digest:\n{out}"))
        .to_owned();
    docker.cli(&["rmi", &pushed]).ok();
    let left = docker.cli(&["images", "-q"]).ok();
    assert!(left.trim().is_empty(), "the image is still there: {left}");

    for i in 1..=cluster.agents() {
        let pulled = format!("{}/e2e/docker:v1", agent(i));
        let before = swarm_bytes(i);
        let out = docker.cli(&["pull", &pulled]).ok();
        let after = swarm_bytes(i);
        let (from_peers, from_origins) = (after.0 - before.0, after.1 - before.1);
        eprintln!(
            "agent-{i}: {:.1} MiB from peers, {:.1} MiB from origins",
            from_peers / MIB,
            from_origins / MIB
        );
        // The 40 MiB layer came through the swarm, and once one agent had it, mostly from
        // that agent rather than the origins.
        assert!(
            from_peers + from_origins >= payload_len as f64,
            "agent-{i} took only {:.1} MiB through the swarm",
            (from_peers + from_origins) / MIB
        );
        if i > 1 {
            assert!(
                from_peers > from_origins,
                "agent-{i} took {:.1} MiB from origins and only {:.1} MiB from peers that had it",
                from_origins / MIB,
                from_peers / MIB
            );
        }
        assert!(
            out.contains(&format!("Digest: {digest}")),
            "agent-{i} served another manifest than the one pushed ({digest}):\n{out}"
        );
        let ran = docker
            .cli(&["run", "--rm", "--network", "none", &pulled])
            .ok();
        assert_eq!(ran.trim(), expected, "the image pulled through agent-{i}");
        // The next agent must serve every layer again, not find them here.
        docker.cli(&["rmi", &pulled]).ok();
    }
}
