use proptest::prelude::*;

use super::*;

fn pos(shard: u32, lsn: u64) -> Position {
    Position::new(ShardId(shard), Lsn(lsn))
}

fn token(positions: &[(u32, u64)]) -> Token {
    positions.iter().map(|&(s, l)| pos(s, l)).collect()
}

#[test]
fn observe_keeps_the_highest_lsn_per_shard() {
    let mut t = Token::new();
    assert!(t.is_empty());
    t.observe(pos(2, 10));
    t.observe(pos(2, 7));
    t.observe(pos(0, 3));
    assert_eq!(t.get(ShardId(2)), Some(Lsn(10)));
    assert_eq!(t.get(ShardId(0)), Some(Lsn(3)));
    assert_eq!(t.get(ShardId(1)), None);
    assert_eq!(t.len(), 2);
    assert_eq!(t.iter().collect::<Vec<_>>(), [pos(0, 3), pos(2, 10)]);
    assert_eq!(Token::from_position(pos(4, 1)), Token::from(pos(4, 1)));
}

#[test]
fn merge_and_covers() {
    let mut a = token(&[(0, 5), (1, 9)]);
    let b = token(&[(1, 12), (3, 1)]);
    assert!(!a.covers(&b));
    assert!(!b.covers(&a));
    a.merge(&b);
    assert_eq!(a, token(&[(0, 5), (1, 12), (3, 1)]));
    assert!(a.covers(&b));
    assert!(a.covers(&a));
    assert!(a.covers(&Token::new()));
    assert!(!Token::new().covers(&a));
    assert!(!a.covers(&token(&[(1, 13)])));
    assert!(!a.covers(&token(&[(2, 0)])));
}

/// The text of these tokens must never change: clients store tokens (consumer checkpoints, SSE ids)
/// and hand them back after an upgrade. A new format gets a new version prefix instead.
#[test]
fn golden_encodings() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283, "crc-32c check value");
    let cases = [
        (Token::new(), "t1.AAAAAA"),
        (token(&[(0, 12)]), "t1.AAwCuCK8"),
        (
            token(&[(0, 1), (3, 300), (17, u64::MAX)]),
            "t1.AAEDrAIR____________AVvVKco",
        ),
        (token(&[(u32::MAX, 0)]), "t1._____w8AAvWGGA"),
    ];
    for (t, text) in cases {
        assert_eq!(t.encode(), text, "{t:?}");
        assert_eq!(Token::decode(text).unwrap(), t);
    }
}

#[test]
fn serde_display_and_from_str_use_the_text() {
    let t = token(&[(0, 12)]);
    assert_eq!(t.to_string(), "t1.AAwCuCK8");
    assert_eq!(serde_json::to_string(&t).unwrap(), r#""t1.AAwCuCK8""#);
    assert_eq!(
        serde_json::from_str::<Token>(r#""t1.AAwCuCK8""#).unwrap(),
        t
    );
    assert_eq!("t1.AAwCuCK8".parse::<Token>().unwrap(), t);
    let err = serde_json::from_str::<Token>(r#""t1.AAwCuCK9""#).unwrap_err();
    assert!(err.to_string().contains("invalid token"), "{err}");
}

#[test]
fn mangled_tokens_are_rejected_with_a_reason() {
    let cases: [(&str, TokenError); 9] = [
        ("", TokenError::MissingVersion),
        ("AAwCuCK8", TokenError::MissingVersion),
        (
            "t2.AAwCuCK8",
            TokenError::UnsupportedVersion {
                version: "t2".into(),
            },
        ),
        (
            "t1.AAwC uCK8",
            TokenError::Base64Char { ch: ' ', column: 8 },
        ),
        (
            "t1.AAwCuCK=",
            TokenError::Base64Char {
                ch: '=',
                column: 11,
            },
        ),
        ("t1.AAwCu", TokenError::Base64Length { len: 5 }),
        ("t1.AAAAAB", TokenError::Base64Trailing { column: 9 }),
        ("t1.AAwC", TokenError::TooShort { len: 3 }),
        (
            "t1.AAwCuCK9",
            TokenError::Checksum {
                stored: 0xbd22_b802,
                computed: 0xbc22_b802,
            },
        ),
    ];
    for (text, expected) in cases {
        let err = Token::decode(text).unwrap_err();
        assert_eq!(err, expected, "{text:?}");
        assert_eq!(err.code(), "invalid_token");
    }
    assert_eq!(
        Token::decode("t1.AAwC+CK8").unwrap_err().to_string(),
        "invalid token: '+' at column 8 is not url-safe base64 (A-Z a-z 0-9 - _)"
    );
    let long = format!("t1.{}", "A".repeat(TOKEN_TEXT_LEN_MAX));
    assert_eq!(
        Token::decode(&long),
        Err(TokenError::TooLong {
            len: TOKEN_TEXT_LEN_MAX + 3
        })
    );
}

/// Well-checksummed payloads that `encode` never writes are still refused, so each token has one
/// text form and a forged token cannot smuggle in a duplicate shard.
#[test]
fn non_canonical_payloads_are_rejected() {
    let seal = |payload: &[u8]| {
        let mut bytes = payload.to_vec();
        bytes.extend_from_slice(&crc32c(payload).to_le_bytes());
        let mut text = TOKEN_PREFIX.to_owned();
        base64_encode(&bytes, &mut text);
        Token::decode(&text)
    };
    assert_eq!(seal(&[0x00, 0x05]), Ok(token(&[(0, 5)])));
    assert_eq!(seal(&[0x00]), Err(TokenError::Varint { offset: 1 }));
    assert_eq!(
        seal(&[0x80, 0x00, 0x05]),
        Err(TokenError::Varint { offset: 0 })
    );
    assert_eq!(seal(&[0x00, 0xff]), Err(TokenError::Varint { offset: 1 }));
    let overflow = [
        0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
    ];
    assert_eq!(seal(&overflow), Err(TokenError::Varint { offset: 1 }));
    assert_eq!(
        seal(&[0x80, 0x80, 0x80, 0x80, 0x10, 0x00]),
        Err(TokenError::ShardRange {
            shard: 1 << 32,
            offset: 0
        })
    );
    assert_eq!(
        seal(&[0x03, 0x01, 0x03, 0x02]),
        Err(TokenError::ShardOrder {
            shard: 3,
            previous: 3,
            offset: 2
        })
    );
    assert_eq!(
        seal(&[0x03, 0x01, 0x02, 0x02]),
        Err(TokenError::ShardOrder {
            shard: 2,
            previous: 3,
            offset: 2
        })
    );
}

fn any_token() -> impl Strategy<Value = Token> {
    proptest::collection::vec((any::<u32>(), any::<u64>()), 0..40)
        .prop_map(|v| v.into_iter().map(|(s, l)| pos(s, l)).collect())
}

fn small_token() -> impl Strategy<Value = Token> {
    proptest::collection::vec((0u32..6, 0u64..20), 0..6)
        .prop_map(|v| v.into_iter().map(|(s, l)| pos(s, l)).collect())
}

proptest! {
    #[test]
    fn round_trip(t in any_token()) {
        let text = t.encode();
        prop_assert!(text.starts_with(TOKEN_PREFIX));
        prop_assert_eq!(Token::decode(&text), Ok(t));
    }

    /// CRC-32C catches every burst of up to 32 bits, and a character carries 6, so this holds for
    /// every token and every substitution, not just with high probability.
    #[test]
    fn any_changed_character_is_rejected(
        t in any_token(),
        at in any::<prop::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let text = t.encode();
        let i = at.index(text.len());
        prop_assume!(!text[i..].starts_with(replacement));
        let mut mangled = text[..i].to_owned();
        mangled.push(replacement);
        mangled.push_str(&text[i + 1..]);
        prop_assert!(Token::decode(&mangled).is_err(), "{} accepted as {}", mangled, text);
    }

    #[test]
    fn truncated_or_extended_tokens_are_rejected(
        t in any_token(),
        cut in any::<prop::sample::Index>(),
    ) {
        let text = t.encode();
        let end = TOKEN_PREFIX.len() + cut.index(text.len() - TOKEN_PREFIX.len());
        prop_assert!(Token::decode(&text[..end]).is_err());
        let extended = format!("{text}A");
        prop_assert!(Token::decode(&extended).is_err());
    }

    /// Whatever decodes re-encodes to the same text: the text form is unique.
    #[test]
    fn decoding_arbitrary_text_is_canonical(body in "[A-Za-z0-9_-]{0,24}") {
        let text = format!("{TOKEN_PREFIX}{body}");
        if let Ok(t) = Token::decode(&text) {
            prop_assert_eq!(t.encode(), text);
        }
    }

    /// `merge` is the least upper bound for `covers`.
    #[test]
    fn merge_is_the_least_upper_bound(a in small_token(), b in small_token(), c in small_token()) {
        let mut m = a.clone();
        m.merge(&b);
        prop_assert!(m.covers(&a) && m.covers(&b));
        prop_assert_eq!(c.covers(&m), c.covers(&a) && c.covers(&b));
        let mut n = b.clone();
        n.merge(&a);
        prop_assert_eq!(m, n);
    }
}
