//! How precisely the per-host caps hold. Prints figures; asserts nothing.
//!
//! 1. The limiter alone: several tasks share one cap and push 64 KiB chunks for a few
//!    seconds' worth of bytes; the achieved rate against the cap, and the largest amount that
//!    went in any 50 ms window against what the cap allows in 50 ms (smoothness: 1.0 is
//!    perfectly even).
//! 2. End to end over TCP on 127.0.0.1: an origin with an egress cap serves a blob to an
//!    agent, then an uncapped origin serves one to an agent with an ingress cap; the time the
//!    download took against size / cap (it includes the handshake and the final whole-blob
//!    check), and the steady rate between the first and the last piece verified.
//!
//! `cargo bench -p shoal-p2p --bench rate_cap`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus::Registry;
use shoal_core::Metainfo;
use shoal_core::store::BlobStore;
use shoal_p2p::rate::RateLimiter;
use shoal_p2p::wire::READ_CHUNK;
use shoal_p2p::{Node, NodeConfig, StaticDiscovery};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[path = "../tests/swarm/from_store.rs"]
mod from_store;
use from_store::FromStore;

const MIB: f64 = (1u64 << 20) as f64;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!("limiter alone: 4 tasks sharing one cap, 64 KiB chunks, 3 s of bytes");
        println!(
            "{:>12} {:>14} {:>9} {:>18}",
            "cap MiB/s", "achieved MiB/s", "error", "max 50ms / allowed"
        );
        for cap in [8u64 << 20, 64 << 20, 512 << 20, 2 << 30] {
            limiter_alone(cap).await;
        }
        println!();
        println!("end to end over TCP on 127.0.0.1 (origin -> agent)");
        println!(
            "{:>8} {:>10} {:>10} {:>10} {:>12} {:>9} {:>14} {:>9}",
            "cap at",
            "cap MiB/s",
            "blob MiB",
            "took s",
            "size/cap s",
            "over",
            "steady MiB/s",
            "error"
        );
        for (which, cap, size) in [
            ("egress", 16u64 << 20, 32usize << 20),
            ("egress", 64 << 20, 128 << 20),
            ("ingress", 16 << 20, 32 << 20),
            ("ingress", 64 << 20, 128 << 20),
        ] {
            end_to_end(which, cap, size).await?;
        }
        Ok(())
    })
}

async fn limiter_alone(cap: u64) {
    let limiter = RateLimiter::new(Some(cap));
    let total = cap as usize * 3;
    let per_task = total / 4 / READ_CHUNK;
    let stamps = Arc::new(Mutex::new(Vec::with_capacity(total / READ_CHUNK)));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let l = limiter.clone();
            let stamps = Arc::clone(&stamps);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    l.acquire(READ_CHUNK).await;
                    if let Ok(mut s) = stamps.lock() {
                        s.push(t0.elapsed());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let sent = (per_task * 4 * READ_CHUNK) as f64;
    // The last chunk is paid for when it starts; the schedule's end is one chunk later.
    let took = t0.elapsed().as_secs_f64() + READ_CHUNK as f64 / cap as f64;
    let achieved = sent / took;
    let mut s = stamps.lock().map(|s| s.clone()).unwrap_or_default();
    s.sort();
    let window = Duration::from_millis(50);
    let mut worst = 0usize;
    let mut lo = 0;
    for hi in 0..s.len() {
        while s[hi] - s[lo] >= window {
            lo += 1;
        }
        worst = worst.max(hi - lo + 1);
    }
    let allowed = cap as f64 * window.as_secs_f64();
    println!(
        "{:>12.0} {:>14.2} {:>8.2}% {:>18.2}",
        cap as f64 / MIB,
        achieved / MIB,
        (achieved / cap as f64 - 1.0) * 100.0,
        (worst * READ_CHUNK) as f64 / allowed
    );
}

async fn end_to_end(which: &str, cap: u64, size: usize) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
        .collect();
    let meta = Metainfo::from_bytes(&data);

    let odir = tempfile::tempdir()?;
    let ostore = BlobStore::open(odir.path()).await?;
    ostore.put_bytes(Some(meta.digest()), &data).await?;
    let mut ocfg = NodeConfig::origin();
    let mut acfg = NodeConfig::agent();
    if which == "egress" {
        ocfg.egress_rate = Some(cap);
    } else {
        acfg.ingress_rate = Some(cap);
    }
    let origin = Node::start(
        ocfg,
        TcpListener::bind("127.0.0.1:0").await?,
        ostore.clone(),
        Arc::new(discovery.clone()),
        Some(Arc::new(FromStore(ostore))),
        &Registry::new(),
        shutdown.child_token(),
    )?;
    discovery.add(origin.peer_info());

    let adir = tempfile::tempdir()?;
    let astore = BlobStore::open(adir.path()).await?;
    let agent = Node::start(
        acfg,
        TcpListener::bind("127.0.0.1:0").await?,
        astore,
        Arc::new(discovery.clone()),
        None,
        &Registry::new(),
        shutdown.child_token(),
    )?;
    let t0 = Instant::now();
    let h = agent.download(meta.clone()).await?;
    // When each piece was verified: the rate between the first and the last is the cap at
    // work, without the handshake before it or the whole-blob check after it.
    let mut progress = h.progress();
    let mut first: Option<Instant> = None;
    let mut last = t0;
    let mut seen = 0;
    while progress.changed().await.is_ok() {
        let (have, done) = {
            let p = progress.borrow_and_update();
            (p.have.count(), p.outcome.is_some())
        };
        if have > seen && !done {
            seen = have;
            last = Instant::now();
            first.get_or_insert(last);
        }
        if done {
            break;
        }
    }
    h.finished().await.context("download failed")?;
    let took = t0.elapsed().as_secs_f64();
    let floor = size as f64 / cap as f64;
    let piece = meta.piece_length() as f64;
    let steady = first
        .map(|f| (size as f64 - piece) / (last - f).as_secs_f64())
        .unwrap_or(f64::NAN);
    println!(
        "{:>8} {:>10.0} {:>10.0} {:>10.3} {:>12.3} {:>8.2}% {:>14.2} {:>8.2}%",
        which,
        cap as f64 / MIB,
        size as f64 / MIB,
        took,
        floor,
        (took / floor - 1.0) * 100.0,
        steady / MIB,
        (steady / cap as f64 - 1.0) * 100.0
    );
    shutdown.cancel();
    agent.closed().await;
    origin.closed().await;
    Ok(())
}
