//! `themis-bench search`: kNN and fulltext search through the HTTP API, side by side with the
//! raw libraries on the same data in the same run.
//!
//! - Vectors: N vectors of D dimensions with a low intrinsic dimension (a random linear image
//!   of a 32-dimensional Gaussian point plus a little noise, like embeddings) and Q query
//!   vectors from the same distribution; exact top-10 by numpy. themis (namespace with the
//!   defaults M 16, ef_construction 200, metric l2) against hnswlib and faiss-cpu
//!   (`IndexHNSWFlat`, M 16, efConstruction 200) from pip: queries/s and recall@10 at each
//!   `ef`, one query at a time per client; the peers run one query at a time in one thread
//!   (a Python loop over single-vector calls).
//! - Text: documents of Zipf-distributed words (a 20,000-word vocabulary; a 4-word title and a
//!   40 to 80-word body), two-word OR queries of mid-frequency words. themis (a document
//!   namespace with text fields title and body, language `none`: lower case only, as
//!   tantivy's default tokenizer) against tantivy-py (the same tantivy version, one index,
//!   the same fields) from pip: queries/s, and how many of tantivy-py's top 10 ours returns.
//! - Ingest: events/s through `POST /v1/events` until searchable, and the libraries' build
//!   times.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::process::start_themis;
use crate::sql::SplitMix64;

/// What to run.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub vectors: usize,
    pub dims: usize,
    pub queries: usize,
    pub ef: Vec<usize>,
    pub docs: usize,
    pub text_queries: usize,
    pub concurrency: Vec<usize>,
    pub shards: u32,
    /// Python with numpy (and the peers, when `peers`).
    pub python: PathBuf,
    pub peers: bool,
    pub server_cpus: Option<String>,
}

/// One (system, ef, concurrency) measurement of kNN.
#[derive(Debug, Clone)]
pub struct KnnPoint {
    pub system: String,
    pub ef: usize,
    pub concurrency: usize,
    pub qps: f64,
    pub recall: f64,
}

/// One fulltext measurement.
#[derive(Debug, Clone)]
pub struct TextPoint {
    pub system: String,
    pub concurrency: usize,
    pub qps: f64,
    /// Mean share of the peer's top 10 in ours (1 for the peer itself).
    pub agreement: f64,
    /// Share of queries whose ranked top-10 scores equal the peer's.
    pub same_scores: f64,
}

/// The results.
#[derive(Debug, Default)]
pub struct SearchReport {
    pub knn: Vec<KnnPoint>,
    pub text: Vec<TextPoint>,
    /// (system, what, seconds).
    pub ingest: Vec<(String, String, f64)>,
}

fn gauss(rng: &mut SplitMix64) -> f64 {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let v = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u.max(f64::MIN_POSITIVE).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Vectors and queries (row-major f32).
pub fn vectors(n: usize, q: usize, dims: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let latent = 32.min(dims);
    let mut rng = SplitMix64::new(seed);
    let basis: Vec<f64> = (0..dims * latent).map(|_| gauss(&mut rng)).collect();
    let mut draw = |count: usize| {
        let mut out = Vec::with_capacity(count * dims);
        for _ in 0..count {
            let z: Vec<f64> = (0..latent).map(|_| gauss(&mut rng)).collect();
            for d in 0..dims {
                let row = &basis[d * latent..(d + 1) * latent];
                let x: f64 =
                    row.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>() + 0.1 * gauss(&mut rng);
                out.push(x as f32);
            }
        }
        out
    };
    let data = draw(n);
    let queries = draw(q);
    (data, queries)
}

fn word(rank: usize) -> String {
    // Pronounceable, distinct, and no English stop word among them.
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ba", "de", "fu", "go", "hi", "ju", "pe",
        "zo",
    ];
    let mut n = rank + 16;
    let mut w = String::from("x");
    while n > 0 {
        w.push_str(SYLLABLES[n % 16]);
        n /= 16;
    }
    w
}

/// Documents (id, title, body) and queries.
pub fn corpus(
    docs: usize,
    queries: usize,
    seed: u64,
) -> (Vec<(String, String, String)>, Vec<String>) {
    const VOCABULARY: usize = 20_000;
    let mut rng = SplitMix64::new(seed);
    let mut cdf = Vec::with_capacity(VOCABULARY);
    let mut sum = 0.0;
    for r in 1..=VOCABULARY {
        sum += 1.0 / r as f64;
        cdf.push(sum);
    }
    let words: Vec<String> = (0..VOCABULARY).map(word).collect();
    let zipf = |rng: &mut SplitMix64| -> &str {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * sum;
        let i = cdf.partition_point(|&c| c < u).min(VOCABULARY - 1);
        &words[i]
    };
    let mut out = Vec::with_capacity(docs);
    for i in 0..docs {
        let title: Vec<&str> = (0..4).map(|_| zipf(&mut rng)).collect();
        let len = 40 + rng.below(41) as usize;
        let body: Vec<&str> = (0..len).map(|_| zipf(&mut rng)).collect();
        out.push((format!("d{i}"), title.join(" "), body.join(" ")));
    }
    let qs = (0..queries)
        .map(|_| {
            let a = &words[50 + rng.below(5000) as usize];
            let b = &words[50 + rng.below(5000) as usize];
            format!("{a} {b}")
        })
        .collect();
    (out, qs)
}

const PEER_SCRIPT: &str = r#"
import json, sys, time
import numpy as np
cfg = json.load(open(sys.argv[1]))
out = {"knn": [], "text": [], "ingest": []}
n, q, d = cfg["n"], cfg["q"], cfg["dims"]
data = np.fromfile(cfg["vectors"], dtype="<f4").reshape(n, d)
queries = np.fromfile(cfg["queries"], dtype="<f4").reshape(q, d)
# Exact top 10 by squared L2, in blocks.
sq = (data * data).sum(axis=1)
truth = []
for s in range(0, q, 256):
    block = queries[s:s + 256]
    dist = sq[None, :] - 2.0 * block @ data.T
    idx = np.argpartition(dist, 10, axis=1)[:, :10]
    truth.extend(idx.tolist())
out["truth"] = truth
truth_sets = [set(t) for t in truth]

def recall(found):
    return sum(len(truth_sets[i] & set(int(x) for x in f)) for i, f in enumerate(found)) / (10.0 * q)

if cfg["peers"]:
    import hnswlib
    t = time.perf_counter()
    h = hnswlib.Index(space="l2", dim=d)
    h.init_index(max_elements=n, ef_construction=200, M=16, random_seed=100)
    h.set_num_threads(1)
    h.add_items(data, np.arange(n))
    out["ingest"].append(["hnswlib", "build, 1 thread", time.perf_counter() - t])
    for ef in cfg["ef"]:
        h.set_ef(max(ef, 10))
        found = []
        t = time.perf_counter()
        for i in range(q):
            labels, _ = h.knn_query(queries[i:i + 1], k=10, num_threads=1)
            found.append(labels[0])
        el = time.perf_counter() - t
        out["knn"].append({"system": "hnswlib", "ef": ef, "qps": q / el, "recall": recall(found)})
    import faiss
    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    f = faiss.IndexHNSWFlat(d, 16)
    f.hnsw.efConstruction = 200
    f.add(data)
    out["ingest"].append(["faiss", "build, 1 thread", time.perf_counter() - t])
    for ef in cfg["ef"]:
        f.hnsw.efSearch = max(ef, 10)
        found = []
        t = time.perf_counter()
        for i in range(q):
            _, labels = f.search(queries[i:i + 1], 10)
            found.append(labels[0])
        el = time.perf_counter() - t
        out["knn"].append({"system": "faiss", "ef": ef, "qps": q / el, "recall": recall(found)})

    import tantivy
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("id", stored=True, tokenizer_name="raw")
    sb.add_text_field("title")
    sb.add_text_field("body")
    schema = sb.build()
    index = tantivy.Index(schema)
    docs = [json.loads(line) for line in open(cfg["docs"])]
    t = time.perf_counter()
    w = index.writer(heap_size=100_000_000, num_threads=1)
    for doc in docs:
        w.add_document(tantivy.Document(id=doc[0], title=doc[1], body=doc[2]))
    w.commit()
    w.wait_merging_threads()
    index.reload()
    out["ingest"].append(["tantivy-py", "index and commit, 1 thread", time.perf_counter() - t])
    searcher = index.searcher()
    top = []
    t = time.perf_counter()
    for text in cfg["text_queries"]:
        query = index.parse_query(text, ["title", "body"])
        hits = searcher.search(query, 10).hits
        top.append([[searcher.doc(a)["id"][0], s] for s, a in hits])
    el = time.perf_counter() - t
    out["text"].append({"system": "tantivy-py", "qps": len(cfg["text_queries"]) / el, "top": top})
json.dump(out, sys.stdout)
"#;

fn utf8(p: &Path) -> anyhow::Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
}

fn write_f32(path: &Path, values: &[f32]) -> anyhow::Result<()> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

/// The venv's python with numpy, hnswlib, faiss-cpu and tantivy (installed when missing).
pub fn peer_python(venv: &Path) -> anyhow::Result<PathBuf> {
    crate::process::venv_python(
        venv,
        "numpy, hnswlib, faiss, tantivy",
        &["numpy", "hnswlib", "faiss-cpu", "tantivy"],
    )
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let r = http.post(url).json(body).send().await?;
    let status = r.status();
    let bytes = r.bytes().await?;
    if !status.is_success() {
        bail!(
            "POST {url} answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(2000)])
        );
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Appends `events` in per-shard atomic batches of 1,000, 4 requests in flight; returns the
/// merged token.
async fn ingest(http: &reqwest::Client, base: &str, events: Vec<Value>) -> anyhow::Result<String> {
    let url = format!("{base}/v1/events");
    let bodies: Vec<Value> = events
        .chunks(1000)
        .map(|c| json!({"events": c, "per_shard_atomicity": true}))
        .collect();
    let mut answers = futures::stream::iter(bodies)
        .map(|body| {
            let url = url.clone();
            async move { post(http, &url, &body).await }
        })
        .buffer_unordered(4);
    let mut token = themis_log::Token::new();
    while let Some(a) = answers.next().await {
        let a = a?;
        let t = a["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in {a}"))?;
        token.merge(&themis_log::Token::decode(t).map_err(|e| anyhow!("{e:?}"))?);
    }
    Ok(token.encode())
}

/// Runs `bodies` as queries, `concurrency` clients each taking the next one; returns each
/// answer's (id, score or distance) in order and the queries per second.
async fn run_queries(
    http: &reqwest::Client,
    base: &str,
    bodies: Vec<Value>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Vec<(String, f64)>>, f64)> {
    let url = format!("{base}/v1/query");
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (http, url, bodies, next) = (http.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let a = post(&http, &url, body).await?;
                let ids: Vec<(String, f64)> = a["rows"]
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .filter_map(|r| {
                                let score = r["score"].as_f64().or(r["distance"].as_f64());
                                Some((r["id"].as_str()?.to_owned(), score.unwrap_or(f64::NAN)))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                got.push((i, ids));
            }
            anyhow::Ok(got)
        }));
    }
    let mut all = vec![Vec::new(); bodies.len()];
    for t in tasks {
        for (i, ids) in t.await?? {
            all[i] = ids;
        }
    }
    let qps = bodies.len() as f64 / start.elapsed().as_secs_f64();
    Ok((all, qps))
}

/// Runs the benchmark.
pub async fn run_search(
    binary: &Path,
    dir: &Path,
    o: &SearchOptions,
) -> anyhow::Result<SearchReport> {
    let mut report = SearchReport::default();
    let (data, queries) = vectors(o.vectors, o.queries, o.dims, 7);
    let (docs, text_queries) = corpus(o.docs, o.text_queries, 11);
    let work = tempfile::tempdir_in(dir)?;
    let (vec_path, q_path, docs_path) = (
        work.path().join("vectors.f32"),
        work.path().join("queries.f32"),
        work.path().join("docs.jsonl"),
    );
    write_f32(&vec_path, &data)?;
    write_f32(&q_path, &queries)?;
    let mut lines = String::new();
    for d in &docs {
        lines.push_str(&serde_json::to_string(&[&d.0, &d.1, &d.2])?);
        lines.push('\n');
    }
    std::fs::write(&docs_path, lines)?;

    // The peers (and the exact neighbours) first, while nothing else runs.
    let python = o.python.clone();
    println!(
        "peers: exact neighbours{}",
        if o.peers {
            ", hnswlib, faiss, tantivy-py"
        } else {
            " only"
        }
    );
    let config = json!({
        "n": o.vectors, "q": o.queries, "dims": o.dims, "ef": o.ef,
        "vectors": utf8(&vec_path)?, "queries": utf8(&q_path)?, "docs": utf8(&docs_path)?,
        "text_queries": text_queries, "peers": o.peers,
    });
    let peers = crate::process::run_peer_script(
        &python,
        o.server_cpus.as_deref(),
        work.path(),
        PEER_SCRIPT,
        &config,
    )?;
    let truth: Vec<Vec<usize>> = serde_json::from_value(peers["truth"].clone())?;
    for p in peers["knn"].as_array().into_iter().flatten() {
        report.knn.push(KnnPoint {
            system: p["system"].as_str().unwrap_or("?").to_owned(),
            ef: p["ef"].as_u64().unwrap_or(0) as usize,
            concurrency: 1,
            qps: p["qps"].as_f64().unwrap_or(0.0),
            recall: p["recall"].as_f64().unwrap_or(0.0),
        });
    }
    for i in peers["ingest"].as_array().into_iter().flatten() {
        report.ingest.push((
            i[0].as_str().unwrap_or("?").to_owned(),
            i[1].as_str().unwrap_or("?").to_owned(),
            i[2].as_f64().unwrap_or(0.0),
        ));
    }
    let peer_top: Option<Vec<Vec<(String, f64)>>> = peers["text"]
        .as_array()
        .and_then(|t| t.first())
        .map(|t| serde_json::from_value(t["top"].clone()))
        .transpose()?;
    if let Some(t) = peers["text"].as_array().and_then(|t| t.first()) {
        report.text.push(TextPoint {
            system: "tantivy-py".into(),
            concurrency: 1,
            qps: t["qps"].as_f64().unwrap_or(0.0),
            agreement: 1.0,
            same_scores: 1.0,
        });
    }

    // themis.
    let (_guard, base) = start_themis(binary, dir, o.shards, o.server_cpus.as_deref())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    for (model, ns, config) in [
        (
            "vector",
            "bench",
            json!({"dimension": o.dims, "metric": "l2"}),
        ),
        (
            "document",
            "corpus",
            json!({"text_fields": ["title", "body"], "language": "none"}),
        ),
    ] {
        let r = http
            .put(format!("{base}/v1/namespaces/{model}/{ns}?wait=applied"))
            .json(&config)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("declaring {model}/{ns}: {}", r.text().await?);
        }
    }
    let events: Vec<Value> = data
        .chunks(o.dims)
        .enumerate()
        .map(|(i, v)| json!({"urn": format!("urn:themis:vector:bench:{i}"), "op": "put", "vector": v}))
        .collect();
    let start = Instant::now();
    let token = ingest(&http, &base, events).await?;
    let committed = start.elapsed();
    // The first search at the token waits until every vector is indexed.
    post(
        &http,
        &format!("{base}/v1/query"),
        &json!({"knn": {"namespace": "bench", "vector": &queries[..o.dims], "k": 1},
                "min_token": token, "timeout": "600s"}),
    )
    .await?;
    let indexed = start.elapsed();
    report.ingest.push((
        "themis".into(),
        format!("{} vectors appended (HTTP, 4 shards)", o.vectors),
        committed.as_secs_f64(),
    ));
    report.ingest.push((
        "themis".into(),
        "... and indexed (searchable at the token)".into(),
        indexed.as_secs_f64(),
    ));
    println!("vectors: appended in {committed:.1?}, searchable after {indexed:.1?}");

    for &ef in &o.ef {
        for &c in &o.concurrency {
            let bodies: Vec<Value> = queries
                .chunks(o.dims)
                .map(|q| json!({"knn": {"namespace": "bench", "vector": q, "k": 10, "ef": ef}}))
                .collect();
            let (found, qps) = run_queries(&http, &base, bodies, c).await?;
            let mut hits = 0;
            for (f, t) in found.iter().zip(&truth) {
                hits += f
                    .iter()
                    .filter(|(id, _)| id.parse::<usize>().is_ok_and(|i| t.contains(&i)))
                    .count();
            }
            let recall = hits as f64 / (10 * truth.len()) as f64;
            println!("themis knn ef {ef} clients {c}: {qps:.0} queries/s, recall@10 {recall:.4}");
            report.knn.push(KnnPoint {
                system: "themis".into(),
                ef,
                concurrency: c,
                qps,
                recall,
            });
        }
    }

    let events: Vec<Value> = docs
        .iter()
        .map(|(id, title, body)| {
            json!({"urn": format!("urn:themis:document:corpus:{id}"), "op": "put",
                   "data": {"title": title, "body": body}})
        })
        .collect();
    let start = Instant::now();
    let token = ingest(&http, &base, events).await?;
    let committed = start.elapsed();
    post(
        &http,
        &format!("{base}/v1/query"),
        &json!({"search": {"namespace": "corpus", "query": "xka", "k": 1},
                "min_token": token, "timeout": "600s"}),
    )
    .await?;
    let indexed = start.elapsed();
    report.ingest.push((
        "themis".into(),
        format!("{} documents appended (HTTP, 4 shards)", o.docs),
        committed.as_secs_f64(),
    ));
    report.ingest.push((
        "themis".into(),
        "... and indexed (searchable at the token)".into(),
        indexed.as_secs_f64(),
    ));
    println!("documents: appended in {committed:.1?}, searchable after {indexed:.1?}");
    for &c in &o.concurrency {
        let bodies: Vec<Value> = text_queries
            .iter()
            .map(|q| json!({"search": {"namespace": "corpus", "query": q, "k": 10}}))
            .collect();
        let (found, qps) = run_queries(&http, &base, bodies, c).await?;
        // Documents with equal scores are many (a word once in bodies of the same length
        // bucket), and which of them make the top 10 is arbitrary, so both the ids and the
        // ranked score lists are compared.
        let (agreement, same_scores) = match &peer_top {
            Some(top) => {
                let (mut share, mut same) = (0.0, 0usize);
                for (ours, theirs) in found.iter().zip(top) {
                    let scores_equal = ours.len() == theirs.len()
                        && ours
                            .iter()
                            .zip(theirs)
                            .all(|(a, b)| (a.1 - b.1).abs() <= 1e-4 * (1.0 + b.1.abs()));
                    same += usize::from(scores_equal);
                    if theirs.is_empty() {
                        share += 1.0;
                        continue;
                    }
                    let common = theirs
                        .iter()
                        .filter(|(id, _)| ours.iter().any(|(o, _)| o == id))
                        .count();
                    share += common as f64 / theirs.len() as f64;
                }
                let n = found.len().max(1) as f64;
                (share / n, same as f64 / n)
            }
            None => (f64::NAN, f64::NAN),
        };
        println!(
            "themis search clients {c}: {qps:.0} queries/s, share of tantivy-py's top ids \
             {agreement:.4}, queries with the same ranked scores {same_scores:.4}"
        );
        report.text.push(TextPoint {
            system: "themis".into(),
            concurrency: c,
            qps,
            agreement,
            same_scores,
        });
    }
    Ok(report)
}

/// The report as markdown.
pub fn markdown(r: &SearchReport, o: &SearchOptions) -> String {
    let mut s = format!(
        "{} vectors of {} dimensions, {} queries, k 10; {} documents, {} text queries, k 10; \
         themis with {} shards{}.\n\n",
        o.vectors,
        o.dims,
        o.queries,
        o.docs,
        o.text_queries,
        o.shards,
        o.server_cpus
            .as_deref()
            .map(|c| format!(", servers and peers on CPUs {c}"))
            .unwrap_or_default()
    );
    s.push_str("| system | ef | clients | queries/s | recall@10 |\n|---|---|---|---|---|\n");
    for p in &r.knn {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.4} |\n",
            p.system, p.ef, p.concurrency, p.qps, p.recall
        ));
    }
    // At recall >= 0.95: the fastest point of each system.
    let best = |system: &str, clients: Option<usize>| {
        r.knn
            .iter()
            .filter(|p| {
                p.system == system && p.recall >= 0.95 && clients.is_none_or(|c| p.concurrency == c)
            })
            .map(|p| p.qps)
            .fold(None, |a: Option<f64>, q| Some(a.map_or(q, |a| a.max(q))))
    };
    s.push('\n');
    for peer in ["hnswlib", "faiss"] {
        if let (Some(ours1), Some(theirs)) = (best("themis", Some(1)), best(peer, None)) {
            s.push_str(&format!(
                "- at recall@10 ≥ 0.95: themis (1 client, through HTTP) {:.0} queries/s, {peer} {:.0} \
                 (1 thread, in process): ratio **{:.2}**",
                ours1,
                theirs,
                ours1 / theirs
            ));
            if let Some(ours) = best("themis", None) {
                s.push_str(&format!(
                    "; themis's best over client counts {:.0}: ratio {:.2}",
                    ours,
                    ours / theirs
                ));
            }
            s.push('\n');
        }
    }
    s.push_str(
        "\n| system | clients | queries/s | share of tantivy-py's top-10 ids | queries with tantivy-py's ranked scores |\n|---|---|---|---|---|\n",
    );
    for p in &r.text {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.4} | {:.4} |\n",
            p.system, p.concurrency, p.qps, p.agreement, p.same_scores
        ));
    }
    s.push_str("\n| system | what | seconds |\n|---|---|---|\n");
    for (system, what, secs) in &r.ingest {
        s.push_str(&format!("| {system} | {what} | {secs:.2} |\n"));
    }
    s
}

/// Checks a report for the smoke run: every query answered and recall sane.
pub fn check_smoke(r: &SearchReport) -> anyhow::Result<()> {
    let ours: Vec<&KnnPoint> = r.knn.iter().filter(|p| p.system == "themis").collect();
    if ours.is_empty() || r.text.iter().all(|p| p.system != "themis") {
        bail!("no themis measurement");
    }
    if let Some(p) = ours.iter().find(|p| p.recall < 0.8) {
        bail!(
            "recall@10 {} at ef {} is too low for a smoke run",
            p.recall,
            p.ef
        );
    }
    Ok(())
}
