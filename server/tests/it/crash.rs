//! Crash safety of the real binary: concurrent clients append while the server is killed with
//! SIGKILL at random moments; after every restart each acknowledged event must be readable at
//! its acknowledged position with its exact content, and every unacknowledged batch must be
//! visible entirely or not at all.
//!
//! `THEMIS_CRASH_ROUNDS` (default 20) and `THEMIS_CRASH_SEED` (default fixed) control the run;
//! a failure prints the seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::api::{get, post};
use crate::harness::Server;

const WRITERS: u64 = 8;
const STREAMS_PER_WRITER: u64 = 3;

#[derive(Debug, Clone)]
struct Batch {
    urn: String,
    ids: Vec<String>,
    data: Vec<Value>,
    /// Revisions and LSN from the acknowledgement; None when unacknowledged.
    ack: Option<(Vec<u64>, u64)>,
    body: Value,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn writer(base: String, round: u64, w: u64, seed: u64, log: Arc<Mutex<Vec<Batch>>>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (round << 32) ^ w);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut revisions: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    for n in 0.. {
        let k = rng.gen_range(0..STREAMS_PER_WRITER);
        let urn = format!("urn:themis:document:crash:r{round}-w{w}-s{k}");
        let size = rng.gen_range(1..=3);
        let ids: Vec<String> = (0..size)
            .map(|_| themis_log::seam::random_uuid(&mut rng).to_string())
            .collect();
        let pad = "x".repeat(rng.gen_range(0..200));
        let data: Vec<Value> = (0..size)
            .map(|i| json!({"w": w, "n": n, "i": i, "pad": pad}))
            .collect();
        let current = *revisions.entry(k).or_insert(None);
        let expected = current.map_or(json!("no_stream"), |r| json!(r));
        let events: Vec<Value> = ids
            .iter()
            .zip(&data)
            .map(|(id, d)| json!({"id": id, "op": "put", "type": "T", "data": d}))
            .collect();
        let body = json!({"expected_revision": expected, "events": events});
        let mut batch = Batch {
            urn: urn.clone(),
            ids,
            data,
            ack: None,
            body: body.clone(),
        };
        let sent = client
            .post(format!("{base}/v1/streams/{urn}"))
            .json(&body)
            .send()
            .await;
        let answer = match sent {
            Ok(r) if r.status().as_u16() == 201 => r.json::<Value>().await.ok(),
            Ok(r) => panic!("unexpected answer {}: {:?}", r.status(), r.text().await),
            Err(_) => None,
        };
        let Some(answer) = answer else {
            // The server died under us: the batch's fate is unknown. Stop this writer.
            log.lock().unwrap().push(batch);
            return;
        };
        let revs: Vec<u64> = answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["revision"].as_u64().unwrap())
            .collect();
        assert_eq!(answer["duplicate"], false);
        revisions.insert(k, revs.last().copied());
        batch.ack = Some((revs, answer["position"]["lsn"].as_u64().unwrap()));
        log.lock().unwrap().push(batch);
    }
}

async fn read_all(base: &str, urn: &str) -> Vec<Value> {
    let page = get(base, &format!("/v1/streams/{urn}?limit=10000")).await;
    match page.status {
        404 => Vec::new(),
        200 => page.json()["events"].as_array().unwrap().clone(),
        other => panic!("reading {urn}: {other} {}", page.text),
    }
}

/// Checks every batch against what the restarted server serves.
async fn verify(base: &str, batches: &[Batch], seed: u64) {
    let mut streams: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for b in batches {
        if !streams.contains_key(b.urn.as_str()) {
            streams.insert(&b.urn, read_all(base, &b.urn).await);
        }
    }
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for events in streams.values() {
        for e in events {
            assert!(
                by_id.insert(e["id"].as_str().unwrap(), e).is_none(),
                "seed {seed}: an id appears twice"
            );
        }
    }
    for b in batches {
        let found: Vec<&&Value> = b
            .ids
            .iter()
            .filter_map(|id| by_id.get(id.as_str()))
            .collect();
        match &b.ack {
            Some((revisions, lsn)) => {
                assert_eq!(
                    found.len(),
                    b.ids.len(),
                    "seed {seed}: acknowledged events of {} lost",
                    b.urn
                );
                for ((e, data), revision) in found.iter().zip(&b.data).zip(revisions) {
                    assert_eq!(&e["data"], data, "seed {seed}: content changed");
                    assert_eq!(
                        e["revision"].as_u64(),
                        Some(*revision),
                        "seed {seed}: revision changed"
                    );
                    assert_eq!(
                        e["position"]["lsn"].as_u64(),
                        Some(*lsn),
                        "seed {seed}: position changed"
                    );
                }
            }
            None => {
                assert!(
                    found.is_empty() || found.len() == b.ids.len(),
                    "seed {seed}: {} of {} events of an unacknowledged batch are visible",
                    found.len(),
                    b.ids.len()
                );
                for (e, data) in found.iter().zip(&b.data) {
                    assert_eq!(&e["data"], data, "seed {seed}: content changed");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    let rounds = env_u64("THEMIS_CRASH_ROUNDS", 20);
    let seed = env_u64("THEMIS_CRASH_SEED", 0x7e3a_5eed);
    println!("crash test: {rounds} rounds, THEMIS_CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut all: Vec<Batch> = Vec::new();
    let (mut acked, mut unknown, mut unknown_visible) = (0usize, 0usize, 0usize);
    for round in 0..rounds {
        let server = Server::start(dir.path(), &["--shards", "4"]);
        let log = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(server.base.clone(), round, w, seed, log.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..400))).await;
        server.kill();
        for w in writers {
            w.await.expect("writer panicked");
        }
        let batches = std::mem::take(&mut *log.lock().unwrap());

        let server = Server::start(dir.path(), &["--shards", "4"]);
        verify(&server.base, &batches, seed).await;
        // An acknowledged batch sent again after the crash is recognised, not appended twice.
        if let Some(b) = batches.iter().find(|b| b.ack.is_some()) {
            let again = post(&server.base, &format!("/v1/streams/{}", b.urn), &b.body).await;
            assert_eq!(
                again.status, 201,
                "seed {seed}: retry after restart: {}",
                again.text
            );
            assert_eq!(again.json()["duplicate"], true);
        }
        for b in &batches {
            if b.ack.is_some() {
                acked += 1;
            } else {
                unknown += 1;
                let page = read_all(&server.base, &b.urn).await;
                unknown_visible += usize::from(page.iter().any(|e| e["id"] == b.ids[0].as_str()));
            }
        }
        server.kill();
        all.extend(batches);
    }
    // Everything acknowledged in any round is still there after one more restart, and the
    // views, killed as often as the log, equal a rebuild from it.
    let server = Server::start(dir.path(), &["--shards", "4"]);
    verify(&server.base, &all, seed).await;
    crate::views::assert_views_equal_a_rebuild(&server.base).await;
    println!(
        "crash test: {acked} acknowledged batches intact, {unknown} unacknowledged at the kill \
         ({unknown_visible} of them committed anyway, whole)"
    );
    assert!(
        acked > rounds as usize,
        "seed {seed}: too few acknowledged appends to mean anything ({acked})"
    );
}
