use proptest::prelude::*;

use super::*;

fn cursor(positions: &[(u32, u64, u32)]) -> Cursor {
    let mut c = Cursor::new();
    for &(shard, lsn, index) in positions {
        c.set(
            ShardId(shard),
            Next {
                lsn: Lsn(lsn),
                index,
            },
        );
    }
    c
}

#[test]
fn cursor_text_is_golden() {
    // Golden: these encodings must never change (docs/design/token.md, "Resume cursors").
    assert_eq!(Cursor::new().encode(), "r1.AAAAAA");
    // Checked against an independent Python encoder (base64.urlsafe_b64encode, bitwise CRC-32C).
    assert_eq!(cursor(&[(0, 12, 0)]).encode(), "r1.AAwAHgH6sw");
    assert_eq!(
        cursor(&[(0, 5, 2), (3, 300, 0)]).encode(),
        "r1.AAUCA6wCAARGUh8"
    );
}

#[test]
fn cursor_errors_say_what_is_wrong() {
    let err = |t: &str| Cursor::decode(t).unwrap_err().to_string();
    assert!(err("t1.AAAAAA").contains("must start with \"r1.\""));
    assert!(err("r1.AA").contains("too short"), "{}", err("r1.AA"));
    let good = cursor(&[(1, 7, 3)]).encode();
    let mut bad = good.clone().into_bytes();
    let last = bad.len() - 3;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    assert!(err(&bad).contains("invalid resume cursor"), "{}", err(&bad));
    assert!(err("r1.$$").contains("column 4"), "{}", err("r1.$$"));
}

#[test]
fn cursor_token_covers_what_was_delivered() {
    let c = cursor(&[(0, 10, 0), (1, 7, 2), (2, 0, 0)]);
    let t = c.token();
    assert_eq!(
        t.get(ShardId(0)),
        Some(Lsn(9)),
        "entry 10 not started: 9 done"
    );
    assert_eq!(t.get(ShardId(1)), Some(Lsn(7)), "events of 7 delivered");
    assert_eq!(t.get(ShardId(2)), None, "nothing delivered");
    // A token converts back to the cursor just after it.
    let after = Cursor::after(&t);
    assert_eq!(
        after.next(ShardId(0)),
        Next {
            lsn: Lsn(10),
            index: 0
        }
    );
    assert_eq!(
        after.next(ShardId(1)),
        Next {
            lsn: Lsn(8),
            index: 0
        }
    );
}

#[test]
fn from_accepts_four_forms() {
    assert_eq!(From::parse("earliest").unwrap(), From::Earliest);
    assert_eq!(From::parse("latest").unwrap(), From::Latest);
    let c = cursor(&[(0, 3, 1)]);
    assert_eq!(From::parse(&c.encode()).unwrap(), From::Cursor(c));
    let token: Token = [Position {
        shard: ShardId(2),
        lsn: Lsn(41),
    }]
    .into_iter()
    .collect();
    let From::Cursor(after) = From::parse(&token.encode()).unwrap() else {
        panic!("a token is a cursor")
    };
    assert_eq!(
        after.next(ShardId(2)),
        Next {
            lsn: Lsn(42),
            index: 0
        }
    );
    let err = From::parse("yesterday").unwrap_err().to_string();
    assert!(err.contains("earliest, latest"), "{err}");
}

proptest! {
    #[test]
    fn cursors_round_trip(positions in prop::collection::btree_map(any::<u32>(), (any::<u64>(), any::<u32>()), 0..8)) {
        let c = cursor(&positions.iter().map(|(s, (l, i))| (*s, *l, *i)).collect::<Vec<_>>());
        let text = c.encode();
        prop_assert_eq!(Cursor::decode(&text).unwrap(), c);
    }

    #[test]
    fn glob_agrees_with_a_regex_like_reference(glob in "[ab*?]{0,6}", text in "[ab]{0,8}") {
        prop_assert_eq!(glob_matches(&glob.chars().collect::<Vec<_>>(), &text), reference(glob.as_bytes(), text.as_bytes()));
    }
}

/// Plain recursive glob matching, exponential but obviously right.
fn reference(glob: &[u8], text: &[u8]) -> bool {
    match (glob.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            reference(&glob[1..], text) || (!text.is_empty() && reference(glob, &text[1..]))
        }
        (Some(b'?'), Some(_)) => reference(&glob[1..], &text[1..]),
        (Some(g), Some(t)) if g == t => reference(&glob[1..], &text[1..]),
        _ => false,
    }
}

fn event(urn: &str, event_type: &str) -> Event {
    let input: crate::event::EventInput = serde_json::from_value(serde_json::json!({
        "urn": urn, "type": event_type, "op": "put", "data": {}
    }))
    .unwrap();
    input
        .validate(None, &crate::event::EventLimits::default(), &mut || {
            crate::event::EventId::from_u128(1)
        })
        .expect("valid event")
        .0
}

#[test]
fn filters_combine_keys_with_and_and_values_with_or() {
    let doc = event("urn:themis:document:users:alice", "Registered");
    let row = event("urn:themis:relational:orders:o1", "Placed");
    let f = |terms: &[&str]| Filter::parse(terms.iter().copied()).unwrap();
    assert!(f(&[]).matches(&doc) && f(&[]).matches(&row));
    assert!(f(&["model=document"]).matches(&doc));
    assert!(!f(&["model=document"]).matches(&row));
    assert!(f(&["model=document", "model=relational"]).matches(&row));
    assert!(f(&["ns=orders", "type=Placed"]).matches(&row));
    assert!(!f(&["ns=orders", "type=Registered"]).matches(&row));
    assert!(
        f(&["urn=urn:themis:document:users:"]).matches(&doc),
        "a prefix"
    );
    assert!(f(&["urn=urn:themis:*:users:a*"]).matches(&doc), "a glob");
    assert!(!f(&["urn=urn:themis:*:users:b*"]).matches(&doc));
    assert!(!f(&["urn=urn:themis:document:users:ali"]).matches(&row));
}

#[test]
fn bad_filters_are_refused_with_the_reason() {
    let err = |t: &str| Filter::parse([t]).unwrap_err().to_string();
    assert!(err("colour=red").contains("unknown filter key \"colour\""));
    assert!(err("model=graphs").contains("unknown model"));
    assert!(err("type=").contains("empty value"));
    assert!(err("documents").contains("key=value"));
}
