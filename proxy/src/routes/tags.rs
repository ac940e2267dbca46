//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, paginated with `n` and `last`.
//!
//! A page holds at most `max_page` entries whatever `n` asks; when more follow, a `Link`
//! header names the next page, as the spec describes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::reference::RepoName;

use super::{Params, origin_error};
use crate::state::AppState;

/// `n` and `last` from the query: the page size to use (bounded) and where to start.
fn page(s: &AppState, params: &Params) -> Result<(usize, Option<String>), ApiError> {
    let n = match params.get("n") {
        None => s.config.max_page,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Unsupported,
                    format!("n must be a number of entries, not {v:?}"),
                )
                .with_status(StatusCode::BAD_REQUEST)
            })?
            .min(s.config.max_page),
    };
    Ok((n, params.get("last").map(str::to_owned)))
}

/// Cuts `entries` (asked for one more than `n`) to `n`, and says where the next page starts
/// if there is one.
fn cut(mut entries: Vec<String>, n: usize) -> (Vec<String>, Option<String>) {
    if entries.len() > n {
        entries.truncate(n);
        let last = entries.last().cloned();
        (entries, last)
    } else {
        (entries, None)
    }
}

/// A spec `Link` header for the next page. Tags and repository names need no escaping
/// in a query.
fn link(path: &str, n: usize, last: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("<{path}?n={n}&last={last}>; rel=\"next\"")).ok()
}

fn json_page(body: serde_json::Value, next: Option<HeaderValue>) -> Response {
    let mut res = axum::Json(body).into_response();
    if let Some(l) = next {
        res.headers_mut().insert(header::LINK, l);
    }
    res
}

pub async fn list(s: &AppState, name: &RepoName, params: &Params) -> Result<Response, ApiError> {
    let (n, last) = page(s, params)?;
    let unknown = || {
        ApiError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} is not known to the registry"),
        )
    };
    if n == 0 {
        // Still says whether the repository exists.
        s.origins
            .list_tags(name, Some(1), None)
            .await
            .map_err(origin_error)?
            .ok_or_else(unknown)?;
        return Ok(json_page(
            serde_json::json!({"name": name, "tags": []}),
            None,
        ));
    }
    let got = s
        .origins
        .list_tags(name, Some(n + 1), last.as_deref())
        .await
        .map_err(origin_error)?
        .ok_or_else(unknown)?;
    let (tags, next) = cut(got.tags, n);
    let next = next.and_then(|l| link(&format!("/v2/{name}/tags/list"), n, &l));
    Ok(json_page(
        serde_json::json!({"name": name, "tags": tags}),
        next,
    ))
}

pub async fn catalog(s: &AppState, params: &Params) -> Result<Response, ApiError> {
    let (n, last) = page(s, params)?;
    if n == 0 {
        return Ok(json_page(serde_json::json!({"repositories": []}), None));
    }
    let got = s
        .origins
        .list_repositories(Some(n + 1), last.as_deref())
        .await
        .map_err(origin_error)?;
    let (repositories, next) = cut(got, n);
    let next = next.and_then(|l| link("/v2/_catalog", n, &l));
    Ok(json_page(
        serde_json::json!({"repositories": repositories}),
        next,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutting_pages() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cut(v(&["a", "b", "c"]), 2),
            (v(&["a", "b"]), Some("b".into()))
        );
        assert_eq!(cut(v(&["a", "b"]), 2), (v(&["a", "b"]), None));
        assert_eq!(
            link("/v2/a/b/tags/list", 2, "v1.0").unwrap(),
            "</v2/a/b/tags/list?n=2&last=v1.0>; rel=\"next\""
        );
    }
}
