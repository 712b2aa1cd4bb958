//! The time-series view against a reference model: random batches of points (out of order,
//! duplicate timestamps, several windows and series) must read back bit for bit in timestamp
//! order (arrival order among equals), every aggregate per step must equal the model's, the
//! downsampling rollups must equal the model's buckets, and restart and rebuild keep the
//! digests. Retention hides and deletes what is older than the log's time.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use themis_log::event::{EventInput, Op, Point};
use themis_log::{Log, Token, Urn};
use themis_materializers::Materializer;
use themis_materializers::timeseries::{Agg, Range};
use themis_storage::MemoryDisk;

use crate::{append_all, digests, open_with as open, wait_all};

const WINDOW: i64 = 60_000;
const STEP: i64 = 10_000;
const AGGS: [Agg; 7] = [
    Agg::Min,
    Agg::Max,
    Agg::Avg,
    Agg::Sum,
    Agg::Count,
    Agg::First,
    Agg::Last,
];

fn config(ns: &str, config: serde_json::Value) -> EventInput {
    crate::input(
        &format!("urn:themis:timeseries:_namespace:{ns}"),
        Op::Put,
        None,
        Some(config),
    )
}

fn points(urn: &str, points: &[(i64, f64)]) -> EventInput {
    let mut e = crate::input(urn, Op::Points, None, None);
    e.points = Some(points.iter().map(|&(t, v)| Point(t, v)).collect());
    e
}

/// The model's answer for a step: buckets of the sorted points.
fn aggregate(sorted: &[(i64, f64)], step: i64, agg: Agg) -> Vec<(i64, f64)> {
    let mut buckets: Vec<(i64, Vec<(i64, f64)>)> = Vec::new();
    for &(t, v) in sorted {
        let b = t - t.rem_euclid(step);
        match buckets.last_mut() {
            Some((start, pts)) if *start == b => pts.push((t, v)),
            _ => buckets.push((b, vec![(t, v)])),
        }
    }
    buckets
        .into_iter()
        .map(|(b, pts)| {
            let vs: Vec<f64> = pts.iter().map(|p| p.1).collect();
            let value = match agg {
                Agg::Min => vs.iter().copied().fold(f64::INFINITY, f64::min),
                Agg::Max => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Agg::Sum => vs.iter().sum(),
                Agg::Avg => vs.iter().sum::<f64>() / vs.len() as f64,
                Agg::Count => vs.len() as f64,
                Agg::First => vs[0],
                Agg::Last => vs[vs.len() - 1],
            };
            (b, value)
        })
        .collect()
}

fn bits(points: &[(i64, f64)]) -> Vec<(i64, u64)> {
    points.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

async fn range(views: &Materializer, urn: &Urn, range: Range) -> Vec<(i64, f64)> {
    views
        .ts_range(urn, &range, &Token::new(), Duration::from_secs(30))
        .await
        .expect("range")
        .0
        .points
}

/// Batches of (series 0..3, points): timestamps over five windows, quarter values (sums are
/// exact, so the rollups' arrival-order sums equal the model's sorted-order sums).
fn batches() -> impl Strategy<Value = Vec<(usize, Vec<(i64, f64)>)>> {
    let point =
        (0i64..5 * WINDOW / 1000, -400i32..400).prop_map(|(t, v)| (t * 1000, f64::from(v) / 4.0));
    prop::collection::vec((0..3usize, prop::collection::vec(point, 1..40)), 1..12)
}

async fn check(log: &Log, views: &Materializer, model: &BTreeMap<String, Vec<(i64, f64)>>) {
    for (urn, arrived) in model {
        let urn = Urn::parse(urn).unwrap();
        let mut sorted = arrived.clone();
        sorted.sort_by_key(|p| p.0); // stable: arrival order among equal timestamps
        let all = Range {
            from: i64::MIN,
            to: i64::MAX,
            step: None,
        };
        assert_eq!(bits(&range(views, &urn, all).await), bits(&sorted), "{urn}");
        let (from, to) = (WINDOW / 2, 4 * WINDOW + 7_000);
        let inside: Vec<(i64, f64)> = sorted
            .iter()
            .copied()
            .filter(|p| p.0 >= from && p.0 < to)
            .collect();
        let raw = Range {
            from,
            to,
            step: None,
        };
        assert_eq!(bits(&range(views, &urn, raw).await), bits(&inside));
        for agg in AGGS {
            for step in [STEP, 3 * STEP, WINDOW] {
                let r = Range {
                    from,
                    to,
                    step: Some((step, agg)),
                };
                assert_eq!(
                    bits(&range(views, &urn, r).await),
                    bits(&aggregate(&inside, step, agg)),
                    "{urn} {agg:?} {step}"
                );
            }
        }
    }
    // The rollups, read directly: one bucket per STEP of every point that arrived.
    for (urn, arrived) in model {
        let shard = log.shard_id_for(&Urn::parse(urn).unwrap());
        let (stored, _) = views
            .read("timeseries", shard, |tx| {
                views.timeseries().rollups(tx, shard, urn, STEP)
            })
            .unwrap();
        let mut sorted = arrived.clone();
        sorted.sort_by_key(|p| p.0);
        for agg in [
            Agg::Min,
            Agg::Max,
            Agg::Sum,
            Agg::Count,
            Agg::First,
            Agg::Last,
        ] {
            let got: Vec<(i64, f64)> = stored.iter().map(|(b, r)| (*b, r.value(agg))).collect();
            assert_eq!(
                bits(&got),
                bits(&aggregate(&sorted, STEP, agg)),
                "rollup {agg:?}"
            );
        }
    }
}

async fn run(batches: Vec<(usize, Vec<(i64, f64)>)>) {
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk, 4, None).await;
    let mut inputs = vec![config(
        "m",
        json!({"block_ms": WINDOW, "downsample": [{"step_ms": STEP}]}),
    )];
    let mut model: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (series, pts) in &batches {
        let urn = format!("urn:themis:timeseries:m:s{series}");
        model.entry(urn.clone()).or_default().extend(pts);
        inputs.push(points(&urn, pts));
    }
    // The config first, in its own append, so every shard's view sees it.
    let mut token = append_all(&log, inputs.drain(..1).collect()).await;
    wait_all(&views, &token).await;
    for input in inputs {
        // One event per append: each batch is its own entry, so out-of-order batches merge.
        for p in append_all(&log, vec![input]).await.iter() {
            token.observe(p);
        }
    }
    // Digests are compared at the whole applied log of every shard.
    let token = crate::applied(&log);
    wait_all(&views, &token).await;
    check(&log, &views, &model).await;
    let before = digests(&views);
    for kind in views.kinds() {
        views.rebuild(kind, None).expect("rebuild");
    }
    wait_all(&views, &token).await;
    assert_eq!(digests(&views), before, "after a rebuild");
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
    drop(views);
    drop(log);
    let (log, views) = open(&disk, 4, None).await;
    wait_all(&views, &token).await;
    assert_eq!(digests(&views), before, "after a restart");
    check(&log, &views, &model).await;
    // Deleting a series removes its points and rollups.
    let (urn, _) = model.iter().next().unwrap();
    let token = append_all(&log, vec![crate::input(urn, Op::Delete, None, None)]).await;
    wait_all(&views, &token).await;
    let all = Range {
        from: i64::MIN,
        to: i64::MAX,
        step: None,
    };
    assert!(
        range(&views, &Urn::parse(urn).unwrap(), all)
            .await
            .is_empty()
    );
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn series_read_back_as_a_fold_of_their_points(batches in batches()) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(batches));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // the log's time is the real clock here
async fn retention_hides_and_deletes_points_older_than_the_logs_time() {
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk, 4, None).await;
    let hour = 3_600_000i64;
    let token = append_all(
        &log,
        vec![config(
            "r",
            json!({"block_ms": 600_000, "retention_ms": hour,
                   "downsample": [{"step_ms": 60_000}, {"step_ms": 600_000, "retention_ms": 4 * hour}]}),
        )],
    )
    .await;
    wait_all(&views, &token).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Three hours of minute points, the oldest first, then a late point from 5 hours ago.
    let urn = "urn:themis:timeseries:r:cpu";
    let pts: Vec<(i64, f64)> = (0..180)
        .map(|i| (now - 3 * hour + i * 60_000, i as f64))
        .collect();
    let mut token = append_all(&log, vec![points(urn, &pts)]).await;
    for p in append_all(&log, vec![points(urn, &[(now - 5 * hour, 1.0)])])
        .await
        .iter()
    {
        token.observe(p);
    }
    wait_all(&views, &token).await;
    let u = Urn::parse(urn).unwrap();
    let (answer, _) = views
        .ts_range(
            &u,
            &Range {
                from: now - 6 * hour,
                to: now + hour,
                step: None,
            },
            &Token::new(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let cutoff = answer.cutoff.expect("a retention cutoff");
    assert!(
        cutoff >= now - hour && cutoff < now + 600_000,
        "{cutoff} vs {now}"
    );
    let expected: Vec<(i64, f64)> = pts.iter().copied().filter(|p| p.0 >= cutoff).collect();
    assert_eq!(answer.points, expected, "only points newer than the cutoff");
    assert_eq!(answer.source, "raw");
    // Expired windows are deleted, not only hidden: what is stored starts at most one window
    // before the cutoff.
    let shard = log.shard_id_for(&u);
    let (stored, _) = views
        .read("timeseries", shard, |tx| {
            views.timeseries().stored_points(tx, shard, urn)
        })
        .unwrap();
    assert!(
        stored.first().unwrap().0 >= cutoff - 600_000 - 60_000,
        "{:?}",
        stored.first()
    );
    // A step over a range that starts before the cutoff answers from the finest rule that
    // covers the start and divides the step: the minute rollup, kept for ever.
    let (answer, _) = views
        .ts_range(
            &u,
            &Range {
                from: now - 3 * hour,
                to: now + hour,
                step: Some((1_200_000, Agg::Count)),
            },
            &Token::new(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(answer.source, "rollup:60000");
    let counted: f64 = answer.points.iter().map(|p| p.1).sum();
    assert_eq!(counted, 180.0, "{:?}", answer.points);
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
}
