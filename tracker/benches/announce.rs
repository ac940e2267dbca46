//! Announces per second: a real tracker on a real socket, hammered over HTTP/1.1 keep-alive
//! by several concurrent connections, each announcing for a different host in turn. The
//! target is 100,000 hosts announcing every 3 s: about 33,000 announces a second.
//!
//! `cargo bench -p shoal-tracker --bench announce -- [--hosts N] [--swarms N] [--conns N]
//! [--secs N] [--server-threads N] [--handout N]`
//!
//! It also times the parts without HTTP (the table alone, the table plus the JSON answer)
//! on one thread, so a shortfall can be pinned on a layer. The client is deliberately thin
//! (pre-built requests, answers framed by Content-Length and not parsed) because it shares
//! the machine with the tracker; what it spends is not the tracker's.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_core::Digest;
use shoal_core::peer::{AnnounceRequest, AnnounceResponse, PeerId};
use shoal_tracker::Config;
use shoal_tracker::table::{Announce, MemoryTable, Pick};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The tracker runtime's thread name, to tell its CPU time from the client's.
const SERVER_THREAD: &str = "tracker";

/// CPU seconds used so far by this process's threads named `name`, and by the others.
fn cpu_seconds(name: &str) -> (f64, f64) {
    let ticks = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let (mut named, mut other) = (0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let used: f64 = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
            .unwrap_or(0.0);
        if comm == name {
            named += used / ticks;
        } else {
            other += used / ticks;
        }
    }
    (named, other)
}

struct Opts {
    hosts: usize,
    swarms: usize,
    conns: usize,
    secs: u64,
    server_threads: usize,
    handout: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        hosts: 100_000,
        swarms: 20,
        conns: 64,
        secs: 10,
        server_threads: 2,
        handout: 50,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        let slot = match args[i].as_str() {
            "--hosts" => &mut o.hosts,
            "--swarms" => &mut o.swarms,
            "--conns" => &mut o.conns,
            "--server-threads" => &mut o.server_threads,
            "--handout" => &mut o.handout,
            "--secs" => {
                o.secs = value().unwrap_or(o.secs);
                i += 2;
                continue;
            }
            // `cargo bench` passes `--bench`; ignore whatever else is not ours.
            _ => {
                i += 1;
                continue;
            }
        };
        *slot = value().map_or(*slot, |v| v as usize);
        i += 2;
    }
    o
}

/// The read token the benchmark's tracker checks.
const TOKEN: &str = "read-token-of-the-announce-benchmark";

fn host(i: usize, swarms: usize) -> AnnounceRequest {
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id[19] = 1;
    AnnounceRequest {
        digest: Digest::sha256_of(&((i % swarms) as u64).to_be_bytes()),
        peer_id: PeerId(id),
        port: 7000,
        complete: i.is_multiple_of(3),
        addr: Some(std::net::IpAddr::from([
            10,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ])),
    }
}

fn http_request(req: &AnnounceRequest) -> Vec<u8> {
    let body = serde_json::to_vec(req).unwrap();
    let mut out = format!(
        "POST /v1/announce HTTP/1.1\r\nhost: tracker\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// The tracker's layers without HTTP, on this thread.
fn in_process(o: &Opts) {
    let config = Config::default();
    let table = MemoryTable::new(config.table.clone(), config.peer_ttl());
    let now = tokio::time::Instant::now();
    let pick = Pick {
        want: o.handout,
        reserve: 3,
        exclude: &[],
    };
    let announces: Vec<Announce> = (0..o.hosts)
        .map(|i| {
            let r = host(i, o.swarms);
            Announce {
                digest: r.digest,
                peer_id: r.peer_id,
                addr: SocketAddr::new(r.addr.unwrap(), r.port),
                source: r.addr.unwrap(),
                complete: r.complete,
            }
        })
        .collect();
    let before = resident_bytes();
    for a in &announces {
        table.announce_at(a, pick, now).unwrap();
    }
    let per_entry = resident_bytes().saturating_sub(before) / o.hosts.max(1) as u64;
    println!("table memory: about {per_entry} bytes per entry (resident set growth while filling)");
    let t = Instant::now();
    table.expire_at(now);
    println!(
        "an expiry sweep over {} entries (none due) took {:.1} ms",
        o.hosts,
        t.elapsed().as_secs_f64() * 1e3
    );
    let rounds = o.hosts.min(200_000);
    let t = Instant::now();
    let mut handed = 0;
    for a in announces.iter().take(rounds) {
        handed += table.announce_at(a, pick, now).unwrap().peers.len();
    }
    let table_rate = rounds as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut bytes = 0;
    for a in announces.iter().take(rounds) {
        let peers = table.announce_at(a, pick, now).unwrap().peers;
        bytes += serde_json::to_vec(&AnnounceResponse {
            peers,
            interval_secs: 3,
        })
        .unwrap()
        .len();
    }
    let serde_rate = rounds as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for a in announces.iter().take(rounds) {
        let peers = table.announce_at(a, pick, now).unwrap().peers;
        bytes += shoal_tracker::answer::encode(&peers, 3).len();
    }
    let json_rate = rounds as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for a in announces.iter().take(rounds) {
        let req = AnnounceRequest {
            digest: a.digest,
            peer_id: a.peer_id,
            port: 7000,
            complete: a.complete,
            addr: None,
        };
        let body = serde_json::to_vec(&req).unwrap();
        let _: AnnounceRequest = serde_json::from_slice(&body).unwrap();
    }
    let parse_rate = rounds as f64 / t.elapsed().as_secs_f64();
    println!(
        "in process, one thread: table {table_rate:>9.0}/s ({} peers per answer); table + answer {json_rate:>9.0}/s (serde's encoding: {serde_rate:.0}/s; {} bytes per answer); request JSON round trip {parse_rate:>9.0}/s",
        handed / rounds,
        bytes / rounds / 2
    );
}

/// A stand-in origin that answers `/v1/info`, so handouts carry origins as in production.
async fn fake_origin(peer_port: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let info =
        serde_json::json!({"member": url, "peer_id": PeerId::random(), "peer_port": peer_port});
    let app = axum::Router::new().route(
        "/v1/info",
        axum::routing::get(move || async move { axum::Json(info) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Reads one response off `conn`; returns its status and body length.
async fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, usize) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap();
            let status: u16 = head[9..12].parse().unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap();
            let total = end + 4 + length;
            while buf.len() < total {
                read_more(conn, buf).await;
            }
            buf.drain(..total);
            return (status, length);
        }
        read_more(conn, buf).await;
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16384];
    let n = conn.read(&mut chunk).await.unwrap();
    assert!(n > 0, "the tracker closed the connection");
    buf.extend_from_slice(&chunk[..n]);
}

fn main() {
    let o = opts();
    println!(
        "{} hosts in {} swarms, handouts of up to {}, {} connections, {} s, tracker on {} threads, {} cores",
        o.hosts,
        o.swarms,
        o.handout,
        o.conns,
        o.secs,
        o.server_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    in_process(&o);

    // The tracker gets its own runtime, as it would in its own process.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.server_threads)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let addr = server.block_on(async {
        let origins = vec![
            fake_origin(7100).await,
            fake_origin(7101).await,
            fake_origin(7102).await,
        ];
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config {
            origins,
            trust_announced_addr: true,
            handout_size: o.handout,
            ..Config::default()
        };
        config.credentials.read_token = shoal_core::auth::Secret::new(TOKEN);
        // Every simulated host announces from this machine's one address.
        config.table.max_entries_per_source = usize::MAX;
        let registry = prometheus::Registry::new();
        tokio::spawn(shoal_tracker::run(config, listener, registry, stop.clone()));
        addr
    });

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client.block_on(async {
        // Wait until the origins are known, so every answer lists them.
        let http = shoal_core::tls::client();
        while !matches!(http.get(format!("http://{addr}/ready")).send().await, Ok(r) if r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let requests: Arc<Vec<Vec<u8>>> =
            Arc::new((0..o.hosts).map(|i| http_request(&host(i, o.swarms))).collect());

        // Every host announces once, so the swarms are full before the clock starts.
        let fill = std::time::Instant::now();
        run_clients(addr, &requests, o.conns, None).await;
        println!(
            "filled the table with {} announces in {:.2} s",
            o.hosts,
            fill.elapsed().as_secs_f64()
        );

        let window = Duration::from_secs(o.secs);
        let t = Instant::now();
        let cpu_before = cpu_seconds(SERVER_THREAD);
        let (done, bytes, latency_ns) = run_clients(addr, &requests, o.conns, Some(window)).await;
        let secs = t.elapsed().as_secs_f64();
        let cpu_after = cpu_seconds(SERVER_THREAD);
        println!(
            "over HTTP: {:.0} announces/s ({done} in {secs:.1} s), mean latency {:.2} ms, {} bytes per answer",
            done as f64 / secs,
            latency_ns as f64 / done.max(1) as f64 / 1e6,
            bytes / done.max(1)
        );
        let server_us = (cpu_after.0 - cpu_before.0) / done.max(1) as f64 * 1e6;
        let client_us = (cpu_after.1 - cpu_before.1) / done.max(1) as f64 * 1e6;
        println!(
            "CPU per announce: tracker {server_us:.1} µs (one core carries {:.0}/s), this client {client_us:.1} µs; the tracker had {:.2} of {} cores",
            1e6 / server_us,
            (cpu_after.0 - cpu_before.0) / secs,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let m = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for l in m.lines().filter(|l| {
            l.starts_with("shoal_tracker_announces_total") || l.starts_with("shoal_tracker_handout_size_")
        }) {
            if l.contains("_bucket") {
                continue;
            }
            println!("  {l}");
        }
    });
    stop.cancel();
    server.shutdown_timeout(Duration::from_secs(5));
}

/// `conns` connections announce for hosts in turn: every host once when `window` is
/// `None`, else round and round until the window closes. Returns announces, answer bytes
/// and the summed latency in nanoseconds.
async fn run_clients(
    addr: SocketAddr,
    requests: &Arc<Vec<Vec<u8>>>,
    conns: usize,
    window: Option<Duration>,
) -> (u64, u64, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (requests, next, stop, totals) = (
                Arc::clone(requests),
                Arc::clone(&next),
                Arc::clone(&stop),
                Arc::clone(&totals),
            );
            tokio::spawn(async move {
                let mut conn = TcpStream::connect(addr).await.unwrap();
                conn.set_nodelay(true).unwrap();
                let mut buf = Vec::with_capacity(32 << 10);
                let (mut done, mut bytes, mut lat) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if window.is_none() && i >= requests.len() {
                        break;
                    }
                    let t = Instant::now();
                    conn.write_all(&requests[i % requests.len()]).await.unwrap();
                    let (status, len) = read_response(&mut conn, &mut buf).await;
                    assert_eq!(status, 200, "announce failed");
                    lat += t.elapsed().as_nanos() as u64;
                    done += 1;
                    bytes += len as u64;
                }
                totals[0].fetch_add(done, Ordering::Relaxed);
                totals[1].fetch_add(bytes, Ordering::Relaxed);
                totals[2].fetch_add(lat, Ordering::Relaxed);
            })
        })
        .collect();
    if let Some(w) = window {
        tokio::time::sleep(w).await;
        stop.store(true, Ordering::Relaxed);
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        totals[0].load(Ordering::Relaxed),
        totals[1].load(Ordering::Relaxed),
        totals[2].load(Ordering::Relaxed),
    )
}
