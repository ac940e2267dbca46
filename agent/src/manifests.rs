//! Manifests: a tag resolves through the origins, the manifest comes straight from an origin
//! (verified, then cached by digest), and its `Content-Type` is read from the manifest.

use bytes::Bytes;
use shoal_core::origin_client::OriginError;
use shoal_core::reference::{Reference, RepoName, Tag};
use shoal_core::store::StoreError;
use shoal_core::{ApiError, Digest, ErrorCode};

use crate::blobs::direct;
use crate::state::{AppState, lock};

/// Tag resolutions remembered for origin outages; past it the memory starts over.
const MAX_REMEMBERED_TAGS: usize = 4096;

/// The largest manifest served; the distribution spec asks registries to accept 4 MiB.
pub const MAX_MANIFEST: u64 = 4 << 20;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";

/// A manifest as served: its digest, its bytes unchanged, and its media type.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub bytes: Bytes,
    pub media_type: String,
}

fn manifest_unknown(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {what} is unknown"),
    )
}

/// The manifest `reference` names in repository `name`.
pub async fn get(
    st: &AppState,
    name: &RepoName,
    reference: &Reference,
) -> Result<Manifest, ApiError> {
    let digest = match reference {
        Reference::Digest(d) => *d,
        Reference::Tag(tag) => resolve(st, name, tag).await?,
    };
    let bytes = bytes_of(st, digest).await?;
    let media_type = media_type(&bytes).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("{digest} is not a manifest"),
        )
    })?;
    Ok(Manifest {
        digest,
        bytes,
        media_type,
    })
}

/// What a tag points at, from the origins. When no origin can be reached, the answer they
/// last gave is used, so that pulls of what this host already resolved keep working through
/// an origin outage.
async fn resolve(st: &AppState, name: &RepoName, tag: &Tag) -> Result<Digest, ApiError> {
    let key = format!("{name}:{tag}");
    match st.upstream.origins().get_tag(name, tag).await {
        Ok(Some(d)) => {
            let mut known = lock(&st.tags);
            if known.len() >= MAX_REMEMBERED_TAGS && !known.contains_key(&key) {
                known.clear();
            }
            known.insert(key, d);
            Ok(d)
        }
        Ok(None) => {
            lock(&st.tags).remove(&key);
            Err(manifest_unknown(key))
        }
        Err(e @ OriginError::Unavailable(_)) => match lock(&st.tags).get(&key) {
            Some(d) => {
                tracing::warn!(tag = %key, digest = %d, error = %e, "origins unreachable; using the tag's last known digest");
                Ok(*d)
            }
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The manifest's bytes: from the cache, or from an origin (verified, then cached).
async fn bytes_of(st: &AppState, digest: Digest) -> Result<Bytes, ApiError> {
    let _hold = st.cache.hold(digest);
    if let Some(length) = st.cache.lookup(&digest) {
        if length > MAX_MANIFEST {
            return Err(manifest_unknown(digest));
        }
        match st.cache.store().read_all(&digest).await {
            Ok(b) => {
                st.metrics.cache_hits.inc();
                return Ok(Bytes::from(b));
            }
            Err(StoreError::NotFound(_)) => st.cache.forget(&digest),
            Err(e) => return Err(e.into()),
        }
    }
    st.metrics.cache_misses.inc();
    direct(st, digest, MAX_MANIFEST).await.map_err(|e| {
        if e.code == ErrorCode::BlobUnknown {
            manifest_unknown(digest)
        } else {
            e
        }
    })
}

/// The media type a manifest declares, or, when it declares none, the one its shape shows.
/// `None`: these bytes are not a manifest.
pub fn media_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let obj = v.as_object()?;
    if let Some(mt) = obj.get("mediaType").and_then(|m| m.as_str())
        && !mt.is_empty()
        && http::HeaderValue::from_str(mt).is_ok()
    {
        return Some(mt.to_owned());
    }
    let schema = obj.get("schemaVersion").and_then(|s| s.as_u64());
    let t = if schema == Some(1) {
        if obj.contains_key("signatures") {
            DOCKER_MANIFEST_V1_SIGNED
        } else {
            DOCKER_MANIFEST_V1
        }
    } else if obj.get("manifests").is_some_and(|m| m.is_array()) {
        OCI_INDEX
    } else if obj.get("config").is_some_and(|c| c.is_object())
        || obj.get("layers").is_some_and(|l| l.is_array())
    {
        OCI_MANIFEST
    } else if obj.get("blobs").is_some_and(|b| b.is_array()) {
        OCI_ARTIFACT
    } else {
        return None;
    };
    Some(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_declared_and_by_shape() {
        for mt in [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            OCI_MANIFEST,
            OCI_INDEX,
        ] {
            let body = format!(r#"{{"schemaVersion":2,"mediaType":"{mt}","layers":[]}}"#);
            assert_eq!(media_type(body.as_bytes()).as_deref(), Some(mt));
        }
        let cases = [
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#,
                OCI_MANIFEST,
            ),
            (r#"{"schemaVersion":2,"manifests":[]}"#, OCI_INDEX),
            (
                r#"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[],"signatures":[]}"#,
                DOCKER_MANIFEST_V1_SIGNED,
            ),
            (
                r#"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}"#,
                DOCKER_MANIFEST_V1,
            ),
            (r#"{"mediaType":"","blobs":[]}"#, OCI_ARTIFACT),
        ];
        for (body, want) in cases {
            assert_eq!(media_type(body.as_bytes()).as_deref(), Some(want), "{body}");
        }
        // A media type that cannot be a header falls back to the shape.
        assert_eq!(
            media_type(b"{\"mediaType\":\"a\\nb\",\"manifests\":[]}").as_deref(),
            Some(OCI_INDEX)
        );
        for not in [&b"\x1f\x8b\x08"[..], b"[]", b"{}", b"{\"hello\":1}", b""] {
            assert_eq!(media_type(not), None);
        }
    }
}
