use super::*;

#[test]
fn the_cap_fits_in_the_limit_after_the_reserve() {
    // The common default: 1024 descriptors, 256 kept back, 64 for refusals.
    assert_eq!(connections_cap(10_000, Some(1024)), 704);
    // A raised limit leaves the flag in force.
    assert_eq!(connections_cap(10_000, Some(1 << 20)), 10_000);
    assert_eq!(connections_cap(10_000, None), 10_000);
    // The reserve grows with the limit, up to its maximum.
    assert_eq!(reserved(20_000), 4096);
    assert_eq!(connections_cap(50_000, Some(20_000)), 20_000 - 4096 - 64);
    // A limit too small for the reserve still serves one connection.
    assert_eq!(connections_cap(10_000, Some(100)), 1);
    assert_eq!(connections_cap(0, None), 1);
}

#[test]
fn raising_is_idempotent() {
    let first = raise();
    let second = raise();
    assert_eq!(second.before, first.soft);
    assert_eq!(second.soft, first.soft);
    if let (Some(soft), Some(hard)) = (first.soft, first.hard) {
        assert!(soft <= hard);
    }
}
