//! `swarm-bench`: one blob to N agents at once through the swarm, against one server and
//! against the physical bound, on real processes.
//!
//! ```text
//! swarm-bench [--agents 16] [--size 128MiB] [--rate 16MiB/s] [--tls] [--json]
//! swarm-bench --compare-tls [--rounds 3] [--agents 16] [--size 128MiB] [--rate 16MiB/s]
//! ```
//!
//! Two runs, each on a fresh cluster of release binaries on 127.0.0.1, every host capped at
//! `--rate` for egress and ingress by Shoal's own limiter (`peer.egress`/`peer.ingress` on
//! origins and agents alike):
//!
//! - the swarm: `--origins` origins each holding the blob, a tracker, N agents;
//! - the one-server baseline: one origin and N agents without a tracker, so the agents'
//!   only peer is that origin and every byte comes from it, under the same cap.
//!
//! In each, a random blob of `--size` is uploaded through the origin API, then every agent
//! is asked for it at the same moment (`GET /v2/bench/blobs/<digest>`, every body read and
//! counted, the first hashed against the digest) and the time each finishes is recorded,
//! while the agents' received bytes are sampled every `--sample-every` seconds. Printed:
//! the pull times against the bound, the origins' egress, CPU and peak memory by kind of
//! process, and when all agents together had 10/50/90/100 % of their bytes. With `--json`
//! the last line of output is one JSON object with the figures.
//!
//! `--tls` runs the parts over TLS (HTTPS between them, the peer protocol over mutually
//! authenticated TLS 1.3, certificates from a CA made for the run). `--compare-tls` runs
//! only the swarm, in plain and over TLS one after the other (`--rounds` times, alternating),
//! and prints for each mode the completion p50 and max and the agents' CPU seconds per GiB
//! of pieces they received, with what TLS adds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use shoal_cluster::{Bins, Cluster, Member, Rate, Spec};
use shoal_core::telemetry::scrape::metric_sum;
use shoal_core::units::{ByteRate, ByteSize};
use shoal_tests::bench::blob::{BlobFile, fresh_seed, random_blob};
use shoal_tests::bench::http::{self, Fetch};
use shoal_tests::bench::stats::{bound_s, percentile, time_to_share};
use shoal_tests::bench::sys::{CpuSnapshot, Machine, load_average, memory};
use shoal_tests::bench::workdir::WorkDir;

#[derive(Debug, Parser)]
#[command(
    name = "swarm-bench",
    about = "One blob to N agents at once: the swarm against one server and the bound"
)]
struct Args {
    /// Agents that download the blob together.
    #[arg(long, default_value_t = 16)]
    agents: usize,
    /// Blob size (128MiB, 1GiB, …).
    #[arg(long, default_value = "128MiB")]
    size: ByteSize,
    /// Upload and download cap of every host, origins and agents (16MiB/s, …).
    #[arg(long, default_value = "16MiB/s")]
    rate: ByteRate,
    /// Origins in the swarm run, each holding the blob. The baseline has one.
    #[arg(long, default_value_t = 3)]
    origins: usize,
    /// Skip the one-server baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Run the parts over TLS.
    #[arg(long)]
    tls: bool,
    /// Run the swarm alone, in plain and over TLS, and compare completion and agent CPU.
    #[arg(long, conflicts_with = "tls")]
    compare_tls: bool,
    /// With --compare-tls: how many times to run each mode (alternating plain and TLS).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Where the parts' release binaries are (default: $SHOAL_BIN_DIR, this program's
    /// directory if it is a release build, or $CARGO_TARGET_DIR/release).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Work directory (default: a new one under the system's temporary directory). It is
    /// removed at the end; after a failure only its configs and logs are left.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the work directory, data included.
    #[arg(long)]
    keep: bool,
    /// Seconds each run's downloads may take together (default: three times the
    /// one-server time, plus two minutes).
    #[arg(long)]
    timeout: Option<f64>,
    /// The processes' log filter (their logs are in the work directory's `*/logs/`).
    #[arg(long, default_value = "info", value_name = "FILTER")]
    log: String,
    /// Seconds between samples of the bytes all agents together have received, to show
    /// how the pulls ramp up and tail off.
    #[arg(long, default_value_t = 0.5)]
    sample_every: f64,
    /// End with one line of JSON.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
struct Run {
    fetches: Vec<Fetch>,
    /// (seconds since the pulls began, piece bytes all agents had received since then, blob
    /// bytes all clients had received from their agents).
    timeline: Vec<(f64, f64, f64)>,
    /// Blob bytes the origins sent while the agents downloaded (both protocols).
    origin_sent: f64,
    /// Piece bytes the agents received from each other, and from origins.
    peer_bytes: f64,
    from_origins: f64,
    /// CPU seconds by role over the downloads, and the machine's busy share.
    cpu: BTreeMap<String, f64>,
    busy: f64,
    /// Starting the cluster and uploading, before the downloads.
    setup_s: f64,
    /// Processes by role: how many, and the highest peak resident memory (VmHWM) of one.
    procs: BTreeMap<String, (usize, u64)>,
    /// The 1-minute load average when the downloads ended.
    load: f64,
}

impl Run {
    fn times(&self) -> Vec<f64> {
        self.fetches.iter().map(|f| f.done_s).collect()
    }

    fn first_bytes(&self) -> Vec<f64> {
        self.fetches.iter().map(|f| f.first_byte_s).collect()
    }

    fn wall(&self) -> f64 {
        self.times().into_iter().fold(0.0, f64::max)
    }

    fn json(&self) -> serde_json::Value {
        let t = self.times();
        json!({
            "times_s": t.iter().map(|x| round(*x)).collect::<Vec<_>>(),
            "p50_s": round(percentile(&t, 50.0)),
            "p90_s": round(percentile(&t, 90.0)),
            "max_s": round(percentile(&t, 100.0)),
            "min_s": round(percentile(&t, 0.0)),
            "first_byte_p50_s": round(percentile(&self.first_bytes(), 50.0)),
            "origin_egress_bytes": self.origin_sent as u64,
            "peer_bytes": self.peer_bytes as u64,
            "agent_bytes_from_origins": self.from_origins as u64,
            "cpu_seconds": self.cpu.iter().map(|(k, v)| (k.clone(), json!(round(*v)))).collect::<serde_json::Map<_, _>>(),
            "machine_busy_share": round(self.busy),
            "peak_rss_bytes": self.procs.iter().map(|(k, (_, rss))| (k.clone(), json!(rss))).collect::<serde_json::Map<_, _>>(),
            "processes": self.procs.iter().map(|(k, (n, _))| (k.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "load_average_1m": self.load,
            "setup_s": round(self.setup_s),
            "ingress_timeline": self.timeline.iter().map(|(t, b, _)| json!([t, *b as u64])).collect::<Vec<_>>(),
            "client_timeline": self.timeline.iter().map(|(t, _, c)| json!([t, *c as u64])).collect::<Vec<_>>(),
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.agents == 0 || args.size.bytes() == 0 || args.rate.per_second().is_none() {
        eprintln!("swarm-bench: --agents, --size and --rate must be more than 0");
        return ExitCode::from(64);
    }
    if args.origins == 0 {
        eprintln!("swarm-bench: --origins must be at least 1");
        return ExitCode::from(64);
    }
    if args.compare_tls {
        if args.rounds == 0 {
            eprintln!("swarm-bench: --rounds must be at least 1");
            return ExitCode::from(64);
        }
        return shoal_tests::bench::main_until_signal("swarm-bench", compare_tls(&args));
    }
    shoal_tests::bench::main_until_signal("swarm-bench", bench(&args))
}

/// The swarm's spec for `args`, on free ports.
fn swarm_spec(args: &Args, limit: Duration) -> Spec {
    let f = args.size.bytes();
    Spec {
        replicas: args.origins,
        proxy: false,
        rate: Rate::per_second(args.rate.per_second().unwrap_or(1)),
        cache_size: ByteSize(f.saturating_mul(2).max(1 << 30)),
        // A starved pull is a figure here, not a failure: it may wait as long as the run.
        stall_timeout: Some(Duration::from_secs(limit.as_secs().max(120))),
        log: args.log.clone(),
        tls: args.tls,
        ..Spec::on_free_ports(args.origins, args.agents)
    }
}

/// The swarm in plain and over TLS, `--rounds` times each, alternating.
async fn compare_tls(args: &Args) -> anyhow::Result<()> {
    let machine = Machine::read();
    let bins = Bins::find(args.bin_dir.clone(), true)?;
    let mut work = WorkDir::new(args.dir.clone(), "swarm-bench", args.keep)?;
    let (n, f) = (args.agents, args.size.bytes());
    let r = args.rate.per_second().unwrap_or(1) as f64;
    println!(
        "swarm-bench --compare-tls: {n} agents, {} blob, {} per host, {} round(s)",
        args.size, args.rate, args.rounds
    );
    println!("machine: {machine}");
    println!("binaries: {}", bins.dir().display());
    let blob = random_blob(&work.path().join("blob.bin"), f, fresh_seed())?;
    let limit = Duration::from_secs_f64(
        args.timeout
            .unwrap_or(3.0 * n as f64 * f as f64 / r + 120.0),
    );
    let mut figures: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=args.rounds {
        for (i, tls) in [false, true].into_iter().enumerate() {
            let mode = if tls { "tls" } else { "plain" };
            let spec = Spec {
                tls,
                ..swarm_spec(args, limit)
            };
            println!(
                "\n== round {round}, {mode}: {} origins, a tracker, {n} agents",
                args.origins
            );
            let dir = work.path().join(format!("{mode}-{round}"));
            let run = run(&bins, &dir, &spec, &blob, limit, args.sample_every).await?;
            report(mode, &run, n as f64 * f as f64);
            let fig = Figures::of(&run);
            println!("{mode}: {fig}");
            figures[i].push(fig);
        }
    }
    let [plain, tls] = figures.map(|runs| Figures::median(&runs));
    println!(
        "\n== plain against TLS (median of {} round(s))",
        args.rounds
    );
    println!("plain: {plain}");
    println!("tls:   {tls}");
    let more = |a: f64, b: f64| if a > 0.0 { 100.0 * (b / a - 1.0) } else { 0.0 };
    let (cpu, p50, max) = (
        more(plain.cpu_per_gib, tls.cpu_per_gib),
        more(plain.p50, tls.p50),
        more(plain.max, tls.max),
    );
    println!(
        "TLS adds {cpu:+.1}% agent CPU per GiB, {p50:+.1}% to the p50 completion, {max:+.1}% to the max"
    );
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("  agent CPU <= +10%: {}", mark(cpu <= 10.0));
    println!("  completion (max) within 3%: {}", mark(max <= 3.0));
    if args.json {
        let out = json!({
            "agents": n,
            "size_bytes": f,
            "rate_bytes_per_s": r as u64,
            "rounds": args.rounds,
            "plain": plain.json(),
            "tls": tls.json(),
            "tls_agent_cpu_more_pct": round(cpu),
            "tls_p50_more_pct": round(p50),
            "tls_max_more_pct": round(max),
            "machine": machine.to_json(),
        });
        println!("{out}");
    }
    work.succeeded();
    Ok(())
}

/// What the TLS comparison looks at in one run.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    p50: f64,
    max: f64,
    /// CPU seconds of all agents together during the pulls, per GiB of piece bytes they
    /// received (from peers and origins).
    cpu_per_gib: f64,
    agent_cpu: f64,
    gib: f64,
}

impl Figures {
    fn of(run: &Run) -> Figures {
        let t = run.times();
        let gib = (run.peer_bytes + run.from_origins) / (1u64 << 30) as f64;
        let agent_cpu = run.cpu.get("agent").copied().unwrap_or(0.0);
        Figures {
            p50: percentile(&t, 50.0),
            max: percentile(&t, 100.0),
            cpu_per_gib: if gib > 0.0 { agent_cpu / gib } else { 0.0 },
            agent_cpu,
            gib,
        }
    }

    /// Each figure's median over `runs`.
    fn median(runs: &[Figures]) -> Figures {
        let m = |f: fn(&Figures) -> f64| percentile(&runs.iter().map(f).collect::<Vec<_>>(), 50.0);
        Figures {
            p50: m(|f| f.p50),
            max: m(|f| f.max),
            cpu_per_gib: m(|f| f.cpu_per_gib),
            agent_cpu: m(|f| f.agent_cpu),
            gib: m(|f| f.gib),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "p50_s": round(self.p50),
            "max_s": round(self.max),
            "agent_cpu_seconds_per_gib": round(self.cpu_per_gib),
            "agent_cpu_seconds": round(self.agent_cpu),
            "agent_gib_received": round(self.gib),
        })
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "completion p50 {:.2}s max {:.2}s; agents {:.1} CPU-s for {:.2} GiB received: {:.2} CPU-s/GiB",
            self.p50, self.max, self.agent_cpu, self.gib, self.cpu_per_gib
        )
    }
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let machine = Machine::read();
    let bins = Bins::find(args.bin_dir.clone(), true)?;
    let mut work = WorkDir::new(args.dir.clone(), "swarm-bench", args.keep)?;
    let n = args.agents;
    let f = args.size.bytes();
    let r = args.rate.per_second().unwrap_or(1) as f64;
    println!(
        "swarm-bench: {n} agents, {} blob, {} per host{}",
        args.size,
        args.rate,
        if args.tls { ", over TLS" } else { "" }
    );
    println!("machine: {machine}");
    println!("binaries: {}", bins.dir().display());
    println!("work directory: {}", work.path().display());

    let blob = random_blob(&work.path().join("blob.bin"), f, fresh_seed())?;
    let one_server_s = n as f64 * f as f64 / r;
    let limit = Duration::from_secs_f64(args.timeout.unwrap_or(3.0 * one_server_s + 120.0));

    let swarm_spec = swarm_spec(args, limit);
    println!(
        "\n== swarm: {} origins, a tracker, {n} agents",
        args.origins
    );
    let swarm = run(
        &bins,
        &work.path().join("swarm"),
        &swarm_spec,
        &blob,
        limit,
        args.sample_every,
    )
    .await?;
    report("swarm", &swarm, n as f64 * f as f64);

    let baseline = if args.no_baseline {
        None
    } else {
        let spec = Spec {
            origins: 1,
            replicas: 1,
            tracker: false,
            ..swarm_spec.clone()
        };
        println!("\n== one server: one origin, no tracker, {n} agents");
        let b = run(
            &bins,
            &work.path().join("baseline"),
            &spec,
            &blob,
            limit,
            args.sample_every,
        )
        .await?;
        report("one server", &b, n as f64 * f as f64);
        Some(b)
    };

    // Origins hold the blob from the start; every agent must take in all of it.
    let u_origin = args.origins as f64 * r;
    let bound = bound_s(n, f, u_origin, r, r);
    let t = swarm.times();
    let (p50, p90, max) = (
        percentile(&t, 50.0),
        percentile(&t, 90.0),
        percentile(&t, 100.0),
    );
    let baseline_max = baseline.as_ref().map(Run::wall);
    let copies = swarm.origin_sent / f as f64;
    println!("\n== summary");
    println!(
        "bound {bound:.2}s (F/r; one server would need {one_server_s:.1}s)   swarm p50 {p50:.2}s ({:.2}x)  p90 {p90:.2}s  max {max:.2}s ({:.2}x)",
        p50 / bound,
        max / bound
    );
    if let Some(b) = baseline_max {
        println!(
            "one server: last agent at {b:.2}s; the swarm is {:.1}x faster",
            b / max
        );
    }
    println!("origins sent {copies:.2} copies of the blob during the swarm run");
    println!("targets (for 16 agents, 128MiB, 16MiB/s):");
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("  p50 <= 1.10 x bound: {}", mark(p50 <= 1.10 * bound));
    println!("  max <= 1.25 x bound: {}", mark(max <= 1.25 * bound));
    if let Some(b) = baseline_max {
        println!(
            "  swarm >= 12 x faster than one server: {}",
            mark(b / max >= 12.0)
        );
    }
    println!("  origin egress <= 1.5 x blob: {}", mark(copies <= 1.5));

    if args.json {
        let out = json!({
            "agents": n,
            "size_bytes": f,
            "rate_bytes_per_s": r as u64,
            "origins": args.origins,
            "tls": args.tls,
            "bound_s": round(bound),
            "one_server_bound_s": round(one_server_s),
            "p50_s": round(p50),
            "p90_s": round(p90),
            "max_s": round(max),
            "baseline_max_s": baseline_max.map(round),
            "baseline_p50_s": baseline.as_ref().map(|b| round(percentile(&b.times(), 50.0))),
            "speedup": baseline_max.map(|b| round(b / max)),
            "origin_egress_bytes": swarm.origin_sent as u64,
            "peer_bytes": swarm.peer_bytes as u64,
            "swarm": swarm.json(),
            "baseline": baseline.as_ref().map(Run::json),
            "machine": machine.to_json(),
            "bin_dir": bins.dir().display().to_string(),
        });
        println!("{out}");
    }
    work.succeeded();
    Ok(())
}

fn report(label: &str, run: &Run, total: f64) {
    let t = run.times();
    println!(
        "{label}: p50 {:.2}s  p90 {:.2}s  max {:.2}s  (first byte p50 {:.2}s; setup {:.1}s)",
        percentile(&t, 50.0),
        percentile(&t, 90.0),
        percentile(&t, 100.0),
        percentile(&run.first_bytes(), 50.0),
        run.setup_s,
    );
    println!(
        "{label}: origins sent {:.1} MiB, agents got {:.1} MiB from peers and {:.1} MiB from origins",
        run.origin_sent / 1048576.0,
        run.peer_bytes / 1048576.0,
        run.from_origins / 1048576.0
    );
    let per_process: Vec<String> = run
        .procs
        .iter()
        .map(|(role, (n, rss))| {
            let cpu = run.cpu.get(role).copied().unwrap_or(0.0);
            format!(
                "{n} {role} {:.1}s CPU each, peak RSS {:.0} MiB",
                cpu / *n as f64,
                *rss as f64 / 1048576.0
            )
        })
        .collect();
    println!("{label}: over the downloads: {}", per_process.join("; "));
    println!(
        "{label}: this program {:.1}s CPU; the machine was {:.0}% busy; load average {:.2}",
        run.cpu.get("bench").copied().unwrap_or(0.0),
        run.busy * 100.0,
        run.load
    );
    let shares = |series: &[(f64, f64)]| {
        [0.1, 0.5, 0.9, 0.99, 1.0]
            .iter()
            .map(|&q| {
                time_to_share(series, total, q).map_or_else(
                    || format!("{:.0}% -", q * 100.0),
                    |t| format!("{:.0}% {t:.2}s", q * 100.0),
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let agents: Vec<(f64, f64)> = run.timeline.iter().map(|&(t, a, _)| (t, a)).collect();
    let clients: Vec<(f64, f64)> = run.timeline.iter().map(|&(t, _, c)| (t, c)).collect();
    println!(
        "{label}: all agents' bytes together (sampled): {}",
        shares(&agents)
    );
    println!(
        "{label}: all clients' bytes together (sampled): {}",
        shares(&clients)
    );
}

/// Starts a cluster, uploads the blob, has every agent download it at once, and stops the
/// cluster.
async fn run(
    bins: &Bins,
    dir: &std::path::Path,
    spec: &Spec,
    blob: &BlobFile,
    limit: Duration,
    sample_every: f64,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(bins, dir, spec.clone()))?;
    // One that trusts the cluster's CA when it runs over TLS.
    let client = cluster.client()?;
    let origins: Vec<String> = cluster.origins().into_iter().map(Member::url).collect();
    let (write_token, read_token) = (
        cluster.credentials().write_token.clone(),
        cluster.credentials().read_token.clone(),
    );
    http::upload_to_origin(&client, &origins[0], &write_token, blob).await?;
    // Every owner must hold the blob before the clock starts: the bound counts them all.
    let want = spec.replicas.min(spec.origins);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut holding = 0;
        for o in &origins {
            if http::origin_holds(&client, o, &read_token, &blob.digest).await {
                holding += 1;
            }
        }
        if holding >= want {
            break;
        }
        cluster.check_all_alive("replicating the blob")?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {holding} of {want} origins hold the blob after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup_s = started.elapsed().as_secs_f64();

    let agents: Vec<String> = cluster.agents().into_iter().map(Member::url).collect();
    let before = scrape(&cluster)?;
    let cpu_before = CpuSnapshot::take(roles(&cluster));
    let path = format!("/v2/bench/blobs/{}", blob.digest);
    let addrs: Vec<String> = cluster
        .agents()
        .into_iter()
        .map(|a| a.addr.clone())
        .collect();
    let every = Duration::from_secs_f64(sample_every.max(0.05));
    let done = AtomicBool::new(false);
    let served = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let (fetched, timeline) = tokio::join!(
        async {
            let r = http::fetch_all(
                &agents,
                &path,
                (blob.digest, blob.length),
                limit,
                Arc::clone(&served),
            )
            .await;
            done.store(true, Ordering::Relaxed);
            r
        },
        async {
            let start = agent_bytes(addrs.clone()).await;
            let mut timeline = Vec::new();
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(every).await;
                let got = agent_bytes(addrs.clone()).await;
                let clients = served.load(Ordering::Relaxed) as f64;
                timeline.push((round(t0.elapsed().as_secs_f64()), got - start, clients));
            }
            timeline
        }
    );
    let cpu_after = CpuSnapshot::take(roles(&cluster));
    let load = load_average();
    let fetches = match fetched {
        Ok(f) => f,
        Err(e) => {
            cluster.check_all_alive("serving the blob")?;
            return Err(e.into());
        }
    };
    let after = scrape(&cluster)?;
    let mut procs: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (role, pid) in roles(&cluster) {
        let e = procs.entry(role.to_owned()).or_default();
        e.0 += 1;
        e.1 = e.1.max(memory(pid).map_or(0, |(hwm, _)| hwm));
    }
    tokio::task::block_in_place(|| cluster.stop());
    let (cpu, busy) = cpu_before.since(&cpu_after);

    let delta = |side: usize, family: &str, labels: &[&str]| {
        after[side]
            .iter()
            .zip(&before[side])
            .map(|(a, b)| metric_sum(a, family, labels) - metric_sum(b, family, labels))
            .sum::<f64>()
    };
    Ok(Run {
        fetches,
        timeline,
        origin_sent: delta(0, "shoal_origin_sent_bytes_total", &[]),
        peer_bytes: delta(
            1,
            "shoal_agent_peer_bytes_received_total",
            &["source=\"peer\""],
        ),
        from_origins: delta(
            1,
            "shoal_agent_peer_bytes_received_total",
            &["source=\"origin\""],
        ),
        cpu,
        busy,
        setup_s,
        procs,
        load,
    })
}

/// Every process of the cluster as (role, pid).
fn roles(cluster: &Cluster) -> Vec<(&'static str, u32)> {
    cluster
        .processes()
        .map(|(m, pid)| (m.role.as_str(), pid))
        .collect()
}

/// Piece bytes the agents at `addrs` have received in all, from peers and origins; an agent
/// that does not answer counts as 0.
async fn agent_bytes(addrs: Vec<String>) -> f64 {
    tokio::task::spawn_blocking(move || {
        addrs
            .iter()
            .map(|a| shoal_cluster::figures::sum_at(a, shoal_cluster::figures::AGENT_RECEIVED, &[]))
            .sum()
    })
    .await
    .unwrap_or(0.0)
}

/// `/metrics` of every origin, and of every agent.
fn scrape(cluster: &Cluster) -> anyhow::Result<[Vec<String>; 2]> {
    let get = |members: Vec<&Member>| {
        members
            .iter()
            .map(|m| {
                shoal_cluster::http::metrics(cluster.target(m))
                    .map_err(|e| anyhow::anyhow!("scraping {}/metrics: {e}", m.addr))
            })
            .collect::<anyhow::Result<Vec<String>>>()
    };
    tokio::task::block_in_place(|| Ok([get(cluster.origins())?, get(cluster.agents())?]))
}
