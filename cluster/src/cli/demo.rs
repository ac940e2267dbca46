//! `demo [--agents N] [--rate R] [--size MIB] [--tls [--proxy-tls]]`: starts the local
//! cluster (over TLS with `--tls`) if it is not running, writes a two-layer image of random bytes here (no registry is asked for
//! anything), pushes it through the proxy, pulls it through every agent at once, and prints
//! how long each pull took and where its bytes came from, read from the agents' `/metrics`.
//!
//! It pushes and pulls with skopeo when skopeo is installed (`SHOAL_DEMO_CLIENT=skopeo`), and
//! with its own plain registry requests otherwise (`SHOAL_DEMO_CLIENT=http`), which need no
//! other program.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_cluster::PROXY_USER;
use shoal_cluster::figures::{agent_piece_bytes, origins_peer_sent};
use shoal_cluster::http::Target;
use shoal_cluster::image::{DemoImage, OCI_MANIFEST, write_demo_image};
use shoal_cluster::registry::{Registry, client};
use shoal_cluster::spec::local::{ORIGIN_ADDRS, PROXY, agent};
use shoal_cluster::tls::Pki;
use shoal_core::Digest;

use super::{Ctx, Exit, Outcome, env_secs, fail, local, say};

const REPO: &str = "demo/app";
const TAG: &str = "v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Skopeo,
    Http,
}

impl Client {
    fn choose() -> Result<Client, Exit> {
        let v = std::env::var("SHOAL_DEMO_CLIENT").unwrap_or_else(|_| "auto".into());
        match v.as_str() {
            "auto" => Ok(if on_path("skopeo") {
                Client::Skopeo
            } else {
                Client::Http
            }),
            "skopeo" if on_path("skopeo") => Ok(Client::Skopeo),
            "skopeo" => fail(
                "SHOAL_DEMO_CLIENT=skopeo, but skopeo is not installed (Debian: apt-get install \
                 skopeo); without it the demo makes plain registry requests",
            ),
            // `curl` is what the plain requests were made with once.
            "http" | "curl" => Ok(Client::Http),
            other => fail(format!(
                "SHOAL_DEMO_CLIENT must be auto, skopeo or http, not '{other}'"
            )),
        }
    }

    fn says(self) -> &'static str {
        match self {
            Client::Skopeo => "with skopeo",
            Client::Http => "with plain registry requests",
        }
    }
}

fn on_path(program: &str) -> bool {
    shoal_cluster::bins::which(program).is_some()
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1048576.0)
}

fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{}%", (100.0 * a / b) as i64)
    } else {
        "-".into()
    }
}

pub fn demo(ctx: &Ctx, args: &[String]) -> Outcome {
    let mut size: u64 = 32;
    let mut up_args: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size" => match it.next().and_then(|n| n.parse::<u64>().ok()) {
                Some(n) if n >= 2 => size = n,
                _ => return fail("--size takes a whole number of MiB, at least 2"),
            },
            "--tls" | "--proxy-tls" => up_args.push(a.clone()),
            "--agents" | "--rate" => match it.next() {
                Some(v) => up_args.extend([a.clone(), v.clone()]),
                None => return fail(format!("{a} needs a value")),
            },
            other => {
                return fail(format!(
                    "demo: unknown argument '{other}' (demo [--agents N] [--rate BYTES_PER_S] [--size MIB] [--tls [--proxy-tls]])"
                ));
            }
        }
    }
    let dir = &ctx.dir;
    if dir.running_names().is_empty() {
        local::up(ctx, &up_args)?;
    } else if !up_args.is_empty() {
        say(format!(
            "a cluster already runs from {}: using it as it is (down first to change its shape)",
            dir.path().display()
        ));
    }
    let Some(state) = dir.read_state() else {
        return fail(format!("no cluster state in {}", dir.path().display()));
    };
    let agents = state.agents;
    let pki = match state.tls {
        true => Some(Pki::open(dir)?),
        false => None,
    };
    let tls = Tls {
        origins: match &pki {
            Some(p) => {
                let cfg = p.client_config()?;
                ORIGIN_ADDRS
                    .iter()
                    .map(|a| Target::https(a, cfg.clone()))
                    .collect()
            }
            None => ORIGIN_ADDRS.iter().map(|a| Target::plain(a)).collect(),
        },
        proxy: pki.filter(|_| state.proxy_tls),
    };
    if agents == 0 {
        return fail("the cluster has no agents to pull through (up --agents N)");
    }
    for i in 1..=agents {
        if dir.live_pid(&format!("agent-{i}")).is_none() {
            return fail(format!(
                "agent-{i} is not running: '{} status' tells more",
                ctx.me
            ));
        }
    }
    if dir.live_pid("proxy").is_none() {
        return fail(format!(
            "the proxy is not running: '{} status' tells more",
            ctx.me
        ));
    }
    let client = Client::choose()?;
    let timeout = env_secs("SHOAL_DEMO_TIMEOUT", 300)?;
    let tmp = tempfile::Builder::new()
        .prefix("shoal-demo.")
        .tempdir()
        .map_err(|e| Exit::Fail(format!("cannot make a temporary directory: {e}")))?;
    let interrupt = ctx.interrupt()?.clone();

    say(format!(
        "building a {size} MiB two-layer image locally (no registry is asked for anything)"
    ));
    let image = write_demo_image(&tmp.path().join("image"), size, TAG)?;
    let run = async {
        tokio::select! {
            r = push_and_pull(ctx, &image, tmp.path(), client, agents, &tls, timeout) => r,
            () = interrupt.wait() => Err(Exit::Interrupted),
        }
    };
    ctx.runtime.block_on(run)
}

/// How the demo reaches what speaks TLS: the origins (for their figures), and the proxy
/// when it serves HTTPS.
struct Tls {
    origins: Vec<Target>,
    proxy: Option<Pki>,
}

async fn push_and_pull(
    ctx: &Ctx,
    image: &DemoImage,
    tmp: &Path,
    client: Client,
    agents: usize,
    tls: &Tls,
    timeout: Duration,
) -> Outcome {
    let reference = format!("{REPO}:{TAG}");
    let password = std::fs::read_to_string(ctx.dir.secret("proxy-password"))
        .ok()
        .and_then(|p| p.lines().next().map(str::to_owned))
        .unwrap_or_default();
    say(format!(
        "pushing {reference} through the proxy ({PROXY}) {}",
        client.says()
    ));
    let t0 = Instant::now();
    match client {
        Client::Skopeo => {
            let creds = format!("{PROXY_USER}:{password}");
            let log = tmp.join("push.log");
            // skopeo trusts the cluster's CA from a directory that holds it alone.
            let verify = match &tls.proxy {
                Some(pki) => format!("--dest-cert-dir={}", pki.trust_dir().display()),
                None => "--dest-tls-verify=false".to_owned(),
            };
            let ok = skopeo(
                &[
                    "copy",
                    "--quiet",
                    "--preserve-digests",
                    &verify,
                    "--dest-creds",
                    &creds,
                    &format!("oci:{}:{TAG}", image.layout.display()),
                    &format!("docker://{PROXY}/{reference}"),
                ],
                &log,
            )
            .await;
            if !ok {
                eprint!("{}", std::fs::read_to_string(&log).unwrap_or_default());
                return fail(format!(
                    "the push through the proxy failed (proxy log: {})",
                    ctx.dir.log("proxy").display()
                ));
            }
        }
        Client::Http => push_http(image, (PROXY_USER.to_owned(), password), tls).await?,
    }
    say(format!(
        "pushed {} in {:.2} s",
        mib(image.bytes as f64),
        t0.elapsed().as_secs_f64()
    ));

    let addrs: Vec<String> = (1..=agents).map(agent).collect();
    let before: Vec<(f64, f64)> = addrs.iter().map(|a| agent_piece_bytes(a)).collect();
    let seeded0 = origins_peer_sent(&tls.origins);
    say(format!(
        "pulling {reference} through all {agents} agents at once"
    ));
    let mut set = tokio::task::JoinSet::new();
    for (i, addr) in addrs.iter().enumerate() {
        let (addr, out) = (addr.clone(), tmp.join(format!("pull-{}", i + 1)));
        let image = image.clone();
        set.spawn(async move {
            let t = Instant::now();
            let r = pull(client, &addr, &out, &image).await;
            (i, r, t.elapsed())
        });
    }
    let mut results: Vec<Option<(Result<(), String>, Duration)>> = vec![None; agents];
    let all = async {
        while let Some(Ok((i, r, took))) = set.join_next().await {
            results[i] = Some((r, took));
        }
    };
    if tokio::time::timeout(timeout, all).await.is_err() {
        say(format!(
            "pulls still running after {}s: stopping them",
            timeout.as_secs()
        ));
        // Dropping the set stops the pulls still running, skopeo and all.
        set.shutdown().await;
    }

    let mut failed = false;
    let (mut total_peer, mut total_origin) = (0.0, 0.0);
    println!();
    println!(
        "  {:<8} {:>9} {:>11} {:>20} {:>20}",
        "agent", "time", "image", "from peers", "from origins"
    );
    for (i, result) in results.into_iter().enumerate() {
        let name = format!("agent-{}", i + 1);
        match result {
            None => {
                println!("  {name:<8} did not finish within {}s", timeout.as_secs());
                failed = true;
            }
            Some((Err(why), _)) => {
                println!("  {name:<8} failed: {why}");
                failed = true;
            }
            Some((Ok(()), took)) => {
                let (peer, origin) = agent_piece_bytes(&addrs[i]);
                let (dp, dorig) = (peer - before[i].0, origin - before[i].1);
                total_peer += dp;
                total_origin += dorig;
                println!(
                    "  {name:<8} {:>7} s {:>11} {:>11} ({:>4}) {:>11} ({:>4})",
                    format!("{:.2}", took.as_secs_f64()),
                    mib(image.bytes as f64),
                    mib(dp),
                    pct(dp, dp + dorig),
                    mib(dorig),
                    pct(dorig, dp + dorig)
                );
            }
        }
    }
    let total = total_peer + total_origin;
    println!(
        "  {:<8} {:>9} {:>11} {:>11} ({:>4}) {:>11} ({:>4})",
        "all",
        "",
        "",
        mib(total_peer),
        pct(total_peer, total),
        mib(total_origin),
        pct(total_origin, total)
    );
    let seeded = origins_peer_sent(&tls.origins) - seeded0;
    println!(
        "  the origins sent {} over the peer protocol: {:.2} times the image",
        mib(seeded),
        seeded / image.bytes as f64
    );
    println!();
    if failed {
        return fail(format!(
            "the image did not arrive at every agent (logs in {}/logs/)",
            ctx.dir.path().display()
        ));
    }
    say(format!(
        "every agent has {reference}; {} of the layer bytes came from peers",
        pct(total_peer, total)
    ));
    let first = agent(1).replace("127.0.0.1", "localhost");
    say(format!(
        "try it: docker pull {first}/{reference}   (or skopeo inspect --tls-verify=false docker://{first}/{reference})"
    ));
    Ok(())
}

/// Runs skopeo with its output in `log`; true if it succeeded. Stopped (killed) if the
/// demo is stopped while it runs.
async fn skopeo(args: &[&str], log: &Path) -> bool {
    let Ok(out) = std::fs::File::create(log) else {
        return false;
    };
    let Ok(err) = out.try_clone() else {
        return false;
    };
    tokio::process::Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn push_http(image: &DemoImage, login: (String, String), tls: &Tls) -> Outcome {
    let registry = match &tls.proxy {
        Some(pki) => Registry::new(pki.reqwest()?, &format!("https://{PROXY}"), Some(login)),
        None => Registry::new(client()?, &format!("http://{PROXY}"), Some(login)),
    };
    for b in &image.blobs {
        registry
            .push_blob(REPO, &image.blob_path(&b.digest), &b.digest, b.size)
            .await
            .map_err(|e| Exit::Fail(format!("uploading blob {} failed: {e}", b.digest)))?;
    }
    let manifest = std::fs::read(image.blob_path(&image.manifest.digest))
        .map_err(|e| Exit::Fail(format!("cannot read the manifest: {e}")))?;
    registry
        .put_manifest(REPO, TAG, OCI_MANIFEST, manifest)
        .await
        .map_err(|e| Exit::Fail(format!("putting the manifest failed: {e}")))
}

/// Pulls the image through the registry at `addr`, checking the manifest's and every
/// blob's digest; the reason if it did not arrive whole.
async fn pull(client: Client, addr: &str, out: &Path, image: &DemoImage) -> Result<(), String> {
    match client {
        Client::Skopeo => {
            let log = out.with_extension("log");
            let ok = skopeo(
                &[
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    &format!("docker://{addr}/{REPO}:{TAG}"),
                    &format!("dir:{}", out.display()),
                ],
                &log,
            )
            .await;
            if !ok {
                let said = shoal_cluster::process::tail(&log, 3);
                return Err(said.lines().collect::<Vec<_>>().join(" "));
            }
            // skopeo's dir: names each blob by its hex digest.
            for b in &image.blobs {
                let path = out.join(b.digest.hex());
                if let Ok(bytes) = std::fs::read(&path)
                    && Digest::sha256_of(&bytes) != b.digest
                {
                    return Err(format!("returned a blob whose content is not {}", b.digest));
                }
            }
            Ok(())
        }
        Client::Http => {
            let client = shoal_cluster::registry::client().map_err(|e| format!("{addr}: {e}"))?;
            let registry = Registry::new(client, &format!("http://{addr}"), None);
            let manifest = registry
                .manifest(REPO, TAG, OCI_MANIFEST)
                .await
                .map_err(|e| e.to_string())?;
            if Digest::sha256_of(&manifest) != image.manifest.digest {
                return Err(format!(
                    "served another manifest than {}",
                    image.manifest.digest
                ));
            }
            for b in &image.blobs {
                registry
                    .pull_blob(REPO, &b.digest)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}
