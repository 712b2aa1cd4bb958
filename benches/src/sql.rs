//! `themis-bench sql`: SQL over the relational view of one `themis` node vs DuckDB, on the same
//! generated data, in the same run.
//!
//! 1. Generates `orders` (`--rows`, default 1,000,000) and `customers` (`--customers`, default
//!    10,000) from a fixed seed (SplitMix64, seed 42: the same rows on every run and machine).
//! 2. Loads them into themis through the HTTP API (multi-shard batches with per-shard atomicity,
//!    several requests in flight) and measures the committed rate, then the time until every
//!    relational view's watermark covers the load's token (`GET /v1/admin/views`).
//! 3. Runs the same SQL text on themis (`POST /v1/query`, end to end over HTTP: the first run of
//!    each query, then `--repetitions` warm runs) and in DuckDB (a Python script in a venv,
//!    native tables in a database file loaded from CSV files of the same rows, `threads` set to
//!    the cores of this machine), and fails unless both give the same answers (floats within a
//!    relative 1e-9).
//! 4. Queries under writes: for each of `--write-rates`, open-loop single-row updates of
//!    random orders at that rate while the aggregate, filter and join queries run again,
//!    each with the latest update's token as `min_token` (read your writes); DuckDB runs the
//!    same queries each right after one `UPDATE` of a random order.
//! 5. View lag: open-loop single-row appends at `--lag-rate` for `--lag-seconds` to a separate
//!    namespace; after every `--lag-sample-every`-th append answer, `SELECT 1` with the append's
//!    token as `min_token` (alternating with the same query without a token, the round-trip
//!    baseline under the same load).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use themis_log::{ShardId, Token};

use crate::load::{RunStats, run_paced, run_paced_until};
use crate::process::{
    cpu_seconds, pinned, resident_bytes, restart_themis, start_themis, tree_bytes,
};

/// What `themis-bench sql` measures.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// Rows of `orders`.
    pub rows: usize,
    /// Rows of `customers` (order customers are drawn from `0..customers`).
    pub customers: usize,
    /// Warm repetitions of every query (after the first run).
    pub repetitions: usize,
    /// Shards of the themis node.
    pub shards: u32,
    /// Events per load request.
    pub batch: usize,
    /// Load requests in flight.
    pub load_concurrency: usize,
    /// Appends per second of the view-lag run (0: no lag run).
    pub lag_rate: u64,
    /// Seconds of the view-lag run.
    pub lag_seconds: u64,
    /// Paced workers of the view-lag run.
    pub lag_concurrency: usize,
    /// Every how many appends the lag run takes a sample.
    pub lag_sample_every: u64,
    /// Updates per second of the runs under writes (one run per rate).
    pub write_rates: Vec<u64>,
    /// DuckDB's `threads` setting.
    pub duckdb_threads: usize,
    /// The Python venv with duckdb (created when missing); `None`: no DuckDB run.
    pub venv: Option<PathBuf>,
    /// CPUs (a `taskset` list) for themis and DuckDB.
    pub server_cpus: Option<String>,
    /// Fail on any error at all (CI).
    pub smoke: bool,
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fixed, seedable generator, so the data is the
/// same on every run and build without a dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (the modulo bias is below 2^-40 for the sizes used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Order statuses and their weights (percent).
pub const STATUSES: [(&str, u64); 5] = [
    ("paid", 40),
    ("shipped", 30),
    ("pending", 15),
    ("refunded", 10),
    ("cancelled", 5),
];

/// Customer regions.
pub const REGIONS: [&str; 8] = [
    "eu-west",
    "eu-central",
    "us-east",
    "us-west",
    "ap-south",
    "ap-east",
    "sa-east",
    "af-south",
];

/// One row of `orders` (its `id` is the URN's id).
#[derive(Debug, Clone)]
pub struct Order {
    /// Row id.
    pub id: String,
    /// Customer key.
    pub customer: i64,
    /// Amount, whole cents from 0.01 to 1000.00.
    pub amount: f64,
    /// One of [`STATUSES`].
    pub status: &'static str,
    /// 1 to 10.
    pub qty: i64,
}

/// One row of `customers`.
#[derive(Debug, Clone)]
pub struct Customer {
    /// Row id.
    pub id: String,
    /// Customer key (`orders.customer`).
    pub customer: i64,
    /// One of [`REGIONS`].
    pub region: &'static str,
}

/// The data set: `rows` orders over `customers` customers, from `seed`.
pub fn generate(rows: usize, customers: usize, seed: u64) -> (Vec<Order>, Vec<Customer>) {
    let mut rng = SplitMix64::new(seed);
    let customer_rows = (0..customers)
        .map(|i| Customer {
            id: format!("c{i:06}"),
            customer: i as i64,
            region: REGIONS[rng.below(REGIONS.len() as u64) as usize],
        })
        .collect();
    let total: u64 = STATUSES.iter().map(|(_, w)| w).sum();
    let orders = (0..rows)
        .map(|i| {
            let customer = rng.below(customers as u64) as i64;
            let amount = (1 + rng.below(100_000)) as f64 / 100.0;
            let mut pick = rng.below(total);
            let mut status = STATUSES[0].0;
            for (s, w) in STATUSES {
                if pick < w {
                    status = s;
                    break;
                }
                pick -= w;
            }
            let qty = 1 + rng.below(10) as i64;
            Order {
                id: format!("o{i:08}"),
                customer,
                amount,
                status,
                qty,
            }
        })
        .collect();
    (orders, customer_rows)
}

/// One benchmark query: the same SQL text runs on both systems.
#[derive(Debug, Clone)]
pub struct Query {
    /// Short name.
    pub name: &'static str,
    /// What it exercises.
    pub what: &'static str,
    /// SQL.
    pub sql: String,
    /// The same query in AQL, returning objects with the SQL answer's column names.
    pub aql: String,
}

/// The queries, in the order they run (the first one is the first query after the load, so its
/// first run includes building the Arrow cache of `orders`; the join's first run builds
/// `customers`').
pub fn queries(probe_customer: i64) -> Vec<Query> {
    vec![
        Query {
            name: "count",
            what: "all rows; its first run builds the Arrow cache of orders",
            sql: "SELECT count(*) AS n FROM orders".into(),
            aql: "FOR o IN orders COLLECT WITH COUNT INTO n RETURN {n}".into(),
        },
        Query {
            name: "filter_agg",
            what: "filtered scan, aggregate",
            sql: "SELECT count(*) AS n, sum(amount) AS total FROM orders \
                  WHERE status = 'refunded' AND amount > 900"
                .into(),
            aql: "FOR o IN orders FILTER o.status == 'refunded' AND o.amount > 900 \
                  COLLECT AGGREGATE n = COUNT(), total = SUM(o.amount) RETURN {n, total}"
                .into(),
        },
        Query {
            name: "filter_rows",
            what: "filtered scan returning rows",
            sql: format!(
                "SELECT id, customer, amount, status, qty FROM orders \
                 WHERE customer = {probe_customer} AND amount > 500 ORDER BY id"
            ),
            aql: format!(
                "FOR o IN orders FILTER o.customer == {probe_customer} AND o.amount > 500 \
                 SORT o._key RETURN {{id: o._key, customer: o.customer, amount: o.amount, \
                 status: o.status, qty: o.qty}}"
            ),
        },
        Query {
            name: "group_customer",
            what: "group by customer (one group per customer), first 20",
            sql: "SELECT customer, count(*) AS n, sum(amount) AS total, avg(qty) AS avg_qty \
                  FROM orders GROUP BY customer ORDER BY customer LIMIT 20"
                .into(),
            aql: "FOR o IN orders COLLECT customer = o.customer AGGREGATE n = COUNT(), \
                  total = SUM(o.amount), avg_qty = AVG(o.qty) LIMIT 20 \
                  RETURN {customer, n, total, avg_qty}"
                .into(),
        },
        Query {
            name: "group_status",
            what: "group by status (5 groups)",
            sql: "SELECT status, count(*) AS n, sum(amount) AS total, avg(qty) AS avg_qty \
                  FROM orders GROUP BY status ORDER BY status"
                .into(),
            aql: "FOR o IN orders COLLECT status = o.status AGGREGATE n = COUNT(), \
                  total = SUM(o.amount), avg_qty = AVG(o.qty) RETURN {status, n, total, avg_qty}"
                .into(),
        },
        Query {
            name: "join_region",
            what: "join with customers, group by region (8 groups); its first run builds the cache of customers",
            sql: "SELECT c.region, count(*) AS n, sum(o.amount) AS total \
                  FROM orders o JOIN customers c ON o.customer = c.customer \
                  GROUP BY c.region ORDER BY c.region"
                .into(),
            aql: "FOR o IN orders FOR c IN customers FILTER o.customer == c.customer \
                  COLLECT region = c.region AGGREGATE n = COUNT(), total = SUM(o.amount) \
                  RETURN {region, n, total}"
                .into(),
        },
    ]
}

/// An answer's columns and rows (cells in column order).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
}

/// Timings of one query on one system.
#[derive(Debug, Clone)]
pub struct Timings {
    /// The first run.
    pub first: Duration,
    /// The warm runs.
    pub warm: Vec<Duration>,
}

impl Timings {
    /// Fastest warm run.
    pub fn best(&self) -> Duration {
        self.warm.iter().min().copied().unwrap_or(self.first)
    }

    /// Median warm run.
    pub fn median(&self) -> Duration {
        let mut w = self.warm.clone();
        w.sort();
        w.get(w.len() / 2).copied().unwrap_or(self.first)
    }
}

/// One query's results.
#[derive(Debug, Clone)]
pub struct QueryReport {
    /// The query.
    pub query: Query,
    /// Rows of the answer.
    pub rows: usize,
    /// themis, end to end over HTTP.
    pub themis: Timings,
    /// DuckDB, in process (when run).
    pub duckdb: Option<Timings>,
    /// The AQL form on themis (over DataFusion plans), end to end over HTTP.
    pub aql: Timings,
    /// The AQL form with `"plans": false` (the interpreter alone), one run: its time, or
    /// the problem it answered (`too_large`, `timeout`).
    pub interpreted: Result<Duration, String>,
}

/// Load and materialization.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Rows appended (orders and customers).
    pub rows: usize,
    /// From the first request to the last answer (every row committed).
    pub committed: Duration,
    /// From the first request until every relational view covered the load.
    pub materialized: Duration,
    /// Cores themis used from the first request until the views caught up.
    pub server_cores: Option<f64>,
    /// The relational view rebuilt from the log alone (`POST /v1/admin/views/relational/
    /// rebuild` until every shard's view caught up again), after the queries.
    pub rebuild: Option<Duration>,
}

/// The view-lag run.
#[derive(Debug, Clone)]
pub struct LagReport {
    /// Appends asked per second.
    pub rate: u64,
    /// The paced appends.
    pub appends: RunStats,
    /// Append answer to the answer of `SELECT 1` with its token, sorted.
    pub lag: Vec<Duration>,
    /// `SELECT 1` without a token under the same load, sorted.
    pub baseline: Vec<Duration>,
    /// `SELECT 1` without a token on the idle node before the run, sorted.
    pub idle_baseline: Vec<Duration>,
    /// Failed samples.
    pub sample_errors: u64,
    /// `lag_ms` of the relational views, polled every 100 ms during the run, sorted.
    pub polled_lag_ms: Vec<u64>,
}

/// DuckDB's side.
#[derive(Debug, Clone)]
pub struct DuckReport {
    /// duckdb's version.
    pub version: String,
    /// Its `threads` setting.
    pub threads: String,
    /// CSV to native tables, with a checkpoint.
    pub load: Duration,
    /// Bytes of both tables written by DuckDB to Parquet (its defaults: Snappy).
    pub parquet_bytes: u64,
    /// Bytes of both tables written by DuckDB to Parquet with ZSTD.
    pub parquet_zstd_bytes: u64,
    /// Bytes of DuckDB's own database file after the load's checkpoint.
    pub db_bytes: u64,
}

/// Storage and memory of the themis node.
#[derive(Debug, Clone, Default)]
pub struct StorageReport {
    /// Bytes of the views database (`views.redb`) once the load was materialized.
    pub views_bytes: u64,
    /// Bytes of the whole data directory then (log, state, views, indexes).
    pub data_bytes: u64,
    /// Resident memory once the load was materialized.
    pub resident_loaded: Option<u64>,
    /// Resident memory after the idle SQL queries (before the AQL ones).
    pub resident_queried: Option<u64>,
}

/// The node stopped (SIGTERM) and started again on its data directory.
#[derive(Debug, Clone)]
pub struct RestartReport {
    /// From the start of the process until it listens.
    pub open: Duration,
    /// Per query of [`UNDER_WRITES`], in order.
    pub queries: Vec<FirstQuery>,
    /// Resident memory after those queries.
    pub resident: Option<u64>,
    /// The views database's file after the restart (a node compacts it at start when most of
    /// it is free space).
    pub views_bytes: u64,
}

/// One query's first run after a restart, and what it made the node do.
#[derive(Debug, Clone)]
pub struct FirstQuery {
    /// The query.
    pub name: &'static str,
    /// Its first run.
    pub first: Duration,
    /// The median of `repetitions` runs after that.
    pub median: Duration,
    /// Table partitions the first run built whole and brought forward
    /// (`themis_sql_partitions_built_total`).
    pub built: (u64, u64),
    /// Column chunks the first run decoded from blocks, and their bytes
    /// (`themis_sql_columns_decoded_total`): none when the warm-up kept what it reads.
    pub decoded: (u64, u64),
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct SqlReport {
    /// Load and materialization.
    pub load: LoadReport,
    /// Per query.
    pub queries: Vec<QueryReport>,
    /// DuckDB (when run).
    pub duckdb: Option<DuckReport>,
    /// The view-lag run (when run).
    pub lag: Option<LagReport>,
    /// The queries under writes, per rate.
    pub under_writes: Vec<WritesReport>,
    /// Storage and memory.
    pub storage: StorageReport,
    /// The first queries after a restart (when measured).
    pub restart: Option<RestartReport>,
}

/// The queries that run again under writes: an aggregate, a filter and a join.
const UNDER_WRITES: [&str; 3] = ["group_status", "filter_rows", "join_region"];

/// One run of queries under writes.
#[derive(Debug, Clone)]
pub struct WritesReport {
    /// Updates asked per second.
    pub rate: u64,
    /// The updates.
    pub appends: RunStats,
    /// Per query of [`UNDER_WRITES`]: its name and themis' times, sorted.
    pub themis: Vec<(&'static str, Vec<Duration>)>,
    /// DuckDB's times of the same queries, each right after an update, sorted.
    pub duckdb: Vec<Option<Vec<Duration>>>,
}

/// The relational view's kind in `GET /v1/admin/views`.
const RELATIONAL_VIEW: &str = "relational";

/// Runs the benchmark with the `themis` binary at `binary`, data under `dir`.
pub async fn run_sql(binary: &Path, dir: &Path, options: &SqlOptions) -> anyhow::Result<SqlReport> {
    let seed = 42;
    let (orders, customers) = generate(options.rows, options.customers, seed);
    let probe_customer = (4242 % options.customers.max(1)) as i64;
    let queries = queries(probe_customer);

    // DuckDB's input first: the same rows as CSV.
    let csv_dir = tempfile::tempdir_in(dir)?;
    let orders_csv = csv_dir.path().join("orders.csv");
    let customers_csv = csv_dir.path().join("customers.csv");
    write_orders_csv(&orders_csv, &orders)?;
    write_customers_csv(&customers_csv, &customers)?;

    let (guard, base) = start_themis(binary, dir, options.shards, options.server_cpus.as_deref())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;

    declare(
        &http,
        &base,
        "orders",
        json!({"columns": [
            {"name": "customer", "type": "int64"},
            {"name": "amount", "type": "float64"},
            {"name": "status", "type": "string"},
            {"name": "qty", "type": "int64"},
        ]}),
    )
    .await?;
    declare(
        &http,
        &base,
        "customers",
        json!({"columns": [
            {"name": "customer", "type": "int64"},
            {"name": "region", "type": "string"},
        ]}),
    )
    .await?;

    // Request bodies are built before the clock starts.
    let mut events: Vec<String> = Vec::with_capacity(customers.len() + orders.len());
    for c in &customers {
        events.push(
            json!({
                "urn": format!("urn:themis:relational:customers:{}", c.id),
                "op": "put",
                "data": {"customer": c.customer, "region": c.region},
            })
            .to_string(),
        );
    }
    for o in &orders {
        events.push(
            json!({
                "urn": format!("urn:themis:relational:orders:{}", o.id),
                "op": "put",
                "data": {
                    "customer": o.customer,
                    "amount": o.amount,
                    "status": o.status,
                    "qty": o.qty,
                },
            })
            .to_string(),
        );
    }
    let bodies: Vec<String> = events
        .chunks(options.batch.max(1))
        .map(|chunk| {
            let mut body = String::from("{\"per_shard_atomicity\":true,\"events\":[");
            body.push_str(&chunk.join(","));
            body.push_str("]}");
            body
        })
        .collect();
    drop(events);
    let total_rows = orders.len() + customers.len();
    println!(
        "loading {total_rows} rows ({} orders, {} customers) in {} requests of up to {} events, {} in flight",
        orders.len(),
        customers.len(),
        bodies.len(),
        options.batch,
        options.load_concurrency
    );

    let cpu0 = cpu_seconds(guard.pid());
    let start = Instant::now();
    let token = load(&http, &base, bodies, options.load_concurrency).await?;
    let committed = start.elapsed();
    wait_views(
        &http,
        &base,
        &token,
        Some(RELATIONAL_VIEW),
        Duration::from_secs(1800),
    )
    .await?;
    let materialized = start.elapsed();
    let server_cores = match (cpu0, cpu_seconds(guard.pid())) {
        (Some(a), Some(b)) => Some((b - a) / materialized.as_secs_f64()),
        _ => None,
    };
    // Every other view too (the document view skips relational rows), before queries run.
    wait_views(&http, &base, &token, None, Duration::from_secs(1800)).await?;
    let mut storage = StorageReport::default();
    if let Some(data) = guard.dir() {
        storage.views_bytes = std::fs::metadata(data.join("views.redb")).map_or(0, |m| m.len());
        storage.data_bytes = tree_bytes(data);
    }
    storage.resident_loaded = resident_bytes(guard.pid());
    println!(
        "storage: views {:.1} MB ({:.1} bytes/row), data directory {:.1} MB; resident {:.0} MB",
        storage.views_bytes as f64 / 1e6,
        storage.views_bytes as f64 / total_rows as f64,
        storage.data_bytes as f64 / 1e6,
        storage.resident_loaded.unwrap_or(0) as f64 / 1e6
    );
    let mut load_report = LoadReport {
        rows: total_rows,
        committed,
        materialized,
        server_cores,
        rebuild: None,
    };
    println!(
        "load: {:.0} rows/s committed ({:.1} s); relational views caught up after {:.1} s: {:.0} rows/s materialized",
        total_rows as f64 / committed.as_secs_f64(),
        committed.as_secs_f64(),
        materialized.as_secs_f64(),
        total_rows as f64 / materialized.as_secs_f64()
    );

    let token_text = token.encode();
    let mut themis_answers = Vec::new();
    let mut themis_timings = Vec::new();
    for q in &queries {
        let (first, answer) = themis_query(&http, &base, &q.sql, Some(&token_text)).await?;
        let mut warm = Vec::with_capacity(options.repetitions);
        for _ in 0..options.repetitions {
            let (t, again) = themis_query(&http, &base, &q.sql, Some(&token_text)).await?;
            compare(q, ("themis", &answer), ("themis again", &again))?;
            warm.push(t);
        }
        let timings = Timings { first, warm };
        println!(
            "themis {}: {} rows, first {}, warm best {}, median {}",
            q.name,
            answer.rows.len(),
            ms(timings.first),
            ms(timings.best()),
            ms(timings.median())
        );
        themis_answers.push(answer);
        themis_timings.push(timings);
    }
    // Before the AQL runs: the interpreter alone holds whole collections as JSON values.
    storage.resident_queried = resident_bytes(guard.pid());
    // The same queries in AQL: over DataFusion plans (first run, then the warm runs), then
    // once by the interpreter alone; both must answer as SQL did.
    let mut aql_timings = Vec::new();
    let mut interpreted = Vec::new();
    for (q, sql_answer) in queries.iter().zip(&themis_answers) {
        let columns = &sql_answer.columns;
        let (first, answer) = themis_aql(&http, &base, &q.aql, true, columns, &token_text).await?;
        compare(
            q,
            ("themis SQL", sql_answer),
            ("themis AQL", &answer.map_err(|e| anyhow!(e))?),
        )?;
        let mut warm = Vec::with_capacity(options.repetitions);
        for _ in 0..options.repetitions {
            let (t, again) = themis_aql(&http, &base, &q.aql, true, columns, &token_text).await?;
            compare(
                q,
                ("themis SQL", sql_answer),
                ("themis AQL", &again.map_err(|e| anyhow!(e))?),
            )?;
            warm.push(t);
        }
        let timings = Timings { first, warm };
        let (t, alone) = themis_aql(&http, &base, &q.aql, false, columns, &token_text).await?;
        let alone = match alone {
            Ok(rows) => {
                compare(
                    q,
                    ("themis SQL", sql_answer),
                    ("themis AQL interpreted", &rows),
                )?;
                Ok(t)
            }
            Err(code) => Err(code),
        };
        println!(
            "themis AQL {}: first {}, warm best {}, median {}; interpreted alone: {}",
            q.name,
            ms(timings.first),
            ms(timings.best()),
            ms(timings.median()),
            alone.as_ref().map_or_else(|e| e.clone(), |t| ms(*t))
        );
        aql_timings.push(timings);
        interpreted.push(alone);
    }

    // A check independent of DuckDB.
    let count = themis_answers[0]
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(Value::as_u64);
    if count != Some(orders.len() as u64) {
        bail!(
            "themis counted {count:?} orders, {} were loaded",
            orders.len()
        );
    }

    let mut duck = None;
    let mut duck_timings: Vec<Option<Timings>> = vec![None; queries.len()];
    if let Some(venv) = &options.venv {
        let python = duckdb_python(venv)?;
        let (report, results) = run_duckdb(
            &python,
            csv_dir.path(),
            &orders_csv,
            &customers_csv,
            &queries,
            options,
        )?;
        println!(
            "duckdb {} (threads {}): load {:.2} s; Parquet {:.1} MB ({:.1} bytes/row), with ZSTD {:.1} MB; database file {:.1} MB",
            report.version,
            report.threads,
            report.load.as_secs_f64(),
            report.parquet_bytes as f64 / 1e6,
            report.parquet_bytes as f64 / total_rows as f64,
            report.parquet_zstd_bytes as f64 / 1e6,
            report.db_bytes as f64 / 1e6
        );
        for (i, (q, (answer, timings))) in queries.iter().zip(results).enumerate() {
            compare(q, ("themis", &themis_answers[i]), ("duckdb", &answer))?;
            println!(
                "duckdb {}: {} rows (same answer as themis), first {}, best {}, median {}",
                q.name,
                answer.rows.len(),
                ms(timings.first),
                ms(timings.best()),
                ms(timings.median())
            );
            duck_timings[i] = Some(timings);
        }
        duck = Some(report);
    }

    // The view's own apply rate: replay the whole log into an empty relational view.
    let start = Instant::now();
    let r = http
        .post(format!("{base}/v1/admin/views/{RELATIONAL_VIEW}/rebuild"))
        .send()
        .await?;
    if r.status().as_u16() != 202 {
        bail!(
            "POST /v1/admin/views/{RELATIONAL_VIEW}/rebuild answered {}: {}",
            r.status(),
            r.text().await?
        );
    }
    wait_views(
        &http,
        &base,
        &token,
        Some(RELATIONAL_VIEW),
        Duration::from_secs(1800),
    )
    .await?;
    let rebuild = start.elapsed();
    load_report.rebuild = Some(rebuild);
    println!(
        "relational view rebuild: {:.1} s, {:.0} rows/s",
        rebuild.as_secs_f64(),
        total_rows as f64 / rebuild.as_secs_f64()
    );
    // The answers after the rebuild are the same.
    for (q, answer) in queries.iter().zip(&themis_answers) {
        let (_, again) = themis_query(&http, &base, &q.sql, Some(&token_text)).await?;
        compare(q, ("themis", answer), ("themis after the rebuild", &again))?;
    }

    let mut under_writes = Vec::new();
    for &rate in options.write_rates.iter().filter(|r| **r > 0) {
        let run = writes_run(&http, &base, &queries, orders.len(), rate, options).await?;
        for (name, times) in &run.themis {
            println!(
                "themis under {rate} updates/s, {name}: p50 {}, p99 {} ({} runs)",
                ms(quantile(times, 0.5)),
                ms(quantile(times, 0.99)),
                times.len()
            );
        }
        under_writes.push(run);
    }

    let lag = if options.lag_rate > 0 && options.lag_seconds > 0 {
        Some(lag_run(&http, &base, options).await?)
    } else {
        None
    };
    // The node stopped and started again: what the first queries cost.
    let mut guard = guard;
    guard.stop()?;
    let start = Instant::now();
    let (guard, base) = restart_themis(
        binary,
        guard,
        options.shards,
        options.server_cpus.as_deref(),
    )?;
    let open = start.elapsed();
    let mut after = Vec::new();
    for name in UNDER_WRITES {
        let i = queries
            .iter()
            .position(|q| q.name == name)
            .context("an under-writes query")?;
        let q = &queries[i];
        let before = table_counters(&http, &base).await?;
        let (first, answer) = themis_query(&http, &base, &q.sql, Some(&token_text)).await?;
        let after_first = table_counters(&http, &base).await?;
        // Updates change the answers; without them, the same answer as before.
        if under_writes.is_empty() {
            compare(
                q,
                ("themis", &themis_answers[i]),
                ("themis after a restart", &answer),
            )?;
        }
        let mut warm = Vec::new();
        for _ in 0..options.repetitions.max(1) {
            warm.push(
                themis_query(&http, &base, &q.sql, Some(&token_text))
                    .await?
                    .0,
            );
        }
        warm.sort();
        let median = warm[warm.len() / 2];
        let delta = |k: usize| after_first[k].saturating_sub(before[k]);
        let first_query = FirstQuery {
            name,
            first,
            median,
            built: (delta(0), delta(1)),
            decoded: (delta(2), delta(3)),
        };
        println!(
            "themis after a restart, {name}: first {} (partitions built whole {}, forward {}; \
             {} column chunks decoded, {:.1} MB), then median {}",
            ms(first),
            first_query.built.0,
            first_query.built.1,
            first_query.decoded.0,
            first_query.decoded.1 as f64 / 1e6,
            ms(median)
        );
        after.push(first_query);
    }
    let views_bytes = guard
        .dir()
        .and_then(|data| std::fs::metadata(data.join("views.redb")).ok())
        .map_or(0, |m| m.len());
    let restart = Some(RestartReport {
        open,
        queries: after,
        resident: resident_bytes(guard.pid()),
        views_bytes,
    });
    println!(
        "themis restart: listening after {}; views {:.1} MB ({:.1} bytes/row)",
        ms(open),
        views_bytes as f64 / 1e6,
        views_bytes as f64 / total_rows as f64
    );
    drop(guard);
    if let Some(venv) = &options.venv
        && !under_writes.is_empty()
    {
        let python = duckdb_python(venv)?;
        let after_update =
            run_duckdb_under_writes(&python, csv_dir.path(), &queries, orders.len(), options)?;
        for run in &mut under_writes {
            run.duckdb = after_update.iter().cloned().map(Some).collect();
        }
    }

    let queries = queries
        .into_iter()
        .zip(themis_answers)
        .zip(themis_timings)
        .zip(duck_timings)
        .zip(aql_timings.into_iter().zip(interpreted))
        .map(
            |((((query, answer), themis), duckdb), (aql, interpreted))| QueryReport {
                query,
                rows: answer.rows.len(),
                themis,
                duckdb,
                aql,
                interpreted,
            },
        )
        .collect();
    Ok(SqlReport {
        load: load_report,
        queries,
        duckdb: duck,
        lag,
        under_writes,
        storage,
        restart,
    })
}

/// The queries of [`UNDER_WRITES`], each `repetitions` times (at least 20) at the latest
/// update's token, while updates of random orders run at `rate` per second.
async fn writes_run(
    http: &reqwest::Client,
    base: &str,
    queries: &[Query],
    orders: usize,
    rate: u64,
    options: &SqlOptions,
) -> anyhow::Result<WritesReport> {
    let latest = Arc::new(Mutex::new(Token::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let op = {
        let (http, base, latest) = (http.clone(), base.to_owned(), latest.clone());
        move |w: usize, n: u64| {
            let (http, base, latest) = (http.clone(), base.clone(), latest.clone());
            async move {
                // A random order, from the worker and the count (no shared generator).
                let mut rng = SplitMix64::new((w as u64) << 32 ^ n);
                let i = rng.below(orders.max(1) as u64);
                let url = format!("{base}/v1/streams/urn:themis:relational:orders:o{i:08}");
                let amount = (1 + rng.below(100_000)) as f64 / 100.0;
                let r = http
                    .post(url)
                    .json(&json!({"events": [{"op": "put", "data": {
                        "customer": rng.below(1000) as i64, "amount": amount,
                        "status": "paid", "qty": 1 + rng.below(10) as i64}}]}))
                    .send()
                    .await?;
                let status = r.status();
                let bytes = r.bytes().await?;
                if status.as_u16() != 201 {
                    bail!(
                        "update answered {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                #[derive(serde::Deserialize)]
                struct Answer {
                    token: String,
                }
                let answer: Answer = serde_json::from_slice(&bytes)?;
                let token = decode_token(&answer.token)?;
                latest.lock().expect("token lock").merge(&token);
                Ok(())
            }
        }
    };
    let workers = options.lag_concurrency.clamp(1, 64);
    let appender = tokio::spawn(run_paced_until(workers, rate as f64, stop.clone(), op));
    // The updates first reach their pace.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = options.repetitions.max(20);
    let mut themis = Vec::new();
    for name in UNDER_WRITES {
        let Some(q) = queries.iter().find(|q| q.name == name) else {
            continue;
        };
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let token = latest.lock().expect("token lock").encode();
            let (t, _) = post_query(http, base, &q.sql, Some(&token), "60s").await?;
            times.push(t);
        }
        times.sort();
        themis.push((name, times));
    }
    stop.store(true, Ordering::Relaxed);
    let appends = appender.await?;
    Ok(WritesReport {
        rate,
        appends,
        themis,
        duckdb: Vec::new(),
    })
}

fn write_orders_csv(path: &Path, orders: &[Order]) -> anyhow::Result<()> {
    let mut out = String::with_capacity(orders.len() * 40);
    out.push_str("id,customer,amount,status,qty\n");
    for o in orders {
        // `{}` of an f64 is its shortest round-trip form, as serde_json's: both systems parse
        // the same double.
        writeln!(
            out,
            "{},{},{},{},{}",
            o.id, o.customer, o.amount, o.status, o.qty
        )?;
    }
    std::fs::write(path, out).with_context(|| format!("write {}", path.display()))
}

fn write_customers_csv(path: &Path, customers: &[Customer]) -> anyhow::Result<()> {
    let mut out = String::from("id,customer,region\n");
    for c in customers {
        writeln!(out, "{},{},{}", c.id, c.customer, c.region)?;
    }
    std::fs::write(path, out).with_context(|| format!("write {}", path.display()))
}

/// `PUT /v1/namespaces/relational/{ns}?wait=applied`.
async fn declare(
    http: &reqwest::Client,
    base: &str,
    ns: &str,
    config: Value,
) -> anyhow::Result<()> {
    let r = http
        .put(format!("{base}/v1/namespaces/relational/{ns}?wait=applied"))
        .json(&config)
        .send()
        .await?;
    let status = r.status();
    if !status.is_success() {
        bail!(
            "PUT /v1/namespaces/relational/{ns} answered {status}: {}",
            r.text().await?
        );
    }
    Ok(())
}

/// Sends every body to `POST /v1/events`, `concurrency` at a time; every one must answer 201.
/// Returns the merged token.
async fn load(
    http: &reqwest::Client,
    base: &str,
    bodies: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<Token> {
    let url = format!("{base}/v1/events");
    let mut answers = futures::stream::iter(bodies)
        .map(|body| {
            let request = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            async move {
                let r = request.send().await?;
                let status = r.status();
                let bytes = r.bytes().await?;
                if status.as_u16() != 201 {
                    bail!(
                        "POST /v1/events answered {status}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(2000)])
                    );
                }
                #[derive(serde::Deserialize)]
                struct Answer {
                    token: String,
                }
                let answer: Answer = serde_json::from_slice(&bytes)?;
                decode_token(&answer.token)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut token = Token::new();
    while let Some(t) = answers.next().await {
        token.merge(&t?);
    }
    Ok(token)
}

fn decode_token(text: &str) -> anyhow::Result<Token> {
    Token::decode(text).map_err(|e| anyhow!("invalid token {text:?}: {e:?}"))
}

/// Polls `GET /v1/admin/views` until every view (of `kind`, or all) covers `token` and has
/// applied everything its replica applied.
async fn wait_views(
    http: &reqwest::Client,
    base: &str,
    token: &Token,
    kind: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let views: Value = http
            .get(format!("{base}/v1/admin/views"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let list = views["views"]
            .as_array()
            .ok_or_else(|| anyhow!("GET /v1/admin/views: no `views` array: {views}"))?;
        let mut seen = 0;
        let mut done = true;
        for v in list {
            if kind.is_some_and(|k| v["view"].as_str() != Some(k)) {
                continue;
            }
            seen += 1;
            let shard = v["shard"].as_u64().unwrap_or(0) as u32;
            let watermark = v["watermark"].as_u64().unwrap_or(0);
            let applied = v["applied"].as_u64().unwrap_or(0);
            let wanted = token.get(ShardId(shard)).map_or(0, |l| l.0).max(applied);
            if watermark < wanted {
                done = false;
            }
        }
        if seen == 0 {
            bail!("GET /v1/admin/views lists no {kind:?} view: {views}");
        }
        if done {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("views did not catch up within {timeout:?}: {views}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One `POST /v1/query`, timed from the request to the last byte of the answer.
/// The node's table counters: partitions built whole and forward, column chunks decoded and
/// their bytes.
async fn table_counters(http: &reqwest::Client, base: &str) -> anyhow::Result<[u64; 4]> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let names = [
        "themis_sql_partitions_built_total{how=\"whole\"}",
        "themis_sql_partitions_built_total{how=\"forward\"}",
        "themis_sql_columns_decoded_total",
        "themis_sql_columns_decoded_bytes_total",
    ];
    let mut values = [0; 4];
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Some(k) = names.iter().position(|n| *n == name) {
            values[k] = value.trim().parse().context("a table counter")?;
        }
    }
    Ok(values)
}

async fn themis_query(
    http: &reqwest::Client,
    base: &str,
    sql: &str,
    min_token: Option<&str>,
) -> anyhow::Result<(Duration, Rows)> {
    let (elapsed, bytes) = post_query(http, base, sql, min_token, "30s").await?;
    let answer: Value = serde_json::from_slice(&bytes).context("query answer is not JSON")?;
    let columns: Vec<String> = answer["columns"]
        .as_array()
        .ok_or_else(|| anyhow!("query answer without columns: {answer}"))?
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let rows = answer["rows"]
        .as_array()
        .ok_or_else(|| anyhow!("query answer without rows: {answer}"))?
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.get(c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect::<Vec<Vec<Value>>>();
    if answer["row_count"].as_u64() != Some(rows.len() as u64) {
        bail!(
            "query answer's row_count {} is not its {} rows",
            answer["row_count"],
            rows.len()
        );
    }
    Ok((elapsed, Rows { columns, rows }))
}

/// Runs AQL `aql` (`plans`: over DataFusion plans, else interpreted alone) at `min_token`:
/// the time to the whole answer, and its rows as cells in the order of `columns` (the
/// returned objects' attributes), or the code of the problem it answered with.
async fn themis_aql(
    http: &reqwest::Client,
    base: &str,
    aql: &str,
    plans: bool,
    columns: &[String],
    min_token: &str,
) -> anyhow::Result<(Duration, Result<Rows, String>)> {
    let body = json!({"aql": aql, "plans": plans, "min_token": min_token, "timeout": "120s",
        "batch_size": 100_000});
    let start = Instant::now();
    let r = http
        .post(format!("{base}/v1/query"))
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let bytes = r.bytes().await?;
    let elapsed = start.elapsed();
    let answer: Value = serde_json::from_slice(&bytes).context("AQL answer is not JSON")?;
    if status.as_u16() != 200 {
        // The interpreter may refuse (too many rows) or time out; plans must not.
        return match answer["code"].as_str() {
            Some(code @ ("result_too_large" | "timeout")) if !plans => {
                Ok((elapsed, Err(code.to_owned())))
            }
            _ => bail!("POST /v1/query {body} answered {status}: {answer}"),
        };
    }
    if answer["has_more"] != json!(false) {
        bail!("AQL answer of {aql} did not fit one batch");
    }
    let rows = answer["result"]
        .as_array()
        .ok_or_else(|| anyhow!("AQL answer without result: {answer}"))?
        .iter()
        .map(|o| {
            columns
                .iter()
                .map(|c| o.get(c.to_lowercase()).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    Ok((
        elapsed,
        Ok(Rows {
            columns: columns.to_vec(),
            rows,
        }),
    ))
}

/// Equal cells: integers exactly, other numbers within a relative 1e-9 (sums of doubles in a
/// different order), anything else exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
        },
        _ => a == b,
    }
}

/// Fails loudly unless the two answers to `q` (named `a` and `b` in the message) are alike.
fn compare(q: &Query, (a, x): (&str, &Rows), (b, y): (&str, &Rows)) -> anyhow::Result<()> {
    let names = |r: &Rows| {
        r.columns
            .iter()
            .map(|c| c.to_lowercase())
            .collect::<Vec<_>>()
    };
    if names(x) != names(y) {
        bail!(
            "query {} ({}): columns differ: {a} {:?}, {b} {:?}",
            q.name,
            q.sql,
            x.columns,
            y.columns
        );
    }
    if x.rows.len() != y.rows.len() {
        bail!(
            "query {} ({}): {a} answered {} rows, {b} {}",
            q.name,
            q.sql,
            x.rows.len(),
            y.rows.len()
        );
    }
    for (i, (r, s)) in x.rows.iter().zip(&y.rows).enumerate() {
        if r.len() != s.len() || r.iter().zip(s).any(|(v, w)| !same_value(v, w)) {
            bail!(
                "query {} ({}): row {i} differs: {a} {r:?}, {b} {s:?}",
                q.name,
                q.sql
            );
        }
    }
    Ok(())
}

/// The venv's python, after creating the venv and installing duckdb when either is missing.
pub fn duckdb_python(venv: &Path) -> anyhow::Result<PathBuf> {
    let python = venv.join("bin").join("python");
    let has_duckdb = |python: &Path| {
        std::process::Command::new(python)
            .args(["-c", "import duckdb"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && has_duckdb(&python) {
        return Ok(python);
    }
    if !python.exists() {
        println!("creating a venv for duckdb in {}", venv.display());
        if let Some(parent) = venv.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let status = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv)
            .status()
            .context("cannot run python3 -m venv")?;
        if !status.success() {
            bail!("python3 -m venv {} failed: {status}", venv.display());
        }
    }
    println!("installing duckdb into {}", venv.display());
    let status = std::process::Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "duckdb"])
        .status()
        .context("cannot run pip")?;
    if !status.success() || !has_duckdb(&python) {
        bail!(
            "pip install duckdb into {} failed ({status}); pass --no-duckdb to skip DuckDB",
            venv.display()
        );
    }
    Ok(python)
}

/// The DuckDB side: loads the CSV files into native tables of a database file, runs every
/// query once and `repetitions` more times, prints one JSON object.
const DUCKDB_SCRIPT: &str = r#"
import json, sys, time
import duckdb

cfg = json.load(open(sys.argv[1]))
con = duckdb.connect(cfg["db"])
con.execute("SET threads TO %d" % int(cfg["threads"]))

def quoted(path):
    return "'" + path.replace("'", "''") + "'"

t = time.perf_counter()
con.execute("CREATE TABLE orders (id VARCHAR, customer BIGINT, amount DOUBLE, status VARCHAR, qty BIGINT)")
con.execute("CREATE TABLE customers (id VARCHAR, customer BIGINT, region VARCHAR)")
con.execute("COPY orders FROM %s (HEADER)" % quoted(cfg["orders_csv"]))
con.execute("COPY customers FROM %s (HEADER)" % quoted(cfg["customers_csv"]))
con.execute("CHECKPOINT")
load = time.perf_counter() - t

# The tables as Parquet files (DuckDB's default codec, Snappy; then ZSTD), and the database file.
import os
parquet = {}
for codec in ("snappy", "zstd"):
    total = 0
    for table in ("orders", "customers"):
        path = os.path.join(os.path.dirname(cfg["db"]), "%s-%s.parquet" % (table, codec))
        con.execute("COPY %s TO %s (FORMAT PARQUET, COMPRESSION %s)" % (table, quoted(path), codec))
        total += os.path.getsize(path)
        os.remove(path)
    parquet[codec] = total

out = {
    "parquet_bytes": parquet["snappy"],
    "parquet_zstd_bytes": parquet["zstd"],
    "db_bytes": os.path.getsize(cfg["db"]),
    "version": duckdb.__version__,
    "threads": str(con.execute("SELECT current_setting('threads')").fetchone()[0]),
    "load_seconds": load,
    "queries": [],
}
for q in cfg["queries"]:
    times = []
    rows = None
    columns = None
    for _ in range(1 + int(cfg["repetitions"])):
        t = time.perf_counter()
        cur = con.execute(q["sql"])
        rows = cur.fetchall()
        times.append(time.perf_counter() - t)
        columns = [d[0] for d in cur.description]
    out["queries"].append({
        "name": q["name"],
        "columns": columns,
        "rows": [list(r) for r in rows],
        "first": times[0],
        "warm": times[1:],
    })
con.close()
json.dump(out, sys.stdout, default=str)
"#;

type DuckResults = Vec<(Rows, Timings)>;

/// DuckDB under writes: on the database the first script loaded, each query of
/// `cfg["queries"]` `cfg["runs"]` times, each right after an `UPDATE` of one random order (as
/// the themis run updates them); the query's time alone.
const DUCKDB_WRITES_SCRIPT: &str = r#"
import json, random, sys, time
import duckdb

cfg = json.load(open(sys.argv[1]))
con = duckdb.connect(cfg["db"])
con.execute("SET threads TO %d" % int(cfg["threads"]))
rng = random.Random(42)
out = []
for q in cfg["queries"]:
    times = []
    for _ in range(int(cfg["runs"])):
        i = rng.randrange(int(cfg["orders"]))
        con.execute(
            "UPDATE orders SET customer = ?, amount = ?, status = 'paid', qty = ? WHERE id = ?",
            [rng.randrange(1000), rng.randrange(1, 100001) / 100.0, rng.randrange(1, 11), "o%08d" % i],
        )
        t = time.perf_counter()
        con.execute(q["sql"]).fetchall()
        times.append(time.perf_counter() - t)
    out.append(times)
con.close()
json.dump(out, sys.stdout)
"#;

/// Runs [`DUCKDB_WRITES_SCRIPT`] over the database [`run_duckdb`] left in `dir`: per query
/// of [`UNDER_WRITES`], its sorted times.
fn run_duckdb_under_writes(
    python: &Path,
    dir: &Path,
    queries: &[Query],
    orders: usize,
    options: &SqlOptions,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let script = dir.join("duckdb_writes.py");
    std::fs::write(&script, DUCKDB_WRITES_SCRIPT)?;
    let config = dir.join("duckdb_writes.json");
    let db = dir.join("bench.duckdb");
    let chosen: Vec<Value> = UNDER_WRITES
        .iter()
        .filter_map(|name| queries.iter().find(|q| q.name == *name))
        .map(|q| json!({"name": q.name, "sql": q.sql}))
        .collect();
    std::fs::write(
        &config,
        json!({
            "db": db.to_str().ok_or_else(|| anyhow!("path {} is not UTF-8", db.display()))?,
            "threads": options.duckdb_threads,
            "runs": options.repetitions.max(20),
            "orders": orders,
            "queries": chosen,
        })
        .to_string(),
    )?;
    let output = pinned(python, options.server_cpus.as_deref())
        .arg(&script)
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run the DuckDB writes script")?;
    if !output.status.success() {
        bail!("the DuckDB writes script failed: {}", output.status);
    }
    let out: Vec<Vec<f64>> = serde_json::from_slice(&output.stdout)
        .context("the DuckDB writes script's output is not a list of lists")?;
    Ok(out
        .into_iter()
        .map(|times| {
            let mut t: Vec<Duration> = times.into_iter().map(Duration::from_secs_f64).collect();
            t.sort();
            t
        })
        .collect())
}

fn run_duckdb(
    python: &Path,
    dir: &Path,
    orders_csv: &Path,
    customers_csv: &Path,
    queries: &[Query],
    options: &SqlOptions,
) -> anyhow::Result<(DuckReport, DuckResults)> {
    let script = dir.join("duckdb_bench.py");
    std::fs::write(&script, DUCKDB_SCRIPT)?;
    let config = dir.join("duckdb_bench.json");
    let utf8 = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
    };
    std::fs::write(
        &config,
        json!({
            "db": utf8(&dir.join("bench.duckdb"))?,
            "orders_csv": utf8(orders_csv)?,
            "customers_csv": utf8(customers_csv)?,
            "threads": options.duckdb_threads,
            "repetitions": options.repetitions,
            "queries": queries
                .iter()
                .map(|q| json!({"name": q.name, "sql": q.sql}))
                .collect::<Vec<_>>(),
        })
        .to_string(),
    )?;
    let output = pinned(python, options.server_cpus.as_deref())
        .arg(&script)
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run the DuckDB script")?;
    if !output.status.success() {
        bail!("the DuckDB script failed: {}", output.status);
    }
    let out: Value =
        serde_json::from_slice(&output.stdout).context("the DuckDB script's output is not JSON")?;
    let secs = |v: &Value| Duration::from_secs_f64(v.as_f64().unwrap_or(0.0));
    let report = DuckReport {
        version: out["version"].as_str().unwrap_or("?").to_owned(),
        threads: out["threads"].as_str().unwrap_or("?").to_owned(),
        load: secs(&out["load_seconds"]),
        parquet_bytes: out["parquet_bytes"].as_u64().unwrap_or(0),
        parquet_zstd_bytes: out["parquet_zstd_bytes"].as_u64().unwrap_or(0),
        db_bytes: out["db_bytes"].as_u64().unwrap_or(0),
    };
    let list = out["queries"]
        .as_array()
        .ok_or_else(|| anyhow!("the DuckDB script's output has no queries"))?;
    if list.len() != queries.len() {
        bail!(
            "the DuckDB script answered {} of {} queries",
            list.len(),
            queries.len()
        );
    }
    let results = list
        .iter()
        .map(|q| {
            let columns = q["columns"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|c| c.as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let rows = q["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|r| r.as_array().cloned().unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            let timings = Timings {
                first: secs(&q["first"]),
                warm: q["warm"]
                    .as_array()
                    .map(|w| w.iter().map(secs).collect())
                    .unwrap_or_default(),
            };
            (Rows { columns, rows }, timings)
        })
        .collect();
    Ok((report, results))
}

/// `SELECT 1`, optionally at a token: the time to its answer.
async fn select_one(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> anyhow::Result<Duration> {
    Ok(post_query(http, base, "SELECT 1", token, "10s").await?.0)
}

/// `POST /v1/query`: the time from the request to the last byte of a 200 answer, and the
/// answer (any other status is an error).
async fn post_query(
    http: &reqwest::Client,
    base: &str,
    sql: &str,
    min_token: Option<&str>,
    timeout: &str,
) -> anyhow::Result<(Duration, Vec<u8>)> {
    let mut body = json!({"sql": sql, "timeout": timeout});
    if let Some(t) = min_token {
        body["min_token"] = Value::from(t);
    }
    let request = http.post(format!("{base}/v1/query")).json(&body);
    let start = Instant::now();
    let r = request.send().await?;
    let status = r.status();
    let bytes = r.bytes().await?.to_vec();
    let elapsed = start.elapsed();
    if status.as_u16() != 200 {
        bail!(
            "POST /v1/query {body} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok((elapsed, bytes))
}

/// The view-lag run.
async fn lag_run(
    http: &reqwest::Client,
    base: &str,
    options: &SqlOptions,
) -> anyhow::Result<LagReport> {
    declare(
        http,
        base,
        "lagged",
        json!({"columns": [
            {"name": "seq", "type": "int64"},
            {"name": "payload", "type": "string"},
        ]}),
    )
    .await?;
    let mut idle_baseline = Vec::new();
    for _ in 0..200 {
        idle_baseline.push(select_one(http, base, None).await?);
    }
    idle_baseline.sort();

    let lag = Arc::new(Mutex::new(Vec::new()));
    let baseline = Arc::new(Mutex::new(Vec::new()));
    let sample_errors = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let every = options.lag_sample_every.max(1);

    // lag_ms of the relational views, polled while the run lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (http, base, stop) = (http.clone(), base.to_owned(), stop.clone());
        tokio::spawn(async move {
            let mut polled = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("{base}/v1/admin/views")).send().await
                    && let Ok(v) = r.json::<Value>().await
                {
                    let max = v["views"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|v| v["view"].as_str() == Some(RELATIONAL_VIEW))
                        .filter_map(|v| v["lag_ms"].as_u64())
                        .max();
                    polled.extend(max);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            polled
        })
    };

    let op = {
        let (http, base) = (http.clone(), base.to_owned());
        let (lag, baseline, sample_errors, counter, samples) = (
            lag.clone(),
            baseline.clone(),
            sample_errors.clone(),
            counter.clone(),
            samples.clone(),
        );
        move |w: usize, n: u64| {
            let url = format!("{base}/v1/streams/urn:themis:relational:lagged:w{w}n{n}");
            let request = http.post(url).json(
                &json!({"events": [{"op": "put", "data": {"seq": n, "payload": "lag probe"}}]}),
            );
            let (http, base) = (http.clone(), base.clone());
            let (lag, baseline, sample_errors, counter, samples) = (
                lag.clone(),
                baseline.clone(),
                sample_errors.clone(),
                counter.clone(),
                samples.clone(),
            );
            async move {
                let r = request.send().await?;
                let status = r.status();
                let bytes = r.bytes().await?;
                if status.as_u16() != 201 {
                    bail!(
                        "append answered {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                let k = counter.fetch_add(1, Ordering::Relaxed);
                if k.is_multiple_of(every) {
                    #[derive(serde::Deserialize)]
                    struct Answer {
                        token: String,
                    }
                    let answer: Answer = serde_json::from_slice(&bytes)?;
                    let with_token = (k / every).is_multiple_of(2);
                    let handle = tokio::spawn(async move {
                        let token = with_token.then_some(answer.token.as_str());
                        match select_one(&http, &base, token).await {
                            Ok(d) => {
                                let into = if with_token { &lag } else { &baseline };
                                into.lock().expect("samples lock").push(d);
                            }
                            Err(e) => {
                                if sample_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("lag sample: {e:#}");
                                }
                            }
                        }
                    });
                    samples.lock().expect("handles lock").push(handle);
                }
                Ok(())
            }
        }
    };
    let appends = run_paced(
        options.lag_concurrency.max(1),
        options.lag_rate as f64,
        Duration::from_secs(options.lag_seconds),
        op,
    )
    .await;
    let handles = std::mem::take(&mut *samples.lock().expect("handles lock"));
    for h in handles {
        h.await?;
    }
    stop.store(true, Ordering::Relaxed);
    let mut polled_lag_ms = poller.await?;
    polled_lag_ms.sort();
    let mut lag = std::mem::take(&mut *lag.lock().expect("samples lock"));
    let mut baseline = std::mem::take(&mut *baseline.lock().expect("samples lock"));
    lag.sort();
    baseline.sort();
    Ok(LagReport {
        rate: options.lag_rate,
        appends,
        lag,
        baseline,
        idle_baseline,
        sample_errors: sample_errors.load(Ordering::Relaxed),
        polled_lag_ms,
    })
}

/// The `q` quantile of sorted `v`.
pub fn quantile<T: Copy + Default>(v: &[T], q: f64) -> T {
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// The report as markdown, ready to paste into `docs/BENCHMARKS.md`.
pub fn markdown(report: &SqlReport, options: &SqlOptions) -> String {
    let mut out = String::new();
    let l = &report.load;
    let _ = writeln!(
        out,
        "load: {} rows ({} orders + {} customers) over HTTP in batches of {} with per-shard atomicity, {} in flight, {} shards",
        l.rows,
        options.rows,
        options.customers,
        options.batch,
        options.load_concurrency,
        options.shards
    );
    let _ = writeln!(
        out,
        "- committed: {:.0} rows/s ({:.1} s)",
        l.rows as f64 / l.committed.as_secs_f64(),
        l.committed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- materialized (first request until every relational view covered the load): {:.0} rows/s ({:.1} s; the views finished {:.1} s after the last commit); themis used {} cores meanwhile",
        l.rows as f64 / l.materialized.as_secs_f64(),
        l.materialized.as_secs_f64(),
        (l.materialized - l.committed).as_secs_f64(),
        l.server_cores
            .map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"))
    );
    if let Some(r) = l.rebuild {
        let _ = writeln!(
            out,
            "- the relational view rebuilt from the log alone, after the queries: {:.0} rows/s ({:.1} s)",
            l.rows as f64 / r.as_secs_f64(),
            r.as_secs_f64()
        );
    }
    if let Some(d) = &report.duckdb {
        let _ = writeln!(
            out,
            "- DuckDB {} (threads {}): CSV into native tables of a database file, with checkpoint: {:.2} s ({:.0} rows/s)",
            d.version,
            d.threads,
            d.load.as_secs_f64(),
            l.rows as f64 / d.load.as_secs_f64()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| query | rows | themis first | themis warm best | themis warm median | DuckDB first | DuckDB best | DuckDB median | ratio (themis median / DuckDB median) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for q in &report.queries {
        let (df, db, dm, ratio) = match &q.duckdb {
            Some(d) => (
                ms(d.first),
                ms(d.best()),
                ms(d.median()),
                format!(
                    "{:.1}x",
                    q.themis.median().as_secs_f64() / d.median().as_secs_f64().max(1e-9)
                ),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {df} | {db} | {dm} | {ratio} |",
            q.query.name,
            q.rows,
            ms(q.themis.first),
            ms(q.themis.best()),
            ms(q.themis.median()),
        );
    }
    let _ = writeln!(out);
    for q in &report.queries {
        let _ = writeln!(
            out,
            "- `{}` ({}): `{}`",
            q.query.name, q.query.what, q.query.sql
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "AQL, the same queries (same answers as SQL, checked), end to end over HTTP:"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| query | AQL first | AQL warm best | AQL warm median | SQL warm median | ratio (AQL / SQL, medians) | interpreted alone (`\"plans\": false`, one run) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for q in &report.queries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1}x | {} |",
            q.query.name,
            ms(q.aql.first),
            ms(q.aql.best()),
            ms(q.aql.median()),
            ms(q.themis.median()),
            q.aql.median().as_secs_f64() / q.themis.median().as_secs_f64().max(1e-9),
            match &q.interpreted {
                Ok(t) => ms(*t),
                Err(code) => format!("refused: `{code}`"),
            }
        );
    }
    let _ = writeln!(out);
    for q in &report.queries {
        let _ = writeln!(out, "- `{}`: `{}`", q.query.name, q.query.aql);
    }
    if !report.under_writes.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Under writes: single-row updates of random orders at the rate asked, each query with the latest update's token as `min_token` (themis); DuckDB runs each query right after one `UPDATE` (its query time):"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| updates/s asked (achieved) | query | themis idle median | themis p50 | themis p99 | p50 / idle | DuckDB p50 after an update | themis p50 / DuckDB p50 |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
        for run in &report.under_writes {
            for (i, (name, times)) in run.themis.iter().enumerate() {
                let idle = report
                    .queries
                    .iter()
                    .find(|q| q.query.name == *name)
                    .map(|q| q.themis.median())
                    .unwrap_or_default();
                let p50 = quantile(times, 0.5);
                let duck = run
                    .duckdb
                    .get(i)
                    .and_then(|d| d.as_ref())
                    .map(|d| quantile(d, 0.5));
                let _ = writeln!(
                    out,
                    "| {} ({:.0}) | {name} | {} | {} | {} | {:.2}x | {} | {} |",
                    run.rate,
                    run.appends.per_second,
                    ms(idle),
                    ms(p50),
                    ms(quantile(times, 0.99)),
                    p50.as_secs_f64() / idle.as_secs_f64().max(1e-9),
                    duck.map_or_else(|| "-".to_owned(), ms),
                    duck.map_or_else(
                        || "-".to_owned(),
                        |d| format!("{:.2}x", p50.as_secs_f64() / d.as_secs_f64().max(1e-9))
                    ),
                );
            }
        }
    }
    let st = &report.storage;
    let rows = report.load.rows.max(1) as f64;
    let _ = writeln!(out);
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let parquet = report.duckdb.as_ref().map(|d| d.parquet_bytes).unwrap_or(0);
    let _ = writeln!(
        out,
        "Storage: views database {} ({:.1} bytes/row{}), whole data directory {} ({:.1} bytes/row){}; resident memory {} loaded, {} after the idle SQL queries.",
        mb(st.views_bytes),
        st.views_bytes as f64 / rows,
        if parquet > 0 {
            format!(
                ", {:.2}x DuckDB's Parquet",
                st.views_bytes as f64 / parquet as f64
            )
        } else {
            String::new()
        },
        mb(st.data_bytes),
        st.data_bytes as f64 / rows,
        report.duckdb.as_ref().map_or_else(String::new, |d| format!(
            "; DuckDB: Parquet {} ({:.1} bytes/row), Parquet with ZSTD {} ({:.1} bytes/row), its database file {}",
            mb(d.parquet_bytes),
            d.parquet_bytes as f64 / rows,
            mb(d.parquet_zstd_bytes),
            d.parquet_zstd_bytes as f64 / rows,
            mb(d.db_bytes)
        )),
        st.resident_loaded.map_or_else(|| "-".to_owned(), mb),
        st.resident_queried.map_or_else(|| "-".to_owned(), mb),
    );
    if let Some(restart) = &report.restart {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "After a restart (SIGTERM, started again on the same data directory; listening after {}; views database then {} ({:.1} bytes/row); resident memory after these queries {}):",
            ms(restart.open),
            mb(restart.views_bytes),
            restart.views_bytes as f64 / rows,
            restart.resident.map_or_else(|| "-".to_owned(), mb)
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| query | idle median before | first after the restart | first / idle | median after | partitions built (whole, forward) | columns decoded by the first |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for f in &restart.queries {
            let idle = report
                .queries
                .iter()
                .find(|q| q.query.name == f.name)
                .map(|q| q.themis.median())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2}x | {} | {}, {} | {} ({}) |",
                f.name,
                ms(idle),
                ms(f.first),
                f.first.as_secs_f64() / idle.as_secs_f64().max(1e-9),
                ms(f.median),
                f.built.0,
                f.built.1,
                f.decoded.0,
                mb(f.decoded.1)
            );
        }
    }
    if let Some(lag) = &report.lag {
        let _ = writeln!(out);
        let a = &lag.appends;
        let _ = writeln!(
            out,
            "view lag: {:.0} single-row appends/s achieved of {} asked ({} paced workers, {} ok, {} errors; append p50 {}, p99 {})",
            a.per_second,
            lag.rate,
            options.lag_concurrency,
            a.ok,
            a.errors,
            ms(a.p50),
            ms(a.p99)
        );
        let _ = writeln!(
            out,
            "- append answer to `SELECT 1` with its token answered: p50 {}, p99 {}, max {} ({} samples, {} failed)",
            ms(quantile(&lag.lag, 0.5)),
            ms(quantile(&lag.lag, 0.99)),
            ms(lag.lag.last().copied().unwrap_or_default()),
            lag.lag.len(),
            lag.sample_errors
        );
        let _ = writeln!(
            out,
            "- the same query without a token, same load (round-trip baseline): p50 {}, p99 {}, max {} ({} samples); idle node: p50 {}, p99 {}",
            ms(quantile(&lag.baseline, 0.5)),
            ms(quantile(&lag.baseline, 0.99)),
            ms(lag.baseline.last().copied().unwrap_or_default()),
            lag.baseline.len(),
            ms(quantile(&lag.idle_baseline, 0.5)),
            ms(quantile(&lag.idle_baseline, 0.99)),
        );
        let _ = writeln!(
            out,
            "- relational views' `lag_ms` polled every 100 ms (`GET /v1/admin/views`, max over shards): p50 {} ms, p99 {} ms, max {} ms ({} polls)",
            quantile(&lag.polled_lag_ms, 0.5),
            quantile(&lag.polled_lag_ms, 0.99),
            lag.polled_lag_ms.last().copied().unwrap_or_default(),
            lag.polled_lag_ms.len()
        );
    }
    out
}
