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
        row("ü", r#"[1,2,{"y":null}]"#, u64::MAX / 10),
    ];
    let bytes = encode(&rows).expect("encode");
    assert_eq!(
        encode(&rows).expect("encode"),
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
                .map(|c| Arc::new(decode(&encode(c).expect("encode")).expect("decode")))
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
    let merged = merge(vec![old, mid, new, run(Vec::new())]);
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
    let bytes = encode(&rows).expect("encode");
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
