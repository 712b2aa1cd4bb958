//! The client workload and its recorded history: concurrent clients append single events (puts,
//! merge patches and deletes) with unique ids (client-chosen, so a retry is idempotent) and,
//! half the time, an expected revision taken from what they last saw of the stream; they also
//! read streams linearizably. Every operation is recorded with its invocation and completion time in
//! virtual time and its outcome, for the checker.
//!
//! Invariant: an outcome is recorded as definite only when the system said so (an
//! acknowledgement, or a refused expected revision); anything else (timeouts, unavailable
//! leaders, crashes) is recorded as unknown and the checker allows both possibilities.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use themis_log::event::ExpectedRevision;
use themis_log::shards::Consistency;
use themis_log::{Error, EventInput, Log, Urn};

use crate::cluster::SimCluster;

/// What the system answered to one append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Acknowledged at this place.
    Ok {
        /// Shard.
        shard: u32,
        /// Entry.
        lsn: u64,
        /// Index in the entry.
        index: u32,
        /// Revision in the stream.
        revision: u64,
    },
    /// Refused by its expected revision: not appended. `actual` is the stream's revision the
    /// refusal reported (`None`: no stream).
    Conflict {
        /// The reported revision.
        actual: Option<u64>,
    },
    /// No definite answer: it may or may not be in the log.
    Unknown(String),
}

/// One append, as the client saw it.
#[derive(Debug, Clone)]
pub struct AppendOp {
    /// Client number (`PROBE` for failover probes).
    pub client: usize,
    /// The event id (a UUID).
    pub id: String,
    /// The stream.
    pub urn: String,
    /// Its expected revision.
    pub expected: ExpectedRevision,
    /// When it was invoked and answered (virtual time since the run began).
    pub invoked: Duration,
    /// See `invoked`.
    pub completed: Duration,
    /// Attempts made (retries reuse the id).
    pub attempts: u32,
    /// The answer.
    pub outcome: AppendOutcome,
}

/// One linearizable read of a whole stream that succeeded.
#[derive(Debug, Clone)]
pub struct ReadOp {
    /// Client number.
    pub client: usize,
    /// The stream.
    pub urn: String,
    /// When it was invoked and answered.
    pub invoked: Duration,
    /// See `invoked`.
    pub completed: Duration,
    /// The stream's revision (None: no stream).
    pub revision: Option<u64>,
    /// Event ids in revision order.
    pub ids: Vec<String>,
}

/// Everything the clients did.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Appends, in completion order.
    pub appends: Vec<AppendOp>,
    /// Successful reads, in completion order.
    pub reads: Vec<ReadOp>,
    /// Reads that failed (not checked).
    pub failed_reads: u64,
}

/// The client number of failover probes.
pub const PROBE: usize = usize::MAX;

/// Shared recorder.
pub type Recorder = Arc<Mutex<History>>;

/// How clients behave.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: usize,
    /// Streams they write (few, so expected revisions conflict).
    pub streams: usize,
    /// Share of operations that are reads.
    pub read_share: f64,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
    /// Attempts of one append before its outcome is left unknown.
    pub attempts_max: u32,
    /// Most think time between a client's operations (drawn uniformly from zero to it).
    pub think_max: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            clients: 4,
            streams: 32,
            read_share: 0.2,
            attempt_timeout: Duration::from_secs(2),
            attempts_max: 6,
            think_max: Duration::from_millis(30),
        }
    }
}

fn input(id: &str, urn: &str, expected: ExpectedRevision, n: u64) -> EventInput {
    let expected = match expected {
        ExpectedRevision::Any => serde_json::json!("any"),
        ExpectedRevision::NoStream => serde_json::json!("no_stream"),
        ExpectedRevision::Exists => serde_json::json!("exists"),
        ExpectedRevision::Exact(r) => serde_json::json!(r),
    };
    // Puts, merge patches (setting, nesting and removing members) and deletes, so the document
    // view's every path is exercised. Vector puts carry a vector of the `sim` namespace's
    // dimension (see `CONFIGS`).
    if urn.starts_with("urn:themis:timeseries:") {
        // Points a few seconds apart, some out of order or repeated; every seventh a delete.
        let mut event = serde_json::json!({"id": id, "urn": urn, "expected_revision": expected});
        if n % 7 == 6 {
            event["op"] = "delete".into();
        } else {
            let t = ((n * 7919) % 200) as i64 * 1000;
            event["op"] = "points".into();
            event["points"] =
                serde_json::json!([[t, n as f64 / 4.0], [t + 3000, -(n as f64)], [t, 0.5]]);
        }
        return serde_json::from_value(event).expect("a valid event input");
    }
    if urn.starts_with("urn:themis:graph:") {
        // Vertices put, patched and deleted; edges to other graph streams linked and unlinked.
        let mut event = serde_json::json!({"id": id, "urn": urn, "expected_revision": expected});
        let other = format!("urn:themis:graph:sim:s{}", 6 + 8 * (n % 4));
        let label = ["knows", "likes"][(n % 2) as usize];
        match n % 9 {
            0..=2 => {
                event["op"] = "put".into();
                event["data"] = serde_json::json!({"n": n});
            }
            3 => {
                event["op"] = "patch".into();
                event["data"] = serde_json::json!({"p": n});
            }
            4..=6 => {
                event["op"] = "link".into();
                event["to"] = other.into();
                event["label"] = label.into();
                event["data"] = serde_json::json!({"w": n % 5});
            }
            7 => {
                event["op"] = "unlink".into();
                event["to"] = other.into();
                event["label"] = label.into();
            }
            _ => event["op"] = "delete".into(),
        }
        return serde_json::from_value(event).expect("a valid event input");
    }
    let vector = urn.starts_with("urn:themis:vector:");
    let (op, data) = match n % 7 {
        0..=3 => (
            "put",
            serde_json::json!({"n": n, format!("k{}", n % 3): [n], "t": format!("word{} word{}", n % 13, n % 5)}),
        ),
        4 | 5 => (
            "patch",
            serde_json::json!({"n": n, format!("k{}", (n + 1) % 3): null, "p": {"x": n}}),
        ),
        _ => ("delete", serde_json::Value::Null),
    };
    let mut event = serde_json::json!({
        "id": id, "urn": urn, "op": op, "expected_revision": expected,
    });
    if !data.is_null() {
        event["data"] = data;
    }
    if vector && op == "put" {
        event["vector"] = serde_json::json!([(n % 11) as f64, (n % 7) as f64 - 3.0, 1.0, 0.5]);
    }
    serde_json::from_value(event).expect("a valid event input")
}

/// The configs of the namespaces `sim` the workload writes to, appended before the clients
/// start (the vector view indexes a namespace once it knows its config; document field `t`
/// is indexed for fulltext search): (URN, config, event id).
pub const CONFIGS: [(&str, &str, &str); 3] = [
    (
        "urn:themis:vector:_namespace:sim",
        r#"{"dimension": 4, "metric": "l2", "m": 8, "ef_construction": 32, "ef_search": 16}"#,
        "00000000-0000-4000-8000-00000000c0f1",
    ),
    (
        "urn:themis:document:_namespace:sim",
        r#"{"text_fields": ["t"], "language": "en"}"#,
        "00000000-0000-4000-8000-00000000c0f2",
    ),
    (
        "urn:themis:timeseries:_namespace:sim",
        r#"{"block_ms": 60000, "downsample": [{"step_ms": 10000}]}"#,
        "00000000-0000-4000-8000-00000000c0f3",
    ),
];

/// Appends [`CONFIGS`] through the running nodes (with fixed event ids, so retries are
/// idempotent), within `timeout` of virtual time.
pub async fn declare_namespaces(cluster: &SimCluster, timeout: Duration) -> Result<(), String> {
    for (urn, config, id) in CONFIGS {
        declare(cluster, urn, config, id, timeout).await?;
    }
    Ok(())
}

async fn declare(
    cluster: &SimCluster,
    urn: &str,
    config: &str,
    id: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = cluster.now() + timeout;
    let input = || -> EventInput {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "urn": urn,
            "op": "put",
            "data": serde_json::from_str::<serde_json::Value>(config).expect("JSON"),
        }))
        .expect("a valid event input")
    };
    let mut last = String::new();
    while cluster.now() < deadline {
        for (_, log) in cluster.running() {
            let batch = log
                .validate_system(vec![input()], None, None)
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_secs(2), log.append(batch, false)).await {
                Ok(Ok(result)) if result.shards.iter().all(|(_, a)| a.is_ok()) => return Ok(()),
                Ok(Ok(result)) => last = format!("{:?}", result.shards),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the vector namespace config was not appended: {last}"
    ))
}

/// One attempt at an append through `log`: a definite outcome (acknowledged, or refused by
/// its expected revision), or why it has none.
async fn attempt(
    log: &Log,
    id: &str,
    urn: &str,
    expected: ExpectedRevision,
    n: u64,
) -> Result<AppendOutcome, String> {
    let batch = log
        .validate(vec![input(id, urn, expected, n)], None, None)
        .map_err(|e| e.to_string())?;
    let result = log.append(batch, false).await.map_err(|e| e.to_string())?;
    let (shard, appended) = result.shards.into_iter().next().expect("one shard");
    match appended {
        Ok(a) => {
            let e = &a.events[0];
            Ok(AppendOutcome::Ok {
                shard: shard.0,
                lsn: e.lsn.0,
                index: e.index,
                revision: e.revision,
            })
        }
        Err(Error::WrongExpectedRevision { actual, .. }) => Ok(AppendOutcome::Conflict { actual }),
        Err(e) => Err(e.to_string()),
    }
}

/// Appends one event with retries through the running nodes, recording the operation; returns
/// its outcome.
#[allow(clippy::too_many_arguments)]
pub async fn append(
    cluster: &SimCluster,
    recorder: &Recorder,
    rng: &mut StdRng,
    w: &Workload,
    client: usize,
    urn: &str,
    expected: ExpectedRevision,
    n: u64,
) -> AppendOutcome {
    let id = themis_log::seam::random_uuid(rng).to_string();
    let invoked = cluster.now();
    let mut attempts = 0;
    let mut last_error = String::new();
    let outcome = loop {
        if attempts >= w.attempts_max {
            break AppendOutcome::Unknown(last_error);
        }
        attempts += 1;
        let running = cluster.running();
        if running.is_empty() {
            last_error = "no node runs".into();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let (_, log) = &running[rng.gen_range(0..running.len())];
        let log = log.clone();
        match tokio::time::timeout(w.attempt_timeout, attempt(&log, &id, urn, expected, n)).await {
            Ok(Ok(definite)) => break definite,
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = "attempt timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..200))).await;
    };
    let op = AppendOp {
        client,
        id,
        urn: urn.to_owned(),
        expected,
        invoked,
        completed: cluster.now(),
        attempts,
        outcome: outcome.clone(),
    };
    recorder.lock().expect("history lock").appends.push(op);
    outcome
}

/// One client: appends and reads until `until` (virtual time since the run began).
pub async fn client(
    cluster: Arc<SimCluster>,
    recorder: Recorder,
    w: Workload,
    client: usize,
    seed: u64,
    until: Duration,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut known: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut n = 0u64;
    while cluster.now() < until {
        n += 1;
        // Every fourth stream is a relational row, every eighth a vector, a time series or a
        // graph vertex, the rest documents: the views fold the same ops and the checker compares
        // each with the log.
        let stream = rng.gen_range(0..w.streams);
        let model = if stream % 4 == 3 {
            "relational"
        } else if stream % 8 == 5 {
            "vector"
        } else if stream % 8 == 1 {
            "timeseries"
        } else if stream % 8 == 6 {
            "graph"
        } else {
            "document"
        };
        let urn = format!("urn:themis:{model}:sim:s{stream}");
        if rng.gen_bool(w.read_share) {
            read(&cluster, &recorder, &mut rng, &w, client, &urn, &mut known).await;
            continue;
        }
        let expected = match known.get(&urn) {
            _ if rng.gen_bool(0.5) => ExpectedRevision::Any,
            Some(Some(r)) => ExpectedRevision::Exact(*r),
            Some(None) | None => ExpectedRevision::NoStream,
        };
        let outcome = append(&cluster, &recorder, &mut rng, &w, client, &urn, expected, n).await;
        match outcome {
            AppendOutcome::Ok { revision, .. } => {
                known.insert(urn, Some(revision));
            }
            AppendOutcome::Conflict { actual } => {
                known.insert(urn, actual);
            }
            AppendOutcome::Unknown(_) => {
                known.remove(&urn);
            }
        }
        let think = rng.gen_range(0..=w.think_max.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
}

async fn read(
    cluster: &SimCluster,
    recorder: &Recorder,
    rng: &mut StdRng,
    w: &Workload,
    client: usize,
    urn: &str,
    known: &mut BTreeMap<String, Option<u64>>,
) {
    let running = cluster.running();
    if running.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return;
    }
    let (_, log) = running[rng.gen_range(0..running.len())].clone();
    let parsed = Urn::parse(urn).expect("a valid urn");
    let invoked = cluster.now();
    let page = tokio::time::timeout(
        w.attempt_timeout,
        log.read_stream(&parsed, 0, 1_000_000, Consistency::Linearizable),
    )
    .await;
    let mut h = recorder.lock().expect("history lock");
    match page {
        Ok(Ok(page)) => {
            known.insert(urn.to_owned(), page.revision);
            h.reads.push(ReadOp {
                client,
                urn: urn.to_owned(),
                invoked,
                completed: cluster.now(),
                revision: page.revision,
                ids: page.events.iter().map(|e| e.event.id.to_string()).collect(),
            });
        }
        _ => h.failed_reads += 1,
    }
}
