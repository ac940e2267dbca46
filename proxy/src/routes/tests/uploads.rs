//! Blob uploads as clients make them: monolithic, in one POST, in chunks with and without
//! `Content-Range`, by mount; digests checked on the way, and nothing left behind when the
//! digest is wrong or the body breaks off.

use super::*;

#[tokio::test]
async fn monolithic_upload_after_post_streams_straight_through() {
    let t = setup().await;
    let bytes = b"a whole blob in one PUT".to_vec();
    let d = Digest::sha256_of(&bytes);
    let loc = t.start("a/b").await;
    assert!(loc.starts_with("/v2/a/b/blobs/uploads/"), "{loc}");
    let r = t.finish(&loc, &d, Body::from(bytes.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("location"), format!("/v2/a/b/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d.to_string());
    assert_eq!(t.stored(&d).await.unwrap(), bytes);
    assert_eq!(
        t.spool_files(),
        0,
        "a monolithic upload never touches the spool"
    );

    let r = t.get(&format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, bytes.as_slice())
    );
    let r = t
        .req(
            Method::HEAD,
            &format!("/v2/other/blobs/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), bytes.len().to_string());
    let r = t
        .req(
            Method::GET,
            &format!("/v2/a/b/blobs/{d}"),
            &[("range", "bytes=2-6")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body.as_ref(), &bytes[2..7]);
    assert_eq!(
        r.header("content-range"),
        format!("bytes 2-6/{}", bytes.len())
    );
    let r = t
        .req(
            Method::GET,
            &format!("/v2/a/b/blobs/{d}"),
            &[("range", "bytes=100-")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn single_post_with_digest() {
    let t = setup().await;
    let bytes = b"post and done".to_vec();
    let d = Digest::sha256_of(&bytes);
    let r = t
        .req(
            Method::POST,
            &format!("/v2/x/blobs/uploads/?digest={d}"),
            &[],
            Body::from(bytes.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(t.stored(&d).await.unwrap(), bytes);
    // A wrong digest stores nothing.
    let r = t
        .req(
            Method::POST,
            &format!(
                "/v2/x/blobs/uploads/?digest={}",
                Digest::sha256_of(b"other")
            ),
            &[],
            Body::from(bytes.clone()),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    assert!(t.stored(&Digest::sha256_of(b"other")).await.is_none());
}

#[tokio::test]
async fn chunked_upload_with_and_without_content_range() {
    let t = setup().await;
    let loc = t.start("chunky").await;
    let r = t.get(&loc).await;
    assert_eq!(
        (r.status, r.header("range")),
        (StatusCode::NO_CONTENT, "0-0")
    );
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "0-4"), ("content-length", "5")],
            Body::from("hello"),
        )
        .await;
    assert_eq!((r.status, r.header("range")), (StatusCode::ACCEPTED, "0-4"));
    let loc = r.header("location").to_owned();
    let r = t
        .req(Method::PATCH, &loc, &[], Body::from(" chunked"))
        .await;
    assert_eq!(
        (r.status, r.header("range")),
        (StatusCode::ACCEPTED, "0-12")
    );
    // Out of order: 416, and the upload stays as it was.
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "5-9")],
            Body::from("xxxxx"),
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("range"), "0-12");
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "bytes 13-18/*")],
            Body::from(" world"),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = t.get(&loc).await;
    assert_eq!(r.header("range"), "0-18");
    // The final PUT carries the last chunk.
    let all = b"hello chunked world and the end";
    let d = Digest::sha256_of(all);
    let r = t.finish(&loc, &d, Body::from(" and the end")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(t.stored(&d).await.unwrap().as_ref(), all);
    assert_eq!(t.spool_files(), 0);
    let r = t.get(&loc).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
    let m = t.metrics();
    assert!(m.contains("shoal_proxy_uploads_in_flight 0"), "{m}");
    assert!(
        m.contains("shoal_proxy_upload_duration_seconds_count 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_wrong_digest_on_the_final_put_stores_nothing() {
    let t = setup().await;
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from("some bytes"))
        .await;
    let wrong = Digest::sha256_of(b"other bytes");
    let r = t.finish(&loc, &wrong, Body::empty()).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    assert_eq!(t.origin_received(), 0.0, "no byte went to the origin");
    assert_eq!(t.spool_files(), 0);
    assert_eq!(t.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");

    // With a last chunk in the PUT, the mismatch is found on the way: the origin gets a
    // broken body and keeps nothing.
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from("some bytes"))
        .await;
    let r = t.finish(&loc, &wrong, Body::from(" more")).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    assert!(t.stored(&wrong).await.is_none());

    // Missing or malformed digests.
    let loc = t.start("a").await;
    let r = t.req(Method::PUT, &loc, &[], Body::empty()).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest=sha256:zz"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn sha512_digests_are_checked_on_the_way() {
    let t = setup().await;
    let bytes = b"sha512 content";
    let mut h = shoal_core::digest::Hasher::new(shoal_core::Algorithm::Sha512);
    h.update(bytes);
    let d = h.finalize();
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from(&bytes[..]))
        .await;
    let r = t.finish(&loc, &d, Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(t.stored(&d).await.is_some());
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from("other")).await;
    let r = t.finish(&loc, &d, Body::empty()).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn a_body_that_breaks_off_leaves_nothing_behind() {
    let t = setup().await;
    let d = Digest::sha256_of(b"never completes");
    let broken = || {
        Body::from_stream(futures::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"never ")),
            Err(std::io::Error::other("client went away")),
        ]))
    };
    let loc = t.start("a").await;
    let r = t
        .req(Method::PUT, &format!("{loc}?digest={d}"), &[], broken())
        .await;
    assert!(r.status.is_client_error(), "{:?}", r.status);
    assert!(t.stored(&d).await.is_none());
    // A broken chunk is not kept either.
    let r = t.req(Method::PATCH, &loc, &[], broken()).await;
    assert_eq!(r.code(), "BLOB_UPLOAD_INVALID");
    assert_eq!(t.get(&loc).await.header("range"), "0-0");
    let r = t.req(Method::DELETE, &loc, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(t.spool_files(), 0);
    assert_eq!(t.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn mount_of_a_present_blob_and_of_a_missing_one() {
    let t = setup().await;
    let d = t.push_blob("from/repo", b"shared layer").await;
    let r = t
        .req(
            Method::POST,
            &format!("/v2/to/repo/blobs/uploads/?mount={d}&from=from/repo"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/to/repo/blobs/{d}"));
    let missing = Digest::sha256_of(b"nope");
    let r = t
        .req(
            Method::POST,
            &format!("/v2/to/repo/blobs/uploads/?mount={missing}&from=from/repo"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(
        r.header("location")
            .starts_with("/v2/to/repo/blobs/uploads/")
    );
    let r = t
        .req(
            Method::POST,
            "/v2/to/repo/blobs/uploads/?mount=sha256:bad&from=x",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}
