//! Three origins on real sockets in one process: placement, forwarding, replication,
//! repair after a loss, a queue that survives a restart, tags across origins, metainfo.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use shoal_core::metainfo::piece_length_for;
use shoal_core::origin_client::{OriginClient, tag_key};
use shoal_core::testing::{metric_sum, metric_value, metrics_text, wait_until};
use shoal_core::{Digest, Metainfo, RepoName, Tag};
use shoal_origin::testing::TestCluster;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_uploaded_anywhere_is_readable_everywhere_and_lands_on_its_owners() {
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    // Through an owner and through the non-owner (which forwards the stream).
    for (owners, via) in [([0, 1], 0), ([1, 2], 0), ([0, 2], 2)] {
        let (data, digest) = blob_owned_by(&cluster, &owners, 2, 300_000);
        let res = put_blob(&auth, cluster.url(via), &digest, data.clone()).await;
        assert_eq!(res.status(), StatusCode::CREATED, "upload via {via}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["digest"], digest.to_string());
        assert_eq!(body["length"], data.len());

        for i in 0..3 {
            let (status, bytes) = get_blob(&auth, cluster.url(i), &digest).await;
            assert_eq!(status, StatusCode::OK, "read via {i}");
            assert_eq!(bytes.as_ref(), &data[..], "read via {i}");
        }
        wait_until("the blob is on exactly its owners", WAIT, || async {
            cluster.holders(&digest).await == owners
        })
        .await;
    }
    // The queue empties once the replicas are made.
    for i in 0..3 {
        wait_until("the replication queue drains", WAIT, || async {
            cluster.origin(i).queue_depth().await.unwrap() == (0, 0)
        })
        .await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_ranges_and_stats_through_any_origin() {
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let (data, digest) = blob_owned_by(&cluster, &[1, 2], 2, 100_000);
    let client = cluster.client();
    let info = client
        .put_blob(
            &digest,
            Some(data.len() as u64),
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(data.clone()))]),
        )
        .await
        .unwrap();
    assert_eq!(info.length, data.len() as u64);
    // A client that knows only the non-owner.
    let only0 = OriginClient::new(
        &[cluster.url(0).to_owned()],
        Some(cluster.write_token().to_owned()),
        cluster.client_tls(),
    )
    .unwrap();
    assert_eq!(
        only0.stat_blob(&digest).await.unwrap(),
        Some(data.len() as u64)
    );
    let body = only0.get_blob(&digest, Some(1000..2000)).await.unwrap();
    assert_eq!((body.length, body.total), (1000, data.len() as u64));
    let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(body.stream)
        .await
        .unwrap();
    assert_eq!(chunks.concat(), &data[1000..2000]);
    let unknown = Digest::sha256_of(b"nobody has this");
    assert_eq!(only0.stat_blob(&unknown).await.unwrap(), None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_owner_stops_the_blob_is_readable_and_repair_restores_its_copies() {
    let mut cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[0, 1], 2, 200_000);
    assert_eq!(
        put_blob(&auth, cluster.url(2), &digest, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let name: RepoName = "team/app".parse().unwrap();
    let tag: Tag = "v1".parse().unwrap();
    let client = cluster.client();
    client.put_tag(&name, &tag, &digest).await.unwrap();
    wait_until("the blob is on its two owners", WAIT, || async {
        cluster.holders(&digest).await == [0, 1]
    })
    .await;
    // The tag is acknowledged once on one owner; wait for its copy before losing one.
    for i in 0..3 {
        wait_until("the queues drain", WAIT, || async {
            cluster.origin(i).queue_depth().await.unwrap() == (0, 0)
        })
        .await;
    }

    cluster.stop(0).await;
    cluster.wait_converged().await;
    for i in [1, 2] {
        let (status, bytes) = get_blob(&auth, cluster.url(i), &digest).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bytes.as_ref(), &data[..]);
    }
    // Origin 2 now owns it in place of origin 0, and the repair pass copies it there.
    wait_until("repair restores two copies", WAIT, || async {
        cluster.holders(&digest).await == [1, 2]
    })
    .await;
    assert_eq!(client.get_tag(&name, &tag).await.unwrap(), Some(digest));
    // The tag, too, is on both live origins now (two live, two replicas).
    wait_until("repair restores the tag's copies", WAIT, || async {
        let mut both = true;
        for i in [1, 2] {
            let res = auth
                .clone()
                .get(format!("{}/v1/tags/{name}:{tag}?local=1", cluster.url(i)))
                .send()
                .await
                .unwrap();
            both &= res.status() == StatusCode::OK;
        }
        both
    })
    .await;

    // When origin 0 comes back it owns the blob again; origin 2's copy is then a stray.
    cluster.restart(0).await;
    cluster.wait_converged().await;
    wait_until("the copies are back on the owners only", WAIT, || async {
        for i in 0..3 {
            cluster.origin(i).repair().await.unwrap();
        }
        cluster.holders(&digest).await == [0, 1]
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_restarted_with_queued_replication_finishes_the_queue() {
    // No repair and no health checks to speak of: only the queue can make the copy.
    let mut cluster = TestCluster::builder(3)
        .replicas(2)
        .configure(|_, c| {
            c.repair.interval = Duration::ZERO;
            c.cluster.health_interval = Duration::from_secs(3600);
        })
        .start()
        .await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[0, 1], 2, 150_000);
    cluster.stop(1).await;
    assert_eq!(
        put_blob(&auth, cluster.url(0), &digest, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    wait_until(
        "the copy to the stopped owner has failed once",
        WAIT,
        || async {
            cluster.origin(0).queue_depth().await.unwrap().0 == 1
                && cluster.origin(0).live_members().len() == 2
        },
    )
    .await;
    cluster.stop(0).await;

    cluster.restart(1).await;
    assert!(cluster.holders(&digest).await.is_empty());
    cluster.restart(0).await;
    wait_until(
        "the restarted origin copies the blob to its owner",
        WAIT,
        || async { cluster.holders(&digest).await == [0, 1] },
    )
    .await;
    wait_until("its queue is empty", WAIT, || async {
        cluster.origin(0).queue_depth().await.unwrap() == (0, 0)
    })
    .await;
    let (status, bytes) = get_blob(&auth, cluster.url(1), &digest).await;
    assert_eq!((status, bytes.as_ref()), (StatusCode::OK, &data[..]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_written_through_one_origin_is_read_through_another() {
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    let name: RepoName = "library/alpine".parse().unwrap();
    let d1 = Digest::sha256_of(b"manifest 1");
    let d2 = Digest::sha256_of(b"manifest 2");
    let one = |i: usize| {
        OriginClient::new(
            &[cluster.url(i).to_owned()],
            Some(cluster.write_token().to_owned()),
            cluster.client_tls(),
        )
        .unwrap()
    };

    for (i, t) in ["3.19", "3.20", "latest", "edge"].iter().enumerate() {
        let tag: Tag = t.parse().unwrap();
        one(i % 3).put_tag(&name, &tag, &d1).await.unwrap();
        for j in 0..3 {
            assert_eq!(
                one(j).get_tag(&name, &tag).await.unwrap(),
                Some(d1),
                "{t} via {j}"
            );
        }
    }
    // Overwrite through a different origin; every origin sees the new value.
    let latest: Tag = "latest".parse().unwrap();
    one(1).put_tag(&name, &latest, &d2).await.unwrap();
    for j in 0..3 {
        assert_eq!(one(j).get_tag(&name, &latest).await.unwrap(), Some(d2));
    }
    let owners = cluster.owners(&tag_key(&name, &latest), 2);
    wait_until("the tag's replicas agree", WAIT, || async {
        let mut all = true;
        for &o in &owners {
            let res = auth
                .clone()
                .get(format!("{}/v1/tags/{name}:latest?local=1", cluster.url(o)))
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = res.json().await.unwrap_or_default();
            all &= v["digest"] == d2.to_string();
        }
        all
    })
    .await;

    // Listings span the cluster, sorted, paginated.
    for j in 0..3 {
        let list = one(j).list_tags(&name, None, None).await.unwrap().unwrap();
        assert_eq!(list.tags, ["3.19", "3.20", "edge", "latest"], "via {j}");
        let page = one(j)
            .list_tags(&name, Some(2), Some("3.20"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.tags, ["edge", "latest"]);
        assert_eq!(
            one(j).list_repositories(None, None).await.unwrap(),
            ["library/alpine"]
        );
    }
    let unknown: RepoName = "no/such".parse().unwrap();
    assert_eq!(one(0).list_tags(&unknown, None, None).await.unwrap(), None);

    // A delete through any origin is seen everywhere.
    one(2).delete_tag(&name, &latest).await.unwrap();
    for j in 0..3 {
        assert_eq!(one(j).get_tag(&name, &latest).await.unwrap(), None);
    }
    let err = one(0).delete_tag(&name, &latest).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let list = one(1).list_tags(&name, None, None).await.unwrap().unwrap();
    assert_eq!(list.tags, ["3.19", "3.20", "edge"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metainfo_of_a_100_mib_blob_matches_an_independent_computation() {
    use sha2::Digest as _;
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    let data = bytes::Bytes::from(random_bytes(100 << 20));
    let digest = Digest::Sha256(sha2::Sha256::digest(&data).into());
    // Streamed in 1 MiB chunks, through whichever origin the client picks.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..data.len())
        .step_by(1 << 20)
        .map(|i| Ok(data.slice(i..(i + (1 << 20)).min(data.len()))))
        .collect();
    let client = cluster.client();
    client
        .put_blob(
            &digest,
            Some(data.len() as u64),
            futures::stream::iter(chunks),
        )
        .await
        .unwrap();

    let piece_length = piece_length_for(data.len() as u64) as usize;
    let expected: Vec<[u8; 32]> = data
        .chunks(piece_length)
        .map(|p| sha2::Sha256::digest(p).into())
        .collect();
    for i in 0..3 {
        let only = OriginClient::new(
            &[cluster.url(i).to_owned()],
            Some(cluster.write_token().to_owned()),
            cluster.client_tls(),
        )
        .unwrap();
        let m: Metainfo = only.metainfo(&digest).await.unwrap();
        assert_eq!(m.digest(), digest);
        assert_eq!(m.length(), data.len() as u64);
        assert_eq!(m.piece_length() as usize, piece_length);
        let got: Vec<[u8; 32]> = (0..m.piece_count())
            .map(|p| *m.piece_hash(p).unwrap())
            .collect();
        assert_eq!(got, expected, "metainfo via origin {i}");
    }
    // The replica computed its own; it agrees too.
    let mut owners = cluster.owners(&shoal_core::origin_client::blob_key(&digest), 2);
    owners.sort();
    wait_until("the replica holds the blob", WAIT, || async {
        cluster.holders(&digest).await == owners
    })
    .await;
    for o in owners {
        let res = auth
            .clone()
            .get(format!(
                "{}/v1/blobs/{digest}/metainfo?local=1",
                cluster.url(o)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // Signed by the cluster's key, whichever owner computed it.
        let trust = shoal_core::signature::MetainfoTrust::from_pem(
            &shoal_origin::testing::metainfo_keys().public_pem,
            false,
        )
        .unwrap();
        let m = trust
            .accept(res.bytes().await.unwrap(), digest)
            .unwrap()
            .metainfo;
        assert_eq!(m.length(), data.len() as u64);
        assert_eq!(m.piece_hash(0), Some(&expected[0]));
        assert_eq!(m.piece_hash(expected.len() - 1), expected.last());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_missing_everywhere_is_read_through_from_the_backend() {
    let cluster = TestCluster::builder(3)
        .replicas(2)
        .shared_backend()
        .start()
        .await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[1, 2], 2, 50_000);
    // Written back after the upload…
    assert_eq!(
        put_blob(&auth, cluster.url(0), &digest, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let hex = digest.hex();
    let in_backend = cluster
        .backend_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(&hex);
    wait_until("the blob is written back", WAIT, || async {
        in_backend.exists()
    })
    .await;
    wait_until("the blob is on its owners", WAIT, || async {
        cluster.holders(&digest).await == [1, 2]
    })
    .await;
    // …then lost on every origin, and read through again on demand.
    for i in [1, 2] {
        let res = auth
            .clone()
            .delete(format!("{}/v1/blobs/{digest}?internal=1", cluster.url(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    assert!(cluster.holders(&digest).await.is_empty());
    let (status, bytes) = get_blob(&auth, cluster.url(0), &digest).await;
    assert_eq!((status, bytes.as_ref()), (StatusCode::OK, &data[..]));
    wait_until("the owners hold it again", WAIT, || async {
        cluster.holders(&digest).await == [1, 2]
    })
    .await;

    // A corrupt backend copy is refused, never served.
    let (bad, bad_digest) = blob_owned_by(&cluster, &[0, 1], 2, 10_000);
    let hex = bad_digest.hex();
    let path = cluster
        .backend_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(&hex);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut wrong = bad.clone();
    wrong[0] ^= 1;
    std::fs::write(&path, &wrong).unwrap();
    let (status, _) = get_blob(&auth, cluster.url(0), &bad_digest).await;
    assert!(status.is_server_error(), "{status}");
    assert!(cluster.holders(&bad_digest).await.is_empty());

    // Tags too.
    let name: RepoName = "from/backend".parse().unwrap();
    let tag: Tag = "v9".parse().unwrap();
    let tag_file = cluster
        .backend_dir()
        .join("repositories/from/backend/_tags/v9");
    std::fs::create_dir_all(tag_file.parent().unwrap()).unwrap();
    std::fs::write(&tag_file, format!("{digest}\n")).unwrap();
    assert_eq!(
        cluster.client().get_tag(&name, &tag).await.unwrap(),
        Some(digest)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_without_an_advertised_url_find_themselves() {
    let cluster = TestCluster::builder(3)
        .replicas(2)
        .configure(|_, c| c.advertise_url.clear())
        .start()
        .await;
    let auth = cluster.http();
    for i in 0..3 {
        let origin = cluster.origin(i);
        wait_until("the origin finds itself", WAIT, || async {
            origin.member().as_deref() == Some(cluster.url(i))
        })
        .await;
        let info = OriginClient::new(
            &[cluster.url(i).to_owned()],
            Some(cluster.write_token().to_owned()),
            cluster.client_tls(),
        )
        .unwrap()
        .info(cluster.url(i))
        .await
        .unwrap();
        assert_eq!(info.member, cluster.url(i));
        assert_eq!(info.peer_id, origin.peer_id());
        let ready = auth
            .clone()
            .get(format!("{}/ready", cluster.url(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
    }
    let (data, digest) = blob_owned_by(&cluster, &[0, 2], 2, 10_000);
    assert_eq!(
        put_blob(&auth, cluster.url(1), &digest, data)
            .await
            .status(),
        StatusCode::CREATED
    );
    wait_until("the blob is on its owners", WAIT, || async {
        cluster.holders(&digest).await == [0, 2]
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[0, 1], 2, 40_000);
    assert_eq!(
        put_blob(&auth, cluster.url(0), &digest, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        get_blob(&auth, cluster.url(0), &digest).await.1.len(),
        data.len()
    );
    wait_until("the replica is made", WAIT, || async {
        cluster.holders(&digest).await == [0, 1]
    })
    .await;
    let text = metrics_text(cluster.registry(0));
    let sum = |name: &str, labels: &[&str]| metric_sum(&text, name, labels);
    let value = |name: &str| {
        metric_value(&text, name).unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert!(sum("shoal_origin_received_bytes_total", &["proto=\"http\""]) >= data.len() as f64);
    // The download and the replica copy.
    assert!(sum("shoal_origin_sent_bytes_total", &["proto=\"http\""]) >= 2.0 * data.len() as f64);
    assert_eq!(
        sum("shoal_origin_sent_bytes_total", &["proto=\"peer\""]),
        0.0
    );
    assert_eq!(value("shoal_origin_blobs"), 1.0);
    assert_eq!(value("shoal_origin_stored_bytes"), data.len() as f64);
    assert_eq!(value("shoal_origin_live_members"), 3.0);
    assert!(
        sum(
            "shoal_origin_requests_total",
            &["route=\"blobs\"", "status=\"2xx\""]
        ) >= 2.0
    );
    // Every family is there from the start, at zero if nothing happened.
    for series in [
        "shoal_origin_sent_bytes_total{proto=\"peer\"}",
        "shoal_origin_queue_depth{queue=\"replication\"}",
        "shoal_origin_queue_depth{queue=\"writeback\"}",
        "shoal_origin_repair_actions_total{action=\"copy\"}",
        "shoal_origin_repair_actions_total{action=\"drop_stray\"}",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(series)),
            "{series} missing from:\n{text}"
        );
    }
    cluster.shutdown().await;
}
