//! The one integration-test binary of `themis-log` (STYLE.md): properties of the pure cores that
//! need more than a unit test, such as a million placements or golden files.

mod placement;
mod subscribe;
mod urn;

/// This crate's directory, as cargo gives it to the running test (not as compiled in: a test
/// binary reused from a shared target directory by a checkout elsewhere would look there).
fn crate_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}
