use serde_json::json;
use themis_log::Model;
use themis_log::event::Op;

use super::{NamespaceConfig, is_rfc3339, rfc3339_ms};

fn orders() -> NamespaceConfig {
    serde_json::from_value(json!({"columns": [
        {"name": "customer", "type": "string"},
        {"name": "total", "type": "float64"},
        {"name": "items", "type": "int64"},
        {"name": "paid", "type": "bool", "nullable": true},
        {"name": "at", "type": "timestamp", "nullable": true},
        {"name": "extra", "type": "json", "nullable": true}
    ]}))
    .unwrap()
}

#[test]
fn configs_are_checked() {
    assert_eq!(orders().validate(Model::Relational), Ok(()));
    let bad = [
        (json!({"columns": []}), "at least one column"),
        (
            json!({"columns": [{"name": "Bad", "type": "string"}]}),
            "not valid",
        ),
        (
            json!({"columns": [{"name": "id", "type": "string"}]}),
            "implicit",
        ),
        (
            json!({"columns": [{"name": "a", "type": "string"}, {"name": "a", "type": "int64"}]}),
            "twice",
        ),
    ];
    for (config, needle) in bad {
        let c: NamespaceConfig = serde_json::from_value(config.clone()).unwrap();
        let e = c.validate(Model::Relational).unwrap_err();
        assert!(e.contains(needle), "{config}: {e}");
    }
    assert!(
        serde_json::from_value::<NamespaceConfig>(
            json!({"columns": [{"name": "a", "type": "decimal"}]})
        )
        .is_err()
    );
    assert!(serde_json::from_value::<NamespaceConfig>(json!({"colums": []})).is_err());
    assert_eq!(NamespaceConfig::default().validate(Model::Document), Ok(()));
    assert!(orders().validate(Model::Document).is_err());
}

#[test]
fn rows_are_checked_against_the_columns() {
    let c = orders();
    let ok =
        json!({"customer": "c1", "total": 9.5, "items": 2, "at": "2026-11-26T10:00:00.5+01:00"});
    assert_eq!(c.check_event(Op::Put, Some(&ok)), Ok(()));
    assert_eq!(
        c.check_event(Op::Patch, Some(&json!({"paid": true}))),
        Ok(())
    );
    assert_eq!(
        c.check_event(Op::Patch, Some(&json!({"paid": null}))),
        Ok(())
    );
    assert_eq!(c.check_event(Op::Delete, None), Ok(()));
    let bad = [
        (Op::Put, json!({"customer": "c1", "total": 1}), "items"),
        (
            Op::Put,
            json!({"customer": 5, "total": 1, "items": 1}),
            "customer",
        ),
        (
            Op::Put,
            json!({"customer": "c", "total": 1, "items": 1.5}),
            "items",
        ),
        (
            Op::Put,
            json!({"customer": "c", "total": 1, "items": 1, "nope": 1}),
            "nope",
        ),
        (Op::Patch, json!({"customer": null}), "customer"),
        (Op::Patch, json!({"at": "yesterday"}), "at"),
        (Op::Put, json!([1]), "data"),
    ];
    for (op, data, column) in bad {
        let v = c.check_event(op, Some(&data)).unwrap_err();
        assert_eq!(v.column, column, "{data}: {v:?}");
    }
    assert_eq!(c.check_event(Op::Link, None).unwrap_err().column, "op");
}

#[test]
fn configs_evolve_only_compatibly() {
    let c = orders();
    let mut added = c.clone();
    added.columns.push(
        serde_json::from_value(json!({"name": "note", "type": "string", "nullable": true}))
            .unwrap(),
    );
    assert_eq!(c.evolves_to(&added), Ok(()));
    let mut required = c.clone();
    required
        .columns
        .push(serde_json::from_value(json!({"name": "note", "type": "string"})).unwrap());
    assert!(c.evolves_to(&required).unwrap_err().contains("nullable"));
    let mut removed = c.clone();
    removed.columns.remove(0);
    assert!(c.evolves_to(&removed).unwrap_err().contains("removed"));
    let mut widened = c.clone();
    widened.columns[1].column_type = super::ColumnType::Json;
    assert_eq!(c.evolves_to(&widened), Ok(()));
    let mut narrowed = c.clone();
    narrowed.columns[1].column_type = super::ColumnType::Int64;
    assert!(c.evolves_to(&narrowed).is_err());
}

#[test]
fn rfc3339_timestamps() {
    for ok in [
        "2026-11-26T10:00:00Z",
        "2026-11-26t10:00:00.123z",
        "2026-02-28T23:59:60+05:30",
    ] {
        assert!(is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "2026-11-26",
        "2026-13-01T00:00:00Z",
        "2026-11-26T10:00:00",
        "2026-11-26T10:00:00.Z",
        "2026-11-26T10:00:00+0100",
        "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "x",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
    // Values (checked against Python's datetime).
    assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        rfc3339_ms("2026-11-26T10:00:00.5+01:00"),
        Some(1_795_683_600_500)
    );
    assert_eq!(rfc3339_ms("1969-12-31T23:59:59Z"), Some(-1000));
    assert_eq!(
        rfc3339_ms("2000-02-29T12:00:00.0009+05:30"),
        Some(951_805_800_000)
    );
}
