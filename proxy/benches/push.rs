//! Pushes one large blob (1 GiB unless `--size` says otherwise) through a proxy running as a
//! process of its own, in front of three origins, and prints the time each way of uploading
//! took and the proxy's peak memory: `VmHWM` from `/proc/<pid>/status`, the high-water mark
//! of the proxy process's resident memory over its whole life (a fresh proxy per way).
//!
//! ```sh
//! cargo bench -p shoal-proxy --bench push
//! cargo bench -p shoal-proxy --bench push -- --size 256MiB
//! ```
#![allow(clippy::unwrap_used)] // a benchmark that cannot run should stop, loudly

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_core::Digest;
use shoal_core::digest::{Algorithm, Hasher};
use shoal_core::units::ByteSize;
use shoal_origin::testing::TestCluster;

/// The blob is this buffer over and over: generating it costs nothing, so the figures are
/// the proxy's.
const PIECE: usize = 1 << 20;
/// Chunk size of the chunked upload (docker sends one PATCH; oras sends many of these).
const CHUNK: u64 = 64 << 20;

struct Proxy {
    child: Child,
    addr: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(origins: &[String], write_token: &str, spool: &std::path::Path) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-proxy"))
            .env("SHOAL_PROXY_CREDENTIALS__WRITE_TOKEN", write_token)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--origins",
                &origins.join(","),
                "--set",
                &format!("uploads.spool_dir={:?}", spool.display().to_string()),
                "--log-format",
                "json",
                "--log",
                "shoal_proxy=info,warn",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal-proxy");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("shoal-proxy exited before serving")
                .unwrap();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "proxy serving" {
                break v["addr"].as_str().unwrap().to_owned();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Proxy { child, addr }
    }

    /// CPU time the proxy has used so far (user + system), in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        // The kernel's USER_HZ is 100 on every Linux this runs on.
        ticks / 100.0
    }

    /// Peak resident memory so far, in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }
}

fn body(piece: &Bytes, len: u64) -> reqwest::Body {
    let piece = piece.clone();
    let n = len.div_ceil(PIECE as u64);
    let last = len - (n.saturating_sub(1)) * PIECE as u64;
    let stream = futures::stream::iter((0..n).map(move |i| {
        let b = if i + 1 == n {
            piece.slice(..last as usize)
        } else {
            piece.clone()
        };
        Ok::<_, std::io::Error>(b)
    }));
    reqwest::Body::wrap_stream(stream)
}

async fn start_upload(http: &reqwest::Client, base: &str) -> String {
    let res = http
        .post(format!("{base}/v2/bench/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    format!("{base}{loc}")
}

async fn monolithic(http: &reqwest::Client, base: &str, piece: &Bytes, size: u64, d: Digest) {
    let loc = start_upload(http, base).await;
    let res = http
        .put(format!("{loc}?digest={d}"))
        .header("content-length", size)
        .body(body(piece, size))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

async fn chunked(http: &reqwest::Client, base: &str, piece: &Bytes, size: u64, d: Digest) {
    let mut loc = start_upload(http, base).await;
    let mut at = 0;
    while at < size {
        let n = CHUNK.min(size - at);
        let res = http
            .patch(&loc)
            .header("content-range", format!("{at}-{}", at + n - 1))
            .header("content-length", n)
            .body(body(piece, n))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        loc = format!("{base}{}", res.headers()["location"].to_str().unwrap());
        at += n;
    }
    let res = http.put(format!("{loc}?digest={d}")).send().await.unwrap();
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size = args
        .iter()
        .position(|a| a == "--size")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<ByteSize>().expect("--size: a size such as 1GiB"))
        .unwrap_or(ByteSize::gib(1))
        .bytes();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Three origins, each blob on two of them.
        let origins = TestCluster::builder(3).replicas(2).start().await;
        let piece: Vec<u8> = (0..PIECE).map(|i| (i * 31 % 251) as u8).collect();
        let piece = Bytes::from(piece);
        let mut h = Hasher::new(Algorithm::Sha256);
        let mut left = size;
        while left > 0 {
            let n = left.min(PIECE as u64) as usize;
            h.update(&piece[..n]);
            left -= n as u64;
        }
        let digest = h.finalize();
        let http = shoal_core::tls::client();
        println!(
            "pushing {} through a proxy process to {} origins",
            ByteSize(size),
            origins.urls().len()
        );
        for way in ["monolithic PUT", "chunked PATCH (64 MiB chunks) + PUT"] {
            let spool = tempfile::tempdir().unwrap();
            let proxy = Proxy::start(&origins.urls(), origins.write_token(), spool.path());
            let base = format!("http://{}", proxy.addr);
            let idle = proxy.peak_rss();
            let cpu_before = proxy.cpu_seconds();
            let started = Instant::now();
            if way.starts_with("monolithic") {
                monolithic(&http, &base, &piece, size, digest).await;
            } else {
                chunked(&http, &base, &piece, size, digest).await;
            }
            let took = started.elapsed();
            let peak = proxy.peak_rss();
            let cpu = proxy.cpu_seconds() - cpu_before;
            println!(
                "{way:<38} {:>6.2} s {:>7.1} MiB/s   proxy: peak RSS {:>5.1} MiB (at start {:.1}), CPU {:.2} s",
                took.as_secs_f64(),
                size as f64 / (1 << 20) as f64 / took.as_secs_f64().max(1e-9),
                peak as f64 / (1 << 20) as f64,
                idle as f64 / (1 << 20) as f64,
                cpu,
            );
            assert!(!origins.holders(&digest).await.is_empty());
            drop(proxy);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
