//! The document and relational views against a reference model, under random event sequences: puts, merge
//! patches and deletes on a few resources, with expected revisions that sometimes fail. A
//! single-node log (in-memory disk) decides and the view applies; the model is a plain fold
//! over the operations as sent. Restart and rebuild must reach the same digest. (One
//! integration-test binary per crate.)
#![allow(clippy::disallowed_methods)] // test: a real clock for a real single-node log

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use themis_log::seam::{NoPeers, SeededEntropy, SystemClock};
use themis_log::{Log, LogConfig, ShardId, Token};
use themis_materializers::document::{self, merge_patch};
use themis_materializers::{Materializer, MaterializerConfig};
use themis_storage::MemoryDisk;

mod fulltext;
mod graph;
mod rejections;
mod timeseries;
mod vector;
mod waits;

#[derive(Debug, Clone)]
enum Op {
    Put(Value),
    Patch(Value),
    Delete,
}

/// A small JSON object whose members may be nested objects, arrays or (in patches) nulls.
fn object(nulls: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(|n| json!(n)),
        "[a-c]{0,3}".prop_map(|s| json!(s)),
        Just(json!([1, 2])),
    ];
    let member = leaf.prop_recursive(2, 8, 3, move |inner| {
        prop::collection::btree_map("[k-m]", inner, 0..3).prop_map(|m| json!(m))
    });
    let member = if nulls {
        prop_oneof![3 => member, 1 => Just(Value::Null)].boxed()
    } else {
        member.boxed()
    };
    prop::collection::btree_map("[k-n]", member, 0..4).prop_map(|m| json!(m))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => object(false).prop_map(Op::Put),
        3 => object(true).prop_map(Op::Patch),
        1 => Just(Op::Delete),
    ]
}

/// (resource 0..4, op, expected revision: None = any, Some(-1) = no stream, Some(n) = exact)
fn step() -> impl Strategy<Value = (usize, Op, Option<i64>)> {
    (
        0..4usize,
        op(),
        prop_oneof![2 => Just(None), 1 => (-1i64..6).prop_map(Some)],
    )
}

/// What the model expects of one resource.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    data: Value,
    revision: u64,
    deleted: bool,
}

async fn open(disk: &MemoryDisk) -> (Arc<Log>, Arc<Materializer>) {
    open_with(disk, 4, None).await
}

/// A single-node log of `shards` shards on `disk` and its views, keeping index files under
/// `dir` (in memory when `None`).
pub(crate) async fn open_with(
    disk: &MemoryDisk,
    shards: u32,
    dir: Option<&std::path::Path>,
) -> (Arc<Log>, Arc<Materializer>) {
    let log = Log::open(
        LogConfig {
            shards,
            ..LogConfig::default()
        },
        Arc::new(disk.clone()),
        Arc::new(SystemClock::new()),
        Arc::new(SeededEntropy::new(7)),
        Arc::new(NoPeers),
    )
    .await
    .expect("open the log");
    let log = Arc::new(log);
    log.wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let views = Materializer::start(
        log.clone(),
        disk,
        Arc::new(SystemClock::new()),
        MaterializerConfig {
            index_dir: dir.map(|d| d.to_path_buf()),
            // Small runs, so every test of the state views goes through flushes and merges.
            state_flush_rows: 8,
            ..Default::default()
        },
    )
    .await
    .expect("views");
    (log, views)
}

/// An event input for `urn` (no id: the log draws one).
pub(crate) fn input(
    urn: &str,
    op: themis_log::event::Op,
    vector: Option<Vec<f64>>,
    data: Option<Value>,
) -> themis_log::event::EventInput {
    themis_log::event::EventInput {
        id: None,
        urn: Some(urn.to_owned()),
        event_type: None,
        op,
        data: data.map(|d| serde_json::value::to_raw_value(&d).expect("raw")),
        vector,
        to: None,
        label: None,
        points: None,
        metadata: None,
        expected_revision: None,
    }
}

/// Appends `inputs` (namespace configs allowed) in per-shard atomic batches of at most
/// 1,000, returning the token.
pub(crate) async fn append_all(log: &Log, inputs: Vec<themis_log::event::EventInput>) -> Token {
    let mut token = Token::new();
    let mut inputs = inputs.into_iter().peekable();
    while inputs.peek().is_some() {
        let chunk: Vec<_> = inputs.by_ref().take(1000).collect();
        let batch = log.validate_system(chunk, None, None).expect("valid");
        let result = log.append(batch, true).await.expect("append");
        for (_, answer) in result.shards {
            token.observe(answer.expect("appended").position);
        }
    }
    token
}

/// A token at the whole applied log of every shard (entries without events included), for
/// comparing digests at equal watermarks.
pub(crate) fn applied(log: &Log) -> Token {
    let mut all = Token::new();
    for s in 0..log.shard_count() {
        let lsn = log.shard(ShardId(s)).expect("hosted").applied();
        if lsn.0 > 0 {
            all.observe(themis_log::Position {
                shard: ShardId(s),
                lsn,
            });
        }
    }
    all
}

/// Every view's digest of every shard, with its watermark.
pub(crate) fn digests(views: &Materializer) -> Vec<(&'static str, ShardId, u64, u64)> {
    let mut out = Vec::new();
    for kind in views.kinds() {
        for s in 0..4 {
            let (lsn, digest) = views.digest(kind, ShardId(s)).expect("digest");
            out.push((kind, ShardId(s), lsn.0, digest));
        }
    }
    out
}

pub(crate) async fn wait_all(views: &Materializer, token: &Token) {
    for kind in views.kinds() {
        views
            .wait_for(kind, token, &[], Duration::from_secs(30))
            .await
            .expect("the view catches up with the log");
    }
}

async fn run(steps: Vec<(usize, Op, Option<i64>)>) {
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk).await;
    let mut model: BTreeMap<String, Model> = BTreeMap::new();
    let mut token = Token::new();
    for (i, (r, op, expected)) in steps.into_iter().enumerate() {
        // Even resources are documents, odd ones relational rows (the relational view is the
        // same fold; schemas are checked before the log, by the server, not here).
        let model_name = if r % 2 == 0 { "document" } else { "relational" };
        let urn = format!("urn:themis:{model_name}:prop:r{r}");
        let (name, data) = match &op {
            Op::Put(d) => ("put", Some(d.clone())),
            Op::Patch(d) => ("patch", Some(d.clone())),
            Op::Delete => ("delete", None),
        };
        let mut event = json!({"urn": urn, "op": name});
        if let Some(d) = data {
            event["data"] = d;
        }
        if let Some(e) = expected {
            event["expected_revision"] = json!(e);
        }
        let input = serde_json::from_value(event).expect("input");
        let batch = log.validate(vec![input], None, None).expect("valid");
        let result = log.append(batch, false).await.expect("append");
        let (_, answer) = result.shards.into_iter().next().expect("one shard");
        // The model decides first, the log must agree.
        let current = model.get(&urn).map(|m| m.revision);
        let admitted = match expected {
            None => true,
            Some(-1) => current.is_none(),
            Some(n) => current == Some(n as u64),
        };
        match (admitted, answer) {
            (true, Ok(appended)) => {
                token.observe(appended.position);
                let revision = current.map_or(0, |r| r + 1);
                assert_eq!(appended.events[0].revision, revision, "step {i}");
                let state = match op {
                    Op::Put(d) => Model {
                        data: d,
                        revision,
                        deleted: false,
                    },
                    Op::Patch(d) => {
                        let mut data = match model.get(&urn) {
                            Some(m) if !m.deleted => m.data.clone(),
                            _ => json!({}),
                        };
                        merge_patch(&mut data, &d);
                        Model {
                            data,
                            revision,
                            deleted: false,
                        }
                    }
                    Op::Delete => Model {
                        data: Value::Null,
                        revision,
                        deleted: true,
                    },
                };
                model.insert(urn, state);
            }
            (false, Err(themis_log::Error::WrongExpectedRevision { .. })) => {}
            (admitted, answer) => {
                panic!("step {i}: the model admits {admitted}, the log answered {answer:?}")
            }
        }
    }
    wait_all(&views, &token).await;
    // Every resource in the view equals the model, and nothing else is there.
    let mut seen = BTreeMap::new();
    for view in [document::DOCUMENTS, document::ROWS] {
        for s in 0..4 {
            let (docs, _) = views
                .read(view.kind(), ShardId(s), |tx| view.all(tx, ShardId(s)))
                .expect("read");
            for (urn, d) in docs {
                seen.insert(
                    urn,
                    Model {
                        data: d.data,
                        revision: d.revision,
                        deleted: d.deleted,
                    },
                );
            }
        }
    }
    assert_eq!(seen, model);

    // A rebuild, then a restart, reach the same digests, at the same watermarks: the whole
    // applied log of every shard (refused appends have entries too).
    let token = applied(&log);
    wait_all(&views, &token).await;
    let before = digests(&views);
    for kind in views.kinds() {
        views.rebuild(kind, None).expect("rebuild");
    }
    wait_all(&views, &token).await;
    assert_eq!(digests(&views), before, "after a rebuild");
    views.sync().expect("sync");
    log.shutdown().await;
    drop(views);
    drop(log);
    let (log, views) = open(&disk).await;
    wait_all(&views, &token).await;
    assert_eq!(digests(&views), before, "after a restart");
    log.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_document_view_equals_a_fold_of_the_accepted_events(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(run(steps));
    }
}

/// This crate's directory, as cargo gives it to the running test (not as compiled in: a test
/// binary reused from a shared target directory by a checkout elsewhere would look there).
fn crate_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}
