//! HTTP `Range` requests on blobs (RFC 9110 §14), one range at a time.
//!
//! A header that is not a single `bytes=` range (another unit, several ranges, bad syntax)
//! is ignored and the whole blob is served, as the RFC allows. A single range that starts
//! past the end is unsatisfiable (416 with `Content-Range: bytes */<length>`).

use std::ops::Range;

use crate::error::{ApiError, ErrorCode};

/// The outcome of reading a `Range` header against a blob of known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// Serve everything (no header, or one to ignore).
    Full,
    /// Serve these bytes with 206.
    Partial(Range<u64>),
}

/// The range cannot be satisfied for a blob of `length` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range not satisfiable for a blob of {length} bytes")]
pub struct Unsatisfiable {
    pub length: u64,
}

impl From<Unsatisfiable> for ApiError {
    fn from(e: Unsatisfiable) -> Self {
        ApiError::new(ErrorCode::RangeInvalid, e.to_string())
            .with_header(http::header::CONTENT_RANGE, format!("bytes */{}", e.length))
    }
}

/// Reads a `Range` header value against a blob of `length` bytes.
pub fn parse(header: Option<&str>, length: u64) -> Result<RangeRequest, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(RangeRequest::Full);
    };
    if spec.contains(',') {
        return Ok(RangeRequest::Full);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(RangeRequest::Full);
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let unsatisfiable = Unsatisfiable { length };
    match (num(first), num(last), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (None, Some(n), _) if first.trim().is_empty() => {
            if n == 0 || length == 0 {
                return Err(unsatisfiable);
            }
            Ok(RangeRequest::Partial(length.saturating_sub(n)..length))
        }
        // bytes=A-
        (Some(a), None, true) => {
            if a >= length {
                return Err(unsatisfiable);
            }
            Ok(RangeRequest::Partial(a..length))
        }
        // bytes=A-B, B inclusive and clamped to the end.
        (Some(a), Some(b), _) if a <= b => {
            if a >= length {
                return Err(unsatisfiable);
            }
            Ok(RangeRequest::Partial(a..b.saturating_add(1).min(length)))
        }
        _ => Ok(RangeRequest::Full),
    }
}

/// The `Content-Range` value for a 206 answer.
pub fn content_range(range: &Range<u64>, length: u64) -> String {
    format!(
        "bytes {}-{}/{}",
        range.start,
        range.end.saturating_sub(1),
        length
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(parse(None, 10), Ok(Full));
        assert_eq!(parse(Some("bytes=0-0"), 10), Ok(Partial(0..1)));
        assert_eq!(parse(Some("bytes=9-9"), 10), Ok(Partial(9..10)));
        assert_eq!(parse(Some("bytes=2-"), 10), Ok(Partial(2..10)));
        assert_eq!(parse(Some("bytes=5-100"), 10), Ok(Partial(5..10)));
        assert_eq!(parse(Some("bytes=-3"), 10), Ok(Partial(7..10)));
        assert_eq!(parse(Some("bytes=-30"), 10), Ok(Partial(0..10)));
        assert_eq!(
            parse(Some("bytes=10-"), 10),
            Err(Unsatisfiable { length: 10 })
        );
        assert_eq!(
            parse(Some("bytes=10-12"), 10),
            Err(Unsatisfiable { length: 10 })
        );
        assert_eq!(
            parse(Some("bytes=-0"), 10),
            Err(Unsatisfiable { length: 10 })
        );
        assert_eq!(parse(Some("bytes=0-"), 0), Err(Unsatisfiable { length: 0 }));
        for ignored in [
            "items=0-1",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=0-1,3-4",
            "bytes=",
            "bytes=--1",
        ] {
            assert_eq!(parse(Some(ignored), 10), Ok(Full), "{ignored}");
        }
        assert_eq!(content_range(&(7..10), 10), "bytes 7-9/10");
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(h in "\\PC{0,40}", len in 0u64..1000) {
            if let Ok(Partial(r)) = parse(Some(&h), len) {
                prop_assert!(r.start < r.end && r.end <= len);
            }
        }

        /// Numbers anywhere in u64, up to its last value, where a `+ 1` or a length minus
        /// a suffix would wrap.
        #[test]
        fn extreme_numbers_stay_in_bounds(
            a in prop_oneof![any::<u64>(), Just(u64::MAX), Just(u64::MAX - 1), Just(0u64)],
            b in prop_oneof![any::<u64>(), Just(u64::MAX), Just(u64::MAX - 1), Just(0u64)],
            len in prop_oneof![any::<u64>(), Just(u64::MAX), Just(1u64), Just(0u64)],
        ) {
            for h in [format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{b}")] {
                match parse(Some(&h), len) {
                    Ok(Partial(r)) => {
                        prop_assert!(r.start < r.end && r.end <= len, "{h} {len}: {r:?}");
                        let _ = content_range(&r, len);
                    }
                    Ok(Full) => {}
                    Err(e) => prop_assert_eq!(e.length, len),
                }
            }
        }

        #[test]
        fn explicit_ranges(a in 0u64..2000, extra in 0u64..2000, len in 1u64..1000) {
            let b = a + extra;
            let got = parse(Some(&format!("bytes={a}-{b}")), len);
            if a >= len {
                prop_assert_eq!(got, Err(Unsatisfiable { length: len }));
            } else {
                prop_assert_eq!(got, Ok(Partial(a..(b + 1).min(len))));
            }
        }
    }
}
