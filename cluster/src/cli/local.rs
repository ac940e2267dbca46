//! `up`, `status` and `down` of the local cluster: the fixed ports of
//! [`shoal_cluster::spec::local`], in the directory the command names.

use std::path::Path;

use shoal_cluster::http::Target;
use shoal_cluster::spec::local::{
    AGENT_HTTP_BASE, AGENT_PEER_BASE, DEFAULT_AGENTS, MAX_AGENTS, ORIGIN_ADDRS, PROXY_PORT, TRACKER,
};
use shoal_cluster::tls::Pki;
use shoal_cluster::{Bins, Cluster, ClusterDir, LaunchError, PROXY_USER, Plan, Rate, Spec};

use super::{Ctx, Exit, Outcome, env_secs, fail, say};

/// What `up` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    agents: usize,
    rate: Rate,
    tls: bool,
    proxy_tls: bool,
}

const UP_USAGE: &str = "up [--agents N] [--rate BYTES_PER_S] [--tls [--proxy-tls]]";

/// `up [--agents N] [--rate R] [--tls [--proxy-tls]]`: starts the cluster and returns with
/// it running.
pub fn up(ctx: &Ctx, args: &[String]) -> Outcome {
    let mut agents = DEFAULT_AGENTS.to_string();
    let mut rate = Rate::unlimited();
    let (mut tls, mut proxy_tls) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tls" => tls = true,
            "--proxy-tls" => proxy_tls = true,
            "--agents" => match it.next() {
                Some(n) => agents = n.clone(),
                None => return fail("--agents needs a number"),
            },
            "--rate" => match it.next() {
                Some(r) => match Rate::parse(r) {
                    Some(r) => rate = r,
                    None => {
                        return fail(format!(
                            "--rate takes bytes per second, such as 10000000 or 10MiB, not '{r}'"
                        ));
                    }
                },
                None => return fail("--rate needs a number of bytes per second"),
            },
            other => return fail(format!("up: unknown argument '{other}' ({UP_USAGE})")),
        }
    }
    let agents = match agents.parse::<usize>() {
        Ok(n) if n <= MAX_AGENTS && agents.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => {
            return fail(format!(
                "--agents takes a number from 0 to {MAX_AGENTS}, not '{agents}'"
            ));
        }
    };
    if proxy_tls && !tls {
        return fail(
            "--proxy-tls serves the proxy over HTTPS in a cluster that runs over TLS: add --tls",
        );
    }
    start(
        ctx,
        Shape {
            agents,
            rate,
            tls,
            proxy_tls,
        },
    )
}

fn start(ctx: &Ctx, shape: Shape) -> Outcome {
    let dir = &ctx.dir;
    let agents = shape.agents;
    let running = dir.running_names();
    if !running.is_empty() {
        let same = dir.read_state().is_some_and(|s| {
            Shape {
                agents: s.agents,
                rate: s.rate,
                tls: s.tls,
                proxy_tls: s.proxy_tls,
            } == shape
        }) && sorted(running.clone()) == sorted(Plan::local_names(agents));
        if same {
            say(format!("already running in {}", dir.path().display()));
            print_endpoints(ctx, &shape);
            return Ok(());
        }
        return fail(format!(
            "a different cluster (or part of one) runs from {}: {} - run '{} down' first",
            dir.path().display(),
            running.join(" "),
            ctx.me
        ));
    }

    let mut spec = Spec::local(agents, shape.rate.clone());
    spec.tls = shape.tls;
    spec.proxy_tls = shape.proxy_tls;
    spec.log = std::env::var("SHOAL_DEVCLUSTER_LOG").unwrap_or_else(|_| "info".into());
    spec.ready_timeout = env_secs("SHOAL_DEVCLUSTER_TIMEOUT", 60)?;
    let busy = Plan::new(&spec)?.busy_ports();
    if !busy.is_empty() {
        let busy: Vec<String> = busy.iter().map(|(p, n)| format!("{p} ({n})")).collect();
        let hint = match &ctx.default_dir {
            Some(usual)
                if usual != dir.path() && !ClusterDir::new(usual).running_names().is_empty() =>
            {
                format!(
                    "the cluster in {0} runs: stop it with 'SHOAL_DEVCLUSTER_DIR={0} {1} down'",
                    usual.display(),
                    ctx.me
                )
            }
            _ => "is a cluster from another directory running?".to_owned(),
        };
        return fail(format!("ports already in use: {}; {hint}", busy.join(" ")));
    }

    let bins = match &ctx.bin_dir {
        Some(d) => Bins::at(d),
        None => Bins::find(None, false)?,
    };
    // The directory itself as the user's umask makes it; everything in it private (the
    // configs and secrets/ hold credentials, and the parts inherit the mask).
    std::fs::create_dir_all(dir.path())
        .map_err(|e| Exit::Fail(format!("cannot create {}: {e}", dir.path().display())))?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let mut cluster = Cluster::prepare(&bins, dir.path(), spec)?;

    let interrupt = ctx.interrupt()?;
    say(format!(
        "starting {} origins, the tracker, the proxy and {agents} agent{} in {}{}",
        ORIGIN_ADDRS.len(),
        if agents == 1 { "" } else { "s" },
        dir.path().display(),
        if shape.tls { ", over TLS" } else { "" }
    ));
    if let Err(e) = cluster.start_all(interrupt.flag()) {
        let exit = match e {
            LaunchError::Exited {
                name, log, tail, ..
            } => {
                eprintln!("---- last lines of {}:\n{tail}", log.display());
                Exit::Fail(format!(
                    "{name} exited while starting (its log: {})",
                    log.display()
                ))
            }
            e => Exit::from(e),
        };
        if let Exit::Fail(msg) = &exit {
            eprintln!("devcluster: error: {msg}");
        }
        if cluster.started_any() {
            say("stopping what was started");
            report_killed(cluster.stop());
        }
        return Err(match exit {
            Exit::Fail(_) => Exit::Said,
            other => other,
        });
    }
    cluster.detach();
    say("ready");
    print_endpoints(ctx, &shape);
    Ok(())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn report_killed(killed: Vec<(String, u32)>) {
    for (name, pid) in killed {
        say(format!(
            "{name} (pid {pid}) did not stop within {}s: killing it",
            shoal_cluster::cluster::STOP_GRACE.as_secs()
        ));
    }
}

fn secret(ctx: &Ctx, file: &str) -> String {
    ctx.dir.secret(file).display().to_string()
}

fn print_endpoints(ctx: &Ctx, shape: &Shape) {
    let dir = ctx.dir.path().display();
    let agents = shape.agents;
    let scheme = if shape.tls { "https" } else { "http" };
    let proxy_scheme = if shape.proxy_tls { "https" } else { "http" };
    println!();
    println!(
        "  login:   docker login localhost:{PROXY_PORT} -u {PROXY_USER} --password-stdin < {}",
        secret(ctx, "proxy-password")
    );
    println!(
        "  push:    docker push localhost:{PROXY_PORT}/app:tag        (proxy, {proxy_scheme}://127.0.0.1:{PROXY_PORT})"
    );
    for i in 1..=agents {
        println!(
            "  pull:    docker pull localhost:{}/app:tag        (agent-{i}, peer port {})",
            usize::from(AGENT_HTTP_BASE) + i,
            usize::from(AGENT_PEER_BASE) + i
        );
    }
    let origins: Vec<String> = ORIGIN_ADDRS
        .iter()
        .map(|a| format!("{scheme}://{a}"))
        .collect();
    println!("  origins: {}", origins.join(", "));
    println!("  tracker: {scheme}://{TRACKER}");
    println!("  every part serves /health, /ready and /metrics on its HTTP port");
    if shape.tls {
        println!(
            "  tls:     every part over TLS from the CA in {dir}/tls/ca.crt (curl --cacert); the agents' registries stay plain HTTP on loopback"
        );
    }
    if shape.proxy_tls {
        println!(
            "           the proxy too: skopeo --dest-cert-dir {dir}/tls/trust, or that ca.crt in /etc/docker/certs.d/localhost:{PROXY_PORT}/"
        );
    }
    println!(
        "  secrets: {dir}/secrets/ (write-token, read-token, metainfo-key.pem, proxy-password; mode 0600)"
    );
    println!(
        "  files:   {dir}/{{config,data,logs}}/   status: {0} status   stop: {0} down",
        ctx.me
    );
    println!();
}

/// How to ask the process `name` of a local cluster whether it can serve: its address, over
/// HTTPS when it serves that.
fn local_target(
    name: &str,
    state: Option<&shoal_cluster::dir::State>,
    pki: Option<&Pki>,
) -> Target {
    let addr = local_addr(name);
    let https = state.is_some_and(|s| {
        (s.tls && (name.starts_with("origin-") || name == "tracker"))
            || (s.proxy_tls && name == "proxy")
    });
    match pki.and_then(|p| p.client_config().ok()) {
        Some(cfg) if https => Target::https(&addr, cfg),
        _ => Target::plain(&addr),
    }
}

/// The address whose `/ready` tells whether the process `name` of a local cluster can serve.
fn local_addr(name: &str) -> String {
    let numbered = |prefix: &str, base: u16| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| format!("127.0.0.1:{}", usize::from(base) + n))
    };
    numbered("origin-", 9000)
        .or_else(|| numbered("agent-", AGENT_HTTP_BASE))
        .or_else(|| (name == "tracker").then(|| TRACKER.to_owned()))
        .or_else(|| (name == "proxy").then(|| format!("127.0.0.1:{PROXY_PORT}")))
        .unwrap_or_default()
}

/// `status`: every process of the cluster, its pid, whether it is ready, where its log is.
pub fn status(ctx: &Ctx, args: &[String]) -> Outcome {
    if !args.is_empty() {
        return fail("status takes no arguments");
    }
    let dir = &ctx.dir;
    let state = dir.read_state();
    let mut names: Vec<String> = state
        .as_ref()
        .map(|s| Plan::local_names(s.agents))
        .unwrap_or_default();
    for n in dir.recorded_names() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if names.is_empty() {
        say(format!("no cluster in {}", dir.path().display()));
        return Ok(());
    }
    let tls = state.as_ref().is_some_and(|s| s.tls);
    let pki = if tls { Pki::open(dir).ok() } else { None };
    println!(
        "{:<10} {:<8} {:<8} {:<22} LOG",
        "NAME", "PID", "STATE", "HTTP"
    );
    for name in &names {
        let target = local_target(name, state.as_ref(), pki.as_ref());
        let addr = target.addr.clone();
        let (pid, state) = match dir.live_pid(name) {
            Some(pid) if shoal_cluster::http::ready(target, std::time::Duration::from_secs(2)) => {
                (pid.to_string(), "ready")
            }
            Some(pid) => (pid.to_string(), "starting"),
            None => ("-".to_owned(), "stopped"),
        };
        println!(
            "{name:<10} {pid:<8} {state:<8} {addr:<22} {}",
            dir.log(name).display()
        );
    }
    match &state {
        Some(s) if s.tls => println!(
            "the parts speak TLS to each other (CA {}){}",
            dir.tls().join("ca.crt").display(),
            if s.proxy_tls {
                "; the proxy serves HTTPS"
            } else {
                "; the proxy's and the agents' registries are plain HTTP on loopback"
            }
        ),
        Some(_) => println!("the parts speak plain HTTP to each other: no TLS (up --tls)"),
        None => {}
    }
    if let Some(s) = state.filter(|s| !s.rate.is_unlimited()) {
        println!(
            "every agent's egress and ingress are capped at {} bytes/s",
            s.rate.as_str()
        );
    }
    println!(
        "configs in {0}/config/, data in {0}/data/",
        dir.path().display()
    );
    Ok(())
}

/// `down [--wipe]`: stops exactly the processes recorded in the directory, by pid.
pub fn down(ctx: &Ctx, args: &[String]) -> Outcome {
    let mut wipe = false;
    for a in args {
        match a.as_str() {
            "--wipe" => wipe = true,
            other => return fail(format!("down: unknown argument '{other}' (down [--wipe])")),
        }
    }
    let dir = &ctx.dir;
    let all = dir.recorded_names();
    if all.is_empty() {
        say(format!("nothing runs from {}", dir.path().display()));
    } else {
        let running = dir.running_names();
        if !running.is_empty() {
            say(format!("stopping {} ", running.join(" ")));
        }
        report_killed(dir.stop(&all, shoal_cluster::cluster::STOP_GRACE));
    }
    let path = dir.path();
    if wipe && path.is_dir() {
        // Only a directory a cluster was started in is deleted: a mistyped one is not.
        if !dir.looks_like_cluster() {
            return fail(format!(
                "{} does not look like a cluster directory (no cluster.env); not deleting it",
                path.display()
            ));
        }
        remove(path)?;
        say(format!("deleted {}", path.display()));
    } else if path.is_dir() {
        say(format!(
            "data and logs kept in {} (down --wipe deletes them)",
            path.display()
        ));
    }
    Ok(())
}

fn remove(path: &Path) -> Outcome {
    std::fs::remove_dir_all(path)
        .map_err(|e| Exit::Fail(format!("cannot delete {}: {e}", path.display())))
}
