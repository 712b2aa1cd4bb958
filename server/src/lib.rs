//! The `themis` server: HTTP API (axum on hyper), node assembly, metrics, and the command-line
//! client. The only crate that knows every other crate (DESIGN.md §3).
//!
//! Invariant: every error a client can see is problem+json with a stable code; nothing here
//! decides what the log holds, it only validates, routes and reports.

pub mod api;
pub mod client;
pub mod config;
pub mod http_server;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod open_files;
pub mod peer;
pub mod tail;
pub mod wire_tcp;
