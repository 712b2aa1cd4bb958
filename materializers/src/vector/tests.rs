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
