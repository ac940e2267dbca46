//! What the agent's tests share beyond the harness in `shoal_agent::testing`.
// Helpers here are test code too; clippy's test exemption covers only `#[test]` functions.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

/// A client that neither retries nor follows redirects, with a generous timeout.
pub fn http() -> reqwest::Client {
    shoal_core::tls::plain_client_builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
