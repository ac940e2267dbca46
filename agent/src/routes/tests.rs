use super::*;

#[test]
fn paths_are_read_from_their_end_and_only_pulls_are_served() {
    let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let served = |path: &str| class(V2Path::parse(path));
    assert_eq!(served("/v2/"), RouteClass::Base);
    assert_eq!(served("/v2"), RouteClass::Base);
    assert_eq!(
        served("/v2/library/alpine/manifests/3.20"),
        RouteClass::Manifest
    );
    assert_eq!(
        served(&format!("/v2/a/blobs/b/blobs/{d}")),
        RouteClass::Blob
    );
    assert_eq!(served("/v2/a/manifests/tags/list"), RouteClass::Tags);
    assert_eq!(served("/v2/x/manifests/"), RouteClass::Manifest);
    // A blob named `uploads`, as the grammar reads it; its digest is then refused.
    assert_eq!(served("/v2/a/blobs/uploads"), RouteClass::Blob);
    for unknown in [
        "/v2x",
        "/v3/",
        "/v2/alpine",
        "/v2/alpine/layers/abc",
        "/v2/manifests/latest",
        "/v2/tags/list",
        "/v2/_catalog",
        "/v2/a/blobs/uploads/",
        "/v2/a/blobs/uploads/abc",
        "/v2/a/referrers/sha256:00",
        "/",
    ] {
        assert_eq!(served(unknown), RouteClass::Other, "{unknown}");
    }
}

#[test]
fn namespace_is_read_from_the_query() {
    assert_eq!(namespace(Some("ns=docker.io")), Some("docker.io"));
    assert_eq!(namespace(Some("a=1&ns=ghcr.io")), Some("ghcr.io"));
    assert_eq!(namespace(Some("ns=")), None);
    assert_eq!(namespace(None), None);
}
