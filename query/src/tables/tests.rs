//! Layout inference and value conversion of the view tables.

use serde_json::json;
use themis_log::ShardId;
use themis_materializers::document::{Document, Resource};

use super::{Kind, batches, document_layout};

fn resource(id: &str, data: serde_json::Value, deleted: bool) -> Resource {
    Resource {
        id: id.into(),
        state: Document {
            data,
            revision: 1,
            lsn: 7,
            updated_ms: 1000,
            deleted,
        },
    }
}

#[test]
fn document_fields_are_typed_by_the_values_they_hold() {
    let shards = vec![
        (
            ShardId(0),
            vec![
                resource(
                    "a",
                    json!({"n": 1, "f": 1, "s": "x", "b": true, "o": {"k": 1}}),
                    false,
                ),
                resource("gone", json!({"zombie": 1}), true),
            ],
        ),
        (
            ShardId(1),
            vec![
                resource(
                    "b",
                    json!({"n": 2, "f": 2.5, "s": "y", "b": false, "mixed": 1}),
                    false,
                ),
                resource(
                    "c",
                    json!({"mixed": "one", "id": "shadow", "nothing": null}),
                    false,
                ),
                resource("d", json!([1, 2]), false),
            ],
        ),
    ];
    let layout = document_layout(&shards);
    let columns: Vec<(String, Kind)> = layout
        .schema
        .fields()
        .iter()
        .zip(&layout.columns)
        .map(|(f, (k, _))| (f.name().clone(), *k))
        .collect();
    let expected = [
        ("id", Kind::Text),
        ("_revision", Kind::Int),
        ("_lsn", Kind::Int),
        ("_shard", Kind::Shard),
        ("_updated_ms", Kind::Int),
        ("data", Kind::Json),
        ("b", Kind::Bool),
        ("f", Kind::Float),
        ("mixed", Kind::Json),
        ("n", Kind::Int),
        ("nothing", Kind::Json),
        ("o", Kind::Json),
        ("s", Kind::Text),
    ];
    let expected: Vec<(String, Kind)> = expected
        .iter()
        .map(|(n, k)| ((*n).to_owned(), *k))
        .collect();
    assert_eq!(columns, expected, "deleted documents add no columns");

    let b = batches(&layout, ShardId(1), &shards[1].1).expect("batches");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].num_rows(), 3, "three live documents");
    // `id` is the URN's id even when a document has an `id` field.
    let ids = b[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringViewArray>();
    let ids: Vec<&str> = ids.expect("strings").iter().flatten().collect();
    assert_eq!(ids, ["b", "c", "d"]);
}

#[test]
fn values_that_do_not_convert_read_as_null() {
    use datafusion::arrow::array::Array;
    let shards = vec![(
        ShardId(0),
        vec![
            resource("a", json!({"n": 1}), false),
            resource("b", json!({"n": 2}), false),
        ],
    )];
    let layout = document_layout(&shards);
    let odd = vec![resource("c", json!({"n": "text"}), false)];
    let b = batches(&layout, ShardId(0), &odd).expect("batches");
    let n = layout.schema.index_of("n").expect("n");
    assert!(b[0].column(n).is_null(0));
}
