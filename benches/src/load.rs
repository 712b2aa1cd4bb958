//! A closed-loop load runner: `concurrency` workers each issue one request at a time for a fixed
//! duration; latencies of successful requests are kept exactly (no sampling) for percentiles.

use std::future::Future;
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunStats {
    /// Successful operations per second.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations (a correct run has none).
    pub errors: u64,
    /// Cores the server used during the run (CPU seconds / elapsed), when known.
    pub server_cores: Option<f64>,
    /// Cores this load generator used during the run.
    pub client_cores: Option<f64>,
}

/// Runs `op(worker, n)` from `concurrency` workers for `duration`, paced to `rate` operations
/// per second in total: worker `w`'s `n`-th operation is due `w / rate + n * concurrency / rate`
/// after the start. A worker that falls behind goes on at once, so the achieved rate shows when
/// the system cannot keep up; latency counts from the due time (no coordinated omission).
pub async fn run_paced<F, Fut>(concurrency: usize, rate: f64, duration: Duration, op: F) -> RunStats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let pace = Pace::new(concurrency, rate);
    run_with(concurrency, duration, Some(pace), None, op).await
}

/// [`run_paced`] until `stop` is set (or an hour passed).
pub async fn run_paced_until<F, Fut>(
    concurrency: usize,
    rate: f64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    op: F,
) -> RunStats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let pace = Pace::new(concurrency, rate);
    let hour = Duration::from_secs(3600);
    run_with(concurrency, hour, Some(pace), Some(stop), op).await
}

#[derive(Debug, Clone, Copy)]
struct Pace {
    offset: Duration,
    interval: Duration,
}

impl Pace {
    /// `rate` operations per second in total over `concurrency` workers.
    fn new(concurrency: usize, rate: f64) -> Pace {
        let rate = rate.max(1e-3);
        Pace {
            offset: Duration::from_secs_f64(1.0 / rate),
            interval: Duration::from_secs_f64(concurrency as f64 / rate),
        }
    }
}

/// Runs `op(worker, n)` from `concurrency` workers for `duration`.
pub async fn run<F, Fut>(concurrency: usize, duration: Duration, op: F) -> RunStats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    run_with(concurrency, duration, None, None, op).await
}

async fn run_with<F, Fut>(
    concurrency: usize,
    duration: Duration,
    pace: Option<Pace>,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    op: F,
) -> RunStats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let op = op.clone();
            let stop = stop.clone();
            let stopped = move || {
                stop.as_ref()
                    .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            };
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut errors = 0u64;
                let mut n = 0u64;
                while Instant::now() < deadline && !stopped() {
                    let t = match pace {
                        Some(p) => {
                            let due = start + p.offset * w as u32 + p.interval * n as u32;
                            if due >= deadline {
                                break;
                            }
                            tokio::time::sleep_until(due.into()).await;
                            due
                        }
                        None => Instant::now(),
                    };
                    match op(w, n).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("worker {w}: {e:#}");
                            }
                        }
                    }
                    n += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (latencies, e) = w.await.expect("worker panicked");
        all.extend(latencies);
        errors += e;
    }
    let elapsed = start.elapsed();
    all.sort();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
    };
    RunStats {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5).unwrap_or_default(),
        p99: at(0.99).unwrap_or_default(),
        ok: all.len() as u64,
        errors,
        server_cores: None,
        client_cores: None,
    }
}

/// One worker's operation: `(worker, n) -> future`.
pub type Op = std::sync::Arc<
    dyn Fn(usize, u64) -> futures::future::BoxFuture<'static, anyhow::Result<()>> + Send + Sync,
>;

/// Appends of one `events`-event request to stream `urn:themis:document:{prefix}:w{worker}`
/// through `targets[worker % len]`, each event with a `payload`-sized string; anything but 201
/// is an error.
pub fn themis_appends(
    http: reqwest::Client,
    targets: Vec<String>,
    prefix: &str,
    payload: String,
    events: usize,
) -> Op {
    let prefix = prefix.to_owned();
    let targets = std::sync::Arc::new(targets);
    std::sync::Arc::new(move |w, _| {
        let url = format!(
            "{}/v1/streams/urn:themis:document:{prefix}:w{w}",
            targets[w % targets.len()]
        );
        let batch: Vec<_> = (0..events.max(1))
            .map(|_| serde_json::json!({"op": "put", "type": "Bench", "data": {"p": payload}}))
            .collect();
        let request = http.post(url).json(&serde_json::json!({ "events": batch }));
        Box::pin(async move {
            let r = request.send().await?;
            if r.status().as_u16() != 201 {
                anyhow::bail!("append answered {}: {}", r.status(), r.text().await?);
            }
            Ok(())
        })
    })
}

/// Puts of `payload` to a new key `bench/w{worker}/{n}` in etcd.
pub fn etcd_puts(etcd: etcd_client::Client, payload: String) -> Op {
    std::sync::Arc::new(move |w, n| {
        let (mut etcd, payload) = (etcd.clone(), payload.clone());
        Box::pin(async move {
            etcd.put(format!("bench/w{w}/{n}"), payload, None).await?;
            Ok(())
        })
    })
}

/// Runs `load`, recording the cores the servers (`server_pids`, summed) and this generator used
/// meanwhile (from `/proc/<pid>/stat`).
pub async fn measured(server_pids: &[u32], load: impl Future<Output = RunStats>) -> RunStats {
    use crate::process::cpu_seconds;
    // Unknown (None) without pids: a server started elsewhere.
    let servers = || -> Option<f64> {
        if server_pids.is_empty() {
            return None;
        }
        server_pids.iter().map(|&p| cpu_seconds(p)).sum()
    };
    let me = std::process::id();
    let (server0, client0, start) = (servers(), cpu_seconds(me), Instant::now());
    let mut stats = load.await;
    let elapsed = start.elapsed().as_secs_f64();
    let cores = |before: Option<f64>, after: Option<f64>| Some((after? - before?) / elapsed);
    stats.server_cores = cores(server0, servers());
    stats.client_cores = cores(client0, cpu_seconds(me));
    stats
}
