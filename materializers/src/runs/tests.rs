use super::*;

fn row(id: &str, data: &str, revision: u64) -> Row {
    Row {
        id: id.to_owned(),
        data: data.to_owned(),
        revision,
        lsn: revision * 10,
        updated_ms: 1_700_000_000_000 + revision,
        deleted: data == "null",
    }
}

#[test]
fn blocks_decode_to_the_rows_encoded() {
    let rows = vec![
        row("", "{}", 1),
        row("a", r#"{"s":"é\u0000","x":1}"#, 2),
        row("a:b", "null", 3),
        row("ü", r#"[1,2,{"y":null}]"#, u64::MAX / 100),
    ];
    let bytes = encode(&rows, Shred::Parse).expect("encode");
    assert_eq!(
        encode(&rows, Shred::Parse).expect("encode"),
        bytes,
        "encoding is deterministic"
    );
    let block = decode(&bytes).expect("decode");
    assert_eq!(block.len(), rows.len());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(&block.row(i).expect("row"), r);
        assert_eq!(block.find(&r.id), Some(i));
        let doc = block.document(i).expect("document");
        assert_eq!(doc.revision, r.revision);
        assert_eq!(doc.deleted, r.deleted);
        assert_eq!(
            doc.data,
            serde_json::from_str::<serde_json::Value>(&r.data).expect("json")
        );
    }
    assert_eq!(block.find("0"), None);
    assert_eq!(block.find("zz"), None);
    // Altered bytes fail to decode or to match their name.
    let name = name_of(&bytes);
    let mut altered = bytes.clone();
    let last = altered.len() - 9;
    altered[last] ^= 0xff;
    assert!(block_of(name, altered).is_err());
    assert!(decode(b"not a block").is_err());
}

fn block_of(name: u128, bytes: Vec<u8>) -> Result<Arc<Block>> {
    block(name, false, move || Ok(bytes))
}

#[test]
fn merges_keep_the_newest_state_of_each_id() {
    // A run of blocks of at most 2 rows.
    let run = |rows: Vec<Row>| {
        Cursor::new(
            rows.chunks(2)
                .map(|c| {
                    let block = decode(&encode(c, Shred::No).expect("encode")).expect("decode");
                    (Arc::new(block), Vec::new())
                })
                .collect(),
        )
    };
    let old = run(vec![row("a", "1", 1), row("b", "1", 1), row("d", "1", 1)]);
    let mid = run(vec![row("b", "2", 2), row("c", "2", 2)]);
    let new = run(vec![
        row("a", "3", 3),
        row("c", "null", 3),
        row("e", "3", 3),
    ]);
    assert_eq!(old.rows(), 3);
    let merged: Vec<Row> = merge(vec![old, mid, new, run(Vec::new())])
        .iter()
        .map(|(b, i)| b.row(*i).expect("row"))
        .collect();
    let got: Vec<(&str, &str)> = merged
        .iter()
        .map(|r| (r.id.as_str(), r.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", "3"),
            ("b", "2"),
            ("c", "null"),
            ("d", "1"),
            ("e", "3")
        ]
    );
    assert!(merge(Vec::new()).is_empty());
}

#[test]
fn the_cache_keeps_blocks_within_its_budget() {
    let rows: Vec<Row> = (0..100)
        .map(|i| row(&format!("id{i:03}"), r#"{"v":1}"#, i))
        .collect();
    let bytes = encode(&rows, Shred::No).expect("encode");
    let name = name_of(&bytes);
    set_cache_bytes(0);
    let reads = std::cell::Cell::new(0);
    let read = || {
        reads.set(reads.get() + 1);
        Ok(bytes.clone())
    };
    block(name, true, read).expect("block");
    assert_eq!(cache_bytes(), 0, "nothing fits a budget of 0");
    set_cache_bytes(CACHE_BYTES_DEFAULT);
    let first = block(name, true, read).expect("block");
    let again = block(name, true, || panic!("read again")).expect("cached");
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(reads.get(), 2);
    assert!(cache_bytes() >= first.bytes);
}

#[test]
fn marked_rows_are_skipped_by_merges() {
    let block =
        |rows: &[Row]| Arc::new(decode(&encode(rows, Shred::No).expect("encode")).expect("decode"));
    let old = Cursor::new(vec![
        (block(&[row("a", "1", 1), row("b", "1", 1)]), vec![0, 1]),
        (block(&[row("c", "1", 1), row("d", "1", 1)]), vec![1]),
    ]);
    let new = Cursor::new(vec![(
        block(&[row("a", "2", 2), row("d", "2", 2)]),
        Vec::new(),
    )]);
    let got: Vec<(String, String)> = merge(vec![old, new])
        .into_iter()
        .map(|(b, i)| b.row(i).expect("row"))
        .map(|r| (r.id, r.data))
        .collect();
    let want = [("a", "2"), ("c", "1"), ("d", "2")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(got, want);
    // Every row of a block marked: the cursor moves on to the next block.
    let all = Cursor::new(vec![
        (block(&[row("a", "1", 1)]), vec![0]),
        (block(&[row("b", "1", 1)]), Vec::new()),
    ]);
    assert_eq!(all.peek(), Some("b"));
}

#[test]
fn shredded_columns_hold_members_of_one_kind() {
    let rows = vec![
        row(
            "a",
            r#"{"b":true,"f":1.5,"i":1,"m":1,"n":null,"o":{"x":1},"s":"x","u":18446744073709551615}"#,
            1,
        ),
        row("b", r#"{"f":2.5,"i":-3,"m":"one","s":"yz"}"#, 2),
        row("c", "null", 3),
        row("d", r#"[1,2]"#, 4),
        row("e", r#"{"b":null,"i":null}"#, 5),
    ];
    let bytes = encode(&rows, Shred::Parse).expect("encode");
    let encoded = Encoded::new(&bytes, rows.len(), false).expect("encoded");
    let mut mixed = encoded.mixed();
    mixed.sort();
    assert_eq!(
        mixed,
        ["m", "o", "u"],
        "mixed and other kinds stay in the JSON text"
    );
    assert!(encoded.member("n").is_none(), "only nulls: no column");
    let (b, kind) = encoded.member("b").expect("b");
    assert_eq!(kind, Shredded::Bool);
    let (i, kind) = encoded.member("i").expect("i");
    assert_eq!(kind, Shredded::Int);
    let (f, kind) = encoded.member("f").expect("f");
    assert_eq!(kind, Shredded::Float);
    let (s, kind) = encoded.member("s").expect("s");
    assert_eq!(kind, Shredded::Text);
    let cols = encoded.columns(&[0, b, i, f, s]).expect("columns");
    let ids = cols[0]
        .as_any()
        .downcast_ref::<StringViewArray>()
        .expect("ids");
    assert_eq!(
        ids.iter().flatten().collect::<Vec<_>>(),
        ["a", "b", "c", "d", "e"]
    );
    let bools = cols[1]
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bools");
    assert_eq!(
        bools.iter().collect::<Vec<_>>(),
        [Some(true), None, None, None, None]
    );
    let ints = cols[2].as_any().downcast_ref::<Int64Array>().expect("ints");
    assert_eq!(
        ints.iter().collect::<Vec<_>>(),
        [Some(1), Some(-3), None, None, None]
    );
    let floats = cols[3]
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .expect("floats");
    assert_eq!(
        floats.iter().collect::<Vec<_>>(),
        [Some(1.5), Some(2.5), None, None, None]
    );
    let texts = cols[4]
        .as_any()
        .downcast_ref::<StringViewArray>()
        .expect("texts");
    assert_eq!(
        texts.iter().collect::<Vec<_>>(),
        [Some("x"), Some("yz"), None, None, None]
    );
    let data = encoded.data().expect("data");
    assert_eq!(data.value(3), "[1,2]");
    // Without shredding, only the fixed columns.
    let plain = encode(&rows, Shred::No).expect("encode");
    let plain = Encoded::new(&plain, rows.len(), false).expect("plain");
    assert!(plain.data().is_err(), "states not read unless asked for");
    let with_state = Encoded::new(&bytes, rows.len(), true).expect("encoded");
    assert_eq!(with_state.data().expect("data"), data);
    assert_eq!(plain.schema().fields().len(), FIXED_COLUMNS);
    // The ids alone decode to the same.
    assert_eq!(
        &decode_ids(&encode(&rows, Shred::Parse).expect("encode")).expect("ids"),
        ids
    );
}

#[test]
fn merged_blocks_carry_their_members_as_parsing_would() {
    let block = |rows: &[Row]| {
        Arc::new(decode_with_members(&encode(rows, Shred::Parse).expect("encode")).expect("decode"))
    };
    let a = block(&[
        row("a", r#"{"i":1,"s":"x","m":1,"f":1.5}"#, 1),
        row("c", r#"{"i":2,"n":null}"#, 1),
    ]);
    let b = block(&[
        row("b", r#"{"i":3,"s":"y","m":"two","b":true}"#, 2),
        row("d", "null", 2),
    ]);
    let picks = vec![
        (a.clone(), 0),
        (b.clone(), 0),
        (a.clone(), 1),
        (b.clone(), 1),
    ];
    let rows: Vec<Row> = picks
        .iter()
        .map(|(blk, i)| blk.row(*i).expect("row"))
        .collect();
    let merged = encode(&rows, Shred::Merged(&picks)).expect("merged");
    let parsed = encode(&rows, Shred::Parse).expect("parsed");
    assert_eq!(merged, parsed, "the same bytes as shredding the rows again");
    assert!(encode(&rows[..2], Shred::Merged(&picks)).is_err());
    // Without members decoded, a merge cannot carry them.
    let plain = Arc::new(decode(&encode(&rows[..1], Shred::No).expect("encode")).expect("decode"));
    assert!(encode(&rows[..1], Shred::Merged(&[(plain, 0)])).is_err());
}

/// A JSON value of the kinds states hold, members drawn from a few names so that kinds
/// collide across rows.
fn json_value(depth: u32) -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (i64::MAX as u64..=u64::MAX).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1e2),
            Just(3.0),
            Just(0.1),
            Just(1e300)
        ]
        .prop_map(Value::from),
        "[a-zé\\\"\u{0}-\u{1f}\u{1F600}]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A row's state: mostly an object of members `a`..`e`, sometimes another value or a
/// tombstone.
fn state() -> impl proptest::strategy::Strategy<Value = Option<Value>> {
    use proptest::prelude::*;
    prop_oneof![
        8 => prop::collection::btree_map("[a-e]", json_value(2), 0..5)
            .prop_map(|m| Some(Value::Object(m.into_iter().collect()))),
        1 => json_value(1).prop_map(Some),
        1 => Just(None),
    ]
}

fn rows_of(states: &[Option<Value>], from: usize, step: usize) -> Vec<Row> {
    states
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let data = s.as_ref().map_or_else(
                || "null".to_owned(),
                |v| serde_json::to_string(v).expect("json"),
            );
            Row {
                id: format!("id{:04}", from + k * step),
                deleted: s.is_none(),
                ..row("", &data, k as u64 + 1)
            }
        })
        .collect()
}

proptest::proptest! {
    /// Blocks keep only the residual JSON of their states, and every reader gets the text
    /// the view was given back, byte for byte: point reads and scans (`text`, `document`),
    /// the query side (`Encoded::data`, and `Encoded::residual` for unshredded members),
    /// and merges, which write the bytes a fresh encoding of the merged rows would.
    #[test]
    fn residual_blocks_give_back_the_states_they_were_given(
        a in proptest::collection::vec(state(), 1..12),
        b in proptest::collection::vec(state(), 1..12),
        picks in proptest::collection::vec(proptest::prelude::any::<bool>(), 24),
    ) {
        let (rows_a, rows_b) = (rows_of(&a, 0, 2), rows_of(&b, 1, 2));
        let decoded = |rows: &[Row]| {
            let bytes = encode(rows, Shred::Parse).expect("encode");
            (Arc::new(decode(&bytes).expect("decode")), bytes)
        };
        let check = |rows: &[Row], block: &Block, bytes: &[u8]| {
            let encoded = Encoded::new(bytes, rows.len(), true).expect("encoded");
            assert!(encoded.is_residual());
            let data = encoded.data().expect("data");
            let residual = encoded.residual().expect("residual");
            let mixed = encoded.mixed();
            for (i, r) in rows.iter().enumerate() {
                assert_eq!(block.text(i).expect("text"), r.data.as_str());
                assert_eq!(data.value(i), r.data);
                let doc = block.document(i).expect("document");
                assert_eq!(doc.data, serde_json::from_str::<Value>(&r.data).expect("json"));
                // Residual text holds no shredded member's value, and every mixed one.
                let state: Value = serde_json::from_str(&r.data).expect("json");
                let rest: Value = serde_json::from_str(residual.value(i)).expect("json");
                if let (Value::Object(state), Value::Object(rest)) = (&state, &rest) {
                    for (name, v) in state {
                        let shredded = encoded.member(name).is_some();
                        assert_eq!(rest.get(name).is_some(), !shredded || v.is_null(), "{name}");
                        if mixed.contains(name) {
                            assert_eq!(rest.get(name), Some(v));
                        }
                    }
                } else {
                    assert_eq!(rest, state);
                }
            }
        };
        let (block_a, bytes_a) = decoded(&rows_a);
        check(&rows_a, &block_a, &bytes_a);
        let (block_b, bytes_b) = decoded(&rows_b);
        check(&rows_b, &block_b, &bytes_b);
        // A merge of some rows of each, in id order.
        let with_members = |bytes: &[u8]| Arc::new(decode_with_members(bytes).expect("decode"));
        let (ma, mb) = (with_members(&bytes_a), with_members(&bytes_b));
        let mut merged: Vec<(Arc<Block>, usize)> = Vec::new();
        for (k, take) in picks.iter().enumerate() {
            let (block, i) = if k % 2 == 0 { (&ma, k / 2) } else { (&mb, k / 2) };
            if *take && i < block.len() {
                merged.push((block.clone(), i));
            }
        }
        proptest::prop_assume!(!merged.is_empty());
        let rows: Vec<Row> = merged.iter().map(|(b, i)| b.row(*i).expect("row")).collect();
        let merged_bytes = encode(&rows, Shred::Merged(&merged)).expect("merged");
        check(&rows, &decode(&merged_bytes).expect("decode"), &merged_bytes);
        // Merging every row of both blocks shreds what parsing them again would.
        let all: Vec<(Arc<Block>, usize)> = (0..ma.len())
            .map(|i| (ma.clone(), i))
            .chain((0..mb.len()).map(|i| (mb.clone(), i)))
            .collect();
        let mut all = all;
        all.sort_by(|x, y| x.0.id(x.1).cmp(y.0.id(y.1)));
        let rows: Vec<Row> = all.iter().map(|(b, i)| b.row(*i).expect("row")).collect();
        let merged_bytes = encode(&rows, Shred::Merged(&all)).expect("merged");
        assert_eq!(merged_bytes, encode(&rows, Shred::Parse).expect("parsed"));
        check(&rows, &decode(&merged_bytes).expect("decode"), &merged_bytes);
    }
}
