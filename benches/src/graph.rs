//! Graph traversal: 2- and 3-hop neighbourhoods on a power-law graph through the HTTP API
//! (`POST /v1/query {"traverse": ...}`) vs networkx (pip) on the same graph in the same run.
//!
//! The graph (seeded, deterministic) is a Chung–Lu graph: `vertices` vertices whose expected
//! degrees follow a power law (exponent 2.1, weights `(i + 1)^(-1/1.1)`), and `edges` directed
//! edges whose source and target are drawn independently by those weights (self-loops and
//! repeats dropped), which gives the heavy-tailed in- and out-degrees of social and web graphs.
//! Start vertices are drawn uniformly. Both sides answer the set of vertices within k hops
//! (outbound, each once); the counts are compared for every query.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::process::start_themis;

/// Options.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// Vertices.
    pub vertices: usize,
    /// Edges.
    pub edges: usize,
    /// Start vertices (queries per depth).
    pub queries: usize,
    /// Shards of the themis node.
    pub shards: u32,
    /// Python with networkx.
    pub python: PathBuf,
    /// CPUs for themis and the peer.
    pub server_cpus: Option<String>,
}

/// One system's latencies at one depth.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// System.
    pub system: String,
    /// Hops.
    pub depth: usize,
    /// Milliseconds, sorted.
    pub ms: Vec<f64>,
    /// Vertices found, summed over the queries.
    pub found: u64,
}

impl Latency {
    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.ms.len() as f64 - 1.0) * q).round() as usize;
        self.ms.get(i).copied().unwrap_or(f64::NAN)
    }
}

/// The report.
#[derive(Debug, Clone, Default)]
pub struct GraphReport {
    /// Distinct edges loaded.
    pub edges: usize,
    /// Seconds to append every vertex and edge and have the graph view apply them.
    pub load_s: f64,
    /// networkx's graph build, seconds.
    pub peer_load_s: f64,
    /// Latencies.
    pub latencies: Vec<Latency>,
    /// Queries whose vertex counts differ between themis and networkx.
    pub mismatches: usize,
}

/// The power-law edge list.
pub fn power_law(vertices: usize, edges: usize, seed: u64) -> Vec<(u32, u32)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let weights: Vec<f64> = (0..vertices)
        .map(|i| ((i + 1) as f64).powf(-1.0 / 1.1))
        .collect();
    let mut cumulative = Vec::with_capacity(vertices);
    let mut total = 0.0;
    for w in &weights {
        total += w;
        cumulative.push(total);
    }
    // Vertex ids are shuffled so hubs do not cluster in id order (or on one shard).
    let mut ids: Vec<u32> = (0..vertices as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.gen_range(0..=i));
    }
    let draw = |rng: &mut StdRng| {
        let x = rng.gen_range(0.0..total);
        ids[cumulative.partition_point(|&c| c < x).min(vertices - 1)]
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(edges);
    let mut attempts = 0usize;
    while out.len() < edges && attempts < edges * 4 {
        attempts += 1;
        let (a, b) = (draw(&mut rng), draw(&mut rng));
        if a != b && seen.insert((a, b)) {
            out.push((a, b));
        }
    }
    out
}

fn urn(v: u32) -> String {
    format!("urn:themis:graph:bench:v{v}")
}

const PEER_SCRIPT: &str = r#"
import json, sys, time
import networkx as nx
cfg = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
g = nx.DiGraph()
g.add_nodes_from(range(cfg["vertices"]))
with open(cfg["edges"]) as f:
    g.add_edges_from((int(a), int(b)) for a, b in (line.split() for line in f))
load = time.perf_counter() - t0
out = {"load_s": load, "depths": {}}
for depth in cfg["depths"]:
    ms, counts = [], []
    for s in cfg["starts"]:
        t = time.perf_counter()
        reached = nx.single_source_shortest_path_length(g, s, cutoff=depth)
        ms.append((time.perf_counter() - t) * 1000.0)
        counts.append(len(reached) - 1)
    out["depths"][str(depth)] = {"ms": ms, "counts": counts}
print(json.dumps(out))
"#;

/// The venv's python with networkx (installed when missing).
pub fn networkx_python(venv: &Path) -> anyhow::Result<PathBuf> {
    crate::process::venv_python(venv, "networkx", &["networkx"])
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let r = http.post(url).json(body).send().await?;
    let status = r.status();
    let bytes = r.bytes().await?;
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Runs the benchmark: networkx first (alone), then themis.
pub async fn run_graph(binary: &Path, dir: &Path, o: &GraphOptions) -> anyhow::Result<GraphReport> {
    let mut report = GraphReport::default();
    let edges = power_law(o.vertices, o.edges, 17);
    report.edges = edges.len();
    let mut rng = StdRng::seed_from_u64(23);
    let starts: Vec<u32> = (0..o.queries)
        .map(|_| rng.gen_range(0..o.vertices as u32))
        .collect();
    let depths = [2usize, 3];
    let work = tempfile::tempdir_in(dir)?;
    let edge_path = work.path().join("edges.tsv");
    let mut text = String::with_capacity(edges.len() * 14);
    for (a, b) in &edges {
        text.push_str(&format!("{a} {b}\n"));
    }
    std::fs::write(&edge_path, text)?;
    println!("networkx: {} vertices, {} edges", o.vertices, edges.len());
    let config = json!({"vertices": o.vertices, "edges": edge_path.to_str().context("utf-8 path")?,
                        "starts": starts, "depths": depths});
    let peer = crate::process::run_peer_script(
        &o.python,
        o.server_cpus.as_deref(),
        work.path(),
        PEER_SCRIPT,
        &config,
    )?;
    report.peer_load_s = peer["load_s"].as_f64().unwrap_or(f64::NAN);

    let (_server, base) = start_themis(binary, dir, o.shards, o.server_cpus.as_deref())?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let events_url = format!("{base}/v1/events");
    let started = Instant::now();
    let vertex_events: Vec<Value> = (0..o.vertices as u32)
        .map(|v| json!({"urn": urn(v), "op": "put", "data": {"i": v}}))
        .collect();
    for chunk in vertex_events.chunks(2000) {
        post(
            &http,
            &events_url,
            &json!({"events": chunk, "per_shard_atomicity": true}),
        )
        .await?;
    }
    // Edges go after every vertex exists (an edge counts from its link on).
    let edge_events: Vec<Value> = edges
        .iter()
        .map(|&(a, b)| json!({"urn": urn(a), "op": "link", "to": urn(b), "label": "e"}))
        .collect();
    // A few requests in flight at once.
    let chunks: Vec<&[Value]> = edge_events.chunks(2000).collect();
    for group in chunks.chunks(4) {
        let bodies: Vec<Value> = group
            .iter()
            .map(|chunk| json!({"events": chunk, "per_shard_atomicity": true}))
            .collect();
        let answers =
            futures::future::join_all(bodies.iter().map(|body| post(&http, &events_url, body)))
                .await;
        for a in answers {
            a?;
        }
    }
    // Wait until the graph view of every shard has applied its whole log.
    let query_url = format!("{base}/v1/query");
    loop {
        let views: Value = http
            .get(format!("{base}/v1/admin/views"))
            .send()
            .await?
            .json()
            .await?;
        let behind = views["views"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["view"] == "graph")
            .any(|v| v["lag_entries"].as_u64().unwrap_or(1) > 0);
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.load_s = started.elapsed().as_secs_f64();
    for &depth in &depths {
        let mut mine = Latency {
            system: "themis (HTTP)".into(),
            depth,
            ..Default::default()
        };
        let peer_counts: Vec<u64> =
            serde_json::from_value(peer["depths"][depth.to_string()]["counts"].clone())?;
        let mut peer_ms: Vec<f64> =
            serde_json::from_value(peer["depths"][depth.to_string()]["ms"].clone())?;
        for (i, &s) in starts.iter().enumerate() {
            let body = json!({"traverse": {"start": urn(s), "min_depth": 1, "max_depth": depth,
                                           "limit": 100000}});
            let t = Instant::now();
            let answer = post(&http, &query_url, &body).await?;
            mine.ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let n = answer["rows"].as_array().map_or(0, Vec::len) as u64;
            mine.found += n;
            if n != peer_counts[i] {
                report.mismatches += 1;
            }
        }
        mine.ms.sort_by(f64::total_cmp);
        peer_ms.sort_by(f64::total_cmp);
        report.latencies.push(mine);
        report.latencies.push(Latency {
            system: "networkx (in process)".into(),
            depth,
            ms: peer_ms,
            found: peer_counts.iter().sum(),
        });
    }
    Ok(report)
}

/// A markdown table.
pub fn markdown(r: &GraphReport, o: &GraphOptions) -> String {
    let mut out = format!(
        "{} vertices, {} edges (power law), {} shards, {} start vertices; load (append + view) \
         {:.1} s, networkx build {:.1} s; count mismatches: {}\n\n\
         | system | hops | p50 ms | p99 ms | mean ms | vertices found | themis p50 / peer p50 |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        o.vertices, r.edges, o.shards, o.queries, r.load_s, r.peer_load_s, r.mismatches
    );
    for l in &r.latencies {
        let peer = r
            .latencies
            .iter()
            .find(|p| p.depth == l.depth && p.system.starts_with("networkx"));
        let ratio = peer.map_or(f64::NAN, |p| l.quantile(0.5) / p.quantile(0.5));
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            l.system,
            l.depth,
            l.quantile(0.5),
            l.quantile(0.99),
            l.ms.iter().sum::<f64>() / l.ms.len().max(1) as f64,
            l.found,
            if l.system.starts_with("themis") {
                format!("{ratio:.2}")
            } else {
                "".into()
            }
        ));
    }
    out
}
