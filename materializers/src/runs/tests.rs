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
        row("a", r#"{"x":1,"s":"é\u0000"}"#, 2),
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
        assert_eq!(&block.row(i), r);
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
        .map(|(b, i)| b.row(*i))
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
        .map(|(b, i)| b.row(i))
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
    let rows: Vec<Row> = picks.iter().map(|(blk, i)| blk.row(*i)).collect();
    let merged = encode(&rows, Shred::Merged(&picks)).expect("merged");
    let parsed = encode(&rows, Shred::Parse).expect("parsed");
    assert_eq!(merged, parsed, "the same bytes as shredding the rows again");
    assert!(encode(&rows[..2], Shred::Merged(&picks)).is_err());
    // Without members decoded, a merge cannot carry them.
    let plain =
        Arc::new(decode(&encode(&rows[..1], Shred::Parse).expect("encode")).expect("decode"));
    assert!(encode(&rows[..1], Shred::Merged(&[(plain, 0)])).is_err());
}
