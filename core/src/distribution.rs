//! The OCI distribution API as every Shoal server speaks it: which resource a `/v2/…` path
//! names, and the header names the API defines.
//!
//! Repository names contain `/`, so a path is read from its end: the last one to three
//! segments say what it is, and the rest is the name. A name that ends in `blobs` or
//! `manifests` is fine because the suffixes are matched before the name is cut off. Names,
//! references and digests are not checked here: the server that answers checks them, as the
//! error it gives depends on the request.

use http::{HeaderName, HeaderValue};

/// The digest of the blob or manifest an answer carries or a write stored.
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// The id of an upload session.
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// On a manifest `PUT`: the subject whose referrers now include the manifest.
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// On a referrers answer: the filters (`artifactType`) that were applied.
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
/// Marks every answer as the registry API version 2, which clients look for.
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
/// The value of [`API_VERSION`].
pub const API_VERSION_VALUE: HeaderValue = HeaderValue::from_static("registry/2.0");

/// A path under `/v2/`: the repository it names, if any, and the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2Path<'a> {
    /// Everything before the resource's own segments. `None` when there is no segment for
    /// it at all (`/v2/manifests/latest`), and for [`Resource::Base`] and
    /// [`Resource::Catalog`]; `Some("")` when the segment is there but empty.
    pub name: Option<&'a str>,
    pub resource: Resource<'a>,
}

/// What a `/v2/…` path asks for, by the distribution spec's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `<name>/tags/list`
    Tags,
    /// `<name>/manifests/<reference>`
    Manifest(&'a str),
    /// `<name>/blobs/<digest>`. `<name>/blobs/uploads`, without the final slash, is this
    /// too (a digest of `uploads`), as the spec's grammar reads it.
    Blob(&'a str),
    /// `<name>/blobs/uploads/`
    UploadStart,
    /// `<name>/blobs/uploads/<session>`
    Upload(&'a str),
    /// `<name>/referrers/<digest>`
    Referrers(&'a str),
}

impl<'a> V2Path<'a> {
    /// Reads a whole request path. `None`: not under `/v2`, or no resource has this shape.
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/v2")?;
        match rest {
            "" => Self::after_v2(""),
            r => Self::after_v2(r.strip_prefix('/')?),
        }
    }

    /// Reads the part of a path after `/v2/`. `None`: no resource has this shape.
    pub fn after_v2(rest: &'a str) -> Option<Self> {
        let bare = |resource| {
            Some(V2Path {
                name: None,
                resource,
            })
        };
        if rest.is_empty() {
            return bare(Resource::Base);
        }
        if rest == "_catalog" {
            return bare(Resource::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let last = segs[n - 1];
        // The name is everything before the last `k` segments and the slash before them;
        // with no segment left for it, there is none.
        let name = |k: usize| -> Option<&'a str> {
            let cut: usize = segs[n - k..].iter().map(|s| s.len() + 1).sum();
            (n > k).then(|| &rest[..rest.len() - cut])
        };
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            let resource = if last.is_empty() {
                Resource::UploadStart
            } else {
                Resource::Upload(last)
            };
            return Some(V2Path {
                name: name(3),
                resource,
            });
        }
        if n < 2 {
            return None;
        }
        let resource = match (segs[n - 2], last) {
            ("tags", "list") => Resource::Tags,
            ("manifests", reference) => Resource::Manifest(reference),
            ("blobs", digest) => Resource::Blob(digest),
            ("referrers", digest) => Resource::Referrers(digest),
            _ => return None,
        };
        Some(V2Path {
            name: name(2),
            resource,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at<'a>(name: &'a str, resource: Resource<'a>) -> Option<V2Path<'a>> {
        Some(V2Path {
            name: Some(name),
            resource,
        })
    }

    fn nameless(resource: Resource<'_>) -> Option<V2Path<'_>> {
        Some(V2Path {
            name: None,
            resource,
        })
    }

    #[test]
    fn every_shape() {
        use Resource::*;
        for (path, want) in [
            ("/v2", nameless(Base)),
            ("/v2/", nameless(Base)),
            ("/v2/_catalog", nameless(Catalog)),
            ("/v2/a/b/tags/list", at("a/b", Tags)),
            (
                "/v2/library/alpine/manifests/latest",
                at("library/alpine", Manifest("latest")),
            ),
            ("/v2/a/blobs/sha256:00", at("a", Blob("sha256:00"))),
            ("/v2/a/blobs/uploads/", at("a", UploadStart)),
            ("/v2/a/blobs/uploads", at("a", Blob("uploads"))),
            ("/v2/a/blobs/uploads/abc", at("a", Upload("abc"))),
            ("/v2/a/referrers/sha256:00", at("a", Referrers("sha256:00"))),
            ("/v2/x/manifests/", at("x", Manifest(""))),
        ] {
            assert_eq!(V2Path::parse(path), want, "{path}");
        }
    }

    #[test]
    fn names_that_look_like_suffixes() {
        use Resource::*;
        for (rest, want) in [
            (
                "blobs/manifests/manifests/x",
                at("blobs/manifests", Manifest("x")),
            ),
            ("x/blobs/uploads/blobs/d", at("x/blobs/uploads", Blob("d"))),
            ("tags/tags/list", at("tags", Tags)),
            ("a/manifests/tags/list", at("a/manifests", Tags)),
            ("a/blobs/uploads/uploads", at("a", Upload("uploads"))),
        ] {
            assert_eq!(V2Path::after_v2(rest), want, "{rest}");
        }
    }

    #[test]
    fn missing_and_empty_names_differ() {
        use Resource::*;
        assert_eq!(V2Path::after_v2("manifests/x"), nameless(Manifest("x")));
        assert_eq!(V2Path::after_v2("tags/list"), nameless(Tags));
        assert_eq!(V2Path::after_v2("/manifests/x"), at("", Manifest("x")));
        assert_eq!(V2Path::after_v2("a//b/tags/list"), at("a//b", Tags));
        // Uploads need a name segment to be uploads at all.
        assert_eq!(V2Path::after_v2("blobs/uploads/x"), None);
    }

    #[test]
    fn what_is_no_resource() {
        for path in [
            "/v2x",
            "/v3/",
            "/",
            "/v2/alpine",
            "/v2/alpine/layers/abc",
            "/v2/a/manifests/x/",
            "/v2//",
        ] {
            assert_eq!(V2Path::parse(path), None, "{path}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "[a-z/_:.-]{0,60}") {
            let _ = V2Path::after_v2(&s);
            let _ = V2Path::parse(&format!("/v2/{s}"));
        }

        #[test]
        fn the_name_and_the_resource_spell_the_path(s in "[a-z/]{0,40}") {
            if let Some(V2Path { name: Some(name), resource: Resource::Manifest(r) }) =
                V2Path::after_v2(&s)
            {
                prop_assert_eq!(format!("{name}/manifests/{r}"), s);
            }
        }
    }
}
