//! A Jepsen-style check of a real cluster: clients append with unique event ids through random
//! nodes while a nemesis kills and restarts nodes (SIGKILL) and pauses them (SIGSTOP/SIGCONT),
//! one fault at a time. Then every fault heals, the cluster converges, and the recorded history
//! is checked against the replicas' logs.
//!
//! Checked: every acknowledged append is in its stream at the acknowledged revision and LSN; no
//! event id appears twice; stream revisions are dense and never assigned twice; within a shard,
//! an append acknowledged before another began has the smaller LSN (real-time order); all
//! replicas' committed logs are equal entry by entry (one value per (shard, LSN)).
//!
//! `THEMIS_NEMESIS_SECONDS` (default 12) sets the workload's length and `THEMIS_NEMESIS_SEED` the
//! nemesis' and clients' choices; CI runs the default, longer runs are on demand.
#![allow(clippy::disallowed_methods)] // test harness: real threads, real time, seeded randomness

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::api::get;
use crate::cluster::{Node, assert_replicas_converge, init, new_nodes, node_args, start_nodes};
use crate::harness::{Etcd, Server};

/// What one append returned.
#[derive(Debug, Clone)]
enum Result_ {
    /// 201: the event's stream revision, LSN and shard.
    Ok { revision: u64, lsn: u64, shard: u64 },
    /// A definite refusal (nothing was appended).
    Failed,
    /// No answer, or an answer saying the outcome is unknown (what happened).
    Unknown(String),
}

#[derive(Debug, Clone)]
struct Op {
    id: String,
    urn: String,
    invoked: Duration,
    completed: Duration,
    result: Result_,
}

const STREAMS: usize = 16;
const CLIENTS: usize = 6;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client(
    c: usize,
    bases: Vec<String>,
    start: Instant,
    stop: Duration,
    seed: u64,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0u64;
    while start.elapsed() < stop {
        n += 1;
        let id = format!("00000000-0000-4000-8{c:03}-{n:012}");
        let urn = format!("urn:themis:document:nem:s{}", rng.gen_range(0..STREAMS));
        let base = &bases[rng.gen_range(0..bases.len())];
        let invoked = start.elapsed();
        let answer = http
            .post(format!("{base}/v1/streams/{urn}"))
            .json(&json!({"events": [{"op": "put", "id": id, "data": {"c": c, "n": n}}]}))
            .send()
            .await;
        let result = match answer {
            Ok(r) if r.status().as_u16() == 201 => {
                let body: Value = r.json().await.unwrap();
                Result_::Ok {
                    revision: body["events"][0]["revision"].as_u64().unwrap(),
                    lsn: body["events"][0]["lsn"].as_u64().unwrap(),
                    shard: body["position"]["shard"].as_u64().unwrap(),
                }
            }
            // Refused before anything was proposed: not the leader (forwarding found none in
            // time), unavailable.
            Ok(r) if [421, 503].contains(&r.status().as_u16()) => Result_::Failed,
            Ok(r) if r.status().as_u16() == 409 => {
                panic!(
                    "no client reuses an id or expects a revision: {}",
                    r.text().await.unwrap()
                )
            }
            // The node is down: the request never left.
            Err(e) if e.is_connect() => Result_::Failed,
            Err(e) if e.is_timeout() => Result_::Unknown("client timeout".into()),
            Err(e) => Result_::Unknown(e.to_string()),
            Ok(r) => Result_::Unknown(format!(
                "{}: {}",
                r.status(),
                r.json::<Value>()
                    .await
                    .map(|b| b["code"].to_string())
                    .unwrap_or_default()
            )),
        };
        let completed = start.elapsed();
        history.lock().unwrap().push(Op {
            id,
            urn,
            invoked,
            completed,
            result,
        });
        if matches!(
            history.lock().unwrap().last().unwrap().result,
            Result_::Failed | Result_::Unknown(_)
        ) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One fault at a time: a node is killed and restarted, or paused and resumed.
async fn nemesis(
    nodes: Arc<Mutex<Vec<Node>>>,
    etcd: String,
    dir: std::path::PathBuf,
    start: Instant,
    stop: Duration,
    seed: u64,
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = Vec::new();
    while start.elapsed() < stop {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
        let victim = rng.gen_range(0..3);
        let outage = Duration::from_millis(rng.gen_range(300..2000));
        if rng.gen_bool(0.5) {
            let server = nodes.lock().unwrap()[victim].server.take().unwrap();
            server.kill();
            log.push(format!(
                "{:?}: kill node {} for {outage:?}",
                start.elapsed(),
                victim + 1
            ));
            tokio::time::sleep(outage).await;
            let (data, listen, args) = {
                let nodes = nodes.lock().unwrap();
                let node = &nodes[victim];
                (
                    dir.join(format!("n{}", node.id)),
                    node.listen.clone(),
                    node_args(node, &etcd, &["--request-timeout", "5s"]),
                )
            };
            let server = tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Server::try_start_on(&data, &listen, &args)
            })
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("restart of node {}: {e}", victim + 1));
            nodes.lock().unwrap()[victim].server = Some(server);
        } else {
            nodes.lock().unwrap()[victim]
                .server
                .as_ref()
                .unwrap()
                .signal("STOP");
            log.push(format!(
                "{:?}: pause node {} for {outage:?}",
                start.elapsed(),
                victim + 1
            ));
            tokio::time::sleep(outage).await;
            nodes.lock().unwrap()[victim]
                .server
                .as_ref()
                .unwrap()
                .signal("CONT");
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_kills_and_pauses_is_linearizable_and_complete() {
    let seconds = env_u64("THEMIS_NEMESIS_SECONDS", 12);
    let seed = env_u64("THEMIS_NEMESIS_SEED", 20261126);
    eprintln!(
        "nemesis run: {seconds} s, seed {seed} (THEMIS_NEMESIS_SECONDS, THEMIS_NEMESIS_SEED)"
    );
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    init(&etcd, 4, 3);
    let mut nodes = new_nodes(3);
    start_nodes(
        dir.path(),
        &etcd.endpoint,
        &mut nodes,
        &["--request-timeout", "5s"],
    );
    let bases: Vec<String> = nodes.iter().map(Node::base).collect();
    let nodes = Arc::new(Mutex::new(nodes));
    let history = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let stop = Duration::from_secs(seconds);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(c, bases.clone(), start, stop, seed, history.clone())))
        .collect();
    let faults = tokio::spawn(nemesis(
        nodes.clone(),
        etcd.endpoint.clone(),
        dir.path().to_owned(),
        start,
        stop,
        seed,
    ));
    for c in clients {
        c.await.unwrap();
    }
    let faults = faults.await.unwrap();
    let history = history.lock().unwrap().clone();
    let nodes = Arc::try_unwrap(nodes).ok().unwrap().into_inner().unwrap();
    let context = format!("seed {seed}, faults:\n{}", faults.join("\n"));

    // Heal: every node runs; wait until the replicas agree.
    assert_replicas_converge(&nodes, 4).await;

    let acked: Vec<&Op> = history
        .iter()
        .filter(|o| matches!(o.result, Result_::Ok { .. }))
        .collect();
    let mut unknown_kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &history {
        if let Result_::Unknown(kind) = &o.result {
            *unknown_kinds.entry(kind.as_str()).or_default() += 1;
        }
    }
    let unknown: usize = unknown_kinds.values().sum();
    eprintln!(
        "{} appends: {} acknowledged, {} refused, {unknown} unknown {unknown_kinds:?}\n{context}",
        history.len(),
        acked.len(),
        history.len() - acked.len() - unknown
    );
    assert!(
        acked.len() > 50,
        "too few appends succeeded to check anything: {context}"
    );

    // Read every stream (linearizably) from node 1.
    let mut found: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
    for s in 0..STREAMS {
        let urn = format!("urn:themis:document:nem:s{s}");
        let a = get(&nodes[0].base(), &format!("/v1/streams/{urn}?limit=10000")).await;
        if a.status == 404 {
            continue;
        }
        assert_eq!(a.status, 200, "{}", a.text);
        let body = a.json();
        for (expected_revision, e) in body["events"].as_array().unwrap().iter().enumerate() {
            let revision = e["revision"].as_u64().unwrap();
            assert_eq!(
                revision, expected_revision as u64,
                "{urn}: revisions are dense and assigned once ({context})"
            );
            let id = e["id"].as_str().unwrap().to_owned();
            let previous = found.insert(
                id.clone(),
                (
                    urn.clone(),
                    revision,
                    e["position"]["lsn"].as_u64().unwrap(),
                ),
            );
            assert!(previous.is_none(), "event {id} appears twice ({context})");
        }
    }
    for op in &acked {
        let Result_::Ok { revision, lsn, .. } = op.result else {
            unreachable!()
        };
        assert_eq!(
            found.get(&op.id),
            Some(&(op.urn.clone(), revision, lsn)),
            "acknowledged append {} is in {} at revision {revision}, LSN {lsn} ({context})",
            op.id,
            op.urn
        );
    }
    // Every event found was invoked by a client (refused appends left no trace).
    let invoked: BTreeSet<&str> = history
        .iter()
        .filter(|o| !matches!(o.result, Result_::Failed))
        .map(|o| o.id.as_str())
        .collect();
    for id in found.keys() {
        assert!(
            invoked.contains(id.as_str()),
            "event {id} is in the log but was refused or never sent ({context})"
        );
    }
    // Real-time order within a shard.
    let mut by_shard: BTreeMap<u64, Vec<(&Op, u64)>> = BTreeMap::new();
    for op in &acked {
        if let Result_::Ok { lsn, shard, .. } = op.result {
            by_shard.entry(shard).or_default().push((op, lsn));
        }
    }
    for (shard, ops) in &by_shard {
        for (a, lsn_a) in ops {
            for (b, lsn_b) in ops {
                if a.completed < b.invoked {
                    assert!(
                        lsn_a < lsn_b,
                        "shard {shard}: {} was acknowledged (LSN {lsn_a}) before {} began, which got LSN {lsn_b} ({context})",
                        a.id,
                        b.id
                    );
                }
            }
        }
    }
}
