use super::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let sealed = seal_frame(&payload);
        prop_assert_eq!(open_frame(&sealed, &"t").unwrap(), &payload[..]);
    }

    #[test]
    fn any_flipped_bit_is_detected(
        payload in proptest::collection::vec(any::<u8>(), 1..256),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut sealed = seal_frame(&payload);
        let i = at.index(sealed.len());
        sealed[i] ^= 1 << bit;
        let err = open_frame(&sealed, &"log entry 7").unwrap_err().to_string();
        prop_assert!(err.contains("log entry 7"), "{}", err);
    }
}

#[test]
fn short_frame_is_an_error_not_a_panic() {
    assert!(open_frame(&[1, 2], &"x").is_err());
}
