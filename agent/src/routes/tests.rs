use super::*;

#[test]
fn paths_parse_from_their_end() {
    use V2Path::*;
    let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(V2Path::parse("/v2/"), Base);
    assert_eq!(V2Path::parse("/v2"), Base);
    assert_eq!(
        V2Path::parse("/v2/library/alpine/manifests/3.20"),
        Manifest {
            name: "library/alpine",
            reference: "3.20"
        }
    );
    assert_eq!(
        V2Path::parse(&format!("/v2/a/blobs/b/blobs/{d}")),
        Blob {
            name: "a/blobs/b",
            digest: d
        }
    );
    assert_eq!(
        V2Path::parse("/v2/a/manifests/tags/list"),
        Tags {
            name: "a/manifests"
        }
    );
    assert_eq!(
        V2Path::parse("/v2/x/manifests/"),
        Manifest {
            name: "x",
            reference: ""
        }
    );
    for unknown in [
        "/v2x",
        "/v3/",
        "/v2/alpine",
        "/v2/alpine/layers/abc",
        "/v2/manifests/latest",
        "/",
    ] {
        assert_eq!(V2Path::parse(unknown), Unknown, "{unknown}");
    }
}

#[test]
fn namespace_is_read_from_the_query() {
    assert_eq!(namespace(Some("ns=docker.io")), Some("docker.io"));
    assert_eq!(namespace(Some("a=1&ns=ghcr.io")), Some("ghcr.io"));
    assert_eq!(namespace(Some("ns=")), None);
    assert_eq!(namespace(None), None);
}
