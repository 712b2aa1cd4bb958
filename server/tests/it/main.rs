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

/// This crate's directory, as cargo gives it to the running test (not as compiled in: a test
/// binary reused from a shared target directory by a checkout elsewhere would look there).
fn crate_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}
