//! The registry API as a client speaks it, for the demo and the benchmarks: blob pushes (a
//! monolithic upload: `POST`, then one `PUT` with the bytes), manifests, and pulls whose
//! bodies are checked against their digest as they stream.

use std::path::Path;
use std::time::Duration;

use shoal_core::Digest;

use crate::error::{LaunchError, Result};

/// A registry at `http://<addr>`, with a login for pushes or without.
#[derive(Debug, Clone)]
pub struct Registry {
    client: reqwest::Client,
    base: String,
    login: Option<(String, String)>,
}

/// A client for loopback servers: no overall timeout (a capped download of a large blob
/// takes minutes), a short one to connect.
pub fn client() -> Result<reqwest::Client> {
    shoal_core::tls::plain_client_builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(4)
        .build()
        .map_err(LaunchError::http("cannot build an HTTP client"))
}

/// An error for an answer other than `want`, with the start of its body.
pub async fn expect(res: reqwest::Response, want: &[u16], what: &str) -> Result<reqwest::Response> {
    let status = res.status().as_u16();
    if want.contains(&status) {
        return Ok(res);
    }
    let body = res.text().await.unwrap_or_default();
    Err(LaunchError::Status {
        what: what.to_owned(),
        status,
        body: body.chars().take(500).collect(),
    })
}

/// A file as a streamed request body.
pub async fn file_body(path: &Path) -> Result<reqwest::Body> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(LaunchError::io("cannot open", path))?;
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::with_capacity(f, 1 << 20),
    ))
}

impl Registry {
    /// `base` is `http://host:port`.
    pub fn new(client: reqwest::Client, base: &str, login: Option<(String, String)>) -> Registry {
        Registry {
            client,
            base: base.trim_end_matches('/').to_owned(),
            login,
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.login {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    /// Pushes the file at `path`, the blob `digest` of `len` bytes, into `repo`.
    pub async fn push_blob(
        &self,
        repo: &str,
        path: &Path,
        digest: &Digest,
        len: u64,
    ) -> Result<()> {
        let what = format!("pushing {digest} to {}", self.base);
        let res = self
            .auth(
                self.client
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.base)),
            )
            .send()
            .await
            .map_err(LaunchError::http(what.clone()))?;
        let res = expect(res, &[202], &what).await?;
        let location = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                LaunchError::Check(format!("{what}: the registry gave no upload location"))
            })?
            .to_owned();
        let mut url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let res = self
            .auth(self.client.put(url))
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(file_body(path).await?)
            .send()
            .await
            .map_err(LaunchError::http(what.clone()))?;
        expect(res, &[201], &what).await?;
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let what = format!("putting the manifest {repo}:{reference} to {}", self.base);
        let res = self
            .auth(
                self.client
                    .put(format!("{}/v2/{repo}/manifests/{reference}", self.base)),
            )
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(bytes)
            .send()
            .await
            .map_err(LaunchError::http(what.clone()))?;
        expect(res, &[201], &what).await?;
        Ok(())
    }

    /// The manifest `repo:reference`, asked for as `accept`.
    pub async fn manifest(&self, repo: &str, reference: &str, accept: &str) -> Result<Vec<u8>> {
        let what = format!("GET {}/v2/{repo}/manifests/{reference}", self.base);
        let res = self
            .client
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(LaunchError::http(what.clone()))?;
        let res = expect(res, &[200], &what).await?;
        let body = res.bytes().await.map_err(LaunchError::http(what))?;
        Ok(body.to_vec())
    }

    /// Reads the whole blob `digest` of `repo`; fails unless its bytes are that digest's.
    /// Returns its length.
    pub async fn pull_blob(&self, repo: &str, digest: &Digest) -> Result<u64> {
        let what = format!("GET {}/v2/{repo}/blobs/{digest}", self.base);
        let res = self
            .client
            .get(format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .send()
            .await
            .map_err(LaunchError::http(what.clone()))?;
        let mut res = expect(res, &[200], &what).await?;
        let mut verifier = digest.verifier();
        let mut len = 0u64;
        while let Some(chunk) = res.chunk().await.map_err(LaunchError::http(what.clone()))? {
            len += chunk.len() as u64;
            verifier.update(&chunk);
        }
        verifier
            .finish()
            .map_err(|e| LaunchError::Check(format!("{what}: {e}")))?;
        Ok(len)
    }
}
