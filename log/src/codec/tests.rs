use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn varints_round_trip(v in any::<u64>()) {
        let mut w = Writer::default();
        w.varint(v);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        prop_assert_eq!(r.varint("v").unwrap(), v);
        prop_assert!(r.is_empty());
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut r = Reader::new(&bytes);
        let _ = r.varint("a");
        let _ = r.str("b");
        let _ = r.bytes("c");
        let _ = r.f64("d");
    }
}

#[test]
fn truncated_input_names_field_and_offset() {
    let mut w = Writer::default();
    w.str("hello");
    let bytes = w.into_bytes();
    let err = Reader::new(&bytes[..3]).str("event type").unwrap_err();
    assert_eq!(err.what, "event type");
    assert_eq!(err.offset, 1, "the offset after the length prefix");
    assert!(
        err.to_string().contains("length 5 exceeds the limit 3"),
        "{err}"
    );
}

#[test]
fn overlong_varint_is_rejected() {
    let bytes = [0xff; 11];
    assert!(Reader::new(&bytes).varint("v").is_err());
    let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert!(Reader::new(&too_big).varint("v").is_err());
}
