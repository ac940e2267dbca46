//! Prints how fast three origins on this machine take and give blobs: upload through an
//! owner and through a non-owner (which streams it on), the replica copy, and downloads
//! through both, with the process's peak memory to show that it does not grow with the blob.
//!
//! ```sh
//! cargo run -p shoal-origin --example throughput [-- <MiB>]
//! ```
#![allow(clippy::unwrap_used)] // a measuring program: any failure ends it

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use shoal_core::Digest;
use shoal_core::origin_client::blob_key;
use shoal_core::testing::wait_until;
use shoal_origin::testing::TestCluster;

const CHUNK: usize = 1 << 20;

/// Deterministic bytes without holding them: chunk `i` of stream `seed`.
fn chunk(seed: u64, i: usize, len: usize) -> Bytes {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn chunks(seed: u64, size: usize) -> impl Iterator<Item = Bytes> {
    (0..size.div_ceil(CHUNK)).map(move |i| chunk(seed, i, CHUNK.min(size - i * CHUNK)))
}

fn digest_of(seed: u64, size: usize) -> Digest {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for c in chunks(seed, size) {
        h.update(&c);
    }
    Digest::Sha256(h.finalize().into())
}

/// A seed whose blob the cluster places on `owners` (as a set).
fn seed_for(cluster: &TestCluster, owners: &[usize], size: usize) -> (u64, Digest) {
    for seed in 1.. {
        // Placement depends only on the digest; small probes find a seed fast, but the
        // digest must be the full blob's, so check that.
        let d = digest_of(seed, size);
        let mut got = cluster.owners(&blob_key(&d), 2);
        got.sort();
        if got == owners {
            return (seed, d);
        }
    }
    unreachable!()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn rate(size: usize, t: Duration) -> String {
    format!(
        "{:>7.0} MiB/s ({:.2} s)",
        size as f64 / (1 << 20) as f64 / t.as_secs_f64(),
        t.as_secs_f64()
    )
}

async fn upload(base: &str, seed: u64, digest: &Digest, size: usize) -> Duration {
    let start = Instant::now();
    let body = futures::stream::iter(chunks(seed, size).map(Ok::<_, std::io::Error>));
    let res = shoal_core::tls::client()
        .put(format!("{base}/v1/blobs/{digest}"))
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    start.elapsed()
}

async fn download(base: &str, digest: &Digest, size: usize) -> Duration {
    let start = Instant::now();
    let res = shoal_core::tls::client()
        .get(format!("{base}/v1/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    let mut n = 0;
    while let Some(c) = stream.next().await {
        n += c.unwrap().len();
    }
    assert_eq!(n, size);
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let size = mib << 20;
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    println!("three origins, 2 replicas, blobs of {mib} MiB, loopback, one machine");
    println!("peak RSS before: {:.0} MiB", peak_rss_mib());

    let (seed, digest) = seed_for(&cluster, &[0, 1], size);
    let t = upload(cluster.url(0), seed, &digest, size).await;
    println!("upload to an owner (first):    {}", rate(size, t));
    let start = Instant::now();
    wait_until("the replica is made", Duration::from_secs(600), || async {
        cluster.holders(&digest).await == [0, 1]
    })
    .await;
    println!(
        "replica on the second owner:   {}",
        rate(size, start.elapsed())
    );

    for _ in 0..2 {
        let (s, d) = seed_for(&cluster, &[0, 1], size);
        let t = upload(cluster.url(1), s, &d, size).await;
        println!("upload to an owner again:      {}", rate(size, t));
    }
    let (seed2, digest2) = seed_for(&cluster, &[0, 1], size);
    let t = upload(cluster.url(2), seed2, &digest2, size).await;
    println!("upload through a non-owner:    {}", rate(size, t));

    let t = download(cluster.url(0), &digest, size).await;
    println!("download from an owner:        {}", rate(size, t));
    let t = download(cluster.url(2), &digest, size).await;
    println!("download through a non-owner:  {}", rate(size, t));

    let start = Instant::now();
    let m = cluster.client().metainfo(&digest).await.unwrap();
    println!(
        "metainfo ({} pieces of {} KiB): {:.1} ms",
        m.piece_count(),
        m.piece_length() >> 10,
        start.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "peak RSS after (client, three origins, generator): {:.0} MiB",
        peak_rss_mib()
    );
    cluster.shutdown().await;
}
