use hnsw_rs::prelude::Distance;
use proptest::prelude::*;
use serde_json::json;

use super::{GraphDistance, VectorRecord, dot, l2_squared, prepare, true_distance};
use crate::namespaces::Metric;

#[test]
fn records_round_trip() {
    for r in [
        VectorRecord {
            point: 7,
            revision: 3,
            lsn: 99,
            updated_ms: 1_700_000_000_000,
            deleted: false,
            vector: vec![1.5, -0.0, f32::MAX],
            payload: json!({"a": [1, "x"]}),
        },
        VectorRecord {
            point: 0,
            revision: 0,
            lsn: 1,
            updated_ms: 0,
            deleted: true,
            vector: Vec::new(),
            payload: serde_json::Value::Null,
        },
    ] {
        assert_eq!(VectorRecord::decode(&r.encode()).unwrap(), r);
    }
    assert!(VectorRecord::decode(&[1, 0, 0]).is_err());
    let mut bytes = VectorRecord {
        point: 1,
        revision: 1,
        lsn: 1,
        updated_ms: 1,
        deleted: false,
        vector: vec![1.0; 4],
        payload: json!({}),
    }
    .encode();
    bytes.truncate(40);
    assert!(VectorRecord::decode(&bytes).is_err(), "a truncated vector");
}

proptest! {
    /// The graph's distance orders pairs exactly as the reported distance does, is never
    /// negative or NaN (hnsw_rs asserts), and the lane-wise kernels agree with plain sums.
    #[test]
    fn graph_distances_order_like_true_ones(
        a in prop::collection::vec(-100f32..100.0, 1..40),
        seed in prop::collection::vec(-100f32..100.0, 80),
        metric in prop_oneof![Just(Metric::L2), Just(Metric::Cosine), Just(Metric::Dot)],
    ) {
        let n = a.len();
        let b: Vec<f32> = seed[..n].to_vec();
        let c: Vec<f32> = seed[40..40 + n].to_vec();
        let plain_dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        prop_assert!((f64::from(dot(&a, &b)) - plain_dot).abs() <= 1e-3 * (1.0 + plain_dot.abs()));
        let plain_l2: f64 = a.iter().zip(&b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
        prop_assert!((f64::from(l2_squared(&a, &b)) - plain_l2).abs() <= 1e-3 * (1.0 + plain_l2));
        let (pa, pb, pc) = (prepare(metric, &a), prepare(metric, &b), prepare(metric, &c));
        let g = GraphDistance(metric);
        let (gb, gc) = (g.eval(&pa, &pb), g.eval(&pa, &pc));
        prop_assert!(gb >= 0.0 && gc >= 0.0);
        let (tb, tc) = (true_distance(metric, &pa, &pb), true_distance(metric, &pa, &pc));
        // Where the true distances differ clearly, the graph's order agrees.
        if (tb - tc).abs() > 1e-3 * (1.0 + tb.abs().max(tc.abs())) {
            prop_assert_eq!(gb < gc, tb < tc, "{:?}: {} {} vs {} {}", metric, gb, gc, tb, tc);
        }
    }
}

#[test]
fn overflowing_distances_are_not_nan() {
    let big = vec![3e38f32, -3e38];
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let d = GraphDistance(metric).eval(&big, &[3e38, 3e38]);
        assert!(!d.is_nan() && d >= 0.0, "{metric:?}: {d}");
    }
}

/// An index waiting for its namespace's config is built by its own shard's worker, never by
/// another shard's: that one may read the shard's state while the shard's worker is inside a
/// transaction that already changed the index (CI caught a kNN answer with a payload from
/// before a patch: another worker's snapshot had replaced the index the patch went into).
#[test]
fn a_waiting_index_is_built_only_by_its_own_shard() {
    use redb::Database;
    use themis_log::event::Op;
    use themis_log::{CommittedEntry, CommittedEvent, Event, Lsn, ShardId, Urn};

    use super::VectorView;
    use crate::View;
    use crate::namespaces::NamespacesView;

    fn entry(
        lsn: u64,
        urn: &str,
        op: Op,
        vector: Option<Vec<f32>>,
        data: serde_json::Value,
    ) -> CommittedEntry {
        CommittedEntry {
            lsn: Lsn(lsn),
            ts_ms: lsn,
            events: vec![CommittedEvent {
                event: Event {
                    id: themis_log::EventId::nil(),
                    urn: Urn::parse(urn).expect("urn"),
                    event_type: "t".into(),
                    op,
                    data: Some(
                        serde_json::value::RawValue::from_string(data.to_string()).expect("raw"),
                    ),
                    vector,
                    to: None,
                    label: None,
                    points: None,
                    metadata: None,
                },
                revision: lsn,
                index: 0,
            }],
        }
    }
    let db = Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .expect("in-memory database");
    let (config, data) = (ShardId(0), ShardId(1));
    let view = VectorView::new(std::sync::Arc::new(move |_: &str| config), None);
    let urn = "urn:themis:vector:ns:v0";
    // The point arrives before its namespace's config: the index waits.
    let tx = db.begin_write().unwrap();
    let put = entry(1, urn, Op::Put, Some(vec![1.0, 0.0]), json!({"group": 1}));
    view.apply(&tx, data, &put).unwrap();
    tx.commit().unwrap();
    view.committed(&db, data, 1, true, 0);
    assert!(view.searcher(data, "ns").is_none());
    let tx = db.begin_write().unwrap();
    let declare = entry(
        1,
        "urn:themis:vector:_namespace:ns",
        Op::Put,
        None,
        json!({"dimension": 2, "metric": "l2"}),
    );
    NamespacesView.apply(&tx, config, &declare).unwrap();
    tx.commit().unwrap();
    // The data shard's worker patches the point: its transaction finds the config and makes
    // the index; meanwhile the config shard's worker commits.
    let tx = db.begin_write().unwrap();
    let patch = entry(2, urn, Op::Patch, None, json!({"group": 2}));
    view.apply(&tx, data, &patch).unwrap();
    view.committed(&db, config, 1, true, 0);
    tx.commit().unwrap();
    view.committed(&db, data, 2, true, 0);
    let hits = view
        .searcher(data, "ns")
        .expect("an index")
        .search(&[1.0, 0.0], 5, None, None, 2);
    let payloads: Vec<&serde_json::Value> = hits.iter().map(|h| &*h.payload).collect();
    assert_eq!(payloads, [&json!({"group": 2})]);
}
