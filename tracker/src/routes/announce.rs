//! `POST /v1/announce`: record the caller in its blob's swarm and hand it other peers
//! (an [`shoal_core::peer::AnnounceResponse`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use shoal_core::handout::{add_origins, origins_for};
use shoal_core::peer::AnnounceRequest;
use shoal_core::{ApiError, ErrorCode};

use crate::AppState;
use crate::table::{Announce, Pick};

/// An announce is about 200 bytes of JSON; anything much larger is not one.
pub const MAX_BODY: usize = 4096;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/announce",
        post(announce)
            .fallback(super::method_not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY)),
    )
}

async fn announce(
    State(s): State<AppState>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req = match parse(body).and_then(|r| check(r, s.trust_announced_addr)) {
        Ok(r) => r,
        Err(e) => {
            s.metrics.announces.invalid.inc();
            tracing::debug!(%source, error = %e, "malformed announce");
            return Err(e);
        }
    };
    // A dual-stack listener shows IPv4 callers as ::ffff:a.b.c.d; peers dial the plain
    // IPv4 address.
    let source = source.ip().to_canonical();
    let ip = match req.addr {
        Some(ip) if s.trust_announced_addr => ip.to_canonical(),
        _ => source,
    };
    let caller = Announce {
        digest: req.digest,
        peer_id: req.peer_id,
        addr: SocketAddr::new(ip, req.port),
        source,
        complete: req.complete,
    };

    let owners = s.origins.owners(&caller.digest);
    let origins = origins_for(&caller.as_caller(), owners.peers);
    let pick = Pick {
        want: s.handout_size,
        reserve: origins.len(),
        exclude: &owners.all_ids,
    };
    let handout = match s.table.announce(&caller, pick).await {
        Ok(h) => h,
        Err(e) => {
            s.metrics.announces.refused.inc();
            tracing::debug!(digest = %caller.digest, peer = ?caller.peer_id, error = %e, "announce refused");
            // Bounds clear as entries expire: one interval is a fair time to wait.
            return Err(ApiError::from(e)
                .with_header(http::header::RETRY_AFTER, s.interval_secs.to_string()));
        }
    };
    s.metrics.announces.answered(handout.recorded).inc();

    let mut peers = handout.peers;
    add_origins(&mut peers, origins, s.handout_size);
    s.metrics.handout_size.observe(peers.len() as f64);
    Ok((
        [(http::header::CONTENT_TYPE, "application/json")],
        crate::answer::encode(&peers, s.interval_secs),
    )
        .into_response())
}

fn parse(body: Result<Bytes, BytesRejection>) -> Result<AnnounceRequest, ApiError> {
    let body = body.map_err(|r| {
        ApiError::new(ErrorCode::SizeInvalid, r.body_text()).with_status(r.status())
    })?;
    let mut json = serde_json::Deserializer::from_slice(&body);
    let req: AnnounceRequest = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let field = e.path().to_string();
        let code = if field == "digest" {
            ErrorCode::DigestInvalid
        } else {
            ErrorCode::Unsupported
        };
        ApiError::new(code, format!("malformed announce: {e}"))
            .with_status(http::StatusCode::BAD_REQUEST)
    })?;
    json.end().map_err(|e| {
        ApiError::new(
            ErrorCode::Unsupported,
            format!("malformed announce: trailing data: {e}"),
        )
        .with_status(http::StatusCode::BAD_REQUEST)
    })?;
    Ok(req)
}

fn check(req: AnnounceRequest, trust_addr: bool) -> Result<AnnounceRequest, ApiError> {
    let bad = |m: String| {
        Err(
            ApiError::new(ErrorCode::Unsupported, format!("malformed announce: {m}"))
                .with_status(http::StatusCode::BAD_REQUEST),
        )
    };
    if req.port == 0 {
        return bad("port must be 1 to 65535".into());
    }
    if trust_addr
        && let Some(ip) = req.addr
        && let Some(why) = refused_addr(ip)
    {
        return bad(format!(
            "addr {ip} is {why}: not an address the tracker hands out"
        ));
    }
    Ok(req)
}

/// The AWS/GCP/Azure instance metadata service over IPv6 (over IPv4 it is 169.254.169.254,
/// link-local).
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Why an announced address may not be handed out to peers, if it may not: one that makes
/// every peer dial itself (loopback, unspecified), something on its own link or a cloud
/// metadata service (link-local), or many hosts at once (multicast, broadcast). Such an
/// announce is refused rather than recorded under its source address: an agent that
/// advertises one is misconfigured and should hear so, and an attacker gains nothing.
pub fn refused_addr(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.octets()[0] == 0 => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local (cloud metadata lives there)"),
        IpAddr::V4(v4) if v4.is_multicast() || v4.is_broadcast() => Some("multicast or broadcast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) if v6 == METADATA_V6 => Some("a cloud metadata address"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_point_peers_at_the_wrong_place_are_refused() {
        for bad in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "169.254.169.254",
            "169.254.1.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(refused_addr(ip).is_some(), "{bad} was let through");
        }
        for good in [
            "10.1.2.3",
            "192.168.9.9",
            "8.8.8.8",
            "fd00:ec2::253",
            "2001:db8::7",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(refused_addr(ip), None, "{good} was refused");
        }
    }
}
