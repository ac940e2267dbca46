//! Shoal's swarm.
#![forbid(unsafe_code)]

pub mod bitfield;
pub mod engine;
pub mod sim;
pub mod wire;
