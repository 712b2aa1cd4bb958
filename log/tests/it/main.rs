//! The one integration-test binary of `themis-log` (STYLE.md): properties of the pure cores that
//! need more than a unit test, such as a million placements or golden files.

mod placement;
mod subscribe;
mod urn;
