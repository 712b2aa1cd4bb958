//! `themis-bench cluster`: a 3-node themis cluster and a 3-member etcd cluster on the same
//! loopback, side by side: append throughput and latency at a fixed concurrency (interleaved
//! pairs), replication lag at a fixed rate, and the failover-time distribution over repeated
//! SIGKILLs of shard leaders.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use themis_log::{Ring, Urn};

use crate::load::{RunStats, etcd_puts, measured, run, run_paced, themis_appends};
use crate::process::{ClusterNode, start_etcd_cluster};

/// What `themis-bench cluster` measures.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Seconds per throughput run and for the lag run.
    pub seconds: u64,
    /// Interleaved themis/etcd pairs (the median is reported).
    pub pairs: usize,
    /// Concurrent clients in the throughput runs.
    pub concurrency: usize,
    /// Appends per second of the replication-lag run.
    pub rate: u64,
    /// Leader kills of the failover run.
    pub kills: usize,
    /// Shards of the themis cluster.
    pub shards: u32,
    /// Payload bytes per event and per etcd value.
    pub event_bytes: usize,
    /// CPUs for the servers (taskset list).
    pub server_cpus: Option<String>,
    /// Extra `themis serve` flags for every node.
    pub node_args: Vec<String>,
    /// Send each append to its shard's leader (a leader-aware client) instead of spreading
    /// appends over all nodes (which forward to the leader).
    pub to_leaders: bool,
    /// Events per request in the replication-lag run (the rate counts events).
    pub lag_batch: usize,
    /// Workers of the paced lag run.
    pub lag_concurrency: usize,
}

/// The results, for the table.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// Median themis run.
    pub themis: RunStats,
    /// Median etcd run.
    pub etcd: RunStats,
    /// Achieved rate of the lag run and the lag quantiles (bucket upper bounds).
    pub lag: (f64, LagQuantiles),
    /// Failover times, one per (kill, affected shard), and failures (no append within 10 s).
    pub failovers: (Vec<Duration>, usize),
}

/// Quantiles of the apply-lag histogram (upper bounds of the buckets holding them).
#[derive(Debug, Clone, Copy, Default)]
pub struct LagQuantiles {
    /// Entries observed.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean (exact).
    pub mean: f64,
}

fn cli(binary: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(binary).args(args).output()?;
    if !out.status.success() {
        bail!(
            "themis {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn status(http: &reqwest::Client, node: &ClusterNode) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{}/v1/cluster", node.base()))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .json()
        .await?)
}

/// Waits until every shard has a leader and every replica has caught up with it.
async fn wait_converged(
    http: &reqwest::Client,
    node: &ClusterNode,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = status(http, node).await {
            let shards = s["shards"].as_array().cloned().unwrap_or_default();
            let converged = !shards.is_empty()
                && shards.iter().all(|s| {
                    s["leader"].is_u64()
                        && s["error"].is_null()
                        && s["replicas"]
                            .as_array()
                            .is_some_and(|r| r.iter().all(|r| r["lag"] == 0))
                });
            if converged {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not converge within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sums the `themis_apply_lag_seconds` buckets of every shard of every node.
async fn lag_buckets(
    http: &reqwest::Client,
    nodes: &[ClusterNode],
) -> anyhow::Result<(BTreeMap<String, u64>, f64)> {
    let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
    let mut sum = 0.0;
    for node in nodes {
        let text = http
            .get(format!("{}/metrics", node.base()))
            .send()
            .await?
            .text()
            .await?;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("themis_apply_lag_seconds_bucket{") {
                let (labels, value) = rest.split_once("} ").context("metric line")?;
                let le = labels
                    .split("le=\"")
                    .nth(1)
                    .and_then(|l| l.strip_suffix('"'))
                    .context("le label")?;
                *buckets.entry(le.to_owned()).or_default() += value.trim().parse::<u64>()?;
            } else if let Some(rest) = line.strip_prefix("themis_apply_lag_seconds_sum{") {
                let (_, value) = rest.split_once("} ").context("metric line")?;
                sum += value.trim().parse::<f64>()?;
            }
        }
    }
    Ok((buckets, sum))
}

fn quantiles(
    before: &(BTreeMap<String, u64>, f64),
    after: &(BTreeMap<String, u64>, f64),
) -> LagQuantiles {
    let mut cumulative: Vec<(f64, u64)> = after
        .0
        .iter()
        .map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            (bound, n - before.0.get(le).copied().unwrap_or(0))
        })
        .collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = cumulative.last().map_or(0, |c| c.1);
    let at = |q: f64| {
        cumulative
            .iter()
            .find(|(_, n)| *n as f64 >= q * count as f64)
            .map_or(f64::INFINITY, |c| c.0)
    };
    LagQuantiles {
        count,
        p50: at(0.5),
        p99: at(0.99),
        mean: if count == 0 {
            0.0
        } else {
            (after.1 - before.1) / count as f64
        },
    }
}

/// One stream URN per shard, found through the placement ring.
fn probe_streams(shards: u32) -> Vec<String> {
    let ring = Ring::new(shards);
    let mut out: Vec<Option<String>> = vec![None; shards as usize];
    for i in 0.. {
        let text = format!("urn:themis:document:failover:p{i}");
        let urn = Urn::parse(&text).expect("valid urn");
        let slot = &mut out[ring.shard_for_urn(&urn).0 as usize];
        if slot.is_none() {
            *slot = Some(text);
        }
        if out.iter().all(Option::is_some) {
            break;
        }
    }
    out.into_iter().map(|u| u.expect("filled")).collect()
}

/// Appends to `urn` through `nodes` in turn until one answer is 201; returns when, or `None`
/// after `give_up`.
async fn first_append(
    http: &reqwest::Client,
    nodes: &[String],
    urn: &str,
    start: Instant,
    give_up: Duration,
) -> Option<Duration> {
    let body = serde_json::json!({"events": [{"op": "put", "data": {"probe": true}}]});
    for k in 0.. {
        let base = &nodes[k % nodes.len()];
        let answer = http
            .post(format!("{base}/v1/streams/{urn}"))
            .json(&body)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().as_u16() == 201) {
            return Some(start.elapsed());
        }
        if start.elapsed() > give_up {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Runs the whole scenario in `dir`.
pub async fn run_cluster(
    binary: &Path,
    dir: &Path,
    o: &ClusterOptions,
) -> anyhow::Result<ClusterReport> {
    let cpus = o.server_cpus.as_deref();
    let (etcd_members, endpoints) = start_etcd_cluster(dir, 3, cpus)?;
    let etcd_pids: Vec<u32> = etcd_members.iter().map(|g| g.pid()).collect();
    let etcd_urls = endpoints.join(",");
    cli(
        binary,
        &[
            "cluster",
            "init",
            "--etcd",
            &etcd_urls,
            "--shards",
            &o.shards.to_string(),
            "--replication",
            "3",
        ],
    )?;
    let mut nodes: Vec<ClusterNode> = (1..=3)
        .map(|id| ClusterNode::new(dir, id))
        .collect::<anyhow::Result<_>>()?;
    for node in &mut nodes {
        node.spawn(binary, &etcd_urls, cpus, &o.node_args)?;
    }
    for node in &mut nodes {
        node.wait_listening(Duration::from_secs(120)).await?;
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    wait_converged(&http, &nodes[0], Duration::from_secs(60)).await?;
    let etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .context("connect to etcd")?;
    let bases: Vec<String> = nodes.iter().map(ClusterNode::base).collect();
    // Per worker, the node its appends go to: its shard's leader, or node w mod 3.
    let ring = Ring::new(o.shards);
    let leaders: Vec<String> = {
        let s = status(&http, &nodes[0]).await?;
        s["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|shard| {
                let leader = shard["leader"].as_u64().unwrap_or(1);
                bases[(leader as usize - 1).min(bases.len() - 1)].clone()
            })
            .collect()
    };
    let target = |prefix: &str, w: usize| -> String {
        if o.to_leaders {
            let urn = Urn::parse(&format!("urn:themis:document:{prefix}:w{w}")).expect("urn");
            leaders[ring.shard_for_urn(&urn).0 as usize].clone()
        } else {
            bases[w % bases.len()].clone()
        }
    };
    let bench_targets: Vec<String> = (0..o.concurrency).map(|w| target("bench", w)).collect();
    let lag_targets: Vec<String> = (0..o.lag_concurrency).map(|w| target("lag", w)).collect();
    let payload = "x".repeat(o.event_bytes);
    let duration = Duration::from_secs(o.seconds);

    // Throughput: interleaved pairs; themis clients spread over the three nodes, as etcd's
    // client spreads over its members.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..o.pairs {
        let op = themis_appends(
            http.clone(),
            bench_targets.clone(),
            "bench",
            payload.clone(),
            1,
        );
        let node_pids: Vec<u32> = nodes.iter().filter_map(ClusterNode::pid).collect();
        ours.push(
            measured(
                &node_pids,
                run(o.concurrency, duration, move |w, n| op(w, n)),
            )
            .await,
        );
        let op = etcd_puts(etcd.clone(), payload.clone());
        theirs.push(
            measured(
                &etcd_pids,
                run(o.concurrency, duration, move |w, n| op(w, n)),
            )
            .await,
        );
    }
    let median = |mut runs: Vec<RunStats>| {
        runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
        runs[runs.len() / 2].clone()
    };
    let (themis, etcd_stats) = (median(ours), median(theirs));

    // Replication lag at a fixed rate.
    let before = lag_buckets(&http, &nodes).await?;
    // The rate counts events; each request carries `lag_batch` of them (one stream's events).
    let batch = o.lag_batch.max(1);
    let op = themis_appends(http.clone(), lag_targets, "lag", payload.clone(), batch);
    let paced = run_paced(
        o.lag_concurrency,
        o.rate as f64 / batch as f64,
        duration,
        move |w, n| op(w, n),
    )
    .await;
    wait_converged(&http, &nodes[0], Duration::from_secs(60)).await?;
    let after = lag_buckets(&http, &nodes).await?;
    let lag = (paced.per_second * batch as f64, quantiles(&before, &after));

    // Failover: kill the node leading the most shards, time each of its shards' first
    // successful append through the survivors, restart it, let it catch up; repeat.
    let streams = probe_streams(o.shards);
    let mut times = Vec::new();
    let mut failures = 0;
    for kill in 0..o.kills {
        let live = nodes
            .iter()
            .position(|n| n.id as usize != (kill % 3) + 1)
            .expect("a live node");
        let s = status(&http, &nodes[live]).await?;
        let mut led: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, shard) in s["shards"].as_array().into_iter().flatten().enumerate() {
            if let Some(l) = shard["leader"].as_u64() {
                led.entry(l).or_default().push(i);
            }
        }
        // The node leading the most shards, ties broken by the kill number.
        let victim = *led
            .iter()
            .max_by_key(|(id, shards)| (shards.len(), (**id as usize + kill) % 3))
            .map(|(id, _)| id)
            .context("no shard has a leader")?;
        let affected = led[&victim].clone();
        let survivors: Vec<String> = nodes
            .iter()
            .filter(|n| n.id != victim)
            .map(ClusterNode::base)
            .collect();
        let index = nodes.iter().position(|n| n.id == victim).expect("victim");
        let start = Instant::now();
        nodes[index].kill();
        let probes = affected.iter().map(|&shard| {
            first_append(
                &http,
                &survivors,
                &streams[shard],
                start,
                Duration::from_secs(10),
            )
        });
        for t in futures::future::join_all(probes).await {
            match t {
                Some(t) => times.push(t),
                None => failures += 1,
            }
        }
        nodes[index].spawn(binary, &etcd_urls, cpus, &o.node_args)?;
        nodes[index].wait_listening(Duration::from_secs(60)).await?;
        wait_converged(&http, &nodes[live], Duration::from_secs(60)).await?;
        println!(
            "kill {}/{}: node {victim} led shards {affected:?}; first appends after {:?}",
            kill + 1,
            o.kills,
            &times[times.len().saturating_sub(affected.len())..]
        );
    }
    times.sort();
    Ok(ClusterReport {
        themis,
        etcd: etcd_stats,
        lag,
        failovers: (times, failures),
    })
}
