//! The engine of dashboard-server: the state document, change tracking and message encoding.
//!
//! The core (every module but `python`) is plain Rust, tested with `cargo test`; the PyO3 binding
//! `dashboard_server._fastdiff` lives in `python.rs`, behind the `python` feature. The contract
//! both this engine and its pure-Python twin follow is `docs/engine.md`.

pub mod diff;
pub mod doc;
pub mod encode;
pub mod json;
pub mod msgpack;
pub mod omap;
pub mod pointer;
pub mod tape;
pub mod value;

#[cfg(feature = "python")]
mod python;

pub use doc::{ChangeSet, StateDoc};
pub use value::{Value, MAX_DEPTH};
