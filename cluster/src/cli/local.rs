//! `up`, `status` and `down` of the local cluster: the fixed ports of
//! [`shoal_cluster::spec::local`], in the directory the command names.

use std::path::Path;

use shoal_cluster::spec::local::{
    AGENT_HTTP_BASE, AGENT_PEER_BASE, DEFAULT_AGENTS, MAX_AGENTS, ORIGIN_ADDRS, PROXY_PORT, TRACKER,
};
use shoal_cluster::{Bins, Cluster, ClusterDir, LaunchError, PROXY_USER, Plan, Rate, Spec};

use super::{Ctx, Exit, Outcome, env_secs, fail, say};

/// `up [--agents N] [--rate R]`: starts the cluster and returns with it running.
pub fn up(ctx: &Ctx, args: &[String]) -> Outcome {
    let mut agents = DEFAULT_AGENTS.to_string();
    let mut rate = Rate::unlimited();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
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
            other => {
                return fail(format!(
                    "up: unknown argument '{other}' (up [--agents N] [--rate BYTES_PER_S])"
                ));
            }
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
    start(ctx, agents, rate)
}

fn start(ctx: &Ctx, agents: usize, rate: Rate) -> Outcome {
    let dir = &ctx.dir;
    let running = dir.running_names();
    if !running.is_empty() {
        let same = dir
            .read_state()
            .is_some_and(|s| s.agents == agents && s.rate == rate)
            && sorted(running.clone()) == sorted(Plan::local_names(agents));
        if same {
            say(format!("already running in {}", dir.path().display()));
            print_endpoints(ctx, agents);
            return Ok(());
        }
        return fail(format!(
            "a different cluster (or part of one) runs from {}: {} - run '{} down' first",
            dir.path().display(),
            running.join(" "),
            ctx.me
        ));
    }

    let mut spec = Spec::local(agents, rate);
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
        "starting {} origins, the tracker, the proxy and {agents} agent{} in {}",
        ORIGIN_ADDRS.len(),
        if agents == 1 { "" } else { "s" },
        dir.path().display()
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
    print_endpoints(ctx, agents);
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

pub fn print_endpoints(ctx: &Ctx, agents: usize) {
    let dir = ctx.dir.path().display();
    println!();
    println!(
        "  login:   docker login localhost:{PROXY_PORT} -u {PROXY_USER} --password-stdin < {}",
        secret(ctx, "proxy-password")
    );
    println!(
        "  push:    docker push localhost:{PROXY_PORT}/app:tag        (proxy, http://127.0.0.1:{PROXY_PORT})"
    );
    for i in 1..=agents {
        println!(
            "  pull:    docker pull localhost:{}/app:tag        (agent-{i}, peer port {})",
            usize::from(AGENT_HTTP_BASE) + i,
            usize::from(AGENT_PEER_BASE) + i
        );
    }
    let origins: Vec<String> = ORIGIN_ADDRS.iter().map(|a| format!("http://{a}")).collect();
    println!("  origins: {}", origins.join(", "));
    println!("  tracker: http://{TRACKER}");
    println!("  every part serves /health, /ready and /metrics on its HTTP port");
    println!(
        "  secrets: {dir}/secrets/ (write-token, read-token, metainfo-key.pem, proxy-password; mode 0600)"
    );
    println!(
        "  files:   {dir}/{{config,data,logs}}/   status: {0} status   stop: {0} down",
        ctx.me
    );
    println!();
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
    println!(
        "{:<10} {:<8} {:<8} {:<22} LOG",
        "NAME", "PID", "STATE", "HTTP"
    );
    for name in &names {
        let addr = local_addr(name);
        let (pid, state) = match dir.live_pid(name) {
            Some(pid) if shoal_cluster::http::ready(&addr, std::time::Duration::from_secs(2)) => {
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
