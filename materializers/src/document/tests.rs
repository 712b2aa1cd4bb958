use serde_json::json;

use super::merge_patch;

#[test]
fn blocks_of_many_pieces_read_back_whole_and_are_removed_alone() {
    use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
    const BLK: TableDefinition<&str, &[u8]> = TableDefinition::new("blk");
    let db = Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .unwrap();
    // Keys of which one is a prefix of the other, as block keys of one run can be.
    let (a, b) = ("ns\0run\0o1", "ns\0run\0o10");
    let big: Vec<u8> = (0..5 * super::PIECE_BYTES + 17)
        .map(|i| (i % 251) as u8)
        .collect();
    let small = vec![9u8; 3];
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(BLK).unwrap();
        super::put_block(&mut t, a, &big).unwrap();
        super::put_block(&mut t, b, &small).unwrap();
        assert_eq!(t.len().unwrap(), 7, "six pieces and one");
        assert_eq!(super::block_bytes(&t, a).unwrap(), big);
        assert_eq!(super::block_bytes(&t, b).unwrap(), small);
        super::remove_block(&mut t, a).unwrap();
        assert!(
            super::block_bytes(&t, a).is_err(),
            "a removed block is missing"
        );
        assert_eq!(super::block_bytes(&t, b).unwrap(), small);
    }
    tx.commit().unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(BLK).unwrap();
    assert_eq!(t.len().unwrap(), 1);
}

/// The examples of RFC 7396, appendix A.
#[test]
fn merge_patch_follows_rfc_7396() {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (target, patch, expected) in cases {
        let mut t = target.clone();
        merge_patch(&mut t, &patch);
        assert_eq!(t, expected, "{target} patched with {patch}");
    }
}

mod runs {
    //! The columnar runs hold exactly what the tail alone would: a view that flushes every
    //! few resources (and merges) against one that never flushes, and a reference fold.

    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use redb::{Database, ReadableDatabase};
    use serde_json::{Value, json};
    use themis_log::event::Op;
    use themis_log::{CommittedEntry, CommittedEvent, Event, Lsn, ShardId, Urn};

    use crate::View;
    use crate::document::{DOCUMENTS, Document, ROWS, StateView, merge_patch};

    fn db() -> Database {
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("in-memory database")
    }

    fn event(urn: &str, op: Op, data: Option<Value>) -> Event {
        Event {
            id: themis_log::EventId::nil(),
            urn: Urn::parse(urn).expect("urn"),
            event_type: "t".into(),
            op,
            data: data
                .map(|d| serde_json::value::RawValue::from_string(d.to_string()).expect("raw")),
            vector: None,
            to: None,
            label: None,
            points: None,
            metadata: None,
        }
    }

    const SHARD: ShardId = ShardId(0);

    fn apply(db: &Database, view: &StateView, entry: &CommittedEntry) {
        let tx = db.begin_write().expect("write");
        view.apply(&tx, SHARD, entry).expect("apply");
        tx.commit().expect("commit");
    }

    /// A reference fold of the events: URN → state.
    fn fold(model: &mut BTreeMap<String, Document>, lsn: u64, ts: u64, e: &CommittedEvent) {
        let data = e
            .event
            .data
            .as_ref()
            .map(|d| serde_json::from_str(d.get()).expect("json"))
            .unwrap_or(json!({}));
        let urn = e.event.urn.as_str().to_owned();
        let (data, deleted) = match e.event.op {
            Op::Put => (data, false),
            Op::Patch => {
                let mut state = match model.get(&urn) {
                    Some(d) if !d.deleted => d.data.clone(),
                    _ => json!({}),
                };
                merge_patch(&mut state, &data);
                (state, false)
            }
            _ => (Value::Null, true),
        };
        model.insert(
            urn,
            Document {
                data,
                revision: e.revision,
                lsn,
                updated_ms: ts,
                deleted,
            },
        );
    }

    fn check_equal(seed: u64, step: u64, a: (&Database, &StateView), b: (&Database, &StateView)) {
        let (ta, tb) = (
            a.0.begin_read().expect("read"),
            b.0.begin_read().expect("read"),
        );
        let all_a = a.1.all(&ta, SHARD).expect("all");
        assert_eq!(
            all_a,
            b.1.all(&tb, SHARD).expect("all"),
            "seed {seed} step {step}"
        );
        for ns in ["a", "b", "c"] {
            assert_eq!(
                a.1.namespace(&ta, SHARD, ns).expect("namespace"),
                b.1.namespace(&tb, SHARD, ns).expect("namespace"),
                "seed {seed} step {step} namespace {ns}"
            );
        }
        for (urn, doc) in &all_a {
            assert_eq!(
                a.1.get(&ta, SHARD, urn).expect("get").as_ref(),
                Some(doc),
                "seed {seed} step {step} {urn}"
            );
        }
        assert_eq!(
            a.1.get(&ta, SHARD, &format!("urn:themis:{}:a:never", a.1.model()))
                .expect("get"),
            None
        );
    }

    /// Every id has at most one row in `view`'s runs that no deletion vector marks, and
    /// unless the tail holds a newer state, that row is the id's state in `model`.
    fn check_runs(
        seed: u64,
        step: u64,
        db: &Database,
        view: &StateView,
        model: &BTreeMap<String, Document>,
    ) {
        use arrow_array::{Array, Int64Array, StringViewArray};
        let tx = db.begin_read().expect("read");
        for ns in ["a", "b", "c"] {
            let mut tail = std::collections::BTreeSet::new();
            view.tail(&tx, SHARD, ns, |id, _| {
                tail.insert(id.to_owned());
                Ok(())
            })
            .expect("tail");
            let mut seen = std::collections::BTreeSet::new();
            for run in view.runs(&tx, SHARD, ns).expect("runs") {
                for block in run {
                    let encoded = view.encoded(&tx, SHARD, &block, false).expect("encoded");
                    let columns = encoded.columns(&[0, 1]).expect("columns");
                    let ids = columns[0]
                        .as_any()
                        .downcast_ref::<StringViewArray>()
                        .unwrap();
                    let revisions = columns[1].as_any().downcast_ref::<Int64Array>().unwrap();
                    assert_eq!(ids.value(0), block.first);
                    assert_eq!(ids.value(ids.len() - 1), block.last);
                    for row in 0..ids.len() {
                        if block.marked.binary_search(&(row as u32)).is_ok() {
                            continue;
                        }
                        let id = ids.value(row);
                        assert!(
                            seen.insert(id.to_owned()),
                            "seed {seed} step {step}: {ns}/{id} twice unmarked"
                        );
                        let urn = format!("urn:themis:{}:{ns}:{id}", view.model());
                        if !tail.contains(id) {
                            assert_eq!(
                                model.get(&urn).map(|d| d.revision),
                                Some(revisions.value(row) as u64),
                                "seed {seed} step {step}: {urn}"
                            );
                        }
                    }
                }
            }
        }
    }

    fn interleavings(base: StateView) {
        let seeds: u64 = std::env::var("THEMIS_RUNS_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12);
        let mut merged_runs = 0;
        for seed in 0..seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let flush = rng.gen_range(1..6);
            let small = base.with_flush_rows(flush);
            let whole = base.with_flush_rows(usize::MAX);
            let (db_small, db_whole) = (db(), db());
            let mut model = BTreeMap::new();
            let mut revisions: BTreeMap<String, u64> = BTreeMap::new();
            for step in 1..=300u64 {
                let ts = 1_700_000_000_000 + step;
                let mut events = Vec::new();
                for index in 0..rng.gen_range(1..4) {
                    let ns = ["a", "b", "c"][rng.gen_range(0..3)];
                    let urn = format!("urn:themis:{}:{ns}:x{}", base.model(), rng.gen_range(0..40));
                    let (op, data) = match rng.gen_range(0..10) {
                        0..5 => (Op::Put, Some(json!({"v": rng.gen_range(0..100), "s": "é"}))),
                        5..8 => (Op::Patch, Some(json!({"p": step, "v": null}))),
                        _ => (Op::Delete, None),
                    };
                    let revision = revisions.entry(urn.clone()).or_default();
                    *revision += 1;
                    events.push(CommittedEvent {
                        event: event(&urn, op, data),
                        revision: *revision,
                        index,
                    });
                }
                let entry = CommittedEntry {
                    lsn: Lsn(step),
                    ts_ms: ts,
                    events,
                };
                for e in &entry.events {
                    fold(&mut model, step, ts, e);
                }
                apply(&db_small, &small, &entry);
                apply(&db_whole, &whole, &entry);
                if step % 25 == 0 || step == 300 {
                    check_equal(seed, step, (&db_small, &small), (&db_whole, &whole));
                    check_runs(seed, step, &db_small, &small, &model);
                    let tx = db_whole.begin_read().expect("read");
                    let all: BTreeMap<String, Document> =
                        whole.all(&tx, SHARD).expect("all").into_iter().collect();
                    assert_eq!(all, model, "seed {seed} step {step}: the fold");
                }
            }
            // Inside a write transaction, as the fulltext view reads them.
            let tx = db_small.begin_write().expect("write");
            for ns in ["a", "b", "c"] {
                for (urn, doc) in small.namespace_in_write(&tx, SHARD, ns).expect("ns") {
                    assert_eq!(model.get(&urn), Some(&doc));
                    assert_eq!(
                        small.get_in_write(&tx, SHARD, &urn).expect("get"),
                        Some(doc)
                    );
                }
            }
            drop(tx);
            let tx = db_small.begin_read().expect("read");
            for layout in small.layout(&tx, SHARD).expect("layout") {
                assert!(layout.tail < flush as u64, "seed {seed}: {layout:?}");
                assert!(
                    layout.runs.len() <= super::super::FAN_IN * 4,
                    "seed {seed}: {layout:?}"
                );
                merged_runs += layout.runs.iter().filter(|&&r| r > flush as u64).count();
            }
            // The same entries make the same bytes (a replica, a rebuild).
            let tx_whole = db_whole.begin_read().expect("read");
            assert_ne!(
                small.digest(&tx, SHARD).expect("digest"),
                whole.digest(&tx_whole, SHARD).expect("digest"),
                "seed {seed}: runs are stored, not the tail"
            );
        }
        assert!(merged_runs > 0, "some runs were merges");
    }

    #[test]
    fn documents_in_runs_equal_documents_in_the_tail() {
        interleavings(DOCUMENTS);
    }

    #[test]
    fn rows_in_runs_equal_rows_in_the_tail() {
        interleavings(ROWS);
    }

    #[test]
    fn replaying_the_same_entries_makes_the_same_bytes() {
        let view = ROWS.with_flush_rows(3);
        let (one, two) = (db(), db());
        for step in 1..=200u64 {
            let urn = format!("urn:themis:relational:t:{}", step * 7 % 50);
            let entry = CommittedEntry {
                lsn: Lsn(step),
                ts_ms: step,
                events: vec![CommittedEvent {
                    event: event(&urn, Op::Put, Some(json!({"n": step}))),
                    revision: step,
                    index: 0,
                }],
            };
            apply(&one, &view, &entry);
            apply(&two, &view, &entry);
        }
        let digest = |db: &Database| {
            view.digest(&db.begin_read().expect("read"), SHARD)
                .expect("digest")
        };
        assert_eq!(digest(&one), digest(&two));
        // Cleared, the view holds nothing.
        let tx = one.begin_write().expect("write");
        view.clear(&tx, SHARD).expect("clear");
        tx.commit().expect("commit");
        let tx = one.begin_read().expect("read");
        assert!(view.all(&tx, SHARD).expect("all").is_empty());
        assert!(view.layout(&tx, SHARD).expect("layout").is_empty());
    }
}

/// A measurement, not a check: where the bytes of a views file go. 250,000 rows shaped like
/// `themis-bench sql`'s orders, 1,000 per entry, into one shard's relational view in a file;
/// prints the file size, redb's stored and fragmented bytes, the runs, and the size after
/// `compact`. `FLUSH` sets the flush size (1000000000: no runs), `DURABLE` every how many
/// entries a commit is durable. Run with
/// `cargo test --release -p themis-materializers --lib -- --ignored disk_per_row_probe --nocapture`.
#[test]
#[ignore = "a measurement; run by hand"]
fn disk_per_row_probe() {
    use crate::View;
    use crate::document::ROWS;
    use redb::{Database, Durability, ReadableDatabase};
    use serde_json::json;
    use themis_log::event::Op;
    use themis_log::{CommittedEntry, CommittedEvent, Event, Lsn, ShardId, Urn};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    let db = Database::create(&path).unwrap();
    let flush: usize = std::env::var("FLUSH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8192);
    let view = ROWS.with_flush_rows(flush);
    let rows = 250_000u64;
    let per_entry = 1000u64;
    let durable_every: u64 = std::env::var("DURABLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let mut lsn = 0;
    for batch in 0..rows / per_entry {
        lsn += 1;
        let events = (0..per_entry)
            .map(|i| {
                let n = batch * per_entry + i;
                let urn = format!("urn:themis:relational:orders:o{:08}", n * 4);
                let status = ["paid", "shipped", "pending"][(n % 3) as usize];
                CommittedEvent {
                    event: Event {
                        id: themis_log::EventId::nil(),
                        urn: Urn::parse(&urn).unwrap(),
                        event_type: "t".into(),
                        op: Op::Put,
                        data: Some(serde_json::value::RawValue::from_string(json!({"customer": n % 10000, "amount": (n % 100000) as f64 / 100.0 + 0.01, "status": status, "qty": n % 10 + 1}).to_string()).unwrap()),
                        vector: None, to: None, label: None, points: None, metadata: None,
                    },
                    revision: 1,
                    index: i as u32,
                }
            })
            .collect();
        let entry = CommittedEntry {
            lsn: Lsn(lsn),
            ts_ms: 1_700_000_000_000 + lsn,
            events,
        };
        let mut tx = db.begin_write().unwrap();
        if lsn % durable_every != 0 {
            tx.set_durability(Durability::None).unwrap();
        }
        view.apply(&tx, ShardId(0), &entry).unwrap();
        tx.commit().unwrap();
    }
    let tx = db.begin_write().unwrap();
    let stats = tx.stats().unwrap();
    tx.commit().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "flush {flush} durable every {durable_every}: {rows} rows; file {size} ({:.1} B/row); stored {} ({:.1} B/row), metadata {}, fragmented {}, leaf pages {}, branch pages {}",
        size as f64 / rows as f64,
        stats.stored_bytes(),
        stats.stored_bytes() as f64 / rows as f64,
        stats.metadata_bytes(),
        stats.fragmented_bytes(),
        stats.leaf_pages(),
        stats.branch_pages()
    );
    let r = db.begin_read().unwrap();
    println!("{:?}", view.layout(&r, ShardId(0)).unwrap());
    drop(r);
    let mut db = db;
    db.compact().unwrap();
    drop(db);
    println!("after compact: {}", std::fs::metadata(&path).unwrap().len());
}

/// Where the bytes of a views database go, by redb's own accounting per table: set `VIEWS` to
/// a `views.redb` (of a stopped node) and run
/// `cargo test --release -p themis-materializers --lib -- --ignored views_file_probe --nocapture`.
#[test]
#[ignore = "a measurement; run by hand"]
fn views_file_probe() {
    use redb::{Database, ReadableDatabase, TableHandle};
    let Ok(path) = std::env::var("VIEWS") else {
        return;
    };
    let db = Database::open(&path).unwrap();
    let tx = db.begin_write().unwrap();
    let stats = tx.stats().unwrap();
    tx.abort().unwrap();
    println!(
        "file {}; stored {}, metadata {}, fragmented {}",
        std::fs::metadata(&path).unwrap().len(),
        stats.stored_bytes(),
        stats.metadata_bytes(),
        stats.fragmented_bytes()
    );
    let r = db.begin_read().unwrap();
    let mut rows = Vec::new();
    for h in r.list_tables().unwrap() {
        let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new(h.name());
        let Ok(t) = r.open_table(def) else { continue };
        let s = redb::ReadableTableMetadata::stats(&t).unwrap();
        rows.push((
            s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes(),
            h.name().to_owned(),
            s.stored_bytes(),
            s.leaf_pages(),
        ));
    }
    rows.sort();
    for (total, name, stored, leaves) in rows.iter().rev().take(30) {
        println!("{name}: total {total}, stored {stored}, leaf pages {leaves}");
    }
}
