//! Prometheus metrics in the text exposition format: counters and gauges read from the log's
//! own counters at scrape time, plus the HTTP layer's append latency histogram.
//!
//! Invariant: recording a sample is a few relaxed atomic adds; nothing on the append path locks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use themis_log::Log;
use themis_log::histogram::Histogram;

/// Metrics kept by the HTTP layer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Latency of successful appends, request received to answer ready.
    pub append_latency: Histogram,
    /// Requests answered with a problem, by nothing finer (the code is in the logs).
    pub errors: AtomicU64,
    /// The HTTP server's connections and timeouts.
    pub connections: ConnectionMetrics,
}

/// What the HTTP server (`http_server`) counts about its connections.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections being served now.
    pub open: AtomicU64,
    /// The cap in force: `--http-connections-max`, lowered to what the open-file limit allows.
    pub max: AtomicU64,
    /// Connections refused because the cap was reached.
    pub refused: AtomicU64,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Kept-alive connections closed because no request came in time.
    pub idle_timeouts: AtomicU64,
    /// Requests answered 408 because their body did not arrive in time.
    pub body_timeouts: AtomicU64,
    /// Connections closed because the client read nothing of a response in time.
    pub write_timeouts: AtomicU64,
}

impl ConnectionMetrics {
    fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            out,
            "themis_http_connections_open",
            "gauge",
            "HTTP connections being served",
        );
        let _ = writeln!(out, "themis_http_connections_open {}", load(&self.open));
        family(
            out,
            "themis_http_connections_max",
            "gauge",
            "HTTP connections served at once (--http-connections-max, within the open-file limit)",
        );
        let _ = writeln!(out, "themis_http_connections_max {}", load(&self.max));
        family(
            out,
            "themis_http_connections_refused_total",
            "counter",
            "HTTP connections refused because the cap was reached",
        );
        let _ = writeln!(
            out,
            "themis_http_connections_refused_total {}",
            load(&self.refused)
        );
        family(
            out,
            "themis_http_timeouts_total",
            "counter",
            "HTTP connections closed (or requests answered 408) by a timeout, by kind",
        );
        for (kind, value) in [
            ("header", &self.header_timeouts),
            ("body", &self.body_timeouts),
            ("idle", &self.idle_timeouts),
            ("write", &self.write_timeouts),
        ] {
            let _ = writeln!(
                out,
                "themis_http_timeouts_total{{kind=\"{kind}\"}} {}",
                load(value)
            );
        }
    }
}

/// A per-shard metric: name, Prometheus type, help text, and how to read it from a shard.
type PerShard<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a dyn Fn(&themis_log::Shard) -> u64,
);

impl Metrics {
    fn render_views(&self, out: &mut String, views: &themis_materializers::Materializer) {
        let status = views.status();
        type Field = fn(&themis_materializers::ViewStatus) -> String;
        let families: [(&str, &str, Field); 5] = [
            ("themis_view_watermark", "LSN the view has applied", |v| {
                v.watermark.to_string()
            }),
            (
                "themis_view_lag_entries",
                "entries the replica applied that the view has not",
                |v| v.lag_lsn.to_string(),
            ),
            (
                "themis_view_lag_seconds",
                "age of the oldest committed entry the view has not applied (0 when caught up)",
                |v| format!("{:.3}", v.lag_ms as f64 / 1e3),
            ),
            (
                "themis_view_rejected_entries",
                "entries the view did not apply because their client JSON breaks the rules (since the view was built)",
                |v| v.entries_rejected.to_string(),
            ),
            (
                "themis_view_stopped",
                "1 when the view's worker stopped after an error (reads of the view fail, /readyz fails)",
                |v| u8::from(v.state == "stopped").to_string(),
            ),
        ];
        for (name, help, value) in families {
            family(out, name, "gauge", help);
            for v in &status {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",view=\"{}\"}} {}",
                    v.shard,
                    v.view,
                    value(v)
                );
            }
        }
    }
}

impl Metrics {
    /// The change-stream subscriptions open on this node, and their limit.
    pub fn render_subscriptions(&self, out: &mut String, hub: &themis_log::subscribe::Hub) {
        family(
            out,
            "themis_subscriptions_open",
            "gauge",
            "change-stream subscriptions open",
        );
        let _ = writeln!(out, "themis_subscriptions_open {}", hub.active());
        family(
            out,
            "themis_subscriptions_max",
            "gauge",
            "subscriptions this node accepts (--subscribers-max)",
        );
        let _ = writeln!(
            out,
            "themis_subscriptions_max {}",
            hub.config().subscribers_max
        );
    }

    /// How SQL and AQL tables were made: partitions built whole from the views, and brought
    /// forward by the log's changes since a kept version.
    pub fn render_tables(&self, out: &mut String, query: &themis_query::QueryEngine) {
        family(
            out,
            "themis_sql_partitions_built_total",
            "counter",
            "table partitions (namespace and shard) made for queries, by how: whole (read every row) or forward (only the rows changed since a kept version)",
        );
        let (whole, forward) = query.partitions_built();
        let _ = writeln!(
            out,
            "themis_sql_partitions_built_total{{how=\"whole\"}} {whole}"
        );
        let _ = writeln!(
            out,
            "themis_sql_partitions_built_total{{how=\"forward\"}} {forward}"
        );
        family(
            out,
            "themis_sql_decoded_bytes",
            "gauge",
            "bytes of columns decoded from the views' blocks and kept for queries (--query-cache-bytes bounds them)",
        );
        let _ = writeln!(
            out,
            "themis_sql_decoded_bytes {}",
            themis_query::tables::budget::decoded_bytes()
        );
        let (columns, bytes) = themis_query::tables::budget::decoded_total();
        family(
            out,
            "themis_sql_columns_decoded_total",
            "counter",
            "column chunks decoded from the views' blocks and kept (or rewritten without superseded rows); a query that finds its columns kept adds none",
        );
        let _ = writeln!(out, "themis_sql_columns_decoded_total {columns}");
        family(
            out,
            "themis_sql_columns_decoded_bytes_total",
            "counter",
            "bytes of the column chunks decoded from the views' blocks",
        );
        let _ = writeln!(out, "themis_sql_columns_decoded_bytes_total {bytes}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Metrics {
    /// Renders every metric, the views' watermarks and lag included.
    pub fn render(&self, log: &Log, views: &themis_materializers::Materializer) -> String {
        let mut out = String::with_capacity(4096);
        self.render_views(&mut out, views);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let per_shard: [PerShard; 12] = [
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
                "themis_snapshots_installed_total",
                "counter",
                "Raft snapshots installed from a leader",
                &|s| load(&s.store().stats().snapshots_installed),
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
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\"}} {}",
                    shard.id().0,
                    value(&shard)
                );
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
            "themis_apply_lag_seconds",
            "histogram",
            "time from an entry's proposal on the leader to its apply on this replica (replication lag on followers)",
        );
        for shard in log.shards() {
            shard.store().stats().apply_lag.render(
                &mut out,
                "themis_apply_lag_seconds",
                &format!("shard=\"{}\",", shard.id().0),
            );
        }
        family(
            &mut out,
            "themis_http_errors_total",
            "counter",
            "requests answered with a problem",
        );
        let _ = writeln!(out, "themis_http_errors_total {}", load(&self.errors));
        self.connections.render(&mut out);
        out
    }
}
