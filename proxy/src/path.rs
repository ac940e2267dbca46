//! Which registry resource a `/v2/…` path names.
//!
//! Repository names contain `/`, so the path is one wildcard read from its end: the last one
//! to three segments say what it is, the rest is the name. A name that ends in `blobs` or
//! `manifests` is fine because the suffixes are matched before the name is cut off.

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
    match shape(rest.strip_prefix('/').unwrap_or(rest)) {
        Some((shape, _)) => shape.class(),
        None => RouteClass::Other,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    UploadStart,
    Upload,
    Referrers,
}

impl Shape {
    fn class(self) -> RouteClass {
        match self {
            Shape::Base => RouteClass::Base,
            Shape::Catalog => RouteClass::Catalog,
            Shape::Tags => RouteClass::Tags,
            Shape::Manifest => RouteClass::Manifest,
            Shape::Blob => RouteClass::Blob,
            Shape::UploadStart | Shape::Upload => RouteClass::Upload,
            Shape::Referrers => RouteClass::Referrers,
        }
    }
}

/// The shape and the name part of a path after `/v2/`, from its suffix alone.
fn shape(rest: &str) -> Option<(Shape, &str)> {
    if rest.is_empty() {
        return Some((Shape::Base, ""));
    }
    if rest == "_catalog" {
        return Some((Shape::Catalog, ""));
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_of = |k: usize| -> &str {
        // The name is everything before the last `k` segments (and their slash, which an
        // empty name does not have).
        let cut: usize = segs[n - k..].iter().map(|s| s.len() + 1).sum();
        &rest[..rest.len().saturating_sub(cut)]
    };
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let shape = if segs[n - 1].is_empty() {
            Shape::UploadStart
        } else {
            Shape::Upload
        };
        return Some((shape, name_of(3)));
    }
    if n >= 2 {
        let shape = match (segs[n - 2], segs[n - 1]) {
            ("blobs", "uploads") => Shape::UploadStart,
            ("tags", "list") => Shape::Tags,
            ("manifests", _) => Shape::Manifest,
            ("blobs", _) => Shape::Blob,
            ("referrers", _) => Shape::Referrers,
            _ => return None,
        };
        return Some((shape, name_of(2)));
    }
    None
}

/// Parses the part of a path after `/v2/`. `None` means no registry resource has this
/// shape; an error means it has one but names an invalid repository.
pub fn parse(rest: &str) -> Option<Result<Route, ApiError>> {
    let (shape, name) = shape(rest)?;
    let last = rest.rsplit('/').next().unwrap_or("").to_owned();
    match shape {
        Shape::Base => return Some(Ok(Route::Base)),
        Shape::Catalog => return Some(Ok(Route::Catalog)),
        _ => {}
    }
    let name: RepoName = match name.parse() {
        Ok(n) => n,
        Err(e) => {
            return Some(Err(ApiError::new(
                ErrorCode::NameInvalid,
                format!("invalid repository name: {e}"),
            )));
        }
    };
    Some(Ok(match shape {
        Shape::Base | Shape::Catalog => return None,
        Shape::Tags => Route::Tags(name),
        Shape::Manifest => Route::Manifest(name, last),
        Shape::Blob => Route::Blob(name, last),
        Shape::Referrers => Route::Referrers(name, last),
        Shape::UploadStart => Route::UploadStart(name),
        Shape::Upload => Route::Upload(name, last),
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
