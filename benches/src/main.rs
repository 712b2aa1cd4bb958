//! `themis-bench`: benchmarks side by side with real peers.
//!
//! `themis-bench append` measures durable appends of 256-byte events through the HTTP API of the
//! real `themis` binary and, in the same run, puts of the same size into a real single-node etcd
//! (which fsyncs before acknowledging, as we do), at several concurrencies, interleaved.
//! `themis-bench cluster` compares a 3-node cluster with a 3-member etcd cluster;
//! `themis-bench sql` compares SQL over the relational view with DuckDB on the same data.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use themis_bench::cluster::{ClusterOptions, run_cluster};
use themis_bench::load::{RunStats, etcd_puts, measured, run, themis_appends};
use themis_bench::probe::{FsyncProbe, fsync_probe};
use themis_bench::process::{self, pin_self, start_etcd, start_themis, themis_binary};
use themis_bench::sql::{SqlOptions, markdown, run_sql};

#[derive(Debug, Parser)]
#[command(
    name = "themis-bench",
    about = "ThemisDB benchmarks against real peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Durable appends over HTTP vs etcd puts, same size, same durability.
    Append {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrencies to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        concurrency: Vec<usize>,
        /// Interleaved themis/etcd pairs per concurrency (the median is reported).
        #[arg(long, default_value_t = 3)]
        pairs: usize,
        /// Bytes of each event's payload and of each etcd value.
        #[arg(long, default_value_t = 256)]
        event_bytes: usize,
        /// Shards of the themis node.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Directory for data (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A short run for CI: concurrency 1 and 16, one pair, 1 s each; fails on any error.
        #[arg(long)]
        smoke: bool,
        /// Measure an already running themis at this URL instead of starting one (for profiling).
        #[arg(long)]
        themis_url: Option<String>,
        /// CPUs (a `taskset` list) for the servers, themis and etcd alike, e.g. `0`.
        #[arg(long)]
        server_cpus: Option<String>,
        /// CPUs (a `taskset` list) for this load generator, e.g. `1`.
        #[arg(long)]
        client_cpus: Option<String>,
    },
    /// A 3-node themis cluster vs a 3-member etcd cluster on loopback: throughput at one
    /// concurrency, replication lag at a fixed rate, failover times over repeated leader kills.
    Cluster {
        /// Seconds per throughput run and of the lag run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Interleaved themis/etcd pairs (the median is reported).
        #[arg(long, default_value_t = 3)]
        pairs: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Appends per second of the replication-lag run.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// SIGKILLs of shard leaders in the failover run.
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Shards of the themis cluster.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Bytes of each event's payload and of each etcd value.
        #[arg(long, default_value_t = 256)]
        event_bytes: usize,
        /// A short run for CI: 1 s runs, one pair, 2 kills; fails on any error.
        #[arg(long)]
        smoke: bool,
        /// Directory for data (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// CPUs (a `taskset` list) for the servers.
        #[arg(long)]
        server_cpus: Option<String>,
        /// CPUs (a `taskset` list) for this load generator.
        #[arg(long)]
        client_cpus: Option<String>,
        /// An extra `themis serve` flag for every node (repeatable), e.g.
        /// `--node-arg=--raft-election-max=200ms`.
        #[arg(long = "node-arg", allow_hyphen_values = true)]
        node_args: Vec<String>,
        /// Send each append to its shard's leader (a leader-aware client) instead of spreading
        /// appends over the nodes, which forward them.
        #[arg(long)]
        to_leaders: bool,
        /// Events per request in the replication-lag run (`--rate` counts events).
        #[arg(long, default_value_t = 1)]
        lag_batch: usize,
        /// Workers of the paced replication-lag run. The run is open-loop: each worker sends at
        /// its share of the rate, so it needs enough workers for the rate times the latency.
        #[arg(long, default_value_t = 256)]
        lag_concurrency: usize,
    },
    /// Change-stream fan-out on one node: append throughput with and without N subscribers,
    /// and commit-to-client delivery latency at a paced append rate.
    Fanout(FanoutArgs),
    /// kNN and fulltext search through the HTTP API vs hnswlib, faiss-cpu and tantivy-py from
    /// pip on the same data: queries/s at recall@10, agreement, ingest.
    Search(SearchArgs),
    /// Graph traversal: 2- and 3-hop neighbourhoods of a power-law graph through the HTTP
    /// API vs networkx (pip) on the same graph.
    Graph {
        /// Vertices.
        #[arg(long, default_value_t = 100_000)]
        vertices: usize,
        /// Edges.
        #[arg(long, default_value_t = 1_000_000)]
        edges: usize,
        /// Start vertices per depth.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Shards of the themis node.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// A short run for CI (2,000 vertices, 10,000 edges, 20 queries).
        #[arg(long)]
        smoke: bool,
        /// Python virtual environment for networkx (default ~/.cache/themis-bench/venv).
        #[arg(long)]
        venv: Option<PathBuf>,
        /// Directory for data (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// CPUs (a `taskset` list) for themis and networkx.
        #[arg(long)]
        server_cpus: Option<String>,
    },
    /// Time-series compression: bytes per point and decode speed of Gorilla blocks on
    /// generated host-metric series at 10 s intervals (vs the paper's 1.37 bytes per point).
    Timeseries {
        /// Series per kind.
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        /// Points per series (8640: a day at 10 s).
        #[arg(long, default_value_t = 8640)]
        points: usize,
        /// A short run for CI (20 series of 2,000 points).
        #[arg(long)]
        smoke: bool,
    },
    /// SQL over the relational view of one node vs DuckDB on the same generated data: load
    /// and materialization rates, filtered scans, aggregates and a join (first run and warm
    /// runs, answers checked against DuckDB), and view lag under paced appends.
    Sql {
        /// Rows of `orders`.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Rows of `customers` (orders reference customers 0..N).
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        /// Warm repetitions of every query after its first run (best and median reported).
        #[arg(long, default_value_t = 5)]
        repetitions: usize,
        /// Shards of the themis node.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Events per load request (`POST /v1/events`, per-shard atomicity; at most 10,000).
        #[arg(long, default_value_t = 4_000)]
        batch: usize,
        /// Load requests in flight.
        #[arg(long, default_value_t = 4)]
        load_concurrency: usize,
        /// Single-row appends per second of the view-lag run (0: no lag run).
        #[arg(long, default_value_t = 10_000)]
        lag_rate: u64,
        /// Seconds of the view-lag run.
        #[arg(long, default_value_t = 10)]
        lag_seconds: u64,
        /// Paced workers of the view-lag run (open loop: enough for the rate times the latency).
        #[arg(long, default_value_t = 256)]
        lag_concurrency: usize,
        /// Every how many appends the lag run samples (alternately with and without the token).
        #[arg(long, default_value_t = 10)]
        lag_sample_every: u64,
        /// Single-row updates per second while the aggregate, filter and join queries run
        /// again, each at the latest update's token (one run per rate; empty: none).
        #[arg(long, value_delimiter = ',', default_value = "200,2000")]
        write_rates: Vec<u64>,
        /// DuckDB's threads (default: the cores this process may use).
        #[arg(long)]
        duckdb_threads: Option<usize>,
        /// The Python venv with duckdb, created when missing (default:
        /// $HOME/.cache/themis-bench/venv).
        #[arg(long)]
        venv: Option<PathBuf>,
        /// Skip DuckDB (no comparison, no ratios).
        #[arg(long)]
        no_duckdb: bool,
        /// A short run for CI: 20,000 orders, 2,000 customers, one repetition, a 2 s lag run at
        /// 1,000/s; fails on any error.
        #[arg(long)]
        smoke: bool,
        /// Directory for data (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// CPUs (a `taskset` list) for themis and DuckDB.
        #[arg(long)]
        server_cpus: Option<String>,
        /// CPUs (a `taskset` list) for this load generator.
        #[arg(long)]
        client_cpus: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct FanoutArgs {
    /// Concurrent subscribers (NDJSON, every event).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Appends per second of the paced run.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Clients of the closed-loop throughput runs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Workers of the paced run (open loop: enough for the rate times the latency).
    #[arg(long, default_value_t = 256)]
    paced_concurrency: usize,
    /// Interleaved without/with pairs of the throughput runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Shards of the themis node.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Bytes of each event's payload.
    #[arg(long, default_value_t = 256)]
    event_bytes: usize,
    /// A short run for CI: 10 subscribers, 1 s runs, one pair, 500 appends/s; fails when an
    /// event is lost or out of order.
    #[arg(long)]
    smoke: bool,
    /// Directory for data (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// CPUs (a `taskset` list) for themis.
    #[arg(long)]
    server_cpus: Option<String>,
    /// CPUs (a `taskset` list) for this load generator and its subscribers.
    #[arg(long)]
    client_cpus: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SearchArgs {
    /// Vectors indexed.
    #[arg(long, default_value_t = 100_000)]
    vectors: usize,
    /// Their dimensions.
    #[arg(long, default_value_t = 128)]
    dims: usize,
    /// kNN queries per measurement.
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Search widths (ef) to measure.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    ef: Vec<usize>,
    /// Documents indexed.
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Text queries per measurement.
    #[arg(long, default_value_t = 2_000)]
    text_queries: usize,
    /// Concurrent clients of themis (the peers run one query at a time in one thread).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    concurrency: Vec<usize>,
    /// Shards of the themis node.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// The Python venv with the peers, created when missing (default:
    /// $HOME/.cache/themis-bench/venv).
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Skip the peers (exact neighbours still come from numpy: `python3` needs numpy).
    #[arg(long)]
    no_peers: bool,
    /// A short run for CI: 2,000 vectors of 32 dimensions, 100 queries, ef 16 and 64, 2,000
    /// documents, 200 text queries, one client; fails on any error or a recall below 0.8.
    #[arg(long)]
    smoke: bool,
    /// Directory for data (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// CPUs (a `taskset` list) for themis and the peers.
    #[arg(long)]
    server_cpus: Option<String>,
    /// CPUs (a `taskset` list) for this load generator.
    #[arg(long)]
    client_cpus: Option<String>,
}

async fn search(a: SearchArgs) -> anyhow::Result<()> {
    use themis_bench::search::{SearchOptions, check_smoke, markdown, peer_python, run_search};
    if let Some(cpus) = &a.client_cpus {
        pin_self(cpus)?;
    }
    let venv = match a.venv {
        Some(v) => v,
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/themis-bench/venv"),
    };
    // The peers' venv also has numpy for the exact neighbours.
    let python = peer_python(&venv)?;
    let o = SearchOptions {
        vectors: if a.smoke {
            a.vectors.min(2_000)
        } else {
            a.vectors
        },
        dims: if a.smoke { a.dims.min(32) } else { a.dims },
        queries: if a.smoke {
            a.queries.min(100)
        } else {
            a.queries
        },
        ef: if a.smoke { vec![16, 64] } else { a.ef },
        docs: if a.smoke { a.docs.min(2_000) } else { a.docs },
        text_queries: if a.smoke {
            a.text_queries.min(200)
        } else {
            a.text_queries
        },
        concurrency: if a.smoke { vec![1] } else { a.concurrency },
        shards: a.shards,
        python,
        peers: !a.no_peers,
        server_cpus: a.server_cpus,
    };
    let temp = tempfile::tempdir()?;
    let dir = a.dir.unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let binary = themis_binary()?;
    println!("themis binary: {}", binary.display());
    let report = run_search(&binary, &dir, &o).await?;
    println!("\n`{}`\n", std::env::args().collect::<Vec<_>>().join(" "));
    print!("{}", markdown(&report, &o));
    if a.smoke {
        check_smoke(&report)?;
    }
    Ok(())
}

async fn fanout(a: FanoutArgs) -> anyhow::Result<()> {
    use themis_bench::fanout::{FanoutOptions, markdown, run_fanout};
    if let Some(cpus) = &a.client_cpus {
        pin_self(cpus)?;
    }
    let o = FanoutOptions {
        subscribers: if a.smoke {
            a.subscribers.min(10)
        } else {
            a.subscribers
        },
        rate: if a.smoke { a.rate.min(500) } else { a.rate },
        seconds: if a.smoke { 1 } else { a.seconds.max(1) },
        concurrency: a.concurrency.max(1),
        paced_concurrency: a.paced_concurrency.max(1),
        pairs: if a.smoke { 1 } else { a.pairs.max(1) },
        shards: a.shards,
        event_bytes: a.event_bytes,
        server_cpus: a.server_cpus,
    };
    let temp = tempfile::tempdir()?;
    let dir = a.dir.unwrap_or_else(|| temp.path().to_owned());
    let binary = themis_binary()?;
    let result = run_fanout(&binary, &dir, &o).await?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    print!("{}", markdown(&o, &result, &command));
    if result.delivered < result.expected {
        bail!(
            "a subscriber received {} of {} events",
            result.delivered,
            result.expected
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Append {
            seconds,
            concurrency,
            pairs,
            event_bytes,
            shards,
            dir,
            smoke,
            themis_url,
            server_cpus,
            client_cpus,
        } => {
            if let Some(cpus) = &client_cpus {
                pin_self(cpus)?;
            }
            let (seconds, concurrency, pairs) = if smoke {
                (1, vec![1, 16], 1)
            } else {
                (seconds, concurrency, pairs.max(1))
            };
            let options = Options {
                duration: Duration::from_secs(seconds),
                pairs,
                event_bytes,
                shards,
                smoke,
                themis_url,
                server_cpus,
                client_cpus,
            };
            append(&options, &concurrency, dir).await
        }
        Command::Cluster {
            seconds,
            pairs,
            concurrency,
            rate,
            kills,
            shards,
            event_bytes,
            smoke,
            dir,
            server_cpus,
            client_cpus,
            node_args,
            to_leaders,
            lag_batch,
            lag_concurrency,
        } => {
            if let Some(cpus) = &client_cpus {
                pin_self(cpus)?;
            }
            let options = ClusterOptions {
                node_args,
                to_leaders,
                lag_batch,
                lag_concurrency: lag_concurrency.max(1),
                seconds: if smoke { 1 } else { seconds },
                pairs: if smoke { 1 } else { pairs.max(1) },
                concurrency,
                rate: if smoke { rate.min(1_000) } else { rate },
                kills: if smoke { 2 } else { kills },
                shards,
                event_bytes,
                server_cpus,
            };
            cluster(&options, dir, smoke).await
        }
        Command::Sql {
            rows,
            customers,
            repetitions,
            shards,
            batch,
            load_concurrency,
            lag_rate,
            lag_seconds,
            lag_concurrency,
            lag_sample_every,
            write_rates,
            duckdb_threads,
            venv,
            no_duckdb,
            smoke,
            dir,
            server_cpus,
            client_cpus,
        } => {
            if let Some(cpus) = &client_cpus {
                pin_self(cpus)?;
            }
            let venv = if no_duckdb {
                None
            } else {
                Some(match venv {
                    Some(v) => v,
                    None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                        .join(".cache/themis-bench/venv"),
                })
            };
            let options = SqlOptions {
                rows: if smoke { rows.min(20_000) } else { rows },
                customers: if smoke {
                    customers.min(2_000)
                } else {
                    customers
                }
                .max(1),
                repetitions: if smoke { 1 } else { repetitions },
                shards,
                batch: batch.clamp(1, 10_000),
                load_concurrency: load_concurrency.max(1),
                lag_rate: if smoke { lag_rate.min(1_000) } else { lag_rate },
                lag_seconds: if smoke {
                    lag_seconds.min(2)
                } else {
                    lag_seconds
                },
                lag_concurrency: lag_concurrency.max(1),
                lag_sample_every,
                write_rates: if smoke {
                    write_rates.iter().map(|r| (*r).min(50)).take(1).collect()
                } else {
                    write_rates
                },
                duckdb_threads: duckdb_threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
                venv,
                server_cpus,
                smoke,
            };
            sql(&options, dir).await
        }
        Command::Fanout(args) => fanout(args).await,
        Command::Search(args) => search(args).await,
        Command::Graph {
            vertices,
            edges,
            queries,
            shards,
            smoke,
            venv,
            dir,
            server_cpus,
        } => {
            use themis_bench::graph::{GraphOptions, markdown, networkx_python, run_graph};
            let venv = match venv {
                Some(v) => v,
                None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                    .join(".cache/themis-bench/venv"),
            };
            let o = GraphOptions {
                vertices: if smoke { 2_000 } else { vertices },
                edges: if smoke { 10_000 } else { edges },
                queries: if smoke { 20 } else { queries },
                shards,
                python: networkx_python(&venv)?,
                server_cpus,
            };
            let tmp = tempfile::tempdir()?;
            let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
            let report = run_graph(&themis_binary()?, &dir, &o).await?;
            println!("{}", markdown(&report, &o));
            if report.mismatches > 0 {
                bail!(
                    "{} traversals found a different number of vertices than networkx",
                    report.mismatches
                );
            }
            Ok(())
        }
        Command::Timeseries {
            hosts,
            points,
            smoke,
        } => {
            let (hosts, points) = if smoke { (20, 2000) } else { (hosts, points) };
            let results: Vec<_> = themis_bench::timeseries::KINDS
                .iter()
                .enumerate()
                .map(|(i, kind)| {
                    themis_bench::timeseries::measure(kind, hosts, points, 7 + i as u64)
                })
                .collect();
            println!(
                "{}",
                themis_bench::timeseries::markdown(&results, hosts, points)
            );
            Ok(())
        }
    }
}

async fn sql(options: &SqlOptions, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let binary = themis_binary()?;
    println!(
        "themis-bench sql: {} orders, {} customers, {} shards, {} warm repetitions; DuckDB {}; view lag at {}/s for {} s",
        options.rows,
        options.customers,
        options.shards,
        options.repetitions,
        if options.venv.is_some() {
            format!("with {} threads", options.duckdb_threads)
        } else {
            "skipped".to_owned()
        },
        options.lag_rate,
        options.lag_seconds
    );
    println!("themis binary: {}", binary.display());
    println!(
        "CPUs: servers {}; this process may use {}",
        options.server_cpus.as_deref().unwrap_or("any"),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let probe = Duration::from_secs(if options.smoke { 1 } else { 5 });
    let before = fsync_probe(&dir, probe)?;
    let report = run_sql(&binary, &dir, options).await?;
    let after = fsync_probe(&dir, probe)?;
    if let Some(lag) = &report.lag
        && options.smoke
        && (lag.appends.errors > 0
            || lag.sample_errors > 0
            || lag.appends.ok == 0
            || lag.lag.is_empty()
            || lag.baseline.is_empty())
    {
        bail!(
            "smoke run failed: lag run {:?}, {} failed samples, {} lag samples, {} baseline samples",
            lag.appends,
            lag.sample_errors,
            lag.lag.len(),
            lag.baseline.len()
        );
    }
    for run in &report.under_writes {
        if options.smoke && (run.appends.errors > 0 || run.appends.ok == 0) {
            bail!(
                "smoke run failed: updates under {} /s: {:?}",
                run.rate,
                run.appends
            );
        }
    }
    println!();
    print!("{}", markdown(&report, options));
    print_probes(&before, &after);
    Ok(())
}

async fn cluster(
    options: &ClusterOptions,
    dir: Option<PathBuf>,
    smoke: bool,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let binary = themis_binary()?;
    println!(
        "themis-bench cluster: 3 themis nodes ({} shards, 3 replicas each) vs 3 etcd members on loopback; {}-byte events, {}s runs, {} pair(s), concurrency {}; lag at {}/s; {} leader kills",
        options.shards,
        options.event_bytes,
        options.seconds,
        options.pairs,
        options.concurrency,
        options.rate,
        options.kills
    );
    let before = fsync_probe(&dir, Duration::from_secs(if smoke { 1 } else { 5 }))?;
    let report = run_cluster(&binary, &dir, options).await?;
    let after = fsync_probe(&dir, Duration::from_secs(if smoke { 1 } else { 5 }))?;
    let (times, failures) = &report.failovers;
    if smoke
        && (report.themis.errors > 0
            || report.etcd.errors > 0
            || report.themis.ok == 0
            || *failures > 0)
    {
        bail!(
            "smoke run failed: themis {:?}, etcd {:?}, failover failures {failures}",
            report.themis,
            report.etcd
        );
    }
    println!();
    println!(
        "| concurrency | themis appends/s | themis p50 | themis p99 | etcd puts/s | etcd p50 | etcd p99 | throughput ratio | p99 ratio (themis/etcd) | cores themis / etcd | generator cores (themis / etcd run) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!("{}", row(options.concurrency, &report.themis, &report.etcd));
    let (rate, lag) = report.lag;
    println!();
    println!(
        "replication lag (proposal on the leader to apply on each replica, all replicas of all shards) at {rate:.0} events/s achieved of {} asked, {} per request, {} workers: p50 <= {} ms, p99 <= {} ms, mean {:.2} ms, {} entries",
        options.rate,
        options.lag_batch,
        options.lag_concurrency,
        lag.p50 * 1e3,
        lag.p99 * 1e3,
        lag.mean * 1e3,
        lag.count
    );
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .map_or_else(|| "-".to_owned(), |d| ms(*d))
    };
    println!(
        "failover (SIGKILL of a shard leader to the first acknowledged append of each of its shards through a survivor): {} samples, p50 {}, p99 {}, max {}, failures {failures}",
        times.len(),
        at(0.5),
        at(0.99),
        times.last().map_or_else(|| "-".to_owned(), |d| ms(*d)),
    );
    print_probes(&before, &after);
    Ok(())
}

fn median(mut runs: Vec<RunStats>) -> RunStats {
    runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    runs[runs.len() / 2].clone()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Options {
    duration: Duration,
    pairs: usize,
    event_bytes: usize,
    shards: u32,
    smoke: bool,
    themis_url: Option<String>,
    server_cpus: Option<String>,
    client_cpus: Option<String>,
}

async fn append(
    options: &Options,
    concurrency: &[usize],
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let Options {
        duration,
        pairs,
        event_bytes,
        shards,
        smoke,
        ..
    } = *options;
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let binary = themis_binary()?;
    let before = fsync_probe(&dir, Duration::from_secs(if smoke { 1 } else { 5 }))?;
    let (themis, base) = match &options.themis_url {
        Some(url) => (None, url.clone()),
        None => {
            let (guard, base) =
                start_themis(&binary, &dir, shards, options.server_cpus.as_deref())?;
            (Some(guard), base)
        }
    };
    let themis_pid = themis.as_ref().map(process::Guard::pid);
    let (etcd_guard, endpoint) = start_etcd(&dir, options.server_cpus.as_deref())?;
    let etcd = etcd_client::Client::connect([endpoint.as_str()], None)
        .await
        .context("connect to etcd")?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let payload = "x".repeat(event_bytes);

    println!(
        "themis-bench append: {event_bytes}-byte events, {}s per run, {pairs} interleaved pair(s), {shards} shards",
        duration.as_secs()
    );
    println!("themis binary: {}", binary.display());
    println!(
        "CPUs: servers {}, load generator {} (it may use {} CPUs)",
        options.server_cpus.as_deref().unwrap_or("any"),
        options.client_cpus.as_deref().unwrap_or("any"),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut rows = Vec::new();
    for &c in concurrency {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..pairs {
            let op = themis_appends(
                http.clone(),
                vec![base.clone()],
                "bench",
                payload.clone(),
                1,
            );
            ours.push(
                measured(
                    &themis_pid.into_iter().collect::<Vec<_>>(),
                    run(c, duration, move |w, n| op(w, n)),
                )
                .await,
            );
            let op = etcd_puts(etcd.clone(), payload.clone());
            theirs
                .push(measured(&[etcd_guard.pid()], run(c, duration, move |w, n| op(w, n))).await);
        }
        let (ours, theirs) = (median(ours), median(theirs));
        if smoke && (ours.errors > 0 || theirs.errors > 0 || ours.ok == 0 || theirs.ok == 0) {
            bail!("smoke run failed at concurrency {c}: themis {ours:?}, etcd {theirs:?}");
        }
        println!("{}", row(c, &ours, &theirs));
        rows.push((c, ours, theirs));
    }
    let after = fsync_probe(&dir, Duration::from_secs(if smoke { 1 } else { 5 }))?;
    print_table(&rows, &before, &after);
    Ok(())
}

fn print_table(rows: &[(usize, RunStats, RunStats)], before: &FsyncProbe, after: &FsyncProbe) {
    println!();
    println!(
        "| concurrency | themis appends/s | themis p50 | themis p99 | etcd puts/s | etcd p50 | etcd p99 | throughput ratio | p99 ratio (themis/etcd) | cores themis / etcd | generator cores (themis / etcd run) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (c, ours, theirs) in rows {
        println!("{}", row(*c, ours, theirs));
    }
    print_probes(before, after);
}

/// The fsync probes taken before and after a run.
fn print_probes(before: &FsyncProbe, after: &FsyncProbe) {
    println!();
    for (when, p) in [("before", before), ("after", after)] {
        println!(
            "fsync probe {when}: {:.0} fdatasync/s, p50 {}, p99 {} ({} regime)",
            p.per_second,
            ms(p.p50),
            ms(p.p99),
            p.regime()
        );
    }
}

/// One markdown table row: themis and etcd at concurrency `c`, and their ratios.
fn row(c: usize, ours: &RunStats, theirs: &RunStats) -> String {
    format!(
        "| {c} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2}x | {:.2} | {} / {} | {} / {} |",
        ours.per_second,
        ms(ours.p50),
        ms(ours.p99),
        theirs.per_second,
        ms(theirs.p50),
        ms(theirs.p99),
        ours.per_second / theirs.per_second,
        ours.p99.as_secs_f64() / theirs.p99.as_secs_f64().max(1e-9),
        cores(ours.server_cores),
        cores(theirs.server_cores),
        cores(ours.client_cores),
        cores(theirs.client_cores),
    )
}

fn cores(c: Option<f64>) -> String {
    c.map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"))
}
