//! The one integration-test binary of `themis-server` (STYLE.md). `tidy` checks workspace-wide
//! rules that no single crate can check on its own.

mod api;
mod aql;
mod cluster;
mod crash;
mod graph;
mod hardening;
mod harness;
mod http_limits;
mod nemesis;
mod openapi;
mod python;
mod search;
mod sql;
mod subscribe;
mod tidy;
mod timeseries;
mod views;
