//! `themis-bench fanout`: change-stream fan-out on one node. N subscribers (NDJSON, every event,
//! from `latest`) stay connected while appends run:
//!
//! 1. append throughput, closed loop, without subscribers and then with them (interleaved
//!    pairs, medians): the cost subscribers put on the write path;
//! 2. appends paced at a fixed rate with the subscribers connected: commit-to-client delivery
//!    latency, the time from an event's commit timestamp (the leader's clock, ms, stamped when
//!    the entry is proposed, before its fsync) to the moment its line reaches a subscriber (this
//!    process's clock; the same machine, so the same clock). Each subscriber also checks that
//!    per shard the events it receives are in strictly increasing (LSN, index) order and
//!    counts them: every subscriber must receive every event of the run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;

use crate::load::{RunStats, measured, run, run_paced, themis_appends};
use crate::process::start_themis;

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    pub subscribers: usize,
    pub rate: u64,
    pub seconds: u64,
    pub concurrency: usize,
    pub paced_concurrency: usize,
    pub pairs: usize,
    pub shards: u32,
    pub event_bytes: usize,
    pub server_cpus: Option<String>,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    events: AtomicU64,
    out_of_order: AtomicU64,
    /// Delivery latencies in microseconds, while `recording`.
    latencies: std::sync::Mutex<Vec<u64>>,
}

/// The results.
#[derive(Debug)]
pub struct FanoutResult {
    pub without: RunStats,
    pub with: RunStats,
    pub paced: RunStats,
    pub delivery_p50: Duration,
    pub delivery_p99: Duration,
    pub delivery_max: Duration,
    pub delivered: u64,
    pub expected: u64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The numbers of an event line, read in one forward pass over its head (the server writes
/// `{"type":"event","cursor":"…","shard":N,"lsn":N,"index":N,"revision":N,"ts_ms":N,"event":…}`):
/// (shard, lsn, index, ts_ms). The subscribers share this process's cores with the server, so
/// their parsing must stay cheap.
fn numbers(line: &[u8]) -> Option<(u64, u64, u64, u64)> {
    let rest = line.strip_prefix(b"{\"type\":\"event\",\"cursor\":\"")?;
    let quote = rest.iter().position(|&b| b == b'"')?;
    let mut rest = &rest[quote + 1..];
    let mut take = |key: &[u8]| -> Option<u64> {
        rest = rest.strip_prefix(key)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = rest[..digits]
            .iter()
            .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
        rest = &rest[digits..];
        Some(value)
    };
    let shard = take(b",\"shard\":")?;
    let lsn = take(b",\"lsn\":")?;
    let index = take(b",\"index\":")?;
    take(b",\"revision\":")?;
    let ts = take(b",\"ts_ms\":")?;
    Some((shard, lsn, index, ts))
}

/// One subscriber: reads lines until `stop`; records latencies while `recording`.
async fn subscriber(
    http: reqwest::Client,
    base: String,
    seen: Arc<Seen>,
    recording: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let response = http
        .get(format!("{base}/v1/subscribe?from=latest"))
        .header("accept", "application/x-ndjson")
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("subscribe answered {}", response.status());
    }
    let _ = ready.send(()).await;
    let mut body = response.bytes_stream();
    let mut last: Vec<(u64, u64)> = Vec::new();
    let mut rest: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let chunk = match tokio::time::timeout(Duration::from_millis(200), body.next()).await {
            Ok(Some(chunk)) => chunk?,
            Ok(None) => bail!("the subscription ended"),
            Err(_) => continue,
        };
        let received = now_micros();
        let record = recording.load(Ordering::Relaxed);
        rest.extend_from_slice(&chunk);
        let mut start = 0;
        let mut latencies = Vec::new();
        while let Some(end) = rest[start..].iter().position(|&b| b == b'\n') {
            let line = &rest[start..start + end];
            start += end + 1;
            if !line.starts_with(b"{\"type\":\"event\"") {
                continue;
            }
            seen.events.fetch_add(1, Ordering::Relaxed);
            let Some((shard, lsn, index, ts)) = numbers(line) else {
                bail!(
                    "an event line not in the expected shape: {}",
                    String::from_utf8_lossy(&line[..line.len().min(200)])
                );
            };
            let shard = shard as usize;
            if last.len() <= shard {
                last.resize(shard + 1, (0, 0));
            }
            if (lsn, index) <= last[shard] && last[shard] != (0, 0) {
                seen.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            last[shard] = (lsn, index);
            if record {
                latencies.push(received.saturating_sub(ts * 1000));
            }
        }
        rest.drain(..start);
        if !latencies.is_empty() {
            seen.latencies.lock().expect("lock").extend(latencies);
        }
    }
    Ok(())
}

/// Runs the fan-out benchmark against a node started here.
pub async fn run_fanout(
    binary: &Path,
    dir: &Path,
    o: &FanoutOptions,
) -> anyhow::Result<FanoutResult> {
    let (guard, base) = start_themis(binary, dir, o.shards, o.server_cpus.as_deref())?;
    let pids = [guard.pid()];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let payload = "x".repeat(o.event_bytes);
    let appends = themis_appends(http.clone(), vec![base.clone()], "fanout", payload, 1);
    let seconds = Duration::from_secs(o.seconds);
    let closed = |op: crate::load::Op| {
        let op = op.clone();
        async move { measured(&pids, run(o.concurrency, seconds, move |w, n| op(w, n))).await }
    };
    // Warm up, then the interleaved pairs: without subscribers, then with them.
    run(o.concurrency, Duration::from_secs(1), {
        let op = appends.clone();
        move |w, n| op(w, n)
    })
    .await;
    let mut without = Vec::new();
    let mut with = Vec::new();
    let subscribers_http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let mut last_subs = None;
    for pair in 0..o.pairs {
        without.push(closed(appends.clone()).await);
        let subs = Subscribers::start(&subscribers_http, &base, o.subscribers).await?;
        with.push(closed(appends.clone()).await);
        if pair + 1 < o.pairs {
            subs.stop().await?;
        } else {
            last_subs = Some(subs);
        }
    }
    let subs = last_subs.context("at least one pair")?;
    // Paced appends with the subscribers connected: every event must reach every subscriber.
    // Wait until the subscribers have drained the closed-loop runs (counts stop moving).
    let counts = |subs: &Subscribers| -> Vec<u64> {
        subs.seen
            .iter()
            .map(|s| s.events.load(Ordering::Relaxed))
            .collect()
    };
    let mut before = counts(&subs);
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = counts(&subs);
        if now == before {
            break;
        }
        before = now;
    }
    subs.recording.store(true, Ordering::Relaxed);
    let paced = measured(
        &pids,
        run_paced(o.paced_concurrency, o.rate as f64, seconds, {
            let op = appends.clone();
            move |w, n| op(w, n)
        }),
    )
    .await;
    // Let the last deliveries arrive (bounded).
    let expected = paced.ok;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let short = subs
            .seen
            .iter()
            .zip(&before)
            .any(|(s, b)| s.events.load(Ordering::Relaxed) - b < expected);
        if !short || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    subs.recording.store(false, Ordering::Relaxed);
    let delivered: u64 = subs
        .seen
        .iter()
        .zip(&before)
        .map(|(s, b)| s.events.load(Ordering::Relaxed) - b)
        .min()
        .unwrap_or(0);
    let out_of_order: u64 = subs
        .seen
        .iter()
        .map(|s| s.out_of_order.load(Ordering::Relaxed))
        .sum();
    let mut latencies: Vec<u64> = subs
        .seen
        .iter()
        .flat_map(|s| std::mem::take(&mut *s.latencies.lock().expect("lock")))
        .collect();
    subs.stop().await?;
    drop(guard);
    if out_of_order > 0 {
        bail!("{out_of_order} events arrived out of log order");
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        Duration::from_micros(
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0),
        )
    };
    let median = |mut runs: Vec<RunStats>| {
        runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
        runs.swap_remove(runs.len() / 2)
    };
    Ok(FanoutResult {
        without: median(without),
        with: median(with),
        paced,
        delivery_p50: at(0.5),
        delivery_p99: at(0.99),
        delivery_max: at(1.0),
        delivered,
        expected,
    })
}

/// Connected subscribers.
struct Subscribers {
    seen: Vec<Arc<Seen>>,
    recording: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Subscribers {
    async fn start(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<Subscribers> {
        let recording = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, mut ready_rx) = tokio::sync::mpsc::channel(n.max(1));
        let mut seen = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let s = Arc::new(Seen::default());
            seen.push(s.clone());
            tasks.push(tokio::spawn(subscriber(
                http.clone(),
                base.to_owned(),
                s,
                recording.clone(),
                stop.clone(),
                ready.clone(),
            )));
        }
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
                .await
                .context("subscribers did not connect within 30 s")?;
        }
        Ok(Subscribers {
            seen,
            recording,
            stop,
            tasks,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}

/// The result as markdown for docs/BENCHMARKS.md.
pub fn markdown(o: &FanoutOptions, r: &FanoutResult, command: &str) -> String {
    let cores = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
    let ratio = r.with.per_second / r.without.per_second.max(1e-9);
    format!(
        "Reproduce: `{command}`\n\n\
         | appends (closed loop, {c} clients, 1 event of {b} B each) | appends/s | p50 | p99 | server cores | bench cores (load + subscribers) |\n\
         |---|---:|---:|---:|---:|---:|\n\
         | without subscribers | {w:.0} | {wp50:.2?} | {wp99:.2?} | {wc} | {wcc} |\n\
         | with {n} subscribers | {s:.0} | {sp50:.2?} | {sp99:.2?} | {sc} | {scc} |\n\n\
         With subscribers / without: **{ratio:.2}** (goal: at least 0.90).\n\n\
         Paced at {rate} appends/s for {secs} s with {n} subscribers: achieved {pr:.0}/s; every \
         subscriber received {del} of the {exp} events, in log order per shard. Delivery, commit \
         timestamp to the line reaching the subscriber (ms-resolution timestamps): p50 \
         {d50:.2?}, p99 **{d99:.2?}** (goal: under 50 ms), max {dmax:.2?}.\n",
        c = o.concurrency,
        b = o.event_bytes,
        n = o.subscribers,
        w = r.without.per_second,
        wp50 = r.without.p50,
        wp99 = r.without.p99,
        wc = r
            .without
            .server_cores
            .map_or("-".into(), |c| format!("{c:.2}")),
        s = r.with.per_second,
        sp50 = r.with.p50,
        sp99 = r.with.p99,
        sc = r
            .with
            .server_cores
            .map_or("-".into(), |c| format!("{c:.2}")),
        wcc = cores(r.without.client_cores),
        scc = cores(r.with.client_cores),
        rate = o.rate,
        secs = o.seconds,
        pr = r.paced.per_second,
        del = r.delivered,
        exp = r.expected,
        d50 = r.delivery_p50,
        d99 = r.delivery_p99,
        dmax = r.delivery_max,
    )
}
