//! Manifests by tag and digest, the checks on them, referrers, tag lists and the catalog,
//! and deletes.

use super::*;

#[tokio::test]
async fn manifests_by_tag_and_digest_are_stored_exactly() {
    let t = setup().await;
    let m = image(&t, "app", "one").await;
    // Unusual but valid formatting must survive byte for byte.
    let mut pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&m).unwrap()).unwrap();
    pretty.extend_from_slice(b"\n\n");
    let d = Digest::sha256_of(&pretty);
    let r = t.put_manifest("app", "v1", OCI_MANIFEST, &pretty).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), d.to_string());
    assert_eq!(r.header("location"), format!("/v2/app/manifests/{d}"));
    for reference in ["v1".to_string(), d.to_string()] {
        let r = t.get(&format!("/v2/app/manifests/{reference}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.as_ref(), pretty.as_slice());
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), d.to_string());
        let r = t
            .req(
                Method::HEAD,
                &format!("/v2/app/manifests/{reference}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-length"), pretty.len().to_string());
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
    }
    // By digest, the URL must name these bytes.
    let r = t
        .put_manifest("app", &d.to_string(), OCI_MANIFEST, &pretty)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = t
        .put_manifest(
            "app",
            &Digest::sha256_of(b"x").to_string(),
            OCI_MANIFEST,
            &pretty,
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    // An index over it, with extra tags from ?tag=.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, &pretty)],
    }))
    .unwrap();
    let id = Digest::sha256_of(&index);
    let r = t
        .req(
            Method::PUT,
            &format!("/v2/app/manifests/{id}?tag=multi&tag=latest"),
            &[("content-type", OCI_INDEX)],
            Body::from(index.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = t.get("/v2/app/manifests/latest").await;
    assert_eq!(
        (r.body.as_ref(), r.header("content-type")),
        (index.as_slice(), OCI_INDEX)
    );
}

#[tokio::test]
async fn manifest_checks() {
    let t = setup_with(|c| c.max_manifest_size = shoal_core::units::ByteSize(64 << 10)).await;
    let m = image(&t, "app", "two").await;
    let missing = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", b"{}"),
        "layers": [],
    }))
    .unwrap();
    let r = t.put_manifest("app", "x", OCI_MANIFEST, &missing).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = t.put_manifest("app", "x", OCI_MANIFEST, b"{not json").await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let r = t
        .put_manifest("app", "x", "application/vnd.example+json", &m)
        .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let r = t.put_manifest("app", "bad:tag:", OCI_MANIFEST, &m).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = t.put_manifest("app", "-bad", OCI_MANIFEST, &m).await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let mut wrong_size: Value = serde_json::from_slice(&m).unwrap();
    wrong_size["layers"][0]["size"] = json!(1);
    let r = t
        .put_manifest(
            "app",
            "x",
            OCI_MANIFEST,
            &serde_json::to_vec(&wrong_size).unwrap(),
        )
        .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    // Too large: 413, whether Content-Length says so or the body shows it.
    let mut big: Value = serde_json::from_slice(&m).unwrap();
    big["annotations"] = json!({"pad": "x".repeat(70 << 10)});
    let big = serde_json::to_vec(&big).unwrap();
    let r = t.put_manifest("app", "x", OCI_MANIFEST, &big).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID")
    );
    let stream = Body::from_stream(futures::stream::iter(
        big.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    ));
    let r = t
        .req(
            Method::PUT,
            "/v2/app/manifests/x",
            &[("content-type", OCI_MANIFEST)],
            stream,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing of it was stored: the tag does not exist.
    assert_eq!(
        t.get("/v2/app/manifests/x").await.code(),
        "MANIFEST_UNKNOWN"
    );
    // A blob is not a manifest.
    let layer = Digest::sha256_of("layer of two".repeat(100).as_bytes());
    assert_eq!(
        t.get(&format!("/v2/app/manifests/{layer}")).await.code(),
        "MANIFEST_UNKNOWN"
    );
}

#[tokio::test]
async fn referrers_by_subject_with_artifact_type_filter() {
    let t = setup().await;
    let m = image(&t, "app", "subject").await;
    let r = t.put_manifest("app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let subject = Digest::sha256_of(&m);
    t.push_blob("app", b"{}").await;
    let mut referrer_digests = Vec::new();
    for (kind, payload) in [
        ("application/vnd.example.sbom", "sbom"),
        ("application/vnd.example.sig", "sig"),
    ] {
        let blob = t.push_blob("app", payload.as_bytes()).await;
        let art = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": desc("application/vnd.oci.empty.v1+json", b"{}"),
            "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": payload.len()}],
            "subject": desc(OCI_MANIFEST, &m),
            "annotations": {"org.example.kind": payload},
        }))
        .unwrap();
        let d = Digest::sha256_of(&art);
        let r = t
            .put_manifest("app", &d.to_string(), OCI_MANIFEST, &art)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(r.header("oci-subject"), subject.to_string());
        referrer_digests.push((kind, d, art.len()));
    }
    let r = t.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let index = r.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let r = t
        .get(&format!(
            "/v2/app/referrers/{subject}?artifactType=application/vnd.example.sig"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    let only = r.json()["manifests"].as_array().unwrap().clone();
    let (kind, d, size) = referrer_digests[1];
    assert_eq!(
        only,
        vec![json!({
            "mediaType": OCI_MANIFEST,
            "digest": d,
            "size": size,
            "artifactType": kind,
            "annotations": {"org.example.kind": "sig"},
        })]
    );
    // Other repositories and unknown subjects: an empty index, not 404.
    let r = t.get(&format!("/v2/other/referrers/{subject}")).await;
    assert_eq!(
        (r.status, r.json()["manifests"].clone()),
        (StatusCode::OK, json!([]))
    );
    assert_eq!(
        t.get("/v2/app/referrers/sha256:nope").await.code(),
        "DIGEST_INVALID"
    );
    // Deleting a referrer takes it out of the list.
    let r = t
        .req(
            Method::DELETE,
            &format!("/v2/app/manifests/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = t.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tag_lists_and_catalog_paginate_with_link() {
    let t = setup_with(|c| c.max_page = 3).await;
    let m = image(&t, "lib/app", "tags").await;
    for tag in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            t.put_manifest("lib/app", tag, OCI_MANIFEST, &m)
                .await
                .status,
            StatusCode::CREATED
        );
    }
    t.put_manifest("zzz", "only", OCI_MANIFEST, &m).await;
    let r = t.get("/v2/lib/app/tags/list?n=2").await;
    assert_eq!(r.json(), json!({"name": "lib/app", "tags": ["a", "b"]}));
    assert_eq!(
        r.header("link"),
        "</v2/lib/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let r = t.get("/v2/lib/app/tags/list?n=2&last=d").await;
    assert_eq!(r.json()["tags"], json!(["e"]));
    assert_eq!(r.header("link"), "");
    // No n: at most max_page, with a link to the rest.
    let r = t.get("/v2/lib/app/tags/list").await;
    assert_eq!(r.json()["tags"], json!(["a", "b", "c"]));
    assert_eq!(
        r.header("link"),
        "</v2/lib/app/tags/list?n=3&last=c>; rel=\"next\""
    );
    let r = t.get("/v2/lib/app/tags/list?n=0").await;
    assert_eq!(r.json()["tags"], json!([]));
    let r = t.get("/v2/nothing/here/tags/list").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let r = t.get("/v2/lib/app/tags/list?n=lots").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = t.get("/v2/_catalog?n=1").await;
    assert_eq!(r.json(), json!({"repositories": ["lib/app"]}));
    assert_eq!(
        r.header("link"),
        "</v2/_catalog?n=1&last=lib/app>; rel=\"next\""
    );
    let r = t.get("/v2/_catalog?n=1&last=lib/app").await;
    assert_eq!(r.json(), json!({"repositories": ["zzz"]}));
}

#[tokio::test]
async fn deletes_of_tags_manifests_and_blobs() {
    let t = setup().await;
    let m = image(&t, "app", "del").await;
    let d = Digest::sha256_of(&m);
    for tag in ["keep", "v1", "v2"] {
        t.put_manifest("app", tag, OCI_MANIFEST, &m).await;
    }
    let r = t
        .req(Method::DELETE, "/v2/app/manifests/keep", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        t.get("/v2/app/manifests/keep").await.code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(t.get("/v2/app/manifests/v1").await.status, StatusCode::OK);
    let r = t
        .req(Method::DELETE, "/v2/app/manifests/keep", &[], Body::empty())
        .await;
    assert_eq!(r.code(), "MANIFEST_UNKNOWN");
    // By digest: the manifest and every tag pointing at it.
    let r = t
        .req(
            Method::DELETE,
            &format!("/v2/app/manifests/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    for reference in ["v1".to_string(), "v2".to_string(), d.to_string()] {
        assert_eq!(
            t.get(&format!("/v2/app/manifests/{reference}"))
                .await
                .code(),
            "MANIFEST_UNKNOWN"
        );
    }
    let layer = Digest::sha256_of("layer of del".repeat(100).as_bytes());
    let r = t
        .req(
            Method::DELETE,
            &format!("/v2/app/blobs/{layer}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        t.get(&format!("/v2/app/blobs/{layer}")).await.code(),
        "BLOB_UNKNOWN"
    );
    let r = t
        .req(
            Method::DELETE,
            &format!("/v2/app/blobs/{layer}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.code(), "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deletes_can_be_turned_off() {
    let t = setup_with(|c| c.allow_delete = false).await;
    let d = t.push_blob("app", b"kept").await;
    for path in [
        format!("/v2/app/blobs/{d}"),
        "/v2/app/manifests/v1".to_string(),
    ] {
        let r = t.req(Method::DELETE, &path, &[], Body::empty()).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
        );
    }
    assert!(t.stored(&d).await.is_some());
}
