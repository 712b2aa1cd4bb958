//! Prometheus metrics in the text exposition format: counters and gauges read from the log's
//! own counters at scrape time, plus the HTTP layer's append latency histogram.
//!
//! Invariant: recording a sample is a few relaxed atomic adds; nothing on the append path locks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use themis_log::Log;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let labels = labels.trim_end_matches(',');
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {count}");
    }
}

/// Metrics kept by the HTTP layer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Latency of successful appends, request received to answer ready.
    pub append_latency: Histogram,
    /// Requests answered with a problem, by nothing finer (the code is in the logs).
    pub errors: AtomicU64,
}

/// A per-shard metric: name, Prometheus type, help text, and how to read it from a shard.
type PerShard<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a dyn Fn(&themis_log::Shard) -> u64,
);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Metrics {
    /// Renders every metric.
    pub fn render(&self, log: &Log) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let per_shard: [PerShard; 11] = [
            (
                "themis_appends_total",
                "counter",
                "successful appends (including idempotent retries)",
                &|s| load(&s.stats().appends),
            ),
            (
                "themis_append_events_total",
                "counter",
                "events appended",
                &|s| load(&s.stats().events),
            ),
            (
                "themis_append_conflicts_total",
                "counter",
                "appends refused by an expected-revision check",
                &|s| load(&s.stats().conflicts),
            ),
            (
                "themis_append_duplicates_total",
                "counter",
                "appends answered from the idempotency table",
                &|s| load(&s.stats().duplicates),
            ),
            (
                "themis_log_commits_total",
                "counter",
                "durable log commits (one fsync each)",
                &|s| load(&s.store().stats().log_commits),
            ),
            (
                "themis_log_entries_written_total",
                "counter",
                "entries written to the log",
                &|s| load(&s.store().stats().entries_written),
            ),
            (
                "themis_log_bytes_written_total",
                "counter",
                "bytes of log records written",
                &|s| load(&s.store().stats().bytes_written),
            ),
            (
                "themis_commit_index",
                "gauge",
                "highest log index known committed",
                &|s| load(&s.store().stats().committed),
            ),
            (
                "themis_applied_lsn",
                "gauge",
                "highest log index applied by the state machine",
                &|s| s.applied().0,
            ),
            (
                "themis_last_log_index",
                "gauge",
                "highest log index stored",
                &|s| s.raft().metrics().borrow().last_log_index.unwrap_or(0),
            ),
            (
                "themis_shard_leader",
                "gauge",
                "1 when this node leads the shard",
                &|s| u64::from(s.is_leader()),
            ),
        ];
        for (name, kind, help, value) in per_shard {
            family(&mut out, name, kind, help);
            for shard in log.shards() {
                let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", shard.id().0, value(shard));
            }
        }
        family(
            &mut out,
            "themis_append_duration_seconds",
            "histogram",
            "latency of successful appends",
        );
        self.append_latency
            .render(&mut out, "themis_append_duration_seconds", "");
        family(
            &mut out,
            "themis_http_errors_total",
            "counter",
            "requests answered with a problem",
        );
        let _ = writeln!(out, "themis_http_errors_total {}", load(&self.errors));
        out
    }
}
