//! The OCI error envelope, and the one HTTP error type every Shoal server answers with.
//!
//! `{"errors":[{"code":"DIGEST_INVALID","message":"…","detail":…}]}` with the status the
//! distribution spec (or, for the few codes it lacks, the reference registry) gives. An
//! internal cause is logged once, where the error is made, and the client sees only
//! `INTERNAL_ERROR` with no paths or other detail.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// Every error code of the OCI distribution spec, and three of Shoal's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    #[serde(rename = "TOOMANYREQUESTS")]
    TooManyRequests,
    /// A `Range` that cannot be satisfied (the reference registry's code).
    RangeInvalid,
    /// Something failed inside; the cause is in the server's log.
    InternalError,
    /// A dependency (origins, tracker) cannot be reached just now; retrying may help.
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BlobUnknown,
        ErrorCode::BlobUploadInvalid,
        ErrorCode::BlobUploadUnknown,
        ErrorCode::DigestInvalid,
        ErrorCode::ManifestBlobUnknown,
        ErrorCode::ManifestInvalid,
        ErrorCode::ManifestUnknown,
        ErrorCode::NameInvalid,
        ErrorCode::NameUnknown,
        ErrorCode::SizeInvalid,
        ErrorCode::Unauthorized,
        ErrorCode::Denied,
        ErrorCode::Unsupported,
        ErrorCode::TooManyRequests,
        ErrorCode::RangeInvalid,
        ErrorCode::InternalError,
        ErrorCode::Unavailable,
    ];

    /// The status a response with this code carries unless a handler says otherwise.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestUnknown | NameUnknown => {
                StatusCode::NOT_FOUND
            }
            BlobUploadInvalid | DigestInvalid | ManifestBlobUnknown | ManifestInvalid
            | NameInvalid | SizeInvalid => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Denied => StatusCode::FORBIDDEN,
            Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid => "SIZE_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            RangeInvalid => "RANGE_INVALID",
            InternalError => "INTERNAL_ERROR",
            Unavailable => "UNAVAILABLE",
        }
    }
}

/// One entry of the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub errors: Vec<ErrorInfo>,
}

/// An error answer: code, status, message, optional detail and extra headers
/// (`WWW-Authenticate`, `Content-Range`, …).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: Cow<'static, str>,
    pub detail: Option<serde_json::Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// A failure inside the server. The cause is logged here, once, with the request's
    /// span; the client learns nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(ErrorCode::InternalError, "internal error")
    }

    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        ApiError::new(
            ErrorCode::Unavailable,
            "the service is temporarily unavailable",
        )
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Adds a header; a value that is not a valid header value is dropped.
    pub fn with_header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            errors: vec![ErrorInfo {
                code: self.code,
                message: self.message.to_string(),
                detail: self.detail.clone(),
            }],
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.envelope()).unwrap_or_default();
        let mut res = (
            self.status,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            res.headers_mut().append(name, value);
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(d) => {
                ApiError::new(ErrorCode::BlobUnknown, format!("blob {d} is unknown"))
            }
            StoreError::DigestMismatch(m) => ApiError::new(ErrorCode::DigestInvalid, m.to_string()),
            StoreError::SizeMismatch { .. } => ApiError::new(ErrorCode::SizeInvalid, e.to_string()),
            StoreError::RangeNotSatisfiable { length, .. } => {
                ApiError::new(ErrorCode::RangeInvalid, "requested range not satisfiable")
                    .with_header(http::header::CONTENT_RANGE, format!("bytes */{length}"))
            }
            StoreError::BadPiece { .. } | StoreError::Io(_) => ApiError::internal(e),
            StoreError::Source(source) => ApiError::new(
                ErrorCode::BlobUploadInvalid,
                format!("upload body failed: {source}"),
            ),
        }
    }
}

impl From<crate::reference::NameError> for ApiError {
    fn from(e: crate::reference::NameError) -> Self {
        use crate::reference::NameError;
        match e {
            NameError::Reference(_) | NameError::Tag => {
                ApiError::new(ErrorCode::ManifestInvalid, e.to_string())
            }
            _ => ApiError::new(ErrorCode::NameInvalid, e.to_string()),
        }
    }
}

impl From<crate::digest::DigestError> for ApiError {
    fn from(e: crate::digest::DigestError) -> Self {
        ApiError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn codes_serialize_as_the_spec_spells_them() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn spec_statuses() {
        assert_eq!(ErrorCode::BlobUnknown.status(), 404);
        assert_eq!(ErrorCode::DigestInvalid.status(), 400);
        assert_eq!(ErrorCode::Unauthorized.status(), 401);
        assert_eq!(ErrorCode::Denied.status(), 403);
        assert_eq!(ErrorCode::TooManyRequests.status(), 429);
    }

    #[tokio::test]
    async fn response_carries_envelope_and_headers() {
        let res = ApiError::new(ErrorCode::Unauthorized, "authentication required")
            .with_header(http::header::WWW_AUTHENTICATE, "Basic realm=\"shoal\"")
            .into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.headers()[http::header::WWW_AUTHENTICATE],
            "Basic realm=\"shoal\""
        );
        assert_eq!(
            res.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let env: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            env,
            serde_json::json!({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]})
        );
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let cause = StoreError::Io(std::io::Error::other("/var/lib/shoal/secret/path: EIO"));
        let res = ApiError::from(cause).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("INTERNAL_ERROR"));
        assert!(!text.contains("/var/lib"), "{text}");
    }

    #[test]
    fn store_errors_map_to_client_codes() {
        let d = crate::Digest::sha256_of(b"a");
        assert_eq!(
            ApiError::from(StoreError::NotFound(d)).code,
            ErrorCode::BlobUnknown
        );
        let e = ApiError::from(StoreError::RangeNotSatisfiable {
            start: 5,
            end: 9,
            length: 4,
        });
        assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(e.headers[0].1, "bytes */4");
    }
}
