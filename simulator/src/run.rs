//! One simulated run: a cluster on one thread in virtual time, concurrent clients, a nemesis
//! injecting faults for the fault phase, then the liveness phase (heal everything, restart
//! every node: every shard must elect a leader and every replica converge within a bound) and
//! the safety checker over the recorded history and the converged logs.
//!
//! Its trace (every replica's applied LSN and log chain per shard, and every client operation
//! with its times and outcome) and the trace's hash identify the run.
//!
//! Invariant: the same options give the same trace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use themis_log::{EventInput, Log, Lsn, ShardId};
use themis_storage::canary::{self, Canary};

use crate::checker::{self, Checked};
use crate::cluster::{SimCluster, SimOptions};
use crate::disk::DiskStats;
use crate::faults::{self, FaultSpec, NemesisLog};
use crate::workload::{self, History, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The seed of every random draw.
    pub seed: u64,
    /// Nodes.
    pub nodes: u64,
    /// Shards.
    pub shards: u32,
    /// Virtual time of the workload and fault phase.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Most think time between a client's operations.
    pub think_max: Duration,
    /// Fault kinds.
    pub faults: FaultSpec,
    /// A deliberately broken variant to run (needs the `canaries` feature).
    pub canary: Option<Canary>,
    /// Entries between Raft snapshots.
    pub snapshot_every: u64,
}

impl RunOptions {
    /// Defaults for `seed`: 3 nodes, 2 shards, 10 s, 4 clients, no faults.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            nodes: 3,
            shards: 2,
            duration: Duration::from_secs(10),
            clients: 4,
            think_max: Duration::from_millis(30),
            faults: FaultSpec::default(),
            canary: None,
            snapshot_every: 64,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// Virtual time the run took.
    pub simulated: Duration,
    /// Per node and shard: applied LSN and last log chain; then every operation.
    pub trace: Vec<String>,
    /// xxh3 of the trace.
    pub hash: u64,
    /// What the checker counted.
    pub checked: Checked,
    /// What the nemesis did.
    pub faults: Vec<String>,
    /// Failover times of leader crashes: to a new leader, and to the first acknowledged append.
    pub failovers: Vec<(Duration, Duration)>,
    /// Disks' statistics.
    pub disks: DiskStats,
    /// Raft snapshots installed (replicas that fell behind a purged log).
    pub snapshots_installed: u64,
    /// Virtual time from healing to every shard having a leader and converged replicas.
    pub converged_after: Duration,
}

impl Report {
    /// Whether two runs were the same run: the same trace (every replica's log chain and every
    /// client operation with its times and outcome), checks, faults, failover times, snapshot
    /// installs and timing. Disk statistics are left out: under parallel test threads the
    /// count of fsyncs was once seen to differ by one between two runs with identical traces
    /// (an open question, see docs/SIMULATION.md).
    pub fn same_run(&self, other: &Report) -> bool {
        self.trace == other.trace
            && self.hash == other.hash
            && self.checked == other.checked
            && self.faults == other.faults
            && self.failovers == other.failovers
            && self.snapshots_installed == other.snapshots_installed
            && self.simulated == other.simulated
            && self.converged_after == other.converged_after
    }
}

/// Why a run failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong (safety violations, or liveness not reached).
    pub errors: Vec<String>,
    /// The faults injected before.
    pub faults: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        if !self.faults.is_empty() {
            writeln!(f, "faults injected:")?;
            for e in &self.faults {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

/// Appends one `put` event (data `{"n": n}`) to `urn` through `log`; returns its shard.
pub async fn append(log: &Log, urn: &str, n: u64) -> themis_log::Result<ShardId> {
    let input: EventInput =
        serde_json::from_value(serde_json::json!({"urn": urn, "op": "put", "data": {"n": n}}))
            .map_err(|e| themis_log::Error::Config(e.to_string()))?;
    let batch = log
        .validate(vec![input], None, None)
        .map_err(|e| themis_log::Error::Config(e.to_string()))?;
    let result = log.append(batch, false).await?;
    let (shard, appended) = result.shards.into_iter().next().expect("one shard");
    appended.map(|_| shard)
}

/// Runs `o` on a fresh single-threaded runtime whose clock is paused (virtual time).
pub fn run(o: &RunOptions) -> Result<Report, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        // Tokio's own draws (which watch receiver wakes first, select! branch order) follow
        // the run seed too; unseeded they differ per process and reorder tasks.
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&o.seed.to_le_bytes()))
        .build()
        .map_err(|e| Failure {
            errors: vec![format!("cannot build the runtime: {e}")],
            faults: Vec::new(),
        })?;
    canary::set(o.canary);
    let result = runtime.block_on(run_async(o.clone()));
    canary::set(None);
    result
}

/// The liveness bound: after healing, every shard has a leader and every replica converges
/// within this much virtual time.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(30);

async fn run_async(o: RunOptions) -> Result<Report, Failure> {
    let fail = |errors: Vec<String>, faults: &[String]| Failure {
        errors,
        faults: faults.to_vec(),
    };
    let c = SimCluster::start_with(SimOptions {
        nodes: o.nodes,
        shards: o.shards,
        replication: o.nodes.min(3) as u32,
        seed: o.seed,
        inline: true,
        snapshot_every: o.snapshot_every,
    })
    .await
    .map_err(|e| fail(vec![format!("cluster: {e}")], &[]))?;
    let c = Arc::new(c);
    c.wait_for_leaders(Duration::from_secs(60))
        .await
        .map_err(|e| fail(vec![format!("no leaders: {e}")], &[]))?;
    workload::declare_namespaces(&c, Duration::from_secs(60))
        .await
        .map_err(|e| fail(vec![e], &[]))?;
    let started = c.now();
    let until = started + o.duration;
    let recorder: workload::Recorder = Arc::new(Mutex::new(History::default()));

    // Safety phase: clients and the nemesis.
    let clients = (0..o.clients).map(|i| {
        workload::client(
            c.clone(),
            recorder.clone(),
            Workload {
                clients: o.clients,
                think_max: o.think_max,
                ..Workload::default()
            },
            i,
            o.seed ^ ((i as u64 + 1) << 40),
            until,
        )
    });
    let nemesis = faults::nemesis(c.clone(), recorder.clone(), o.faults.clone(), o.seed, until);
    let subscribed: crate::subscriber::SubscribedLog = Default::default();
    let subscriber_seed = o.seed ^ 0x5ab5_c41b;
    let subscriber =
        crate::subscriber::subscriber(c.clone(), subscribed.clone(), subscriber_seed, until);
    let ((), mut nemesis_log, ()) = futures::join!(
        async {
            futures::future::join_all(clients).await;
        },
        nemesis,
        subscriber
    );

    // Liveness phase: heal, restart, and wait for leaders and convergence.
    let healed = c.now();
    faults::heal(&c, &mut nemesis_log).await;
    let logs = match converge(&c, healed).await {
        Ok(logs) => logs,
        Err(e) => return Err(fail(vec![e], &nemesis_log.events)),
    };
    let views = match views_converged(&c, &logs, healed).await {
        Ok(v) => v,
        Err(e) => return Err(fail(vec![e], &nemesis_log.events)),
    };
    if let Err(e) =
        crate::subscriber::catch_up(&c, &subscribed, subscriber_seed, healed + LIVENESS_BOUND).await
    {
        return Err(fail(vec![format!("liveness: {e}")], &nemesis_log.events));
    }
    let converged_after = c.now() - healed;

    let history = recorder.lock().expect("history lock").clone();
    let mut checked = checker::check(&history, &logs).map_err(|e| fail(e, &nemesis_log.events))?;
    checked.resources =
        checker::check_views(&logs, &views.0).map_err(|e| fail(e, &nemesis_log.events))?;
    checked.vectors =
        checker::check_vectors(&logs, &views.1).map_err(|e| fail(e, &nemesis_log.events))?;
    checked.texts =
        checker::check_texts(&logs, &views.2).map_err(|e| fail(e, &nemesis_log.events))?;
    checked.points =
        checker::check_series(&logs, &views.3).map_err(|e| fail(e, &nemesis_log.events))?;
    checked.graph =
        checker::check_graph(&logs, &views.4).map_err(|e| fail(e, &nemesis_log.events))?;
    let subscribed = std::mem::take(&mut *subscribed.lock().expect("subscriber lock"));
    checked.subscribed =
        checker::check_subscriber(&logs, &subscribed).map_err(|e| fail(e, &nemesis_log.events))?;
    let mut trace = trace(&logs, &history);
    trace.push(format!(
        "subscriber received {} in {} sessions, cursor {}",
        subscribed.received.len(),
        subscribed.sessions,
        subscribed.cursor
    ));
    let simulated = c.now();
    let snapshots_installed = c.snapshots_installed();
    c.shutdown().await;
    let hash = xxhash_rust::xxh3::xxh3_64(trace.join("\n").as_bytes());
    let NemesisLog {
        events, failovers, ..
    } = nemesis_log;
    Ok(Report {
        simulated,
        trace,
        hash,
        checked,
        faults: events,
        failovers,
        disks: c.disk_stats(),
        snapshots_installed,
        converged_after,
    })
}

type Logs = BTreeMap<u32, Vec<(u64, Vec<themis_log::LogEntryView>)>>;

/// Waits until every shard has a leader and all its replicas hold the same applied log; returns
/// every replica's log.
async fn converge(c: &SimCluster, healed: Duration) -> Result<Logs, String> {
    let deadline = healed + LIVENESS_BOUND;
    let mut logs = BTreeMap::new();
    for s in 0..c.shards() {
        loop {
            let running = c.running();
            let leader = futures::future::join_all(running.iter().map(|(_, log)| log.status()))
                .await
                .into_iter()
                .flatten()
                .any(|st| st.shard == ShardId(s) && st.leader.is_some());
            let pages: Vec<(u64, Vec<themis_log::LogEntryView>, Lsn)> = running
                .iter()
                .filter_map(|(id, log)| log.shard(ShardId(s)).ok().map(|sh| (*id, sh)))
                .filter_map(|(id, sh)| {
                    let (entries, applied) = sh.read_log(Lsn(0), usize::MAX).ok()?;
                    Some((id, entries, applied))
                })
                .collect();
            // Every replica applied its whole log, and the logs are equal: the applied prefix
            // alone could agree while a restarted leader has yet to commit its tail again.
            let complete = running.iter().all(|(_, log)| match log.shard(ShardId(s)) {
                Ok(sh) => {
                    let m = sh.raft().metrics().borrow().clone();
                    m.last_applied.map(|id| id.index) == m.last_log_index
                }
                Err(_) => true,
            });
            let expected = c.ids().len().min(3);
            let converged = leader
                && complete
                && pages.len() == expected
                && pages.windows(2).all(|w| {
                    w[0].2 == w[1].2
                        && w[0].1.last().map(|e| &e.chain) == w[1].1.last().map(|e| &e.chain)
                });
            if converged {
                logs.insert(
                    s,
                    pages
                        .into_iter()
                        .map(|(id, entries, _)| (id, entries))
                        .collect(),
                );
                break;
            }
            if c.now() > deadline {
                let state: Vec<String> = pages
                    .iter()
                    .map(|(id, e, a)| {
                        let raft = running
                            .iter()
                            .find(|(n, _)| n == id)
                            .and_then(|(_, log)| log.shard(ShardId(s)).ok())
                            .map(|sh| {
                                let m = sh.raft().metrics().borrow().clone();
                                format!(
                                    "term {}, {:?}, last log {:?}, last applied {:?}",
                                    m.current_term,
                                    m.state,
                                    m.last_log_index,
                                    m.last_applied.map(|l| l.index)
                                )
                            })
                            .unwrap_or_default();
                        format!(
                            "node {id}: applied {} ({} entries, last chain {}; {raft})",
                            a.0,
                            e.len(),
                            e.last().map_or("-", |l| l.chain.as_str())
                        )
                    })
                    .collect();
                // Where the replicas' chains first differ, if they do.
                let mut first_diff = String::new();
                if let Some((a, ea, _)) = pages.first() {
                    for (b, eb, _) in pages.iter().skip(1) {
                        let at = eb.iter().find(|e| {
                            ea.iter()
                                .find(|x| x.lsn == e.lsn)
                                .is_some_and(|x| x.chain != e.chain)
                        });
                        if let Some(e) = at {
                            first_diff.push_str(&format!(
                                "; nodes {a} and {b} first differ at LSN {}",
                                e.lsn.0
                            ));
                        }
                    }
                }
                return Err(format!(
                    "liveness: shard {s} did not converge within {LIVENESS_BOUND:?} after \
                     healing (leader known: {leader}; {}){first_diff}",
                    state.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(logs)
}

/// Waits until every running replica's state views have applied its whole log (within the
/// liveness bound); returns every view's content.
async fn views_converged(
    c: &SimCluster,
    logs: &Logs,
    healed: Duration,
) -> Result<
    (
        checker::Views,
        checker::VectorViews,
        checker::TextViews,
        checker::SeriesViews,
        checker::GraphViews,
    ),
    String,
> {
    let deadline = healed + LIVENESS_BOUND;
    loop {
        let mut views: checker::Views = BTreeMap::new();
        let mut vectors: checker::VectorViews = BTreeMap::new();
        let mut texts: checker::TextViews = BTreeMap::new();
        let mut series: checker::SeriesViews = BTreeMap::new();
        let mut graphs: checker::GraphViews = BTreeMap::new();
        let mut behind = Vec::new();
        for (id, log) in c.running() {
            let Some(m) = c.views(id) else { continue };
            for &s in logs.keys() {
                let Ok(shard) = log.shard(ShardId(s)) else {
                    continue;
                };
                let applied = shard.applied().0;
                for (view, _) in &checker::STATE_VIEWS {
                    let kind = view.kind();
                    match m.read(kind, ShardId(s), |tx| view.all(tx, ShardId(s))) {
                        Ok((docs, watermark)) if watermark.0 == applied => {
                            views
                                .entry((kind, s))
                                .or_default()
                                .push((id, watermark.0, docs));
                        }
                        Ok((_, watermark)) => behind.push(format!(
                            "node {id} shard {s}: {kind} view at {}, log applied {applied}",
                            watermark.0
                        )),
                        Err(e) => behind.push(format!("node {id} shard {s}: {e}")),
                    }
                }
                match m.text_sets("document", ShardId(s)) {
                    Ok((watermark, indexed)) if watermark.0 == applied => {
                        let urns = indexed.get("sim").cloned().unwrap_or_default();
                        texts.entry(s).or_default().push((id, urns));
                    }
                    Ok((watermark, _)) => behind.push(format!(
                        "node {id} shard {s}: fulltext at {}, log applied {applied}",
                        watermark.0
                    )),
                    Err(e) => behind.push(format!("node {id} shard {s}: {e}")),
                }
                let ts = m.timeseries();
                let read = m.read("timeseries", ShardId(s), |tx| {
                    let mut out = BTreeMap::new();
                    for (urn, _) in ts.all_series(tx, ShardId(s))? {
                        let points = ts.stored_points(tx, ShardId(s), &urn)?;
                        if !points.is_empty() {
                            out.insert(urn, points);
                        }
                    }
                    Ok(out)
                });
                match read {
                    Ok((stored, watermark)) if watermark.0 == applied => {
                        series.entry(s).or_default().push((id, stored));
                    }
                    Ok((_, watermark)) => behind.push(format!(
                        "node {id} shard {s}: timeseries view at {}, log applied {applied}",
                        watermark.0
                    )),
                    Err(e) => behind.push(format!("node {id} shard {s}: {e}")),
                }
                let g = themis_materializers::graph::GraphView;
                let read = m.read("graph", ShardId(s), |tx| {
                    Ok((g.vertices(tx, ShardId(s))?, g.edges(tx, ShardId(s))?))
                });
                match read {
                    Ok(((vertices, edges), watermark)) if watermark.0 == applied => {
                        graphs.entry(s).or_default().push((id, vertices, edges));
                    }
                    Ok((_, watermark)) => behind.push(format!(
                        "node {id} shard {s}: graph view at {}, log applied {applied}",
                        watermark.0
                    )),
                    Err(e) => behind.push(format!("node {id} shard {s}: {e}")),
                }
                match m.vector_sets(ShardId(s)) {
                    Ok((watermark, live, found)) if watermark.0 == applied => {
                        vectors.entry(s).or_default().push((id, live, found));
                    }
                    Ok((watermark, _, _)) => behind.push(format!(
                        "node {id} shard {s}: vector view at {}, log applied {applied}",
                        watermark.0
                    )),
                    Err(e) => behind.push(format!("node {id} shard {s}: {e}")),
                }
            }
        }
        if behind.is_empty() {
            return Ok((views, vectors, texts, series, graphs));
        }
        if c.now() > deadline {
            return Err(format!(
                "liveness: the views did not catch up within {LIVENESS_BOUND:?} after healing: {}",
                behind.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn trace(logs: &Logs, history: &History) -> Vec<String> {
    let mut trace = Vec::new();
    for (s, replicas) in logs {
        for (id, entries) in replicas {
            let (lsn, chain) = entries
                .last()
                .map(|e| (e.lsn.0, e.chain.clone()))
                .unwrap_or_default();
            trace.push(format!("node {id} shard {s} applied {lsn} chain {chain}"));
        }
    }
    for op in &history.appends {
        trace.push(format!(
            "append {} {} {} {:?}..{:?} {} {:?}",
            op.client, op.id, op.urn, op.invoked, op.completed, op.expected, op.outcome
        ));
    }
    for r in &history.reads {
        trace.push(format!(
            "read {} {} {:?}..{:?} {:?}",
            r.client, r.urn, r.invoked, r.completed, r.revision
        ));
    }
    trace
}
