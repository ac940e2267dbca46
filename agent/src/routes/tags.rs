//! `GET /v2/<name>/tags/list?n=&last=`: the repository's tags, from the origins.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use shoal_core::reference::RepoName;
use shoal_core::{ApiError, ErrorCode};

use crate::state::AppState;

/// The most tags one page holds, whatever `n` asks.
const MAX_PAGE: usize = 1000;

pub async fn list(st: &AppState, name: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let name: RepoName = name.parse()?;
    let mut n = None;
    let mut last = None;
    for (k, v) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        match k {
            "n" => {
                let parsed = v.parse::<usize>().map_err(|_| {
                    ApiError::new(ErrorCode::Unsupported, "n must be a number")
                        .with_status(StatusCode::BAD_REQUEST)
                })?;
                n = Some(parsed.min(MAX_PAGE));
            }
            "last" => last = Some(v.to_owned()),
            _ => {}
        }
    }
    let list = st
        .upstream
        .origins()
        .list_tags(&name, n, last.as_deref())
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NameUnknown,
                format!("repository {name} is unknown"),
            )
        })?;
    let mut res = axum::Json(&list).into_response();
    if let (Some(n), Some(tail)) = (n, list.tags.last())
        && list.tags.len() >= n
        && let Ok(v) = http::HeaderValue::from_str(&format!(
            "</v2/{name}/tags/list?n={n}&last={tail}>; rel=\"next\""
        ))
    {
        res.headers_mut().insert(http::header::LINK, v);
    }
    Ok(res)
}
