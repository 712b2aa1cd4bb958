//! A real cluster on loopback: a real etcd, `themis cluster init`, and three `themis serve`
//! processes. Appends and reads go through every node (forwarded to each shard's leader); the
//! leader of a shard is killed with SIGKILL and the survivors keep accepting appends; the killed
//! node comes back and catches up; every replica's committed log is the same.
#![allow(clippy::disallowed_methods)] // test harness: real threads and real time

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{get, post};
use crate::harness::{Etcd, Server, cli, free_port};

/// Streams the failover test appends to (their shards are fixed by the ring: they cover all 4).
const STREAMS: usize = 12;

/// One cluster node's fixed addresses (kept across restarts) and its process.
pub struct Node {
    pub id: u64,
    pub listen: String,
    pub peer: String,
    pub server: Option<Server>,
}

impl Node {
    pub fn base(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// The `themis serve` flags of `node` in the cluster whose etcd is `etcd`.
pub fn node_args(node: &Node, etcd: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--node-id",
        &node.id.to_string(),
        "--peer-listen",
        &node.peer,
        "--etcd",
        etcd,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts nodes in parallel (each waits for the others to register before it listens).
pub fn start_nodes(dir: &Path, etcd: &str, nodes: &mut [Node], extra: &[&str]) {
    let started: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                let data = dir.join(format!("n{}", node.id));
                let args = node_args(node, etcd, extra);
                let listen = node.listen.clone();
                scope.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    Server::try_start_on(&data, &listen, &args)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (node, server) in nodes.iter_mut().zip(started) {
        node.server =
            Some(server.unwrap_or_else(|e| panic!("node {} did not start: {e}", node.id)));
    }
}

pub fn new_nodes(n: u64) -> Vec<Node> {
    (1..=n)
        .map(|id| Node {
            id,
            listen: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            server: None,
        })
        .collect()
}

pub fn init(etcd: &Etcd, shards: u32, replication: u32) {
    let (code, out, err) = cli(&[
        "cluster",
        "init",
        "--etcd",
        &etcd.endpoint,
        "--shards",
        &shards.to_string(),
        "--replication",
        &replication.to_string(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Appends one event with a client-chosen id through `base`, retrying (bounded) while the
/// cluster has no reachable leader for the stream's shard; returns the answer.
async fn append_retrying(base: &str, urn: &str, id: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = post(
            base,
            &format!("/v1/streams/{urn}"),
            &json!({"events": [{"op": "put", "id": id, "data": {"n": n}}]}),
        )
        .await;
        if a.status == 201 {
            return a.json();
        }
        assert!(
            [421, 502, 503, 504].contains(&a.status),
            "unexpected answer {}: {}",
            a.status,
            a.text
        );
        assert!(
            Instant::now() < deadline,
            "no leader within 20 s: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shard of every stream, the events each stream must hold, and who leads each shard.
async fn cluster_status(base: &str) -> Value {
    let a = get(base, "/v1/cluster").await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

/// Asserts two replicas' log pages are equal, naming the first entry that differs.
fn assert_same_log(shard: u32, (a_id, a): (u64, &Value), (b_id, b): (u64, &Value)) {
    let (ea, eb) = (
        a["entries"].as_array().unwrap(),
        b["entries"].as_array().unwrap(),
    );
    for (x, y) in ea.iter().zip(eb) {
        assert_eq!(
            x, y,
            "shard {shard}: node {a_id} and node {b_id} differ at LSN {}",
            x["lsn"]
        );
    }
    assert_eq!(
        ea.len(),
        eb.len(),
        "shard {shard}: node {a_id} holds {} entries, node {b_id} {}",
        ea.len(),
        eb.len()
    );
}

/// Waits (bounded) until every replica of every shard has applied the same LSN, then compares
/// the replicas' committed logs entry by entry.
pub async fn assert_replicas_converge(nodes: &[Node], shards: u32) {
    let nodes: Vec<&Node> = nodes.iter().collect();
    for shard in 0..shards {
        assert_shard_converges(&nodes, shard).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_route_replicate_fail_over_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    init(&etcd, 4, 3);
    let mut nodes = new_nodes(3);
    start_nodes(dir.path(), &etcd.endpoint, &mut nodes, &[]);

    // Every shard has a leader and three voting replicas, as every node reports.
    for node in &nodes {
        let status = cluster_status(&node.base()).await;
        assert_eq!(status["mode"], "cluster");
        assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
        for shard in status["shards"].as_array().unwrap() {
            let replicas: Vec<u64> = shard["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["node"].as_u64().unwrap())
                .collect();
            assert_eq!(replicas, [1, 2, 3], "{shard}");
        }
    }

    // The CLI shows the same truthfully: a leader (marked *) and three replicas per shard.
    let (code, out, err) = cli(&["cluster", "status", "--server", &nodes[1].base()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mode: cluster, answered by node 2"), "{out}");
    let table = &out[out.find("shard").expect("a shard table")..];
    for shard in 0..4 {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&shard.to_string()))
            .unwrap_or_else(|| panic!("no line for shard {shard}: {out}"));
        assert_eq!(line.matches('*').count(), 1, "{line}");
        assert_eq!(line.matches(':').count(), 3, "{line}");
    }

    // Appends through every node, to 12 streams spread over the shards; reads through every
    // node (linearizable by default) see every acknowledged append at its position.
    let mut acked: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut shard_of: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    let mut token = themis_log::Token::new();
    for round in 0..3 {
        for (i, node) in nodes.iter().enumerate() {
            for s in 0..STREAMS {
                n += 1;
                let urn = format!("urn:themis:document:cl:s{s}");
                let id = format!("00000000-0000-4000-8000-{n:012}");
                let answer = append_retrying(&node.base(), &urn, &id, n).await;
                assert_eq!(
                    answer["events"][0]["revision"].as_u64().unwrap(),
                    (round * 3 + i) as u64,
                    "{answer}"
                );
                shard_of.insert(urn.clone(), answer["position"]["shard"].as_u64().unwrap());
                token.merge(&themis_log::Token::decode(answer["token"].as_str().unwrap()).unwrap());
                acked.entry(urn).or_default().push((id, n));
            }
        }
    }
    let covered: std::collections::BTreeSet<u64> = shard_of.values().copied().collect();
    assert_eq!(
        covered.len(),
        4,
        "the streams cover every shard: {shard_of:?}"
    );
    // SQL on every node at the merged token of all appends (made through all three nodes)
    // sees every stream: each node's views wait for the token.
    for node in &nodes {
        let r = post(
            &node.base(),
            "/v1/query",
            &json!({"sql": "SELECT count(*) AS n, max(_revision) AS r FROM document.cl", "min_token": token.encode()}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json()["rows"],
            json!([{"n": STREAMS, "r": 8}]),
            "{}",
            r.text
        );
    }
    for node in &nodes {
        for (urn, events) in &acked {
            let a = get(&node.base(), &format!("/v1/streams/{urn}")).await;
            assert_eq!(a.status, 200, "{}", a.text);
            let got: Vec<(String, u64)> = a.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["id"].as_str().unwrap().to_owned(),
                        e["data"]["n"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(&got, events, "node {} reading {urn}", node.id);
        }
    }

    // Kill the node that leads stream s0's shard; the survivors elect a leader and keep
    // appending to every stream.
    let target = shard_of["urn:themis:document:cl:s0"] as usize;
    let status = cluster_status(&nodes[0].base()).await;
    let victim = status["shards"][target]["leader"].as_u64().unwrap();
    let victim_index = nodes.iter().position(|n| n.id == victim).unwrap();
    nodes[victim_index].server.take().unwrap().kill();
    let survivor = nodes.iter().find(|n| n.id != victim).unwrap().base();
    for s in 0..STREAMS {
        n += 1;
        let urn = format!("urn:themis:document:cl:s{s}");
        let id = format!("00000000-0000-4000-8000-{n:012}");
        append_retrying(&survivor, &urn, &id, n).await;
        acked.entry(urn).or_default().push((id, n));
    }
    let status = cluster_status(&survivor).await;
    let leader = status["shards"][target]["leader"].as_u64();
    assert!(
        leader.is_some() && leader != Some(victim),
        "shard {target} has a new leader: {status}"
    );

    // The killed node comes back on the same addresses and catches up; all logs agree.
    let victim_node = &mut nodes[victim_index];
    let data = dir.path().join(format!("n{}", victim_node.id));
    let args = node_args(victim_node, &etcd.endpoint, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    victim_node.server = Some(
        Server::try_start_on(&data, &victim_node.listen, &args)
            .unwrap_or_else(|e| panic!("restart: {e}")),
    );
    assert_replicas_converge(&nodes, 4).await;
    for (urn, events) in &acked {
        let a = get(
            &nodes[victim_index].base(),
            &format!("/v1/streams/{urn}?consistency=stale"),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(
            a.json()["events"].as_array().unwrap().len(),
            events.len(),
            "the restarted node holds every acknowledged append of {urn}"
        );
        assert_eq!(
            a.headers["themis-node"].to_str().unwrap(),
            victim.to_string()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_forwarding_a_follower_answers_421_with_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    init(&etcd, 2, 3);
    let mut nodes = new_nodes(3);
    start_nodes(
        dir.path(),
        &etcd.endpoint,
        &mut nodes,
        &["--forwarding", "false"],
    );
    let status = cluster_status(&nodes[0].base()).await;
    let leader = status["shards"][0]["leader"].as_u64().unwrap();
    // Appends of candidate streams through a follower of shard 0: those of shards it leads
    // succeed, the first one of shard 0 is refused with the leader's address.
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    for i in 0..200 {
        let a = post(
            &follower.base(),
            &format!("/v1/streams/urn:themis:document:fw:s{i}"),
            &json!({"events": [{"op": "put", "data": {}}]}),
        )
        .await;
        if a.status == 201 {
            continue;
        }
        let body = a.problem(421, "not_leader");
        if body["shard"] != 0 {
            continue;
        }
        assert_eq!(body["leader"], leader);
        assert_eq!(
            body["leader_url"],
            format!("http://{}", nodes[(leader - 1) as usize].listen)
        );
        return;
    }
    panic!("no stream of shard 0 among 200 candidates");
}

#[tokio::test]
async fn cluster_commands_fail_readably() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    init(&etcd, 4, 3);
    // Initializing again with the same shape is a no-op; with another it is refused.
    init(&etcd, 4, 3);
    let (code, _, err) = cli(&["cluster", "init", "--etcd", &etcd.endpoint, "--shards", "8"]);
    assert_ne!(code, 0);
    assert!(err.contains("already initialized with 4 shards"), "{err}");
    let (code, _, err) = cli(&[
        "cluster",
        "init",
        "--etcd",
        &etcd.endpoint,
        "--replication",
        "0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("replication must be between 1 and 7"), "{err}");
    // --etcd without --peer-listen.
    let e = Server::try_start(
        &dir.path().join("n"),
        &["--etcd", &etcd.endpoint, "--node-id", "9"],
    )
    .err()
    .expect("refused");
    assert!(e.contains("--peer-listen is required"), "{e}");
    // An unreachable etcd.
    let (code, _, err) = cli(&["cluster", "init", "--etcd", "127.0.0.1:1"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot connect to etcd"), "{err}");
}

/// Waits (bounded) until the replicas of `shard` on `nodes` have applied the same LSN and hold
/// equal logs.
async fn assert_shard_converges(nodes: &[&Node], shard: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut logs = Vec::new();
        for node in nodes {
            let a = get(&node.base(), &format!("/v1/log/{shard}?limit=10000")).await;
            assert_eq!(a.status, 200, "node {}: {}", node.id, a.text);
            logs.push(a.json());
        }
        let applied: Vec<u64> = logs
            .iter()
            .map(|l| l["applied_lsn"].as_u64().unwrap())
            .collect();
        if applied.iter().all(|&a| a == applied[0]) {
            for (node, log) in nodes.iter().zip(&logs) {
                assert_same_log(shard, (nodes[0].id, &logs[0]), (node.id, log));
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shard {shard} did not converge: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_move_between_nodes_while_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    init(&etcd, 2, 3);
    let mut nodes = new_nodes(4);
    let (first, fourth) = nodes.split_at_mut(3);
    start_nodes(dir.path(), &etcd.endpoint, first, &[]);
    // Node 4 joins later: the placement exists, so it holds nothing yet.
    start_nodes(dir.path(), &etcd.endpoint, fourth, &[]);
    // Every node learns of node 4 within its topology refresh (a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = cluster_status(&nodes[0].base()).await;
        if status["nodes"].as_array().unwrap().len() == 4 {
            break status;
        }
        assert!(Instant::now() < deadline, "node 4 never appeared: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let a = get(&nodes[3].base(), "/v1/log/0").await;
    a.problem(421, "not_hosted");

    // A follower of shard 0 gives its replica to node 4 while a client keeps appending.
    let leader = status["shards"][0]["leader"].as_u64().unwrap();
    let from = [1u64, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (base, stop) = (nodes[((leader % 3) as usize + 1) % 3].base(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let urn = format!("urn:themis:document:mv:s{}", n % 8);
                let a = post(
                    &base,
                    &format!("/v1/streams/{urn}"),
                    &json!({"events": [{"op": "put", "data": {"n": n}}]}),
                )
                .await;
                if a.status == 201 {
                    acked.push((
                        urn,
                        a.json()["events"][0]["id"].as_str().unwrap().to_owned(),
                    ));
                } else {
                    failed.push(a.text);
                }
            }
            (acked, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out, err) = cli(&[
        "cluster",
        "move-replica",
        "0",
        &from.to_string(),
        "4",
        "--server",
        &nodes[0].base(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "moved shard 0's replica from node {from} to node 4"
        )),
        "{out}"
    );

    // Shard 0's voters are now the other two and node 4; node `from` closes its replica.
    let status = cluster_status(&nodes[3].base()).await;
    let mut replicas: Vec<u64> = status["shards"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["voter"], true, "{status}");
            r["node"].as_u64().unwrap()
        })
        .collect();
    replicas.sort();
    let mut expected: Vec<u64> = [1u64, 2, 3, 4].into_iter().filter(|&n| n != from).collect();
    expected.sort();
    assert_eq!(replicas, expected, "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = get(&nodes[(from - 1) as usize].base(), "/v1/log/0").await;
        if a.status == 421 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {from} still serves shard 0: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // remove-node gives node 4's replica back (the only node without one of shard 0).
    let (code, out, err) = cli(&["cluster", "remove-node", "4", "--server", &nodes[1].base()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "moved shard 0's replica from node 4 to node {from} (1/1)"
        )),
        "{out}"
    );
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = appender.await.unwrap();
    assert!(
        failed.is_empty(),
        "appends failed during the moves: {failed:?}"
    );
    assert!(
        acked.len() > 20,
        "the appender made progress: {}",
        acked.len()
    );
    let holders: Vec<&Node> = nodes.iter().filter(|n| n.id != 4).collect();
    assert_shard_converges(&holders, 0).await;
    for (urn, id) in &acked {
        let a = get(
            &nodes[(from - 1) as usize].base(),
            &format!("/v1/streams/{urn}?limit=10000"),
        )
        .await;
        assert!(a.text.contains(id.as_str()), "{id} missing from {urn}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_purged_log_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    init(&etcd, 2, 3);
    let mut nodes = new_nodes(3);
    let extra = ["--snapshot-every", "10"];
    start_nodes(dir.path(), &etcd.endpoint, &mut nodes, &extra);
    // Node 3 goes down; the others append well past a few snapshots, purging their logs.
    nodes[2].server.take().unwrap().kill();
    let mut n = 0;
    for round in 0..40 {
        for s in 0..4 {
            n += 1;
            let urn = format!("urn:themis:document:snap:s{s}");
            let id = format!("00000000-0000-4000-8000-{n:012}");
            let answer = append_retrying(&nodes[round % 2].base(), &urn, &id, n).await;
            assert_eq!(answer["events"][0]["revision"], round as u64, "{answer}");
        }
    }
    // It comes back and installs a snapshot (state and log records), then the tail.
    let node = &mut nodes[2];
    let args = node_args(node, &etcd.endpoint, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node.server = Some(
        Server::try_start_on(&dir.path().join("n3"), &node.listen, &args)
            .unwrap_or_else(|e| panic!("restart: {e}")),
    );
    assert_replicas_converge(&nodes, 2).await;
    let metrics = get(&nodes[2].base(), "/metrics").await.text;
    let installed: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("themis_snapshots_installed_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(installed >= 1, "node 3 installed no snapshot:\n{metrics}");
    for s in 0..4 {
        let urn = format!("urn:themis:document:snap:s{s}");
        let a = get(
            &nodes[2].base(),
            &format!("/v1/streams/{urn}?consistency=stale&limit=1000"),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let events = a.json()["events"].as_array().unwrap().len();
        assert_eq!(events, 40, "node 3 holds every event of {urn}");
    }
    // The restarted node's log and state survive another restart (the installed records and
    // their chain verify at start-up).
    nodes[2].server.take().unwrap().kill();
    let node = &mut nodes[2];
    node.server = Some(
        Server::try_start_on(&dir.path().join("n3"), &node.listen, &args)
            .unwrap_or_else(|e| panic!("second restart: {e}")),
    );
    assert_replicas_converge(&nodes, 2).await;
}

/// A subscriber (`themis tail` given all three nodes) consumes while the node it reads from is
/// killed with SIGKILL: it resumes on another node from its cursor, and what it printed is,
/// per shard, exactly the cluster's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_fails_over_to_another_node_without_gap_or_duplicate() {
    use crate::subscribe::{by_shard, log_events, spawn_tail, wait_output};
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    init(&etcd, 4, 3);
    let mut nodes = new_nodes(3);
    start_nodes(dir.path(), &etcd.endpoint, &mut nodes, &[]);
    const EVENTS: u64 = 200;
    let servers = nodes.iter().map(Node::base).collect::<Vec<_>>().join(",");
    let tail = spawn_tail(&[
        "--from".into(),
        "earliest".into(),
        "--count".into(),
        EVENTS.to_string(),
        "--give-up-after".into(),
        "60s".into(),
        "--server".into(),
        servers,
    ]);
    // Appends through nodes 2 and 3 (node 1, the tail's first server, is killed midway).
    let targets = [nodes[1].base(), nodes[2].base()];
    for n in 1..=EVENTS {
        let urn = format!("urn:themis:document:fo:s{}", n % 7);
        let id = format!("00000000-0000-4000-8000-{n:012}");
        append_retrying(&targets[n as usize % 2], &urn, &id, n).await;
        if n == EVENTS / 2 {
            nodes[0].server.take().unwrap().kill();
        }
    }
    let (code, printed, stderr) = tokio::task::spawn_blocking(move || wait_output(tail))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("reconnecting"),
        "the kill was noticed: {stderr}"
    );
    // Node 2 may apply the last entries a moment after their leader answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = log_events(&nodes[1].base(), 4).await;
        if log.values().map(Vec::len).sum::<usize>() as u64 == EVENTS || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_shard = by_shard(&printed);
    assert_eq!(printed.len() as u64, EVENTS);
    for (shard, expected) in &log {
        assert_eq!(
            by_shard.get(shard).cloned().unwrap_or_default(),
            *expected,
            "shard {shard}"
        );
    }
}
