//! `registry-bench`: Shoal's registry side (the proxy over the origins, and an agent) next
//! to the reference registry (Debian's `docker-registry`, the distribution project's
//! registry) on this machine, in one run, with the same blobs.
//!
//! ```text
//! registry-bench [--size 1GiB] [--memory-size 2GiB] [--repeat 3] [--json]
//! ```
//!
//! It starts one origin, a tracker, the proxy and two agents (no rate caps) and the
//! reference registry with its own config on a free port, then measures:
//!
//! 1. push: a `--size` blob pushed (`POST` then one `PUT` with the bytes) into the proxy,
//!    which stores it on the origins, and into the reference registry, alternately,
//!    `--repeat` times each (a fresh blob each time);
//! 2. time to first byte, and to the last, of a `--size` blob an agent does not have yet
//!    (it comes through the swarm from the origin while the response streams);
//! 3. pull: that blob, now cached, served to a local client by the agent, by the proxy
//!    (which reads it from an origin) and by the reference registry, alternately,
//!    `--repeat` times each;
//! 4. the second agent's peak resident memory (VmHWM) while it downloads and serves a
//!    `--memory-size` blob;
//! 5. `skopeo copy` of a one-layer image of `--size` (an OCI layout written here) into the
//!    proxy and into the reference registry.
//!
//! With `--json` the last line of output is one JSON object with the figures.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use shoal_cluster::spec::free_ports;
use shoal_cluster::{Bins, Cluster, Spec};
use shoal_core::units::ByteSize;
use shoal_tests::bench::blob::{BlobFile, fresh_seed, random_blob};
use shoal_tests::bench::http::{self, Fetch};
use shoal_tests::bench::stats::percentile;
use shoal_tests::bench::sys::{Machine, load_average, memory};
use shoal_tests::bench::workdir::WorkDir;
use shoal_tests::oci::{self, Entry, Layout};
use shoal_tests::process::{Daemon, cmd};

#[derive(Debug, Parser)]
#[command(
    name = "registry-bench",
    about = "An agent and the proxy against the reference registry"
)]
struct Args {
    /// Size of the blob served and of the image copied.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Size of the blob the second agent downloads while its memory is watched.
    #[arg(long, default_value = "2GiB")]
    memory_size: ByteSize,
    /// How many times each server serves the cached blob.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// The reference registry's binary.
    #[arg(long, default_value = "/usr/bin/docker-registry", value_name = "FILE")]
    registry_bin: PathBuf,
    /// Where the Shoal binaries are (as for swarm-bench).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Work directory (default: a new one under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the work directory, data included.
    #[arg(long)]
    keep: bool,
    /// End with one line of JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.size.bytes() == 0 || args.memory_size.bytes() == 0 || args.repeat == 0 {
        eprintln!("registry-bench: --size, --memory-size and --repeat must be more than 0");
        return ExitCode::from(64);
    }
    shoal_tests::bench::main_until_signal("registry-bench", bench(&args))
}

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1048576.0 / secs
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The reference registry, running.
struct Reference {
    addr: String,
    daemon: Daemon,
}

/// Starts the reference registry with its own config, storage in `dir`, on a free port,
/// and waits until it answers `GET /v2/`.
fn start_registry(bin: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<Reference> {
    std::fs::create_dir_all(dir.join("storage"))?;
    let port = free_ports(1)?[0];
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        ),
    )?;
    let mut c = Command::new(bin);
    c.arg("serve").arg(&config);
    let mut r = Reference {
        addr: format!("127.0.0.1:{port}"),
        daemon: Daemon::start("registry", c, &dir.join("registry.log")),
    };
    let addr = r.addr.clone();
    r.daemon
        .wait_until("answering /v2/", Duration::from_secs(30), || {
            shoal_cluster::http::get(&addr, "/v2/").is_ok_and(|(status, _)| status == 200)
        });
    Ok(r)
}

/// A one-layer image in an OCI layout at `dir`, tagged `v1`: a tar of one file of `size`
/// incompressible bytes. Returns the layer's length.
fn write_image(dir: &std::path::Path, size: u64) -> anyhow::Result<u64> {
    let data = shoal_tests::data::noise(fresh_seed(), usize::try_from(size)?);
    let layer = oci::tar(&[Entry::file("data.bin", &data)]);
    drop(data);
    let mut layout = Layout::new(dir);
    let manifest = layout.image("amd64", &["/bin/true"], std::slice::from_ref(&layer));
    layout.tag("v1", oci::OCI_MANIFEST, &manifest);
    Ok(layer.len() as u64)
}

/// `skopeo copy` of the layout's `v1` image to `dest` (docker://host:port/name:tag), timed.
fn skopeo_copy(layout: &std::path::Path, dest: &str) -> f64 {
    let started = Instant::now();
    cmd("skopeo")
        .args(["copy", "--insecure-policy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(dest)
        .timeout(Duration::from_secs(900))
        .ok();
    started.elapsed().as_secs_f64()
}

/// Pushes `blob` into `registry` as `name`, timed.
async fn timed_push(
    client: &reqwest::Client,
    registry: &str,
    name: &str,
    blob: &BlobFile,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    http::push_blob(client, registry, name, blob).await?;
    Ok(t0.elapsed().as_secs_f64())
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let machine = Machine::read();
    let bins = Bins::find(args.bin_dir.clone(), true)?;
    anyhow::ensure!(
        args.registry_bin.is_file(),
        "no reference registry at {} (tests/install-deps.sh installs docker-registry)",
        args.registry_bin.display()
    );
    let mut work = WorkDir::new(args.dir.clone(), "registry-bench", args.keep)?;
    let size = args.size.bytes();
    println!(
        "registry-bench: {} blobs and image, {} blob for memory",
        args.size, args.memory_size
    );
    println!("machine: {machine}");
    println!("binaries: {}", bins.dir().display());
    println!("work directory: {}", work.path().display());

    let client = http::client()?;
    let spec = Spec {
        cache_size: ByteSize((size + args.memory_size.bytes()).saturating_mul(2)),
        stall_timeout: Some(Duration::from_secs(120)),
        ..Spec::on_free_ports(1, 2)
    };
    let mut cluster =
        tokio::task::block_in_place(|| Cluster::start(&bins, &work.path().join("shoal"), spec))?;
    let mut reg = tokio::task::block_in_place(|| {
        start_registry(&args.registry_bin, &work.path().join("registry"))
    })?;
    let registry = format!("http://{}", reg.addr);
    let write_token = cluster.credentials().write_token.clone();
    let origin = cluster.origins()[0].url();
    let agent = cluster.agents()[0].url();
    let agent2 = cluster.agents()[1].url();
    let agent2_pid = cluster
        .pid("agent-2")
        .context("the cluster has no second agent")?;
    let proxy = cluster
        .proxy()
        .map(|p| p.url())
        .context("the cluster has no proxy")?;

    println!("\nwriting the test data");
    let dir = work.path().to_owned();
    let blob = random_blob(&dir.join("blob.bin"), size, fresh_seed())?;
    let big = random_blob(&dir.join("big.bin"), args.memory_size.bytes(), fresh_seed())?;

    // 1. Pushes, a fresh blob each time so that neither side finds it already stored.
    let mut push_proxy = Vec::new();
    let mut push_registry = Vec::new();
    for i in 0..args.repeat {
        let b = random_blob(&dir.join("push.bin"), size, fresh_seed() ^ i as u64)?;
        push_proxy.push(timed_push(&client, &proxy, "bench/push", &b).await?);
        push_registry.push(timed_push(&client, &registry, "bench/push", &b).await?);
    }
    let _ = std::fs::remove_file(dir.join("push.bin"));
    let med = |v: &[f64]| percentile(v, 50.0);
    println!(
        "\n1. pushing a {} blob ({} times each), median: into the proxy {:.2}s ({:.0} MiB/s), into the reference registry {:.2}s ({:.0} MiB/s)   [load {:.2}]",
        args.size,
        args.repeat,
        med(&push_proxy),
        mib_per_s(size, med(&push_proxy)),
        med(&push_registry),
        mib_per_s(size, med(&push_registry)),
        load_average()
    );

    http::upload_to_origin(&client, &origin, &write_token, &blob).await?;
    http::upload_to_origin(&client, &origin, &write_token, &big).await?;
    http::push_blob(&client, &registry, "bench/blob", &blob).await?;

    // 2. A layer the agent does not have.
    let path = format!("/v2/bench/blob/blobs/{}", blob.digest);
    let t0 = Instant::now();
    let cold = http::timed_get(
        &client,
        &format!("{agent}{path}"),
        Some((blob.digest, blob.length)),
        t0,
    )
    .await?;
    println!(
        "\n2. a {} layer the agent does not have: headers after {:.1} ms, first byte after {:.1} ms, all of it after {:.2}s ({:.0} MiB/s)   [load {:.2}]",
        args.size,
        cold.headers_s * 1000.0,
        cold.first_byte_s * 1000.0,
        cold.done_s,
        mib_per_s(size, cold.done_s),
        load_average()
    );

    // 3. The same blob, cached, from each server in turn, so that none gets a warmer machine.
    let mut from_agent: Vec<Fetch> = Vec::new();
    let mut from_proxy: Vec<Fetch> = Vec::new();
    let mut from_registry: Vec<Fetch> = Vec::new();
    for _ in 0..args.repeat {
        for (base, out) in [
            (&agent, &mut from_agent),
            (&proxy, &mut from_proxy),
            (&registry, &mut from_registry),
        ] {
            let t0 = Instant::now();
            let f = http::timed_get(&client, &format!("{base}{path}"), None, t0).await?;
            anyhow::ensure!(f.bytes == size, "{base} sent {} bytes, not {size}", f.bytes);
            out.push(f);
        }
    }
    let secs = |v: &[Fetch]| v.iter().map(|f| f.done_s).collect::<Vec<_>>();
    let (agent_med, proxy_med, registry_med) = (
        med(&secs(&from_agent)),
        med(&secs(&from_proxy)),
        med(&secs(&from_registry)),
    );
    println!(
        "\n3. serving the stored {} blob to a local client ({} times each), median:   [load {:.2}]",
        args.size,
        args.repeat,
        load_average()
    );
    for (who, m) in [
        ("agent (cache)", agent_med),
        ("proxy (origin)", proxy_med),
        ("reference", registry_med),
    ] {
        println!("   {who:<15} {m:.3}s ({:.0} MiB/s)", mib_per_s(size, m));
    }
    let registry_hwm = memory(reg.daemon.pid()).map(|m| m.0);

    // 4. The second agent's memory while it downloads and serves the big blob.
    let before = memory(agent2_pid).context("cannot read the agent's memory")?;
    let t0 = Instant::now();
    let mem_fetch = http::timed_get(
        &client,
        &format!("{agent2}/v2/bench/big/blobs/{}", big.digest),
        Some((big.digest, big.length)),
        t0,
    )
    .await?;
    let after = memory(agent2_pid).context("cannot read the agent's memory")?;
    println!(
        "\n4. agent memory while it downloads and serves a {} blob ({:.2}s): peak resident (VmHWM) {:.1} MiB; {:.1} MiB before the request",
        args.memory_size,
        mem_fetch.done_s,
        after.0 as f64 / 1048576.0,
        before.0 as f64 / 1048576.0
    );
    if let Some(h) = registry_hwm {
        println!(
            "   (the reference registry's peak after the pushes and pulls above: {:.1} MiB)",
            h as f64 / 1048576.0
        );
    }

    // 5. skopeo copy of the image into the proxy and into the reference registry.
    let layout = dir.join("layout");
    let layer = tokio::task::block_in_place(|| write_image(&layout, size))?;
    let strip = |u: &str| u.trim_start_matches("http://").to_owned();
    let (to_proxy, to_registry) = tokio::task::block_in_place(|| {
        (
            skopeo_copy(
                &layout,
                &format!("docker://{}/bench/image:v1", strip(&proxy)),
            ),
            skopeo_copy(
                &layout,
                &format!("docker://{}/bench/image:v1", strip(&registry)),
            ),
        )
    });
    println!(
        "\n5. skopeo copy of a {} one-layer image: into the proxy {to_proxy:.2}s ({:.0} MiB/s), into the reference registry {to_registry:.2}s ({:.0} MiB/s)   [load {:.2}]",
        args.size,
        mib_per_s(layer, to_proxy),
        mib_per_s(layer, to_registry),
        load_average()
    );
    tokio::task::block_in_place(|| {
        cluster.stop();
        reg.daemon.stop(Duration::from_secs(10));
    });

    if args.json {
        let r = |v: &[f64]| v.iter().map(|x| round(*x)).collect::<Vec<_>>();
        let out = json!({
            "size_bytes": size,
            "memory_size_bytes": args.memory_size.bytes(),
            "push_proxy_s": r(&push_proxy),
            "push_registry_s": r(&push_registry),
            "cold_headers_s": round(cold.headers_s),
            "cold_first_byte_s": round(cold.first_byte_s),
            "cold_done_s": round(cold.done_s),
            "pull_agent_s": r(&secs(&from_agent)),
            "pull_proxy_s": r(&secs(&from_proxy)),
            "pull_registry_s": r(&secs(&from_registry)),
            "pull_agent_median_s": round(agent_med),
            "pull_proxy_median_s": round(proxy_med),
            "pull_registry_median_s": round(registry_med),
            "agent_vmhwm_bytes": after.0,
            "agent_vmhwm_before_bytes": before.0,
            "memory_fetch_s": round(mem_fetch.done_s),
            "registry_vmhwm_bytes": registry_hwm,
            "skopeo_proxy_s": round(to_proxy),
            "skopeo_registry_s": round(to_registry),
            "load_average_1m": load_average(),
            "machine": machine.to_json(),
            "bin_dir": bins.dir().display().to_string(),
        });
        println!("{out}");
    }
    work.succeeded();
    Ok(())
}
