//! Which registry resource a `/v2/…` path names ([`shoal_core::distribution`] reads the
//! path), with its repository name checked, and the bounded route label of metrics.

use shoal_core::distribution::{Resource, V2Path};
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::reference::RepoName;

/// A path under `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`; the reference is checked by the handler, which
    /// knows whether a bad one is unknown (pull) or invalid (push).
    Manifest(RepoName, String),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, String),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<session>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, String),
}

/// A bounded label for metrics: what kind of resource a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    Upload,
    Referrers,
    Ops,
    Other,
}

impl RouteClass {
    pub const ALL: [RouteClass; 9] = [
        RouteClass::Base,
        RouteClass::Catalog,
        RouteClass::Tags,
        RouteClass::Manifest,
        RouteClass::Blob,
        RouteClass::Upload,
        RouteClass::Referrers,
        RouteClass::Ops,
        RouteClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Base => "base",
            RouteClass::Catalog => "catalog",
            RouteClass::Tags => "tags",
            RouteClass::Manifest => "manifest",
            RouteClass::Blob => "blob",
            RouteClass::Upload => "upload",
            RouteClass::Referrers => "referrers",
            RouteClass::Ops => "ops",
            RouteClass::Other => "other",
        }
    }
}

impl Route {
    pub fn class(&self) -> RouteClass {
        match self {
            Route::Base => RouteClass::Base,
            Route::Catalog => RouteClass::Catalog,
            Route::Tags(_) => RouteClass::Tags,
            Route::Manifest(..) => RouteClass::Manifest,
            Route::Blob(..) => RouteClass::Blob,
            Route::UploadStart(_) | Route::Upload(..) => RouteClass::Upload,
            Route::Referrers(..) => RouteClass::Referrers,
        }
    }
}

/// The class of a whole request path, for metrics, without failing on bad names.
pub fn classify(path: &str) -> RouteClass {
    match path {
        "/health" | "/ready" | "/metrics" => return RouteClass::Ops,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2") else {
        return RouteClass::Other;
    };
    match V2Path::after_v2(rest.strip_prefix('/').unwrap_or(rest)) {
        Some(p) => class_of(lenient(p.resource)),
        None => RouteClass::Other,
    }
}

fn class_of(resource: Resource) -> RouteClass {
    match resource {
        Resource::Base => RouteClass::Base,
        Resource::Catalog => RouteClass::Catalog,
        Resource::Tags => RouteClass::Tags,
        Resource::Manifest(_) => RouteClass::Manifest,
        Resource::Blob(_) => RouteClass::Blob,
        Resource::UploadStart | Resource::Upload(_) => RouteClass::Upload,
        Resource::Referrers(_) => RouteClass::Referrers,
    }
}

/// Clients start uploads at `<name>/blobs/uploads` without the final slash too.
fn lenient(resource: Resource) -> Resource {
    match resource {
        Resource::Blob("uploads") => Resource::UploadStart,
        r => r,
    }
}

/// Parses the part of a path after `/v2/`. `None` means no registry resource has this
/// shape; an error means it has one but names an invalid repository.
pub fn parse(rest: &str) -> Option<Result<Route, ApiError>> {
    let V2Path { name, resource } = V2Path::after_v2(rest)?;
    let resource = lenient(resource);
    match resource {
        Resource::Base => return Some(Ok(Route::Base)),
        Resource::Catalog => return Some(Ok(Route::Catalog)),
        _ => {}
    }
    let name: RepoName = match name.unwrap_or("").parse() {
        Ok(n) => n,
        Err(e) => {
            return Some(Err(ApiError::new(
                ErrorCode::NameInvalid,
                format!("invalid repository name: {e}"),
            )));
        }
    };
    Some(Ok(match resource {
        Resource::Base | Resource::Catalog => return None,
        Resource::Tags => Route::Tags(name),
        Resource::Manifest(r) => Route::Manifest(name, r.to_owned()),
        Resource::Blob(d) => Route::Blob(name, d.to_owned()),
        Resource::Referrers(d) => Route::Referrers(name, d.to_owned()),
        Resource::UploadStart => Route::UploadStart(name),
        Resource::Upload(id) => Route::Upload(name, id.to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(rest: &str) -> Route {
        parse(rest).unwrap().unwrap()
    }

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn every_shape() {
        assert_eq!(ok(""), Route::Base);
        assert_eq!(ok("_catalog"), Route::Catalog);
        assert_eq!(ok("a/b/tags/list"), Route::Tags(name("a/b")));
        assert_eq!(
            ok("library/alpine/manifests/latest"),
            Route::Manifest(name("library/alpine"), "latest".into())
        );
        assert_eq!(
            ok("a/blobs/sha256:00"),
            Route::Blob(name("a"), "sha256:00".into())
        );
        assert_eq!(ok("a/blobs/uploads/"), Route::UploadStart(name("a")));
        assert_eq!(ok("a/blobs/uploads"), Route::UploadStart(name("a")));
        assert_eq!(
            ok("a/blobs/uploads/abc"),
            Route::Upload(name("a"), "abc".into())
        );
        assert_eq!(
            ok("a/referrers/sha256:00"),
            Route::Referrers(name("a"), "sha256:00".into())
        );
    }

    #[test]
    fn names_that_look_like_suffixes() {
        assert_eq!(
            ok("blobs/manifests/manifests/x"),
            Route::Manifest(name("blobs/manifests"), "x".into())
        );
        assert_eq!(
            ok("x/blobs/uploads/blobs/d"),
            Route::Blob(name("x/blobs/uploads"), "d".into())
        );
        assert_eq!(ok("tags/tags/list"), Route::Tags(name("tags")));
    }

    #[test]
    fn bad_names_and_shapes() {
        assert_eq!(
            parse("UPPER/manifests/x").unwrap().unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert_eq!(
            parse("a//b/tags/list").unwrap().unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert!(parse("/manifests/x").unwrap().is_err());
        assert!(parse("a/other/x").is_none());
        assert_eq!(
            parse("manifests/x").unwrap().unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert_eq!(
            ok("a/blobs/uploads/uploads"),
            Route::Upload(name("a"), "uploads".into())
        );
    }

    #[test]
    fn classes() {
        assert_eq!(classify("/v2/"), RouteClass::Base);
        assert_eq!(classify("/v2"), RouteClass::Base);
        assert_eq!(classify("/v2/a/blobs/uploads/x"), RouteClass::Upload);
        assert_eq!(classify("/v2/A/manifests/x"), RouteClass::Manifest);
        assert_eq!(classify("/metrics"), RouteClass::Ops);
        assert_eq!(classify("/favicon.ico"), RouteClass::Other);
    }

    proptest! {
        #[test]
        fn never_panics(s in "[a-z/_:.-]{0,60}") {
            let _ = parse(&s);
            let _ = classify(&format!("/v2/{s}"));
        }
    }
}
