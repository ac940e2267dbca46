//! Helpers the origin's integration tests share.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use shoal_core::Digest;
use shoal_core::origin_client::blob_key;
use shoal_origin::testing::TestCluster;

/// Random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        let r: [u8; 8] = rand::random();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    v
}

/// A random blob whose owners on the full ring, as a set, are exactly `owners`.
pub fn blob_owned_by(
    cluster: &TestCluster,
    owners: &[usize],
    r: usize,
    len: usize,
) -> (Vec<u8>, Digest) {
    let mut want = owners.to_vec();
    want.sort();
    loop {
        let data = random_bytes(len);
        let digest = Digest::sha256_of(&data);
        let mut got = cluster.owners(&blob_key(&digest), r);
        got.sort();
        if got == want {
            return (data, digest);
        }
    }
}

pub fn http() -> reqwest::Client {
    shoal_core::tls::client()
}

/// PUT a blob's bytes (with the credential `http` presents) to one origin.
pub async fn put_blob(
    http: &reqwest::Client,
    base: &str,
    digest: &Digest,
    data: Vec<u8>,
) -> reqwest::Response {
    http.put(format!("{base}/v1/blobs/{digest}"))
        .body(data)
        .send()
        .await
        .unwrap()
}

/// GET a blob from one origin: status and body.
pub async fn get_blob(
    http: &reqwest::Client,
    base: &str,
    digest: &Digest,
) -> (reqwest::StatusCode, Bytes) {
    let res = http
        .get(format!("{base}/v1/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.bytes().await.unwrap())
}

/// The OCI error code of an error answer.
pub async fn error_code(res: reqwest::Response) -> String {
    let body: serde_json::Value = res.json().await.unwrap();
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Files left in an origin's temporary upload directory.
pub fn temp_files(data_dir: &std::path::Path) -> usize {
    std::fs::read_dir(data_dir.join("tmp")).map_or(0, |d| d.count())
}
