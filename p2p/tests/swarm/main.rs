//! Nodes over real TCP on 127.0.0.1, in one process: honest swarms (`honest.rs`), peers
//! that corrupt pieces, stall, lie about a blob or stop reading (`hostile.rs`), and attacks
//! on identity and on the node's bounds (`identity.rs`), and the peer protocol over mutual
//! TLS with the attacks on it (`tls.rs`). Each hostile peer is hand-written against the
//! wire module.
// Helpers here are test code too; clippy's test exemption covers only `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod from_store;
mod honest;
mod hostile;
mod identity;
mod support;
mod tls;
