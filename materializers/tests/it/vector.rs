//! The vector view with a real single-node log: kNN answers against brute force over a model
//! of the accepted events (puts, payload patches, deletes), filters that keep k answers, the
//! answer's token, restart from the index dump, rebuild, and recall@10 on 100k vectors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use themis_log::event::Op;
use themis_log::{Log, ShardId, Token};
use themis_materializers::filter::Filter;
use themis_materializers::namespaces::Metric;
use themis_materializers::vector::{self, true_distance};
use themis_materializers::{KnnSearch, Materializer};
use themis_storage::MemoryDisk;

async fn open(disk: &MemoryDisk, dir: Option<&std::path::Path>) -> (Arc<Log>, Arc<Materializer>) {
    crate::open_with(disk, 4, dir).await
}

use crate::{append_all as append, input};

async fn declare(log: &Log, ns: &str, config: Value) -> Token {
    append(
        log,
        vec![input(
            &format!("urn:themis:vector:_namespace:{ns}"),
            Op::Put,
            None,
            Some(config),
        )],
    )
    .await
}

async fn wait_all(views: &Materializer, token: &Token) {
    for kind in views.kinds() {
        views
            .wait_for(kind, token, &[], Duration::from_secs(120))
            .await
            .expect("the view catches up with the log");
    }
}

fn random_vector(rng: &mut StdRng, dims: usize) -> Vec<f64> {
    (0..dims)
        .map(|_| f64::from(rng.gen_range(-1.0f32..1.0)))
        .collect()
}

fn as_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The model: URN → (vector, payload) of live resources.
type Model = BTreeMap<String, (Vec<f32>, Value)>;

fn brute_force(
    model: &Model,
    metric: Metric,
    q: &[f32],
    k: usize,
    f: Option<&Filter>,
) -> Vec<(String, f64)> {
    let qp = vector::prepare(metric, q);
    let mut all: Vec<(String, f64)> = model
        .iter()
        .filter(|(_, (_, p))| f.is_none_or(|f| f.matches(p)))
        .map(|(urn, (v, _))| {
            (
                urn.clone(),
                true_distance(metric, &qp, &vector::prepare(metric, v)),
            )
        })
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

async fn knn(
    views: &Materializer,
    ns: &str,
    q: &[f32],
    k: usize,
    filter: Option<&Filter>,
    token: &Token,
) -> (Vec<(String, f64, Value)>, Token) {
    let (hits, at) = views
        .knn(
            &KnnSearch {
                namespace: ns,
                vector: q,
                k,
                ef: None,
                filter,
            },
            token,
            Duration::from_secs(60),
        )
        .await
        .expect("knn");
    (
        hits.into_iter()
            .map(|(_, h)| (h.urn, h.distance, (*h.payload).clone()))
            .collect(),
        at,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knn_answers_follow_puts_patches_and_deletes_through_restart_and_rebuild() {
    let disk = MemoryDisk::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, views) = open(&disk, Some(dir.path())).await;
    let mut rng = StdRng::seed_from_u64(11);
    let dims = 12;
    let metrics = [
        ("cos", Metric::Cosine),
        ("euclid", Metric::L2),
        ("inner", Metric::Dot),
    ];
    let mut models: BTreeMap<&str, Model> = BTreeMap::new();
    let mut token = Token::new();
    for (ns, metric) in metrics {
        token.merge(
            &declare(
                &log,
                ns,
                json!({"dimension": dims, "metric": metric.as_str()}),
            )
            .await,
        );
        let model = models.entry(ns).or_default();
        let mut inputs = Vec::new();
        for i in 0..1500 {
            let urn = format!("urn:themis:vector:{ns}:v{i}");
            let v = random_vector(&mut rng, dims);
            let payload = json!({"group": i % 100, "even": i % 2 == 0});
            model.insert(urn.clone(), (as_f32(&v), payload.clone()));
            inputs.push(input(&urn, Op::Put, Some(v), Some(payload)));
        }
        // Replace some vectors, patch some payloads, delete some, in later entries.
        let mut later = Vec::new();
        for i in (0..1500).step_by(7) {
            let urn = format!("urn:themis:vector:{ns}:v{i}");
            match i % 3 {
                0 => {
                    let v = random_vector(&mut rng, dims);
                    let payload = json!({"group": 1000, "even": false});
                    model.insert(urn.clone(), (as_f32(&v), payload.clone()));
                    later.push(input(&urn, Op::Put, Some(v), Some(payload)));
                }
                1 => {
                    let entry = model.get_mut(&urn).expect("present");
                    entry.1["group"] = json!(2000);
                    later.push(input(&urn, Op::Patch, None, Some(json!({"group": 2000}))));
                }
                _ => {
                    model.remove(&urn);
                    later.push(input(&urn, Op::Delete, None, None));
                }
            }
        }
        // A patch of a deleted vector changes nothing.
        later.push(input(
            &format!("urn:themis:vector:{ns}:v2"),
            Op::Patch,
            None,
            Some(json!({"group": 3000})),
        ));
        token.merge(&append(&log, inputs).await);
        token.merge(&append(&log, later).await);
    }
    wait_all(&views, &token).await;

    let queries: Vec<Vec<f32>> = (0..40)
        .map(|_| as_f32(&random_vector(&mut rng, dims)))
        .collect();
    let check = |answers: &[(String, f64, Value)],
                 model: &Model,
                 expected: &[(String, f64)],
                 what: &str| {
        // Every answer is live, with its current payload; recall against brute force.
        for (urn, _, payload) in answers {
            let (_, p) = model
                .get(urn)
                .unwrap_or_else(|| panic!("{what}: {urn} is not live"));
            assert_eq!(payload, p, "{what}: {urn}'s payload");
        }
        answers
            .iter()
            .filter(|(u, _, _)| expected.iter().any(|(e, _)| e == u))
            .count()
    };
    let mut before = Vec::new();
    for (ns, metric) in metrics {
        let model = &models[ns];
        let (mut found, mut total) = (0, 0);
        for q in &queries {
            let (answers, at) = knn(&views, ns, q, 10, None, &token).await;
            assert_eq!(answers.len(), 10);
            assert!(
                at.covers(&token),
                "the answer's token covers the one asked for"
            );
            let expected = brute_force(model, metric, q, 10, None);
            found += check(&answers, model, &expected, ns);
            total += 10;
            // Distances are the true ones, nearest first.
            for w in answers.windows(2) {
                assert!(w[0].1 <= w[1].1);
            }
            for (urn, d, _) in &answers {
                let want = true_distance(
                    metric,
                    &vector::prepare(metric, q),
                    &vector::prepare(metric, &model[urn].0),
                );
                assert!((d - want).abs() < 1e-9, "{ns}: {urn}: {d} vs {want}");
            }
            before.push(answers);
        }
        let recall = found as f64 / total as f64;
        assert!(recall >= 0.95, "{ns}: recall {recall}");

        // A selective filter still gets k answers, exactly the brute-force ones.
        let filter = Filter::parse(&json!({"group": {"$in": [3, 4]}})).expect("filter");
        for q in queries.iter().take(5) {
            let (answers, _) = knn(&views, ns, q, 10, Some(&filter), &token).await;
            let expected = brute_force(model, metric, q, 10, Some(&filter));
            assert_eq!(expected.len(), 10);
            let got: Vec<&String> = answers.iter().map(|a| &a.0).collect();
            let want: Vec<&String> = expected.iter().map(|a| &a.0).collect();
            assert_eq!(got, want, "{ns}: filtered");
        }
        // A broad filter (half the points) goes through the graph and keeps k answers.
        let even = Filter::parse(&json!({"even": true})).expect("filter");
        for q in queries.iter().take(5) {
            let (answers, _) = knn(&views, ns, q, 10, Some(&even), &token).await;
            assert_eq!(answers.len(), 10);
            assert!(answers.iter().all(|a| a.2["even"] == json!(true)));
        }
    }

    // Wrong dimension, bad k, unknown namespace: clear errors.
    for (ns, vector, k, code, needle) in [
        ("cos", vec![1.0; 3], 10, "invalid_search", "12 dimensions"),
        ("cos", vec![1.0; 12], 0, "invalid_search", "k must be"),
        ("nope", vec![1.0; 12], 1, "unknown_namespace", "no config"),
    ] {
        let search = KnnSearch {
            namespace: ns,
            vector: &vector,
            k,
            ef: None,
            filter: None,
        };
        let bad = views
            .knn(&search, &token, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), code);
        assert!(bad.to_string().contains(needle), "{bad}");
    }

    // Restart: the dumps load (no rebuild), and the answers are the same.
    let digests: Vec<(ShardId, u64)> = (0..4)
        .map(|s| {
            (
                ShardId(s),
                views.digest("vector", ShardId(s)).expect("digest").1,
            )
        })
        .collect();
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
    drop(views);
    drop(log);
    let (log, views) = open(&disk, Some(dir.path())).await;
    wait_all(&views, &token).await;
    let stats = views.vectors().stats();
    assert!(!stats.is_empty());
    for s in &stats {
        assert!(s.from_dump, "{s:?} was rebuilt, not loaded");
    }
    let mut after = Vec::new();
    for (ns, _) in metrics {
        for q in &queries {
            after.push(knn(&views, ns, q, 10, None, &token).await.0);
        }
    }
    assert_eq!(after, before, "answers after a restart");
    for (s, d) in &digests {
        assert_eq!(views.digest("vector", *s).expect("digest").1, *d);
    }

    // More writes after the restart are indexed on top of the loaded dump.
    let urn = "urn:themis:vector:euclid:fresh";
    let q = as_f32(&random_vector(&mut rng, dims));
    let t = append(
        &log,
        vec![input(
            urn,
            Op::Put,
            Some(q.iter().map(|&x| f64::from(x)).collect()),
            Some(json!({})),
        )],
    )
    .await;
    let (answers, _) = knn(&views, "euclid", &q, 1, None, &t).await;
    assert_eq!(answers[0].0, urn);
    assert_eq!(answers[0].1, 0.0);

    // A rebuild replays the log to the same digests.
    let digests: Vec<(ShardId, u64)> = (0..4)
        .map(|s| {
            (
                ShardId(s),
                views.digest("vector", ShardId(s)).expect("digest").1,
            )
        })
        .collect();
    views.rebuild("vector", None).expect("rebuild");
    let mut all = t.clone();
    all.merge(&token);
    wait_all(&views, &all).await;
    for (s, d) in &digests {
        assert_eq!(
            views.digest("vector", *s).expect("digest").1,
            *d,
            "shard {s:?}"
        );
    }
    let (answers, _) = knn(&views, "euclid", &q, 1, None, &all).await;
    assert_eq!(answers[0].0, urn);
    log.shutdown().await;
}

/// recall@10 against brute force at the default settings (M 16, ef_construction 200,
/// ef_search 64), on 100,000 vectors of 128 dimensions with a low intrinsic dimension, as
/// embeddings have: each is a random linear image of a 32-dimensional Gaussian point, plus
/// a little noise in every dimension. (Uniform random vectors in 128 dimensions have no
/// meaningful neighbours; tightly clustered ones make the test unable to fail.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_at_10_is_at_least_095_on_100k_vectors_at_default_settings() {
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk, None).await;
    let (n, dims, latent) = (100_000, 128, 32);
    let mut rng = StdRng::seed_from_u64(5);
    let gauss = |rng: &mut StdRng| -> f32 {
        // Box-Muller.
        let (u, v) = (rng.gen_range(f32::EPSILON..1.0), rng.gen_range(0.0f32..1.0));
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let basis: Vec<Vec<f32>> = (0..dims)
        .map(|_| (0..latent).map(|_| gauss(&mut rng)).collect())
        .collect();
    let sample = |rng: &mut StdRng| -> Vec<f32> {
        let z: Vec<f32> = (0..latent).map(|_| gauss(rng)).collect();
        basis
            .iter()
            .map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + 0.1 * gauss(rng))
            .collect()
    };
    let started = std::time::Instant::now();
    let mut token = declare(&log, "emb", json!({"dimension": dims, "metric": "l2"})).await;
    let mut data = Vec::with_capacity(n);
    let mut inputs = Vec::with_capacity(n);
    for i in 0..n {
        let v = sample(&mut rng);
        inputs.push(input(
            &format!("urn:themis:vector:emb:{i}"),
            Op::Put,
            Some(v.iter().map(|&x| f64::from(x)).collect()),
            None,
        ));
        data.push(v);
    }
    token.merge(&append(&log, inputs).await);
    eprintln!("appended in {:?}", started.elapsed());
    wait_all(&views, &token).await;
    eprintln!("indexed in {:?}", started.elapsed());
    let queries: Vec<Vec<f32>> = (0..200).map(|_| sample(&mut rng)).collect();
    let mut found = 0;
    for q in &queries {
        let mut exact: Vec<(f32, usize)> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (vector::l2_squared(q, v), i))
            .collect();
        exact.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
        let truth: Vec<String> = exact[..10]
            .iter()
            .map(|(_, i)| format!("urn:themis:vector:emb:{i}"))
            .collect();
        let (answers, _) = knn(&views, "emb", q, 10, None, &token).await;
        found += answers.iter().filter(|a| truth.contains(&a.0)).count();
    }
    let recall = found as f64 / (queries.len() * 10) as f64;
    eprintln!(
        "recall@10 = {recall:.4} over {} queries ({:?})",
        queries.len(),
        started.elapsed()
    );
    assert!(recall >= 0.95, "recall@10 {recall}");
    log.shutdown().await;
}
