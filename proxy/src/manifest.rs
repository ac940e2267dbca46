//! What a manifest is, what it references and what it names as its subject: the checks a
//! manifest `PUT` passes before its bytes are stored, and the media type a `GET` serves.
//!
//! The bytes are never rewritten; parsing only reads them.

use std::collections::BTreeMap;

use oci_spec::image::{ArtifactManifest, Descriptor, ImageIndex, ImageManifest};
use serde_json::Value;
use shoal_core::digest::Digest;
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::origin_client::Referrer;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Layers that live elsewhere (`urls`): registries do not hold them.
const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// The three shapes a manifest can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest (OCI or Docker schema 2): a config and layers.
    Image,
    /// An index or Docker manifest list: other manifests.
    Index,
    /// An OCI artifact manifest (image-spec 1.1 drafts): blobs.
    Artifact,
}

/// Something a manifest points at that must exist before the manifest is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub digest: Digest,
    pub size: u64,
    /// A manifest (from an index) rather than a blob; only the error message differs.
    pub manifest: bool,
}

/// A manifest that passed the checks that need no storage.
#[derive(Debug, Clone)]
pub struct Checked {
    pub media_type: &'static str,
    pub kind: Kind,
    pub needed: Vec<Needed>,
    pub subject: Option<Digest>,
    /// What the referrers API lists it as: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Checked {
    /// The descriptor of this manifest in its subject's referrers list.
    pub fn referrer(&self, digest: Digest, size: u64) -> Referrer {
        Referrer {
            media_type: self.media_type.to_owned(),
            digest,
            size,
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ManifestInvalid, message.into())
}

fn known(media_type: &str) -> Option<(&'static str, Kind)> {
    [
        (OCI_MANIFEST, Kind::Image),
        (DOCKER_MANIFEST, Kind::Image),
        (OCI_INDEX, Kind::Index),
        (DOCKER_LIST, Kind::Index),
        (OCI_ARTIFACT, Kind::Artifact),
    ]
    .into_iter()
    .find(|(t, _)| *t == media_type)
}

/// The media type a manifest without a `mediaType` field has, from its shape. Only OCI
/// types may leave the field out.
fn inferred(doc: &serde_json::Map<String, Value>) -> Option<&'static str> {
    if doc.contains_key("manifests") {
        Some(OCI_INDEX)
    } else if doc.contains_key("config") && doc.contains_key("layers") {
        Some(OCI_MANIFEST)
    } else {
        None
    }
}

/// `type/subtype` of a `Content-Type` value, without parameters.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// The media type to serve stored manifest bytes with, or `None` when the bytes are not a
/// manifest (the digest names some other blob).
pub fn served_media_type(bytes: &[u8]) -> Option<&'static str> {
    let doc: serde_json::Map<String, Value> = serde_json::from_slice(bytes).ok()?;
    match doc.get("mediaType") {
        Some(Value::String(t)) => known(t).map(|(t, _)| t),
        Some(_) => None,
        None => inferred(&doc),
    }
}

/// Checks a pushed manifest: JSON, a known media type that agrees with `Content-Type`, the
/// schema of that type, and digests Shoal can verify.
pub fn check(bytes: &[u8], content_type: Option<&str>) -> Result<Checked, ApiError> {
    let doc: serde_json::Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not a JSON object: {e}")))?;
    let declared = match doc.get("mediaType") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => return Err(invalid("mediaType must be a string")),
        None => None,
    };
    // A generic or missing Content-Type says nothing; a manifest type must agree with the
    // body's own.
    let header = content_type.map(essence).filter(|t| {
        !t.is_empty() && !matches!(*t, "application/json" | "application/octet-stream")
    });
    let media_type = match (declared, header) {
        (Some(d), Some(h)) if d != h => {
            return Err(invalid(format!(
                "Content-Type {h} does not match the manifest's mediaType {d}"
            )));
        }
        (Some(t), _) => t,
        (None, Some(h)) => h,
        (None, None) => inferred(&doc).ok_or_else(|| {
            invalid("manifest has no mediaType and its shape is not an OCI manifest or index")
        })?,
    };
    if DOCKER_SCHEMA1.contains(&media_type) {
        return Err(invalid(
            "Docker schema 1 manifests are not supported; push schema 2 or OCI",
        ));
    }
    let (media_type, kind) = known(media_type)
        .ok_or_else(|| invalid(format!("unknown manifest media type {media_type}")))?;
    if declared.is_none() {
        // Docker schema 2 requires the field, and an OCI body must have the shape its
        // header claims, or a GET would serve it under another type.
        if inferred(&doc) != Some(media_type) {
            return Err(invalid(format!(
                "a {media_type} manifest must carry its mediaType field"
            )));
        }
    }
    let schema = |e: serde_json::Error| invalid(format!("not a valid {media_type}: {e}"));
    let mut checked = match kind {
        Kind::Image => {
            let m: ImageManifest = serde_json::from_slice(bytes).map_err(schema)?;
            schema_version(m.schema_version())?;
            let mut needed = vec![need(m.config(), false)?];
            for layer in m.layers() {
                let foreign = FOREIGN_LAYERS.contains(&layer.media_type().as_ref())
                    || layer.urls().as_ref().is_some_and(|u| !u.is_empty());
                if !foreign {
                    needed.push(need(layer, false)?);
                }
            }
            Checked {
                media_type,
                kind,
                needed,
                subject: subject(m.subject().as_ref())?,
                artifact_type: Some(
                    m.artifact_type()
                        .as_ref()
                        .unwrap_or(m.config().media_type())
                        .to_string(),
                ),
                annotations: sorted(m.annotations().as_ref()),
            }
        }
        Kind::Index => {
            let m: ImageIndex = serde_json::from_slice(bytes).map_err(schema)?;
            schema_version(m.schema_version())?;
            Checked {
                media_type,
                kind,
                needed: m
                    .manifests()
                    .iter()
                    .map(|d| need(d, true))
                    .collect::<Result<_, _>>()?,
                subject: subject(m.subject().as_ref())?,
                artifact_type: m.artifact_type().as_ref().map(|t| t.to_string()),
                annotations: sorted(m.annotations().as_ref()),
            }
        }
        Kind::Artifact => {
            let m: ArtifactManifest = serde_json::from_slice(bytes).map_err(schema)?;
            Checked {
                media_type,
                kind,
                needed: m
                    .blobs()
                    .iter()
                    .map(|d| need(d, false))
                    .collect::<Result<_, _>>()?,
                subject: subject(m.subject().as_ref())?,
                artifact_type: Some(m.artifact_type().to_string()),
                annotations: sorted(m.annotations().as_ref()),
            }
        }
    };
    // One check per blob is enough when several descriptors name it.
    let mut seen = std::collections::HashSet::new();
    checked.needed.retain(|n| seen.insert(n.digest));
    Ok(checked)
}

fn schema_version(v: u32) -> Result<(), ApiError> {
    if v == 2 {
        Ok(())
    } else {
        Err(invalid(format!("schemaVersion must be 2, not {v}")))
    }
}

fn digest_of(d: &Descriptor) -> Result<Digest, ApiError> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|e| invalid(format!("descriptor digest {}: {e}", d.digest())))
}

fn need(d: &Descriptor, manifest: bool) -> Result<Needed, ApiError> {
    Ok(Needed {
        digest: digest_of(d)?,
        size: d.size(),
        manifest,
    })
}

fn subject(d: Option<&Descriptor>) -> Result<Option<Digest>, ApiError> {
    d.map(digest_of).transpose()
}

fn sorted(
    a: Option<&std::collections::HashMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    a.filter(|a| !a.is_empty())
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> String {
        Digest::sha256_of(s.as_bytes()).to_string()
    }

    fn image(extra: Value) -> Vec<u8> {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d("c"), "size": 1},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d("l1"), "size": 2},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d("l1"), "size": 2},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar", "digest": d("f"), "size": 3, "urls": ["http://x"]}
            ]
        });
        if let (Value::Object(m), Value::Object(e)) = (&mut m, extra) {
            m.extend(e);
        }
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn image_manifest_needs_config_and_distributable_layers_once() {
        let c = check(&image(json!({})), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(c.kind, Kind::Image);
        let needed: Vec<String> = c.needed.iter().map(|n| n.digest.to_string()).collect();
        assert_eq!(needed, vec![d("c"), d("l1")]);
        assert_eq!(
            c.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(served_media_type(&image(json!({}))), Some(OCI_MANIFEST));
    }

    #[test]
    fn subject_and_artifact_type() {
        let bytes = image(json!({
            "artifactType": "application/vnd.example.sbom",
            "subject": {"mediaType": OCI_MANIFEST, "digest": d("s"), "size": 9},
            "annotations": {"b": "2", "a": "1"}
        }));
        let c = check(&bytes, None).unwrap();
        assert_eq!(c.subject, Some(Digest::sha256_of(b"s")));
        let r = c.referrer(Digest::sha256_of(&bytes), bytes.len() as u64);
        assert_eq!(
            r.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
        assert_eq!(r.annotations.unwrap().len(), 2);
    }

    #[test]
    fn index_and_docker_list() {
        let index = json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d("a"), "size": 5, "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": d("b"), "size": 5, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
            ]
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        // No mediaType field: OCI lets it out, the shape says index.
        let c = check(&bytes, Some(OCI_INDEX)).unwrap();
        assert_eq!((c.kind, c.media_type), (Kind::Index, OCI_INDEX));
        assert!(c.needed.iter().all(|n| n.manifest));
        assert_eq!(served_media_type(&bytes), Some(OCI_INDEX));
        // Docker lists must say what they are.
        assert!(check(&bytes, Some(DOCKER_LIST)).is_err());
        let mut list = index.clone();
        list["mediaType"] = json!(DOCKER_LIST);
        let c = check(&serde_json::to_vec(&list).unwrap(), Some(DOCKER_LIST)).unwrap();
        assert_eq!(c.media_type, DOCKER_LIST);
    }

    #[test]
    fn rejections() {
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            (b"not json".to_vec(), Some(OCI_MANIFEST)),
            (b"[1,2]".to_vec(), Some(OCI_MANIFEST)),
            (image(json!({})), Some(OCI_INDEX)),
            (image(json!({"mediaType": "application/vnd.example"})), None),
            (image(json!({"mediaType": 5})), None),
            (image(json!({"schemaVersion": 1})), None),
            (
                image(json!({"mediaType": DOCKER_SCHEMA1[0]})),
                Some(DOCKER_SCHEMA1[0]),
            ),
            (image(json!({"layers": "no"})), None),
            (
                image(json!({"config": {"mediaType": "x", "digest": "md5:abc", "size": 1}})),
                None,
            ),
            (
                image(
                    json!({"config": {"mediaType": "x", "digest": format!("sha384:{}", "a".repeat(96)), "size": 1}}),
                ),
                None,
            ),
            (br#"{"schemaVersion": 2}"#.to_vec(), None),
        ];
        for (bytes, ct) in cases {
            let e = check(&bytes, ct).unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::ManifestInvalid,
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn generic_content_types_defer_to_the_body() {
        let bytes = image(json!({}));
        for ct in [
            "application/json",
            "application/octet-stream",
            "",
            "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
        ] {
            assert!(check(&bytes, Some(ct)).is_ok(), "{ct}");
        }
    }

    #[test]
    fn artifact_manifest() {
        let bytes = serde_json::to_vec(&json!({
            "mediaType": OCI_ARTIFACT,
            "artifactType": "application/vnd.example",
            "blobs": [{"mediaType": "application/octet-stream", "digest": d("x"), "size": 1}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d("s"), "size": 9}
        }))
        .unwrap();
        let c = check(&bytes, Some(OCI_ARTIFACT)).unwrap();
        assert_eq!(c.kind, Kind::Artifact);
        assert_eq!(c.needed.len(), 1);
        assert_eq!(served_media_type(&bytes), Some(OCI_ARTIFACT));
    }

    #[test]
    fn blobs_are_not_manifests() {
        assert_eq!(served_media_type(b"\x1f\x8b\x08"), None);
        assert_eq!(served_media_type(b"{}"), None);
        assert_eq!(served_media_type(br#"{"mediaType":"text/plain"}"#), None);
    }
}
