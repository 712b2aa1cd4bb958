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

/// A log whose first records were removed (as retention or tiering will) refuses a position
/// before them with `position_expired`, and serves one after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // a real single-node log on the real clock
async fn a_position_before_the_first_retained_record_is_expired() {
    use redb::ReadableDatabase;
    use themis_storage::{Disk, MemoryDisk};

    use crate::seam::{NoPeers, SeededEntropy, SystemClock};
    use crate::store::Tables;
    use crate::{Log, LogConfig};

    let disk = MemoryDisk::new();
    let open = || async {
        let log = Log::open(
            LogConfig {
                shards: 1,
                ..LogConfig::default()
            },
            Arc::new(disk.clone()),
            Arc::new(SystemClock::new()),
            Arc::new(SeededEntropy::new(3)),
            Arc::new(NoPeers),
        )
        .await
        .expect("open");
        log.wait_for_leaders(std::time::Duration::from_secs(30))
            .await
            .expect("leader");
        Arc::new(log)
    };
    let log = open().await;
    for i in 0..6 {
        let input = serde_json::from_value(serde_json::json!({
            "urn": format!("urn:themis:document:d:r{i}"), "op": "put", "data": {}
        }))
        .unwrap();
        let batch = log.validate(vec![input], None, None).unwrap();
        log.append(batch, false).await.unwrap();
    }
    log.shutdown().await;
    drop(log);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Remove records up to 3, anchoring the log's chain there.
    {
        let db = disk.open_database("log").expect("log database");
        let t = Tables::new(ShardId(0));
        let (chain, log_id) = {
            let tx = db.begin_read().unwrap();
            let log = tx.open_table(t.log()).unwrap();
            let frame = log.get(3).unwrap().unwrap();
            let record = crate::store::record::decode(frame.value(), &"entry 3").unwrap();
            (record.chain, record.entry.log_id)
        };
        let tx = db.begin_write().unwrap();
        {
            let mut log = tx.open_table(t.log()).unwrap();
            log.retain_in(..=3, |_, _| false).unwrap();
            let mut meta = tx.open_table(t.log_meta()).unwrap();
            let anchor = serde_json::to_vec(&(3u64, chain)).unwrap();
            meta.insert("anchor", anchor.as_slice()).unwrap();
            // Raft's log is purged up to there too (the state machine is past it).
            let purged = serde_json::to_vec(&log_id).unwrap();
            meta.insert("purged", purged.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let log = open().await;
    let hub = Arc::new(Hub::new(SubscribeConfig::default()));
    let err = hub
        .subscribe(log.shards(), From::Earliest, Filter::default())
        .unwrap_err();
    assert_eq!(err.code(), "position_expired", "{err}");
    assert!(
        err.to_string().contains("first retained entry is 4"),
        "{err}"
    );
    let mut from_four = Cursor::new();
    from_four.set(
        ShardId(0),
        Next {
            lsn: Lsn(4),
            index: 0,
        },
    );
    let mut sub = hub
        .subscribe(log.shards(), From::Cursor(from_four), Filter::default())
        .expect("a retained position");
    let first = loop {
        match sub.next().await.unwrap() {
            Delivery::Event(d, _) => break d,
            _ => continue,
        }
    };
    assert!(first.lsn >= Lsn(4));
    log.shutdown().await;
}
